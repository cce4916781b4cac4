"""Exact top-k search kernels over one shard, and the merge of per-shard answers.

Kernels (chosen by measurement, see docs/SEARCH.md):

- ``faiss``: faiss's scalar-quantizer scan over the shard's own bytes (float16 codes are IEEE
  halves, int8 codes are shifted by 127 with the manifest's per-dimension range), or
  ``IndexFlatL2`` for float32. One thread per shard process. numpy's float16 path is ~20x
  slower because of the conversion. (faiss's ``QT_8bit_direct`` scans int8 1.5x faster than
  this, but it rounds the query to bytes too: not exact, so not used.)
- ``numpy``: float32 rows resident with precomputed squared norms; a batch of queries is one
  blocked matrix product over the shard (one scan for the whole batch). Used when faiss is not
  installed, and for float32 shards.
- batches on float16 / int8 shards: faiss's scalar-quantizer search scans the whole shard once
  per query, so a batch of ``BATCH_SCAN_MIN`` or more queries goes through
  :func:`topk_batch_coded` instead: each block of rows is decoded once into a float32 buffer
  that stays in cache, and every query of the batch is answered from it with one matrix
  product (one pass over memory for the whole batch).

- ``bounded`` (index/bounded.py): faiss scans the shard's int8 codes (a quarter of float32's
  bytes) for 128 candidates, re-ranked on the exact rows read from the shard file; per-row error
  bounds prove the top k exact (or the search widens). Chosen by ``auto`` when the index has codes
  (:func:`open_index`); the shard's rows then stay on disk: only the codes are resident.

Distances are Euclidean, over the stored values (float16 / int8 rows decoded): the merge of the
shards' answers equals one exact search over the whole stored gallery.
"""

from __future__ import annotations

import dataclasses
import heapq
from collections.abc import Callable

import numpy as np

from index import bounded, store
from messages import DIM

KERNELS = ("auto", "bounded", "faiss", "numpy")

BLOCK_ROWS = 65_536  # rows per block of the numpy batch scan (8 MiB of float32: stays in cache)
CODED_BLOCK_ROWS = 4_096  # rows decoded at a time for a coded batch: 2 MiB of float32, one core's L2
BATCH_SCAN_MIN = 4  # from this many queries on, one decoded pass beats faiss's scan per query

try:
    from cv2 import convertFp16 as _cv2_fp16  # SIMD half -> float, ~5x numpy's astype
except ImportError:  # OpenCV 5 dropped it: numpy's conversion is exact too, only slower
    _cv2_fp16 = None

try:
    import faiss
except ImportError:  # faiss-cpu is optional: the numpy kernel is exact too, only slower on float16
    faiss = None


def squared_norms(gallery: np.ndarray) -> np.ndarray:
    """Row norms squared, precomputed once per shard so a query is one matrix-vector product."""
    return np.einsum("ij,ij->i", gallery, gallery, dtype=np.float32)


