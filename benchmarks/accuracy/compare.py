"""Cheaper side comparisons on subsets: HOG upsample 0 vs 1 (detection only, every pairs.txt photo)
and jitter 1 vs 10 (descriptors of the photos of the first pairs of fold 1).

    python -m benchmarks.accuracy.compare --jitter-pairs 40 --out benchmarks/results/compare.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from benchmarks.accuracy import describe_lfw, lfw


def detection_counts(root: Path, photos: list[str], upsample: int) -> dict:
    import faces

    none, several, started = [], 0, time.monotonic()
    for p in photos:
        boxes = faces.detect(faces.read_image(root / p), scale=1.0, upsample=upsample)
        none += [] if boxes else [p]
        several += len(boxes) > 1
    ms = 1000 * (time.monotonic() - started) / len(photos)
    return {"photos": len(photos), "no_face": len(none), "no_face_photos": none, "several": several, "ms_per_photo": ms}


def jitter_subset(root: Path, pairs: list[lfw.Pair], jitters: tuple[int, ...]) -> dict:

    photos = sorted({p.a for p in pairs} | {p.b for p in pairs})
    out: dict = {"pairs": len(pairs), "photos": len(photos)}
    same = np.array([p.same for p in pairs])
    for j in jitters:
        started, desc = time.monotonic(), {}
        for p in photos:
            rec = describe_lfw.describe_one(str(root), p, 1, j, False)
            desc[p] = rec["desc_largest"]
        d = lfw.pair_distances(pairs, desc)
        out[f"jitter{j}"] = {
            "ms_per_photo": 1000 * (time.monotonic() - started) / len(photos),
            "same_mean": float(d[same].mean()),
            "different_mean": float(d[~same].mean()),
            "accuracy_at_0.6": float(np.mean((d < 0.6) == same)),
            "accuracy_best_threshold": float(np.mean((d < lfw.best_threshold(d, same)) == same)),
            "distances": d.round(4).tolist(),
        }
        print(j, {k: v for k, v in out[f"jitter{j}"].items() if k != "distances"}, flush=True)
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", type=Path, default=lfw.DEFAULT_ROOT)
    ap.add_argument("--jitter-pairs", type=int, default=40, help="same + different pairs of fold 1 (half each)")
    ap.add_argument("--upsamples", default="0,1", help="HOG upsample settings to count detections for ('' = none)")
    ap.add_argument("--subset", default="pairs", help="photos for the detection counts: pairs, all or foldN")
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args(argv)
    res: dict = {}
    pairs = lfw.read_pairs(a.root)
    if a.jitter_pairs:
        fold1 = [p for p in pairs if p.fold == 0]
        half = a.jitter_pairs // 2
        res["jitter"] = jitter_subset(a.root, fold1[:half] + fold1[300 : 300 + half], (1, 10))
    if a.upsamples:
        photos = lfw.subset_photos(a.root, a.subset)
        for up in (int(u) for u in a.upsamples.split(",")):
            res[f"hog_upsample{up}"] = detection_counts(a.root, photos, up)
            r = res[f"hog_upsample{up}"]
            print(
                f"HOG upsample {up}: no face in {r['no_face']} of {r['photos']}, {r['ms_per_photo']:.1f} ms", flush=True
            )
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(res, indent=1) + "\n")


if __name__ == "__main__":
    main()
