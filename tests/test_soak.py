"""A short soak in the suite (the 10-minute one is `python -m benchmarks.soak`, see RELIABILITY.md)."""

from __future__ import annotations

import pytest

from benchmarks.soak import soak

pytestmark = pytest.mark.slow  # starts actor processes or a window


@pytest.mark.timeout(300)
def test_short_soak_keeps_memory_flat_and_loses_no_result(demo_index):
    report = soak(seconds=45, warmup_s=20, index_dir=demo_index, sample_every_s=2)
    assert len(report.latencies) >= 10, "too few results to judge"
    assert report.lost(set()) == 0, f"{report.lost(set())} queries never got a result"
    growth = report.growth()
    assert set(growth) >= {"camera.1", "detector.1", "encoder.1", "matcher.1", "reducer.1", "display.1"}
    # 25 s after warm-up is short: allow more than the 10-minute run's 5 %, but not a leak's slope.
    assert all(g < 15 for g in growth.values()), growth
