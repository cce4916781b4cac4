"""The one registry of every topic on the kiosk's wire.

Ports are written out by hand (never derived from a name or a list position) and a test proves
they are unique. The long-lived side binds. Every default endpoint is on loopback; tests and
single-machine installs can switch the whole graph to ``ipc://`` sockets in a folder instead
(see :func:`endpoint`). Each topic holds the class of its messages and two flags that other
modules read instead of keeping lists of their own: ``visitor`` (the run loop's privacy scrub)
and ``remote`` (CURVE, and the only topics that may bind or connect beyond loopback).

On a ROUTER/DEALER topic one socket at each end carries messages both ways: the binder (ROUTER)
sends ``message`` to one connected peer it names, each peer (DEALER) answers with ``reply`` and
announces itself with ``control`` (the ZeroMQ Guide's load-balancing pattern; docs/PIPELINE.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from messages.schemas import (
    MAX_FRAME_BYTES,
    ButtonPress,
    ButtonStatus,
    CameraStatus,
    Candidates,
    Credit,
    Encoded,
    FaceJob,
    Faces,
    Frame,
    Matches,
    PrintJob,
    PrintReply,
    Query,
    ReplayControl,
    SessionState,
)


@dataclass(frozen=True)
class Topic:
    name: str
    port: int
    pattern: str  # PUB/SUB, PUSH/PULL, REQ/REP or ROUTER/DEALER
    binder: str  # the actor that binds the endpoint
    message: type  # the class (messages.schemas) of what travels on it; a request on REQ/REP, ROUTER/DEALER
    rate_hz: float  # expected rate while a visitor is present (0 = on demand)
    hwm: int  # high-water mark on both ends
    max_bytes: int = 1 << 20  # a bigger message makes the receiving socket drop the connection
    # Its messages exist only while a visitor stands there (chips, descriptors, matches...): when
    # none has flowed for privacy.scrub_after_s the visitor has gone, and kiosk mode scrubs.
    visitor: bool = False
    # May cross to another host (the query side's link to remote shards, CURVE-protected);
    # every other topic stays on loopback or ipc whatever the config says.
    remote: bool = False
    reply: type | None = None  # on REQ/REP and ROUTER/DEALER: the class of the answer
    # On ROUTER/DEALER: what a peer sends to announce itself and stay known (credits, heartbeats).
    # Never visitor data, so it flows while nobody is there without holding off the privacy scrub.
    control: type | None = None


TOPICS: dict[str, Topic] = {
    t.name: t
    for t in (
        Topic("frames", 5601, "PUB/SUB", "camera", Frame, 30.0, 2, MAX_FRAME_BYTES + 65536),
        Topic("faces", 5602, "PUB/SUB", "detector", Faces, 30.0, 2),
        Topic("queries", 5603, "PUB/SUB", "detector", Query, 15.0, 10, visitor=True, remote=True),
        Topic("candidates", 5604, "PUSH/PULL", "reducer", Candidates, 30.0, 100, visitor=True, remote=True),
        Topic("matches", 5605, "PUB/SUB", "reducer", Matches, 15.0, 10, visitor=True),
        Topic("print", 5606, "REQ/REP", "printer", PrintJob, 0.0, 10, visitor=True, reply=PrintReply),
        # Work sharing between encoder processes with flow control: each encoder announces its
        # credits, the detector sends a chip only to one with a free credit, every descriptor gives
        # the credit back; the detector restores the order. See docs/PIPELINE.md. (5611 was the
        # descriptors' PUSH/PULL return path; they now come back on this socket.)
        Topic(
            "chips", 5610, "ROUTER/DEALER", "detector", FaceJob, 5.0, 10, visitor=True, reply=Encoded, control=Credit
        ),
        Topic("camera_status", 5612, "PUB/SUB", "camera", CameraStatus, 1.0, 10),
        Topic("replay_control", 5613, "REQ/REP", "camera", ReplayControl, 0.0, 10, reply=CameraStatus),
        # The physical print button (actors/button/). The button actor binds all three, so the display
        # binds nothing: the window publishes its session state to it and takes its presses from it,
        # and the button actor runs (idle) in every graph, with or without a device.
        Topic("session", 5620, "PUB/SUB", "button", SessionState, 2.0, 10),
        Topic("presses", 5621, "PUSH/PULL", "button", ButtonPress, 0.0, 10),
        Topic("button_status", 5622, "PUB/SUB", "button", ButtonStatus, 1.0, 10),
    )
}

# Derived from the flags above, never listed by hand.
VISITOR_TOPICS = frozenset(name for name, t in TOPICS.items() if t.visitor)
REMOTE_TOPICS = frozenset(name for name, t in TOPICS.items() if t.remote)
# The message classes that carry a visitor's data (a visitor topic's requests and answers, not its
# control messages): what the privacy scrub waits to see stop.
VISITOR_MESSAGES = frozenset(c for t in TOPICS.values() if t.visitor for c in (t.message, t.reply) if c is not None)
# The registered topic on whose socket each message class is sent: the topic it is the message of,
# else the one it answers or controls (CameraStatus is camera_status's message and replay_control's reply).
TOPIC_OF: dict[type, str] = {
    **{c: t.name for t in TOPICS.values() for c in (t.reply, t.control) if c is not None},
    **{t.message: t.name for t in TOPICS.values()},
}


def arriving(topic: str, at_binder: bool) -> tuple[str, ...]:
    """The message topics (``Frame.TOPIC``...) that arrive at one end of ``topic``'s sockets."""
    t = TOPICS[topic]
    if t.pattern == "ROUTER/DEALER" and at_binder:
        return tuple(c.TOPIC for c in (t.reply, t.control) if c is not None)
    return (t.message.TOPIC,)


def endpoint(
    topic: str, transport: str = "tcp", ipc_dir: str | Path = "", host: str = "127.0.0.1", port_offset: int = 0
) -> str:
    """The ZeroMQ address of ``topic``: TCP on its registered port (loopback unless told), or ipc."""
    t = TOPICS[topic]
    if transport == "tcp":
        return f"tcp://{host}:{t.port + port_offset}"
    if transport == "ipc":
        if not ipc_dir:
            raise ValueError("transport 'ipc' needs an ipc_dir")
        return f"ipc://{Path(ipc_dir) / t.name}.sock"
    raise ValueError(f"unknown transport {transport!r}: allowed 'tcp', 'ipc'")
