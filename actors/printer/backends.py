"""Where receipts go: a spool folder (development), a CUPS queue through ``lp``, or an ESC/POS printer.

Each backend's ``deliver(receipt, title) -> str`` returns what to tell the operator (a file path,
a CUPS job id) or raises :class:`PrinterError` with a message fit for the display ("printer
offline: ...", "out of paper", "unknown printer queue ..."). Nothing else escapes: the printer
actor turns every failure into a reply.

- spool: the receipt as PNG in ``printer.spool_dir``.
- cups: asks ``lpstat -p QUEUE`` first (a stopped queue still accepts jobs with ``lp``, which would
  leave the visitor waiting for paper that never comes), then pipes the receipt PDF into
  ``lp -d QUEUE``; nothing is written to a temporary file. ``CUPS_SERVER`` in the environment picks
  the server, as for every CUPS client.
- escpos: python-escpos encodes the receipt image into printer commands (in memory, its ``Dummy``
  printer); they go to ``tcp://host:port`` (a network thermal printer, usually port 9100) or to a
  device file such as ``/dev/usb/lp0``. A network printer is asked for its paper sensor first
  (DLE EOT 4); one that does not answer within ESCPOS_STATUS_S is printed to anyway.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import select
import socket
import subprocess
from pathlib import Path
from typing import Protocol

from actors.printer.receipt import Receipt, render_pdf, render_png

CUPS_TIMEOUT_S = 2.0
ESCPOS_TIMEOUT_S = 2.0
ESCPOS_STATUS_S = 0.3
PAPER_STATUS_REQUEST = b"\x10\x04\x04"  # DLE EOT 4: roll paper sensor status
PAPER_END_BITS = 0x60


class PrinterError(RuntimeError):
    """A receipt could not be printed; the text is shown on the display."""


class Backend(Protocol):
    def deliver(self, receipt: Receipt, title: str) -> str: ...


class SpoolBackend:
    def __init__(self, folder: Path):
        self.folder = folder

    def deliver(self, receipt: Receipt, title: str) -> str:
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            path = self.folder / f"{title}.png"
            render_png(receipt).save(path)
        except OSError as e:
            raise PrinterError(f"spool folder: {e}") from e
        return str(path)


def _run(argv: list[str], data: bytes | None = None) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(argv, input=data, capture_output=True, timeout=CUPS_TIMEOUT_S, check=False)
    except FileNotFoundError as e:
        raise PrinterError(f"{argv[0]} is not installed (Debian: apt-get install cups-bsd cups-client)") from e
    except subprocess.TimeoutExpired as e:
        raise PrinterError(f"printer offline: {argv[0]} got no answer from CUPS within {CUPS_TIMEOUT_S:.0f} s") from e


def queue_problem(queue: str, lpstat_returncode: int, lpstat_output: str) -> str | None:
    """What stops ``queue`` from printing, from ``lpstat -p QUEUE``'s answer (None: ready)."""
    if lpstat_returncode != 0:
        if "invalid destination" in lpstat_output.lower() or "unknown" in lpstat_output.lower():
            return f"unknown printer queue {queue!r}"
        return f"printer offline: CUPS answered {lpstat_output.strip()[:200]!r}"
    if re.search(rf"^printer {re.escape(queue)} disabled", lpstat_output, re.MULTILINE):
        return f"printer offline: queue {queue!r} is stopped"
    if not re.search(rf"^printer {re.escape(queue)} ", lpstat_output, re.MULTILINE):
        return f"unknown printer queue {queue!r}"
    return None


class CupsBackend:
    def __init__(self, queue: str):
        self.queue = queue

    def deliver(self, receipt: Receipt, title: str) -> str:
        status = _run(["lpstat", "-p", self.queue])
        problem = queue_problem(self.queue, status.returncode, (status.stdout + status.stderr).decode(errors="replace"))
        if problem:
            raise PrinterError(problem)
        job = _run(["lp", "-d", self.queue, "-t", title, "-"], data=render_pdf(receipt, title))
        answer = (job.stdout + job.stderr).decode(errors="replace").strip()
        if job.returncode != 0:
            raise PrinterError(f"printer offline: lp failed ({answer[:200]})")
        m = re.search(r"request id is (\S+)", answer)
        return f"CUPS job {m[1] if m else '(no id)'} on {self.queue}"


def escpos_commands(receipt: Receipt) -> bytes:
    """The receipt as ESC/POS bytes: initialise, the receipt image, feed, cut."""
    from escpos.printer import Dummy  # imported on use: only installations with a thermal printer need it

    printer = Dummy()
    printer.hw("INIT")
    printer.image(render_png(receipt), center=False)
    printer.cut()
    return printer.output


def paper_status_problem(status: bytes) -> str | None:
    if status and status[0] & PAPER_END_BITS:
        return "out of paper"
    return None


class EscposBackend:
    def __init__(self, device: str):
        self.device = device

    def deliver(self, receipt: Receipt, title: str) -> str:
        data = escpos_commands(receipt)
        if self.device.startswith("tcp://"):
            host, _, port = self.device.removeprefix("tcp://").rpartition(":")
            self._send_tcp(host, int(port or 9100), data)
        else:
            self._write_device(Path(self.device), data)
        return f"{len(data)} bytes to {self.device}"

    def _send_tcp(self, host: str, port: int, data: bytes) -> None:
        try:
            with socket.create_connection((host, port), timeout=ESCPOS_TIMEOUT_S) as sock:
                sock.sendall(PAPER_STATUS_REQUEST)
                sock.settimeout(ESCPOS_STATUS_S)
                try:
                    status = sock.recv(1)
                except TimeoutError:
                    status = b""  # many printers don't answer status requests over the network
                if problem := paper_status_problem(status):
                    raise PrinterError(problem)
                sock.settimeout(ESCPOS_TIMEOUT_S)
                sock.sendall(data)
        except PrinterError:
            raise
        except OSError as e:
            raise PrinterError(f"printer offline: {self.device}: {e.strerror or e}") from e

    def _write_device(self, path: Path, data: bytes) -> None:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_NONBLOCK)
        except OSError as e:
            raise PrinterError(f"printer offline: {path}: {e.strerror or e}") from e
        try:
            view = memoryview(data)
            while view:
                if not select.select([], [fd], [], ESCPOS_TIMEOUT_S)[1]:
                    raise PrinterError(f"printer offline: {path} takes no data")
                view = view[os.write(fd, view) :]
        except OSError as e:
            raise PrinterError(f"printer offline: {path}: {e.strerror or e}") from e
        finally:
            os.close(fd)


def job_title(query_id: int, when: dt.datetime, job_no: int) -> str:
    """A unique, sortable name: date, time, the query and the printer's job number."""
    return f"receipt-{when:%Y%m%d-%H%M%S}-{query_id % 100000:05d}-{job_no}"
