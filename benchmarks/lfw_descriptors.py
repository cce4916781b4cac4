"""Real LFW descriptors for the benchmarks and the synthetic-distractor fit, cached outside the repo.

Encodes ../shared/data/lfw photo by photo (largest face, the index builder's settings) in a
shuffled but fixed order, and saves chunks of 500 under ~/.cache/megapixels/lfw-descriptors/,
so any prefix is a random sample of LFW and a rerun (or a run after kill -9) continues where
it stopped.

    .venv/bin/python -m benchmarks.lfw_descriptors [--limit N] [--workers 2]

``load()`` returns what is cached so far: descriptors (n x 128 float32), identities, photos.
"""

from __future__ import annotations

import argparse
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from index import build, store, synthetic

LFW = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "lfw"
CACHE = Path(os.environ.get("MEGAPIXELS_CACHE", Path.home() / ".cache" / "megapixels")) / "lfw-descriptors"
CHUNK = 500


def photo_order(root: Path = LFW) -> list[build.Photo]:
    found = list(build.iter_photos(root))
    order = np.random.default_rng(0).permutation(len(found))
    return [found[i] for i in order]


def load(cache: Path = CACHE) -> tuple[np.ndarray, list[str], list[str]]:
    """Every cached descriptor, with its identity and photo, in encoding order."""
    descriptors, identities, photos = [], [], []
    for f in sorted(cache.glob("chunk_*.npz")):
        with np.load(f) as z:
            descriptors.append(z["descriptors"])
            identities += z["identities"].tolist()
            photos += z["photos"].tolist()
    if not descriptors:
        raise FileNotFoundError(f"no LFW descriptors cached in {cache}: run python -m benchmarks.lfw_descriptors")
    return np.concatenate(descriptors), identities, photos


def grown_index(name: str, n: int, dtype: str) -> Path:
    """An index of the cached real descriptors grown with synthetic distractors (seed 1) to ``n`` rows,
    2 shards of ``dtype``, written with its codes, kept in the cache as ``name-<real>real-<n>``."""
    real, identities, photos = load()
    out = CACHE.parent / f"{name}-{len(real)}real-{n}"
    if (out / "manifest.json").exists():
        return out
    model = synthetic.fit(real, identities, source="LFW (benchmarks.lfw_descriptors)")
    entries = [store.Entry(i, p, None) for i, p in zip(identities, photos, strict=True)]
    grow = {"count": n - len(real), "seed": 1, "model": model}
    store.write(out, real, entries, 2, {"dataset": "LFW + synthetic distractors"}, dtype, grow)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--limit", type=int, default=0, help="stop after this many photos (0 = all of LFW)")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = p.parse_args()
    todo = photo_order()
    if args.limit:
        todo = todo[: args.limit]
    CACHE.mkdir(parents=True, exist_ok=True)
    with ProcessPoolExecutor(args.workers) as pool:
        for c in range(0, len(todo), CHUNK):
            out = CACHE / f"chunk_{c // CHUNK:03d}.npz"
            if out.exists():
                continue
            part = todo[c : c + CHUNK]
            outcomes = list(pool.map(build.describe_photo, [str(LFW)] * len(part), part))
            kept = [o for o in outcomes if o.ok]
            tmp = out.with_suffix(".tmp.npz")
            np.savez(
                tmp,
                descriptors=np.stack([o.descriptor for o in kept]).astype(np.float32),
                identities=np.array([o.identity for o in kept]),
                photos=np.array([o.photo for o in kept]),
            )
            tmp.rename(out)
            print(f"{out.name}: {len(kept)}/{len(part)} photos with a face", flush=True)


if __name__ == "__main__":
    main()
