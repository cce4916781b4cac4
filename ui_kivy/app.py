"""display (Kivy window) — subscribes to ``frames``, ``faces``, ``matches``, ``camera_status``, ``button_status``;
takes ``presses``; sends ``print`` requests and its ``session`` state.

The touchscreen flow follows :class:`ui_kivy.session.Session`: an attract screen that explains the
kiosk (and that nothing is stored), the mirrored live view with the visitor's face box, "hold
still", "searching", then five result cards (the matched dataset photo cropped around the face,
the identity, a confidence in percent and the distance, and one line on where the photo comes from:
the Flickr account, photo id or web address, licence and date taken, as far as the dataset gives
them, shortened to the card's width: index/provenance.py; under them one line that this kind of
software is less accurate for some faces than for others, with the measured figure; under the live
view how many people in the dataset would look this much like the visitor by chance, when the index
can say: index/lookalikes.py) and a print button that lights up, and
pulses, only when the best match clears ``display.match_threshold``. An info panel tells where
the dataset comes from. An alert line says when something is wrong: camera lost (in the camera's
own words from ``camera_status``: the device, why, how often it retries; or, when the camera
process itself is gone, because the frames stream went silent), partial results (shards
missing), printer offline (the printer's reply), print button missing (``button_status``).

The physical print button (actors/button/): the window says its session's phase, and whether its
print button is lit, on ``session`` (on every change and twice a second), and the button actor
lights, pulses or darkens the real button from it. A press of the real button arrives on
``presses`` and is handled as a touch of the screen's button: the same print job, the same rules
(nothing while a job is in flight, one receipt per visitor). With ``button.backend = "key"`` the
window itself takes the key a USB button types (``button.key``); presses closer together than
``button.debounce_ms`` (a key held down repeats) are one press.

"Are my photos in it?": a button in the title row opens a second screen in place of the live view
and the cards (ui_kivy/lookup_input.py holds what is typed there and when it closes): an on-screen
keyboard, a USB keyboard too, and the answer of index/lookup.py from the index's metadata, with the
account's photos read from the dataset a few per poll. It closes on Back, when the visitor leaves,
and after ``display.lookup_idle_s`` untouched, forgetting the text and the answer; the log says
that something happened there, never what was typed or found. While it is open the print button is
hidden and dark, presses print nothing, and every key belongs to it (Enter searches).

Printing: the print button sends a ``PrintJob`` over REQ and waits for the ``PrintReply`` without
blocking the window. When no reply comes within PRINT_TIMEOUT_S the REQ socket is closed and
reopened (Lazy Pirate) and the same job is sent again, up to PRINT_ATTEMPTS times; the printer
recognises a resent job and does not print it twice. Then the visitor reads "printer not
answering". The reply is read through an Inbox like everything else, never blocking.

One Kivy clock callback on the main thread (the only thread that touches widgets) reads every
subscription through its ``messages.Inbox``, as the actors' run loop does: without blocking,
only the newest frame, every message through the validating codec (a malformed one is logged,
counted and dropped), and each stream's liveness from its registered rate. SIGTERM / SIGINT stop
the app within one poll (``actors.runtime.stop_on_signals``), and so does the death of the
supervisor that started it (``actors.runtime.supervisor``); sockets close with linger 0. Kivy
writes no config or log files (see ``ui_kivy/__init__.py``); frames stay in memory and
everything about a visitor is dropped when the session resets.
"""

from __future__ import annotations

import io
import logging
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import zmq
from kivy.animation import Animation
from kivy.app import App
from kivy.clock import Clock
from kivy.config import Config as KivyConfig
from kivy.graphics import Color, Line
from kivy.graphics.texture import Texture
from kivy.metrics import dp
from kivy.properties import BooleanProperty, ListProperty, NumericProperty, ObjectProperty, StringProperty
from kivy.uix.behaviors import ButtonBehavior
from kivy.uix.boxlayout import BoxLayout
from kivy.uix.button import Button
from kivy.uix.label import Label
from kivy.uix.widget import Widget
from PIL import Image

import config
from actors.button.logic import Debounce, button_alert
from actors.display import camera_alert
from actors.runtime import StopFlag, stop_on_signals
from actors.runtime.supervisor import Supervisor
from index import lookup, provenance, scores
from index.lookup import UNAVAILABLE, LookupAnswer, LookupPhoto
from index.photos import DatasetPhotos
from index.provenance import Provenance
from index.scores import FAIRNESS_NOTE, confidence, confidence_text, display_name
from messages import (
    CHIP_PX,
    ButtonPress,
    ButtonStatus,
    CameraStatus,
    Faces,
    Frame,
    Header,
    Headers,
    Inbox,
    Matches,
    PrintJob,
    PrintReply,
    Result,
    SessionState,
    encode,
    open_socket,
)
from messages.inbox import MIN_ALIVE_S
from ui_kivy.lookup_input import BACKSPACE, CLEAR, KEY_ROWS, SEARCH, SHIFT, LookupInput
from ui_kivy.session import Phase, Session, Timing

