"""How many strangers look like you: the look-alike table of ``index.lookalikes``, fitted and checked on LFW.

* **Table.** Every described LFW photo (13,126, the index builder's descriptors of
  ``benchmarks.lfw_descriptors``) is a stranger: its own person left out of a gallery of the first photo of
  each other LFW person (5,700 of them). Its distances to them, sorted, give its k-th nearest other person;
  percentiles over faces of the k-th nearest distance (each person weighted equally, whatever their
  number of photos) give the share of other people k / n within that distance for faces with many,
  typical and few look-alikes (the 0.5th, 50th and 99th percentile of the distance: the 99.5th, 50th and
  1st of the share; ``SPREADS`` compares other choices). Below the lowest reliably measured share (the third
  nearest of 5,700: ~1/2,000) each curve goes on as a normal tail (probit of the share linear in the
  distance) fitted to its measured shares up to 2 %. Tabulated on a 0.01 grid from 0 to 1.5.
* **Photos per person.** How many more people come within a distance when each has m photos rather
  than one: the LFW people with at least m photos (m = 2, 4, 6, 10), their first m photos against
  their first photo alone, pooled over every LFW photo as a probe, within ``FACTOR_DISTANCE``.
* **Agreement, held out.** People are dealt into two halves by name; the table fitted on one half's
  people (as probes and as gallery) predicts, for the other half's photos as strangers in galleries of
  the other half's people (30 .. all ~2,850 people, drawn per probe), how many are within (a) the
  probe's own best-match distance (truly: 1, the best match) and (b) fixed distances; reported is how
  often the range the sentence states holds the direct count, for everyone and for the packed tenth
  (the people whose gallery photo has its 5 nearest other people closest), and for enrolled visitors
  (their own first photo in the gallery, their best match themselves: strangers within that distance).
  At the best match the sentence is made as the kiosk makes it, with the next 4 people of the probe's own
  top 5 (``others`` of ``index.lookalikes.expected``), and also from the table alone.
  ``SPREADS``: the same at the best match for other low / high percentiles (how the spread was chosen).
* **Extrapolation.** (a) The same, with the table fitted on a gallery of a tenth of the first half's
  people (a decade fewer), on real faces; (b) the distance at which the table expects ln 2 people
  (half the faces find someone closer) against the measured mean nearest other-person distance of
  ``best_impostor`` in the calibration file, up to 4.2M rows (above 5,749 with SYNTHETIC distractors).

    python -m benchmarks.accuracy.lookalikes --store

writes ``benchmarks/results/lookalikes.json`` and, with ``--store``, the table into
``index/lfw_calibration.json`` (the rest of the file is kept).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections import defaultdict
from dataclasses import dataclass, replace
from pathlib import Path
from statistics import NormalDist

import numpy as np

from benchmarks.accuracy import identify, plots
from index import calibration, lookalikes

PROJECT = Path(__file__).resolve().parents[2]
GRID = np.round(np.arange(0.0, 1.5001, 0.01), 2)
K_MIN = 3  # the lowest rank whose percentile counts as measured; below it, the fitted tail
TAIL_SHARE = 0.02  # the normal tail is fitted on measured shares up to this
FACTOR_PHOTOS = (2, 4, 6, 10)
FACTOR_DISTANCE = 0.55  # the ratio is pooled over distances up to this (where best matches sit)
SIZES = (30, 100, 253, 1000)  # held-out gallery sizes drawn per probe; and every held-out person
CHECK_DISTANCES = (0.45, 0.50, 0.55, 0.60)
SYNTHETIC_PHOTOS = 6  # rows per synthetic identity (index/synthetic.py)
EXAMPLE_DISTANCES = (0.35, 0.45, 0.5, 0.55, 0.6)
SPREADS = ((10.0, 90.0), (5.0, 95.0), (5.0, 98.0), (2.0, 99.0), (1.0, 99.5))  # low and high percentiles compared
BLOCK = 1024
_NORMAL = NormalDist()


@dataclass
class People:
    """LFW as people: each photo's person number, each person's photos (by file name) and name."""

    x: np.ndarray
    person: np.ndarray  # per photo
    names: list[str]
    photos_of: list[list[int]]  # per person: photo rows, by file name

    @property
    def first(self) -> np.ndarray:
        return np.array([rows[0] for rows in self.photos_of])

    @property
    def weight(self) -> np.ndarray:
        """Per photo: 1 / that person's photo count, so every person weighs the same."""
        counts = np.array([len(r) for r in self.photos_of])
        return 1.0 / counts[self.person]


