"""camera — publishes ``frames``; subscribes to nothing.

Reads a webcam (``camera.source = "0"``) or replays a video file or an image folder at its
native rate (or ``camera.fps``), optionally looping, and publishes each frame as multipart
``[frames, header, raw RGB pixels]``. Frames wider than ``camera.width_px`` are scaled down.
"""

from __future__ import annotations

import time
from typing import Any

from actors import runtime
from actors.sources import SourceError, fit_width, open_source
from messages import Frame


class Camera(runtime.Actor):
    ROLE = "camera"
    SENDS = ("frames",)

    def on_start(self) -> None:
        c = self.cfg["camera"]
        spec = c["source"] if c["source"].isdigit() else str(self.cfg.path("camera", "source"))
        try:
            self.source = open_source(spec, c["folder_fps"])
        except SourceError as e:
            raise runtime.StartupError(str(e)) from e
        self.period_ns = int(1e9 / (c["fps"] or self.source.fps))
        self.due_ns = time.monotonic_ns()
        self.frame_id = 0
        self.finished = False
        self.log.info("source %s at %.1f frames/s", self.source.label, 1e9 / self.period_ns)

    def next_tick_ms(self, now_ns: int) -> float:
        return runtime.POLL_MS if self.finished else (self.due_ns - now_ns) / 1e6

    def tick(self, now_ns: int) -> list[Any]:
        if self.finished or now_ns < self.due_ns:
            return []
        rgb = self.source.read()
        if rgb is None and self.cfg["camera"]["loop"] and not getattr(self.source, "is_webcam", False):
            self.source.rewind()
            rgb = self.source.read()
        if rgb is None:
            self.finished = True
            self.log.info("end of %s after %d frames", self.source.label, self.frame_id)
            return []
        # Pace from the schedule, not from now, so the replay rate doesn't drift; but never
        # try to catch up more than one frame after a stall.
        self.due_ns = max(self.due_ns + self.period_ns, now_ns)
        rgb = fit_width(rgb, self.cfg["camera"]["width_px"])
        self.frame_id += 1
        h, w = rgb.shape[:2]
        return [Frame(self.header(self.frame_id), w, h, self.source.label, rgb.tobytes())]

    def on_stop(self) -> None:
        if hasattr(self, "source"):
            self.source.close()


if __name__ == "__main__":
    raise SystemExit(runtime.main(Camera))
