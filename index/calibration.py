"""Distance -> probability that a match is the same person, corrected for how many people were searched.

Two models, both fitted offline on LFW (``python -m benchmarks.accuracy.calibrate``) and stored as
``calibration.json`` next to an index's ``manifest.json``; nothing is refitted at run time.

* Pair model: P(same person | distance d) for one pair at even odds, a logistic curve
  ``1 / (1 + exp(-(a + b d)))`` fitted on the LFW pairs. Answers "are these two photos one person?".
* Gallery model: the best of N identities at distance d. Genuine and impostor distances are modelled
  as normal distributions (genuine: LFW same-person pairs; impostor: the lower tail of all LFW
  different-person distances, where the nearest look-alike of a big gallery lives). With the visitor
  enrolled with prior ``prior_in_gallery``, the best match at d is the visitor with probability

      pi f_s(d) S_i(d) / (pi f_s(d) S_i(d) + pi (N-1) f_i(d) S_s(d) + (1-pi) N f_i(d) S_i(d))

  (f density, S survival, s genuine, i impostor; a common factor S_i(d)^(N-2) cancels): the same
  distance means less when more look-alikes had a chance to come that close. The curve is made
  non-increasing in d on a fine grid, so a closer match never gets a lower probability.
  ``gallery_scale`` shrinks N to an effective number of independent look-alikes: real look-alikes
  cluster on a minority of faces, so the pooled impostor tail overstates the risk for a typical
  face; the scale is fitted on an LFW identification run (benchmarks/accuracy/identify.py).
* Measured gallery model (preferred when the file has it): ``best_impostor`` lists, for gallery
  sizes N measured in an LFW identification run, the mean and std of the distance from a probe to
  its nearest OTHER-person row, modelled as a normal B_N (interpolated in log N between the measured
  sizes, extrapolated along the last segment beyond them). Then

      pi f_s(d) S_B(d) / (pi f_s(d) S_B(d) + pi f_B(d) S_s(d) + (1-pi) f_B(d))

  No independence assumption and no pooled tail: how close the nearest look-alike comes is measured
  over real probes, whose look-alike risk differs from face to face. N counts gallery ROWS (every
  searched descriptor is a chance for a look-alike), see ACCURACY.md.
* Neighbourhood verdict model (format 2; what the kiosk uses when the file has it): the models above
  judge the best distance against one LFW-wide curve, which over-trusts faces whose strangers come
  close to each other (dlib puts different people of groups it saw less in training closer
  together). This one judges the best match against the visitor's own neighbourhood, in the spirit
  of adaptive score normalisation: the distances to the next OTHER identities in the same ranked
  list (the top ``rows`` rows the kiosk gets anyway, synthetic distractors included). A logistic
  regression on those features gives the likelihood ratio L = f(x | the best match is the visitor)
  / f(x | the visitor is a stranger), fitted on LFW with leave-identity-out strangers and enrolled
  probes at gallery sizes 30 .. 605,749 rows (benchmarks/accuracy/verdicts.py, identity folds kept
  apart). With the share of visitors who are in the dataset ``prior`` (a setting, not part of the
  file) and the share r(N) of enrolled visitors whose best match is themselves (measured per gallery
  size), the best match is the visitor with probability

      p = prior r L / (prior r L + 1 - prior r)

  (enrolled visitors whose best match is someone else are counted with the strangers: their best
  match is a look-alike too). A bigger gallery lowers p through r(N) and the closer neighbours it
  brings.
* Look-alike table (format 3, optional): how many people a dataset holds, by chance, at least as close
  to a face as its best match (:mod:`index.lookalikes`; fitted by benchmarks/accuracy/lookalikes.py).
  A file without it still loads, and the kiosk then leaves that line out.
"""

from __future__ import annotations

import itertools
import json
import math
import os
from dataclasses import asdict, dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from index.lookalikes import Lookalikes, LookalikesError
from messages.schemas import LIKELY_YOU, LOOK_ALIKE

