"""The printed receipt: the best match, its score and meaning, how many people in the dataset would look this
much like the visitor by chance, where the matched photo comes from (the Flickr account, photo id or web
address, licence and date taken where the dataset gives them: index/provenance.py), the dataset.

:func:`compose` turns a result list into a :class:`Receipt` (wrapped text lines and the matched
dataset photo); :func:`render_png` draws it at thermal-receipt width (576 px = 80 mm at 203 dpi)
for the spool folder and ESC/POS printers; :func:`render_pdf` writes the same receipt as an 80 mm
wide PDF with real text (so a CUPS queue prints sharp text, and the text can be searched).
Lines wrap at WRAP_CHARS between words; a word longer than a line (a web address, a photo's path)
breaks after a ``/`` or before a ``?``, ``&`` or ``#`` (:func:`break_token`), its continuation
lines indented, and only a run without any of those is cut at the line's end.
The visitor's own face is not on it unless the operator turned ``printer.print_visitor_face``
on and the job carries it.
"""

from __future__ import annotations

import datetime as dt
import io
import re
import textwrap
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from index import provenance, scores
from index.photos import DatasetFacts
from index.scores import confidence, confidence_text, display_name
from messages import Result

RECEIPT_WIDTH_PX = 576  # 80 mm thermal paper at 203 dpi
MARGIN_PX = 16
LINE_PX = 24
FONT_PX = 18
WRAP_CHARS = 46
PHOTO_PX = 240  # the matched photo on the receipt
PAPER_WIDTH_PT = 80 / 25.4 * 72  # 80 mm in PDF points
PT_PER_PX = PAPER_WIDTH_PT / RECEIPT_WIDTH_PX
PHOTO_MARK = "[photo]"  # the line where the photo goes
CONTINUATION = "  "  # how a word broken over several lines goes on
_BREAK = re.compile(r"(?<=/)(?!/)|(?=[?&#])")  # after a slash (not inside '//'), or before ? & #


@dataclass(frozen=True)
class Receipt:
    lines: list[str]  # wrapped; PHOTO_MARK lines stand for the pictures, in order
    photos: list[np.ndarray]  # grayscale or RGB arrays, one per PHOTO_MARK

    def text(self) -> str:
        return "\n".join(line for line in self.lines if line != PHOTO_MARK)


def compose(
    results: list[Result],
    threshold: float,
    when: dt.datetime,
    facts: DatasetFacts | None = None,
    match_photo: np.ndarray | None = None,
    visitor_face: np.ndarray | None = None,
    lookalikes: str = "",
) -> Receipt:
    """The receipt of one result list (best first); ``lookalikes``: how many people in the dataset would look
    this much like the visitor by chance (Matches.lookalikes; '' leaves the line out)."""
    photos: list[np.ndarray] = []
    lines: list[str] = ["MEGAPIXELS", when.strftime("%Y-%m-%d %H:%M"), ""]
    if visitor_face is not None:
        lines += ["You:", PHOTO_MARK]
        photos.append(visitor_face)
    if not results:
        lines += ["Nobody in the dataset resembled you."]
    else:
        best = scores.best(results)
        c = confidence(best, threshold)
        same = best.distance <= threshold
        lines += [f"Your closest match: {display_name(best.identity)}"]
        if match_photo is not None:
            lines.append(PHOTO_MARK)
            photos.append(match_photo)
        lines += [
            f"Match score: {confidence_text(c)}",
            f"Distance {best.distance:.3f}; under {threshold:.2f} the system would call you the same person.",
            (
                "What it means: a face-recognition system would likely mistake you for this person."
                if same
                else "What it means: this stranger is the nearest face, but not close enough to be mistaken for you."
            ),
            *(["The score is provisional: derived from the distance, not calibrated."] if c.provisional else []),
            *([lookalikes] if lookalikes else []),
            scores.FAIRNESS_NOTE,
            "",
            f"Their photo: {best.photo or '?'}",
            *(f"{label}: {value}" for label, value in provenance.receipt_fields(provenance.of(best), best.photo)),
            "",
            "Next closest:",
            *(_runner_up(r, threshold) for r in results if r is not best),
        ]
    lines += [""]
    if facts is not None:
        lines += [facts.summary(), ""]
    lines += [
        "Your picture was compared in memory and is not stored."
        if visitor_face is None
        else "Your picture is on this receipt only; the kiosk did not store it."
    ]
    wrapped = [w for line in lines for w in wrap(line, WRAP_CHARS)]
    return Receipt(wrapped, photos)


def wrap(line: str, width: int) -> list[str]:
    """``line`` in lines of at most ``width`` characters: between words, and a word too long for a line
    (a web address, a path) broken where :func:`break_token` breaks it; ``[""]`` for an empty line."""
    if len(line) <= width:
        return [line]
    out: list[str] = []
    for piece in textwrap.wrap(line, width, break_long_words=False, break_on_hyphens=False) or [""]:
        out += [piece] if len(piece) <= width else break_token(piece, width)
    return out


