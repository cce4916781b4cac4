"""The bounded kernel (index/bounded.py): exact top 5 from int8 codes, against float32 brute force.

The exactness tests run on the cached real LFW descriptors (benchmarks/lfw_descriptors.py; skipped
with the reason when they are not cached) grown with synthetic distractors to 30,000 rows, with
10,000 noisy real queries and 10,000 queries that are gallery rows (the hardest case: a distance
of 0, and twins). The rest uses the demo gallery's real descriptors (tests/conftest.py).
"""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

import config
from actors import matcher
from actors.matcher import Matcher
from index import bounded, cli, removals, search, store, synthetic
from tests import factories

QUERIES = 10_000


def brute_force(gallery: np.ndarray, queries: np.ndarray, k: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """float32 rows, float64 arithmetic, distances rounded to float32 as answers carry them: the k
    nearest by (distance, row), written independently of the kernel (a float64 matrix product to
    shortlist 32, then the plain difference on those)."""
    g = np.asarray(gallery, np.float64)
    g_sq = np.einsum("ij,ij->i", g, g)
    rows_out, d_out = [], []
    for at in range(0, len(queries), 512):
        q = np.asarray(queries[at : at + 512], np.float64)
        d2 = g_sq[None, :] - 2.0 * (q @ g.T) + np.einsum("ij,ij->i", q, q)[:, None]
        short = np.argpartition(d2, 32, axis=1)[:, :32]
        for i, cand in enumerate(short):
            exact = np.sqrt(((g[cand] - q[i]) ** 2).sum(axis=1)).astype(np.float32)
            order = np.lexsort((cand, exact))[:k]
            rows_out.append(cand[order])
            d_out.append(exact[order])
    return np.array(rows_out), np.array(d_out)


def search_all(index_dir: Path, queries: np.ndarray, k: int = 5, kernel: str = "bounded", batch: int = 1) -> tuple:
    """Every shard searched as the matcher does, ``batch`` queries at a time (1: faiss's scan per
    query; 12 or more: the one-pass batch kernel, used here on small shards too), merged; and the
    fallbacks counted."""
    rows_before, bounded.BATCH_MIN_ROWS = bounded.BATCH_MIN_ROWS, 0
    try:
        return _search_all(index_dir, queries, k, kernel, batch)
    finally:
        bounded.BATCH_MIN_ROWS = rows_before


def _search_all(index_dir: Path, queries: np.ndarray, k: int, kernel: str, batch: int) -> tuple:
    manifest = store.read_manifest(index_dir)
    shards = [search.open_index(index_dir, s, manifest, kernel) for s in range(len(manifest.shards))]
    per_shard = []
    for index, first in shards:
        rows, dists = [], []
        for at in range(0, len(queries), batch):
            r, d = index.search(queries[at : at + batch], k)
            rows.append(r + first)
            dists.append(d)
        per_shard.append((np.concatenate(rows), np.concatenate(dists)))
    merged = [search.merge([(r[i].tolist(), d[i].tolist()) for r, d in per_shard], k) for i in range(len(queries))]
    counts = [index.take_counts() for index, _ in shards]
    for index, _ in shards:
        index.close()
    rows = np.array([[r for r, _ in m] for m in merged])
    dists = np.array([[d for _, d in m] for m in merged])
    return rows, dists, counts, shards[0][0].kernel


def assert_same(found: tuple, expected: tuple) -> None:
    rows, dists = found[0], found[1]
    wrong = np.nonzero((rows != expected[0]).any(axis=1))[0]
    assert not len(wrong), (
        f"{len(wrong)} queries differ, first {wrong[:5]}: {rows[wrong[0]]} {dists[wrong[0]].tolist()} vs "
        f"{expected[0][wrong[0]]} {expected[1][wrong[0]].tolist()}"
    )
    assert np.abs(dists - expected[1]).max() < 1e-5


@pytest.fixture(scope="module")
def lfw(request, tmp_path_factory):
    """Real LFW descriptors: up to 3,000 from benchmarks.lfw_descriptors' cache when it holds 2,000 or
    more, else (a fresh machine, CI) those of the MegaFace-layout sample's 996 LFW photos, described
    here from their sidecar boxes by an index build (~1 min on 2 cores with the prebuilt dlib)."""
    from benchmarks import lfw_descriptors
    from index import build

    try:
        real, identities, _ = lfw_descriptors.load()
        if len(real) >= 2000:
            return real[:3000], identities[:3000]
    except FileNotFoundError:
        pass
    sample = request.getfixturevalue("shared_data") / "megaface_sample"
    out = tmp_path_factory.mktemp("lfw-sample") / "idx"
    build.build(sample, out, n_shards=1, progress=False)
    rows = np.asarray(store.open_shard(out, 0)[0], np.float32)
    meta = store.Metadata(out)
    entries = meta.lookup(list(range(len(rows))))
    meta.close()
    return rows, [entries[i].identity for i in range(len(rows))]


@pytest.fixture(scope="module")
def lfw_index(lfw, tmp_path_factory):
    """The real LFW descriptors (~3,000, or the sample's ~970) + synthetic distractors to 30,000 rows,
    float32, 2 shards, codes."""
    real, identities = lfw
    out = tmp_path_factory.mktemp("lfw-bounded")
    model = synthetic.fit(real, identities)
    grow = {"count": 30_000 - len(real), "seed": 3, "model": model}
    entries = [store.Entry(name, f"{name}/{i}.jpg", None) for i, name in enumerate(identities)]
    manifest = store.write(out, real, entries, 2, {"dataset": "LFW"}, "float32", grow)
    gallery = np.concatenate([store.open_shard(out, k)[0] for k in range(2)])
    return out, manifest, gallery, len(real)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_exact_on_10000_noisy_real_lfw_queries(lfw_index):
    out, manifest, gallery, n_real = lfw_index
    assert manifest.codes is not None and len(manifest.codes.shards) == 2
    rng = np.random.default_rng(7)
    picked = gallery[rng.integers(0, n_real, QUERIES)]
    queries = (picked + rng.normal(0, 0.02, picked.shape)).astype(np.float32)
    expected = brute_force(gallery, queries)
    for batch in (1, 16):
        found = search_all(out, queries, batch=batch)
        assert found[3] == "bounded"
        assert_same(found, expected)
        widened = sum(c["more_candidates"] + c["full_scans"] for c in found[2])
        print(f"fallbacks over {QUERIES} queries x 2 shards, batches of {batch}: {found[2]}")
        assert widened < QUERIES * 2 * 0.05  # the 128 candidates prove nearly every answer at once


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_exact_when_the_queries_are_gallery_rows(lfw_index):
    """Every real row, then synthetic rows, each asked for itself: it must come first, at 0."""
    out, _, gallery, n_real = lfw_index
    rng = np.random.default_rng(8)
    rows = np.concatenate([np.arange(n_real), rng.choice(np.arange(n_real, len(gallery)), QUERIES - n_real, False)])
    queries = np.ascontiguousarray(gallery[rows])
    expected = brute_force(gallery, queries)
    for batch in (1, 16):
        found = search_all(out, queries, batch=batch)
        assert_same(found, expected)
        print(f"fallbacks over {QUERIES} gallery-row queries x 2 shards, batches of {batch}: {found[2]}")
        assert (found[1][:, 0] == 0).all()


def test_fallbacks_are_taken_counted_and_still_exact(lfw_index_small, monkeypatch):
    """An adversarial tiny candidate count (K = k) cannot prove most answers: the search widens
    (more candidates), and past FULL_SCAN_FROM scans every row; the answer stays exact."""
    out, gallery = lfw_index_small
    manifest = store.read_manifest(out)
    queries = (gallery[:200] + np.random.default_rng(1).normal(0, 0.02, (200, 128))).astype(np.float32)
    expected = brute_force(gallery, queries)
    monkeypatch.setattr(bounded, "CANDIDATES", 5)
    monkeypatch.setattr(bounded, "BATCH_MIN_ROWS", 0)
    index, _ = search.open_index(out, 0, manifest, "bounded")
    assert index.bounded.candidates == 5

    def batched(q):
        return index.search(q, 5)

    def one_by_one(q):
        answers = [index.search(q[i : i + 1], 5) for i in range(len(q))]
        return np.concatenate([a for a, _ in answers]), np.concatenate([d for _, d in answers])

    for run in (batched, one_by_one):  # the batch kernel, then faiss's scan per query
        assert_same(run(queries), expected)
        counts = index.take_counts()
        assert counts["more_candidates"] > 0 and counts["full_scans"] == 0
        assert index.take_counts() == {"more_candidates": 0, "full_scans": 0}  # taken: reset
    monkeypatch.setattr(bounded, "FULL_SCAN_FROM", 6)
    for run in (batched, one_by_one):
        assert_same(run(queries), expected)
        assert index.take_counts()["full_scans"] > 0
    index.close()


@pytest.fixture
def lfw_index_small(demo_rows, tmp_path):
    """The demo gallery's real descriptors + 5,000 synthetic rows, float32, one shard."""
    descriptors, entries = demo_rows
    model = synthetic.fit(descriptors, [e.identity for e in entries])
    grow = {"count": 5000, "seed": 2, "model": model}
    store.write(tmp_path, descriptors, entries, 1, {"dataset": "demo"}, "float32", grow)
    return tmp_path, np.asarray(store.open_shard(tmp_path, 0)[0])


def test_removed_rows_are_never_returned_and_k_still_comes_back(lfw_index_small):
    """Through removals.topk_without as the matcher calls it: the nearest rows of each query removed."""
    out, gallery = lfw_index_small
    index, _ = search.open_index(out, 0, store.read_manifest(out), "auto")
    assert index.kernel == "bounded"
    queries = np.ascontiguousarray(gallery[:40:4])
    removed = np.unique(brute_force(gallery, queries, 3)[0].ravel())  # each query's 3 nearest, itself included
    rows, dists = removals.topk_without(index.search, queries, 5, index.rows, removed)
    keep = np.setdiff1d(np.arange(len(gallery)), removed)
    exp_rows, exp_d = brute_force(gallery[keep], queries)
    assert np.array_equal(rows, keep[exp_rows]) and np.abs(dists - exp_d).max() < 1e-5
    assert not np.isin(rows, removed).any()
    index.close()


def test_float16_index_is_exact_over_its_stored_values(demo_rows, tmp_path):
    descriptors, entries = demo_rows
    store.write(tmp_path, descriptors, entries, 2, {"dataset": "demo"}, "float16")
    manifest = store.read_manifest(tmp_path)
    gallery = np.concatenate([store.open_shard(tmp_path, k)[0] for k in range(2)]).astype(np.float32)
    queries = (gallery + np.random.default_rng(3).normal(0, 0.02, gallery.shape)).astype(np.float32)
    assert manifest.codes is not None
    assert_same(search_all(tmp_path, queries), brute_force(gallery, queries))


def test_an_index_without_codes_loads_with_the_other_kernels_and_add_codes_gives_them(demo_rows, tmp_path, capsys):
    descriptors, entries = demo_rows
    store.write(tmp_path, descriptors, entries, 2, {"dataset": "demo"}, "float16", codes=False)
    old = store.read_manifest(tmp_path)
    assert old.codes is None and "codes" not in json.loads((tmp_path / "manifest.json").read_text())
    index, _ = search.open_index(tmp_path, 0, old, "auto")
    assert index.kernel == "faiss"
    with pytest.raises(store.IndexStoreError, match="add-codes"):
        search.open_index(tmp_path, 0, old, "bounded")
    before = removals.index_id(old)

    assert cli.main(["index", "add-codes", str(tmp_path)]) == 0
    assert "searched by 'bounded'" in capsys.readouterr().err
    new = store.verify(tmp_path)
    assert new.codes is not None
    assert [c.codes for c in new.codes.shards] == ["shard_000.codes.npy", "shard_001.codes.npy"]
    assert removals.index_id(new) == before  # the rows did not change: recorded removals still apply
    gallery = np.concatenate([store.open_shard(tmp_path, k)[0] for k in range(2)]).astype(np.float32)
    found = search_all(tmp_path, gallery, kernel="auto", batch=64)
    assert found[3] == "bounded"
    assert_same(found, brute_force(gallery, gallery))


def test_the_codes_bound_every_row(demo_rows):
    descriptors = np.asarray(demo_rows[0], np.float32)
    params = bounded.CodeParams.of_range(descriptors.min(axis=0), descriptors.max(axis=0))
    codes, bounds = bounded.encode(descriptors, params)
    decoded = params.offset.astype(np.float64) + params.scale * codes.astype(np.float64)
    err = np.sqrt(((descriptors.astype(np.float64) - decoded) ** 2).sum(axis=1))
    assert (bounds.astype(np.float64) >= err).all()
    assert np.abs(codes).max() <= 127
    assert bounds.max() <= params.scale * np.sqrt(128) / 2 * 1.0001  # at most half a step per dimension


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda c: c.update(scale=0), "key 'codes.scale' must be a number > 0"),
        (lambda c: c.update(offset=[0.0] * 3), "key 'codes.offset' must be a list of 128 numbers"),
        (lambda c: c["shards"].pop(), "key 'codes.shards' has 1 entries, the index has 2 shards"),
        (lambda c: c["shards"][0].update(codes="../x.npy"), "key 'codes.shards\\[0\\].codes' must be a file name"),
        (lambda c: c["shards"][1].pop("bounds_sha256"), "key 'codes.shards\\[1\\].bounds_sha256' is missing"),
        (lambda c: c.update(kind="pq"), "key 'codes.kind' must be the text"),
    ],
)
def test_manifest_codes_are_validated_key_by_key(demo_rows, tmp_path, change, message):
    descriptors, entries = demo_rows
    store.write(tmp_path, descriptors, entries, 2, {"dataset": "demo"}, "float32")
    data = json.loads((tmp_path / "manifest.json").read_text())
    change(data["codes"])
    (tmp_path / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(store.IndexStoreError, match=message):
        store.read_manifest(tmp_path)


def test_a_damaged_codes_file_is_refused_naming_it(demo_rows, tmp_path):
    descriptors, entries = demo_rows
    manifest = store.write(tmp_path, descriptors, entries, 2, {"dataset": "demo"}, "float32")
    path = tmp_path / "shard_001.codes.npy"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x55
    path.unlink()
    path.write_bytes(bytes(data))
    with pytest.raises(store.IndexStoreError, match=r"shard_001\.codes\.npy: checksum differs"):
        search.open_index(tmp_path, 1, manifest)
    (tmp_path / "shard_000.bounds.npy").unlink()
    with pytest.raises(store.IndexStoreError, match=r"shard_000\.bounds\.npy: codes file is missing"):
        store.verify(tmp_path)


def test_kernel_setting_allows_bounded_and_names_the_choices():
    assert config.validate({"search": {"kernel": "bounded"}})["search"]["kernel"] == "bounded"
    with pytest.raises(config.ConfigError, match=r"search.kernel.*auto.*bounded.*faiss.*numpy"):
        config.validate({"search": {"kernel": "fast"}})


@pytest.mark.timeout(30)
def test_each_shard_thread_runs_faiss_on_one_openmp_thread():
    """OpenMP's thread count is per thread: the pool's initializer sets it in every shard thread."""
    faiss = pytest.importorskip("faiss")
    seen: list[int] = []
    lock = threading.Lock()

    def probe(_):
        with lock:
            seen.append(faiss.omp_get_max_threads())

    with ThreadPoolExecutor(2, initializer=matcher.one_thread_each) as pool:
        list(pool.map(probe, range(4)))
    assert seen == [1, 1, 1, 1]


@pytest.mark.timeout(60)
def test_the_matcher_searches_with_bounded_counts_fallbacks_and_pins_openmp(demo_index, monkeypatch):
    """The demo index has codes: ``auto`` is the bounded kernel; the matcher's counters carry the
    fallbacks (forced here by K = 5); its shard threads run faiss on one OpenMP thread."""
    faiss = pytest.importorskip("faiss")
    monkeypatch.delenv("MEGAPIXELS_SHARD", raising=False)
    monkeypatch.setattr(bounded, "CANDIDATES", 5)
    m = Matcher(factories.cfg(index={"path": str(demo_index)}), name="matcher.1")
    m.on_start()
    try:
        assert [s.index.kernel for s in m.shards] == ["bounded", "bounded"]
        stored, _ = store.open_shard(demo_index, 0)
        queries = [factories.query(200 + i, np.asarray(stored[i], np.float32) + 0.01) for i in range(8)]
        m.handle_batch(queries)
        assert m.stats["search.more_candidates"] > 0
        assert m.pool is not None and m.pool.submit(faiss.omp_get_max_threads).result() == 1
    finally:
        m.on_stop()