FILENAME = "calibration.json"
DEFAULT = Path(__file__).with_name("lfw_calibration.json")  # fitted on LFW by benchmarks/accuracy/calibrate.py
FORMAT_VERSION = 3  # 2 adds the neighbourhood verdict model, 3 the look-alike table
READABLE_VERSIONS = (1, 2, 3)  # a version-1 file still works: the per-distance gallery model, with the setting's prior
# The neighbourhood model's features, in the order of its weights (after the intercept). "others" are
# the distances to the next other identities in the ranked list, nearest first (see neighbourhood()).
FEATURES = ("distance", "gap to the next other identity", "gap to the mean of the other identities")
_GRID = np.linspace(0.0, 2.0, 2001)  # descriptor distances live in 0..~1.5


class CalibrationError(ValueError):
    """A calibration file that can't be used; the text says why."""


@dataclass(frozen=True)
class Neighbourhood:
    """The verdict model: the best match judged against the next other identities in the same ranked list.

    ``weights``: logistic intercept and one weight per :data:`FEATURES` (log likelihood ratio of
    "the best match is the visitor" against "the visitor is a stranger"). ``rows``: how many ranked
    rows the features look at (the kiosk shows top_k = 5). ``rank1``: (gallery rows N, share of
    enrolled visitors whose best match is themselves), measured, interpolated in log N."""

    weights: tuple[float, ...]
    rank1: tuple[tuple[float, float], ...]
    rows: int = 5
    features: tuple[str, ...] = FEATURES

    def __post_init__(self) -> None:
        try:
            weights = tuple(float(w) for w in self.weights)
            rank1 = tuple((float(n), float(r)) for n, r in self.rank1)
        except (TypeError, ValueError) as e:
            raise CalibrationError(
                f"neighbourhood: weights must be numbers and rank1 [[rows, share], ...] ({e})"
            ) from e
        object.__setattr__(self, "weights", weights)
        object.__setattr__(self, "rank1", rank1)
        object.__setattr__(self, "features", tuple(self.features))
        if self.features != FEATURES:
            raise CalibrationError(f"neighbourhood: features must be {list(FEATURES)}, got {list(self.features)}")
        if len(weights) != 1 + len(FEATURES) or not all(math.isfinite(w) for w in weights):
            raise CalibrationError(f"neighbourhood: weights must be {1 + len(FEATURES)} finite numbers")
        if not rank1 or not all(n >= 1 and 0 < r <= 1 for n, r in rank1):
            raise CalibrationError("neighbourhood: rank1 needs rows >= 1 and shares in (0, 1]")
        if not all(a[0] < b[0] for a, b in itertools.pairwise(rank1)):
            raise CalibrationError("neighbourhood: rank1 rows must be increasing")
        if not 2 <= self.rows <= 100:
            raise CalibrationError(f"neighbourhood: rows must be 2..100, got {self.rows}")


@dataclass(frozen=True)
class Calibration:
    pair_a: float  # logistic intercept
    pair_b: float  # logistic slope (negative: farther = less likely the same person)
    genuine_mean: float
    genuine_std: float
    impostor_mean: float
    impostor_std: float
    prior_in_gallery: float = 0.5  # chance that the visitor is enrolled; the kiosk passes its setting instead
    gallery_scale: float = 1.0  # effective number of independent look-alikes per identity (fitted, see ACCURACY.md)
    source: dict[str, Any] = field(default_factory=dict)  # what it was fitted on, and scores
    # (gallery rows N, mean, std) of the nearest other-person distance, measured; empty: the pooled-tail model
    best_impostor: tuple[tuple[float, float, float], ...] = ()
    neighbourhood: Neighbourhood | None = None  # the verdict model (format 2); None: the per-distance models
    lookalikes: Lookalikes | None = None  # how many people come this close by chance (format 3); None: no such line

    def __post_init__(self) -> None:
        if isinstance(self.lookalikes, dict):  # as read from JSON
            try:
                object.__setattr__(self, "lookalikes", Lookalikes.from_json(self.lookalikes))
            except LookalikesError as e:
                raise CalibrationError(str(e)) from e
        if isinstance(self.neighbourhood, dict):  # as read from JSON
            try:
                object.__setattr__(self, "neighbourhood", Neighbourhood(**self.neighbourhood))
            except TypeError as e:
                raise CalibrationError(f"neighbourhood: {e}") from e
        try:
            table = tuple((float(n), float(m), float(sd)) for n, m, sd in self.best_impostor)
        except (TypeError, ValueError) as e:
            raise CalibrationError(f"best_impostor must be [[rows, mean, std], ...], got {self.best_impostor!r}") from e
        object.__setattr__(self, "best_impostor", table)  # JSON lists -> hashable tuples
        if table and not (
            all(n >= 1 and sd > 0 for n, _, sd in table) and all(a[0] < b[0] for a, b in itertools.pairwise(table))
        ):
            raise CalibrationError("best_impostor: rows must be >= 1 and increasing, stds positive")
        if not (self.genuine_std > 0 and self.impostor_std > 0):
            raise CalibrationError("standard deviations must be positive")
        if not 0 < self.gallery_scale <= 1:
            raise CalibrationError(f"gallery_scale must be in (0, 1], got {self.gallery_scale}")
        if not 0 < self.prior_in_gallery <= 1:
            raise CalibrationError(f"prior_in_gallery must be in (0, 1], got {self.prior_in_gallery}")
        if not self.pair_b < 0:
            raise CalibrationError(f"pair_b must be negative (farther = less alike), got {self.pair_b}")


