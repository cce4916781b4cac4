"""Every message type on the wire, declared once.

Each message is a frozen dataclass whose fields are the msgpack map that travels on the wire,
plus an optional binary payload that travels as the last frame of a multipart message (raw
pixels, never msgpack-encoded pixel lists). Every message carries a :class:`Header`.

The ``LIMITS`` of each class bound the size of lists, strings and payloads so a malformed or
hostile message can't make an actor allocate without bound.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import ClassVar

SCHEMA_VERSION = 1
MAX_FRAME_BYTES = 3840 * 2160 * 3  # a 4K RGB frame
DIM = 128  # a face descriptor's dimensions (dlib's ResNet); every descriptor is DIM little-endian float32
CHIP_PX = 150  # the side of an aligned face chip, in pixels
MAX_CREDITS = 8  # the most jobs an encoder may take at once (Credit.credits)
LIKELY_YOU = "likely you"  # the calibrated verdicts a Result can carry (index/calibration.py decides)
LOOK_ALIKE = "look-alike"
VERDICTS = (LIKELY_YOU, LOOK_ALIKE)
# The display's session phases (ui_kivy.session.Phase values), the print button's lights and its states.
SESSION_PHASES = ("attract", "present", "searching", "results", "printing")
LIGHTS = ("OFF", "ON", "PULSE")
BUTTON_STATES = ("off", "connected", "missing")


@dataclass(frozen=True)
class Header:
    seq: int  # per-source sequence number
    t_ns: int  # time.monotonic_ns() when the message was made
    src: str  # the actor that made it, e.g. "matcher.1"
    frame_id: int  # the camera frame this message derives from (-1 when none)
    v: int = SCHEMA_VERSION


class Headers:
    """The headers of one source: ``seq`` counts up from 1, ``t_ns`` is the monotonic clock."""

    def __init__(self, src: str):
        self.src = src
        self.seq = 0

    def next(self, frame_id: int = -1) -> Header:
        self.seq += 1
        return Header(seq=self.seq, t_ns=time.monotonic_ns(), src=self.src, frame_id=frame_id)


@dataclass(frozen=True)
class Frame:
    """One RGB camera frame; the pixels are the payload (h * w * 3 bytes, row-major)."""

    TOPIC: ClassVar[str] = "frames"
    PAYLOAD: ClassVar[bool] = True
    header: Header
    width_px: int
    height_px: int
    source: str  # "webcam:0", "replay:obama_2s.mp4", ...
    pixels: bytes = field(repr=False, default=b"")


@dataclass(frozen=True)
class Faces:
    """Faces found in one frame. ``visitor`` indexes ``boxes`` (-1: nobody there).

    Boxes are ``[left, top, right, bottom]`` in frame pixels. The payload is the visitor's
    aligned CHIP_PX x CHIP_PX RGB face chip, empty when there is no visitor.
    """

    TOPIC: ClassVar[str] = "faces"
    PAYLOAD: ClassVar[bool] = True
    header: Header
    width_px: int
    height_px: int
    captured_ns: int  # when the camera made the frame (monotonic clock)
    boxes: list[list[int]]
    visitor: int
    chip: bytes = field(repr=False, default=b"")


@dataclass(frozen=True)
class Query:
    """A visitor's descriptor to search for: 128 little-endian float32."""

    TOPIC: ClassVar[str] = "queries"
    PAYLOAD: ClassVar[bool] = False
    header: Header
    query_id: int
    captured_ns: int
    k: int
    descriptor: bytes


@dataclass(frozen=True)
class Candidates:
    """One shard's answer to one query: global row ids and distances, best first."""

    TOPIC: ClassVar[str] = "candidates"
    PAYLOAD: ClassVar[bool] = False
    header: Header
    query_id: int
    captured_ns: int
    k: int
    shard: int
    n_shards: int
    rows: list[int]
    distances: list[float]


