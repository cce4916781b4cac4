"""What the kiosk's search returns for every LFW photo, as a visitor in and out of the gallery.

The verdict model (``index.calibration``) judges the best match against the visitor's own
neighbourhood: the distances to the next other identities in the same ranked list. This module
makes those ranked lists on LFW, for every photo as a query, the way the kiosk would see them:

* **gallery**: the first photo (by file name) of each of the 5,749 LFW people (one row each, as in
  ``identify``), optionally grown with SYNTHETIC distractors (``index.synthetic``: rows come in
  identity groups of 6, like MegaFace) to 10k ... 4.2M rows;
* **stranger** queries: every described photo, with its own person taken out of the gallery
  (leave-identity-out: the visitor is not in the dataset, as nearly every visitor);
* **enrolled** queries: every other photo of the 1,680 people with two or more photos, their own
  first photo in the gallery;
* smaller galleries (30 ... 1,000 rows, and 259: the demo gallery's size) are drawn at random per
  query from the 5,749 (an enrolled query's own row always in, a stranger's never).

For each query and gallery size it keeps the top ``ROWS`` rows: distances and identity numbers
(real people 0..5,748, synthetic identity g as 5,749 + g), best first. One pass over the largest
synthetic gallery gives every smaller one (a smaller gallery's distractors are a prefix of the
larger one's). Saved to ``~/.cache/megapixels/lfw/neighbours.npz`` (never in the repository).

    python -m benchmarks.accuracy.neighbours --synthetic 10000,100000,600000
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmarks.accuracy import describe_lfw, identify
from index import synthetic

ROWS = 20  # ranked rows kept per query (the kiosk shows 5; the model may look at a few more)
SAMPLED = (30, 100, 259, 1000)  # gallery sizes drawn per query from the real gallery
QUERY_BLOCK = 1024
DEFAULT_OUT = describe_lfw.CACHE / "neighbours.npz"


@dataclass
class Lists:
    """Ranked lists of one scenario at one gallery size: (queries, ROWS) distances and identities."""

    distances: np.ndarray
    identities: np.ndarray


def top_rows(d2: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k nearest columns of squared distances ``d2`` (queries x columns): distances and identities, best first.

    ``ids`` names each column's identity: one list for every query, or one list per query."""
    k = min(k, d2.shape[1])
    if k < d2.shape[1]:
        part = np.argpartition(d2, k - 1, axis=1)[:, :k]
    else:
        part = np.tile(np.arange(d2.shape[1]), (len(d2), 1))
    dk = np.take_along_axis(d2, part, axis=1)
    order = np.argsort(dk, axis=1, kind="stable")
    cols = np.take_along_axis(part, order, axis=1)
    ids = np.asarray(ids)
    ident = ids[cols] if ids.ndim == 1 else np.take_along_axis(ids, cols, axis=1)
    return np.sqrt(np.take_along_axis(dk, order, axis=1)), ident


