"""One socket's incoming messages, taken without blocking and decoded through the one codec.

Every receiver on the kiosk reads through an :class:`Inbox`: the actors' run loop
(actors/runtime/) and the Kivy display (ui_kivy/app.py). It takes what is waiting, up to a
limit, never blocking; on a ``newest_only`` stream (frames) only the newest waiting message is
decoded and the older ones are counted as stale. A message the codec refuses is counted
(``<topic>.malformed``), logged and dropped; on a REP socket it is handed on as ``None`` so that
the caller still answers the request. On a ROUTER socket each message comes as a
:class:`~messages.sockets.Routed` (the peer beside it). The inbox also says whether the stream
is *alive*: a message came within ``ALIVE_PERIODS`` periods of the topic's registered rate, and
when a message with the visitor's data last came (``visitor_ns``, for the privacy scrub).
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any

import zmq

from messages.codec import DecodeError, decode
from messages.sockets import Routed
from messages.topics import TOPICS, VISITOR_MESSAGES, arriving

ALIVE_PERIODS = 10  # a stream is alive while a message came within this many periods of its rate...
MIN_ALIVE_S = 2.0  # ...and never less than this: a busy detector on two cores runs at a few frames/s


class Inbox:
    """Non-blocking, counted, validated receiving of one topic's socket."""

    def __init__(
        self,
        sock: zmq.Socket,
        topic: str,
        stats: Counter[str] | None = None,
        log: logging.Logger | None = None,
        newest_only: bool = False,
        limit: int = 1,
    ):
        self.sock, self.topic = sock, topic
        self.stats: Counter[str] = stats if stats is not None else Counter()
        self.log = log or logging.getLogger("inbox")
        self.newest_only = newest_only
        self.limit = limit
        self.last_ns: int | None = None  # when the last good message arrived
        self.visitor_ns: int | None = None  # when the last message with visitor data arrived (reset by the reader)
        self._answers_requests = sock.type == zmq.REP
        self._routed = sock.type == zmq.ROUTER
        self._expect = arriving(topic, at_binder=self._routed)

    def receive(self, now_ns: int, limit: int | None = None) -> list[Any]:
        """What is waiting (at most ``limit`` messages read), decoded, oldest first.

        Malformed messages are dropped, except on a REP socket, where each one is a ``None`` in
        the list: a REP socket must answer every request it took, even one it can't read.
        """
        waiting = []
        for _ in range(limit or self.limit):
            try:
                waiting.append(self.sock.recv_multipart(zmq.NOBLOCK, copy=False))
            except zmq.Again:
                break
        if self.newest_only and len(waiting) > 1:
            self.stats[f"{self.topic}.skipped_stale"] += len(waiting) - 1
            waiting = waiting[-1:]
        messages = []
        for parts in waiting:
            peer = parts.pop(0).bytes if self._routed and len(parts) > 1 else None
            msg = self._decode(parts)
            if msg is not None:
                self.last_ns = now_ns
                if type(msg) in VISITOR_MESSAGES:
                    self.visitor_ns = now_ns
            if msg is not None and peer is not None:
                msg = Routed(peer, msg)
            if msg is not None or self._answers_requests:
                messages.append(msg)
        return messages

    def alive(self, now_ns: int) -> bool:
        """Whether a message came recently enough for the topic's rate."""
        if self.last_ns is None:
            return False
        rate = TOPICS[self.topic].rate_hz
        window_s = max(ALIVE_PERIODS / rate, MIN_ALIVE_S) if rate > 0 else float("inf")
        return now_ns - self.last_ns < window_s * 1e9

    @property
    def seen(self) -> bool:
        """Whether any good message has arrived since the inbox opened."""
        return self.last_ns is not None

    def close(self) -> None:
        self.sock.close(linger=0)

    def _decode(self, parts: list[Any]) -> Any:
        self.stats[f"{self.topic}.received"] += 1
        try:
            return decode(parts, expect=self._expect)
        except DecodeError as e:
            self.stats[f"{self.topic}.malformed"] += 1
            self.log.warning("dropped a malformed %s message: %s", self.topic, e)
            return None
