"""The kiosk window's fake surroundings, for the window tests (tests/test_display_kivy.py,
tests/test_button.py): a child process that plays the camera, the detector and the reducer
(frames of the bundled Obama clip, the detector's boxes for them and a result list, round after
round), a printer's request socket answered by hand, and the window's config.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import time
from functools import cache
from pathlib import Path

import numpy as np
import zmq

import config
from benchmarks.graph import Graph, logged
from messages import TOPICS, Faces, Frame, Header, Inbox, Matches, PrintJob, PrintReply, Result, encode, open_socket
from tests import kiosk_screen as ks
from tests.conftest import DEMO_CLIP

FRAME_W = 640
N_FRAMES = 20
PERIOD_S = 0.1  # one round of frame, faces and matches
QUERY_ID = 7
RESULTS = [
    Result(1, "barack_obama", 0.35, "barack_obama/0001.jpg", 11),
    Result(2, "Ari_Fleischer", 0.702, "Ari_Fleischer/0003.jpg", 27),
    Result(3, "Abdullah_Gul", 0.731, "Abdullah_Gul/0002.jpg", 3),
    Result(4, "Aaron_Guiel", 0.764, "", 8),  # a row without a photo: the placeholder shows
    Result(5, "Atom_Egoyan", 0.78, "Atom_Egoyan/0001.jpg", 30),
]
LOOKALIKES = (  # the reducer's sentence for a best match at 0.35 in a dataset this size (index/lookalikes.py)
    "Fewer than 1 person in this dataset of 672,057 people would be expected to look at least this much like you "
    "by chance (up to 120 for faces with many look-alikes)."
)


def display_config(printer: str = 'backend = "spool"', index: str = "build/no-index-here") -> str:
    return f"""
[display]
stable_s = 0.2
leave_s = 2.0
results_hold_s = 300
[index]
path = "{index}"
[printer]
{printer}
[log]
level = "DEBUG"
"""


@cache
def clip_frames() -> list[tuple[np.ndarray, list[list[int]], int, bytes]]:
    """Frames of the clip scaled to FRAME_W wide, with the detector's boxes, visitor and chip (faces only)."""
    import cv2

    from faces import find_visitor  # dlib: imported only when a test runs

    d = config.load(ks.PROJECT_ROOT / "config" / "test.toml", env={})["detector"]
    cap = cv2.VideoCapture(str(DEMO_CLIP))
    frames = []
    try:
        while len(frames) < N_FRAMES:
            ok, bgr = cap.read()
            if not ok:
                break
            h, w = bgr.shape[:2]
            small = cv2.resize(bgr, (FRAME_W, round(h * FRAME_W / w)), interpolation=cv2.INTER_AREA)
            rgb = np.ascontiguousarray(cv2.cvtColor(small, cv2.COLOR_BGR2RGB))
            boxes, visitor, chip = find_visitor(rgb, d["scale"], d["upsample"], d["min_face_px"])
            if visitor >= 0:  # the clip fades in: keep the frames where a face shows
                frames.append((rgb, [list(b) for b in boxes], visitor, chip))
    finally:
        cap.release()
    assert frames, f"no face found in {DEMO_CLIP}"
    return frames


