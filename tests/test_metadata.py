"""Who each gallery photo belongs to: Flickr account (NSID), photo id, licence and date per row,
from MegaFace's layout, CSV columns and flickr_metadata.csv; the streaming scan; the indexed
lookups by account, photo id or URL; provenance on every result."""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from index import build, cli, flickr, photo_metadata, store
from index.gallery import Gallery
from messages import Header, Matches, Result, decode, encode
from tests.factories import megaface_flickr_rows, megaface_photo_id, megaface_subset, megaface_truth

# -- the scan streams -------------------------------------------------------------------------


def _tree(root: Path, prefixes: int = 30, accounts: int = 10) -> int:
    """A MegaFace-shaped tree of empty photos (the scan never opens them); returns the folder count."""
    for p in range(prefixes):
        for a in range(accounts):
            folder = root / "FlickrFinal2" / f"{100 + p}" / f"{100 + p}{a:05d}@N0{a % 9}"
            folder.mkdir(parents=True)
            for photo in (a * 7 + 1, a * 7 + 2):
                (folder / f"{photo}{p:03d}_0.jpg").write_bytes(b"")
                (folder / f"{photo}{p:03d}_0.jpg.json").write_text("{}")
    return 2 + prefixes + prefixes * accounts  # root, FlickrFinal2, the prefixes, the accounts


@pytest.fixture
def listed(monkeypatch):
    """Every folder os.scandir lists from here on, in order; ``listed.refuse`` names folders that fail."""
    real = os.scandir
    calls: list[str] = []

    def counting(path="."):
        if isinstance(path, int):  # a folder opened by descriptor (shutil.rmtree): not the scan
            return real(path)
        calls.append(os.fspath(path))
        if any(os.fspath(path).endswith(name) for name in counting.refuse):
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real(path)

    counting.refuse = ()
    counting.calls = calls
    monkeypatch.setattr(os, "scandir", counting)
    return counting


def test_the_scan_yields_its_first_photo_after_listing_only_the_folders_on_its_way(tmp_path, listed):
    folders = _tree(tmp_path)
    photos = build.iter_photos(tmp_path)
    assert listed.calls == []  # nothing is listed before a photo is asked for
    first = next(photos)
    assert first.path == "FlickrFinal2/100/10000000@N00/1000_0.jpg"
    assert [Path(c).name for c in listed.calls] == [tmp_path.name, "FlickrFinal2", "100", "10000000@N00"]
    rest = list(photos)
    assert len(listed.calls) == folders and len(rest) + 1 == 600  # each folder listed once, every photo found


def test_folders_that_cannot_be_listed_are_skipped_and_named_after_the_first_photos_came(tmp_path, listed):
    _tree(tmp_path, prefixes=4, accounts=2)
    listed.refuse = ("/102", "10300001@N01")
    unreadable: list[str] = []
    photos = build.iter_photos(tmp_path, unreadable)
    assert next(photos).path.startswith("FlickrFinal2/100/") and unreadable == []
    rest = list(photos)
    assert unreadable == [
        "FlickrFinal2/102: Permission denied",
        "FlickrFinal2/103/10300001@N01: Permission denied",
    ]
    assert len(rest) + 1 == 16 - 4 - 2 and not any("/102/" in p.path or "10300001@N01" in p.path for p in rest)
    listed.refuse = (tmp_path.name,)
    with pytest.raises(PermissionError):  # the dataset's root itself: nothing to build from
        next(build.iter_photos(tmp_path))


def test_the_scan_keeps_the_order_builds_used_and_reads_account_and_photo_id_from_the_layout(shared_data):
    sample = shared_data / "megaface_sample"
    root, photos = build.scan(sample)
    found = list(photos)
    walked = []  # the order of the os.walk scan that built indexes before
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            if Path(name).suffix.lower() in build.IMAGE_SUFFIXES:
                walked.append(str((Path(dirpath) / name).relative_to(root)))
    assert [p.path for p in found] == walked and len(found) == 996
    truth = megaface_truth(shared_data)
    assert {p.path: (p.identity, p.nsid, p.photo_id) for p in found} == {
        path: (nsid, nsid, megaface_photo_id(path)) for path, nsid in truth.items()
    }


