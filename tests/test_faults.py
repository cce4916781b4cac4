"""Faults on the real graph: a killed shard, a frozen display, SIGTERM at any moment.

Each actor runs as its own process (benchmarks/graph.py) so one can be killed, frozen or restarted
while the others keep going, as under systemd in an installation.
"""

from __future__ import annotations

import json
import queue
import signal
import time
from pathlib import Path

import pytest
import zmq

import config
from benchmarks.graph import Graph, logged
from index import store
from messages import decode, open_socket
from tests.conftest import DEMO_CLIP, PROJECT

pytestmark = pytest.mark.slow  # starts actor processes or a window

DEADLINE_MS = 400


@pytest.fixture
def graph_env(demo_index: Path, ipc_dir: Path, tmp_path: Path) -> dict[str, str]:
    cfg = tmp_path / "faults.toml"
    cfg.write_text(
        (PROJECT / "config" / "test.toml")
        .read_text()
        .replace("shard_deadline_ms = 2000", f"shard_deadline_ms = {DEADLINE_MS}")
    )
    return {
        "MEGAPIXELS_CONFIG": str(cfg),
        "MEGAPIXELS_IPC_DIR": str(ipc_dir),
        "MEGAPIXELS_INDEX": str(demo_index),
        "MEGAPIXELS_SOURCE": str(DEMO_CLIP),
        "MEGAPIXELS_HEADLESS": "1",
    }


def _complete_obama(results: list[dict]) -> bool:
    last = results[-1]
    return not last["partial"] and last["results"] and last["results"][0]["identity"] == "barack_obama"


@pytest.mark.timeout(300)
def test_a_killed_shard_gives_partial_results_and_a_restart_completes_them(graph_env):
    graph = Graph(graph_env, matchers=2)  # one process per shard (MEGAPIXELS_MATCHERS=2 -c matcher=2)
    graph.start_all()
    try:
        graph.results(_complete_obama, 150)
        graph.kill("matcher.2")  # SIGKILL: no goodbye
        partial = graph.results(lambda r: r[-1]["partial"], 30)[-1]
        assert partial["missing_shards"] == [1]
        assert partial["results"], "the surviving shard's candidates are still shown"
        first_row_of_shard_1 = store.read_manifest(Path(graph_env["MEGAPIXELS_INDEX"])).shards[1].start
        assert all(r["row"] < first_row_of_shard_1 for r in partial["results"])
        # Keep coming, each within the deadline after its query (plus the pipeline's own latency).
        more = graph.results(lambda r: len(r) >= 3 and all(x["partial"] for x in r[-3:]), 30)
        assert all(x["missing_shards"] == [1] for x in more[-3:])
        warning = graph.wait_for(logged("reducer.1", "shard 1 of 2 is missing"), "the reducer's warning", 30, since=0)
        assert "matcher.2's (search.matchers = 2" in warning, warning
        graph.start("matcher.2")
        graph.results(_complete_obama, 90)
        graph.wait_for(logged("reducer.1", "shard 1 answers again"), "the reducer's all-clear", 30, since=0)
    finally:
        took = graph.stop_all()
    assert all(t is not None and t < 5 for t in took.values()), took


@pytest.mark.timeout(300)
@pytest.mark.parametrize("moment", ["at once", "while loading", "while running"])
def test_sigterm_at_any_moment_stops_every_process_within_5_s(graph_env, moment):
    graph = Graph(graph_env)
    graph.start_all()
    if moment == "while loading":  # models and index are being loaded right after start
        graph.lines.get(timeout=60)
    elif moment == "while running":
        graph.results(lambda r: True, 150)
    took = graph.stop_all(timeout_s=5)
    assert set(took) == set(graph.names)
    slow = {name: t for name, t in took.items() if t is None or t >= 5}
    assert not slow, f"not stopped within 5 s: {slow}"
    assert all(p.poll() is not None for p in graph.procs.values())


