"""What a simulated store measures as it runs: convergence after each heal, and its state at each
sampling point (stock divergence between counters, ops behind, HQ's lag, bytes moved).

Everything is read from the replicas' own views and the ground truth, never from the protocol's
internal state.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from meshpos.node.core import NodeAction
from meshpos.sim.nodes import HQ, Roster, SimNode
from meshpos.sim.truth import GroundTruth
from meshpos.sim.workload import HOUR
from meshpos.sync.memnet import MemNet

WATCH_LIMIT_MS = 4 * HOUR


@dataclass
class Watch:
    """Time from a heal until every replica in scope holds what any of them held at the heal."""

    label: str
    at: int
    scope: str  # "lan", "hq", "node:NAME"
    target: dict[str, int]
    done_at: int | None = None


def union(nodes: Iterable[SimNode]) -> dict[str, int]:
    """The version vector of everything the nodes hold between them."""
    out: dict[str, int] = {}
    for n in nodes:
        for o, s in n.replica.current().items():
            if s > out.get(o, 0):
                out[o] = s
    return out


def covers(vv: dict[str, int], target: dict[str, int]) -> bool:
    return all(vv.get(o, 0) >= s for o, s in target.items())


class Metrics:
    def __init__(
        self, roster: Roster, net: MemNet[NodeAction], truth: GroundTruth, hq_enabled: bool
    ) -> None:
        self.roster = roster
        self.net = net
        self.truth = truth
        self.hq_enabled = hq_enabled
        self.watches: list[Watch] = []

    # -- convergence watches --------------------------------------------------------------------

    def _scope(self, scope: str) -> list[SimNode]:
        nodes = [n for n in self.roster.counters() if n.up]
        if scope == "hq" and self.hq_enabled:
            nodes.append(self.roster.nodes[HQ])
        return nodes

    def watch(self, scope: str, label: str) -> None:
        if scope == "hq" and not self.hq_enabled:
            return
        nodes = self._scope("hq" if scope.startswith("node:") else scope)
        self.watches.append(Watch(label, self.net.now, scope, union(nodes)))

    def watching(self) -> bool:
        return any(w.done_at is None for w in self.watches)

    def check_watches(self) -> None:
        now = self.net.now
        for w in self.watches:
            if w.done_at is not None:
                continue
            scope = w.scope
            one = scope.startswith("node:")
            nodes = [self.roster.nodes[scope[5:]]] if one else self._scope(scope)
            if all(covers(n.replica.current(), w.target) for n in nodes if n.up):
                w.done_at = now
            elif now - w.at > WATCH_LIMIT_MS:
                w.done_at = -1

    # -- sampling -------------------------------------------------------------------------------

    def sample(self) -> dict[str, int]:
        """The store's state now: stock divergence between counters, ops behind, HQ lag."""
        now = self.net.now
        counters = self.roster.counters()
        live = [n for n in sorted(counters, key=lambda n: n.name) if n.up and not n.gate]
        everything = union(n for n in counters if not n.disk_dead)
        behind = 0
        groups: dict[tuple[tuple[str, int], ...], SimNode] = {}
        for n in live:
            vv = n.replica.current()
            behind += sum(s - vv.get(o, 0) for o, s in everything.items())
            groups.setdefault(tuple(sorted(vv.items())), n)
        skus = units = 0
        if len(groups) > 1:
            views = [g.ledger.views.stock_levels() for g in groups.values()]
            for sku in sorted(set().union(*views)):
                values = [v.get(sku, 0) for v in views]
                if max(values) != min(values):
                    skus += 1
                    units += max(values) - min(values)
        hq_missing = hq_lag = 0
        if self.hq_enabled:
            hvv = self.roster.nodes[HQ].replica.current()
            oldest = None
            for origin, seq in everything.items():
                held = hvv.get(origin, 0)
                if seq > held:
                    hq_missing += seq - held
                    first = self.truth.rung.get((origin, held + 1))
                    if first is not None and (oldest is None or first.at < oldest):
                        oldest = first.at
            hq_lag = 0 if oldest is None else now - oldest
        lan, wan = self.traffic()
        return {
            "lan_bytes": lan,
            "wan_bytes": wan,
            "stock_skus": skus,
            "stock_units": units,
            "ops_behind": behind,
            "hq_missing": hq_missing,
            "hq_lag_ms": hq_lag,
            "counters_selling": len(live),
        }

    def traffic(self) -> tuple[int, int]:
        """Bytes sent on live links so far: (LAN, WAN), the WAN being every link to HQ."""
        lan = wan = 0
        hq_id = self.roster.nodes[HQ].node_id
        for (src, dst), size in self.net.stats.wire_bytes.items():
            if hq_id in (src, dst):
                wan += size
            else:
                lan += size
        return lan, wan
