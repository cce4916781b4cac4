"""Synthetic distractor descriptors that follow the statistics of real dlib descriptors.

MegaFace has ~4.2M photos; we have LFW (13k). To measure search speed and accuracy at MegaFace
scale, the real gallery is grown with synthetic distractors: 128-D vectors drawn from a model
fitted on real descriptors. They are only ever stored as entries marked synthetic (no photo,
no person); the reducer never shows one to a visitor (see ``actors/reducer.py``).

The model (:class:`DistractorModel`):

- a Gaussian over *identity centres* (mean and "between identities" covariance) and a Gaussian
  over a photo's offset from its identity's centre ("within identity" covariance), both fitted
  on real descriptors with their identity labels. Synthetic rows come in groups of
  ``photos_per_identity`` photos of one synthetic identity (MegaFace: 4.2M photos of 672k
  identities, ~6 each), so a query meets look-alike clusters as it would in the real dataset.
  Without labels the fit is one Gaussian and every row is its own identity.
- each vector is then rescaled to a norm drawn from the real norm distribution (dlib
  descriptors are not unit length: norms 1.36-1.42).

:func:`generate` is deterministic per seed and row: row ``i`` of seed ``s`` is the same however
many rows are asked for, and it is made in chunks so 4.2M rows need no n x 128 float64 temporary.
``python -m index.synthetic`` fits on cached LFW descriptors and prints how synthetic distances
compare with real ones.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from messages import DIM

CHUNK_GROUPS = 8192  # synthetic identities per generated chunk (chunk = 8192 * photos_per_identity rows)
NORM_QUANTILES = 201


@dataclass(frozen=True)
class DistractorModel:
    mean: np.ndarray  # (128,) mean descriptor
    cluster_means: np.ndarray  # (K, 128) centres of the K clusters of identity centres (k-means)
    cluster_weights: np.ndarray  # (K,) share of identities in each cluster
    between: np.ndarray  # (128, 128) factor L, L @ L.T = covariance of identity centres around their cluster
    within: np.ndarray  # (128, 128) factor of the covariance of a photo around its identity centre
    norm_quantiles: np.ndarray  # (NORM_QUANTILES,) quantiles of the real descriptor norms
    photos_per_identity: int = 1
    fitted_on: dict = field(default_factory=dict)  # how many descriptors / identities, and what

    def save(self, path: str | Path) -> None:
        meta = {k: v for k, v in asdict(self).items() if not isinstance(v, np.ndarray)}
        arrays = {k: v for k, v in asdict(self).items() if isinstance(v, np.ndarray)}
        import json

        np.savez(Path(path), meta=np.array(json.dumps(meta)), **arrays)

    @classmethod
    def load(cls, path: str | Path) -> DistractorModel:
        import json

        with np.load(Path(path), allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            arrays = {k: z[k] for k in z.files if k != "meta"}
        return cls(**arrays, **meta)


def load(path: str | Path) -> DistractorModel:
    return DistractorModel.load(path)


def fit(
    descriptors: np.ndarray,
    identities: Sequence[str] | None = None,
    photos_per_identity: int = 6,
    clusters: int = 16,
    source: str = "",
) -> DistractorModel:
    """Fit the model on real descriptors (n x 128), with their identity labels when known.

    Identity centres are grouped into ``clusters`` by k-means (real faces are not one round
    cloud: age, sex and ethnicity make denser regions, and a query's nearest impostors come
    from its own region); a synthetic centre is a cluster mean plus Gaussian noise with the
    pooled covariance of real centres around their cluster mean.
    """
    x = np.asarray(descriptors, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != DIM or len(x) < 2 * DIM:
        raise ValueError(f"fit needs at least {2 * DIM} descriptors of {DIM} dimensions, got {x.shape}")
    mean = x.mean(axis=0)
    total = np.cov(x, rowvar=False)
    within = np.zeros_like(total)
    n_identities = len(x)
    centres = x
    if identities is not None:
        if len(identities) != len(x):
            raise ValueError(f"{len(identities)} identity labels for {len(x)} descriptors")
        labels, inverse = np.unique(np.asarray(identities), return_inverse=True)
        n_identities = len(labels)
        counts = np.bincount(inverse)
        centres = np.zeros((len(labels), DIM))
        np.add.at(centres, inverse, x)
        centres /= counts[:, None]
        offsets = x - centres[inverse]
        repeated = counts[inverse] > 1  # one photo says nothing about the spread around its centre
        dof = int((counts[counts > 1] - 1).sum())
        if dof >= DIM:
            within = offsets[repeated].T @ offsets[repeated] / dof
    else:
        photos_per_identity = 1
    means, assignment = _kmeans(centres, min(clusters, len(centres) // (2 * DIM) or 1), seed=0)
    weights = np.bincount(assignment, minlength=len(means)) / len(centres)
    # total = (spread of cluster means) + (centres around their cluster mean) + (photos around their centre)
    offsets_of_means = means - mean
    of_clusters = (offsets_of_means * weights[:, None]).T @ offsets_of_means
    between = _psd_factor(total - within - of_clusters)
    norms = np.linalg.norm(x, axis=1)
    return DistractorModel(
        mean=mean.astype(np.float64),
        cluster_means=means,
        cluster_weights=weights,
        between=between,
        within=_psd_factor(within),
        norm_quantiles=np.quantile(norms, np.linspace(0, 1, NORM_QUANTILES)),
        photos_per_identity=int(photos_per_identity),
        fitted_on={"descriptors": len(x), "identities": n_identities, "source": source},
    )


def generate(model: DistractorModel, n: int, seed: int, start: int = 0) -> np.ndarray:
    """Rows ``start .. start + n`` of the synthetic distractors of ``seed``: n x 128 float32."""
    out = np.empty((n, DIM), dtype=np.float32)
    for at, block in _chunks(model, start, n, seed):
        out[at : at + len(block)] = block
    return out


def identity_of(model: DistractorModel, row: int) -> int:
    """The synthetic identity number of synthetic row ``row`` (rows come in identity groups)."""
    return row // model.photos_per_identity


def _chunks(model: DistractorModel, start: int, n: int, seed: int) -> Iterator[tuple[int, np.ndarray]]:
    rows_per_chunk = CHUNK_GROUPS * model.photos_per_identity
    stop = start + n
    first_chunk, last_chunk = start // rows_per_chunk, (stop - 1) // rows_per_chunk if n else -1
    for c in range(first_chunk, last_chunk + 1):
        block = _chunk(model, seed, c)
        lo = max(start, c * rows_per_chunk) - c * rows_per_chunk
        hi = min(stop, (c + 1) * rows_per_chunk) - c * rows_per_chunk
        yield c * rows_per_chunk + lo - start, block[lo:hi]


def _chunk(model: DistractorModel, seed: int, c: int) -> np.ndarray:
    """Chunk ``c`` of seed ``seed``: its own random stream, so any chunk can be made on its own."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, c]))
    g = model.photos_per_identity
    cluster = rng.choice(len(model.cluster_weights), CHUNK_GROUPS, p=model.cluster_weights)
    centres = model.cluster_means[cluster] + rng.standard_normal((CHUNK_GROUPS, DIM)) @ model.between.T
    rows = np.repeat(centres, g, axis=0)
    if g > 1:
        rows += rng.standard_normal((len(rows), DIM)) @ model.within.T
    levels = np.linspace(0, 1, len(model.norm_quantiles))
    target = np.interp(rng.random(len(rows)), levels, model.norm_quantiles)
    rows *= (target / np.linalg.norm(rows, axis=1))[:, None]
    return rows.astype(np.float32)


