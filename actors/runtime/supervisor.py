"""Noticing that the supervisor which started this process has died, so the process stops too.

honcho (development, ``make demo``) starts each Procfile line from a forked copy of itself, which
runs the line's shell (``exec python -m ...``) and reads its output. When honcho itself is killed
with SIGKILL, that helper lives on, so the actor's *parent* is still alive: only its grandparent
died. So the supervisor watched is the parent, or the grandparent when the parent is a forked
copy of it (same command line), and it counts as gone when this process's parent changes or the
helper's parent changes (both are re-parented to init or a subreaper when their parent dies).

Why not ``prctl(PR_SET_PDEATHSIG)``: it reports only the parent's death, which under honcho is
the helper's, the one process that survives; and it fires when the parent *thread* that started
the child ends, so a supervisor that starts processes from a worker thread would stop them at
once. Checking two pids once per poll of the run loop (100 ms) costs a system call and one small
``/proc`` read, and keeps working across kiosk mode's restart (``execve`` keeps the pid and the
parent). Under systemd the parent is pid 1, which never dies: nothing is watched.
"""

from __future__ import annotations

import os
from pathlib import Path

CHECK_EVERY_NS = 100_000_000


def _ppid(pid: int) -> int | None:
    """The parent of ``pid`` from /proc (None: no such process, or no /proc)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    # "pid (comm) state ppid ...": comm may hold spaces and parentheses, so split after the last ')'.
    return int(stat.rsplit(b")", 1)[1].split()[1])


def _cmdline(pid: int) -> bytes | None:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None


class Supervisor:
    """The process whose death ends this one (see the module's text); ask :meth:`gone` as often as you like."""

    def __init__(self) -> None:
        self.parent = os.getppid()
        self.pid = self.parent
        grand = _ppid(self.parent) if self.parent > 1 else None
        if grand is not None and grand > 1:
            command = _cmdline(self.parent)
            if command is not None and command == _cmdline(grand):
                self.pid = grand  # the parent is a forked helper of the real supervisor (honcho)
        self._next_check_ns = 0
        self._gone = False

    @property
    def watched(self) -> bool:
        """Whether there is a supervisor that can die (not init, pid 1)."""
        return self.parent > 1

    def gone(self, now_ns: int) -> bool:
        """Whether the supervisor has died (checked at most every CHECK_EVERY_NS)."""
        if self._gone or not self.watched or now_ns < self._next_check_ns:
            return self._gone
        self._next_check_ns = now_ns + CHECK_EVERY_NS
        helper_orphaned = self.pid != self.parent and _ppid(self.parent) != self.pid
        self._gone = os.getppid() != self.parent or helper_orphaned
        return self._gone

    def __str__(self) -> str:
        helper = f" (through its helper {self.parent})" if self.pid != self.parent else ""
        return f"pid {self.pid}{helper}"
