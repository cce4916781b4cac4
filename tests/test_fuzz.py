"""Property-based fuzzing of the wire: every decoder, multipart framing, and a live actor.

Whatever arrives — random bytes, truncated or oversized payloads, wrong types in any field,
extra or missing frames — :func:`messages.decode` either returns a valid message of the
topic's type or raises DecodeError; nothing else escapes. A running actor fed such input counts
and drops it and still answers the next good message.
"""

from __future__ import annotations

import time
import tracemalloc

import msgpack
import pytest
import zmq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from messages import TOPICS, DecodeError, decode, encode, open_socket
from messages.codec import MAX_HEADER_BYTES
from messages.schemas import MESSAGE_TYPES
from tests import factories
from tests.factories import SAMPLES

TOPIC_NAMES = sorted(MESSAGE_TYPES)

# Any value msgpack can carry, nested a little.
msgpack_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=True)
    | st.text(max_size=40)
    | st.binary(max_size=600),
    lambda inner: st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=10), inner, max_size=6),
    max_leaves=20,
)


def _decode_or_refuse(parts: list[bytes]) -> None:
    """The one property: a valid message of the right type, or DecodeError."""
    try:
        msg = decode(parts)
    except DecodeError as e:
        assert str(e)  # every refusal says why
        return
    assert parts[0].decode() == type(msg).TOPIC
    assert decode(encode(msg)) == msg  # what was accepted is a well-formed message


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=300), max_size=5))
def test_random_frames(parts):
    _decode_or_refuse(parts)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(TOPIC_NAMES), st.lists(st.binary(max_size=300), max_size=3))
def test_random_bodies_under_real_topics(topic, rest):
    _decode_or_refuse([topic.encode(), *rest])


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(SAMPLES), st.data())
def test_one_field_replaced_by_anything(sample, data):
    parts = encode(sample)
    body = msgpack.unpackb(parts[1])
    field = data.draw(st.sampled_from(sorted(body)))
    body[field] = data.draw(msgpack_values)
    _decode_or_refuse([parts[0], msgpack.packb(body), *parts[2:]])


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(SAMPLES), st.data())
def test_header_fields_replaced_by_anything(sample, data):
    parts = encode(sample)
    body = msgpack.unpackb(parts[1])
    field = data.draw(st.sampled_from(["seq", "t_ns", "src", "frame_id", "v", "extra"]))
    body["header"][field] = data.draw(msgpack_values)
    _decode_or_refuse([parts[0], msgpack.packb(body), *parts[2:]])


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(SAMPLES), st.data())
def test_truncated_payloads(sample, data):
    parts = encode(sample)
    i = data.draw(st.integers(min_value=1, max_value=len(parts) - 1))
    cut = data.draw(st.integers(min_value=0, max_value=max(0, len(parts[i]) - 1)))
    parts[i] = parts[i][:cut]
    _decode_or_refuse(parts)


@settings(max_examples=100, deadline=None)
@given(st.sampled_from(SAMPLES), st.lists(st.binary(max_size=50), min_size=1, max_size=3))
def test_extra_or_missing_frames(sample, extra):
    parts = encode(sample)
    with pytest.raises(DecodeError):
        decode([*parts, *extra])
    with pytest.raises(DecodeError):
        decode(parts[:-1] if len(parts) > 2 else parts[:1])


@pytest.mark.parametrize("sample", SAMPLES, ids=lambda m: type(m).__name__)
def test_oversized_parts_are_refused_without_unbounded_memory(sample):
    """A huge msgpack part is refused before it is parsed; huge lists inside are refused too."""
    parts = encode(sample)
    tracemalloc.start()
    try:
        with pytest.raises(DecodeError, match="exceeds"):
            decode([parts[0], b"\x80" * (MAX_HEADER_BYTES + 1), *parts[2:]])
        body = msgpack.unpackb(parts[1])
        body["header"]["src"] = "x" * 10_000
        with pytest.raises(DecodeError, match="limit"):
            decode([parts[0], msgpack.packb(body), *parts[2:]])
        # Headers that announce 4 billion items or a 4 GB string, with nothing behind them.
        for claim in (b"\xdd", b"\xdf", b"\xdb", b"\xc6"):
            claim += b"\xff\xff\xff\xff"
            with pytest.raises(DecodeError, match="not valid msgpack"):
                decode([parts[0], claim, *parts[2:]])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20, f"decoding refused input peaked at {peak} bytes"


def test_every_receiving_socket_has_a_message_size_limit(ipc_config):
    ctx = zmq.Context()
    try:
        for name, topic in TOPICS.items():
            receiver = "printer" if name == "print" else "detector"
            sock = open_socket(ctx, ipc_config, name, receiver if topic.binder != receiver else "x", True)
            assert sock.getsockopt(zmq.MAXMSGSIZE) == topic.max_bytes > 0
            sock.close(0)
    finally:
        ctx.term()


@pytest.mark.timeout(180)
def test_a_live_actor_survives_fuzzed_input(running):
    """Real sockets: the actor counts what it drops and answers the good query after each batch."""

    actor, stop, thread, pub, pull = running
    pub.setsockopt(zmq.SNDHWM, 10_000)  # the test's own queue must not drop the good query
    qids = iter(range(1, 10**6))

    def answered(qid: int, deadline_s: float, before: list[list[bytes]] = ()) -> bool:
        for parts in before:
            pub.send_multipart(parts)
        end = time.monotonic() + deadline_s
        while time.monotonic() < end:  # repeated: the actor's small queue may drop it behind the fuzz
            pub.send_multipart(encode(factories.query(qid)))
            while pull.poll(100):
                if decode(pull.recv_multipart()).query_id == qid:
                    return True
        return False

    @settings(max_examples=40, deadline=None)
    @given(st.lists(st.lists(st.binary(max_size=200), min_size=1, max_size=4), min_size=1, max_size=20))
    def fuzz(batch):
        assert answered(next(qids), 20, [[b"queries", *parts] for parts in batch])
        assert thread.is_alive()

    assert answered(next(qids), 20)  # connected
    fuzz()
    stop.set()
    thread.join(2)
    bad = actor.stats["queries.malformed"] + actor.stats["handle.failed"]
    assert bad > 0
    assert actor.stats["queries.received"] - bad == actor.stats["candidates.sent"]
