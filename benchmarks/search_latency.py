"""Search latency at 100k / 600k / 4.2M entries, next to the naive way and the bandwidth floor, in one run.

The gallery is the real LFW descriptors cached by ``benchmarks.lfw_descriptors`` grown with
synthetic distractors (index/synthetic.py fitted on those LFW descriptors): real faces plus
random vectors for scale, as the issue allows. Queries are real LFW descriptors with a little
noise (a visitor is never exactly a gallery photo).

    .venv/bin/python -m benchmarks.search_latency [--sizes 100000,600000,4200000] [--repeats 30]

Per size, single queries and batches of 16:

- ``face_distance+argsort``: face_recognition.face_distance over float32, then np.argsort
- ``numpy f32``: index/search.py's numpy kernel, 1 thread, whole gallery in one process
- ``faiss fp16``: index/search.py's ShardIndex on float16, 1 thread, whole gallery in one
  process: a single query is faiss's scan; a batch is the one-pass decoded kernel
- ``faiss fp16, scan per query``: the batch given to faiss directly (16 scans): the baseline
  the one-pass batch replaces
- ``2 shards fp16`` / ``2 shards int8``: the matcher layout: 2 worker processes (one thread
  each) with half the gallery each, queries scattered over pipes and merged
  (index/search.merge); int8 is the store's per-dimension int8 (half the bytes of float16),
  and its top 5 is compared with float16's
- ``2 shards fp16 (1 process, 2 threads)``: the default matcher layout (plain ``honcho start``):
  one worker process holding both halves, searched in parallel by actors.matcher.search_shards
  (one thread per shard), over one pipe; ``--layouts`` measures only this and the 2 processes
- ``floor fp16 1 core / 2 cores``: the bytes of the float16 gallery / measured read bandwidth
  (the best of a BLAS dot product, a sum and a copy over 1 GiB)
- ``2 shards bounded``: index/bounded.py on a float32 index of the same rows (real LFW + the same
  synthetic distractors, written by the store with its codes, cached under ~/.cache/megapixels):
  int8 codes scanned by faiss, 128 candidates re-ranked on the exact float32 rows read from the
  shard files. Opened by search.open_index as the matcher opens it, in one process with a thread
  per shard (the default layout; also with OpenMP left at its default thread count in the shard
  threads, the cost the matcher's pool initializer removes) and in 2 processes. Its top 5 is
  checked against float32 brute force (float64 arithmetic) for every query; ``floor codes`` is
  the bytes it scans (a quarter of float32, half of float16) / the 2-core bandwidth.

Also: resident memory of the shard processes (VmRSS) and `uptime` (the machine is shared).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np

from actors import matcher
from benchmarks import lfw_descriptors
from index import search, store, synthetic

CACHE = lfw_descriptors.CACHE.parent
CODEC16 = store.RowCodec("float16")


def gallery(n_total: int) -> tuple[np.ndarray, int, str]:
    """float16 gallery of n_total rows: real LFW first, synthetic after (cached as .npy)."""
    real, identities, _ = lfw_descriptors.load()
    path = CACHE / f"bench-gallery-{len(real)}real-{n_total}.f16.npy"
    if path.exists():
        return np.load(path, mmap_mode="r"), len(real), str(path)
    model = synthetic.fit(real, identities, source="LFW (benchmarks.lfw_descriptors)")
    out = np.lib.format.open_memmap(path.with_suffix(".tmp.npy"), mode="w+", dtype="<f2", shape=(n_total, 128))
    out[: len(real)] = real.astype("<f2")
    for at in range(len(real), n_total, 262_144):
        m = min(262_144, n_total - at)
        out[at : at + m] = synthetic.generate(model, m, seed=1, start=at - len(real)).astype("<f2")
    out.flush()
    del out
    path.with_suffix(".tmp.npy").rename(path)
    return np.load(path, mmap_mode="r"), len(real), str(path)


def timed(fn, repeats: int) -> list[float]:
    fn()  # warm
    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1e3)
    return out


def bandwidth_gb_s(buf: np.ndarray, repeats: int = 5) -> float:
    """Read bandwidth of one core: a sum over a 1 GiB-ish array (min time of several)."""
    view = buf.view(np.float32).ravel()
    summed = buf.nbytes / (min(timed(lambda: np.add.reduce(view), repeats)) / 1e3) / 1e9
    dotted = buf.nbytes / (min(timed(lambda: np.dot(view, view), repeats)) / 1e3) / 1e9
    part = view[: len(view) // 4]
    dst = np.empty_like(part)
    copied = 2 * part.nbytes / (min(timed(lambda: np.copyto(dst, part), repeats)) / 1e3) / 1e9
    return max(summed, dotted, copied)


def _shard_worker(conn, path: str, start: int, stop: int, codec: store.RowCodec) -> None:
    """A matcher's work in a fresh (spawned) process: map its rows, make them resident, answer."""
    mapped = np.load(path, mmap_mode="r")
    rows = mapped[start:stop]
    if codec.dtype == "int8":
        chunks = (np.asarray(rows[a : a + 262_144], np.float32) for a in range(0, len(rows), 262_144))
        rows = np.concatenate([store.encode_rows(c, codec) for c in chunks])
    index = search.ShardIndex(rows, codec, "faiss")
    del mapped, rows  # unmapped: what stays resident is the index itself
    search.faiss.omp_set_num_threads(1)
    conn.send(_rss_mib())
    while True:
        msg = conn.recv()
        if msg is None:
            return
        q, k = msg
        r, d = index.search(q, k)
        conn.send((r, d))


