"""Who the visitor is from frame to frame, when to ask for a search, which encoder gets it, and
putting the answers back in order.

Pure logic over boxes and numbers, no sockets and no pixels, so tests drive it frame by frame:

- :func:`choose` picks the visitor's box (largest or most central face);
- :class:`FaceTracks` follows faces across frames by box overlap, so "the same face for k
  frames" has a meaning, and gives each face a track id;
- :class:`QueryGate` lets a track ask for a search only once it has been stable for
  ``stable_frames`` frames, and then at most ``max_per_s`` times a second;
- :class:`Dispatch` is the flow control in front of the encoders: each announces how many jobs it
  takes at once (credits), a chip goes only to an encoder with a free credit, and while none has
  one the chip waits, at most one per track (a newer face of the track replaces it). An encoder
  silent for longer than the liveness timeout is presumed dead, and only then are its jobs given up;
- :class:`Reorder` releases the encoders' answers in job order (several encoders finish out of
  order); a job given up (its encoder presumed dead) is skipped, so it never blocks the stream;
- :class:`TrackAverage` averages the last n descriptors of a track: for a live camera, what
  jitter is for a still.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

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


@dataclass
class Encoder:
    """What the detector knows of one encoder connection."""

    name: str
    instance: int  # drawn when the encoder process started (messages.Credit)
    credits: int  # jobs it takes at once
    heard_ns: int  # when it was last heard from, or last given a job
    free_since_ns: int  # when it last had a credit come free (the longest-idle encoder goes first)
    jobs: set[int] = field(default_factory=set)  # job ids sent to it and not answered

    @property
    def free(self) -> int:
        return self.credits - len(self.jobs)


@dataclass
class Waiting:
    """A chip waiting for an encoder with a free credit."""

    track_id: int
    captured_ns: int
    item: Any  # what the detector will send (frame id, chip...)


class Dispatch:
    """Credit-based flow control between the detector and its encoders (one per connection, ``peer``).

    - :meth:`announce`: an encoder's credits (at start, after it reconnects, and as its heartbeat);
    - :meth:`wait`: a chip to encode; it waits at most one per track, a newer face of the track
      replaces the waiting one (counted in ``superseded``: never sent, so no work is thrown away);
    - :meth:`assign`: the waiting chips, oldest capture first, each to the encoder with a free credit
      that has been idle longest, with increasing job ids;
    - :meth:`answered`: a descriptor came back, which frees its credit;
    - :meth:`dead` / :meth:`gone`: encoders silent past ``liveness_ns`` (or whose connection has
      closed) are forgotten, and their jobs are returned to be given up.
    """

    def __init__(self, liveness_ns: int):
        self.liveness_ns = liveness_ns
        self.encoders: dict[bytes, Encoder] = {}
        self.waiting: dict[int, Waiting] = {}  # by track id
        self.last_job_id = 0
        self.superseded = 0  # waiting chips replaced by a newer face of their track

    def announce(self, peer: bytes, name: str, instance: int, credits: int, now_ns: int) -> tuple[bool, list[int]]:
        """An encoder's Credit: (whether this connection is new, the jobs of its earlier connection).

        A new connection of a known encoder instance means it reconnected (a privacy scrub reopens
        its socket): what the old connection held is lost, so its jobs come back to be given up.
        """
        known = self.encoders.get(peer)
        if known is not None:
            known.credits, known.heard_ns = credits, now_ns
            return False, []
        lost: list[int] = []
        for old in [p for p, e in self.encoders.items() if e.instance == instance]:
            lost += sorted(self.encoders.pop(old).jobs)
        self.encoders[peer] = Encoder(name, instance, credits, now_ns, now_ns)
        return True, lost

    def wait(self, track_id: int, captured_ns: int, item: Any) -> None:
        if self.waiting.pop(track_id, None) is not None:
            self.superseded += 1
        self.waiting[track_id] = Waiting(track_id, captured_ns, item)

    def assign(self, now_ns: int) -> list[tuple[bytes, int, Waiting]]:
        """(peer, job id, waiting chip) for each chip that an encoder has room for now."""
        out = []
        for w in sorted(self.waiting.values(), key=lambda w: w.captured_ns):
            ready = [(e.free_since_ns, peer) for peer, e in self.encoders.items() if e.free > 0]
            if not ready:
                break
            _, peer = min(ready)
            enc = self.encoders[peer]
            self.last_job_id += 1
            enc.jobs.add(self.last_job_id)
            enc.heard_ns = max(enc.heard_ns, now_ns)
            del self.waiting[w.track_id]
            out.append((peer, self.last_job_id, w))
        return out

    def answered(self, peer: bytes, job_id: int, now_ns: int) -> bool:
        """A descriptor from ``peer``: its credit is free again. False if the job was not its to answer."""
        enc = self.encoders.get(peer)
        if enc is None or job_id not in enc.jobs:
            return False
        enc.jobs.discard(job_id)
        enc.heard_ns = enc.free_since_ns = now_ns
        return True

    def heard(self, peer: bytes, now_ns: int) -> None:
        if (enc := self.encoders.get(peer)) is not None:
            enc.heard_ns = now_ns

    def dead(self, now_ns: int) -> list[tuple[Encoder, list[int]]]:
        """Encoders silent for longer than the liveness timeout, forgotten, with their jobs."""
        silent = [p for p, e in self.encoders.items() if now_ns - e.heard_ns > self.liveness_ns]
        return [self.gone(p) for p in silent]

    def gone(self, peer: bytes) -> tuple[Encoder, list[int]]:
        """Forget an encoder connection (it closed, or is presumed dead); its jobs, to give up."""
        enc = self.encoders.pop(peer)
        return enc, sorted(enc.jobs)

    def in_flight(self) -> int:
        return sum(len(e.jobs) for e in self.encoders.values())


class Reorder:
    """Answers released strictly in job-id order; a job leaves the line only answered or given up.

    Job ids are handed out in increasing order. A job is given up only when the detector says so
    (its encoder is presumed dead), never for being slow. An answer that arrives after its job was
    given up, or twice, is dropped (counted in ``late``): nothing is ever released twice or out of order.
    """

    def __init__(self) -> None:
        self._pending: dict[int, None] = {}  # job ids sent and not yet released, in increasing order
        self._done: dict[int, object] = {}
        self.given_up = 0
        self.late = 0

    @property
    def in_flight(self) -> int:
        return len(self._pending)

    def sent(self, job_id: int) -> None:
        self._pending[job_id] = None

    def add(self, job_id: int, answer: object) -> list[object]:
        if job_id not in self._pending or job_id in self._done:
            self.late += 1
            return []
        self._done[job_id] = answer
        return self._release()

    def give_up(self, job_ids: list[int], counted: bool = True) -> list[object]:
        """Skip these jobs (``counted``: work lost, in ``given_up``); returns the answers that unblocks."""
        for job_id in job_ids:
            if job_id in self._pending and job_id not in self._done:
                del self._pending[job_id]
                self.given_up += counted
        return self._release()

    def clear(self) -> None:
        """Forget every job and held answer (privacy scrub); none of them becomes a query: given up."""
        self.given_up += len(self._pending)
        self._pending.clear()
        self._done.clear()

    def _release(self) -> list[object]:
        out: list[object] = []
        for head in list(self._pending):
            if head not in self._done:
                break
            out.append(self._done.pop(head))
            del self._pending[head]
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
