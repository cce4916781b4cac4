"""Wire contract of the kiosk: topic registry, message schemas and the msgpack codec."""

from messages.codec import DecodeError, decode, encode
from messages.schemas import (
    CHIP_PX,
    DESCRIPTOR_DIM,
    Candidates,
    Faces,
    Frame,
    Header,
    Matches,
    PrintJob,
    PrintReply,
    Query,
)
from messages.topics import TOPICS, Topic, endpoint

__all__ = [
    "CHIP_PX",
    "DESCRIPTOR_DIM",
    "TOPICS",
    "Candidates",
    "DecodeError",
    "Faces",
    "Frame",
    "Header",
    "Matches",
    "PrintJob",
    "PrintReply",
    "Query",
    "Topic",
    "decode",
    "encode",
    "endpoint",
]