@pytest.mark.parametrize(
    ("folder", "name", "expected"),
    [
        ("55543106@N05", "1813201299_0.jpg", ("55543106@N05", "1813201299")),
        ("55543106@N05", "1813201299_12.png", ("55543106@N05", "1813201299")),
        ("55543106@N05", "1813201299.jpg", ("55543106@N05", "1813201299")),
        ("55543106@N05", "portrait.jpg", ("55543106@N05", "")),
        ("Tony_Blair", "Tony_Blair_0001.jpg", ("", "")),
        ("Tony_Blair", "1813201299_0.jpg", ("", "")),  # digits outside an account's folder are just a name
        ("55543106@N5", "1_0.jpg", ("", "")),
        ("55543106@X05", "1_0.jpg", ("", "")),
    ],
)
def test_megaface_layout_is_recognised_by_its_nsid_folder_and_photo_id_name(folder, name, expected):
    assert flickr.from_layout(folder, name) == expected


def test_a_csv_manifest_gives_every_column_and_the_layout_fills_what_it_leaves_empty(tmp_path):
    manifest = tmp_path / "faces.csv"
    with open(manifest, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "identity", "url", "licence", "nsid", "photo_id", "date_taken"])
        w.writerow(["a/1.jpg", "Ann", "https://e.org/1", "CC BY 2.0", "1@N01", "11", "2010-01-02"])
        w.writerow(["FlickrFinal2/555/55543106@N05/1813201299_0.jpg", "x", "", "", "", "", ""])
        w.writerow(["FlickrFinal2/555/55543106@N05/1813201299_1.jpg", "x", "", "", "", "77", " 2011 "])
        w.writerow(["b/2.jpg", " Bob ", "", "", "", "", ""])
    assert [dataclasses.astuple(p) for p in build.iter_photos(manifest)] == [
        ("a/1.jpg", "Ann", "https://e.org/1", "CC BY 2.0", "1@N01", "11", "2010-01-02"),
        ("FlickrFinal2/555/55543106@N05/1813201299_0.jpg", "x", "", "", "55543106@N05", "1813201299", ""),
        ("FlickrFinal2/555/55543106@N05/1813201299_1.jpg", "x", "", "", "55543106@N05", "77", "2011"),
        ("b/2.jpg", "Bob", "", "", "", "", ""),
    ]
    (tmp_path / "old.csv").write_text("path,identity,url,licence\nc/3.jpg,Cy,,CC0\n")  # the old columns only
    assert list(build.iter_photos(tmp_path / "old.csv")) == [build.Photo("c/3.jpg", "Cy", licence="CC0")]
    (tmp_path / "bad.csv").write_text("file,nsid\na.jpg,1@N01\n")
    with pytest.raises(ValueError, match="needs columns path, identity"):
        build.iter_photos(tmp_path / "bad.csv")  # at once, not at the first photo


def test_a_metadata_file_without_photo_id_or_unreadable_is_refused_naming_it(tmp_path):
    (tmp_path / "m.csv").write_text("id,owner\n1,2@N01\n")
    with pytest.raises(ValueError, match=r"m\.csv: a photo metadata file needs a photo_id column .* id, owner"):
        photo_metadata.PhotoMetadata(tmp_path / "m.csv", tmp_path / "t.sqlite")
    (tmp_path / "n.csv").write_bytes(b"photo_id,licence\n1,\xff\xfe\n")
    with pytest.raises(ValueError, match=r"n\.csv: not UTF-8"):
        photo_metadata.PhotoMetadata(tmp_path / "n.csv", tmp_path / "t.sqlite")
    (tmp_path / "d.csv").write_text("Photo_ID,NSID,License\n5,1@N01,CC0\n5,2@N01,CC BY\n,,\n6\n")
    table = photo_metadata.PhotoMetadata(tmp_path / "d.csv", tmp_path / "t.sqlite")
    assert table.match("5", "1@N01") == ("1@N01", "CC0", "", "")  # the first row of a photo id counts
    assert table.match("6") == ("", "", "", "") and table.match("7") is None and table.match("") is None
    stats = table.stats
    assert (stats.rows, stats.duplicate_photo_ids) == (3, 1)
    assert (stats.photos_matched, stats.photos_without_row, stats.photos_without_photo_id) == (2, 1, 1)
    table.close()
    assert not (tmp_path / "t.sqlite").exists()


