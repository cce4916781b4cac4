"""The LFW verification protocol: pairs.txt parsing, photo lists and the 10-fold evaluation.

Pure functions: descriptors come in, per-fold accuracies and thresholds come out. The protocol is
the official one: the threshold is chosen on nine folds and tested on the tenth, ten times.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

DEFAULT_ROOT = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "lfw"


@dataclass(frozen=True)
class Pair:
    fold: int
    a: str  # photo path relative to the LFW root
    b: str
    same: bool


def photo_path(name: str, number: int) -> str:
    return f"{name}/{name}_{number:04d}.jpg"


def parse_pairs(text: str) -> list[Pair]:
    """The pairs of a pairs.txt: header ``folds<TAB>n``, then per fold n same- and n different-person lines."""
    lines = [ln.split() for ln in text.splitlines() if ln.strip()]
    if not lines or len(lines[0]) != 2:
        raise ValueError("pairs file: the first line must be '<folds> <pairs per class per fold>'")
    folds, n = int(lines[0][0]), int(lines[0][1])
    body = lines[1:]
    if len(body) != folds * 2 * n:
        raise ValueError(f"pairs file: expected {folds * 2 * n} pair lines for {folds} folds of 2x{n}, got {len(body)}")
    pairs = []
    for i, f in enumerate(body):
        fold, same = i // (2 * n), (i % (2 * n)) < n
        if same and len(f) == 3:
            pairs.append(Pair(fold, photo_path(f[0], int(f[1])), photo_path(f[0], int(f[2])), True))
        elif not same and len(f) == 4:
            pairs.append(Pair(fold, photo_path(f[0], int(f[1])), photo_path(f[2], int(f[3])), False))
        else:
            kind = "same-person (name i j)" if same else "different-person (name1 i name2 j)"
            raise ValueError(f"pairs file line {i + 2}: expected a {kind} pair, got {' '.join(f)!r}")
    return pairs


def read_pairs(root: Path = DEFAULT_ROOT) -> list[Pair]:
    return parse_pairs((Path(root) / "pairs.txt").read_text())


def all_photos(root: Path = DEFAULT_ROOT) -> list[str]:
    root = Path(root)
    return sorted(str(p.relative_to(root)) for p in root.glob("*/*.jpg"))


def subset_photos(root: Path, subset: str) -> list[str]:
    """Photo paths for ``pairs`` (every photo pairs.txt names, fold by fold: a partial run covers whole
    folds first), ``foldN`` (those of fold N, 1-based) or ``all``."""
    if subset == "all":
        return all_photos(root)
    pairs = read_pairs(root)
    if subset.startswith("fold"):
        k = int(subset[4:]) - 1
        pairs = [p for p in pairs if p.fold == k]
    elif subset != "pairs":
        raise ValueError(f"subset must be pairs, all or foldN, got {subset!r}")
    first_fold: dict[str, int] = {}
    for p in pairs:
        first_fold.setdefault(p.a, p.fold)
        first_fold.setdefault(p.b, p.fold)
    return sorted(first_fold, key=lambda photo: (first_fold[photo], photo))


def best_threshold(distances: np.ndarray, same: np.ndarray) -> float:
    """The distance threshold (same person when distance < threshold) with the highest accuracy."""
    order = np.argsort(distances, kind="stable")
    d, s = distances[order], same[order].astype(bool)
    # Threshold just above d[i]: pairs 0..i say "same". Correct = same among them + different after them.
    correct = np.cumsum(s) + (np.sum(~s) - np.cumsum(~s))
    correct = np.concatenate([[np.sum(~s)], correct])  # threshold below everything
    i = int(np.argmax(correct))
    if i == 0:
        return float(d[0]) - 1e-6
    upper = d[i] if i < len(d) else d[-1] + 1e-3
    return float((d[i - 1] + upper) / 2)


@dataclass(frozen=True)
class TenFold:
    accuracies: list[float]
    thresholds: list[float]

    @property
    def mean(self) -> float:
        return float(np.mean(self.accuracies))

    @property
    def std(self) -> float:
        return float(np.std(self.accuracies))


def ten_fold(distances: np.ndarray, same: np.ndarray, folds: np.ndarray) -> TenFold:
    """Per test fold: threshold chosen on the other folds, accuracy on this one."""
    distances, same, folds = np.asarray(distances, float), np.asarray(same, bool), np.asarray(folds)
    accs, ths = [], []
    for k in np.unique(folds):
        train, test = folds != k, folds == k
        t = best_threshold(distances[train], same[train])
        accs.append(float(np.mean((distances[test] < t) == same[test])))
        ths.append(t)
    return TenFold(accs, ths)


def pair_distances(pairs: list[Pair], desc: dict[str, np.ndarray]) -> np.ndarray:
    return np.array([float(np.linalg.norm(desc[p.a] - desc[p.b])) for p in pairs])
