"""What a match means, in words and percent: shared by the display's cards and the printed receipt.

When the reducer attaches a calibrated probability (``p_same``, 0..1, already corrected for the
gallery's size) and a ``verdict`` to a result, those are shown as they are. Until then the
confidence is derived from the distance by :func:`provisional_confidence`, a logistic around the
match threshold, and every text that shows it says "provisional".
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from index import calibration
from messages import LOOK_ALIKE, Result

# dlib distances: same person 0.33-0.42, different people 0.71-0.87 (../shared/docs/FACTS.md). A logistic of
# slope 1/0.05 centred on the 0.6 threshold puts same-person distances at 96-99 % and different
# people at 1-2 %; it is NOT calibrated on any data and only stands in until "p_same" arrives.
PROVISIONAL_SCALE = 0.05
CLOSE_MATCH = "close match"  # the provisional verdict under the threshold (uncalibrated)
# One plain line for the screen and the receipt: this kind of software is less accurate for some
# faces than for others, with the figure measured on the demo gallery (python -m
# benchmarks.accuracy.verdicts, ACCURACY.md "Honest verdicts"): LFW strangers told "likely you" by the
# LFW-wide model this kiosk used before, among the tenth of people whose faces have the closest
# look-alikes and among the others. tests/test_verdicts.py checks them against the recorded results.
PACKED_BEFORE_PERCENT = 43
OTHERS_BEFORE_PERCENT = 2
FAIRNESS_NOTE = (
    "Face recognition is less accurate for some faces than others: in our tests, before we corrected for it, "
    f'{PACKED_BEFORE_PERCENT} in 100 strangers with many look-alikes were told "likely you", '
    f"against {OTHERS_BEFORE_PERCENT} in 100 other strangers."
)


@dataclass(frozen=True)
class Confidence:
    percent: int  # 0..100
    verdict: str  # "likely you", "look-alike", ...
    provisional: bool  # True: derived from the distance, not calibrated


def provisional_confidence(distance: float, threshold: float) -> float:
    """PROVISIONAL, uncalibrated: 0.5 at the threshold, towards 1 below it, towards 0 above it."""
    z = (distance - threshold) / PROVISIONAL_SCALE
    return 1.0 / (1.0 + math.exp(min(60.0, z)))


def confidence(result: Result, threshold: float) -> Confidence:
    """The confidence of one result: its calibrated ``p_same``/``verdict`` if present, else provisional."""
    if result.p_same is not None and 0.0 <= result.p_same <= 1.0:
        verdict = result.verdict or calibration.verdict(result.p_same)
        return Confidence(round(100 * result.p_same), verdict, False)
    p = provisional_confidence(result.distance, threshold)
    return Confidence(round(100 * p), CLOSE_MATCH if result.distance <= threshold else LOOK_ALIKE, True)


def confidence_text(c: Confidence) -> str:
    """'87 % · likely you', or '87 % · close match (provisional)'."""
    return f"{c.percent} % · {c.verdict}" + (" (provisional)" if c.provisional else "")


def display_name(identity: str) -> str:
    return identity.replace("_", " ")


def best(results: list[Result]) -> Result | None:
    """The closest result, None for none."""
    return min(results, key=lambda r: r.distance) if results else None


def clears_threshold(results: list[Result], threshold: float) -> bool:
    """True when the best match is within the similarity threshold: the print button lights."""
    closest = best(results)
    return closest is not None and closest.distance <= threshold
