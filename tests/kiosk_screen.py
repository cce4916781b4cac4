"""Helpers for the kiosk window tests: screen grabs, clicks, pixels (actors run under benchmarks.graph.Graph).

The window is 1280x800 on an Xvfb screen of that size. The places below come from the layout
in ui_kivy/kiosk.kv at that size (20 px padding, a 44 px title row, the live view on the left
46 %, the right column holding the attract text / result cards, the print button and its note,
and the dataset line at the bottom).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import itertools
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from config.loader import PROJECT_ROOT

SCREEN_W, SCREEN_H = 1280, 800
ARTIFACTS = PROJECT_ROOT / "test-artifacts"
# (rows, columns) of screen regions, y down
LIVE_VIEW = (slice(80, 660), slice(24, 576))
RIGHT_PANEL = (slice(80, 585), slice(605, 1255))
PRINT_BUTTON = (slice(604, 672), slice(612, 1248))
PRINT_BUTTON_XY = (930, 638)
PRINT_NOTE = (slice(676, 712), slice(605, 1255))  # "printing your receipt…" under the print button
ALERTS = (slice(22, 64), slice(240, 1262))
FAIRNESS_LINE = (slice(545, 590), slice(605, 1255))  # under the result cards: less accurate for some faces
LOOKALIKES_LINE = (slice(640, 720), slice(24, 576))  # under the status: how many would look this like you by chance
BOX_RGB = (51, 255, 76)  # ui_kivy.app.BOX_RGBA, the visitor's box

# The lookup screen ("Are my photos in it?", opened from the title row): its keyboard is ui_kivy's
# KEY_ROWS in the left 46 % of the body (x 20..581), rows 58 px high every 64 px from y 262.
LOOKUP_BUTTON_XY = (361, 42)
LOOKUP_BACK_XY = (104, 616)
LOOKUP_LEFT = (slice(74, 720), slice(20, 581))
LOOKUP_FIELD = (slice(192, 248), slice(24, 578))  # what is typed (light text), or the grey hint
LOOKUP_SENTENCE = (slice(74, 170), slice(601, 1260))  # the answer's sentence
LOOKUP_PHOTOS = (slice(180, 720), slice(601, 1260))  # the grid of the answer's photos
LOOKUP_CELL_STEP = (164, 224)  # a photo of the answer every 164 px across (4 a row), every 224 px down
KEYBOARD_X, KEYBOARD_W, KEYBOARD_TOP, KEY_ROW_STEP, KEY_H, KEY_SPACING = 20, 561, 262, 64, 58, 6

T = TypeVar("T")


def graph_config(index: Path, source: Path, spool: Path | None = None) -> str:
    """The config of a real graph before the window: ``source`` looped as the camera, ``index``
    searched, results held until the test ends, the printer spooling to ``spool`` when given."""
    printer = (
        f'''[printer]
backend = "spool"
spool_dir = "{spool}"
'''
        if spool is not None
        else ""
    )
    return f"""
