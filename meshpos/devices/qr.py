"""QR codes for screens: an SVG for the web till, and lines of block characters for a terminal.

Drawn by the `qrcode` library (docs/decisions.md), which python-escpos already uses for printers
without native QR; a receipt printer draws its own (layout.QRCode)."""

from __future__ import annotations

import qrcode
import qrcode.image.svg
from qrcode.constants import ERROR_CORRECT_M


def _matrix(data: str) -> list[list[bool]]:
    code = qrcode.QRCode(error_correction=ERROR_CORRECT_M, border=2)
    code.add_data(data)
    code.make(fit=True)
    return [list(row) for row in code.get_matrix()]


def svg(data: str) -> str:
    """The code as an SVG document (black modules on a white quiet zone); sized by the page."""
    image = qrcode.make(
        data,
        image_factory=qrcode.image.svg.SvgPathFillImage,
        error_correction=ERROR_CORRECT_M,
        border=2,
    )
    text = image.to_string(encoding="unicode")
    return text if isinstance(text, str) else text.decode()


def text_lines(data: str) -> list[str]:
    """The code in half-block characters, two module rows per line, for a terminal with light
    text on a dark background: a dark module is left blank (the screen's dark), a light one is
    drawn, so phones read it the right way round; the quiet zone is drawn light."""
    m = _matrix(data)
    if len(m) % 2:
        m.append([False] * len(m[0]))
    out = []
    for top, bottom in zip(m[0::2], m[1::2], strict=True):
        out.append(
            "".join(
                " " if a and b else "\u2584" if a else "\u2580" if b else "\u2588"
                for a, b in zip(top, bottom, strict=True)
            )
        )
    return out
