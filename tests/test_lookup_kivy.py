"""“Are my photos in it?” in the real Kivy window (Xvfb), on the MegaFace-layout sample's index.

The fake upstream of the window tests (tests/kiosk_fakes.py) plays a visitor with results, so
the lookup screen is opened over the results, as a visitor would. The test touches the title
row's button and the on-screen keys through XTEST (and types on the X server's keyboard, as a
physical keyboard or a USB print button that types Enter would), waits for the display's log
lines and looks at the screen. Screen grabs in test-artifacts/: ``lookup_empty.png``,
``lookup_hit.png`` (an account's photos with photo id, licence and date), ``lookup_named.png``
(a photo id typed on the physical keyboard: that photo first, highlighted), ``lookup_none.png``,
``lookup_error.png``, ``lookup_reopened.png`` (empty again after Back).

Also: Enter searches and never prints, even with a USB print button typing Enter; the screen
closes when the visitor leaves and when idle; a removal made while the window runs takes the
photo off the next answer; nothing typed shows up in the display's log.
"""

from __future__ import annotations

import collections
import importlib.util
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from benchmarks.graph import Graph, logged
from index import optout, store
from tests import kiosk_screen as ks
from tests.kiosk_fakes import FakePrinter, FakeUpstream, display_config, start_display

pytestmark = pytest.mark.slow  # starts a window

pytest.importorskip("mss", reason="the screen grab needs the mss package (pip install mss)")
if importlib.util.find_spec("kivy") is None:  # not imported here: Kivy would write ~/.kivy for this process
    pytest.skip("the display window needs Kivy", allow_module_level=True)


def lookup_config(index: Path, extra: str = "") -> str:
    toml = display_config().replace('path = "build/no-index-here"', f'path = "{index}"')
    assert str(index) in toml
    return toml.replace("[display]\n", f"[display]\n{extra}") + '\n[button]\nbackend = "key"\nkey = "enter"\n'


def _accounts(index: Path) -> dict[str, list[store.Entry]]:
    """Every account of the index with its photos, most photos first."""
    meta = store.Metadata(index)
    try:
        entries = meta.lookup(list(range(store.read_manifest(index).real)))
    finally:
        meta.close()
    by_account: dict[str, list[store.Entry]] = collections.defaultdict(list)
    for e in entries.values():
        by_account[e.nsid].append(e)
    return dict(sorted(by_account.items(), key=lambda kv: (-len(kv[1]), kv[0])))


def _answered(actors: Graph, kind: str, mark: int) -> str:
    return actors.wait_for(logged("display", f"lookup answered ({kind})"), f"a '{kind}' answer", 10, since=mark)


def _typed_something(rgb) -> list[str]:
    light = int((rgb[ks.LOOKUP_FIELD] > 190).all(axis=2).sum())
    return [] if light > 100 else [f"nothing typed shows ({light} light text pixels)"]


PROMPT_RGB, HIT_RGB, NONE_RGB = (184, 184, 199), (140, 255, 153), (255, 255, 255)  # ui_kivy/kiosk.kv's colours


def _sentence(colour: tuple[int, int, int], what: str):
    """The answer's sentence is written in ``colour`` (the prompt grey, the hit green, white)."""

    def check(rgb) -> list[str]:
        px = int((np.abs(rgb[ks.LOOKUP_SENTENCE].astype(int) - colour).max(axis=2) < 30).sum())
        return [] if px > 300 else [f"no {what} sentence ({px} pixels of its colour)"]

    return check


def _main_screen(rgb) -> list[str]:
    """The live view is back where the lookup screen's keyboard was (the replayed clip: many colours)."""
    colours = len(np.unique((rgb[ks.LIVE_VIEW] >> 3).reshape(-1, 3), axis=0))
    return [] if colours >= 1000 else [f"no live view: {colours} colours where it should be"]


def _photos(expected: int):
    def check(rgb) -> list[str]:
        shown = ks.lookup_photos_shown(rgb)
        return [] if shown == expected else [f"{shown} photos on the lookup screen, expected {expected}"]

    return check


