"""The 128-D dlib ResNet descriptor of an aligned face chip."""

from __future__ import annotations

import numpy as np

from faces.chips import face_chip
from faces.detection import Box, detect, largest
from faces.images import ImageError
from faces.models import load_models
from messages import CHIP_PX


def describe(chip: np.ndarray, jitter: int = 1) -> np.ndarray:
    """The 128-D float32 descriptor of an aligned chip."""
    if chip.shape != (CHIP_PX, CHIP_PX, 3) or chip.dtype != np.uint8:
        raise ImageError(f"chip must be {CHIP_PX}x{CHIP_PX}x3 uint8, got {chip.shape} {chip.dtype}")
    d = load_models().net.compute_face_descriptor(chip, max(0, jitter) if jitter > 1 else 0)
    return np.asarray(d, dtype=np.float32)


def describe_largest(rgb: np.ndarray, scale: float = 1.0, upsample: int = 1) -> tuple[Box, np.ndarray] | None:
    """Box and descriptor of the largest face in a still, or None when no face is found."""
    boxes = detect(rgb, scale=scale, upsample=upsample)
    i = largest(boxes)
    if i < 0:
        return None
    return boxes[i], describe(face_chip(rgb, boxes[i]))
