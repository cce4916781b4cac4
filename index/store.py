"""The on-disk gallery index: a manifest, N descriptor shards and a metadata database.

Layout of an index folder::

    manifest.json       format version, dim, dtype, count, shards (file, rows, bytes, sha256),
                        build parameters, dataset provenance, the synthetic row range
    shard_000.npy ...   descriptors in the build's dtype, one .npy per shard (memory-mapped)
    meta.sqlite         one row per real descriptor: identity, source photo, URL, licence, face box,
                        and where the dataset gives them the Flickr account (NSID), photo id and
                        date taken; indexed on identity, nsid and photo_id (:class:`Metadata`)
    build_report.json   what the build did and every file it rejected, with the reason
    build_journal.jsonl every photo's outcome by content key, for the next build (index/journal.py)
    calibration.json    distance -> P(same person) (index/calibration.py)
    shard_NNN.codes.npy int8 codes of shard NNN's rows and ``shard_NNN.bounds.npy`` each row's
    shard_NNN.bounds.npy quantisation error bound (float32), listed under the manifest's ``codes``
                        key: what the ``bounded`` search kernel scans (index/bounded.py); optional
                        (an index without them is searched by the other kernels; ``megapixels index
                        add-codes`` adds them to an existing index)
    removals.jsonl      opt-outs: what was asked (account, identity or photo), when, and the rows it
                        removed; the one file that changes after the index is published (replaced
                        by rename, under ``.<name>.removals.lock``); honoured by every reader
                        without a restart, carried into the next build or compaction
                        (index/removals.py, index/optout.py)

Every part is checked where it is opened, and a problem raises :class:`IndexStoreError` naming
the file and what is wrong: the manifest key by key (:func:`manifest_problems`), each shard's
size, shape, dtype and sha256 (:func:`open_shard`), the metadata's integrity, table, columns and
row count, and the indexes the lookups by account and photo need (:class:`Metadata`); :func:`verify`
opens all of them. An index built before the account columns existed (no ``nsid``, ``photo_id``,
``date_taken``) still opens and answers searches, with empty provenance; looking photos up by
account in it raises :class:`IndexStoreError` saying to rebuild. The matchers and the reducer
refuse to start with that message. A build's staging folder (``.<name>.building``) is refused
as an index even when complete: it becomes one only by the build's atomic rename (index/publish.py).
Files are never rewritten in place (a running matcher may have them memory-mapped): a new file
replaces an old one by unlink or rename. Rows listed in removals.jsonl stay in the shards and the
metadata until ``megapixels index compact`` writes the index again without them; until then
every reader masks them (index/removals.py).

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

import dataclasses
import hashlib
import json
import os
import sqlite3
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from messages import DIM

FORMAT_VERSION = 2
DTYPES = ("float32", "float16", "int8")
CODES_KIND = "int8-global-scale+bounds"
STAGING_SUFFIX = ".building"  # a build writes ``.<out>.building`` beside its --out (index/publish.py)


class IndexStoreError(RuntimeError):
    """An index folder that can't be used; the text names the file."""


@dataclass(frozen=True)
class Entry:
    """One row's metadata. The provenance fields are "" where the dataset does not give them."""

    identity: str
    photo: str  # path relative to the dataset root ("" for synthetic rows)
    box: tuple[int, int, int, int] | None
    url: str = ""
    licence: str = ""
    synthetic: bool = False
    nsid: str = ""  # the Flickr account (MegaFace's identity folder, or a CSV column)
    photo_id: str = ""  # the Flickr photo id
    date_taken: str = ""  # as the dataset gives it (flickr_metadata.csv: YYYY-MM-DD)


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
    fitted_on: dict[str, Any] | str
    note: str = "synthetic distractor descriptors for measuring scale: no photo, no person"


@dataclass(frozen=True)
class CodeFiles:
    """One shard's codes and bounds files (index/bounded.py), with their sha256."""

    codes: str
    codes_sha256: str
    bounds: str
    bounds_sha256: str
    max_bound: float


