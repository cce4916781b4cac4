"""Image files and camera arrays as contiguous RGB uint8 arrays.

A file's size in pixels is read from its header (Pillow reads only the header on open) and
checked against a limit **before** anything is decoded: one 12000x12000 JPEG decodes to 430 MB of
pixels, and finding faces in it took 6.9 GB and ~110 s. Larger files are refused with
:class:`TooManyPixels` (the index build reports them as "too many pixels").
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp"})
MAX_PIXELS = 40_000_000  # default limit: a 40-megapixel photo (7,746 x 5,164) decodes to 120 MB of RGB


class ImageError(ValueError):
    """An image that can't be read or has a shape we don't handle."""


class TooManyPixels(ImageError):
    """An image file whose header announces more pixels than the limit (it was not decoded)."""


def image_size(data: bytes, where: str | Path = "image") -> tuple[int, int]:
    """(width, height) from an encoded image's header, without decoding its pixels."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                return img.size
    except Image.DecompressionBombError as e:  # Pillow's own refusal, far above any sane limit
        raise TooManyPixels(f"{where}: too many pixels ({e})") from e
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise ImageError(f"{where}: not a readable image ({e})") from e


def decode_image(data: bytes, where: str | Path = "image", max_pixels: int | None = MAX_PIXELS) -> np.ndarray:
    """Encoded image bytes as an RGB uint8 array; TooManyPixels above ``max_pixels`` (None: no limit)."""
    width, height = image_size(data, where)
    if max_pixels is not None and width * height > max_pixels:
        raise TooManyPixels(
            f"{where}: {width}x{height} is {width * height / 1e6:.1f} megapixels, "
            f"the limit is {max_pixels / 1e6:g} (not decoded)"
        )
    buf = np.frombuffer(data, dtype=np.uint8)
    bgr = cv2.imdecode(buf, cv2.IMREAD_COLOR) if buf.size else None
    if bgr is None:
        raise ImageError(f"{where}: not a readable image")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def read_image(path: str | Path, max_pixels: int | None = MAX_PIXELS) -> np.ndarray:
    """An image file as an RGB uint8 array (grayscale and RGBA converted).

    ImageError if unreadable; TooManyPixels (checked from the header, before decoding) when it
    has more than ``max_pixels`` pixels.
    """
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise ImageError(f"{path}: not a readable image ({e.strerror or e})") from e
    return decode_image(data, path, max_pixels)


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
