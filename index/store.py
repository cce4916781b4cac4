"""The on-disk gallery index: a manifest, N descriptor shards and a metadata database.

Layout of an index folder::

    manifest.json       format version, dim, dtype, count, shards (file, rows, bytes, sha256),
                        build parameters, dataset provenance, the synthetic row range
    shard_000.npy ...   descriptors in the build's dtype, one .npy per shard (memory-mapped)
    meta.sqlite         one row per real descriptor: identity, source photo, URL, licence, face box
    build_report.json   what the build did and every file it rejected, with the reason

Shard k holds global rows ``[start, stop)``; rows are numbered across shards in build order.
Rows from ``manifest.synthetic.start`` on are synthetic distractors (index/synthetic.py):
they have no photo and no person, so they have no SQLite row; :class:`Metadata` answers for them
with an :class:`Entry` whose ``synthetic`` is true.

Descriptor dtypes (chosen at build time, ``--dtype``): ``float32`` (exact), ``float16`` (half the
memory; distances change by < 1e-3, far below the 0.3 gap between a match and a stranger) and
``int8`` (a quarter; each dimension quantised on its own range, ``int8_scale`` / ``int8_offset``
in the manifest).
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from messages import DIM

FORMAT_VERSION = 2
DTYPES = ("float32", "float16", "int8")


class IndexStoreError(RuntimeError):
    """An index folder that can't be used; the text names the file."""


@dataclass(frozen=True)
class Entry:
    identity: str
    photo: str  # path relative to the dataset root ("" for synthetic rows)
    box: tuple[int, int, int, int] | None
    url: str = ""
    licence: str = ""
    synthetic: bool = False


def split(count: int, n_shards: int) -> list[tuple[int, int]]:
    """The [start, stop) rows of each shard: contiguous, as equal as possible."""
    n_shards = max(1, min(n_shards, max(1, count)))
    bounds = np.linspace(0, count, n_shards + 1).round().astype(int)
    return [(int(bounds[k]), int(bounds[k + 1])) for k in range(n_shards)]


@dataclass(frozen=True)
class RowCodec:
    """How stored rows map to float32: the dtype, and for int8 each dimension's scale and offset."""

    dtype: str
    int8_scale: tuple[float, ...] | None = None
    int8_offset: tuple[float, ...] | None = None


@dataclass(frozen=True)
class ShardInfo:
    file: str
    start: int  # global row of its first row
    stop: int
    bytes: int
    sha256: str


@dataclass(frozen=True)
class SyntheticInfo:
    """The synthetic distractor rows [start, stop) of an index grown to scale (index/synthetic.py)."""

    start: int
    stop: int
    seed: int
    model_file: str
    photos_per_identity: int
    fitted_on: str
    note: str = "synthetic distractor descriptors for measuring scale: no photo, no person"


