"""Five landmarks on a face, the head's turn from them, and the aligned CHIP_PX face chip."""

from __future__ import annotations

import dlib
import numpy as np

from faces.models import load_models
from messages import CHIP_PX

CHIP_PADDING = 0.25


def landmarks(rgb: np.ndarray, box: tuple[int, int, int, int]) -> dlib.full_object_detection:
    """dlib's 5 landmarks (eye corners 0-3, nose 4) of the face in ``box``."""
    return load_models().landmarks(rgb, dlib.rectangle(*box))


def yaw(shape: dlib.full_object_detection) -> float:
    """Head turn from the 5 landmarks: 0 frontal, ~0.5 half profile."""
    p = np.array([(shape.part(i).x, shape.part(i).y) for i in range(5)], dtype=np.float64)
    eye_a, eye_b = p[0:2].mean(axis=0), p[2:4].mean(axis=0)
    span = np.linalg.norm(eye_b - eye_a)
    if span < 1:
        return 1.0
    axis = (eye_b - eye_a) / span
    return float(np.dot(p[4] - (eye_a + eye_b) / 2, axis) / span)


def aligned_chip(rgb: np.ndarray, shape: dlib.full_object_detection) -> np.ndarray:
    """The face aligned on its landmarks: CHIP_PX x CHIP_PX x 3 uint8."""
    return dlib.get_face_chip(rgb, shape, size=CHIP_PX, padding=CHIP_PADDING)


def face_chip(rgb: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """The face in ``box`` aligned on 5 landmarks: CHIP_PX x CHIP_PX x 3 uint8."""
    return aligned_chip(rgb, landmarks(rgb, box))
