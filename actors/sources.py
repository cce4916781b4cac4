"""Where frames come from: a webcam, a video file or a folder of images.

Each source yields RGB uint8 arrays and knows its native rate. Opening a source that can't
work (missing file, no such webcam) raises SourceError with a message for the operator.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from actors import vision
from index.build import IMAGE_SUFFIXES


class SourceError(RuntimeError):
    pass


class VideoSource:
    """A video file (or a webcam when ``spec`` is an index): RGB frames at the file's rate."""

    def __init__(self, spec: str):
        self.spec = spec
        self.is_webcam = spec.isdigit()
        if not self.is_webcam and not Path(spec).is_file():
            raise SourceError(f"video file {spec} does not exist")
        self._cap = cv2.VideoCapture(int(spec) if self.is_webcam else spec)
        if not self._cap.isOpened():
            what = (
                f"webcam {spec} could not be opened (is a camera connected?)"
                if self.is_webcam
                else f"{spec} is not a readable video"
            )
            raise SourceError(what)
        fps = self._cap.get(cv2.CAP_PROP_FPS)
        self.fps = fps if 1 <= fps <= 240 else 30.0
        self.label = f"webcam:{spec}" if self.is_webcam else f"replay:{Path(spec).name}"

    def read(self) -> np.ndarray | None:
        ok, bgr = self._cap.read()
        if not ok:
            return None
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB) if bgr.ndim == 3 and bgr.shape[2] == 3 else vision.as_rgb(bgr)

    def rewind(self) -> None:
        self._cap.set(cv2.CAP_PROP_POS_FRAMES, 0)

    def close(self) -> None:
        self._cap.release()


class FolderSource:
    """Every image in a folder, in name order; unreadable files are skipped and reported."""

    def __init__(self, folder: str, fps: float):
        self.paths = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not self.paths:
            raise SourceError(f"image folder {folder} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
        self.fps = fps
        self.label = f"replay:{Path(folder).name}/"
        self.skipped: list[str] = []
        self._next = 0

    def read(self) -> np.ndarray | None:
        while self._next < len(self.paths):
            path = self.paths[self._next]
            self._next += 1
            try:
                return vision.read_image(path)
            except vision.ImageError as e:
                self.skipped.append(f"{path.name}: {e}")
        return None

    def rewind(self) -> None:
        self._next = 0

    def close(self) -> None:
        pass


def open_source(spec: str, folder_fps: float) -> VideoSource | FolderSource:
    if Path(spec).is_dir():
        return FolderSource(spec, folder_fps)
    return VideoSource(spec)


def fit_width(rgb: np.ndarray, width_px: int) -> np.ndarray:
    """Scale a frame down to ``width_px`` wide (never up); 0 keeps it."""
    h, w = rgb.shape[:2]
    if not width_px or w <= width_px:
        return rgb
    return cv2.resize(rgb, (width_px, round(h * width_px / w)), interpolation=cv2.INTER_AREA)