def people_of(x: np.ndarray, identities: list[str], photos: list[str]) -> People:
    by: dict[str, list[int]] = defaultdict(list)
    for i in sorted(range(len(photos)), key=lambda i: photos[i]):
        by[identities[i]].append(i)
    names = sorted(by)
    number = {n: k for k, n in enumerate(names)}
    return People(np.asarray(x, np.float32), np.array([number[p] for p in identities]), names, [by[n] for n in names])


def distances_to_others(p: People, probes: np.ndarray, gallery_people: np.ndarray) -> np.ndarray:
    """(probes, gallery people) distances from each probe photo to each gallery person's first photo;
    the probe's own person at +inf (it is a stranger to the gallery)."""
    g = p.x[p.first[gallery_people]]
    col = {int(q): j for j, q in enumerate(gallery_people)}
    out = np.empty((len(probes), len(gallery_people)), np.float32)
    for s in range(0, len(probes), BLOCK):
        rows = probes[s : s + BLOCK]
        out[s : s + len(rows)] = np.sqrt(identify.sq_dist(p.x[rows], g))
        own = [(i, col[int(p.person[r])]) for i, r in enumerate(rows) if int(p.person[r]) in col]
        if own:
            i, j = map(np.array, zip(*own, strict=True))
            out[s + i, j] = np.inf
    return out


def weighted_quantile(values: np.ndarray, weights: np.ndarray, q: float) -> np.ndarray:
    """Per column of ``values`` (rows: probes), the weighted ``q`` quantile (the first value reaching it)."""
    order = np.argsort(values, axis=0, kind="stable")
    cum = np.cumsum(weights[order], axis=0)
    at = np.minimum((cum < q * cum[-1]).sum(axis=0), len(values) - 1)
    return np.take_along_axis(np.take_along_axis(values, order, axis=0), at[None, :], axis=0)[0]


def log10_normal_cdf(z: np.ndarray) -> np.ndarray:
    """log10 of the standard normal CDF, accurate far into the lower tail."""
    out = np.empty(np.shape(z))
    for i, v in enumerate(np.asarray(z, float).flat):
        s = 0.5 * math.erfc(-v / math.sqrt(2))
        ln = math.log(s) if s > 1e-300 else -0.5 * v * v - math.log(-v * math.sqrt(2 * math.pi))
        out.flat[i] = ln / math.log(10)
    return out


def curve(d_k: np.ndarray, n: int) -> tuple[np.ndarray, dict]:
    """log10 share on GRID for one percentile, from its k-th nearest distances (k = 1..n), and the tail fit."""
    ks = np.arange(1, n + 1)
    log_share = np.log10((ks - 0.3) / (n + 0.4))  # the median rank of the k-th of n
    keep = ks >= K_MIN
    dk, ls = d_k[keep].astype(float), log_share[keep]
    last = np.r_[dk[1:] != dk[:-1], True]  # ties: the highest share at that distance
    dk, ls = dk[last], ls[last]
    tail = ls <= math.log10(TAIL_SHARE)
    z = np.array([_NORMAL.inv_cdf(10.0**v) for v in ls[tail]])
    slope = float(np.polyfit(dk[tail], z, 1)[0])
    z0 = _NORMAL.inv_cdf(10.0 ** ls[0])  # the tail passes through the lowest measured point
    out = np.where(dk[-1] <= GRID, 0.0, np.interp(GRID, dk, ls))
    below = dk[0] > GRID
    out[below] = log10_normal_cdf(z0 + slope * (GRID[below] - dk[0]))
    fit = {"measured_from": float(dk[0]), "measured_share_from": float(10 ** ls[0]), "tail_sd": 1.0 / slope}
    return out, fit


