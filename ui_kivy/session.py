"""The kiosk's session state machine: one visitor at a time, in plain Python (no Kivy, no sockets).

    ATTRACT --face seen--> PRESENT --face stable for stable_s--> SEARCHING --matches--> RESULTS
    RESULTS --print pressed (best match clears the threshold)--> PRINTING --reply--> RESULTS
    any phase --no face for leave_s (the visitor left)--> ATTRACT
    SEARCHING --no matches within search_timeout_s--> ATTRACT (waits for the visitor to leave)
    RESULTS --results_hold_s over--> ATTRACT (waits for the visitor to leave)

Everything about a visitor lives in one :class:`Visit` object; a reset drops it, so the results
(and anything else the display kept for them) can be garbage-collected at once. Matches are only
accepted for the current visit: their camera frame must have been captured after the visitor's
face first appeared, so a result computed for the previous visitor is never shown to the next.
After a timeout the same person is still standing there; the machine then waits until nobody
has been seen for ``leave_s`` before it starts a new visit, instead of searching them again.

Times are ``time.monotonic_ns()`` values passed in by the caller, so tests drive the clock.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from index.scores import clears_threshold
from messages import Matches

NS = 1_000_000_000


class Phase(enum.Enum):
    ATTRACT = "attract"
    PRESENT = "present"
    SEARCHING = "searching"
    RESULTS = "results"
    PRINTING = "printing"


@dataclass(frozen=True)
class Timing:
    stable_s: float = 0.8  # a face must stay this long before the search starts
    gap_s: float = 0.5  # a face missing for longer than this is no longer "stable"
    leave_s: float = 2.5  # no face for this long: the visitor has left
    search_timeout_s: float = 10.0  # no result this long after the search started: give up
    results_hold_s: float = 30.0  # results stay up this long, then the kiosk resets


@dataclass
class Visit:
    """Everything the kiosk holds about the current visitor; dropped as a whole at reset."""

    first_face_ns: int  # when the frame with their first face was captured (monotonic)
    stable_since_ns: int  # capture time of the first frame of the current unbroken run of faces
    search_started_ns: int = 0
    results_since_ns: int = 0
    results: Matches | None = None
    printed: bool = False
    extra: dict[str, Any] = field(default_factory=dict)  # the display's own per-visitor things


class Session:
    def __init__(self, threshold: float, timing: Timing | None = None):
        self.threshold = threshold
        self.timing = timing or Timing()
        self.phase = Phase.ATTRACT
        self.visit: Visit | None = None
        self.await_leave = False  # after a timeout: no new visit until nobody is seen for leave_s
        self.last_face_ns: int | None = None  # when the last face was seen (reading time)
        self.last_captured_ns: int | None = None  # when its frame was captured
        self.visits = 0
        self.last_reset = ""  # why the last visit ended, for logs and tests

    # --- events ---------------------------------------------------------------------------------

    def on_face(self, now_ns: int, captured: int | None = None) -> None:
        """The detector saw a visitor's face (in a frame captured at ``captured``, default now)."""
        captured = now_ns if captured is None else captured
        gap_ns = None if self.last_face_ns is None else now_ns - self.last_face_ns
        # Stability is judged on capture times: a busy display may read several frames at once.
        frame_gap_ns = None if self.last_captured_ns is None else captured - self.last_captured_ns
        self.last_face_ns, self.last_captured_ns = now_ns, captured
        t = self.timing
        if self.phase is Phase.ATTRACT:
            if self.await_leave and gap_ns is not None and gap_ns < t.leave_s * NS:
                return
            self.await_leave = False
            self.visit = Visit(first_face_ns=captured, stable_since_ns=captured)
            self.visits += 1
            self._go(Phase.PRESENT)
        elif self.phase is Phase.PRESENT and self.visit is not None:
            if frame_gap_ns is not None and frame_gap_ns > t.gap_s * NS:
                self.visit.stable_since_ns = captured
            elif captured - self.visit.stable_since_ns >= t.stable_s * NS:
                self.visit.search_started_ns = now_ns
                self._go(Phase.SEARCHING)

    def on_matches(self, now_ns: int, msg: Matches) -> bool:
        """A result list arrived; True when it was accepted for the current visitor."""
        visit = self.visit
        if self.phase is not Phase.SEARCHING or visit is None:
            return False
        if msg.captured_ns < visit.first_face_ns:
            return False  # computed from an earlier frame: possibly the previous visitor
        visit.results = msg
        visit.results_since_ns = now_ns
        self._go(Phase.RESULTS)
        return True

    def request_print(self, now_ns: int) -> Matches | None:
        """The print button: the results to print (phase PRINTING), or None when printing isn't allowed."""
        if not self.can_print:
            return None
        assert self.visit is not None
        self._go(Phase.PRINTING)
        return self.visit.results

    def on_print_done(self, now_ns: int, ok: bool) -> None:
        """The printer answered (or the display gave up waiting)."""
        if self.phase is not Phase.PRINTING or self.visit is None:
            return  # the visitor left meanwhile: nothing to update
        self.visit.printed = ok
        self._go(Phase.RESULTS)

    def tick(self, now_ns: int) -> None:
        """Timeouts: the visitor leaving, a search without answer, results held long enough."""
        t = self.timing
        if self.phase is Phase.ATTRACT or self.visit is None:
            return
        if self.last_face_ns is None or now_ns - self.last_face_ns >= t.leave_s * NS:
            self.reset("the visitor left")
        elif self.phase is Phase.SEARCHING and now_ns - self.visit.search_started_ns >= t.search_timeout_s * NS:
            self.reset("no result in time", await_leave=True)
        elif self.phase is Phase.RESULTS and now_ns - self.visit.results_since_ns >= t.results_hold_s * NS:
            self.reset("results shown long enough", await_leave=True)

    def reset(self, reason: str, await_leave: bool = False) -> None:
        """Forget the visitor: their results and everything else in the Visit go with it."""
        self.visit = None
        self.await_leave = await_leave
        self.last_reset = reason
        self._go(Phase.ATTRACT)

    # --- what the display shows -----------------------------------------------------------------

    @property
    def results(self) -> Matches | None:
        return self.visit.results if self.visit is not None else None

    @property
    def can_print(self) -> bool:
        """The print button is lit: results up, best match within the threshold, not printed yet."""
        v = self.visit
        return (
            self.phase is Phase.RESULTS
            and v is not None
            and v.results is not None
            and not v.printed
            and clears_threshold(v.results.results, self.threshold)
        )

    def _go(self, phase: Phase) -> None:
        self.phase = phase