@dataclass(frozen=True)
class Manifest:
    """manifest.json: what an index folder holds. Read with :func:`read_manifest`."""

    dim: int
    dtype: str
    count: int  # rows searched, synthetic ones included
    real: int  # rows with a photo and a person
    identities: int
    shards: tuple[ShardInfo, ...]
    build_parameters: dict[str, Any]
    provenance: dict[str, Any]
    int8_scale: tuple[float, ...] | None = None
    int8_offset: tuple[float, ...] | None = None
    synthetic: SyntheticInfo | None = None
    format_version: int = FORMAT_VERSION

    @property
    def codec(self) -> RowCodec:
        return RowCodec(self.dtype, self.int8_scale, self.int8_offset)

    @property
    def dataset_root(self) -> str:
        return str(self.provenance.get("dataset_root", ""))

    def to_json(self) -> dict[str, Any]:
        out = {"format_version": self.format_version, **asdict(self)}  # tuples are written as JSON lists
        return {key: value for key, value in out.items() if value is not None}

    @classmethod
    def from_json(cls, data: dict[str, Any], where: Path) -> Manifest:
        try:
            synthetic = data.get("synthetic")
            scale, offset = data.get("int8_scale"), data.get("int8_offset")
            return cls(
                dim=int(data["dim"]),
                dtype=str(data["dtype"]),
                count=int(data["count"]),
                real=int(data.get("real", data["count"])),
                identities=int(data["identities"]),
                shards=tuple(ShardInfo(**s) for s in data["shards"]),
                build_parameters=dict(data.get("build_parameters") or {}),
                provenance=dict(data.get("provenance") or {}),
                int8_scale=tuple(scale) if scale is not None else None,
                int8_offset=tuple(offset) if offset is not None else None,
                synthetic=SyntheticInfo(**synthetic) if synthetic else None,
                format_version=int(data["format_version"]),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise IndexStoreError(f"{where}: not a complete index manifest ({type(e).__name__}: {e}): rebuild") from e


def int8_codec(descriptors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-dimension (scale, offset) so that x ~= code * scale + offset with code in -127..127."""
    lo, hi = descriptors.min(axis=0).astype(np.float64), descriptors.max(axis=0).astype(np.float64)
    scale = np.maximum(hi - lo, 1e-9) / 254.0
    return scale.astype(np.float32), ((hi + lo) / 2).astype(np.float32)


def encode_rows(rows: np.ndarray, codec: RowCodec) -> np.ndarray:
    """float32 rows in the on-disk form of ``codec``."""
    rows = np.asarray(rows, dtype=np.float32)
    dtype = codec.dtype
    if dtype == "float32":
        return rows.astype("<f4")
    if dtype == "float16":
        return rows.astype("<f2")
    if dtype == "int8":
        scale, offset = np.asarray(codec.int8_scale, np.float32), np.asarray(codec.int8_offset, np.float32)
        return np.clip(np.rint((rows - offset) / scale), -127, 127).astype(np.int8)
    raise ValueError(f"dtype {dtype!r}: allowed {', '.join(DTYPES)}")


def decode_rows(rows: np.ndarray, codec: RowCodec) -> np.ndarray:
    """On-disk rows back to float32."""
    if codec.dtype == "int8":
        return rows.astype(np.float32) * np.asarray(codec.int8_scale, np.float32) + np.asarray(
            codec.int8_offset, np.float32
        )
    return np.asarray(rows, dtype=np.float32)


class ShardWriter:
    """Writes one shard's .npy incrementally (rows arrive in chunks) and hashes what it wrote."""

    def __init__(self, path: Path, rows: int, dtype: str):
        self.path = path
        self.array = np.lib.format.open_memmap(path, mode="w+", dtype=np.dtype(_NP[dtype]), shape=(rows, DIM))
        self.at = 0

    def add(self, encoded: np.ndarray) -> None:
        self.array[self.at : self.at + len(encoded)] = encoded
        self.at += len(encoded)

    def close(self) -> dict:
        if self.at != len(self.array):
            raise ValueError(f"{self.path}: {self.at} rows written, {len(self.array)} expected")
        self.array.flush()
        del self.array
        return {"file": self.path.name, "bytes": self.path.stat().st_size, "sha256": _sha256(self.path)}


_NP = {"float32": "<f4", "float16": "<f2", "int8": "i1"}


def write(
    out: Path,
    descriptors: np.ndarray,
    entries: list[Entry],
    n_shards: int,
    provenance: dict[str, Any],
    dtype: str = "float32",
    synthetic: dict[str, Any] | None = None,
    build_parameters: dict[str, Any] | None = None,
) -> Manifest:
    """Write a complete index into ``out`` (created) and return its manifest.

    ``descriptors`` are the real entries' rows. ``synthetic``, when given, appends synthetic rows:
    ``{"count": n, "seed": s, "model": DistractorModel, "model_file": name}``; they are generated
    chunk by chunk straight into the shard files, so a 4.2M index needs no 4.2M x 128 temporary.
    """
    from index import synthetic as synth

    if dtype not in DTYPES:
        raise ValueError(f"dtype {dtype!r}: allowed {', '.join(DTYPES)}")
    if len(descriptors) != len(entries):
        raise ValueError(f"{len(descriptors)} descriptors for {len(entries)} entries")
    n_real = len(entries)
    n_synth = int(synthetic["count"]) if synthetic else 0
    count = n_real + n_synth
    out.mkdir(parents=True, exist_ok=True)
    (out / "manifest.json").unlink(missing_ok=True)  # an index without a manifest is an unfinished one
    codec = RowCodec(dtype)
    if dtype == "int8":
        sample = np.asarray(descriptors, np.float32)
        if n_synth:
            sample = np.concatenate(
                [sample, synth.generate(synthetic["model"], min(n_synth, 100_000), synthetic["seed"])]
            )
        scale, offset = int8_codec(sample)
        codec = RowCodec(dtype, tuple(scale.tolist()), tuple(offset.tolist()))
    shards = []
    for k, (start, stop) in enumerate(split(count, n_shards)):
        writer = ShardWriter(out / f"shard_{k:03d}.npy", stop - start, dtype)
        if start < n_real:
            writer.add(encode_rows(descriptors[start : min(stop, n_real)], codec))
        for at in range(max(start, n_real), stop, 262_144):
            block = synth.generate(synthetic["model"], min(262_144, stop - at), synthetic["seed"], start=at - n_real)
            writer.add(encode_rows(block, codec))
        shards.append(ShardInfo(start=start, stop=stop, **writer.close()))
    synthetic_info = None
    if n_synth:
        synthetic["model"].save(out / "distractor_model.npz")
        synthetic_info = SyntheticInfo(
            start=n_real,
            stop=count,
            seed=int(synthetic["seed"]),
            model_file="distractor_model.npz",
            photos_per_identity=synthetic["model"].photos_per_identity,
            fitted_on=synthetic["model"].fitted_on,
        )
    manifest = Manifest(
        dim=DIM,
        dtype=dtype,
        count=count,
        real=n_real,
        identities=len({e.identity for e in entries}),
        shards=tuple(shards),
        build_parameters=build_parameters or {},
        provenance=provenance,
        int8_scale=codec.int8_scale,
        int8_offset=codec.int8_offset,
        synthetic=synthetic_info,
    )
    _write_metadata(out / "meta.sqlite", entries)
    tmp = out / "manifest.json.tmp"
    tmp.write_text(json.dumps(manifest.to_json(), indent=2))
    os.replace(tmp, out / "manifest.json")
    return manifest


def _write_metadata(db: Path, entries: list[Entry]) -> None:
    db.unlink(missing_ok=True)
    con = sqlite3.connect(db)
    with con:
        con.execute(
            "CREATE TABLE entries (row INTEGER PRIMARY KEY, identity TEXT NOT NULL, photo TEXT NOT NULL,"
            " url TEXT NOT NULL, licence TEXT NOT NULL, box TEXT)"
        )
        con.executemany(
            "INSERT INTO entries VALUES (?, ?, ?, ?, ?, ?)",
            (
                (i, e.identity, e.photo, e.url, e.licence, json.dumps(list(e.box)) if e.box else None)
                for i, e in enumerate(entries)
            ),
        )
        con.execute("CREATE INDEX entries_identity ON entries (identity)")
    con.close()


def read_manifest(index_dir: Path) -> Manifest:
    path = Path(index_dir) / "manifest.json"
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError as e:
        raise IndexStoreError(f"{path} does not exist: build the index first (megapixels index build)") from e
    except json.JSONDecodeError as e:
        raise IndexStoreError(f"{path} is not valid JSON: {e}") from e
    if manifest.get("format_version") != FORMAT_VERSION:
        raise IndexStoreError(
            f"{path}: format version {manifest.get('format_version')!r}, expected {FORMAT_VERSION}: rebuild the index"
        )
    return Manifest.from_json(manifest, path)


def open_shard(index_dir: Path, k: int, verify: bool = True) -> tuple[np.ndarray, int]:
    """Shard ``k`` memory-mapped (on-disk dtype), and the global row number of its first row.

    A shard whose size, shape or dtype disagrees with the manifest is refused naming the file;
    with ``verify`` its sha256 is checked too (one sequential read: ~1 s per GB).
    """
    manifest = read_manifest(index_dir)
    shards = manifest.shards
    if not 0 <= k < len(shards):
        raise IndexStoreError(f"{index_dir} has {len(shards)} shards, there is no shard {k}")
    info = shards[k]
    path = Path(index_dir) / info.file
    if not path.exists():
        raise IndexStoreError(f"{path}: shard file is missing")
    if path.stat().st_size != info.bytes:
        raise IndexStoreError(f"{path}: {path.stat().st_size} bytes, manifest says {info.bytes} (truncated?)")
    try:
        array = np.load(path, mmap_mode="r")
    except (OSError, ValueError) as e:
        raise IndexStoreError(f"{path}: unreadable or truncated shard ({e})") from e
    want = (info.stop - info.start, manifest.dim)
    if array.shape != want or array.dtype != np.dtype(_NP[manifest.dtype]):
        raise IndexStoreError(f"{path}: shape {array.shape} {array.dtype}, manifest says {want} {manifest.dtype}")
    if verify and _sha256(path) != info.sha256:
        raise IndexStoreError(f"{path}: checksum differs from the manifest (corrupt shard): rebuild the index")
    return array, info.start


class Metadata:
    """Row -> identity, photo, URL, licence and box, read from meta.sqlite (read-only)."""

    def __init__(self, index_dir: Path):
        path = Path(index_dir) / "meta.sqlite"
        if not path.exists():
            raise IndexStoreError(f"{path} does not exist")
        synthetic = read_manifest(index_dir).synthetic
        self._synthetic = (synthetic.start, synthetic.stop) if synthetic else (-1, -1)
        self._per_identity = synthetic.photos_per_identity if synthetic else 1
        self._con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)

    def is_synthetic(self, row: int) -> bool:
        return self._synthetic[0] <= row < self._synthetic[1]

    def lookup(self, rows: list[int]) -> dict[int, Entry]:
        found: dict[int, Entry] = {}
        real = []
        for r in rows:
            if self.is_synthetic(r):
                number = (r - self._synthetic[0]) // self._per_identity
                found[r] = Entry(f"synthetic-{number}", "", None, synthetic=True)
            else:
                real.append(r)
        if real:
            marks = ",".join("?" * len(real))
            cur = self._con.execute(
                f"SELECT row, identity, photo, url, licence, box FROM entries WHERE row IN ({marks})", real
            )
            for r, identity, photo, url, licence, box in cur:
                found[r] = Entry(identity, photo, tuple(json.loads(box)) if box else None, url, licence)
        return found

    def close(self) -> None:
        self._con.close()


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()
