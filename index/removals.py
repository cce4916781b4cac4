"""Opt-out without a rebuild: the removals recorded beside an index's shards, and how they are honoured.

``megapixels index remove INDEX_DIR --account NSID | --identity NAME | --photo PATH`` appends one
line to ``INDEX_DIR/removals.jsonl``::

    {"asked": {"identity": "barack_obama"}, "at": "2026-11-27T10:15:03Z", "index": "3f0c…", "rows": [247, 248, 249]}

what was asked (one of :data:`KINDS`) and when, never who asked; ``rows`` are the rows it selected
in the index whose :func:`index_id` is ``index`` (``[]`` when nothing matched: the request is kept
all the same, so a later build does not add those photos). The file is the one file of an index
that changes after it is published, and it is never rewritten in place either: each removal
writes the whole file anew beside it and renames it over (readers see the old file or the new
one, never half a line), under a flock on ``.<name>.removals.lock`` beside the folder, which the
publishing step of a build or a compaction holds too while it swaps the folder (so a removal lands
in the index that is published, never in the one being replaced: index/publish.py).

Who honours it, within a second, without a restart (:class:`Watch`: one ``stat()`` per check,
the file re-read only when it changed):

- each matcher, before every batch of queries and after every poll: the removed rows of each
  shard it serves are masked out of the search, and :func:`topk_without` looks deeper than k
  exactly as far as needed, so the shard still answers its k nearest *remaining* rows;
- the reducer and ``megapixels search`` (index/gallery.py): removed rows are dropped before the
  merge (a matcher that has not seen the removal yet costs that result a row, never shows it),
  and the calibration counts the rows that remain;
- the dataset facts on screen and on the receipt (index/photos.py): photos and people without the
  removed ones.

A line whose ``index`` is not the reader's own index (a build or ``index compact`` replaced the
folder while a matcher still serves the index it opened) is resolved again by what was asked,
against the reader's own metadata, which :class:`Watch` opened with the index: a removal is never
skipped because the rows moved.

The build of the same ``--out`` reads the removals of the index it replaces and leaves those
photos out before anything is described (its journal then holds no line for them, so no later
build can reuse one); the publishing step carries every line into the new index, resolved against
its rows (:func:`carry`). ``megapixels index compact`` writes the index without the removed rows
(index/compact.py); the removals stay recorded for the builds to come.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from index import store

FILENAME = "removals.jsonl"
KINDS = ("account", "identity", "photo")
LOCK_SUFFIX = ".removals.lock"
LOCK_WAIT_S = 30.0  # a publish holds the lock for one swap (milliseconds); a removal waits this long at most
FIRST_EXTRA = 64  # the first search looks k + min(removed, this) deep; deeper only when that was not enough
SQL_CHUNK = 900  # values per IN (...) list: below SQLite's smallest limit on bound parameters


class RemovalsError(RuntimeError):
    """A removals file that can't be used; the text names the file and the line."""