def _threads_worker(conn, path: str, bounds: list[tuple[int, int]], codec: store.RowCodec) -> None:
    """One matcher process serving every shard: one thread per shard, as actors.matcher does."""
    from concurrent.futures import ThreadPoolExecutor

    mapped = np.load(path, mmap_mode="r")
    shards = [matcher.Shard(k, a, search.ShardIndex(mapped[a:b], codec, "faiss")) for k, (a, b) in enumerate(bounds)]
    del mapped
    search.faiss.omp_set_num_threads(1)
    pool = ThreadPoolExecutor(len(shards))
    conn.send(_rss_mib())
    while (msg := conn.recv()) is not None:
        q, k = msg
        conn.send(matcher.search_shards(shards, q, k, pool))
    pool.shutdown()


def _bounded_worker(conn, index_dir: str, shards: list[int], one_omp: bool) -> None:
    """A matcher's bounded search in a fresh (spawned) process: the shards opened as the matcher
    opens them (search.open_index), one thread per shard when there are several."""
    from concurrent.futures import ThreadPoolExecutor

    manifest = store.read_manifest(Path(index_dir))
    opened = [search.open_index(Path(index_dir), k, manifest, "bounded") for k in shards]
    served = [matcher.Shard(k, first, index) for k, (index, first) in zip(shards, opened, strict=True)]
    search.faiss.omp_set_num_threads(1)
    pool = ThreadPoolExecutor(len(served), initializer=matcher.one_thread_each if one_omp else None)
    conn.send(_rss_mib())
    while (msg := conn.recv()) is not None:
        if msg == "rss":
            counts: dict[str, int] = {}
            for shard in served:
                for name, n in shard.index.take_counts().items():
                    counts[name] = counts.get(name, 0) + n
            conn.send((_rss_mib(), counts))
            continue
        q, k = msg
        conn.send(matcher.search_shards(served, q, k, pool if len(served) > 1 else None))
    pool.shutdown()


def bounded_index(n: int) -> Path:
    """A float32 index (2 shards, with codes) of the benchmark's rows: real LFW + synthetic, seed 1."""
    return lfw_descriptors.grown_index("bench-bounded", n, "float32")


