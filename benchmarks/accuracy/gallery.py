"""The gallery-size correction, fitted on and checked against an LFW identification run.

``identify`` keeps, per probe, the distance to its own gallery photo and, per gallery size N, to
the nearest other-person row. This module

* fits the measured gallery model of ``index.calibration`` (``best_impostor``: mean and std of
  the nearest other-person distance per N) and checks it cross-fitted: the probes are split in two
  halves by person, the table is fitted on one half and predicts the other;
* compares it with the pooled-tail model (N taken literally, and with ``gallery_scale``);
* answers whether N should count gallery rows or identities, on real photos only: every probe
  against ALL photos of the other LFW people (13k rows of 5.7k identities), observed against what
  the table predicts at N = rows and at N = identities.

    python -m benchmarks.accuracy.gallery --store
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

import numpy as np

from benchmarks.accuracy import describe_lfw, plots
from index import calibration

PROJECT = Path(__file__).resolve().parents[2]
SMALL_SIZES = (1, 3, 10, 30, 100, 300, 1000)  # real galleries drawn per probe (small_galleries)
CURVE_SIZES = (1, 263, 5_749, 13_233, 600_000, 4_200_000)  # N for the plotted P(same) curves


def fit_table(sizes: np.ndarray, best_impostor: np.ndarray) -> list[tuple[float, float, float]]:
    """(rows, mean, std) of the nearest other-person distance per gallery size (rows sorted, unique)."""
    table: dict[int, tuple[float, float, float]] = {}
    for n, b in zip(sizes, best_impostor, strict=True):
        table[int(n)] = (float(n), float(np.mean(b)), float(np.std(b)))
    return [table[n] for n in sorted(table)]


def check(cal: calibration.Calibration, n: int, mate: np.ndarray, best_impostor: np.ndarray) -> dict:
    """Predicted P(best match is the probe's own person) (every probe enrolled) against what happened."""
    enrolled = replace(cal, prior_in_gallery=1.0)
    best = np.minimum(mate, best_impostor)
    p = np.array([calibration.match_probability(enrolled, float(d), int(n)) for d in best])
    y = (mate < best_impostor).astype(float)
    return {"predicted": float(p.mean()), "observed": float(y.mean()), "brier": float(np.mean((p - y) ** 2))}


def halves(people: np.ndarray) -> np.ndarray:
    """0/1 per probe: alternate people (sorted by name) go to alternate halves."""
    names = sorted(set(people.tolist()))
    half = {name: i % 2 for i, name in enumerate(names)}
    return np.array([half[p] for p in people.tolist()])


def cross_fitted(cal: calibration.Calibration, z: dict, kinds: tuple[str, ...]) -> list[dict]:
    """Per gallery size: the measured model fitted on one half of the people, checked on the other."""
    fit_on = np.isin(z["kind"], ["sample", "real", "synthetic"])
    h = halves(z["probe_people"])
    rows = []
    for i in np.flatnonzero(np.isin(z["kind"], kinds)):
        p, y, sq = [], [], []
        for k in (0, 1):
            table = fit_table(z["gallery_rows"][fit_on], z["best_impostor"][fit_on][:, h != k])
            c = replace(cal, best_impostor=tuple(table))
            r = check(c, z["gallery_rows"][i], z["mate"][h == k], z["best_impostor"][i][h == k])
            n = int(np.sum(h == k))
            p.append(r["predicted"] * n)
            y.append(r["observed"] * n)
            sq.append(r["brier"] * n)
        total = len(h)
        rows.append(
            {
                "kind": str(z["kind"][i]),
                "gallery_rows": int(z["gallery_rows"][i]),
                "predicted": sum(p) / total,
                "observed": sum(y) / total,
                "brier": sum(sq) / total,
            }
        )
    return rows


def small_galleries(spec: str, sizes: tuple[int, ...], probe_people: np.ndarray, seed: int = 0) -> np.ndarray:
    """Nearest other-person distance of every probe among ``n`` real gallery rows drawn for that probe.

    The identification run's galleries start at ~1,700 people; smaller N (the demo gallery has a few
    hundred rows) come from here: per probe, n random gallery photos of other people. Probes in the
    order of ``identify.split`` (checked against ``probe_people``)."""
    from benchmarks.accuracy import identify

    x, ids, photos = identify.load_descriptors(spec)
    gallery_rows, probe_rows, mate = identify.split(ids, photos)
    if [ids[i] for i in probe_rows] != probe_people.tolist():
        raise SystemExit("the identify distances file was made from other descriptors: rerun identify")
    d = np.sqrt(identify.sq_dist(x[probe_rows], x[gallery_rows]))
    keys = np.random.default_rng(seed).random(d.shape, dtype=np.float32)
    keys[np.arange(len(d)), mate] = np.inf  # never draw the probe's own person
    out = []
    for n in sizes:
        pick = np.argpartition(keys, n, axis=1)[:, :n]
        out.append(np.take_along_axis(d, pick, axis=1).min(axis=1))
    return np.stack(out)


def rows_vs_identities(cal: calibration.Calibration, spec: str = "union") -> dict:
    """Every photo of a person with 2+ photos against all photos of everyone else (real rows only)."""
    from benchmarks.accuracy import identify

    x, ids, photos = identify.load_descriptors(spec)
    people = np.array(ids)
    _, counts = np.unique(people, return_counts=True)
    gallery_rows, probe_rows, mate = identify.split(ids, photos)
    g = x[gallery_rows]
    q = x[probe_rows]
    own = people[probe_rows]
    best_all = np.full(len(q), np.inf, np.float32)
    for s in range(0, len(x), 2048):
        d2 = identify.sq_dist(q, x[s : s + 2048])
        d2[own[:, None] == people[None, s : s + 2048]] = np.inf
        best_all = np.minimum(best_all, d2.min(axis=1))
    mate_d = np.sqrt(identify.sq_dist(q, g)[np.arange(len(q)), mate])
    best_all = np.sqrt(best_all)
    n_rows, n_ids = len(x), len(counts)
    out = {
        "photos": n_rows,
        "identities": n_ids,
        "probes": len(q),
        "observed_mean_nearest_other": float(best_all.mean()),
        "observed_std_nearest_other": float(best_all.std()),
    }
    for name, n in (("rows", n_rows), ("identities", n_ids)):
        m, sd = calibration.best_impostor_at(cal.best_impostor, n)
        out[f"table_at_{name}"] = {"n": n, "mean": m, "std": sd, **check(cal, n, mate_d, best_all)}
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--distances", type=Path, default=describe_lfw.CACHE / "identify_distances.npz")
    ap.add_argument("--calibration", type=Path, default=PROJECT / "index" / "lfw_calibration.json")
    ap.add_argument("--out", type=Path, default=PROJECT / "benchmarks" / "results" / "gallery_model.json")
    ap.add_argument("--plots", type=Path, default=PROJECT / "docs" / "accuracy")
    ap.add_argument("--store", action="store_true", help="write the table (fitted on all probes) into --calibration")
    a = ap.parse_args(argv)

    z = dict(np.load(a.distances))
    keep = np.isin(z["kind"], ["real", "synthetic"])
    for k in ("kind", "gallery_rows", "identities", "best_impostor"):
        z[k] = z[k][keep]
    small = small_galleries("union", SMALL_SIZES, z["probe_people"])
    z["kind"] = np.concatenate([np.array(["sample"] * len(SMALL_SIZES)), z["kind"]])
    z["gallery_rows"] = np.concatenate([SMALL_SIZES, z["gallery_rows"]])
    z["identities"] = np.concatenate([SMALL_SIZES, z["identities"]])
    z["best_impostor"] = np.concatenate([small, z["best_impostor"]])
    cal = calibration.read(a.calibration)
    pooled = replace(cal, best_impostor=())
    kinds = ("real", "synthetic")
    results: dict = {"probes": len(z["mate"]), "sizes": []}
    print(f"{len(z['mate']):,} probes; predicted P(rank-1) vs observed, Brier", flush=True)
    measured = {(r["kind"], r["gallery_rows"]): r for r in cross_fitted(cal, z, kinds)}
    for i in np.flatnonzero(np.isin(z["kind"], kinds)):
        n, kind = int(z["gallery_rows"][i]), str(z["kind"][i])
        row = {
            "kind": kind,
            "gallery_rows": n,
            "identities": int(z["identities"][i]),
            "pooled_tail_n_literal": check(replace(pooled, gallery_scale=1.0), n, z["mate"], z["best_impostor"][i]),
            "pooled_tail_scaled": check(pooled, n, z["mate"], z["best_impostor"][i]),
            "measured_cross_fitted": measured[(kind, n)],
        }
        results["sizes"].append(row)
        print(
            f"{n:>10,} rows ({kind:9s}) observed {row['measured_cross_fitted']['observed']:.3f}  "
            f"pooled N {row['pooled_tail_n_literal']['predicted']:.3f} "
            f"(Brier {row['pooled_tail_n_literal']['brier']:.4f})  "
            f"pooled scale {cal.gallery_scale:.3g} {row['pooled_tail_scaled']['predicted']:.3f} "
            f"({row['pooled_tail_scaled']['brier']:.4f})  "
            f"measured {row['measured_cross_fitted']['predicted']:.3f} ({row['measured_cross_fitted']['brier']:.4f})",
            flush=True,
        )
    everything = np.isin(z["kind"], ["sample", "real", "synthetic"])
    table = fit_table(z["gallery_rows"][everything], z["best_impostor"][everything])
    results["best_impostor"] = table
    for n, m, sd in table:
        print(f"  nearest other-person distance at {int(n):>10,} rows: mean {m:.3f} std {sd:.3f}", flush=True)
    fitted = replace(cal, best_impostor=tuple(table))
    results["rows_vs_identities"] = rvi = rows_vs_identities(fitted)
    print(f"rows or identities: {json.dumps(rvi, indent=1)}", flush=True)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(results, indent=1) + "\n")
    if a.store:
        source = dict(fitted.source)
        source["best_impostor"] = (
            f"nearest other-person distance of {len(z['mate']):,} LFW probes per gallery size "
            "(benchmarks/accuracy/identify.py + gallery.py; sizes above the real gallery use SYNTHETIC distractors)"
        )
        calibration.save(replace(fitted, source=source), a.calibration.parent)
        if a.calibration.name != calibration.FILENAME:
            (a.calibration.parent / calibration.FILENAME).replace(a.calibration)
        print(f"gallery model stored in {a.calibration}", flush=True)
    xs = np.linspace(0, 1.2, 1201)
    curves = {n: [calibration.match_probability(fitted, float(x), n) for x in xs] for n in CURVE_SIZES}
    results["distance_at_half"] = {str(n): float(xs[np.argmax(np.array(c) < 0.5)]) for n, c in curves.items()}
    print(f"P(same) = 0.5 at distance: {results['distance_at_half']}", flush=True)
    a.out.write_text(json.dumps(results, indent=1) + "\n")
    plots.p_same_curves(xs, curves, a.plots / "p_same_vs_distance.png")


if __name__ == "__main__":
    main()
