"""display (Kivy window) — subscribes to ``frames``, ``faces`` and ``matches``; sends ``print`` requests.

Shows the live camera frame with the detector's face boxes drawn over it, the newest result
list (top 5: rank, identity, distance; marked when shards were missing) and a status line. The
"Print my match" button lights when the best distance is within ``display.match_threshold``;
pressing it sends a ``PrintJob`` over REQ and waits for the printer's ``PrintReply`` without
blocking the window. After PRINT_TIMEOUT_S without a reply the REQ socket is closed and reopened
(Lazy Pirate) and the visitor reads "printer not answering"; the job is not retried by itself,
so a slow printer never prints a receipt twice.

One Kivy clock callback on the main thread (the only thread that touches widgets) polls every
socket without blocking. Every message goes through the validating codec; a malformed one is
logged, counted and dropped. SIGTERM / SIGINT stop the app within one poll; sockets close with
linger 0. Kivy writes no config or log files (see ``ui_kivy/__init__.py``); frames stay in memory.
"""

from __future__ import annotations

import logging
import signal
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import zmq
from kivy.app import App
from kivy.clock import Clock
from kivy.config import Config as KivyConfig
from kivy.graphics import Color, Line
from kivy.graphics.texture import Texture
from kivy.metrics import dp
from kivy.properties import BooleanProperty, ListProperty, NumericProperty, ObjectProperty, StringProperty
from kivy.uix.boxlayout import BoxLayout
from kivy.uix.widget import Widget

import config
from actors.runtime import StopFlag, open_socket
from messages import TOPICS, DecodeError, Faces, Frame, Header, Matches, PrintJob, PrintReply, decode, encode

KV_PATH = Path(__file__).with_name("kiosk.kv")
ROLE = "display"
SUBSCRIBES = ("frames", "faces", "matches")
POLL_S = 1 / 30
MAX_MESSAGES_PER_POLL = 100  # a flood of messages must not starve the window of frames
SHOWN_RESULTS = 5
ALIVE_PERIODS = 10  # a stream is alive while a message came within this many periods of its rate
RESULTS_HOLD_S = 10.0  # results stay up this long after the last sign of a visitor, then clear
PRINT_TIMEOUT_S = 3.0
PRINT_NOTE_S = 10.0  # how long "your receipt is printing" and the like stay up
BOX_RGBA = (0.2, 1.0, 0.3, 1.0)  # the visitor's box
OTHER_BOX_RGBA = (1.0, 1.0, 1.0, 0.6)  # other faces in the frame

log = logging.getLogger("display")


# --- pure helpers: no sockets, no window -------------------------------------------------------


def result_rows(results: list[dict[str, Any]], threshold: float) -> list[dict[str, Any]]:
    """The rows of the result list, as ``ResultRow`` properties."""
    return [
        {
            "rank": str(r["rank"]),
            "name": r["identity"].replace("_", " "),
            "distance": f"{r['distance']:.3f}",
            "close": r["distance"] <= threshold,
        }
        for r in results[:SHOWN_RESULTS]
    ]


def partial_note(msg: Matches) -> str:
    if not msg.partial:
        return ""
    return "partial — missing shards " + (", ".join(map(str, msg.missing_shards)) or "(unknown)")


def best_distance(msg: Matches | None) -> float | None:
    if msg is None or not msg.results:
        return None
    return min(r["distance"] for r in msg.results)


def status_text(camera_alive: bool, visitor_present: bool, shown: Matches | None, threshold: float) -> str:
    if not camera_alive:
        return "waiting for camera…"
    if shown is None:
        return "searching…" if visitor_present else "step in front of the camera"
    if not shown.results:
        return "nobody in the dataset resembles you"
    best = min(shown.results, key=lambda r: r["distance"])
    name = best["identity"].replace("_", " ")
    if best["distance"] <= threshold:
        return f"your closest match: {name}"
    return f"no close match; the nearest is {name}"


