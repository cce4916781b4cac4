"""The wire contract: every message round-trips, bad payloads are refused with a clear reason."""

from __future__ import annotations

import dataclasses
import math
import re

import msgpack
import numpy as np
import pytest

from messages import (
    TOPIC_OF,
    TOPICS,
    VISITOR_MESSAGES,
    CameraStatus,
    Credit,
    DecodeError,
    Encoded,
    EncodeError,
    FaceJob,
    decode,
    encode,
    endpoint,
)
from messages.schemas import MESSAGE_TYPES
from tests import factories
from tests.factories import RESULT, SAMPLES

H = factories.H


def test_every_type_has_a_sample():
    assert {type(s) for s in SAMPLES} == set(MESSAGE_TYPES.values())


@pytest.mark.parametrize("msg", SAMPLES, ids=lambda m: type(m).__name__)
def test_round_trip(msg):
    parts = encode(msg)
    assert parts[0] == type(msg).TOPIC.encode()
    assert decode(parts) == msg


def test_frames_travel_as_raw_pixels_not_msgpack():
    parts = encode(SAMPLES[0])
    assert len(parts) == 3 and parts[2] == bytes(range(24))
    assert b"pixels" not in parts[1]


def _body(msg) -> dict:
    return msgpack.unpackb(encode(msg)[1])


def _with(msg, **changes) -> list[bytes]:
    parts = encode(msg)
    body = _body(msg)
    body.update(changes)
    parts[1] = msgpack.packb(body)
    return parts


@pytest.mark.parametrize(
    ("parts", "reason"),
    [
        ([b"frames"], "at least 2 frames"),
        ([b"nosuch", b"\x80"], "unknown topic"),
        ([b"\xff\xfe", b"\x80"], "not UTF-8"),
        ([b"queries", b"\xc1\xc1\xc1"], "not valid msgpack"),
        ([b"queries", msgpack.packb([1, 2])], "expected a map"),
        ([*encode(SAMPLES[3]), b"extra"], "expected 2 frames"),
        (_with(SAMPLES[3], k="5"), "queries.k: expected int"),
        (_with(SAMPLES[3], k=True), "queries.k: expected int"),
        (_with(SAMPLES[3], k=0), "out of range"),
        (_with(SAMPLES[3], descriptor=b"\0" * 12), "descriptor of 12 bytes"),
        (_with(SAMPLES[3], descriptor=b"\0" * 4096), "exceeds the limit"),
        (_with(SAMPLES[3], surprise=1), "unexpected field"),
        (_with(SAMPLES[5], results=[{"rank": 1}]), r"results\[0\]: missing field"),
        (_with(SAMPLES[5], results=[dataclasses.asdict(RESULT)] * 101), "exceed the limit"),
        (_with(SAMPLES[5], results=[dataclasses.asdict(RESULT) | {"p_same": 2.0}]), "p_same"),
        (_with(SAMPLES[5], results=[dataclasses.asdict(RESULT) | {"box": [1, 2, 3]}]), "box"),
        (_with(SAMPLES[5], results=[dataclasses.asdict(RESULT) | {"url": "u" * 2049}]), r"results\[0\]\.url: 2049"),
        (_with(SAMPLES[4], distances=[0.3]), "2 rows but 1 distances"),
        (_with(SAMPLES[1], visitor=3), "does not index"),
    ],
)
def test_malformed_payloads_are_refused_with_a_reason(parts, reason):
    with pytest.raises(DecodeError, match=reason):
        decode(parts)


def _descriptor(bad: float) -> bytes:
    d = np.arange(128, dtype="<f4")
    d[77] = bad
    return d.tobytes()


NAN, INF = math.nan, math.inf


@pytest.mark.parametrize(
    ("msg", "where"),
    [
        (dataclasses.replace(SAMPLES[4], distances=[0.3, NAN]), "candidates.distances[1]: nan"),
        (dataclasses.replace(SAMPLES[4], distances=[-INF, 0.4]), "candidates.distances[0]: -inf"),
        (dataclasses.replace(SAMPLES[5], results=[dataclasses.replace(RESULT, distance=NAN)]), "results[0].distance"),
        (dataclasses.replace(SAMPLES[5], results=[dataclasses.replace(RESULT, p_same=INF)]), "results[0].p_same"),
        (dataclasses.replace(SAMPLES[5], latency_ms=NAN), "matches.latency_ms"),
        (dataclasses.replace(SAMPLES[6], results=[dataclasses.replace(RESULT, distance=INF)]), "print.results[0]"),
        (dataclasses.replace(SAMPLES[11], rate=NAN), "camera_status.rate"),
        (dataclasses.replace(SAMPLES[12], value=NAN), "replay_control.value"),
        (dataclasses.replace(SAMPLES[3], descriptor=_descriptor(NAN)), "queries.descriptor: 1 of 128"),
        (dataclasses.replace(SAMPLES[9], descriptor=_descriptor(INF)), "descriptors.descriptor: 1 of 128"),
    ],
)
def test_no_nan_or_infinite_number_crosses_the_wire(msg, where):
    """Refused when sent (the sender counts and drops it) and, from a sender that packs it anyway, on arrival."""
    with pytest.raises(EncodeError, match=re.escape(where)):
        encode(msg)
    packed_anyway = [type(msg).TOPIC.encode(), msgpack.packb(dataclasses.asdict(msg))]
    with pytest.raises(DecodeError, match=re.escape(where)):
        decode(packed_anyway)


