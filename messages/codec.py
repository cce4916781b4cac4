"""The one msgpack encode / validating decode path for every message.

Wire form of every message: multipart ``[topic, msgpack map]``, or ``[topic, msgpack map,
payload]`` for types that carry raw bytes (frames, face chips). :func:`decode` checks the
topic, the schema version, every field's type and every size limit, and raises
:class:`DecodeError` with a clear reason; actors count and drop such messages.

Every number on the wire is finite: a NaN or infinite float (a distance, ``p_same``, a rate) or
descriptor component is refused on both sides, by :func:`encode` (:class:`EncodeError`: the
sender counts and drops the message) and by :func:`decode`. JSON has no NaN, and a NaN distance
sorts anywhere in a top k.
"""

from __future__ import annotations

import dataclasses
import math
import struct
import types
import typing
from collections.abc import Collection
from functools import cache
from typing import Any

import msgpack

from messages.schemas import (
    BUTTON_STATES,
    CHIP_PX,
    DIM,
    LIGHTS,
    LIMITS,
    MAX_CREDITS,
    MESSAGE_TYPES,
    SCHEMA_VERSION,
    SESSION_PHASES,
    VERDICTS,
    ButtonStatus,
    Candidates,
    Credit,
    Encoded,
    Faces,
    Frame,
    Header,
    Query,
    Result,
    SessionState,
)

MAX_HEADER_BYTES = 64 * 1024


class DecodeError(ValueError):
    """A message that can't be accepted; the text says why."""


class EncodeError(ValueError):
    """A message that must not be sent (a number that is not finite); the text says why."""


def encode(msg: Any) -> list[bytes]:
    """The multipart frames for ``msg`` (a dataclass from messages.schemas); EncodeError if it holds a NaN or inf."""
    cls = type(msg)
    fields = {f.name: _plain(getattr(msg, f.name)) for f in dataclasses.fields(msg)}
    problem = _not_finite(fields, cls.TOPIC)
    if problem:
        raise EncodeError(problem)
    parts = [cls.TOPIC.encode()]
    payload_name = _payload_field(cls)
    if payload_name:
        payload = fields.pop(payload_name)
        parts.append(msgpack.packb(fields, use_bin_type=True))
        parts.append(bytes(payload) if not isinstance(payload, bytes) else payload)
    else:
        parts.append(msgpack.packb(fields, use_bin_type=True))
    return parts


def _plain(value: Any) -> Any:
    """Nested dataclasses (the header, results) as the maps msgpack packs."""
    if dataclasses.is_dataclass(value):
        return dataclasses.asdict(value)
    if isinstance(value, list) and value and dataclasses.is_dataclass(value[0]):
        return [dataclasses.asdict(v) for v in value]
    return value


def _not_finite(value: Any, where: str) -> str:
    """Where ``value`` (a message's plain fields) holds a NaN or infinite number, else ''."""
    if isinstance(value, float):
        return "" if math.isfinite(value) else f"{where}: {value!r} is not a finite number"
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "descriptor" and isinstance(item, (bytes, bytearray)):
                problem = _descriptor_problem(item, f"{where}.descriptor")
            else:
                problem = _not_finite(item, f"{where}.{key}")
            if problem:
                return problem
    elif isinstance(value, list):
        for i, item in enumerate(value):
            if problem := _not_finite(item, f"{where}[{i}]"):
                return problem
    return ""


def _descriptor_problem(descriptor: bytes, where: str) -> str:
    """Why a descriptor (DIM little-endian float32) can't travel, or '' (a wrong size is decode's to say)."""
    if len(descriptor) != DIM * 4:
        return ""
    bad = sum(not math.isfinite(v) for v in struct.unpack(f"<{DIM}f", descriptor))
    return f"{where}: {bad} of {DIM} components are not finite numbers" if bad else ""


