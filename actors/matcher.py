"""matcher — subscribes to ``queries``, pushes ``candidates`` to the reducer.

Serves a *set* of the index's shards, each opened by ``search.open_index`` (every file's checksum
verified): with the ``bounded`` kernel (the default when the index has codes) only the shard's
int8 codes are resident and the exact rows are read from the shard file as needed; with the
others the shard's rows are resident. It answers every query with each shard's exact local top-k as
global row numbers, one ``Candidates`` per shard (so the reducer sees shards, not processes),
with the kernel ``search.kernel`` names (index/search.py). Several shards are searched in
parallel, one thread per shard: the kernels (faiss, BLAS, OpenCV's conversion) release the GIL,
and two threads in one process answer as fast as two processes (docs/SEARCH.md). Each shard
thread runs faiss on one OpenMP thread (:func:`one_thread_each`). The bounded kernel's fallbacks
are counted as ``search.more_candidates`` and ``search.full_scans``. Queries that
arrive while a search runs are answered together by the next one, as one batch (one pass over
each shard for all of them).

Which shards (:func:`serves`): ``search.matchers`` (``MEGAPIXELS_MATCHERS``, default 1) matcher
processes split the shards as ``k % M == N - 1`` for honcho's process name ``matcher.N``. So
plain ``honcho start`` (one matcher) serves every shard of whatever index it is given, and
``MEGAPIXELS_MATCHERS=2 honcho start -c matcher=2`` runs one process per core. A ``matcher.N``
with N > M, or one that would serve no shard, refuses to start naming the numbers.
``MEGAPIXELS_SHARD=1`` (or ``1,3``) names the shards outright, for a matcher on another host.

Removals (``megapixels index remove``, index/removals.py) are honoured without a restart: the
removals file is stat()ed before every batch and after every poll, re-read when it changed (the
change is logged), and each shard's removed rows are masked out of its search, which then looks
deeper than k exactly as far as needed (:func:`index.removals.topk_without`): a shard still
answers its k nearest remaining rows. An unusable removals file stops the matcher at start; later
it is logged and the rows removed before stay removed.
"""

from __future__ import annotations

import os

# One BLAS thread per search thread: the shards are the parallelism (set before numpy loads BLAS).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from actors import runtime
from index import removals, search, store
from index.gallery import finite_answer
from messages import Candidates, Query


class LayoutError(ValueError):
    """A matcher process that would serve no shard, or the wrong ones; the message says what to set."""


def process_number(name: str) -> int:
    """N of honcho's process name ``matcher.N`` (systemd units set it too); 1 for a bare ``matcher``."""
    _, _, n = name.rpartition(".")
    return int(n) if n.isdigit() and int(n) > 0 else 1


def serves(name: str, env: dict[str, str], matchers: int, n_shards: int) -> list[int]:
    """The shards the matcher process ``name`` serves: ``MEGAPIXELS_SHARD``, else ``k % M == N - 1``."""
    if env.get("MEGAPIXELS_SHARD", "").strip():
        text = env["MEGAPIXELS_SHARD"]
        try:
            shards = sorted({int(part) for part in text.split(",")})
        except ValueError:
            raise LayoutError(f"MEGAPIXELS_SHARD = {text!r}: expected shard numbers such as 0 or 1,3") from None
        wrong = [k for k in shards if not 0 <= k < n_shards]
        if wrong:
            raise LayoutError(
                f"MEGAPIXELS_SHARD = {text!r}: the index has {n_shards} shards (0 to {n_shards - 1}), not {wrong}"
            )
        return shards
    n = process_number(name)
    if n > matchers:
        raise LayoutError(
            f"{name} of {matchers}: set search.matchers = {n} (MEGAPIXELS_MATCHERS={n}) to run {n} matcher "
            f"processes, or start one matcher: it serves all {n_shards} shards"
        )
    shards = [k for k in range(n_shards) if k % matchers == n - 1]
    if not shards:
        raise LayoutError(
            f"{name} of {matchers} would serve no shard: the index has {n_shards} shards; set search.matchers "
            f"(MEGAPIXELS_MATCHERS) to at most {n_shards} and start that many matchers"
        )
    return shards


def one_thread_each() -> None:
    """A shard thread's initializer: one OpenMP thread for faiss in THIS thread. OpenMP's thread
    count is per calling thread, so the main thread's setting does not reach the pool's threads,
    whose faiss scans otherwise start a team of every core (twice the cost on 2 cores)."""
    if search.faiss is not None:
        search.faiss.omp_set_num_threads(1)


@dataclass
class Shard:
    number: int
    first_row: int
    index: search.ShardIndex
    removed: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))  # local rows, sorted


