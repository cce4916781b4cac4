"""The session state machine without a window: every transition, the timeouts, visitors coming and going."""

from __future__ import annotations

import gc
import weakref

import pytest

from index import scores
from messages import Header, Matches, Result
from ui_kivy.session import NS, Phase, Session, Timing

T = Timing(stable_s=1.0, gap_s=0.5, leave_s=2.0, search_timeout_s=5.0, results_hold_s=10.0)
CLOSE = [
    Result(1, "barack_obama", 0.35, "barack_obama/a.jpg", 1),
    Result(2, "Ari_Fleischer", 0.70, "Ari_Fleischer/b.jpg", 2),
]
FAR = [Result(1, "Ari_Fleischer", 0.71, "Ari_Fleischer/b.jpg", 2)]


def s(seconds: float) -> int:
    return int(seconds * NS)


def matches(sent_at_s: float, captured_at_s: float, results: list[Result] | None = None, query_id: int = 1) -> Matches:
    latency_ms = (sent_at_s - captured_at_s) * 1000
    header = Header(query_id, s(sent_at_s), "reducer", query_id)
    return Matches(header, query_id, s(captured_at_s), results or CLOSE, False, [], latency_ms)


def faces_every(session: Session, start_s: float, stop_s: float, step_s: float = 0.1) -> float:
    """A face in every frame from start_s to stop_s; returns the last time."""
    t = start_s
    while t <= stop_s + 1e-9:
        session.on_face(s(t))
        session.tick(s(t))
        t = round(t + step_s, 6)
    return round(t - step_s, 6)


def visitor_with_results(results: list[dict] | None = None) -> Session:
    session = Session(threshold=0.6, timing=T)
    faces_every(session, 100.0, 101.0)
    assert session.phase is Phase.SEARCHING
    assert session.on_matches(s(101.1), matches(101.1, 100.9, results))
    return session


def test_attract_present_searching_results_print_and_leave() -> None:
    session = Session(threshold=0.6, timing=T)
    assert session.phase is Phase.ATTRACT and not session.can_print
    session.on_face(s(100.0))
    assert session.phase is Phase.PRESENT
    faces_every(session, 100.1, 100.9)
    assert session.phase is Phase.PRESENT  # not stable for stable_s yet
    session.on_face(s(101.0))
    assert session.phase is Phase.SEARCHING
    assert session.on_matches(s(101.2), matches(101.2, 101.0))
    assert session.phase is Phase.RESULTS and session.results is not None and session.can_print
    printed = session.request_print(s(102.0))
    assert printed is not None and printed.results == CLOSE
    assert session.phase is Phase.PRINTING and not session.can_print
    assert session.request_print(s(102.1)) is None  # one job at a time
    session.on_print_done(s(103.0), ok=True)
    assert session.phase is Phase.RESULTS and not session.can_print  # one receipt per visitor
    faces_every(session, 103.0, 104.0)
    session.tick(s(104.0 + 1.9))
    assert session.phase is Phase.RESULTS
    session.tick(s(104.0 + 2.0))
    assert session.phase is Phase.ATTRACT and session.results is None and session.last_reset == "the visitor left"


def test_a_flickering_face_must_be_stable_before_the_search() -> None:
    session = Session(threshold=0.6, timing=T)
    faces_every(session, 100.0, 100.8)
    session.on_face(s(101.5))  # a 0.7 s gap (> gap_s): stability starts again
    assert session.phase is Phase.PRESENT
    faces_every(session, 101.6, 102.4)
    assert session.phase is Phase.PRESENT
    session.on_face(s(102.5))
    assert session.phase is Phase.SEARCHING


def test_a_face_that_goes_away_before_it_is_stable_returns_to_attract() -> None:
    session = Session(threshold=0.6, timing=T)
    session.on_face(s(100.0))
    session.tick(s(101.9))
    assert session.phase is Phase.PRESENT
    session.tick(s(102.0))
    assert session.phase is Phase.ATTRACT and session.visit is None


def test_visitor_leaving_mid_search_drops_the_late_result() -> None:
    session = Session(threshold=0.6, timing=T)
    last = faces_every(session, 100.0, 101.2)
    assert session.phase is Phase.SEARCHING
    session.tick(s(last + 2.0))
    assert session.phase is Phase.ATTRACT and session.last_reset == "the visitor left"
    assert not session.on_matches(s(last + 2.1), matches(last + 2.1, 101.0))
    assert session.results is None and session.phase is Phase.ATTRACT


