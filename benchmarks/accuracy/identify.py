"""MegaFace-style identification on LFW: rank-1 / rank-5 against gallery size.

Gallery: one photo per LFW person (the first described photo of each of the 5,749), grown with
SYNTHETIC distractors from ``index.synthetic`` (fitted on the real LFW descriptors; rows come in
synthetic identities of several photos, like MegaFace) to 600k and 4.2M rows. Probes: every other
described photo of the people with two or more. A probe's rank is 1 + the number of gallery rows
closer to it than its own person's gallery photo. One pass over the largest gallery gives every
smaller size (the distractors of a smaller gallery are a prefix of the larger one's).

It also checks the gallery-size correction of ``index.calibration`` against what happens: for each
probe and gallery size, the predicted probability that the best match is the right person (every
probe is enrolled, so prior 1) against whether it is.

    python -m benchmarks.accuracy.identify --descriptors up1_j1/largest --sizes 10000,100000,600000,4200000
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from benchmarks.accuracy import describe_lfw, plots, verify
from index import calibration, synthetic

PROJECT = Path(__file__).resolve().parents[2]
BLOCK = 10_000


def load_descriptors(spec: str) -> tuple[np.ndarray, list[str], list[str]]:
    """``<setting>/<variant>`` from this harness's cache, or ``index-builder`` (benchmarks.lfw_descriptors)."""
    if spec in ("index-builder", "union"):
        from benchmarks import lfw_descriptors

        x, ids, photos = lfw_descriptors.load()
        if spec == "union":  # the same settings (HOG upsample 1, largest face, jitter 1): merge both caches
            ours = dict(zip(photos, x, strict=True))
            recs = describe_lfw.load(describe_lfw.CACHE / "up1_j1")
            # Photos where HOG found no face keep the centre-box descriptor (as in the verification
            # protocol): without them 31 people would have no photo at all.
            ours.update({p: r["desc_largest"] for p, r in recs.items() if r["box"][0] >= 0})
            photos = sorted(ours)
            return np.stack([ours[p] for p in photos]).astype(np.float32), [p.split("/")[0] for p in photos], photos
        return np.asarray(x, np.float32), list(ids), list(photos)
    setting, variant = spec.split("/")
    recs = describe_lfw.load(describe_lfw.CACHE / setting)
    desc = verify.variant_descriptors(
        {p: r for p, r in recs.items() if r["box"][0] >= 0 and not r["fallback"]}, variant
    )
    photos = sorted(desc)
    return np.stack([desc[p] for p in photos]).astype(np.float32), [p.split("/")[0] for p in photos], photos


