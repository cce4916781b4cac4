"""Actor logic called directly, without sockets: reducer, matcher, printer, camera pacing."""

from __future__ import annotations

import dataclasses
import json
import math
import operator
import time

import numpy as np
import pytest
from PIL import Image

from actors.display import result_line
from actors.matcher import LayoutError, Matcher, serves
from actors.printer import Printer
from actors.printer.receipt import WRAP_CHARS, compose
from actors.reducer import Reducer, missing_shard_warning
from index import store
from messages import PrintJob, Result, encode
from tests import factories


@pytest.fixture
def reducer(demo_index):
    r = Reducer(factories.cfg(index={"path": str(demo_index)}))
    r.on_start()
    yield r
    r.on_stop()


def test_reducer_merges_when_every_shard_answered(reducer):
    assert reducer.handle(factories.query(1)) == []
    assert reducer.handle(factories.candidates(1, 0, [0, 1], [0.5, 0.7])) == []
    (out,) = reducer.handle(factories.candidates(1, 1, [200, 201], [0.4, 0.6]))
    assert [r.row for r in out.results] == [200, 0, 201, 1]
    assert [r.rank for r in out.results] == [1, 2, 3, 4]
    assert not out.partial and out.missing_shards == []
    assert all(r.identity and r.photo for r in out.results)


def test_reducer_marks_a_late_shard_partial_after_the_deadline(reducer):
    reducer.handle(factories.query(2))
    reducer.handle(factories.candidates(2, 1, [200], [0.4]))
    assert reducer.tick(time.monotonic_ns()) == []
    (out,) = reducer.tick(time.monotonic_ns() + 60_000_000)
    assert out.partial and out.missing_shards == [0] and [r.row for r in out.results] == [200]
    assert reducer.handle(factories.candidates(2, 0, [0], [0.1])) == []  # too late: counted, not re-published
    assert reducer.stats["candidates.after_close"] == 1


def test_reducer_accepts_shards_that_beat_the_query(reducer):
    reducer.handle(factories.candidates(3, 0, [0], [0.5]))
    (out,) = reducer.handle(factories.candidates(3, 1, [200], [0.4]))
    assert not out.partial
    assert reducer.handle(factories.query(3)) == []  # the query itself arrives last: nothing re-opened
    assert reducer.pending == {}


def test_reducer_names_a_shard_that_never_answers_and_counts_it(reducer, caplog):
    for qid in (20, 21):
        reducer.handle(factories.query(qid))
        reducer.handle(factories.candidates(qid, 0, [0], [0.5]))
    caplog.set_level("WARNING", logger=reducer.name)
    closed = reducer.tick(time.monotonic_ns() + 60_000_000)
    assert [m.missing_shards for m in closed] == [[1], [1]]
    assert reducer.stats["shard1.missing"] == 2 and "shard0.missing" not in reducer.stats
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1, "logged once per shard and period, not once per query"
    assert warnings[0].startswith("shard 1 of 2 has answered no query yet") and "matcher.1" in warnings[0]


def test_reducer_drops_candidates_of_another_index(reducer):
    reducer.handle(factories.query(30))
    assert reducer.handle(factories.candidates(30, 2, [0], [0.1], n_shards=3)) == []
    assert reducer.stats["candidates.wrong_index"] == 1
    assert 2 not in reducer.pending[30].answers


def test_missing_shard_warning_names_the_matcher_that_serves_it():
    text = missing_shard_warning(2, 3, 2, None, 7)
    assert text.startswith("shard 2 of 3 has answered no query yet (7 partial results so far)")
    assert "matcher.1's (search.matchers = 2" in text and "honcho start -c matcher=2" in text
    later = missing_shard_warning(1, 3, 2, 12.34, 40)
    assert "last answer came 12.3 s ago" in later and "matcher.2's" in later
    assert "one matcher serves every shard" in missing_shard_warning(1, 2, 1, None, 1)