def test_key_labels_captions_and_the_opening_sentence() -> None:
    from index.lookup import NO_ACCOUNTS, LookupPhoto
    from ui_kivy import app  # Kivy without a window; ui_kivy keeps it from writing ~/.kivy

    assert [app.key_label(k, False) for k in ("a", "@", "shift", "backspace", "search")] == [
        "a", "@", "ABC", "delete", "search"
    ]  # fmt: skip
    assert [app.key_label(k, True) for k in ("a", "@", "shift")] == ["A", "@", "abc"]
    full = LookupPhoto(3, "p.jpg", None, "1@N01", "1813201299", "CC BY 2.0", "2006-03-16")
    assert app.thumb_captions(full) == ("photo 1813201299", "CC BY 2.0", "taken 2006-03-16")
    bare = LookupPhoto(4, "q.jpg", None, "", "", "", "")
    assert app.thumb_captions(bare) == ("photo id not recorded", "licence not recorded", "date not recorded")
    assert app.opening_sentence(NO_ACCOUNTS) == (NO_ACCOUNTS, "unavailable")
    assert app.opening_sentence("")[1] == "prompt"


@pytest.mark.timeout(240)
def test_the_lookup_screen_answers_over_the_results_and_forgets_on_back_and_when_the_visitor_leaves(
    x_display: str, upstream: FakeUpstream, ipc_dir: Path, tmp_path: Path, megaface_index: Path
) -> None:
    index = tmp_path / "idx"
    shutil.copytree(megaface_index, index)  # a photo is removed from it while the window runs
    accounts = _accounts(index)
    nsid, photos = next(iter(accounts.items()))
    assert len(photos) >= 4
    shown = min(len(photos), 8)  # the first two rows of the grid
    named = photos[-1].photo_id
    env = ks.kiosk_env(tmp_path, x_display, ipc_dir, lookup_config(index))
    upstream.send_garbage = False
    actors = Graph(env)
    printer = FakePrinter(upstream)
    typed = [nsid.lower(), named, "99999999@n09", "hello"]
    try:
        start_display(actors, upstream)
        ks.grab_until(x_display, ks.button_lit, "lookup_behind_results.png")

        mark = actors.mark()
        ks.click(x_display, *ks.LOOKUP_BUTTON_XY)
        actors.wait_for(logged("display", "lookup screen opened"), "the lookup screen", 10, since=mark)
        view = actors.wait_for(logged("display", "print_lit=False"), "the print button off", 5, since=mark)
        assert "mode=results" in view  # the session goes on behind the screen
        ks.grab_until(
            x_display,
            lambda rgb: [*ks.lookup_field_empty(rgb), *_sentence(PROMPT_RGB, "prompt")(rgb), *_photos(0)(rgb)],
            "lookup_empty.png",
        )

        # An account typed on the screen's keys ('@' among them), then search.
        mark = actors.mark()
        ks.tap_keys(x_display, [*nsid.lower(), "search"])
        _answered(actors, "hit", mark)
        actors.wait_for(logged("display", "lookup photos shown"), "the photos", 15, since=mark)
        ks.grab_until(
            x_display,
            lambda rgb: [
                *_typed_something(rgb),
                *_photos(shown)(rgb),
                *_sentence(HIT_RGB, "hit")(rgb),
            ],
            "lookup_hit.png",
        )

        # Enter on the physical keyboard searches again; the USB print button types Enter too, yet
        # nothing prints (results up, print allowed: Enter would print without the lookup screen).
        mark = actors.mark()
        ks.press_key(x_display, "Return")
        _answered(actors, "hit", mark)
        assert printer.no_job_within(1.0), "Enter on the lookup screen printed"
        assert not logged("display", "print key")(actors.history[mark:])

        # A photo id typed on the physical keyboard: that photo first, highlighted.
        ks.tap_keys(x_display, ["clear"])
        # Kivy hands touches to the window a frame later than typed text: typing waits for the clear
        ks.grab_until(x_display, ks.lookup_field_empty, "lookup_cleared.png")
        mark = actors.mark()
        for digit in named:
            ks.press_key(x_display, digit)
        ks.press_key(x_display, "KP_Enter")
        _answered(actors, "hit", mark)
        ks.grab_until(
            x_display, lambda rgb: [*_photos(shown)(rgb), *ks.lookup_named_highlighted(rgb)], "lookup_named.png"
        )

        # A removal while the window runs: the next search leaves the photo out.
        optout.remove(index, "photo", photos[0].photo)
        mark = actors.mark()
        ks.tap_keys(x_display, ["search"])
        _answered(actors, "hit", mark)
        ks.grab_until(x_display, _photos(min(len(photos) - 1, 8)), "lookup_after_removal.png")

        mark = actors.mark()
        ks.tap_keys(x_display, ["clear", *"99999999@n09", "search"])
        _answered(actors, "none", mark)
        ks.grab_until(
            x_display,
            lambda rgb: [*_photos(0)(rgb), *_sentence(NONE_RGB, "none")(rgb)],
            "lookup_none.png",
        )

        mark = actors.mark()
        ks.tap_keys(x_display, ["clear", *"hello", "search"])
        _answered(actors, "error", mark)
        ks.grab_until(
            x_display,
            lambda rgb: [*_photos(0)(rgb), *ks.orange_text(rgb, ks.LOOKUP_SENTENCE, "answer")],
            "lookup_error.png",
        )

        # Back: the results again, the print button lit; reopened: nothing typed, no answer.
        mark = actors.mark()
        ks.click(x_display, *ks.LOOKUP_BACK_XY)
        actors.wait_for(logged("display", "lookup screen closed (Back)"), "Back", 10, since=mark)
        ks.grab_until(x_display, lambda rgb: [*ks.button_lit(rgb), *ks.live_frame_with_box(rgb)], "lookup_back.png")
        ks.click(x_display, *ks.LOOKUP_BUTTON_XY)
        actors.wait_for(logged("display", "lookup screen opened"), "the lookup screen again", 10, since=mark)
        ks.grab_until(
            x_display,
            lambda rgb: [*ks.lookup_field_empty(rgb), *_photos(0)(rgb), *_sentence(PROMPT_RGB, "prompt")(rgb)],
            "lookup_reopened.png",
        )

        # Typed, then the visitor steps away: the screen closes and forgets.
        ks.tap_keys(x_display, "123")
        ks.grab_until(x_display, _typed_something, "lookup_typed_before_leaving.png")
        mark = actors.mark()
        upstream.visitor = False
        actors.wait_for(logged("display", "lookup screen closed (the visitor left)"), "the close", 15, since=mark)
        ks.grab_until(x_display, _main_screen, "lookup_visitor_left.png")
        ks.click(x_display, *ks.LOOKUP_BUTTON_XY)
        ks.grab_until(x_display, ks.lookup_field_empty, "lookup_after_leaving.png")

        assert actors.stop("display") == 0
        said = [line for name, line in actors.history if name == "display"]
        for text in typed:
            assert not [line for line in said if text in line], f"the display logged what was typed ({text!r})"
        assert not [line for line in said if nsid in line or "@N0" in line], "the display logged the account found"
    finally:
        printer.close()
        actors.kill_all()


