"""How many strangers look like you: people a dataset holds, by chance, at least as close to a face as its best match.

A visitor's best match sits at some distance d. How many of the dataset's people would a face like
theirs find that close by chance? For one face q, let F_q(d) be the share of other people whose
photo lies within d of it; a dataset of N people then holds about N F_q(d) of them. The kiosk does not
know the visitor's F_q, so it uses how F_q(d) varies over faces, measured on LFW
(``python -m benchmarks.accuracy.lookalikes --store``; ACCURACY.md): on a distance grid, a low, the
median and a high percentile over faces of log10 F_q(d) (1st, 50th and 99.5th; each LFW person weighted
equally). The high one is the faces whose strangers sit closest, the faces face recognition judges
worst: with the 90th, most of the tenth of LFW people with the closest look-alikes would have been
told "fewer than 1" at their best match, where one stranger is, by definition.
Below the distances LFW's 5,701 people can resolve (shares under ~1/2,000), each curve goes on as
the normal tail fitted to its lowest measured shares.

People with several photos in the dataset are likelier to have one that close: the count is multiplied
by ``photos_factor`` (measured on LFW, interpolated at the dataset's mean photos per person).

The sentence rounds to 1-2 significant figures, widens the range outwards (the low end rounded down,
the high end up) and says "fewer than 1" below half a person: never a falsely precise number. At the
best match the count is by construction about 1 for most strangers: their closest match is the one
look-alike a dataset of this size holds by chance, and the sentence says so in numbers.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

PERCENTILES = (1.0, 50.0, 99.5)  # over faces: few look-alikes, typical, many look-alikes (chosen: ACCURACY.md)
FEWER_THAN_ONE = 0.5  # below half a person the words say "fewer than 1"
NEARLY_ALL = 0.9  # from this share of the dataset up, "nearly all"
MIN_LOG10_SHARE = -300.0  # the grid's floor (10^-300: zero for any dataset)


class LookalikesError(ValueError):
    """A look-alike table that can't be used; the text says why."""


@dataclass(frozen=True)
class Lookalikes:
    """The measured table: log10 of the share of other people within each grid distance, per percentile.

    ``distance``: the grid, increasing. ``log10_share``: one curve per entry of ``percentiles`` (low, 50,
    high), in that order, each non-decreasing in distance and <= 0, the curves ordered low <= 50th <= high.
    ``photos_factor``: (photos per person, how many times more people come that close than with one
    photo each), measured; the first entry is (1, 1)."""

    distance: tuple[float, ...]
    log10_share: tuple[tuple[float, ...], ...]
    photos_factor: tuple[tuple[float, float], ...] = ((1.0, 1.0),)
    percentiles: tuple[float, ...] = PERCENTILES

    def __post_init__(self) -> None:
        try:
            grid = tuple(float(d) for d in self.distance)
            curves = tuple(tuple(float(v) for v in c) for c in self.log10_share)
            factor = tuple((float(m), float(f)) for m, f in self.photos_factor)
            percentiles = tuple(float(p) for p in self.percentiles)
        except (TypeError, ValueError) as e:
            raise LookalikesError(f"lookalikes: distance, log10_share and photos_factor must hold numbers ({e})") from e
        object.__setattr__(self, "distance", grid)
        object.__setattr__(self, "log10_share", curves)
        object.__setattr__(self, "photos_factor", factor)
        object.__setattr__(self, "percentiles", percentiles)
        if len(percentiles) != 3 or not 0 < percentiles[0] < percentiles[1] == 50 < percentiles[2] < 100:
            raise LookalikesError(f"lookalikes: percentiles must be [low, 50, high] within 0..100, got {percentiles}")
        if len(grid) < 2 or not all(math.isfinite(d) and d >= 0 for d in grid):
            raise LookalikesError("lookalikes: distance needs 2 or more finite distances >= 0")
        if not all(a < b for a, b in itertools.pairwise(grid)):
            raise LookalikesError("lookalikes: distance must be increasing")
        if len(curves) != 3 or any(len(c) != len(grid) for c in curves):
            raise LookalikesError(f"lookalikes: log10_share needs 3 curves of {len(grid)} values")
        if not all(math.isfinite(v) and MIN_LOG10_SHARE <= v <= 0 for c in curves for v in c):
            raise LookalikesError(f"lookalikes: log10_share values must be finite, in {MIN_LOG10_SHARE:g}..0")
        if not all(a <= b for c in curves for a, b in itertools.pairwise(c)):
            raise LookalikesError("lookalikes: every log10_share curve must be non-decreasing in distance")
        if not all(a <= b for lo, hi in itertools.pairwise(curves) for a, b in zip(lo, hi, strict=True)):
            raise LookalikesError("lookalikes: the curves must be ordered low <= 50th <= high percentile")
        if not factor or factor[0] != (1.0, 1.0):
            raise LookalikesError("lookalikes: photos_factor must start with [1, 1]")
        if not all(a[0] < b[0] and a[1] <= b[1] for a, b in itertools.pairwise(factor)) or not all(
            math.isfinite(f) and f >= 1 for _, f in factor
        ):
            raise LookalikesError("lookalikes: photos_factor needs increasing photo counts and factors >= 1")

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Lookalikes:
        try:
            return cls(**raw)
        except TypeError as e:
            raise LookalikesError(f"lookalikes: {e}") from e


@dataclass(frozen=True)
class Expected:
    """How many people a dataset holds at least this close by chance: for faces with few look-alikes (the
    table's low percentile), a typical face (median) and faces with many (its high percentile); and the
    dataset's size."""

    low: float
    typical: float
    high: float
    people: int