def test_search_timeout_resets_and_waits_for_the_visitor_to_leave() -> None:
    session = Session(threshold=0.6, timing=T)
    last = faces_every(session, 100.0, 106.0)  # searching from 101.0; no result by 106.0
    assert session.phase is Phase.ATTRACT and session.last_reset == "no result in time"
    faces_every(session, last + 0.1, last + 3.0)  # still standing there: no new visit
    assert session.phase is Phase.ATTRACT and session.visits == 1
    session.on_face(s(last + 3.0 + 2.0))  # gone for leave_s, then someone arrives
    assert session.phase is Phase.PRESENT and session.visits == 2


def test_results_are_held_then_reset() -> None:
    session = visitor_with_results()
    faces_every(session, 101.2, 111.0)
    assert session.phase is Phase.RESULTS
    session.on_face(s(111.1))
    session.tick(s(111.1))
    assert session.phase is Phase.ATTRACT and session.last_reset == "results shown long enough"
    assert session.await_leave


def test_second_visitor_never_sees_the_first_visitors_results() -> None:
    session = visitor_with_results()
    first = session.results
    session.tick(s(103.2))  # visitor A left (last face at 101.0)
    assert session.phase is Phase.ATTRACT
    last = faces_every(session, 104.0, 105.0)  # visitor B, stable
    assert session.phase is Phase.SEARCHING and session.results is None
    # A's result list still in flight (captured before B arrived) is refused...
    assert not session.on_matches(s(last + 0.1), matches(last + 0.1, 103.0, FAR, query_id=9))
    assert session.results is None and session.phase is Phase.SEARCHING
    # ...B's own is shown.
    assert session.on_matches(s(last + 0.2), matches(last + 0.2, 104.5, FAR, query_id=10))
    assert session.results is not first and session.results.query_id == 10


def test_print_button_only_above_the_threshold_and_failure_allows_retry() -> None:
    far = visitor_with_results(FAR)
    assert far.phase is Phase.RESULTS and not far.can_print and far.request_print(s(102)) is None
    close = visitor_with_results(CLOSE)
    assert close.request_print(s(102)) is not None
    close.on_print_done(s(103), ok=False)
    assert close.phase is Phase.RESULTS and close.can_print


def test_leaving_while_printing_resets_and_a_late_reply_is_ignored() -> None:
    session = visitor_with_results()
    assert session.request_print(s(101.5)) is not None
    session.tick(s(103.0))
    assert session.phase is Phase.ATTRACT
    session.on_print_done(s(103.5), ok=True)
    assert session.phase is Phase.ATTRACT and session.visit is None


def test_matches_before_the_search_are_ignored() -> None:
    session = Session(threshold=0.6, timing=T)
    assert not session.on_matches(s(100), matches(100, 99.9))
    session.on_face(s(100.0))
    assert not session.on_matches(s(100.1), matches(100.1, 100.0))  # PRESENT: not searching yet
    assert session.phase is Phase.PRESENT


def test_memory_of_the_visitor_is_dropped_at_reset() -> None:
    session = visitor_with_results()
    session.visit.extra["crop"] = bytearray(1000)
    results = weakref.ref(session.results)
    visit = weakref.ref(session.visit)
    session.tick(s(103.5))
    gc.collect()
    assert session.phase is Phase.ATTRACT
    assert results() is None and visit() is None, "something still holds the previous visitor's data"


def test_captured_time_from_latency() -> None:
    assert matches(10.0, 9.75).captured_ns == s(9.75)


@pytest.mark.parametrize(
    ("result", "percent", "verdict", "provisional"),
    [
        ({"distance": 0.6}, 50, "close match", True),
        ({"distance": 0.40}, 98, "close match", True),
        ({"distance": 0.75}, 5, "look-alike", True),
        ({"distance": 0.75, "p_same": 0.873, "verdict": "likely you"}, 87, "likely you", False),
        ({"distance": 0.5, "p_same": 0.2}, 20, "look-alike", False),
        ({"distance": 0.5, "p_same": 7.0}, 88, "close match", True),  # nonsense p_same: ignored
    ],
)
def test_confidence(result: dict, percent: int, verdict: str, provisional: bool) -> None:
    c = scores.confidence(Result(1, "someone", photo="someone/1.jpg", row=1, **result), 0.6)
    assert (c.percent, c.verdict, c.provisional) == (percent, verdict, provisional)
    assert scores.confidence_text(c).endswith("(provisional)") == provisional


def test_stability_counts_capture_times_when_the_display_reads_frames_in_bursts() -> None:
    session = Session(threshold=0.6, timing=T)
    for burst in range(3):  # a display drawing at ~1.5 frames/s reads 7 frames per poll
        now = 100.0 + 0.7 * (burst + 1)
        for i in range(7):
            session.on_face(s(now), captured=s(100.0 + 0.1 * (7 * burst + i)))
        session.tick(s(now))
    assert session.phase is Phase.SEARCHING