@pytest.mark.parametrize(
    ("name", "matchers", "n_shards", "expected"),
    [
        ("matcher.1", 1, 2, [0, 1]),  # plain `honcho start`: every shard
        ("matcher.1", 1, 3, [0, 1, 2]),
        ("matcher", 1, 1, [0]),  # started by hand
        ("matcher.1", 2, 3, [0, 2]),
        ("matcher.2", 2, 3, [1]),
        ("matcher.2", 2, 2, [1]),
        ("matcher.3", 3, 7, [2, 5]),
    ],
)
def test_matchers_split_the_shards_k_mod_m(name, matchers, n_shards, expected):
    assert serves(name, {}, matchers, n_shards) == expected


def test_every_shard_is_served_exactly_once_by_any_layout():
    for n_shards in range(1, 9):
        for matchers in range(1, n_shards + 1):
            served = [k for n in range(1, matchers + 1) for k in serves(f"matcher.{n}", {}, matchers, n_shards)]
            assert sorted(served) == list(range(n_shards)), (n_shards, matchers)


def test_a_layout_that_would_leave_a_shard_unserved_refuses_naming_the_numbers():
    with pytest.raises(LayoutError) as e:
        serves("matcher.2", {}, 1, 3)  # `honcho start -c matcher=2` without search.matchers = 2
    assert str(e.value) == (
        "matcher.2 of 1: set search.matchers = 2 (MEGAPIXELS_MATCHERS=2) to run 2 matcher processes, "
        "or start one matcher: it serves all 3 shards"
    )
    with pytest.raises(LayoutError, match=r"matcher\.3 of 3 would serve no shard: the index has 2 shards"):
        serves("matcher.3", {}, 3, 2)
    with pytest.raises(LayoutError, match=r"the index has 2 shards \(0 to 1\), not \[2\]"):
        serves("matcher.1", {"MEGAPIXELS_SHARD": "1,2"}, 1, 2)
    with pytest.raises(LayoutError, match="expected shard numbers"):
        serves("matcher.1", {"MEGAPIXELS_SHARD": "one"}, 1, 2)
    assert serves("matcher.5", {"MEGAPIXELS_SHARD": "3,1"}, 1, 4) == [1, 3]  # named outright (another host)


def test_rows_with_a_nan_or_infinite_distance_never_reach_the_wire_or_the_json(reducer, demo_index, monkeypatch):
    """A damaged shard row (NaN distance) is left out by the matcher; should one reach the reducer
    anyway (the codec refuses it on the wire) the gallery leaves it out; the headless display's
    JSON is strict and refuses a NaN outright."""
    monkeypatch.setenv("MEGAPIXELS_SHARD", "0")
    m = Matcher(factories.cfg(index={"path": str(demo_index)}), name="matcher.1")
    m.on_start()
    rows = np.array([[3, 1, 4, 0, 2]])
    shard = m.shards[0]
    monkeypatch.setattr(
        shard.index, "search", lambda q, k: (rows, np.array([[0.3, np.nan, 0.5, np.inf, 0.6]], np.float32))
    )
    (answer,) = m.handle(factories.query(21))
    assert answer.rows == [3, 4, 2] and m.stats["candidates.not_finite_dropped"] == 2
    encode(answer)  # sendable

    reducer.handle(factories.query(22))
    reducer.handle(factories.candidates(22, 0, [0, 1, 2], [0.5, math.nan, -1.0]))
    (out,) = reducer.handle(factories.candidates(22, 1, [200, 201], [math.inf, 0.4]))
    assert [r.row for r in out.results] == [201, 0] and reducer.stats["matches.not_finite_dropped"] == 3
    assert all(math.isfinite(r.distance) for r in out.results)
    assert json.loads(result_line(out))["results"][0]["row"] == 201
    broken = dataclasses.replace(out, results=[dataclasses.replace(out.results[0], distance=math.nan)])
    with pytest.raises(ValueError, match="JSON"):
        result_line(broken)


def test_matcher_answers_with_global_rows(demo_index, monkeypatch):
    monkeypatch.delenv("MEGAPIXELS_SHARD", raising=False)
    m = Matcher(factories.cfg(index={"path": str(demo_index)}, search={"matchers": 2}), name="matcher.2")
    m.on_start()
    (shard,) = m.shards
    stored, _ = store.open_shard(demo_index, 1)
    (out,) = m.handle(factories.query(9, np.asarray(stored[0], np.float32)))
    assert out.shard == shard.number == 1 and out.n_shards == 2
    assert out.rows[0] == shard.first_row and out.distances[0] < 1e-3
    assert len(out.rows) == 5


