"""reducer — subscribes to ``queries``, pulls ``candidates``, publishes ``matches``.

Scatter-gather: a query opens a pending entry; each shard's candidates are added to it; once
every shard has answered (or ``search.shard_deadline_ms`` has passed since the query, when
the result is marked partial and names the missing shards) the global top-k is merged,
given identities and source photos from the index metadata, and published.

A shard that is missing from a result is counted (``shard<k>.missing``); a shard that has not
answered at all, or has stopped answering, is also logged as a warning (once per
``SILENT_WARN_S`` per shard) naming the matcher that should serve it under ``search.matchers``
(the display's "partial results" alert shows it too). Candidates from a matcher that serves
another index (a different shard count, a shard number out of range) are counted
(``candidates.wrong_index``), logged and dropped.

The merge, the metadata, the calibration (``p_same`` and ``verdict`` when the index has a
``calibration.json``, with the ``index.enrolled_share`` prior), hiding synthetic distractors
(counted in ``matches.synthetic_hidden``) and the sentence on how many people in the dataset would
look this much like the visitor by chance (``Matches.lookalikes``) are :class:`index.gallery.Gallery`'s,
the same code ``megapixels search`` answers with. So is leaving out rows removed by ``megapixels
index remove`` (index/removals.py): the removals file is stat()ed before every answer and after
every poll, a change is logged, and a removed row that a matcher still sent (one that has not seen
the removal yet) is dropped (``matches.removed_dropped``): that answer has a row less, and never
shows it.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from actors import runtime
from index import calibration, removals, store
from index.gallery import Gallery
from messages import Candidates, Matches, Query

MAX_PENDING = 256  # queries in flight; the oldest is answered (partial) beyond this
SILENT_WARN_S = 30.0  # a missing shard is logged at most this often


def missing_shard_warning(shard: int, n_shards: int, matchers: int, last_answer_s: float | None, partial: int) -> str:
    """What to tell the operator about a shard missing from ``partial`` results (``last_answer_s``:
    seconds since its last answer, None if it never answered since the reducer started)."""
    owner = f"matcher.{shard % matchers + 1}" if matchers > 1 else "matcher.1"
    where = (
        f"it is {owner}'s (search.matchers = {matchers}: matcher.N serves shards k % {matchers} == N-1); "
        f"is {owner} running? (honcho start -c matcher={matchers} with MEGAPIXELS_MATCHERS={matchers}, "
        "or one matcher: it serves every shard)"
        if matchers > 1
        else "it is matcher.1's (search.matchers = 1: one matcher serves every shard); is matcher.1 running?"
    )
    if last_answer_s is None:
        return f"shard {shard} of {n_shards} has answered no query yet ({partial} partial results so far): {where}"
    return (
        f"shard {shard} of {n_shards} is missing from results (its last answer came {last_answer_s:.1f} s ago, "
        f"late answers count as candidates.after_close; {partial} partial results so far): {where}"
    )


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
            self.gallery = Gallery(self.cfg.path("index", "path"), self.cfg["index"]["enrolled_share"])
        except (store.IndexStoreError, calibration.CalibrationError, removals.RemovalsError) as e:
            raise runtime.StartupError(str(e)) from e
        if len(self.gallery.removals.rows):
            self.log.info(
                "removals: %d rows of this index removed; answering without them", len(self.gallery.removals.rows)
            )
        self.deadline_ns = self.cfg["search"]["shard_deadline_ms"] * 1_000_000
        self.pending: dict[int, Pending] = {}
        self.closed: OrderedDict[int, None] = OrderedDict()  # recently answered, to spot late shards
        self.matchers = self.cfg["search"]["matchers"]
        self.last_answer_ns: dict[int, int] = {}  # per shard: when it last answered
        self.warned_ns: dict[int, int] = {}  # per shard: when its absence was last logged

    def handle(self, msg: Query | Candidates) -> list[Any]:
        now = time.monotonic_ns()
        if isinstance(msg, Candidates):
            if not self._from_this_index(msg):
                return []
            self.last_answer_ns[msg.shard] = now  # late or not: the shard is alive
        if msg.query_id in self.closed:  # answered already: a late shard, or all shards beat the query
            self.stats[f"{type(msg).TOPIC}.after_close"] += 1
            return []
        # Shards may answer before the query itself arrives here: either opens the entry.
        p = self.pending.setdefault(msg.query_id, Pending(now, msg.captured_ns, msg.header.frame_id, msg.k))
        if isinstance(msg, Query):
            return self._overflow()
        p.answers[msg.shard] = (msg.rows, msg.distances)
        if self.warned_ns.pop(msg.shard, None) is not None:
            self.log.info("shard %d answers again", msg.shard)
        if len(p.answers) >= self.gallery.n_shards:
            return [self._close(msg.query_id, now)]
        return []

    def _check_removals(self) -> None:
        news = self.gallery.refresh()
        if news is not None:
            self.stats["removals.changes" if news.ok else "removals.unusable"] += 1
            (self.log.info if news.ok else self.log.warning)(news.text)

    def tick(self, now_ns: int) -> list[Any]:
        self._check_removals()  # one stat()
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
        self._check_removals()
        results, hidden, not_finite, removed = self.gallery.results(list(p.answers.values()), p.k)
        self.stats["matches.synthetic_hidden"] += hidden
        if removed:
            self.stats["matches.removed_dropped"] += removed
        if not_finite:  # the codec refuses such candidates; a gallery answer is checked all the same
            self.stats["matches.not_finite_dropped"] += not_finite
            self.log.warning("query %d: %d rows with a NaN or infinite distance left out", query_id, not_finite)
        missing = sorted(set(range(self.gallery.n_shards)) - set(p.answers))
        self.stats["matches.partial" if missing else "matches.complete"] += 1
        for shard in missing:
            self._missing(shard, now)
        latency_ms = (now - p.captured_ns) / 1e6
        lookalikes = self.gallery.lookalikes(results)
        return Matches(
            self.header(p.frame_id), query_id, p.captured_ns, results, bool(missing), missing, latency_ms, lookalikes
        )

    def _missing(self, shard: int, now: int) -> None:
        self.stats[f"shard{shard}.missing"] += 1
        if now - self.warned_ns.get(shard, now - int(SILENT_WARN_S * 1e9)) < SILENT_WARN_S * 1e9:
            return
        self.warned_ns[shard] = now
        last = self.last_answer_ns.get(shard)
        since_s = None if last is None else (now - last) / 1e9
        self.log.warning(
            missing_shard_warning(
                shard, self.gallery.n_shards, self.matchers, since_s, self.stats[f"shard{shard}.missing"]
            )
        )

    def _from_this_index(self, msg: Candidates) -> bool:
        n = self.gallery.n_shards
        if msg.n_shards == n and 0 <= msg.shard < n:
            return True
        self.stats["candidates.wrong_index"] += 1
        if self.stats["candidates.wrong_index"] == 1:
            self.log.warning(
                "dropped candidates of shard %d of %d from %s: this reducer's index has %d shards "
                "(do the matchers and the reducer use the same index.path?)",
                msg.shard,
                msg.n_shards,
                msg.header.src,
                n,
            )
        return False

    def on_stop(self) -> None:
        if hasattr(self, "gallery"):
            self.gallery.close()


if __name__ == "__main__":
    raise SystemExit(runtime.main(Reducer))
