"""Build a gallery index from a dataset: detect, quality-filter, describe, store, publish.

Inputs (:func:`iter_photos`, which streams: the first photo comes before the walk has listed
the rest of the tree; :func:`dataset_root` is the folder paths are relative to):

- a folder per identity (LFW: ``<root>/<Person_Name>/<photo>.jpg``), or MegaFace's layout
  (``<root>/<3 digits>/<NSID>/<photo id>_<face>.jpg``): the identity is the photo's folder, and
  a folder named like an NSID (``12345678@N01``) gives the photo's Flickr account and its file
  name the photo id (index/flickr.py). A JSON sidecar ``<photo>.jpg.json`` with a
  ``bounding_box`` (x, y, width, height) names the face to use; without one the detector looks
  and the largest face is kept. Photos directly in the root have no identity: they are reported
  ("no identity folder").
- a CSV manifest with columns ``path, identity`` and optionally ``url, licence, nsid, photo_id,
  date_taken`` (paths relative to the CSV; a MegaFace-style path fills an empty nsid / photo_id).
- a Flickr photo metadata file (``photo_id, nsid, licence, date_taken``; ``--photo-metadata``, or
  ``flickr_metadata.csv`` in the dataset's root) fills in what a photo lacks, by photo id
  (index/photo_metadata.py). :func:`entry_for` makes each photo's stored row.

Every photo either becomes an entry or is rejected with one reason (:data:`REASONS`); the build
never stops on one bad file. :func:`describe_photo` is the whole per-photo work (a pure function
of the photo's file and the quality settings); :func:`describe_all` runs it over worker
processes (all cores by default), and is the one place that knows about the executor.

Nothing an operator does corrupts the index (index/publish.py): the build writes into a staging
folder beside ``--out`` under a lock (a second build into the same ``--out`` refuses at once),
checks the finished index as a matcher would open it, and only then swaps it in. Until then the
previous index is untouched and usable, and a running matcher keeps its (unlinked) files.

Opt-out (index/removals.py): photos that ``megapixels index remove`` removed from the index at
``--out`` are left out of its rebuild before anything is described, and the removals are carried
into the new index.

Resumable (index/journal.py): every finished photo is appended to the staging folder's journal,
keyed by the photo's content and the settings that decide its outcome, never by its path. Killed
at any point (even ``kill -9``), the next run drops a torn last line and describes only the
photos whose key is not in it, or in the journal of the index being replaced: nothing is done
twice, nothing is lost, and a changed photo or setting is described again. Duplicates (same
bytes) are resolved at the end in scan order, so the result doesn't depend on which worker
finished first.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import hashlib
import itertools
import json
import os
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from faces import IMAGE_SUFFIXES, MAX_PIXELS
from index import calibration, flickr, journal, photo_metadata, publish, removals, store
from index.journal import Outcome

JOURNAL = journal.FILENAME
REASONS = (
    "unreadable file",
    "too many pixels",
    "no identity folder",
    "no face",
    "face too small",
    "too blurred",
    "extreme pose",
    "duplicate photo",
)


@dataclass(frozen=True)
class Quality:
    """Rejection thresholds and detection settings: they decide each photo's outcome, so they are
    part of every journal key (index/journal.py) and recorded in the manifest's build parameters."""

    min_face_px: int = 40  # face box width in photo pixels
    min_sharpness: float = 6.0  # variance of the Laplacian of the grey 150x150 aligned chip
    max_yaw: float = 0.45  # |nose offset from the eyes' midpoint| / eye distance (0 = frontal)
    upsample: int = 1  # HOG upsampling (offline: take the accurate setting)
    max_pixels: int = MAX_PIXELS  # larger photos are refused from their header, never decoded

    def problems(self) -> list[str]:
        """Every setting out of range, named."""
        out = []
        if not 0 <= self.min_face_px <= 100_000:
            out.append(f"min_face_px must be 0 to 100000 pixels, got {self.min_face_px}")
        if not 0 <= self.min_sharpness < float("inf"):
            out.append(f"min_sharpness must be >= 0, got {self.min_sharpness}")
        if not 0 <= self.max_yaw < float("inf"):
            out.append(f"max_yaw must be >= 0, got {self.max_yaw}")
        if self.upsample not in (0, 1, 2):
            out.append(f"upsample must be 0, 1 or 2, got {self.upsample}")
        if not self.max_pixels >= 1:
            out.append(f"max_pixels must be >= 1, got {self.max_pixels}")
        return out


