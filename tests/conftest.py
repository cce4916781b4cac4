"""Shared fixtures: where the real data is, the demo index built once per run, ipc folders."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parent.parent
DEMO_GALLERY = PROJECT / "demo" / "gallery"
DEMO_CLIP = PROJECT / "demo" / "clips" / "obama_2s.mp4"
SHARED_DATA = PROJECT.parent / "shared" / "data"
ARTIFACTS = PROJECT / "test-artifacts"


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


@pytest.fixture
def ipc_dir() -> Iterator[Path]:
    """A short private folder for ipc:// endpoints (socket paths must stay under ~100 bytes)."""
    d = Path(tempfile.mkdtemp(prefix="mp-", dir="/tmp"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def ipc_config(ipc_dir: Path):
    """The test config with every endpoint an ipc socket in a private folder."""
    import config

    return config.load(PROJECT / "config" / "test.toml", env={"MEGAPIXELS_IPC_DIR": str(ipc_dir)})
