"""Where a matched photo comes from, on the result cards and the receipt (index/provenance.py).

- the pure wording: what a result carries, the card's one line fitted to a number of characters,
  the receipt's labelled lines with their fallback to what the photo's path tells;
- the receipt: the best match's account, photo id, web address, licence and date; a long web
  address broken after its slashes, every line within the receipt's width, on paper (PNG) and in
  the PDF's text (test-artifacts/receipt_provenance.png);
- the window (Xvfb): cards with provenance, long values shortened inside their card
  (test-artifacts/kiosk_provenance.png);
- the MegaFace sample built into an index: its results carry each photo's account, photo id,
  licence and date to the card's words, the receipt and, through the real actor graph (the camera
  showing one of the sample's photos), to the card on screen (test-artifacts/kiosk_provenance_megaface.png).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import importlib.util
import itertools
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from actors.printer import receipt
from benchmarks.graph import Graph, logged
from index import provenance, store
from index.gallery import Gallery
from index.provenance import Provenance
from messages import Result
from tests import kiosk_screen as ks
from tests.conftest import ARTIFACTS
from tests.factories import megaface_flickr_rows, megaface_photo_id

WHEN = dt.datetime(2026, 12, 2, 11, 0)
PHOTO = "FlickrFinal2/555/55543106@N05/1813201299_0.jpg"
FULL = Provenance("55543106@N05", "1813201299", "", "CC BY-ND 2.0", "2012-12-16")
FULL_LINE = "Flickr account 55543106@N05 · photo 1813201299 · CC BY-ND 2.0 · taken 2012-12-16"
LONG_URL = (
    "https://www.flickr.com/photos/a_rather_long_alias_for_an_account/8876543210/in/"
    "album-72157594288899232/?context=photostream&size=large#comments"
)
LONG_LICENCE = "Attribution-NonCommercial-ShareAlike 2.0 Generic, as the uploader chose it for all their photos"


def megaface_result(**provenance_fields: str) -> Result:
    return Result(1, "55543106@N05", 0.31, PHOTO, 4, [10, 10, 90, 90], **provenance_fields)


# --- the wording ---------------------------------------------------------------------------------


def test_a_result_gives_its_provenance_and_nothing_where_the_dataset_gives_nothing() -> None:
    r = megaface_result(
        nsid="55543106@N05", photo_id="1813201299", licence=" CC  BY-ND 2.0 ", date_taken="2012-12-16 08:01:02"
    )
    assert provenance.of(r) == FULL
    assert not provenance.of(Result(1, "Ari_Fleischer", 0.7, "Ari_Fleischer/Ari_Fleischer_0001.jpg", 9))
    assert provenance.card_line(Provenance(), 80) == ""


@pytest.mark.parametrize(
    ("given", "shown"),
    [
        ("2009-07-14 12:34:56", "2009-07-14"),
        ("2009-07-14T12:34:56+02:00", "2009-07-14"),
        ("2009-07-14T12:34Z", "2009-07-14"),
        ("2009-07-14", "2009-07-14"),
        ("July 2009", "July 2009"),  # a form it doesn't know: as the dataset gives it
        ("", ""),
    ],
)
def test_a_date_and_time_is_shown_as_its_date(given: str, shown: str) -> None:
    assert provenance.taken_date(given) == shown


def test_the_card_line_takes_the_fullest_wording_that_fits() -> None:
    assert provenance.card_line(FULL, 200) == provenance.card_line(FULL, len(FULL_LINE)) == FULL_LINE
    shorter = "Flickr 55543106@N05 · photo 1813201299 · CC BY-ND 2.0 · taken 2012-12-16"
    assert provenance.card_line(FULL, len(FULL_LINE) - 1) == shorter
    no_taken = "Flickr 55543106@N05 · photo 1813201299 · CC BY-ND 2.0 · 2012-12-16"
    assert provenance.card_line(FULL, len(shorter) - 1) == no_taken
    assert provenance.card_line(FULL, 60) == "Flickr 55543106@N05 · photo 181… · CC BY-ND 2.0 · 2012-12-16"  # id elided
    for chars in range(0, 120):  # never longer than asked, whatever the room
        for p in (FULL, Provenance(url=LONG_URL, licence=LONG_LICENCE), Provenance(licence=LONG_LICENCE)):
            assert len(provenance.card_line(p, chars)) <= chars, (p, chars)


def test_a_long_web_address_keeps_its_start_and_its_end_on_the_card() -> None:
    line = provenance.card_line(Provenance(account="1@N01", url=LONG_URL, licence="CC0 1.0", date="2010-01-02"), 90)
    assert len(line) == 90 and line.startswith("Flickr 1@N01 · flickr.com/photos/a_rat")
    assert line.endswith("72157594288899232 · CC0 1.0 · 2010-01-02") and "…" in line  # no query, no fragment
    only = provenance.card_line(Provenance(photo_id="4187112233"), 80)
    assert only == "photo 4187112233"  # no account, no licence, no date: just what there is
    assert provenance.card_line(Provenance(licence="All Rights Reserved", date="2006-03-16"), 80) == (
        "All Rights Reserved · taken 2006-03-16"
    )


def test_the_receipt_fields_use_the_dataset_and_fall_back_to_the_path() -> None:
    assert provenance.receipt_fields(FULL, PHOTO) == [
        ("Source", "Flickr account 55543106@N05, via MegaFace"),
        ("Photo id", "1813201299"),
        ("Licence", "CC BY-ND 2.0"),
        ("Date taken", "2012-12-16"),
    ]
    from_a_manifest = Provenance("1@N01", "", "https://flickr.com/photos/1@N01/5/", "", "")
    assert provenance.receipt_fields(from_a_manifest, "people/a.jpg") == [
        ("Source", "Flickr account 1@N01"),
        ("Web address", "https://flickr.com/photos/1@N01/5/"),
        ("Licence", "unknown"),  # as the path tells: nothing
    ]
    assert provenance.receipt_fields(Provenance(), PHOTO) == [  # an index built before the columns existed
        ("Source", "Flickr account 55543106@N05, via MegaFace"),
        ("Licence", "Creative Commons, as uploaded; no consent asked"),
    ]


# --- the receipt ---------------------------------------------------------------------------------


def test_the_receipt_names_account_photo_licence_and_date_of_the_best_match() -> None:
    best = megaface_result(nsid="55543106@N05", photo_id="1813201299", licence="CC BY-ND 2.0", date_taken="2012-12-16")
    other = Result(2, "Ari_Fleischer", 0.7, "Ari_Fleischer/Ari_Fleischer_0001.jpg", 9, licence="research only")
    lines = receipt.compose([best, other], 0.6, WHEN).lines
    i = lines.index("Their photo:")
    assert lines[i : i + 6] == [
        "Their photo:",
        PHOTO,
        "Source: Flickr account 55543106@N05, via",
        "MegaFace",
        "Photo id: 1813201299",
        "Licence: CC BY-ND 2.0",
    ]
    assert lines[i + 6] == "Date taken: 2012-12-16" and "research only" not in "\n".join(lines)  # best match only
    before = receipt.compose([dataclasses.replace(best, nsid="", photo_id="", licence="", date_taken="")], 0.6, WHEN)
    assert "Licence: Creative Commons, as uploaded; no consent asked" in " ".join(before.lines)  # as before


@pytest.mark.parametrize(
    ("token", "lines"),
    [
        (
            "https://www.flickr.com/photos/55543106@N05/1813201299/in/photostream/page-3?context=album&id=72157594288899232",
            [
                "https://www.flickr.com/photos/55543106@N05/",
                "  1813201299/in/photostream/page-3",
                "  ?context=album&id=72157594288899232",
            ],
        ),
        ("x" * 100, ["x" * 46, "  " + "x" * 44, "  " + "x" * 10]),  # no place to break: cut at the line's end
        ("a/" * 30, ["a/" * 23, "  " + "a/" * 7]),
    ],
)
def test_a_word_longer_than_a_line_breaks_after_a_slash(token: str, lines: list[str]) -> None:
    assert receipt.break_token(token, 46) == lines
    assert "".join(line.removeprefix(receipt.CONTINUATION) for line in lines) == token


def test_a_long_web_address_on_the_receipt_breaks_cleanly_on_paper_and_in_the_pdf() -> None:
    best = megaface_result(nsid="55543106@N05", url=LONG_URL, licence=LONG_LICENCE, date_taken="2012-12-16")
    r = receipt.compose([best], 0.6, WHEN, match_photo=np.full((200, 200, 3), 128, np.uint8))
    assert max(len(line) for line in r.lines) <= receipt.WRAP_CHARS
    start = r.lines.index("Web address:") + 1
    end = next(i for i in range(start + 1, len(r.lines)) if not r.lines[i].startswith(receipt.CONTINUATION))
    url_lines = r.lines[start:end]
    assert len(url_lines) >= 3 and "".join(line.strip() for line in url_lines) == LONG_URL
    for line, after in itertools.pairwise(url_lines):  # each break after a '/' or before ? & #
        assert line.endswith("/") or after.strip()[0] in "?&#", (line, after)
    assert f"Licence: {LONG_LICENCE}" in " ".join(r.lines)  # prose wraps between words

    image = receipt.render_png(r)
    ARTIFACTS.mkdir(exist_ok=True)
    image.save(ARTIFACTS / "receipt_provenance.png")
    ink = np.asarray(image) < 128
    right_margin = ink[:, receipt.RECEIPT_WIDTH_PX - receipt.MARGIN_PX // 2 :]
    assert not right_margin.any(), "text runs into the receipt's right margin (see receipt_provenance.png)"
    if shutil.which("pdftotext") is None:
        pytest.skip("pdftotext is not installed (apt-get install poppler-utils)")
    pdf = receipt.render_pdf(r)
    text = subprocess.run(["pdftotext", "-layout", "-", "-"], input=pdf, capture_output=True, check=True).stdout
    words = text.decode().split()
    at = words.index("address:") + 1
    assert "".join(words[at : at + len(url_lines)]) == LONG_URL


# --- the MegaFace sample, built: each result's provenance reaches the card and the receipt ------------


def _megaface_results(index: Path) -> list[Result]:
    """The top 5 for an account's photo of the built sample (its own descriptor as the query)."""
    meta = store.Metadata(index)
    entries = meta.lookup(list(range(store.read_manifest(index).count)))
    meta.close()
    accounts = [e.nsid for e in entries.values()]
    row = next(r for r, e in sorted(entries.items()) if accounts.count(e.nsid) >= 4)
    gallery = Gallery(index)
    try:
        descriptor = np.load(index / "shard_000.npy")[row].astype(np.float32)
        return gallery.search(descriptor, 5)
    finally:
        gallery.close()


