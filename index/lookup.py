"""“Are my photos in it?”: the answer to a Flickr account, photo id or photo address a visitor types.

:func:`lookup` turns the typed text into a :class:`LookupAnswer` from an index's metadata
(meta.sqlite: the account (NSID) and photo id of every row, indexed on both; index/store.py):

- ``hit``: how many photos of the account the dataset holds and (up to ``limit``) the photos
  themselves, each with its photo id, licence and date taken where the dataset gives them. A
  photo id or a photo's address resolves to the account that posted the photo; that photo's rows
  come first;
- ``none``: the dataset holds no photo of that account, or not that photo;
- ``error``: the text names no account, photo or Flickr address; the sentence says what is
  accepted and never repeats the text (index/flickr.py);
- ``unavailable``: the index records neither accounts nor photo ids (an LFW-style index), or it
  can't be read; the sentence says so.

Rows removed by ``megapixels index remove`` (index/removals.py) are neither counted nor shown:
every call first stat()s the index's removals.jsonl (:class:`removals.Watch`), so a removal made
while the kiosk runs is honoured by the next lookup, without a restart. Every query goes through
the indexes on ``nsid`` and ``photo_id`` (an account's rows come from the nsid index alone), never
a scan of the table: docs/SEARCH.md has the figures at 4.2M rows.

Nothing here logs, stores or returns what was typed: the answer holds what the dataset says.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from index import flickr, removals, store

LIMIT = 60  # photos returned at most (the count covers them all)
HIT, NONE, ERROR, UNAVAILABLE = "hit", "none", "error", "unavailable"
KINDS = (HIT, NONE, ERROR, UNAVAILABLE)
NO_ACCOUNTS = "This dataset does not record Flickr accounts or photo ids, so it can't be searched by them."
NOT_READABLE = "The dataset's index can't be read here, so it can't be searched by account right now."

log = logging.getLogger("lookup")


@dataclass(frozen=True)
class LookupPhoto:
    """One photo of the answer: where it is (relative to the dataset root, with the face box) and
    what the dataset says about it ("" where it says nothing)."""

    row: int
    photo: str
    box: tuple[int, int, int, int] | None
    nsid: str
    photo_id: str
    licence: str
    date_taken: str
    asked: bool = False  # a row of the photo the visitor named


@dataclass(frozen=True)
class LookupAnswer:
    kind: str  # one of KINDS
    sentence: str  # what the screen says
    total: int = 0  # the account's photos in the dataset, removed ones left out
    photos: tuple[LookupPhoto, ...] = ()  # at most the limit asked for: the named photo first, then row order
    accounts: tuple[str, ...] = ()  # the account(s) the answer is about


class Source:
    """An index's metadata and its removals, opened for lookups (read-only).

    ``meta`` None, or ``unavailable`` set: every lookup answers ``unavailable`` (the reason is for
    the operator's log). ``watch`` None: nothing is removed (a test's index without removals).
    """

    def __init__(self, meta: store.Metadata | None, watch: removals.Watch | None = None, unavailable: str = ""):
        self.meta, self.watch = meta, watch
        self.unavailable = unavailable
        if meta is not None and not unavailable:
            if not meta.has_provenance or not meta.has_accounts():
                self.unavailable = NO_ACCOUNTS
        elif meta is None and not unavailable:
            self.unavailable = NOT_READABLE

    @classmethod
    def open(cls, index_dir: Path) -> Source:
        """The index folder's metadata and removals; never raises (an index that can't be used
        gives a Source that answers ``unavailable``, and the reason is logged)."""
        meta = watch = None
        try:
            manifest = store.read_manifest(index_dir)
            meta = store.Metadata(index_dir, manifest)
            watch = removals.Watch(index_dir, manifest)  # unusable at open: raises, nobody removed is shown
        except (store.IndexStoreError, removals.RemovalsError, OSError) as e:
            log.warning("no lookups by Flickr account: %s", e)
            if meta is not None:
                meta.close()
            return cls(None, None, NOT_READABLE)
        source = cls(meta, watch)
        if source.unavailable:
            log.info("no lookups by Flickr account: the index at %s records no accounts or photo ids", index_dir)
        return source

    def removed(self) -> np.ndarray:
        """The removed rows (sorted), re-read when removals.jsonl changed (one stat() otherwise)."""
        if self.watch is None:
            return np.empty(0, np.int64)
        news = self.watch.check()
        if news is not None:
            (log.info if news.ok else log.warning)(news.text)
        return self.watch.rows

    def close(self) -> None:
        if self.watch is not None:
            self.watch.close()
        if self.meta is not None:
            self.meta.close()


def lookup(source: Source, text: str, limit: int = LIMIT) -> LookupAnswer:
    """The answer to ``text`` (an NSID, a photo id or a Flickr address) from ``source``'s index."""
    if source.unavailable or source.meta is None:
        return LookupAnswer(UNAVAILABLE, source.unavailable or NOT_READABLE)
    try:
        query = flickr.parse_flickr_query(text)
    except flickr.FlickrQueryError as e:
        why = str(e)
        return LookupAnswer(ERROR, f"{why[:1].upper()}{why[1:]}.")
    try:
        return _answer(source.meta, query, source.removed(), limit)
    except store.IndexStoreError as e:  # a file damaged since the kiosk started: said, never raised
        log.warning("a lookup failed: %s", e)
        return LookupAnswer(UNAVAILABLE, NOT_READABLE)


