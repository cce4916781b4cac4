"""Actor logic called directly, without sockets: reducer, matcher, printer, camera pacing."""

from __future__ import annotations

import dataclasses
import json
import math
import time

import numpy as np
import pytest
from PIL import Image

from actors.display import result_line
from actors.matcher import Matcher, shard_number
from actors.printer import Printer
from actors.printer.receipt import WRAP_CHARS, compose
from actors.reducer import Reducer
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


def test_rows_with_a_nan_or_infinite_distance_never_reach_the_wire_or_the_json(reducer, demo_index, monkeypatch):
    """A damaged shard row (NaN distance) is left out by the matcher; should one reach the reducer
    anyway (the codec refuses it on the wire) the gallery leaves it out; the headless display's
    JSON is strict and refuses a NaN outright."""
    monkeypatch.delenv("MEGAPIXELS_SHARD", raising=False)
    m = Matcher(factories.cfg(index={"path": str(demo_index)}), name="matcher.1")
    m.on_start()
    rows = np.array([[3, 1, 4, 0, 2]])
    monkeypatch.setattr(m.index, "search", lambda q, k: (rows, np.array([[0.3, np.nan, 0.5, np.inf, 0.6]], np.float32)))
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
    m = Matcher(factories.cfg(index={"path": str(demo_index)}), name="matcher.2")
    m.on_start()
    first_row_of_shard_1 = m.first_row
    stored, _ = store.open_shard(demo_index, 1)
    (out,) = m.handle(factories.query(9, np.asarray(stored[0], np.float32)))
    assert out.shard == 1 and out.n_shards == 2
    assert out.rows[0] == first_row_of_shard_1 and out.distances[0] < 1e-3
    assert len(out.rows) == 5


def test_matcher_answers_a_batch_like_single_queries(demo_index, monkeypatch):
    monkeypatch.delenv("MEGAPIXELS_SHARD", raising=False)
    m = Matcher(factories.cfg(index={"path": str(demo_index)}), name="matcher.1")
    m.on_start()
    stored, _ = store.open_shard(demo_index, 0)
    queries = [factories.query(100 + i, np.asarray(stored[i * 7], np.float32)) for i in range(6)]
    queries[2] = dataclasses.replace(queries[2], k=3)
    batch = m.handle_batch(queries)
    assert [c.query_id for c in batch] == [100, 101, 102, 103, 104, 105]
    for q, c in zip(queries, batch, strict=True):
        (alone,) = m.handle(q)
        assert len(c.rows) == q.k and c.rows == alone.rows
        assert np.allclose(c.distances, alone.distances, atol=1e-3)


def test_shard_number_from_honcho_name_or_environment():
    assert shard_number("matcher.1", {}) == 0
    assert shard_number("matcher.3", {}) == 2
    assert shard_number("matcher", {"MEGAPIXELS_SHARD": "4"}) == 4


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
