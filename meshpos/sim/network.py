"""A simulated store's network as its faults leave it: who reaches whom on the LAN, each link's
quality, whether each counter has internet, and which counters talk to HQ.

The faults change the state here (a WAN outage, a counter's cable out, a LAN split, a flaky Wi-Fi);
`reconcile` then cuts exactly the MemNet links that state calls for. The HQ link
(meshpos/sim/hq.py) sees the store through the `Topology` methods and picks who talks to HQ.
"""

from __future__ import annotations

from collections import Counter

from meshpos.node.core import NodeAction
from meshpos.sim.hq import HqLink
from meshpos.sim.nodes import HQ, Roster, SimNode
from meshpos.sim.scenario import LinkConf, Scenario
from meshpos.sync.memnet import LinkSpec, MemNet


def link_spec(conf: LinkConf) -> LinkSpec:
    return LinkSpec(
        latency_ms=conf.latency_ms,
        jitter_ms=conf.jitter_ms,
        loss=conf.loss,
        duplicate=conf.duplicate,
        bandwidth_bps=conf.bandwidth_kbps * 1000,
        reorder=conf.reorder,
        reorder_ms=conf.reorder_ms,
    )


def _worse(a: LinkConf | None, b: LinkConf | None) -> LinkConf | None:
    """A link is as bad as the worse end of it (a flaky Wi-Fi client spoils both directions)."""
    if a is None:
        return b
    if b is None:
        return a
    return a if (a.loss, a.latency_ms) >= (b.loss, b.latency_ms) else b


class StoreNetwork:
    def __init__(
        self,
        sc: Scenario,
        roster: Roster,
        net: MemNet[NodeAction],
        hq_link: HqLink,
        hq_enabled: bool,
    ) -> None:
        self.sc = sc
        self.roster = roster
        self.net = net
        self.hq_link = hq_link
        self.hq_enabled = hq_enabled
        self.wan_down = 0  # nested store-wide WAN outages
        self.hq_cut: Counter[str] = Counter()  # position -> nested internet cuts
        self.isolated: Counter[str] = Counter()  # position -> nested cable cuts
        self.group_of: dict[str, int] = {}  # position -> its side of a LAN split
        self.link_override: dict[str, LinkConf] = {}  # position -> its Wi-Fi now
        self._cut: set[frozenset[str]] = set()
        self._apart: set[frozenset[str]] = set()

    # -- the Topology the HQ link sees ----------------------------------------------------------

    def counters_online(self) -> list[str]:
        return sorted(n.name for n in self.roster.counters() if n.up)

    def wan_ok(self, name: str) -> bool:
        node = self.roster.nodes[name]
        return (
            self.hq_enabled
            and node.up
            and self.wan_down == 0
            and self.hq_cut[node.position] == 0
            and self.isolated[node.position] == 0  # its cable is out: no internet either
        )

    def lan_components(self) -> list[list[str]]:
        comps: dict[tuple[int, str], list[str]] = {}
        for node in sorted(self.roster.counters(), key=lambda n: n.name):
            if node.up:
                comps.setdefault(self._lan_key(node), []).append(node.name)
        return [comps[k] for k in sorted(comps)]

    def node_id(self, name: str) -> str:
        return self.roster.nodes[name].node_id

    # -- links ----------------------------------------------------------------------------------

    def _lan_key(self, node: SimNode) -> tuple[int, str]:
        if self.isolated[node.position]:
            return (-1, node.name)
        return (self.group_of.get(node.position, 0), "")

    def _wifi(self, position: str) -> LinkConf | None:
        conf = self.link_override.get(position)
        if conf is None:
            nc = self.roster.node_conf.get(position)
            conf = nc.link if nc and nc.link else None
        return conf

    def apply_links(self, node: SimNode) -> None:
        """The node's links: its own Wi-Fi (a link fault or [[nodes]] link) to LAN peers, the WAN
        spec to HQ."""
        mine = self._wifi(node.position)
        for other in self.roster.nodes.values():
            if other is node or other.retired:
                continue
            if other.kind == "hq" or node.kind == "hq":
                spec = link_spec(self.sc.wan)
            else:
                spec = link_spec(_worse(mine, self._wifi(other.position)) or self.sc.lan)
            self.net.set_link(node.node_id, other.node_id, spec)

    def reconcile(self) -> None:
        """Cut exactly the links the current faults and the relay choice call for."""
        want: set[frozenset[str]] = set()
        counters = self.roster.counters()
        for i, a in enumerate(counters):
            for b in counters[i + 1 :]:
                if self._lan_key(a) != self._lan_key(b) or self._lan_key(a)[0] == -1:
                    want.add(frozenset((a.node_id, b.node_id)))
        for pair in sorted(self._cut - want, key=sorted):
            self.net.restore(*sorted(pair))
        for pair in sorted(want - self._cut, key=sorted):
            self.net.cut(*sorted(pair))
        self._cut = want
        # A counter that does not relay has no session with HQ at all (it is not an HQ peer);
        # the relay's session is torn down when its WAN goes, as its uploads would fail.
        hq = self.roster.nodes[HQ]
        talking = self.hq_link.talking(self)
        apart = {
            frozenset((c.node_id, hq.node_id))
            for c in counters
            if not (c.name in talking and self.wan_ok(c.name))
        }
        for pair in sorted(self._apart - apart, key=sorted):
            self.net.peer(*sorted(pair))
        for pair in sorted(apart - self._apart, key=sorted):
            self.net.unpeer(*sorted(pair))
        self._apart = apart

    def changed(self) -> int | None:
        """The topology changed: reconcile; when the HQ link wants an election (returned)."""
        at = self.hq_link.changed(self, self.net.now)
        self.reconcile()
        return at

    def elect(self) -> None:
        self.hq_link.elect(self, self.net.now)
        self.reconcile()

    def heal_all(self) -> None:
        """Every fault of the network ends; link quality (a flaky Wi-Fi) stays as it is."""
        self.group_of = {}
        self.isolated.clear()
        self.wan_down = 0
        self.hq_cut.clear()