def decode(parts: list[bytes] | list[Any], expect: str | Collection[str] | None = None) -> Any:
    """Parse and validate a multipart message; raises DecodeError on anything wrong.

    ``expect``: the message topic (``Frame.TOPIC``...) that may arrive, or several (both ends of a
    ROUTER/DEALER topic receive more than one kind); None accepts every known one.
    """
    parts = [p.bytes if hasattr(p, "bytes") else p for p in parts]
    if len(parts) < 2:
        raise DecodeError(f"expected at least 2 frames, got {len(parts)}")
    try:
        topic = parts[0].decode()
    except UnicodeDecodeError as e:
        raise DecodeError("topic frame is not UTF-8") from e
    allowed = (expect,) if isinstance(expect, str) else expect
    if allowed is not None and topic not in allowed:
        raise DecodeError(f"expected topic {' or '.join(map(repr, sorted(allowed)))}, got {topic!r}")
    cls = MESSAGE_TYPES.get(topic)
    if cls is None:
        raise DecodeError(f"unknown topic {topic!r}")
    payload_name = _payload_field(cls)
    want = 3 if payload_name else 2
    if len(parts) != want:
        raise DecodeError(f"{topic}: expected {want} frames, got {len(parts)}")
    if len(parts[1]) > MAX_HEADER_BYTES:
        raise DecodeError(f"{topic}: msgpack part of {len(parts[1])} bytes exceeds {MAX_HEADER_BYTES}")
    try:
        body = msgpack.unpackb(parts[1], raw=False, strict_map_key=True)
    except Exception as e:  # msgpack raises several unrelated types
        raise DecodeError(f"{topic}: not valid msgpack ({e.__class__.__name__}: {e})") from e
    if not isinstance(body, dict):
        raise DecodeError(f"{topic}: body is {type(body).__name__}, expected a map")
    if payload_name:
        body[payload_name] = parts[2]
    msg = _build(cls, body, topic)
    _consistency(msg)
    return msg


def _build(cls: type, raw: dict, where: str) -> Any:
    hints = _hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    missing = [n for n in names if n not in raw]
    if missing:
        raise DecodeError(f"{where}: missing field(s) {', '.join(missing)}")
    extra = sorted(set(raw) - set(names), key=str)
    if extra:
        raise DecodeError(f"{where}: unexpected field(s) {', '.join(map(str, extra))}")
    return cls(**{n: _check(raw[n], hints[n], f"{where}.{n}", n) for n in names})


def _consistency(msg: Any) -> None:
    """Checks across fields that the types alone don't catch."""
    where = type(msg).TOPIC
    if isinstance(msg, Frame):
        if not (0 < msg.width_px <= 3840 and 0 < msg.height_px <= 2160):
            raise DecodeError(f"{where}: frame size {msg.width_px}x{msg.height_px} out of range (max 3840x2160)")
        if len(msg.pixels) != msg.width_px * msg.height_px * 3:
            raise DecodeError(f"{where}: {len(msg.pixels)} pixel bytes, expected {msg.width_px}x{msg.height_px}x3")
    elif isinstance(msg, Faces):
        if any(len(b) != 4 for b in msg.boxes):
            raise DecodeError(f"{where}: every box needs 4 numbers [left, top, right, bottom]")
        if not -1 <= msg.visitor < len(msg.boxes):
            raise DecodeError(f"{where}: visitor {msg.visitor} does not index {len(msg.boxes)} boxes")
        want = 0 if msg.visitor < 0 else CHIP_PX * CHIP_PX * 3
        if len(msg.chip) != want:
            raise DecodeError(f"{where}: chip of {len(msg.chip)} bytes, expected {want}")
    elif isinstance(msg, Query):
        if len(msg.descriptor) != DIM * 4:
            raise DecodeError(f"{where}: descriptor of {len(msg.descriptor)} bytes, expected {DIM * 4}")
        if problem := _descriptor_problem(msg.descriptor, f"{where}.descriptor"):
            raise DecodeError(problem)
        if not 1 <= msg.k <= 100:
            raise DecodeError(f"{where}: k={msg.k} out of range 1..100")
    elif isinstance(msg, Credit):
        if not 1 <= msg.credits <= MAX_CREDITS:
            raise DecodeError(f"{where}: credits={msg.credits} out of range 1..{MAX_CREDITS}")
    elif isinstance(msg, Encoded):
        if problem := _descriptor_problem(msg.descriptor, f"{where}.descriptor"):
            raise DecodeError(problem)
    elif isinstance(msg, Candidates):
        if len(msg.rows) != len(msg.distances):
            raise DecodeError(f"{where}: {len(msg.rows)} rows but {len(msg.distances)} distances")
        if not 0 <= msg.shard < msg.n_shards:
            raise DecodeError(f"{where}: shard {msg.shard} not in 0..{msg.n_shards - 1}")
    elif isinstance(msg, SessionState):
        _one_of(msg.phase, SESSION_PHASES, f"{where}.phase")
    elif isinstance(msg, ButtonStatus):
        _one_of(msg.state, BUTTON_STATES, f"{where}.state")
        _one_of(msg.light, LIGHTS, f"{where}.light")
        if msg.presses < 0 or msg.bad_lines < 0:
            raise DecodeError(f"{where}: negative counts ({msg.presses} presses, {msg.bad_lines} bad lines)")