@pytest.mark.timeout(300)
def test_a_frozen_display_stalls_nothing_and_catches_up(graph_env):
    """SIGSTOP the display for 2 s: frames and matches keep flowing; afterwards the display shows
    fresh results after a bounded backlog (the high-water marks drop the rest)."""
    graph = Graph(graph_env)
    graph.start_all()
    ctx = zmq.Context()
    cfg = config.load(env=graph_env)
    watch = {t: open_socket(ctx, cfg, t, "display", receiving=True) for t in ("frames", "matches")}
    try:
        graph.results(lambda r: len(r) >= 2, 150)
        display = graph.procs["display.1"]
        while not graph.lines.empty():  # results shown before the freeze are not its backlog
            graph.lines.get_nowait()
        display.send_signal(signal.SIGSTOP)
        frozen_at = time.monotonic()
        seen: dict[str, list[int]] = {"frames": [], "matches": []}
        gaps_ms = []
        last_frame = None
        while time.monotonic() - frozen_at < 2.0:
            for topic, sock in watch.items():
                while sock.poll(0):
                    msg = decode(sock.recv_multipart(), expect=topic)
                    seen[topic].append(getattr(msg, "query_id", msg.header.frame_id))
                    if topic == "frames":
                        now = time.monotonic()
                        if last_frame is not None:
                            gaps_ms.append((now - last_frame) * 1000)
                        last_frame = now
            time.sleep(0.005)
        display.send_signal(signal.SIGCONT)
        thawed_at = time.monotonic()
        assert len(seen["frames"]) >= 30, f"the camera stalled while the display was frozen: {len(seen['frames'])}"
        assert max(gaps_ms) < 500, f"frames stopped for {max(gaps_ms):.0f} ms"
        assert seen["matches"], "no match was published while the display was frozen"
        # After SIGCONT: wait for a result published after the thaw; count the stale ones before it.
        fresh: set[int] = set()
        end = time.monotonic() + 30
        backlog = 0
        while time.monotonic() < end:
            try:
                name, line = graph.lines.get(timeout=0.05)
            except queue.Empty:
                continue
            # The display and this watcher hear the same message: collect it here before judging.
            while watch["matches"].poll(20):
                fresh.add(decode(watch["matches"].recv_multipart()).query_id)
            if name.startswith("display") and line.startswith("{"):
                qid = json.loads(line)["query_id"]
                if qid in fresh:
                    break
                backlog += 1
        else:
            pytest.fail("the display never showed a fresh result after the freeze")
        catch_up_s = time.monotonic() - thawed_at
        assert backlog <= 30, f"{backlog} stale results queued for a 2 s freeze"
        assert catch_up_s < 5, f"the display took {catch_up_s:.1f} s to show a fresh result"
        print(
            f"frames during the freeze: {len(seen['frames'])}, matches: {len(seen['matches'])}, "
            f"largest frame gap {max(gaps_ms):.0f} ms, stale results shown after it: {backlog}, "
            f"fresh again after {catch_up_s:.1f} s"
        )
    finally:
        for sock in watch.values():
            sock.close(0)
        ctx.term()
        took = graph.stop_all()
    assert all(t is not None and t < 5 for t in took.values()), took


@pytest.mark.timeout(120)
def test_a_lost_camera_is_shown_in_its_own_words_and_its_return_too(ipc_dir: Path, tmp_path: Path):
    """The camera actor on a stream that isn't there yet, then is (a file:// URL, opened as a webcam is)."""
    stream = tmp_path / "webcam.mp4"
    cfg = tmp_path / "camera.toml"
    cfg.write_text(
        (PROJECT / "config" / "test.toml")
        .read_text()
        .replace(f'source = "{DEMO_CLIP.relative_to(PROJECT)}"', f'source = "file://{stream}"\nreconnect_s = 0.3')
    )
    graph = Graph({"MEGAPIXELS_CONFIG": str(cfg), "MEGAPIXELS_IPC_DIR": str(ipc_dir), "MEGAPIXELS_HEADLESS": "1"})
    graph.start("display.1")
    graph.start("camera.1")
    try:
        lost = _display_line(graph, "camera lost", 60)
        assert f"file://{stream}" in lost and "could not be opened" in lost and "reconnecting every 0.3 s" in lost
        stream.write_bytes(DEMO_CLIP.read_bytes())  # the webcam is plugged in
        assert f"file://{stream}" in _display_line(graph, "camera live", 30)
    finally:
        graph.stop_all()


def _display_line(graph: Graph, text: str, deadline_s: float) -> str:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        try:
            name, line = graph.lines.get(timeout=0.5)
        except queue.Empty:
            continue
        if name.startswith("display") and text in line:
            return line
    raise AssertionError(f"the display did not log {text!r} within {deadline_s} s")
