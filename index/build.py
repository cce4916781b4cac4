"""Build a gallery index from a dataset: detect, quality-filter, describe, store.

Inputs (:func:`scan`):

- a folder per identity (LFW: ``<root>/<Person_Name>/<photo>.jpg``), or MegaFace's layout
  (``<root>/<prefix>/<flickr user>/<photo>.jpg``): the identity is the photo's folder. A JSON
  sidecar ``<photo>.jpg.json`` with a ``bounding_box`` (x, y, width, height) names the face to
  use; without one the detector looks and the largest face is kept.
- a CSV manifest with columns ``path, identity, url, licence`` (paths relative to the CSV).

Every photo either becomes an entry or is rejected with one reason (:data:`REASONS`); the build
never stops on one bad file. Photos are described in worker processes (all cores by default).

Resumable: every finished photo is appended to ``<out>/build_journal.jsonl`` (flushed as it
arrives). Killed at any point (even ``kill -9``), the next run reads the journal, drops a torn
last line, and describes only the photos not in it: nothing is done twice, nothing is lost.
Duplicates (same bytes) are resolved at the end in scan order, so the result doesn't depend on
which worker finished first.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import json
import os
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from faces import IMAGE_SUFFIXES
from index import calibration, store

JOURNAL = "build_journal.jsonl"
REASONS = (
    "unreadable file",
    "no face",
    "face too small",
    "too blurred",
    "extreme pose",
    "duplicate photo",
)


@dataclass(frozen=True)
class Quality:
    """Rejection thresholds (recorded in the manifest's build parameters)."""

    min_face_px: int = 40  # face box width in photo pixels
    min_sharpness: float = 6.0  # variance of the Laplacian of the grey 150x150 aligned chip
    max_yaw: float = 0.45  # |nose offset from the eyes' midpoint| / eye distance (0 = frontal)
    upsample: int = 1  # HOG upsampling (offline: take the accurate setting)


@dataclass(frozen=True)
class Photo:
    path: str  # relative to the dataset root
    identity: str
    url: str = ""
    licence: str = ""


@dataclass
class Outcome:
    photo: str
    identity: str
    reason: str  # "" when accepted
    descriptor: np.ndarray | None = None
    box: tuple[int, int, int, int] | None = None
    faces: int = 0
    box_from: str = ""  # "sidecar" or "detector"
    sha1: str = ""
    sharpness: float = 0.0
    yaw: float = 0.0
    url: str = ""
    licence: str = ""
    detail: str = ""

    def to_json(self) -> str:
        d = asdict(self)
        d["descriptor"] = base64.b64encode(self.descriptor.astype("<f4").tobytes()).decode() if self.ok else None
        d["box"] = list(self.box) if self.box else None
        return json.dumps(d)

    @classmethod
    def from_json(cls, line: str) -> Outcome:
        d = json.loads(line)
        if d["descriptor"] is not None:
            d["descriptor"] = np.frombuffer(base64.b64decode(d["descriptor"]), "<f4").copy()
        d["box"] = tuple(d["box"]) if d["box"] else None
        return cls(**d)

    @property
    def ok(self) -> bool:
        return not self.reason


def scan(source: Path) -> tuple[Path, list[Photo]]:
    """(dataset root, every photo with its identity) in a stable order, from a folder or a CSV."""
    source = Path(source)
    if source.is_file() and source.suffix.lower() == ".csv":
        return source.parent.resolve(), _scan_csv(source)
    if not source.is_dir():
        raise FileNotFoundError(f"dataset {source} does not exist (a folder, or a .csv manifest)")
    root = source.resolve()
    photos = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        folder = Path(dirpath)
        if folder == root:
            continue  # photos directly in the root have no identity folder
        for name in sorted(filenames):
            if Path(name).suffix.lower() in IMAGE_SUFFIXES:
                photos.append(Photo(str((folder / name).relative_to(root)), folder.name))
    return root, photos


def _scan_csv(path: Path) -> list[Photo]:
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        need = {"path", "identity"}
        if not reader.fieldnames or not need <= set(reader.fieldnames):
            raise ValueError(
                f"{path}: a CSV manifest needs columns path, identity (and url, licence); got {reader.fieldnames}"
            )
        return [
            Photo(row["path"], row["identity"], row.get("url") or "", row.get("licence") or "")
            for row in reader
            if row.get("path")
        ]


def read_sidecar(photo_path: Path) -> tuple[int, int, int, int] | None:
    """The face box (left, top, right, bottom) of a MegaFace-style ``<photo>.json`` sidecar, if any."""
    side = photo_path.with_name(photo_path.name + ".json")
    if not side.exists():
        return None
    try:
        bb = json.loads(side.read_text()).get("bounding_box")
        if isinstance(bb, dict):
            x, y, w, h = (float(bb[k]) for k in ("x", "y", "width", "height"))
        else:
            x, y, w, h = (float(v) for v in bb)
    except (ValueError, TypeError, KeyError, AttributeError):
        return None  # an unusable sidecar: the detector decides
    if w <= 0 or h <= 0:
        return None
    return round(x), round(y), round(x + w), round(y + h)


def describe_photo(root: str, photo: Photo, quality: Quality = Quality()) -> Outcome:
    """Runs in a worker process: the chosen face's descriptor, or the reason there is none."""
    import cv2

    import faces
    from faces.chips import aligned_chip

    path = Path(root) / photo.path
    out = Outcome(photo.path, photo.identity, "", url=photo.url, licence=photo.licence)
    try:
        data = path.read_bytes()
        out.sha1 = hashlib.sha1(data).hexdigest()
        rgb = faces.read_image(path)
    except (OSError, faces.ImageError) as e:
        out.reason, out.detail = "unreadable file", str(e)
        return out
    box = read_sidecar(path)
    if box is not None:
        out.box_from, out.faces = "sidecar", 1
    else:
        boxes = faces.detect(rgb, scale=1.0, upsample=quality.upsample)
        out.faces = len(boxes)
        if not boxes:
            out.reason = "no face"
            return out
        box, out.box_from = boxes[faces.largest(boxes)], "detector"
    out.box = tuple(int(v) for v in box)
    if box[2] - box[0] < quality.min_face_px:
        out.reason, out.detail = "face too small", f"{box[2] - box[0]} px wide, minimum {quality.min_face_px}"
        return out
    shape = faces.landmarks(rgb, box)
    out.yaw = round(faces.yaw(shape), 3)
    if abs(out.yaw) > quality.max_yaw:
        out.reason, out.detail = "extreme pose", f"yaw ratio {out.yaw}, maximum {quality.max_yaw}"
        return out
    chip = aligned_chip(rgb, shape)
    out.sharpness = round(float(cv2.Laplacian(cv2.cvtColor(chip, cv2.COLOR_RGB2GRAY), cv2.CV_64F).var()), 1)
    if out.sharpness < quality.min_sharpness:
        out.reason, out.detail = "too blurred", f"sharpness {out.sharpness}, minimum {quality.min_sharpness}"
        return out
    out.descriptor = faces.describe(chip)
    return out


def _exit_with_parent(parent: int) -> None:
    """In each worker: exit when the build process is gone (kill -9 leaves workers waiting forever)."""
    import threading

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def read_journal(path: Path) -> dict[str, Outcome]:
    """Finished photos of an interrupted build; a torn last line (kill -9 mid-write) is cut off."""
    done: dict[str, Outcome] = {}
    if not path.exists():
        return done
    good_bytes = 0
    with open(path, "rb") as f:
        for raw in f:
            try:
                o = Outcome.from_json(raw.decode())
            except (ValueError, KeyError, TypeError):
                break
            if not raw.endswith(b"\n"):
                break
            done[o.photo] = o
            good_bytes += len(raw)
    if good_bytes != path.stat().st_size:
        with open(path, "r+b") as f:
            f.truncate(good_bytes)
    return done


def build(
    source: Path,
    out: Path,
    n_shards: int = 2,
    workers: int | None = None,
    progress: bool = True,
    dtype: str = "float32",
    quality: Quality = Quality(),
    synthetic: dict[str, Any] | None = None,
) -> dict:
    """Index every usable photo of ``source`` into ``out``; returns the build report.

    ``synthetic`` (``{"count", "seed"}`` and optionally ``"model"``) grows the index with that
    many synthetic distractors, from a model fitted on this build's own descriptors by default.
    """
    root, todo = scan(source)
    if not todo:
        raise ValueError(f"no images found in {source} (expected <root>/<identity>/<photo>.jpg or a CSV)")
    if dtype not in store.DTYPES:
        raise ValueError(f"dtype {dtype!r}: allowed {', '.join(store.DTYPES)}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    journal_path = out / JOURNAL
    done = read_journal(journal_path)
    remaining = [p for p in todo if p.path not in done]
    workers = workers or os.cpu_count() or 1
    started = time.monotonic()
    with open(journal_path, "a", encoding="utf-8") as journal:
        if remaining:
            with ProcessPoolExecutor(
                max_workers=workers, initializer=_exit_with_parent, initargs=(os.getpid(),)
            ) as pool:
                jobs = pool.map(
                    describe_photo, [str(root)] * len(remaining), remaining, [quality] * len(remaining), chunksize=4
                )
                bar = tqdm(
                    jobs,
                    total=len(todo),
                    initial=len(todo) - len(remaining),
                    desc="indexing",
                    unit="photo",
                    disable=not progress,
                )
                for outcome in bar:
                    journal.write(outcome.to_json() + "\n")
                    journal.flush()
                    done[outcome.photo] = outcome
    seconds = time.monotonic() - started
    outcomes = [done[p.path] for p in todo if p.path in done]
    first_of: dict[str, str] = {}
    for o in outcomes:  # scan order: the first copy of a photo stays, later copies are duplicates
        if o.ok and o.sha1:
            if o.sha1 in first_of:
                o.reason, o.detail = "duplicate photo", f"same bytes as {first_of[o.sha1]}"
            else:
                first_of[o.sha1] = o.photo
    kept = [o for o in outcomes if o.ok]
    if not kept:
        raise ValueError(f"no usable face in any of the {len(todo)} images of {source}")
    report = {
        "dataset": str(source),
        "photos": len(todo),
        "indexed": len(kept),
        "identities": len({o.identity for o in kept}),
        "rejected": dict(Counter(o.reason for o in outcomes if not o.ok)),
        "rejected_files": [{"photo": o.photo, "reason": o.reason, "detail": o.detail} for o in outcomes if not o.ok],
        "several_faces_kept_largest": [o.photo for o in kept if o.faces > 1 and o.box_from == "detector"],
        "boxes_from_sidecars": sum(o.box_from == "sidecar" for o in kept),
        "described_this_run": len(remaining),
        "resumed_from_journal": len(todo) - len(remaining),
        "seconds": round(seconds, 1),
        "photos_per_s": round(len(remaining) / seconds, 2) if remaining and seconds > 0 else None,
        "workers": workers,
    }
    descriptors = np.stack([o.descriptor for o in kept]).astype(np.float32)
    entries = [store.Entry(o.identity, o.photo, o.box, o.url, o.licence) for o in kept]
    if synthetic and synthetic.get("count", 0) > 0 and "model" not in synthetic:
        from index import synthetic as synth

        model = synth.fit(descriptors, [o.identity for o in kept], source=f"this build: {source}")
        synthetic = {**synthetic, "model": model}
    import faces

    provenance = {
        "dataset": str(source),
        "dataset_root": str(root),
        "photos": len(todo),
        "dataset_sha256_of_list": hashlib.sha256("\n".join(p.path for p in todo).encode()).hexdigest(),
        "descriptor": f"{faces.dlib_description()}, resnet v1, 5-point alignment, 1 jitter",
        "built_unix": int(time.time()),
    }
    parameters = {
        "quality": asdict(quality),
        "dtype": dtype,
        "shards": n_shards,
        "face_choice": "sidecar box, else largest",
    }
    store.write(out, descriptors, entries, n_shards, provenance, dtype, synthetic, parameters)
    (out / "build_report.json").write_text(json.dumps(report, indent=2))
    calibration.install(out)  # distance -> P(same person), fitted on LFW (see ACCURACY.md)
    return report
