"""The store and the shard kernels at scale's shape: real demo descriptors grown with synthetic distractors."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys

import numpy as np
import pytest

from actors.reducer import Reducer
from index import calibration, search, store, synthetic
from messages import Candidates, Header, Query
from tests import factories
from tests.conftest import PROJECT


def _grown(demo_rows, out, dtype, n_synthetic=30_000, shards=3):
    descriptors, entries = demo_rows
    model = synthetic.fit(descriptors, [e.identity for e in entries])
    grow = {"count": n_synthetic, "seed": 5, "model": model}
    store.write(out, descriptors, entries, shards, {"dataset": "demo"}, dtype, grow)
    return store.read_manifest(out)


@pytest.mark.parametrize(("dtype", "kernel"), [("float32", "numpy"), ("float16", "faiss"), ("int8", "faiss")])
def test_merge_of_shards_equals_brute_force_over_real_plus_synthetic(demo_rows, tmp_path, dtype, kernel):
    manifest = _grown(demo_rows, tmp_path, dtype)
    shards = [store.open_shard(tmp_path, k) for k in range(3)]
    everything = np.concatenate([store.decode_rows(s, manifest.codec) for s, _ in shards])
    assert len(everything) == manifest.count == len(demo_rows[0]) + 30_000
    indexes = [(search.ShardIndex(s, manifest.codec, kernel), first) for s, first in shards]
    rng = np.random.default_rng(1)
    descriptors = demo_rows[0]
    picked = descriptors[rng.choice(len(descriptors), 12, replace=False)]
    queries = picked + rng.normal(0, 0.02, (12, 128)).astype(np.float32)
    for q in queries:
        answers = []
        for index, first in indexes:
            rows, dists = index.search(q, 5)
            answers.append(((rows[0] + first).tolist(), dists[0].tolist()))
        merged = search.merge(answers, 5)
        brute = np.linalg.norm(everything - q, axis=1)
        assert [r for r, _ in merged] == np.argsort(brute, kind="stable")[:5].tolist()
        assert np.allclose([d for _, d in merged], np.sort(brute)[:5], atol=2e-3)


def test_batch_is_one_scan_with_the_same_answers(demo_rows):
    gallery = demo_rows[0]
    queries = gallery[::17]
    rows, dists = search.topk_batch(gallery, search.squared_norms(gallery), queries, 5)
    for q, r, d in zip(queries, rows, dists, strict=True):
        one_rows, one_dists = search.topk(gallery, search.squared_norms(gallery), q, 5)
        assert r.tolist() == one_rows.tolist() and np.allclose(d, one_dists, atol=2e-3)


@pytest.mark.parametrize("dtype", ["float16", "int8"])
def test_coded_batch_is_one_pass_with_the_brute_force_answers(demo_rows, tmp_path, dtype):
    """A batch on a float16 / int8 shard takes the one-pass decoded kernel, not faiss's scan per
    query, and answers exactly what brute force over the decoded rows answers."""
    manifest = _grown(demo_rows, tmp_path, dtype, n_synthetic=20_000, shards=1)
    stored, _ = store.open_shard(tmp_path, 0)
    decoded = store.decode_rows(stored, manifest.codec)
    index = search.ShardIndex(stored, manifest.codec, "faiss")
    assert np.allclose(index.norms_sq, np.einsum("ij,ij->i", decoded, decoded), rtol=1e-5)
    rng = np.random.default_rng(2)
    picked = demo_rows[0][rng.choice(len(demo_rows[0]), 16, replace=False)]
    queries = np.concatenate([picked + rng.normal(0, 0.02, picked.shape).astype(np.float32), decoded[-3:]])
    rows, dists = index.search(queries, 5)
    assert len(queries) >= search.BATCH_SCAN_MIN and rows.shape == (19, 5)
    for q, r, d in zip(queries, rows, dists, strict=True):
        brute = np.linalg.norm(decoded - q, axis=1)
        assert r.tolist() == np.argsort(brute, kind="stable")[:5].tolist()
        assert np.allclose(d**2, np.sort(brute)[:5] ** 2, atol=2e-5)  # |g|^2 - 2g.q + |q|^2 in float32
        one_rows, _ = index.search(q, 5)  # the single-query faiss path agrees
        assert one_rows[0].tolist() == r.tolist()


def test_coded_batch_blocks_and_small_shards(demo_rows, tmp_path, monkeypatch):
    """Block edges and shards smaller than k: every row is seen once, k is capped at the rows."""
    monkeypatch.setattr(search, "CODED_BLOCK_ROWS", 7)
    manifest = _grown(demo_rows, tmp_path, "float16", n_synthetic=0, shards=1)
    stored, _ = store.open_shard(tmp_path, 0)
    decoded = store.decode_rows(stored, manifest.codec)
    norms = search.coded_squared_norms(stored, manifest.codec)
    queries = decoded[[0, 5, 50, 100]]
    rows, _ = search.topk_batch_coded(stored, manifest.codec, norms, queries, 5)
    for q, r in zip(queries, rows, strict=True):
        assert r.tolist() == np.argsort(np.linalg.norm(decoded - q, axis=1), kind="stable")[:5].tolist()
    rows, dists = search.topk_batch_coded(stored[:3], manifest.codec, norms[:3], queries, 5)
    assert rows.shape == dists.shape == (4, 3) and sorted(rows[0].tolist()) == [0, 1, 2]


def test_float16_and_int8_stay_close_to_float32(demo_rows, tmp_path):
    descriptors = demo_rows[0]
    for dtype, tolerance in (("float16", 1e-3), ("int8", 1e-2)):
        manifest = _grown(demo_rows, tmp_path / dtype, dtype, n_synthetic=0, shards=1)
        stored, _ = store.open_shard(tmp_path / dtype, 0)
        assert np.abs(store.decode_rows(stored, manifest.codec) - descriptors).max() < tolerance


def test_corrupt_shard_of_the_same_size_is_refused_by_its_checksum(demo_rows, tmp_path):
    _grown(demo_rows, tmp_path, "float16", n_synthetic=1000, shards=2)
    store.open_shard(tmp_path, 1)
    shard = tmp_path / "shard_001.npy"
    data = bytearray(shard.read_bytes())
    data[-7] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(store.IndexStoreError, match=r"shard_001\.npy: checksum"):
        store.open_shard(tmp_path, 1)
    shard.write_bytes(bytes(data[:-100]))
    with pytest.raises(store.IndexStoreError, match=r"shard_001\.npy: .*truncated"):
        store.open_shard(tmp_path, 1)


def test_metadata_round_trips_and_marks_synthetic_rows(demo_rows, tmp_path):
    manifest = _grown(demo_rows, tmp_path, "float16", n_synthetic=600)
    meta = store.Metadata(tmp_path)
    n_real = manifest.real
    entries = meta.lookup([0, n_real - 1, n_real, manifest.count - 1])
    meta.close()
    assert entries[0] == demo_rows[1][0] and entries[n_real - 1] == demo_rows[1][-1]
    assert entries[n_real].synthetic and entries[n_real].photo == "" and not entries[0].synthetic
    assert manifest.synthetic.start == n_real and manifest.synthetic.stop == manifest.count


def test_reducer_never_shows_a_synthetic_entry(demo_rows, tmp_path):
    manifest = _grown(demo_rows, tmp_path, "float16", n_synthetic=600, shards=2)
    r = Reducer(factories.cfg(index={"path": str(tmp_path)}))
    r.on_start()
    n_real = manifest.real
    h = Header(1, 0, "test", 1)
    r.handle(Query(h, 7, 0, 5, bytes(512)))
    r.handle(Candidates(h, 7, 0, 5, 0, 2, [n_real + 3, 4], [0.41, 0.52]))
    (out,) = r.handle(Candidates(h, 7, 0, 5, 1, 2, [n_real + 400, 0], [0.45, 0.6]))
    assert [(x.rank, x.row) for x in out.results] == [(3, 4), (4, 0)]
    assert r.stats["matches.synthetic_hidden"] == 2
    r.on_stop()


def test_the_command_line_answers_what_the_kiosk_shows(demo_rows, tmp_path):
    """One gallery API: megapixels search's Gallery.search equals the reducer's merge of the
    matchers' answers for the same descriptor, synthetic rows hidden in both, ranks kept."""
    from actors.matcher import Matcher
    from index.gallery import Gallery

    manifest = _grown(demo_rows, tmp_path, "float16", n_synthetic=20_000, shards=2)
    calibration_file = calibration.install(tmp_path)
    assert calibration_file is not None
    descriptors, _ = demo_rows
    query = factories.query(9, descriptors[17] + 0.02)
    cfg = factories.cfg(index={"path": str(tmp_path)}, search={"matchers": len(manifest.shards)})
    matchers = [Matcher(cfg, name=f"matcher.{k + 1}") for k in range(len(manifest.shards))]
    reducer = Reducer(cfg)
    reducer.on_start()
    try:
        reducer.handle(query)
        for m in matchers:
            m.on_start()
            (candidates,) = m.handle(query)
            out = reducer.handle(candidates)
        (kiosk,) = out
        gallery = Gallery(tmp_path)
        try:
            cli = gallery.search(np.frombuffer(query.descriptor, "<f4"), query.k)
        finally:
            gallery.close()
    finally:
        reducer.on_stop()
    assert kiosk.results == cli
    assert cli[0].row == 17 and cli[0].p_same is not None and cli[0].verdict
    assert all(r.row < manifest.real for r in cli)  # no synthetic row is shown as a person