def fit_rect(frame_w: int, frame_h: int, x: float, y: float, w: float, h: float) -> tuple[float, float, float, float]:
    """Where a frame_w x frame_h image sits inside the box (x, y, w, h): aspect kept, centred."""
    if frame_w <= 0 or frame_h <= 0 or w <= 0 or h <= 0:
        return x, y, 0.0, 0.0
    scale = min(w / frame_w, h / frame_h)
    iw, ih = frame_w * scale, frame_h * scale
    return x + (w - iw) / 2, y + (h - ih) / 2, iw, ih


def box_rect(
    box: list[int], frame_w: int, frame_h: int, image: tuple[float, float, float, float]
) -> tuple[float, float, float, float]:
    """A [left, top, right, bottom] frame-pixel box (y down) in window coordinates (y up)."""
    ix, iy, iw, ih = image
    left, top, right, bottom = box
    sx, sy = iw / frame_w, ih / frame_h
    return ix + left * sx, iy + (frame_h - bottom) * sy, (right - left) * sx, (bottom - top) * sy


# --- widgets (layout in kiosk.kv) --------------------------------------------------------------


class ResultRow(BoxLayout):
    rank = StringProperty("")
    name = StringProperty("")
    distance = StringProperty("")
    close = BooleanProperty(False)


class LiveView(Widget):
    """The camera frame, fitted into the widget, with face boxes drawn over it."""

    texture = ObjectProperty(None, allownone=True)
    frame_size = ListProperty([0, 0])
    image_pos = ListProperty([0, 0])
    image_size = ListProperty([0, 0])
    boxes = ListProperty([])  # [left, top, right, bottom] in pixels of a boxes_frame_size frame
    boxes_frame_size = ListProperty([0, 0])
    visitor = NumericProperty(-1)

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self.bind(pos=self._layout, size=self._layout, frame_size=self._layout)
        self.bind(boxes=self._draw_boxes, boxes_frame_size=self._draw_boxes, visitor=self._draw_boxes)

    def show_frame(self, width_px: int, height_px: int, pixels: bytes) -> None:
        if self.texture is None or tuple(self.texture.size) != (width_px, height_px):
            texture = Texture.create(size=(width_px, height_px), colorfmt="rgb")
            texture.flip_vertical()  # frames come top row first; GL textures start at the bottom row
            self.texture = texture
            self.frame_size = [width_px, height_px]
        self.texture.blit_buffer(pixels, colorfmt="rgb", bufferfmt="ubyte")
        self.canvas.ask_update()

    def show_faces(self, msg: Faces | None) -> None:
        if msg is None:
            self.boxes = []
            return
        self.boxes_frame_size = [msg.width_px, msg.height_px]
        self.visitor = msg.visitor
        self.boxes = [list(b) for b in msg.boxes]

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
                Line(rectangle=box_rect(box, fw, fh, image), width=dp(3) if i == self.visitor else dp(1.5))


class KioskView(BoxLayout):
    """The root widget; the Kiosk sets these properties and listens for ``on_print``."""

    __events__ = ("on_print",)
    status = StringProperty("waiting for camera…")
    rows = ListProperty([])
    partial_note = StringProperty("")
    print_note = StringProperty("")
    can_print = BooleanProperty(False)

    def on_print(self) -> None:
        """Dispatched by the print button."""


# --- the logic: sockets in, widget properties out -----------------------------------------------


