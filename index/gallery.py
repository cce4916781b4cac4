"""The gallery as the kiosk answers from it: shards' answers merged into results people can read.

One API for the reducer (which merges the matchers' answers) and for ``megapixels search`` (which
searches every shard itself), so the command line answers exactly what the kiosk shows:

- the exact global top k over every answer (:func:`index.search.merge`);
- each row's identity, photo and face box from the metadata;
- synthetic distractors (index/synthetic.py) take part in the merge like any row but are never
  shown as a person: they are left out, and the real results keep their global rank, so a gap in
  the ranks shows that a distractor came closer;
- with a ``calibration.json``, each result's ``p_same`` and ``verdict``: the best match judged
  against the next other identities in the same merged list (synthetic rows included: they are
  look-alikes the visitor could have matched), for this index's number of rows (every searched row
  is a chance for a look-alike: ACCURACY.md) and the share of visitors expected to be in the dataset
  (``index.enrolled_share``).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from config import loader
from index import calibration, search, store
from messages import Result

Answer = tuple[list[int], list[float]]  # one shard's global rows and distances, nearest first


class Gallery:
    """An index folder opened for answering (read-only); raises IndexStoreError / CalibrationError.

    ``enrolled_share``: the share of visitors expected to be in the dataset (the prior of p_same);
    default: the ``index.enrolled_share`` setting's kiosk default."""

    def __init__(self, index_dir: Path, enrolled_share: float | None = None):
        default = loader.SETTINGS["index"]["enrolled_share"].default
        self.enrolled_share = default if enrolled_share is None else float(enrolled_share)
        if not 0 < self.enrolled_share <= 1:
            raise ValueError(f"enrolled_share must be in (0, 1], got {enrolled_share}")
        self.index_dir = Path(index_dir)
        self.manifest = store.read_manifest(self.index_dir)
        self.n_shards = len(self.manifest.shards)
        self.n_rows = max(1, self.manifest.count)
        self.meta = store.Metadata(self.index_dir)
        self.calibration = calibration.load(self.index_dir)  # fitted offline; None: no p_same / verdict
        if self.calibration is not None:  # build any curve now (~0.25 s), not during the first query
            calibration.p_same(self.calibration, [0.5], ["warm-up"], self.n_rows, self.enrolled_share)

    def results(self, answers: list[Answer], k: int) -> tuple[list[Result], int]:
        """The merged top ``k`` as results, and how many synthetic rows were among them (hidden)."""
        merged = [(row, round(float(d), 4)) for row, d in search.merge(answers, k)]
        entries = self.meta.lookup([r for r, _ in merged])
        known = [(rank, row, d, entries[row]) for rank, (row, d) in enumerate(merged, start=1) if row in entries]
        confidences = self._p_same([d for _, _, d, _ in known], [e.identity for *_, e in known])
        shown = [
            self._result(rank, row, d, entry, *c)
            for (rank, row, d, entry), c in zip(known, confidences, strict=True)
            if not entry.synthetic
        ]
        return shown, sum(entry.synthetic for *_, entry in known)

    def search(self, descriptor: np.ndarray, k: int = 5) -> list[Result]:
        """Search every shard of this machine's index for one descriptor (the command line's way)."""
        answers = []
        for shard in range(self.n_shards):
            stored, first = store.open_shard(self.index_dir, shard)
            rows, dists = search.ShardIndex(stored, self.manifest.codec).search(descriptor, k)
            answers.append(((rows[0] + first).tolist(), dists[0].tolist()))
        return self.results(answers, k)[0]

    def close(self) -> None:
        self.meta.close()

    def _p_same(self, distances: list[float], identities: list[str]) -> list[tuple[float | None, str]]:
        """(p_same, verdict) of every row of one merged list, synthetic rows included (they are look-alikes
        the visitor could have matched); (None, "") without a calibration and for a distance that is no number."""
        out: list[tuple[float | None, str]] = [(None, "")] * len(distances)
        if self.calibration is None:
            return out
        ok = [i for i, d in enumerate(distances) if math.isfinite(d) and d >= 0]
        p = calibration.p_same(
            self.calibration, [distances[i] for i in ok], [identities[i] for i in ok], self.n_rows, self.enrolled_share
        )
        for i, v in zip(ok, p, strict=True):
            out[i] = (round(v, 4), calibration.verdict(v))
        return out

    @staticmethod
    def _result(rank: int, row: int, d: float, entry: store.Entry, p_same: float | None, verdict: str) -> Result:
        box = [int(v) for v in entry.box] if entry.box else []
        return Result(rank, entry.identity, d, entry.photo, row, box, p_same, verdict)
