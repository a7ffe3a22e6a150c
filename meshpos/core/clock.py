"""Hybrid logical clock (Kulkarni et al.): wall time plus a logical counter.

It orders ops causally even when terminal clocks are skewed: a node that receives an op stamped in the
future moves its own clock past it, so its next op sorts after what it has seen. Pure: the caller passes
the wall time in, so the simulator and tests drive it with any clock they like.

A timestamp is packed into one integer, `wall_ms << 16 | counter`, so SQLite can index and order it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

COUNTER_BITS = 16
COUNTER_MAX = (1 << COUNTER_BITS) - 1


def wall_ms() -> int:
    """The system clock in ms: the one place meshpos reads it. Everything else takes time in."""
    return time.time_ns() // 1_000_000


def pack(wall_ms: int, counter: int) -> int:
    return (wall_ms << COUNTER_BITS) | counter


def wall_of(hlc: int) -> int:
    """Milliseconds since the epoch carried by a packed timestamp."""
    return hlc >> COUNTER_BITS


def counter_of(hlc: int) -> int:
    return hlc & COUNTER_MAX


@dataclass
class HLC:
    """The node's clock state: the last timestamp it issued or observed."""

    last: int = 0

    def now(self, wall_ms: int) -> int:
        """A new timestamp for a local event, strictly greater than any seen before."""
        if wall_ms > wall_of(self.last):
            self.last = pack(wall_ms, 0)
        else:
            self.last = self._bump(self.last)
        return self.last

    def observe(self, remote: int, wall_ms: int) -> int:
        """Merge a timestamp received from another node, so later local events sort after it."""
        top = max(self.last, remote)
        if wall_ms > wall_of(top):
            self.last = pack(wall_ms, 0)
        else:
            self.last = self._bump(top)
        return self.last

    @staticmethod
    def _bump(ts: int) -> int:
        if counter_of(ts) == COUNTER_MAX:
            return pack(wall_of(ts) + 1, 0)
        return ts + 1
