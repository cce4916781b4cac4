"""``megapixels``: the operator's command line.

megapixels index build DATASET_DIR|MANIFEST.csv --out INDEX_DIR [--shards N] [--workers N] [--dtype float16]
                       [--synthetic N [--synthetic-seed S]]
megapixels index calibrate INDEX_DIR [--from CALIBRATION_JSON]
megapixels search IMAGE --index INDEX_DIR [--top-k K]   (answers exactly what the kiosk would show)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from index import build, calibration, store
from index.gallery import Gallery
from messages import Result


def search_image(image: Path, index_dir: Path, k: int = 5) -> list[Result]:
    """Detect the largest face in ``image``, describe it and answer as the kiosk would (index/gallery.py)."""
    import faces

    found = faces.describe_largest(faces.read_image(image))
    if found is None:
        raise LookupError(f"no face found in {image}")
    _, descriptor = found
    gallery = Gallery(index_dir)
    try:
        return gallery.search(descriptor, k)
    finally:
        gallery.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="megapixels", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    idx = sub.add_parser("index", help="gallery index commands").add_subparsers(dest="action", required=True)
    b = idx.add_parser("build", help="build an index from <DATASET_DIR>/<identity>/<photo> or a CSV manifest")
    b.add_argument(
        "dataset", type=Path, help="a folder per identity (LFW, MegaFace) or a CSV: path,identity,url,licence"
    )
    b.add_argument("--out", type=Path, required=True)
    b.add_argument("--shards", type=int, default=2)
    b.add_argument("--workers", type=int, default=None, help="worker processes (default: all cores)")
    b.add_argument("--dtype", choices=store.DTYPES, default="float32", help="stored descriptor type")
    b.add_argument("--min-face-px", type=int, default=build.Quality.min_face_px)
    b.add_argument("--min-sharpness", type=float, default=build.Quality.min_sharpness)
    b.add_argument("--max-yaw", type=float, default=build.Quality.max_yaw)
    b.add_argument(
        "--upsample",
        type=int,
        choices=(0, 1, 2),
        default=build.Quality.upsample,
        help="HOG upsampling for photos without a sidecar box: 1 finds faces down to ~40 px; "
        "0 makes HOG ~3x faster (a whole build 1.2-1.8x) and is enough when faces are >= 80 px (LFW's are ~100 px)",
    )
    b.add_argument("--synthetic", type=int, default=0, help="add this many synthetic distractors (no photo)")
    b.add_argument("--synthetic-seed", type=int, default=1)
    c = idx.add_parser("calibrate", help="store a distance -> P(same person) calibration with an index")
    c.add_argument("index_dir", type=Path)
    c.add_argument("--from", dest="source", type=Path, default=calibration.DEFAULT, help="default: the LFW fit")
    s = sub.add_parser("search", help="the closest identities to the largest face in IMAGE, as JSON")
    s.add_argument("image", type=Path)
    s.add_argument("--index", type=Path, required=True)
    s.add_argument("--top-k", type=int, default=5)
    args = parser.parse_args(argv)
    try:
        if args.command == "index" and args.action == "calibrate":
            store.read_manifest(args.index_dir)
            if calibration.install(args.index_dir, args.source) is None:
                raise FileNotFoundError(f"{args.source} does not exist")
            print(f"calibration from {args.source} stored in {args.index_dir / calibration.FILENAME}", file=sys.stderr)
        elif args.command == "index":
            if args.shards < 1:
                parser.error("--shards must be at least 1")
            quality = build.Quality(args.min_face_px, args.min_sharpness, args.max_yaw, args.upsample)
            grow = {"count": args.synthetic, "seed": args.synthetic_seed} if args.synthetic else None
            report = build.build(args.dataset, args.out, args.shards, args.workers, True, args.dtype, quality, grow)
            summary = {k: v for k, v in report.items() if k != "rejected_files"}
            print(json.dumps(summary, indent=2))
            print(
                f"index written to {args.out}; rejected files listed in {args.out / 'build_report.json'}",
                file=sys.stderr,
            )
        else:
            results = search_image(args.image, args.index, args.top_k)
            print(json.dumps([dataclasses.asdict(r) for r in results], indent=2, allow_nan=False))
    except (OSError, ValueError, LookupError, store.IndexStoreError, calibration.CalibrationError) as e:
        print(f"megapixels: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(
            "megapixels: interrupted; finished photos are kept in the build journal, run again to continue",
            file=sys.stderr,
        )
        return 130
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
