"""matcher.k — subscribes to ``queries``, pushes ``candidates`` to the reducer.

Holds shard k of the gallery (loaded from the memory-mapped shard file, with precomputed row
norms) and answers every query with its exact local top-k as global row numbers. The shard
is ``k = N - 1`` for honcho's process name ``matcher.N`` (``honcho start -c matcher=2``), or
``MEGAPIXELS_SHARD``.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from actors import runtime
from index import search, store
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

    def on_start(self) -> None:
        index_dir = self.cfg.path("index", "path")
        self.shard = shard_number(self.name, dict(os.environ))
        try:
            self.n_shards = len(store.read_manifest(index_dir)["shards"])
            mapped, self.first_row = store.open_shard(index_dir, self.shard)
        except store.IndexStoreError as e:
            raise runtime.StartupError(str(e)) from e
        self.gallery = np.ascontiguousarray(mapped)  # resident: a query must not wait on the disk
        self.norms_sq = search.squared_norms(self.gallery)
        self.log.info("shard %d/%d: %d rows from %s", self.shard, self.n_shards, len(self.gallery), index_dir)

    def handle(self, msg: Query) -> list[Any]:
        query = np.frombuffer(msg.descriptor, "<f4")
        rows, distances = search.topk(self.gallery, self.norms_sq, query, msg.k)
        return [
            Candidates(
                self.header(msg.header.frame_id),
                query_id=msg.query_id,
                captured_ns=msg.captured_ns,
                k=msg.k,
                shard=self.shard,
                n_shards=self.n_shards,
                rows=(rows + self.first_row).tolist(),
                distances=distances.tolist(),
            )
        ]


if __name__ == "__main__":
    raise SystemExit(runtime.main(Matcher))