class FakeUpstream:
    """Camera, detector and reducer in a child process: binds their PUB sockets and publishes a round
    every PERIOD_S (a process of its own, so screen grabs in the test process never hold it up).
    The test steers it through shared values: ``visitor``, ``query_id``, ``send_garbage``.
    ``results``: the result list every matches message carries (RESULTS unless given)."""

    def __init__(self, ipc_dir: Path, results: list[Result] | None = None):
        self.cfg = config.validate({"network": {"transport": "ipc", "ipc_dir": str(ipc_dir)}})
        self.frames = clip_frames()  # computed here, before the fork
        self.results = RESULTS if results is None else results
        ctx = multiprocessing.get_context("fork")
        self._visitor = ctx.Value("b", 1)  # 0: frames without a face (the visitor stepped away)
        self._garbage = ctx.Value("b", 1)  # 1: a malformed matches message each round, to be dropped
        self._query_id = ctx.Value("i", QUERY_ID)
        self._stop = ctx.Event()
        self._proc = ctx.Process(target=self._run, daemon=True)

    visitor = property(lambda self: bool(self._visitor.value), lambda self, v: setattr(self._visitor, "value", int(v)))
    send_garbage = property(
        lambda self: bool(self._garbage.value), lambda self, v: setattr(self._garbage, "value", int(v))
    )
    query_id = property(lambda self: self._query_id.value, lambda self, v: setattr(self._query_id, "value", v))

    def start(self) -> None:
        self._proc.start()

    def _run(self) -> None:
        zctx = zmq.Context()
        pubs = {
            t: open_socket(zctx, self.cfg, t, TOPICS[t].binder, receiving=False) for t in ("frames", "faces", "matches")
        }
        n = 0
        try:
            while not self._stop.wait(PERIOD_S):  # the camera's pace, not a wait for a socket
                n += 1
                self._publish(pubs, n)
        finally:
            for sock in pubs.values():
                sock.close(linger=0)
            zctx.term()

    def _publish(self, pubs: dict[str, zmq.Socket], n: int) -> None:
        rgb, boxes, visitor, chip = self.frames[n % len(self.frames)]
        h, w = rgb.shape[:2]
        now = time.monotonic_ns()
        msgs: list[Frame | Faces | Matches] = [
            Frame(Header(n, now, "camera", n), w, h, "replay:obama_2s.mp4", rgb.tobytes())
        ]
        if not self.visitor:
            msgs.append(Faces(Header(n, now, "detector", n), w, h, now, [], -1, b""))
        else:
            msgs.append(Faces(Header(n, now, "detector", n), w, h, now, boxes, visitor, chip))
            # The result of the previous round's frame, 50 ms after it was captured.
            msgs.append(
                Matches(
                    Header(n, now, "reducer", n - 1), self.query_id, now - 50_000_000, self.results, False, [], 50.0
                )
            )
        for msg in msgs:
            if isinstance(msg, Matches):
                msg = dataclasses.replace(msg, lookalikes=LOOKALIKES)
            pubs[type(msg).TOPIC].send_multipart(encode(msg))
        if self.send_garbage:
            pubs["matches"].send_multipart([b"matches", b"\xc1 not msgpack"])

    def close(self) -> None:
        self._stop.set()
        self._proc.join(timeout=5)
        if self._proc.is_alive():
            self._proc.kill()
            self._proc.join()


class FakePrinter:
    """The printer's request socket (a ROUTER, as the printer's), answered by hand, oldest job first."""

    def __init__(self, upstream: FakeUpstream):
        self.ctx = zmq.Context()
        self.sock = open_socket(self.ctx, upstream.cfg, "print", TOPICS["print"].binder, receiving=True)
        self.inbox = Inbox(self.sock, "print")
        self.unanswered: list[list[bytes]] = []  # the envelopes of the jobs received, not answered yet

    def receive(self) -> PrintJob | None:
        for request in self.inbox.receive(time.monotonic_ns()):
            self.unanswered.append(request.envelope)
            return request.msg
        return None

    def no_job_within(self, seconds: float) -> bool:
        """Whether no print job arrives for ``seconds`` (what a test of "nothing printed" must wait out)."""
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            if self.receive() is not None:
                return False
            time.sleep(0.05)  # the printer's socket is polled without blocking
        return True

    def reply(self, job: PrintJob, ok: bool = True) -> None:
        header = Header(1, time.monotonic_ns(), "printer", job.header.frame_id)
        reply = encode(PrintReply(header, job.query_id, ok, "build/spool/receipt-test.png"))
        self.sock.send_multipart([*self.unanswered.pop(0), *reply])

    def close(self) -> None:
        self.sock.close(linger=0)
        self.ctx.term()


def start_display(actors: Graph, upstream: FakeUpstream) -> None:
    actors.start("display")
    actors.wait_for(logged("display", "window ready"), "the window", 60)
    actors.wait_for(logged("display", "view: mode=results"), "the results view", 20, since=0)
