"""The one run loop every actor shares.

An actor is a class with a small lifecycle — ``on_start``, ``handle(msg) -> messages out``,
``tick(now_ns) -> messages out`` for timers, ``on_stop`` — and class attributes that say which
topics it receives and sends. :func:`run` opens its sockets from the topic registry
(messages.open_socket), polls with a timeout, reads each socket through its messages.Inbox
(decoded by the one validating codec, counted), and sends what the handler returns. On a
``BATCH`` topic, everything already waiting (up to ``MAX_BATCH``) goes to ``handle_batch`` in
one call. A bad message is logged, counted and dropped; an exception in a handler is logged,
counted and skipped: an actor never dies on one message. SIGTERM / SIGINT set a stop flag that
the loop notices within one poll (100 ms); sockets close with linger 0. Nothing in the loop
blocks: every receive and send is ``NOBLOCK``, and requests (``REQ/REP`` topics) are read from a
ROUTER with their envelope and answered behind it, so a message without one is dropped, never
waited on. A message that holds a NaN or infinite number is not sent (``<topic>.unsendable``).

At start every socket the actor binds is bound before any is connected: if another graph holds
an address the actor exits (code 2) with "address in use: ..." before it has taken anything from
the graph it would have joined. A process started by :func:`main` also stops when the supervisor
that started it dies (actors/runtime/supervisor.py), so a SIGKILLed honcho leaves no actor behind.

A ROUTER/DEALER topic (messages/topics.py) is listed in both RECEIVES and SENDS and has one socket
for both. On the ROUTER's side (its binder) the handler receives and returns
:class:`messages.Routed` messages; a message for a peer that has gone goes to ``on_unroutable``.

In kiosk mode the loop also *scrubs* the actor once the visitor's data has stopped flowing for
``privacy.scrub_after_s``: ``on_scrub`` drops what the actor holds about the visitor, the sockets
it connects are opened again, and freed-memory caches are emptied (see actors/runtime/privacy.py).
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from collections import Counter
from typing import Any, ClassVar

import zmq

import config
from actors.runtime import privacy
from actors.runtime.supervisor import Supervisor
from messages import (
    TOPIC_OF,
    TOPICS,
    VISITOR_MESSAGES,
    BindError,
    EncodeError,
    Header,
    Headers,
    Inbox,
    Request,
    Routed,
    curve,
    encode,
    open_socket,
)
from messages.sockets import binds

POLL_MS = 100
DRAIN_LIMIT = 1000  # on a DRAIN topic, read at most this many waiting messages per poll (keep the newest)
STATS_EVERY_S = 30.0
log = logging.getLogger("actor")


class Actor:
    """Base class; subclasses set ROLE, RECEIVES, SENDS and override the hooks they need."""

    ROLE: ClassVar[str] = ""
    RECEIVES: ClassVar[tuple[str, ...]] = ()
    SENDS: ClassVar[tuple[str, ...]] = ()
    DRAIN: ClassVar[tuple[str, ...]] = ()  # topics where only the newest waiting message matters
    BATCH: ClassVar[tuple[str, ...]] = ()  # topics whose waiting messages go to handle_batch together
    MAX_BATCH: ClassVar[int] = 16
    RECEIVE_HWM: ClassVar[int | None] = None  # replaces the topics' high-water mark on every inbox

    def __init__(self, cfg: config.Config, name: str | None = None):
        self.cfg = cfg
        self.name = name or os.environ.get("HONCHO_PROCESS_NAME") or self.ROLE
        self.stats: Counter[str] = Counter()
        self.visitor_seen_ns: int | None = None  # the last message on a visitor topic since the last scrub
        self._headers = Headers(self.name)
        self.log = logging.getLogger(self.name)

    def header(self, frame_id: int = -1) -> Header:
        return self._headers.next(frame_id)

    def on_start(self) -> None:
        """Load models, open files: anything that may fail at start-up."""

    def handle(self, msg: Any) -> list[Any]:
        """React to one decoded message; return the messages to send."""
        return []

    def handle_batch(self, msgs: list[Any]) -> list[Any]:
        """React to the messages that were waiting on a ``BATCH`` topic (1 to ``MAX_BATCH``)."""
        return [out for msg in msgs for out in self.handle(msg) or []]

    def tick(self, now_ns: int) -> list[Any]:
        """Called after every poll; return messages that are due."""
        return []

    def next_tick_ms(self, now_ns: int) -> float:
        """How long the loop may sleep before ``tick`` is due."""
        return POLL_MS

    def on_stop(self) -> None:
        """Release what on_start took."""

    def on_scrub(self) -> None:
        """The visitor has gone (kiosk mode): drop everything held about them; keep working."""

    def on_unroutable(self, routed: Routed) -> list[Any]:
        """A message to a ROUTER peer that has gone (it disconnected): what to send instead."""
        return []

    def reject(self, reason: str) -> Any:
        """The reply an actor that answers requests sends to one it could not read or handle."""
        raise NotImplementedError(f"{self.ROLE} answers no requests")


class StopFlag:
    """Set by SIGTERM / SIGINT (or a test) and checked by the loop after every poll."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def set(self, *_: Any) -> None:
        self._event.set()

    def __bool__(self) -> bool:
        return self._event.is_set()


