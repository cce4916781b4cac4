"""LFW verification, official 10-fold protocol, on cached descriptors (see describe_lfw).

Prints one row per variant (VARIANTS: centre-most or largest face, alone or averaged with the
mirrored chip or the mirrored photo, plainly or at unit length; the mirrored-photo descriptors come
from ``describe_lfw --flip-photo``): mean +- std of the ten test-fold accuracies, the thresholds
chosen, and the photos where HOG found no face (a centre box stood in). Subset settings (jitter 10, one
fold) are compared on that fold only, with the threshold chosen on the other nine folds of the
jitter-1 run and with the fold's own best threshold, both stated.

    python -m benchmarks.accuracy.verify --out benchmarks/results/verify.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from benchmarks.accuracy import describe_lfw, lfw

# Variant -> (descriptor of the photo, descriptor averaged in or None). "mirror*" average in the mirrored
# aligned CHIP; "flip*" the mirrored PHOTO (HOG, landmarks and chip on it: describe_lfw --flip-photo);
# "flipbox*" the original box mirrored onto the mirrored photo (no second HOG pass).
VARIANTS = {
    "centre": ("desc", None),
    "largest": ("desc_largest", None),
    "mirror": ("desc", "desc_mirror"),
    "flip": ("desc", "desc_flip"),
    "flip_largest": ("desc_largest", "desc_flip_largest"),
    "flipbox": ("desc", "desc_flipbox"),
    "flipbox_largest": ("desc_largest", "desc_flipbox_largest"),
}
UNIT = "_unit"  # suffix: each descriptor scaled to unit length before averaging


def unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


def variant_descriptors(recs: dict[str, dict], variant: str) -> dict[str, np.ndarray]:
    """One descriptor per photo for ``variant`` (a key of VARIANTS, optionally with the UNIT suffix)."""
    scaled = variant.endswith(UNIT)
    base = variant.removesuffix(UNIT) if scaled else variant
    if base not in VARIANTS or (scaled and VARIANTS[base][1] is None):
        raise ValueError(f"unknown variant {variant!r}")
    own, other = VARIANTS[base]
    f = unit if scaled else (lambda v: v)
    if other is None:
        return {p: r[own] for p, r in recs.items()}
    return {p: (f(r[own]) + f(r[other])) / 2 for p, r in recs.items()}


def has_variant(recs: dict[str, dict], photos: set[str], variant: str) -> bool:
    """Every photo has the descriptors ``variant`` needs (the mirrored ones are optional in the cache)."""
    keys = [k for k in VARIANTS[variant.removesuffix(UNIT)] if k]
    return all(p in recs and all(k in recs[p] and not np.isnan(recs[p][k]).any() for k in keys) for p in photos)


def evaluate(pairs: list[lfw.Pair], desc: dict[str, np.ndarray]) -> dict:
    d = lfw.pair_distances(pairs, desc)
    same = np.array([p.same for p in pairs])
    folds = np.array([p.fold for p in pairs])
    tf = lfw.ten_fold(d, same, folds)
    return {
        "mean": tf.mean,
        "std": tf.std,
        "folds": tf.accuracies,
        "thresholds": tf.thresholds,
        "same_mean_distance": float(d[same].mean()),
        "different_mean_distance": float(d[~same].mean()),
    }


def held_out_fold(pairs: list[lfw.Pair], recs: dict[str, dict], base: dict[str, dict], fold: int) -> dict:
    """A setting described on one fold only (e.g. jitter 10), largest face, against the base setting.

    The threshold comes from the base setting's other nine folds (the protocol's way); the fold's own
    best threshold is reported too (optimistic: chosen on the test pairs)."""
    train = [p for p in pairs if p.fold != fold]
    test = [p for p in pairs if p.fold == fold]
    base_desc = {p: r["desc_largest"] for p, r in base.items()}
    desc = {p: r["desc_largest"] for p, r in recs.items()}
    t = lfw.best_threshold(lfw.pair_distances(train, base_desc), np.array([p.same for p in train]))
    same = np.array([p.same for p in test])
    d, d_base = lfw.pair_distances(test, desc), lfw.pair_distances(test, base_desc)
    own = lfw.best_threshold(d, same)
    return {
        "fold": fold + 1,
        "pairs": len(test),
        "threshold": t,
        "accuracy": float(np.mean((d < t) == same)),
        "base_accuracy": float(np.mean((d_base < t) == same)),
        "accuracy_own_threshold": float(np.mean((d < own) == same)),
        "own_threshold": own,
        "same_mean_distance": float(d[same].mean()),
        "different_mean_distance": float(d[~same].mean()),
        "base_same_mean_distance": float(d_base[same].mean()),
        "base_different_mean_distance": float(d_base[~same].mean()),
    }


def failures(pairs: list[lfw.Pair], recs: dict[str, dict]) -> dict:
    used = {p.a for p in pairs} | {p.b for p in pairs}
    recs = {p: r for p, r in recs.items() if p in used}
    photos = sorted(p for p, r in recs.items() if r["fallback"])
    bad = set(photos)
    touched = [p for p in pairs if p.a in bad or p.b in bad]
    several = sorted(p for p, r in recs.items() if r["faces"] > 1)
    differs = sorted(p for p, r in recs.items() if tuple(r["box"]) != tuple(r["box_largest"]))
    return {
        "no_face_photos": photos,
        "fallback_box": [int(v) for v in recs[photos[0]]["box"]] if photos else None,
        "pairs_touching_a_fallback": len(touched),
        "several_faces_photos": len(several),
        "centre_most_is_not_largest": differs,
    }


def complete_folds(pairs: list[lfw.Pair], recs: dict[str, dict]) -> list[int]:
    """Folds (0-based) whose every photo is described: a partial cache is evaluated on whole folds only."""
    folds = sorted({p.fold for p in pairs})
    return [k for k in folds if all(p.a in recs and p.b in recs for p in pairs if p.fold == k)]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", type=Path, default=lfw.DEFAULT_ROOT)
    ap.add_argument("--out", type=Path)
    a = ap.parse_args(argv)
    pairs = lfw.read_pairs(a.root)
    results: dict = {}
    for folder in sorted(describe_lfw.CACHE.glob("up*_j*")):
        recs = describe_lfw.load(folder)
        folds = complete_folds(pairs, recs)
        base = describe_lfw.CACHE / f"{folder.name.split('_j')[0]}_j1"  # the jitter-1 run of the same upsample
        if len(folds) == 1 and folder.name != base.name and base.exists():
            results[f"{folder.name}/largest (fold {folds[0] + 1})"] = r = held_out_fold(
                pairs, recs, describe_lfw.load(base), folds[0]
            )
            print(
                f"{folder.name} fold {folds[0] + 1} largest: {100 * r['accuracy']:.2f} % at the threshold of the other "
                f"nine folds of {base.name} (that setting: {100 * r['base_accuracy']:.2f} %), "
                f"{100 * r['accuracy_own_threshold']:.2f} % at its own best threshold",
                flush=True,
            )
        if len(folds) < 2:
            continue
        use = [p for p in pairs if p.fold in folds]
        name = folder.name if len(folds) == 10 else f"{folder.name} (folds {','.join(str(f + 1) for f in folds)})"
        flipped = describe_lfw.load(describe_lfw.CACHE / f"flip_{folder.name}")
        for photo, extra in flipped.items():
            if photo in recs:
                recs[photo] = {**recs[photo], **extra}
        photos = {p.a for p in use} | {p.b for p in use}
        for variant in [v + s for v in VARIANTS for s in ("", UNIT) if s == "" or VARIANTS[v][1]]:
            if not has_variant(recs, photos, variant):
                continue
            r = evaluate(use, variant_descriptors({p: recs[p] for p in photos}, variant))
            r["folds_used"] = [f + 1 for f in folds]
            results[f"{folder.name}/{variant}"] = r
            print(f"{name:8s} {variant:20s} {100 * r['mean']:.2f} % +- {100 * r['std']:.2f}", flush=True)
        results[f"{folder.name}/failures"] = f = failures(use, recs)
        print(f"  no face: {len(f['no_face_photos'])} photos, {f['pairs_touching_a_fallback']} pairs", flush=True)
        if all("flip_faces" in recs[p] for p in photos):
            lost = sorted(p for p in photos if recs[p]["flip_faces"] == 0 and not recs[p]["fallback"])
            found = sorted(p for p in photos if recs[p]["flip_faces"] > 0 and recs[p]["fallback"])
            f["mirrored_photo_no_face"] = sorted(p for p in photos if recs[p]["flip_faces"] == 0)
            f["mirrored_photo_found_where_original_did_not"] = found
            print(
                f"  mirrored photos: HOG found no face in {len(f['mirrored_photo_no_face'])} ({len(lost)} "
                f"found on the original), found one in {len(found)} of the original's no-face photos",
                flush=True,
            )
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
