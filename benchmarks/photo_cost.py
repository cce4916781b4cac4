"""What one photo costs an index build, stage by stage: sidecar box against the detector, per dlib.

    OPENBLAS_NUM_THREADS=1 .venv/bin/python -m benchmarks.photo_cost [--photos 100] [--upsample 1] \\
        [--fast-python .venv-fast/bin/python]

One process, one thread: the cost of one photo on one worker. The photos are
benchmarks.build_throughput's sample (megaface_sample photos with a sidecar, and the same files
from lfw/ without one, where the detector has to find the face). Each photo goes through the
steps of ``index.build.describe_photo``, timed one by one:

- ``read``: the photo's and the sidecar's bytes and their sha1 (the journal key);
- ``decode``: JPEG to RGB (``faces.decode_image``);
- ``box``: the sidecar's box parsed, or dlib's HOG detector (``--upsample``) and the largest face;
- ``landmarks+chip``: 5 landmarks, the yaw check, the aligned 150x150 chip and its sharpness;
- ``descriptor``: the 128-D network;

then, in a second pass over the same photos, ``describe_photo`` itself (its mean must be close
to the sum of the stages). Files are read once before timing (the page cache holds them, as it
would not for 4.2M photos: reading from disk or a network share comes on top). Mean and p50 in
ms; ``--fast-python`` repeats the whole measurement in that Python (the BLAS wheel of
``make kiosk-dlib``) in the same run.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import time
from pathlib import Path

import numpy as np

import faces
from benchmarks.build_throughput import PROJECT, Photo, child_env, dlib_label, sample
from index import build

STAGES = ("read", "decode", "box", "landmarks+chip", "descriptor")


def stage_times(photo: Path, boxes: str, quality: build.Quality) -> dict[str, float]:
    """Seconds per stage of ``describe_photo``'s work on one photo (the same calls, in order)."""
    import cv2

    from faces.chips import aligned_chip

    t0 = time.perf_counter()
    data = photo.read_bytes()
    hashlib.sha1(data).hexdigest()
    side = None
    if boxes == "sidecar":
        side = Path(str(photo) + ".json").read_bytes()
        hashlib.sha1(side).hexdigest()
    t1 = time.perf_counter()
    rgb = faces.decode_image(data, photo.name, quality.max_pixels)
    t2 = time.perf_counter()
    box = build.parse_sidecar(side) if side is not None else None
    if box is None:
        found = faces.detect(rgb, scale=1.0, upsample=quality.upsample)
        box = found[faces.largest(found)] if found else None
    t3 = time.perf_counter()
    if box is None:  # no face: the photo stops here, as in the build
        return {"read": t1 - t0, "decode": t2 - t1, "box": t3 - t2, "landmarks+chip": 0.0, "descriptor": 0.0}
    shape = faces.landmarks(rgb, box)
    faces.yaw(shape)
    chip = aligned_chip(rgb, shape)
    cv2.Laplacian(cv2.cvtColor(chip, cv2.COLOR_RGB2GRAY), cv2.CV_64F).var()
    t4 = time.perf_counter()
    faces.describe(chip)
    t5 = time.perf_counter()
    return {"read": t1 - t0, "decode": t2 - t1, "box": t3 - t2, "landmarks+chip": t4 - t3, "descriptor": t5 - t4}


def measure(photos: list[Photo], upsample: int) -> None:
    quality = build.Quality(upsample=upsample)
    label = dlib_label(faces.dlib_description())
    for p in photos:  # into the page cache, and the models loaded, before anything is timed
        p.sample_path.read_bytes()
        p.lfw_path.read_bytes()
    stage_times(photos[0].lfw_path, "detector", quality)
    load = os.getloadavg()[0]
    print(f"{label}, {len(photos)} photos, one process, one thread, load {load:.1f}", flush=True)
    print(f"  {'boxes':<9}" + "".join(f"{s:>18}" for s in (*STAGES, "sum", "describe_photo")) + "   photos/s")
    for boxes in ("sidecar", "detector"):
        paths = [p.sample_path if boxes == "sidecar" else p.lfw_path for p in photos]
        times = {s: [] for s in STAGES}
        for path in paths:
            for s, v in stage_times(path, boxes, quality).items():
                times[s].append(1000 * v)
        whole = []
        for path, p in zip(paths, photos, strict=True):
            t = time.perf_counter()
            outcome = build.describe_photo("/", build.Photo(str(path), p.identity), quality)
            whole.append(1000 * (time.perf_counter() - t))
            if outcome.box_from != ("sidecar" if boxes == "sidecar" else "detector") and outcome.ok:
                raise SystemExit(f"{path}: the box came from {outcome.box_from}, not the {boxes}")
        times["sum"] = list(np.sum([times[s] for s in STAGES], axis=0))
        times["describe_photo"] = whole
        cells = "".join(f"{np.mean(times[s]):>10.1f} ({np.median(times[s]):>5.1f})" for s in times)
        print(f"  {boxes:<9}{cells}   {1000 / np.mean(whole):>6.1f}", flush=True)
    print(f"  (ms per photo: mean (p50); load {load:.1f} before, {os.getloadavg()[0]:.1f} after)", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--photos", type=int, default=100, help="photos (of the 969 with a sidecar)")
    p.add_argument("--upsample", type=int, default=1, help="HOG upsampling for the detector (build --upsample)")
    p.add_argument("--fast-python", help="also measure in this Python (a venv with the BLAS wheel of make kiosk-dlib)")
    args = p.parse_args()
    measure(sample(args.photos), args.upsample)
    if args.fast_python:
        cmd = [args.fast_python, "-m", "benchmarks.photo_cost", "--photos", str(args.photos)]
        subprocess.run([*cmd, "--upsample", str(args.upsample)], cwd=PROJECT, env=child_env(), check=True)


if __name__ == "__main__":
    main()