[camera]
source = "{source}"
loop = true
[index]
path = "{index}"
[search]
shard_deadline_ms = 2000
[display]
stable_s = 0.3
leave_s = 4.0  # generous: on a loaded 2-core machine the detector can stall for seconds
results_hold_s = 300
{printer}[log]
level = "DEBUG"
"""


def kiosk_env(tmp_path: Path, x_display: str, ipc_dir: Path, toml: str) -> dict[str, str]:
    """The environment of every actor: a private config file, ipc sockets, an empty HOME."""
    config_path = tmp_path / "kiosk-test.toml"
    config_path.write_text(toml)
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    return {
        **os.environ,
        "MEGAPIXELS_CONFIG": str(config_path),
        "MEGAPIXELS_IPC_DIR": str(ipc_dir),
        "MEGAPIXELS_HEADLESS": "0",
        "DISPLAY": x_display,
        "PYTHONPATH": str(PROJECT_ROOT),
        "PYTHONUNBUFFERED": "1",
        "HOME": str(home),
        "XDG_CACHE_HOME": str(home / ".cache"),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "XDG_DATA_HOME": str(home / ".local" / "share"),
    }


def left_in_home(env: dict[str, str]) -> list[str]:
    """Files an actor wrote into its HOME (Mesa's shader cache, which holds no pixels, excepted)."""
    home = Path(env["HOME"])
    shader_cache = home / ".cache" / "mesa_shader_cache"
    files = [p for p in home.rglob("*") if p.is_file() and shader_cache not in p.parents]
    return sorted(str(p.relative_to(home)) for p in files)


# --- the screen -----------------------------------------------------------------------------------


def grab(display_name: str) -> tuple[np.ndarray, Any]:
    """The whole X screen: as an RGB array, and as mss's shot (for saving)."""
    import mss

    with mss.MSS(display=display_name) as sct:
        shot = sct.grab(sct.monitors[0])
    return np.asarray(shot)[:, :, 2::-1].copy(), shot  # BGRA -> RGB


def save(shot: Any, name: str) -> Path:
    import mss.tools

    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    mss.tools.to_png(shot.rgb, shot.size, output=str(path))
    return path


def grab_until(
    display_name: str, problems_of: Callable[[np.ndarray], list[str]], name: str, timeout_s: float = 15.0
) -> np.ndarray:
    """Grab the screen until it shows no problems (the pixels follow the properties within frames)."""
    deadline = time.monotonic() + timeout_s
    while True:
        rgb, shot = grab(display_name)
        problems = problems_of(rgb)
        if not problems or time.monotonic() > deadline:
            break
        time.sleep(0.2)  # the window redraws at its own pace; look again
    path = save(shot, name)
    assert rgb.shape[:2] == (SCREEN_H, SCREEN_W)
    assert not problems, f"{problems} (the screen grab is in {path})"
    return rgb


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


def press_key(display_name: str, keysym: str, times: int = 1) -> None:
    """Type the key named ``keysym`` (X's name: "F12", "Return") ``times`` times in a row through XTEST,
    as a USB button that types a key would; the pointer is moved over the window first (no window
    manager: the keyboard goes to the window under the pointer)."""
    x11 = ctypes.CDLL(ctypes.util.find_library("X11") or "libX11.so.6")
    xtst = ctypes.CDLL(ctypes.util.find_library("Xtst") or "libXtst.so.6")
    x11.XOpenDisplay.restype = ctypes.c_void_p
    x11.XOpenDisplay.argtypes = [ctypes.c_char_p]
    x11.XCloseDisplay.argtypes = [ctypes.c_void_p]
    x11.XStringToKeysym.restype = ctypes.c_ulong
    x11.XStringToKeysym.argtypes = [ctypes.c_char_p]
    x11.XKeysymToKeycode.restype = ctypes.c_ubyte
    x11.XKeysymToKeycode.argtypes = [ctypes.c_void_p, ctypes.c_ulong]
    xtst.XTestFakeMotionEvent.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_ulong]
    xtst.XTestFakeKeyEvent.argtypes = [ctypes.c_void_p, ctypes.c_uint, ctypes.c_int, ctypes.c_ulong]
    dpy = x11.XOpenDisplay(display_name.encode())
    assert dpy, f"cannot open X display {display_name}"
    try:
        code = x11.XKeysymToKeycode(dpy, x11.XStringToKeysym(keysym.encode()))
        assert code, f"no key {keysym!r} on the X server's keyboard"
        xtst.XTestFakeMotionEvent(dpy, -1, SCREEN_W // 2, SCREEN_H // 2, 0)
        for _ in range(times):
            xtst.XTestFakeKeyEvent(dpy, code, True, 0)
            xtst.XTestFakeKeyEvent(dpy, code, False, 0)
    finally:
        x11.XCloseDisplay(dpy)  # flushes the events


def lookup_key_xy(key: str) -> tuple[int, int]:
    """The centre of an on-screen key of the lookup screen (a character, or shift / backspace /
    clear / search), laid out as Kivy's BoxLayout shares a row's width by the keys' units."""
    from ui_kivy.lookup_input import KEY_ROWS  # no Kivy in it

    for i, row in enumerate(KEY_ROWS):
        room = KEYBOARD_W - KEY_SPACING * (len(row) - 1)
        x = float(KEYBOARD_X)
        for name, units in row:
            width = room * units / sum(u for _, u in row)
            if name == key:
                return round(x + width / 2), KEYBOARD_TOP + i * KEY_ROW_STEP + KEY_H // 2
            x += width + KEY_SPACING
    raise KeyError(f"no key {key!r} on the lookup screen's keyboard")


def tap_keys(display_name: str, keys: list[str] | str) -> None:
    """Touch the lookup screen's keys one after the other (a string: one key per character)."""
    for key in keys:
        click(display_name, *lookup_key_xy(key))
        time.sleep(0.05)  # a tap is a press and a release: SDL must see them as separate taps


def has_xtest() -> bool:
    return ctypes.util.find_library("Xtst") is not None


# --- pixel checks: each returns a list of problems (empty: fine) ----------------------------------


def not_blank(rgb: np.ndarray) -> list[str]:
    return [] if rgb.std() >= 20 else [f"the screen is nearly blank (pixel std dev {rgb.std():.1f})"]


def button_lit(rgb: np.ndarray) -> list[str]:
    r, g, b = rgb[PRINT_BUTTON].reshape(-1, 3).mean(axis=0)
    return (
        [] if r > 200 and g > 150 and b < 140 else [f"the print button is not lit (mean RGB {r:.0f},{g:.0f},{b:.0f})"]
    )


def button_unlit(rgb: np.ndarray) -> list[str]:
    r, g, b = rgb[PRINT_BUTTON].reshape(-1, 3).mean(axis=0)
    return [] if max(r, g, b) < 90 else [f"the print button looks lit (mean RGB {r:.0f},{g:.0f},{b:.0f})"]


def text_lines(rgb: np.ndarray, region: tuple[slice, slice], at_least: int, what: str) -> list[str]:
    """At least ``at_least`` separate rows of light text pixels in ``region``."""
    rows = (rgb[region] > 190).all(axis=2).any(axis=1)
    lines = int(np.count_nonzero(np.diff(rows.astype(int)) == 1) + rows[0])
    return [] if lines >= at_least else [f"{lines} lines of text in the {what}, expected at least {at_least}"]


def live_frame_with_box(rgb: np.ndarray) -> list[str]:
    problems = []
    live = rgb[LIVE_VIEW]
    colours = len(np.unique((live >> 3).reshape(-1, 3), axis=0))
    if colours < 1000:
        problems.append(f"the live view has only {colours} distinct colours; no camera frame drawn")
    box_px = int((np.abs(live.astype(int) - BOX_RGB).max(axis=2) < 40).sum())
    if box_px < 200:
        problems.append(f"only {box_px} pixels of the face box's colour in the live view")
    return problems


def text_width(rgb: np.ndarray, region: tuple[slice, slice], at_least_px: int, what: str) -> list[str]:
    """Light text in ``region`` spanning at least ``at_least_px`` columns (tells short notes from long ones)."""
    cols = np.flatnonzero((rgb[region] > 190).all(axis=2).any(axis=0))
    width = int(cols[-1] - cols[0]) if cols.size else 0
    return [] if width >= at_least_px else [f"the {what} is {width} px wide, expected at least {at_least_px}"]


def few_colours(rgb: np.ndarray, region: tuple[slice, slice], what: str) -> list[str]:
    colours = len(np.unique((rgb[region] >> 3).reshape(-1, 3), axis=0))
    return [] if colours < 50 else [f"the {what} still shows a picture ({colours} colours)"]


def orange_text(rgb: np.ndarray, region: tuple[slice, slice], what: str) -> list[str]:
    px = rgb[region].astype(int)
    orange = int(((px[..., 0] > 200) & (px[..., 1] > 110) & (px[..., 1] < 190) & (px[..., 2] < 90)).sum())
    return [] if orange > 150 else [f"no alert text in the {what} ({orange} orange pixels)"]


def lookup_field_empty(rgb: np.ndarray) -> list[str]:
    """The lookup screen's typed line shows its grey hint, no typed (light) text."""
    light = int((rgb[LOOKUP_FIELD] > 190).all(axis=2).sum())
    return [] if light == 0 else [f"the typed line is not empty ({light} light text pixels)"]


def lookup_photos_shown(rgb: np.ndarray) -> int:
    """How many cells of the lookup screen's first two rows of photos hold a real picture (many colours)."""
    found = 0
    for row in range(2):
        top = LOOKUP_PHOTOS[0].start + 6 + row * LOOKUP_CELL_STEP[1]
        for col in range(4):
            left = LOOKUP_PHOTOS[1].start + 6 + col * LOOKUP_CELL_STEP[0]
            square = rgb[top : top + 140, left : left + 140]
            found += len(np.unique((square >> 3).reshape(-1, 3), axis=0)) > 300
    return found


def lookup_named_highlighted(rgb: np.ndarray) -> list[str]:
    """The first photo's cell (the photo the visitor named) has the green background of ui_kivy's LookupThumb."""
    cell = rgb[LOOKUP_PHOTOS[0].start + 2 : LOOKUP_PHOTOS[0].start + 210, LOOKUP_PHOTOS[1].start + 1]
    green = int((np.abs(cell.astype(int) - (33, 84, 51)).max(axis=1) < 12).sum())
    return [] if green > 150 else [f"the named photo's cell is not highlighted ({green} green pixels at its edge)"]


def card_photos(rgb: np.ndarray, expect_photos: int) -> list[str]:
    """Count the result cards whose photo square holds a real picture (many colours)."""
    panel = rgb[RIGHT_PANEL]
    band_h = (panel.shape[0] - 40) // 5
    found = 0
    for i in range(5):
        top = 40 + i * band_h
        square = panel[top + 10 : top + band_h - 10, 40:120]
        if len(np.unique((square >> 3).reshape(-1, 3), axis=0)) > 300:
            found += 1
    return [] if found >= expect_photos else [f"{found} result cards show a photo, expected {expect_photos}"]


# --- the result cards -----------------------------------------------------------------------------

CARD_COLUMN = 606  # inside every result card, left of its rank number
CARDS_X = slice(601, 1260)  # a card, left to right
CARD_TEXT_X = slice(728, 1260)  # a card's text: right of its photo
WINDOW_RGB = (26, 26, 31)  # the window's background (kiosk.kv)


def result_cards(rgb: np.ndarray) -> list[tuple[int, int]]:
    """(top, bottom) screen rows of each result card shown, from its background (bottom exclusive)."""
    rows = RIGHT_PANEL[0]
    col = rgb[rows, CARD_COLUMN].astype(int)
    inside = np.abs(col - WINDOW_RGB).max(axis=1) > 8
    cards, start = [], None
    for y, on in enumerate([*inside, False]):
        if on and start is None:
            start = y
        elif not on and start is not None:
            if y - start >= 40:  # a card, not a letter of the title
                cards.append((rows.start + start, rows.start + y))
            start = None
    return cards


def text_bands(rgb: np.ndarray, top: int, bottom: int, cols: slice = CARD_TEXT_X) -> list[tuple[int, int]]:
    """(top, bottom) rows of each line of text between ``top`` and ``bottom``: rows whose pixels stand out
    from the background there (sampled at the card's left edge), separated by at least one empty row."""
    area = rgb[top:bottom, cols].astype(int)
    background = rgb[(top + bottom) // 2, CARD_COLUMN].astype(int)
    ink = (np.abs(area - background).max(axis=2) > 60).any(axis=1)
    bands, start = [], None
    for y, on in enumerate([*ink, False]):
        if on and start is None:
            start = y
        elif not on and start is not None:
            bands.append((top + start, top + y))
            start = None
    return bands


def cards_contained(rgb: np.ndarray, cards: list[tuple[int, int]]) -> list[str]:
    """Problems where a card's text leaves its card: into the gaps between cards, or over its right edge."""
    problems = []
    for (_, bottom), (top, _) in itertools.pairwise(cards):
        gap = rgb[bottom:top, CARDS_X].astype(int)
        stray = int((np.abs(gap - WINDOW_RGB).max(axis=2) > 40).sum())
        if stray:
            problems.append(f"{stray} text pixels in the gap between cards at rows {bottom}..{top}")
    for top, bottom in cards:
        edge = rgb[top + 8 : bottom - 8, CARDS_X.stop - 8 : CARDS_X.stop - 2].astype(int)
        background = rgb[(top + bottom) // 2, CARD_COLUMN].astype(int)
        stray = int((np.abs(edge - background).max(axis=2) > 40).sum())
        if stray:
            problems.append(f"{stray} text pixels at the right edge of the card at rows {top}..{bottom}")
    return problems
