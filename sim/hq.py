"""How a store reaches HQ in the simulation, and the seam where the real relay will plug in.

What is real here and what is a stand-in (the HQ issue is being built alongside):
- HQ's copy of a store is a real `Ledger` behind a real `SyncNode`, in the store's `MemNet`, and
  HQ-originated ops (price changes) are real signed ops from HQ's own key. Every op HQ holds went
  through the real ingest checks (signatures, hash chains).
- The WAN is a MemNet link per counter with its own latency, jitter, loss and bandwidth, cut when
  the store's WAN (or one counter's internet access) is down.
- The upload itself is the LAN sync protocol over that link, not the HQ service's HTTP batches, and
  the relay choice is modelled: `SyncRelay` lets exactly one counter per connected LAN group talk
  to HQ (the lowest-named one that has WAN), and moves the role `failover_ms` after the relay dies
  or loses its WAN. With `relay = "all"` every counter with WAN syncs with HQ directly.

To drive the real relay later, write another `HqLink` (the engine calls only these methods): it
decides which counter-to-HQ links carry traffic, and reacts to topology changes.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol


class Topology(Protocol):
    """What a store simulation tells the HQ link about itself."""

    def counters_online(self) -> list[str]:
        """Counters that are running, sorted by name."""
        ...

    def wan_ok(self, name: str) -> bool:
        """Whether this counter can reach the internet now."""
        ...

    def lan_components(self) -> list[list[str]]:
        """Running counters grouped by who can reach whom on the LAN, sorted."""
        ...


class HqLink(Protocol):
    mode: str
    relays: set[str]
    changes: int

    def talking(self, store: Topology) -> set[str]:
        """Counters whose link to HQ carries traffic now."""
        ...

    def changed(self, store: Topology, now: int) -> int | None:
        """Topology changed; returns when to call `elect` (None: no election needed)."""
        ...

    def elect(self, store: Topology, now: int) -> None: ...


@dataclass
class SyncRelay:
    """One relay per LAN group (or every counter, `mode="all"`), failing over after a delay."""

    mode: str = "elected"
    failover_ms: int = 3000
    relays: set[str] = field(default_factory=set)
    changes: int = 0
    history: list[tuple[int, str, str]] = field(default_factory=list)  # (at, relay, why)

    def talking(self, store: Topology) -> set[str]:
        if self.mode == "all":
            return {c for c in store.counters_online() if store.wan_ok(c)}
        return set(self.relays)

    def _valid(self, store: Topology) -> set[str]:
        online = set(store.counters_online())
        return {r for r in self.relays if r in online and store.wan_ok(r)}

    def changed(self, store: Topology, now: int) -> int | None:
        if self.mode == "all":
            return None
        valid = self._valid(store)
        for gone in sorted(self.relays - valid):
            self.history.append((now, gone, "stopped relaying"))
        self.relays = valid
        # Two groups merged by a healed LAN may each bring a relay: the lower name keeps it.
        for comp in store.lan_components():
            holders = sorted(r for r in self.relays if r in comp)
            for extra in holders[1:]:
                self.relays.discard(extra)
                self.history.append((now, extra, "handed over"))
        if any(
            self._candidates(store, comp) and not self._holds(comp)
            for comp in store.lan_components()
        ):
            return now + self.failover_ms
        return None

    def _holds(self, comp: Iterable[str]) -> bool:
        return any(r in self.relays for r in comp)

    @staticmethod
    def _candidates(store: Topology, comp: Iterable[str]) -> list[str]:
        return sorted(c for c in comp if store.wan_ok(c))

    def elect(self, store: Topology, now: int) -> None:
        if self.mode == "all":
            return
        self.changed(store, now)
        for comp in store.lan_components():
            cands = self._candidates(store, comp)
            if cands and not self._holds(comp):
                self.relays.add(cands[0])
                self.changes += 1
                self.history.append((now, cands[0], "relaying"))
