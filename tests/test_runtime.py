"""The shared run loop on real ZeroMQ sockets (ipc endpoints in a private folder)."""

from __future__ import annotations

import math
import threading
import time

import numpy as np
import zmq

import config
from actors import runtime
from actors.encoder import Encoder
from actors.recorder import Recorder
from messages import CHIP_PX, Candidates, Credit, Encoded, FaceJob, Routed, decode, encode, open_socket
from tests import factories


def test_bad_messages_are_counted_and_dropped_and_the_actor_keeps_going(running):
    actor, _, thread, pub, pull = running
    good = encode(factories.query(1, np.ones(128)))
    factories.send_until_answered(pub, pull, [good], 1)  # connected
    garbage = [
        [b"queries", b"\xc1 not msgpack"],
        [b"queries", b"\x80", b"extra frame"],
        encode(factories.query(666)),  # decodes fine, makes the handler raise
    ]
    reply = factories.send_until_answered(pub, pull, [*garbage, encode(factories.query(2))], 2)
    assert reply.rows == [1] and thread.is_alive()
    assert actor.stats["queries.malformed"] >= 2
    assert actor.stats["handle.failed"] >= 1


def test_stop_flag_ends_the_loop_within_a_second(running):
    _, stop, thread, pub, pull = running
    factories.send_until_answered(pub, pull, [encode(factories.query(5))], 5)
    started = time.monotonic()
    stop.set()
    thread.join(2)
    assert not thread.is_alive()
    assert time.monotonic() - started < 1.0


def test_sockets_bind_and_connect_as_the_registry_says(ipc_config, ipc_dir):
    ctx = zmq.Context()
    pub = open_socket(ctx, ipc_config, "frames", "camera", receiving=False)
    assert pub.type == zmq.PUB and (ipc_dir / "frames.sock").exists()
    sub = open_socket(ctx, ipc_config, "frames", "detector", receiving=True)
    assert sub.type == zmq.SUB and sub.getsockopt(zmq.RCVHWM) == 2
    recording = open_socket(ctx, ipc_config, "frames", "recorder", receiving=True, receive_hwm=Recorder.RECEIVE_HWM)
    assert recording.getsockopt(zmq.RCVHWM) == 150  # a recorder queues 5 s of frames, not the newest 2
    recording.close(0)
    rep = open_socket(ctx, ipc_config, "print", "printer", receiving=True)
    assert rep.type == zmq.ROUTER  # requests are answered behind their envelope (messages/sockets.py)
    router = open_socket(ctx, ipc_config, "chips", "detector", receiving=True)  # one socket both ways
    dealer = open_socket(ctx, ipc_config, "chips", "encoder", receiving=True)
    assert router.type == zmq.ROUTER and dealer.type == zmq.DEALER and (ipc_dir / "chips.sock").exists()
    for s in (pub, sub, rep, router, dealer):
        s.close(0)
    ctx.term()