def exact_top5(index_dir: Path, queries: np.ndarray) -> list[list[int]]:
    """float32 brute force over the index's rows: float32 BLAS shortlist of 32 per query and block,
    then float64 distances, rounded to float32, ordered by (distance, row)."""
    manifest = store.read_manifest(index_dir)
    q64 = queries.astype(np.float64)
    best: list[list[tuple[float, int]]] = [[] for _ in queries]
    for k in range(len(manifest.shards)):
        rows, first = store.open_shard(index_dir, k, verify=False, manifest=manifest)
        for at in range(0, len(rows), 262_144):
            block = np.asarray(rows[at : at + 262_144], np.float32)
            d2 = np.einsum("ij,ij->i", block, block)[None, :] - 2.0 * (queries @ block.T)
            short = np.argpartition(d2, 32, axis=1)[:, :32]
            for i, cand in enumerate(short):
                d = np.sqrt(((block[cand].astype(np.float64) - q64[i]) ** 2).sum(axis=1)).astype(np.float32)
                best[i] += [(float(x), int(r) + at + first) for x, r in zip(d, cand, strict=True)]
                best[i] = sorted(best[i])[:5]
        del rows
    return [[r for _, r in b] for b in best]


def _bounded(index_dir: Path, layout: str, queries: np.ndarray, one, batch, repeats: int) -> tuple:
    """layout: 'threads' (1 process, a thread per shard, 1 OpenMP thread each), 'threads, OpenMP
    default' (the pool without the initializer) or 'processes' (one per shard)."""
    spawn = mp.get_context("spawn")
    groups = [[0, 1]] if layout.startswith("threads") else [[0], [1]]
    pipes = [spawn.Pipe() for _ in groups]
    one_omp = layout != "threads, OpenMP default"
    procs = [
        spawn.Process(target=_bounded_worker, args=(child, str(index_dir), g, one_omp))
        for (_, child), g in zip(pipes, groups, strict=True)
    ]
    for p in procs:
        p.start()
    for parent, _ in pipes:
        parent.recv()

    def scatter(q: np.ndarray) -> list:
        for parent, _ in pipes:
            parent.send((q, 5))
        answers = [a for parent, _ in pipes for a in parent.recv()]
        return [search.merge([(r[j].tolist(), d[j].tolist()) for r, d in answers], 5) for j in range(len(q))]

    timings = {
        "1": timed(lambda: scatter(one()[None]), repeats),
        "16": timed(lambda: scatter(batch()), max(3, repeats // 3)),
    }
    top5 = [[r for r, _ in found] for found in scatter(queries)]
    after = []
    for parent, _ in pipes:
        parent.send("rss")
        after.append(parent.recv())
        parent.send(None)
    for p in procs:
        p.join()
    rss = [m for m, _ in after]
    counts = {name: sum(c.get(name, 0) for _, c in after) for name in ("more_candidates", "full_scans")}
    return timings, rss, top5, counts


def _bandwidth_worker(conn, nbytes: int) -> None:
    buf = np.ones(nbytes // 4, np.float32)
    conn.send(None)
    conn.recv()
    t = time.perf_counter()
    for _ in range(3):
        np.dot(buf, buf)
    conn.send(3 * buf.nbytes / (time.perf_counter() - t) / 1e9)


def _rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def two_core_bandwidth(nbytes: int) -> float:
    pipes = [mp.Pipe() for _ in range(2)]
    procs = [mp.Process(target=_bandwidth_worker, args=(child, nbytes)) for _, child in pipes]
    for p in procs:
        p.start()
    for parent, _ in pipes:
        parent.recv()
    for parent, _ in pipes:
        parent.send(None)
    total = sum(parent.recv() for parent, _ in pipes)
    for p in procs:
        p.join()
    return total


def pct(values: list[float]) -> str:
    return f"{np.percentile(values, 50):8.1f} {np.percentile(values, 99):8.1f}"


def _float32_kernels(sub16: np.ndarray, one, batch, repeats: int, naive_repeats: int) -> dict:
    import face_recognition

    f32 = sub16.astype(np.float32)
    norms = search.squared_norms(f32)
    return {
        "face_distance+argsort": {
            "1": timed(lambda: np.argsort(face_recognition.face_distance(f32, one()))[:5], naive_repeats),
            "16": timed(lambda: [np.argsort(face_recognition.face_distance(f32, q))[:5] for q in batch()], 2),
        },
        "numpy f32, 1 thread": {
            "1": timed(lambda: search.topk_batch(f32, norms, one()[None], 5), repeats),
            "16": timed(lambda: search.topk_batch(f32, norms, batch(), 5), max(3, repeats // 3)),
        },
    }


def _faiss_whole(whole: search.ShardIndex, one, batch, repeats: int) -> dict:
    return {
        "faiss fp16, 1 thread": {
            "1": timed(lambda: whole.search(one(), 5), repeats),
            "16": timed(lambda: whole.search(batch(), 5), max(3, repeats // 3)),
        },
        "faiss fp16, scan per query": {
            "1": timed(lambda: whole.index.search(one()[None], 5), repeats),
            "16": timed(lambda: whole.index.search(batch(), 5), 3),
        },
    }


def _batch_crossover(whole: search.ShardIndex, queries: np.ndarray, repeats: int) -> dict:
    """ms per batch of m queries, 1 thread: faiss's scan per query against the one-pass decoded
    kernel (index/search.topk_batch_coded); sets search.BATCH_SCAN_MIN."""
    out = {}
    for m in (1, 2, 4, 8, 16):
        q = queries[:m]
        out[m] = {
            "faiss scans": float(np.median(timed(lambda q=q: whole.index.search(q, 5), repeats))),
            "one pass": float(
                np.median(
                    timed(lambda q=q: search.topk_batch_coded(whole.codes, CODEC16, whole.norms_sq, q, 5), repeats)
                )
            ),
        }
    return out


def _two_shards(n: int, path: str, codec: store.RowCodec, queries: np.ndarray, one, batch, repeats: int) -> tuple:
    """The matcher layout: 2 spawned shard processes, scatter over pipes, merge. Returns the
    timings, the processes' resident MiB and the merged top-5 rows of every query."""
    half = n // 2
    spawn = mp.get_context("spawn")
    pipes = [spawn.Pipe() for _ in range(2)]
    procs = [
        spawn.Process(target=_shard_worker, args=(child, path, a, b, codec))
        for (_, child), (a, b) in zip(pipes, ((0, half), (half, n)), strict=True)
    ]
    for p in procs:
        p.start()
    rss = [parent.recv() for parent, _ in pipes]

    def scatter(q: np.ndarray) -> list:
        for parent, _ in pipes:
            parent.send((q, 5))
        answers = [parent.recv() for parent, _ in pipes]
        out = []
        for j in range(len(q)):
            per = [((answers[s][0][j] + s * half).tolist(), answers[s][1][j].tolist()) for s in range(2)]
            out.append(search.merge(per, 5))
        return out

    timings = {
        "1": timed(lambda: scatter(one()[None]), repeats),
        "16": timed(lambda: scatter(batch()), max(3, repeats // 3)),
    }
    top5 = [[r for r, _ in found] for found in scatter(queries)]
    for parent, _ in pipes:
        parent.send(None)
    for p in procs:
        p.join()
    return timings, rss, top5


def _two_threads(n: int, path: str, queries: np.ndarray, one, batch, repeats: int) -> tuple:
    """The default matcher layout: one spawned process with both halves, one thread per shard."""
    half = n // 2
    spawn = mp.get_context("spawn")
    parent, child = spawn.Pipe()
    proc = spawn.Process(target=_threads_worker, args=(child, path, [(0, half), (half, n)], CODEC16))
    proc.start()
    rss = [parent.recv()]

    def scatter(q: np.ndarray) -> list:
        parent.send((q, 5))
        answers = parent.recv()
        return [search.merge([(r[j].tolist(), d[j].tolist()) for r, d in answers], 5) for j in range(len(q))]

    timings = {
        "1": timed(lambda: scatter(one()[None]), repeats),
        "16": timed(lambda: scatter(batch()), max(3, repeats // 3)),
    }
    top5 = [[r for r, _ in found] for found in scatter(queries)]
    parent.send(None)
    proc.join()
    return timings, rss, top5


def _query_set(g16: np.ndarray, n_real: int) -> tuple[np.ndarray, Callable[[], np.ndarray], Callable[[], np.ndarray]]:
    """64 noisy real descriptors, and functions that hand out one query or a batch of 16 in turn."""
    rng = np.random.default_rng(0)
    real = np.asarray(g16[:n_real], np.float32)
    queries = real[rng.choice(n_real, 64, replace=False)] + rng.normal(0, 0.02, (64, 128)).astype(np.float32)
    it = iter(range(10**9))

    def one() -> np.ndarray:
        return queries[next(it) % 64]

    def batch() -> np.ndarray:
        i = next(it) % 4
        return queries[16 * i : 16 * i + 16]

    return queries, one, batch


def run_layouts(n: int, g16: np.ndarray, path: str, n_real: int, repeats: int) -> dict:
    """Only the two matcher layouts on 2 shards of float16: 2 processes against 1 process x 2 threads."""
    queries, one, batch = _query_set(g16, n_real)

    rows, rss = {}, {}
    # Alternated, so both layouts see the same load from the machine's other jobs.
    for _ in range(2):
        t, rss["processes"], top_p = _two_shards(n, path, CODEC16, queries, one, batch, repeats)
        for key, v in t.items():
            rows.setdefault("2 shards fp16 (2 processes)", {}).setdefault(key, []).extend(v)
        t, rss["threads"], top_t = _two_threads(n, path, queries, one, batch, repeats)
        for key, v in t.items():
            rows.setdefault("2 shards fp16 (1 process, 2 threads)", {}).setdefault(key, []).extend(v)
    assert top_p == top_t, "the two layouts must answer the same"
    return {"n": n, "rows": rows, "rss_mib": rss}


def run_size(n: int, g16: np.ndarray, path: str, n_real: int, repeats: int, bw1: float, bw2: float) -> dict:
    queries, one, batch = _query_set(g16, n_real)
    sub16 = np.ascontiguousarray(g16[:n])

    rows: dict[str, dict[str, list[float]]] = {}
    rows.update(
        _float32_kernels(sub16, one, batch, repeats, naive_repeats=max(3, repeats // 5) if n > 1_000_000 else repeats)
    )
    whole = search.ShardIndex(sub16, CODEC16, "faiss")  # the whole gallery on one thread
    search.faiss.omp_set_num_threads(1)
    rows.update(_faiss_whole(whole, one, batch, repeats))
    crossover = _batch_crossover(whole, queries, max(3, repeats // 5))
    del whole
    rows["2 shards fp16 (2 processes)"], rss, top16 = _two_shards(n, path, CODEC16, queries, one, batch, repeats)
    rows["2 shards fp16 (1 process, 2 threads)"], _, top_threads = _two_threads(n, path, queries, one, batch, repeats)
    assert top_threads == top16, "one process with two threads must answer what two processes answer"
    scale, offset = store.int8_codec(np.asarray(g16[:n_real], np.float32))
    codec8 = store.RowCodec("int8", tuple(scale.tolist()), tuple(offset.tolist()))
    rows["2 shards int8 (2 processes)"], rss8, top8 = _two_shards(n, path, codec8, queries, one, batch, repeats)
    same_top5 = float(np.mean([a == b for a, b in zip(top8, top16, strict=True)]))
    recall5 = float(np.mean([len(set(a) & set(b)) / 5 for a, b in zip(top8, top16, strict=True)]))
    bytes16 = n * 128 * 2
    index_dir = bounded_index(n)
    exact = exact_top5(index_dir, queries)
    bounded_rss, bounded_exact, bounded_counts = {}, {}, {}
    for layout in ("threads", "threads, OpenMP default", "processes"):
        name = {
            "threads": "2 shards bounded (1 process, 2 threads)",
            "threads, OpenMP default": "  same, OpenMP default threads",
            "processes": "2 shards bounded (2 processes)",
        }[layout]
        rows[name], bounded_rss[layout], top_b, bounded_counts[layout] = _bounded(
            index_dir, layout, queries, one, batch, repeats
        )
        bounded_exact[layout] = float(np.mean([a == b for a, b in zip(top_b, exact, strict=True)]))
    return {
        "n": n,
        "rows": rows,
        "floor_codes_2cores_ms": n * 128 / (bw2 * 1e9) * 1e3,
        "bounded_rss_mib": bounded_rss,
        "bounded_exact_share": bounded_exact,
        "bounded_fallbacks": bounded_counts,
        "floor_fp16_1core_ms": bytes16 / (bw1 * 1e9) * 1e3,
        "floor_fp16_2cores_ms": bytes16 / (bw2 * 1e9) * 1e3,
        "shard_rss_mib": rss,
        "batch_crossover_ms": crossover,
        "int8_shard_rss_mib": rss8,
        "int8_same_top5_as_fp16": same_top5,
        "int8_recall5_vs_fp16": recall5,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="100000,600000,4200000")
    p.add_argument("--repeats", type=int, default=30)
    p.add_argument("--layouts", action="store_true", help="only 2 processes against 1 process x 2 threads")
    args = p.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    g16, n_real, path = gallery(max(sizes))
    print(f"gallery: {n_real} real LFW descriptors + synthetic distractors up to {max(sizes)} rows (float16)")
    print(f"load: {os.getloadavg()}")
    if args.layouts:
        for n in sizes:
            r = run_layouts(n, g16, path, n_real, args.repeats)
            print(f"\n{n:,} entries, 2 shards fp16 (load {os.getloadavg()[0]:.1f})  p50 ms  p99 ms | batch of 16")
            for name, t in r["rows"].items():
                print(f"  {name:38s} {pct(t['1'])} | {pct(t['16'])}   ({np.percentile(t['16'], 50) / 16:.2f} ms/query)")
            print(f"  resident MiB: {r['rss_mib']}")
        return
    probe = np.ones(256 * 2**20, np.float32)  # 1 GiB
    bw1 = bandwidth_gb_s(probe)
    del probe
    bw2 = two_core_bandwidth(2**30)
    print(f"read bandwidth: {bw1:.1f} GB/s on 1 core, {bw2:.1f} GB/s on 2 cores")
    results = []
    for n in sizes:
        r = run_size(n, g16, path, n_real, args.repeats, bw1, bw2)
        results.append(r)
        print(f"\n{n:,} entries  (load {os.getloadavg()[0]:.1f})      p50 ms  p99 ms | batch of 16: p50 ms  p99 ms")
        for name, t in r["rows"].items():
            print(f"  {name:32s} {pct(t['1'])} | {pct(t['16'])}   ({np.percentile(t['16'], 50) / 16:.2f} ms/query)")
        print(f"  {'floor fp16, 1 core':32s} {r['floor_fp16_1core_ms']:8.1f}")
        print(f"  {'floor fp16, 2 cores':32s} {r['floor_fp16_2cores_ms']:8.1f}")
        print(f"  {'floor codes (int8), 2 cores':32s} {r['floor_codes_2cores_ms']:8.1f}")
        for layout, mib in r["bounded_rss_mib"].items():
            print(
                f"  bounded, {layout}: resident {' + '.join(f'{m:.0f}' for m in mib)} MiB after the run; "
                f"top 5 = float32 brute force for {r['bounded_exact_share'][layout]:.0%} of 64 queries; "
                f"fallbacks {r['bounded_fallbacks'][layout]}"
            )
        print("  batch of m, 1 thread, p50 ms:  " + "  ".join(f"m={m}" for m in r["batch_crossover_ms"]))
        for kernel in ("faiss scans", "one pass"):
            print(f"    {kernel:30s}" + "".join(f"{t[kernel]:7.1f}" for t in r["batch_crossover_ms"].values()))
        print(f"  shard processes resident: {', '.join(f'{m:.0f} MiB' for m in r['shard_rss_mib'])} (fp16), ", end="")
        print(f"{', '.join(f'{m:.0f} MiB' for m in r['int8_shard_rss_mib'])} (int8)")
        print(
            f"  int8 top 5 = fp16 top 5 for {r['int8_same_top5_as_fp16']:.1%} of 64 queries; "
            f"recall@5 against fp16 {r['int8_recall5_vs_fp16']:.3f}"
        )
    out = CACHE / "search_latency.json"
    out.write_text(json.dumps({"load": os.getloadavg(), "bw": [bw1, bw2], "results": results}, indent=1))
    print(f"\nraw timings: {out}")


if __name__ == "__main__":
    main()
