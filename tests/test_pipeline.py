"""Detector and encoder: visitor choice, tracking, gating, flow control, ordering, real clips, several encoders.

The pure logic (faces/tracking.py) is driven frame by frame; the detector's flow control is driven
message by message with a clock the test sets; detection runs on the real clips of
../shared/data/clips (sampled frames, to keep the suite fast; docs/PIPELINE.md has the full-clip
benchmark); two encoder processes' worth of actors run on real ipc sockets, and so do encoders
the test plays itself (one that takes a job and goes silent, one whose connection closes).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zmq

import config
import faces
from actors import runtime
from actors.camera import sources
from actors.detector import Detector, targets
from actors.encoder import Encoder
from faces import find_faces, tracking
from messages import Credit, Encoded, FaceJob, Frame, Header, Query, Routed, decode, encode, open_socket
from tests.conftest import DEMO_CLIP

DETECTOR = config.validate({})["detector"]


def _frames(path: Path, every: int = 1, skip: int = 0, width_px: int = 640) -> list[np.ndarray]:
    src = sources.open_source(str(path), 10)
    out, i = [], 0
    while (got := src.read()) is not None:
        if i >= skip and (i - skip) % every == 0:
            out.append(sources.fit_width(got[0], width_px))
        i += 1
    src.close()
    return out


# -- pure logic ------------------------------------------------------------------------------
def test_visitor_is_the_largest_or_the_most_central_face():
    boxes = [(0, 0, 100, 100), (300, 200, 360, 260), (500, 10, 560, 70)]
    assert tracking.choose(boxes, "largest", 640, 480) == 0
    assert tracking.choose(boxes, "central", 640, 480) == 1
    assert tracking.choose([], "central", 640, 480) == -1
    assert targets(boxes, "all", 640, 480) == [0, 1, 2]
    assert targets(boxes, "central", 640, 480) == [1]


def test_tracks_follow_a_moving_face_and_a_new_face_gets_a_new_id():
    t = tracking.FaceTracks(0.3)
    (a,) = t.update([(100, 100, 200, 200)])
    (b,) = t.update([(110, 105, 210, 205)])
    assert b.track_id == a.track_id and b.frames == 2
    c, d = t.update([(112, 104, 212, 204), (400, 100, 480, 180)])
    assert c.track_id == a.track_id and c.frames == 3 and d.track_id != a.track_id and d.frames == 1
    assert t.update([]) == []
    (e,) = t.update([(112, 104, 212, 204)])
    assert e.track_id not in (a.track_id, d.track_id)  # the face left: a new visitor


def test_query_gate_waits_for_a_stable_face_then_limits_the_rate():
    gate = tracking.QueryGate(stable_frames=3, max_per_s=2.0)
    t = tracking.FaceTracks()
    allowed = []
    for i in range(30):  # 30 frames at 10 frames/s, the same face
        (track,) = t.update([(100, 100, 200, 200)])
        allowed.append(gate.allow(track, i * 100_000_000))
    assert [i for i, a in enumerate(allowed) if a] == [2, 7, 12, 17, 22, 27]  # stable, then every 0.5 s


def test_reorder_releases_in_job_order_skips_given_up_jobs_and_never_repeats():
    r = tracking.Reorder()
    for job in (1, 2, 3, 4, 5):
        r.sent(job)
    assert r.add(2, "b") == []  # waits for 1
    assert r.add(1, "a") == ["a", "b"]
    assert r.add(4, "d") == []  # 3 is slow: 4 waits however long that takes
    assert r.give_up([3]) == ["d"]  # 3's encoder presumed dead
    assert r.given_up == 1 and r.in_flight == 1
    assert r.give_up([5], counted=False) == [] and r.given_up == 1  # never sent: not work lost
    assert r.add(3, "c") == [] and r.add(1, "a") == []  # too late, or again: dropped
    assert r.late == 2 and r.in_flight == 0
    r.sent(6)
    r.sent(7)
    assert r.add(7, "g") == []
    r.clear()  # privacy scrub: neither 6 (out) nor 7 (held) becomes a query
    assert r.given_up == 3 and r.in_flight == 0 and r.add(7, "g") == []


S = 1_000_000_000  # one second in ns


def test_dispatch_sends_only_to_encoders_with_a_free_credit_and_keeps_the_newest_face_per_track():
    d = tracking.Dispatch(liveness_ns=5 * S)
    d.wait(track_id=1, captured_ns=10, item="face 1a")
    assert d.assign(0) == []  # no encoder yet: the chip waits
    d.wait(1, 20, "face 1b")  # a newer face of the same track replaces it
    d.wait(2, 15, "face 2a")
    assert d.superseded == 1 and len(d.waiting) == 2
    assert d.announce(b"A", "encoder.1", 11, credits=1, now_ns=0) == (True, [])
    ((peer, job, w),) = d.assign(0)  # one credit: one chip, the oldest capture first
    assert (peer, job, w.item) == (b"A", 1, "face 2a")
    assert d.assign(0) == [] and d.announce(b"A", "encoder.1", 11, 1, 1) == (False, [])  # a heartbeat
    d.announce(b"B", "encoder.2", 22, 1, 2)
    assert [(p, j, w.item) for p, j, w in d.assign(2)] == [(b"B", 2, "face 1b")]
    d.wait(1, 30, "face 1c")
    assert d.assign(3) == [] and d.in_flight() == 2  # both busy: it waits
    assert d.answered(b"A", 1, 4) and not d.answered(b"A", 1, 4) and not d.answered(b"B", 1, 4)
    assert [(p, j, w.item) for p, j, w in d.assign(4)] == [(b"A", 3, "face 1c")]
    assert d.answered(b"B", 2, 5) and d.answered(b"A", 3, 6)
    d.wait(3, 40, "face 3")
    assert [p for p, _, _ in d.assign(7)] == [b"B"]  # the encoder idle longest goes first


def test_dispatch_gives_up_only_the_jobs_of_an_encoder_silent_past_liveness():
    d = tracking.Dispatch(liveness_ns=5 * S)
    d.announce(b"A", "encoder.1", 11, 1, 0)
    d.announce(b"B", "encoder.2", 22, 1, 0)
    d.wait(1, 1, "a")
    d.wait(2, 2, "b")
    assert [j for _, j, _ in d.assign(1 * S)] == [1, 2]
    assert d.dead(5 * S) == []  # slow is not dead: 4 s on one descriptor
    assert d.answered(b"B", 2, 5 * S)
    d.announce(b"B", "encoder.2", 22, 1, 6 * S)  # B idles and says so (heartbeat)
    ((enc, jobs),) = d.dead(int(6.5 * S))  # A: nothing since its job 5.5 s ago
    assert (enc.name, jobs) == ("encoder.1", [1]) and list(d.encoders) == [b"B"]
    assert d.dead(11 * S) == [] and d.dead(int(11.5 * S))[0][0].name == "encoder.2"  # B's heartbeats stopped


def test_dispatch_a_reconnected_encoder_loses_what_its_old_connection_held():
    d = tracking.Dispatch(liveness_ns=5 * S)
    d.announce(b"A", "encoder.1", 11, 2, 0)
    d.wait(1, 1, "a")
    d.wait(2, 2, "b")
    assert len(d.assign(0)) == 2  # two credits
    assert d.announce(b"A2", "encoder.1", 11, 2, 1) == (True, [1, 2])  # same instance, new connection
    assert d.announce(b"C", "encoder.1", 99, 1, 1) == (True, [])  # another process of the same name is another encoder
    assert set(d.encoders) == {b"A2", b"C"}
    assert d.gone(b"C")[1] == [] and list(d.encoders) == [b"A2"]


def test_track_average_is_the_mean_of_the_last_n():
    avg = tracking.TrackAverage(2)
    a, b, c = (np.full(128, v, np.float32) for v in (1.0, 3.0, 7.0))
    assert avg.add(5, a)[0] == 1.0 and avg.add(5, b)[0] == 2.0 and avg.add(5, c)[0] == 5.0
    assert avg.add(6, a)[0] == 1.0  # another track has its own history


# -- real clips ------------------------------------------------------------------------------
@pytest.mark.parametrize("clip", ["obama_2s.mp4", "ocasio_cortez_8s.mp4", "katie_hill_8s.mp4"])
def test_default_detector_finds_the_talking_head_in_every_frame_with_a_face(shared_data, clip):
    # obama_2s.mp4 opens with a 13-frame title card ("Your weekly address"): no face there.
    frames = _frames(shared_data / "clips" / clip, every=6, skip=13 if clip.startswith("obama") else 0)
    found = [bool(find_faces(rgb, DETECTOR)) for rgb in frames]
    assert sum(found) / len(found) >= 0.95, found


def test_title_card_frames_have_no_face(shared_data):
    frames = _frames(shared_data / "clips" / "obama_2s.mp4")[:13]
    assert not any(find_faces(rgb, DETECTOR) for rgb in frames[::4])


@pytest.mark.timeout(120)
def test_stage_light_and_cuts_in_hamilton(shared_data):
    # Faces on a stage are small at 640x360: the full-size HOG finds them where the half-size
    # copy (the kiosk default, for a visitor close to the screen) can't.
    d = dict(DETECTOR, scale=1.0, min_face_px=20)
    frames = _frames(shared_data / "clips" / "hamilton_short.mp4", every=9)
    found = [bool(find_faces(rgb, d)) for rgb in frames]
    assert sum(found) / len(found) >= 0.4, found


@pytest.mark.timeout(120)
def test_several_small_faces_in_the_street_scene(shared_data):
    # Faces 70-120 px wide in a 1080p street scene: the camera keeps the full size
    # (camera.width_px = 0) and HOG runs on it unscaled; policy "all" searches every one.
    d = dict(DETECTOR, scale=1.0, policy="all")
    frames = _frames(shared_data / "clips" / "pedestrians_multiface.mp4", every=40, skip=20, width_px=0)
    for rgb in frames:
        boxes = find_faces(rgb, d)
        assert len(boxes) >= 2 and len(targets(boxes, "all", rgb.shape[1], rgb.shape[0])) == len(boxes)


def test_face_behind_smoke(shared_data):
    d = dict(DETECTOR, scale=1.0)
    frames = _frames(shared_data / "clips" / "elon_musk_smoke.gif", every=2)
    found = [bool(find_faces(rgb, d)) for rgb in frames]
    assert sum(found) >= 0.9 * len(found), found


@pytest.mark.parametrize("method", ["cnn", "haar"])
def test_alternative_detectors_find_obama(method):
    rgb = _frames(DEMO_CLIP, every=100, skip=40)[0]
    d = dict(DETECTOR, method=method, scale=1.0)
    (hog,) = find_faces(rgb, DETECTOR)
    assert max(tracking.iou(box, hog) for box in find_faces(rgb, d)) > 0.3


@pytest.mark.slow
def test_replayed_obama_stays_close_to_his_enroll_stills(shared_data):
    stills = [faces.describe_largest(faces.read_image(p))[1] for p in (shared_data / "enroll/barack_obama").glob("*")]
    avg = tracking.TrackAverage(4)
    for rgb in _frames(shared_data / "clips" / "obama_2s.mp4", every=8, skip=14):
        (box,) = find_faces(rgb, DETECTOR)
        d = faces.describe(faces.face_chip(rgb, box))
        averaged = avg.add(1, d)
        for s in stills:
            assert np.linalg.norm(d - s) < 0.45
            assert np.linalg.norm(averaged - s) < 0.45


# -- several encoders on real sockets --------------------------------------------------------
@pytest.mark.slow
@pytest.mark.timeout(90)
def test_two_encoders_answer_every_query_exactly_once_in_order(ipc_config):
    cfg = config.validate(
        {
            "detector": {"stable_frames": 1, "max_queries_per_s": 100.0},
            "encoder": {"average_track": 1, "liveness_s": 30.0},  # only a real loss counts
            "network": dict(ipc_config["network"]),
        }
    )
    ctx = zmq.Context()
    detector, encoders = Detector(cfg), [Encoder(cfg, "encoder.1"), Encoder(cfg, "encoder.2")]
    stops = [runtime.StopFlag() for _ in range(3)]
    threads = [
        threading.Thread(target=runtime.run, args=(a, ctx, s), daemon=True)
        for a, s in zip([detector, *encoders], stops, strict=True)
    ]
    for t in threads:
        t.start()
    pub = open_socket(ctx, cfg, "frames", "camera", receiving=False)
    sub = open_socket(ctx, cfg, "queries", "matcher", receiving=True)
    frames = _frames(DEMO_CLIP, every=2, skip=14)
    queries = []
    try:
        end = time.monotonic() + 60
        i = 0
        # Frames keep coming (a late subscriber misses the first ones) until 12 queries arrived
        # and both encoders have worked; then the stream stops and the last answers drain.
        while time.monotonic() < end and (len(queries) < 12 or min(e.stats["descriptors.sent"] for e in encoders) == 0):
            rgb = frames[i % len(frames)]
            i += 1
            header = Header(seq=i, t_ns=time.monotonic_ns(), src="camera", frame_id=i)
            pub.send_multipart(encode(Frame(header, rgb.shape[1], rgb.shape[0], "test", rgb.tobytes())))
            while sub.poll(60):
                queries.append(decode(sub.recv_multipart()))
        while detector.reorder.in_flight and time.monotonic() < end:  # the last answers
            while sub.poll(100):
                queries.append(decode(sub.recv_multipart()))
        while sub.poll(300):
            queries.append(decode(sub.recv_multipart()))
    finally:
        for s in stops:
            s.set()
        for t in threads:
            t.join(5)
        pub.close(0)
        sub.close(0)
        ctx.term()
    done = [e.stats["descriptors.sent"] for e in encoders]
    assert min(done) > 0, done  # both shared the load
    assert detector.reorder.given_up == 0 and detector.reorder.late == 0
    assert len(queries) == detector.dispatch.last_job_id == sum(done)  # every job answered exactly once
    assert detector.stats["encoders.joined"] == 2 and all(e.stats["credit.sent"] >= 1 for e in encoders)
    frame_ids = [q.header.frame_id for q in queries]
    assert frame_ids == sorted(frame_ids) and len(set(frame_ids)) == len(frame_ids)


def test_encoder_answers_a_chip_of_the_wrong_size_with_no_descriptor_so_its_credit_comes_back():
    enc = Encoder(config.validate({}))
    enc.on_start()
    (answer,) = enc.handle(FaceJob(Header(1, 0, "t", 1), 1, 0, 1, b"\x00" * 100))
    assert answer.job_id == 1 and answer.descriptor == b""
    assert enc.stats["chips.malformed"] == 1


def test_detector_gives_up_a_job_answered_with_a_descriptor_of_the_wrong_size():
    det = Detector(config.validate({"detector": {"stable_frames": 1}}))
    det.on_start()
    det.handle(Routed(b"A", Credit(Header(1, 0, "encoder.1", -1), 1, 7)))
    rgb = _frames(DEMO_CLIP, every=100, skip=40)[0]
    (_, job) = det.on_frame(Frame(Header(1, 0, "camera", 1), rgb.shape[1], rgb.shape[0], "t", rgb.tobytes()), 0)
    assert det.handle(Routed(b"A", Encoded(Header(1, 0, "encoder.1", 1), job.msg.job_id, 0, 1, b"\x00" * 12))) == []
    assert det.stats["descriptors.malformed"] == 1 and det.stats["queries.given_up"] == 1
    assert det.dispatch.encoders[b"A"].free == 1  # the encoder is fine: its credit is back


# -- flow control: the detector in front of slow, silent and vanished encoders ----------------------
FLOW = {"detector": {"stable_frames": 1, "max_queries_per_s": 100.0}, "encoder": {"average_track": 1}}


def _frame(rgb: np.ndarray, i: int) -> Frame:
    return Frame(Header(i, time.monotonic_ns(), "camera", i), rgb.shape[1], rgb.shape[0], "test", rgb.tobytes())


def _encoded(job: FaceJob, src: str = "encoder.1") -> Encoded:
    return Encoded(
        Header(1, time.monotonic_ns(), src, job.header.frame_id),
        job.job_id,
        job.captured_ns,
        job.track_id,
        np.ones(128, "<f4").tobytes(),
    )


def test_detector_holds_one_chip_per_track_for_a_busy_encoder_and_sends_the_newest_face():
    det = Detector(config.validate(FLOW))
    det.on_start()
    frames = _frames(DEMO_CLIP, every=3, skip=14)[:5]
    for i in (0, 1):  # no encoder yet: frame 1's face replaces frame 0's
        (faces_msg,) = det.on_frame(_frame(frames[i], i), i * S)
        assert faces_msg.visitor == 0
    assert det.stats["chips.superseded"] == 1
    (job,) = det.handle(Routed(b"A", Credit(Header(1, 0, "encoder.1", -1), 1, 7)))
    assert job.peer == b"A" and job.msg.header.frame_id == 1 and job.msg.job_id == 1
    for i in (2, 3):  # the encoder is busy with frame 1: the newest face waits, the older is replaced
        assert len(det.on_frame(_frame(frames[i], i), i * S)) == 1
    assert det.stats["chips.superseded"] == 2
    query, nxt = det.handle(Routed(b"A", _encoded(job.msg)))  # the descriptor gives the credit back
    assert isinstance(query, Query) and query.header.frame_id == 1
    assert nxt.peer == b"A" and nxt.msg.header.frame_id == 3 and nxt.msg.job_id == 2
    # Slow is not dead: 4 s on one descriptor, nothing given up...
    assert det.tick(time.monotonic_ns() + 4 * S) == [] and det.stats["queries.given_up"] == 0
    # ...silent past encoder.liveness_s (5 s) is: its job is given up and it is forgotten.
    assert det.tick(time.monotonic_ns() + 6 * S) == []
    assert det.stats["queries.given_up"] == 1 and det.stats["encoders.lost"] == 1 and not det.dispatch.encoders


class FakeEncoder:
    """An encoder the test plays on a real DEALER: announces itself, answers jobs only when told."""

    def __init__(self, ctx: zmq.Context, cfg: config.Config, name: str, instance: int):
        self.sock = open_socket(ctx, cfg, "chips", "encoder", receiving=True)
        self.name, self.instance = name, instance
        self.jobs: list[FaceJob] = []

    def announce(self) -> None:
        self.sock.send_multipart(encode(Credit(Header(1, time.monotonic_ns(), self.name, -1), 1, self.instance)))

    def take(self, timeout_ms: int = 0) -> None:
        while self.sock.poll(timeout_ms):
            self.jobs.append(decode(self.sock.recv_multipart(), expect="chips"))
            timeout_ms = 0

    def answer(self) -> None:
        while self.jobs:
            self.sock.send_multipart(encode(_encoded(self.jobs.pop(0), self.name)))


@contextlib.contextmanager
def _detector_with_fakes(cfg: config.Config) -> Iterator[tuple[Detector, zmq.Context, Callable[[], None], list]]:
    """The detector on real sockets in a thread; yields it, a context, a function that publishes the
    next clip frame and collects the queries, and the list of queries."""
    ctx = zmq.Context()
    detector, stop = Detector(cfg), runtime.StopFlag()
    thread = threading.Thread(target=runtime.run, args=(detector, ctx, stop), daemon=True)
    thread.start()
    pub = open_socket(ctx, cfg, "frames", "camera", receiving=False)
    sub = open_socket(ctx, cfg, "queries", "matcher", receiving=True)
    frames, queries, count = _frames(DEMO_CLIP, every=2, skip=14), [], [0]

    def step() -> None:
        count[0] += 1
        pub.send_multipart(encode(_frame(frames[count[0] % len(frames)], count[0])))
        while sub.poll(30):
            queries.append(decode(sub.recv_multipart()))

    try:
        yield detector, ctx, step, queries
    finally:
        stop.set()
        thread.join(5)
        pub.close(0)
        sub.close(0)
        ctx.destroy(0)


def _until(check: Callable[[], Any], step: Callable[[], None], what: str, deadline_s: float = 30) -> Any:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if got := check():
            return got
        step()
    raise AssertionError(f"no {what} within {deadline_s} s")


@pytest.mark.timeout(90)
def test_a_silent_encoder_loses_only_its_own_job_and_the_order_holds(ipc_config):
    cfg = config.validate(
        {**FLOW, "encoder": {"average_track": 1, "liveness_s": 1.0}, "network": ipc_config["network"]}
    )
    with _detector_with_fakes(cfg) as (detector, ctx, step, queries):
        silent, worker = FakeEncoder(ctx, cfg, "encoder.1", 1), FakeEncoder(ctx, cfg, "encoder.2", 2)
        # Each says it is there (heartbeats) until it has a job; the first keeps its job and goes silent.
        _until(lambda: silent.take() or silent.jobs, lambda: (silent.announce(), step()), "the first encoder's job")
        _until(lambda: worker.take() or worker.jobs, lambda: (worker.announce(), step()), "the second one's job")
        assert worker.jobs[0].job_id > silent.jobs[0].job_id
        worker.answer()  # held back: the silent encoder's job comes first...
        heartbeat = lambda: (worker.take(), worker.answer(), worker.announce())  # noqa: E731
        # ...until the silent encoder is presumed dead (1 s): then it is released, and more follow.
        _until(lambda: len(queries) >= 3, lambda: (heartbeat(), step()), "queries after the silent encoder died")
        assert detector.stats["queries.given_up"] == 1 and detector.stats["encoders.lost"] == 1
        frame_ids = [q.header.frame_id for q in queries]
        assert frame_ids == sorted(frame_ids) and frame_ids[0] > silent.jobs[0].header.frame_id
        silent.sock.close(0)
        worker.sock.close(0)


@pytest.mark.timeout(90)
def test_a_chip_for_an_encoder_whose_connection_closed_goes_to_another_and_nothing_is_given_up(ipc_config):
    cfg = config.validate({**FLOW, "network": ipc_config["network"]})
    with _detector_with_fakes(cfg) as (detector, ctx, step, queries):
        gone = FakeEncoder(ctx, cfg, "encoder.1", 1)
        gone.announce()
        _until(lambda: detector.stats["encoders.joined"] == 1, lambda: time.sleep(0.01), "the encoder's credit")
        gone.sock.close(0)  # killed while idle: the detector learns it when its next chip can't be routed
        _until(lambda: detector.stats["chips.unroutable"], step, "a chip for the closed connection")
        worker = FakeEncoder(ctx, cfg, "encoder.2", 2)
        worker.announce()
        _until(lambda: queries, lambda: (worker.take(30), worker.answer(), step()), "a query from the other encoder")
        assert detector.stats["encoders.lost"] == 1 and detector.stats["queries.given_up"] == 0
        worker.sock.close(0)
