"""recorder (development only) — subscribes to the topics in ``recorder.topics``; publishes nothing.

Writes every message it receives, with the time its sender made it, to ``recorder.path`` in the recording
format of actors/recording.py; the camera replays such a file with the same frames, order and
relative timing (``MEGAPIXELS_SOURCE=build/recording.mprec``). Only PUB/SUB topics can be
recorded: listening on any other (PUSH/PULL, ROUTER/DEALER...) would steal messages from their receivers.

It refuses to start when ``mode.kiosk`` is true: visitors are never recorded.
Run it beside the graph: ``python -m actors.recorder`` (Ctrl-C ends the file cleanly).
"""

from __future__ import annotations

from typing import Any

import config
from actors import runtime
from actors.camera import recording
from messages import TOPICS, encode


def recordable_topics(spec: str) -> tuple[str, ...]:
    """The topics named in ``spec`` ("frames,faces"); ValueError naming what can be recorded."""
    names = tuple(t.strip() for t in spec.split(",") if t.strip())
    allowed = sorted(n for n, t in TOPICS.items() if t.pattern == "PUB/SUB")
    bad = [n for n in names if n not in allowed]
    if bad or not names:
        raise ValueError(f"recorder.topics = {spec!r}: can record {', '.join(allowed)} (comma-separated)")
    return names


class Recorder(runtime.Actor):
    ROLE = "recorder"
    # Queue up to 5 s of camera frames (~140 MB at 640x480) rather than the live topics' 2: ZeroMQ's
    # I/O thread keeps reading while this process writes or waits for the GIL, so a slow disk or a
    # busy interpreter loses no frame here. The camera still sends with the live high-water mark
    # of 2 (a live receiver wants the newest), so a stall of the I/O threads themselves can drop a
    # frame before it arrives: the recording holds what reached the recorder, in order.
    RECEIVE_HWM = 150

    def __init__(self, cfg: config.Config, name: str | None = None):
        if cfg["mode"]["kiosk"]:
            raise runtime.StartupError(
                "refusing to record: mode.kiosk is true, and visitors are never recorded "
                "(the recorder is a development tool; use a config without [mode] kiosk = true)"
            )
        try:
            self.RECEIVES = recordable_topics(cfg["recorder"]["topics"])
        except ValueError as e:
            raise runtime.StartupError(str(e)) from e
        super().__init__(cfg, name)
        self.writer: recording.Writer | None = None

    def on_start(self) -> None:
        path = self.cfg.path("recorder", "path")
        try:
            self.writer = recording.Writer(path)
        except OSError as e:
            raise runtime.StartupError(f"cannot write the recording {path}: {e}") from e
        self.log.info("recording %s to %s", ", ".join(self.RECEIVES), path)

    def handle(self, msg: Any) -> list[Any]:
        assert self.writer is not None
        # The sender's timestamp (same machine, same monotonic clock), not the arrival time: replay
        # then reproduces the camera's timing, not how late this process happened to read it.
        self.writer.write(msg.header.t_ns, encode(msg))
        self.stats[f"recorded.{type(msg).TOPIC}"] += 1
        return []

    def on_stop(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.log.info("wrote %d messages to %s", self.writer.count, self.writer.path)


if __name__ == "__main__":
    raise SystemExit(runtime.main(Recorder))