def test_heartbeats_on_a_visitor_topic_do_not_hold_off_the_privacy_scrub_and_the_encoder_announces_itself_again(
    ipc_config,
):
    """A real encoder in kiosk mode: after one job, its credit heartbeats keep flowing (no visitor
    data), it scrubs once the visitor's data has stopped for scrub_after_s, and its reopened
    connection announces the same instance again from a new peer."""
    cfg = config.validate(
        {
            "mode": {"kiosk": True},
            "privacy": {"scrub_after_s": 0.5},
            "encoder": {"liveness_s": 0.5},  # a heartbeat every 0.1 s
            "network": ipc_config["network"],
        }
    )
    ctx = zmq.Context()
    router = open_socket(ctx, cfg, "chips", "detector", receiving=True)
    encoder, stop = Encoder(cfg, "encoder.1"), runtime.StopFlag()
    thread = threading.Thread(target=runtime.run, args=(encoder, ctx, stop), daemon=True)
    thread.start()
    box = runtime.inbox(encoder, router, "chips")  # the detector's side, read as the detector reads it

    def next_message(timeout_s: float = 30) -> Routed:
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            if router.poll(100) and (got := box.receive(time.monotonic_ns())):
                return got[0]
        raise AssertionError(f"nothing from the encoder within {timeout_s} s")

    try:
        hello = next_message()
        assert isinstance(hello.msg, Credit) and hello.msg.credits == 1 and box.visitor_ns is None
        chip = np.zeros((CHIP_PX, CHIP_PX, 3), np.uint8).tobytes()
        router.send_multipart([hello.peer, *encode(FaceJob(factories.header(), 1, 0, 1, chip))])
        while not isinstance((answer := next_message()).msg, Encoded):
            pass
        assert answer.peer == hello.peer and len(answer.msg.descriptor) == 512 and box.visitor_ns is not None
        box.visitor_ns = None
        heartbeats = 0
        while (msg := next_message()).peer == hello.peer:
            assert isinstance(msg.msg, Credit)
            heartbeats += 1
        assert isinstance(msg.msg, Credit) and msg.msg.instance == hello.msg.instance  # reconnected
        assert heartbeats >= 2 and encoder.stats["privacy.scrubs"] == 1 and box.visitor_ns is None
    finally:
        stop.set()
        thread.join(5)
        router.close(0)
        ctx.term()


class Batcher(runtime.Actor):
    """Records the size of every batch it is handed."""

    ROLE = "matcher"
    RECEIVES = ("queries",)
    BATCH = ("queries",)
    MAX_BATCH = 16

    def __init__(self, cfg):
        super().__init__(cfg)
        self.sizes: list[int] = []

    def handle_batch(self, msgs):
        self.sizes.append(len(msgs))
        return []


def test_waiting_messages_are_handled_as_one_batch(ipc_config):
    """20 queries already waiting -> one batch of MAX_BATCH, then the remaining 4 minus the bad
    one: malformed messages are counted and left out of the batch, never handed over."""
    ctx = zmq.Context()
    push, pull = ctx.socket(zmq.PUSH), ctx.socket(zmq.PULL)
    pull.bind("inproc://batch")
    push.connect("inproc://batch")
    actor = Batcher(ipc_config)
    for i in range(20):
        push.send_multipart([b"garbage"] if i == 18 else encode(factories.query(i)))  # inproc: queued on return
    try:
        assert pull.poll(1000)
        box = runtime.inbox(actor, pull, "queries")
        runtime.receive(actor, box, {})
        runtime.receive(actor, box, {})
        assert actor.sizes == [16, 3]
        assert actor.stats["queries.received"] == 20 and actor.stats["queries.malformed"] == 1
        assert actor.stats["queries.batches"] == 2 and not pull.poll(0)
    finally:
        push.close(0)
        pull.close(0)
        ctx.term()


class NanEcho(factories.Echo):
    """Answers query 13 with a NaN distance, which must not be sent."""

    def handle(self, msg):
        if msg.query_id == 13:
            return [Candidates(self.header(), 13, msg.captured_ns, msg.k, 0, 1, [1], [math.nan])]
        return super().handle(msg)


def test_a_message_holding_a_nan_is_counted_and_not_sent_and_the_actor_goes_on(ipc_config):
    actor = NanEcho(ipc_config)
    with factories.matcher_in_thread(actor) as (_, thread, pub, pull):
        factories.send_until_answered(pub, pull, [encode(factories.query(1))], 1)  # connected
        seen = set()
        end = time.monotonic() + 10
        while 14 not in seen and time.monotonic() < end:
            pub.send_multipart(encode(factories.query(13)))
            pub.send_multipart(encode(factories.query(14)))
            while pull.poll(100):
                seen.add(decode(pull.recv_multipart()).query_id)
        assert 14 in seen and 13 not in seen and thread.is_alive()
        assert actor.stats["candidates.unsendable"] >= 1