# -- what a visitor types ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "nsid", "photo_id"),
    [
        ("55543106@N05", "55543106@N05", ""),
        ("  55543106@n05 ", "55543106@N05", ""),
        ("1813201299", "", "1813201299"),
        ("https://www.flickr.com/photos/55543106@N05/1813201299/", "55543106@N05", "1813201299"),
        ("http://flickr.com/photos/55543106@N05/1813201299/in/photostream/", "55543106@N05", "1813201299"),
        ("www.flickr.com/photos/55543106@N05/1813201299?x=1#c", "55543106@N05", "1813201299"),
        ("https://m.flickr.com/photos/55543106%40N05/1813201299", "55543106@N05", "1813201299"),
        ("flickr.com/photos/55543106@N05/", "55543106@N05", ""),
        ("https://www.flickr.com/photos/55543106@N05/albums", "55543106@N05", ""),
        ("https://www.flickr.com/people/55543106@N05/", "55543106@N05", ""),
        ("https://www.flickr.com/photos/some_alias/1813201299/", "", "1813201299"),
        ("https://www.flickr.com/photo.gne?id=1813201299", "", "1813201299"),
        ("http://flic.kr/p/8SPTwJ", "", "5169665786"),  # Flickr's base58 of 5169665786
        ("https://live.staticflickr.com/65535/1813201299_0123abcd_b.jpg", "", "1813201299"),
        ("https://farm3.staticflickr.com/2043/1813201299_0123abcd.jpg", "", "1813201299"),
    ],
)
def test_an_nsid_a_photo_id_or_a_flickr_url_becomes_a_query(text, nsid, photo_id):
    assert flickr.parse_flickr_query(text) == flickr.FlickrQuery(nsid, photo_id)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "nothing typed"),
        ("   ", "nothing typed"),
        ("Jane Doe", "not something Flickr names"),
        ("jane@example", "NSID is digits, @N and two digits"),
        ("55543106@N5", "NSID is digits, @N and two digits"),
        ("1" * 25, "at most 20 digits"),
        ("x" * 600, "too long"),
        ("https://example.com/photos/55543106@N05/", "not a Flickr address"),
        ("ftp://flickr.com/photos/55543106@N05/", "starts with https://"),
        ("flickr.com/photos/some_alias/", "alias, which the dataset does not record"),
        ("https://www.flickr.com/explore", "names no account or photo"),
        ("https://www.flickr.com/photo.gne?id=abc", r"needs \?id="),
        ("https://flic.kr/p/0OIl", "no 0, O, I or l"),
        ("https://flic.kr/s/aHsk", "flic.kr/p/"),
        ("https://live.staticflickr.com/65535/", "does not end in a photo file"),
    ],
)
def test_a_malformed_query_gets_a_clear_error_that_never_repeats_it(text, message):
    with pytest.raises(flickr.FlickrQueryError, match=message) as raised:
        flickr.parse_flickr_query(text)
    if text.strip():
        assert text.strip() not in str(raised.value)  # what a visitor typed is never logged from here


# -- meta.sqlite: columns, indexes, lookups, old indexes --------------------------------------


def _index(out: Path, entries: list[store.Entry]) -> Path:
    rows = np.random.default_rng(0).normal(0, 0.1, (len(entries), 128)).astype(np.float32)
    store.write(out, rows, entries, 2, {"dataset": "test"})
    return out


ENTRIES = [
    store.Entry("10@N01", "p/10@N01/100_0.jpg", (1, 2, 3, 4), "", "CC BY 2.0", nsid="10@N01", photo_id="100"),
    store.Entry("20@N02", "p/20@N02/200_0.jpg", None, "", "", nsid="20@N02", photo_id="200", date_taken="2009-01-02"),
    store.Entry("10@N01", "p/10@N01/101_0.jpg", None, "", "CC0", nsid="10@N01", photo_id="101"),
    store.Entry("10@N01", "p/10@N01/101_1.jpg", None, "", "CC0", nsid="10@N01", photo_id="101"),
    store.Entry("Ann", "Ann/1.jpg", None, "https://e.org/1", ""),
]


def test_metadata_stores_provenance_indexed_and_answers_by_account_photo_or_url(tmp_path):
    index = _index(tmp_path / "idx", ENTRIES)
    con = sqlite3.connect(index / "meta.sqlite")
    plan = " ".join(r[-1] for r in con.execute("EXPLAIN QUERY PLAN SELECT row FROM entries WHERE nsid = '10@N01'"))
    con.close()
    assert "USING COVERING INDEX entries_nsid" in plan or "USING INDEX entries_nsid" in plan
    meta = store.Metadata(index)
    assert meta.has_provenance and meta.lookup([0, 1, 4]) == {0: ENTRIES[0], 1: ENTRIES[1], 4: ENTRIES[4]}
    assert meta.photos_of_account("10@N01") == [(0, ENTRIES[0]), (2, ENTRIES[2]), (3, ENTRIES[3])]
    assert meta.photos_of_account("10@N01", limit=1) == [(0, ENTRIES[0])] and meta.count_of_account("10@N01") == 3
    assert meta.photo("101") == [(2, ENTRIES[2]), (3, ENTRIES[3])] and meta.photo("999") == []
    assert meta.photos_of_account("") == meta.photo("") == [] and meta.count_of_account("") == 0  # "" is nobody
    by_url = flickr.find(meta, flickr.parse_flickr_query("https://www.flickr.com/photos/10@N01/101/"))
    by_photo = flickr.find(meta, flickr.parse_flickr_query("101"))
    by_account = flickr.find(meta, flickr.parse_flickr_query("10@n01"))
    for found in (by_url, by_photo, by_account):
        assert found.accounts == ("10@N01",) and [r for r, _ in found.photos] == [0, 2, 3] and found.total == 3
    assert by_url.asked == by_photo.asked == (2, 3) and by_account.asked == ()
    limited = flickr.find(meta, flickr.FlickrQuery(nsid="10@N01"), limit=2)
    assert [r for r, _ in limited.photos] == [0, 2] and limited.total == 3
    nobody = flickr.find(meta, flickr.FlickrQuery(nsid="99@N09"))
    assert nobody.photos == () and nobody.total == 0
    meta.close()


