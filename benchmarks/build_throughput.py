"""Index build throughput on real LFW photos, with all cores (the build's own worker pool).

    .venv/bin/python -m benchmarks.build_throughput [--photos 600] [--workers 2] [--upsample 1,0]

Builds the first N photos of LFW (a fixed shuffled order, as benchmarks.lfw_descriptors) laid out
as a CSV manifest into a temporary folder and prints photos/s, the dlib in use (prebuilt or BLAS)
and the machine load, since the machine is shared. Once per HOG upsampling setting asked for
(``megapixels index build --upsample``), in the same run; the naive baseline next to them is
face_recognition's defaults (load, HOG upsample 1, face_encodings) on one core over the same
photos, times the number of workers.
"""

from __future__ import annotations

import argparse
import csv
import os
import tempfile
import time
from pathlib import Path

import faces
from benchmarks import lfw_descriptors
from index import build


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--photos", type=int, default=600)
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    p.add_argument("--upsample", default="1,0", help="HOG upsampling settings to build with, in order")
    p.add_argument("--baseline-photos", type=int, default=60, help="photos for the face_recognition baseline")
    args = p.parse_args()
    photos = lfw_descriptors.photo_order()[: args.photos]
    print(f"{faces.dlib_description()}, {args.workers} workers, {len(photos)} LFW photos")
    for upsample in (int(u) for u in args.upsample.split(",")):
        with tempfile.TemporaryDirectory() as tmp:
            manifest = Path(tmp) / "lfw.csv"
            with open(manifest, "w", newline="") as f:
                w = csv.writer(f)
                w.writerow(["path", "identity", "url", "licence"])
                for photo in photos:
                    w.writerow([str(lfw_descriptors.LFW / photo.path), photo.identity, "", "LFW: research use"])
            load_before = os.getloadavg()[0]
            t = time.monotonic()
            quality = build.Quality(upsample=upsample)
            report = build.build(
                manifest, Path(tmp) / "idx", n_shards=2, workers=args.workers, dtype="float16", quality=quality
            )
            seconds = time.monotonic() - t
        print(
            f"  megapixels index build, HOG upsample {upsample}: {report['indexed']} of {report['photos']} indexed "
            f"in {seconds:.1f} s = {report['photos'] / seconds:.1f} photos/s "
            f"(load {load_before:.1f} before, {os.getloadavg()[0]:.1f} after)"
        )
    rate = _face_recognition_rate(photos[: args.baseline_photos])
    print(
        f"  face_recognition defaults, 1 process: {rate:.2f} photos/s; x {args.workers} workers at best: "
        f"{rate * args.workers:.1f} photos/s"
    )


def _face_recognition_rate(photos: list) -> float:
    """face_recognition's defaults, one photo after another: the naive way to build a gallery."""
    import face_recognition

    t = time.monotonic()
    for photo in photos:
        image = face_recognition.load_image_file(lfw_descriptors.LFW / photo.path)
        face_recognition.face_encodings(image)
    return len(photos) / (time.monotonic() - t)


if __name__ == "__main__":
    main()
