"""Exact top-k from int8 codes with per-row error bounds: a quarter of float32's bytes scanned.

The codes (``shard_NNN.codes.npy``, int8, one row per stored row) quantise every dimension with
ONE global scale ``s`` and a per-dimension offset ``o``: ``c = o + s * code``. With one scale the
code distance is a scaled L2 over the int8 values, ``|a - b| = s * |code_a - code_b|``, which
faiss's direct 8-bit scalar quantizer scans with its SIMD integer kernel (on ``code + 128``). Beside them
(``shard_NNN.bounds.npy``, float32) each row's bound ``e = |x - c|``, the norm of its
quantisation residual (rounded up).

Exactness. The query ``q`` is rounded into the code grid too (``q~ = o + s * round((q - o) / s)``;
faiss would truncate it otherwise), and ``r = |q - q~|`` is known. For any row ``x`` with code
``c``, by the triangle inequality ``|q - x| >= |q~ - c| - r - e(x)``. The scan gives the K rows with
the smallest code distance ``a(x) = |q~ - c|``; they are re-ranked on the exact rows (read from
the shard file, never made resident), and ``D_k`` is the k-th best exact distance. Every row
outside the K has ``a(x) >= a_K`` (the K-th code distance), so its exact distance is at least
``a_K - r - max e``. When that is strictly greater than ``D_k``, no row outside the K can enter
the top k (nor tie with it, even at float32's resolution), so the top k of the K, sorted by
(float32 distance, row) as brute force and the reducer's merge sort, IS the top k of the shard.
Otherwise the search widens: K x 8 candidates (``more_candidates``), and past
:data:`FULL_SCAN_FROM` rows an exact scan of the whole shard (``full_scans``). faiss's code
distances are sums of squares of integers below 2^24: exact in float32.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

CANDIDATES = 128  # candidates re-ranked per query: enough on real descriptors (docs/SEARCH.md)
WIDEN = 8  # more candidates when the bound does not prove the top k
FULL_SCAN_FROM = 65_536  # more candidates than this: scan the exact rows instead
SCAN_BLOCK_ROWS = 32_768  # rows read at a time by the exact scan
# One pass over the codes for a batch from BATCH_MIN queries on, on shards of BATCH_MIN_ROWS or more
# (measured on one 2.1M-row shard, 1 thread: faiss's scan per query 190 / 403 ms for 8 / 16 queries,
# the one pass 212 / 289 ms; on a 300k-row shard, in cache, faiss's scans win at 16 too: 34 / 55 ms)
BATCH_MIN = 12
BATCH_MIN_ROWS = 1_000_000
# float32 rounding of a batch's squared code distances (code units, values 0..255, 128 dims: the
# norms and products are integers below 2^24, exact in float32 but for the BLAS's summation order)
BATCH_EPS_D2 = 512.0
CODE_MAX = 127
MARGIN = 1e-6  # slack in the bound check: float64 rounding, and distances rounded to float32 (ulp < 2.4e-7 below 2)

try:
    import faiss
except ImportError:  # the bounded kernel needs faiss; the others do not
    faiss = None


@dataclass(frozen=True)
class CodeParams:
    """``c = offset + scale * code``: one scale for every dimension, an offset per dimension."""

    scale: float
    offset: np.ndarray  # (128,) float32

    @staticmethod
    def of_range(lo: np.ndarray, hi: np.ndarray) -> CodeParams:
        """Parameters that code every value in [lo, hi] (per dimension) within -127..127."""
        lo, hi = np.asarray(lo, np.float64), np.asarray(hi, np.float64)
        offset = ((hi + lo) / 2).astype(np.float32)
        half = np.maximum(np.abs(hi - offset.astype(np.float64)), np.abs(offset.astype(np.float64) - lo))
        scale = np.float32(max(float(half.max()), 1e-9) / CODE_MAX)
        return CodeParams(float(np.nextafter(scale, np.float32(np.inf))), offset)


def encode(rows: np.ndarray, params: CodeParams) -> tuple[np.ndarray, np.ndarray]:
    """(int8 codes, float32 bounds) of float32 rows: each bound is >= |row - decoded code|."""
    x = np.asarray(rows, np.float64)
    offset = params.offset.astype(np.float64)
    codes = np.clip(np.rint((x - offset) / params.scale), -CODE_MAX, CODE_MAX)
    residual = x - (offset + params.scale * codes)
    err = np.sqrt(np.einsum("ij,ij->i", residual, residual))
    bounds = err.astype(np.float32)
    low = bounds.astype(np.float64) < err
    bounds[low] = np.nextafter(bounds[low], np.float32(np.inf))  # rounded up: the bound stays a bound
    return codes.astype(np.int8), bounds


def exact_distances(rows: np.ndarray, query: np.ndarray) -> np.ndarray:
    """Euclidean distances of float32 rows to one query, computed in float64 (the reference form)."""
    diff = np.asarray(rows, np.float64) - np.asarray(query, np.float64)
    return np.sqrt(np.einsum("ij,ij->i", diff, diff))


def best_k(rows: np.ndarray, distances: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k best (row, float32 distance), nearest first, ties by row: brute force's order, and the
    reducer's merge (the answers carry float32 distances; rows closer than a float32 step tie)."""
    d32 = np.asarray(distances).astype(np.float32)
    order = np.lexsort((rows, d32))[:k]
    return rows[order], d32[order]