def pair_probability(cal: Calibration, distance: float | np.ndarray) -> float | np.ndarray:
    """P(same person) for one pair at ``distance``, at even prior odds (the LFW pairs setting)."""
    z = cal.pair_a + cal.pair_b * np.asarray(distance, dtype=float)
    p = 1.0 / (1.0 + np.exp(-np.clip(z, -500, 500)))
    return float(p) if np.ndim(p) == 0 else p


def _norm_logpdf(x: np.ndarray, mean: float, std: float) -> np.ndarray:
    return -0.5 * ((x - mean) / std) ** 2 - math.log(std * math.sqrt(2 * math.pi))


def _norm_logsf(x: np.ndarray, mean: float, std: float) -> np.ndarray:
    z = (x - mean) / std
    # erfc underflows past z ~ 26; the asymptotic form takes over there.
    from math import erfc

    out = np.empty_like(z)
    for i, v in enumerate(z.flat):
        s = 0.5 * erfc(v / math.sqrt(2))
        out.flat[i] = math.log(s) if s > 1e-300 else -0.5 * v * v - math.log(v * math.sqrt(2 * math.pi))
    return out


@lru_cache(maxsize=64)
def _gallery_curve(gm: float, gs: float, im: float, isd: float, pi: float, n_identities: int) -> np.ndarray:
    d, n = _GRID, float(n_identities)
    lf_s, ls_s = _norm_logpdf(d, gm, gs), _norm_logsf(d, gm, gs)
    lf_i, ls_i = _norm_logpdf(d, im, isd), _norm_logsf(d, im, isd)
    log_true = math.log(pi) + lf_s + ls_i
    terms = [log_true, lf_i + ls_i + math.log(n * (1 - pi)) if pi < 1 else np.full_like(d, -np.inf)]
    if n > 1:
        terms.append(math.log(pi) + math.log(n - 1) + lf_i + ls_s)
    log_all = np.logaddexp.reduce(np.stack(terms), axis=0)
    p = np.exp(log_true - log_all)
    return np.minimum.accumulate(np.clip(p, 0.0, 1.0))  # closer never means less likely


def best_impostor_at(table: tuple[tuple[float, float, float], ...], n: float) -> tuple[float, float]:
    """(mean, std) of the nearest other-person distance among ``n`` rows, interpolated in log n.

    Beyond the measured sizes the nearest segment is extended (the mean keeps falling as log n grows;
    the std is kept above 0.005)."""
    if len(table) == 1:
        return table[0][1], table[0][2]
    x = np.log([r[0] for r in table])
    i = int(np.clip(np.searchsorted(x, math.log(n)), 1, len(table) - 1))
    (n0, m0, s0), (n1, m1, s1) = table[i - 1], table[i]
    t = (math.log(n) - math.log(n0)) / (math.log(n1) - math.log(n0))
    return m0 + t * (m1 - m0), max(0.005, s0 + t * (s1 - s0))


def _measured_curve(gm: float, gs: float, bm: float, bs: float, pi: float) -> np.ndarray:
    d = _GRID
    lf_s, ls_s = _norm_logpdf(d, gm, gs), _norm_logsf(d, gm, gs)
    lf_b, ls_b = _norm_logpdf(d, bm, bs), _norm_logsf(d, bm, bs)
    log_true = math.log(pi) + lf_s + ls_b
    terms = [log_true, math.log(pi) + lf_b + ls_s]
    if pi < 1:
        terms.append(math.log(1 - pi) + lf_b)
    p = np.exp(log_true - np.logaddexp.reduce(np.stack(terms), axis=0))
    return np.minimum.accumulate(np.clip(p, 0.0, 1.0))  # closer never means less likely


