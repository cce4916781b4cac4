"""Detector + encoder on real clips, next to face_recognition.face_encodings on the same frames.

For every (sampled) frame of each clip, scaled to 640 px wide as the camera does:

- ours: the detector's default path (HOG on a half-size copy, min face 40 px), landmarks and
  the aligned chip, then the 128-D descriptor: p50 / p95 per stage and per face;
- baseline, in the same run on the same frames: ``face_recognition.face_encodings(rgb)`` with its
  defaults (HOG upsample 1 on the full frame, 5-point landmarks, 1 jitter).

Detection rate: of the frames where either finds a face ("frames that contain one"), the share
where each finds one. Prints which dlib is active (BLAS or not) and the machine load.

    .venv/bin/python -m benchmarks.pipeline                       # three talking-head clips
    .venv/bin/python -m benchmarks.pipeline --every 2 --clips obama_2s.mp4
    # with the fast dlib from `make kiosk` without installing it:
    PYTHONPATH=<unpacked wheel> OPENBLAS_NUM_THREADS=1 .venv/bin/python -m benchmarks.pipeline
"""

from __future__ import annotations

import argparse
import os
import time
import warnings
from pathlib import Path

import numpy as np

import config
import faces
from actors.camera import sources
from faces import find_faces

CLIPS = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "clips"
DEFAULT_CLIPS = ("obama_2s.mp4", "ocasio_cortez_8s.mp4", "katie_hill_8s.mp4")


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def row(name: str, ms: list[float]) -> str:
    return f"  {name:<44} p50 {pct(ms, 50):7.1f} ms   p95 {pct(ms, 95):7.1f} ms   n={len(ms)}"


def run_clip(path: Path, every: int, detector_cfg: dict) -> dict:
    warnings.filterwarnings("ignore", message="pkg_resources is deprecated")
    import face_recognition

    src = sources.open_source(str(path), 10)
    t = {k: [] for k in ("detect", "chip", "describe", "per_face", "baseline")}
    ours_found = base_found = either = frames = 0
    i = -1
    while (got := src.read()) is not None:
        i += 1
        if i % every:
            continue
        rgb = sources.fit_width(got[0], 640)
        frames += 1
        t0 = time.perf_counter()
        boxes = find_faces(rgb, detector_cfg)
        t1 = time.perf_counter()
        face_ms = 0.0
        if boxes:
            visitor = max(boxes, key=lambda b: (b[2] - b[0]) * (b[3] - b[1]))
            chip = faces.face_chip(rgb, visitor)
            t2 = time.perf_counter()
            faces.describe(chip)
            t3 = time.perf_counter()
            t["chip"].append((t2 - t1) * 1000)
            t["describe"].append((t3 - t2) * 1000)
            face_ms = (t3 - t0) * 1000
            t["per_face"].append(face_ms)
        t["detect"].append((t1 - t0) * 1000)
        b0 = time.perf_counter()
        baseline = face_recognition.face_encodings(rgb)
        t["baseline"].append((time.perf_counter() - b0) * 1000)
        ours_found += bool(boxes)
        base_found += bool(baseline)
        either += bool(boxes) or bool(baseline)
    src.close()
    return {"frames": frames, "ours": ours_found, "base": base_found, "either": either, "size": rgb.shape, **t}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clips", nargs="*", default=list(DEFAULT_CLIPS))
    parser.add_argument("--every", type=int, default=1, help="use every n-th frame")
    args = parser.parse_args()
    d = config.validate({})["detector"]
    threads = os.environ.get("OPENBLAS_NUM_THREADS", "-")
    print(f"active dlib: {faces.dlib_description()}; OPENBLAS_NUM_THREADS={threads}")
    print(f"machine load before: {os.getloadavg()[0]:.2f} (1-min average, {os.cpu_count()} cores)")
    print(f"ours: {d['method']} scale {d['scale']} upsample {d['upsample']} min_face {d['min_face_px']} px")
    faces.load_models()
    every_face, every_base = [], []
    for name in args.clips:
        r = run_clip(CLIPS / name, args.every, d)
        every_face += r["per_face"]
        every_base += r["baseline"]
        h, w = r["size"][:2]
        print(f"\n{name} ({w}x{h}, {r['frames']} frames, every {args.every}):")
        print(row("ours: detect", r["detect"]))
        print(row("ours: landmarks + aligned chip", r["chip"]))
        print(row("ours: descriptor", r["describe"]))
        print(row("ours: detector + encoder, per face", r["per_face"]))
        print(row("face_recognition.face_encodings (defaults)", r["baseline"]))
        e = max(1, r["either"])
        print(
            f"  frames with a face (found by either): {r['either']}; ours found {r['ours']} "
            f"({100 * r['ours'] / e:.1f} %), baseline {r['base']} ({100 * r['base'] / e:.1f} %)"
        )
    print("\nall clips:")
    print(row("ours: detector + encoder, per face", every_face))
    print(row("face_recognition.face_encodings (defaults)", every_base))
    if every_face:
        print(f"  ratio of p50: {pct(every_base, 50) / pct(every_face, 50):.1f}x")
        ours, base = 1000 / np.mean(every_face), 1000 / np.mean(every_base)
        print(f"  throughput, one process: ours {ours:.1f} faces/s, baseline {base:.1f} frames/s")
    print(f"machine load after: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
