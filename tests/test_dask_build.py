"""The gallery build on Dask: a real scheduler and worker processes on loopback, real faces.

A subset of the MegaFace-layout sample (``../shared/data/megaface_sample``: LFW photos with
sidecar boxes, some without, and a copy of one photo in another account) is built once on a
LocalCluster with one worker process, the single-process reference, and then on a cluster the
test starts itself (``dask scheduler`` and two ``dask worker`` processes, ports chosen by the
system): the indexes must be the same, also when a worker is killed mid-batch. The refusals
(an unreachable scheduler, workers that don't see the dataset) and the streaming of the listing
run on the bundled demo gallery.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from index import build, engine, publish, store
from tests.conftest import DEMO_GALLERY, PROJECT

DASK = Path(sys.executable).parent / "dask"
SUBSET = 150  # photos of the 996: ~10 s on two workers
WITHOUT_SIDECAR = 6  # of them: the detector finds the face
REPORT_KEYS = (
    "photos",
    "indexed",
    "identities",
    "rejected",
    "rejected_files",
    "several_faces_kept_largest",
    "boxes_from_sidecars",
)


@pytest.fixture(scope="module")
def sample(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """SUBSET photos of the MegaFace sample with their sidecars, and one photo copied to a second account."""
    source = shared_data / "megaface_sample"
    photos = sorted((source / "FlickrFinal2").rglob("*.jpg"))
    bare = [p for p in photos if not p.with_name(p.name + ".json").exists()][:WITHOUT_SIDECAR]
    step = len(photos) // (SUBSET - len(bare))
    chosen = sorted(set(photos[::step][: SUBSET - len(bare)]) | set(bare))
    root = tmp_path_factory.mktemp("megaface") / "FlickrFinal2"
    for photo in chosen:
        to = root / photo.relative_to(source / "FlickrFinal2")
        to.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(photo, to)
        if photo.with_name(photo.name + ".json").exists():
            shutil.copy(photo.with_name(photo.name + ".json"), to.with_name(to.name + ".json"))
    copy = root / "999" / "99999999@N01" / "1_0.jpg"  # same bytes (and sidecar) as a photo of another account
    copy.parent.mkdir(parents=True)
    original = next(p for p in chosen if p not in bare)
    shutil.copy(original, copy)
    shutil.copy(original.with_name(original.name + ".json"), copy.with_name(copy.name + ".json"))
    return root


@pytest.fixture(scope="module")
def reference(sample: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sample built by one worker process (a LocalCluster of 1)."""
    out = tmp_path_factory.mktemp("reference") / "idx"
    build.build(sample, out, n_shards=2, workers=1, progress=False)
    return out


def _index(folder: Path) -> tuple[np.ndarray, list[store.Entry], dict]:
    manifest = store.verify(folder)
    shards = range(len(manifest.shards))
    rows = np.concatenate([np.asarray(store.open_shard(folder, k)[0], np.float32) for k in shards])
    meta = store.Metadata(folder)
    entries = meta.lookup(list(range(manifest.real)))
    meta.close()
    return rows, [entries[i] for i in range(manifest.real)], json.loads((folder / "build_report.json").read_text())


def assert_same_index(built: Path, reference: Path) -> dict:
    rows, entries, report = _index(built)
    want_rows, want_entries, want = _index(reference)
    assert entries == want_entries  # same photos, same order, same boxes
    np.testing.assert_allclose(rows, want_rows, atol=1e-5)
    assert {k: report[k] for k in REPORT_KEYS} == {k: want[k] for k in REPORT_KEYS}
    return report


@dataclass
class Cluster:
    address: str
    scheduler: subprocess.Popen
    workers: list[subprocess.Popen]


