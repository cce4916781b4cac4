"""reducer — subscribes to ``queries``, pulls ``candidates``, publishes ``matches``.

Scatter-gather: a query opens a pending entry; each shard's candidates are added to it; once
every shard has answered (or ``search.shard_deadline_ms`` has passed since the query, when
the result is marked partial and names the missing shards) the global top-k is merged,
given identities and source photos from the index metadata, and published.

The merge, the metadata, the calibration (``p_same`` and ``verdict`` when the index has a
``calibration.json``) and hiding synthetic distractors (counted in ``matches.synthetic_hidden``)
are :class:`index.gallery.Gallery`'s, the same code ``megapixels search`` answers with.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from actors import runtime
from index import calibration, store
from index.gallery import Gallery
from messages import Candidates, Matches, Query

MAX_PENDING = 256  # queries in flight; the oldest is answered (partial) beyond this


@dataclass
class Pending:
    opened_ns: int
    captured_ns: int
    frame_id: int
    k: int
    answers: dict[int, tuple[list[int], list[float]]] = field(default_factory=dict)


class Reducer(runtime.Actor):
    ROLE = "reducer"
    RECEIVES = ("queries", "candidates")
    SENDS = ("matches",)

    def on_start(self) -> None:
        try:
            self.gallery = Gallery(self.cfg.path("index", "path"))
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
        if len(p.answers) >= self.gallery.n_shards:
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
        results, hidden, not_finite = self.gallery.results(list(p.answers.values()), p.k)
        self.stats["matches.synthetic_hidden"] += hidden
        if not_finite:  # the codec refuses such candidates; a gallery answer is checked all the same
            self.stats["matches.not_finite_dropped"] += not_finite
            self.log.warning("query %d: %d rows with a NaN or infinite distance left out", query_id, not_finite)
        missing = sorted(set(range(self.gallery.n_shards)) - set(p.answers))
        self.stats["matches.partial" if missing else "matches.complete"] += 1
        latency_ms = (now - p.captured_ns) / 1e6
        return Matches(self.header(p.frame_id), query_id, p.captured_ns, results, bool(missing), missing, latency_ms)

    def on_stop(self) -> None:
        if hasattr(self, "gallery"):
            self.gallery.close()


if __name__ == "__main__":
    raise SystemExit(runtime.main(Reducer))