def _answer(meta: store.Metadata, query: flickr.FlickrQuery, removed: np.ndarray, limit: int) -> LookupAnswer:
    def remaining(rows: list[int]) -> list[int]:
        if not rows or not len(removed):
            return rows
        gone = removals.is_removed(np.asarray(rows, np.int64), removed)
        return [r for r, g in zip(rows, gone, strict=True) if not g]

    named = meta.photo(query.photo_id) if query.photo_id else []
    kept = set(remaining([r for r, _ in named]))
    named = [(r, e) for r, e in named if r in kept]
    accounts = [query.nsid] if query.nsid else []
    accounts += sorted({e.nsid for _, e in named if e.nsid and e.nsid not in accounts})
    rows: set[int] = set()
    for nsid in accounts:
        rows.update(remaining(meta.rows_of_account(nsid)))
    rows.update(r for r, e in named if not e.nsid)  # a photo id without an account (a CSV manifest)
    asked = {r for r, _ in named}
    if not rows:
        sentence = (
            "The dataset holds no photo of this Flickr account." if query.nsid else "This photo is not in the dataset."
        )
        return LookupAnswer(NONE, sentence, accounts=tuple(accounts) if query.nsid else ())
    ordered = sorted(asked) + sorted(rows - asked)
    shown = ordered[: max(0, limit)]
    entries = meta.lookup(shown)
    photos = tuple(_photo(r, entries[r], r in asked) for r in shown)
    total = len(rows)
    sentence = hit_sentence(total, accounts, query, bool(asked), len(photos))
    return LookupAnswer(HIT, sentence, total, photos, tuple(accounts))


def _photo(row: int, e: store.Entry, asked: bool) -> LookupPhoto:
    return LookupPhoto(row, e.photo, e.box, e.nsid, e.photo_id, e.licence, e.date_taken, asked)


def hit_sentence(total: int, accounts: list[str], query: flickr.FlickrQuery, found_named: bool, shown: int) -> str:
    """What the screen says over the photos found."""
    photos = f"{total:,} photo{'' if total == 1 else 's'}"
    if not accounts:
        sentence = "The dataset holds this photo; which Flickr account posted it is not recorded"
    elif len(accounts) == 1:
        sentence = f"The dataset holds {photos} of the Flickr account {accounts[0]}"
    else:
        sentence = f"The dataset holds {photos} of the Flickr accounts {', '.join(accounts[:-1])} and {accounts[-1]}"
    if query.photo_id and accounts:
        sentence += ", the photo you named among them" if found_named else "; the photo you named is not among them"
    if shown < total:
        sentence += f" (the first {shown} are shown)"
    return sentence + "."