@pytest.mark.timeout(150)
def test_the_lookup_screen_closes_by_itself_when_nobody_touches_it(
    x_display: str, ipc_dir: Path, tmp_path: Path, megaface_index: Path
) -> None:
    """No visitor in front of the camera (nobody to see leave): display.lookup_idle_s closes it."""
    env = ks.kiosk_env(tmp_path, x_display, ipc_dir, lookup_config(megaface_index, "lookup_idle_s = 5\n"))
    actors = Graph(env)
    try:
        actors.start("display")
        actors.wait_for(logged("display", "window ready"), "the window", 60)
        ks.click(x_display, *ks.LOOKUP_BUTTON_XY)
        actors.wait_for(logged("display", "lookup screen opened"), "the lookup screen", 10)
        ks.tap_keys(x_display, "42")
        typed_at = time.monotonic()
        ks.grab_until(x_display, _typed_something, "lookup_idle_typed.png")
        actors.wait_for(logged("display", "lookup screen closed (nothing touched for 5 s)"), "the idle close", 20)
        waited_s = time.monotonic() - typed_at
        assert 4.5 < waited_s < 15, f"closed {waited_s:.1f} s after the last touch, lookup_idle_s is 5"
        ks.click(x_display, *ks.LOOKUP_BUTTON_XY)
        ks.grab_until(x_display, ks.lookup_field_empty, "lookup_idle_reopened.png")
        assert actors.stop("display") == 0
    finally:
        actors.kill_all()
