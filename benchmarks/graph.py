"""The one graph harness of tests and benchmarks: the Procfile's actors as separate child processes.

honcho stops the whole graph when one process exits; fault tests need to kill and restart one
actor while the others run, window tests start a few actors and wait for what they log, and
benchmarks run the whole graph for minutes. So this starts each Procfile line itself, the way
honcho does (``HONCHO_PROCESS_NAME=name``, the line run by ``sh -c``), and merges every
process's output into one queue of ``(name, line)``; :meth:`Graph.wait_for` reads it with a
deadline and fails at once, with the transcript, when an actor dies unasked.

``matchers`` is honcho's ``-c matcher=N``: that many matcher processes, ``matcher.1`` to
``matcher.N``, with ``MEGAPIXELS_MATCHERS=N`` so they split the shards between them (the default,
1, is plain ``honcho start``: one matcher serves every shard).

:func:`hog` starts busy-loop processes beside a graph (overload tests and ``benchmarks.soak
--hog``), and :func:`counters` reads the counters an actor logs every 30 s and when it stops.
"""

from __future__ import annotations

import ast
import contextlib
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any, TypeVar

from config.loader import PROJECT_ROOT

T = TypeVar("T")
Lines = list[tuple[str, str]]


def procfile() -> dict[str, str]:
    lines = (PROJECT_ROOT / "Procfile").read_text().splitlines()
    return dict(line.split(": ", 1) for line in lines if line.strip() and not line.startswith("#"))


def display_results(seen: Lines) -> list[dict]:
    """The headless display's result lists (its JSON lines) among ``seen``."""
    return [json.loads(line) for name, line in seen if name.startswith("display") and line.startswith("{")]


def holds(predicate: Callable[[Lines], bool]) -> Callable[[Lines], bool | None]:
    """A ``wait_for`` check from a yes/no question about the lines seen."""
    return lambda seen: True if predicate(seen) else None


def logged(actor: str, needle: str) -> Callable[[Lines], str | None]:
    """A ``wait_for`` check: the first line of ``actor`` containing ``needle``."""
    return lambda seen: next((line for name, line in seen if name == actor and needle in line), None)


def counters(seen: Lines, actor: str) -> dict[str, int] | None:
    """The last counters ``actor`` logged among ``seen`` (the run loop logs them every 30 s and at stop)."""
    for name, line in reversed(seen):
        if name == actor and "counters: " in line:
            return ast.literal_eval(line.split("counters: ", 1)[1])
    return None


# A busy loop that also ends when its parent does (a killed test or benchmark leaves no hog behind)
# or after an hour, whichever comes first.
_HOG = """
import os, time
parent, end = os.getppid(), time.monotonic() + 3600
while os.getppid() == parent and time.monotonic() < end:
    for _ in range(200_000):
        pass
"""


@contextlib.contextmanager
def hog(n: int) -> Iterator[list[subprocess.Popen]]:
    """``n`` processes that each keep a core busy, killed (by their pid) when the block ends."""
    procs: list[subprocess.Popen] = []
    try:
        for _ in range(n):
            procs.append(subprocess.Popen([sys.executable, "-c", _HOG], stdin=subprocess.DEVNULL))
        yield procs
    finally:
        for proc in procs:
            proc.kill()
        for proc in procs:
            proc.wait()


