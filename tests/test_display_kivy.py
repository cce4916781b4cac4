"""The Kivy display in a real window: Xvfb, the real display actor, real frames, real pixels.

The tests play the camera, the detector and the reducer (and the printer): they bind those
actors' sockets (ipc, in a temporary folder) and publish frames of the bundled Obama clip, the
detector's boxes for them and a result list, over and over because subscribers join late. They
wait for the display's log lines or a print request (never a sleep), grab the X screen into
test-artifacts/display_results.png, check that the frame, the face box and the result rows were
drawn, click "Print my match" through XTEST, and check that SIGTERM stops the display fast.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import importlib.util
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import IO, Any, TypeVar

import numpy as np
import pytest
import zmq

import config
from actors.runtime import open_socket
from config.loader import PROJECT_ROOT
from messages import TOPICS, DecodeError, Faces, Frame, Header, Matches, PrintJob, PrintReply, decode, encode
from tests.xvfb import running_xvfb, xvfb_binary

cv2 = pytest.importorskip("cv2")
mss = pytest.importorskip("mss", reason="the screen grab needs the mss package (pip install mss)")
if importlib.util.find_spec("kivy") is None:  # not imported here: Kivy would write ~/.kivy for this process
    pytest.skip("the display window needs Kivy", allow_module_level=True)

CONFIG_PATH = PROJECT_ROOT / "config" / "test.toml"
CLIP = PROJECT_ROOT / "demo" / "clips" / "obama_2s.mp4"
ARTIFACT = PROJECT_ROOT / "test-artifacts" / "display_results.png"
SCREEN_W, SCREEN_H = 1280, 800  # the Xvfb screen, and the window size config/test.toml keeps by default
FRAME_W = 640
N_FRAMES = 30
PUBLISH_PERIOD_S = 0.1
QUERY_ID = 7
RESULTS = [
    {"rank": 1, "identity": "barack_obama", "distance": 0.35, "photo": "barack_obama/0001.jpg", "row": 11},
    {"rank": 2, "identity": "Ari_Fleischer", "distance": 0.702, "photo": "Ari_Fleischer/0003.jpg", "row": 27},
    {"rank": 3, "identity": "Abdullah_Gul", "distance": 0.731, "photo": "Abdullah_Gul/0002.jpg", "row": 3},
    {"rank": 4, "identity": "Alfonso_Soriano", "distance": 0.764, "photo": "Alfonso_Soriano/0001.jpg", "row": 8},
    {"rank": 5, "identity": "Atom_Egoyan", "distance": 0.78, "photo": "Atom_Egoyan/0001.jpg", "row": 30},
]
BOX_RGB = (51, 255, 76)  # ui_kivy.app.BOX_RGBA, the visitor's box
# Screen places (rows, columns / x, y) from the layout in ui_kivy/kiosk.kv at 1280x800: the live
# view fills the left 58 % inside 24 px padding, the result list sits under the right column's
# title and the print button at the bottom of the right column.
LIVE_VIEW = (slice(120, 620), slice(40, 700))
RESULT_LIST = (slice(82, 382), slice(770, 1256))
PRINT_BUTTON_XY = (1002, 693)

T = TypeVar("T")


@dataclass(frozen=True)
class ClipFrame:
    rgb: np.ndarray
    boxes: list[list[int]]
    visitor: int
    chip: bytes


@cache
def clip_frames() -> list[ClipFrame]:
    """Frames of the clip scaled to FRAME_W wide, with what the detector finds in each (faces only)."""
    from actors.detector import find_visitor  # dlib: imported only when a test runs

    d = config.load(CONFIG_PATH, env={})["detector"]
    cap = cv2.VideoCapture(str(CLIP))
    frames: list[ClipFrame] = []
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
                frames.append(ClipFrame(rgb, [list(b) for b in boxes], visitor, chip))
    finally:
        cap.release()
    assert frames, f"no face found in {CLIP}"
    return frames


class FakeUpstream:
    """Camera, detector and reducer: binds their PUB sockets and publishes one round at a time."""

    def __init__(self, ipc_dir: Path):
        self.cfg = config.load(CONFIG_PATH, env={"MEGAPIXELS_IPC_DIR": str(ipc_dir)})
        self.ctx = zmq.Context()
        self.pubs = {
            t: open_socket(self.ctx, self.cfg, t, TOPICS[t].binder, receiving=False)
            for t in ("frames", "faces", "matches")
        }
        self.frames = clip_frames()
        self.send_garbage = True  # a malformed matches message each round, which must be dropped
        self.n = 0

    def publish(self) -> None:
        self.n += 1
        f = self.frames[self.n % len(self.frames)]
        h, w = f.rgb.shape[:2]
        now = time.monotonic_ns()
        self._send(Frame(Header(self.n, now, "camera", self.n), w, h, "replay:obama_2s.mp4", f.rgb.tobytes()))
        self._send(Faces(Header(self.n, now, "detector", self.n), w, h, now, f.boxes, f.visitor, f.chip))
        self._send(Matches(Header(self.n, now, "reducer", self.n), QUERY_ID, RESULTS, False, [], 84.0))
        if self.send_garbage:
            self.pubs["matches"].send_multipart([b"matches", b"\xc1 not msgpack"])

    def _send(self, msg: Frame | Faces | Matches) -> None:
        self.pubs[type(msg).TOPIC].send_multipart(encode(msg))

    def close(self) -> None:
        for sock in self.pubs.values():
            sock.close(linger=0)
        self.ctx.term()


class FakePrinter:
    """The printer's REP socket, answered by hand."""

    def __init__(self, upstream: FakeUpstream):
        self.sock = open_socket(upstream.ctx, upstream.cfg, "print", TOPICS["print"].binder, receiving=True)

    def receive(self) -> PrintJob | None:
        """The waiting print job, if any (never blocks)."""
        if not self.sock.poll(0, zmq.POLLIN):
            return None
        return decode(self.sock.recv_multipart(), expect="print")

    def reply(self, job: PrintJob, ok: bool = True) -> None:
        header = Header(1, time.monotonic_ns(), "printer", job.header.frame_id)
        self.sock.send_multipart(encode(PrintReply(header, job.query_id, ok, "build/spool/receipt-test.png")))

    def close(self) -> None:
        self.sock.close(linger=0)


