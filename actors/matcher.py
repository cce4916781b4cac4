"""matcher.k — subscribes to ``queries``, pushes ``candidates`` to the reducer.

Holds shard k of the gallery resident in memory (read from the memory-mapped shard file, its
checksum verified) and answers every query with its exact local top-k as global row numbers,
with the kernel ``search.kernel`` names (index/search.py), on one thread: the shards are the
parallelism, one process per core. Queries that arrive while a search runs are answered
together by the next one, as one batch (one pass over the shard for all of them), so a burst
of visitors or encoders does not queue up one full scan per query. The shard
is ``k = N - 1`` for honcho's process name ``matcher.N`` (``honcho start -c matcher=2``), or
``MEGAPIXELS_SHARD``.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from actors import runtime
from index import search, store
from index.gallery import finite_answer
from messages import Candidates, Query


def shard_number(name: str, env: dict[str, str]) -> int:
    if env.get("MEGAPIXELS_SHARD", "") != "":
        return int(env["MEGAPIXELS_SHARD"])
    _, _, n = name.rpartition(".")
    return int(n) - 1 if n.isdigit() else 0


class Matcher(runtime.Actor):
    ROLE = "matcher"
    RECEIVES = ("queries",)
    SENDS = ("candidates",)
    BATCH = ("queries",)

    def on_start(self) -> None:
        index_dir = self.cfg.path("index", "path")
        self.shard = shard_number(self.name, dict(os.environ))
        if search.faiss is not None:
            search.faiss.omp_set_num_threads(1)  # threads hurt single queries; shards use the cores
        try:
            manifest = store.read_manifest(index_dir)
            self.n_shards = len(manifest.shards)
            mapped, self.first_row = store.open_shard(index_dir, self.shard)
            self.index = search.ShardIndex(mapped, manifest.codec, self.cfg["search"]["kernel"])
        except (store.IndexStoreError, RuntimeError) as e:
            raise runtime.StartupError(str(e)) from e
        self.log.info(
            "shard %d/%d: %d rows (%s, %s kernel, %.0f MiB resident) from %s",
            self.shard,
            self.n_shards,
            self.index.rows,
            manifest.dtype,
            self.index.kernel,
            self.index.resident_bytes / 2**20,
            index_dir,
        )

    def handle(self, msg: Query) -> list[Any]:
        return self.handle_batch([msg])

    def handle_batch(self, msgs: list[Query]) -> list[Any]:
        queries = np.stack([np.frombuffer(m.descriptor, "<f4") for m in msgs])
        found_rows, found_distances = self.index.search(queries, max(m.k for m in msgs))
        out = []
        for msg, rows, distances in zip(msgs, found_rows, found_distances, strict=True):
            # A damaged shard row has a NaN distance, which the wire refuses: leave the row out, not the answer.
            (kept_rows, kept), not_finite = finite_answer(
                (rows[: msg.k] + self.first_row).tolist(), distances[: msg.k].tolist()
            )
            if not_finite:
                self.stats["candidates.not_finite_dropped"] += not_finite
            out.append(
                Candidates(
                    self.header(msg.header.frame_id),
                    query_id=msg.query_id,
                    captured_ns=msg.captured_ns,
                    k=msg.k,
                    shard=self.shard,
                    n_shards=self.n_shards,
                    rows=kept_rows,
                    distances=kept,
                )
            )
        return out


if __name__ == "__main__":
    raise SystemExit(runtime.main(Matcher))
