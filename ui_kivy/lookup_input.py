"""The "Are my photos in it?" screen's typing and lifetime, in plain Python (no Kivy, no sockets).

The screen opens from a button in the title row. The visitor types on the on-screen keyboard
(:data:`KEY_ROWS`) or a physical one, and touches search (or presses Enter); the window then asks
index/lookup.py and keeps its answer here. The screen closes on Back, when the visitor leaves (the
camera has seen nobody for the session's ``leave_s``, as when the session resets: ui_kivy/session.py)
and after ``idle_s`` without a touch or a key. Closing drops
the text and the answer: what was typed lives in this object and the widgets showing it, and
nowhere else (never logged, sent or written; tests/test_privacy.py traces the window to show it).

Times are ``time.monotonic_ns()`` values passed in by the caller, so tests drive the clock.
"""

from __future__ import annotations

from typing import Any

NS = 1_000_000_000
SHIFT, BACKSPACE, CLEAR, SEARCH = "shift", "backspace", "clear", "search"
COMMANDS = (SHIFT, BACKSPACE, CLEAR, SEARCH)
# The on-screen keyboard, row by row: (key, width in key units); every row is 10 units wide.
KEY_ROWS: tuple[tuple[tuple[str, float], ...], ...] = (
    tuple((k, 1.0) for k in "1234567890"),
    tuple((k, 1.0) for k in "qwertyuiop"),
    tuple((k, 1.0) for k in "asdfghjkl@"),
    ((SHIFT, 1.0), *((k, 1.0) for k in "zxcvbnm./")),
    ((":", 1.0), ("_", 1.0), ("-", 1.0), (CLEAR, 1.75), (BACKSPACE, 1.75), (SEARCH, 3.5)),
)
MAX_CHARS = 200  # a Flickr address is well under this; index/flickr.py refuses anything over 512


def typable(chars: str) -> str:
    """The characters of ``chars`` a lookup can use: printable ASCII without spaces (NSIDs, photo
    ids and web addresses have none); anything else a physical keyboard sends is left out."""
    return "".join(c for c in chars if "!" <= c <= "~")


class LookupInput:
    """Whether the lookup screen is open, what is typed, the shift key, and the answer shown."""

    def __init__(self, idle_s: float):
        self.idle_s = idle_s
        self.is_open = False
        self.text = ""
        self.shift = False
        self.answer: Any = None  # index.lookup.LookupAnswer of the last search, until the text changes or closing
        self.last_touch_ns = 0
        self.opened_ns = 0
        self.closed_because = ""  # why it last closed, for the log (never what was typed)

    def open(self, now_ns: int) -> None:
        self.close("opened again")
        self.is_open = True
        self.last_touch_ns = self.opened_ns = now_ns

    def close(self, why: str) -> bool:
        """Close and forget the text and the answer; True when it was open."""
        was_open = self.is_open
        self.is_open, self.text, self.shift, self.answer = False, "", False, None
        if was_open:
            self.closed_because = why
        return was_open

    def press(self, key: str, now_ns: int) -> bool:
        """A key of the on-screen keyboard (a character or one of COMMANDS); True: search now."""
        if not self.is_open:
            return False
        self.last_touch_ns = now_ns
        if key == SEARCH:
            return True
        if key == SHIFT:
            self.shift = not self.shift
        elif key == BACKSPACE:
            self._set(self.text[:-1])
        elif key == CLEAR:
            self._set("")
        else:
            self.type(key.upper() if self.shift else key, now_ns)
        return False

    def type(self, chars: str, now_ns: int) -> None:
        """Characters from either keyboard, appended (up to MAX_CHARS)."""
        if not self.is_open:
            return
        self.last_touch_ns = now_ns
        self._set((self.text + typable(chars))[:MAX_CHARS])

    def touched(self, now_ns: int) -> None:
        """Anything else the visitor did on the screen (scrolling the photos) keeps it open."""
        if self.is_open:
            self.last_touch_ns = now_ns

    def idle(self, now_ns: int) -> bool:
        """Open, and nothing touched or typed for ``idle_s``."""
        return self.is_open and now_ns - self.last_touch_ns >= self.idle_s * NS

    def visitor_gone(self, last_face_ns: int | None, now_ns: int, leave_s: float) -> bool:
        """Open, someone was in front of the camera while it was (or within ``leave_s`` before it
        opened), and nobody has been since for ``leave_s``: the visitor left. ``last_face_ns``: when
        a face was last seen (the session's). A screen opened with nobody in view closes when idle."""
        if not self.is_open or last_face_ns is None:
            return False
        seen_while_open = last_face_ns >= self.opened_ns - leave_s * NS
        return seen_while_open and now_ns - last_face_ns >= leave_s * NS

    def _set(self, text: str) -> None:
        if text != self.text:
            self.text = text
            self.answer = None  # an answer to other text must not stay under the new one
