"""Privacy, proven: the kiosk graph writes nothing and talks to nothing beyond this machine.

The whole Procfile runs in kiosk mode (config/kiosk.toml: TCP on loopback, as installed) with a
replayed visitor, under ``strace -f``, which records every file and network system call of
every process. The test then reads the trace:

- no file is created, written, renamed or deleted anywhere, except Python's own bytecode cache
  (``__pycache__/*.pyc``: code, not visitor data) — transient files count too, since every
  call is in the trace, not just what is left at the end;
- every TCP/UDP address bound, connected to or sent to is loopback.
"""

from __future__ import annotations

import json
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from .conftest import DEMO_CLIP, PROJECT
from .test_curve import _free_port_offset

TRACED = (
    "open,openat,creat,mkdir,mkdirat,rename,renameat,renameat2,unlink,unlinkat,link,linkat,symlink,symlinkat,"
    "truncate,chmod,fchmodat,utimensat,bind,connect,sendto,sendmsg"
)
WRITE_FLAGS = ("O_WRONLY", "O_RDWR", "O_CREAT", "O_TRUNC", "O_APPEND")
FILE_CALL = re.compile(
    r"^(\d+) +(openat|open|creat|mkdir|mkdirat|rename|renameat2?|unlink|unlinkat|link|linkat|"
    r"symlink|symlinkat|truncate|chmod|fchmodat|utimensat)\((.*)\) += (-?\d+)"
)
INET = re.compile(r"sa_family=AF_INET6?, .*?(?:inet_addr\(\"([^\"]+)\"\)|inet_pton\(AF_INET6, \"([^\"]+)\")")
NET_CALL = re.compile(r"^(\d+) +(bind|connect|sendto|sendmsg)\((.*)\) += ")


def _written_paths(trace: str) -> list[str]:
    """Paths the traced processes created, wrote, renamed or removed (successful calls only)."""
    found = []
    for line in trace.splitlines():
        m = FILE_CALL.match(line)
        if not m or m.group(4).startswith("-"):
            continue
        call, args = m.group(2), m.group(3)
        if call.startswith("open") and not any(flag in args for flag in WRITE_FLAGS):
            continue
        if call == "utimensat" and '"' not in args:
            continue
        paths = re.findall(r'"((?:[^"\\]|\\.)*)"', args)
        found.extend(paths[:1] if call.startswith(("open", "creat", "mkdir", "truncate", "chmod", "fchmod")) else paths)
    return found


def _inet_addresses(trace: str) -> list[str]:
    addresses = []
    for line in trace.splitlines():
        if NET_CALL.match(line):
            for v4, v6 in INET.findall(line):
                addresses.append(v4 or v6)
    return addresses


def _allowed(path: str) -> bool:
    """Bytecode caches, and POSIX semaphores (honcho's multiprocessing): RAM or code, no visitor data."""
    return (path.endswith(".pyc") and "__pycache__" in path) or path.startswith("/dev/shm/sem.") or path == "/dev/null"


def test_trace_parsing_on_a_hand_written_trace():
    trace = "\n".join(
        [
            '11 openat(AT_FDCWD, "/models/x.dat", O_RDONLY|O_CLOEXEC) = 3',
            '11 openat(AT_FDCWD, "/home/k/visitor.jpg", O_WRONLY|O_CREAT|O_TRUNC|O_CLOEXEC, 0666) = 4',
            '12 openat(AT_FDCWD, "/tmp/never.txt", O_WRONLY|O_CREAT, 0600) = -1 EACCES (Permission denied)',
            '12 rename("/tmp/a", "/tmp/b") = 0',
            '13 bind(5, {sa_family=AF_INET, sin_port=htons(5601), sin_addr=inet_addr("127.0.0.1")}, 16) = 0',
            '13 connect(6, {sa_family=AF_INET, sin_port=htons(443), sin_addr=inet_addr("93.184.216.34")}, 16) = -1',
            '13 connect(7, {sa_family=AF_UNIX, sun_path="/tmp/x.sock"}, 110) = 0',
        ]
    )
    assert _written_paths(trace) == ["/home/k/visitor.jpg", "/tmp/a", "/tmp/b"]
    assert _inet_addresses(trace) == ["127.0.0.1", "93.184.216.34"]


def _is_loopback(address: str) -> bool:
    return address.startswith("127.") or address in ("::1", "::ffff:127.0.0.1")


@pytest.mark.timeout(300)
def test_kiosk_mode_writes_nothing_and_stays_on_loopback(demo_index: Path, tmp_path: Path):
    strace = shutil.which("strace")
    if strace is None:
        pytest.skip("strace is not installed (apt-get install strace)")
    kiosk = (PROJECT / "config" / "kiosk.toml").read_text()
    config_file = tmp_path / "kiosk-on-free-ports.toml"  # written before tracing starts
    config_file.write_text(kiosk + f"\n[network]\nport_offset = {_free_port_offset()}\n")
    home = tmp_path / "home"
    home.mkdir()
    trace_file = tmp_path / "trace.txt"
    env = dict(
        os.environ,
        PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        HOME=str(home),
        TMPDIR=str(home),
        PYTHONUNBUFFERED="1",
        MEGAPIXELS_CONFIG=str(config_file),
        MEGAPIXELS_INDEX=str(demo_index),
        MEGAPIXELS_SOURCE=str(DEMO_CLIP),
        MEGAPIXELS_HEADLESS="1",
    )
    env.pop("MEGAPIXELS_IPC_DIR", None)
    graph = subprocess.Popen(
        [
            strace,
            "-f",
            "-qq",
            "-s",
            "256",
            "-e",
            f"trace={TRACED}",
            "-e",
            "signal=none",
            "-o",
            str(trace_file),
            sys.executable,
            "-m",
            "honcho",
            "start",
            "-c",
            "matcher=2",
        ],
        cwd=PROJECT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(x) for x in graph.stdout], daemon=True).start()
    results, log = [], []
    started = time.monotonic()
    try:
        deadline = time.monotonic() + 200
        while not results and time.monotonic() < deadline and graph.poll() is None:
            try:
                line = lines.get(timeout=1)
            except queue.Empty:
                continue
            log.append(line)
            if "display" in line.split("|")[0] and line.split("| ", 1)[-1].startswith("{"):
                results.append(json.loads(line.split("| ", 1)[1]))
        assert results, "the kiosk produced no result:\n" + "".join(log[-30:])
        assert results[0]["results"][0]["identity"] == "barack_obama"
        print(f"first result after {time.monotonic() - started:.1f} s under strace")
    finally:
        os.killpg(graph.pid, signal.SIGTERM)  # honcho and strace share the session
        try:
            graph.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(graph.pid, signal.SIGKILL)
            graph.wait()
    trace = trace_file.read_text()
    assert "shape_predictor_5_face_landmarks.dat" in trace, "the trace missed file calls"
    written = [p for p in _written_paths(trace) if not _allowed(p)]
    assert not written, f"kiosk mode wrote to disk: {sorted(set(written))[:20]}"
    assert not list(home.iterdir()), f"kiosk mode left files in HOME: {list(home.iterdir())}"
    addresses = _inet_addresses(trace)
    assert "127.0.0.1" in addresses, "the trace missed the loopback sockets"
    outside = sorted({a for a in addresses if not _is_loopback(a)})
    assert not outside, f"kiosk mode used addresses beyond this machine: {outside}"