def test_the_megaface_sample_gives_every_card_and_the_receipt_its_provenance(
    megaface_subset_index: Path, shared_data: Path
) -> None:
    from ui_kivy import app  # Kivy without a window

    rows = megaface_flickr_rows(shared_data)
    results = _megaface_results(megaface_subset_index)
    assert len(results) == 5 and results[0].distance < 0.01
    cards = app.card_rows(results, 0.6)
    for r, card in zip(sorted(results, key=lambda r: r.distance), cards, strict=True):
        flickr = rows[megaface_photo_id(r.photo)]
        expected = Provenance(flickr["nsid"], megaface_photo_id(r.photo), "", flickr["licence"], flickr["date_taken"])
        assert card["provenance"] == expected, r
        line = provenance.card_line(card["provenance"], 200)
        assert line == (
            f"Flickr account {flickr['nsid']} · photo {expected.photo_id} · {flickr['licence']} · "
            f"taken {flickr['date_taken']}"
        )
    best, flickr = results[0], rows[megaface_photo_id(results[0].photo)]
    text = receipt.compose(results, 0.6, WHEN).text()
    for shown in (
        f"Flickr account {flickr['nsid']}",
        f"Photo id: {megaface_photo_id(best.photo)}",
        f"Licence: {flickr['licence']}",
        f"Date taken: {flickr['date_taken']}",
    ):
        assert shown in text.replace("\n", " "), (shown, text)