KV_PATH = Path(__file__).with_name("kiosk.kv")
ROLE = "display"
SUBSCRIBES = ("frames", "faces", "matches", "camera_status", "button_status")
RECEIVES = (*SUBSCRIBES, "presses")  # the print button's presses come on a PULL socket
POLL_S = 1 / 30
MAX_MESSAGES_PER_POLL = 100  # a flood of messages must not starve the window of frames
SHOWN_RESULTS = 5
PRINT_TIMEOUT_S = 3.0
PRINT_ATTEMPTS = 2  # the first send and one resend on a fresh socket
PRINT_NOTE_S = 10.0  # how long "your receipt is printing" and the like stay up
PRESS_MAX_AGE_S = 2.0  # a physical press older than this (the window was frozen) prints nothing
SESSION_EVERY_S = 0.5  # the session state goes to the print button at least this often
BOX_RGBA = (0.2, 1.0, 0.3, 1.0)  # the visitor's box
OTHER_BOX_RGBA = (1.0, 1.0, 1.0, 0.6)  # other faces in the frame
# A physical keyboard on the lookup screen: these keys do what the on-screen ones do (letters come as text).
LOOKUP_KEYS = {"backspace": BACKSPACE, "enter": SEARCH, "numpadenter": SEARCH, "escape": "back"}
THUMBS_PER_POLL = 3  # photos of a lookup's answer read per poll, so the window never stalls on 60 of them
CHAR_EM = 0.49  # a card's provenance line: a character's mean width in font sizes (Roboto, digits and letters)
CARD_TEXT_MIN_DP = 64  # a card's text needs this height for name, confidence and provenance (kiosk.kv)

log = logging.getLogger("display")


# --- pure helpers: no sockets, no window -------------------------------------------------------


def card_rows(results: list[Result], threshold: float) -> list[dict[str, Any]]:
    """The five result cards' texts, best first."""
    rows = []
    for r in sorted(results, key=lambda r: r.distance)[:SHOWN_RESULTS]:
        c = confidence(r, threshold)
        rows.append(
            {
                "rank": str(r.rank),
                "name": display_name(r.identity),
                "confidence": confidence_text(c),
                "percent": c.percent,
                "distance": f"distance {r.distance:.3f}",
                "close": r.distance <= threshold,
                "provenance": provenance.of(r),
            }
        )
    return rows


def line_chars(width_px: float, font_px: float) -> int:
    """About how many characters of a line of text fit ``width_px`` at ``font_px`` (at least 0)."""
    if width_px <= 0 or font_px <= 0:
        return 0
    return int(width_px / (font_px * CHAR_EM))


def partial_note(msg: Matches | None) -> str:
    if msg is None or not msg.partial:
        return ""
    shards = ", ".join(map(str, msg.missing_shards)) or "(unknown)"
    return f"partial results: shard {shards} did not answer, some faces were not searched"


def alerts_text(
    camera_seen: bool, camera_alive: bool, partial: str, printer_problem: str, camera: str = "", button: str = ""
) -> str:
    """The alert line: what is wrong right now, most important first ('' when all is well).

    ``camera`` is what the camera says about itself when it is lost (:func:`camera_alert`); it wins
    over what the display guesses from the frames. ``button``: the print button's device is missing
    (:func:`actors.button.logic.button_alert`).
    """
    notes = []
    if camera:
        notes.append(camera)
    elif not camera_seen:
        notes.append("waiting for the camera…")
    elif not camera_alive:
        notes.append("camera lost: no picture for a while")
    if partial:
        notes.append(partial)
    if printer_problem:
        notes.append(printer_problem if printer_problem.startswith("printer") else f"printer: {printer_problem}")
    if button:
        notes.append(button)
    return "   ·   ".join(notes)


def phase_text(phase: Phase, await_leave: bool, results: Matches | None, threshold: float, now_s: float) -> str:
    """The line under the live view."""
    if phase is Phase.ATTRACT:
        return "thank you! step away to let the next person in" if await_leave else "step in front of the camera"
    if phase is Phase.PRESENT:
        return "hold still…"
    if phase is Phase.SEARCHING:
        return "searching the dataset" + "." * (1 + int(now_s * 3) % 3)
    if results is None or not results.results:
        return "nobody in the dataset resembles you"
    best = scores.best(results.results)
    if best.distance <= threshold:
        return f"your closest match: {display_name(best.identity)}"
    return f"no close match; the nearest is {display_name(best.identity)}"


def view_mode(phase: Phase) -> str:
    return {Phase.SEARCHING: "searching", Phase.RESULTS: "results", Phase.PRINTING: "results"}.get(phase, "attract")


def fit_rect(frame_w: int, frame_h: int, x: float, y: float, w: float, h: float) -> tuple[float, float, float, float]:
    """Where a frame_w x frame_h image sits inside the box (x, y, w, h): aspect kept, centred."""
    if frame_w <= 0 or frame_h <= 0 or w <= 0 or h <= 0:
        return x, y, 0.0, 0.0
    scale = min(w / frame_w, h / frame_h)
    iw, ih = frame_w * scale, frame_h * scale
    return x + (w - iw) / 2, y + (h - ih) / 2, iw, ih


def box_rect(
    box: list[int], frame_w: int, frame_h: int, image: tuple[float, float, float, float], mirror: bool = False
) -> tuple[float, float, float, float]:
    """A [left, top, right, bottom] frame-pixel box (y down) in window coordinates (y up)."""
    ix, iy, iw, ih = image
    left, top, right, bottom = box
    if mirror:
        left, right = frame_w - right, frame_w - left
    sx, sy = iw / frame_w, ih / frame_h
    return ix + left * sx, iy + (frame_h - bottom) * sy, (right - left) * sx, (bottom - top) * sy


