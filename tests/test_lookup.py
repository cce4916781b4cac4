"""“Are my photos in it?” (index/lookup.py): a typed NSID, photo id or Flickr address answered from
an index's metadata, through its indexes, with the rows removed on request left out, even when
they are removed while the lookup source is open.

The first tests use a small hand-made index (every case, in the quick loop); the last ones the
MegaFace-layout sample built by ``index build`` (conftest's ``megaface_index``), checked against
its flickr_metadata.csv.
"""

from __future__ import annotations

import csv
import json
import logging
import shutil
import sqlite3
import time
from pathlib import Path

import numpy as np
import pytest

from index import lookup, optout, store
from index.lookup import ERROR, HIT, NONE, UNAVAILABLE

A, B = "10000001@N01", "20000002@N02"
ENTRIES = [
    store.Entry(A, f"FlickrFinal2/100/{A}/101_0.jpg", (1, 2, 30, 40), "", "CC BY 2.0", nsid=A, photo_id="101",
                date_taken="2006-03-16"),
    store.Entry(B, f"FlickrFinal2/200/{B}/201_0.jpg", None, "", "CC0", nsid=B, photo_id="201"),
    store.Entry(A, f"FlickrFinal2/100/{A}/102_0.jpg", None, "", "All Rights Reserved", nsid=A, photo_id="102",
                date_taken="2009-01-02"),
    store.Entry(A, f"FlickrFinal2/100/{A}/103_0.jpg", None, "", "", nsid=A, photo_id="103"),
    store.Entry(A, f"FlickrFinal2/100/{A}/103_1.jpg", None, "", "", nsid=A, photo_id="103"),  # a second face
    store.Entry("someone", "loose/301.jpg", None, "", "CC BY-SA 2.0", photo_id="301"),  # no account recorded
    store.Entry("Ann", "Ann/Ann_0001.jpg", None, "https://e.org/1", ""),
]  # fmt: skip


def _index(out: Path, entries: list[store.Entry]) -> Path:
    rows = np.random.default_rng(0).normal(0, 0.1, (len(entries), 128)).astype(np.float32)
    store.write(out, rows, entries, 2, {"dataset": "test"})
    return out


@pytest.fixture
def source(tmp_path: Path):
    opened = lookup.Source.open(_index(tmp_path / "idx", ENTRIES))
    yield opened
    opened.close()


def _rows(answer: lookup.LookupAnswer) -> list[int]:
    return [p.row for p in answer.photos]


def test_an_account_a_photo_id_or_an_address_finds_the_accounts_photos(source: lookup.Source) -> None:
    by_account = lookup.lookup(source, A)
    assert (by_account.kind, by_account.total, by_account.accounts) == (HIT, 4, (A,))
    assert _rows(by_account) == [0, 2, 3, 4] and not any(p.asked for p in by_account.photos)
    assert by_account.sentence == f"The dataset holds 4 photos of the Flickr account {A}."
    first = by_account.photos[0]
    assert (first.photo, first.box, first.photo_id, first.licence, first.date_taken) == (
        f"FlickrFinal2/100/{A}/101_0.jpg", (1, 2, 30, 40), "101", "CC BY 2.0", "2006-03-16"
    )  # fmt: skip
    for text in ("103", f"https://www.flickr.com/photos/{A}/103/", f"flickr.com/photos/{A.lower()}/103/in/album-1"):
        answer = lookup.lookup(source, text)
        assert (answer.kind, answer.total, answer.accounts) == (HIT, 4, (A,)), text
        assert _rows(answer) == [3, 4, 0, 2], "the photo named (both its faces) comes first"
        assert [p.asked for p in answer.photos] == [True, True, False, False]
        assert answer.sentence.endswith(f"account {A}, the photo you named among them.")
    other = lookup.lookup(source, f"https://www.flickr.com/photos/{B}/103/")  # the account, not that photo
    assert other.kind == HIT and other.accounts == (B, A) and other.total == 5
    single = lookup.lookup(source, f"  {B}\n")
    assert single.sentence == f"The dataset holds 1 photo of the Flickr account {B}." and _rows(single) == [1]
    stray = lookup.lookup(source, "301")
    assert (stray.kind, stray.total, _rows(stray), stray.accounts) == (HIT, 1, [5], ())
    assert "not recorded" in stray.sentence


