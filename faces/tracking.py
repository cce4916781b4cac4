"""Who the visitor is from frame to frame, when to ask for a search, and putting answers back in order.

Pure logic over boxes and numbers, no sockets and no pixels, so tests drive it frame by frame:

- :func:`choose` picks the visitor's box (largest or most central face);
- :class:`FaceTracks` follows faces across frames by box overlap, so "the same face for k
  frames" has a meaning, and gives each face a track id;
- :class:`QueryGate` lets a track ask for a search only once it has been stable for
  ``stable_frames`` frames, and then at most ``max_per_s`` times a second;
- :class:`Reorder` releases the encoders' answers in job order (several encoders finish out of
  order) and gives up on a job nobody answered within a timeout, so one lost job never blocks
  the stream;
- :class:`TrackAverage` averages the last n descriptors of a track: for a live camera, what
  jitter is for a still.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

Box = tuple[int, int, int, int]  # left, top, right, bottom


def area(b: Box) -> int:
    return max(0, b[2] - b[0]) * max(0, b[3] - b[1])


def iou(a: Box, b: Box) -> float:
    """Intersection over union of two boxes (0 when they don't touch)."""
    inter = area((max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])))
    union = area(a) + area(b) - inter
    return inter / union if union else 0.0


def choose(boxes: list[Box], policy: str, width_px: int, height_px: int) -> int:
    """Index of the visitor's box (-1 for none). ``largest``: nearest the camera;
    ``central``: nearest the frame's centre (ties go to the larger face)."""
    if not boxes:
        return -1
    if policy == "central":
        cx, cy = width_px / 2, height_px / 2

        def off_centre(i: int) -> tuple[float, int]:
            b = boxes[i]
            return ((b[0] + b[2]) / 2 - cx) ** 2 + ((b[1] + b[3]) / 2 - cy) ** 2, -area(b)

        return min(range(len(boxes)), key=off_centre)
    return max(range(len(boxes)), key=lambda i: area(boxes[i]))


@dataclass
class Track:
    track_id: int
    box: Box
    frames: int = 1  # consecutive frames this face has been seen in


class FaceTracks:
    """Faces matched to the previous frame's by overlap; a face that overlaps none starts a new track."""

    def __init__(self, min_iou: float = 0.3):
        self.min_iou = min_iou
        self.tracks: list[Track] = []
        self._next_id = 1

    def update(self, boxes: list[Box]) -> list[Track]:
        """The track of each box, in the order of ``boxes``."""
        free = list(self.tracks)
        out: list[Track] = []
        for box in boxes:
            best = max(free, key=lambda t: iou(t.box, box), default=None)
            if best is not None and iou(best.box, box) >= self.min_iou:
                free.remove(best)
                out.append(Track(best.track_id, box, best.frames + 1))
            else:
                out.append(Track(self._next_id, box))
                self._next_id += 1
        self.tracks = out
        return out


class QueryGate:
    """Stability and rate limit: may this track ask for a search now?"""

    def __init__(self, stable_frames: int, max_per_s: float):
        self.stable_frames = stable_frames
        self.min_gap_ns = int(1e9 / max_per_s)
        self._last_ns: dict[int, int] = {}

    def allow(self, track: Track, now_ns: int) -> bool:
        if track.frames < self.stable_frames:
            return False
        last = self._last_ns.get(track.track_id)
        if last is not None and now_ns - last < self.min_gap_ns:
            return False
        self._last_ns[track.track_id] = now_ns
        if len(self._last_ns) > 256:  # forget tracks long gone
            for tid in sorted(self._last_ns)[:128]:
                del self._last_ns[tid]
        return True


class Reorder:
    """Answers released strictly in job-id order; a job unanswered for ``timeout_ns`` is skipped.

    Job ids are handed out in increasing order. An answer that arrives after its job was given
    up, or twice, is dropped (counted in ``late``): nothing is ever released twice or out of order.
    """

    def __init__(self, timeout_ns: int):
        self.timeout_ns = timeout_ns
        self._sent_ns: dict[int, int] = {}
        self._done: dict[int, object] = {}
        self.given_up = 0
        self.late = 0

    @property
    def in_flight(self) -> int:
        return len(self._sent_ns)

    def sent(self, job_id: int, now_ns: int) -> None:
        self._sent_ns[job_id] = now_ns

    def add(self, job_id: int, answer: object, now_ns: int) -> list[object]:
        if job_id not in self._sent_ns or job_id in self._done:
            self.late += 1
            return []
        self._done[job_id] = answer
        return self.release(now_ns)

    def release(self, now_ns: int) -> list[object]:
        out: list[object] = []
        while self._sent_ns:
            head = min(self._sent_ns)
            if head in self._done:
                out.append(self._done.pop(head))
            elif now_ns - self._sent_ns[head] > self.timeout_ns:
                self.given_up += 1
            else:
                break
            del self._sent_ns[head]
        return out


class TrackAverage:
    """Mean of the last ``n`` descriptors of each track (n = 1: the descriptor itself)."""

    def __init__(self, n: int):
        self.n = n
        self._recent: dict[int, deque[np.ndarray]] = {}

    def add(self, track_id: int, descriptor: np.ndarray) -> np.ndarray:
        if self.n <= 1:
            return descriptor
        recent = self._recent.setdefault(track_id, deque(maxlen=self.n))
        recent.append(descriptor)
        if len(self._recent) > 64:
            for tid in sorted(self._recent)[:32]:
                if tid != track_id:
                    del self._recent[tid]
        return np.mean(recent, axis=0).astype(np.float32)