class Graph:
    """Actor processes named ``kind`` or ``kind.N`` (a Procfile line each), and their merged output."""

    def __init__(self, env: dict[str, str], matchers: int = 1):
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", "MEGAPIXELS_MATCHERS": str(matchers), **env}
        # The Procfile says `python`: this interpreter's (the venv's), whatever PATH ``env`` brings.
        self.env["PATH"] = f"{Path(sys.executable).parent}:{self.env.get('PATH', os.defpath)}"
        counts = {"matcher": matchers}
        self.names = [f"{kind}.{n}" for kind in procfile() for n in range(1, counts.get(kind, 1) + 1)]
        self.procs: dict[str, subprocess.Popen] = {}
        self.lines: queue.Queue[tuple[str, str]] = queue.Queue()
        self.history: Lines = []  # every line wait_for has read, in order
        self.output: list[str] = []  # every line of every process, for transcripts
        self._asked_to_exit: set[str] = set()

    def start(self, name: str, **extra_env: str) -> None:
        """Start the Procfile line of ``name``'s kind (``display`` or ``display.1``: the display line)."""
        command = procfile()[name.split(".")[0]]
        proc = subprocess.Popen(
            ["/bin/sh", "-c", command],
            cwd=PROJECT_ROOT,
            env={**self.env, "HONCHO_PROCESS_NAME": name, **extra_env},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        self.procs[name] = proc
        self._asked_to_exit.discard(name)
        threading.Thread(target=self._pump, args=(name, proc.stdout), daemon=True).start()

    def start_all(self) -> None:
        for name in self.names:
            self.start(name)

    def _pump(self, name: str, stream: IO[bytes]) -> None:
        for raw in iter(stream.readline, b""):
            line = raw.decode(errors="replace").rstrip("\n")
            self.output.append(f"{name} | {line}")
            self.lines.put((name, line))

    def mark(self) -> int:
        """A place in the history; ``wait_for(since=mark)`` also looks at the lines after it."""
        return len(self.history)

    def wait_for(
        self,
        check: Callable[[Lines], T | None],
        what: str,
        timeout_s: float = 30.0,
        pump: Callable[[], None] | None = None,
        period_s: float = 0.1,
        since: int | None = None,
    ) -> T:
        """Read output until ``check(lines seen since)`` gives a value; ``pump`` runs every period.

        ``since`` defaults to now: only lines not read yet count. An actor that exits without
        being asked (stop, kill) fails the wait at once.
        """
        deadline = time.monotonic() + timeout_s
        start = len(self.history) if since is None else since
        while time.monotonic() < deadline:
            if pump is not None:
                pump()
            round_end = time.monotonic() + period_s
            while (left := round_end - time.monotonic()) > 0:
                try:
                    self.history.append(self.lines.get(timeout=left))
                except queue.Empty:
                    break
            if (result := check(self.history[start:])) is not None:
                return result
            self._check_alive(what)
        raise AssertionError(f"no {what} within {timeout_s:.0f} s; the actors logged:\n{self.transcript()}")

    def results(self, until: Callable[[list[dict]], Any], deadline_s: float) -> list[dict]:
        """The headless display's JSON lines from now until ``until(results)`` is true."""

        def check(seen: Lines) -> list[dict] | None:
            found = display_results(seen)
            return found if found and until(found) else None

        return self.wait_for(check, "the awaited results", deadline_s, period_s=0.5)

    def stopped_counters(self, actor: str, timeout_s: float = 10.0) -> dict[str, int]:
        """The counters ``actor`` logged as it stopped (after :meth:`stop` or :meth:`stop_all`)."""
        self.wait_for(logged(actor, "stopped; counters: "), f"{actor}'s last counters", timeout_s, since=0)
        found = counters(self.history, actor)
        assert found is not None
        return found

    def _check_alive(self, what: str) -> None:
        for name, proc in self.procs.items():
            if name not in self._asked_to_exit and (code := proc.poll()) is not None:
                time.sleep(0.2)  # let the pump thread take its last words
                raise AssertionError(f"{name} exited ({code}) waiting for {what}:\n{self.transcript()}")

    def stop(self, name: str, timeout_s: float = 5.0) -> int:
        """SIGTERM one actor; its exit code (AssertionError if it ignores the signal)."""
        self._asked_to_exit.add(name)
        proc = self.procs[name]
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise AssertionError(f"{name} ignored SIGTERM for {timeout_s:.0f} s:\n{self.transcript()}") from None

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        self._asked_to_exit.add(name)
        self.procs[name].send_signal(sig)
        self.procs[name].wait(timeout=10)

    def stop_all(self, timeout_s: float = 5.0) -> dict[str, float | None]:
        """SIGTERM every running actor; seconds each took to exit (None: still running, then killed)."""
        started = time.monotonic()
        running = {n: p for n, p in self.procs.items() if p.poll() is None}
        self._asked_to_exit.update(self.procs)
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

    def kill_all(self) -> None:
        self._asked_to_exit.update(self.procs)
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()

    def transcript(self, n: int = 80) -> str:
        return "\n".join(self.output[-n:])
