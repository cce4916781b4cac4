"""Rebuilding an index that is in use: nothing an operator does silently corrupts the gallery.

Real builds (real dlib, real photos: the demo gallery and LFW) of four photos each; a real
matcher process answering over real sockets while its index is rebuilt.
"""

from __future__ import annotations

import re
import shutil
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import zmq
from PIL import Image

import faces
from benchmarks.graph import Graph, logged
from index import build, cli, journal, publish, store
from messages import encode, open_socket
from tests import factories
from tests.conftest import DEMO_GALLERY, PROJECT

# d2 has d1's relative paths, with other people's photos behind them.
LAYOUT = {
    "kit_harington/john1.jpeg": "Tony_Blair/Tony_Blair_0001.jpg",
    "kit_harington/john2.jpeg": "Tony_Blair/Tony_Blair_0002.jpg",
    "rose_leslie/img1.jpg": "Colin_Powell/Colin_Powell_0001.jpg",
    "rose_leslie/img2.jpg": "Colin_Powell/Colin_Powell_0002.jpg",
}


@pytest.fixture(scope="module")
def datasets(tmp_path_factory, shared_data) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("datasets")
    for photo, lfw in LAYOUT.items():
        for name, source in (("d1", DEMO_GALLERY / photo), ("d2", shared_data / "lfw" / lfw)):
            (root / name / photo).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(source, root / name / photo)
    return root / "d1", root / "d2"


@pytest.fixture(scope="module")
def d1_index(datasets, tmp_path_factory) -> Path:
    """d1 built once (float32, one shard: the matcher keeps the memory-mapped file)."""
    out = tmp_path_factory.mktemp("d1") / "idx"
    build.build(datasets[0], out, n_shards=1, workers=1, progress=False)
    return out


def _copy(index: Path, tmp_path: Path) -> Path:
    out = tmp_path / "idx"
    shutil.copytree(index, out)
    return out


def _row0(index: Path) -> np.ndarray:
    return np.array(store.open_shard(index, 0)[0][0], np.float32)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_rebuild_describes_changed_photos_and_settings_again(datasets, d1_index, tmp_path):
    d1, d2 = datasets
    out = _copy(d1_index, tmp_path)
    report = build.build(d2, out, n_shards=1, workers=1, progress=False)
    assert report["described_this_run"] == 4 and report["reused_from_previous_index"] == 0
    for photo in LAYOUT:  # a search for a d2 photo finds that very photo
        (best, *_) = cli.search_image(d2 / photo, out, k=1)
        assert best.photo == photo and best.distance < 0.01, best
    report = build.build(d2, out, n_shards=1, workers=1, progress=False, quality=build.Quality(min_face_px=30))
    assert report["described_this_run"] == 4  # a setting that decides outcomes: described again
    assert store.read_manifest(out).build_parameters["quality"]["min_face_px"] == 30
    # Storing settings only: every descriptor comes from the replaced index's journal.
    same = build.Quality(min_face_px=30)
    report = build.build(d2, out, n_shards=2, workers=1, progress=False, dtype="float16", quality=same)
    assert report["described_this_run"] == 0 and report["reused_from_previous_index"] == 4
    manifest = store.verify(out)
    assert manifest.dtype == "float16" and len(manifest.shards) == 2
    assert manifest.build_parameters["quality"]["min_face_px"] == 30
    # Back to d1: same paths, d1's bytes again; nothing of d2 is reused for them.
    report = build.build(d1, out, n_shards=1, workers=1, progress=False)
    assert report["described_this_run"] == 4
    (best, *_) = cli.search_image(d1 / "rose_leslie/img1.jpg", out, k=1)
    assert best.photo == "rose_leslie/img1.jpg" and best.distance < 0.01
    leftovers = sorted(p.name for p in out.parent.iterdir() if p.name.startswith("."))
    assert leftovers == [".idx.lock", ".idx.removals.lock"]  # no staging or replaced folder is left behind


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_failing_rebuild_leaves_the_previous_index_intact(d1_index, tmp_path, capsys):
    out = _copy(d1_index, tmp_path)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    blank = tmp_path / "blank" / "nobody"
    blank.mkdir(parents=True)
    Image.new("RGB", (200, 200), (128, 128, 128)).save(blank / "grey.png")
    with pytest.raises(ValueError, match="no usable face"):
        build.build(blank.parent, out, workers=1, progress=False)
    with pytest.raises(ValueError, match="synthetic count must be an integer >= 0, got -5"):
        build.build(blank.parent, out, workers=1, progress=False, synthetic={"count": -5, "seed": 1})
    with pytest.raises(FileNotFoundError):
        build.build(tmp_path / "no-such-dataset", out, workers=1, progress=False)
    with pytest.raises(SystemExit) as exited:
        cli.main(["index", "build", str(blank.parent), "--out", str(out), "--synthetic", "-5"])
    assert exited.value.code == 2 and "--synthetic: must be >= 0, got -5" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert store.verify(out).real == 4  # openable with every check a matcher makes


