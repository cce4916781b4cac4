"""Opening a topic's socket the way the registry declares it.

:func:`open_socket` gives the socket type of the topic's pattern, its high-water mark and size
limit, the subscription, CURVE on topics that may cross hosts (messages/curve.py), and binds it
when the registry names ``role`` as the binder, else connects. Every endpoint comes from
:func:`messages.topics.endpoint` with the config's transport, ipc folder and port offset.

On a ROUTER/DEALER topic the binder gets a ROUTER and every other end a DEALER, each both sending
and receiving. What the ROUTER receives, and what it is to send, is a :class:`Routed` message:
the peer's routing id beside it. The ROUTER refuses (EHOSTUNREACH) a message for a peer that has
gone instead of dropping it silently, so the sender learns at once that the job went nowhere.

The side that answers requests (``REQ/REP`` topics) is a ROUTER, not a REP: it sees each
request's envelope, so a message without one (a stray DEALER's single frame) is dropped where it
is read instead of leaving a REP socket waiting for a request it can answer, and the answer goes
back with ``NOBLOCK`` from no particular state (messages/inbox.py, actors/runtime/). The clients
stay REQ sockets. A bind that fails raises :class:`BindError` naming the address and the topic;
an ipc endpoint that another live process serves counts as in use too (libzmq would silently
take the socket file over).
"""

from __future__ import annotations

import errno
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zmq

import config
from messages import curve
from messages.topics import TOPICS, endpoint

_TYPES = {
    ("PUB/SUB", True): zmq.SUB,
    ("PUB/SUB", False): zmq.PUB,
    ("PUSH/PULL", True): zmq.PULL,
    ("PUSH/PULL", False): zmq.PUSH,
    ("REQ/REP", True): zmq.ROUTER,
    ("REQ/REP", False): zmq.REQ,
}


class BindError(RuntimeError):
    """An endpoint this process must bind can't be bound (another graph holds it, most likely)."""


@dataclass(frozen=True)
class Routed:
    """A message from or to one peer of a ROUTER socket (``peer``: its routing id)."""

    peer: bytes
    msg: Any


def socket_type(pattern: str, receiving: bool, binding: bool = False) -> int:
    """The ZeroMQ socket type of one end of a pattern (``receiving``: SUB, PULL, or ROUTER for requests;
    on ROUTER/DEALER both ends receive, and ``binding`` says which end: the ROUTER)."""
    if pattern == "ROUTER/DEALER":
        return zmq.ROUTER if binding else zmq.DEALER
    return _TYPES[(pattern, receiving)]


def address(cfg: config.Config, topic: str, binding: bool) -> str:
    """The endpoint of ``topic`` under ``cfg``: loopback, unless a shard topic is configured for other hosts."""
    net = cfg["network"]
    host = "127.0.0.1"
    if TOPICS[topic].remote:
        host = net["bind_host"] if binding else net["query_host"]
    return endpoint(topic, net["transport"], net["ipc_dir"], host, net["port_offset"])


def binds(role: str, topic: str) -> bool:
    """Whether ``role`` binds ``topic``'s endpoint (else it connects)."""
    return TOPICS[topic].binder == role


def open_socket(
    ctx: zmq.Context, cfg: config.Config, topic: str, role: str, receiving: bool, receive_hwm: int | None = None
) -> zmq.Socket:
    """A socket for ``topic`` as ``role`` uses it: bound if the registry says role binds it.

    ``receive_hwm`` replaces the topic's high-water mark on a receiving socket (a recorder must
    queue every frame, where a live receiver wants only the newest few).
    """
    t = TOPICS[topic]
    binding = t.binder == role
    two_way = t.pattern == "ROUTER/DEALER"
    sock = ctx.socket(socket_type(t.pattern, receiving, binding))
    sock.setsockopt(zmq.LINGER, 0)
    if receiving or two_way:
        sock.setsockopt(zmq.RCVHWM, receive_hwm or t.hwm)
        sock.setsockopt(zmq.MAXMSGSIZE, t.max_bytes)
    if not receiving or two_way:
        sock.setsockopt(zmq.SNDHWM, t.hwm)
    if sock.type == zmq.SUB:
        sock.setsockopt(zmq.SUBSCRIBE, topic.encode())
    if two_way and sock.type == zmq.ROUTER:
        sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
    where = address(cfg, topic, binding)
    try:
        curve.secure(sock, ctx, cfg, topic, role, binding)
        if binding:
            _bind(sock, where, topic)
        else:
            sock.connect(where)
    except BaseException:
        sock.close(linger=0)
        raise
    return sock


def _bind(sock: zmq.Socket, where: str, topic: str) -> None:
    if where.startswith("ipc://") and _still_served(Path(where.removeprefix("ipc://"))):
        raise BindError(_in_use(where, topic))
    try:
        sock.bind(where)
    except zmq.ZMQError as e:
        if e.errno == errno.EADDRINUSE:
            raise BindError(_in_use(where, topic)) from None
        raise BindError(f"cannot bind {where} (topic {topic}): {e.strerror}") from None


def _in_use(where: str, topic: str) -> str:
    return f"address in use: {where} (topic {topic}) — is another graph running?"


def _still_served(path: Path, patience_s: float = 1.0) -> bool:
    """Whether ``path`` stays served for ``patience_s``: a socket this process has just closed is
    unbound by libzmq's I/O thread a moment later, and must not count as another graph's."""
    deadline = time.monotonic() + patience_s
    while _served(path):
        if time.monotonic() > deadline:
            return True
        time.sleep(0.02)
    return False


def _served(path: Path) -> bool:
    """Whether a live process accepts connections on the unix socket at ``path`` (a stale file: no)."""
    if not path.exists():
        return False
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(str(path))
        except OSError:
            return False
    return True