def split(identities: list[str], photos: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gallery rows (first photo of each person), probe rows and each probe's gallery row."""
    order = sorted(range(len(photos)), key=lambda i: photos[i])
    first: dict[str, int] = {}
    probes, mate = [], []
    for i in order:
        if identities[i] not in first:
            first[identities[i]] = i
    gallery = np.array(sorted(first.values()))
    pos = {row: k for k, row in enumerate(gallery)}
    for i in order:
        if first[identities[i]] != i:
            probes.append(i)
            mate.append(pos[first[identities[i]]])
    return gallery, np.array(probes), np.array(mate)


def sq_dist(q: np.ndarray, g: np.ndarray) -> np.ndarray:
    return np.maximum(
        np.einsum("ij,ij->i", q, q)[:, None] + np.einsum("ij,ij->i", g, g)[None, :] - 2 * q @ g.T, 0, dtype=np.float32
    )


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--descriptors", default="up1_j1/largest", help="<setting>/<variant> or index-builder")
    ap.add_argument("--sizes", default="10000,100000,600000,4200000", help="synthetic distractor rows")
    ap.add_argument("--probes", type=int, default=0, help="use a fixed random sample of this many probes (0 = all)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--calibration", type=Path, default=PROJECT / "index" / "lfw_calibration.json")
    ap.add_argument("--fit-scale", action="store_true", help="fit gallery_scale on the real galleries, store it")
    ap.add_argument("--out", type=Path, default=PROJECT / "benchmarks" / "results" / "identify.json")
    ap.add_argument("--plot", type=Path, default=PROJECT / "docs" / "accuracy" / "identification.png")
    ap.add_argument(
        "--distances",
        type=Path,
        default=describe_lfw.CACHE / "identify_distances.npz",
        help="where each probe's own-person and best-impostor distances per gallery size are kept (not in the repo)",
    )
    a = ap.parse_args(argv)

    x, ids, photos = load_descriptors(a.descriptors)
    gallery_rows, probe_rows, mate = split(ids, photos)
    if a.probes and a.probes < len(probe_rows):
        pick = np.sort(np.random.default_rng(a.seed).choice(len(probe_rows), a.probes, replace=False))
        probe_rows, mate = probe_rows[pick], mate[pick]
    g, q = x[gallery_rows], x[probe_rows]
    print(f"{len(x):,} described photos; gallery {len(g):,} people; {len(q):,} probes", flush=True)

    real = sq_dist(q, g)
    mate_d2 = real[np.arange(len(q)), mate]
    real[np.arange(len(q)), mate] = np.inf
    closer = (real < mate_d2[:, None]).sum(axis=1)
    best_imp = real.min(axis=1)
    # Real-only smaller galleries: the probes' own people plus a random share of the others.
    rows = [_row("real", len(g), len(g), closer, mate_d2, best_imp)]
    needed = np.zeros(len(g), bool)
    needed[mate] = True
    others = np.flatnonzero(~needed)
    rng = np.random.default_rng(a.seed)
    for keep in (k for k in (0, 1000, 2000) if k < len(others)):
        kept = np.concatenate([np.flatnonzero(needed), rng.choice(others, min(keep, len(others)), replace=False)])
        sub = real[:, kept]
        rows.insert(-1, _row("real", len(kept), len(kept), (sub < mate_d2[:, None]).sum(1), mate_d2, sub.min(1)))

    sizes = sorted(int(s) for s in a.sizes.split(",") if s)
    if sizes:
        model = synthetic.fit(x, ids, source=f"LFW {a.descriptors}")
        per_id = model.photos_per_identity
        rows_per_chunk = synthetic.CHUNK_GROUPS * per_id
        started, done = time.monotonic(), 0
        for n in sizes:
            while done < n:
                # Whole generator chunks (one call makes a chunk), cut at the gallery sizes.
                step = min(rows_per_chunk - done % rows_per_chunk, n - done)
                chunk = synthetic.generate(model, step, a.seed, done)
                for s in range(0, len(chunk), BLOCK):
                    d2 = sq_dist(q, chunk[s : s + BLOCK])
                    closer += (d2 < mate_d2[:, None]).sum(axis=1)
                    best_imp = np.minimum(best_imp, d2.min(axis=1))
                done += len(chunk)
                if done // 500_000 != (done - len(chunk)) // 500_000:
                    el = time.monotonic() - started
                    print(f"  {done:,} distractors, {el:.0f} s, {done / el:,.0f} rows/s", flush=True)
            rows.append(_row("synthetic", len(g) + n, len(g) + n // per_id, closer, mate_d2, best_imp))
    save_distances(a.distances, rows, mate_d2, [ids[i] for i in probe_rows])
    for r in rows:
        print(
            f"{r['gallery_rows']:>10,} rows ({r['kind']:9s})",
            f"rank-1 {100 * r['rank1']:.2f} %  rank-5 {100 * r['rank5']:.2f} %",
            flush=True,
        )

    cal = calibration.read(a.calibration) if a.calibration.exists() else None
    if cal is not None:
        enrolled = replace(cal, prior_in_gallery=1.0, best_impostor=())  # the pooled-tail model (see gallery.py)
        if a.fit_scale:
            scale = fit_gallery_scale(enrolled, [r for r in rows if r["kind"] == "real"])
            enrolled = replace(enrolled, gallery_scale=scale)
            print(f"gallery_scale fitted on the real galleries: {scale:.4g}", flush=True)
            fitted = replace(cal, gallery_scale=scale)
            a.calibration.write_text(calibration.to_json(fitted))
        for r in rows:
            p = np.array([calibration.match_probability(enrolled, d, r["identities"]) for d in r.pop("_best")])
            y = r.pop("_correct")
            r["calibration"] = {
                "brier": float(np.mean((p - y) ** 2)),
                "mean_predicted": float(p.mean()),
                "observed_rank1": float(y.mean()),
            }
            print(
                f"  {r['gallery_rows']:>10,}: predicted {p.mean():.3f} vs observed {y.mean():.3f}, "
                f"Brier {r['calibration']['brier']:.4f}",
                flush=True,
            )
    for r in rows:
        for k in [k for k in r if k.startswith("_")]:
            r.pop(k)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(
        json.dumps({"descriptors": a.descriptors, "probes": len(q), "gallery_people": len(g), "rows": rows}, indent=1)
        + "\n"
    )
    a.plot.parent.mkdir(parents=True, exist_ok=True)
    synth = [r["gallery_rows"] for r in rows if r["kind"] == "synthetic"]
    plots.identification(
        [r["gallery_rows"] for r in rows],
        [r["rank1"] for r in rows],
        [r["rank5"] for r in rows],
        min(synth) if synth else 0,
        a.plot,
    )


def fit_gallery_scale(cal: calibration.Calibration, rows: list[dict]) -> float:
    """The gallery_scale (log grid 1e-4..1) with the lowest Brier score over the given galleries."""

    def brier(scale: float) -> float:
        c = replace(cal, gallery_scale=scale)
        errs = [
            (calibration.match_probability(c, d, r["identities"]) - y) ** 2
            for r in rows
            for d, y in zip(r["_best"], r["_correct"], strict=True)
        ]
        return float(np.mean(errs))

    grid = np.logspace(-4, 0, 17)
    return float(min(grid, key=brier))


def save_distances(path: Path, rows: list[dict], mate_d2: np.ndarray, probe_people: list[str]) -> None:
    """Per probe: the distance to its own gallery photo and, per gallery size, to the nearest other row."""
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(
        path,
        kind=np.array([r["kind"] for r in rows]),
        gallery_rows=np.array([r["gallery_rows"] for r in rows]),
        identities=np.array([r["identities"] for r in rows]),
        mate=np.sqrt(mate_d2),
        best_impostor=np.stack([r["_best_impostor"] for r in rows]),
        probe_people=np.array(probe_people),
    )


def _row(kind: str, n_rows: int, n_ids: int, closer: np.ndarray, mate_d2: np.ndarray, best_imp: np.ndarray) -> dict:
    correct = mate_d2 < best_imp
    best = np.sqrt(np.minimum(mate_d2, best_imp))
    return {
        "kind": kind,
        "gallery_rows": int(n_rows),
        "identities": int(n_ids),
        "rank1": float(np.mean(closer == 0)),
        "rank5": float(np.mean(closer < 5)),
        "_best": best.tolist(),
        "_correct": correct.astype(float),
        "_best_impostor": np.sqrt(best_imp),
    }


if __name__ == "__main__":
    main()
