"""camera — publishes ``frames`` and ``camera_status``; answers ``replay_control`` requests.

Reads a webcam (``camera.source = "0"`` or a stream URL, asked for ``width_px`` x ``height_px``)
or replays a video file, an image folder or a recording of the ``frames`` topic (made by
actors/recorder.py), and publishes each frame as multipart ``[frames, header, raw RGB]``.
Frames wider than ``camera.width_px`` are scaled down; gray and BGRA frames are converted; a
frame of any other shape is counted (``frames.bad_shape``) and skipped.

Webcam: if it disappears (or isn't there at start) the actor keeps running, publishes the state
``lost`` with the reason on ``camera_status`` and reopens it every ``reconnect_s`` until it returns.

Replay keeps the source's relative timing (video clock, folder rate, recorded send times)
scaled by ``rate`` (0.5 = half speed; 0 = as fast as possible), starts ``start_s`` seconds in,
loops back to ``start_s`` when ``loop`` is set, and obeys ReplayControl requests: ``pause``,
``resume``, ``step`` (one frame while paused), ``rate``, ``seek``, ``status``; every answer is a
CameraStatus. ``python -m actors.camera.replay_control`` sends them from a shell.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

import faces
from actors import runtime
from actors.camera import sources
from messages import CameraStatus, Frame, ReplayControl

STATUS_EVERY_NS = 1_000_000_000
MAX_LAG_NS = 250_000_000  # later than this behind schedule (a stall): restart the clock, don't race


class Camera(runtime.Actor):
    ROLE = "camera"
    RECEIVES = ("replay_control",)
    SENDS = ("frames", "camera_status")
    # Tests hand in a fake opener to simulate a webcam that disappears and returns.
    opener: Callable[..., sources.Source] = staticmethod(sources.open_source)

    def on_start(self) -> None:
        c = self.cfg["camera"]
        self.is_webcam = c["source"].isdigit() or "://" in c["source"]
        self.spec = c["source"] if self.is_webcam else str(self.cfg.path("camera", "source"))
        self.rate = c["rate"]
        self.paused = c["paused"] and not self.is_webcam
        self.step_once = False
        self.frame_id = 0
        self.finished = False
        self.source: sources.Source | None = None
        self.state, self.detail = "lost", "not opened yet"
        self.pending: tuple[np.ndarray, float] | None = None
        self.anchor: tuple[int, float] | None = None  # (monotonic ns, source seconds) that match
        self.next_open_ns = 0
        self.next_status_ns = 0
        self.last_due_ns = 0
        self.reported_skips = 0
        try:
            self._open()
        except sources.SourceError as e:
            if not self.is_webcam:
                raise runtime.StartupError(str(e)) from e
            self._lost(str(e), time.monotonic_ns())
        label = self.source.label if self.source else f"webcam:{self.spec}"
        self.log.info("source %s, rate %gx, state %s", label, self.rate, self.state)

    # -- source handling -------------------------------------------------------------------
    def _open(self) -> None:
        c = self.cfg["camera"]
        max_pixels = round(c["max_image_mp"] * 1e6)
        self.source = self.opener(self.spec, c["folder_fps"], c["width_px"], c["height_px"], max_pixels)
        if not self.is_webcam and c["start_s"]:
            self.source.seek(c["start_s"])
        self.state = "live" if self.is_webcam else ("paused" if self.paused else "replay")
        self.detail = ""

    def _lost(self, why: str, now_ns: int) -> None:
        if self.source is not None:
            self.source.close()
            self.source = None
        self.state, self.detail = "lost", why
        self.next_open_ns = now_ns + int(self.cfg["camera"]["reconnect_s"] * 1e9)
        self.next_status_ns = 0  # tell the display now
        self.stats["camera.lost"] += 1
        self.log.warning("webcam %s lost: %s; retrying every %gs", self.spec, why, self.cfg["camera"]["reconnect_s"])

    def status(self, detail: str = "") -> CameraStatus:
        label = self.source.label if self.source else (f"webcam:{self.spec}" if self.is_webcam else self.spec)
        detail = detail or self.detail
        return CameraStatus(self.header(self.frame_id), self.state, label, detail, self.frame_id, self.rate)

    # -- timing ----------------------------------------------------------------------------
    def _due_ns(self, t_s: float, now_ns: int) -> int:
        if self.is_webcam or self.rate == 0 or self.step_once:
            return now_ns
        if self.anchor is None:
            self.anchor = (now_ns, t_s)
        wall_ns, src_s = self.anchor
        return wall_ns + int((t_s - src_s) / self.rate * 1e9)

    def next_tick_ms(self, now_ns: int) -> float:
        if self.state == "lost":
            return (self.next_open_ns - now_ns) / 1e6
        if self.finished or (self.paused and not self.step_once):
            return runtime.POLL_MS
        if self.pending is None:
            return 0.0
        return (self._due_ns(self.pending[1], now_ns) - now_ns) / 1e6

    def tick(self, now_ns: int) -> list[Any]:
        out: list[Any] = []
        if self.state == "lost" and now_ns >= self.next_open_ns:
            try:
                self._open()
                self.log.info("webcam %s is back", self.spec)
                self.next_status_ns = 0
            except sources.SourceError as e:
                self.next_open_ns = now_ns + int(self.cfg["camera"]["reconnect_s"] * 1e9)
                self.detail = str(e)
        if self.source is not None and not self.finished and (not self.paused or self.step_once):
            out += self._frame(now_ns)
        if now_ns >= self.next_status_ns:
            out.append(self.status())
            self.next_status_ns = now_ns + STATUS_EVERY_NS
        return out

    def _frame(self, now_ns: int) -> list[Any]:
        assert self.source is not None
        if self.pending is None:
            # Decoding takes time, so ``now_ns`` is stale once it's done: schedule and publish the
            # frame on the next pass of the loop (immediately after, if it is already due).
            self.pending = self._read(now_ns)
            return []
        rgb, t_s = self.pending
        due = self._due_ns(t_s, now_ns)
        if now_ns < due:
            return []
        if now_ns - due > MAX_LAG_NS:  # we stalled: carry on from here instead of racing to catch up
            self.anchor = (now_ns, t_s)
        self.last_due_ns = due
        self.pending = None
        self.step_once = False
        self.frame_id += 1
        h, w = rgb.shape[:2]
        return [Frame(self.header(self.frame_id), w, h, self.source.label, rgb.tobytes())]

    def _read(self, now_ns: int) -> tuple[np.ndarray, float] | None:
        assert self.source is not None
        c = self.cfg["camera"]
        for _ in range(100):  # skip a run of unusable frames, but never spin forever
            try:
                got = self.source.read()
            except faces.ImageError as e:
                self.stats["frames.bad_shape"] += 1
                self.log.warning("skipped a frame of %s: %s", self.source.label, e)
                continue
            self._report_skips()
            if got is None:
                return self._end(now_ns)
            rgb, t_s = got
            if c["fps"] and not self.is_webcam:
                t_s = self.frame_id / c["fps"]
            return sources.fit_width(rgb, c["width_px"]), t_s
        return None

    def _end(self, now_ns: int) -> None:
        assert self.source is not None
        if self.is_webcam:
            self._lost("the webcam stopped delivering frames (unplugged?)", now_ns)
            return None
        if self.cfg["camera"]["loop"]:
            self.source.seek(self.cfg["camera"]["start_s"])
            got = self.source.read()
            if got is not None:
                # The first frame again one frame period after the last one, as if the clip went on.
                if self.anchor is not None and self.rate:
                    self.anchor = (self.last_due_ns + int(1e9 / (self.source.fps * self.rate)), got[1])
                return sources.fit_width(got[0], self.cfg["camera"]["width_px"]), got[1]
        self.finished, self.state = True, "finished"
        self.next_status_ns = 0
        self.log.info("end of %s after %d frames", self.source.label, self.frame_id)
        return None

    def _report_skips(self) -> None:
        skipped = self.source.skipped if self.source else []
        for line in skipped[self.reported_skips :]:
            self.stats["frames.unreadable"] += 1
            self.log.warning("skipped %s", line)
        self.reported_skips = len(skipped)

    # -- control ---------------------------------------------------------------------------
    def handle(self, msg: ReplayControl) -> list[Any]:
        now_ns = time.monotonic_ns()
        if self.is_webcam and msg.command not in ("status",):
            return [self.status(f"{msg.command}: a live webcam can't be controlled, only replays")]
        if msg.command == "pause":
            self.paused = True
            self.state = "paused"
        elif msg.command == "resume":
            self.paused = False
            self.anchor = None
            self.state = "finished" if self.finished else "replay"
        elif msg.command == "step":
            self.paused, self.step_once, self.state = True, True, "paused"
        elif msg.command == "rate":
            if not 0 <= msg.value <= 64:
                return [self.status(f"rate {msg.value:g} refused: allowed 0 (as fast as possible) to 64")]
            self.rate = msg.value
            self.anchor = None
        elif msg.command == "seek":
            if self.source is None or msg.value < 0:
                return [self.status(f"seek {msg.value:g} refused")]
            self.source.seek(msg.value)
            self.pending, self.anchor, self.finished = None, None, False
            self.state = "paused" if self.paused else "replay"
        elif msg.command != "status":
            return [self.status(f"unknown command {msg.command!r}: pause, resume, step, rate, seek, status")]
        self.stats[f"control.{msg.command}"] += 1
        self.next_status_ns = min(self.next_status_ns, now_ns)
        return [self.status()]

    def reject(self, reason: str) -> Any:
        return self.status(reason)

    def on_stop(self) -> None:
        if getattr(self, "source", None) is not None:
            self.source.close()