# -- every part of an index is checked where it is opened ------------------------------------


def _small(demo_rows, out, dtype="float32"):
    descriptors, entries = demo_rows
    store.write(out, descriptors[:40], entries[:40], 2, {"dataset": "demo"}, dtype)
    return out


def _edit_manifest(index, change):
    path = index / "manifest.json"
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def _sql(index, *statements):
    con = sqlite3.connect(index / "meta.sqlite")
    with con:
        for statement in statements:
            con.execute(statement)
    con.close()


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda i: (i / "meta.sqlite").write_bytes(b"garbage " * 600), r"meta\.sqlite: not a usable SQLite database"),
        (lambda i: _sql(i, "DELETE FROM entries"), r"meta\.sqlite: table 'entries' has 0 rows, .* says 40 real rows"),
        (lambda i: _sql(i, "DELETE FROM entries WHERE row = 7"), r"'entries' has 39 rows, manifest\.json says 40"),
        (lambda i: _sql(i, "UPDATE entries SET row = 40 WHERE row = 0"), r"numbered 0\.\.39, found 1\.\.40"),
        (lambda i: _sql(i, "DROP TABLE entries"), r"meta\.sqlite: has no 'entries' table"),
        (lambda i: _sql(i, "ALTER TABLE entries DROP COLUMN box"), r"'entries' lacks the columns box"),
        (lambda i: (i / "meta.sqlite").unlink(), r"meta\.sqlite does not exist"),
    ],
    ids=["garbage", "empty", "a row missing", "renumbered", "no table", "no box column", "missing"],
)
def test_damaged_metadata_is_refused_at_open_naming_the_file(demo_rows, tmp_path, damage, message):
    index = _small(demo_rows, tmp_path)
    store.verify(index)
    damage(index)
    with pytest.raises(store.IndexStoreError, match=message):
        store.Metadata(index)
    with pytest.raises(store.IndexStoreError, match=message):
        store.verify(index)