_STEPS_PER_DECADE = 10
_MAX_DECADES = 10  # gallery sizes up to 10^10 rows


@lru_cache(maxsize=8)
def _measured_surface(gm: float, gs: float, table: tuple, pi: float) -> np.ndarray:
    """P on (N = 10^(k/10) for k = 0..100) x distance grid, made non-increasing along both axes.

    The normals fitted per N have different spreads, so their far tails can cross (in the region
    where P is ~1 anyway); the running minimum over N guarantees that a bigger gallery never raises P."""
    ks = range(_STEPS_PER_DECADE * _MAX_DECADES + 1)
    curves = [_measured_curve(gm, gs, *best_impostor_at(table, 10 ** (k / _STEPS_PER_DECADE)), pi) for k in ks]
    return np.minimum.accumulate(np.stack(curves), axis=0)


def match_probability(cal: Calibration, distance: float, n_rows: int) -> float:
    """P(the best match at ``distance`` among ``n_rows`` gallery rows is the visitor, not a look-alike).

    ``n_rows`` counts every searched row, synthetic distractors included (ACCURACY.md says why); the
    pooled-tail model's ``gallery_scale`` was fitted on galleries of one photo per person (rows = people)."""
    if n_rows < 1:
        raise ValueError(f"n_rows must be >= 1, got {n_rows}")
    if not math.isfinite(distance) or distance < 0:
        raise ValueError(f"distance must be a finite number >= 0, got {distance}")
    if cal.best_impostor:
        surface = _measured_surface(cal.genuine_mean, cal.genuine_std, cal.best_impostor, cal.prior_in_gallery)
        k = min(math.log10(n_rows) * _STEPS_PER_DECADE, len(surface) - 1.0)
        k0 = min(int(k), len(surface) - 2)
        t = k - k0
        curve = (1 - t) * surface[k0] + t * surface[k0 + 1]  # both rows non-increasing: so is the mix
        return float(np.interp(distance, _GRID, curve))
    params = (cal.genuine_mean, cal.genuine_std, cal.impostor_mean, cal.impostor_std, cal.prior_in_gallery)
    curve = _gallery_curve(*params, max(1, round(n_rows * cal.gallery_scale)))
    return float(np.interp(distance, _GRID, curve))


def verdict(p_same: float) -> str:
    return LIKELY_YOU if p_same >= 0.5 else LOOK_ALIKE


def neighbourhood(distances: np.ndarray, identities: np.ndarray, rows: int) -> tuple[np.ndarray, np.ndarray]:
    """The candidate's distance and the next ``rows - 1`` other identities' distances, for ranked lists.

    ``distances`` and ``identities`` are (lists, k) arrays whose first row is the candidate, the rest
    best first; only the first ``rows`` rows count. The others are each other identity's nearest row,
    in order (the candidate's own rows and repeats skipped). Where a list shows fewer other
    identities, the missing ones get the list's last distance: a lower bound for every row not
    returned, so a short or one-person list makes the best match look less distinctive, never more."""
    d = np.asarray(distances, dtype=float)[:, :rows]
    ids = np.asarray(identities)[:, :rows]
    n, k = d.shape
    repeat = np.zeros((n, k), dtype=bool)
    for j in range(1, k):
        repeat[:, j] = (ids[:, :j] == ids[:, j : j + 1]).any(axis=1)
    other = ~repeat & (ids != ids[:, :1])
    out = np.repeat(d[:, -1:], rows - 1, axis=1)
    at = np.cumsum(other, axis=1) - 1
    r, c = np.nonzero(other)
    out[r, at[r, c]] = d[r, c]
    return d[:, 0], out


def features(candidate: np.ndarray, others: np.ndarray) -> np.ndarray:
    """The :data:`FEATURES` of each list: (lists, 3). The gallery's size needs no feature of its own: a
    bigger gallery brings the others closer, and lowers r(N) in :func:`posterior` (a log N feature was
    measured and left out: it changed no figure in ACCURACY.md by more than noise)."""
    c = np.asarray(candidate, dtype=float)
    return np.column_stack([c, others[:, 0] - c, others.mean(axis=1) - c])