@dataclass(frozen=True)
class CodesInfo:
    """The manifest's ``codes``: int8 codes with one global scale and a per-dimension offset."""

    scale: float
    offset: tuple[float, ...]
    shards: tuple[CodeFiles, ...]
    kind: str = CODES_KIND


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
    codes: CodesInfo | None = None  # absent in indexes written before the bounded kernel

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
        """The manifest in ``data``; IndexStoreError naming every missing or wrong key."""
        problems = manifest_problems(data)
        if problems:
            raise IndexStoreError(f"{where}: not a usable index manifest: {'; '.join(problems)}: rebuild the index")
        synthetic = data.get("synthetic")
        scale, offset = data.get("int8_scale"), data.get("int8_offset")
        return cls(
            dim=data["dim"],
            dtype=data["dtype"],
            count=data["count"],
            real=data["real"],
            identities=data["identities"],
            shards=tuple(ShardInfo(**{f: s[f] for f in _SHARD_KEYS}) for s in data["shards"]),
            build_parameters=dict(data.get("build_parameters") or {}),
            provenance=dict(data.get("provenance") or {}),
            int8_scale=tuple(float(v) for v in scale) if scale is not None else None,
            int8_offset=tuple(float(v) for v in offset) if offset is not None else None,
            synthetic=SyntheticInfo(**{f: synthetic[f] for f in _SYNTHETIC_KEYS if f in synthetic})
            if synthetic
            else None,
            format_version=data["format_version"],
            codes=_codes_from_json(data["codes"]) if data.get("codes") is not None else None,
        )


def _codes_from_json(codes: dict[str, Any]) -> CodesInfo:
    return CodesInfo(
        scale=float(codes["scale"]),
        offset=tuple(float(v) for v in codes["offset"]),
        shards=tuple(CodeFiles(**{f: s[f] for f in _CODE_FILE_KEYS}) for s in codes["shards"]),
        kind=codes["kind"],
    )


_SHARD_KEYS = ("file", "start", "stop", "bytes", "sha256")
_CODE_FILE_KEYS = ("codes", "codes_sha256", "bounds", "bounds_sha256", "max_bound")
_SYNTHETIC_KEYS = ("start", "stop", "seed", "model_file", "photos_per_identity", "fitted_on", "note")


def _kind(value: Any) -> str:
    return (
        "null"
        if value is None
        else {"bool": "boolean", "str": "string", "dict": "object", "list": "list"}.get(
            type(value).__name__, type(value).__name__
        )
    )


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return (_is_int(value) or isinstance(value, float)) and np.isfinite(value)


def _plain_file(name: Any) -> bool:
    return isinstance(name, str) and name not in ("", ".", "..") and "/" not in name and "\\" not in name


