"""messages.Inbox, the one way every receiver reads a socket: newest only, limits, counters, liveness."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import zmq

from messages import TOPICS, Inbox, Request, encode
from messages.inbox import ALIVE_PERIODS, MIN_ALIVE_S
from tests import factories


@contextlib.contextmanager
def _pair(kind: tuple[int, int]) -> Iterator[tuple[zmq.Socket, zmq.Socket]]:
    """A sending and a receiving socket on one inproc address, closed afterwards."""
    ctx = zmq.Context()
    send, receive = ctx.socket(kind[0]), ctx.socket(kind[1])
    receive.bind("inproc://inbox-test")
    send.connect("inproc://inbox-test")
    try:
        yield send, receive
    finally:
        send.close(0)
        receive.close(0)
        ctx.term()


def test_newest_only_keeps_the_last_waiting_message_and_counts_the_rest():
    with _pair((zmq.PUSH, zmq.PULL)) as (push, pull):
        for qid in range(5):
            push.send_multipart(encode(factories.query(qid)))
        box = Inbox(pull, "queries", newest_only=True, limit=100)
        assert pull.poll(1000)
        (msg,) = box.receive(now_ns=1)
        assert msg.query_id == 4
        assert box.stats["queries.skipped_stale"] == 4 and box.stats["queries.received"] == 1
        assert box.receive(now_ns=2) == []  # nothing waiting: no block, no message


def test_limit_bounds_one_read_and_malformed_messages_are_counted_and_dropped():
    with _pair((zmq.PUSH, zmq.PULL)) as (push, pull):
        push.send_multipart([b"queries", b"\xc1"])
        for qid in range(4):
            push.send_multipart(encode(factories.query(qid)))
        box = Inbox(pull, "queries", limit=3)
        assert pull.poll(1000)
        first = box.receive(now_ns=1)
        assert [m.query_id for m in first] == [0, 1]  # 3 read, the malformed one dropped
        assert box.stats["queries.malformed"] == 1
        assert [m.query_id for m in box.receive(now_ns=2)] == [2, 3]


def test_a_request_it_cannot_read_is_still_handed_on_with_its_envelope():
    with _pair((zmq.REQ, zmq.ROUTER)) as (req, router):
        req.send_multipart([b"print", b"not msgpack"])
        box = Inbox(router, "print")
        assert router.poll(1000)
        (request,) = box.receive(now_ns=1)
        assert isinstance(request, Request) and request.msg is None  # the caller must still answer it
        assert len(request.envelope) == 2 and request.envelope[1] == b""  # routing id, delimiter
        assert box.stats["print.malformed"] == 1 and not box.seen
        router.send_multipart([*request.envelope, b"printed", b"refused"])
        assert req.poll(1000) and req.recv_multipart() == [b"printed", b"refused"]


def test_a_message_without_an_envelope_is_dropped_and_waits_for_nothing():
    """A DEALER's bare frames have no empty delimiter: nobody could read an answer, so none is sent,
    and the next real request is read at once (a REP socket would wait for it on a blocking read)."""
    job = factories.SAMPLES[6]
    with _pair((zmq.DEALER, zmq.ROUTER)) as (dealer, router):
        strays = [[b"hello"], [b"print", b"\x80"], [b"x"] * 20, encode(job)]
        for parts in strays:
            dealer.send_multipart(parts)
        dealer.send_multipart([b""])  # an envelope and nothing in it: answerable, and refused
        dealer.send_multipart([b"", *encode(job)])
        box = Inbox(router, "print", limit=10)
        got: list[Request] = []
        while not any(r.msg is not None for r in got) and router.poll(1000):
            got += box.receive(now_ns=1)
        assert [r.msg for r in got] == [None, job]
        assert box.stats["print.unanswerable"] == len(strays)
        assert box.stats["print.received"] == len(strays) + 2 and box.stats["print.malformed"] == len(strays) + 1


def test_a_client_reads_replies_without_blocking_and_a_garbled_one_ends_the_exchange():
    status = factories.SAMPLES[11]
    with _pair((zmq.REQ, zmq.ROUTER)) as (req, router):
        replies = Inbox(req, "replay_control")
        for reply, want in ((encode(status), status), ([b"camera_status", b"\xc1"], None)):
            req.send_multipart(encode(factories.SAMPLES[12]))
            assert router.poll(1000)
            envelope = router.recv_multipart()[:2]
            router.send_multipart([envelope[0], b"camera_status", b"no envelope"])  # the REQ drops it itself
            assert req.poll(1000)  # ...after poll has said there is something
            assert replies.receive(now_ns=1) == []  # and nothing blocks on it
            router.send_multipart([*envelope, *reply])
            assert req.poll(1000)
            assert replies.receive(now_ns=2) == [want]
        assert replies.stats["replay_control.malformed"] == 1
        assert replies.receive(now_ns=3) == []  # no request in flight: nothing to wait for, no error


def test_a_stream_is_alive_for_ten_periods_of_its_rate_and_never_less_than_two_seconds():
    with _pair((zmq.PUSH, zmq.PULL)) as (_, pull):
        frames = Inbox(pull, "frames")
        assert not frames.alive(0) and not frames.seen
        frames.last_ns = 0
        window_s = max(ALIVE_PERIODS / TOPICS["frames"].rate_hz, MIN_ALIVE_S)
        assert window_s == MIN_ALIVE_S  # 30 frames/s: ten periods are a third of a second
        assert frames.alive(int(1.9e9)) and not frames.alive(int(2.1e9))
        status = Inbox(pull, "camera_status")  # 1/s: ten periods
        status.last_ns = 0
        assert status.alive(int(9.9e9)) and not status.alive(int(10.1e9))
