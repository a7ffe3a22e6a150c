"""Charts drawn on the server as inline SVG: no JavaScript, no library from a CDN, and a page that
prints and screenshots exactly as it looks. Pure: values in, markup out.

Every bar carries a `<title>` (the exact figure, shown on hover and read by screen readers);
axis labels use compact Indian figures (₹12.5k, ₹3.4L, ₹1.2Cr).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from markupsafe import Markup, escape

Label = Callable[[int], str]


@dataclass(frozen=True)
class Bar:
    label: str  # under the bar (or beside it)
    value: int
    title: str  # the exact figure, for the tooltip


def compact_rupees(paise: int) -> str:
    """₹ with k / L (lakh) / Cr (crore), for axis ticks."""
    rupees = abs(paise) / 100
    sign = "−" if paise < 0 else ""
    for size, unit in ((1e7, "Cr"), (1e5, "L"), (1e3, "k")):
        if rupees >= size:
            return f"{sign}₹{rupees / size:.1f}{unit}".replace(".0" + unit, unit)
    return f"{sign}₹{rupees:.0f}"


def _nice_step(span: float, ticks: int = 4) -> float:
    raw = span / ticks
    mag = 10 ** math.floor(math.log10(raw)) if raw > 0 else 1
    return next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)


def _scale(values: Sequence[int]) -> tuple[float, float, float]:
    """Axis bounds (always including 0) and tick step."""
    lo, hi = min(0, *values), max(0, *values)
    if lo == hi:
        hi = 1
    step = _nice_step(hi - lo)
    return math.floor(lo / step) * step, math.ceil(hi / step) * step, step


def bar_chart(
    bars: Sequence[Bar], *, label: Label = compact_rupees, width: int = 760, height: int = 240
) -> Markup:
    """Vertical bars on a value axis (negative values hang below zero)."""
    if not bars:
        return Markup('<p class="empty">No figures for this range.</p>')
    left, right, top, bottom = 64, 8, 10, 34
    lo, hi, step = _scale([b.value for b in bars])
    plot_w, plot_h = width - left - right, height - top - bottom

    def y(v: float) -> float:
        return top + plot_h * (hi - v) / (hi - lo)

    out = [
        f'<svg class="chart" viewBox="0 0 {width} {height}" width="100%" role="img" '
        f'aria-label="bar chart of {len(bars)} values" xmlns="http://www.w3.org/2000/svg">'
    ]
    tick = lo
    while tick <= hi + step / 2:
        out.append(
            f'<line class="grid" x1="{left}" x2="{width - right}" y1="{y(tick):.1f}" '
            f'y2="{y(tick):.1f}"/><text class="tick" x="{left - 6}" y="{y(tick) + 4:.1f}" '
            f'text-anchor="end">{escape(label(int(tick)))}</text>'
        )
        tick += step
    slot = plot_w / len(bars)
    every = max(1, math.ceil(len(bars) / 16))  # at most ~16 labels under the axis
    for i, b in enumerate(bars):
        x = left + i * slot + slot * 0.15
        y0, y1 = sorted((y(0), y(b.value)))
        cls = "bar neg" if b.value < 0 else "bar"
        out.append(
            f'<rect class="{cls}" x="{x:.1f}" y="{y0:.1f}" width="{slot * 0.7:.1f}" '
            f'height="{max(y1 - y0, 0.5):.1f}"><title>{escape(b.title)}</title></rect>'
        )
        if i % every == 0:
            out.append(
                f'<text class="tick" x="{x + slot * 0.35:.1f}" y="{height - bottom + 16}" '
                f'text-anchor="middle">{escape(b.label)}</text>'
            )
    out.append(
        f'<line class="axis" x1="{left}" x2="{width - right}" y1="{y(0):.1f}" y2="{y(0):.1f}"/>'
    )
    out.append("</svg>")
    return Markup("".join(out))


def hbar_chart(bars: Sequence[Bar], *, width: int = 560, row: int = 26) -> Markup:
    """Horizontal bars, one row each, largest first as given (takings by kind, per store)."""
    if not bars:
        return Markup('<p class="empty">No figures for this range.</p>')
    left, right = 150, 120
    height = row * len(bars) + 8
    most = max(1, *(abs(b.value) for b in bars))
    plot_w = width - left - right
    out = [
        f'<svg class="chart" viewBox="0 0 {width} {height}" width="100%" role="img" '
        f'aria-label="{len(bars)} bars" xmlns="http://www.w3.org/2000/svg">'
    ]
    for i, b in enumerate(bars):
        y = 4 + i * row
        w = max(1.0, plot_w * abs(b.value) / most)
        cls = "bar neg" if b.value < 0 else "bar"
        out.append(
            f'<text class="tick" x="{left - 8}" y="{y + row * 0.62:.1f}" text-anchor="end">'
            f"{escape(b.label[:22])}</text>"
            f'<rect class="{cls}" x="{left}" y="{y + 3}" width="{w:.1f}" height="{row - 8}">'
            f"<title>{escape(b.title)}</title></rect>"
            f'<text class="val" x="{left + w + 6:.1f}" y="{y + row * 0.62:.1f}">'
            f"{escape(b.title)}</text>"
        )
    out.append("</svg>")
    return Markup("".join(out))


def sparkline(values: Sequence[int], *, width: int = 120, height: int = 28) -> Markup:
    """A small line of a series (a store's net per day), for a table cell."""
    if len(values) < 2:
        return Markup("")
    lo, hi = min(values), max(values)
    span = (hi - lo) or 1
    pts = " ".join(
        f"{width * i / (len(values) - 1):.1f},{height - 3 - (height - 6) * (v - lo) / span:.1f}"
        for i, v in enumerate(values)
    )
    return Markup(
        f'<svg class="spark" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
        f'aria-hidden="true" xmlns="http://www.w3.org/2000/svg"><polyline points="{pts}"/></svg>'
    )
