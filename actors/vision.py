"""Faces in pixels: detection, visitor choice, aligned chips and 128-D descriptors (dlib).

Pure functions over numpy RGB arrays; the detector and encoder actors, the index builder and
the ``megapixels search`` command all go through them, so a face is found and described the
same way everywhere. The dlib models are the ones the ``face_recognition_models`` package ships;
they are located without importing that package (its ``__init__`` needs ``pkg_resources``).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import cv2
import dlib
import numpy as np

from messages.schemas import CHIP_PX

Box = tuple[int, int, int, int]  # left, top, right, bottom in image pixels


class ImageError(ValueError):
    """An image that can't be read or has a shape we don't handle."""


@dataclass(frozen=True)
class Models:
    detector: dlib.fhog_object_detector
    landmarks: dlib.shape_predictor
    net: dlib.face_recognition_model_v1


def models_dir() -> Path:
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the face_recognition_models package is not installed (make install)")
    return Path(next(iter(spec.submodule_search_locations))) / "models"


@cache
def load_models() -> Models:
    d = models_dir()
    return Models(
        detector=dlib.get_frontal_face_detector(),
        landmarks=dlib.shape_predictor(str(d / "shape_predictor_5_face_landmarks.dat")),
        net=dlib.face_recognition_model_v1(str(d / "dlib_face_recognition_resnet_model_v1.dat")),
    )


def dlib_description() -> str:
    """Which dlib is active: the prebuilt wheel (no BLAS, ~58 ms a descriptor) or the fast one."""
    blas = "BLAS: fast build from `make kiosk`" if dlib.DLIB_USE_BLAS else "no BLAS: prebuilt dlib-bin, ~5x slower"
    return f"dlib {dlib.__version__} ({blas})"


def read_image(path: str | Path) -> np.ndarray:
    """An image file as an RGB uint8 array (grayscale and RGBA converted); ImageError if unreadable."""
    data = np.fromfile(str(path), dtype=np.uint8)
    bgr = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if bgr is None:
        raise ImageError(f"{path}: not a readable image")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def as_rgb(image: np.ndarray) -> np.ndarray:
    """Any camera-style array (HxW gray, HxWx3 RGB, HxWx4 RGBA) as contiguous HxWx3 uint8 RGB."""
    if image.dtype != np.uint8:
        raise ImageError(f"expected uint8 pixels, got {image.dtype}")
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    if image.ndim == 3 and image.shape[2] == 3:
        return np.ascontiguousarray(image)
    if image.ndim == 3 and image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_RGBA2RGB)
    if image.ndim == 3 and image.shape[2] == 1:
        return cv2.cvtColor(image[:, :, 0], cv2.COLOR_GRAY2RGB)
    raise ImageError(f"unsupported image shape {image.shape}")


DETECTORS = ("hog", "cnn", "haar")


@cache
def cnn_detector() -> dlib.cnn_face_detection_model_v1:
    """dlib's MMOD CNN face detector (~70x slower than HOG on a CPU, finds more turned faces)."""
    return dlib.cnn_face_detection_model_v1(str(models_dir() / "mmod_human_face_detector.dat"))


@cache
def haar_detector() -> cv2.CascadeClassifier:
    """OpenCV's frontal-face Haar cascade (needs opencv-python < 5, which ships the XML files)."""
    if not hasattr(cv2, "CascadeClassifier") or not hasattr(cv2, "data"):
        raise RuntimeError("this OpenCV has no Haar cascades (opencv-python 5 removed them; pin opencv-python<5)")
    cascade = cv2.CascadeClassifier(str(Path(cv2.data.haarcascades) / "haarcascade_frontalface_default.xml"))
    if cascade.empty():
        raise RuntimeError("OpenCV's haarcascade_frontalface_default.xml could not be loaded")
    return cascade


def _raw_boxes(small: np.ndarray, upsample: int, method: str) -> list[tuple[int, int, int, int]]:
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


def largest(boxes: list[Box]) -> int:
    """Index of the largest box, -1 for none: the visitor is the face nearest the camera."""
    if not boxes:
        return -1
    return max(range(len(boxes)), key=lambda i: (boxes[i][2] - boxes[i][0]) * (boxes[i][3] - boxes[i][1]))


def face_chip(rgb: np.ndarray, box: Box) -> np.ndarray:
    """The face in ``box`` aligned on 5 landmarks: CHIP_PX x CHIP_PX x 3 uint8."""
    rect = dlib.rectangle(*box)
    shape = load_models().landmarks(rgb, rect)
    return dlib.get_face_chip(rgb, shape, size=CHIP_PX, padding=0.25)


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
