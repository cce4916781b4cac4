"""Where a matched photo comes from, in words, for the result cards and the receipt.

A :class:`messages.Result` carries what the dataset says about its photo (the Flickr account
``nsid``, ``photo_id``, ``licence``, ``date_taken``, ``url``; ``""`` where it says nothing:
index/gallery.py). :func:`of` gathers them; :func:`card_line` makes the one line a result card
has room for ("Flickr account 55543106@N05 · photo 1813201299 · CC BY-ND 2.0 · taken
2012-12-16"), shortened to a number of characters; :func:`receipt_fields` gives the receipt's
labelled lines, falling back to what the photo's path tells (:func:`index.photos.photo_source`)
where the dataset gives nothing. What the dataset leaves empty is left out, never shown as
"unknown". Pure functions: no I/O, no window.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from index.photos import MEGAFACE_PHOTO, photo_source
from messages import Result

SEP = " · "
ELLIPSIS = "…"
MIN_PART_CHARS = 6  # an elided part keeps at least this many characters (with the ellipsis)
MIN_PHOTO_CHARS = 10  # the photo id or address is cut before the licence, down to this ("photo 181…")
_DATE_TIME = re.compile(r"(?P<date>\d{4}-\d{2}-\d{2})[ T]\d{1,2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?")
_SCHEME = re.compile(r"^[a-z][a-z0-9+.-]*://(?:www\.)?", re.IGNORECASE)


@dataclass(frozen=True)
class Provenance:
    """What the dataset gives about one photo; ``""`` for what it doesn't."""

    account: str = ""  # the Flickr account (NSID)
    photo_id: str = ""
    url: str = ""
    licence: str = ""
    date: str = ""  # the date taken, as the dataset gives it (a date and time: the date only)

    def __bool__(self) -> bool:
        return any((self.account, self.photo_id, self.url, self.licence, self.date))


def of(result: Result) -> Provenance:
    """The provenance a result carries (whitespace trimmed, a date-time shortened to its date)."""
    return Provenance(
        result.nsid.strip(),
        result.photo_id.strip(),
        result.url.strip(),
        " ".join(result.licence.split()),
        taken_date(result.date_taken),
    )


def taken_date(text: str) -> str:
    """``2009-07-14 12:34:56`` (or ISO 8601 with ``T`` and a zone) -> ``2009-07-14``; anything else as given."""
    text = " ".join(text.split())
    m = _DATE_TIME.fullmatch(text)
    return m["date"] if m else text


def elide(text: str, max_chars: int, keep_tail: bool = False) -> str:
    """``text`` in at most ``max_chars`` characters: cut at the end, or in the middle with ``keep_tail``
    (a web address keeps its last part, the photo), marked with an ellipsis."""
    if len(text) <= max_chars:
        return text
    if max_chars <= 1:
        return ELLIPSIS[:max_chars]
    room = max_chars - 1
    if not keep_tail:
        return text[:room].rstrip() + ELLIPSIS
    head = (room + 1) // 2
    return text[:head] + ELLIPSIS + text[len(text) - (room - head) :]


def short_url(url: str) -> str:
    """A web address without its scheme, ``www.``, query, fragment and closing slash
    (``flickr.com/photos/<account>/<photo id>``), for a card."""
    return _SCHEME.sub("", url).split("#", 1)[0].split("?", 1)[0].rstrip("/") or url


def card_line(p: Provenance, max_chars: int) -> str:
    """One line of at most ``max_chars`` characters for a result card; '' when the dataset gives nothing.

    The fullest wording that fits wins: "Flickr account A · photo P · LICENCE · taken D", then
    "Flickr A", then the date without "taken"; then the photo id or address and the licence share
    what the account and date leave (:func:`share`: the photo gives way first), each elided to its
    part (an address in the middle, keeping its end); what still does not fit is cut at the end.
    """
    if not p:
        return ""
    photo = f"photo {p.photo_id}" if p.photo_id else short_url(p.url)
    for account, date in (
        (f"Flickr account {p.account}", f"taken {p.date}"),
        (f"Flickr {p.account}", f"taken {p.date}"),
        (f"Flickr {p.account}", p.date),
    ):
        parts = [account if p.account else "", photo, p.licence, date if p.date else ""]
        line = SEP.join(part for part in parts if part)
        if len(line) <= max_chars:
            return line
    parts = [f"Flickr {p.account}" if p.account else "", photo, p.licence, p.date]
    fixed = [part for part in (parts[0], parts[3]) if part]
    room = max_chars - sum(map(len, fixed)) - len(SEP) * (len([part for part in parts if part]) - 1)
    photo_chars, licence_chars = share(len(photo), len(p.licence), room)
    parts[1] = elide(photo, photo_chars, keep_tail=not p.photo_id) if photo else ""
    parts[2] = elide(p.licence, licence_chars) if p.licence else ""
    return elide(SEP.join(part for part in parts if part), max_chars)


def share(photo: int, licence: int, room: int) -> tuple[int, int]:
    """How many of ``room`` characters the photo part and the licence (of these lengths) get on a card:
    both whole when they fit; else the photo is cut first, down to MIN_PHOTO_CHARS; then the two
    share alike (a part shorter than its half whole); at least MIN_PART_CHARS each (the line is
    then cut at its end)."""
    if photo + licence <= room:
        return photo, licence
    if room - licence >= MIN_PHOTO_CHARS:
        return room - licence, licence
    half = room // 2
    if photo <= half:
        cut = (photo, room - photo)
    elif licence <= half:
        cut = (room - licence, licence)
    else:
        cut = (room - half, half)
    return max(cut[0], MIN_PART_CHARS), max(cut[1], MIN_PART_CHARS)


def receipt_fields(p: Provenance, photo: str) -> list[tuple[str, str]]:
    """The receipt's ``(label, value)`` lines about the best match's photo at ``photo`` (its path in the
    dataset): the source (the Flickr account when the dataset gives one, else what the path tells),
    the photo id and web address where given, the licence (the dataset's, else what the path tells),
    the date taken where given."""
    path_source, path_licence = photo_source(photo)
    path_account = m["account"] if (m := MEGAFACE_PHOTO.search(photo)) else ""
    source = f"Flickr account {p.account}" if p.account and p.account != path_account else path_source
    fields = [("Source", source)]
    if p.photo_id:
        fields.append(("Photo id", p.photo_id))
    if p.url:
        fields.append(("Web address", p.url))
    fields.append(("Licence", p.licence or path_licence))
    if p.date:
        fields.append(("Date taken", p.date))
    return fields