def _kmeans(x: np.ndarray, k: int, seed: int, rounds: int = 25) -> tuple[np.ndarray, np.ndarray]:
    """Plain Lloyd k-means: (k means, the cluster of every row)."""
    rng = np.random.default_rng(seed)
    means = x[rng.choice(len(x), k, replace=False)].copy()
    assignment = np.zeros(len(x), dtype=np.int64)
    for _ in range(rounds):
        d2 = (x * x).sum(1)[:, None] - 2 * x @ means.T + (means * means).sum(1)[None, :]
        assignment = d2.argmin(axis=1)
        for c in range(k):
            members = x[assignment == c]
            if len(members):
                means[c] = members.mean(axis=0)
    return means, assignment


def _psd_factor(cov: np.ndarray) -> np.ndarray:
    """A factor L with L @ L.T = cov, negative eigenvalues (estimation noise) clipped to 0."""
    values, vectors = np.linalg.eigh((cov + cov.T) / 2)
    return vectors * np.sqrt(np.clip(values, 0, None))


def compare(
    real: np.ndarray, identities: Sequence[str], synthetic: np.ndarray, rng: np.random.Generator
) -> dict[str, dict[str, float]]:
    """Distance statistics of real vs synthetic descriptors (percentiles 1, 5, 50, 95)."""
    ids = np.asarray(identities)
    pct = (1, 5, 50, 95)

    def summary(d: np.ndarray) -> dict[str, float]:
        return {f"p{p}": round(float(v), 3) for p, v in zip(pct, np.percentile(d, pct), strict=True)} | {
            "mean": round(float(d.mean()), 3)
        }

    i, j = rng.integers(0, len(real), (2, 20000))
    impostor = ids[i] != ids[j]
    same = (ids[i] == ids[j]) & (i != j)
    # genuine pairs: sample within identities that have several photos
    by_id: dict[str, list[int]] = {}
    for k, name in enumerate(ids):
        by_id.setdefault(name, []).append(k)
    genuine = [(a[0], a[1]) for a in by_id.values() if len(a) > 1]
    ga, gb = np.array(genuine).T if genuine else (i[same], j[same])
    s = rng.integers(0, len(synthetic), 20000)
    picked = rng.choice(len(real), min(300, len(real)), replace=False)
    pool = min(len(synthetic), len(real))

    def nearest_impostor(q_rows: np.ndarray, candidates: np.ndarray, candidate_ids: np.ndarray | None) -> np.ndarray:
        out = []
        for a in range(0, len(q_rows), 20):
            qs = q_rows[a : a + 20]
            d = np.sqrt(np.maximum(((real[qs][:, None, :] - candidates[None, :, :]) ** 2).sum(-1), 0))
            if candidate_ids is not None:
                d[ids[qs][:, None] == candidate_ids[None, :]] = np.inf  # same person is not an impostor
            out.append(d.min(axis=1))
        return np.concatenate(out)

    return {
        "norm real": summary(np.linalg.norm(real, axis=1)),
        "norm synthetic": summary(np.linalg.norm(synthetic, axis=1)),
        "real-real impostor": summary(np.linalg.norm(real[i[impostor]] - real[j[impostor]], axis=1)),
        "real-real genuine": summary(np.linalg.norm(real[ga] - real[gb], axis=1)),
        "real-synthetic": summary(np.linalg.norm(real[i] - synthetic[s], axis=1)),
        "synthetic same identity": summary(_same_identity_pairs(synthetic, rng)),
        "synthetic-synthetic": summary(np.linalg.norm(synthetic[s] - synthetic[np.roll(s, 1)], axis=1)),
        f"real query: nearest of {pool} real impostors": summary(nearest_impostor(picked, real[:pool], ids[:pool])),
        f"real query: nearest of {pool} synthetic": summary(nearest_impostor(picked, synthetic[:pool], None)),
    }


def _same_identity_pairs(synthetic: np.ndarray, rng: np.random.Generator, photos_per_identity: int = 6) -> np.ndarray:
    groups = len(synthetic) // photos_per_identity
    g = rng.integers(0, groups, 5000) * photos_per_identity
    return np.linalg.norm(synthetic[g] - synthetic[g + 1], axis=1)