def shares(table: Lookalikes, distance: float) -> tuple[float, float, float]:
    """The share of other people within ``distance`` of a face, per percentile (low, 50th, high).

    Linear in log10 share between grid points; below the grid the first segment goes on, above it the
    last value holds."""
    if not math.isfinite(distance) or distance < 0:
        raise ValueError(f"distance must be a finite number >= 0, got {distance}")
    grid = table.distance
    out = []
    for curve in table.log10_share:
        if distance < grid[0]:
            slope = (curve[1] - curve[0]) / (grid[1] - grid[0])
            v = curve[0] - slope * (grid[0] - distance)
        else:
            v = float(np.interp(distance, grid, curve))
        out.append(10.0 ** max(MIN_LOG10_SHARE, min(0.0, v)))
    return out[0], out[1], out[2]


def photos_factor(table: Lookalikes, photos_per_person: float) -> float:
    """How many times more people come that close when each has ``photos_per_person`` photos, not one.

    Interpolated in log photos between the measured counts; below 1 it is 1, above the last measured
    count it stays at the last factor (an undercount for datasets with more photos per person)."""
    if not math.isfinite(photos_per_person) or photos_per_person <= 1:
        return 1.0
    m = [math.log(r[0]) for r in table.photos_factor]
    f = [r[1] for r in table.photos_factor]
    return float(np.interp(math.log(photos_per_person), m, f))


def expected(
    table: Lookalikes,
    distance: float,
    people: int,
    photos_per_person: float = 1.0,
    others: Sequence[float] = (),
) -> Expected:
    """How many of a dataset's ``people`` (real people, each with ``photos_per_person`` photos on average)
    would be at least as close as ``distance`` to a face, by chance; never more than ``people``.

    ``others``: the distances to the next other people in the visitor's own results (each person once,
    the best match's excluded). They are strangers for sure, so the j-th nearest shows that at least j
    people lie within its distance. Where the table's high face would bring fewer, the visitor's face has
    more look-alikes than the table's high percentile (faces dlib packs close together, ACCURACY.md): the
    high end is then raised by the largest such shortfall (j / expected), so it covers this face too."""
    if people < 1:
        raise ValueError(f"people must be >= 1, got {people}")
    k = photos_factor(table, photos_per_person) * people
    low, typical, high = (min(float(people), k * s) for s in shares(table, distance))
    scale = 1.0
    for j, d in enumerate(sorted(others), start=1):
        seen_high = k * shares(table, d)[2]
        scale = max(scale, j / max(seen_high, 1e-300))
    return Expected(low, typical, min(float(people), high * scale), int(people))


def _sig(x: float) -> int:
    """The power of ten that 1-2 significant figures keep: 2 when the number starts with 1, else 1."""
    digits = math.floor(math.log10(x))
    return digits - 1 if int(x / 10**digits) == 1 else digits


def round_count(x: float) -> int:
    """To 1-2 significant figures (2 only for numbers starting with 1): 3 -> 3, 14 -> 14, 27 -> 30, 340 -> 300."""
    if x < FEWER_THAN_ONE:
        return 0
    if x < 10:
        return max(1, round(x))
    step = 10 ** _sig(x)
    return int(round(x / step) * step)


def round_down(x: float) -> int:
    """Down to 1-2 significant figures: the low end of a range, so the range never narrows."""
    if x < 1:
        return 0
    step = 10 ** max(0, _sig(x))
    return int(math.floor(x / step) * step)


def round_up(x: float) -> int:
    """Up to 1-2 significant figures: the high end of a range."""
    if x <= 0:
        return 0
    if x <= 1:
        return 1
    step = 10 ** max(0, _sig(x))
    return int(math.ceil(x / step - 1e-9) * step)


def stated(e: Expected) -> tuple[int, int, int]:
    """(low, typical, high) as the sentence states them, in whole people: 0 means "fewer than 1"; each at most
    the dataset's size, and low <= typical <= high."""
    high = min(e.people, round_up(e.high)) if e.high >= FEWER_THAN_ONE else 0
    typical = min(high, round_count(e.typical))
    low = min(typical, round_down(e.low))
    return low, typical, high


def count_words(n: int) -> str:
    return f"{n:,}"


def sentence(e: Expected) -> str:
    """The line for the screen and the receipt: how many people in this dataset would look at least this
    much like the visitor by chance, rounded honestly, with how much it depends on the face."""
    low, typical, high = stated(e)
    dataset = f"this dataset of {count_words(e.people)} {'person' if e.people == 1 else 'people'}"
    if e.typical >= NEARLY_ALL * e.people and e.people >= 10:
        return f"Nearly all of the people in {dataset} would look at least this much like you."
    if high == 0:
        return f"Fewer than 1 person in {dataset} would be expected to look at least this much like you by chance."
    if typical == 0:
        return (
            f"Fewer than 1 person in {dataset} would be expected to look at least this much like you by chance "
            f"(up to {count_words(high)} for faces with many look-alikes)."
        )
    who = "person" if typical == 1 else "people"
    if low == high:
        spread = ""
    elif low == 0:
        spread = f" (from fewer than 1 to {count_words(high)}, depending on the face)"
    else:
        spread = f" (somewhere between {count_words(low)} and {count_words(high)}, depending on the face)"
    return (
        f"About {count_words(typical)} {who} in {dataset} would be expected to look at least this much like you "
        f"by chance{spread}."
    )