@dataclass
class DisplayProcess:
    proc: subprocess.Popen
    home: Path
    lines: queue.Queue = field(default_factory=queue.Queue)  # output lines; None at the end
    output: list[str] = field(default_factory=list)

    def start_reader(self) -> None:
        threading.Thread(target=self._read, args=(self.proc.stdout,), daemon=True).start()

    def _read(self, stream: IO[bytes]) -> None:
        for raw in iter(stream.readline, b""):
            line = raw.decode(errors="replace").rstrip()
            self.output.append(line)
            self.lines.put(line)
        self.lines.put(None)

    def transcript(self) -> str:
        return "\n".join(self.output[-60:])


def publish_until(
    display: DisplayProcess,
    upstream: FakeUpstream,
    check: Callable[[list[str]], T | None],
    what: str,
    timeout_s: float = 20.0,
) -> T:
    """Publish a round every PUBLISH_PERIOD_S until ``check(lines logged meanwhile)`` gives a value."""
    deadline = time.monotonic() + timeout_s
    seen: list[str] = []
    while time.monotonic() < deadline:
        upstream.publish()
        round_end = time.monotonic() + PUBLISH_PERIOD_S
        while (left := round_end - time.monotonic()) > 0:
            try:
                line = display.lines.get(timeout=left)
            except queue.Empty:
                break
            if line is None:
                raise AssertionError(
                    f"the display exited (code {display.proc.wait()}) waiting for {what}:\n{display.transcript()}"
                )
            seen.append(line)
        if (result := check(seen)) is not None:
            return result
    raise AssertionError(f"no {what} within {timeout_s:.0f} s; the display logged:\n{display.transcript()}")


def line_with(needle: str) -> Callable[[list[str]], str | None]:
    return lambda seen: next((line for line in seen if needle in line), None)


def lines_with(*needles: str) -> Callable[[list[str]], list[str] | None]:
    """All of ``needles`` logged, in any order: one line for each."""

    def check(seen: list[str]) -> list[str] | None:
        found = {n: line for line in seen for n in needles if n in line}
        return [found[n] for n in needles] if len(found) == len(needles) else None

    return check


def one_round(_: list[str]) -> bool:
    return True


