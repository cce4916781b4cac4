"""A real X server for UI tests: Xvfb on a free display number, chosen by Xvfb itself.

``Xvfb -displayfd FD`` picks an unused display and writes its number to FD once it accepts
connections, so there is no fixed display number and no sleep while it starts.
"""

from __future__ import annotations

import os
import select
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO

START_TIMEOUT_S = 15.0


def xvfb_binary() -> str | None:
    return shutil.which("Xvfb")


@contextmanager
def running_xvfb(screen: str = "1280x800x24") -> Iterator[str]:
    """Start Xvfb with one screen of ``screen`` (WxHxDEPTH); yields its DISPLAY (":N")."""
    binary = xvfb_binary()
    if binary is None:
        raise FileNotFoundError("Xvfb is not installed (Debian: apt-get install xvfb)")
    read_fd, write_fd = os.pipe()
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(
            [binary, "-displayfd", str(write_fd), "-screen", "0", screen, "-nolisten", "tcp"],
            pass_fds=(write_fd,),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
        )
        os.close(write_fd)
        try:
            display = _read_display(read_fd, proc, log)
            yield display
        finally:
            os.close(read_fd)
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _read_display(fd: int, proc: subprocess.Popen, log: IO[bytes]) -> str:
    deadline = time.monotonic() + START_TIMEOUT_S
    text = b""
    while not text.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            raise TimeoutError(f"Xvfb did not report a display within {START_TIMEOUT_S:.0f} s")
        chunk = os.read(fd, 64)
        if not chunk:  # Xvfb exited before it was ready
            proc.wait(timeout=5)
            log.seek(0)
            raise RuntimeError(f"Xvfb exited with code {proc.returncode}: {log.read().decode(errors='replace')}")
        text += chunk
    return f":{int(text)}"
