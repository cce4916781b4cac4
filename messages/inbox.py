"""One socket's incoming messages, taken without blocking and decoded through the one codec.

Every receiver on the kiosk reads through an :class:`Inbox`: the actors' run loop
(actors/runtime/), the Kivy display (ui_kivy/app.py) and the replay_control command. It takes
what is waiting, up to a limit, never blocking; on a ``newest_only`` stream (frames) only the
newest waiting message is decoded and the older ones are counted as stale. A message the codec
refuses is counted (``<topic>.malformed``), logged and dropped. The inbox also says whether the
stream is *alive*: a message came within ``ALIVE_PERIODS`` periods of the topic's registered rate,
and when a message with the visitor's data last came (``visitor_ns``, for the privacy scrub).

On the binding ROUTER of a ``ROUTER/DEALER`` topic (the detector's ``chips``) each message comes
as a :class:`~messages.sockets.Routed` (the peer beside it).

Requests and replies (``REQ/REP`` topics):

- on the answering side (a ROUTER, messages/sockets.py) each message is a :class:`Request`: the
  envelope to answer to and the decoded request, ``None`` when it can't be read, so the caller
  still answers it (with a refusal) and the client's REQ socket isn't left waiting. A message
  without an envelope (a bare DEALER frame, no empty delimiter) can't be answered: it is counted
  (``<topic>.unanswerable`` and ``.malformed``) and dropped, and nothing waits for it;
- on a client's REQ socket the inbox decodes replies (the topic's ``reply`` class); an unreadable
  one is a ``None``: the exchange is over and the client should know. A reply without an
  envelope never gets here: over tcp and ipc libzmq's REQ drops the connection that sent it (the
  reply in flight is lost; the client's deadline and retry cover that), over inproc the socket
  skips it, after a poll has already said "ready" (so a blocking read there would wait).
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from typing import Any

import zmq

from messages.codec import DecodeError, decode
from messages.sockets import Routed
from messages.topics import TOPICS, VISITOR_MESSAGES, arriving

ALIVE_PERIODS = 10  # a stream is alive while a message came within this many periods of its rate...
MIN_ALIVE_S = 2.0  # ...and never less than this: a busy detector on two cores runs at a few frames/s
MAX_ENVELOPE_FRAMES = 8  # routing id, proxies' ids, the empty delimiter; a longer one is not a request


@dataclass(frozen=True)
class Request:
    """A request taken from the answering side of a ``REQ/REP`` topic."""

    envelope: list[bytes]  # the routing id(s) and the empty delimiter: the answer goes back behind these
    msg: Any  # the decoded request; None when it could not be read (answer it with a refusal)


def split_envelope(parts: list[bytes]) -> tuple[list[bytes], list[bytes]] | None:
    """``(envelope, body)`` of a message a ROUTER read, or None when it carries no envelope.

    The ROUTER puts the sender's routing id first; a REQ client sends an empty delimiter before
    its message. Without that delimiter (within MAX_ENVELOPE_FRAMES) there is nobody to answer.
    """
    for i in range(1, min(len(parts), MAX_ENVELOPE_FRAMES)):
        if len(parts[i]) == 0:
            return parts[: i + 1], parts[i + 1 :]
    return None


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
        requests = TOPICS[topic].pattern == "REQ/REP"
        self.answers_requests = requests and sock.type == zmq.ROUTER
        self._awaits_reply = requests and sock.type == zmq.REQ
        self._routed = sock.type == zmq.ROUTER and not requests
        reply = TOPICS[topic].reply
        self._expect = (
            (reply.TOPIC,) if self._awaits_reply and reply is not None else arriving(topic, at_binder=self._routed)
        )

    def receive(self, now_ns: int, limit: int | None = None) -> list[Any]:
        """What is waiting (at most ``limit`` messages read), decoded, oldest first.

        Malformed messages are dropped, except requests and replies (see the module's text): on
        the answering side every message is a :class:`Request`, on a REQ socket a bad reply is None.
        """
        waiting = []
        for _ in range(limit or self.limit):
            try:
                waiting.append(self.sock.recv_multipart(zmq.NOBLOCK, copy=False))
            except zmq.Again:
                break
            except zmq.ZMQError as e:
                if e.errno == zmq.EFSM:  # a REQ socket with no request in flight: no reply to wait for
                    break
                raise
        if self.newest_only and len(waiting) > 1:
            self.stats[f"{self.topic}.skipped_stale"] += len(waiting) - 1
            waiting = waiting[-1:]
        messages = []
        for parts in waiting:
            if self.answers_requests:
                request = self._request([p.bytes for p in parts], now_ns)
                if request is not None:
                    messages.append(request)
                continue
            peer = parts.pop(0).bytes if self._routed and len(parts) > 1 else None
            msg = self._decode(parts)
            if msg is not None:
                self.last_ns = now_ns
                if type(msg) in VISITOR_MESSAGES:
                    self.visitor_ns = now_ns
            if msg is not None and peer is not None:
                msg = Routed(peer, msg)
            if msg is not None or self._awaits_reply:
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

    def _request(self, parts: list[bytes], now_ns: int) -> Request | None:
        split = split_envelope(parts)
        if split is None:
            self.stats[f"{self.topic}.received"] += 1
            self.stats[f"{self.topic}.malformed"] += 1
            self.stats[f"{self.topic}.unanswerable"] += 1
            self.log.warning("dropped a %s message without an envelope: nobody to answer it", self.topic)
            return None
        envelope, body = split
        msg = self._decode(body)
        if msg is not None:
            self.last_ns = now_ns
            if type(msg) in VISITOR_MESSAGES:
                self.visitor_ns = now_ns
        return Request(envelope, msg)

    def _decode(self, parts: list[Any]) -> Any:
        self.stats[f"{self.topic}.received"] += 1
        try:
            return decode(parts, expect=self._expect)
        except DecodeError as e:
            self.stats[f"{self.topic}.malformed"] += 1
            self.log.warning("dropped a malformed %s message: %s", self.topic, e)
            return None
