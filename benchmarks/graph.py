"""The Procfile's actors as separate child processes: the one graph harness of tests and benchmarks.

honcho stops the whole graph when one process exits; fault tests need to kill and restart one
actor while the others run, so this starts each Procfile line itself, the way honcho does
(``HONCHO_PROCESS_NAME=name.N``, the line run by ``sh -c``), and merges their output into one
queue of ``(name, line)``.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from config.loader import PROJECT_ROOT as PROJECT


def procfile() -> dict[str, str]:
    lines = (PROJECT / "Procfile").read_text().splitlines()
    return dict(line.split(": ", 1) for line in lines if line.strip() and not line.startswith("#"))


class Graph:
    def __init__(self, env: dict[str, str], shards: int = 2):
        self.env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}", PYTHONUNBUFFERED="1")
        self.env.update(env)
        self.names = [f"{kind}.{n}" for kind in procfile() for n in range(1, (shards if kind == "matcher" else 1) + 1)]
        self.procs: dict[str, subprocess.Popen] = {}
        self.lines: queue.Queue[tuple[str, str]] = queue.Queue()

    def start(self, name: str) -> None:
        command = procfile()[name.split(".")[0]]
        proc = subprocess.Popen(
            ["/bin/sh", "-c", command],
            cwd=PROJECT,
            env={**self.env, "HONCHO_PROCESS_NAME": name},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.procs[name] = proc
        threading.Thread(target=self._pump, args=(name, proc), daemon=True).start()

    def start_all(self) -> None:
        for name in self.names:
            self.start(name)

    def _pump(self, name: str, proc: subprocess.Popen) -> None:
        for line in proc.stdout:
            self.lines.put((name, line.rstrip("\n")))

    def results(self, until: Any, deadline_s: float) -> list[dict]:
        """Display JSON lines until ``until(results)`` is true; AssertionError at the deadline."""
        found: list[dict] = []
        recent: list[str] = []
        end = time.monotonic() + deadline_s
        while time.monotonic() < end:
            try:
                name, line = self.lines.get(timeout=0.5)
            except queue.Empty:
                continue
            recent = [*recent[-40:], f"{name} | {line}"]
            if name.startswith("display") and line.startswith("{"):
                found.append(json.loads(line))
                if until(found):
                    return found
        raise AssertionError(f"condition not met within {deadline_s} s; last lines:\n" + "\n".join(recent))

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        self.procs[name].send_signal(sig)
        self.procs[name].wait(timeout=10)

    def stop_all(self, timeout_s: float = 5.0) -> dict[str, float | None]:
        """SIGTERM every running actor; seconds each took to exit (None: still running, then killed)."""
        started = time.monotonic()
        running = {n: p for n, p in self.procs.items() if p.poll() is None}
        for proc in running.values():
            proc.send_signal(signal.SIGTERM)
        took: dict[str, float | None] = {}
        for name, proc in running.items():
            try:
                proc.wait(timeout=max(0.0, started + timeout_s - time.monotonic()))
                took[name] = time.monotonic() - started
            except subprocess.TimeoutExpired:
                took[name] = None
                proc.kill()
                proc.wait()
        return took