def manifest_problems(data: Any) -> list[str]:
    """Everything wrong with a parsed manifest.json, each naming its key; [] when it is usable."""
    if not isinstance(data, dict):
        return [f"the file must hold a JSON object, not a {_kind(data)}"]
    problems: list[str] = []

    def need(obj: dict, key: str, ok: Any, what: str, prefix: str = "", optional: bool = False) -> Any:
        if key not in obj:
            if not optional:
                problems.append(f"key '{prefix}{key}' is missing")
            return None
        value = obj[key]
        if not ok(value):
            problems.append(f"key '{prefix}{key}' must be {what}, got {_kind(value)} {json.dumps(value)[:40]}")
            return None
        return value

    need(data, "dim", lambda v: v == DIM and _is_int(v), f"the integer {DIM}")
    dtype = need(data, "dtype", lambda v: v in DTYPES, f"one of {', '.join(DTYPES)}")
    count = need(data, "count", lambda v: _is_int(v) and v >= 0, "an integer >= 0")
    real = need(data, "real", lambda v: _is_int(v) and v >= 0, "an integer >= 0")
    if count is not None and real is not None and real > count:
        problems.append(f"key 'real' ({real}) must not exceed 'count' ({count})")
    need(data, "identities", lambda v: _is_int(v) and v >= 0, "an integer >= 0")
    need(data, "build_parameters", lambda v: isinstance(v, dict), "an object", optional=True)
    need(data, "provenance", lambda v: isinstance(v, dict), "an object", optional=True)
    shards = need(data, "shards", lambda v: isinstance(v, list) and v, "a non-empty list of shards")
    for i, shard in enumerate(shards or []):
        where = f"shards[{i}]."
        if not isinstance(shard, dict):
            problems.append(f"key 'shards[{i}]' must be an object, got {_kind(shard)}")
            continue
        need(shard, "file", _plain_file, "a file name inside the index folder", where)
        start = need(shard, "start", lambda v: _is_int(v) and v >= 0, "an integer >= 0", where)
        stop = need(shard, "stop", lambda v: _is_int(v) and v >= 0, "an integer >= 0", where)
        need(shard, "bytes", lambda v: _is_int(v) and v >= 0, "an integer >= 0", where)
        need(shard, "sha256", _is_sha256, "64 hexadecimal digits", where)
        expected_start = 0 if i == 0 else (shards[i - 1].get("stop") if isinstance(shards[i - 1], dict) else None)
        if start is not None and _is_int(expected_start) and start != expected_start:
            problems.append(f"key '{where}start' is {start}, the rows must continue at {expected_start}")
        if start is not None and stop is not None and stop < start:
            problems.append(f"key '{where}stop' ({stop}) is before its start ({start})")
    if shards and count is not None and isinstance(shards[-1], dict) and shards[-1].get("stop") != count:
        problems.append(f"key 'shards[{len(shards) - 1}].stop' must equal 'count' ({count})")
    vector = lambda v: isinstance(v, list) and len(v) == DIM and all(_is_number(x) for x in v)  # noqa: E731
    int8 = dtype == "int8"
    scale = need(data, "int8_scale", vector, f"a list of {DIM} numbers", optional=not int8)
    need(data, "int8_offset", vector, f"a list of {DIM} numbers", optional=not int8)
    if int8 and scale is not None and min(scale) <= 0:
        problems.append("key 'int8_scale' must hold positive numbers")
    synthetic = need(data, "synthetic", lambda v: isinstance(v, dict), "an object", optional=True)
    if synthetic is not None:
        where = "synthetic."
        start = need(synthetic, "start", _is_int, "an integer", where)
        stop = need(synthetic, "stop", _is_int, "an integer", where)
        need(synthetic, "seed", _is_int, "an integer", where)
        need(synthetic, "model_file", _plain_file, "a file name inside the index folder", where)
        need(synthetic, "photos_per_identity", lambda v: _is_int(v) and v >= 1, "an integer >= 1", where)
        need(synthetic, "fitted_on", lambda v: isinstance(v, str | dict), "a text or an object", where)
        need(synthetic, "note", lambda v: isinstance(v, str), "a string", where, optional=True)
        if start is not None and real is not None and start != real:
            problems.append(f"key 'synthetic.start' ({start}) must equal 'real' ({real})")
        if stop is not None and count is not None and stop != count:
            problems.append(f"key 'synthetic.stop' ({stop}) must equal 'count' ({count})")
    elif count is not None and real is not None and real != count:
        problems.append(f"key 'real' ({real}) must equal 'count' ({count}) in an index without synthetic rows")
    codes = need(data, "codes", lambda v: isinstance(v, dict), "an object", optional=True)
    if codes is not None:
        need(codes, "kind", lambda v: v == CODES_KIND, f"the text {CODES_KIND!r}", "codes.")
        need(codes, "scale", lambda v: _is_number(v) and v > 0, "a number > 0", "codes.")
        need(codes, "offset", vector, f"a list of {DIM} numbers", "codes.")
        files = need(codes, "shards", lambda v: isinstance(v, list), "a list, one entry per shard", "codes.")
        if files is not None and isinstance(shards, list) and len(files) != len(shards):
            problems.append(f"key 'codes.shards' has {len(files)} entries, the index has {len(shards)} shards")
        for i, entry in enumerate(files or []):
            where = f"codes.shards[{i}]."
            if not isinstance(entry, dict):
                problems.append(f"key 'codes.shards[{i}]' must be an object, got {_kind(entry)}")
                continue
            for name in ("codes", "bounds"):
                need(entry, name, _plain_file, "a file name inside the index folder", where)
                need(entry, f"{name}_sha256", _is_sha256, "64 hexadecimal digits", where)
            need(entry, "max_bound", lambda v: _is_number(v) and v >= 0, "a number >= 0", where)
    return problems


def _is_sha256(value: Any) -> bool:
    return isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value)