def test_a_second_build_into_the_same_out_refuses_at_once(tmp_path, capsys):
    out = tmp_path / "idx"
    dataset = tmp_path / "ds" / "someone"
    dataset.mkdir(parents=True)
    shutil.copy(DEMO_GALLERY / "rose_leslie" / "img1.jpg", dataset)
    with publish.BuildLock(out.absolute()):
        started = time.monotonic()
        refused = rf"another build into {re.escape(str(out))} is running \(pid \d+"
        with pytest.raises(publish.BuildLocked, match=refused):
            build.build(dataset.parent, out, workers=1, progress=False)
        assert cli.main(["index", "build", str(dataset.parent), "--out", str(out)]) == 1
        assert "another build into" in capsys.readouterr().err
        assert time.monotonic() - started < 5  # refused before anything was read
    assert not out.exists() and not publish.staging_dir(out).exists()


def test_an_out_folder_holding_other_files_is_never_replaced(tmp_path):
    out = tmp_path / "notes"
    out.mkdir()
    (out / "thesis.tex").write_text("years of work")
    dataset = tmp_path / "ds" / "someone"
    dataset.mkdir(parents=True)
    shutil.copy(DEMO_GALLERY / "rose_leslie" / "img1.jpg", dataset)
    with pytest.raises(ValueError, match=r"holds thesis\.tex, which an index build does not write"):
        build.build(dataset.parent, out, workers=1, progress=False)
    assert (out / "thesis.tex").read_text() == "years of work"


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_rebuild_under_a_running_matcher_never_crashes_it(datasets, d1_index, ipc_dir, ipc_config, tmp_path):
    """A float32 shard stays memory-mapped in the matcher (the numpy kernel reads it in place):
    on main, rebuilding rewrote it and the matcher died of SIGBUS at its next query."""
    out = _copy(d1_index, tmp_path)
    old_row0 = _row0(out)
    env = {"MEGAPIXELS_CONFIG": str(PROJECT / "config" / "test.toml"), "MEGAPIXELS_IPC_DIR": str(ipc_dir)}
    graph = Graph({**env, "MEGAPIXELS_INDEX": str(out)})
    ctx = zmq.Context()
    pub = open_socket(ctx, ipc_config, "queries", "detector", receiving=False)
    pull = open_socket(ctx, ipc_config, "candidates", "reducer", receiving=True)
    qid = iter(range(1, 1000))

    def ask(descriptor: np.ndarray) -> tuple[int, float]:
        n = next(qid)
        reply = factories.send_until_answered(pub, pull, [encode(factories.query(n, descriptor))], n, 90)
        return reply.rows[0], reply.distances[0]

    try:
        graph.start("matcher.1")
        assert ask(old_row0) == (0, pytest.approx(0, abs=1e-3))
        report = build.build(datasets[1], out, n_shards=1, workers=1, progress=False)
        assert report["described_this_run"] == 4
        new_row0 = _row0(out)
        assert np.linalg.norm(new_row0 - old_row0) > 0.3  # another person: the index did change
        for _ in range(3):  # the running matcher keeps answering from the index it opened
            assert ask(old_row0) == (0, pytest.approx(0, abs=1e-3))
        assert graph.procs["matcher.1"].poll() is None
        assert graph.stop("matcher.1") == 0
        graph.start("matcher.1")
        graph.wait_for(logged("matcher.1", "shards 0 of 1"), "the restarted matcher", 90)
        assert ask(new_row0) == (0, pytest.approx(0, abs=1e-3))  # it serves the new index
    finally:
        graph.stop_all()
        pub.close(0)
        pull.close(0)
        ctx.term()


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_too_many_pixels_and_photos_without_identity_are_reported(tmp_path):
    dataset = tmp_path / "ds"
    (dataset / "rose_leslie").mkdir(parents=True)
    shutil.copy(DEMO_GALLERY / "rose_leslie" / "img1.jpg", dataset / "rose_leslie")
    Image.new("L", (8200, 5000), 128).save(dataset / "rose_leslie" / "huge.jpg")  # 41 megapixels
    shutil.copy(DEMO_GALLERY / "rose_leslie" / "img2.jpg", dataset / "loose.jpg")  # in the root: nobody's
    report = build.build(dataset, tmp_path / "idx", workers=1, progress=False)
    reasons = {r["photo"]: (r["reason"], r["detail"]) for r in report["rejected_files"]}
    assert reasons["rose_leslie/huge.jpg"][0] == "too many pixels"
    assert "8200x5000 is 41.0 megapixels, the limit is 40" in reasons["rose_leslie/huge.jpg"][1]
    assert reasons["loose.jpg"][0] == "no identity folder"
    assert report["photos"] == 3 and report["indexed"] == 1
    assert report["rejected"] == {"too many pixels": 1, "no identity folder": 1}
    assert set(report["rejected"]) <= set(build.REASONS)
    # The limit decides outcomes, so it is part of every journal key: a new limit looks again.
    default = journal.fingerprint(asdict(build.Quality()))
    assert journal.fingerprint(asdict(build.Quality(max_pixels=50_000_000))) != default