def key_label(key: str, shift: bool) -> str:
    """What a key of the on-screen keyboard shows."""
    names = {SHIFT: "abc" if shift else "ABC", BACKSPACE: "delete", CLEAR: "clear", SEARCH: "search"}
    return names.get(key, key.upper() if shift else key)


def thumb_captions(p: LookupPhoto) -> tuple[str, str, str]:
    """The three lines under a photo of the lookup's answer: photo id, licence, date taken."""
    return (
        f"photo {p.photo_id}" if p.photo_id else "photo id not recorded",
        p.licence or "licence not recorded",
        f"taken {p.date_taken}" if p.date_taken else "date not recorded",
    )


def opening_sentence(unavailable: str) -> tuple[str, str]:
    """(sentence, kind) of a lookup screen just opened: what it will show, or why it can't."""
    if unavailable:
        return unavailable, UNAVAILABLE
    return (
        "How many photos of that account the dataset holds shows here, "
        "with the photos themselves, their licences and the dates they were taken.",
        "prompt",
    )


def chip_jpeg(chip: bytes, side_px: int = CHIP_PX) -> bytes:
    """The visitor's aligned face chip as JPEG bytes, in memory (only when the operator allows printing it)."""
    buf = io.BytesIO()
    Image.frombytes("RGB", (side_px, side_px), chip).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def rgb_texture(rgb: np.ndarray) -> Texture:
    h, w = rgb.shape[:2]
    texture = Texture.create(size=(w, h), colorfmt="rgb")
    texture.flip_vertical()  # images come top row first; GL textures start at the bottom row
    texture.blit_buffer(np.ascontiguousarray(rgb).tobytes(), colorfmt="rgb", bufferfmt="ubyte")
    return texture


# --- widgets (layout in kiosk.kv) --------------------------------------------------------------


class ResultCard(BoxLayout):
    rank = StringProperty("")
    name = StringProperty("")
    confidence = StringProperty("")
    distance = StringProperty("")
    close = BooleanProperty(False)
    photo = ObjectProperty(None, allownone=True)  # a Texture, or None: the placeholder shows
    provenance = StringProperty("")  # where the photo comes from, fitted to the card's width ('' leaves it out)

    def __init__(self, **kwargs: Any):
        self._provenance = Provenance()
        super().__init__(**kwargs)

    def show(self, row: dict[str, Any] | None, photo: Texture | None) -> None:
        row = row or {"rank": "", "name": "", "confidence": "", "distance": "", "close": False}
        self.rank, self.name, self.confidence = row["rank"], row["name"], row["confidence"]
        self.distance, self.close = row["distance"], row["close"]
        self.photo = photo
        self.opacity = 1 if row["name"] else 0
        self._provenance = row.get("provenance") or Provenance()
        self.fit_provenance()

    def fit_provenance(self) -> None:
        """The provenance line in the words that fit the label's width (called again when it or the card's
        height changes); none in a card too low for three lines of text (a small window)."""
        label, column = self.ids.get("provenance"), self.ids.get("text_column")
        if label is None or column is None:
            return
        chars = line_chars(label.width, label.font_size) if column.height >= dp(CARD_TEXT_MIN_DP) else 0
        line = provenance.card_line(self._provenance, chars)
        if line != self.provenance:
            self.provenance = line
            if line:
                log.debug("card %s provenance: %s", self.rank, line)


class PrintButton(ButtonBehavior, Label):
    """The print button: dark when printing isn't possible, lit and pulsing when it is."""

    lit = BooleanProperty(False)
    glow = NumericProperty(0.0)  # 0..1, animated while lit

    def on_lit(self, _: Any, lit: bool) -> None:
        Animation.cancel_all(self, "glow")
        if lit:
            pulse = Animation(glow=1.0, duration=0.7, t="in_out_sine") + Animation(glow=0.0, duration=0.7)
            pulse.repeat = True
            pulse.start(self)
        else:
            self.glow = 0.0