def topk(gallery: np.ndarray, norms_sq: np.ndarray, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Local row numbers and Euclidean distances of the k nearest rows of one query, nearest first."""
    rows, dists = topk_batch(gallery, norms_sq, np.asarray(query, np.float32)[None, :], k)
    return rows[0], dists[0]


def topk_batch(gallery: np.ndarray, norms_sq: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(m, k) local rows and distances for m queries, in ONE pass over the gallery.

    |g - q|^2 = |g|^2 - 2 g.q + |q|^2, block by block: each block is read once for the whole
    batch, and only k candidates per query and block are kept.
    """
    q = np.ascontiguousarray(queries, dtype=np.float32)
    m, n = len(q), gallery.shape[0]
    k = min(k, n)
    if n == 0 or k == 0:
        return np.empty((m, 0), np.int64), np.empty((m, 0), np.float32)
    q_sq = np.einsum("ij,ij->i", q, q)[:, None]
    best_rows, best_d2 = [], []
    for start in range(0, n, BLOCK_ROWS):
        block = gallery[start : start + BLOCK_ROWS]
        d2 = norms_sq[start : start + len(block)][None, :] - 2.0 * (q @ block.T) + q_sq
        kk = min(k, len(block))
        part = (
            np.argpartition(d2, kk - 1, axis=1)[:, :kk] if kk < len(block) else np.tile(np.arange(len(block)), (m, 1))
        )
        best_rows.append(part + start)
        best_d2.append(np.take_along_axis(d2, part, axis=1))
    rows, d2 = np.concatenate(best_rows, axis=1), np.concatenate(best_d2, axis=1)
    order = np.lexsort((rows, d2), axis=1)[:, :k]  # nearest first; ties by row, as a stable argsort would
    rows, d2 = np.take_along_axis(rows, order, axis=1), np.take_along_axis(d2, order, axis=1)
    return rows.astype(np.int64), np.sqrt(np.maximum(d2, 0.0)).astype(np.float32)


def block_decoder(codec: store.RowCodec) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """``decode(stored_block, out)``: stored rows to float32 in ``out`` (the same values as
    :func:`index.store.decode_rows`), without allocating: the block is the hot loop."""
    dtype = codec.dtype
    if dtype == "int8":
        scale = np.asarray(codec.int8_scale, np.float32)
        offset = np.asarray(codec.int8_offset, np.float32)

        def decode_int8(block: np.ndarray, out: np.ndarray) -> np.ndarray:
            np.copyto(out, block, casting="unsafe")
            out *= scale
            out += offset
            return out

        return decode_int8
    if dtype == "float16" and _cv2_fp16 is not None:
        return lambda block, out: _cv2_fp16(block, out)

    def decode_plain(block: np.ndarray, out: np.ndarray) -> np.ndarray:
        np.copyto(out, block, casting="unsafe")
        return out

    return decode_plain


def coded_squared_norms(stored: np.ndarray, codec: store.RowCodec) -> np.ndarray:
    """Squared norms of the decoded rows, computed block by block (no float32 copy of the shard)."""
    decode = block_decoder(codec)
    buf = np.empty((CODED_BLOCK_ROWS, stored.shape[1]), np.float32)
    norms = np.empty(len(stored), np.float32)
    for start in range(0, len(stored), CODED_BLOCK_ROWS):
        block = decode(stored[start : start + CODED_BLOCK_ROWS], buf[: min(CODED_BLOCK_ROWS, len(stored) - start)])
        norms[start : start + len(block)] = np.einsum("ij,ij->i", block, block)
    return norms


def topk_batch_coded(
    stored: np.ndarray, codec: store.RowCodec, norms_sq: np.ndarray, queries: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """(m, k) local rows and distances for m queries over float16 / int8 rows, in ONE pass.

    Each block of ``CODED_BLOCK_ROWS`` rows is decoded once into a cache-resident float32 buffer
    and scored for the whole batch with one matrix product. A query keeps its k best so far; a
    block only costs more than one comparison per row and query where a row beats the k-th best,
    which after the first blocks is rare.
    """
    q = np.ascontiguousarray(queries, dtype=np.float32)
    m, n = len(q), len(stored)
    k = min(k, n)
    if n == 0 or k == 0:
        return np.empty((m, 0), np.int64), np.empty((m, 0), np.float32)
    decode = block_decoder(codec)
    buf = np.empty((CODED_BLOCK_ROWS, stored.shape[1]), np.float32)
    scores = np.empty((CODED_BLOCK_ROWS, m), np.float32)  # rows x queries: BLAS's fast orientation
    beats = np.empty((CODED_BLOCK_ROWS, m), bool)
    minus_2q_t = np.ascontiguousarray(-2.0 * q.T)
    best_d2 = np.full((m, k), np.inf, np.float32)  # |g|^2 - 2 g.q: |q|^2 is added at the end
    best_rows = np.full((m, k), -1, np.int64)
    worst = np.full(m, np.inf, np.float32)  # each query's k-th best so far
    for start in range(0, n, CODED_BLOCK_ROWS):
        size = min(CODED_BLOCK_ROWS, n - start)
        block = decode(stored[start : start + size], buf[:size])
        d2 = np.matmul(block, minus_2q_t, out=scores[:size])
        d2 += norms_sq[start : start + size, None]
        if not np.less(d2, worst, out=beats[:size]).any():
            continue  # the common case once every query holds k good rows: one comparison per row
        hit_row, hit_q = np.nonzero(beats[:size])
        for i in np.unique(hit_q):
            rows = hit_row[hit_q == i]
            cand_d2 = np.concatenate([best_d2[i], d2[rows, i]])
            cand_rows = np.concatenate([best_rows[i], rows + start])
            keep = np.lexsort((cand_rows, cand_d2))[:k]  # nearest first; ties by row
            best_d2[i], best_rows[i] = cand_d2[keep], cand_rows[keep]
            worst[i] = best_d2[i, -1]
    d2 = best_d2 + np.einsum("ij,ij->i", q, q)[:, None]
    return best_rows, np.sqrt(np.maximum(d2, 0.0)).astype(np.float32)


def open_index(
    index_dir, k: int, manifest: store.Manifest, kernel: str = "auto", verify: bool = True
) -> tuple[ShardIndex, int]:
    """Shard ``k`` of the index opened as the matchers open it (every file checked against the
    manifest), searchable with ``kernel``, and the global row of its first row. ``auto`` takes the
    ``bounded`` kernel when the index has codes (``megapixels index add-codes``)."""
    stored, first = store.open_shard(index_dir, k, verify=verify, manifest=manifest)
    shard = None
    if kernel == "bounded" or (kernel == "auto" and manifest.codes is not None and faiss is not None):
        codes, bounds = store.open_codes(index_dir, k, manifest, verify=verify)
        params = bounded.CodeParams(manifest.codes.scale, np.asarray(manifest.codes.offset, np.float32))
        path = f"{index_dir}/{manifest.shards[k].file}"
        reader = bounded.RowReader(
            path, int(stored.offset), len(stored), stored.dtype, lambda rows: store.decode_rows(rows, manifest.codec)
        )
        shard = bounded.BoundedShard(codes, bounds, params, reader)
        del codes, bounds  # copied into faiss's buffer: the mapping goes
        if shard.rows:
            shard.batch_scan = _codes_batch_scan(shard.codes_view())
    return ShardIndex(stored, manifest.codec, kernel, shard), first


CODES_CODEC = store.RowCodec("float32")  # faiss's code + 128 bytes, decoded as they are (one copy, no scaling)


def _codes_batch_scan(codes: np.ndarray) -> Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]]:
    """The one-pass batch kernel over a bounded shard's codes, in code units shifted by 128 as faiss
    holds them (the shift cancels in every distance); its own squared norms, 4 bytes a row."""
    norms = coded_squared_norms(codes, CODES_CODEC)
    return lambda grid, depth: topk_batch_coded(codes, CODES_CODEC, norms, grid, depth)