def stop_on_signals(stop: StopFlag) -> None:
    """SIGTERM and SIGINT set ``stop`` (main thread only): the one shutdown path of every process."""
    signal.signal(signal.SIGTERM, stop.set)
    signal.signal(signal.SIGINT, stop.set)


def run(
    actor: Actor, ctx: zmq.Context | None = None, stop: StopFlag | None = None, supervisor: Supervisor | None = None
) -> Counter[str]:
    """Run ``actor`` until ``stop`` is set (or ``supervisor`` dies); returns its counters.

    Raises BindError, before connecting anything, when an address the actor binds is taken.
    """
    ctx = ctx or zmq.Context.instance()
    stop = stop if stop is not None else StopFlag()
    if threading.current_thread() is threading.main_thread():
        stop_on_signals(stop)
    cfg = actor.cfg
    inputs, outputs = open_sockets(actor, ctx)
    poller = zmq.Poller()
    for box in inputs.values():
        poller.register(box.sock, zmq.POLLIN)
    actor.log.info("started (pid %d), receives %s, sends %s", os.getpid(), actor.RECEIVES, actor.SENDS)
    next_stats = time.monotonic() + STATS_EVERY_S
    scrub_after_ns = int(cfg["privacy"]["scrub_after_s"] * 1e9) if cfg["mode"]["kiosk"] else 0
    try:
        actor.on_start()
        while not stop:
            wait_ms = max(0.0, min(POLL_MS, actor.next_tick_ms(time.monotonic_ns())))
            ready = dict(poller.poll(wait_ms)) if inputs else _sleep(wait_ms)
            for box in inputs.values():
                if box.sock in ready:
                    receive(actor, box, outputs)
                    if box.visitor_ns is not None:  # the visitor's data came (not just a heartbeat)
                        actor.visitor_seen_ns, box.visitor_ns = box.visitor_ns, None
            _send(actor, _guarded(actor, "tick", actor.tick, time.monotonic_ns()), outputs)
            seen = actor.visitor_seen_ns
            if scrub_after_ns and seen is not None and time.monotonic_ns() - seen >= scrub_after_ns:
                _scrub(actor, ctx, inputs, outputs, poller)
            if time.monotonic() > next_stats:
                actor.log.info("counters: %s", dict(actor.stats))
                next_stats = time.monotonic() + STATS_EVERY_S
            if supervisor is not None and supervisor.gone(time.monotonic_ns()):
                actor.log.warning("the supervisor that started this process (%s) is gone: stopping", supervisor)
                break
    finally:
        actor.on_stop()
        for sock in {*(box.sock for box in inputs.values()), *outputs.values()}:
            sock.close(linger=0)
        curve.stop(ctx)
        actor.log.info("stopped; counters: %s", dict(actor.stats))
    return actor.stats


