"""How many strangers look like you (index/lookalikes.py): the counts, the words, the file, the wire.

The held-out test fits the table on half of the LFW people (the cached index-builder descriptors of
benchmarks/lfw_descriptors.py; skipped with the reason when they are not cached) and checks it on the
other half's photos as strangers among the other half's people, as benchmarks/accuracy/lookalikes.py
does for ACCURACY.md.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import re

import msgpack
import numpy as np
import pytest

from index import calibration, lookalikes
from index.gallery import Gallery
from messages import DecodeError, Matches, PrintJob, decode, encode
from tests import factories

SHIPPED = calibration.read(calibration.DEFAULT)
TABLE = SHIPPED.lookalikes
DEMO_PEOPLE = 253


def expected(d: float, people: int = DEMO_PEOPLE, photos: float = 1.0) -> lookalikes.Expected:
    return lookalikes.expected(TABLE, d, people, photos)


# --- the numbers ---------------------------------------------------------------------------------


def test_the_shipped_calibration_has_the_table_with_a_wide_spread():
    assert TABLE is not None and TABLE.percentiles == lookalikes.PERCENTILES
    low, mid, high = TABLE.percentiles
    assert low <= 5 and mid == 50 and high >= 95  # the 90th left most faces with close look-alikes out
    assert TABLE.photos_factor[0] == (1.0, 1.0) and 2.0 < lookalikes.photos_factor(TABLE, 6) < 4.0


def test_more_people_are_expected_farther_away_in_bigger_datasets_and_with_more_photos():
    distances = np.round(np.arange(0.0, 1.6, 0.01), 2)
    for people in (1, 30, DEMO_PEOPLE, 5_701, 672_057):
        counts = [expected(float(d), people) for d in distances]
        for part in ("low", "typical", "high"):
            values = [getattr(c, part) for c in counts]
            assert all(a <= b for a, b in itertools.pairwise(values)), (people, part)
        assert all(c.low <= c.typical <= c.high <= people for c in counts)
        assert counts[-1].typical == people  # everyone is within 1.5
    for d in (0.35, 0.45, 0.55, 0.65):
        sizes = [expected(d, n).typical for n in (30, 253, 5_701, 672_057, 10_000_000)]
        assert all(a < b for a, b in itertools.pairwise(sizes)), (d, sizes)
        photos = [expected(d, 10_000, m).typical for m in (1, 2, 4, 7, 10)]
        assert all(a < b for a, b in itertools.pairwise(photos)), (d, photos)
    assert expected(0.02).high < 1e-6 and expected(0.0).typical >= 0  # below the grid: the first segment


def test_a_typical_stranger_finds_about_one_look_alike_where_their_best_match_is():
    """Where a typical face's nearest other person sits (measured: the mean nearest-person distance of LFW
    probes, best_impostor), a dataset of that size holds about 1 person by chance."""
    for rows, mean, _ in SHIPPED.best_impostor:
        if 100 <= rows <= 5_749:  # real LFW people, one photo each
            assert 0.2 < expected(mean, int(rows)).typical < 3.0, (rows, mean)


@pytest.mark.parametrize(
    ("x", "nearest", "down", "up"),
    [
        (0.0, 0, 0, 0),
        (0.3, 0, 0, 1),
        (0.5, 1, 0, 1),
        (1.0, 1, 1, 1),
        (2.6, 3, 2, 3),
        (9.6, 10, 9, 10),
        (14.2, 14, 14, 15),
        (27.0, 30, 20, 30),
        (151.0, 150, 150, 160),
        (340.0, 300, 300, 400),
        (980.0, 1_000, 900, 1_000),
        (18_400.0, 18_000, 18_000, 19_000),
        (672_056.6, 700_000, 600_000, 700_000),
    ],
)
def test_rounding_keeps_one_or_two_significant_figures_and_widens_ranges(x, nearest, down, up):
    assert lookalikes.round_count(x) == nearest
    assert lookalikes.round_down(x) == down <= x
    assert lookalikes.round_up(x) == up >= x


def words(low: float, typical: float, high: float, people: int = 672_057) -> str:
    return lookalikes.sentence(lookalikes.Expected(low, typical, high, people))


def test_the_sentence_says_fewer_than_one_about_n_and_the_range_in_words():
    assert words(0.001, 0.01, 0.2, 253) == (
        "Fewer than 1 person in this dataset of 253 people would be expected to look at least this much like you "
        "by chance."
    )
    assert words(0.001, 0.3, 5.2, 253).endswith("by chance (up to 6 for faces with many look-alikes).")
    assert words(0.2, 0.7, 66.0).startswith("About 1 person in this dataset of 672,057 people would be expected")
    assert words(0.2, 0.7, 66.0).endswith("(from fewer than 1 to 70, depending on the face).")
    assert words(130.0, 340.0, 980.0) == (
        "About 300 people in this dataset of 672,057 people would be expected to look at least this much like you "
        "by chance (somewhere between 130 and 1,000, depending on the face)."
    )
    assert words(1.0, 1.0, 1.0).endswith("like you by chance.")  # no range when both ends round alike
    assert words(1.2, 1.3, 1.4).endswith("(somewhere between 1 and 2, depending on the face).")
    assert words(600_000.0, 650_000.0, 672_057.0).startswith("Nearly all of the people")
    assert words(0.0, 0.0, 0.0, 1).startswith("Fewer than 1 person in this dataset of 1 person")
    for e in (expected(d, n, m) for d in (0.3, 0.45, 0.55, 0.7) for n, m in ((253, 1.02), (672_057, 7.07))):
        low, typical, high = lookalikes.stated(e)
        assert low <= typical <= high <= e.people
        numbers = [int(n.replace(",", "")) for n in re.findall(r"\d[\d,]*", lookalikes.sentence(e))]
        assert numbers[0] in (1, typical) and e.people in numbers  # "fewer than 1" or "about N", and the size
        assert len(lookalikes.sentence(e)) <= 256  # two lines on the screen, well inside the wire's limit


def test_the_visitor_s_own_next_people_keep_the_high_end_honest():
    """A face with many close look-alikes (the next 4 people of its own top 5 at 0.46-0.48) is never told that
    even faces with many look-alikes would have fewer than 1 person at its best match; a typical face is not
    changed by neighbours the table already expects."""
    packed = (0.46, 0.47, 0.47, 0.48)
    alone, seen = expected(0.43), lookalikes.expected(TABLE, 0.43, DEMO_PEOPLE, 1.0, packed)
    assert lookalikes.stated(alone) == (0, 0, 0) and lookalikes.stated(seen)[2] >= 1
    assert (seen.low, seen.typical) == (alone.low, alone.typical) and seen.high > alone.high
    assert lookalikes.sentence(seen).endswith("(up to 1 for faces with many look-alikes).")
    assert lookalikes.expected(TABLE, 0.43, DEMO_PEOPLE, 1.0, (0.62, 0.64, 0.66, 0.67)) == alone
    assert lookalikes.expected(TABLE, 0.43, DEMO_PEOPLE, 1.0, (0.0, 0.0, 0.0, 0.0)).high == DEMO_PEOPLE  # capped


def test_a_close_match_is_more_than_chance_and_a_far_one_is_not():
    assert lookalikes.sentence(expected(0.33)).startswith("Fewer than 1 person in this dataset of 253 people")
    assert "(" not in lookalikes.sentence(expected(0.33))  # not even for faces with many look-alikes
    far = lookalikes.sentence(expected(0.62))
    assert far.startswith("About ") and "depending on the face" in far


# --- the file ------------------------------------------------------------------------------------


def test_a_file_without_the_table_still_loads_and_the_line_is_left_out(tmp_path, demo_index):
    raw = json.loads(calibration.to_json(SHIPPED))
    del raw["lookalikes"]
    for version in (2, 3):
        (tmp_path / calibration.FILENAME).write_text(json.dumps(raw | {"format_version": version}))
        assert calibration.load(tmp_path).lookalikes is None
    table = json.loads(calibration.to_json(SHIPPED))["lookalikes"]
    (tmp_path / calibration.FILENAME).write_text(json.dumps(raw | {"format_version": 2, "lookalikes": table}))
    with pytest.raises(calibration.CalibrationError, match="a look-alike table needs format_version 3"):
        calibration.load(tmp_path)

    gallery = Gallery(demo_index)
    try:
        obama = [factories.result(distance=0.33)]
        line = gallery.lookalikes(obama)
        assert line.startswith(f"Fewer than 1 person in this dataset of {gallery.manifest.identities} people")
        assert gallery.lookalikes([]) == ""
        gallery.calibration = dataclasses.replace(gallery.calibration, lookalikes=None)
        assert gallery.lookalikes(obama) == ""
    finally:
        gallery.close()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"percentiles": [10, 40, 90]}, "percentiles must be"),
        ({"distance": [0.1]}, "distance needs 2 or more"),
        ({"log10_share": [[0.0]]}, "needs 3 curves"),
        ({"photos_factor": [[2, 1.5]]}, "must start with"),
        ({"photos_factor": [[1, 1], [4, 2.2], [2, 1.5]]}, "increasing photo counts"),
        ({"colour": 1}, "lookalikes: .*colour"),
    ],
)
def test_unusable_tables_are_refused_with_the_reason(tmp_path, change, message):
    raw = json.loads(calibration.to_json(SHIPPED))
    raw["lookalikes"] |= change
    (tmp_path / calibration.FILENAME).write_text(json.dumps(raw))
    with pytest.raises(calibration.CalibrationError, match=message):
        calibration.load(tmp_path)


def test_curves_out_of_order_or_falling_are_refused():
    low, mid, high = TABLE.log10_share
    with pytest.raises(lookalikes.LookalikesError, match="ordered low <= 50th <= high"):
        dataclasses.replace(TABLE, log10_share=(high, mid, low))
    with pytest.raises(lookalikes.LookalikesError, match="non-decreasing in distance"):
        dataclasses.replace(TABLE, log10_share=(low[::-1], mid[::-1], high[::-1]))


def test_the_table_and_its_recorded_checks_are_the_benchmark_s():
    """The shipped table is what benchmarks/accuracy/lookalikes.py --store wrote beside its results."""
    from tests.conftest import PROJECT

    recorded = json.loads((PROJECT / "benchmarks" / "results" / "lookalikes.json").read_text())
    assert recorded["table"]["log10_share"] == [list(c) for c in TABLE.log10_share]
    assert [tuple(r) for r in recorded["photos_factor"]] == list(TABLE.photos_factor)
    for half in recorded["held_out"]:
        every = half["table"][-1]["at_best_match"]  # every held-out person in the gallery
        assert every["states_range_holding_1"] > 0.95 and every["packed_says_fewer_than_1"] < 0.05
    assert "lookalikes" in SHIPPED.source


# --- the wire ------------------------------------------------------------------------------------


def test_the_sentence_travels_to_the_display_and_the_printer():
    line = lookalikes.sentence(expected(0.45, 672_057, 7.07))
    m = factories.matches([factories.result()])
    m = dataclasses.replace(m, lookalikes=line)
    assert decode(encode(m)) == m
    job = PrintJob(factories.header(), 5, m.results, b"", lookalikes=line)
    assert decode(encode(job)) == job
    assert decode(encode(dataclasses.replace(m, lookalikes=""))).lookalikes == ""
    with pytest.raises(DecodeError, match="lookalikes: 513 exceeds the limit of 512"):
        decode(encode(dataclasses.replace(m, lookalikes="x" * 513)))
    topic, body = encode(m)
    with pytest.raises(DecodeError, match="lookalikes: expected str"):
        decode([topic, msgpack.packb(msgpack.unpackb(body) | {"lookalikes": 3})])
    old = {k: v for k, v in msgpack.unpackb(body).items() if k != "lookalikes"}  # a sender without the field
    with pytest.raises(DecodeError, match="missing field"):
        decode([topic, msgpack.packb(old)])
    assert isinstance(m, Matches)


def test_the_reducer_attaches_the_sentence_for_the_best_shown_match(demo_index):
    from actors.reducer import Reducer

    r = Reducer(factories.cfg(index={"path": str(demo_index)}))
    r.on_start()
    try:
        r.handle(factories.query(1))
        r.handle(factories.candidates(1, 0, [0, 1], [0.62, 0.7]))
        (out,) = r.handle(factories.candidates(1, 1, [200, 201], [0.58, 0.66]))
    finally:
        r.on_stop()
    people = r.gallery.manifest.identities
    nearest: dict[str, float] = {}
    for res in sorted(out.results, key=lambda res: res.distance):
        nearest.setdefault(res.identity, res.distance)
    best, *others = nearest.values()
    assert best == 0.58 and len(others) == 3
    assert out.lookalikes == lookalikes.sentence(lookalikes.expected(TABLE, 0.58, people, 259 / people, others))
    assert f"this dataset of {people} people" in out.lookalikes


# --- held out, on real LFW descriptors ---------------------------------------------------------


@pytest.fixture(scope="module")
def lfw_people():
    from benchmarks.accuracy import identify
    from benchmarks.accuracy import lookalikes as bench

    try:
        x, ids, photos = identify.load_descriptors("index-builder")
    except FileNotFoundError as e:
        pytest.skip(f"needs the cached LFW descriptors ({e})")
    return bench.people_of(x, ids, photos)


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_held_out_people_find_what_the_table_fitted_on_other_people_says(lfw_people):
    """Fitted on half the LFW people, checked on the other half (strangers among strangers): at a stranger's
    best match the stated range holds the truth (1 person: the best match) for most, the packed tenth included;
    at fixed distances it holds the direct count; and the typical count there is about 1."""
    from benchmarks.accuracy import lookalikes as bench

    p = lfw_people
    everyone = np.arange(len(p.names))
    fit_people, test_people = everyone[everyone % 2 == 0], everyone[everyone % 2 == 1]
    table, fit = bench.fit_table(p, fit_people, fit_people)
    assert fit["gallery_people"] == len(fit_people) - 1
    packed = bench.packed_people(p)
    rows = bench.agreement(p, table, test_people, packed, seed=1, sizes=(253,), distances=(0.55, 0.6))
    for row in rows:
        best = row["at_best_match"]
        assert best["states_range_holding_1"] > 0.95, row
        assert best["packed_states_range_holding_1"] > 0.85, row
        assert best["says_fewer_than_1_even_with_many_lookalikes"] < 0.03, row
        assert 0.3 < best["median_typical"] < 2.0, row
        for d in ("0.55", "0.60"):
            assert row[f"at_{d}"]["states_range_holding_count"] > 0.95, row
            e = lookalikes.Expected(*row[f"at_{d}"]["predicted"], row["gallery_people"])
            low, _, high = lookalikes.stated(e)
            assert low <= row[f"at_{d}"]["direct_median"] <= high
            assert math.isclose(e.typical, row[f"at_{d}"]["direct_median"], rel_tol=1.0, abs_tol=1.0), row
