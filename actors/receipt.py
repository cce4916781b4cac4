"""The printed receipt: a plain-text summary of a result list, drawn to a receipt-width image.

It states the best match, its distance, what that distance means and where the matched photo
came from. It never contains the visitor's face: the print job carries no pixels.
"""

from __future__ import annotations

import datetime as dt
import textwrap
from typing import Any

from PIL import Image, ImageDraw, ImageFont

RECEIPT_WIDTH_PX = 576  # 80 mm thermal paper at 203 dpi
MARGIN_PX = 16
LINE_PX = 22
WRAP_CHARS = 46


def receipt_lines(results: list[dict[str, Any]], threshold: float, when: dt.datetime) -> list[str]:
    if not results:
        return ["MegaPixels", "", "No face in the dataset resembled yours."]
    best = results[0]
    verdict = "a close match" if best["distance"] <= threshold else "only a distant look-alike"
    lines = [
        "MEGAPIXELS",
        "",
        f"Your closest match: {best['identity'].replace('_', ' ')}",
        f"Distance {best['distance']:.3f} ({verdict}; under {threshold:.2f} counts as a match)",
        f"Their photo in the dataset: {best['photo']}",
        "",
        "Next closest:",
        *(f"  {r['rank']}. {r['identity'].replace('_', ' ')}  {r['distance']:.3f}" for r in results[1:]),
        "",
        "Face-recognition datasets are built from photos collected without the consent of the "
        "people in them. Your image was compared in memory and was not stored.",
        "",
        when.strftime("%Y-%m-%d %H:%M"),
    ]
    return [w for line in lines for w in (textwrap.wrap(line, WRAP_CHARS) or [""])]


def render(lines: list[str]) -> Image.Image:
    """White receipt-width image with the lines in black."""
    font = ImageFont.load_default(size=18)
    image = Image.new("L", (RECEIPT_WIDTH_PX, 2 * MARGIN_PX + LINE_PX * len(lines)), 255)
    draw = ImageDraw.Draw(image)
    for i, line in enumerate(lines):
        draw.text((MARGIN_PX, MARGIN_PX + i * LINE_PX), line, fill=0, font=font)
    return image
