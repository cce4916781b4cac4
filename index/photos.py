"""The dataset behind the index, for the visitor: matched photos cropped around the face, and facts.

Read-only: the manifest (``provenance.dataset_root``, counts) through :mod:`index.store`; each
result carries its photo's face box. The counts leave out rows removed by ``megapixels index
remove`` (index/removals.py): :attr:`DatasetPhotos.facts` re-reads the removals when their file
changed (one stat() per read otherwise), so a screen or a receipt shows them within a second.
Dataset photos are not visitor data, so recent crops are cached in memory. A result whose photo
can't be read (a synthetic gallery entry, a moved dataset, a corrupt file) gets ``None`` and the
caller shows a placeholder; nothing here raises for it.
"""

from __future__ import annotations

import logging
import re
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from faces import MAX_PIXELS
from index import removals, store
from messages import Result

CROP_PX = 200
CROP_MARGIN = 0.45  # the crop reaches this fraction of the face box beyond each side
CACHE_SIZE = 64
THUMB_PX = 150  # the lookup screen's photos fit a square this size
log = logging.getLogger("dataset")

LFW_PHOTO = re.compile(r"^(?P<name>[^/]+)/(?P=name)_\d{4}\.\w+$")
MEGAFACE_PHOTO = re.compile(r"(?:^|/)FlickrFinal2/\d{3}/(?P<account>[^/]+@N\d+)/[^/]+$")


@dataclass(frozen=True)
class DatasetFacts:
    name: str
    photos: int
    people: int
    root: str

    def summary(self) -> str:
        return (
            f"{self.name}: {self.photos:,} face photos of {self.people:,} people. "
            "They were collected from the web without asking the people in them. Datasets like "
            "this train and test the face recognition used by companies, police and governments."
        )


def photo_source(photo: str) -> tuple[str, str]:
    """Where a dataset photo comes from and under which terms, as far as its path tells."""
    if m := MEGAFACE_PHOTO.search(photo):
        return f"Flickr account {m['account']}, via MegaFace", "Creative Commons, as uploaded; no consent asked"
    if LFW_PHOTO.match(photo):
        return "Labeled Faces in the Wild (news photos)", "research use; no consent asked"
    return "not recorded in the index", "unknown"


def dataset_name(root: str) -> str:
    lowered = root.lower()
    if "megaface" in lowered or "flickrfinal" in lowered:
        return "MegaFace"
    if "lfw" in lowered:
        return "Labeled Faces in the Wild"
    if "demo/gallery" in lowered:
        return "The demo gallery (a slice of Labeled Faces in the Wild)"
    return f"The dataset at {Path(root).name}"


def _fit(rgb: Image.Image, side_px: int) -> Image.Image:
    """``rgb`` scaled to fit a ``side_px`` square, aspect kept."""
    scale = side_px / max(rgb.size)
    size = (max(1, round(rgb.width * scale)), max(1, round(rgb.height * scale)))
    return rgb.resize(size, Image.Resampling.LANCZOS)


def crop_box(box: tuple[int, int, int, int], width: int, height: int) -> tuple[int, int, int, int]:
    """A square around a [left, top, right, bottom] face box with a margin, clipped to the photo."""
    left, top, right, bottom = box
    side = max(right - left, bottom - top) * (1 + 2 * CROP_MARGIN)
    cx, cy = (left + right) / 2, (top + bottom) / 2
    half = min(side / 2, width / 2, height / 2)
    x0 = round(min(max(cx - half, 0), width - 2 * half))
    y0 = round(min(max(cy - half, 0), height - 2 * half))
    return x0, y0, x0 + round(2 * half), y0 + round(2 * half)


