"""detector — subscribes to ``frames`` and ``descriptors``; publishes ``faces`` and ``queries``, pushes ``chips``.

Works on the newest frame only (older waiting frames are dropped, so it never falls behind the
camera). Finds faces (``detector.method``: dlib HOG on a downscaled copy, dlib CNN or OpenCV's
Haar cascade), drops faces narrower than ``min_face_px``, follows them from frame to frame
(:mod:`faces.tracking`) and picks the visitor (``policy``: largest or most central face; ``all``
searches every face). Every frame gives one ``faces`` message (all boxes, the visitor's index and
aligned 150x150 chip) for the display.

A search costs a descriptor (12-58 ms), so it is asked for only when a face track has been
stable for ``stable_frames`` frames, and at most ``max_queries_per_s`` times a second per track:
the chip is then pushed on ``chips`` to exactly one of the encoder processes. Their answers come
back on ``descriptors``; the detector puts them back in job order, averages the last
``encoder.average_track`` descriptors of the track and publishes the ``queries`` the matchers
answer. So any number of encoders share the load with no query duplicated or reordered.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

import faces
from actors import runtime
from faces import tracking
from messages import DIM, Encoded, FaceJob, Faces, Frame, Query

MAX_IN_FLIGHT = 8  # jobs pushed but not answered; beyond this the encoders are behind, so skip


def targets(boxes: list[faces.Box], policy: str, width_px: int, height_px: int) -> list[int]:
    """Indexes of the faces to search for, the visitor first."""
    visitor = tracking.choose(boxes, "central" if policy == "central" else "largest", width_px, height_px)
    if visitor < 0:
        return []
    if policy != "all":
        return [visitor]
    return [visitor, *(i for i in range(len(boxes)) if i != visitor)]


class Detector(runtime.Actor):
    ROLE = "detector"
    RECEIVES = ("frames", "descriptors")
    SENDS = ("faces", "chips", "queries")
    DRAIN = ("frames",)

    def on_start(self) -> None:
        d = self.cfg["detector"]
        faces.load_models()
        try:
            faces.detect(np.zeros((64, 64, 3), np.uint8), method=d["method"])  # load the chosen model now
        except RuntimeError as err:
            raise runtime.StartupError(f"detector.method = {d['method']!r}: {err}") from err
        self.on_scrub()
        self.job_id = 0
        self.log.info("using %s, detector %s, policy %s", faces.dlib_description(), d["method"], d["policy"])

    def on_scrub(self) -> None:
        """Fresh face tracks: the tracks' recent descriptors and the encoders' unreleased answers go."""
        d, e = self.cfg["detector"], self.cfg["encoder"]
        self.tracks = tracking.FaceTracks(d["track_iou"])
        self.gate = tracking.QueryGate(d["stable_frames"], d["max_queries_per_s"])
        counted = getattr(self, "reorder", None)
        self.reorder = tracking.Reorder(e["reorder_timeout_ms"] * 1_000_000)
        if counted is not None:  # the counters go on
            self.reorder.given_up, self.reorder.late = counted.given_up, counted.late
        self.average = tracking.TrackAverage(e["average_track"])

    def handle(self, msg: Frame | Encoded) -> list[Any]:
        if isinstance(msg, Encoded):
            return self.on_descriptor(msg)
        return self.on_frame(msg, time.monotonic_ns())

    def on_frame(self, msg: Frame, now_ns: int) -> list[Any]:
        d = self.cfg["detector"]
        rgb = np.frombuffer(msg.pixels, np.uint8).reshape(msg.height_px, msg.width_px, 3)
        boxes = faces.find_faces(rgb, d)
        tracks = self.tracks.update(boxes)
        wanted = targets(boxes, d["policy"], msg.width_px, msg.height_px)
        visitor = wanted[0] if wanted else -1
        chips = {i: faces.face_chip(rgb, boxes[i]).tobytes() for i in wanted[:1]}
        self.stats["faces.with_visitor" if visitor >= 0 else "faces.empty"] += 1
        out: list[Any] = [
            Faces(
                self.header(msg.header.frame_id),
                msg.width_px,
                msg.height_px,
                msg.header.t_ns,
                [list(b) for b in boxes],
                visitor,
                chips.get(visitor, b""),
            )
        ]
        for i in wanted:
            if self.reorder.in_flight >= MAX_IN_FLIGHT:
                self.stats["chips.encoders_busy"] += 1
                continue
            if not self.gate.allow(tracks[i], now_ns):
                continue
            chip = chips.get(i) or faces.face_chip(rgb, boxes[i]).tobytes()
            self.job_id += 1
            self.reorder.sent(self.job_id, now_ns)
            track_id = tracks[i].track_id
            out.append(FaceJob(self.header(msg.header.frame_id), self.job_id, msg.header.t_ns, track_id, chip))
        return out

    def on_descriptor(self, msg: Encoded) -> list[Any]:
        if len(msg.descriptor) != DIM * 4:
            self.stats["descriptors.malformed"] += 1
            self.log.warning("dropped a descriptor of %d bytes (expected %d)", len(msg.descriptor), DIM * 4)
            return []
        return self._queries(self.reorder.add(msg.job_id, msg, time.monotonic_ns()))

    def tick(self, now_ns: int) -> list[Any]:
        return self._queries(self.reorder.release(now_ns))

    def _queries(self, answers: list[Any]) -> list[Any]:
        out = []
        for a in answers:
            descriptor = self.average.add(a.track_id, np.frombuffer(a.descriptor, "<f4"))
            out.append(
                Query(
                    self.header(a.header.frame_id),
                    query_id=time.monotonic_ns(),  # increasing and unique: one detector makes every query
                    captured_ns=a.captured_ns,
                    k=self.cfg["search"]["top_k"],
                    descriptor=descriptor.astype("<f4").tobytes(),
                )
            )
        self.stats["queries.given_up"] = self.reorder.given_up
        self.stats["descriptors.late"] = self.reorder.late
        return out


if __name__ == "__main__":
    raise SystemExit(runtime.main(Detector))