class Kiosk:
    """Reads the display's sockets and updates a KioskView; called on the main thread only."""

    def __init__(self, cfg: config.Config, view: KioskView, ctx: zmq.Context):
        self.cfg, self.view, self.ctx = cfg, view, ctx
        self.threshold: float = cfg["display"]["match_threshold"]
        self.subs = {topic: open_socket(ctx, cfg, topic, ROLE, receiving=True) for topic in SUBSCRIBES}
        self.req = open_socket(ctx, cfg, "print", ROLE, receiving=False)
        self.stats: Counter[str] = Counter()
        self.last_ns: dict[str, int] = {}
        self.faces: Faces | None = None
        self.shown: Matches | None = None
        self.last_visitor_ns = 0
        self.pending: tuple[int, int] | None = None  # (query_id, deadline_ns) of the print job in flight
        self.print_note_until_ns = 0
        self._seq = 0
        view.bind(on_print=lambda *_: self.request_print())

    def poll(self, now_ns: int) -> None:
        for topic in SUBSCRIBES:
            for msg in self._receive(topic, now_ns):
                try:
                    self._apply(msg, now_ns)
                except Exception:  # a message that breaks the view is skipped, never fatal
                    self.stats[f"{topic}.failed"] += 1
                    log.exception("showing a %s message failed; it is skipped", topic)
        self._poll_printer(now_ns)
        self._expire(now_ns)
        v = self.view
        visitor_present = self._alive("faces", now_ns) and self.faces is not None and self.faces.visitor >= 0
        v.status = status_text(self._alive("frames", now_ns), visitor_present, self.shown, self.threshold)
        best = best_distance(self.shown)
        v.can_print = self.pending is None and best is not None and best <= self.threshold

    def request_print(self) -> None:
        log.debug("print button pressed")
        best = best_distance(self.shown)
        if self.pending is not None or self.shown is None or best is None or best > self.threshold:
            return
        m = self.shown
        job = PrintJob(self._header(m.header.frame_id), m.query_id, m.results)
        try:
            self.req.send_multipart(encode(job), flags=zmq.NOBLOCK)
        except zmq.Again:
            self.stats["print.send_failed"] += 1
            log.warning("could not hand the print job for query %d to the printer", m.query_id)
            self._reopen_req("printer not answering")
            return
        self.pending = (m.query_id, time.monotonic_ns() + int(PRINT_TIMEOUT_S * 1e9))
        self.stats["print.sent"] += 1
        log.info("print job for query %d sent", m.query_id)
        self._note("printing your receipt…")
        self.view.can_print = False

    def close(self) -> None:
        for sock in [*self.subs.values(), self.req]:
            sock.close(linger=0)
        self.ctx.term()
        log.info("stopped; counters: %s", dict(self.stats))

    def _receive(self, topic: str, now_ns: int) -> list[Any]:
        sock = self.subs[topic]
        waiting = []
        while len(waiting) < MAX_MESSAGES_PER_POLL:
            try:
                waiting.append(sock.recv_multipart(zmq.NOBLOCK, copy=False))
            except zmq.Again:
                break
        if topic == "frames" and len(waiting) > 1:  # only the newest frame is worth drawing
            self.stats["frames.skipped_stale"] += len(waiting) - 1
            waiting = waiting[-1:]
        messages = []
        for parts in waiting:
            self.stats[f"{topic}.received"] += 1
            try:
                messages.append(decode(parts, expect=topic))
            except DecodeError as e:
                self.stats[f"{topic}.malformed"] += 1
                log.warning("dropped a malformed %s message: %s", topic, e)
                continue
            self.last_ns[topic] = now_ns
        return messages

    def _apply(self, msg: Any, now_ns: int) -> None:
        if isinstance(msg, Frame):
            self.view.ids.live.show_frame(msg.width_px, msg.height_px, msg.pixels)
        elif isinstance(msg, Faces):
            self.faces = msg
            if msg.visitor >= 0:
                self.last_visitor_ns = now_ns
            self.view.ids.live.show_faces(msg)
        elif isinstance(msg, Matches):
            self._show_matches(msg, now_ns)

    def _show_matches(self, msg: Matches, now_ns: int) -> None:
        self.last_visitor_ns = now_ns  # a result list means someone was there
        if self.shown is not None and msg.query_id == self.shown.query_id:
            return
        before = self._best_identity(self.shown)
        self.shown = msg
        self.view.rows = result_rows(msg.results, self.threshold)
        self.view.partial_note = partial_note(msg)
        best = self._best_identity(msg)
        # A visitor's queries come at the camera's pace: only a change of face is worth an INFO line.
        level = logging.INFO if best != before else logging.DEBUG
        log.log(level, "showing %d results for query %d, best %s", len(self.view.rows), msg.query_id, best)

    @staticmethod
    def _best_identity(msg: Matches | None) -> str | None:
        if msg is None:
            return None
        return min(msg.results, key=lambda r: r["distance"])["identity"] if msg.results else "(none)"

    def _expire(self, now_ns: int) -> None:
        """Drop boxes of a stalled detector, and the results once the visitor has gone."""
        if self.faces is not None and not self._alive("faces", now_ns):
            self.faces = None
            self.view.ids.live.show_faces(None)
        if self.shown is not None and now_ns - self.last_visitor_ns > RESULTS_HOLD_S * 1e9:
            self.shown = None
            self.view.rows = []
            self.view.partial_note = ""
        if self.pending is None and self.view.print_note and now_ns > self.print_note_until_ns:
            self.view.print_note = ""

    def _poll_printer(self, now_ns: int) -> None:
        if self.pending is None:
            return
        query_id, deadline_ns = self.pending
        if self.req.poll(0, zmq.POLLIN):
            self.pending = None
            try:
                reply: PrintReply = decode(self.req.recv_multipart(), expect=PrintReply.TOPIC)
            except DecodeError as e:
                self.stats["printed.malformed"] += 1
                log.warning("dropped a malformed print reply: %s", e)
                self._note("the printer sent a garbled answer")
                return
            if reply.ok:
                self.stats["print.done"] += 1
                log.info("printed query %d: %s", query_id, reply.detail)
                self._note("your receipt is printing")
            else:
                self.stats["print.failed"] += 1
                log.warning("printing query %d failed: %s", query_id, reply.detail)
                self._note("the printer could not print")
        elif now_ns > deadline_ns:
            self.stats["print.timeout"] += 1
            log.warning("no print reply within %.0f s; reopening the print socket", PRINT_TIMEOUT_S)
            self._reopen_req("printer not answering")

    def _reopen_req(self, note: str) -> None:
        """Lazy Pirate: a REQ socket that lost its reply can't send again, so replace it."""
        self.req.close(linger=0)
        self.req = open_socket(self.ctx, self.cfg, "print", ROLE, receiving=False)
        self.pending = None
        self._note(note)

    def _note(self, text: str) -> None:
        self.view.print_note = text
        self.print_note_until_ns = time.monotonic_ns() + int(PRINT_NOTE_S * 1e9)

    def _alive(self, topic: str, now_ns: int) -> bool:
        last = self.last_ns.get(topic)
        return last is not None and now_ns - last < ALIVE_PERIODS * 1e9 / TOPICS[topic].rate_hz

    def _header(self, frame_id: int) -> Header:
        self._seq += 1
        return Header(seq=self._seq, t_ns=time.monotonic_ns(), src=ROLE, frame_id=frame_id)


