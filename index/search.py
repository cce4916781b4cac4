"""Exact top-k search kernels and the merge of per-shard answers (pure numpy)."""

from __future__ import annotations

import heapq

import numpy as np


def squared_norms(gallery: np.ndarray) -> np.ndarray:
    """Row norms squared, precomputed once per shard so a query is one matrix-vector product."""
    return np.einsum("ij,ij->i", gallery, gallery, dtype=np.float32)


def topk(gallery: np.ndarray, norms_sq: np.ndarray, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Local row numbers and Euclidean distances of the k nearest rows, nearest first.

    |g - q|^2 = |g|^2 - 2 g.q + |q|^2: one pass over the gallery, no n x 128 temporary.
    """
    n = gallery.shape[0]
    if n == 0:
        return np.empty(0, np.int64), np.empty(0, np.float32)
    q = np.asarray(query, dtype=np.float32)
    d2 = norms_sq - 2.0 * (gallery @ q) + float(q @ q)
    k = min(k, n)
    part = np.argpartition(d2, k - 1)[:k] if k < n else np.arange(n)
    order = part[np.argsort(d2[part], kind="stable")]
    return order, np.sqrt(np.maximum(d2[order], 0.0)).astype(np.float32)


def merge(answers: list[tuple[list[int], list[float]]], k: int) -> list[tuple[int, float]]:
    """The global k best (row, distance) pairs from per-shard lists that are each sorted."""
    pairs = ((d, r) for rows, dists in answers for r, d in zip(rows, dists, strict=True))
    return [(r, d) for d, r in heapq.nsmallest(k, pairs)]