@dataclass(frozen=True)
class Removal:
    """One line of removals.jsonl: what was asked, when, and the rows it selected in one index."""

    kind: str  # one of KINDS
    value: str  # the NSID, identity or photo path (relative to the dataset root) asked for
    at: str  # UTC, ISO 8601, to the second
    index: str = ""  # index_id() of the index ``rows`` belong to
    rows: tuple[int, ...] = ()

    def to_json(self) -> str:
        asked = {"asked": {self.kind: self.value}, "at": self.at, "index": self.index, "rows": list(self.rows)}
        return json.dumps(asked, ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str, where: str) -> Removal:
        """The removal on one line; RemovalsError naming ``where`` and what is wrong."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise RemovalsError(f"{where}: not JSON ({e})") from None
        if not isinstance(data, dict):
            raise RemovalsError(f"{where}: must be a JSON object")
        asked = data.get("asked")
        if not (isinstance(asked, dict) and len(asked) == 1 and next(iter(asked)) in KINDS):
            raise RemovalsError(f"{where}: key 'asked' must be an object with one of {', '.join(KINDS)}")
        (kind, value), at, index, rows = next(iter(asked.items())), data.get("at"), data.get("index"), data.get("rows")
        if not (isinstance(value, str) and value.strip()):
            raise RemovalsError(f"{where}: key 'asked.{kind}' must be a non-empty string")
        if not isinstance(at, str) or not isinstance(index, str):
            raise RemovalsError(f"{where}: keys 'at' and 'index' must be strings")
        if not (
            isinstance(rows, list) and all(isinstance(r, int) and not isinstance(r, bool) and r >= 0 for r in rows)
        ):
            raise RemovalsError(f"{where}: key 'rows' must be a list of row numbers >= 0")
        return cls(kind, value, at, index, tuple(rows))


def now_utc() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def index_id(manifest: store.Manifest) -> str:
    """A short digest that tells this index from any other (a build or a compaction makes a new one).
    The codes (``megapixels index add-codes``) are left out: adding them changes no row."""
    text = json.dumps({k: v for k, v in manifest.to_json().items() if k != "codes"}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# --- the file --------------------------------------------------------------------------------------


def read(index_dir: Path) -> list[Removal]:
    """The removals recorded in ``index_dir`` ([] when there are none); RemovalsError when unreadable."""
    path = Path(index_dir) / FILENAME
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    except (OSError, UnicodeDecodeError) as e:
        raise RemovalsError(f"{path} can't be read: {e}") from e
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [Removal.from_json(line, f"{path} line {n}") for n, line in enumerate(lines, start=1)]


def write(index_dir: Path, removals: Sequence[Removal]) -> None:
    """Replace ``index_dir``'s removals.jsonl with ``removals``: written beside, synced, renamed over.

    The caller holds the :class:`Lock` of the folder (or owns a staging folder nobody reads).
    """
    path = Path(index_dir) / FILENAME
    tmp = path.with_name(FILENAME + ".tmp")
    data = "".join(r.to_json() + "\n" for r in removals).encode()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def lock_path(out: Path) -> Path:
    """``.<name>.removals.lock`` beside the index folder ``out`` (absolute, as publish.target gives it)."""
    return out.parent / f".{out.name}{LOCK_SUFFIX}"


class Lock:
    """An exclusive flock() on ``.<out>.removals.lock``, waited for up to ``wait_s``.

    Held by a removal while it reads and rewrites removals.jsonl, and by publishing while it
    carries the file into the new index and swaps the folders: short, unlike a build's lock, so a
    removal is never refused because a build is running; it waits for a swap at most.
    """

    def __init__(self, out: Path, wait_s: float = LOCK_WAIT_S):
        self.path = lock_path(out)
        self.wait_s = wait_s
        self.fd: int | None = None

    def __enter__(self) -> Lock:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + self.wait_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    os.close(fd)
                    raise RemovalsError(
                        f"{self.path} stayed locked for {self.wait_s:.0f} s (an index is being published, "
                        "or a removal is stuck): try again"
                    ) from None
                time.sleep(0.01)
        self.fd = fd
        return self

    def __exit__(self, *_: object) -> None:
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)  # the file stays: deleting a lock file races the next one's open()
            self.fd = None


# --- which rows a removal selects ---------------------------------------------------------------------
# The account (Flickr NSID) of a row. Until the metadata has an ``nsid`` column (index build from
# MegaFace's layout, FlickrFinal2/<3 digits>/<NSID>/<photo id>_<face>.jpg, or a CSV column), the
# identity stands for it: in MegaFace's layout the identity folder IS the NSID. These two functions
# are the only places that know; switch them when every index has the column.


def account_column(columns: Iterable[str]) -> str:
    """The metadata column a removal ``--account`` is matched against: ``nsid`` when there is one."""
    return "nsid" if "nsid" in set(columns) else "identity"


def photo_account(identity: str, photo: str, nsid: str = "") -> str:
    """The account of a dataset photo (a build's scan, a journal line): its NSID when known, else
    its identity (MegaFace's layout: the identity folder is the NSID)."""
    return nsid or identity


def selects(removal: Removal, identity: str, photo: str, account: str) -> bool:
    """Whether ``removal`` selects a photo with this identity, path (relative to the dataset root) and account."""
    if removal.kind == "identity":
        return identity == removal.value
    if removal.kind == "photo":
        return photo == removal.value
    return account == removal.value


def without(removals: Sequence[Removal], photos: Iterable[Any], left_out: list[Any]) -> Iterator[Any]:
    """The ``photos`` no removal selects, drawn lazily (a build streams its scan through this);
    the others are appended to ``left_out``."""
    if not removals:
        yield from photos
        return
    by_kind = {kind: {r.value for r in removals if r.kind == kind} for kind in KINDS}
    for p in photos:
        account = photo_account(p.identity, p.path, getattr(p, "nsid", "") or "")
        if p.identity in by_kind["identity"] or p.path in by_kind["photo"] or account in by_kind["account"]:
            left_out.append(p)
        else:
            yield p


def meta_columns(con: sqlite3.Connection) -> set[str]:
    return {row[1] for row in con.execute("PRAGMA table_info(entries)")}


def resolve(con: sqlite3.Connection, removals: Sequence[Removal]) -> list[list[int]]:
    """Each removal's rows in the index whose metadata ``con`` reads (one query per kind and chunk
    of values: the photo column has no index, so a photo removal costs one scan of the table)."""
    column = {"identity": "identity", "photo": "photo", "account": account_column(meta_columns(con))}
    rows_of: dict[tuple[str, str], list[int]] = {}
    for kind in KINDS:
        values = sorted({r.value for r in removals if r.kind == kind})
        for at in range(0, len(values), SQL_CHUNK):
            chunk = values[at : at + SQL_CHUNK]
            marks = ",".join("?" * len(chunk))
            query = f"SELECT row, {column[kind]} FROM entries WHERE {column[kind]} IN ({marks}) ORDER BY row"
            for row, value in con.execute(query, chunk):
                rows_of.setdefault((kind, value), []).append(int(row))
    return [rows_of.get((r.kind, r.value), []) for r in removals]


def removed_rows(
    removals: Sequence[Removal],
    this_index: str,
    real: int,
    con: sqlite3.Connection | None,
    cache: dict[tuple[str, str], list[int]] | None = None,
) -> np.ndarray:
    """The sorted, distinct real rows of the index ``this_index`` that ``removals`` remove.

    A line recorded for this index gives its rows; any other line is resolved again by what it
    asked, against ``con`` (this index's metadata), once per ``cache`` (this index's rows of each
    thing asked never change). RemovalsError when a row is out of range.
    """
    cache = {} if cache is None else cache
    found: list[int] = []
    foreign = []
    for r in removals:
        if r.index == this_index:
            found.extend(r.rows)
        elif (r.kind, r.value) in cache:
            found.extend(cache[(r.kind, r.value)])
        else:
            foreign.append(r)
    if foreign:
        if con is None:
            raise RemovalsError("removals recorded for another index, and no metadata to resolve them against")
        for r, rows in zip(foreign, resolve(con, foreign), strict=True):
            cache[(r.kind, r.value)] = rows
            found.extend(rows)
    rows = np.unique(np.asarray(found, np.int64))
    if len(rows) and (rows[0] < 0 or rows[-1] >= real):
        raise RemovalsError(f"row {int(rows[-1])} is not a real row of this index (it has {real}): wrong index?")
    return rows


def people_removed(con: sqlite3.Connection, rows: np.ndarray) -> int:
    """How many identities have every one of their rows among ``rows``."""
    removed: dict[str, int] = {}
    for at in range(0, len(rows), SQL_CHUNK):
        chunk = [int(r) for r in rows[at : at + SQL_CHUNK]]
        marks = ",".join("?" * len(chunk))
        for identity, n in con.execute(
            f"SELECT identity, COUNT(*) FROM entries WHERE row IN ({marks}) GROUP BY identity", chunk
        ):
            removed[identity] = removed.get(identity, 0) + n
    names = sorted(removed)
    whole = 0
    for at in range(0, len(names), SQL_CHUNK):
        chunk = names[at : at + SQL_CHUNK]
        marks = ",".join("?" * len(chunk))
        query = f"SELECT identity, COUNT(*) FROM entries WHERE identity IN ({marks}) GROUP BY identity"
        whole += sum(1 for identity, n in con.execute(query, chunk) if n == removed[identity])
    return whole


def open_metadata(index_dir: Path) -> sqlite3.Connection | None:
    """A read-only connection to the index's meta.sqlite, opened now (it keeps reading this index's
    file after a build replaces the folder); None when there is none (the store's checks say why)."""
    path = Path(index_dir) / "meta.sqlite"
    if not path.is_file():
        return None
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)


# --- the mask and the exact deeper top-k ---------------------------------------------------------------


def local_rows(removed: np.ndarray, start: int, stop: int) -> np.ndarray:
    """The removed rows of the shard holding global rows [start, stop), as its local row numbers (sorted)."""
    lo, hi = np.searchsorted(removed, [start, stop])
    return removed[lo:hi] - start


def is_removed(rows: np.ndarray, removed: np.ndarray) -> np.ndarray:
    """A boolean array the shape of ``rows``: which of them are in the sorted array ``removed``."""
    if len(removed) == 0:
        return np.zeros(np.shape(rows), bool)
    at = np.minimum(np.searchsorted(removed, rows), len(removed) - 1)
    return removed[at] == rows


Search = Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]]


