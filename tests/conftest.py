"""Shared fixtures: where the real data is, the demo index built once per run, ipc folders, a CPU hog.

``MEGAPIXELS_TEST_HOG=1`` runs every slow test (the ones that start actor processes) beside the
hog: ``os.cpu_count() * 2`` busy-loop processes, started before the test and killed after it, so
the fault and graph tests can be run on a machine short of CPU (``MEGAPIXELS_TEST_HOG=1 pytest
tests/test_faults.py``).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from benchmarks.graph import hog as busy_loops
from tests.factories import Echo, matcher_in_thread, megaface_subset

PROJECT = Path(__file__).resolve().parent.parent
DEMO_GALLERY = PROJECT / "demo" / "gallery"
DEMO_CLIP = PROJECT / "demo" / "clips" / "obama_2s.mp4"
SHARED_DATA = PROJECT.parent / "shared" / "data"
ARTIFACTS = PROJECT / "test-artifacts"


HOG_PROCESSES = 2 * (os.cpu_count() or 1)  # two busy loops per core


@pytest.fixture
def hog() -> Iterator[int]:
    """``HOG_PROCESSES`` busy-loop processes beside the test, always killed after it; yields their number."""
    with busy_loops(HOG_PROCESSES):
        yield HOG_PROCESSES


@pytest.fixture(autouse=True)
def _hog_when_asked(request: pytest.FixtureRequest) -> None:
    """With MEGAPIXELS_TEST_HOG=1, every slow test (actor processes, windows) gets the hog too."""
    if os.environ.get("MEGAPIXELS_TEST_HOG") == "1" and request.node.get_closest_marker("slow"):
        request.getfixturevalue("hog")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data, or a skip when this clone has none beside it."""
    if not (SHARED_DATA / "README.md").exists():
        pytest.skip(f"needs the real data set at {SHARED_DATA}, which this clone does not have beside it")
    return SHARED_DATA


@pytest.fixture(scope="session")
def demo_index(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bundled demo gallery built into a 2-shard index, once per test run."""
    from index import build

    out = tmp_path_factory.mktemp("demo-index")
    build.build(DEMO_GALLERY, out, n_shards=2, progress=False)
    return out


@pytest.fixture(scope="session")
def demo_index_3(demo_index: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same gallery in 3 shards: the builder resumes from the 2-shard build's journal (no photo
    is described again), so it costs seconds."""
    from index import build

    out = tmp_path_factory.mktemp("demo-index-3")
    shutil.copy(demo_index / build.JOURNAL, out / build.JOURNAL)
    build.build(DEMO_GALLERY, out, n_shards=3, progress=False)
    return out


@pytest.fixture(scope="session")
def megaface_subset_index(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A few accounts of the MegaFace sample (tests.factories.megaface_subset: its layout, sidecars and
    flickr_metadata.csv) built into a 1-shard index, once per test run (~10 s): every row has its
    account, photo id, licence and date taken."""
    from index import build

    root = tmp_path_factory.mktemp("megaface")
    megaface_subset(shared_data, root / "dataset")
    build.build(root / "dataset", root / "index", n_shards=1, progress=False)
    return root / "index"


@pytest.fixture(scope="session")
def demo_rows(demo_index: Path) -> tuple[np.ndarray, list]:
    """Every descriptor of the demo index, in row order, and each row's metadata entry."""
    from index import store

    manifest = store.read_manifest(demo_index)
    rows = np.concatenate([store.open_shard(demo_index, k)[0] for k in range(len(manifest.shards))])
    meta = store.Metadata(demo_index)
    entries = meta.lookup(list(range(len(rows))))
    meta.close()
    return np.asarray(rows, np.float32), [entries[i] for i in range(len(rows))]


# The MegaFace-layout sample's accounts in the lookup tests' index (megaface_index): every photo of
# the first MEGAFACE_ACCOUNTS accounts with 4 or more photos, and the first MEGAFACE_SINGLES with one.
MEGAFACE_ACCOUNTS = 10
MEGAFACE_SINGLES = 6


@pytest.fixture(scope="session")
def megaface_index(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An index of part of ../shared/data/megaface_sample (MegaFace's layout, its flickr_metadata.csv
    joined in), built once per test run: ~70 photos of 16 Flickr accounts, one local Dask worker
    (~10 s). Its dataset root is a copy in a temporary folder, from which the window shows photos.
    Tests that remove rows copy it first."""
    from index import build

    sample = shared_data / "megaface_sample"
    accounts = sorted((p for p in (sample / "FlickrFinal2").glob("*/*") if p.is_dir()), key=lambda p: p.name)
    size = {a: len(list(a.glob("*.jpg"))) for a in accounts}
    chosen = [a for a in accounts if size[a] >= 4][:MEGAFACE_ACCOUNTS]
    chosen += [a for a in accounts if size[a] == 1][:MEGAFACE_SINGLES]
    root = tmp_path_factory.mktemp("megaface-sample")
    for account in chosen:
        shutil.copytree(account, root / account.relative_to(sample))
    shutil.copy(sample / "flickr_metadata.csv", root / "flickr_metadata.csv")
    out = tmp_path_factory.mktemp("megaface-index") / "idx"
    build.build(root, out, n_shards=2, workers=1, progress=False)
    return out


@pytest.fixture
def x_display() -> Iterator[str]:
    """A private Xvfb screen of the kiosk's size, for the window tests (skips without Xvfb/XTEST)."""
    from tests import kiosk_screen as ks
    from tests.xvfb import running_xvfb, xvfb_binary

    if xvfb_binary() is None:
        pytest.skip("Xvfb is not installed (apt-get install xvfb xauth libgl1 libegl1 libmtdev1 libxtst6)")
    if not ks.has_xtest():
        pytest.skip("libXtst is missing (apt-get install libxtst6): the test clicks through XTEST")
    with running_xvfb(f"{ks.SCREEN_W}x{ks.SCREEN_H}x24") as name:
        yield name


@pytest.fixture
def ipc_dir() -> Iterator[Path]:
    """A short private folder for ipc:// endpoints (socket paths must stay under ~100 bytes)."""
    d = Path(tempfile.mkdtemp(prefix="mp-", dir="/tmp"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def upstream(ipc_dir: Path):
    """The window tests' fake camera, detector and reducer (tests/kiosk_fakes.py), publishing until the test ends."""
    from tests.kiosk_fakes import FakeUpstream

    up = FakeUpstream(ipc_dir)  # ipc_dir: the short folder, as socket paths must stay short
    up.start()
    yield up
    up.close()


@pytest.fixture
def ipc_config(ipc_dir: Path):
    """The test config with every endpoint an ipc socket in a private folder."""
    import config

    return config.load(PROJECT / "config" / "test.toml", env={"MEGAPIXELS_IPC_DIR": str(ipc_dir)})


@pytest.fixture
def running(ipc_config):
    """An Echo actor in a thread, with the test's PUB on queries and PULL on candidates."""
    actor = Echo(ipc_config)
    with matcher_in_thread(actor) as (stop, thread, pub, pull):
        yield actor, stop, thread, pub, pull