def fit_table(
    p: People,
    probe_people: np.ndarray,
    gallery_people: np.ndarray,
    photos_factor: tuple = ((1.0, 1.0),),
    percentiles: tuple[float, ...] = lookalikes.PERCENTILES,
) -> tuple[lookalikes.Lookalikes, dict]:
    """The table from the photos of ``probe_people`` as strangers against ``gallery_people``'s first photos."""
    probes = np.flatnonzero(np.isin(p.person, probe_people))
    dist = distances_to_others(p, probes, gallery_people)
    dist.sort(axis=1)
    n = len(gallery_people) - int(np.isin(probe_people, gallery_people).any())
    dist = dist[:, :n]  # every probe's own person (inf) sorts last and is cut; others: all n
    w = p.weight[probes]
    curves, fits = [], {}
    for pct in percentiles:
        c, fits[pct] = curve(weighted_quantile(dist, w, 1 - pct / 100), n)
        curves.append(c)
    stack = np.maximum.accumulate(np.stack(curves), axis=1)  # non-decreasing in distance
    stack = np.maximum.accumulate(stack, axis=0)  # low <= 50th <= high percentile
    stack = np.clip(stack, lookalikes.MIN_LOG10_SHARE, 0.0)
    table = lookalikes.Lookalikes(
        tuple(GRID.tolist()), tuple(tuple(np.round(c, 4).tolist()) for c in stack), photos_factor, percentiles
    )
    return table, {"probes": len(probes), "gallery_people": int(n), "tails": fits}


def photos_factor(p: People, sizes: tuple[int, ...] = FACTOR_PHOTOS, within: float = FACTOR_DISTANCE) -> list:
    """[(m, people within ``within`` with any of m photos / with their first photo)], pooled over every photo."""
    out = [(1.0, 1.0)]
    for m in sizes:
        who = np.array([k for k, rows in enumerate(p.photos_of) if len(rows) >= m])
        first = distances_to_others(p, np.arange(len(p.x)), who)
        rows = np.array([r for k in who for r in p.photos_of[k][:m]])
        col = np.repeat(np.arange(len(who)), m)
        any_m = np.full_like(first, np.inf)
        for s in range(0, len(p.x), BLOCK):
            d = np.sqrt(identify.sq_dist(p.x[s : s + BLOCK], p.x[rows]))
            own = p.person[s : s + BLOCK][:, None] == p.person[rows][None, :]
            d[own] = np.inf
            np.minimum.at(any_m[s : s + BLOCK].T, col, d.T)
        ratio = float((any_m <= within).sum() / max(1, (first <= within).sum()))
        out.append((float(m), round(max(out[-1][1], ratio), 3)))
    return out


def sentence_kinds(
    table: lookalikes.Lookalikes, d: np.ndarray, people: int, others: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per probe: (stated low, stated high, typical count) at distance d; ``others``: each probe's next
    other people's distances in its own results (the kiosk's top 5 beyond the best), or None."""
    lo, hi, typical = np.zeros(len(d), int), np.zeros(len(d), int), np.zeros(len(d))
    for i, di in enumerate(d):
        e = lookalikes.expected(table, float(di), people, 1.0, () if others is None else others[i].tolist())
        lo[i], _, hi[i] = lookalikes.stated(e)
        typical[i] = e.typical
    return lo, hi, typical


def next_others(dist: np.ndarray, shown: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """Each probe's best distance and the next ``shown - 1`` (one row per person: the kiosk's top 5)."""
    top = np.sort(np.partition(dist, shown - 1, axis=1)[:, :shown], axis=1)
    return top[:, 0], top[:, 1:]


def at_best(lo: np.ndarray, hi: np.ndarray, typical: np.ndarray, w: np.ndarray, is_packed: np.ndarray) -> dict:
    """What the sentence says at a stranger's best match, where exactly 1 person (the match) is that close."""
    covers = (lo <= 1) & (hi >= 1)
    return {
        "states_range_holding_1": wmean(covers, w),
        "says_fewer_than_1_even_with_many_lookalikes": wmean(hi == 0, w),
        "says_more_than_1_for_every_face": wmean(lo > 1, w),
        "packed_states_range_holding_1": wmean(covers[is_packed], w[is_packed]),
        "packed_says_fewer_than_1": wmean(hi[is_packed] == 0, w[is_packed]),
        "others_says_fewer_than_1": wmean(hi[~is_packed] == 0, w[~is_packed]),
        "median_typical": float(np.median(typical)),
    }


def packed_people(p: People, share: float = 0.10) -> np.ndarray:
    """Person numbers of the ``share`` of people whose first photo has its 5 nearest other people closest."""
    everyone = np.arange(len(p.names))
    d = distances_to_others(p, p.first, everyone)
    d.sort(axis=1)
    return np.argsort(np.median(d[:, :5], axis=1))[: round(share * len(everyone))]


def wmean(x: np.ndarray, w: np.ndarray) -> float:
    return float(np.average(x, weights=w)) if len(x) and w.sum() > 0 else float("nan")