class LiveView(Widget):
    """The camera frame, fitted into the widget and mirrored, with face boxes drawn over it."""

    texture = ObjectProperty(None, allownone=True)
    frame_size = ListProperty([0, 0])
    image_pos = ListProperty([0, 0])
    image_size = ListProperty([0, 0])
    boxes = ListProperty([])  # [left, top, right, bottom] in pixels of a boxes_frame_size frame
    boxes_frame_size = ListProperty([0, 0])
    visitor = NumericProperty(-1)
    mirror = BooleanProperty(True)

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self.bind(pos=self._layout, size=self._layout, frame_size=self._layout)
        self.bind(boxes=self._draw_boxes, boxes_frame_size=self._draw_boxes, visitor=self._draw_boxes)

    def show_frame(self, width_px: int, height_px: int, pixels: bytes) -> None:
        if self.texture is None or tuple(self.texture.size) != (width_px, height_px):
            texture = Texture.create(size=(width_px, height_px), colorfmt="rgb")
            texture.flip_vertical()  # frames come top row first; GL textures start at the bottom row
            if self.mirror:
                texture.flip_horizontal()  # a screen the visitor faces should behave like a mirror
            self.texture = texture
            self.frame_size = [width_px, height_px]
        self.texture.blit_buffer(pixels, colorfmt="rgb", bufferfmt="ubyte")
        self.canvas.ask_update()

    def clear(self) -> None:
        """Forget the last frame and boxes (the camera is gone: its last picture may show a visitor)."""
        self.texture = None
        self.frame_size = [0, 0]
        self.boxes = []
        self.canvas.after.clear()

    def show_faces(self, msg: Faces | None) -> None:
        if msg is None:
            self.boxes = []
            return
        self.boxes_frame_size = [msg.width_px, msg.height_px]
        self.visitor = msg.visitor
        self.boxes = [list(b) for b in msg.boxes]
        self._draw_boxes()  # also when the boxes equal the last ones, which Kivy would not report

    def _layout(self, *_: Any) -> None:
        x, y, w, h = fit_rect(*self.frame_size, *self.pos, *self.size)
        self.image_pos, self.image_size = [x, y], [w, h]
        self._draw_boxes()

    def _draw_boxes(self, *_: Any) -> None:
        self.canvas.after.clear()
        fw, fh = self.boxes_frame_size
        if not self.boxes or fw <= 0 or fh <= 0 or self.texture is None:
            return
        image = (*self.image_pos, *self.image_size)
        with self.canvas.after:
            for i, box in enumerate(self.boxes):
                Color(*(BOX_RGBA if i == self.visitor else OTHER_BOX_RGBA))
                rect = box_rect(box, fw, fh, image, self.mirror)
                Line(rectangle=rect, width=dp(3) if i == self.visitor else dp(1.5))


class LookupKey(Button):
    """A key of the on-screen keyboard: a character, or one of ui_kivy.lookup_input.COMMANDS."""

    key = StringProperty("")
    shift = BooleanProperty(False)
    label = StringProperty("")

    def on_key(self, *_: Any) -> None:
        self._relabel()

    def on_shift(self, *_: Any) -> None:
        self._relabel()

    def _relabel(self) -> None:
        self.label = key_label(self.key, self.shift)


class LookupKeyboard(BoxLayout):
    """The on-screen keyboard, row by row from KEY_ROWS; dispatches ``on_key`` with the key touched."""

    __events__ = ("on_key",)
    shift = BooleanProperty(False)

    def __init__(self, **kwargs: Any):
        super().__init__(orientation="vertical", spacing=dp(6), **kwargs)
        self.keys: dict[str, LookupKey] = {}
        for row in KEY_ROWS:
            line = BoxLayout(spacing=dp(6))
            for key, units in row:
                button = LookupKey(key=key, size_hint_x=units)
                button.bind(on_release=lambda b: self.dispatch("on_key", b.key))
                self.keys[key] = button
                line.add_widget(button)
            self.add_widget(line)

    def on_shift(self, _: Any, shift: bool) -> None:
        for button in self.keys.values():
            button.shift = shift

    def on_key(self, key: str) -> None:
        """Dispatched by each key."""


class TypedLine(Label):
    """What is typed on the lookup screen, on one line: when it is wider than the line, its start is
    cut and "…" shown instead, so the end (where typing goes on) stays in view."""

    typed = StringProperty("")

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self.bind(typed=self._fit, size=self._fit, font_size=self._fit)

    def _fit(self, *_: Any) -> None:
        text, width = self.typed, self.width
        extents = self._label.get_extents  # measured in this label's font and size
        while len(text) > 1 and extents(text if text == self.typed else "…" + text)[0] > width:
            text = text[1:]
        self.text = text if text == self.typed else "…" + text


class LookupThumb(BoxLayout):
    """One photo of the lookup's answer: the photo (aspect kept) and its photo id, licence and date."""

    photo = ObjectProperty(None, allownone=True)  # a Texture, or None: the placeholder shows
    placeholder = StringProperty("loading…")
    photo_id = StringProperty("")
    licence = StringProperty("")
    date = StringProperty("")
    asked = BooleanProperty(False)  # the photo the visitor named: highlighted


class KioskView(BoxLayout):
    """The root widget; the Kiosk sets these properties and listens for its events (``on_print``,
    and the lookup screen's ``on_lookup_open``, ``on_lookup_back``, ``on_lookup_key``)."""

    __events__ = ("on_print", "on_lookup_open", "on_lookup_back", "on_lookup_key")
    mode = StringProperty("attract")  # attract | searching | results
    status = StringProperty("step in front of the camera")
    alerts = StringProperty("waiting for the camera…")
    print_note = StringProperty("")
    can_print = BooleanProperty(False)
    dataset_info = StringProperty("")
    fairness_note = StringProperty(FAIRNESS_NOTE)  # under the result cards: not every face is judged as well
    lookalikes = StringProperty("")  # under the status: how many people would look this much like you by chance
    lookup_shown = BooleanProperty(False)  # the "Are my photos in it?" screen replaces the middle
    lookup_text = StringProperty("")  # what is typed there (nowhere else but in ui_kivy.lookup_input.LookupInput)
    lookup_shift = BooleanProperty(False)
    lookup_sentence = StringProperty("")
    lookup_kind = StringProperty("prompt")  # prompt, or index.lookup's hit / none / error / unavailable

    def on_lookup_open(self) -> None:
        """Dispatched by "Are my photos in it?" in the title row."""

    def on_lookup_back(self) -> None:
        """Dispatched by the lookup screen's Back."""

    def on_lookup_key(self, key: str) -> None:
        """Dispatched by a key of the on-screen keyboard."""

    def on_print(self) -> None:
        """Dispatched by the print button."""


