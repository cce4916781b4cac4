"""Opening a topic's socket the way the registry declares it.

:func:`open_socket` gives the socket type of the topic's pattern, its high-water mark and size
limit, the subscription, CURVE on topics that may cross hosts (messages/curve.py), and binds it
when the registry names ``role`` as the binder, else connects. Every endpoint comes from
:func:`messages.topics.endpoint` with the config's transport, ipc folder and port offset.
"""

from __future__ import annotations

import zmq

import config
from messages import curve
from messages.topics import TOPICS, endpoint

_TYPES = {
    ("PUB/SUB", True): zmq.SUB,
    ("PUB/SUB", False): zmq.PUB,
    ("PUSH/PULL", True): zmq.PULL,
    ("PUSH/PULL", False): zmq.PUSH,
    ("REQ/REP", True): zmq.REP,
    ("REQ/REP", False): zmq.REQ,
}


def socket_type(pattern: str, receiving: bool) -> int:
    """The ZeroMQ socket type of one end of a pattern (``receiving``: SUB, PULL, REP)."""
    return _TYPES[(pattern, receiving)]


def address(cfg: config.Config, topic: str, binding: bool) -> str:
    """The endpoint of ``topic`` under ``cfg``: loopback, unless a shard topic is configured for other hosts."""
    net = cfg["network"]
    host = "127.0.0.1"
    if TOPICS[topic].remote:
        host = net["bind_host"] if binding else net["query_host"]
    return endpoint(topic, net["transport"], net["ipc_dir"], host, net["port_offset"])


def open_socket(ctx: zmq.Context, cfg: config.Config, topic: str, role: str, receiving: bool) -> zmq.Socket:
    """A socket for ``topic`` as ``role`` uses it: bound if the registry says role binds it."""
    t = TOPICS[topic]
    sock = ctx.socket(socket_type(t.pattern, receiving))
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVHWM if receiving else zmq.SNDHWM, t.hwm)
    if receiving:
        sock.setsockopt(zmq.MAXMSGSIZE, t.max_bytes)
    if sock.type == zmq.SUB:
        sock.setsockopt(zmq.SUBSCRIBE, topic.encode())
    binding = t.binder == role
    curve.secure(sock, ctx, cfg, topic, role, binding)
    if binding:
        sock.bind(address(cfg, topic, binding))
    else:
        sock.connect(address(cfg, topic, binding))
    return sock