def int8_codec(descriptors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-dimension (scale, offset) so that x ~= code * scale + offset with code in -127..127."""
    return int8_codec_of_range(descriptors.min(axis=0), descriptors.max(axis=0))


def int8_codec_of_range(lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`int8_codec` from each dimension's minimum and maximum (gathered block by block)."""
    lo, hi = np.asarray(lo, np.float64), np.asarray(hi, np.float64)
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
        # A new file, never the old one rewritten: a matcher may have the old one memory-mapped
        # (rewriting it in place kills that matcher with SIGBUS); unlinked, it lives on for it.
        path.unlink(missing_ok=True)
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
    codes: bool = True,
) -> Manifest:
    """Write a complete index into ``out`` (created) and return its manifest.

    ``descriptors`` are the real entries' rows. ``synthetic``, when given, appends synthetic rows:
    ``{"count": n, "seed": s, "model": DistractorModel, "model_file": name}``; they are generated
    chunk by chunk straight into the shard files, so a 4.2M index needs no 4.2M x 128 temporary.
    """
    if len(descriptors) != len(entries):
        raise ValueError(f"{len(descriptors)} descriptors for {len(entries)} entries")
    rows = np.asarray(descriptors, np.float32)
    return write_blocks(
        out,
        lambda: iter([(rows, list(entries))]),
        len(entries),
        n_shards,
        provenance,
        dtype,
        synthetic,
        build_parameters,
        codes,
    )


Blocks = Callable[[], Iterator[tuple[np.ndarray, list[Entry]]]]


def write_blocks(
    out: Path,
    blocks: Blocks,
    n_real: int,
    n_shards: int,
    provenance: dict[str, Any],
    dtype: str = "float32",
    synthetic: dict[str, Any] | None = None,
    build_parameters: dict[str, Any] | None = None,
    codes: bool = True,
) -> Manifest:
    """:func:`write` from the real rows in blocks, never all in memory (a 4.2M-photo build).

    ``blocks()`` gives the ``n_real`` real rows in row order as (descriptors, entries) blocks; it
    is called once, or twice for ``int8`` (each dimension's range first). The shards and the
    metadata are written in the same pass; only the set of identity names is kept meanwhile.
    """
    from index import synthetic as synth

    if dtype not in DTYPES:
        raise ValueError(f"dtype {dtype!r}: allowed {', '.join(DTYPES)}")
    n_synth = int(synthetic["count"]) if synthetic else 0
    count = n_real + n_synth
    out.mkdir(parents=True, exist_ok=True)
    (out / "manifest.json").unlink(missing_ok=True)  # an index without a manifest is an unfinished one
    codec = RowCodec(dtype)
    if dtype == "int8":
        lo, hi = np.full(DIM, np.inf), np.full(DIM, -np.inf)
        for rows, _ in blocks():
            if len(rows):
                lo, hi = np.minimum(lo, rows.min(axis=0)), np.maximum(hi, rows.max(axis=0))
        if n_synth:
            sample = synth.generate(synthetic["model"], min(n_synth, 100_000), synthetic["seed"])
            lo, hi = np.minimum(lo, sample.min(axis=0)), np.maximum(hi, sample.max(axis=0))
        scale, offset = int8_codec_of_range(lo, hi)
        codec = RowCodec(dtype, tuple(scale.tolist()), tuple(offset.tolist()))
    sink = _ShardSink(out, split(count, n_shards), dtype)
    identities: set[str] = set()
    written = 0

    def entries_while_writing_rows() -> Iterator[Entry]:
        nonlocal written
        for rows, block in blocks():
            if len(rows) != len(block):
                raise ValueError(f"{len(rows)} descriptors for {len(block)} entries")
            sink.add(encode_rows(rows, codec))
            written += len(block)
            for entry in block:
                identities.add(entry.identity)
                yield entry

    _write_metadata(out / "meta.sqlite", entries_while_writing_rows())
    if written != n_real:
        raise ValueError(f"{written} real rows written, {n_real} expected")
    for at in range(n_real, count, 262_144):
        block = synth.generate(synthetic["model"], min(262_144, count - at), synthetic["seed"], start=at - n_real)
        sink.add(encode_rows(block, codec))
    shards = sink.close()
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
        identities=len(identities),
        shards=tuple(shards),
        build_parameters=build_parameters or {},
        provenance=provenance,
        int8_scale=codec.int8_scale,
        int8_offset=codec.int8_offset,
        synthetic=synthetic_info,
    )
    if codes:
        manifest = dataclasses.replace(manifest, codes=write_codes(out, manifest))
    write_manifest(out, manifest)
    return manifest