def screen_problems(rgb: np.ndarray) -> list[str]:
    """What is wrong with a screen grab of the display showing RESULTS (empty list: all drawn)."""
    problems = []
    if rgb.std() < 30:
        problems.append(f"the screen is nearly blank (pixel std dev {rgb.std():.1f})")
    live = rgb[LIVE_VIEW]
    colours = len(np.unique((live >> 3).reshape(-1, 3), axis=0))
    if colours < 1000:
        problems.append(f"the live view has only {colours} distinct colours; no camera frame drawn")
    box_px = int((np.abs(live.astype(int) - BOX_RGB).max(axis=2) < 40).sum())
    if box_px < 200:
        problems.append(f"only {box_px} pixels of the face box's colour in the live view")
    text_rows = (rgb[RESULT_LIST] > 200).all(axis=2).any(axis=1)  # pixel rows holding white text
    lines = int(np.count_nonzero(np.diff(text_rows.astype(int)) == 1) + text_rows[0])
    if lines < len(RESULTS):
        problems.append(f"{lines} lines of text in the result list, expected {len(RESULTS)}")
    return problems


def grab(display_name: str) -> tuple[np.ndarray, Any]:
    """The whole X screen: as an RGB array, and as mss's shot (for saving)."""
    with mss.MSS(display=display_name) as sct:
        shot = sct.grab(sct.monitors[0])
    return np.asarray(shot)[:, :, 2::-1].copy(), shot  # BGRA -> RGB


def click(display_name: str, x: int, y: int) -> None:
    """A left click at (x, y), sent through the X server's XTEST extension as a real mouse's would be."""
    x11 = ctypes.CDLL(ctypes.util.find_library("X11") or "libX11.so.6")
    xtst = ctypes.CDLL(ctypes.util.find_library("Xtst") or "libXtst.so.6")
    x11.XOpenDisplay.restype = ctypes.c_void_p
    x11.XOpenDisplay.argtypes = [ctypes.c_char_p]
    x11.XCloseDisplay.argtypes = [ctypes.c_void_p]
    xtst.XTestFakeMotionEvent.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_ulong]
    xtst.XTestFakeButtonEvent.argtypes = [ctypes.c_void_p, ctypes.c_uint, ctypes.c_int, ctypes.c_ulong]
    dpy = x11.XOpenDisplay(display_name.encode())
    assert dpy, f"cannot open X display {display_name}"
    try:
        xtst.XTestFakeMotionEvent(dpy, -1, x, y, 0)
        xtst.XTestFakeButtonEvent(dpy, 1, True, 0)
        xtst.XTestFakeButtonEvent(dpy, 1, False, 0)
    finally:
        x11.XCloseDisplay(dpy)  # flushes the events


def stop_with_sigterm(display: DisplayProcess) -> None:
    t0 = time.monotonic()
    display.proc.send_signal(signal.SIGTERM)
    try:
        code = display.proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"the display ignored SIGTERM for 5 s:\n{display.transcript()}") from None
    assert code == 0, f"the display exited with {code} after SIGTERM:\n{display.transcript()}"
    assert time.monotonic() - t0 < 5
    # Mesa's cache of compiled GL shaders is the one thing allowed: it holds no pixels.
    shader_cache = display.home / ".cache" / "mesa_shader_cache"
    files = [p for p in display.home.rglob("*") if p.is_file() and shader_cache not in p.parents]
    left_behind = sorted(str(p.relative_to(display.home)) for p in files)
    assert not left_behind, f"the display wrote into its HOME: {left_behind}"


@pytest.fixture
def x_display() -> Iterator[str]:
    if xvfb_binary() is None:
        pytest.skip("Xvfb is not installed (apt-get install xvfb xauth libgl1 libegl1 libmtdev1)")
    with running_xvfb(f"{SCREEN_W}x{SCREEN_H}x24") as name:
        yield name


@pytest.fixture
def upstream(ipc_dir: Path) -> Iterator[FakeUpstream]:
    up = FakeUpstream(ipc_dir)  # ipc_dir: conftest's short folder, as socket paths must stay short
    yield up
    up.close()


