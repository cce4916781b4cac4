"""The one registry of every topic on the kiosk's wire.

Ports are written out by hand (never derived from a name or a list position) and a test proves
they are unique. The long-lived side binds. Every default endpoint is on loopback; tests and
single-machine installs can switch the whole graph to ``ipc://`` sockets in a folder instead
(see :func:`endpoint`). Each topic holds the class of its messages and two flags that other
modules read instead of keeping lists of their own: ``visitor`` (the run loop's privacy scrub)
and ``remote`` (CURVE, and the only topics that may bind or connect beyond loopback).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from messages.schemas import (
    MAX_FRAME_BYTES,
    CameraStatus,
    Candidates,
    Encoded,
    FaceJob,
    Faces,
    Frame,
    Matches,
    PrintJob,
    PrintReply,
    Query,
    ReplayControl,
)


@dataclass(frozen=True)
class Topic:
    name: str
    port: int
    pattern: str  # PUB/SUB, PUSH/PULL or REQ/REP
    binder: str  # the actor that binds the endpoint
    message: type  # the class (messages.schemas) of what travels on it; a request on REQ/REP
    rate_hz: float  # expected rate while a visitor is present (0 = on demand)
    hwm: int  # high-water mark on both ends
    max_bytes: int = 1 << 20  # a bigger message makes the receiving socket drop the connection
    # Its messages exist only while a visitor stands there (chips, descriptors, matches...): when
    # none has flowed for privacy.scrub_after_s the visitor has gone, and kiosk mode scrubs.
    visitor: bool = False
    # May cross to another host (the query side's link to remote shards, CURVE-protected);
    # every other topic stays on loopback or ipc whatever the config says.
    remote: bool = False
    reply: type | None = None  # on REQ/REP: the class of the answer


TOPICS: dict[str, Topic] = {
    t.name: t
    for t in (
        Topic("frames", 5601, "PUB/SUB", "camera", Frame, 30.0, 2, MAX_FRAME_BYTES + 65536),
        Topic("faces", 5602, "PUB/SUB", "detector", Faces, 30.0, 2),
        Topic("queries", 5603, "PUB/SUB", "detector", Query, 15.0, 10, visitor=True, remote=True),
        Topic("candidates", 5604, "PUSH/PULL", "reducer", Candidates, 30.0, 100, visitor=True, remote=True),
        Topic("matches", 5605, "PUB/SUB", "reducer", Matches, 15.0, 10, visitor=True),
        Topic("print", 5606, "REQ/REP", "printer", PrintJob, 0.0, 10, visitor=True, reply=PrintReply),
        # Work sharing between several encoder processes (PUSH gives each job to exactly one),
        # and their answers back to the detector, which restores the order. See docs/PIPELINE.md.
        Topic("chips", 5610, "PUSH/PULL", "detector", FaceJob, 5.0, 2, visitor=True),
        Topic("descriptors", 5611, "PUSH/PULL", "detector", Encoded, 5.0, 100, visitor=True),
        Topic("camera_status", 5612, "PUB/SUB", "camera", CameraStatus, 1.0, 10),
        Topic("replay_control", 5613, "REQ/REP", "camera", ReplayControl, 0.0, 10, reply=CameraStatus),
    )
}

# Derived from the flags above, never listed by hand.
VISITOR_TOPICS = frozenset(name for name, t in TOPICS.items() if t.visitor)
REMOTE_TOPICS = frozenset(name for name, t in TOPICS.items() if t.remote)


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
