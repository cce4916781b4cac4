"""The on-disk gallery index: a manifest, N descriptor shards and a metadata database.

Layout of an index folder::

    manifest.json       format version, dim, dtype, count, shards (file, rows, sha256), provenance
    shard_000.npy ...   float32 descriptors, one .npy per shard (memory-mapped when opened)
    meta.sqlite         one row per descriptor: identity, source photo, face box
    build_report.json   what the build did and every file it rejected, with the reason

Shard k holds global rows ``[start, stop)``; rows are numbered across shards in build order.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

FORMAT_VERSION = 1
DIM = 128


class IndexStoreError(RuntimeError):
    """An index folder that can't be used; the text names the file."""


@dataclass(frozen=True)
class Entry:
    identity: str
    photo: str  # path relative to the dataset root
    box: tuple[int, int, int, int]


def write(out: Path, descriptors: np.ndarray, entries: list[Entry], n_shards: int, provenance: dict[str, Any]) -> dict:
    """Write a complete index into ``out`` (created) and return its manifest."""
    if len(descriptors) != len(entries):
        raise ValueError(f"{len(descriptors)} descriptors for {len(entries)} entries")
    n_shards = max(1, min(n_shards, max(1, len(entries))))
    out.mkdir(parents=True, exist_ok=True)
    bounds = np.linspace(0, len(entries), n_shards + 1).round().astype(int)
    shards = []
    for k in range(n_shards):
        name = f"shard_{k:03d}.npy"
        np.save(out / name, np.ascontiguousarray(descriptors[bounds[k] : bounds[k + 1]], dtype="<f4"))
        shards.append(
            {"file": name, "start": int(bounds[k]), "stop": int(bounds[k + 1]), "sha256": _sha256(out / name)}
        )
    db = out / "meta.sqlite"
    db.unlink(missing_ok=True)
    with sqlite3.connect(db) as con:
        con.execute("CREATE TABLE entries (row INTEGER PRIMARY KEY, identity TEXT, photo TEXT, box TEXT)")
        con.executemany(
            "INSERT INTO entries VALUES (?, ?, ?, ?)",
            ((i, e.identity, e.photo, json.dumps(list(e.box))) for i, e in enumerate(entries)),
        )
    con.close()
    manifest = {
        "format_version": FORMAT_VERSION,
        "dim": DIM,
        "dtype": "float32",
        "count": len(entries),
        "identities": len({e.identity for e in entries}),
        "shards": shards,
        "provenance": provenance,
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return manifest


def read_manifest(index_dir: Path) -> dict:
    path = Path(index_dir) / "manifest.json"
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError as e:
        raise IndexStoreError(f"{path} does not exist: build the index first (megapixels index build)") from e
    except json.JSONDecodeError as e:
        raise IndexStoreError(f"{path} is not valid JSON: {e}") from e
    if manifest.get("format_version") != FORMAT_VERSION:
        raise IndexStoreError(f"{path}: format version {manifest.get('format_version')!r}, expected {FORMAT_VERSION}")
    return manifest


def open_shard(index_dir: Path, k: int) -> tuple[np.ndarray, int]:
    """Shard ``k`` memory-mapped, and the global row number of its first row."""
    manifest = read_manifest(index_dir)
    shards = manifest["shards"]
    if not 0 <= k < len(shards):
        raise IndexStoreError(f"{index_dir} has {len(shards)} shards, there is no shard {k}")
    info = shards[k]
    path = Path(index_dir) / info["file"]
    try:
        array = np.load(path, mmap_mode="r")
    except (OSError, ValueError) as e:
        raise IndexStoreError(f"{path}: unreadable or truncated shard ({e})") from e
    want = (info["stop"] - info["start"], manifest["dim"])
    if array.shape != want or array.dtype != np.dtype("<f4"):
        raise IndexStoreError(f"{path}: shape {array.shape} {array.dtype}, manifest says {want} float32")
    return array, int(info["start"])


class Metadata:
    """Row -> identity, photo and box, read from meta.sqlite (read-only)."""

    def __init__(self, index_dir: Path):
        path = Path(index_dir) / "meta.sqlite"
        if not path.exists():
            raise IndexStoreError(f"{path} does not exist")
        self._con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)

    def lookup(self, rows: list[int]) -> dict[int, Entry]:
        if not rows:
            return {}
        marks = ",".join("?" * len(rows))
        cur = self._con.execute(f"SELECT row, identity, photo, box FROM entries WHERE row IN ({marks})", rows)
        return {r: Entry(identity, photo, tuple(json.loads(box))) for r, identity, photo, box in cur}

    def close(self) -> None:
        self._con.close()


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
