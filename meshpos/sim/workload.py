"""Customers: when they come (a day's shape), what they buy (a clothing catalogue), how they pay.

Everything is drawn from a `random.Random` the caller seeds, so the same scenario and seed give the
same customers in the same order. Arrivals are a non-homogeneous Poisson process per counter,
drawn by thinning: candidates at the peak rate, each kept with the shape's share at that time.
"""

from __future__ import annotations

import random
from bisect import bisect_right
from dataclasses import dataclass, replace
from importlib import resources
from itertools import accumulate

from meshpos.domain.catalog import CatalogRow, parse_csv

HOUR = 3_600_000

# Share of the peak rate at each hour of the day (linear between the points).
SHAPES: dict[str, tuple[tuple[float, float], ...]] = {
    "flat": ((0, 1.0), (48, 1.0)),
    # a high-street store: a lunch bump and an evening peak
    "normal": (
        (0, 0.05),
        (9, 0.1),
        (10, 0.35),
        (12, 0.6),
        (13, 0.75),
        (15, 0.45),
        (17, 0.7),
        (19, 1.0),
        (21, 0.6),
        (22, 0.15),
        (24, 0.05),
        (48, 0.05),
    ),
    # a festival market: busy from the morning, packed in the evening, open late
    "festive": (
        (0, 0.1),
        (8, 0.3),
        (10, 0.6),
        (12, 0.8),
        (14, 0.75),
        (16, 0.85),
        (18, 1.0),
        (21, 1.0),
        (23, 0.5),
        (24, 0.2),
        (48, 0.2),
    ),
    # a pop-up stall: short crowds every hour (a show lets out), quiet in between
    "popup": (),
}


def shape_factor(shape: str, clock_ms: int) -> float:
    """Share (0-1] of the peak rate at this time of day."""
    if shape == "popup":
        minute = (clock_ms // 60_000) % 60
        return 1.0 if minute < 20 else 0.25
    points = SHAPES[shape]
    hour = (clock_ms % (48 * HOUR)) / HOUR
    xs = [p[0] for p in points]
    i = max(0, min(len(points) - 2, bisect_right(xs, hour) - 1))
    (x0, y0), (x1, y1) = points[i], points[i + 1]
    return y0 + (y1 - y0) * (hour - x0) / (x1 - x0)


def arrivals(
    rng: random.Random, per_hour: float, shape: str, start_ms: int, duration_ms: int
) -> list[int]:
    """Arrival times (ms after the start) of customers at one counter."""
    out: list[int] = []
    if per_hour <= 0:
        return out
    mean_gap = HOUR / per_hour
    t = 0.0
    while True:
        t += rng.expovariate(1.0) * mean_gap
        if t >= duration_ms:
            return out
        if rng.random() < shape_factor(shape, start_ms + int(t)):
            out.append(int(t))


def poisson_times(rng: random.Random, per_hour: float, duration_ms: int) -> list[int]:
    """Times of events at a constant rate (receipts, markdowns, random faults)."""
    return arrivals(rng, per_hour, "flat", 0, duration_ms)


def catalogue(rows: int = 0, stock_factor: float = 1.0) -> list[CatalogRow]:
    """The sample clothing catalogue (or its first `rows` rows), opening stock scaled."""
    text = resources.files("meshpos").joinpath("data/sample_catalog.csv").read_text()
    parsed = parse_csv(text, "sample_catalog.csv")
    if rows:
        parsed = parsed[:rows]
    return [replace(r, stock=max(0, round(r.stock * stock_factor))) for r in parsed]


@dataclass(frozen=True)
class Popularity:
    """Which products sell: a Zipf-like weight over a per-store order (a store's best sellers)."""

    skus: tuple[str, ...]
    cum: tuple[float, ...]

    @classmethod
    def build(cls, rng: random.Random, skus: list[str], exponent: float = 0.9) -> Popularity:
        order = list(skus)
        rng.shuffle(order)
        weights = [1.0 / (rank + 1) ** exponent for rank in range(len(order))]
        return cls(tuple(order), tuple(accumulate(weights)))

    def pick(self, rng: random.Random) -> str:
        return rng.choices(self.skus, cum_weights=self.cum)[0]

    def basket(self, rng: random.Random, low: int, high: int) -> list[tuple[str, int]]:
        """Distinct SKUs; most baskets are small, most quantities 1."""
        size = min(low + int(rng.expovariate(1.2)), high)
        items: dict[str, int] = {}
        for _ in range(size * 3):
            if len(items) >= size:
                break
            sku = self.pick(rng)
            if sku not in items:
                items[sku] = 1 if rng.random() < 0.85 else 2
        return sorted(items.items())
