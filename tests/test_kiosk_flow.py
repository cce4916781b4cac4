"""The whole kiosk under Xvfb, driven by the replayed Obama clip through the real actor graph.

Real processes and ipc sockets: camera (replaying demo/clips/obama_2s.mp4), detector, encoder,
two matchers over the demo index, reducer, printer (spool backend) and the Kivy display in a
real window. The test walks the visitor's path and saves a screen grab of each state in
test-artifacts/:

- kiosk_attract.png: display and printer up, the camera not started yet: the attract text, the
  print button dark, "waiting for the camera" in the alert line.
- kiosk_results.png: the camera started: the mirrored frame with the face box, five result cards
  (barack obama first, with dataset photos), the line under them that this kind of software is
  less accurate for some faces than others, the print button lit.
- kiosk_print.png: after a click on the print button: "your receipt is printing", the receipt in
  the spool folder, the button dark again (one receipt per visitor).
- kiosk_camera_lost.png: the camera stopped: "camera lost" in the alert line, the last frame gone
  from the live view, and once the visitor counts as gone, the attract screen with no cards.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from PIL import Image

from benchmarks.graph import Graph, logged
from tests import kiosk_screen as ks
from tests.conftest import DEMO_CLIP

pytestmark = pytest.mark.slow  # starts actor processes or a window

pytest.importorskip("mss", reason="the screen grab needs the mss package (pip install mss)")
if importlib.util.find_spec("kivy") is None:
    pytest.skip("the display window needs Kivy", allow_module_level=True)

NOTE = (slice(686, 720), slice(605, 1255))  # the line under the print button
PIPELINE = ["camera", "detector", "encoder", "matcher.1", "reducer"]  # Procfile lines (one matcher: every shard)


@pytest.mark.timeout(240)
def test_visitor_path_through_the_real_graph(demo_index: Path, ipc_dir: Path, tmp_path: Path, x_display: str) -> None:
    spool = tmp_path / "spool"
    env = ks.kiosk_env(tmp_path, x_display, ipc_dir, ks.graph_config(demo_index, DEMO_CLIP, spool))
    actors = Graph(env)
    try:
        actors.start("printer")
        actors.start("display")
        actors.wait_for(logged("display", "window ready"), "the window", 60)

        # Attract: nobody there, no camera yet.
        view = actors.wait_for(logged("display", "view: mode=attract"), "the attract view", 5, since=0)
        assert "step in front of the camera" in view and "waiting for the camera" in view, view
        attract = ks.grab_until(
            x_display,
            lambda rgb: [
                *ks.not_blank(rgb),
                *ks.button_unlit(rgb),
                *ks.text_lines(rgb, ks.RIGHT_PANEL, 5, "attract text"),
                *ks.orange_text(rgb, ks.ALERTS, "alert line"),
                *(["result cards show photos in the attract state"] if not ks.card_photos(rgb, 1) else []),
            ],
            "kiosk_attract.png",
        )

        # The visitor arrives: the real graph replays the clip.
        for name in PIPELINE:
            actors.start(name)
        mark = actors.mark()
        shown = actors.wait_for(logged("display", "results for query"), "results", 120)
        assert "best barack_obama" in shown, shown
        view = actors.wait_for(logged("display", "view: mode=results"), "the results view", 10, since=mark)
        assert "print_lit=True" in view and "'barack obama'" in view and "your closest match: barack obama" in view
        # The reducer's sentence for the best match (the demo index has the look-alike table): Obama's own photo
        # is closer than chance would bring anyone in 253 people.
        assert "lookalikes='Fewer than 1 person in this dataset of 253 people" in view, view
        results = ks.grab_until(
            x_display,
            lambda rgb: [
                *ks.not_blank(rgb),
                *ks.live_frame_with_box(rgb),
                *ks.card_photos(rgb, 5),
                *ks.button_lit(rgb),
                *ks.text_lines(rgb, ks.FAIRNESS_LINE, 2, "line under the cards (less accurate for some faces)"),
                *ks.text_lines(rgb, ks.LOOKALIKES_LINE, 2, "look-alikes by chance line"),
            ],
            "kiosk_results.png",
            timeout_s=40,
        )
        lit_red, dark_red = results[ks.PRINT_BUTTON][..., 0].mean(), attract[ks.PRINT_BUTTON][..., 0].mean()
        assert lit_red - dark_red > 120, f"print button red {lit_red:.0f} lit vs {dark_red:.0f} dark"

        # Print.
        mark = actors.mark()
        ks.click(x_display, *ks.PRINT_BUTTON_XY)
        printed = actors.wait_for(logged("display", "printed query"), "the printer's reply", 20)
        receipt = Path(printed.split(": ", 1)[1])
        assert receipt.parent == spool and Image.open(receipt).width == 576
        actors.wait_for(logged("display", "note='your receipt is printing"), "the printing note", 5, since=mark)
        ks.grab_until(
            x_display,
            lambda rgb: [*ks.button_unlit(rgb), *ks.text_width(rgb, NOTE, 250, "'your receipt is printing' note")],
            "kiosk_print.png",
        )

        # The camera goes away: "camera lost", then the visitor counts as gone and the kiosk resets.
        assert actors.stop("camera") == 0
        mark = actors.mark()
        actors.wait_for(logged("display", "camera lost"), "the camera-lost alert", 10)
        actors.wait_for(logged("display", "results -> attract (the visitor left)"), "the reset", 10, since=mark)
        view = actors.wait_for(logged("display", "view: mode=attract"), "the attract view again", 5, since=mark)
        assert "cards=[]" in view, f"the cards still show the previous visitor: {view}"
        ks.grab_until(
            x_display,
            lambda rgb: [
                *ks.button_unlit(rgb),
                *ks.orange_text(rgb, ks.ALERTS, "alert line"),
                *ks.few_colours(rgb, ks.LIVE_VIEW, "live view (the last frame must be gone)"),
                *ks.text_lines(rgb, ks.RIGHT_PANEL, 5, "attract text"),
            ],
            "kiosk_camera_lost.png",
        )
        assert actors.stop("display") == 0
        assert not ks.left_in_home(env), f"an actor wrote into its HOME: {ks.left_in_home(env)}"
    finally:
        actors.kill_all()
