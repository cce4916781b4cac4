"""``megapixels``: the operator's command line.

megapixels index build DATASET_DIR|MANIFEST.csv --out INDEX_DIR [--shards N] [--workers N] [--dtype float16]
                       [--synthetic N [--synthetic-seed S]] [--max-megapixels MP] [--photo-metadata CSV]
                       [--scheduler tcp://HOST:8786]
                       (CSV: photo_id,nsid,licence,date_taken joined in by photo id; by default the
                       dataset root's flickr_metadata.csv when there is one)
megapixels index calibrate INDEX_DIR [--from CALIBRATION_JSON]
megapixels index remove INDEX_DIR --account NSID | --identity NAME | --photo PATH
                       (opt-out: recorded beside the shards, honoured by the running kiosk within a second)
megapixels index compact INDEX_DIR   (writes the index again without the removed rows, atomically)
megapixels index add-codes INDEX_DIR (writes the bounded kernel's codes beside an existing index's shards)
megapixels search IMAGE --index INDEX_DIR [--top-k K] [--max-megapixels MP] [--enrolled-share P]
                       (answers exactly what the kiosk would show; P defaults to the index.enrolled_share
                       setting of $MEGAPIXELS_CONFIG, else config/demo.toml, as the actors read it)

A build writes beside INDEX_DIR (.INDEX_DIR.building) and replaces INDEX_DIR only once the new
index is complete and checked; a second build into the same INDEX_DIR refuses at once. A build
leaves out the photos removed from the INDEX_DIR it replaces, and keeps the removals recorded. The
photos are described on Dask: this machine's cores (--workers processes), or the cluster whose
scheduler is at --scheduler, whose workers must see the dataset at the same path as this machine.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
from collections.abc import Callable
from pathlib import Path

import config
from faces import MAX_PIXELS
from index import build, calibration, engine, optout, publish, removals, store
from index.gallery import Gallery
from messages import Result


def search_image(
    image: Path,
    index_dir: Path,
    k: int = 5,
    max_pixels: int | None = MAX_PIXELS,
    enrolled_share: float | None = None,
) -> list[Result]:
    """Detect the largest face in ``image``, describe it and answer as the kiosk would (index/gallery.py).

    The image's size is checked from its header first (faces.TooManyPixels), then the index is
    opened (IndexStoreError), and only then are faces looked for. ``enrolled_share``: the prior of
    p_same (None: the setting's kiosk default).
    """
    import faces

    rgb = faces.read_image(image, max_pixels)
    gallery = Gallery(index_dir, enrolled_share)
    try:
        found = faces.describe_largest(rgb)
        if found is None:
            raise LookupError(f"no face found in {image}")
        return gallery.search(found[1], k)
    finally:
        gallery.close()


def _number(kind: Callable[[str], float], low: float, high: float = math.inf, what: str = "") -> Callable[[str], float]:
    """An argparse type: ``kind`` of the text, within [low, high], or a message that says so."""

    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {what or kind.__name__}") from None
        if not (low <= value <= high):  # also refuses nan
            span = f">= {low:g}" if high == math.inf else f"from {low:g} to {high:g}"
            raise argparse.ArgumentTypeError(f"must be {span}, got {text}")
        return value

    return parse


def _text(what: str) -> Callable[[str], str]:
    """An argparse type: a text that is not empty."""

    def parse(text: str) -> str:
        if not text.strip():
            raise argparse.ArgumentTypeError(f"must be {what}, not empty")
        return text.strip()

    return parse


COUNT = _number(int, 1, what="an integer")
MEGAPIXELS = _number(float, 0.01, 10_000, what="a number of megapixels")


def _add_max_megapixels(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--max-megapixels",
        type=MEGAPIXELS,
        default=MAX_PIXELS / 1e6,
        help=f"refuse larger images from their header, before decoding (default {MAX_PIXELS / 1e6:g})",
    )


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="megapixels", description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = top.add_subparsers(dest="command", required=True)
    idx = sub.add_parser("index", help="gallery index commands").add_subparsers(dest="action", required=True)
    b = idx.add_parser("build", help="build an index from <DATASET_DIR>/<identity>/<photo> or a CSV manifest")
    b.add_argument(
        "dataset",
        type=Path,
        help="a folder per identity (LFW, MegaFace) or a CSV: path,identity[,url,licence,nsid,photo_id,date_taken]",
    )
    b.add_argument("--out", type=Path, required=True, help="the index folder (replaced as a whole when complete)")
    b.add_argument("--shards", type=COUNT, default=2)
    b.add_argument(
        "--workers",
        type=COUNT,
        default=None,
        help="Dask worker processes on this machine (default: one per core); with --scheduler, "
        "how many of the cluster's workers to wait for (default 1)",
    )
    b.add_argument(
        "--scheduler",
        default=None,
        metavar="tcp://HOST:PORT",
        help="describe the photos on the Dask cluster whose scheduler is there (its workers must see the "
        "dataset at the same path); default: a local cluster on this machine's cores",
    )
    b.add_argument("--dtype", choices=store.DTYPES, default="float32", help="stored descriptor type")
    b.add_argument("--min-face-px", type=_number(int, 0, 100_000, "an integer"), default=build.Quality.min_face_px)
    b.add_argument("--min-sharpness", type=_number(float, 0, what="a number"), default=build.Quality.min_sharpness)
    b.add_argument("--max-yaw", type=_number(float, 0, what="a number"), default=build.Quality.max_yaw)
    b.add_argument(
        "--upsample",
        type=int,
        choices=(0, 1, 2),
        default=build.Quality.upsample,
        help="HOG upsampling for photos without a sidecar box: 1 finds faces down to ~40 px; "
        "0 makes HOG ~3x faster (a whole build 1.2-1.8x) and is enough when faces are >= 80 px (LFW's are ~100 px)",
    )
    _add_max_megapixels(b)
    b.add_argument(
        "--synthetic",
        type=_number(int, 0, what="an integer"),
        default=0,
        help="add this many synthetic distractors (no photo)",
    )
    b.add_argument("--synthetic-seed", type=_number(int, 0, what="an integer"), default=1)
    b.add_argument(
        "--photo-metadata",
        type=Path,
        default=None,
        metavar="CSV",
        help="Flickr photo metadata (photo_id, nsid, licence, date_taken) joined in by photo id "
        "(default: flickr_metadata.csv in the dataset's root, when there is one)",
    )
    c = idx.add_parser("calibrate", help="store a distance -> P(same person) calibration with an index")
    c.add_argument("index_dir", type=Path)
    c.add_argument("--from", dest="source", type=Path, default=calibration.DEFAULT, help="default: the LFW fit")
    r = idx.add_parser(
        "remove",
        help="opt-out: remove an account's, a person's or one photo's rows; the running kiosk honours it "
        "within a second, and later builds of INDEX_DIR leave them out",
    )
    r.add_argument("index_dir", type=Path)
    what = r.add_mutually_exclusive_group(required=True)
    what.add_argument("--account", type=_text("an NSID"), help="a Flickr account (NSID), e.g. 12345678@N01")
    what.add_argument("--identity", type=_text("a name"), help="an identity as the index names it")
    what.add_argument(
        "--photo", type=_text("a path"), help="a photo: its path in the dataset (as `megapixels search` shows it)"
    )
    a = idx.add_parser(
        "add-codes", help="write the bounded search kernel's int8 codes and error bounds beside INDEX_DIR's shards"
    )
    a.add_argument("index_dir", type=Path)
    m = idx.add_parser("compact", help="write INDEX_DIR again without its removed rows (atomically)")
    m.add_argument("index_dir", type=Path)
    s = sub.add_parser("search", help="the closest identities to the largest face in IMAGE, as JSON")
    s.add_argument("image", type=Path)
    s.add_argument("--index", type=Path, required=True)
    s.add_argument("--top-k", type=_number(int, 1, 1000, "an integer"), default=5)
    _add_max_megapixels(s)
    s.add_argument(
        "--enrolled-share",
        type=_number(float, 1e-9, 1.0, "a share"),
        default=None,
        help="share of visitors expected to be in the dataset, the prior of p_same "
        "(default: the index.enrolled_share setting of the config the actors would read)",
    )
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    say = lambda line: print(f"megapixels: {line}", file=sys.stderr)  # noqa: E731
    try:
        if args.command == "index" and args.action == "calibrate":
            store.read_manifest(args.index_dir)
            with publish.BuildLock(publish.target(args.index_dir)):  # not while a build replaces the folder
                if calibration.install(args.index_dir, args.source) is None:
                    raise FileNotFoundError(f"{args.source} does not exist")
            say(f"calibration from {args.source} stored in {args.index_dir / calibration.FILENAME}")
        elif args.command == "index" and args.action == "remove":
            kind = next(k for k in removals.KINDS if getattr(args, k) is not None)
            done = optout.remove(args.index_dir, kind, getattr(args, kind))
            print(json.dumps(done, indent=2))
            say(_removed_line(done))
        elif args.command == "index" and args.action == "add-codes":
            store.read_manifest(args.index_dir)
            with publish.BuildLock(publish.target(args.index_dir)):  # not while a build replaces the folder
                manifest = store.add_codes(args.index_dir)
            assert manifest.codes is not None
            print(json.dumps({"index": str(args.index_dir), "codes": [c.codes for c in manifest.codes.shards]}))
            say(f"codes written beside the {len(manifest.shards)} shards of {args.index_dir}: searched by 'bounded'")
        elif args.command == "index" and args.action == "compact":
            done = optout.compact(args.index_dir, log=say)
            print(json.dumps(done, indent=2))
            if done["written"]:
                say(f"{args.index_dir} written again without its {done['rows_removed']} removed rows")
            else:
                say(f"nothing to compact: no row of {args.index_dir} is removed")
        elif args.command == "index":
            quality = build.Quality(
                args.min_face_px, args.min_sharpness, args.max_yaw, args.upsample, round(args.max_megapixels * 1e6)
            )
            grow = {"count": args.synthetic, "seed": args.synthetic_seed} if args.synthetic else None
            report = build.build(
                args.dataset,
                args.out,
                args.shards,
                args.workers,
                True,
                args.dtype,
                quality,
                grow,
                scheduler=args.scheduler,
                log=say,
                metadata_csv=args.photo_metadata,
            )
            summary = {k: v for k, v in report.items() if k != "rejected_files"}
            print(json.dumps(summary, indent=2))
            say(f"index written to {args.out}; rejected files listed in {args.out / 'build_report.json'}")
        else:
            share = args.enrolled_share
            if share is None:
                share = config.load()["index"]["enrolled_share"]
            results = search_image(args.image, args.index, args.top_k, round(args.max_megapixels * 1e6), share)
            print(json.dumps([dataclasses.asdict(r) for r in results], indent=2, allow_nan=False))
    except (
        OSError,
        ValueError,
        LookupError,
        store.IndexStoreError,
        calibration.CalibrationError,
        publish.BuildLocked,
        removals.RemovalsError,
        engine.EngineError,
    ) as e:
        say(str(e))
        return 1
    except KeyboardInterrupt:
        say("interrupted; finished photos are kept in the build journal, run again to continue")
        return 130
    return 0


def _removed_line(done: dict) -> str:
    """What ``index remove`` tells the operator."""
    ((kind, value),) = done["asked"].items()
    note = ""
    if kind == "account" and done["matched_against"] == "identity":
        note = (
            " (this index's metadata has no nsid column: the account was matched against the identity, "
            "which in MegaFace's layout is the account's folder)"
        )
    if done["rows_matched"] == 0:
        return (
            f"nothing matched --{kind} {value} in {done['index']}{note}; the removal is recorded all the same: "
            "later builds of this index leave such photos out"
        )
    already = done["rows_matched"] - done["rows_removed"]
    before = f", {already} of its rows removed before" if already else ""
    return (
        f"removed {done['rows_removed']} rows (--{kind} {value}{before})"
        f" from {done['index']}{note}; the running kiosk stops showing them within a second; "
        "`megapixels index compact` deletes them from the files"
    )


if __name__ == "__main__":
    raise SystemExit(main())
