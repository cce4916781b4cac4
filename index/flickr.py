"""Flickr accounts and photo ids: read from MegaFace's layout, typed by a visitor, looked up in an index.

MegaFace's identities are Flickr accounts: ``FlickrFinal2/<3 digits>/<NSID>/<photo id>_<face>.jpg``.
An account's NSID is its permanent id (``12345678@N01``: digits, ``@N``, two digits); a photo id is
digits. :func:`from_layout` reads both from a photo's path, for the build (index/build.py) to store
in the metadata (index/store.py, indexed on both columns).

:func:`parse_flickr_query` turns what a visitor types (an NSID, a photo id, or a photo's or an
account's URL: flickr.com, flic.kr short links, staticflickr image links) into a
:class:`FlickrQuery`, or a :class:`FlickrQueryError` that says what to type instead. Its messages
never repeat the text: a visitor's query is not to be stored or logged, and an error message
often is. :func:`find` answers a query from an index's metadata: every photo of the account(s)
concerned, in row order.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import parse_qs, unquote, urlsplit

from index import store

NSID = re.compile(r"\d{1,20}@N\d{2}")
PHOTO_ID = re.compile(r"\d{1,20}")
# MegaFace names a face ``<photo id>_<face number>.<ext>``; a bare ``<photo id>.<ext>`` is taken too
_LAYOUT_FILE = re.compile(r"(?P<photo_id>\d{1,20})(?:_\d{1,4})?\.[A-Za-z0-9]+")
_STATIC_FILE = re.compile(r"(?P<photo_id>\d{1,20})_[0-9a-f]+(?:_[a-z0-9]+)?\.[a-z]+")
_BASE58 = "123456789abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ"  # flic.kr short links
MAX_QUERY_CHARS = 512

EXAMPLES = "an account's NSID (like 12345678@N01), a photo id (digits) or a Flickr photo's web address"


def is_nsid(text: str) -> bool:
    return NSID.fullmatch(text) is not None


def from_layout(folder: str, filename: str) -> tuple[str, str]:
    """``(nsid, photo id)`` of a photo named ``filename`` in ``folder`` when they follow MegaFace's
    layout (the folder an NSID, the file ``<photo id>_<face>.<ext>``); ``""`` for what doesn't.

    The photo id is taken only inside an NSID's folder: elsewhere a file of digits is just a name.
    """
    if not is_nsid(folder):
        return "", ""
    m = _LAYOUT_FILE.fullmatch(filename)
    return folder, m["photo_id"] if m else ""


def flickr_url(nsid: str, photo_id: str) -> str:
    """The web address of a Flickr photo page (or of an account's photos without a photo id)."""
    return f"https://www.flickr.com/photos/{nsid}/{photo_id + '/' if photo_id else ''}"


class FlickrQueryError(ValueError):
    """Text that names no Flickr account or photo; the message says what to type (never repeats the text)."""


@dataclass(frozen=True)
class FlickrQuery:
    """An account (``nsid``), a photo (``photo_id``), or both (a photo's URL names its account)."""

    nsid: str = ""
    photo_id: str = ""


def parse_flickr_query(text: str) -> FlickrQuery:
    """The account and/or photo that ``text`` names; FlickrQueryError saying what is wrong otherwise.

    Accepted: ``12345678@N01`` (an NSID, ``@n01`` too), ``1813201299`` (a photo id), and web
    addresses with or without ``https://``: ``flickr.com/photos/<NSID>/<photo id>/...``,
    ``flickr.com/photos/<NSID>/``, ``flickr.com/people/<NSID>/``,
    ``flickr.com/photos/<alias>/<photo id>/`` (the photo only: an alias is not stored),
    ``flickr.com/photo.gne?id=<photo id>``, ``flic.kr/p/<code>`` and
    ``live.staticflickr.com/<server>/<photo id>_<secret>_b.jpg``.
    """
    text = (text or "").strip()
    if not text:
        raise FlickrQueryError(f"nothing typed: type {EXAMPLES}")
    if len(text) > MAX_QUERY_CHARS:
        raise FlickrQueryError(f"too long ({len(text)} characters) for {EXAMPLES}")
    if "@" in text and "/" not in text:
        nsid = text[: text.index("@")] + text[text.index("@") :].upper()
        if is_nsid(nsid):
            return FlickrQuery(nsid=nsid)
        raise FlickrQueryError("an account's NSID is digits, @N and two digits, like 12345678@N01")
    if PHOTO_ID.fullmatch(text):
        return FlickrQuery(photo_id=text)
    if text.isdigit():
        raise FlickrQueryError("a Flickr photo id has at most 20 digits")
    if "." not in text and "/" not in text:
        raise FlickrQueryError(f"not something Flickr names: type {EXAMPLES}")
    return _parse_url(text)


def _parse_url(text: str) -> FlickrQuery:
    url = urlsplit(text if "://" in text else "https://" + text)
    if url.scheme.lower() not in ("http", "https"):
        raise FlickrQueryError("a Flickr address starts with https://, http:// or flickr.com")
    host = (url.hostname or "").lower()
    parts = [unquote(p) for p in url.path.split("/") if p]
    if host == "flic.kr":
        if len(parts) >= 2 and parts[0] == "p":
            return FlickrQuery(photo_id=_base58(parts[1]))
        raise FlickrQueryError("a flic.kr short link to a photo looks like flic.kr/p/2abcDE")
    if host.endswith(".staticflickr.com") or host == "staticflickr.com":
        m = _STATIC_FILE.fullmatch(parts[-1]) if parts else None
        if m:
            return FlickrQuery(photo_id=m["photo_id"])
        raise FlickrQueryError("this staticflickr.com address does not end in a photo file (<photo id>_<secret>.jpg)")
    if host not in ("flickr.com", "www.flickr.com", "m.flickr.com", "secure.flickr.com"):
        raise FlickrQueryError(f"not a Flickr address (flickr.com or flic.kr): type {EXAMPLES}")
    if parts == ["photo.gne"]:
        ids = parse_qs(url.query).get("id", [])
        if ids and PHOTO_ID.fullmatch(ids[0]):
            return FlickrQuery(photo_id=ids[0])
        raise FlickrQueryError("a flickr.com/photo.gne address needs ?id=<photo id>")
    if len(parts) >= 2 and parts[0] in ("photos", "people"):
        account = parts[1]
        photo = parts[2] if parts[0] == "photos" and len(parts) >= 3 and PHOTO_ID.fullmatch(parts[2]) else ""
        nsid = account[: account.index("@")] + account[account.index("@") :].upper() if "@" in account else ""
        if is_nsid(nsid):
            return FlickrQuery(nsid=nsid, photo_id=photo)
        if photo:
            return FlickrQuery(photo_id=photo)  # the account by its chosen alias: not stored, the photo id is
        raise FlickrQueryError(
            "this address names the account by its alias, which the dataset does not record: "
            "type the account's NSID (like 12345678@N01) or the address of one of its photos"
        )
    raise FlickrQueryError("this Flickr address names no account or photo (expected flickr.com/photos/...)")


def _base58(code: str) -> str:
    if not code or len(code) > 16 or any(c not in _BASE58 for c in code):
        raise FlickrQueryError("a flic.kr/p/ code is letters and digits (no 0, O, I or l), like flic.kr/p/2abcDE")
    n = 0
    for c in code:
        n = n * 58 + _BASE58.index(c)
    return str(n)


@dataclass(frozen=True)
class Found:
    """The answer to a :class:`FlickrQuery`: the accounts it concerns and their photos in the index.

    ``photos`` are ``(row, entry)`` in row order, at most the ``limit`` asked for; ``total`` counts
    them all. ``asked`` are the rows of the photo id asked for (a photo may hold several faces).
    """

    accounts: tuple[str, ...]
    photos: tuple[tuple[int, store.Entry], ...]
    total: int
    asked: tuple[int, ...] = ()


def find(meta: store.Metadata, query: FlickrQuery, limit: int | None = 100) -> Found:
    """Every photo of the account the query names, or of the account(s) holding the photo it names.

    IndexStoreError when the index was built before accounts and photo ids were stored.
    """
    asked = meta.photo(query.photo_id) if query.photo_id else []
    accounts = [query.nsid] if query.nsid else []
    accounts += sorted({e.nsid for _, e in asked if e.nsid and e.nsid not in accounts})
    photos: dict[int, store.Entry] = {}
    total = 0
    for nsid in accounts:
        total += meta.count_of_account(nsid)
        room = None if limit is None else max(0, limit - len(photos))
        photos.update(meta.photos_of_account(nsid, room))
    strays = [(r, e) for r, e in asked if not e.nsid]  # a photo id without an account (a CSV manifest)
    total += len(strays)
    photos.update(strays[: None if limit is None else max(0, limit - len(photos))])
    ordered = tuple(sorted(photos.items()))
    return Found(tuple(accounts), ordered, total, tuple(r for r, _ in asked))
