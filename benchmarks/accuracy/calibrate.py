"""Fit the calibrated confidence on LFW and say how well it is calibrated.

* Pair model (logistic on distance) fitted on the 6,000 LFW pairs; its reliability and Brier score
  are measured cross-fitted (fit on nine folds, predict the tenth), the 10-fold way.
* Impostor tail for the gallery-size correction: all different-person distances between the
  described LFW photos (tens of millions), a normal matched to their lower-tail quantiles.

Writes ``index/lfw_calibration.json`` (the default that ``megapixels index build`` stores with
every index; its gallery model, fitted by ``identify`` and ``gallery``, is kept),
``benchmarks/results/calibration.json`` and the plots under ``docs/accuracy/``.

    python -m benchmarks.accuracy.calibrate --setting up1_j1 --variant largest
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

import numpy as np

from benchmarks.accuracy import describe_lfw, lfw, plots, verify
from index import calibration

PROJECT = Path(__file__).resolve().parents[2]
DEFAULT_OUT = PROJECT / "index" / "lfw_calibration.json"


def impostor_distances(desc: dict[str, np.ndarray], block: int = 1024) -> np.ndarray:
    """Every distance between photos of different people (float32, order unspecified)."""
    photos = sorted(desc)
    names = np.array([p.split("/")[0] for p in photos])
    x = np.stack([desc[p] for p in photos]).astype(np.float32)
    sq = np.einsum("ij,ij->i", x, x)
    out = []
    for s in range(0, len(x), block):
        d2 = sq[s : s + block, None] + sq[None, :] - 2 * x[s : s + block] @ x.T
        rows = np.arange(s, min(s + block, len(x)))[:, None]
        keep = (np.arange(len(x))[None, :] > rows) & (names[s : s + block, None] != names[None, :])
        out.append(np.sqrt(np.maximum(d2[keep], 0)))
    return np.concatenate(out)


def reliability(p: np.ndarray, y: np.ndarray, bins: int = 10) -> list[dict]:
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(p, edges) - 1, 0, bins - 1)
    rows = []
    for b in range(bins):
        m = which == b
        if m.any():
            rows.append(
                {
                    "bin": [float(edges[b]), float(edges[b + 1])],
                    "n": int(m.sum()),
                    "predicted": float(p[m].mean()),
                    "observed": float(y[m].mean()),
                }
            )
    return rows


def cross_fitted(d: np.ndarray, same: np.ndarray, folds: np.ndarray) -> dict[str, np.ndarray]:
    """Out-of-fold probabilities of the logistic and of the normal-model (N = 1) pair posterior."""
    logistic, normal = np.zeros(len(d)), np.zeros(len(d))
    for k in np.unique(folds):
        train, test = folds != k, folds == k
        cal = calibration.fit(d[train], same[train])
        logistic[test] = calibration.pair_probability(cal, d[test])
        normal[test] = [calibration.match_probability(cal, float(v), 1) for v in d[test]]
    return {"logistic": logistic, "normal": normal}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", type=Path, default=lfw.DEFAULT_ROOT)
    ap.add_argument("--setting", default="up1_j1")
    ap.add_argument("--variant", default="largest", help="largest (the kiosk's choice), centre or mirror")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--results", type=Path, default=PROJECT / "benchmarks" / "results" / "calibration.json")
    ap.add_argument("--plots", type=Path, default=PROJECT / "docs" / "accuracy")
    a = ap.parse_args(argv)

    pairs = lfw.read_pairs(a.root)
    recs = describe_lfw.load(describe_lfw.CACHE / a.setting)
    desc = verify.variant_descriptors(recs, a.variant)
    folds_used = verify.complete_folds(pairs, recs)
    pairs = [p for p in pairs if p.fold in folds_used]
    d = lfw.pair_distances(pairs, desc)
    same = np.array([p.same for p in pairs])
    folds = np.array([p.fold for p in pairs])

    oof = cross_fitted(d, same, folds)
    scores = {}
    for name, p in oof.items():
        scores[name] = {"brier": float(np.mean((p - same) ** 2)), "reliability": reliability(p, same)}
        print(f"{name:8s} cross-fitted Brier score {scores[name]['brier']:.4f}", flush=True)
    scores["base_rate_brier"] = 0.25  # always saying 0.5 on LFW's 50/50 pairs

    imp = impostor_distances({p: v for p, v in desc.items() if recs[p]["box"][0] >= 0 and not recs[p]["fallback"]})
    qs = [1e-7, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 0.5]
    tail = calibration.tail_normal(imp, low_q=1e-5, high_q=1e-3)
    from statistics import NormalDist

    tail_check = [{"q": q, "empirical": float(np.quantile(imp, q)), "normal": NormalDist(*tail).inv_cdf(q)} for q in qs]
    print(f"impostor distances: {len(imp):,}, tail normal mean {tail[0]:.3f} std {tail[1]:.3f}", flush=True)
    for row in tail_check:
        print(f"  quantile {row['q']:g}: empirical {row['empirical']:.3f}, normal {row['normal']:.3f}", flush=True)

    source = {
        "fitted_on": f"LFW pairs.txt, {len(pairs):,} pairs of folds {[f + 1 for f in folds_used]}; "
        f"descriptors {a.setting}/{a.variant} (benchmarks/accuracy)",
        "impostor_tail": f"{len(imp):,} different-person distances between {len(desc):,} LFW photos, "
        "normal matched at quantiles 1e-5 and 1e-3",
        "cross_fitted_brier": {k: round(v["brier"], 4) for k, v in scores.items() if isinstance(v, dict)},
        "prior_in_gallery": "0.5: the visitor is enrolled as often as not (the LFW pairs' odds)",
    }
    cal = calibration.fit(d, same, impostor_tail=tail, source=source)
    if a.out.exists():  # the gallery model comes from the identification run (identify, gallery): keep it
        old = calibration.read(a.out)
        kept = ("best_impostor", "neighbourhood", "prior_in_gallery", "lookalikes")
        keep = {k: v for k, v in old.source.items() if k in kept}
        cal = replace(
            cal,
            gallery_scale=old.gallery_scale,
            best_impostor=old.best_impostor,
            neighbourhood=old.neighbourhood,  # the verdict model comes from verdicts.py: keep it too
            lookalikes=old.lookalikes,  # and the look-alike table from lookalikes.py
            prior_in_gallery=old.prior_in_gallery,
            source={**cal.source, **keep},
        )
    a.out.write_text(calibration.to_json(cal))
    print(f"calibration written to {a.out}: {cal}", flush=True)

    a.results.parent.mkdir(parents=True, exist_ok=True)
    a.results.write_text(
        json.dumps(
            {
                "scores": scores,
                "tail_check": tail_check,
                "calibration": json.loads(calibration.to_json(cal)),
            },
            indent=1,
        )
        + "\n"
    )
    a.plots.mkdir(parents=True, exist_ok=True)
    plots.reliability_diagram(scores, a.plots / "reliability.png")
    plots.distance_histograms(d[same], d[~same], imp, a.plots / "distances.png")


if __name__ == "__main__":
    main()