# --- the logic: sockets in, widget properties out -----------------------------------------------


class Kiosk:
    """Reads the display's sockets, runs the session and updates a KioskView; main thread only."""

    def __init__(self, cfg: config.Config, view: KioskView, ctx: zmq.Context):
        self.cfg, self.view, self.ctx = cfg, view, ctx
        d = cfg["display"]
        self.threshold: float = d["match_threshold"]
        self.session = Session(
            self.threshold,
            Timing(
                stable_s=d["stable_s"],
                leave_s=d["leave_s"],
                search_timeout_s=d["search_timeout_s"],
                results_hold_s=d["results_hold_s"],
            ),
        )
        self.print_face: bool = cfg["printer"]["print_visitor_face"]
        self.photos = DatasetPhotos(cfg.path("index", "path"))
        self.lookup = LookupInput(d["lookup_idle_s"])  # what a visitor types on the lookup screen, and its answer
        self.lookup_source = lookup.Source.open(cfg.path("index", "path"))
        self._shown_answer: LookupAnswer | None = None
        self._thumbs: list[tuple[LookupThumb, str]] = []  # photos of the answer not read yet
        self.stats: Counter[str] = Counter()
        self.inboxes = {
            topic: Inbox(
                open_socket(ctx, cfg, topic, ROLE, receiving=True),
                topic,
                self.stats,
                log,
                newest_only=topic == "frames",  # only the newest frame is worth drawing
                limit=MAX_MESSAGES_PER_POLL,
            )
            for topic in RECEIVES
        }
        self.session_pub = open_socket(ctx, cfg, "session", ROLE, receiving=False)
        self.req = open_socket(ctx, cfg, "print", ROLE, receiving=False)
        self.replies = Inbox(self.req, "print", self.stats, log)
        self.faces: Faces | None = None
        self.camera: CameraStatus | None = None  # the camera's last word about itself
        self.button: ButtonStatus | None = None  # the print button actor's last word about its device
        self.key_debounce = Debounce(cfg["button"]["debounce_ms"] / 1000)
        self._session_said: tuple[str, bool] | None = None
        self._session_due_ns = 0
        self.shown_query: int | None = None  # the result list on the cards
        self.phase = Phase.ATTRACT
        # (encoded job, query_id, deadline_ns, attempts) of the print job in flight
        self.pending: tuple[list[bytes], int, int, int] | None = None
        self.printer_problem = ""
        self.print_note_until_ns = 0
        self._headers = Headers(ROLE)
        self._last_shown: tuple = ()
        view.ids.live.mirror = d["mirror"]
        self._show_dataset_info()
        view.bind(on_print=lambda *_: self.request_print())
        view.bind(on_lookup_open=lambda *_: self.open_lookup())
        view.bind(on_lookup_back=lambda *_: self.close_lookup("Back"))
        view.bind(on_lookup_key=lambda _, key: self.lookup_key(key))
        view.ids.lookup_scroll.bind(scroll_y=lambda *_: self.lookup.touched(time.monotonic_ns()))
        self._show_lookup()

    def poll(self, now_ns: int) -> None:
        for topic, inbox in self.inboxes.items():
            for msg in inbox.receive(now_ns):
                try:
                    self._apply(msg, now_ns)
                except Exception:  # a message that breaks the view is skipped, never fatal
                    self.stats[f"{topic}.failed"] += 1
                    log.exception("showing a %s message failed; it is skipped", topic)
        self._poll_printer(now_ns)
        self._show_dataset_info()
        live = self.view.ids.live
        if self.faces is not None and not self._alive("faces", now_ns):  # a stalled detector's boxes go
            self.faces = None
            live.show_faces(None)
        if live.texture is not None and not self._alive("frames", now_ns):
            live.clear()
            log.warning("camera lost: no frame for %.1f s; the live view is cleared", MIN_ALIVE_S)
        self.session.tick(now_ns)
        self._poll_lookup(now_ns)
        self._render(now_ns)

    def _show_dataset_info(self) -> None:
        """The dataset's size on screen, without photos and people removed from it (one stat() per poll)."""
        facts = self.photos.facts
        text = facts.summary() if facts is not None else ""
        if text != self.view.dataset_info:
            self.view.dataset_info = text

    def request_print(self, source: str = "screen") -> None:
        log.debug("print button pressed (%s)", source)
        now_ns = time.monotonic_ns()
        if self.pending is not None:
            return
        if self.lookup.is_open:  # its print button is hidden, and the physical one dark
            log.info("print request (%s) ignored: the lookup screen is open", source)
            return
        m = self.session.request_print(now_ns)
        if m is None:
            return
        chip = self.session.visit.extra.get("chip", b"") if self.print_face and self.session.visit else b""
        face = chip_jpeg(chip) if chip else b""
        job = PrintJob(self._header(m.header.frame_id), m.query_id, m.results, face, lookalikes=m.lookalikes)
        self._send_job(encode(job), m.query_id, attempt=1)
        self._note("printing your receipt…")
        self._render(now_ns)

    def key_pressed(self, now_ns: int) -> None:
        """The key a USB print button types (``button.backend = "key"``): a press of the print button."""
        if not self.key_debounce.accept(now_ns):
            self.stats["key.bounced"] += 1
            return
        key = self.cfg["button"]["key"]
        log.info("print key '%s' pressed", key)
        self.request_print(source=f"key {key}")

    # --- the lookup screen ("Are my photos in it?") ------------------------------------------------
    # What the visitor types is never logged, sent or written: the log says that something happened,
    # never what was typed or found (which account, which photos).

    def open_lookup(self) -> None:
        self.lookup.open(time.monotonic_ns())
        self._show_lookup()
        log.info("lookup screen opened")

    def close_lookup(self, why: str) -> None:
        """Close the lookup screen and forget what was typed and found there."""
        if self.lookup.close(why):
            self._show_lookup()
            log.info("lookup screen closed (%s)", why)

    def lookup_key(self, key: str) -> None:
        """A key of the on-screen keyboard, or a command from a physical one (Enter: search)."""
        if self.lookup.press(key, time.monotonic_ns()):
            started = time.perf_counter()
            answer = lookup.lookup(self.lookup_source, self.lookup.text)
            took_ms = (time.perf_counter() - started) * 1000
            self.lookup.answer = answer
            log.debug("lookup answered (%s) in %.1f ms", answer.kind, took_ms)
        self._show_lookup()

    def lookup_typed(self, chars: str) -> None:
        """Characters typed on a physical keyboard while the lookup screen is open."""
        self.lookup.type(chars, time.monotonic_ns())
        self._show_lookup()

    def _poll_lookup(self, now_ns: int) -> None:
        if not self.lookup.is_open:
            return
        if self.lookup.idle(now_ns):
            self.close_lookup(f"nothing touched for {self.lookup.idle_s:g} s")
            return
        if self.lookup.visitor_gone(self.session.last_face_ns, now_ns, self.session.timing.leave_s):
            self.close_lookup("the visitor left")
            return
        if self._thumbs:
            for thumb, photo in self._thumbs[:THUMBS_PER_POLL]:
                rgb = self.photos.thumbnail(photo)
                thumb.photo = rgb_texture(rgb) if rgb is not None else None
                thumb.placeholder = "" if rgb is not None else "no photo"
            del self._thumbs[:THUMBS_PER_POLL]
            if not self._thumbs:
                log.debug("lookup photos shown")

    def _show_lookup(self) -> None:
        """The lookup screen as self.lookup says: open or not, the text, the answer and its photos."""
        v, typed = self.view, self.lookup
        v.lookup_shown = typed.is_open
        v.ids.screens.current = "lookup" if typed.is_open else "main"  # set here: kv sets it before the screens exist
        v.lookup_text = typed.text
        v.lookup_shift = typed.shift
        if typed.answer is self._shown_answer and v.lookup_sentence:
            return
        answer = self._shown_answer = typed.answer
        grid = v.ids.lookup_photos
        grid.clear_widgets()  # the photos' textures go with their widgets
        self._thumbs = []
        if answer is None:
            v.lookup_sentence, v.lookup_kind = opening_sentence(self.lookup_source.unavailable)
        else:
            v.lookup_sentence, v.lookup_kind = answer.sentence, answer.kind
            for p in answer.photos:
                photo_id, licence, date = thumb_captions(p)
                thumb = LookupThumb(photo_id=photo_id, licence=licence, date=date, asked=p.asked)
                grid.add_widget(thumb)
                self._thumbs.append((thumb, p.photo))
        v.ids.lookup_scroll.scroll_y = 1

    def close(self) -> None:
        self.close_lookup("the window closes")
        self.lookup_source.close()
        for inbox in self.inboxes.values():
            inbox.close()
        self.session_pub.close(linger=0)
        self.req.close(linger=0)
        self.ctx.term()
        self.photos.close()
        log.info("stopped; counters: %s", dict(self.stats))

    # --- showing what arrived -------------------------------------------------------------------

    def _apply(self, msg: Any, now_ns: int) -> None:
        if isinstance(msg, Frame):
            self.view.ids.live.show_frame(msg.width_px, msg.height_px, msg.pixels)
        elif isinstance(msg, Faces):
            self.faces = msg
            self.view.ids.live.show_faces(msg)
            if msg.visitor >= 0:
                self.session.on_face(now_ns, msg.captured_ns)
                if self.print_face and self.session.visit is not None:
                    self.session.visit.extra["chip"] = msg.chip  # dropped with the visit at reset
        elif isinstance(msg, CameraStatus):
            if self.camera is None or msg.state != self.camera.state:
                log.info("camera %s: %s %s", msg.state, msg.source, msg.detail)
            self.camera = msg
        elif isinstance(msg, ButtonPress):
            age_s = (now_ns - msg.header.t_ns) / 1e9
            if age_s > PRESS_MAX_AGE_S:
                self.stats["presses.stale"] += 1
                log.warning("a print button press %.1f s old was not taken as a print request", age_s)
            else:
                log.info("print button pressed (%s)", msg.source)
                self.request_print(source=msg.source)
        elif isinstance(msg, ButtonStatus):
            if self.button is None or (msg.state, msg.detail) != (self.button.state, self.button.detail):
                say = log.warning if msg.state == "missing" else log.info
                say("print button %s: %s %s", msg.state, msg.device or msg.backend, msg.detail)
            self.button = msg
        elif isinstance(msg, Matches):
            if self.session.on_matches(now_ns, msg):
                best = scores.best(msg.results)
                name = best.identity if best is not None else "(none)"
                log.info("showing %d results for query %d, best %s", len(msg.results), msg.query_id, name)
            else:
                self.stats["matches.not_for_this_visit"] += 1

    # --- drawing --------------------------------------------------------------------------------

    def _render(self, now_ns: int) -> None:
        v, s = self.view, self.session
        if s.phase is not self.phase:
            why = f" ({s.last_reset})" if s.phase is Phase.ATTRACT else ""
            log.info("session: %s -> %s%s", self.phase.value, s.phase.value, why)
            self.phase = s.phase
        results = s.results
        query = results.query_id if results is not None else None
        if query != self.shown_query:
            self._show_cards(results)
            v.lookalikes = results.lookalikes if results is not None else ""
            self.shown_query = query
        v.mode = view_mode(s.phase)
        v.status = phase_text(s.phase, s.await_leave, results, self.threshold, now_ns / 1e9)
        camera = camera_alert(self.camera, self.cfg["camera"]["reconnect_s"])
        if not self._alive("camera_status", now_ns):  # the camera process is gone: its last word is stale
            camera = ""
        v.alerts = alerts_text(
            self.inboxes["frames"].seen,
            self._alive("frames", now_ns),
            partial_note(results),
            self.printer_problem,
            camera,
            button_alert(self.button) if self._alive("button_status", now_ns) else "",
        )
        v.can_print = self.pending is None and s.can_print and not self.lookup.is_open
        self._say_session(now_ns, s.phase, v.can_print)
        if self.pending is None and v.print_note and (now_ns > self.print_note_until_ns or s.phase is Phase.ATTRACT):
            v.print_note = ""
        shown = (v.mode, v.status.rstrip("."), v.alerts, v.print_note, v.can_print, self.shown_query)
        if shown != self._last_shown:  # what the visitor reads, for the log and the UI tests
            self._last_shown = shown
            names = [self.view.ids[f"card{i}"].name for i in range(SHOWN_RESULTS)]
            log.debug(
                "view: mode=%s status=%r alerts=%r note=%r print_lit=%s cards=%r lookalikes=%r",
                v.mode,
                v.status,
                v.alerts,
                v.print_note,
                v.can_print,
                [n for n in names if n],
                v.lookalikes,
            )

    def _say_session(self, now_ns: int, phase: Phase, lit: bool) -> None:
        """Tell the physical print button what the session does: on every change, and twice a second."""
        said = (phase.value, lit)
        if said == self._session_said and now_ns < self._session_due_ns:
            return
        self._session_said, self._session_due_ns = said, now_ns + int(SESSION_EVERY_S * 1e9)
        try:
            self.session_pub.send_multipart(encode(SessionState(self._header(-1), *said)), flags=zmq.NOBLOCK)
        except zmq.ZMQError:  # a PUB drops rather than blocks; nothing else to do without a button
            self.stats["session.send_dropped"] += 1

    def _show_cards(self, results: Matches | None) -> None:
        rows = card_rows(results.results, self.threshold) if results is not None else []
        by_rank = {str(r.rank): r for r in results.results} if results is not None else {}
        cards = [self.view.ids[f"card{i}"] for i in range(SHOWN_RESULTS)]
        for i, card in enumerate(cards):
            row = rows[i] if i < len(rows) else None
            photo = None
            if row is not None:
                crop = self.photos.crop(by_rank[row["rank"]])
                photo = rgb_texture(crop) if crop is not None else None
            card.show(row, photo)

    # --- printing -------------------------------------------------------------------------------

    def _send_job(self, parts: list[bytes], query_id: int, attempt: int) -> None:
        try:
            self.req.send_multipart(parts, flags=zmq.NOBLOCK)
        except zmq.Again:
            self.stats["print.send_failed"] += 1
            log.warning("could not hand the print job for query %d to the printer", query_id)
            self._reopen_req()
            self._print_failed("printer not answering")
            return
        self.pending = (parts, query_id, time.monotonic_ns() + int(PRINT_TIMEOUT_S * 1e9), attempt)
        self.stats["print.sent"] += 1
        log.info("print job for query %d sent (attempt %d of %d)", query_id, attempt, PRINT_ATTEMPTS)

    def _poll_printer(self, now_ns: int) -> None:
        if self.pending is None:
            return
        parts, query_id, deadline_ns, attempt = self.pending
        replies: list[PrintReply | None] = self.replies.receive(now_ns)
        if replies:
            self.pending = None
            reply = replies[0]
            if reply is None:  # the inbox counted (print.malformed) and logged why
                self._print_failed("the printer sent a garbled answer")
                return
            if reply.ok:
                self.stats["print.done"] += 1
                log.info("printed query %d: %s", query_id, reply.detail)
                self.printer_problem = ""
                self.session.on_print_done(now_ns, ok=True)
                self._note("your receipt is printing — take it with you")
            else:
                self.stats["print.failed"] += 1
                log.warning("printing query %d failed: %s", query_id, reply.detail)
                self._print_failed(reply.detail)
        elif now_ns > deadline_ns:
            self.stats["print.timeout"] += 1
            log.warning("no print reply within %.0f s (attempt %d); reopening the socket", PRINT_TIMEOUT_S, attempt)
            self._reopen_req()
            if attempt < PRINT_ATTEMPTS:
                self._send_job(parts, query_id, attempt + 1)  # the same job: the printer won't print it twice
            else:
                self._print_failed("printer not answering")

    def _print_failed(self, problem: str) -> None:
        self.pending = None
        self.printer_problem = problem
        self.session.on_print_done(time.monotonic_ns(), ok=False)
        self._note("sorry, the printer could not print")

    def _reopen_req(self) -> None:
        """Lazy Pirate: a REQ socket that lost its reply can't send again, so replace it."""
        self.req.close(linger=0)
        self.req = open_socket(self.ctx, self.cfg, "print", ROLE, receiving=False)
        self.replies = Inbox(self.req, "print", self.stats, log)
        self.pending = None

    def _note(self, text: str) -> None:
        self.view.print_note = text
        self.print_note_until_ns = time.monotonic_ns() + int(PRINT_NOTE_S * 1e9)

    def _alive(self, topic: str, now_ns: int) -> bool:
        return self.inboxes[topic].alive(now_ns)

    def _header(self, frame_id: int) -> Header:
        return self._headers.next(frame_id)


