"""A simulated store's agenda: what happens when (a customer arrives, a fault starts or ends, HQ
changes a price), in simulated time, ties broken by the order things were scheduled."""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field

from meshpos.sim.scenario import FaultConf

# What an event carries: a counter position, a redemption to retry, an HQ price change, a fault,
# a replacement terminal's arrival; None for an election or a delivery.
Retry = tuple[str, str, list[tuple[str, int]], int]  # node, customer, items, points
Replacement = tuple[str, str, str, int, bool]  # node, replacement, restore, acked, bootstrap
EventData = str | Retry | tuple[int, float] | FaultConf | Replacement | None


@dataclass
class Event:
    at: int
    seq: int
    kind: str
    data: EventData = field(compare=False)

    def __lt__(self, other: Event) -> bool:
        return (self.at, self.seq) < (other.at, other.seq)


class Agenda:
    def __init__(self) -> None:
        self.events: list[Event] = []
        self._seq = 0

    def push(self, at: int, kind: str, data: EventData) -> None:
        self._seq += 1
        heapq.heappush(self.events, Event(at, self._seq, kind, data))

    def due(self, t: int) -> Event | None:
        """The next event at or before `t`, taken off the agenda; None when there is none."""
        if self.events and self.events[0].at <= t:
            return heapq.heappop(self.events)
        return None

    def drain(self, kind: str) -> list[Event]:
        """Empty the agenda; the events of `kind` it held, in order."""
        kept = sorted(e for e in self.events if e.kind == kind)
        self.events = []
        return kept
