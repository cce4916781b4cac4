"""dlib's models, loaded once per process.

They are the files the ``face_recognition_models`` package ships, located without importing
that package (its ``__init__`` needs ``pkg_resources``).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import cv2
import dlib


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


def dlib_description() -> str:
    """Which dlib is active: the prebuilt wheel (no BLAS, ~58 ms a descriptor) or the fast one."""
    blas = "BLAS: fast build from `make kiosk`" if dlib.DLIB_USE_BLAS else "no BLAS: prebuilt dlib-bin, ~5x slower"
    return f"dlib {dlib.__version__} ({blas})"