class DatasetPhotos:
    """Crops of dataset photos by result; facts about the dataset. Never raises for a bad photo."""

    def __init__(self, index_dir: Path):
        self.index_dir = Path(index_dir)
        self._facts: DatasetFacts | None = None  # as built, before removals
        self._removals: removals.Watch | None = None
        self.root: Path | None = None
        self._cache: OrderedDict[tuple[int, str], np.ndarray | None] = OrderedDict()
        try:
            manifest = store.read_manifest(self.index_dir)
            root = manifest.dataset_root
            self.root = Path(root) if root else None
            self._facts = DatasetFacts(dataset_name(root), manifest.count, manifest.identities, root)
            self._removals = removals.Watch(self.index_dir, manifest)
        except (store.IndexStoreError, removals.RemovalsError, OSError) as e:
            log.warning("no dataset photos or facts: %s", e)
            self._facts = None

    @property
    def facts(self) -> DatasetFacts | None:
        """The dataset's name and size, without the photos and people removed from it."""
        if self._facts is None or self._removals is None:
            return self._facts
        news = self._removals.check()
        if news is not None and not news.ok:
            log.warning(news.text)
        gone = self._removals
        if not len(gone.rows):
            return self._facts
        try:
            people = gone.people
        except Exception as e:  # a damaged metadata file: the photo count is still right
            log.warning("people removed from the dataset can't be counted: %s", e)
            people = 0
        f = self._facts
        return DatasetFacts(f.name, f.photos - len(gone.rows), f.people - people, f.root)

    def crop(self, result: Result) -> np.ndarray | None:
        """The matched photo cropped around the face, CROP_PX square RGB; None when unavailable."""
        key = (result.row, result.photo)
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        crop = self._load(result.photo, result.box)
        self._cache[key] = crop
        if len(self._cache) > CACHE_SIZE:
            self._cache.popitem(last=False)
        return crop

    def thumbnail(self, photo: str, side_px: int = THUMB_PX) -> np.ndarray | None:
        """The whole dataset photo scaled to fit a ``side_px`` square (aspect kept), RGB; None when
        unavailable. Not cached: the lookup screen asks for the photos of the account a visitor
        typed, and which photos those were goes with the screen when it closes."""
        return self._read(photo, lambda rgb: _fit(rgb, side_px), draft_px=side_px, private=True)

    def _load(self, photo: str, box: list[int]) -> np.ndarray | None:
        def cut(rgb: Image.Image) -> Image.Image:
            if len(box) == 4:
                rgb = rgb.crop(crop_box((box[0], box[1], box[2], box[3]), *rgb.size))
            return rgb.resize((CROP_PX, CROP_PX), Image.Resampling.LANCZOS)

        return self._read(photo, cut)

    def _read(
        self, photo: str, shape: Callable[[Image.Image], Image.Image], draft_px: int = 0, private: bool = False
    ) -> np.ndarray | None:
        """The dataset photo ``photo`` (relative to the root) decoded, ``shape``d, as an RGB array;
        None (and a log line) for a photo outside the root, too large, missing or unreadable.
        ``draft_px``: a JPEG may be decoded at a reduced scale still at least this size (several
        times faster for a large photo shown small). ``private``: the photo was asked for by what a
        visitor typed (its path names their account), so the log says what went wrong, not where."""
        if self.root is None or not photo:
            return None
        name = "a photo of the lookup screen" if private else photo
        path = (self.root / photo).resolve()
        if self.root.resolve() not in path.parents:
            log.warning("dataset photo %r lies outside the dataset root; not shown", name)
            return None
        try:
            with Image.open(path) as img:
                if img.width * img.height > MAX_PIXELS:  # replaced since the build checked it: not decoded
                    log.warning("dataset photo %s: %dx%d, over the pixel limit; not shown", name, *img.size)
                    return None
                if draft_px:
                    img.draft("RGB", (draft_px, draft_px))
                rgb = img.convert("RGB")
            return np.asarray(shape(rgb))
        except (OSError, UnidentifiedImageError, ValueError) as e:
            log.warning("dataset photo %s unreadable: %s", name, type(e).__name__ if private else e)
            return None
        except Exception as e:  # a decoder's own error and the like: a placeholder, never a crash
            log.warning("dataset photo %s: %s", name, type(e).__name__ if private else e)
            return None

    def close(self) -> None:
        self._cache.clear()
        if self._removals is not None:
            self._removals.close()
