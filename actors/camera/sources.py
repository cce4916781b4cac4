"""Where frames come from: a webcam, a video file, a folder of images or a recording of ``frames``.

Every source gives ``(rgb, t_s)``: an RGB uint8 frame and its time in seconds from the start of
the source (the video's clock, the folder's configured rate, or the recorded send times), so
the camera can replay at any speed with the original relative timing. ``read`` returns None at
the end (or when a webcam stops delivering). Opening a source that can't work raises
SourceError with a message for the operator; a corrupt image in a folder is skipped and listed
in ``skipped``; a frame of a shape we can't use raises faces.ImageError (the camera counts it).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

import faces
from actors.camera import recording
from faces import IMAGE_SUFFIXES
from messages import DecodeError, Frame, decode


class SourceError(RuntimeError):
    pass


def bgr_to_rgb(image: np.ndarray) -> np.ndarray:
    """A frame as OpenCV delivers it (BGR, BGRA, gray, gray with one channel) as contiguous RGB."""
    if image is None or image.size == 0:
        raise faces.ImageError("empty frame")
    if image.dtype != np.uint8:
        raise faces.ImageError(f"expected uint8 pixels, got {image.dtype}")
    if image.ndim == 3 and image.shape[2] == 3:
        return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    if image.ndim == 3 and image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2RGB)
    return faces.as_rgb(image)  # gray; anything else is refused there with its shape


class VideoSource:
    """A video file, or a webcam when ``spec`` is an index or a stream URL."""

    def __init__(self, spec: str, width_px: int = 0, height_px: int = 0):
        self.spec = spec
        self.is_webcam = spec.isdigit() or "://" in spec
        self.skipped: list[str] = []
        if not self.is_webcam and not Path(spec).is_file():
            raise SourceError(f"video file {spec} does not exist")
        self._cap = cv2.VideoCapture(int(spec) if spec.isdigit() else spec)
        if not self._cap.isOpened():
            what = (
                f"webcam {spec} could not be opened (is a camera connected? `ls /dev/video*` lists them)"
                if self.is_webcam
                else f"{spec} is not a readable video"
            )
            raise SourceError(what)
        if self.is_webcam and width_px and height_px:
            self._cap.set(cv2.CAP_PROP_FRAME_WIDTH, width_px)
            self._cap.set(cv2.CAP_PROP_FRAME_HEIGHT, height_px)
        fps = self._cap.get(cv2.CAP_PROP_FPS)
        self.fps = fps if 1 <= fps <= 240 else 30.0
        self.label = f"webcam:{spec}" if self.is_webcam else f"replay:{Path(spec).name}"
        self._index = 0

    def read(self) -> tuple[np.ndarray, float] | None:
        ok, image = self._cap.read()
        if not ok:
            return None
        t_s = self._index / self.fps
        self._index += 1
        return bgr_to_rgb(image), t_s

    def seek(self, t_s: float) -> None:
        self._index = max(0, round(t_s * self.fps))
        self._cap.set(cv2.CAP_PROP_POS_FRAMES, self._index)

    def close(self) -> None:
        self._cap.release()


class FolderSource:
    """Every image in a folder, in name order, at ``fps``; unreadable files are skipped and reported."""

    is_webcam = False

    def __init__(self, folder: str, fps: float, max_pixels: int | None = faces.MAX_PIXELS):
        self.max_pixels = max_pixels  # larger files are skipped from their header, never decoded
        self.paths = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not self.paths:
            raise SourceError(f"image folder {folder} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
        self.fps = fps
        self.label = f"replay:{Path(folder).name}/"
        self.skipped: list[str] = []
        self._next = 0

    def read(self) -> tuple[np.ndarray, float] | None:
        while self._next < len(self.paths):
            path = self.paths[self._next]
            self._next += 1
            try:
                return faces.read_image(path, self.max_pixels), (self._next - 1) / self.fps
            except faces.ImageError as e:
                self.skipped.append(f"{path.name}: {e}")
        return None

    def seek(self, t_s: float) -> None:
        self._next = min(len(self.paths), max(0, round(t_s * self.fps)))

    def close(self) -> None:
        pass


class RecordingSource:
    """The ``frames`` messages of a recording (see actors/camera/recording.py) at their recorded times."""

    is_webcam = False

    def __init__(self, path: str):
        self.path = path
        self.label = f"replay:{Path(path).name}"
        self.skipped: list[str] = []
        frames = [t for t, parts in recording.read(path) if parts[:1] == [b"frames"]]
        if not frames:
            raise SourceError(f"recording {path} holds no frames")
        self._t0 = frames[0]
        self.fps = (len(frames) - 1) / max(1e-9, (frames[-1] - frames[0]) / 1e9) if len(frames) > 1 else 10.0
        self._records: Iterator[tuple[int, list[bytes]]] = iter(())
        self.seek(0.0)

    def read(self) -> tuple[np.ndarray, float] | None:
        try:
            for t_ns, parts in self._records:
                if parts[:1] != [b"frames"]:
                    continue
                try:
                    msg: Frame = decode(parts, expect="frames")
                except DecodeError as e:
                    self.skipped.append(f"record at {(t_ns - self._t0) / 1e9:.3f} s: {e}")
                    continue
                rgb = np.frombuffer(msg.pixels, np.uint8).reshape(msg.height_px, msg.width_px, 3)
                return rgb, (t_ns - self._t0) / 1e9
        except recording.RecordingError as e:  # a damaged tail ends the replay, reported
            self.skipped.append(str(e))
            self._records = iter(())
        return None

    def seek(self, t_s: float) -> None:
        start_ns = self._t0 + int(t_s * 1e9)
        self._records = ((t, p) for t, p in recording.read(self.path) if t >= start_ns)

    def close(self) -> None:
        self._records = iter(())


Source = VideoSource | FolderSource | RecordingSource


def open_source(
    spec: str, folder_fps: float, width_px: int = 0, height_px: int = 0, max_pixels: int | None = faces.MAX_PIXELS
) -> Source:
    """The source ``spec`` names: a webcam index or URL, an image folder, a recording or a video file."""
    if Path(spec).is_dir():
        return FolderSource(spec, folder_fps, max_pixels)
    if recording.is_recording(spec):
        try:
            return RecordingSource(spec)
        except recording.RecordingError as e:
            raise SourceError(str(e)) from e
    return VideoSource(spec, width_px, height_px)


def fit_width(rgb: np.ndarray, width_px: int) -> np.ndarray:
    """Scale a frame down to ``width_px`` wide (never up); 0 keeps it."""
    h, w = rgb.shape[:2]
    if not width_px or w <= width_px:
        return rgb
    return cv2.resize(rgb, (width_px, round(h * width_px / w)), interpolation=cv2.INTER_AREA)