def open_sockets(actor: Actor, ctx: zmq.Context) -> tuple[dict[str, Inbox], dict[str, zmq.Socket]]:
    """The actor's inboxes and output sockets: every bound one first, then the connected ones.

    A second graph started on the same addresses fails at its first bind, before any of its
    sockets connects to the first graph and takes work from it (a PULL connected to a live PUSH
    is handed messages at once). On BindError every socket opened so far is closed.
    """
    two_way = [t for t in actor.SENDS if t in actor.RECEIVES and TOPICS[t].pattern == "ROUTER/DEALER"]
    wanted = [(t, True) for t in actor.RECEIVES] + [(t, False) for t in actor.SENDS if t not in two_way]
    opened: dict[tuple[str, bool], zmq.Socket] = {}
    try:
        for topic, receiving in sorted(wanted, key=lambda w: not binds(actor.ROLE, w[0])):
            opened[(topic, receiving)] = open_socket(
                ctx, actor.cfg, topic, actor.ROLE, receiving, actor.RECEIVE_HWM if receiving else None
            )
    except BaseException:
        for sock in opened.values():
            sock.close(linger=0)
        curve.stop(ctx)
        raise
    inputs = {t: inbox(actor, opened[(t, True)], t) for t in actor.RECEIVES}
    outputs = {t: inputs[t].sock if t in two_way else opened[(t, False)] for t in actor.SENDS}
    return inputs, outputs


def inbox(actor: Actor, sock: zmq.Socket, topic: str) -> Inbox:
    """The actor's inbox on ``topic``: newest only on DRAIN topics, up to MAX_BATCH on BATCH ones."""
    if topic in actor.DRAIN:
        return Inbox(sock, topic, actor.stats, actor.log, newest_only=True, limit=DRAIN_LIMIT)
    return Inbox(sock, topic, actor.stats, actor.log, limit=actor.MAX_BATCH if topic in actor.BATCH else 1)


def output(actor: Actor, ctx: zmq.Context, inputs: dict[str, Inbox], topic: str) -> zmq.Socket:
    """The socket ``actor`` sends ``topic`` on: its inbox's own on a ROUTER/DEALER topic, else a new one."""
    if topic in inputs and TOPICS[topic].pattern == "ROUTER/DEALER":
        return inputs[topic].sock
    return open_socket(ctx, actor.cfg, topic, actor.ROLE, False)


def _scrub(
    actor: Actor, ctx: zmq.Context, inputs: dict[str, Inbox], outputs: dict[str, zmq.Socket], poller: zmq.Poller
) -> None:
    """Forget the visitor: the actor's state, the connections that carried their data, freed-memory caches.

    Only sockets this actor connects are reopened: that ends the connection at both ends, so the
    bound side frees its buffers too, and every connecting peer of a visitor topic scrubs as well.
    Reopening a bound socket would race its own unbinding (an ipc socket file is removed late).
    """
    started = time.perf_counter()
    _guarded(actor, "on_scrub", lambda _: actor.on_scrub(), None)
    reopened = 0
    for topic, box in list(inputs.items()):
        if not binds(actor.ROLE, topic):
            poller.unregister(box.sock)
            box.close()
            inputs[topic] = inbox(actor, open_socket(ctx, actor.cfg, topic, actor.ROLE, True, actor.RECEIVE_HWM), topic)
            poller.register(inputs[topic].sock, zmq.POLLIN)
            reopened += 1
    for topic, sock in list(outputs.items()):
        if not binds(actor.ROLE, topic):
            sock.close(linger=0)
            outputs[topic] = output(actor, ctx, inputs, topic)  # a two-way topic's: its inbox's, reopened above
            reopened += topic not in inputs
    privacy.scrub_process()
    actor.visitor_seen_ns = None
    actor.stats["privacy.scrubs"] += 1
    took_ms = (time.perf_counter() - started) * 1000
    actor.log.info("privacy scrub: state dropped, %d sockets reopened, caches emptied in %.1f ms", reopened, took_ms)


def _sleep(ms: float) -> dict:
    time.sleep(ms / 1000)
    return {}


def receive(actor: Actor, box: Inbox, outputs: dict[str, zmq.Socket]) -> None:
    """Hand what is waiting in ``box`` to the actor and send what it returns.

    One message per call, or everything waiting on a ``BATCH`` topic (up to MAX_BATCH) as one
    batch: under load, one pass of work answers many messages instead of each waiting for the
    ones before it. Every request read is answered, an unreadable one with ``reject``.
    """
    msgs = box.receive(time.monotonic_ns())
    if box.answers_requests:
        for request in msgs:
            answer(actor, box, request)
        return
    if box.topic in actor.BATCH:
        if msgs:
            actor.stats[f"{box.topic}.batches"] += 1
            _send(actor, _guarded(actor, "handle", actor.handle_batch, msgs), outputs)
        return
    for msg in msgs:
        _send(actor, _guarded(actor, "handle", actor.handle, msg), outputs)