# --- the window ----------------------------------------------------------------------------------


def _window_tests_can_run() -> None:
    pytest.importorskip("cv2")
    pytest.importorskip("mss", reason="the screen grab needs the mss package (pip install mss)")
    if importlib.util.find_spec("kivy") is None:
        pytest.skip("the display window needs Kivy")


def _provenance_cards(rgb: np.ndarray, with_provenance: list[bool]) -> list[str]:
    """Each card holds its lines apart (name, confidence and distance, and the provenance line where it has
    one, in its lowest part), and no text leaves its card."""
    cards = ks.result_cards(rgb)
    if len(cards) != len(with_provenance):
        return [f"{len(cards)} result cards on the screen, expected {len(with_provenance)}"]
    problems = ks.cards_contained(rgb, cards)
    for i, ((top, bottom), has_line) in enumerate(zip(cards, with_provenance, strict=True)):
        bands = ks.text_bands(rgb, top, bottom)
        want = 3 if has_line else 2
        if len(bands) != want:
            problems.append(f"card {i + 1} has {len(bands)} lines of text {bands}, expected {want}")
        elif has_line and bands[-1][0] < bottom - 26:
            problems.append(f"card {i + 1}'s provenance line starts at row {bands[-1][0]}, card ends at {bottom}")
    return problems