# --- the app -------------------------------------------------------------------------------------


class KioskApp(App):
    """Builds the view, runs the poll clock, and stops when the stop flag is set."""

    def __init__(self, cfg: config.Config, stop: StopFlag, supervisor: Supervisor | None = None):
        super().__init__(kv_file=str(KV_PATH), title="MegaPixels")
        self.cfg, self.stop_flag, self.supervisor = cfg, stop, supervisor
        self.kiosk: Kiosk | None = None
        self._print_key: int | None = None  # the keycode a USB print button types (button.backend = "key")
        self._lookup_keys: dict[int, str] = {}  # keycode -> what it does on the lookup screen

    def build(self) -> KioskView:
        view = KioskView()
        self.kiosk = Kiosk(self.cfg, view, zmq.Context())
        Clock.schedule_interval(self._poll, POLL_S)
        from kivy.core.window import Keyboard, Window

        if self.cfg["button"]["backend"] == "key":
            self._print_key = Keyboard.keycodes[self.cfg["button"]["key"]]
        self._lookup_keys = {Keyboard.keycodes[name]: command for name, command in LOOKUP_KEYS.items()}
        Window.bind(on_key_down=self._key_down, on_textinput=self._text_input)
        return view

    def _key_down(self, _window: Any, key: int, *_: Any) -> bool:
        if self.kiosk is None:
            return False
        if self.kiosk.lookup.is_open:
            # Every key belongs to the lookup screen while it is open: Enter searches, and a USB print
            # button that types Enter (button.backend = "key") prints nothing meanwhile.
            command = self._lookup_keys.get(key)
            if command == "back":
                self.kiosk.close_lookup("Back")
            elif command is not None:
                self.kiosk.lookup_key(command)
            return True
        if key != self._print_key:
            return False
        self.kiosk.key_pressed(time.monotonic_ns())
        return True

    def _text_input(self, _window: Any, text: str) -> None:
        """What a physical keyboard types (after shift and the layout: '@' too), for the lookup screen."""
        if self.kiosk is not None and self.kiosk.lookup.is_open:
            self.kiosk.lookup_typed(text)

    def on_start(self) -> None:
        self.root_window.bind(on_flip=self._first_flip)

    def _first_flip(self, window: Any) -> None:
        window.unbind(on_flip=self._first_flip)
        log.info("window ready")  # the first picture is on the screen

    def on_stop(self) -> None:
        if self.kiosk is not None:
            self.kiosk.close()
            self.kiosk = None

    def _poll(self, _dt: float) -> bool | None:
        if self.kiosk is None:
            return False
        if self.supervisor is not None and self.supervisor.gone(time.monotonic_ns()):
            log.warning("the supervisor that started this process (%s) is gone: stopping", self.supervisor)
            self.stop_flag.set()
        if self.stop_flag:
            self.stop()
            return False
        try:
            self.kiosk.poll(time.monotonic_ns())
        except Exception:  # an exception here would end the app, and honcho would stop the kiosk
            self.kiosk.stats["poll.failed"] += 1
            log.exception("poll failed; trying again on the next tick")
        return None


