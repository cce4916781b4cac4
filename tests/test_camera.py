"""The camera: replay timing and controls, webcam loss and return, bad frames, recording -> replay.

Timing tests drive ``tick`` with a simulated clock (no sleeps): they check when each frame is
released, which is what rate / offset / pause mean. The recording test runs the real camera and
recorder on ipc sockets.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import zmq

import config
from actors import runtime
from actors.camera import Camera, recording, sources
from actors.recorder import Recorder
from messages import CameraStatus, Frame, Header, ReplayControl, decode
from tests import factories
from tests.conftest import DEMO_CLIP, PROJECT

FPS = 29.97


def _camera(**camera) -> Camera:
    cam = Camera(config.validate({"camera": {"source": str(DEMO_CLIP), "loop": False, **camera}}))
    cam.on_start()
    return cam


def _run(cam: Camera, seconds: float, start_ns: int, step_ms: float = 1.0) -> list[tuple[float, Frame]]:
    """Tick a simulated clock every ``step_ms``; the frames released with their release time (s)."""
    out = []
    for i in range(int(seconds * 1000 / step_ms)):
        now = start_ns + int(i * step_ms * 1e6)
        out += [((now - start_ns) / 1e9, m) for m in cam.tick(now) if isinstance(m, Frame)]
    return out


def _control(cam: Camera, command: str, value: float = 0.0) -> CameraStatus:
    (reply,) = cam.handle(ReplayControl(Header(1, 0, "test", -1), command, value))
    return reply


def test_replay_keeps_the_clips_timing_and_stops_at_the_end():
    cam = _camera()
    t0 = time.monotonic_ns()
    frames = _run(cam, 2.5, t0)
    assert [f.header.frame_id for _, f in frames] == list(range(1, 61))
    assert frames[0][1].width_px == 640 and frames[0][1].height_px == 360
    times = np.array([t for t, _ in frames])
    assert np.abs(times - np.arange(60) / FPS).max() < 0.002
    statuses = [m for m in cam.tick(t0 + 10**10) if isinstance(m, CameraStatus)]
    assert statuses and statuses[-1].state == "finished" and statuses[-1].frames == 60
    cam.on_stop()


@pytest.mark.parametrize("rate", [0.5, 2.0, 4.0])
def test_rate_scales_the_time_between_frames(rate):
    cam = _camera(rate=rate)
    frames = _run(cam, 20 / FPS / rate + 0.01, time.monotonic_ns())
    times = np.array([t for t, _ in frames])[:20]
    assert len(times) == 20
    assert np.abs(np.diff(times) - 1 / FPS / rate).max() < 0.002
    cam.on_stop()


def test_rate_zero_releases_a_frame_on_every_tick():
    cam = _camera(rate=0.0)
    frames = _run(cam, 0.120, time.monotonic_ns())
    assert len(frames) == 60  # the whole 2 s clip in 120 ticks (one reads a frame, the next sends it)
    cam.on_stop()


def test_loop_and_start_offset():
    cam = _camera(loop=True, start_s=1.0)
    frames = _run(cam, 2.5, time.monotonic_ns())
    ids = [f.header.frame_id for _, f in frames]
    assert ids == list(range(1, len(ids) + 1))
    # 30 frames remain after the offset; looping goes back to the offset, not to the start.
    assert 70 <= len(frames) <= 76
    first = np.frombuffer(frames[0][1].pixels, np.uint8)
    again = np.frombuffer(frames[30][1].pixels, np.uint8)
    assert np.array_equal(first, again)
    cam.on_stop()


def test_pause_step_resume_seek_and_bad_commands():
    cam = _camera(paused=True)
    t0 = time.monotonic_ns()
    assert _run(cam, 0.5, t0) == []
    assert _control(cam, "step").state == "paused"
    stepped = _run(cam, 0.5, t0)
    assert [f.header.frame_id for _, f in stepped] == [1]
    assert _control(cam, "resume").state == "replay"
    assert len(_run(cam, 10 / FPS - 0.005, t0 + 10**9)) == 10
    assert _control(cam, "seek", 1.5).state == "replay"
    rest = _run(cam, 1.0, t0 + 2 * 10**9)
    assert len(rest) == 15  # 45 frames before 1.5 s, 15 after
    assert "refused" in _control(cam, "rate", 100).detail
    assert "unknown command" in _control(cam, "rewind").detail
    cam.on_stop()


class FakeWebcam:
    """A webcam that delivers ``frames`` frames, then stops (unplugged)."""

    is_webcam = True
    fps = 30.0
    label = "webcam:7"

    def __init__(self, frames: int, shape=(48, 64, 3)):
        self.left = frames
        self.shape = shape
        self.skipped: list[str] = []

    def read(self):
        if self.left == 0:
            return None
        self.left -= 1
        return sources.bgr_to_rgb(np.full(self.shape, 100, np.uint8)), 0.0

    def seek(self, t_s: float) -> None:
        pass

    def close(self) -> None:
        pass


def test_a_lost_webcam_is_reported_and_reopened_when_it_returns():
    plugged = {"now": False}

    def opener(spec, *_):
        if not plugged["now"]:
            raise sources.SourceError(f"webcam {spec} could not be opened")
        return FakeWebcam(3)

    cfg = config.validate({"camera": {"source": "7", "reconnect_s": 0.5}})
    cam = Camera(cfg)
    cam.opener = opener
    cam.on_start()  # no webcam at start: the actor still starts, and says so
    t0 = time.monotonic_ns()
    out = cam.tick(t0)
    assert [(s.state, "could not be opened" in s.detail) for s in out] == [("lost", True)]
    plugged["now"] = True
    assert [m for m in cam.tick(t0 + 100_000_000) if isinstance(m, Frame)] == []  # not yet time to retry
    released = []
    for i in range(10):
        released += cam.tick(t0 + 600_000_000 + i * 1_000_000)
    frames = [m for m in released if isinstance(m, Frame)]
    states = [m.state for m in released if isinstance(m, CameraStatus)]
    assert len(frames) == 3 and states[0] == "live" and states[-1] == "lost"
    assert cam.stats["camera.lost"] == 2
    assert "stopped delivering" in cam.status().detail


def test_frames_of_any_camera_shape_are_converted_or_counted():
    gray = np.full((40, 50), 7, np.uint8)
    assert sources.bgr_to_rgb(gray).shape == (40, 50, 3)
    bgra = np.zeros((40, 50, 4), np.uint8)
    bgra[..., 2] = 255  # red in BGRA order
    assert sources.bgr_to_rgb(bgra)[0, 0].tolist() == [255, 0, 0]
    odd = np.zeros((33, 17, 3), np.uint8)
    assert sources.bgr_to_rgb(odd).shape == (33, 17, 3)

    class Strange(FakeWebcam):
        """Frames of 5 channels and good ones, alternating."""

        def read(self):
            self.left -= 1
            if self.left < 0:
                return None
            if self.left % 2:
                return sources.bgr_to_rgb(np.zeros((40, 50, 5), np.uint8)), 0.0
            return sources.bgr_to_rgb(np.zeros((40, 50, 3), np.uint8)), 0.0

    cam = Camera(config.validate({"camera": {"source": "3"}}))
    cam.opener = lambda *_: Strange(4)
    cam.on_start()
    frames = [m for i in range(6) for m in cam.tick(time.monotonic_ns()) if isinstance(m, Frame)]
    assert len(frames) == 2 and cam.stats["frames.bad_shape"] == 2


def test_unreadable_sources_give_clear_messages(tmp_path):
    with pytest.raises(sources.SourceError, match="does not exist"):
        sources.open_source(str(tmp_path / "missing.mp4"), 10)
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"not a video at all" * 100)
    with pytest.raises(sources.SourceError, match="not a readable video"):
        sources.open_source(str(junk), 10)
    with pytest.raises(sources.SourceError, match="webcam 97 could not be opened"):
        sources.open_source("97", 10)
    with pytest.raises(runtime.StartupError, match="does not exist"):
        _camera(source=str(tmp_path / "missing.mp4"))


def test_a_corrupt_image_in_a_folder_is_skipped_and_reported(tmp_path):
    for i, name in enumerate(["a.jpg", "c.jpg"]):
        cv2.imwrite(str(tmp_path / name), np.full((30, 40, 3), 50 * (i + 1), np.uint8))
    (tmp_path / "b.jpg").write_bytes(b"\xff\xd8 broken jpeg")
    cam = Camera(config.validate({"camera": {"source": str(tmp_path), "loop": False, "rate": 0.0}}))
    cam.on_start()
    frames = [m for i in range(5) for m in cam.tick(time.monotonic_ns()) if isinstance(m, Frame)]
    assert len(frames) == 2 and cam.stats["frames.unreadable"] == 1
    assert cam.source.skipped[0].startswith("b.jpg")


def test_an_image_over_the_pixel_limit_is_skipped_without_decoding(tmp_path):
    cv2.imwrite(str(tmp_path / "a.jpg"), np.full((30, 40, 3), 50, np.uint8))  # 1,200 pixels
    cv2.imwrite(str(tmp_path / "b.jpg"), np.full((100, 200, 3), 90, np.uint8))  # 20,000 pixels
    cam = Camera(
        config.validate({"camera": {"source": str(tmp_path), "loop": False, "rate": 0.0, "max_image_mp": 0.01}})
    )
    cam.on_start()
    frames = [m for i in range(5) for m in cam.tick(time.monotonic_ns()) if isinstance(m, Frame)]
    assert len(frames) == 1 and cam.stats["frames.unreadable"] == 1
    assert cam.source.skipped[0].startswith("b.jpg") and "200x100" in cam.source.skipped[0]
    assert "the limit is 0.01 (not decoded)" in cam.source.skipped[0]


def test_a_damaged_recording_is_refused(tmp_path):
    bad = tmp_path / "bad.mprec"
    bad.write_bytes(recording.MAGIC + b"\xff\xff\xff\x7f")
    with pytest.raises(sources.SourceError, match="claims"):
        sources.open_source(str(bad), 10)


def test_the_recorder_refuses_kiosk_mode_and_unrecordable_topics():
    with pytest.raises(runtime.StartupError, match="visitors are never recorded"):
        Recorder(config.load(PROJECT / "config" / "kiosk.toml", env={}))
    with pytest.raises(runtime.StartupError, match="can record"):
        Recorder(config.validate({"recorder": {"topics": "frames,chips"}}))


def _wait(predicate, deadline_s: float, what: str, state=lambda: "") -> None:
    end = time.monotonic() + deadline_s
    while not predicate():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what} {state()}".rstrip())
        time.sleep(0.01)


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_a_recording_replays_the_same_frames_in_order_with_the_same_timing(ipc_dir: Path, tmp_path: Path):
    from actors.camera import replay_control

    path = tmp_path / "obama.mprec"
    raw = {
        "camera": {"source": str(DEMO_CLIP), "loop": False, "paused": True},
        "recorder": {"topics": "frames,camera_status", "path": str(path)},
        "network": {"transport": "ipc", "ipc_dir": str(ipc_dir)},
    }
    cfg = config.validate(raw)
    ctx = zmq.Context()
    recorder, camera = Recorder(cfg), Camera(cfg)
    stops = [runtime.StopFlag(), runtime.StopFlag()]
    threads = [
        threading.Thread(target=runtime.run, args=(actor, ctx, stop), daemon=True)
        for actor, stop in zip((recorder, camera), stops, strict=True)
    ]
    for t in threads:
        t.start()
    try:
        # The camera starts paused and says so every second; once the recorder has heard one
        # status its subscription is live and no frame can be lost to a late join.
        _wait(lambda: recorder.stats["recorded.camera_status"] >= 1, 10, "the recorder to hear the camera")
        assert replay_control.send(cfg, "resume").state == "replay"
        _wait(lambda: camera.stats["frames.sent"] >= 60, 20, "the camera to send the clip's 60 frames")
        # The camera goes on saying its state every second; two statuses recorded after its last
        # frame mean every frame that was delivered has been recorded.
        statuses = recorder.stats["recorded.camera_status"]
        _wait(lambda: recorder.stats["recorded.camera_status"] >= statuses + 2, 10, "two more statuses")
    finally:
        for stop in stops:
            stop.set()
        for t in threads:
            t.join(5)
        ctx.term()

    records = [(t, parts) for t, parts in recording.read(path) if parts[0] == b"frames"]
    recorded_ids = [decode(parts, "frames").header.frame_id for _, parts in records]
    # Live frames go out with the topic's high-water mark of 2 (a live receiver wants the newest),
    # so a subscriber stalled for two frame times on a loaded machine misses some: the recorder
    # keeps what reached it, in order, and the replay must give back exactly that.
    assert len(records) >= 40, f"recorded only {len(records)} of 60 frames"
    assert recorded_ids == sorted(set(recorded_ids)) and set(recorded_ids) <= set(range(1, 61)), recorded_ids
    recorded_s = np.array([(t - records[0][0]) / 1e9 for t, _ in records])
    # Live, on a shared machine: the camera never runs ahead of the clip, and a stall (decoding
    # under load) only delays what follows; what the replay must reproduce is what was recorded.
    span = (recorded_ids[-1] - recorded_ids[0]) / FPS
    assert span - 0.002 < recorded_s[-1] < span + 1.5
    clip = cv2.VideoCapture(str(DEMO_CLIP))
    replay = Camera(config.validate({"camera": {"source": str(path), "loop": False}}))
    replay.on_start()
    t0 = time.monotonic_ns()
    replayed = _run(replay, recorded_s[-1] + 0.05, t0)
    assert [f.header.frame_id for _, f in replayed] == list(range(1, len(records) + 1))
    clip_frames = [clip.read()[1] for _ in range(60)]
    for (_, frame), (_, parts), frame_id in zip(replayed, records, recorded_ids, strict=True):
        bgr = clip_frames[frame_id - 1]
        original = sources.fit_width(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), 640)
        assert frame.pixels == parts[2] == original.tobytes()
    assert np.abs(np.array([t for t, _ in replayed]) - recorded_s).max() < 0.002


@pytest.mark.timeout(60)
def test_replay_control_finds_the_camera_at_the_configured_port_offset():
    """The shell command opens its socket from the registry like every actor, port offset included."""
    from actors.camera import replay_control

    offset = factories.free_port_offset()
    cfg = config.validate(
        {
            "camera": {"source": str(DEMO_CLIP), "loop": False, "paused": True},
            "network": {"transport": "tcp", "port_offset": offset},
        }
    )
    ctx, stop = zmq.Context(), runtime.StopFlag()
    thread = threading.Thread(target=runtime.run, args=(Camera(cfg), ctx, stop), daemon=True)
    thread.start()
    try:
        status = replay_control.send(cfg, "status", timeout_ms=10_000)
        assert status.state == "paused" and status.source.endswith("obama_2s.mp4"), status
        unshifted = config.validate({"network": {"transport": "tcp", "port_offset": offset + 1}})
        with pytest.raises(TimeoutError, match="did not answer"):
            replay_control.send(unshifted, "status", timeout_ms=300)  # nobody at another offset
    finally:
        stop.set()
        thread.join(5)
        ctx.term()