@dataclass(frozen=True)
class Result:
    """One gallery match, as the display and the printer receive it (a map inside Matches and PrintJob).

    ``rank`` counts every searched row, so a gap shows that a synthetic distractor (never shown)
    came closer. ``photo`` is relative to the dataset root and ``box`` is the face in it,
    ``[left, top, right, bottom]`` (``[]`` when the index has none). ``p_same`` (the probability
    that this is the visitor rather than a look-alike) and ``verdict`` are set when the index is
    calibrated, else ``None`` and ``""``. The provenance (the Flickr account ``nsid``, ``photo_id``,
    ``licence``, ``date_taken``, ``url``) is what the dataset gives for the photo, ``""`` where it
    gives nothing (or a value longer than its LIMITS entry).
    """

    rank: int
    identity: str
    distance: float
    photo: str
    row: int
    box: list[int] = field(default_factory=list)
    p_same: float | None = None
    verdict: str = ""
    nsid: str = ""
    photo_id: str = ""
    licence: str = ""
    date_taken: str = ""
    url: str = ""


@dataclass(frozen=True)
class Matches:
    """The merged top-k for one query, with identity metadata, best first.

    ``partial`` is true when shards in ``missing_shards`` did not answer by the deadline.
    ``captured_ns`` is when the camera made the frame the query came from (monotonic clock).
    ``lookalikes`` is one sentence: about how many people in the dataset would look at least as much like
    the visitor as the best match, by chance (index/lookalikes.py); ``""`` when the index has no table.
    """

    TOPIC: ClassVar[str] = "matches"
    PAYLOAD: ClassVar[bool] = False
    header: Header
    query_id: int
    captured_ns: int
    results: list[Result]
    partial: bool
    missing_shards: list[int]
    latency_ms: float  # from the camera's frame to this message
    lookalikes: str = ""


@dataclass(frozen=True)
class PrintJob:
    """A request to print a receipt of one result list (the visitor's face only if the operator allows it)."""

    TOPIC: ClassVar[str] = "print"
    PAYLOAD: ClassVar[bool] = False
    header: Header
    query_id: int
    results: list[Result]
    # The visitor's face chip as JPEG, sent only when the operator set printer.print_visitor_face.
    visitor_face_jpeg: bytes = field(repr=False, default=b"")
    lookalikes: str = ""  # the results' sentence (Matches.lookalikes), printed on the receipt


@dataclass(frozen=True)
class PrintReply:
    TOPIC: ClassVar[str] = "printed"
    PAYLOAD: ClassVar[bool] = False
    header: Header
    query_id: int
    ok: bool
    detail: str  # the receipt's path, or what went wrong


@dataclass(frozen=True)
class FaceJob:
    """One visitor chip to encode, sent to exactly one encoder process, one that has a free credit.

    ``job_id`` increases by one per job, so the detector can put the encoders' answers back in
    order; ``track_id`` names the visitor's face track (the same person in consecutive frames).
    """

    TOPIC: ClassVar[str] = "chips"
    PAYLOAD: ClassVar[bool] = True
    header: Header
    job_id: int
    captured_ns: int
    track_id: int
    chip: bytes = field(repr=False, default=b"")


@dataclass(frozen=True)
class Encoded:
    """An encoder's answer to one FaceJob: 128 little-endian float32. It gives the job's credit back."""

    TOPIC: ClassVar[str] = "descriptors"
    PAYLOAD: ClassVar[bool] = False
    header: Header
    job_id: int
    captured_ns: int
    track_id: int
    descriptor: bytes


@dataclass(frozen=True)
class Credit:
    """An encoder's announcement on ``chips``: it takes ``credits`` jobs at once.

    Sent when its connection opens (start, reconnection after a privacy scrub) and then whenever it
    has sent nothing for a heartbeat period, so the detector knows it is alive. ``instance`` is a
    random number drawn when the encoder process starts: a new connection with a known instance is
    the same encoder reconnected, and whatever the old connection held is lost. No visitor data.
    """

    TOPIC: ClassVar[str] = "credit"
    PAYLOAD: ClassVar[bool] = False
    header: Header
    credits: int
    instance: int