def test_search_refuses_too_many_pixels_before_decoding(tmp_path, capsys, monkeypatch):
    huge = tmp_path / "huge.jpg"
    Image.new("L", (8200, 5000), 128).save(huge)

    def no_decoding(*_):
        raise AssertionError("decoded an image over the limit")

    monkeypatch.setattr(faces.images.cv2, "imdecode", no_decoding)
    with pytest.raises(faces.TooManyPixels, match=r"41\.0 megapixels, the limit is 40"):
        faces.read_image(huge)
    assert cli.main(["search", str(huge), "--index", str(tmp_path / "none")]) == 1
    assert "huge.jpg: 8200x5000 is 41.0 megapixels, the limit is 40 (not decoded)" in capsys.readouterr().err
    assert cli.main(["search", str(huge), "--index", str(tmp_path / "none"), "--max-megapixels", "10"]) == 1
    assert "the limit is 10 (not decoded)" in capsys.readouterr().err


@pytest.mark.parametrize("atomic", [True, False], ids=["renameat2 exchange", "two renames"])
def test_publishing_replaces_the_folder_and_never_rewrites_a_mapped_file(tmp_path, monkeypatch, atomic):
    real_exchange = publish.exchange
    exchanged: list[bool] = []

    def exchange(a: Path, b: Path) -> bool:
        exchanged.append(real_exchange(a, b) if atomic else False)  # False: a system without it
        return exchanged[-1]

    monkeypatch.setattr(publish, "exchange", exchange)
    out = tmp_path / "idx"
    rng = np.random.default_rng(3)

    def stage(n: int) -> np.ndarray:
        rows = rng.normal(0, 0.1, (n, 128)).astype(np.float32)
        staging = publish.prepare_staging(out)
        store.write(staging, rows, [store.Entry(f"p{i}", f"p{i}/1.jpg", None) for i in range(n)], 1, {})
        return rows

    first = stage(30)
    publish.publish(publish.staging_dir(out), out)
    assert exchanged == []  # nothing to replace: one rename
    mapped, _ = store.open_shard(out, 0)  # as a float32 matcher holds it
    inode = (out / "shard_000.npy").stat().st_ino
    second = stage(50)
    publish.publish(publish.staging_dir(out), out)
    assert exchanged == [atomic]  # ext4 here has RENAME_EXCHANGE
    assert np.array_equal(mapped, first)  # the old file was unlinked, not rewritten: still readable
    assert (out / "shard_000.npy").stat().st_ino != inode
    assert np.array_equal(store.open_shard(out, 0)[0], second) and store.verify(out).real == 50
    assert sorted(p.name for p in tmp_path.iterdir()) == [".idx.removals.lock", "idx"]  # no staging or replaced folder
