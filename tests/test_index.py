"""Building, storing and searching the gallery, on the bundled real faces."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from index import build, search, store
from tests.conftest import DEMO_GALLERY


def _all_rows(index_dir):
    manifest = store.read_manifest(index_dir)
    return np.concatenate([store.open_shard(index_dir, k)[0] for k in range(len(manifest.shards))])


def test_demo_index_layout(demo_index):
    manifest = store.read_manifest(demo_index)
    assert manifest.dim == 128 and len(manifest.shards) == 2
    shards = manifest.shards
    assert shards[0].start == 0 and shards[0].stop == shards[1].start and shards[1].stop == manifest.count
    report = json.loads((demo_index / "build_report.json").read_text())
    assert report["indexed"] == manifest.count and report["photos"] == len(list(build.iter_photos(DEMO_GALLERY)))
    assert report["indexed"] + sum(report["rejected"].values()) == report["photos"]
    for rejected in report["rejected_files"]:
        assert rejected["reason"] and (DEMO_GALLERY / rejected["photo"]).exists()
    meta = store.Metadata(demo_index)
    entries = meta.lookup(list(range(manifest.count)))
    meta.close()
    assert sum(e.identity == "barack_obama" for e in entries.values()) == 3


def test_topk_equals_brute_force_on_real_descriptors(demo_index):
    gallery = np.asarray(_all_rows(demo_index))
    for q in gallery[::37]:
        rows, dists = search.topk(gallery, search.squared_norms(gallery), q, 5)
        brute = np.linalg.norm(gallery - q, axis=1)
        assert list(rows) == list(np.argsort(brute, kind="stable")[:5])
        assert np.allclose(dists, np.sort(brute)[:5], atol=1e-3)
        assert dists[0] < 1e-3  # the query itself is in the gallery


def test_sharded_merge_equals_one_search_over_everything(demo_index):
    gallery = np.asarray(_all_rows(demo_index))
    for q in gallery[5::41]:
        answers = []
        for k in range(2):
            shard, first = store.open_shard(demo_index, k)
            rows, dists = search.topk(shard, search.squared_norms(shard), q, 5)
            answers.append(((rows + first).tolist(), dists.tolist()))
        merged = [r for r, _ in search.merge(answers, 5)]
        whole, _ = search.topk(gallery, search.squared_norms(gallery), q, 5)
        assert merged == whole.tolist()


def test_topk_on_tiny_and_empty_shards():
    g = np.eye(3, 128, dtype=np.float32)
    rows, _ = search.topk(g, search.squared_norms(g), g[1], 5)
    assert rows.tolist()[0] == 1 and len(rows) == 3
    rows, dists = search.topk(g[:0], search.squared_norms(g[:0]), g[1], 5)
    assert len(rows) == 0 and len(dists) == 0


@pytest.mark.slow
def test_corrupt_images_are_reported_and_skipped(tmp_path):
    dataset = tmp_path / "dataset"
    for person in ("barack_obama", "joe_biden"):
        shutil.copytree(DEMO_GALLERY / person, dataset / person)
    (dataset / "joe_biden" / "corrupt.jpg").write_bytes(b"\xff\xd8 truncated")
    (dataset / "nobody").mkdir()
    (dataset / "nobody" / "blank.png").write_bytes((DEMO_GALLERY / "barack_obama" / "obama.jpg").read_bytes()[:0])
    report = build.build(dataset, tmp_path / "idx", n_shards=3, workers=1, progress=False)
    reasons = {r["photo"]: r["reason"] for r in report["rejected_files"]}
    assert reasons == {"joe_biden/corrupt.jpg": "unreadable file", "nobody/blank.png": "unreadable file"}
    assert report["indexed"] == 5
    assert len(store.read_manifest(tmp_path / "idx").shards) == 3


def test_truncated_shard_is_refused_naming_the_file(demo_index, tmp_path):
    broken = tmp_path / "idx"
    shutil.copytree(demo_index, broken)
    shard = broken / "shard_001.npy"
    shard.write_bytes(shard.read_bytes()[:1000])
    with pytest.raises(store.IndexStoreError, match=r"shard_001\.npy"):
        store.open_shard(broken, 1)


def test_missing_index_is_a_clear_error(tmp_path):
    with pytest.raises(store.IndexStoreError, match="build the index first"):
        store.read_manifest(tmp_path)
