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
of the photo's file and the quality settings); :func:`describe_batch` keys and describes a batch
of photos where they are read. Dask distributed runs the batches (index/engine.py, the one module
that knows it): a LocalCluster of worker processes on this machine's cores by default, or an
existing cluster (``scheduler="tcp://HOST:8786"``, ``megapixels index build --scheduler``), whose
workers must see the dataset at the same path as the driver (checked at start: every worker
hashes one photo).

Streaming, for MegaFace's 4.2M photos: the listing is drawn lazily as the workers have room (a
bounded number of batches in flight), so photos are described from the first ones listed on; a
photo's bytes are hashed by the worker that reads it (no serial hashing pass in the driver); each
outcome is appended to the journal as it arrives, and the index is written from the journal in
scan order, block by block (store.write_blocks). What the driver keeps per photo is small, and
said here plainly: the photo itself in an unnamed temporary file, and in memory 26 bytes (its
line's offset in the journal, two flags, 16 bytes of its sha1: :class:`_Ledger`) plus 30-45 bytes
per journaled key (its line's offset by a 128-bit digest of the key, journal.KeyOffsets): ~0.3 GB
at 4.2M photos, against the several GB of descriptors and outcomes the driver held before; and,
for the report, the rejected photos and the identities' names. The workers get the journaled
keys once, as a sorted array of 8 bytes per key (~34 MB at 4.2M). Not streamed: ``--synthetic``
without a model fits it on every descriptor at once.

Nothing an operator does corrupts the index (index/publish.py): the build writes into a staging
folder beside ``--out`` under a lock (a second build into the same ``--out`` refuses at once),
checks the finished index as a matcher would open it, and only then swaps it in. Until then the
previous index is untouched and usable, and a running matcher keeps its (unlinked) files.

Opt-out (index/removals.py): photos that ``megapixels index remove`` removed from the index at
``--out`` are left out of its rebuild before anything is described, and the removals are carried
into the new index.

Resumable (index/journal.py): every finished photo is appended to the staging folder's journal,
keyed by the photo's content and the settings that decide its outcome, never by its path. Killed
at any point (even ``kill -9``; a LocalCluster's workers exit with the driver), the next run drops
a torn last line and skips every photo whose key is in it, or in the journal of the index being
replaced (whose line is copied over): the workers compute each photo's key and describe only the
photos whose key no journal holds. Nothing is done twice, nothing is lost, and a changed photo or
setting is described again. A worker that dies mid-batch has its batch redone by Dask on another
worker; the result reaches the driver once, and a key is never journaled twice (copies of the
same bytes described at the same time are journaled once). Duplicates (same bytes) are resolved
at the end in scan order, so the result doesn't depend on which worker finished first.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import hashlib
import itertools
import json
import os
import pickle
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
from tqdm import tqdm

from faces import IMAGE_SUFFIXES, MAX_PIXELS
from index import calibration, engine, flickr, journal, photo_metadata, publish, removals, store
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


def warm_up() -> None:
    """Load dlib's models: once in each worker process, before its first photo."""
    import faces

    faces.load_models()


@dataclass(frozen=True)
class Known:
    """A photo whose journal key is already in a journal (this build's or the replaced index's)."""

    key: str
    sha1: str


def describe_batch(
    photos: list[Photo], root: str, quality: Quality, settings_fingerprint: str, known: np.ndarray | None
) -> list[Outcome | Known]:
    """Each photo's outcome with its journal key, or :class:`Known` when its key is in ``known``.

    Runs where the photos are read (a worker): each photo's key is computed there from its bytes
    and its sidecar's, and a photo whose key a journal already holds (``known``: the sorted low 64
    bits of every journaled key's :func:`journal.digest`) is not described again. Pure, like
    :func:`describe_photo`: no executor, journal or index.
    """
    results: list[Outcome | Known] = []
    for photo in photos:
        if known is not None and len(known):
            path = Path(root) / photo.path
            try:
                sha1 = journal.content_sha1(path)
                key = journal.key(sha1, journal.content_sha1(journal.sidecar_path(path)), settings_fingerprint)
            except OSError:
                sha1, key = "", ""  # describe_photo says why
            if key:
                low = np.uint64(journal.digest(key) & journal.MASK64)
                i = int(np.searchsorted(known, low))
                if i < len(known) and known[i] == low:
                    results.append(Known(key, sha1))
                    continue
        outcome = describe_photo(root, photo, quality)
        outcome.key = journal.key(outcome.sha1, outcome.sidecar_sha1, settings_fingerprint)
        results.append(outcome)
    return results


def read_journal(path: Path) -> dict[str, Outcome]:
    """Finished photos of an interrupted build, by journal key; a torn last line is cut off."""
    return journal.read(path)


def check_arguments(
    n_shards: int,
    workers: int | None,
    dtype: str,
    quality: Quality,
    synthetic: dict | None,
    scheduler: str | None = None,
) -> None:
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
    if scheduler is not None and (problem := engine.address_problem(scheduler)):
        problems.append(problem)
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
    scheduler: str | None = None,
    log: Callable[[str], None] | None = None,
    metadata_csv: Path | None = None,
) -> dict:
    """Index every usable photo of ``source`` and publish it as ``out``; returns the build report.

    ``out`` is replaced as a whole, atomically, only once the new index is complete and checked
    (index/publish.py); a failing build leaves it as it was, and a killed one continues on the
    next run. The photos are described on Dask (index/engine.py): a LocalCluster of ``workers``
    processes (default: one per core) when ``scheduler`` is None, else the cluster whose scheduler
    is at that address (``tcp://HOST:PORT``; ``workers``: how many to wait for). ``synthetic``
    (``{"count", "seed"}`` and optionally ``"model"``) grows the index with that many synthetic
    distractors, from a model fitted on this build's own descriptors by default.
    ``metadata_csv``: a Flickr photo metadata file joined in by photo id (index/photo_metadata.py);
    by default the dataset root's ``flickr_metadata.csv`` when there is one. ``log`` receives
    lines for the operator.
    """
    check_arguments(n_shards, workers, dtype, quality, synthetic, scheduler)
    if metadata_csv is not None and not Path(metadata_csv).is_file():
        raise FileNotFoundError(f"photo metadata file {metadata_csv} does not exist")
    out = publish.target(out)
    with publish.BuildLock(out):
        unreadable: list[str] = []
        root, photos, total = _photos(source, unreadable)
        head = list(itertools.islice(photos, PROBE_AMONG))  # the walk stops here: no listing of the whole tree
        if not head:
            raise ValueError(f"no images found in {source} (expected <root>/<identity>/<photo>.jpg or a CSV)")
        publish.check_replaceable(out)
        # Photos removed from the index being replaced (megapixels index remove) stay out: never
        # described, never journaled. Removals made while this build runs are carried at publish.
        removed = removals.read(out) if out.is_dir() else []
        opted_out: list[Photo] = []
        staging = publish.prepare_staging(out)
        if log:
            log(f"building in {staging}; published as {out} once complete and checked")
        with _metadata_join(root, metadata_csv, staging, log) as join, tempfile.TemporaryFile(dir=staging) as spool:
            ledger = _Ledger(spool)
            todo = removals.without(removed, join(itertools.chain(head, photos)), opted_out)
            counts = describe_with_journal(
                staging, out, source, root, head, todo, total, ledger, quality, workers, scheduler, progress, log,
            )  # fmt: skip
            counts["photo_metadata"] = join.stats.to_json() if join.stats else None
            counts["unreadable_folders"] = unreadable
            counts["opted_out"] = len(opted_out)
            if log and join.stats:
                log(join.stats.summary())
            if log and unreadable:
                log(f"{len(unreadable)} folders could not be listed and were skipped: {'; '.join(unreadable[:3])}")
            if log and opted_out:
                log(f"{len(opted_out)} photos left out: removed from {out} ({removals.FILENAME})")
            report = write_index(staging, source, root, ledger, counts, n_shards, dtype, quality, synthetic)
        compact_journal(staging, ledger)
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


PROBE_AMONG = 100  # the photo every worker must read alike is the first readable one of these


def _photos(source: Path, unreadable: list[str] | None = None) -> tuple[Path, Iterator[Photo], int | None]:
    """The dataset root, its photos in scan order (drawn lazily), and their number when known now
    (folders that could not be listed are appended to ``unreadable``)."""
    root, photos = scan(source, unreadable)
    return root, iter(photos), len(photos) if hasattr(photos, "__len__") else None


def _count_in_background(source: Path, bar: tqdm, stop: threading.Event) -> None:
    """Set the progress bar's total (and so its ETA) once a second listing of ``source`` is counted."""

    def count() -> None:
        n = 0
        for _ in _photos(source)[1]:
            n += 1
            if stop.is_set():
                return
        bar.total = n
        bar.refresh()

    threading.Thread(target=count, name="count photos", daemon=True).start()


class _Ledger:
    """What the driver keeps of each photo while the index is built, in scan order.

    In memory, 26 bytes a photo (~110 MB at 4.2M photos): where its outcome's line starts in the
    staging journal, whether that line has a key, whether the photo is usable, and the first 16
    bytes of its sha1 (to find copies of the same bytes). The photos themselves (paths,
    identities, metadata) go to ``spool``, an unnamed temporary file, and are read back in order.
    No outcome or descriptor is kept: they are read back from the journal when the index is written.
    """

    def __init__(self, spool: IO[bytes]):
        self.spool = spool
        self.n = 0
        self.offset = np.zeros(0, np.int64)
        self.keyed = np.zeros(0, bool)
        self.ok = np.zeros(0, bool)
        self.sha = np.zeros(0, "S16")
        self.list_hash = hashlib.sha256()  # of every path, "\n"-joined: the manifest's provenance

    def add(self, photo: Photo) -> int:
        if self.n == len(self.offset):
            grow = max(4096, self.n)
            self.offset = np.concatenate([self.offset, np.full(grow, -1, np.int64)])
            self.keyed = np.concatenate([self.keyed, np.zeros(grow, bool)])
            self.ok = np.concatenate([self.ok, np.zeros(grow, bool)])
            self.sha = np.concatenate([self.sha, np.zeros(grow, "S16")])
        pickle.dump(photo, self.spool, protocol=pickle.HIGHEST_PROTOCOL)
        self.list_hash.update((("\n" if self.n else "") + photo.path).encode())
        self.n += 1
        return self.n - 1

    def set(self, seq: int, offset: int, outcome: Outcome) -> None:
        self.offset[seq] = offset
        self.keyed[seq] = bool(outcome.key)
        self.ok[seq] = outcome.ok
        self.sha[seq] = bytes.fromhex(outcome.sha1)[:16] if outcome.sha1 else b""

    def photos(self) -> Iterator[Photo]:
        """Every photo again, in scan order."""
        self.spool.seek(0)
        for _ in range(self.n):
            yield pickle.load(self.spool)

    def copies(self) -> dict[int, int]:
        """Usable photos with the same bytes as an earlier usable one: photo -> the first copy."""
        usable = np.flatnonzero(self.ok[: self.n])
        _, first, inverse = np.unique(self.sha[usable], return_index=True, return_inverse=True)
        firsts = usable[first[inverse]]
        later = firsts != usable
        return dict(zip(usable[later].tolist(), firsts[later].tolist(), strict=True))


def describe_with_journal(
    staging: Path,
    out: Path,
    source: Path,
    root: Path,
    head: list[Photo],
    photos: Iterator[Photo],
    total: int | None,
    ledger: _Ledger,
    quality: Quality,
    workers: int | None,
    scheduler: str | None,
    progress: bool,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Every photo's outcome into the staging journal, its place in ``ledger``; returns the counts
    for the report. An outcome comes from the journals when its key is there (this build's own in
    ``staging``, then the one of the index at ``out``, whose line is copied over), else it is
    described now by the workers and journaled as it arrives."""
    settings_fingerprint = journal.fingerprint(asdict(quality))
    own = journal.offsets(staging / JOURNAL)  # this build's own, from a run that was killed
    previous = journal.offsets(out / JOURNAL, repair=False) if (out / JOURNAL).is_file() else journal.KeyOffsets()
    known = np.unique(np.concatenate([own.lows(), previous.lows()]))
    counts = Counter()
    with contextlib.ExitStack() as stack:
        writer = stack.enter_context(journal.Writer(staging / JOURNAL))
        mine = stack.enter_context(journal.Lines(staging / JOURNAL))
        theirs = stack.enter_context(journal.Lines(out / JOURNAL)) if len(previous) else None
        cluster = stack.enter_context(engine.connect(scheduler, workers, log))
        probe = _probe(root, head)
        cluster.prepare(warm_up, known, probe)
        if probe:
            cluster.check_path(*probe)
        n_workers = cluster.threads
        if log:
            dashboard = f"; dashboard {cluster.dashboard}" if cluster.dashboard else ""
            log(f"describing on {n_workers} Dask worker threads ({cluster.where}){dashboard}")
        bar = stack.enter_context(tqdm(total=total, desc="indexing", unit="photo", disable=not progress))
        stop_counting = threading.Event()
        stack.callback(stop_counting.set)
        if total is None and progress:
            _count_in_background(source, bar, stop_counting)

        def named() -> Iterator[tuple[int, Photo]]:
            for photo in photos:
                seq = ledger.add(photo)
                if photo.identity:
                    yield seq, photo
                else:
                    bar.update(1)

        started = time.monotonic()
        args = (str(root), quality, settings_fingerprint)
        for batch, results in cluster.stream(describe_batch, named(), args, send=lambda item: item[1]):
            for (seq, photo), result in zip(batch, results, strict=True):
                if isinstance(result, Known):
                    d = journal.digest(result.key)
                    if (at := own.get(d)) is not None:
                        ledger.set(seq, at, mine.at(at))
                        counts["resumed"] += 1
                    elif (there := previous.get(d)) is not None and theirs is not None:
                        own[d] = at = writer.append_raw(theirs.raw(there))
                        ledger.set(seq, at, theirs.at(there))
                        counts["resumed"] += 1
                        counts["reused"] += 1
                    else:  # the 64-bit filter matched a key no journal holds (~1 in 10^7 photos at 4.2M)
                        result = describe_batch([photo], *args, None)[0]
                if isinstance(result, Outcome):
                    d = journal.digest(result.key) if result.key else None
                    if d is not None and (at := own.get(d)) is not None:  # a copy of the same bytes, done meanwhile
                        ledger.set(seq, at, result)
                    else:
                        at = writer.append(result)
                        ledger.set(seq, at, result)
                        if d is not None:
                            own[d] = at
                            counts["described"] += 1
                bar.update(1)
        seconds = time.monotonic() - started
    described = counts["described"]
    return {
        "described_this_run": described,
        "resumed_from_journal": counts["resumed"],
        "reused_from_previous_index": counts["reused"],
        "seconds": round(seconds, 1),
        "photos_per_s": round(described / seconds, 2) if described and seconds > 0 else None,
        "workers": n_workers,
        "settings_fingerprint": settings_fingerprint,
    }


def _probe(root: Path, head: list[Photo]) -> tuple[str, str] | None:
    """(absolute path, sha1) of the first of ``head`` this machine can read: every worker must read it alike."""
    for photo in head:
        path = str(root / photo.path)
        sha1 = engine.file_sha1(path)
        if not sha1.startswith("cannot read"):
            return path, sha1
    return None


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
BLOCK_ROWS = 4096  # rows handed to the store at a time


def write_index(
    staging: Path,
    source: Path,
    root: Path,
    ledger: _Ledger,
    counts: dict[str, Any],
    n_shards: int,
    dtype: str,
    quality: Quality,
    synthetic: dict[str, Any] | None,
) -> dict:
    """Write the complete index (shards, metadata, manifest, report, calibration) into ``staging``.

    The outcomes are read back from the staging journal in scan order, block by block, straight
    into the shard files and the metadata (store.write_blocks): no descriptor is held beyond a
    block, but for ``synthetic`` without a model, which is fitted on all of them at once.
    """
    copies = ledger.copies()
    usable = ledger.ok[: ledger.n].copy()
    usable[list(copies)] = False
    n_real = int(usable.sum())
    if not n_real:
        raise ValueError(f"no usable face in any of the {ledger.n} images of {source}")
    rejected: list[dict[str, str]] = []
    several: list[str] = []
    from_sidecars = 0
    identities: set[str] = set()
    passes = 0

    def outcomes() -> Iterator[tuple[Photo, Outcome]]:
        """Every photo's outcome in scan order, as the index keeps it (relabelled, copies marked)."""
        first_path: dict[int, str] = {}
        wanted = set(copies.values())
        with journal.Lines(staging / JOURNAL) as lines:
            for seq, p in enumerate(ledger.photos()):
                at = int(ledger.offset[seq])
                if at < 0:
                    o = Outcome(p.path, "", "no identity folder", url=p.url, licence=p.licence, detail=NO_IDENTITY)
                else:
                    o = journal.relabel(lines.at(at), p.path, p.identity, p.url, p.licence)
                if seq in wanted:
                    first_path[seq] = p.path
                if seq in copies:
                    o.reason, o.detail = "duplicate photo", f"same bytes as {first_path[copies[seq]]}"
                yield p, o

    def blocks() -> Iterator[tuple[np.ndarray, list[store.Entry]]]:
        nonlocal passes, from_sidecars
        first = passes == 0
        rows: list[np.ndarray] = []
        entries: list[store.Entry] = []
        for p, o in outcomes():
            if first and not o.ok:
                rejected.append({"photo": o.photo, "reason": o.reason, "detail": o.detail})
            if not o.ok:
                continue
            if first:
                identities.add(o.identity)
                from_sidecars += o.box_from == "sidecar"
                if o.faces > 1 and o.box_from == "detector":
                    several.append(o.photo)
            rows.append(o.descriptor)
            entries.append(entry_for(p, o))
            if len(rows) == BLOCK_ROWS:
                yield np.stack(rows).astype(np.float32), entries
                rows, entries = [], []
        if rows:
            yield np.stack(rows).astype(np.float32), entries
        passes += 1

    fingerprint = counts.pop("settings_fingerprint")
    if synthetic and synthetic.get("count", 0) > 0 and "model" not in synthetic:
        from index import synthetic as synth

        real = [(rows, [e.identity for e in entries]) for rows, entries in blocks()]
        descriptors = np.concatenate([r for r, _ in real])
        model = synth.fit(descriptors, [i for _, ids in real for i in ids], source=f"this build: {source}")
        synthetic = {**synthetic, "model": model}
        del real, descriptors
    import faces

    provenance = {
        "dataset": str(source),
        "dataset_root": str(root),
        "photos": ledger.n,
        "dataset_sha256_of_list": ledger.list_hash.hexdigest(),
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
    store.write_blocks(staging, blocks, n_real, n_shards, provenance, dtype, synthetic, parameters)
    report = {
        "dataset": str(source),
        "photos": ledger.n,
        "indexed": n_real,
        "identities": len(identities),
        "rejected": dict(Counter(r["reason"] for r in rejected)),
        "rejected_files": rejected,
        "several_faces_kept_largest": several,
        "boxes_from_sidecars": from_sidecars,
        **counts,
    }
    (staging / "build_report.json").write_text(json.dumps(report, indent=2))
    calibration.install(staging)  # distance -> P(same person), fitted on LFW (see ACCURACY.md)
    return report


def compact_journal(staging: Path, ledger: _Ledger) -> None:
    """The journal the index keeps: one line per key this build uses (lines of killed builds of
    other datasets, and unkeyed ones, are left out), written beside and renamed over."""
    n = ledger.n
    used = np.unique(ledger.offset[:n][ledger.keyed[:n]])
    path, compact = staging / JOURNAL, staging / (JOURNAL + ".tmp")
    with open(path, "rb") as lines, journal.Writer(compact) as writer:
        at, i = 0, 0
        for raw in lines:
            if i < len(used) and used[i] == at:
                writer.append_raw(raw)
                i += 1
            at += len(raw)
    os.replace(compact, path)