def log_likelihood_ratio(model: Neighbourhood, x: np.ndarray) -> np.ndarray:
    """log f(x | best match is the visitor) / f(x | stranger) for feature rows ``x``."""
    w = np.asarray(model.weights)
    return w[0] + np.asarray(x, dtype=float) @ w[1:]


def rank1_at(model: Neighbourhood, n_rows: float) -> float:
    """Share of enrolled visitors whose best match is themselves among ``n_rows`` rows.

    Interpolated in log N between the measured sizes; beyond the largest the last segment goes on (a
    bigger gallery keeps lowering it, down to 0.01); below the smallest it stays at the first share."""
    x = math.log(max(1.0, n_rows))
    n = [math.log(r[0]) for r in model.rank1]
    r = [r[1] for r in model.rank1]
    if x <= n[-1] or len(n) == 1:
        return float(np.interp(x, n, r))
    slope = (r[-1] - r[-2]) / (n[-1] - n[-2])
    return max(0.01, r[-1] + min(0.0, slope) * (x - n[-1]))


def posterior(llr: np.ndarray | float, prior: float, rank1: np.ndarray | float) -> np.ndarray:
    """p = prior r L / (prior r L + 1 - prior r) for log likelihood ratios ``llr`` (r: ``rank1``)."""
    pr = np.minimum(prior * np.asarray(rank1, dtype=float), 1 - 1e-12)
    z = np.asarray(llr, dtype=float) + np.log(pr) - np.log1p(-pr)
    return 1.0 / (1.0 + np.exp(-np.clip(z, -500, 500)))


def p_same(cal: Calibration, distances: list[float], identities: list[str], n_rows: int, prior: float) -> list[float]:
    """P(this row's person is the visitor) for every row of one ranked list, best first.

    ``prior`` is the share of visitors expected to be in the dataset (the ``index.enrolled_share``
    setting). With the neighbourhood model each row's identity is taken in turn as the candidate,
    against the other identities in the list (for rows below the best, closer others count against
    it); rows of one identity get the same probability. Without it (a version-1 file) each
    distance goes through the per-distance gallery model, as before."""
    if n_rows < 1:
        raise ValueError(f"n_rows must be >= 1, got {n_rows}")
    if not 0 < prior <= 1:
        raise ValueError(f"prior must be in (0, 1], got {prior}")
    if not all(math.isfinite(d) and d >= 0 for d in distances):
        raise ValueError(f"distances must be finite numbers >= 0, got {distances}")
    if len(identities) != len(distances):
        raise ValueError(f"{len(identities)} identities for {len(distances)} distances")
    if not distances:
        return []
    model = cal.neighbourhood
    if model is None:
        with_prior = replace(cal, prior_in_gallery=prior)
        return [match_probability(with_prior, d, n_rows) for d in distances]
    first: dict[str, int] = {}
    for i, name in enumerate(identities):
        first.setdefault(name, i)
    order = list(first.values())
    lists_d = np.array([[distances[i], *distances[:i], *distances[i + 1 :]] for i in order], dtype=float)
    ids = np.array([[identities[i], *identities[:i], *identities[i + 1 :]] for i in order], dtype=object)
    x = features(*neighbourhood(lists_d, ids, model.rows))
    p = posterior(log_likelihood_ratio(model, x), prior, rank1_at(model, n_rows))
    by_identity = {identities[i]: float(v) for i, v in zip(order, p, strict=True)}
    return [by_identity[name] for name in identities]


def fit_logistic(distances: np.ndarray, same: np.ndarray, iterations: int = 50) -> tuple[float, float]:
    """Maximum-likelihood (a, b) of P(same) = 1 / (1 + exp(-(a + b d))), by Newton's method."""
    a, b = fit_weights(np.asarray(distances, float)[:, None], same, iterations=iterations)
    return float(a), float(b)