@pytest.mark.parametrize("key", ["format_version", "dim", "dtype", "count", "real", "identities", "shards"])
def test_a_manifest_missing_a_key_is_refused_naming_it(demo_rows, tmp_path, key):
    index = _small(demo_rows, tmp_path)
    _edit_manifest(index, lambda m: m.pop(key))
    with pytest.raises(store.IndexStoreError, match=rf"manifest\.json: .*key '{key}' (is missing|is None)"):
        store.read_manifest(index)


def test_wrong_manifest_values_are_each_named(demo_rows, tmp_path):
    index = _small(demo_rows, tmp_path, "int8")

    def damage(m):
        m["count"] = "85"
        m["dtype"] = "float64"
        m["shards"][0]["sha256"] = "abc"
        m["shards"][1]["file"] = "../../etc/passwd"
        del m["shards"][1]["bytes"]
        m["identities"] = True

    _edit_manifest(index, damage)
    with pytest.raises(store.IndexStoreError) as refused:
        store.read_manifest(index)
    text = str(refused.value)
    assert text.startswith(f"{index / 'manifest.json'}: not a usable index manifest: ")
    for named in (
        "key 'count' must be an integer >= 0, got string \"85\"",
        "key 'dtype' must be one of float32, float16, int8, got string \"float64\"",
        "key 'shards[0].sha256' must be 64 hexadecimal digits",
        "key 'shards[1].file' must be a file name inside the index folder",
        "key 'shards[1].bytes' is missing",
        "key 'identities' must be an integer >= 0, got boolean true",
    ):
        assert named in text
    (index / "manifest.json").write_text("[85]")
    with pytest.raises(store.IndexStoreError, match=r"key 'format_version' is None"):
        store.read_manifest(index)


def test_a_shard_of_the_wrong_size_or_content_is_refused(demo_rows, tmp_path):
    index = _small(demo_rows, tmp_path)
    shard = index / "shard_000.npy"
    shard.write_bytes(shard.read_bytes() + b"\0" * 512)  # one row too many
    with pytest.raises(store.IndexStoreError, match=r"shard_000\.npy: \d+ bytes, manifest says \d+"):
        store.verify(index)
    _small(demo_rows, index)
    _edit_manifest(index, lambda m: m["shards"][1].update(sha256="0" * 64))
    with pytest.raises(store.IndexStoreError, match=r"shard_001\.npy: checksum differs"):
        store.verify(index)


@pytest.mark.slow
def test_actors_refuse_to_start_on_a_damaged_index_with_the_reason(demo_rows, tmp_path, ipc_dir):
    """Not a traceback per query: the reducer and a matcher exit at start-up naming the file."""
    index = _small(demo_rows, tmp_path)
    _sql(index, "DELETE FROM entries")
    env = {
        **os.environ,
        "MEGAPIXELS_CONFIG": str(PROJECT / "config" / "test.toml"),
        "MEGAPIXELS_IPC_DIR": str(ipc_dir),
        "MEGAPIXELS_INDEX": str(index),
    }
    run = lambda module: subprocess.run(  # noqa: E731
        [sys.executable, "-m", module], cwd=PROJECT, env=env, capture_output=True, text=True, timeout=120
    )
    reducer = run("actors.reducer")
    assert reducer.returncode == 2
    assert "reducer cannot start" in reducer.stderr and "'entries' has 0 rows" in reducer.stderr
    _edit_manifest(index, lambda m: m.pop("shards"))
    matcher = run("actors.matcher")
    assert matcher.returncode == 2
    assert "matcher cannot start" in matcher.stderr and "key 'shards' is missing" in matcher.stderr
