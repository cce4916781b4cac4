"""End to end: the whole Procfile under honcho, real processes and sockets, the bundled clip.

The graph replays demo/clips/obama_2s.mp4 against the demo index; the headless display's JSON
lines must name barack_obama at rank 1 within a deadline; SIGTERM then stops every process
within 5 s with none left behind.
"""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import DEMO_CLIP, PROJECT

pytestmark = pytest.mark.slow  # starts actor processes or a window

STARTED = re.compile(r"system\s+\| (\S+) started \(pid=(\d+)\)")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie has exited but not been reaped yet; it holds no resources.
    with open(f"/proc/{pid}/stat") as f:
        return f.read().split(") ")[1][0] != "Z"


def _pump(stream, lines: queue.Queue) -> None:
    for line in stream:
        lines.put(line.rstrip("\n"))
    lines.put(None)


@pytest.mark.timeout(180)
def test_graph_finds_obama_in_the_replayed_clip_and_stops_cleanly(demo_index: Path, ipc_dir: Path):
    env = dict(
        os.environ,
        PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        PYTHONUNBUFFERED="1",
        MEGAPIXELS_CONFIG=str(PROJECT / "config" / "test.toml"),
        MEGAPIXELS_IPC_DIR=str(ipc_dir),
        MEGAPIXELS_INDEX=str(demo_index),
        MEGAPIXELS_SOURCE=str(DEMO_CLIP),
        MEGAPIXELS_HEADLESS="1",
    )
    honcho = subprocess.Popen(
        [sys.executable, "-m", "honcho", "start", "-c", "matcher=2"],
        cwd=PROJECT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=_pump, args=(honcho.stdout, lines), daemon=True).start()
    pids: dict[str, int] = {}
    results = []
    log = []
    try:
        deadline = time.monotonic() + 120
        while len(results) < 5 and time.monotonic() < deadline:
            try:
                line = lines.get(timeout=1)
            except queue.Empty:
                continue
            assert line is not None, "honcho exited early:\n" + "\n".join(log[-30:])
            log.append(line)
            if m := STARTED.search(line):
                pids[m.group(1)] = int(m.group(2))
            if line.split("| ", 1)[-1].startswith("{") and "display" in line.split("|")[0]:
                results.append(json.loads(line.split("| ", 1)[1]))
        assert results, "no result within 120 s:\n" + "\n".join(log[-30:])
    finally:
        honcho.send_signal(signal.SIGTERM)
        stopped_at = time.monotonic()
        try:
            honcho.wait(timeout=10)
        finally:
            if honcho.poll() is None:
                honcho.kill()
    took = time.monotonic() - stopped_at
    assert set(pids) == {
        "camera.1",
        "detector.1",
        "encoder.1",
        "matcher.1",
        "matcher.2",
        "reducer.1",
        "display.1",
        "printer.1",
    }
    for result in results:
        assert result["results"][0]["identity"] == "barack_obama", result
        assert result["results"][0]["distance"] < 0.45
        assert len(result["results"]) == 5 and not result["partial"]
    assert took < 5, f"honcho took {took:.1f} s to stop the graph"
    end = time.monotonic() + 5
    while any(_alive(p) for p in pids.values()) and time.monotonic() < end:
        time.sleep(0.05)
    assert not [name for name, p in pids.items() if _alive(p)], "processes left behind"
    print("end-to-end latency per result (ms):", [r["latency_ms"] for r in results])
