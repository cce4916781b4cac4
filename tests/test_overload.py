"""Overload: the whole graph beside CPU hogs keeps giving results and throws no work away.

Two busy-loop processes per core (the ``hog`` fixture, killed after the test) take most of the
CPU from the actors, as other work on a shared kiosk machine or a loaded CI runner would. Slow
encoders must then get fewer, fresher faces (flow control, docs/PIPELINE.md), not a queue whose
jobs are given up: results keep coming and the detector gives up no job (``queries.given_up``,
from the counters it logs as it stops).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from benchmarks.graph import Graph
from tests.conftest import DEMO_CLIP, PROJECT

pytestmark = pytest.mark.slow  # starts actor processes

# Measured beside 4 hogs on the 2-core machine (docs/PIPELINE.md, "Overload"): ~60 results a
# minute once running. The bound leaves a wide margin for a machine loaded by more than the hog.
WINDOW_S = 60
MIN_RESULTS = 10
MAX_P90_MS = 10_000  # a result is never older than this: chips don't queue up behind a slow encoder


@pytest.mark.timeout(400)
def test_beside_a_cpu_hog_results_keep_coming_and_no_job_is_given_up(demo_index: Path, ipc_dir: Path, hog: int):
    graph = Graph(
        {
            "MEGAPIXELS_CONFIG": str(PROJECT / "config" / "test.toml"),
            "MEGAPIXELS_IPC_DIR": str(ipc_dir),
            "MEGAPIXELS_INDEX": str(demo_index),
            "MEGAPIXELS_SOURCE": str(DEMO_CLIP),
            "MEGAPIXELS_HEADLESS": "1",
        }
    )
    graph.start_all()
    try:
        graph.results(lambda r: True, 240)  # the first result: every actor started beside the hog
        started = time.monotonic()
        results = graph.results(lambda r: len(r) >= MIN_RESULTS, WINDOW_S)
        took_s = time.monotonic() - started
    finally:
        took = graph.stop_all()
    counters = graph.stopped_counters("detector.1")
    latencies = [r["latency_ms"] for r in results]
    p50, p90 = np.percentile(latencies, [50, 90])
    print(
        f"beside {hog} busy loops: {len(results)} results in {took_s:.1f} s, latency p50 {p50:.0f} ms, "
        f"p90 {p90:.0f} ms; detector counters {counters}"
    )
    assert counters.get("queries.given_up", 0) == 0, counters
    assert p90 < MAX_P90_MS, latencies
    assert all(t is not None and t < 5 for t in took.values()), took
