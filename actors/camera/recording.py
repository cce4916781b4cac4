"""The recording file: what the recorder writes and the camera's replay reads.

A file starts with the 8-byte magic ``MPREC01\\n``; then one record per message, each a 4-byte
little-endian length followed by that many bytes of msgpack ``[t_ns, [part, part, ...]]``:
the monotonic time the message was made (its header's ``t_ns``) and its multipart frames exactly as they
travelled (``[topic, header, payload]``). Replay decodes the parts through the same validating
codec as the live wire, so a damaged record is reported, never trusted.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import msgpack

MAGIC = b"MPREC01\n"
MAX_RECORD_BYTES = 64 * 1024 * 1024
_LEN = struct.Struct("<I")


class RecordingError(ValueError):
    """A file that is not a recording, or a damaged record in one."""


class Writer:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._f: BinaryIO = open(self.path, "wb")  # noqa: SIM115 (kept open while recording)
        self._f.write(MAGIC)
        self.count = 0

    def write(self, t_ns: int, parts: list[bytes]) -> None:
        record = msgpack.packb([t_ns, [bytes(p) for p in parts]], use_bin_type=True)
        self._f.write(_LEN.pack(len(record)))
        self._f.write(record)
        self.count += 1

    def close(self) -> None:
        self._f.close()


def read(path: str | Path) -> Iterator[tuple[int, list[bytes]]]:
    """Every ``(t_ns, parts)`` record in file order; RecordingError on a damaged file."""
    with open(path, "rb") as f:
        if f.read(len(MAGIC)) != MAGIC:
            raise RecordingError(f"{path} is not a MegaPixels recording (no {MAGIC!r} at the start)")
        n = 0
        while True:
            head = f.read(_LEN.size)
            if not head:
                return
            if len(head) < _LEN.size:
                raise RecordingError(f"{path}: record {n} is cut short (file truncated?)")
            (size,) = _LEN.unpack(head)
            if size > MAX_RECORD_BYTES:
                raise RecordingError(f"{path}: record {n} claims {size} bytes (limit {MAX_RECORD_BYTES})")
            body = f.read(size)
            if len(body) < size:
                raise RecordingError(f"{path}: record {n} is cut short (file truncated?)")
            try:
                t_ns, parts = msgpack.unpackb(body, raw=False)
            except Exception as e:  # msgpack raises several unrelated types
                raise RecordingError(f"{path}: record {n} is not valid msgpack ({e})") from e
            if not isinstance(t_ns, int) or not isinstance(parts, list) or not all(isinstance(p, bytes) for p in parts):
                raise RecordingError(f"{path}: record {n} is not [t_ns, [bytes, ...]]")
            yield t_ns, parts
            n += 1


def is_recording(path: str | Path) -> bool:
    p = Path(path)
    if not p.is_file():
        return False
    with open(p, "rb") as f:
        return f.read(len(MAGIC)) == MAGIC