class RowReader:
    """Exact rows of a shard read with ``pread`` from its .npy, never mapped: nothing a search reads
    stays resident (the page cache keeps it). A mapping gathered rows ~10 % faster at 600k rows,
    but every page fault maps its neighbours too (the kernel's fault-around, 64 KiB), so 128
    random rows left ~8 MiB resident per query until released: 1.4 GiB at 4.2M after a benchmark
    run, against 0.6 GiB with pread. ``decode`` turns the stored dtype into float32."""

    def __init__(
        self, path: str, offset: int, n_rows: int, dtype: np.dtype, decode: Callable[[np.ndarray], np.ndarray]
    ):
        self.fd = os.open(path, os.O_RDONLY)
        self.offset, self.n_rows, self.dtype, self.decode = offset, n_rows, np.dtype(dtype), decode
        self.row_bytes = self.dtype.itemsize * 128

    def rows(self, wanted: np.ndarray) -> np.ndarray:
        """The rows ``wanted`` (any order) as float32."""
        size, at = self.row_bytes, self.offset
        buf = b"".join([os.pread(self.fd, size, at + int(r) * size) for r in wanted])
        return self.decode(np.frombuffer(buf, self.dtype).reshape(len(wanted), 128))

    def block(self, start: int, stop: int) -> np.ndarray:
        """Rows [start, stop) as float32 (one read)."""
        size = self.row_bytes
        buf = os.pread(self.fd, (stop - start) * size, self.offset + start * size)
        return self.decode(np.frombuffer(buf, self.dtype).reshape(stop - start, 128))

    def close(self) -> None:
        os.close(self.fd)