def break_token(token: str, width: int) -> list[str]:
    """A word longer than ``width`` (a URL) over several lines: broken after a ``/`` or before ``? & #``,
    as late as the line allows, the continuation lines indented by CONTINUATION; a run with no such
    place is cut at the line's end. Joining the lines without their indent gives the word back."""
    pieces = [p for p in _BREAK.split(token) if p]
    lines: list[str] = []
    current = ""
    for piece in pieces:
        room = width - (len(CONTINUATION) if lines else 0)
        if current and len(current) + len(piece) > room:
            lines.append(current)
            current = ""
            room = width - len(CONTINUATION)
        current += piece
        while len(current) > room:  # no place to break inside this run: cut it at the line's end
            lines.append(current[:room])
            current = current[room:]
            room = width - len(CONTINUATION)
    if current:
        lines.append(current)
    return [line if i == 0 else CONTINUATION + line for i, line in enumerate(lines)]


def _runner_up(r: Result, threshold: float) -> str:
    return f"  {r.rank}. {display_name(r.identity)}  {confidence(r, threshold).percent} %  {r.distance:.3f}"


def _photo_px(photo: np.ndarray) -> Image.Image:
    img = Image.fromarray(photo).convert("L")
    return img.resize((PHOTO_PX, PHOTO_PX), Image.Resampling.LANCZOS)


def _layout(receipt: Receipt) -> tuple[list[tuple[int, str | Image.Image]], int]:
    """(y, line or photo) of every item and the total height, in receipt pixels."""
    items: list[tuple[int, str | Image.Image]] = []
    y = MARGIN_PX
    photos = iter(receipt.photos)
    for line in receipt.lines:
        if line == PHOTO_MARK:
            img = _photo_px(next(photos))
            items.append((y + 4, img))
            y += PHOTO_PX + 8
        else:
            items.append((y, line))
            y += LINE_PX
    return items, y + MARGIN_PX


def render_png(receipt: Receipt) -> Image.Image:
    """White receipt-width grayscale image: text in black, photos centred."""
    font = ImageFont.load_default(size=FONT_PX)
    items, height = _layout(receipt)
    image = Image.new("L", (RECEIPT_WIDTH_PX, height), 255)
    draw = ImageDraw.Draw(image)
    for y, item in items:
        if isinstance(item, Image.Image):
            image.paste(item, ((RECEIPT_WIDTH_PX - PHOTO_PX) // 2, y))
        else:
            draw.text((MARGIN_PX, y), item, fill=0, font=font)
    return image


def _pdf_text(line: str) -> bytes:
    raw = line.replace("—", "-").encode("cp1252", errors="replace")
    return raw.replace(b"\\", b"\\\\").replace(b"(", b"\\(").replace(b")", b"\\)")


def render_pdf(receipt: Receipt, title: str = "MegaPixels receipt") -> bytes:
    """The receipt as a one-page PDF, 80 mm wide: Helvetica text, photos as embedded JPEGs.

    ``title`` goes into the document info; print queues such as cups-pdf name their output after it.
    """
    items, height_px = _layout(receipt)
    page_h = height_px * PT_PER_PX
    font_pt = FONT_PX * PT_PER_PX * 0.95
    content = [b"BT", b"/F1 %.2f Tf" % font_pt]
    images: list[bytes] = []
    draws: list[bytes] = []
    for y, item in items:
        top = page_h - y * PT_PER_PX
        if isinstance(item, Image.Image):
            buf = io.BytesIO()
            item.save(buf, "JPEG", quality=90)
            images.append(buf.getvalue())
            side = PHOTO_PX * PT_PER_PX
            x = (PAPER_WIDTH_PT - side) / 2
            draws.append(b"q %.2f 0 0 %.2f %.2f %.2f cm /Im%d Do Q" % (side, side, x, top - side, len(images)))
        else:
            baseline = top - font_pt
            content.append(b"1 0 0 1 %.2f %.2f Tm (%s) Tj" % (MARGIN_PX * PT_PER_PX, baseline, _pdf_text(item)))
    content.append(b"ET")
    stream = b"\n".join(content + draws)
    n_img = len(images)
    xobjects = b" ".join(b"/Im%d %d 0 R" % (i + 1, 6 + i) for i in range(n_img))
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 %.2f %.2f] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> /XObject << %s >> >> >>" % (PAPER_WIDTH_PT, page_h, xobjects),
        b"<< /Length %d >>\nstream\n%s\nendstream" % (len(stream), stream),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>",
    ]
    for jpeg in images:
        objects.append(
            b"<< /Type /XObject /Subtype /Image /Width %d /Height %d /ColorSpace /DeviceGray "
            b"/BitsPerComponent 8 /Filter /DCTDecode /Length %d >>\nstream\n%s\nendstream"
            % (PHOTO_PX, PHOTO_PX, len(jpeg), jpeg)
        )
    objects.append(b"<< /Title (%s) /Producer (MegaPixels) >>" % _pdf_text(title))
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for i, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (i, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % off for off in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R /Info %d 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        len(objects),
        xref,
    )
    return bytes(out)