@dataclass(frozen=True)
class CameraStatus:
    """What the camera is doing, for the display: published on every change and once a second.

    ``state`` is one of ``live`` (webcam delivering), ``lost`` (webcam gone, reconnecting),
    ``replay``, ``paused``, ``finished`` (replay ended, not looping).
    """

    TOPIC: ClassVar[str] = "camera_status"
    PAYLOAD: ClassVar[bool] = False
    header: Header
    state: str
    source: str
    detail: str
    frames: int  # frames published so far
    rate: float  # replay speed (1.0 = real time, 0 = as fast as possible)


@dataclass(frozen=True)
class ReplayControl:
    """A request to the camera: ``pause``, ``resume``, ``step`` (one frame while paused),
    ``rate`` (``value`` = speed), ``seek`` (``value`` = seconds from the start) or ``status``.
    The camera answers with a CameraStatus."""

    TOPIC: ClassVar[str] = "replay_control"
    PAYLOAD: ClassVar[bool] = False
    header: Header
    command: str
    value: float = 0.0


@dataclass(frozen=True)
class SessionState:
    """What the display's session is doing, for the physical print button: sent by the window on every
    change and twice a second. ``phase`` is a :class:`ui_kivy.session.Phase` value (``attract``,
    ``present``, ``searching``, ``results``, ``printing``); ``lit`` is true exactly when the screen's
    print button is lit (results up, best match within the threshold, not printed yet). No visitor data.
    """

    TOPIC: ClassVar[str] = "session"
    PAYLOAD: ClassVar[bool] = False
    header: Header
    phase: str
    lit: bool


@dataclass(frozen=True)
class ButtonPress:
    """The physical print button was pressed (debounced by the button actor); the display treats it as
    a touch of its own print button. ``source`` names the device ("serial:/dev/ttyACM0", "gpio:17")."""

    TOPIC: ClassVar[str] = "presses"
    PAYLOAD: ClassVar[bool] = False
    header: Header
    source: str


@dataclass(frozen=True)
class ButtonStatus:
    """What the button actor is doing, for the operator: published on every change and once a second.

    ``state`` is ``off`` (no device configured: ``button.backend`` is ``none`` or ``key``),
    ``connected`` or ``missing`` (configured but not there: unplugged, no such port, no GPIO; the
    actor retries). ``light`` is what it shows (``OFF``, ``ON``, ``PULSE``); ``bad_lines`` counts
    the device's lines it could not read and dropped.
    """

    TOPIC: ClassVar[str] = "button_status"
    PAYLOAD: ClassVar[bool] = False
    header: Header
    state: str
    backend: str
    device: str
    detail: str
    light: str
    presses: int
    bad_lines: int


MESSAGE_TYPES: dict[str, type] = {
    cls.TOPIC: cls
    for cls in (
        Frame,
        Faces,
        Query,
        Candidates,
        Matches,
        PrintJob,
        PrintReply,
        FaceJob,
        Encoded,
        Credit,
        CameraStatus,
        ReplayControl,
        SessionState,
        ButtonPress,
        ButtonStatus,
    )
}

# Upper bounds per field (list length, string length or byte count).
LIMITS: dict[str, int] = {
    "pixels": MAX_FRAME_BYTES,
    "chip": CHIP_PX * CHIP_PX * 3,
    "descriptor": DIM * 4,
    "box": 4,
    "identity": 256,
    "photo": 1024,
    "verdict": 16,
    "nsid": 64,
    "photo_id": 64,
    "licence": 256,
    "date_taken": 64,
    "url": 2048,
    "lookalikes": 512,
    "boxes": 64,
    "rows": 1000,
    "distances": 1000,
    "results": 100,
    "missing_shards": 256,
    "missing": 256,
    "source": 256,
    "src": 64,
    "detail": 1024,
    "visitor_face_jpeg": 256 * 1024,
    "state": 16,
    "command": 16,
    "phase": 16,
    "backend": 16,
    "device": 256,
    "light": 16,
}
