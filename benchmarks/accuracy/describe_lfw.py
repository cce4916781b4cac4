"""Descriptors of LFW photos the kiosk's way, cached on disk so the heavy pass runs once per setting.

For each photo: HOG (``upsample`` steps, full resolution), the centre-most and the largest face,
5-point aligned 150x150 chip, dlib ResNet descriptor (``jitter``), and the descriptor of the
mirrored chip. Photos where HOG finds nothing get a fixed centre box (the median of the boxes HOG
found on the other photos) and are flagged, so the failure cases can be listed.

Results go to ``~/.cache/megapixels/lfw/up<U>_j<J>/`` (never into the repository) in chunks of a
few hundred photos: an interrupted run resumes where it stopped.

    python -m benchmarks.accuracy.describe_lfw --subset pairs --upsample 1 --jitter 1 --workers 1

``--flip-photo`` describes the left-right mirrored PHOTO as a new photo (HOG on the mirrored photo,
its own 5 landmarks and aligned chip), which is not the same as mirroring the aligned chip: the
landmark model and the alignment template are not exactly symmetric. It also describes the
original box mirrored onto the mirrored photo (no second HOG pass: what an encoder that already has
the box would do). These go to ``~/.cache/megapixels/lfw/flip_up<U>_j<J>/`` and need the setting's
cache (for the original boxes).
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from benchmarks.accuracy import lfw

CACHE = Path(os.environ.get("MEGAPIXELS_CACHE", Path.home() / ".cache" / "megapixels")) / "lfw"
CHUNK = 200
NAN_BOX = (-1, -1, -1, -1)


def setting_dir(upsample: int, jitter: int) -> Path:
    return CACHE / f"up{upsample}_j{jitter}"


def centre_most(boxes: list[tuple[int, int, int, int]], width: int, height: int) -> int:
    """Index of the box whose centre is nearest the image centre, -1 for none."""
    if not boxes:
        return -1

    def off(b: tuple[int, int, int, int]) -> float:
        return ((b[0] + b[2]) / 2 - width / 2) ** 2 + ((b[1] + b[3]) / 2 - height / 2) ** 2

    return min(range(len(boxes)), key=lambda i: off(boxes[i]))


def describe_one(root: str, photo: str, upsample: int, jitter: int, mirror: bool, box: tuple | None = None) -> dict:
    """Runs in a worker: boxes and descriptors of one photo (``box`` forces a fallback box)."""
    import faces

    rgb = faces.read_image(Path(root) / photo)
    h, w = rgb.shape[:2]
    nan = np.full(128, np.nan, dtype=np.float32)
    if box is None:
        boxes = faces.detect(rgb, scale=1.0, upsample=upsample)
        c, big = centre_most(boxes, w, h), faces.largest(boxes)
    else:
        boxes, c, big = [tuple(box)], 0, 0
    rec = {"photo": photo, "faces": len(boxes) if box is None else 0, "fallback": box is not None}
    if c < 0:
        rec.update(box=NAN_BOX, box_largest=NAN_BOX, desc=nan, desc_mirror=nan, desc_largest=nan)
        return rec
    chip = faces.face_chip(rgb, boxes[c])
    rec["box"], rec["box_largest"] = boxes[c], boxes[big]
    rec["desc"] = faces.describe(chip, jitter)
    rec["desc_mirror"] = faces.describe(np.ascontiguousarray(chip[:, ::-1]), jitter) if mirror else nan
    rec["desc_largest"] = rec["desc"] if big == c else faces.describe(faces.face_chip(rgb, boxes[big]), jitter)
    return rec


def _describe_star(args: tuple) -> dict:
    return describe_one(*args)


def flip_dir(upsample: int, jitter: int) -> Path:
    return CACHE / f"flip_up{upsample}_j{jitter}"


def mirror_box(box: tuple[int, int, int, int], width: int) -> tuple[int, int, int, int]:
    """``box`` (left, top, right, bottom) on the left-right mirrored image of width ``width``."""
    return (width - box[2], box[1], width - box[0], box[3])


def describe_flipped(root: str, photo: str, upsample: int, jitter: int, box: tuple, box_largest: tuple) -> dict:
    """Runs in a worker: the mirrored photo described as a new photo, and with the original boxes mirrored.

    ``box``/``box_largest`` are the original photo's centre-most and largest boxes (or its fallback box).
    When HOG finds no face on the mirrored photo, the mirrored original boxes stand in (flagged)."""
    import faces

    rgb = np.ascontiguousarray(faces.read_image(Path(root) / photo)[:, ::-1])
    h, w = rgb.shape[:2]
    boxes = faces.detect(rgb, scale=1.0, upsample=upsample)
    mirrored = mirror_box(tuple(int(v) for v in box), w), mirror_box(tuple(int(v) for v in box_largest), w)
    found = (boxes[centre_most(boxes, w, h)], boxes[faces.largest(boxes)]) if boxes else mirrored
    memo: dict[tuple, np.ndarray] = {}

    def desc(b: tuple) -> np.ndarray:
        if b not in memo:
            memo[b] = faces.describe(faces.face_chip(rgb, b), jitter)
        return memo[b]

    return {
        "photo": photo,
        "flip_faces": len(boxes),
        "flip_box": found[0],
        "desc_flip": desc(found[0]),
        "desc_flip_largest": desc(found[1]),
        "desc_flipbox": desc(mirrored[0]),
        "desc_flipbox_largest": desc(mirrored[1]),
    }


def _describe_flipped_star(args: tuple) -> dict:
    return describe_flipped(*args)


def save_flip_chunk(folder: Path, recs: list[dict]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    name = folder / f"chunk_{time.time_ns()}.npz"
    tmp = name.with_suffix(".tmp.npz")
    arrays = {k: np.stack([r[k] for r in recs]).astype(np.float32) for k in recs[0] if k.startswith("desc")}
    np.savez(
        tmp,
        photo=np.array([r["photo"] for r in recs]),
        flip_faces=np.array([r["flip_faces"] for r in recs], dtype=np.int16),
        flip_box=np.array([r["flip_box"] for r in recs], dtype=np.int32),
        **arrays,
    )
    tmp.rename(name)


def run_flipped(root: Path, photos: list[str], upsample: int, jitter: int, workers: int) -> dict[str, dict]:
    """Describe the mirrored photos not cached yet (the setting's own cache must hold the photos); all records."""
    recs = load(setting_dir(upsample, jitter))
    missing = [p for p in photos if p not in recs or recs[p]["box"][0] < 0]
    if missing:
        raise SystemExit(f"{len(missing)} photos (e.g. {missing[0]}) are not described yet: run without --flip-photo")
    folder = flip_dir(upsample, jitter)
    todo = _todo(folder, photos)
    args = [(str(root), p, upsample, jitter, tuple(recs[p]["box"]), tuple(recs[p]["box_largest"])) for p in todo]
    _describe_in_chunks(_describe_flipped_star, args, workers, lambda chunk: save_flip_chunk(folder, chunk))
    return load(folder)


def _todo(folder: Path, photos: list[str]) -> list[str]:
    """The photos ``folder`` has no record of yet (printed with the count already cached)."""
    done = load(folder)
    todo = [p for p in photos if p not in done]
    print(f"{folder}: {len(done)} cached, {len(todo)} to do", flush=True)
    return todo


def _describe_in_chunks(describe: Callable[[tuple], dict], args: list[tuple], workers: int, save) -> None:
    """``describe`` every argument tuple in a process pool, saving each chunk as it finishes (a
    killed run keeps what it saved), with the rate and ETA."""
    started = time.monotonic()
    with ProcessPoolExecutor(max_workers=workers) as pool:
        for start in range(0, len(args), CHUNK):
            recs = list(pool.map(describe, args[start : start + CHUNK], chunksize=8))
            save(recs)
            n = start + len(recs)
            rate = n / (time.monotonic() - started)
            print(f"  {n}/{len(args)} photos, {rate:.2f}/s, eta {(len(args) - n) / rate / 60:.1f} min", flush=True)


def save_chunk(folder: Path, recs: list[dict]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    name = folder / f"chunk_{time.time_ns()}.npz"
    tmp = name.with_suffix(".tmp.npz")
    np.savez(
        tmp,
        photo=np.array([r["photo"] for r in recs]),
        faces=np.array([r["faces"] for r in recs], dtype=np.int16),
        fallback=np.array([r["fallback"] for r in recs], dtype=bool),
        box=np.array([r["box"] for r in recs], dtype=np.int32),
        box_largest=np.array([r["box_largest"] for r in recs], dtype=np.int32),
        desc=np.stack([r["desc"] for r in recs]).astype(np.float32),
        desc_mirror=np.stack([r["desc_mirror"] for r in recs]).astype(np.float32),
        desc_largest=np.stack([r["desc_largest"] for r in recs]).astype(np.float32),
    )
    tmp.rename(name)


def load(folder: Path) -> dict[str, dict]:
    """Every cached record of one setting, by photo path (later chunks override earlier ones)."""
    out: dict[str, dict] = {}
    for f in sorted(folder.glob("chunk_*[0-9].npz")):
        z = np.load(f)
        for i, photo in enumerate(z["photo"]):
            out[str(photo)] = {k: z[k][i] for k in z.files}
    return out


def run(
    root: Path, photos: list[str], upsample: int, jitter: int, mirror: bool, workers: int, folder: Path | None = None
) -> dict[str, dict]:
    """Describe every photo not cached yet in ``folder`` (default: the setting's cache folder); all records."""
    folder = folder or setting_dir(upsample, jitter)
    args = [(str(root), p, upsample, jitter, mirror) for p in _todo(folder, photos)]
    _describe_in_chunks(_describe_star, args, workers, lambda recs: save_chunk(folder, recs))
    return describe_fallbacks(root, photos, upsample, jitter, mirror, folder)


def describe_fallbacks(
    root: Path, photos: list[str], upsample: int, jitter: int, mirror: bool, folder: Path
) -> dict[str, dict]:
    """Describe the cached photos without a face with a fixed centre box; every record."""
    done = load(folder)
    # Photos where HOG found nothing: describe a fixed centre box, the median of the boxes found.
    found = np.array([r["box"] for r in done.values() if not r["fallback"] and r["box"][0] >= 0])
    missing = [p for p in photos if p in done and done[p]["box"][0] < 0]
    if missing and len(found):
        median_box = tuple(int(v) for v in np.median(found, axis=0))
        print(f"  {len(missing)} photos without a face: centre box {median_box}", flush=True)
        recs = [describe_one(str(root), p, upsample, jitter, mirror, median_box) for p in missing]
        save_chunk(folder, recs)
        done = load(folder)
    return done


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", type=Path, default=lfw.DEFAULT_ROOT)
    ap.add_argument("--subset", default="pairs", help="pairs (7,701 photos), all (13,233) or foldN (one fold)")
    ap.add_argument("--upsample", type=int, default=1)
    ap.add_argument("--jitter", type=int, default=1)
    ap.add_argument("--no-mirror", action="store_true", help="skip the mirrored-chip descriptor")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--fallbacks-only", action="store_true", help="only describe cached no-face photos (centre box)")
    ap.add_argument("--flip-photo", action="store_true", help="describe the mirrored photos (see the module doc)")
    a = ap.parse_args(argv)
    photos = lfw.subset_photos(a.root, a.subset)
    if a.flip_photo:
        run_flipped(a.root, photos, a.upsample, a.jitter, a.workers)
        return
    if a.fallbacks_only:
        describe_fallbacks(a.root, photos, a.upsample, a.jitter, not a.no_mirror, setting_dir(a.upsample, a.jitter))
        return
    run(a.root, photos, a.upsample, a.jitter, not a.no_mirror, a.workers)


if __name__ == "__main__":
    main()