@dataclass(frozen=True)
class Photo:
    """One photo of the dataset and what the dataset says about it ("" where it says nothing)."""

    path: str  # relative to the dataset root
    identity: str  # "" for a photo directly in the root (or a CSV row without one): not indexed
    url: str = ""
    licence: str = ""
    nsid: str = ""  # the Flickr account: MegaFace's identity folder, a CSV column or the metadata file
    photo_id: str = ""  # the Flickr photo id: MegaFace's file name or a CSV column
    date_taken: str = ""  # a CSV column or the metadata file, as written there


MANIFEST_COLUMNS = ("path", "identity", "url", "licence", "nsid", "photo_id", "date_taken")


def dataset_root(source: Path) -> Path:
    """The folder photo paths are relative to: the dataset folder, or the folder of a CSV manifest.

    FileNotFoundError when ``source`` is neither an existing folder nor a ``.csv`` file.
    """
    source = Path(source)
    if source.is_file() and source.suffix.lower() == ".csv":
        return source.parent.resolve()
    if not source.is_dir():
        raise FileNotFoundError(f"dataset {source} does not exist (a folder, or a .csv manifest)")
    return source.resolve()


def iter_photos(source: Path, unreadable_folders: list[str] | None = None) -> Iterator[Photo]:
    """Every photo of ``source`` (a folder or a CSV manifest), lazily, in a stable order.

    A folder is walked with ``os.scandir`` one folder at a time, depth first: a folder's photos in
    name order, then its subfolders in name order (os.walk's top-down order, which builds before
    used). The first photo comes after listing only the folders on its way, so a 4.2M-photo
    dataset starts being described before the walk ends. A subfolder that can't be listed is
    skipped and named in ``unreadable_folders`` ("<folder>: <reason>"); symbolic links to
    folders are not followed. A CSV manifest is read row by row. Problems with ``source`` itself
    (missing, a CSV without the needed columns) raise here, before the first photo is asked for.

    A photo without an identity (directly in the root, or a CSV row with an empty identity) has
    identity ""; the build reports it as "no identity folder". A MegaFace-style path
    (``.../<NSID>/<photo id>_<face>.jpg``) gives the photo's ``nsid`` and ``photo_id``.
    """
    root = dataset_root(source)
    if Path(source).is_file():
        _check_csv(Path(source))
        return _read_csv(Path(source))
    skipped = unreadable_folders if unreadable_folders is not None else []
    return _walk(str(root), "", skipped)


def scan(source: Path, unreadable_folders: list[str] | None = None) -> tuple[Path, Iterator[Photo]]:
    """``(dataset_root(source), iter_photos(source))``: the root, and the photos as the walk finds them."""
    return dataset_root(source), iter_photos(source, unreadable_folders)


def _walk(folder: str, relative: str, unreadable: list[str]) -> Iterator[Photo]:
    try:
        with os.scandir(folder) as listing:
            found = list(listing)
    except OSError as e:
        if not relative:
            raise  # the dataset's root itself: nothing to build from
        unreadable.append(f"{relative}: {e.strerror or e}")
        return
    files, folders = [], []
    for entry in found:
        try:
            is_dir = entry.is_dir()  # follows a link, as os.walk does to tell folders from files
        except OSError:
            is_dir = False
        if is_dir:
            if not entry.is_symlink():
                folders.append(entry.name)
        elif os.path.splitext(entry.name)[1].lower() in IMAGE_SUFFIXES:
            files.append(entry.name)
    identity = os.path.basename(folder) if relative else ""  # a photo in the root has no identity folder
    for name in sorted(files):
        nsid, photo_id = flickr.from_layout(identity, name) if identity else ("", "")
        yield Photo(f"{relative}/{name}" if relative else name, identity, nsid=nsid, photo_id=photo_id)
    for name in sorted(folders):
        yield from _walk(os.path.join(folder, name), f"{relative}/{name}" if relative else name, unreadable)


def _check_csv(path: Path) -> None:
    with open(path, newline="", encoding="utf-8") as f:
        header = next(csv.reader(f), None) or []
    if not {"path", "identity"} <= set(header):
        raise ValueError(
            f"{path}: a CSV manifest needs columns path, identity (and optionally url, licence, nsid, photo_id, "
            f"date_taken); got {header}"
        )


