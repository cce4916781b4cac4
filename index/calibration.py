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
"""

from __future__ import annotations

import itertools
import json
import math
import os
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from messages.schemas import LIKELY_YOU, LOOK_ALIKE

FILENAME = "calibration.json"
DEFAULT = Path(__file__).with_name("lfw_calibration.json")  # fitted on LFW by benchmarks/accuracy/calibrate.py
FORMAT_VERSION = 1
_GRID = np.linspace(0.0, 2.0, 2001)  # descriptor distances live in 0..~1.5


class CalibrationError(ValueError):
    """A calibration file that can't be used; the text says why."""


@dataclass(frozen=True)
class Calibration:
    pair_a: float  # logistic intercept
    pair_b: float  # logistic slope (negative: farther = less likely the same person)
    genuine_mean: float
    genuine_std: float
    impostor_mean: float
    impostor_std: float
    prior_in_gallery: float = 0.5  # chance that the visitor is enrolled at all
    gallery_scale: float = 1.0  # effective number of independent look-alikes per identity (fitted, see ACCURACY.md)
    source: dict[str, Any] = field(default_factory=dict)  # what it was fitted on, and scores
    # (gallery rows N, mean, std) of the nearest other-person distance, measured; empty: the pooled-tail model
    best_impostor: tuple[tuple[float, float, float], ...] = ()

    def __post_init__(self) -> None:
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


def fit_logistic(distances: np.ndarray, same: np.ndarray, iterations: int = 50) -> tuple[float, float]:
    """Maximum-likelihood (a, b) of P(same) = 1 / (1 + exp(-(a + b d))), by Newton's method."""
    x = np.column_stack([np.ones(len(distances)), np.asarray(distances, float)])
    y = np.asarray(same, float)
    w = np.zeros(2)
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-np.clip(x @ w, -500, 500)))
        grad = x.T @ (y - p)
        hess = (x * (p * (1 - p) + 1e-9)[:, None]).T @ x + 1e-6 * np.eye(2)  # tiny ridge: separable data
        step = np.linalg.solve(hess, grad)
        w += step
        if np.max(np.abs(step)) < 1e-10:
            break
    return float(w[0]), float(w[1])


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


def save(cal: Calibration, index_dir: Path) -> Path:
    """Store ``cal`` with an index: written beside and renamed over, so a reader sees the old or the new file."""
    path = Path(index_dir) / FILENAME
    tmp = path.with_name(FILENAME + ".tmp")
    tmp.write_text(json.dumps({"format_version": FORMAT_VERSION, **asdict(cal)}, indent=2) + "\n")
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
        if raw.pop("format_version", None) != FORMAT_VERSION:
            raise CalibrationError(f"{path}: format_version must be {FORMAT_VERSION}")
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