def test_one_matcher_serves_every_shard_as_separate_matchers_would(demo_index_3, monkeypatch):
    monkeypatch.delenv("MEGAPIXELS_SHARD", raising=False)
    stored, first = store.open_shard(demo_index_3, 2)
    queries = [factories.query(40 + i, np.asarray(stored[i], np.float32) + 0.01) for i in range(5)]
    one = Matcher(factories.cfg(index={"path": str(demo_index_3)}), name="matcher.1")
    one.on_start()
    assert [s.number for s in one.shards] == [0, 1, 2] and one.pool is not None
    together = one.handle_batch(queries)
    one.on_stop()
    assert [(c.query_id, c.shard) for c in together] == [(q.query_id, k) for q in queries for k in (0, 1, 2)]
    separate = []
    for n in (1, 2, 3):
        m = Matcher(factories.cfg(index={"path": str(demo_index_3)}, search={"matchers": 3}), name=f"matcher.{n}")
        m.on_start()
        separate += m.handle_batch(queries)
    key = operator.attrgetter("query_id", "shard")
    assert [(key(c), c.rows) for c in sorted(together, key=key)] == [
        (key(c), c.rows) for c in sorted(separate, key=key)
    ]
    assert together[2].rows[0] == first  # query 40 is row 0 of shard 2


def test_matcher_answers_a_batch_like_single_queries(demo_index, monkeypatch):
    monkeypatch.delenv("MEGAPIXELS_SHARD", raising=False)
    m = Matcher(factories.cfg(index={"path": str(demo_index)}), name="matcher.1")
    m.on_start()
    stored, _ = store.open_shard(demo_index, 0)
    queries = [factories.query(100 + i, np.asarray(stored[i * 7], np.float32)) for i in range(6)]
    queries[2] = dataclasses.replace(queries[2], k=3)
    batch = m.handle_batch(queries)  # one matcher, both shards: one answer per query and shard
    assert [(c.query_id, c.shard) for c in batch] == [(100 + i, k) for i in range(6) for k in (0, 1)]
    for q, both in zip(queries, zip(batch[::2], batch[1::2], strict=True), strict=True):
        for c, alone in zip(both, m.handle(q), strict=True):
            assert len(c.rows) == q.k and c.rows == alone.rows and c.shard == alone.shard
            assert np.allclose(c.distances, alone.distances, atol=1e-3)


RESULTS = [
    Result(1, "barack_obama", 0.35, "barack_obama/obama.jpg", 1),
    Result(2, "Joseph_Biden", 0.62, "Joseph_Biden/Joseph_Biden_0001.jpg", 2),
]


def test_receipt_text_names_the_match_and_the_dataset():
    import datetime as dt

    receipt = compose(RESULTS, 0.6, dt.datetime(2026, 11, 26, 10, 0))
    text = receipt.text()
    assert "barack obama" in text.lower() and "0.350" in text and "close match" in text
    assert "is not\nstored" in text and "2026-11-26 10:00" in text
    assert all(len(line) <= WRAP_CHARS for line in receipt.lines)


def test_printer_spools_a_receipt_image(tmp_path):
    p = Printer(factories.cfg(printer={"spool_dir": str(tmp_path / "spool")}))
    p.on_start()
    (reply,) = p.handle(PrintJob(factories.header(), 77, RESULTS))
    assert reply.ok and reply.query_id == 77
    image = Image.open(reply.detail)
    assert image.width == 576 and image.height > 200
    assert np.asarray(image).min() == 0  # black text on white


def test_printer_reports_an_unwritable_spool(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    p = Printer(factories.cfg(printer={"spool_dir": str(blocker / "spool")}))
    p.on_start()
    (reply,) = p.handle(PrintJob(factories.header(), 78, RESULTS))
    assert not reply.ok and "spool folder" in reply.detail


# The camera's tests are in tests/test_camera.py.
