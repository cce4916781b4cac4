"""detector — subscribes to ``frames``; publishes ``faces`` and ``queries``; binds ``chips`` (ROUTER).

Works on the newest frame only (older waiting frames are dropped, so it never falls behind the
camera). Finds faces (``detector.method``: dlib HOG on a downscaled copy, dlib CNN or OpenCV's
Haar cascade), drops faces narrower than ``min_face_px``, follows them from frame to frame
(:mod:`faces.tracking`) and picks the visitor (``policy``: largest or most central face; ``all``
searches every face). Every frame gives one ``faces`` message (all boxes, the visitor's index and
aligned 150x150 chip) for the display.

A search costs a descriptor (12-58 ms on a quiet core, seconds on a starved one), so it is asked
for only when a face track has been stable for ``stable_frames`` frames, and at most
``max_queries_per_s`` times a second per track. The encoders connect to ``chips`` (ROUTER/DEALER)
and announce how many jobs each takes at once (``Credit``, then again as a heartbeat); a chip
(``FaceJob``) goes only to an encoder with a free credit, and every descriptor (``Encoded``) that
comes back frees it. While every encoder is busy the chip waits here, one per track: a newer face
of the track replaces it. So slow encoders get fresh faces instead of a queue, and no computed
descriptor is thrown away. The detector puts the answers back in job order, averages the last
``encoder.average_track`` descriptors of the track and publishes the ``queries`` the matchers
answer: any number of encoders share the load with no query duplicated or reordered. A job is
given up (``queries.given_up``) only when its encoder is presumed dead: silent for
``encoder.liveness_s``, or its connection closed, or it reconnected without answering.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

import faces
from actors import runtime
from faces import tracking
from messages import DIM, Credit, Encoded, FaceJob, Faces, Frame, Query, Routed


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
    RECEIVES = ("frames", "chips")
    SENDS = ("faces", "chips", "queries")
    DRAIN = ("frames",)
    # Everything the encoders sent (up to MAX_BATCH) is read before the liveness check in tick: a
    # detector that was itself starved of CPU must not find an encoder silent whose words wait unread.
    BATCH = ("chips",)

    def on_start(self) -> None:
        d = self.cfg["detector"]
        faces.load_models()
        try:
            faces.detect(np.zeros((64, 64, 3), np.uint8), method=d["method"])  # load the chosen model now
        except RuntimeError as err:
            raise runtime.StartupError(f"detector.method = {d['method']!r}: {err}") from err
        self.dispatch = tracking.Dispatch(int(self.cfg["encoder"]["liveness_s"] * 1e9))
        self.reorder = tracking.Reorder()
        self.on_scrub()
        self.log.info("using %s, detector %s, policy %s", faces.dlib_description(), d["method"], d["policy"])

    def on_scrub(self) -> None:
        """Fresh face tracks: the tracks' recent descriptors, waiting chips and unreleased answers go.

        The encoders (connections, credits: no visitor data) stay known; jobs still out are given up.
        """
        d, e = self.cfg["detector"], self.cfg["encoder"]
        self.tracks = tracking.FaceTracks(d["track_iou"])
        self.gate = tracking.QueryGate(d["stable_frames"], d["max_queries_per_s"])
        self.average = tracking.TrackAverage(e["average_track"])
        self.dispatch.waiting.clear()
        for enc in self.dispatch.encoders.values():
            enc.jobs.clear()
        self.reorder.clear()
        self._count()

    def handle(self, msg: Frame | Routed) -> list[Any]:
        now_ns = time.monotonic_ns()
        if isinstance(msg, Frame):
            return self.on_frame(msg, now_ns)
        if isinstance(msg.msg, Encoded):
            return self.on_descriptor(msg.peer, msg.msg, now_ns)
        return self.on_credit(msg.peer, msg.msg, now_ns)

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
            if self.gate.allow(tracks[i], now_ns):
                chip = chips.get(i) or faces.face_chip(rgb, boxes[i]).tobytes()
                self.dispatch.wait(tracks[i].track_id, msg.header.t_ns, (msg.header.frame_id, chip))
        return out + self._assign(now_ns)

    def on_credit(self, peer: bytes, msg: Credit, now_ns: int) -> list[Any]:
        new, lost = self.dispatch.announce(peer, msg.header.src, msg.instance, msg.credits, now_ns)
        if not new:
            return self._assign(now_ns)
        self.stats["encoders.joined"] += 1
        self.log.info("%s connected, takes %d job(s) at once", msg.header.src, msg.credits)
        if lost:
            self.log.warning("%s reconnected: its %d unanswered job(s) are given up", msg.header.src, len(lost))
        return self._queries(self.reorder.give_up(lost)) + self._assign(now_ns)

    def on_descriptor(self, peer: bytes, msg: Encoded, now_ns: int) -> list[Any]:
        self.dispatch.heard(peer, now_ns)
        if not self.dispatch.answered(peer, msg.job_id, now_ns):
            self.reorder.late += 1  # given up already (or not this encoder's job): never released late
            return self._assign(now_ns)
        if len(msg.descriptor) != DIM * 4:  # answered, but with nothing to search for: that job is lost
            self.stats["descriptors.malformed"] += 1
            self.log.warning("dropped a descriptor of %d bytes (expected %d)", len(msg.descriptor), DIM * 4)
            return self._queries(self.reorder.give_up([msg.job_id])) + self._assign(now_ns)
        return self._queries(self.reorder.add(msg.job_id, msg)) + self._assign(now_ns)

    def on_unroutable(self, routed: Routed) -> list[Any]:
        """A chip for an encoder whose connection has closed: forget it, and the chip waits again."""
        job: FaceJob = routed.msg
        if routed.peer not in self.dispatch.encoders:
            return []
        enc, jobs = self.dispatch.gone(routed.peer)
        self.stats["encoders.lost"] += 1
        self.log.warning("%s has gone (its connection closed)", enc.name)
        if job.track_id not in self.dispatch.waiting:  # unless a newer face of the track waits already
            self.dispatch.wait(job.track_id, job.captured_ns, (job.header.frame_id, job.chip))
        released = self.reorder.give_up([job.job_id], counted=False)  # never sent: no work lost
        released += self.reorder.give_up([j for j in jobs if j != job.job_id])
        return self._queries(released) + self._assign(time.monotonic_ns())

    def tick(self, now_ns: int) -> list[Any]:
        if self.reorder.in_flight:  # the visitor's chips are still out at an encoder: not gone yet
            self.visitor_seen_ns = now_ns
        dead = self.dispatch.dead(now_ns)
        released: list[Any] = []
        for enc, jobs in dead:
            self.stats["encoders.lost"] += 1
            silent_s = (now_ns - enc.heard_ns) / 1e9
            self.log.warning("%s silent for %.1f s: presumed dead, %d job(s) given up", enc.name, silent_s, len(jobs))
            released += self.reorder.give_up(jobs)
        return self._queries(released) if dead else []

    def _assign(self, now_ns: int) -> list[Any]:
        """Chips to the encoders with a free credit."""
        out = []
        for peer, job_id, w in self.dispatch.assign(now_ns):
            frame_id, chip = w.item
            self.reorder.sent(job_id)
            out.append(Routed(peer, FaceJob(self.header(frame_id), job_id, w.captured_ns, w.track_id, chip)))
        self._count()
        return out

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
        self._count()
        return out

    def _count(self) -> None:
        self.stats["queries.given_up"] = self.reorder.given_up
        self.stats["descriptors.late"] = self.reorder.late
        self.stats["chips.superseded"] = self.dispatch.superseded


if __name__ == "__main__":
    raise SystemExit(runtime.main(Detector))
