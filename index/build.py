"""Build a gallery index from a folder-per-identity dataset (``<root>/<Person_Name>/*.jpg``).

Each photo is read, its largest face found (HOG, upsampled once: offline, so take the accurate
setting), aligned and described; photos are spread over worker processes. A photo that can't
be used is reported with its reason and skipped; the build never stops on one bad file.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from index import calibration, store

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}


@dataclass(frozen=True)
class Outcome:
    photo: str  # relative to the dataset root
    identity: str
    descriptor: np.ndarray | None
    box: tuple[int, int, int, int] | None
    faces: int
    reason: str  # "" when accepted


def scan(root: Path) -> list[tuple[str, str]]:
    """(identity, photo path relative to root) for every image, in a stable order."""
    if not root.is_dir():
        raise FileNotFoundError(f"dataset folder {root} does not exist")
    found = []
    for person in sorted(p for p in root.iterdir() if p.is_dir()):
        for photo in sorted(person.iterdir()):
            if photo.suffix.lower() in IMAGE_SUFFIXES:
                found.append((person.name, str(photo.relative_to(root))))
    return found


def describe_photo(root: str, identity: str, photo: str) -> Outcome:
    """Runs in a worker process: the largest face's descriptor, or the reason there is none."""
    from actors import vision

    try:
        rgb = vision.read_image(Path(root) / photo)
    except vision.ImageError:
        return Outcome(photo, identity, None, None, 0, "unreadable file")
    boxes = vision.detect(rgb, scale=1.0, upsample=1)
    if not boxes:
        return Outcome(photo, identity, None, None, 0, "no face")
    box = boxes[vision.largest(boxes)]
    return Outcome(photo, identity, vision.describe(vision.face_chip(rgb, box)), box, len(boxes), "")


def build(root: Path, out: Path, n_shards: int = 2, workers: int | None = None, progress: bool = True) -> dict:
    """Index every usable photo under ``root`` into ``out``; returns the build report."""
    root = Path(root).resolve()
    todo = scan(root)
    if not todo:
        raise ValueError(f"no images found in {root} (expected {root}/<identity>/<photo>.jpg)")
    workers = workers or os.cpu_count() or 1
    started = time.monotonic()
    outcomes: list[Outcome] = []
    with ProcessPoolExecutor(max_workers=workers) as pool:
        jobs = pool.map(describe_photo, [str(root)] * len(todo), *zip(*todo, strict=True), chunksize=4)
        for outcome in tqdm(jobs, total=len(todo), desc="indexing", unit="photo", disable=not progress):
            outcomes.append(outcome)
    kept = [o for o in outcomes if not o.reason]
    if not kept:
        raise ValueError(f"no face was found in any of the {len(todo)} images under {root}")
    seconds = time.monotonic() - started
    report = {
        "dataset": str(root),
        "photos": len(todo),
        "indexed": len(kept),
        "rejected": Counter(o.reason for o in outcomes if o.reason),
        "rejected_files": [{"photo": o.photo, "reason": o.reason} for o in outcomes if o.reason],
        "several_faces_kept_largest": [o.photo for o in kept if o.faces > 1],
        "seconds": round(seconds, 1),
        "photos_per_s": round(len(todo) / seconds, 1),
        "workers": workers,
    }
    provenance = {
        "dataset_root": str(root),
        "detector": "dlib HOG, upsample 1, largest face",
        "built_unix": int(time.time()),
    }
    store.write(
        out,
        np.stack([o.descriptor for o in kept]),
        [store.Entry(o.identity, o.photo, o.box) for o in kept],
        n_shards,
        provenance,
    )
    (out / "build_report.json").write_text(json.dumps(report, indent=2))
    calibration.install(out)  # distance -> P(same person), fitted on LFW (see ACCURACY.md)
    return report
