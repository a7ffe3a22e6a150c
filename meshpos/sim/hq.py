"""How a store reaches HQ in the simulation, and the seam where the rest of the real relay plugs in.

What is real here and what is a stand-in:
- HQ's copy of a store is a real `Ledger` behind a real `SyncNode`, in the store's `MemNet`, and
  HQ-originated ops (price changes) are real signed ops from HQ's own key. Every op HQ holds went
  through the real ingest checks (signatures, hash chains).
- The relay choice is the daemon's own pure rule, `meshpos.domain.relay.elect` (lowest node id among the
  terminals that can reach HQ), applied per group of terminals that can see each other on the LAN
  (each group of a split LAN elects its own). The hand-over delay (`failover_ms`) is a parameter
  standing for the daemon's probe and ping timing, not that timing itself.
- The WAN is a MemNet link per counter with its own latency, jitter, loss and bandwidth; a counter
  that does not relay has no session with HQ at all.
- Not real: the upload. The relay's link to HQ carries the LAN sync protocol (Hello, Ops, Have),
  not `RelayWorker`'s HTTP rounds against the HQ service (push what HQ's version vector lacks,
  pull, HQ's loyalty asks), so cross-store escrow through HQ and HTTP batching and backoff are not
  simulated. `relay = "all"` lets every counter with WAN sync with HQ directly instead.

To drive the real upload later, write another `HqLink` (the store's network calls only these
methods, and `StoreSim` keeps HQ's ledger): it decides which counter carries the store to HQ and how.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol

from meshpos.domain.relay import elect


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

    def node_id(self, name: str) -> str: ...


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
        # Two groups merged by a healed LAN may each bring a relay: the rule's choice keeps it.
        for comp in store.lan_components():
            holders = sorted(r for r in self.relays if r in comp)
            if len(holders) > 1:
                keep = self._choice(store, comp)
                for extra in holders:
                    if extra != keep:
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

    @staticmethod
    def _choice(store: Topology, comp: list[str]) -> str | None:
        """The daemon's rule, as every member of the group works it out (they agree)."""
        by_id = {store.node_id(c): c for c in comp}
        wan = {nid: store.wan_ok(name) for nid, name in by_id.items()}
        choices = {elect(me, wan[me], {p: ok for p, ok in wan.items() if p != me}) for me in wan}
        assert len(choices) == 1, choices
        chosen = choices.pop()
        return None if chosen is None else by_id[chosen]

    def elect(self, store: Topology, now: int) -> None:
        if self.mode == "all":
            return
        self.changed(store, now)
        for comp in store.lan_components():
            if self._holds(comp):
                continue
            chosen = self._choice(store, comp)
            if chosen is not None:
                self.relays.add(chosen)
                self.changes += 1
                self.history.append((now, chosen, "relaying"))