def _old_format(index: Path) -> None:
    """meta.sqlite as indexes before this change wrote it: no nsid, photo_id, date_taken."""
    con = sqlite3.connect(index / "meta.sqlite")
    with con:
        con.execute("DROP INDEX entries_nsid")
        con.execute("DROP INDEX entries_photo_id")
        for column in store.PROVENANCE_COLUMNS:
            con.execute(f"ALTER TABLE entries DROP COLUMN {column}")
    con.close()


def test_an_index_built_before_the_account_columns_still_answers_and_says_to_rebuild_for_lookups(tmp_path):
    index = _index(tmp_path / "idx", ENTRIES)
    _old_format(index)
    assert store.verify(index).real == len(ENTRIES)  # what the matchers and the reducer check: usable
    meta = store.Metadata(index)
    assert not meta.has_provenance
    assert meta.lookup([0])[0] == store.Entry("10@N01", "p/10@N01/100_0.jpg", (1, 2, 3, 4), "", "CC BY 2.0")
    refused = "built before Flickr accounts and photo ids were stored: rebuild"
    for ask in (lambda: meta.photos_of_account("10@N01"), lambda: meta.photo("1"), lambda: meta.count_of_account("x")):
        with pytest.raises(store.IndexStoreError, match=refused):
            ask()
    meta.close()
    gallery = Gallery(index)
    query = np.load(index / "shard_000.npy")[0]
    best = gallery.search(query, 1)[0]
    gallery.close()
    assert (best.row, best.licence, best.nsid, best.photo_id) == (0, "CC BY 2.0", "", "")


def test_half_the_account_columns_or_a_missing_lookup_index_is_refused_naming_it(tmp_path):
    index = _index(tmp_path / "a", ENTRIES)
    con = sqlite3.connect(index / "meta.sqlite")
    with con:
        con.execute("ALTER TABLE entries DROP COLUMN date_taken")
    con.close()
    with pytest.raises(store.IndexStoreError, match=r"meta\.sqlite: table 'entries' lacks the columns date_taken"):
        store.verify(index)
    index = _index(tmp_path / "b", ENTRIES)
    con = sqlite3.connect(index / "meta.sqlite")
    with con:
        con.execute("DROP INDEX entries_photo_id")
    con.close()
    with pytest.raises(
        store.IndexStoreError, match=r"meta\.sqlite: table 'entries' has no index on photo_id .*rebuild"
    ):
        store.Metadata(index)


def test_a_provenance_value_the_wire_would_refuse_is_left_out_of_the_result(tmp_path):
    long_url = "https://e.org/" + "x" * 3000
    index = _index(tmp_path / "idx", [store.Entry("A", "A/1.jpg", None, long_url, "CC0", nsid="1@N01")])
    gallery = Gallery(index)
    result = gallery.search(np.load(index / "shard_000.npy")[0], 1)[0]
    gallery.close()
    assert (result.url, result.licence, result.nsid) == ("", "CC0", "1@N01")
    decode(encode(Matches(Header(1, 1, "reducer", 1), 1, 1, [result], False, [], 1.0)))  # it travels