class BoundedShard:
    """One shard searched through its codes, re-ranked exactly: see the module's docstring."""

    def __init__(
        self,
        codes: np.ndarray,
        bounds: np.ndarray,
        params: CodeParams,
        reader: RowReader,
        candidates: int | None = None,
    ):
        if faiss is None:
            raise RuntimeError("kernel 'bounded' needs the faiss-cpu package (pip install faiss-cpu)")
        self.rows = len(codes)
        self.params = params
        self.max_bound = float(bounds.max()) if len(bounds) else 0.0
        self.reader = reader
        self.candidates = candidates or CANDIDATES
        self.counts = {"more_candidates": 0, "full_scans": 0}
        # the one-pass batch kernel over the codes, set by index.search.open_index on big shards
        self.batch_scan: Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]] | None = None
        # faiss's direct 8-bit kernel on code + 128 (0..255): the shift cancels in every distance, and
        # it scans ~15 % faster than QT_8bit_direct_signed here (28 against 33 ms over 2.1M rows, 1 thread)
        self.index = faiss.IndexScalarQuantizer(128, faiss.ScalarQuantizer.QT_8bit_direct, faiss.METRIC_L2)
        self.index.is_trained = True
        self.index.codes.resize(self.rows * 128)  # faiss's own buffer, filled block by block: no second copy
        if self.rows:
            dst = faiss.rev_swig_ptr(self.index.codes.data(), self.rows * 128).reshape(self.rows, 128)
            for at in range(0, self.rows, 1 << 20):
                np.add(codes[at : at + (1 << 20)], 128, out=dst[at : at + (1 << 20)], dtype=np.int16, casting="unsafe")
        self.index.ntotal = self.rows

    @property
    def resident_bytes(self) -> int:
        return self.rows * 128 + (self.rows * 4 if self.batch_scan is not None else 0)

    def codes_view(self) -> np.ndarray:
        """faiss's code buffer (code + 128, uint8, rows x 128), not a copy."""
        return faiss.rev_swig_ptr(self.index.codes.data(), self.rows * 128).reshape(self.rows, 128)

    def _code_query(self, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Queries rounded onto the code grid (code units, float32) and their distance r to it."""
        q64 = np.asarray(q, np.float64)
        offset = self.params.offset.astype(np.float64)
        grid = np.clip(np.rint((q64 - offset) / self.params.scale), -CODE_MAX - 1, CODE_MAX)
        off = q64 - (offset + self.params.scale * grid)
        return grid.astype(np.float32), np.sqrt(np.einsum("ij,ij->i", off, off))

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(m, k) local rows and exact distances (float32), nearest first, ties by row."""
        q = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        k = min(k, self.rows)
        out_rows = np.empty((len(q), k), np.int64)
        out_d = np.empty((len(q), k), np.float32)
        if k == 0:
            return out_rows, out_d
        grid, r = self._code_query(q)
        depth = min(self.rows, max(self.candidates, k))
        todo = np.arange(len(q))
        while len(todo):
            if depth > FULL_SCAN_FROM and depth < self.rows:
                for i in todo:
                    self.counts["full_scans"] += 1
                    out_rows[i], out_d[i] = self._scan(q[i], k)
                break
            d2, cand = self._candidates(grid[todo], depth)
            again = []
            for j, i in enumerate(todo):
                rows = cand[j][cand[j] >= 0]
                exact = exact_distances(self.reader.rows(rows), q[i])
                top_rows, top_d = best_k(rows, exact, k)
                if depth < self.rows:
                    lower = self.params.scale * np.sqrt(max(float(d2[j, depth - 1]), 0.0)) - r[i] - self.max_bound
                    if not lower > float(top_d[-1]) + MARGIN:
                        again.append(i)
                        continue
                out_rows[i], out_d[i] = top_rows, top_d
            todo = np.asarray(again, np.int64)
            if len(todo):
                self.counts["more_candidates"] += len(todo)
                depth = min(self.rows, depth * WIDEN)
        return out_rows, out_d

    def _candidates(self, grid: np.ndarray, depth: int) -> tuple[np.ndarray, np.ndarray]:
        """(m, depth) squared code distances, each at most the true one, and rows, nearest first.

        One query: faiss's scan (exact integers). A batch of :data:`BATCH_MIN` or more: the
        one-pass kernel ``batch_scan`` (index/search.py: every block of codes decoded once for the
        whole batch and scored with one float32 matrix product), whose rounding is covered by
        subtracting :data:`BATCH_EPS_D2`."""
        if self.batch_scan is not None and len(grid) >= BATCH_MIN and self.rows >= BATCH_MIN_ROWS:
            rows, d = self.batch_scan(grid + 128, depth)  # shifted as faiss holds the codes
            return np.asarray(d, np.float64) ** 2 - BATCH_EPS_D2, rows
        d2, rows = self.index.search(grid + 128, depth)  # shifted as faiss holds the codes
        return d2, rows

    def _scan(self, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The exact top k over every row of the shard (the last resort)."""
        q64 = np.asarray(query, np.float64)
        best_rows, best_d = np.empty(0, np.int64), np.empty(0, np.float32)
        for start in range(0, self.rows, SCAN_BLOCK_ROWS):
            block = self.reader.block(start, min(self.rows, start + SCAN_BLOCK_ROWS)).astype(np.float64)
            # expanded form for speed, then the exact form on the few rows that can matter
            d2 = np.einsum("ij,ij->i", block, block) - 2.0 * (block @ q64) + q64 @ q64
            kk = min(k, len(d2))
            cut = np.partition(d2, kk - 1)[kk - 1] + 1e-5  # wide enough for rows that tie at float32
            near = np.nonzero(d2 <= cut)[0]
            exact = exact_distances(block[near], q64)
            best_rows, best_d = best_k(np.concatenate([best_rows, near + start]), np.concatenate([best_d, exact]), k)
        return best_rows, best_d

    def take_counts(self) -> dict[str, int]:
        """The fallbacks counted since the last call (and reset)."""
        counts, self.counts = self.counts, {"more_candidates": 0, "full_scans": 0}
        return counts

    def close(self) -> None:
        self.reader.close()