def test_missing_field_is_named():
    body = _body(SAMPLES[3])
    del body["k"]
    with pytest.raises(DecodeError, match=r"missing field.*k"):
        decode([b"queries", msgpack.packb(body)])


def test_unknown_schema_version_is_refused():
    body = _body(SAMPLES[3])
    body["header"]["v"] = 99
    with pytest.raises(DecodeError, match="schema version 99"):
        decode([b"queries", msgpack.packb(body)])


def test_frame_pixels_must_match_its_size():
    parts = encode(SAMPLES[0])
    with pytest.raises(DecodeError, match="pixel bytes"):
        decode([parts[0], parts[1], parts[2][:-1]])


def test_oversized_frame_is_refused():
    parts = _with(SAMPLES[0], width_px=10_000)
    with pytest.raises(DecodeError, match="out of range"):
        decode(parts)


def test_oversized_msgpack_part_is_refused():
    with pytest.raises(DecodeError, match="exceeds"):
        decode([b"queries", b"\x80" * 70_000])


def test_expected_topic_is_enforced():
    with pytest.raises(DecodeError, match="expected topic 'frames'"):
        decode(encode(SAMPLES[3]), expect="frames")


def test_registry_ports_and_endpoints_are_unique():
    ports = [t.port for t in TOPICS.values()]
    assert len(ports) == len(set(ports))
    for transport, where in (("tcp", ""), ("ipc", "/tmp/x")):
        addresses = [endpoint(name, transport, where) for name in TOPICS]
        assert len(addresses) == len(set(addresses))


def test_default_endpoints_are_loopback_only():
    for name in TOPICS:
        assert endpoint(name).startswith("tcp://127.0.0.1:")


def test_registry_holds_each_topics_message_class_and_every_topic_has_a_binder():
    for t in TOPICS.values():
        assert MESSAGE_TYPES[t.message.TOPIC] is t.message and t.name == t.message.TOPIC, t
        two_way = ("REQ/REP", "ROUTER/DEALER")
        assert t.reply is None or (t.pattern in two_way and t.reply in MESSAGE_TYPES.values()), t
        assert t.control is None or (t.pattern == "ROUTER/DEALER" and t.control in MESSAGE_TYPES.values()), t
        assert t.binder and t.hwm > 0 and t.pattern in ("PUB/SUB", "PUSH/PULL", *two_way)


def test_registry_flags_say_which_topics_carry_the_visitor_and_which_may_leave_the_host():
    from messages import REMOTE_TOPICS, VISITOR_TOPICS

    assert {"queries", "candidates"} == REMOTE_TOPICS  # the query side's link to remote shards only
    assert {"chips", "queries", "candidates", "matches", "print"} == VISITOR_TOPICS
    assert not {"frames", "faces", "camera_status"} & VISITOR_TOPICS  # they flow while nobody is there
    # On chips, the jobs and the descriptors are the visitor's; the encoders' credits (heartbeats) are not.
    assert {FaceJob, Encoded} <= VISITOR_MESSAGES and Credit not in VISITOR_MESSAGES
    assert TOPIC_OF[FaceJob] == TOPIC_OF[Encoded] == TOPIC_OF[Credit] == "chips"
    assert TOPIC_OF[CameraStatus] == "camera_status"  # its own topic, though replay_control answers with it too


def test_each_end_of_a_topic_accepts_only_what_arrives_there():
    from messages.topics import arriving

    assert arriving("chips", at_binder=True) == ("descriptors", "credit")  # the detector's ROUTER
    assert arriving("chips", at_binder=False) == ("chips",)  # an encoder's DEALER
    assert arriving("frames", at_binder=False) == ("frames",)
    with pytest.raises(DecodeError, match="expected topic 'credit' or 'descriptors', got 'chips'"):
        decode(encode(SAMPLES[8]), expect=arriving("chips", at_binder=True))


def test_credits_out_of_range_are_refused():
    with pytest.raises(DecodeError, match="credits=0 out of range"):
        decode(encode(Credit(H, 0, 1)))