# -- the real sample, built -------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_building_the_megaface_sample_stores_account_photo_id_licence_and_date_for_every_row(
    shared_data, tmp_path, listed, capsys
):
    dataset = tmp_path / "megaface"
    expected, hidden_folder = megaface_subset(shared_data, dataset)
    hidden = Path(hidden_folder).name
    listed.refuse = (hidden,)  # one account's folder can't be listed: skipped, named, the rest built
    lines: list[str] = []
    report = build.build(dataset, tmp_path / "idx", n_shards=2, workers=2, progress=False, log=lines.append)
    assert any("flickr_metadata.csv (found in the dataset's root)" in line for line in lines)
    assert report["unreadable_folders"] == [f"{hidden_folder}: Permission denied"]
    joined = report["photo_metadata"]
    assert joined["rows"] == 996 and joined["photos_matched"] == len(expected) == report["photos"]
    assert joined["photos_without_row"] == joined["photos_without_photo_id"] == joined["nsid_disagreements"] == 0
    assert any(f"{len(expected)} photos matched one of its 996 rows, 0 had none" in line for line in lines)
    assert report["indexed"] == len(expected)  # every sample photo has a usable face

    rows = megaface_flickr_rows(shared_data)
    meta = store.Metadata(tmp_path / "idx")
    stored = meta.lookup(list(range(report["indexed"])))
    assert {e.photo: (e.identity, e.nsid, e.photo_id) for e in stored.values()} == {
        p: (a, a, megaface_photo_id(p)) for p, a in expected.items()
    }
    for e in stored.values():
        flickr_row = rows[e.photo_id]
        assert (e.nsid, e.licence, e.date_taken) == (
            flickr_row["nsid"],
            flickr_row["licence"],
            flickr_row["date_taken"],
        )
    account = next(a for a in sorted(set(expected.values())) if list(expected.values()).count(a) >= 4)
    mine = sorted(p for p, a in expected.items() if a == account)
    one = megaface_photo_id(mine[1])
    for text in (account, one, f"https://www.flickr.com/photos/{account}/{one}/"):
        found = flickr.find(meta, flickr.parse_flickr_query(text))
        assert sorted(e.photo for _, e in found.photos) == mine and found.total == len(mine)
    assert flickr.find(meta, flickr.FlickrQuery(nsid=hidden)).total == 0
    meta.close()
    assert not (tmp_path / "idx" / photo_metadata.TABLE_FILE).exists()  # the join's table is no part of the index

    # megapixels search: each result carries its provenance, and it travels on the wire
    probe = dataset / mine[0]
    assert cli.main(["search", str(probe), "--index", str(tmp_path / "idx"), "--top-k", "3"]) == 0
    best = json.loads(capsys.readouterr().out)[0]
    first = rows[megaface_photo_id(mine[0])]
    assert best["photo"] == mine[0] and best["distance"] < 0.01
    assert (best["nsid"], best["photo_id"], best["licence"], best["date_taken"]) == (
        account,
        megaface_photo_id(mine[0]),
        first["licence"],
        first["date_taken"],
    )
    result = Result(**best)
    message = Matches(Header(1, 1, "reducer", 1), 7, 1, [result], False, [], 12.0)
    assert decode(encode(message)).results == [result]

    # the same photos from a CSV manifest elsewhere, with --photo-metadata: nothing is described again
    listed.refuse = ()
    elsewhere = tmp_path / "lists"
    elsewhere.mkdir()
    shutil.move(dataset / "flickr_metadata.csv", elsewhere / "flickr.csv")
    (dataset / "loose").mkdir()
    for suffix in ("", ".json"):  # a copy outside the layout, so without a photo id: nothing to join on
        shutil.copy(dataset / (mine[0] + suffix), dataset / "loose" / f"portrait.jpg{suffix}")
    manifest = dataset / "faces.csv"
    with open(manifest, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "identity", "licence"])
        for p, a in expected.items():
            w.writerow([p, a, "licence from the manifest" if p == mine[2] else ""])
        w.writerow(["loose/portrait.jpg", "someone", ""])
    out = tmp_path / "idx2"
    out.mkdir()
    shutil.copy(tmp_path / "idx" / build.JOURNAL, out / build.JOURNAL)
    metadata = str(elsewhere / "flickr.csv")
    assert cli.main(["index", "build", str(manifest), "--out", str(out), "--photo-metadata", metadata]) == 0
    said = capsys.readouterr()
    assert "(given with --photo-metadata)" in said.err
    again = json.loads((out / "build_report.json").read_text())
    assert again["described_this_run"] == 0 and again["photos"] == len(expected) + 1
    assert again["photo_metadata"]["photos_matched"] == len(expected)
    assert again["photo_metadata"]["photos_without_photo_id"] == 1
    meta = store.Metadata(out)
    by_photo = {e.photo: e for _, e in meta.photos_of_account(account)}
    assert by_photo[mine[2]].licence == "licence from the manifest"  # the manifest's own value is kept
    assert by_photo[mine[1]].licence == rows[one]["licence"] and by_photo[mine[1]].date_taken == rows[one]["date_taken"]
    assert sorted(by_photo) == mine
    meta.close()