def _read_csv(path: Path) -> Iterator[Photo]:
    """A CSV manifest's rows as photos; a path in MegaFace's layout fills an empty nsid / photo_id."""
    with open(path, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            if not row.get("path"):
                continue
            values = {c: (row.get(c) or "").strip() for c in MANIFEST_COLUMNS if c != "path"}
            folder, _, name = row["path"].replace("\\", "/").rpartition("/")
            nsid, photo_id = flickr.from_layout(folder.rpartition("/")[2], name)
            values["nsid"] = values["nsid"] or nsid
            values["photo_id"] = values["photo_id"] or photo_id
            yield Photo(row["path"], **values)


def with_photo_metadata(photos: Iterable[Photo], table: photo_metadata.PhotoMetadata) -> Iterator[Photo]:
    """``photos`` with the NSID, licence, date and URL they lack filled in from ``table`` by photo id."""
    for p in photos:
        row = table.match(p.photo_id, p.nsid)
        if row is not None:
            p = dataclasses.replace(
                p,
                nsid=p.nsid or row.nsid,
                licence=p.licence or row.licence,
                date_taken=p.date_taken or row.date_taken,
                url=p.url or row.url,
            )
        yield p


def read_sidecar(photo_path: Path) -> tuple[int, int, int, int] | None:
    """The face box (left, top, right, bottom) of a MegaFace-style ``<photo>.json`` sidecar, if any."""
    try:
        return parse_sidecar(journal.sidecar_path(photo_path).read_bytes())
    except OSError:
        return None


def parse_sidecar(data: bytes) -> tuple[int, int, int, int] | None:
    """The face box of a sidecar's bytes; None when it names no usable box (the detector decides)."""
    try:
        bb = json.loads(data).get("bounding_box")
        if isinstance(bb, dict):
            x, y, w, h = (float(bb[k]) for k in ("x", "y", "width", "height"))
        else:
            x, y, w, h = (float(v) for v in bb)
    except (ValueError, TypeError, KeyError, AttributeError):
        return None
    if not (w > 0 and h > 0) or not all(np.isfinite((x, y, w, h))):
        return None
    return round(x), round(y), round(x + w), round(y + h)


def describe_photo(root: str, photo: Photo, quality: Quality = Quality()) -> Outcome:
    """The chosen face's descriptor, or the reason there is none (runs in a worker process).

    A pure function of the photo's file, its sidecar and ``quality``: it knows nothing of the
    executor, the journal or the index, so any pool (processes, a cluster) can run it.
    """
    import cv2

    import faces
    from faces.chips import aligned_chip

    path = Path(root) / photo.path
    out = Outcome(photo.path, photo.identity, "", url=photo.url, licence=photo.licence)
    try:
        data = path.read_bytes()
    except OSError as e:
        out.reason, out.detail = "unreadable file", f"{photo.path}: {e.strerror or e}"
        return out
    out.sha1 = hashlib.sha1(data).hexdigest()
    try:
        side = journal.sidecar_path(path).read_bytes()
    except FileNotFoundError:
        side = None
    except OSError as e:
        out.reason, out.detail = "unreadable file", f"{photo.path}.json: {e.strerror or e}"
        return out
    out.sidecar_sha1 = hashlib.sha1(side).hexdigest() if side is not None else ""
    try:
        rgb = faces.decode_image(data, photo.path, quality.max_pixels)
    except faces.TooManyPixels as e:
        out.reason, out.detail = "too many pixels", str(e)
        return out
    except faces.ImageError as e:
        out.reason, out.detail = "unreadable file", str(e)
        return out
    box = parse_sidecar(side) if side is not None else None
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


def _worker_init(parent: int, inherited_fds: tuple[int, ...]) -> None:
    """In each worker: let go of the build's lock (a forked worker inherits its descriptor, and
    would hold the lock after the build died), and exit when the build process is gone (kill -9
    leaves workers waiting forever)."""
    import threading

    for fd in inherited_fds:
        with contextlib.suppress(OSError):
            os.close(fd)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def describe_all(
    root: Path, photos: list[Photo], quality: Quality, workers: int, inherited_fds: tuple[int, ...] = ()
) -> Iterator[Outcome]:
    """:func:`describe_photo` over ``photos`` in ``workers`` processes; outcomes as they finish.

    The only part of the build that knows the executor: the journal, the checks and the publish
    step consume this iterator, whatever runs the photos.
    """
    if not photos:
        return
    pool = ProcessPoolExecutor(max_workers=workers, initializer=_worker_init, initargs=(os.getpid(), inherited_fds))
    try:
        yield from pool.map(describe_photo, [str(root)] * len(photos), photos, [quality] * len(photos), chunksize=4)
    finally:  # on an error or Ctrl-C, drop the photos not started yet instead of finishing them all
        pool.shutdown(wait=True, cancel_futures=True)


def read_journal(path: Path) -> dict[str, Outcome]:
    """Finished photos of an interrupted build, by journal key; a torn last line is cut off."""
    return journal.read(path)


def photo_keys(
    root: Path, photos: list[Photo], settings_fingerprint: str, progress: bool = False
) -> tuple[dict[str, str], dict[str, str]]:
    """Each photo's journal key from its bytes and sidecar (read here, in the build process), and
    the photos that could not be read at all, with the reason."""
    keys: dict[str, str] = {}
    unreadable: dict[str, str] = {}
    for p in tqdm(photos, desc="hashing", unit="photo", disable=not progress, leave=False):
        path = root / p.path
        try:
            sha1 = journal.content_sha1(path)
            if not sha1:
                unreadable[p.path] = f"{p.path}: no such file"
                continue
            keys[p.path] = journal.key(sha1, journal.content_sha1(journal.sidecar_path(path)), settings_fingerprint)
        except OSError as e:
            unreadable[p.path] = f"{p.path}: {e.strerror or e}"
    return keys, unreadable


def check_arguments(n_shards: int, workers: int | None, dtype: str, quality: Quality, synthetic: dict | None) -> None:
    """ValueError naming every argument that is out of range (before any work or lock)."""
    problems = quality.problems()
    if not (isinstance(n_shards, int) and n_shards >= 1):
        problems.append(f"shards must be an integer >= 1, got {n_shards!r}")
    if workers is not None and not (isinstance(workers, int) and workers >= 1):
        problems.append(f"workers must be an integer >= 1, got {workers!r}")
    if dtype not in store.DTYPES:
        problems.append(f"dtype {dtype!r}: allowed {', '.join(store.DTYPES)}")
    if synthetic:
        count = synthetic.get("count", 0)
        if not (isinstance(count, int) and count >= 0):
            problems.append(f"synthetic count must be an integer >= 0, got {count!r}")
    if problems:
        raise ValueError("; ".join(problems))


def build(
    source: Path,
    out: Path,
    n_shards: int = 2,
    workers: int | None = None,
    progress: bool = True,
    dtype: str = "float32",
    quality: Quality = Quality(),
    synthetic: dict[str, Any] | None = None,
    log: Callable[[str], None] | None = None,
    metadata_csv: Path | None = None,
) -> dict:
    """Index every usable photo of ``source`` and publish it as ``out``; returns the build report.

    ``out`` is replaced as a whole, atomically, only once the new index is complete and checked
    (index/publish.py); a failing build leaves it as it was, and a killed one continues on the
    next run. ``synthetic`` (``{"count", "seed"}`` and optionally ``"model"``) grows the index
    with that many synthetic distractors, from a model fitted on this build's own descriptors by
    default. ``metadata_csv``: a Flickr photo metadata file joined in by photo id
    (index/photo_metadata.py); by default the dataset root's ``flickr_metadata.csv`` when there
    is one. ``log`` receives lines for the operator.
    """
    check_arguments(n_shards, workers, dtype, quality, synthetic)
    if metadata_csv is not None and not Path(metadata_csv).is_file():
        raise FileNotFoundError(f"photo metadata file {metadata_csv} does not exist")
    out = publish.target(out)
    with publish.BuildLock(out) as lock:
        unreadable: list[str] = []
        root, photos = scan(source, unreadable)
        first = next(photos, None)  # the walk stops at the first photo: no listing of the whole tree
        if first is None:
            raise ValueError(f"no images found in {source} (expected <root>/<identity>/<photo>.jpg or a CSV)")
        publish.check_replaceable(out)
        staging = publish.prepare_staging(out)
        if log:
            log(f"building in {staging}; published as {out} once complete and checked")
        with _metadata_join(root, metadata_csv, staging, log) as join:
            # Photos removed from the index being replaced (megapixels index remove) stay out: never
            # described, never journaled. Removals made while this build runs are carried at publish.
            removed = removals.read(out) if out.is_dir() else []
            todo, opted_out = removals.left_out(removed, join(itertools.chain([first], photos)))
            if log and opted_out:
                log(f"{len(opted_out)} photos left out: removed from {out} ({removals.FILENAME})")
            lock_fds = (lock.fd,) if lock.fd is not None else ()
            outcomes, counts = describe_with_journal(staging, out, root, todo, quality, workers, progress, lock_fds)
        counts["photo_metadata"] = join.stats.to_json() if join.stats else None
        counts["unreadable_folders"] = unreadable
        counts["opted_out"] = len(opted_out)
        if log and join.stats:
            log(join.stats.summary())
        if log and unreadable:
            log(f"{len(unreadable)} folders could not be listed and were skipped: {'; '.join(unreadable[:3])}")
        report = write_index(staging, source, root, todo, outcomes, counts, n_shards, dtype, quality, synthetic)
        publish.publish(staging, out)
    return report


class _Join:
    """The photo metadata join of one build: a pass-through without a metadata file."""

    def __init__(self, table: photo_metadata.PhotoMetadata | None):
        self.table = table
        self.stats = table.stats if table else None

    def __call__(self, photos: Iterable[Photo]) -> Iterator[Photo]:
        return with_photo_metadata(photos, self.table) if self.table else iter(photos)


@contextlib.contextmanager
def _metadata_join(
    root: Path, metadata_csv: Path | None, staging: Path, log: Callable[[str], None] | None
) -> Iterator[_Join]:
    """The metadata file given, else ``flickr_metadata.csv`` in the dataset's root, imported into
    the staging folder for the scan to join; its table is deleted at the end (no part of the index)."""
    path = Path(metadata_csv) if metadata_csv is not None else root / photo_metadata.FILENAME
    if not path.is_file():
        yield _Join(None)
        return
    if log:
        why = "given with --photo-metadata" if metadata_csv is not None else "found in the dataset's root"
        log(f"joining photo metadata by photo id from {path} ({why})")
    started = time.monotonic()
    table = photo_metadata.PhotoMetadata(path, staging / photo_metadata.TABLE_FILE)
    if log:
        log(f"{table.stats.rows:,} metadata rows imported in {time.monotonic() - started:.1f} s")
    try:
        yield _Join(table)
    finally:
        table.close()


def describe_with_journal(
    staging: Path,
    out: Path,
    root: Path,
    todo: list[Photo],
    quality: Quality,
    workers: int | None,
    progress: bool,
    lock_fds: tuple[int, ...] = (),
) -> tuple[list[Outcome], dict[str, Any]]:
    """Every photo's outcome, in scan order: from the journals when its key is there (this
    build's own in ``staging``, then the one of the index at ``out``), else described now and
    journaled as it arrives. Also the counts for the report."""
    settings_fingerprint = journal.fingerprint(asdict(quality))
    named = [p for p in todo if p.identity]
    keys, unreadable = photo_keys(root, named, settings_fingerprint, progress)
    known = journal.read(staging / JOURNAL)  # this build's own, from a run that was killed
    previous = journal.read(out / JOURNAL, repair=False) if out.is_dir() else {}  # the index being replaced
    wanted = set(keys.values())
    carried = [o for k, o in previous.items() if k in wanted and k not in known]
    remaining, queued = [], set()
    for p in named:
        k = keys.get(p.path)
        if k and k not in known and k not in previous and k not in queued:
            remaining.append(p)  # one photo per key: copies of the same bytes are described once
            queued.add(k)
    resumed = sum(1 for p in named if keys.get(p.path) in known or keys.get(p.path) in previous)
    workers = workers or os.cpu_count() or 1
    by_key = dict(known)  # the outcome for each key computed here (a described file may change meanwhile)
    started = time.monotonic()
    with journal.Writer(staging / JOURNAL) as writer:
        for o in carried:
            writer.append(o)
            by_key[o.key] = o
        bar = tqdm(
            describe_all(root, remaining, quality, workers, lock_fds),
            total=len(todo),
            initial=len(todo) - len(remaining),
            desc="indexing",
            unit="photo",
            disable=not progress,
        )
        for outcome in bar:
            outcome.key = journal.key(outcome.sha1, outcome.sidecar_sha1, settings_fingerprint)
            writer.append(outcome)
            by_key[keys[outcome.photo]] = outcome
    seconds = time.monotonic() - started
    # The journal the index keeps: one line per key this build uses (stale lines of killed builds
    # of other datasets and copies are left out), written beside and renamed over.
    used = {keys[p.path]: by_key[keys[p.path]] for p in named if p.path in keys}
    compact = staging / (JOURNAL + ".tmp")
    with journal.Writer(compact) as writer:
        for o in used.values():
            if o.key:
                writer.append(o)
    os.replace(compact, staging / JOURNAL)
    outcomes = []
    for p in todo:
        if not p.identity:
            o = Outcome(p.path, "", "no identity folder", url=p.url, licence=p.licence, detail=NO_IDENTITY)
        elif p.path in unreadable:
            o = Outcome(p.path, p.identity, "unreadable file", url=p.url, licence=p.licence, detail=unreadable[p.path])
        else:
            o = journal.relabel(by_key[keys[p.path]], p.path, p.identity, p.url, p.licence)
        outcomes.append(o)
    first_of: dict[str, str] = {}
    for o in outcomes:  # scan order: the first copy of a photo stays, later copies are duplicates
        if o.ok and o.sha1:
            if o.sha1 in first_of:
                o.reason, o.detail = "duplicate photo", f"same bytes as {first_of[o.sha1]}"
            else:
                first_of[o.sha1] = o.photo
    counts = {
        "described_this_run": len(remaining),
        "resumed_from_journal": resumed,
        "reused_from_previous_index": len(carried),
        "seconds": round(seconds, 1),
        "photos_per_s": round(len(remaining) / seconds, 2) if remaining and seconds > 0 else None,
        "workers": workers,
        "settings_fingerprint": settings_fingerprint,
    }
    return outcomes, counts


def entry_for(photo: Photo, outcome: Outcome) -> store.Entry:
    """The metadata row stored for an accepted photo: the face box from its outcome, everything the
    dataset says about it (identity, URL, licence, Flickr account, photo id, date) from the scan.

    The one place that decides what a row holds; ValueError when ``outcome`` is another photo's.
    """
    if outcome.photo != photo.path:
        raise ValueError(f"the outcome of {outcome.photo} was paired with the photo {photo.path}")
    return store.Entry(
        photo.identity,
        photo.path,
        outcome.box,
        photo.url,
        photo.licence,
        nsid=photo.nsid,
        photo_id=photo.photo_id,
        date_taken=photo.date_taken,
    )


NO_IDENTITY = "directly in the dataset's root (or a CSV row without identity): put it in <root>/<identity>/ to index it"


def write_index(
    staging: Path,
    source: Path,
    root: Path,
    todo: list[Photo],
    outcomes: list[Outcome],
    counts: dict[str, Any],
    n_shards: int,
    dtype: str,
    quality: Quality,
    synthetic: dict[str, Any] | None,
) -> dict:
    """Write the complete index (shards, metadata, manifest, report, calibration) into ``staging``."""
    kept = [o for o in outcomes if o.ok]
    if not kept:
        raise ValueError(f"no usable face in any of the {len(todo)} images of {source}")
    fingerprint = counts.pop("settings_fingerprint")
    report = {
        "dataset": str(source),
        "photos": len(todo),
        "indexed": len(kept),
        "identities": len({o.identity for o in kept}),
        "rejected": dict(Counter(o.reason for o in outcomes if not o.ok)),
        "rejected_files": [{"photo": o.photo, "reason": o.reason, "detail": o.detail} for o in outcomes if not o.ok],
        "several_faces_kept_largest": [o.photo for o in kept if o.faces > 1 and o.box_from == "detector"],
        "boxes_from_sidecars": sum(o.box_from == "sidecar" for o in kept),
        **counts,
    }
    descriptors = np.stack([o.descriptor for o in kept]).astype(np.float32)
    entries = [entry_for(p, o) for p, o in zip(todo, outcomes, strict=True) if o.ok]
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
        "settings_fingerprint": fingerprint,
        "dtype": dtype,
        "shards": n_shards,
        "face_choice": "sidecar box, else largest",
    }
    store.write(staging, descriptors, entries, n_shards, provenance, dtype, synthetic, parameters)
    (staging / "build_report.json").write_text(json.dumps(report, indent=2))
    calibration.install(staging)  # distance -> P(same person), fitted on LFW (see ACCURACY.md)
    return report