def test_the_count_covers_every_photo_and_the_limit_only_what_is_shown(source: lookup.Source) -> None:
    answer = lookup.lookup(source, "102", limit=2)
    assert answer.total == 4 and _rows(answer) == [2, 0]
    assert answer.sentence == (
        f"The dataset holds 4 photos of the Flickr account {A}, the photo you named among them (the first 2 are shown)."
    )


def test_nothing_found_says_so_without_photos(source: lookup.Source) -> None:
    nobody = lookup.lookup(source, "99999999@N09")
    assert (nobody.kind, nobody.total, nobody.photos) == (NONE, 0, ())
    assert nobody.sentence == "The dataset holds no photo of this Flickr account."
    assert lookup.lookup(source, "999").sentence == "This photo is not in the dataset."
    named = lookup.lookup(source, f"https://www.flickr.com/photos/{A}/999/")  # the account is there, the photo not
    assert named.kind == HIT and named.sentence.endswith("; the photo you named is not among them.")


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("", "Nothing typed: type an account's NSID"),
        ("12345678@X01", "An account's NSID is digits, @N and two digits"),
        ("hello", "Not something Flickr names"),
        ("https://example.org/photos/1", "Not a Flickr address"),
        ("flickr.com/photos/my_alias/", "This address names the account by its alias"),
        ("1" * 25, "A Flickr photo id has at most 20 digits"),
    ],
)
def test_what_is_not_an_account_photo_or_address_is_explained_never_repeated(
    source: lookup.Source, text: str, says: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    answer = lookup.lookup(source, text)
    assert answer.kind == ERROR and answer.sentence.startswith(says), answer.sentence
    assert (answer.total, answer.photos, answer.accounts) == (0, (), ())
    assert not text or text not in answer.sentence
    assert not text or text not in caplog.text


def test_an_index_without_accounts_or_no_index_at_all_is_unavailable(tmp_path: Path) -> None:
    lfw = lookup.Source.open(_index(tmp_path / "lfw", [store.Entry("Ann", "Ann/Ann_0001.jpg", None)]))
    try:
        answer = lookup.lookup(lfw, "55543106@N05")
        assert answer.kind == UNAVAILABLE and answer.sentence == lookup.NO_ACCOUNTS
        assert lookup.lookup(lfw, "not even valid").kind == UNAVAILABLE  # said before anything is parsed
    finally:
        lfw.close()
    missing = lookup.Source.open(tmp_path / "no-index-here")
    assert lookup.lookup(missing, A) == lookup.LookupAnswer(UNAVAILABLE, lookup.NOT_READABLE)
    missing.close()


def test_a_removal_is_honoured_by_the_next_lookup_without_reopening(source: lookup.Source, tmp_path: Path) -> None:
    index = tmp_path / "idx"
    assert lookup.lookup(source, A).total == 4
    optout.remove(index, "photo", f"FlickrFinal2/100/{A}/102_0.jpg")
    removed_at = time.monotonic()
    after = lookup.lookup(source, A)
    took_s = time.monotonic() - removed_at
    assert after.total == 3 and _rows(after) == [0, 3, 4] and took_s < 1.0
    assert lookup.lookup(source, "102").kind == NONE  # the removed photo can't be named either
    optout.remove(index, "account", A)
    for text in (A, "101", f"https://www.flickr.com/photos/{A}/103/"):
        assert lookup.lookup(source, text).kind == NONE, text
    assert lookup.lookup(source, B).total == 1  # the others stay


def test_every_lookup_query_goes_through_an_index(source: lookup.Source) -> None:
    """No statement the lookups run scans the table (SQLite's plan says SCAN for that)."""
    statements: list[str] = []
    assert source.meta is not None
    source.meta._con.set_trace_callback(statements.append)
    for text in (A, "103", f"https://www.flickr.com/photos/{A}/103/", "99999999@N09", "999", "301"):
        lookup.lookup(source, text)
    source.meta._con.set_trace_callback(None)
    assert len(statements) >= 6
    con = sqlite3.connect(source.meta.path)
    try:
        for sql in statements:
            plan = [row[-1] for row in con.execute(f"EXPLAIN QUERY PLAN {sql}")]
            assert plan and not any(step.startswith("SCAN") for step in plan), (sql, plan)
    finally:
        con.close()


# --- the MegaFace-layout sample, built by `index build` --------------------------------------------


def _sample_rows(shared_data: Path) -> dict[str, dict[str, str]]:
    with open(shared_data / "megaface_sample" / "flickr_metadata.csv", newline="") as f:
        return {row["photo_id"]: row for row in csv.DictReader(f)}


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_the_megaface_sample_answers_with_its_licences_and_dates(megaface_index: Path, shared_data: Path) -> None:
    flickr_rows = _sample_rows(shared_data)
    root = Path(store.read_manifest(megaface_index).dataset_root)
    meta = store.Metadata(megaface_index)
    indexed = meta.lookup(list(range(store.read_manifest(megaface_index).real))).values()
    meta.close()
    report = json.loads((megaface_index / "build_report.json").read_text())
    rejected = {r["photo"] for r in report["rejected_files"]}
    accounts = sorted(p.name for p in (root / "FlickrFinal2").glob("*/*"))
    assert sorted({e.nsid for e in indexed}) == accounts
    source = lookup.Source.open(megaface_index)
    try:
        for nsid in accounts:
            mine = sorted(e.photo_id for e in indexed if e.nsid == nsid)
            on_disk = {str(p.relative_to(root)) for p in root.glob(f"FlickrFinal2/*/{nsid}/*.jpg")}
            assert len(mine) == len(on_disk - rejected)  # every photo of the account the build kept
            named = mine[-1]
            for text in (nsid, named, f"https://www.flickr.com/photos/{nsid}/{named}/"):
                answer = lookup.lookup(source, text)
                assert answer.kind == HIT and answer.accounts == (nsid,), text
                assert answer.total == len(mine) and sorted(p.photo_id for p in answer.photos) == mine
                for p in answer.photos:
                    expected = flickr_rows[p.photo_id]
                    assert (p.nsid, p.licence, p.date_taken) == (nsid, expected["licence"], expected["date_taken"])
                    assert (root / p.photo).is_file() and p.box is not None
            assert answer.photos[0].photo_id == named and answer.photos[0].asked
        outside = next(pid for pid, row in flickr_rows.items() if row["nsid"] not in accounts)
        assert lookup.lookup(source, outside).kind == NONE  # in the sample's metadata, not in this index
    finally:
        source.close()


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_removals_under_an_open_lookup_on_the_megaface_sample(megaface_index: Path, tmp_path: Path) -> None:
    index = tmp_path / "idx"
    shutil.copytree(megaface_index, index)
    source = lookup.Source.open(index)
    try:
        meta = store.Metadata(index)
        entries = meta.lookup(list(range(store.read_manifest(index).real)))
        meta.close()
        by_account: dict[str, list[store.Entry]] = {}
        for e in entries.values():
            by_account.setdefault(e.nsid, []).append(e)
        big, other = sorted((a for a, es in by_account.items() if len(es) >= 4), key=lambda a: a)[:2]
        photo = by_account[big][1]
        assert lookup.lookup(source, big).total == len(by_account[big])
        optout.remove(index, "photo", photo.photo)  # the path as `megapixels search` shows it
        answer = lookup.lookup(source, big)
        assert answer.total == len(by_account[big]) - 1 and photo.photo not in {p.photo for p in answer.photos}
        assert lookup.lookup(source, photo.photo_id).kind == NONE
        optout.remove(index, "account", big)
        assert lookup.lookup(source, big).kind == NONE
        assert lookup.lookup(source, by_account[big][0].photo_id).kind == NONE
        assert lookup.lookup(source, other).total == len(by_account[other])
    finally:
        source.close()


@pytest.mark.timeout(120)
def test_the_latency_benchmark_runs_at_a_small_size(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """benchmarks/lookup_latency.py times index.lookup.lookup beside the full scan; it runs at any size."""
    from benchmarks import lookup_latency

    figures = tmp_path / "figures.json"
    argv = ["--rows", "3000", "--queries", "50", "--naive-queries", "3", "--removed-accounts", "20"]
    monkeypatch.setattr("sys.argv", ["lookup_latency", *argv, "--dir", str(tmp_path), "--json", str(figures)])
    lookup_latency.main()
    out = json.loads(figures.read_text())
    assert out["rows"] == 3000 and out["removed_accounts"] == 20 and out["removed_rows"] >= 20
    lookups = out["lookups"]
    assert [lookups[k]["queries"] for k in ("by NSID (indexed)", "by photo id (indexed)", "by URL (indexed)")] == [
        50
    ] * 3
    assert lookups["by NSID (NOT INDEXED: full scan)"]["queries"] == 3
    assert not list(tmp_path.glob("lookup-latency-*")), "the synthetic files were left behind"
