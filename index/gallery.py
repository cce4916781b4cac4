"""The gallery as the kiosk answers from it: shards' answers merged into results people can read.

One API for the reducer (which merges the matchers' answers) and for ``megapixels search`` (which
searches every shard itself), so the command line answers exactly what the kiosk shows:

- the exact global top k over every answer (:func:`index.search.merge`);
- each row's identity, photo and face box from the metadata, and its provenance where the
  dataset gives it (Flickr account, photo id, licence, date taken, URL);
- synthetic distractors (index/synthetic.py) take part in the merge like any row but are never
  shown as a person: they are left out, and the real results keep their global rank, so a gap in
  the ranks shows that a distractor came closer;
- with a ``calibration.json``, each result's ``p_same`` and ``verdict``: the best match judged
  against the next other identities in the same merged list (synthetic rows included: they are
  look-alikes the visitor could have matched), for this index's number of rows (every searched row
  is a chance for a look-alike: ACCURACY.md) and the share of visitors expected to be in the dataset
  (``index.enrolled_share``);
- rows removed by ``megapixels index remove`` (index/removals.py) are left out before the merge,
  and the calibration counts only the rows that remain; :meth:`Gallery.refresh` re-reads the
  removals when their file changes (the reducer calls it before every answer), and
  :meth:`Gallery.search` looks deeper than k in each shard, exactly as deep as needed, so it
  still answers k remaining rows;
- a row whose distance is NaN, infinite or negative (a damaged shard row or query) is left out
  before the merge, where it would sort anywhere, and counted: it is no answer, and the wire and
  the display's JSON carry finite numbers only (messages/codec.py);
- with a look-alike table in the calibration, one sentence (:meth:`Gallery.lookalikes`): about how many
  of the index's real people would be at least as close to the visitor as the best shown match, by
  chance (index/lookalikes.py). Synthetic distractors are not people and do not count.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import NamedTuple

import numpy as np

from config import loader
from index import calibration, lookalikes, removals, search, store
from messages import Result
from messages.schemas import LIMITS

Answer = tuple[list[int], list[float]]  # one shard's global rows and distances, nearest first


class Answered(NamedTuple):
    results: list[Result]  # the merged top k people can see, best first
    hidden: int  # synthetic distractors among the top k (not shown)
    not_finite: int  # rows dropped before the merge: distance NaN, infinite or negative
    removed: int = 0  # removed rows dropped before the merge (a matcher that had not seen the removal yet)


def finite_answer(rows: list[int], distances: list[float]) -> tuple[Answer, int]:
    """``(rows, distances)`` without the pairs whose distance is NaN, infinite or negative; and how many went."""
    kept = [(r, d) for r, d in zip(rows, distances, strict=True) if math.isfinite(d) and d >= 0]
    return ([r for r, _ in kept], [d for _, d in kept]), len(rows) - len(kept)


def without_removed(rows: list[int], distances: list[float], removed: np.ndarray) -> tuple[Answer, int]:
    """``(rows, distances)`` without the rows in ``removed`` (sorted); and how many went."""
    if not len(removed) or not rows:
        return (rows, distances), 0
    gone = removals.is_removed(np.asarray(rows, np.int64), removed)
    kept = [(r, d) for r, d, g in zip(rows, distances, gone, strict=True) if not g]
    return ([r for r, _ in kept], [d for _, d in kept]), int(gone.sum())


class Gallery:
    """An index folder opened for answering (read-only); raises IndexStoreError / CalibrationError /
    RemovalsError at open when any part it answers from (manifest, metadata, calibration, removals)
    is unusable.

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
        self.meta = store.Metadata(self.index_dir, self.manifest)  # checked: integrity, table, row count
        try:
            self.removals = removals.Watch(self.index_dir, self.manifest)  # RemovalsError: unusable file
        except removals.RemovalsError:
            self.meta.close()
            raise
        self.calibration = calibration.load(self.index_dir)  # fitted offline; None: no p_same / verdict
        if self.calibration is not None:  # build any curve now (~0.25 s), not during the first query
            calibration.p_same(self.calibration, [0.5], ["warm-up"], self.n_rows, self.enrolled_share)

    @property
    def n_rows(self) -> int:
        """Rows searched: the index's, without the removed ones (the calibration's gallery size)."""
        return max(1, self.manifest.count - len(self.removals.rows))

    def refresh(self) -> removals.News | None:
        """Re-read the removals if their file changed (one stat() otherwise); what changed, or None."""
        return self.removals.check()

    def results(self, answers: list[Answer], k: int) -> Answered:
        """The merged top ``k`` as results; how many synthetic rows were among them, how many rows
        weren't finite, how many removed rows were left out."""
        kept = [without_removed(rows, distances, self.removals.rows) for rows, distances in answers]
        removed = sum(n for _, n in kept)
        checked = [finite_answer(rows, distances) for (rows, distances), _ in kept]
        not_finite = sum(n for _, n in checked)
        merged = [(row, round(float(d), 4)) for row, d in search.merge([answer for answer, _ in checked], k)]
        entries = self.meta.lookup([r for r, _ in merged])
        known = [(rank, row, d, entries[row]) for rank, (row, d) in enumerate(merged, start=1) if row in entries]
        confidences = self._p_same([d for _, _, d, _ in known], [e.identity for *_, e in known])
        shown = [
            self._result(rank, row, d, entry, *c)
            for (rank, row, d, entry), c in zip(known, confidences, strict=True)
            if not entry.synthetic
        ]
        return Answered(shown, sum(entry.synthetic for *_, entry in known), not_finite, removed)

    def lookalikes(self, results: list[Result]) -> str:
        """How many of this index's people would look at least as much like the visitor as the best of
        ``results`` by chance, in one sentence; '' without a look-alike table or results.

        Counts the real people (the manifest's identities; synthetic rows are not people) and their mean
        number of photos (real rows per person); the next other people in ``results`` keep the high end
        from claiming fewer look-alikes than the visitor's own results show (index/lookalikes.py)."""
        table = self.calibration.lookalikes if self.calibration is not None else None
        people = self.manifest.identities
        if table is None or not results or people < 1:
            return ""
        ranked = sorted(results, key=lambda r: r.distance)
        nearest: dict[str, float] = {}
        for r in ranked:
            nearest.setdefault(r.identity, r.distance)
        best, *others = nearest.values()  # each person once, best first: the others are strangers for sure
        return lookalikes.sentence(lookalikes.expected(table, best, people, self.manifest.real / people, others))

    def search(self, descriptor: np.ndarray, k: int = 5) -> list[Result]:
        """Search every shard of this machine's index for one descriptor (the command line's way)."""
        answers = []
        for shard, info in enumerate(self.manifest.shards):
            index, first = search.open_index(self.index_dir, shard, self.manifest)  # the matcher's kernel
            removed = self.removals.local(info.start, info.stop)
            try:
                rows, dists = removals.topk_without(index.search, np.atleast_2d(descriptor), k, index.rows, removed)
            finally:
                index.close()
            answers.append(((rows[0] + first).tolist(), dists[0].tolist()))
        return self.results(answers, k).results

    def close(self) -> None:
        self.meta.close()
        self.removals.close()

    def _p_same(self, distances: list[float], identities: list[str]) -> list[tuple[float | None, str]]:
        """(p_same, verdict) of every row of one merged list (finite distances only), synthetic rows
        included: they are look-alikes the visitor could have matched; (None, "") without a calibration."""
        if self.calibration is None:
            return [(None, "")] * len(distances)
        p = calibration.p_same(self.calibration, distances, identities, self.n_rows, self.enrolled_share)
        return [(round(v, 4), calibration.verdict(v)) for v in p]

    @staticmethod
    def _result(rank: int, row: int, d: float, entry: store.Entry, p_same: float | None, verdict: str) -> Result:
        box = [int(v) for v in entry.box] if entry.box else []
        provenance = {
            name: value if len(value) <= LIMITS[name] else ""  # a value the wire would refuse is left out
            for name, value in (
                ("nsid", entry.nsid),
                ("photo_id", entry.photo_id),
                ("licence", entry.licence),
                ("date_taken", entry.date_taken),
                ("url", entry.url),
            )
        }
        return Result(rank, entry.identity, d, entry.photo, row, box, p_same, verdict, **provenance)
