"""Soak: the replay loop through the whole graph for minutes; memory, latency and lost results.

    .venv/bin/python -m benchmarks.soak --minutes 10
    .venv/bin/python -m benchmarks.soak --minutes 3 --warmup-s 30 --hog 4   # with 4 busy loops beside it

Every actor runs as its own process on ipc sockets in a private folder, replaying the bundled
Obama clip in a loop against the demo index. Every 5 s it samples each actor's resident memory
(VmRSS); a monitor subscribes to ``queries`` and ``matches`` to count queries that never got a
result and to collect latencies. It prints per-actor memory growth after warm-up (target < 5 %),
latency p50 / p99 per window (stable), and lost results (target 0). ``--hog N`` starts N busy-loop
processes beside the graph (benchmarks.graph.hog) for the whole run: the overload figures (results
per minute, latency p50 / p90, the detector's ``queries.given_up``) under a machine short of CPU.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import zmq

import config
from benchmarks.graph import Graph, hog
from config.loader import PROJECT_ROOT as PROJECT
from messages import decode, open_socket


@dataclass
class Report:
    seconds: float
    warmup_s: float
    rss_kb: dict[str, list[tuple[float, int]]] = field(default_factory=dict)  # actor -> (t, kB)
    latencies: list[tuple[float, float]] = field(default_factory=list)  # (t, latency_ms)
    queries: set[int] = field(default_factory=set)
    answered: set[int] = field(default_factory=set)
    partial: int = 0
    detector: dict[str, int] = field(default_factory=dict)  # the detector's counters as it stopped

    def growth(self) -> dict[str, float]:
        """Per actor: resident memory at the end vs right after warm-up, in percent."""
        out = {}
        for name, samples in self.rss_kb.items():
            after = [kb for t, kb in samples if t >= self.warmup_s]
            if len(after) >= 2:
                out[name] = 100.0 * (after[-1] - after[0]) / after[0]
        return out

    def windows(self, n: int = 5) -> list[tuple[float, float, int]]:
        """(p50, p99, count) of latency in n equal windows after warm-up."""
        span = (self.seconds - self.warmup_s) / n
        rows = []
        for i in range(n):
            lo, hi = self.warmup_s + i * span, self.warmup_s + (i + 1) * span
            xs = [ms for t, ms in self.latencies if lo <= t < hi]
            if xs:
                rows.append((float(np.percentile(xs, 50)), float(np.percentile(xs, 99)), len(xs)))
        return rows

    def after_warmup(self) -> list[float]:
        return [ms for t, ms in self.latencies if t >= self.warmup_s]

    def lost(self, grace: set[int]) -> int:
        """Queries that never got a result, except those still in flight at the end."""
        return len(self.queries - self.answered - grace)


def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def soak(seconds: float, warmup_s: float, index_dir: Path, sample_every_s: float = 5.0, hogs: int = 0) -> Report:
    ipc_dir = Path(tempfile.mkdtemp(prefix="soak-", dir="/tmp"))
    env = {
        "MEGAPIXELS_CONFIG": str(PROJECT / "config" / "test.toml"),
        "MEGAPIXELS_IPC_DIR": str(ipc_dir),
        "MEGAPIXELS_INDEX": str(index_dir),
        "MEGAPIXELS_SOURCE": str(PROJECT / "demo" / "clips" / "obama_2s.mp4"),
        "MEGAPIXELS_HEADLESS": "1",
    }
    graph = Graph(env)
    ctx = zmq.Context()
    cfg = config.load(env=env)
    monitor = {t: open_socket(ctx, cfg, t, "display", receiving=True) for t in ("queries", "matches")}
    for sock in monitor.values():
        sock.setsockopt(zmq.RCVHWM, 100_000)  # the monitor itself must not drop what it counts
    report = Report(seconds, warmup_s)
    with hog(hogs):
        graph.start_all()
        try:
            start = time.monotonic()
            next_sample = start
            late_queries: set[int] = set()
            while (now := time.monotonic()) - start < seconds:
                while not graph.lines.empty():
                    graph.history.append(graph.lines.get_nowait())  # keep the pipes drained
                for topic, sock in monitor.items():
                    while sock.poll(0):
                        msg = decode(sock.recv_multipart(), expect=topic)
                        if topic == "queries":
                            report.queries.add(msg.query_id)
                            if now - start > seconds - 3:
                                late_queries.add(msg.query_id)
                        else:
                            report.answered.add(msg.query_id)
                            report.partial += msg.partial
                            report.latencies.append((now - start, msg.latency_ms))
                if now >= next_sample:
                    for name, proc in graph.procs.items():
                        report.rss_kb.setdefault(name, []).append((now - start, _rss_kb(proc.pid)))
                    next_sample += sample_every_s
                time.sleep(0.01)
            report.queries -= late_queries
        finally:
            for sock in monitor.values():
                sock.close(0)
            ctx.term()
            graph.stop_all()
            shutil.rmtree(ipc_dir, ignore_errors=True)
    report.detector = graph.stopped_counters("detector.1")
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--warmup-s", type=float, default=60.0)
    parser.add_argument("--hog", type=int, default=0, help="busy-loop processes beside the graph")
    parser.add_argument("--index", type=Path, default=PROJECT / "build" / "demo-index-2shards")
    args = parser.parse_args()
    if not (args.index / "manifest.json").exists():
        from index import build

        build.build(PROJECT / "demo" / "gallery", args.index, n_shards=2)
    report = soak(args.minutes * 60, args.warmup_s, args.index, hogs=args.hog)
    print(
        f"soak: {args.minutes:g} min, warm-up {args.warmup_s:g} s, {args.hog} hog processes, "
        f"{len(report.latencies)} results"
    )
    print(f"{'actor':<12} {'RSS after warm-up':>18} {'RSS at end':>12} {'growth':>8}")
    growth = report.growth()
    for name, samples in sorted(report.rss_kb.items()):
        after = [kb for t, kb in samples if t >= report.warmup_s]
        print(f"{name:<12} {after[0] / 1024:>15.1f} MB {after[-1] / 1024:>9.1f} MB {growth[name]:>7.2f}%")
    print("latency per window (ms): " + "; ".join(f"p50 {a:.0f} p99 {b:.0f} (n={n})" for a, b, n in report.windows()))
    lost = report.lost(set())
    print(
        f"queries {len(report.queries)}, answered {len(report.answered & report.queries)}, lost {lost}, "
        f"partial {report.partial}"
    )
    measured = report.after_warmup()
    minutes = (report.seconds - report.warmup_s) / 60
    if measured:
        p50, p90 = np.percentile(measured, [50, 90])
        print(f"after warm-up: {len(measured) / minutes:.1f} results/min, latency p50 {p50:.0f} ms, p90 {p90:.0f} ms")
    given_up = report.detector.get("queries.given_up", 0)
    print(f"detector: queries.given_up {given_up}; counters {report.detector}")
    ok = all(g < 5 for g in growth.values()) and lost == 0
    print("PASS" if ok else "FAIL", "(memory growth < 5 % per actor, no lost result)")
    print(
        "load average at the end:",
        Path("/proc/loadavg").read_text().split()[:3],
        "median latency",
        f"{statistics.median(ms for _, ms in report.latencies):.0f} ms",
    )
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