def topk_without(
    search: Search, queries: np.ndarray, k: int, n_rows: int, removed: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The exact ``k`` nearest rows of a shard that are not in ``removed`` (sorted local rows).

    ``search(queries, depth)`` gives the exact ``depth`` nearest (m, depth) local rows and
    distances, nearest first. Among the k + r nearest rows at most r are removed, so k + r deep
    always holds the k nearest remaining rows; the first search looks k + min(r, FIRST_EXTRA) deep,
    which is enough whenever it leaves k remaining rows for every query (every remaining row it
    did not return is at least as far as the ones it did), and only otherwise goes deeper (x8,
    up to k + r). Returns (m, min(k, n_rows - r)) rows and distances, nearest first.
    """
    r = len(removed)
    if r == 0:
        return search(queries, k)
    want = max(0, min(k, n_rows - r))
    full = min(n_rows, k + r)
    depth = min(full, k + min(r, FIRST_EXTRA))
    while True:
        rows, distances = search(queries, depth)
        keep = ~is_removed(rows, removed)
        if depth >= full or bool((keep.sum(axis=1) >= want).all()):
            break
        depth = min(full, depth * 8)
    order = np.argsort(~keep, axis=1, kind="stable")[:, :want]  # the remaining rows first, still nearest first
    return np.take_along_axis(rows, order, axis=1), np.take_along_axis(distances, order, axis=1)


# --- one open index's removals, kept current -----------------------------------------------------------------


class News(NamedTuple):
    ok: bool  # False: the file could not be used (the rows removed before stay removed)
    text: str  # a line for the operator's log


class Watch:
    """The removals of one opened index, re-read whenever the file changes.

    :meth:`check` costs one ``stat()`` when nothing changed. Opened with the index (``manifest``
    is the one the caller opened), it keeps that index's metadata open to resolve lines recorded
    for another index. At open an unusable file raises RemovalsError (a kiosk must not start
    showing people who asked to be removed); later, an unusable file is reported once per change
    and the rows removed before stay removed.
    """

    def __init__(self, index_dir: Path, manifest: store.Manifest):
        self.index_dir = Path(index_dir)
        self.path = self.index_dir / FILENAME
        self.index = index_id(manifest)
        self.real = manifest.real
        self._con = open_metadata(self.index_dir)
        self.rows = np.empty(0, np.int64)  # removed global rows, sorted
        self.removals: list[Removal] = []
        self.version = 0  # +1 whenever ``rows`` changes
        self._stamp: tuple | None = None
        self._people: int | None = None
        self._resolved: dict[tuple[str, str], list[int]] = {}  # lines of other indexes, resolved here
        news = self.check()
        if news is not None and not news.ok:
            self.close()
            raise RemovalsError(news.text)

    def check(self) -> News | None:
        """Re-read the file if it changed since the last check; what changed, or None."""
        try:
            st = os.stat(self.path)
            stamp: tuple | None = (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        except FileNotFoundError:
            stamp = None
        except OSError as e:
            stamp = ("error", str(e))
        if stamp == self._stamp:
            return None
        self._stamp = stamp
        try:
            removals = read(self.index_dir) if stamp is not None else []
            rows = removed_rows(removals, self.index, self.real, self._con, self._resolved)
        except (RemovalsError, sqlite3.Error) as e:
            return News(False, f"{self.path} is unusable ({e}); the {len(self.rows)} rows removed before stay removed")
        self.removals = removals
        if np.array_equal(rows, self.rows):
            return None
        added = len(np.setdiff1d(rows, self.rows, assume_unique=True))
        self.rows, self.version, self._people = rows, self.version + 1, None
        return News(True, f"removals: {len(rows)} rows of this index removed ({added:+d} since the last check)")

    def is_removed(self, rows: np.ndarray | Sequence[int]) -> np.ndarray:
        return is_removed(np.asarray(rows, np.int64), self.rows)

    def local(self, start: int, stop: int) -> np.ndarray:
        return local_rows(self.rows, start, stop)

    @property
    def people(self) -> int:
        """Identities all of whose rows are removed (computed once per change)."""
        if self._people is None:
            self._people = people_removed(self._con, self.rows) if self._con is not None and len(self.rows) else 0
        return self._people

    def close(self) -> None:
        if self._con is not None:
            self._con.close()
            self._con = None


# --- carrying the removals into a new index ----------------------------------------------------------------


def carry(out: Path, staging: Path) -> list[Removal]:
    """Every removal recorded in ``out`` (the index being replaced) written into ``staging`` (the
    index about to replace it), each with its rows in the staged index. The caller holds the
    :class:`Lock` of ``out`` until the swap, so no removal lands in between."""
    removals = read(out) if Path(out).is_dir() else []
    if not removals:
        with contextlib.suppress(FileNotFoundError):
            (Path(staging) / FILENAME).unlink()
        return []
    manifest = store.read_manifest(staging, staged=True)
    con = open_metadata(staging)
    if con is None:
        raise RemovalsError(f"{staging}: no meta.sqlite to carry the removals into")
    try:
        resolved = resolve(con, removals)
    finally:
        con.close()
    here = index_id(manifest)
    carried = [Removal(r.kind, r.value, r.at, here, tuple(rows)) for r, rows in zip(removals, resolved, strict=True)]
    write(staging, carried)
    return carried
