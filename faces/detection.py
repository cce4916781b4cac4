"""Face boxes in an RGB image (dlib HOG or CNN, OpenCV Haar), and which one is the visitor."""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from faces import tracking
from faces.chips import face_chip
from faces.models import cnn_detector, haar_detector, load_models

Box = tuple[int, int, int, int]  # left, top, right, bottom in image pixels
DETECTORS = ("hog", "cnn", "haar")


def _raw_boxes(small: np.ndarray, upsample: int, method: str) -> list[Box]:
    if method == "hog":
        return [(r.left(), r.top(), r.right(), r.bottom()) for r in load_models().detector(small, upsample)]
    if method == "cnn":
        return [(d.rect.left(), d.rect.top(), d.rect.right(), d.rect.bottom()) for d in cnn_detector()(small, upsample)]
    if method == "haar":
        gray = cv2.equalizeHist(cv2.cvtColor(small, cv2.COLOR_RGB2GRAY))
        found = haar_detector().detectMultiScale(gray, scaleFactor=1.1, minNeighbors=5, minSize=(20, 20))
        return [(int(x), int(y), int(x + w), int(y + h)) for x, y, w, h in found]
    raise ValueError(f"unknown detector {method!r}: allowed {', '.join(DETECTORS)}")


def detect(
    rgb: np.ndarray, scale: float = 1.0, upsample: int = 0, min_face_px: int = 0, method: str = "hog"
) -> list[Box]:
    """Face boxes in ``rgb``'s pixels, found by ``method`` (hog, cnn, haar) on a copy scaled by ``scale``."""
    small = rgb if scale == 1.0 else cv2.resize(rgb, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    h, w = rgb.shape[:2]
    boxes = []
    for left, top, right, bottom in _raw_boxes(small, upsample, method):
        box = (
            max(0, round(left / scale)),
            max(0, round(top / scale)),
            min(w, round(right / scale)),
            min(h, round(bottom / scale)),
        )
        if box[2] - box[0] >= min_face_px and box[3] > box[1]:
            boxes.append(box)
    return boxes


def find_faces(rgb: np.ndarray, d: dict[str, Any]) -> list[Box]:
    """Every face box at least ``min_face_px`` wide, by the method of a ``[detector]`` config section."""
    return detect(rgb, scale=d["scale"], upsample=d["upsample"], min_face_px=d["min_face_px"], method=d["method"])


def largest(boxes: list[Box]) -> int:
    """Index of the largest box, -1 for none: the visitor is the face nearest the camera."""
    if not boxes:
        return -1
    return max(range(len(boxes)), key=lambda i: (boxes[i][2] - boxes[i][0]) * (boxes[i][3] - boxes[i][1]))


def find_visitor(
    rgb: np.ndarray, scale: float, upsample: int, min_face_px: int, policy: str = "largest"
) -> tuple[list[Box], int, bytes]:
    """All HOG face boxes, the index of the visitor's (-1: none) and the visitor's chip bytes."""
    boxes = detect(rgb, scale=scale, upsample=upsample, min_face_px=min_face_px)
    visitor = tracking.choose(boxes, policy, rgb.shape[1], rgb.shape[0])
    chip = face_chip(rgb, boxes[visitor]).tobytes() if visitor >= 0 else b""
    return boxes, visitor, chip