def _free_address() -> str:
    """A loopback address nothing listens on (a port the system just gave out and took back)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{s.getsockname()[1]}"


def _start(folder: Path, workers: int, wrap: list[str] | None = None) -> Cluster:
    """``dask scheduler`` and ``workers`` x ``dask worker`` (each a nanny and its worker process) on
    loopback, ports chosen by the system; returns once every worker has joined."""
    from distributed import Client

    folder.mkdir(parents=True, exist_ok=True)
    info = folder / "scheduler.json"
    logs = open(folder / "cluster.log", "ab")  # noqa: SIM115 (kept open by the processes)
    quiet = {"stdout": logs, "stderr": logs, "cwd": PROJECT, "start_new_session": True}
    scheduler = subprocess.Popen(
        [str(DASK), "scheduler", "--host", "127.0.0.1", "--port", "0", "--dashboard-address", "127.0.0.1:0",
         "--scheduler-file", str(info)],
        **quiet,
    )  # fmt: skip
    cluster = Cluster("", scheduler, [])
    deadline = time.monotonic() + 60
    while not info.exists() and time.monotonic() < deadline and scheduler.poll() is None:
        time.sleep(0.05)  # the scheduler writes the file once it listens
    assert info.exists(), f"the scheduler did not start: {(folder / 'cluster.log').read_text()[-2000:]}"
    cluster.address = json.loads(info.read_text())["address"]
    for _ in range(workers):
        command = [str(DASK), "worker", cluster.address, "--nthreads", "1", "--host", "127.0.0.1", "--no-dashboard"]
        cluster.workers.append(subprocess.Popen([*(wrap or []), *command], **quiet))
    with Client(cluster.address, timeout="30s", set_as_default=False) as client:
        client.wait_for_workers(workers, timeout=120)
    return cluster


def _stop(cluster: Cluster) -> None:
    """Stop the processes this test started (each in its own session: the nanny's worker too)."""
    procs = [cluster.scheduler, *cluster.workers]
    for p in procs:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGKILL)  # a worker process its nanny left behind


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    running = _start(tmp_path_factory.mktemp("cluster"), workers=2)
    try:
        yield running
    finally:
        _stop(running)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_cluster_of_two_workers_builds_the_same_index_as_one_process(sample, reference, cluster, tmp_path):
    out = tmp_path / "idx"
    lines: list[str] = []
    report = build.build(sample, out, n_shards=2, progress=False, scheduler=cluster.address, log=lines.append)
    assert report["workers"] == 2 and report["described_this_run"] == report["photos"] - 1  # the copy: once
    assert_same_index(out, reference)
    assert report["boxes_from_sidecars"] >= SUBSET - WITHOUT_SIDECAR - 10  # both paths: sidecar and detector
    assert report["rejected"].get("duplicate photo") == 1
    assert any(f"describing on 2 Dask worker threads ({cluster.address}); dashboard http" in x for x in lines)
    # Built again into the same --out: every photo comes from the replaced index's journal.
    again = build.build(sample, out, n_shards=2, progress=False, scheduler=cluster.address)
    assert again["described_this_run"] == 0 and again["resumed_from_journal"] == again["photos"]
    assert_same_index(out, reference)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_worker_killed_mid_batch_loses_and_duplicates_nothing(sample, reference, cluster, tmp_path):
    from distributed import Client

    out = tmp_path / "idx"
    command = [sys.executable, "-m", "index.cli", "index", "build", str(sample), "--out", str(out)]
    log = tmp_path / "build.log"
    with open(log, "wb") as f:
        proc = subprocess.Popen([*command, "--scheduler", cluster.address], cwd=PROJECT, stdout=f, stderr=f)
    journal = publish.staging_dir(out) / build.JOURNAL
    killed = None
    try:
        with Client(cluster.address, timeout="30s", set_as_default=False) as client:
            pids = client.run(os.getpid)
            deadline = time.monotonic() + 300
            while killed is None and time.monotonic() < deadline and proc.poll() is None:
                if journal.exists() and journal.read_bytes().count(b"\n") >= 10:
                    busy = [w for w, tasks in client.processing().items() if tasks and w in pids]
                    if busy:  # a worker with a batch in hand
                        os.kill(pids[busy[0]], signal.SIGKILL)
                        killed = busy[0]
                        done_then = journal.read_bytes().count(b"\n")
                        break
                time.sleep(0.05)  # polling a file the build appends to
        assert killed, f"no worker was killed: {log.read_text()[-2000:]}"
        assert proc.poll() is None and done_then < SUBSET, "the build had finished before the kill"
        assert proc.wait(timeout=600) == 0, log.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    report = assert_same_index(out, reference)
    keys = [json.loads(x)["key"] for x in (out / build.JOURNAL).read_text().splitlines()]
    assert len(keys) == len(set(keys)) == report["described_this_run"] == report["photos"] - 1
    text = log.read_text()
    assert "dashboard http://" in text and "photo/s" in text  # the progress shows the rate