class ShardIndex:
    """One shard, resident in memory, searchable with the chosen kernel."""

    def __init__(
        self,
        stored: np.ndarray,
        codec: store.RowCodec,
        kernel: str = "auto",
        bounded_shard: bounded.BoundedShard | None = None,
    ):
        dtype = codec.dtype
        if kernel not in KERNELS:
            raise ValueError(f"kernel {kernel!r}: allowed {', '.join(map(repr, KERNELS))}")
        if kernel == "auto":
            coded = faiss is not None and dtype != "float32"
            kernel = "bounded" if bounded_shard is not None else "faiss" if coded else "numpy"
        if kernel in ("faiss", "bounded") and faiss is None:
            raise RuntimeError(f"kernel {kernel!r} needs the faiss-cpu package (pip install faiss-cpu)")
        if kernel == "bounded" and bounded_shard is None:
            raise ValueError("kernel 'bounded' needs the shard's codes (search.open_index)")
        self.kernel = kernel
        self.dtype = dtype
        self.rows = len(stored)
        self.bounded = bounded_shard if kernel == "bounded" else None
        if self.bounded is not None:
            self.index = self.codes = self.gallery = None
            self.norms_sq = np.empty(0, np.float32)
        elif kernel == "numpy":
            self.gallery = np.ascontiguousarray(store.decode_rows(stored, codec))
            self.norms_sq = squared_norms(self.gallery)
            self.index = None
            self.codes = None
        else:
            self.index = _faiss_index(np.ascontiguousarray(stored), codec)
            self.codes = _codes_view(self.index, codec)  # faiss's own bytes, not a copy
            self._decode_codec = self._codes_codec(codec)
            self.norms_sq = (
                coded_squared_norms(self.codes, self._decode_codec)
                if self.codes is not None
                else np.empty(0, np.float32)
            )

    @staticmethod
    def _codes_codec(codec: store.RowCodec) -> store.RowCodec:
        """The codec that decodes faiss's codes: int8 codes are stored there shifted by 127."""
        if codec.dtype != "int8":
            return codec
        scale = np.asarray(codec.int8_scale, np.float32)
        offset = np.asarray(codec.int8_offset, np.float32) - 127 * scale
        return dataclasses.replace(codec, int8_offset=tuple(offset.tolist()))

    @property
    def resident_bytes(self) -> int:
        if self.bounded is not None:
            return self.bounded.resident_bytes
        if self.index is None:
            return self.gallery.nbytes + self.norms_sq.nbytes
        codes = int(self.index.sa_code_size()) * self.rows if self.dtype != "float32" else self.rows * 512
        return codes + self.norms_sq.nbytes

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(m, k) local rows and Euclidean distances, nearest first, for an (m, 128) batch."""
        q = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        k = min(k, self.rows)
        if k == 0:
            return np.empty((len(q), 0), np.int64), np.empty((len(q), 0), np.float32)
        if self.bounded is not None:
            return self.bounded.search(q, k)
        if self.index is None:
            return topk_batch(self.gallery, self.norms_sq, q, k)
        if len(q) >= BATCH_SCAN_MIN and self.codes is not None:
            return topk_batch_coded(self.codes, self._decode_codec, self.norms_sq, q, k)
        d2, rows = self.index.search(q, k)
        return rows.astype(np.int64), np.sqrt(np.maximum(d2, 0.0)).astype(np.float32)

    def close(self) -> None:
        """Close the shard file the bounded kernel reads exact rows from."""
        if self.bounded is not None:
            self.bounded.close()

    def take_counts(self) -> dict[str, int]:
        """The bounded kernel's fallbacks since the last call ({} for the other kernels)."""
        return self.bounded.take_counts() if self.bounded is not None else {}