FAKE_PROVENANCE = [  # the fake reducer's results with what a dataset might give, long values included
    dict(nsid="55543106@N05", photo_id="1813201299", licence="CC BY-NC 2.0", date_taken="2009-07-14 18:22:05"),
    dict(url=LONG_URL, licence=LONG_LICENCE, date_taken="2011-02-03"),
    dict(nsid="10300581@N07", licence="All Rights Reserved", date_taken="2006-03-16"),
    dict(),  # nothing given: no line, the card as without provenance
    dict(photo_id="12345678901234567890", licence=LONG_LICENCE),
]


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_cards_show_provenance_shortened_to_fit_the_card(x_display: str, ipc_dir: Path, tmp_path: Path) -> None:
    _window_tests_can_run()
    from tests.kiosk_fakes import RESULTS, FakeUpstream, display_config, start_display

    results = [dataclasses.replace(r, **p) for r, p in zip(RESULTS, FAKE_PROVENANCE, strict=True)]
    upstream = FakeUpstream(ipc_dir, results)
    upstream.send_garbage = False
    upstream.start()
    actors = Graph(ks.kiosk_env(tmp_path, x_display, ipc_dir, display_config()))
    try:
        start_display(actors, upstream)
        first = actors.wait_for(logged("display", "card 1 provenance: Flickr"), "card 1's provenance", 10, since=0)
        assert first.endswith("55543106@N05 · photo 1813201299 · CC BY-NC 2.0 · taken 2009-07-14"), first
        second = actors.wait_for(logged("display", "card 2 provenance: flickr.com"), "card 2's provenance", 10, since=0)
        assert "…" in second and "#comments" not in second, second  # a long address and licence, shortened
        ks.grab_until(
            x_display, lambda rgb: _provenance_cards(rgb, [bool(p) for p in FAKE_PROVENANCE]), "kiosk_provenance.png"
        )
        assert actors.stop("display") == 0
    finally:
        actors.kill_all()
        upstream.close()


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_the_real_graph_shows_the_megaface_photos_provenance_on_the_card(
    megaface_subset_index: Path, shared_data: Path, ipc_dir: Path, tmp_path: Path, x_display: str
) -> None:
    """The camera shows one photo of the sample (an image folder); detector, encoder, matcher and reducer
    find it in the index built from the sample; its card names its account, photo id, licence and date."""
    _window_tests_can_run()
    meta = store.Metadata(megaface_subset_index)
    entries = meta.lookup(list(range(store.read_manifest(megaface_subset_index).count)))
    meta.close()
    accounts = [e.nsid for e in entries.values()]
    entry = next(e for _, e in sorted(entries.items()) if accounts.count(e.nsid) >= 4)
    flickr = megaface_flickr_rows(shared_data)[entry.photo_id]
    camera = tmp_path / "camera"
    camera.mkdir()
    with Image.open(megaface_subset_index.parent / "dataset" / entry.photo) as img:  # 250 px: as a webcam would see it
        img.convert("RGB").resize((3 * img.width, 3 * img.height), Image.Resampling.LANCZOS).save(
            camera / "visitor.jpg", quality=95
        )
    env = ks.kiosk_env(tmp_path, x_display, ipc_dir, ks.graph_config(megaface_subset_index, camera))
    actors = Graph(env)
    try:
        actors.start("display")
        actors.wait_for(logged("display", "window ready"), "the window", 60)
        for name in ("camera", "detector", "encoder", "matcher.1", "reducer"):
            actors.start(name)
        shown = actors.wait_for(logged("display", "showing 5 results"), "the results", 90, since=0)
        assert f"best {entry.nsid}" in shown, shown
        line = actors.wait_for(logged("display", "card 1 provenance:"), "card 1's provenance", 10, since=0)
        for value in (entry.nsid, entry.photo_id, flickr["licence"], flickr["date_taken"]):
            assert value in line, (value, line)
        ks.grab_until(
            x_display,
            lambda rgb: [*_provenance_cards(rgb, [True] * 5), *ks.card_photos(rgb, 5)],
            "kiosk_provenance_megaface.png",
        )
    finally:
        actors.kill_all()