def test_an_unreachable_scheduler_fails_fast_naming_the_address(tmp_path):
    dataset = tmp_path / "ds" / "someone"
    dataset.mkdir(parents=True)
    shutil.copy(DEMO_GALLERY / "rose_leslie" / "img1.jpg", dataset)
    address = _free_address()
    command = [sys.executable, "-m", "index.cli", "index", "build", str(dataset.parent), "--out", str(tmp_path / "i")]
    started = time.monotonic()
    done = subprocess.run([*command, "--scheduler", address], cwd=PROJECT, capture_output=True, text=True, timeout=60)
    took = time.monotonic() - started
    assert done.returncode == 1
    assert f"megapixels: no Dask scheduler answers at {address} (waited {engine.CONNECT_TIMEOUT_S} s" in done.stderr
    assert "Traceback" not in done.stderr
    assert took < 15, took
    assert not (tmp_path / "i").exists()
    wrong = subprocess.run([*command, "--scheduler", "10.0.0.5"], cwd=PROJECT, capture_output=True, text=True)
    assert wrong.returncode == 1 and "'10.0.0.5' is not a Dask scheduler address: give tcp://HOST:PORT" in wrong.stderr


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_workers_that_do_not_see_the_dataset_are_refused_naming_the_path(tmp_path):
    if os.geteuid() != 0 or not shutil.which("unshare"):
        pytest.skip("needs root and unshare(1) to give a worker its own view of the file system")
    dataset = tmp_path / "ds"
    (dataset / "rose_leslie").mkdir(parents=True)
    shutil.copy(DEMO_GALLERY / "rose_leslie" / "img1.jpg", dataset / "rose_leslie")
    # The worker's own mount namespace, with an empty tmpfs over the dataset: it sees the folder, not the photos.
    blind = ["unshare", "--mount", "--propagation", "private", "sh", "-c", 'mount -t tmpfs none "$0" && exec "$@"']
    running = _start(tmp_path / "cluster", workers=1, wrap=[*blind, str(dataset)])
    try:
        with pytest.raises(engine.EngineError) as refused:
            build.build(dataset, tmp_path / "idx", progress=False, scheduler=running.address)
    finally:
        _stop(running)
    message = str(refused.value)
    photo = dataset / "rose_leslie" / "img1.jpg"
    assert f"1 of 1 Dask workers do not see the dataset photo {photo} as this machine does" in message
    assert "cannot read: No such file or directory" in message
    assert "mount the dataset at the same path on every worker host" in message
    assert not (tmp_path / "idx").exists()


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_the_listing_streams_into_the_workers(tmp_path, monkeypatch):
    """Photos are described while the listing is still being read (a 4.2M-photo walk takes long)."""
    photos = [
        build.Photo(str(p.relative_to(DEMO_GALLERY)), p.parent.name) for p in sorted(DEMO_GALLERY.rglob("*.jp*g"))
    ]
    photos = photos[:30]
    out = tmp_path / "idx"
    journal = publish.staging_dir(out) / build.JOURNAL
    seen_while_listing: list[int] = []

    def listing():
        for i, photo in enumerate(photos):
            if i == len(photos) - 1:  # the last photo of the listing: some are described already
                seen_while_listing.append(journal.read_bytes().count(b"\n"))
            yield photo

    monkeypatch.setattr(build, "_photos", lambda source, unreadable=None: (DEMO_GALLERY.resolve(), listing(), None))
    monkeypatch.setattr(build, "PROBE_AMONG", 2)
    report = build.build(DEMO_GALLERY, out, n_shards=1, workers=1, progress=False)
    assert seen_while_listing and seen_while_listing[0] >= 2
    assert report["photos"] == 30
    _, entries, saved = _index(out)
    rejected = {r["photo"] for r in saved["rejected_files"]}
    assert [e.photo for e in entries] == [p.path for p in photos if p.path not in rejected]  # in listing order


def test_batches_grow_to_seconds_of_work_and_stay_bounded():
    """The engine's batch sizes and in-flight bound, on a LocalCluster of one worker (no dlib)."""
    with engine.connect(None, 1) as cluster:
        cluster.prepare(dict)
        results = list(cluster.stream(_double, range(200)))
    done = sorted(i for batch, _ in results for i in batch)
    assert done == list(range(200))  # every item once
    assert all(r == [2 * i for i in batch] for batch, r in results)
    first = [len(batch) for batch, _ in results]
    assert first[:2] == [engine.FIRST_BATCH, engine.FIRST_BATCH]
    assert all(b <= 2 * a for a, b in itertools.pairwise(first))  # at most doubling
    assert max(first) > engine.FIRST_BATCH  # fast items: batches grew


def _double(items: list[int], payload: object) -> list[int]:
    return [2 * i for i in items]


def test_the_drivers_key_offsets_agree_with_a_dict_across_merges(monkeypatch):
    """journal.KeyOffsets (24 bytes a key once merged) answers as a dict would: new keys, keys seen
    again (the last line wins), keys never seen, before and after its merges."""
    from index import journal

    monkeypatch.setattr(journal.KeyOffsets, "MERGE_AT", 64)
    rng = np.random.default_rng(5)
    found, want = journal.KeyOffsets(), {}
    keys = [journal.digest(f"{i}:-:fingerprint") for i in range(3000)]
    for step in range(6000):
        d = keys[int(rng.integers(0, len(keys)))]
        found[d] = want[d] = step
        if step % 500 == 0:
            assert all(found.get(k) == want.get(k) for k in keys)
    assert all(found.get(k) == want.get(k) for k in keys) and len(found) == len(want)
    assert found.get(journal.digest("never journaled")) is None
    assert np.array_equal(found.lows(), np.unique(np.array([k & journal.MASK64 for k in want], np.uint64)))
