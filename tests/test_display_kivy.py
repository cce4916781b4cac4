"""The Kivy display in a real window (Xvfb), fed by a fake upstream so the tests control every message.

The tests play the camera, the detector and the reducer: they bind those actors' sockets (ipc, in
a temporary folder) and, from a child process, publish frames of the bundled Obama clip, the detector's
boxes for them and a result list, round after round (a visitor is a face in every round).
They wait for the display's log lines (never a sleep), click the print button through XTEST and
look at the screen. No index is configured here, so the result cards show their "no photo"
placeholder: a result without a readable photo must never break the window.

- the print job is resent on a fresh socket when the printer does not answer, and it is the same
  job (the printer uses that to avoid printing twice); a garbled matches message is dropped;
- with a real CUPS server (started by the test) and the real printer actor: the job arrives as a
  PDF holding the match text; then the queue is stopped (cupsdisable) and the next visitor's
  print attempt puts "printer offline" on the screen (test-artifacts/kiosk_printer_offline.png).
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from actors.display import camera_alert
from benchmarks.graph import Graph, logged
from index.provenance import Provenance
from messages import CameraStatus, Header, Matches
from tests import cups_server, factories
from tests import kiosk_screen as ks
from tests.conftest import PROJECT
from tests.kiosk_fakes import LOOKALIKES, QUERY_ID, RESULTS, FakePrinter, FakeUpstream, display_config, start_display

pytestmark = pytest.mark.slow  # starts actor processes or a window

cv2 = pytest.importorskip("cv2")
pytest.importorskip("mss", reason="the screen grab needs the mss package (pip install mss)")
if importlib.util.find_spec("kivy") is None:  # not imported here: Kivy would write ~/.kivy for this process
    pytest.skip("the display window needs Kivy", allow_module_level=True)


def test_cards_alerts_and_boxes() -> None:
    from ui_kivy import app  # Kivy without a window; ui_kivy keeps it from writing ~/.kivy
    from ui_kivy.session import Phase

    rows = app.card_rows(RESULTS, threshold=0.6)
    assert rows[0] == {
        "rank": "1",
        "name": "barack obama",
        "confidence": "99 % · close match (provisional)",
        "percent": 99,
        "distance": "distance 0.350",
        "close": True,
        "provenance": Provenance(),  # the fake results carry none: the card has no provenance line
    }
    assert [r["close"] for r in rows] == [True, False, False, False, False]
    calibrated = app.card_rows([dataclasses.replace(RESULTS[1], p_same=0.12, verdict="look-alike")], 0.6)
    assert calibrated[0]["confidence"] == "12 % · look-alike"
    # A 640x360 frame shown 2x at (10, 20): its top-left box lands at the top-left, y going up...
    assert app.box_rect([0, 0, 64, 36], 640, 360, (10, 20, 1280, 720)) == (10, 20 + 720 - 72, 128, 72)
    # ...and at the top-right when the view is mirrored.
    assert app.box_rect([0, 0, 64, 36], 640, 360, (10, 20, 1280, 720), mirror=True) == (1162, 668, 128, 72)
    assert app.fit_rect(640, 360, 0, 0, 700, 700) == (0, 153.125, 700, 393.75)
    partial = Matches(Header(1, 0, "reducer", 1), QUERY_ID, 0, RESULTS, True, [1, 3], 80.0)
    assert app.partial_note(partial) == "partial results: shard 1, 3 did not answer, some faces were not searched"
    assert app.alerts_text(False, False, "", "") == "waiting for the camera…"
    assert app.alerts_text(True, False, "", "") == "camera lost: no picture for a while"
    assert (
        app.alerts_text(True, True, "", "printer offline: queue 'q' is stopped")
        == "printer offline: queue 'q' is stopped"
    )
    assert app.alerts_text(True, True, "", "out of paper") == "printer: out of paper"
    assert app.alerts_text(True, True, "", "") == ""
    lost = CameraStatus(Header(1, 0, "camera", 9), "lost", "webcam:0", "could not be opened", 9, 1.0)
    assert camera_alert(lost, 0.5) == "camera lost: webcam:0: could not be opened; reconnecting every 0.5 s"
    assert camera_alert(CameraStatus(Header(2, 0, "camera", 9), "live", "webcam:0", "", 9, 1.0), 0.5) == ""
    assert app.alerts_text(True, False, "", "out of paper", camera_alert(lost, 1.0)).startswith(
        "camera lost: webcam:0: could not be opened; reconnecting every 1 s   ·   printer"
    )
    assert app.phase_text(Phase.RESULTS, False, partial, 0.6, 0) == "your closest match: barack obama"
    assert app.phase_text(Phase.ATTRACT, True, None, 0.6, 0).startswith("thank you")
    assert app.view_mode(Phase.PRINTING) == "results" and app.view_mode(Phase.PRESENT) == "attract"


@pytest.mark.timeout(120)
def test_print_is_resent_on_a_fresh_socket_and_garbage_is_dropped(
    x_display: str, upstream: FakeUpstream, ipc_dir: Path, tmp_path: Path
) -> None:
    env = ks.kiosk_env(tmp_path, x_display, ipc_dir, display_config())
    actors = Graph(env)
    printer = FakePrinter(upstream)
    try:
        start_display(actors, upstream)
        actors.wait_for(logged("display", "dropped a malformed matches"), "garbage dropped", 10, since=0)
        upstream.send_garbage = False
        ks.grab_until(
            x_display,
            lambda rgb: [
                *ks.live_frame_with_box(rgb),
                *ks.button_lit(rgb),
                *ks.text_lines(rgb, ks.FAIRNESS_LINE, 2, "line under the cards (less accurate for some faces)"),
                *ks.text_lines(rgb, ks.LOOKALIKES_LINE, 2, "look-alikes by chance line"),
                *ks.text_width(rgb, ks.LOOKALIKES_LINE, 500, "look-alikes by chance line"),
            ],
            "kiosk_fake.png",
        )
        view = actors.wait_for(logged("display", "view: mode=results"), "the results view", 5, since=0)
        assert f"lookalikes={LOOKALIKES!r}" in view, view

        mark = actors.mark()
        ks.click(x_display, *ks.PRINT_BUTTON_XY)
        first = actors.wait_for(lambda _: printer.receive(), "a print job after the click", 10)
        assert (first.query_id, first.results, first.header.src) == (QUERY_ID, RESULTS, "display")
        assert first.lookalikes == LOOKALIKES  # the receipt prints the sentence the screen shows
        assert first.visitor_face_jpeg == b"", "the visitor's face was sent although print_visitor_face is off"
        # No answer: after ~3 s the display reopens its socket and sends the very same job again.
        actors.wait_for(logged("display", "(attempt 2 of 2)"), "the resend", 10)
        printer.reply(first)  # too late: the socket it was meant for is closed, so it is dropped
        again = actors.wait_for(lambda _: printer.receive(), "the resent job", 10)
        assert again == first, "the resent job differs, so the printer could not tell it was printed already"
        printer.reply(again)
        actors.wait_for(logged("display", f"printed query {QUERY_ID}"), "'printed'", 10)
        view = actors.wait_for(logged("display", "note='your receipt"), "the note", 5, since=mark)
        assert "print_lit=False" in view  # one receipt per visitor
        assert actors.stop("display") == 0
        assert not ks.left_in_home(env), f"the display wrote into its HOME: {ks.left_in_home(env)}"
    finally:
        printer.close()
        actors.kill_all()


@pytest.mark.timeout(150)
def test_cups_job_arrives_and_a_stopped_queue_shows_on_screen(
    x_display: str, upstream: FakeUpstream, ipc_dir: Path, tmp_path: Path
) -> None:
    if reason := cups_server.missing():
        pytest.skip(reason)
    with cups_server.running_cupsd() as cups_env:
        printer_cfg = f'backend = "cups"\ncups_queue = "{cups_server.QUEUE}"'
        env = {**ks.kiosk_env(tmp_path, x_display, ipc_dir, display_config(printer_cfg)), **cups_env}
        actors = Graph(env)
        upstream.send_garbage = False
        try:
            actors.start("printer")
            start_display(actors, upstream)
            before = cups_server.pdfs()
            ks.click(x_display, *ks.PRINT_BUTTON_XY)
            actors.wait_for(logged("display", f"printed query {QUERY_ID}"), "'printed'", 15)
            pdf = cups_server.wait_for_pdf(before)
            try:
                text = subprocess.run(["pdftotext", str(pdf), "-"], capture_output=True, check=True).stdout.decode()
            finally:
                pdf.unlink()
            assert "Your closest match: barack obama" in text and "Distance 0.350" in text, text
            assert "".join(LOOKALIKES.split()) in "".join(text.split()), text  # however the lines wrap

            # The queue stops; the visitor leaves, the next one arrives and presses the button.
            subprocess.run(["cupsdisable", cups_server.QUEUE], env=cups_env, check=True, timeout=10)
            upstream.visitor = False
            mark = actors.mark()
            actors.wait_for(logged("display", "(the visitor left)"), "the reset", 10)
            upstream.visitor, upstream.query_id = True, QUERY_ID + 1
            actors.wait_for(
                logged("display", "print_lit=True"),
                "the next visitor's results",
                20,
                since=mark,
            )
            ks.click(x_display, *ks.PRINT_BUTTON_XY)
            failed = actors.wait_for(logged("display", f"printing query {QUERY_ID + 1} failed"), "the failure", 15)
            assert failed.endswith(f"printer offline: queue '{cups_server.QUEUE}' is stopped"), failed
            view = actors.wait_for(
                logged("display", 'alerts="printer offline: queue'),
                "the alert",
                5,
                since=mark,
            )
            assert "print_lit=True" in view  # the visitor may try again once the printer is back
            ks.grab_until(
                x_display,
                lambda rgb: [*ks.orange_text(rgb, ks.ALERTS, "alert line"), *ks.button_lit(rgb)],
                "kiosk_printer_offline.png",
            )
            assert actors.stop("printer") == 0 and actors.stop("display") == 0
        finally:
            actors.kill_all()


@pytest.mark.timeout(120)
def test_the_window_closes_when_the_supervisor_that_started_it_dies(x_display: str, ipc_dir: Path, tmp_path: Path):
    """``python -m ui_kivy`` started as honcho starts it (by a forked copy of honcho); honcho SIGKILLed."""
    env = ks.kiosk_env(tmp_path, x_display, ipc_dir, display_config())
    boss = factories.start_supervised([sys.executable, "-m", "ui_kivy"], cwd=PROJECT, env=env)
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in boss.stdout], daemon=True).start()
    display = None
    try:
        _line_with(lines, "window ready", 60)
        (helper,) = factories.children(boss.pid)
        (display,) = factories.children(helper)
        boss.kill()
        boss.wait()
        killed = time.monotonic()
        assert f"(pid {boss.pid} (through its helper {helper})) is gone: stopping" in _line_with(lines, "is gone", 10)
        while factories.running(display) and time.monotonic() - killed < 10:
            time.sleep(0.05)
        assert not factories.running(display), "the window outlived its supervisor"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(boss.pid, signal.SIGKILL)


def _line_with(lines: queue.Queue[str], text: str, deadline_s: float) -> str:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        try:
            line = lines.get(timeout=0.2)
        except queue.Empty:
            continue
        if text in line:
            return line
    raise AssertionError(f"no line with {text!r} within {deadline_s} s")