def fit_weights(
    x: np.ndarray, y: np.ndarray, sample_weight: np.ndarray | None = None, iterations: int = 100
) -> np.ndarray:
    """Weighted maximum-likelihood logistic regression: intercept, then one weight per column of ``x``."""
    x = np.column_stack([np.ones(len(x)), np.asarray(x, float)])
    y = np.asarray(y, float)
    sw = np.ones(len(y)) if sample_weight is None else np.asarray(sample_weight, float)
    w = np.zeros(x.shape[1])
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-np.clip(x @ w, -500, 500)))
        grad = x.T @ (sw * (y - p))
        hess = (x * (sw * (p * (1 - p) + 1e-9))[:, None]).T @ x + 1e-6 * np.eye(len(w))  # tiny ridge: separable data
        step = np.linalg.solve(hess, grad)
        w += step
        if np.max(np.abs(step)) < 1e-10:
            break
    return w


def fit(
    pair_distances: np.ndarray,
    pair_same: np.ndarray,
    impostor_tail: tuple[float, float] | None = None,
    prior_in_gallery: float = 0.5,
    source: dict[str, Any] | None = None,
) -> Calibration:
    """Fit both models on labelled pair distances; ``impostor_tail`` (mean, std) overrides the impostor normal."""
    d, s = np.asarray(pair_distances, float), np.asarray(pair_same, bool)
    if s.all() or not s.any():
        raise ValueError("calibration needs both same-person and different-person pairs")
    a, b = fit_logistic(d, s)
    im, isd = impostor_tail or (float(np.mean(d[~s])), float(np.std(d[~s])))
    return Calibration(
        pair_a=a,
        pair_b=b,
        genuine_mean=float(np.mean(d[s])),
        genuine_std=float(np.std(d[s])),
        impostor_mean=im,
        impostor_std=isd,
        prior_in_gallery=prior_in_gallery,
        source=source or {},
    )


def tail_normal(distances: np.ndarray, low_q: float = 1e-4, high_q: float = 1e-2) -> tuple[float, float]:
    """(mean, std) of the normal whose ``low_q`` and ``high_q`` quantiles match the sample's lower tail."""
    from statistics import NormalDist

    lo, hi = np.quantile(np.asarray(distances, float), [low_q, high_q])
    z_lo, z_hi = NormalDist().inv_cdf(low_q), NormalDist().inv_cdf(high_q)
    std = (hi - lo) / (z_hi - z_lo)
    return float(lo - z_lo * std), float(std)


def to_json(cal: Calibration) -> str:
    return json.dumps({"format_version": FORMAT_VERSION, **asdict(cal)}, indent=2) + "\n"


def save(cal: Calibration, index_dir: Path) -> Path:
    """Store ``cal`` with an index: written beside and renamed over, so a reader sees the old or the new file."""
    path = Path(index_dir) / FILENAME
    tmp = path.with_name(FILENAME + ".tmp")
    tmp.write_text(to_json(cal))
    os.replace(tmp, path)
    return path


def load(index_dir: Path) -> Calibration | None:
    """The index's calibration, None when it has none; CalibrationError when the file is unusable."""
    path = Path(index_dir) / FILENAME
    return read(path) if path.exists() else None


def read(path: Path) -> Calibration:
    """A calibration file anywhere (e.g. the LFW default); CalibrationError when unusable."""
    try:
        raw = json.loads(Path(path).read_text())
        version = raw.pop("format_version", None)
        if version not in READABLE_VERSIONS:
            *older, newest = READABLE_VERSIONS
            raise CalibrationError(
                f"{path}: format_version is {version!r}; this MegaPixels reads {', '.join(map(str, older))} and "
                f"{newest} (refit with python -m benchmarks.accuracy.verdicts --store, or install a newer release)"
            )
        if version == 1 and "neighbourhood" in raw:
            raise CalibrationError(f"{path}: a neighbourhood model needs format_version 2")
        if version in (1, 2) and "lookalikes" in raw:
            raise CalibrationError(f"{path}: a look-alike table needs format_version 3")
        return Calibration(**raw)
    except (json.JSONDecodeError, TypeError) as e:
        raise CalibrationError(f"{path}: not a calibration file ({e})") from e
    except CalibrationError as e:
        raise CalibrationError(f"{path}: {e}") from e


def install(index_dir: Path, source: Path = DEFAULT) -> Path | None:
    """Store the calibration ``source`` (default: the LFW fit) with an index; None when there is none."""
    if not Path(source).exists():
        return None
    return save(read(source), index_dir)