# --- the app -------------------------------------------------------------------------------------


class KioskApp(App):
    """Builds the view, runs the poll clock, and stops when the stop flag is set."""

    def __init__(self, cfg: config.Config, stop: StopFlag):
        super().__init__(kv_file=str(KV_PATH), title="MegaPixels")
        self.cfg, self.stop_flag = cfg, stop
        self.kiosk: Kiosk | None = None

    def build(self) -> KioskView:
        view = KioskView()
        self.kiosk = Kiosk(self.cfg, view, zmq.Context())
        Clock.schedule_interval(self._poll, POLL_S)
        return view

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
        KivyConfig.set("kivy", "exit_on_escape", "0")  # a visitor's Esc key must not close the kiosk


def main(cfg: config.Config) -> int:
    """Run the kiosk window until it is closed or the process gets SIGTERM / SIGINT."""
    logging.basicConfig(level=cfg["log"]["level"], stream=sys.stderr, format="%(name)s %(levelname)s %(message)s")
    logging.getLogger("kivy").setLevel(max(logging.INFO, logging.getLevelName(cfg["log"]["level"])))
    configure_window(cfg["display"])
    stop = StopFlag()
    # Installed before SDL starts, so SDL keeps its hands off these signals.
    signal.signal(signal.SIGTERM, stop.set)
    signal.signal(signal.SIGINT, stop.set)
    KioskApp(cfg, stop).run()
    return 0