def _one_of(value: str, allowed: tuple[str, ...], where: str) -> None:
    if value not in allowed:
        raise DecodeError(f"{where}: expected one of {', '.join(allowed)}, got {value!r}")


def _check(value: Any, hint: Any, where: str, name: str) -> Any:
    """Validate ``value`` against a type hint and the size limit of field ``name``."""
    origin = typing.get_origin(hint)
    limit = LIMITS.get(name)
    if hint is Header:
        if not isinstance(value, dict):
            raise DecodeError(f"{where}: expected a map, got {type(value).__name__}")
        if value.get("v") != SCHEMA_VERSION:
            raise DecodeError(
                f"{where}: schema version {value.get('v')!r} is not supported (this build speaks {SCHEMA_VERSION})"
            )
        return _build(Header, value, where)
    if hint is int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise DecodeError(f"{where}: expected int, got {type(value).__name__}")
        return value
    if hint is float:
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise DecodeError(f"{where}: expected float, got {type(value).__name__}")
        if not math.isfinite(value):
            raise DecodeError(f"{where}: {value!r} is not a finite number")
        return float(value)
    if hint is bool:
        if not isinstance(value, bool):
            raise DecodeError(f"{where}: expected bool, got {type(value).__name__}")
        return value
    if hint in (str, bytes):
        if not isinstance(value, hint):
            raise DecodeError(f"{where}: expected {hint.__name__}, got {type(value).__name__}")
        if limit is not None and len(value) > limit:
            raise DecodeError(f"{where}: {len(value)} exceeds the limit of {limit}")
        return value
    if origin is list:
        if not isinstance(value, list):
            raise DecodeError(f"{where}: expected a list, got {type(value).__name__}")
        if limit is not None and len(value) > limit:
            raise DecodeError(f"{where}: {len(value)} items exceed the limit of {limit}")
        (item_hint,) = typing.get_args(hint)
        return [_check(v, item_hint, f"{where}[{i}]", "") for i, v in enumerate(value)]
    if hint is Result:
        if not isinstance(value, dict):
            raise DecodeError(f"{where}: expected a result map, got {type(value).__name__}")
        return _result(_build(Result, value, where), where)
    if origin is types.UnionType and type(None) in typing.get_args(hint):
        (inner,) = (a for a in typing.get_args(hint) if a is not type(None))
        return None if value is None else _check(value, inner, where, name)
    raise TypeError(f"{where}: schema uses an unsupported type {hint!r}")  # a bug in schemas.py


def _result(r: Result, where: str) -> Result:
    if len(r.box) not in (0, 4):
        raise DecodeError(f"{where}.box: expected [] or [left, top, right, bottom], got {len(r.box)} numbers")
    if r.p_same is not None and not 0.0 <= r.p_same <= 1.0:
        raise DecodeError(f"{where}.p_same: expected a probability in 0..1, got {r.p_same!r}")
    if r.verdict and r.verdict not in VERDICTS:
        raise DecodeError(f"{where}.verdict: expected one of {', '.join(VERDICTS)}, got {r.verdict!r}")
    return r


@cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


@cache
def _payload_field(cls: type) -> str | None:
    """The name of the binary payload field (the last field) of classes with a payload."""
    if not getattr(cls, "PAYLOAD", False):
        return None
    return dataclasses.fields(cls)[-1].name
