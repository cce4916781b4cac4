"""The kiosk's wire and transport: topic registry, message schemas, codec, sockets, one inbox.

- :mod:`messages.schemas` every message type, declared once;
- :mod:`messages.topics` every topic (port, pattern, binder, message class, rate, flags);
- :mod:`messages.codec` the one msgpack encode / validating decode path;
- :mod:`messages.sockets` opening a topic's socket as the registry says (with :mod:`messages.curve`);
- :mod:`messages.inbox` non-blocking, counted, validated receiving, used by every receiver.
"""

from messages import curve
from messages.codec import DecodeError, EncodeError, decode, encode
from messages.inbox import Inbox, Request
from messages.schemas import (
    CHIP_PX,
    DIM,
    LIKELY_YOU,
    LOOK_ALIKE,
    VERDICTS,
    ButtonPress,
    ButtonStatus,
    CameraStatus,
    Candidates,
    Credit,
    Encoded,
    FaceJob,
    Faces,
    Frame,
    Header,
    Headers,
    Matches,
    PrintJob,
    PrintReply,
    Query,
    ReplayControl,
    Result,
    SessionState,
)
from messages.sockets import BindError, Routed, open_socket
from messages.topics import REMOTE_TOPICS, TOPIC_OF, TOPICS, VISITOR_MESSAGES, VISITOR_TOPICS, Topic, endpoint

__all__ = [
    "CHIP_PX",
    "DIM",
    "LIKELY_YOU",
    "LOOK_ALIKE",
    "REMOTE_TOPICS",
    "TOPICS",
    "TOPIC_OF",
    "VERDICTS",
    "VISITOR_MESSAGES",
    "VISITOR_TOPICS",
    "BindError",
    "ButtonPress",
    "ButtonStatus",
    "CameraStatus",
    "Candidates",
    "Credit",
    "DecodeError",
    "EncodeError",
    "Encoded",
    "FaceJob",
    "Faces",
    "Frame",
    "Header",
    "Headers",
    "Inbox",
    "Matches",
    "PrintJob",
    "PrintReply",
    "Query",
    "ReplayControl",
    "Request",
    "Result",
    "Routed",
    "SessionState",
    "Topic",
    "curve",
    "decode",
    "encode",
    "endpoint",
    "open_socket",
]