def _codes_view(index, codec: store.RowCodec) -> np.ndarray | None:
    """faiss's code bytes as a (rows, 128) numpy view: float16 rows, or int8 shifted to uint8."""
    if codec.dtype == "float32":
        return None
    raw = faiss.rev_swig_ptr(index.codes.data(), index.codes.size())
    return raw.view(np.float16 if codec.dtype == "float16" else np.uint8).reshape(-1, DIM)


def _faiss_index(stored: np.ndarray, codec: store.RowCodec):
    """A faiss index that scans the shard's own bytes (no re-encoding, no float32 copy)."""
    dtype = codec.dtype
    if dtype == "float32":
        index = faiss.IndexFlatL2(DIM)
        index.add(stored)
        return index
    if dtype == "float16":
        index = faiss.IndexScalarQuantizer(DIM, faiss.ScalarQuantizer.QT_fp16, faiss.METRIC_L2)
        codes = stored.view(np.uint8)
    else:
        # faiss 8-bit: x = vmin + (c + 0.5) / 255 * vdiff with c in 0..255; ours: x = code * scale + offset
        index = faiss.IndexScalarQuantizer(DIM, faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_L2)
        scale = np.asarray(codec.int8_scale, np.float32)
        offset = np.asarray(codec.int8_offset, np.float32)
        trained = np.concatenate([offset - 127.5 * scale, 255.0 * scale]).astype(np.float32)
        faiss.copy_array_to_vector(trained, index.sq.trained)
        codes = (stored.astype(np.int16) + 127).astype(np.uint8)
    index.is_trained = True
    faiss.copy_array_to_vector(np.ascontiguousarray(codes).ravel(), index.codes)
    index.ntotal = len(stored)
    return index


def merge(answers: list[tuple[list[int], list[float]]], k: int) -> list[tuple[int, float]]:
    """The global k best (row, distance) pairs from per-shard lists that are each sorted."""
    pairs = ((d, r) for rows, dists in answers for r, d in zip(rows, dists, strict=True))
    return [(r, d) for d, r in heapq.nsmallest(k, pairs)]