class _ShardSink:
    """Rows in row order, cut into the shards' files as they arrive."""

    def __init__(self, out: Path, bounds: list[tuple[int, int]], dtype: str):
        self.out, self.bounds, self.dtype = out, bounds, dtype
        self.done: list[ShardInfo] = []
        self.writer: ShardWriter | None = None
        self._open_next()

    def _open_next(self) -> None:
        k = len(self.done)
        start, stop = self.bounds[k]
        self.writer = ShardWriter(self.out / f"shard_{k:03d}.npy", stop - start, self.dtype)

    def add(self, encoded: np.ndarray) -> None:
        while len(encoded):
            assert self.writer is not None
            room = len(self.writer.array) - self.writer.at
            if room == 0:
                self._finish()
                continue
            self.writer.add(encoded[:room])
            encoded = encoded[room:]

    def _finish(self) -> None:
        assert self.writer is not None
        start, stop = self.bounds[len(self.done)]
        self.done.append(ShardInfo(start=start, stop=stop, **self.writer.close()))
        self.writer = None
        if len(self.done) < len(self.bounds):
            self._open_next()

    def close(self) -> list[ShardInfo]:
        while self.writer is not None:
            self._finish()  # the last shard (ShardWriter.close checks it is full)
        return self.done


def _write_metadata(db: Path, entries: Iterable[Entry]) -> None:
    with MetadataWriter(db) as writer:
        writer.add(entries)


