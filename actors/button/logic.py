"""The print button's logic, without sockets or devices: what the light shows, which presses count,
how the serial line protocol reads and writes, how often a missing device is looked for, and what
the operator reads about it. Times are ``time.monotonic_ns()`` values passed in by the caller.

The serial line protocol (docs/BUTTON.md): ASCII lines ending in ``\\n`` (a ``\\r`` before it is
ignored), at most MAX_LINE_BYTES long.

- device -> host: ``HELLO MPBUTTON 1`` at start-up and in answer to ``HELLO`` (a name, then the
  protocol version); ``PRESS`` when the button goes down.
- host -> device: ``HELLO`` (who are you?), ``LED ON``, ``LED OFF``, ``LED PULSE``. The host says
  the light again every few seconds, so a device that restarted catches up; the same command
  twice changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

from messages import ButtonStatus, SessionState

NS = 1_000_000_000
OFF, ON, PULSE = "OFF", "ON", "PULSE"
PROTOCOL_VERSION = 1
MAX_LINE_BYTES = 64
SESSION_STALE_S = 3.0  # the window says its state twice a second: older than this, the window is gone


def light_for(state: SessionState | None, now_ns: int) -> str:
    """What the button shows for the display's last word about its session.

    Pulsing while a receipt prints, lit while the screen's print button is lit (a match under the
    threshold, not printed yet), off otherwise: attract, searching, no close match, after printing,
    and whenever the window's last word is older than SESSION_STALE_S (gone, frozen, or headless).
    The age is the message's own (its header's monotonic time, on this machine), so states the
    window queued before the button's socket was there are old news too.
    """
    if state is None or now_ns - state.header.t_ns > SESSION_STALE_S * NS:
        return OFF
    if state.phase == "printing":
        return PULSE
    return ON if state.lit else OFF


class Debounce:
    """One press per burst: a press counts only when none came (counted or not) in the last ``gap_s``.

    A bouncing contact, a double press, a repeating key held down: each burst is one press. The
    display's own rules (one print job at a time, one receipt per visitor) apply after this.
    """

    def __init__(self, gap_s: float):
        self.gap_ns = int(gap_s * NS)
        self._last_ns: int | None = None

    def accept(self, now_ns: int) -> bool:
        quiet = self._last_ns is None or now_ns - self._last_ns >= self.gap_ns
        self._last_ns = now_ns
        return quiet


class Backoff:
    """When to look for a missing device again: after ``first_s``, then twice as long each time, up
    to ``max_s``; back to ``first_s`` once the device has been found."""

    def __init__(self, first_s: float, max_s: float):
        self.first_s, self.max_s = first_s, max_s
        self.delay_s = first_s

    def next_delay_s(self) -> float:
        delay, self.delay_s = self.delay_s, min(self.delay_s * 2, self.max_s)
        return delay

    def reset(self) -> None:
        self.delay_s = self.first_s


@dataclass(frozen=True)
class DeviceLine:
    """One line from the device: ``kind`` is ``press``, ``hello`` or ``bad`` (``why`` says what was wrong)."""

    kind: str
    text: str = ""
    name: str = ""
    version: int | None = None
    why: str = ""


def parse_line(raw: bytes) -> DeviceLine:
    """One line from the device (without its ``\\n``), read leniently: case and spaces don't matter."""
    try:
        text = raw.decode("ascii").strip()
    except UnicodeDecodeError:
        return DeviceLine("bad", repr(raw[:MAX_LINE_BYTES]), why="not ASCII")
    words = text.upper().split()
    if words == ["PRESS"]:
        return DeviceLine("press", text)
    if words and words[0] == "HELLO" and len(words) <= 3:
        version = None
        if len(words) == 3:
            if not words[2].isdigit():
                return DeviceLine("bad", text, why="HELLO's version is not a number")
            version = int(words[2])
        return DeviceLine("hello", text, name=words[1] if len(words) > 1 else "", version=version)
    if not text:
        return DeviceLine("bad", text, why="an empty line")
    return DeviceLine("bad", text, why="not PRESS or HELLO")


class LineSplitter:
    """Bytes from the device in, whole lines out. A line longer than MAX_LINE_BYTES is given as bad
    (its first bytes) and the rest of it, up to the next ``\\n``, is skipped: noise can't fill memory."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._skipping = False

    def feed(self, data: bytes) -> list[DeviceLine]:
        lines: list[DeviceLine] = []
        self._buf += data
        while True:
            end = self._buf.find(b"\n")
            if end < 0:
                if len(self._buf) > MAX_LINE_BYTES:
                    if not self._skipping:
                        lines.append(_overlong(bytes(self._buf)))
                    self._skipping = True
                    self._buf.clear()
                return lines
            line, self._buf = bytes(self._buf[:end]), self._buf[end + 1 :]
            if self._skipping:
                self._skipping = False  # the end of a line already reported as too long
            elif len(line) > MAX_LINE_BYTES:
                lines.append(_overlong(line))
            else:
                lines.append(parse_line(line))


def _overlong(line: bytes) -> DeviceLine:
    return DeviceLine("bad", repr(line[:MAX_LINE_BYTES]), why=f"longer than {MAX_LINE_BYTES} bytes")


def hello_problem(line: DeviceLine) -> str:
    """What is wrong with a device's HELLO ('' when it speaks our protocol)."""
    if line.version is not None and line.version != PROTOCOL_VERSION:
        return f"the device speaks protocol version {line.version}, this kiosk speaks {PROTOCOL_VERSION}"
    return ""


def command(light: str) -> bytes:
    """The host's line that sets the light."""
    return f"LED {light}\n".encode()


HELLO = b"HELLO\n"


def button_alert(status: ButtonStatus | None) -> str:
    """What the operator reads about the print button ('' unless a configured device is missing)."""
    if status is None or status.state != "missing":
        return ""
    # The reason first: a long device name is what the alert line may cut short.
    why = f" ({status.detail})" if status.detail else ""
    return f"print button missing{why}: {status.device}; the screen's button still works"
