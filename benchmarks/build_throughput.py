"""Index build throughput on real LFW photos, with all cores (the build's own worker pool).

    .venv/bin/python -m benchmarks.build_throughput [--photos 600] [--workers 2]

Builds the first N photos of LFW (a fixed shuffled order, as benchmarks.lfw_descriptors) laid out
as a CSV manifest into a temporary folder and prints photos/s, the dlib in use (prebuilt or BLAS)
and the machine load, since the machine is shared.
"""

from __future__ import annotations

import argparse
import csv
import os
import tempfile
import time
from pathlib import Path

from actors import vision
from benchmarks import lfw_descriptors
from index import build


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--photos", type=int, default=600)
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = p.parse_args()
    photos = lfw_descriptors.photo_order()[: args.photos]
    with tempfile.TemporaryDirectory() as tmp:
        manifest = Path(tmp) / "lfw.csv"
        with open(manifest, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["path", "identity", "url", "licence"])
            for photo in photos:
                w.writerow([str(lfw_descriptors.LFW / photo.path), photo.identity, "", "LFW: research use"])
        load_before = os.getloadavg()[0]
        t = time.monotonic()
        report = build.build(manifest, Path(tmp) / "idx", n_shards=2, workers=args.workers, dtype="float16")
        seconds = time.monotonic() - t
    print(
        f"{vision.dlib_description()}: {report['photos']} LFW photos, {report['indexed']} indexed, "
        f"{seconds:.1f} s with {args.workers} workers = {report['photos'] / seconds:.1f} photos/s "
        f"(load {load_before:.1f} before, {os.getloadavg()[0]:.1f} after)"
    )


if __name__ == "__main__":
    main()
