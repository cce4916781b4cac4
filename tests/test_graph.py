"""End to end: the whole Procfile under plain ``honcho start``, real processes and sockets, the bundled clip.

The operator's command, with no flags: one matcher, which must serve every shard of whatever
index it is given. The graph replays demo/clips/obama_2s.mp4 against the demo index in 2 and in
3 shards; the headless display's JSON lines must name barack_obama at rank 1, complete (not
partial), within a deadline; SIGTERM then stops every process within 5 s with none left behind.
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


@pytest.mark.timeout(300)  # includes building the 3-shard index from the 2-shard one's journal
@pytest.mark.parametrize("shards", [2, 3])
def test_plain_honcho_start_finds_obama_on_every_shard_and_stops_cleanly(shards: int, ipc_dir: Path, request):
    index = request.getfixturevalue("demo_index" if shards == 2 else "demo_index_3")
    assert len(json.loads((index / "manifest.json").read_text())["shards"]) == shards
    env = dict(
        os.environ,
        PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        PYTHONUNBUFFERED="1",
        MEGAPIXELS_CONFIG=str(PROJECT / "config" / "test.toml"),
        MEGAPIXELS_IPC_DIR=str(ipc_dir),
        MEGAPIXELS_INDEX=str(index),
        MEGAPIXELS_SOURCE=str(DEMO_CLIP),
        MEGAPIXELS_HEADLESS="1",
    )
    env.pop("MEGAPIXELS_MATCHERS", None)
    env.pop("MEGAPIXELS_SHARD", None)
    honcho = subprocess.Popen(
        [sys.executable, "-m", "honcho", "start"],
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
        "reducer.1",
        "display.1",
        "printer.1",
        "button.1",  # idle: no button configured
    }
    served = [line for line in log if "matcher.1" in line.split("|")[0] and "shards " in line]
    assert served and f"shards {','.join(map(str, range(shards)))} of {shards}" in served[0], served
    for result in results:
        assert not result["partial"] and result["missing_shards"] == [], result
        assert result["results"][0]["identity"] == "barack_obama", result
        assert result["results"][0]["distance"] < 0.45
        assert len(result["results"]) == 5 and not result["partial"]
    assert took < 5, f"honcho took {took:.1f} s to stop the graph"
    end = time.monotonic() + 5
    while any(_alive(p) for p in pids.values()) and time.monotonic() < end:
        time.sleep(0.05)
    assert not [name for name, p in pids.items() if _alive(p)], "processes left behind"
    print("end-to-end latency per result (ms):", [r["latency_ms"] for r in results])