def merge(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray], k: int) -> tuple[np.ndarray, np.ndarray]:
    """Two ranked lists per query merged into the best k."""
    d = np.concatenate([a[0], b[0]], axis=1)
    i = np.concatenate([a[1], b[1]], axis=1)
    order = np.argsort(d, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(d, order, axis=1), np.take_along_axis(i, order, axis=1)


def make(
    x: np.ndarray,
    people: list[str],
    photos: list[str],
    synthetic_sizes: tuple[int, ...] = (),
    seed: int = 0,
    rows: int = ROWS,
    log=print,
) -> dict:
    """Every ranked list (see the module docstring) as plain arrays, ready for ``np.savez``."""
    gallery_rows, probe_rows, _ = identify.split(people, photos)
    names = [people[i] for i in gallery_rows]  # person k's photo is gallery row k
    person = {n: k for k, n in enumerate(names)}
    q_person = np.array([person[p] for p in people])  # every photo is a stranger query
    enrolled = np.zeros(len(x), bool)
    enrolled[probe_rows] = True  # ... and the non-first photos of people with 2+ photos are enrolled queries
    g = x[gallery_rows]
    n_people = len(g)
    rng = np.random.default_rng(seed)
    out: dict[str, np.ndarray] = {
        "query_person": q_person,
        "enrolled": enrolled,
        "people": np.array(names),
        "photos": np.array(photos),
        "gallery_photo": np.array([photos[i] for i in gallery_rows]),
    }
    sizes = [*SAMPLED, n_people, *(n_people + s for s in synthetic_sizes)]
    out["sizes"] = np.array(sizes)
    lists = {
        (kind, n): Lists(np.zeros((len(x), rows), np.float32), np.zeros((len(x), rows), np.int64))
        for kind in ("stranger", "enrolled")
        for n in sizes
    }
    real_top: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    started = time.monotonic()
    for s in range(0, len(x), QUERY_BLOCK):
        q = slice(s, min(s + QUERY_BLOCK, len(x)))
        d2 = identify.sq_dist(x[q], g)
        own = q_person[q]
        at = np.arange(len(d2))
        for kind in ("stranger", "enrolled"):
            dk = d2.copy()
            if kind == "stranger":
                dk[at, own] = np.inf
            keys = rng.random(dk.shape, dtype=np.float32)
            keys[at, own] = np.inf if kind == "stranger" else -1.0
            for n in SAMPLED:
                pick = np.argpartition(keys, n - 1, axis=1)[:, :n]
                d, i = top_rows(np.take_along_axis(dk, pick, axis=1), pick, rows)
                lists[(kind, n)].distances[q], lists[(kind, n)].identities[q] = d, i
            d, i = top_rows(dk, np.arange(n_people), rows)
            lists[(kind, n_people)].distances[q], lists[(kind, n_people)].identities[q] = d, i
        log(f"  real galleries: {q.stop:,} of {len(x):,} queries, {time.monotonic() - started:.0f} s")
    for kind in ("stranger", "enrolled"):
        real_top[kind] = (lists[(kind, n_people)].distances, lists[(kind, n_people)].identities)
    if synthetic_sizes:
        model = synthetic.fit(x, people, source="LFW index-builder descriptors")
        per_id = model.photos_per_identity
        chunk_rows = synthetic.CHUNK_GROUPS * per_id
        best = (np.full((len(x), rows), np.inf, np.float32), np.zeros((len(x), rows), np.int64))
        done = 0
        for extra in sorted(synthetic_sizes):
            while done < extra:
                step = min(chunk_rows - done % chunk_rows, extra - done)
                chunk = synthetic.generate(model, step, seed, done)
                ident = n_people + (done + np.arange(step)) // per_id
                for s in range(0, len(x), QUERY_BLOCK):
                    q = slice(s, min(s + QUERY_BLOCK, len(x)))
                    top = top_rows(identify.sq_dist(x[q], chunk), ident, rows)
                    best_q = merge((best[0][q], best[1][q]), top, rows)
                    best[0][q], best[1][q] = best_q
                done += step
                log(f"  synthetic rows: {done:,}, {time.monotonic() - started:.0f} s")
            for kind in ("stranger", "enrolled"):
                d, i = merge(real_top[kind], best, rows)
                lists[(kind, n_people + extra)].distances[:], lists[(kind, n_people + extra)].identities[:] = d, i
    for (kind, n), li in lists.items():
        out[f"{kind}_{n}_d"] = li.distances
        out[f"{kind}_{n}_id"] = li.identities
    return out


def load(path: Path = DEFAULT_OUT) -> dict:
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--descriptors", default="index-builder", help="as identify --descriptors")
    ap.add_argument("--synthetic", default="10000,100000,600000", help="synthetic distractor rows added to the 5,749")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    a = ap.parse_args(argv)
    x, people, photos = identify.load_descriptors(a.descriptors)
    print(f"{len(x):,} described photos of {len(set(people)):,} people", flush=True)
    sizes = tuple(int(s) for s in a.synthetic.split(",") if s)
    out = make(x, people, photos, sizes, a.seed, log=lambda m: print(m, flush=True))
    out["descriptors"] = np.array(a.descriptors)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(a.out, **out)
    print(f"ranked lists of {len(x):,} queries at {out['sizes'].tolist()} rows written to {a.out}", flush=True)


if __name__ == "__main__":
    main()