def answer(actor: Actor, box: Inbox, request: Request) -> None:
    """Handle one request and send the reply behind its envelope, never blocking.

    An unreadable request, or one whose handler failed or returned nothing, gets ``reject``. A
    reply that can't be sent (its client is gone or not reading: ROUTER drops it) is lost, and
    nothing waits for it.
    """
    topic = box.topic
    replies = _guarded(actor, "handle", actor.handle, request.msg) if request.msg is not None else []
    why = "malformed request" if request.msg is None else "request failed"
    try:
        parts = encode(replies[0] if replies else actor.reject(why))
    except Exception as e:  # EncodeError, or a broken reject(): the client's own deadline runs on
        actor.stats[f"{topic}.reply_failed"] += 1
        actor.log.warning("could not answer a %s request: %s", topic, e)
        return
    try:
        box.sock.send_multipart([*request.envelope, *parts], flags=zmq.NOBLOCK)
        actor.stats[f"{topic}.answered"] += 1
    except zmq.ZMQError as e:
        actor.stats[f"{topic}.reply_dropped"] += 1
        actor.log.warning("the answer to a %s request was dropped: %s", topic, e)


def _guarded(actor: Actor, what: str, fn: Any, arg: Any) -> list[Any]:
    try:
        return fn(arg) or []
    except Exception:
        actor.stats[f"{what}.failed"] += 1
        actor.log.exception("%s failed; the message is skipped", what)
        return []


def _send(actor: Actor, messages: list[Any], outputs: dict[str, zmq.Socket]) -> None:
    for out in messages:
        msg = out.msg if isinstance(out, Routed) else out
        topic = type(msg).TOPIC  # the message's own name, for the counters
        if type(msg) in VISITOR_MESSAGES:
            actor.visitor_seen_ns = time.monotonic_ns()
        try:
            parts = encode(msg)
        except EncodeError as e:  # a NaN or inf must not reach the wire (nor the display's JSON)
            actor.stats[f"{topic}.unsendable"] += 1
            actor.log.warning("did not send a %s message: %s", topic, e)
            continue
        if isinstance(out, Routed):
            parts.insert(0, out.peer)
        try:
            outputs[TOPIC_OF[type(msg)]].send_multipart(parts, flags=zmq.NOBLOCK, copy=False)
            actor.stats[f"{topic}.sent"] += 1
        except zmq.Again:  # a PUSH peer is gone or full: drop rather than stall the loop
            actor.stats[f"{topic}.send_dropped"] += 1
        except zmq.ZMQError as e:  # a ROUTER's peer has gone: the actor decides what to do instead
            if e.errno != zmq.EHOSTUNREACH:
                raise
            actor.stats[f"{topic}.unroutable"] += 1
            _send(actor, _guarded(actor, "on_unroutable", actor.on_unroutable, out), outputs)


def main(actor_cls: type[Actor], *args: Any) -> int:
    """Entry point of an actor process: load config, construct, run; exit 2 on start-up errors."""
    try:
        cfg = config.load()
    except config.ConfigError as e:
        print(f"{actor_cls.ROLE}: configuration error: {e}", file=sys.stderr)
        return 2
    logging.basicConfig(level=cfg["log"]["level"], stream=sys.stderr, format="%(name)s %(levelname)s %(message)s")
    if cfg["mode"]["kiosk"]:
        privacy.restart_without_malloc_cache()  # returns once it is off
        scrubbed = privacy.scrub_freed_memory()
        log.info("kiosk mode: freed memory is %s", "overwritten" if scrubbed else "NOT overwritten (no glibc mallopt)")
    supervisor = Supervisor()  # after the kiosk-mode restart: same pid, same parent
    try:
        actor = actor_cls(cfg, *args)
        run(actor, supervisor=supervisor)
    except (StartupError, BindError, config.ConfigError) as e:
        log.error("%s cannot start: %s", actor_cls.ROLE, e)
        return 2
    return 0


class StartupError(RuntimeError):
    """A problem that makes an actor unable to run at all (missing camera file, no index)."""