@pytest.fixture
def display(x_display: str, upstream: FakeUpstream, tmp_path: Path) -> Iterator[DisplayProcess]:
    """``python -m actors.display`` with a window on ``x_display``, up and showing RESULTS."""
    home = tmp_path / "home"  # an empty HOME: the display must leave nothing in it
    home.mkdir()
    env = {
        **os.environ,
        "MEGAPIXELS_CONFIG": str(CONFIG_PATH),
        "MEGAPIXELS_HEADLESS": "0",  # test.toml says headless = true; "0" must override it
        "MEGAPIXELS_IPC_DIR": upstream.cfg["network"]["ipc_dir"],
        "DISPLAY": x_display,
        "PYTHONPATH": str(PROJECT_ROOT),
        "HOME": str(home),
        "XDG_CACHE_HOME": str(home / ".cache"),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "XDG_DATA_HOME": str(home / ".local" / "share"),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "actors.display"],
        cwd=PROJECT_ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    d = DisplayProcess(proc, home)
    d.start_reader()
    try:
        # Results may be logged before the first picture is on screen: wait for both at once.
        _, shown = publish_until(d, upstream, lines_with("window ready", "results for query"), "window", 45)
        assert f"showing {len(RESULTS)} results for query {QUERY_ID}, best barack_obama" in shown
        yield d
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_rows_boxes_and_notes() -> None:
    from ui_kivy import app  # Kivy without a window; ui_kivy keeps it from writing ~/.kivy

    rows = app.result_rows(RESULTS, threshold=0.6)
    assert rows[0] == {"rank": "1", "name": "barack obama", "distance": "0.350", "close": True}
    assert [r["close"] for r in rows] == [True, False, False, False, False]
    # A 640x360 frame shown 2x at (10, 20): its top-left box lands at the top-left, y going up.
    assert app.box_rect([0, 0, 64, 36], 640, 360, (10, 20, 1280, 720)) == (10, 20 + 720 - 72, 128, 72)
    assert app.fit_rect(640, 360, 0, 0, 700, 700) == (0, 153.125, 700, 393.75)
    partial = Matches(Header(1, 0, "reducer", 1), QUERY_ID, RESULTS, True, [1, 3], 80.0)
    assert app.partial_note(partial) == "partial — missing shards 1, 3"
    assert app.status_text(False, False, None, 0.6) == "waiting for camera…"
    assert app.status_text(True, True, None, 0.6) == "searching…"
    assert app.status_text(True, True, partial, 0.6) == "your closest match: barack obama"


@pytest.mark.timeout(120)
def test_display_draws_frame_box_and_results(display: DisplayProcess, upstream: FakeUpstream, x_display: str) -> None:
    publish_until(display, upstream, line_with("dropped a malformed matches message"), "dropped garbage")
    upstream.send_garbage = False
    # The log line comes when the properties change; the pixels follow within a frame or two.
    deadline = time.monotonic() + 15
    while True:
        rgb, shot = grab(x_display)
        problems = screen_problems(rgb)
        if not problems or time.monotonic() > deadline:
            break
        publish_until(display, upstream, one_round, "a round")
    ARTIFACT.parent.mkdir(exist_ok=True)
    mss.tools.to_png(shot.rgb, shot.size, output=str(ARTIFACT))
    assert rgb.shape[:2] == (SCREEN_H, SCREEN_W)
    assert not problems, f"{problems} (the screen grab is in {ARTIFACT})"
    stop_with_sigterm(display)


@pytest.mark.timeout(120)
def test_print_button_and_lazy_pirate(display: DisplayProcess, upstream: FakeUpstream, x_display: str) -> None:
    if ctypes.util.find_library("Xtst") is None:
        pytest.skip("libXtst is missing (apt-get install libxtst6): the test clicks through XTEST")
    printer = FakePrinter(upstream)
    try:
        click(x_display, *PRINT_BUTTON_XY)
        job = publish_until(display, upstream, lambda _: printer.receive(), "print job after a click")
        assert (job.query_id, job.results, job.header.src) == (QUERY_ID, RESULTS, "display")
        printer.reply(job)
        publish_until(display, upstream, line_with(f"printed query {QUERY_ID}"), "'printed' log line")

        # A printer that doesn't answer: the display gives up after ~3 s and reopens its socket...
        click(x_display, *PRINT_BUTTON_XY)
        late = publish_until(display, upstream, lambda _: printer.receive(), "second print job")
        publish_until(display, upstream, line_with("no print reply"), "print timeout", timeout_s=10)
        printer.reply(late)  # too late: the socket it was meant for is closed, so it is dropped

        # ...and the reopened socket works.
        click(x_display, *PRINT_BUTTON_XY)
        job = publish_until(display, upstream, lambda _: printer.receive(), "print job after the timeout")
        printer.reply(job)
        publish_until(display, upstream, line_with(f"printed query {QUERY_ID}"), "'printed' after the timeout")
    except DecodeError as e:
        raise AssertionError(f"the display sent a malformed print job: {e}") from e
    finally:
        printer.close()
    stop_with_sigterm(display)