def agreement(
    p: People,
    table: lookalikes.Lookalikes,
    people: np.ndarray,
    packed: np.ndarray,
    seed: int = 0,
    sizes: tuple[int, ...] = SIZES,
    distances: tuple[float, ...] = CHECK_DISTANCES,
) -> list[dict]:
    """How often the stated range holds the direct count, for ``people``'s photos as strangers among ``people``."""
    rng = np.random.default_rng(seed)
    probes = np.flatnonzero(np.isin(p.person, people))
    w = p.weight[probes]
    is_packed = np.isin(p.person[probes], packed)
    dist = distances_to_others(p, probes, people)
    rows = []
    for n in (*sizes, len(people) - 1):
        if n >= len(people) - 1:
            sub, n = dist, len(people) - 1
        else:
            keys = rng.random(dist.shape, dtype=np.float32)
            keys[~np.isfinite(dist)] = np.inf  # a probe's own person is never drawn
            sub = np.take_along_axis(dist, np.argpartition(keys, n - 1, axis=1)[:, :n], axis=1)
        best, others = next_others(sub)
        row: dict = {
            "gallery_people": n,
            "at_best_match": at_best(*sentence_kinds(table, best, n, others), w, is_packed),
            "at_best_match_table_only": at_best(*sentence_kinds(table, best, n), w, is_packed),
        }
        for d in distances:
            count = (sub <= d).sum(axis=1)
            e = lookalikes.expected(table, d, n)
            low, _, high = lookalikes.stated(e)
            cov = (low <= count) & (count <= high)
            row[f"at_{d:.2f}"] = {
                "states_range_holding_count": wmean(cov, w),
                "packed": wmean(cov[is_packed], w[is_packed]),
                "others": wmean(cov[~is_packed], w[~is_packed]),
                "predicted": [e.low, e.typical, e.high],
                "direct_mean": wmean(count, w),
                "direct_median": float(np.median(count)),
            }
        rows.append(row)
    return rows


def enrolled_agreement(p: People, table: lookalikes.Lookalikes, people: np.ndarray) -> dict:
    """Enrolled visitors (a non-first photo, their first photo in a gallery of ``people``) whose best match is
    themselves: how many OTHER people are within that distance, against what the sentence states."""
    probes = np.array([r for k in people for r in p.photos_of[k][1:]])
    g = p.x[p.first[people]]
    col = {int(k): j for j, k in enumerate(people)}
    d = np.sqrt(np.concatenate([identify.sq_dist(p.x[probes[s : s + BLOCK]], g) for s in range(0, len(probes), BLOCK)]))
    own = np.array([col[int(p.person[r])] for r in probes])
    d_own = d[np.arange(len(probes)), own]
    d[np.arange(len(probes)), own] = np.inf
    right = d_own < d.min(axis=1)  # so no other person is within d_own: the truth is 0
    others = np.sort(np.partition(d[right], 3, axis=1)[:, :4], axis=1)  # the next 4 in the top 5
    lo, hi, _ = sentence_kinds(table, d_own[right], len(people), others)
    w = p.weight[probes][right]
    return {
        "probes": len(probes),
        "best_match_themselves": int(right.sum()),
        "says_fewer_than_1": wmean(hi == 0, w),
        "states_range_holding_0": wmean(lo == 0, w),
    }