def configure_window(display: dict[str, Any]) -> None:
    """Kivy reads these when it opens the window, so they must be set before App.run."""
    KivyConfig.set("graphics", "width", str(display["width_px"]))
    KivyConfig.set("graphics", "height", str(display["height_px"]))
    KivyConfig.set("input", "mouse", "mouse,multitouch_on_demand")  # no touch-emulation dots on right click
    if display["fullscreen"]:
        KivyConfig.set("graphics", "fullscreen", "auto")
        KivyConfig.set("graphics", "borderless", "1")
        KivyConfig.set("graphics", "show_cursor", "0")
        KivyConfig.set("graphics", "allow_screensaver", "0")
        KivyConfig.set("kivy", "exit_on_escape", "0")  # a visitor's Esc key must not close the kiosk


def main(cfg: config.Config) -> int:
    """Run the kiosk window until it is closed or the process gets SIGTERM / SIGINT."""
    logging.basicConfig(level=cfg["log"]["level"], stream=sys.stderr, format="%(name)s %(levelname)s %(message)s")
    logging.getLogger("kivy").setLevel(max(logging.INFO, logging.getLevelName(cfg["log"]["level"])))
    configure_window(cfg["display"])
    stop = StopFlag()
    stop_on_signals(stop)  # installed before SDL starts, so SDL keeps its hands off these signals
    KioskApp(cfg, stop, Supervisor()).run()
    return 0
