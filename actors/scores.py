"""What a match means, in words and percent: shared by the display's cards and the printed receipt.

When the reducer attaches a calibrated probability (``p_same``, 0..1, already corrected for the
gallery's size) and a ``verdict`` to a result, those are shown as they are. Until then the
confidence is derived from the distance by :func:`provisional_confidence`, a logistic around the
match threshold, and every text that shows it says "provisional".
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

# dlib distances: same person 0.33-0.42, different people 0.71-0.87 (FACTS.md). A logistic of
# slope 1/0.05 centred on the 0.6 threshold puts same-person distances at 96-99 % and different
# people at 1-2 %; it is NOT calibrated on any data and only stands in until "p_same" arrives.
PROVISIONAL_SCALE = 0.05


@dataclass(frozen=True)
class Confidence:
    percent: int  # 0..100
    verdict: str  # "likely you", "look-alike", ...
    provisional: bool  # True: derived from the distance, not calibrated


def provisional_confidence(distance: float, threshold: float) -> float:
    """PROVISIONAL, uncalibrated: 0.5 at the threshold, towards 1 below it, towards 0 above it."""
    z = (distance - threshold) / PROVISIONAL_SCALE
    return 1.0 / (1.0 + math.exp(min(60.0, z)))


def confidence(result: dict[str, Any], threshold: float) -> Confidence:
    """The confidence of one result: its calibrated ``p_same``/``verdict`` if present, else provisional."""
    p_same = result.get("p_same")
    if isinstance(p_same, (int, float)) and not isinstance(p_same, bool) and 0.0 <= p_same <= 1.0:
        verdict = result.get("verdict")
        if not isinstance(verdict, str) or not verdict:
            verdict = "likely you" if p_same >= 0.5 else "look-alike"
        return Confidence(round(100 * p_same), verdict, False)
    p = provisional_confidence(float(result["distance"]), threshold)
    return Confidence(round(100 * p), "close match" if result["distance"] <= threshold else "look-alike", True)


def confidence_text(c: Confidence) -> str:
    """'87 % · likely you', or '87 % · close match (provisional)'."""
    return f"{c.percent} % · {c.verdict}" + (" (provisional)" if c.provisional else "")


def display_name(identity: str) -> str:
    return identity.replace("_", " ")


def clears_threshold(results: list[dict[str, Any]], threshold: float) -> bool:
    """True when the best match is within the similarity threshold: the print button lights."""
    return bool(results) and min(r["distance"] for r in results) <= threshold