def best_impostor_check(table: lookalikes.Lookalikes, cal: calibration.Calibration, real_people: int) -> list[dict]:
    """For each measured gallery size: the distance at which the table expects ln 2 other people (half
    the faces would find someone closer) per percentile, against the measured mean nearest distance."""
    out = []
    grid = np.linspace(0.0, 1.5, 15001)
    for rows, mean, sd in cal.best_impostor:
        real = min(rows, real_people)
        synthetic_ids = max(0.0, rows - real_people) / SYNTHETIC_PHOTOS
        factor = lookalikes.photos_factor(table, SYNTHETIC_PHOTOS)
        at = []
        for k in range(3):
            e = np.array([lookalikes.shares(table, float(d))[k] for d in grid]) * (real + synthetic_ids * factor)
            at.append(float(grid[min(len(grid) - 1, np.searchsorted(e, math.log(2)))]))
        out.append({"rows": int(rows), "measured_mean": mean, "measured_sd": sd, "table_median_at": at})
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calibration", type=Path, default=PROJECT / "index" / "lfw_calibration.json")
    ap.add_argument("--out", type=Path, default=PROJECT / "benchmarks" / "results" / "lookalikes.json")
    ap.add_argument("--plots", type=Path, default=PROJECT / "docs" / "accuracy")
    ap.add_argument("--store", action="store_true", help="write the table into --calibration")
    a = ap.parse_args(argv)
    started = time.monotonic()

    def say(msg: str) -> None:
        print(f"[{time.monotonic() - started:5.0f} s] {msg}", flush=True)

    x, identities, photos = identify.load_descriptors("index-builder")
    p = people_of(x, identities, photos)
    everyone = np.arange(len(p.names))
    say(f"{len(p.x):,} photos of {len(everyone):,} people")
    factor = photos_factor(p)
    say(f"photos per person factor: {factor}")
    table, fit = fit_table(p, everyone, everyone, tuple(factor))
    say(f"table: {fit}")
    packed = packed_people(p)
    halves = np.arange(len(everyone)) % 2  # people sorted by name, dealt in turn
    results: dict = {"photos": len(p.x), "people": len(everyone), "photos_factor": factor, "fit": fit, "held_out": []}
    for h in (0, 1):
        fit_people, test_people = everyone[halves == h], everyone[halves != h]
        half_table, _ = fit_table(p, fit_people, fit_people)
        rng = np.random.default_rng(h)
        tenth = np.sort(rng.choice(fit_people, len(fit_people) // 10, replace=False))
        small_table, small_fit = fit_table(p, fit_people, tenth)
        results["held_out"].append(
            {
                "fitted_on_people": len(fit_people),
                "tested_on_people": len(test_people),
                "table": agreement(p, half_table, test_people, packed, seed=h),
                "enrolled": enrolled_agreement(p, half_table, test_people),
                "table_from_a_tenth": {"gallery_people": small_fit["gallery_people"]}
                | {"rows": agreement(p, small_table, test_people, packed, seed=h)},
            }
        )
        say(f"held-out half {h}: {json.dumps(results['held_out'][-1]['table'][-1]['at_best_match'])}")
        for low, high in SPREADS:
            spread_table, _ = fit_table(p, fit_people, fit_people, percentiles=(low, 50.0, high))
            rows = agreement(p, spread_table, test_people, packed, seed=h, sizes=(253,), distances=())
            results.setdefault("spreads", []).append(
                {"half": h, "percentiles": [low, 50.0, high]}
                | {f"{r['gallery_people']}": r["at_best_match"] for r in rows}
                | {f"{r['gallery_people']} table only": r["at_best_match_table_only"] for r in rows}
            )
            say(f"spread {low}/{high}, half {h}: {json.dumps(results['spreads'][-1])}")
    cal = calibration.read(a.calibration)
    results["best_impostor"] = best_impostor_check(table, cal, len(everyone))
    say(f"best impostor check: {results['best_impostor']}")
    results["table"] = {"distance": list(table.distance), "log10_share": [list(c) for c in table.log10_share]}
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(results, indent=1) + "\n")
    say(f"results written to {a.out}")
    datasets = {
        "demo gallery, 253 people": (253, 259 / 253),
        "LFW, 5,701 people": (len(everyone), 1.0),
        "MegaFace, 672,057 people (7 photos each)": (672_057, 4_753_320 / 672_057),
    }
    plots.lookalike_counts(table, datasets, a.plots / "lookalikes.png")
    results["examples"] = {
        name: {f"{d:.2f}": lookalikes.sentence(lookalikes.expected(table, d, n, m)) for d in EXAMPLE_DISTANCES}
        for name, (n, m) in datasets.items()
    }
    a.out.write_text(json.dumps(results, indent=1) + "\n")
    if a.store:
        source = dict(cal.source)
        source["lookalikes"] = (
            f"share of other people within a distance, percentiles {list(table.percentiles)} over "
            f"{fit['probes']:,} LFW photos as strangers (each person weighted equally) against the first photo "
            f"of {fit['gallery_people']:,} other people; normal tail below the third nearest; photos-per-person "
            f"factor pooled within {FACTOR_DISTANCE}; benchmarks/accuracy/lookalikes.py"
        )
        a.calibration.write_text(calibration.to_json(replace(cal, lookalikes=table, source=source)))
        say(f"look-alike table stored in {a.calibration}")


if __name__ == "__main__":
    main()