class MetadataWriter:
    """Writes meta.sqlite row by row (rows numbered from 0 in the order added); the indexes are
    made once at :meth:`close`, after the rows, which is several times faster than keeping them
    up to date row by row. A new file replaces any old one (never rewritten in place)."""

    def __init__(self, db: Path):
        self.path = Path(db)
        self.path.unlink(missing_ok=True)
        self.rows = 0
        self._con = sqlite3.connect(self.path)
        # a staging file, deleted and written again by a build that restarts: no rollback journal needed
        self._con.execute("PRAGMA journal_mode = OFF")
        self._con.execute("PRAGMA synchronous = OFF")
        self._con.execute(
            "CREATE TABLE entries (row INTEGER PRIMARY KEY, identity TEXT NOT NULL, photo TEXT NOT NULL,"
            " url TEXT NOT NULL, licence TEXT NOT NULL, box TEXT,"
            " nsid TEXT NOT NULL, photo_id TEXT NOT NULL, date_taken TEXT NOT NULL)"
        )

    def add(self, entries: Iterable[Entry]) -> None:
        """Append ``entries`` (any iterable: a chunk, a generator) as the next rows."""

        def rows() -> Iterator[tuple]:
            for e in entries:
                box = json.dumps([int(v) for v in e.box]) if e.box else None
                yield (self.rows, e.identity, e.photo, e.url, e.licence, box, e.nsid, e.photo_id, e.date_taken)
                self.rows += 1

        with self._con:
            self._con.executemany("INSERT INTO entries VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows())

    def close(self) -> None:
        with self._con:
            for column in INDEXED_COLUMNS:
                self._con.execute(f"CREATE INDEX entries_{column} ON entries ({column})")
        self._con.close()

    def __enter__(self) -> MetadataWriter:
        return self

    def __exit__(self, kind: object, *_: object) -> None:
        if kind is None:
            self.close()
        else:
            self._con.close()


def unfinished(index_dir: Path) -> bool:
    """A build's staging folder (``.<name>.building``, index/publish.py): never an index, even when complete."""
    return Path(os.path.abspath(index_dir)).name.endswith(STAGING_SUFFIX)


def read_manifest(index_dir: Path, staged: bool = False) -> Manifest:
    """The index's manifest, checked key by key (IndexStoreError names the file and each bad key).

    A build's staging folder is refused (``staged=True`` only for the build's own check before it
    publishes the folder).
    """
    path = Path(index_dir) / "manifest.json"
    if unfinished(index_dir) and not staged:
        raise IndexStoreError(
            f"{index_dir} is the staging folder of an unfinished build, not an index: use the build's --out folder"
        )
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError as e:
        raise IndexStoreError(f"{path} does not exist: build the index first (megapixels index build)") from e
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise IndexStoreError(f"{path} is not valid JSON: {e}") from e
    except OSError as e:
        raise IndexStoreError(f"{path} can't be read: {e.strerror or e}") from e
    version = manifest.get("format_version") if isinstance(manifest, dict) else None
    if version != FORMAT_VERSION:
        raise IndexStoreError(
            f"{path}: key 'format_version' is {version!r}, expected {FORMAT_VERSION}: rebuild the index"
        )
    return Manifest.from_json(manifest, path)


def open_shard(
    index_dir: Path, k: int, verify: bool = True, manifest: Manifest | None = None
) -> tuple[np.ndarray, int]:
    """Shard ``k`` memory-mapped (on-disk dtype), and the global row number of its first row.

    A shard whose size, shape or dtype disagrees with the manifest is refused naming the file;
    with ``verify`` its sha256 is checked too (one sequential read: ~1 s per GB). ``manifest``:
    the folder's manifest when the caller has read it already.
    """
    manifest = manifest or read_manifest(index_dir)
    shards = manifest.shards
    if not 0 <= k < len(shards):
        raise IndexStoreError(f"{index_dir} has {len(shards)} shards, there is no shard {k}")
    info = shards[k]
    path = Path(index_dir) / info.file
    if not path.is_file():
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


CODES_BLOCK_ROWS = 262_144  # rows coded at a time (a 128 MiB float32 block)


def write_codes(index_dir: Path, manifest: Manifest) -> CodesInfo:
    """Write every shard's codes and bounds (index/bounded.py) beside its rows and return what the
    manifest lists under ``codes``. Two reads of the shards: each dimension's range, then the codes.
    New files replace old ones (unlinked, never rewritten: a matcher may have them mapped)."""
    from index import bounded

    index_dir = Path(index_dir)
    lo, hi = np.full(DIM, np.inf), np.full(DIM, -np.inf)
    for block in _decoded_blocks(index_dir, manifest, range(len(manifest.shards))):
        if len(block):
            lo, hi = np.minimum(lo, block.min(axis=0)), np.maximum(hi, block.max(axis=0))
    if not np.isfinite(lo).all():
        lo, hi = np.zeros(DIM), np.zeros(DIM)
    params = bounded.CodeParams.of_range(lo, hi)
    files = []
    for k, info in enumerate(manifest.shards):
        stem = Path(info.file).name.removesuffix(".npy")
        names = (f"{stem}.codes.npy", f"{stem}.bounds.npy")
        for name in names:
            (index_dir / name).unlink(missing_ok=True)
        rows = info.stop - info.start
        codes = np.lib.format.open_memmap(index_dir / names[0], mode="w+", dtype="i1", shape=(rows, DIM))
        bounds = np.lib.format.open_memmap(index_dir / names[1], mode="w+", dtype="<f4", shape=(rows,))
        at, max_bound = 0, 0.0
        for block in _decoded_blocks(index_dir, manifest, [k]):
            c, b = bounded.encode(block, params)
            codes[at : at + len(block)], bounds[at : at + len(block)] = c, b
            max_bound = max(max_bound, float(b.max()) if len(b) else 0.0)
            at += len(block)
        codes.flush()
        bounds.flush()
        del codes, bounds
        files.append(
            CodeFiles(names[0], _sha256(index_dir / names[0]), names[1], _sha256(index_dir / names[1]), max_bound)
        )
    return CodesInfo(params.scale, tuple(params.offset.tolist()), tuple(files))


def _decoded_blocks(index_dir: Path, manifest: Manifest, shards: Iterable[int]) -> Iterator[np.ndarray]:
    for k in shards:
        stored, _ = open_shard(index_dir, k, verify=False, manifest=manifest)
        for at in range(0, len(stored), CODES_BLOCK_ROWS):
            yield decode_rows(np.asarray(stored[at : at + CODES_BLOCK_ROWS]), manifest.codec)
        del stored


def write_manifest(index_dir: Path, manifest: Manifest) -> None:
    """manifest.json replaced by rename (never rewritten in place)."""
    tmp = Path(index_dir) / "manifest.json.tmp"
    tmp.write_text(json.dumps(manifest.to_json(), indent=2))
    os.replace(tmp, Path(index_dir) / "manifest.json")


def open_codes(index_dir: Path, k: int, manifest: Manifest, verify: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Shard ``k``'s codes (int8, rows x 128) and bounds (float32), memory-mapped, each checked
    against the manifest (present, shape, dtype, sha256): IndexStoreError names the file."""
    if manifest.codes is None:
        raise IndexStoreError(f"{index_dir}: the index has no codes: run megapixels index add-codes {index_dir}")
    info, files = manifest.shards[k], manifest.codes.shards[k]
    rows = info.stop - info.start
    out = []
    for name, sha, shape, dtype in (
        (files.codes, files.codes_sha256, (rows, DIM), np.dtype("i1")),
        (files.bounds, files.bounds_sha256, (rows,), np.dtype("<f4")),
    ):
        path = Path(index_dir) / name
        if not path.is_file():
            raise IndexStoreError(f"{path}: codes file is missing: run megapixels index add-codes {index_dir}")
        try:
            array = np.load(path, mmap_mode="r")
        except (OSError, ValueError) as e:
            raise IndexStoreError(f"{path}: unreadable or truncated codes file ({e})") from e
        if array.shape != shape or array.dtype != dtype:
            raise IndexStoreError(f"{path}: shape {array.shape} {array.dtype}, expected {shape} {dtype}")
        if verify and _sha256(path) != sha:
            raise IndexStoreError(f"{path}: checksum differs from the manifest: run megapixels index add-codes again")
        out.append(array)
    return out[0], out[1]


def add_codes(index_dir: Path) -> Manifest:
    """Give an existing index its codes (no rebuild): write them, then the manifest listing them."""
    manifest = verify(index_dir)
    manifest = dataclasses.replace(manifest, codes=write_codes(index_dir, manifest))
    for k in range(len(manifest.shards)):
        open_codes(index_dir, k, manifest)
    write_manifest(index_dir, manifest)
    return manifest


def verify(index_dir: Path, staged: bool = False) -> Manifest:
    """Open every part of an index as the matchers and the reducer do: the manifest, every shard
    (size, shape, dtype, sha256) and the metadata (integrity, table, row count). IndexStoreError
    names the first file that is wrong."""
    manifest = read_manifest(index_dir, staged=staged)
    for k in range(len(manifest.shards)):
        array, _ = open_shard(index_dir, k, verify=True, manifest=manifest)
        del array
        if manifest.codes is not None:
            open_codes(index_dir, k, manifest)  # present, shape, dtype, sha256
    Metadata(index_dir, manifest).close()
    return manifest


META_COLUMNS = ("row", "identity", "photo", "url", "licence", "box")
PROVENANCE_COLUMNS = ("nsid", "photo_id", "date_taken")  # absent in indexes built before them: empty
INDEXED_COLUMNS = ("identity", "nsid", "photo_id")  # the lookups by account and photo need the last two


class Metadata:
    """Row -> identity, photo, URL, licence, box and provenance, read from meta.sqlite (read-only);
    the rows of a Flickr account (:meth:`photos_of_account`) or photo id (:meth:`photo`).

    Checked at open: an SQLite database that passes ``PRAGMA quick_check``, with an ``entries``
    table of the expected columns and exactly the manifest's real rows, numbered from 0; the
    provenance columns all present with their indexes, or (an index built before them) all absent:
    then ``has_provenance`` is false, entries carry none, and the lookups by account refuse.
    """

    def __init__(self, index_dir: Path, manifest: Manifest | None = None):
        path = Path(index_dir) / "meta.sqlite"
        if not path.is_file():
            raise IndexStoreError(f"{path} does not exist: rebuild the index")
        manifest = manifest or read_manifest(index_dir)
        synthetic = manifest.synthetic
        self.path = path
        self.has_provenance = False
        self._synthetic = (synthetic.start, synthetic.stop) if synthetic else (-1, -1)
        self._per_identity = synthetic.photos_per_identity if synthetic else 1
        self._con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
        try:
            self._check(manifest)
        except sqlite3.Error as e:
            self._con.close()
            raise IndexStoreError(f"{path}: not a usable SQLite database ({e}): rebuild the index") from e
        except IndexStoreError:
            self._con.close()
            raise
        self._columns = ", ".join(META_COLUMNS + (PROVENANCE_COLUMNS if self.has_provenance else ()))

    def _check(self, manifest: Manifest) -> None:
        found = [row[0] for row in self._con.execute("PRAGMA quick_check(5)")]
        if found != ["ok"]:
            raise IndexStoreError(f"{self.path}: damaged database ({'; '.join(map(str, found))}): rebuild the index")
        columns = {row[1] for row in self._con.execute("PRAGMA table_info(entries)")}
        if not columns:
            raise IndexStoreError(f"{self.path}: has no 'entries' table: rebuild the index")
        if missing := [c for c in META_COLUMNS if c not in columns]:
            raise IndexStoreError(f"{self.path}: table 'entries' lacks the columns {', '.join(missing)}: rebuild")
        provenance = [c for c in PROVENANCE_COLUMNS if c in columns]
        if provenance and len(provenance) < len(PROVENANCE_COLUMNS):
            missing = [c for c in PROVENANCE_COLUMNS if c not in columns]
            raise IndexStoreError(f"{self.path}: table 'entries' lacks the columns {', '.join(missing)}: rebuild")
        self.has_provenance = bool(provenance)
        if self.has_provenance:
            indexed = {
                info[2]
                for (_, name, *_rest) in self._con.execute("PRAGMA index_list(entries)")
                for info in self._con.execute(f"PRAGMA index_info({_quoted(name)})").fetchall()[:1]
            }
            if missing := [c for c in INDEXED_COLUMNS if c not in indexed]:
                raise IndexStoreError(
                    f"{self.path}: table 'entries' has no index on {', '.join(missing)} "
                    "(looking photos up by account would read every row): rebuild the index"
                )
        n, low, high = self._con.execute("SELECT COUNT(*), MIN(row), MAX(row) FROM entries").fetchone()
        if n != manifest.real:
            raise IndexStoreError(
                f"{self.path}: table 'entries' has {n} rows, manifest.json says {manifest.real} real rows: "
                "rebuild the index"
            )
        if n and (low, high) != (0, n - 1):
            raise IndexStoreError(f"{self.path}: rows must be numbered 0..{n - 1}, found {low}..{high}: rebuild")

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
            found.update(self._select(f"row IN ({marks})", real, f"rows {real}"))
        return found

    def photos_of_account(self, nsid: str, limit: int | None = None) -> list[tuple[int, Entry]]:
        """``(row, entry)`` of the Flickr account's photos, in row order (at most ``limit``)."""
        self._need_provenance()
        if not nsid:
            return []  # "" is every row without an account, not an account
        return self._select("nsid = ? ORDER BY row" + (f" LIMIT {int(limit)}" if limit is not None else ""), [nsid])

    def has_accounts(self) -> bool:
        """Whether any row has a Flickr account or photo id (an index of an LFW-style folder has none);
        two probes of the indexes."""
        if not self.has_provenance:
            return False
        probe = "SELECT 1 FROM entries WHERE {} > '' LIMIT 1"
        return any(self._con.execute(probe.format(c)).fetchone() for c in ("nsid", "photo_id"))

    def rows_of_account(self, nsid: str) -> list[int]:
        """The rows of the Flickr account, in row order: read from the nsid index alone (it holds
        each row's number), so an account's rows cost one range of the index, not their entries."""
        self._need_provenance()
        if not nsid:
            return []
        try:
            return [r for (r,) in self._con.execute("SELECT row FROM entries WHERE nsid = ? ORDER BY row", [nsid])]
        except sqlite3.Error as e:
            raise IndexStoreError(f"{self.path}: the rows of an account can't be read ({e})") from e

    def count_of_account(self, nsid: str) -> int:
        """How many rows the Flickr account has."""
        self._need_provenance()
        if not nsid:
            return 0
        return self._con.execute("SELECT COUNT(*) FROM entries WHERE nsid = ?", [nsid]).fetchone()[0]

    def photo(self, photo_id: str) -> list[tuple[int, Entry]]:
        """``(row, entry)`` of the Flickr photo (one per face indexed from it), in row order."""
        self._need_provenance()
        if not photo_id:
            return []
        return self._select("photo_id = ? ORDER BY row", [photo_id])

    def _need_provenance(self) -> None:
        if not self.has_provenance:
            raise IndexStoreError(
                f"{self.path}: this index was built before Flickr accounts and photo ids were stored: "
                "rebuild it (megapixels index build) to look photos up by account"
            )

    def _select(self, where: str, args: list, what: str = "the rows asked for") -> list[tuple[int, Entry]]:
        try:
            cur = self._con.execute(f"SELECT {self._columns} FROM entries WHERE {where}", args)
            return [
                (r, Entry(identity, photo, tuple(json.loads(box)) if box else None, url, licence, False, *more))
                for r, identity, photo, url, licence, box, *more in cur
            ]
        except (sqlite3.Error, ValueError, TypeError) as e:
            raise IndexStoreError(f"{self.path}: {what} can't be read ({e})") from e

    def close(self) -> None:
        self._con.close()


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()