def search_shards(
    shards: list[Shard], queries: np.ndarray, k: int, pool: ThreadPoolExecutor | None
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Each shard's (m, k) global rows and distances for the (m, 128) ``queries``, in parallel on ``pool``."""

    def one(shard: Shard) -> tuple[np.ndarray, np.ndarray]:
        rows, distances = removals.topk_without(shard.index.search, queries, k, shard.index.rows, shard.removed)
        return rows + shard.first_row, distances

    if pool is None or len(shards) == 1:
        return [one(s) for s in shards]
    return list(pool.map(one, shards))


class Matcher(runtime.Actor):
    ROLE = "matcher"
    RECEIVES = ("queries",)
    SENDS = ("candidates",)
    BATCH = ("queries",)

    def on_start(self) -> None:
        index_dir = self.cfg.path("index", "path")
        if search.faiss is not None:
            search.faiss.omp_set_num_threads(1)  # threads hurt single queries; one thread per shard
        try:
            manifest = store.read_manifest(index_dir)
            self.n_shards = len(manifest.shards)
            numbers = serves(self.name, dict(os.environ), self.cfg["search"]["matchers"], self.n_shards)
            self.shards: list[Shard] = []
            for k in numbers:
                index, first_row = search.open_index(index_dir, k, manifest, self.cfg["search"]["kernel"])
                self.shards.append(Shard(k, first_row, index))
            self.removals = removals.Watch(index_dir, manifest)  # RemovalsError (a RuntimeError): unusable
        except (store.IndexStoreError, RuntimeError, LayoutError) as e:
            raise runtime.StartupError(str(e)) from e
        self._mask_removed(changed=False)
        self.pool = (
            ThreadPoolExecutor(len(self.shards), "shard", initializer=one_thread_each) if len(self.shards) > 1 else None
        )
        self.log.info(
            "shards %s of %d: %d rows (%s, %s kernel, %.0f MiB resident, %d thread%s) from %s",
            ",".join(str(s.number) for s in self.shards),
            self.n_shards,
            sum(s.index.rows for s in self.shards),
            manifest.dtype,
            self.shards[0].index.kernel,
            sum(s.index.resident_bytes for s in self.shards) / 2**20,
            len(self.shards),
            "s" if len(self.shards) > 1 else "",
            index_dir,
        )

    def _mask_removed(self, changed: bool = True) -> None:
        """Each served shard's removed rows from the removals; logged when they changed (or at start, if any)."""
        for shard in self.shards:
            shard.removed = self.removals.local(shard.first_row, shard.first_row + shard.index.rows)
        if changed or len(self.removals.rows):
            self.log.info(
                "removals: %d rows of this index removed, %d of them in the shards served here; answering without them",
                len(self.removals.rows),
                sum(len(s.removed) for s in self.shards),
            )

    def _check_removals(self) -> None:
        news = self.removals.check()
        if news is None:
            return
        if not news.ok:
            self.stats["removals.unusable"] += 1
            self.log.warning(news.text)
            return
        self.stats["removals.changes"] += 1
        self._mask_removed()

    def tick(self, now_ns: int) -> list[Any]:
        self._check_removals()  # one stat(): the change is applied and logged even while nobody is searched
        return []

    def handle(self, msg: Query) -> list[Any]:
        return self.handle_batch([msg])

    def handle_batch(self, msgs: list[Query]) -> list[Any]:
        self._check_removals()
        queries = np.stack([np.frombuffer(m.descriptor, "<f4") for m in msgs])
        found = search_shards(self.shards, queries, max(m.k for m in msgs), self.pool)
        for shard in self.shards:
            for name, n in shard.index.take_counts().items():
                if n:
                    self.stats[f"search.{name}"] += n
        out = []
        for i, msg in enumerate(msgs):
            for shard, (rows, distances) in zip(self.shards, found, strict=True):
                # A damaged shard row has a NaN distance, which the wire refuses: leave the row out, not the answer.
                (kept_rows, kept), not_finite = finite_answer(rows[i, : msg.k].tolist(), distances[i, : msg.k].tolist())
                if not_finite:
                    self.stats["candidates.not_finite_dropped"] += not_finite
                out.append(
                    Candidates(
                        self.header(msg.header.frame_id),
                        query_id=msg.query_id,
                        captured_ns=msg.captured_ns,
                        k=msg.k,
                        shard=shard.number,
                        n_shards=self.n_shards,
                        rows=kept_rows,
                        distances=kept,
                    )
                )
        return out

    def on_stop(self) -> None:
        if getattr(self, "pool", None) is not None:
            self.pool.shutdown(wait=True)
        for shard in getattr(self, "shards", []):
            shard.index.close()
        if hasattr(self, "removals"):
            self.removals.close()


if __name__ == "__main__":
    raise SystemExit(runtime.main(Matcher))
