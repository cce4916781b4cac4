"""reducer — subscribes to ``queries``, pulls ``candidates``, publishes ``matches``.

Scatter-gather: a query opens a pending entry; each shard's candidates are added to it; once
every shard has answered (or ``search.shard_deadline_ms`` has passed since the query, when
the result is marked partial and names the missing shards) the global top-k is merged,
given identities and source photos from the index metadata, and published.

Synthetic distractors (rows an index grown to MegaFace scale holds, index/synthetic.py) take
part in the exact merge like any row, but are never shown as a person: they are left out of
``results`` (counted in ``matches.synthetic_hidden``). The real entries that remain keep their
global rank, so a gap in the ranks shows that a distractor came closer.
given identities and source photos from the index metadata, and published. When the index has a
``calibration.json``, each result also carries ``p_same`` (probability that it is the visitor rather
than a look-alike, for this index's number of rows) and ``verdict``.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from actors import runtime
from index import calibration, search, store
from messages import Candidates, Matches, Query

MAX_PENDING = 256  # queries in flight; the oldest is answered (partial) beyond this


@dataclass
class Pending:
    opened_ns: int
    captured_ns: int
    frame_id: int
    k: int
    answers: dict[int, tuple[list[int], list[float]]] = field(default_factory=dict)


def result_entry(rank: int, row: int, distance: float, entry: store.Entry) -> dict[str, Any]:
    """One result as the display and the printer receive it."""
    return {
        "rank": rank,
        "identity": entry.identity,
        "distance": round(float(distance), 4),
        "photo": entry.photo,
        "row": row,
    }


class Reducer(runtime.Actor):
    ROLE = "reducer"
    RECEIVES = ("queries", "candidates")
    SENDS = ("matches",)

    def on_start(self) -> None:
        index_dir = self.cfg.path("index", "path")
        try:
            manifest = store.read_manifest(index_dir)
            self.n_shards = len(manifest["shards"])
            self.meta = store.Metadata(index_dir)
            self.calibration = calibration.load(index_dir)  # fitted offline; None: no p_same/verdict
            # Every searched row, real or synthetic, is a chance for a look-alike: N counts rows (ACCURACY.md).
            self.n_rows = max(1, int(manifest.get("count", 1)))
            if self.calibration is not None:  # build the curve now (~0.25 s), not during the first query
                calibration.match_probability(self.calibration, 0.5, self.n_rows)
        except (store.IndexStoreError, calibration.CalibrationError) as e:
            raise runtime.StartupError(str(e)) from e
        self.deadline_ns = self.cfg["search"]["shard_deadline_ms"] * 1_000_000
        self.pending: dict[int, Pending] = {}
        self.closed: OrderedDict[int, None] = OrderedDict()  # recently answered, to spot late shards

    def handle(self, msg: Query | Candidates) -> list[Any]:
        now = time.monotonic_ns()
        if msg.query_id in self.closed:  # answered already: a late shard, or all shards beat the query
            self.stats[f"{type(msg).TOPIC}.after_close"] += 1
            return []
        # Shards may answer before the query itself arrives here: either opens the entry.
        p = self.pending.setdefault(msg.query_id, Pending(now, msg.captured_ns, msg.header.frame_id, msg.k))
        if isinstance(msg, Query):
            return self._overflow()
        p.answers[msg.shard] = (msg.rows, msg.distances)
        if len(p.answers) >= self.n_shards:
            return [self._close(msg.query_id, now)]
        return []

    def tick(self, now_ns: int) -> list[Any]:
        expired = [q for q, p in self.pending.items() if now_ns - p.opened_ns > self.deadline_ns]
        return [self._close(q, now_ns) for q in expired]

    def next_tick_ms(self, now_ns: int) -> float:
        if not self.pending:
            return runtime.POLL_MS
        oldest = min(p.opened_ns for p in self.pending.values())
        return (oldest + self.deadline_ns - now_ns) / 1e6

    def _overflow(self) -> list[Any]:
        out = []
        while len(self.pending) > MAX_PENDING:
            out.append(self._close(next(iter(self.pending)), time.monotonic_ns()))
        return out

    def _close(self, query_id: int, now: int) -> Matches:
        p = self.pending.pop(query_id)
        self.closed[query_id] = None
        if len(self.closed) > MAX_PENDING:
            self.closed.popitem(last=False)
        merged = search.merge(list(p.answers.values()), p.k)
        meta = self.meta.lookup([r for r, _ in merged])
        results = [
            result_entry(i + 1, r, d, meta[r]) for i, (r, d) in enumerate(merged) if r in meta and not meta[r].synthetic
        ]
        self.stats["matches.synthetic_hidden"] += sum(1 for r, _ in merged if r in meta and meta[r].synthetic)
        if self.calibration is not None:
            for r in results:
                if math.isfinite(r["distance"]) and r["distance"] >= 0:
                    p_same = calibration.match_probability(self.calibration, r["distance"], self.n_rows)
                    r["p_same"], r["verdict"] = round(p_same, 4), calibration.verdict(p_same)
        missing = sorted(set(range(self.n_shards)) - set(p.answers))
        self.stats["matches.partial" if missing else "matches.complete"] += 1
        latency_ms = (now - p.captured_ns) / 1e6
        return Matches(self.header(p.frame_id), query_id, results, bool(missing), missing, latency_ms)

    def on_stop(self) -> None:
        if hasattr(self, "meta"):
            self.meta.close()


if __name__ == "__main__":
    raise SystemExit(runtime.main(Reducer))
