"""One simulated store: its counters and HQ replica on one seeded `MemNet` in lazy mode, and the
units that drive and watch them.

- `Roster` (nodes.py): the nodes, each counter run by the daemon's own `NodeCore`;
- `Shoppers` (shoppers.py): the workload, through the real `Terminal` API;
- `Faults` (faults.py) and `StoreNetwork` (network.py): what breaks, and the network it leaves;
- the HQ link (hq.py): which counters talk to HQ;
- `GroundTruth` (truth.py) and `Metrics` (metrics.py): what really happened, and the figures.

The store runs its agenda (meshpos/sim/agenda.py) event by event, the network in between. Stores
never share a network, so the chain advances store by store between sampling points; a run is a
pure function of the scenario and the seed. Nothing reads the wall clock.
"""

from __future__ import annotations

from meshpos.domain.catalog import CatalogRow
from meshpos.ledger.store import Ledger
from meshpos.node.core import BootstrapDone, Granted, NodeAction
from meshpos.sim.agenda import Agenda, Event
from meshpos.sim.faults import Faults
from meshpos.sim.hq import SyncRelay
from meshpos.sim.metrics import Metrics
from meshpos.sim.network import StoreNetwork, link_spec
from meshpos.sim.nodes import DAY_MS, HQ, Roster, SimNode, derive_seed
from meshpos.sim.scenario import FaultConf, Scenario, StoreConf
from meshpos.sim.shoppers import Shoppers
from meshpos.sim.truth import GroundTruth
from meshpos.sync.memnet import MemNet
from meshpos.sync.protocol import SyncConfig

CHECK_MS = 100  # how finely convergence after a heal is timed


class StoreSim:
    def __init__(
        self,
        sc: Scenario,
        conf: StoreConf,
        rows: list[CatalogRow],
        seed: int,
        price_plan: list[tuple[int, int, float]],
    ) -> None:
        self.sc = sc
        self.conf = conf
        self.name = conf.name
        self.rows = rows
        self.price_plan = price_plan
        self.hq_enabled = sc.hq.enabled
        self.net: MemNet[NodeAction] = MemNet(
            seed=derive_seed(seed, conf.name, "net"),
            link=link_spec(sc.lan),
            tick_ms=sc.tick_ms,
            lazy=True,
        )
        self.net.on_action = self._on_action
        self.sync_config = SyncConfig(**dict(sc.sync))
        self.agenda = Agenda()
        self.roster = Roster(sc, conf.name, self.net, self.sync_config)
        self.truth = GroundTruth(DAY_MS + sc.start_ms)
        self.metrics = Metrics(self.roster, self.net, self.truth, self.hq_enabled)
        self.hq_link = SyncRelay(sc.hq.relay, sc.hq.failover_ms)
        self.network = StoreNetwork(sc, self.roster, self.net, self.hq_link, self.hq_enabled)
        self.shoppers = Shoppers(
            sc, conf, rows, seed, self.roster, self.net, self.truth, self.agenda
        )
        self.faults = Faults(
            sc, conf, seed, self.roster, self.network, self.truth, self.metrics, self.agenda
        )
        self.final_converge_ms: int | None = None

    @property
    def nodes(self) -> dict[str, SimNode]:
        return self.roster.nodes

    def setup(self) -> None:
        """The store at opening time: catalogue from HQ, customers with opening points (earned at
        various counters, so their redemption rights are spread out), every replica in sync."""
        roster = self.roster
        hq = roster.make(HQ, HQ, "hq")
        with hq.ledger.write():
            hq.terminal.import_catalog(self.rows, user="hq")
        self.truth.record(hq, 0)
        counters = []
        for name in self.conf.counter_names():
            ledger = Ledger(":memory:", self.name, durable=False)
            hq.ledger.clone_into(ledger)
            node = roster.make(name, name, "counter", ledger)
            roster.position[name] = name
            counters.append(node)
        self.shoppers.open(counters)
        everyone = [hq, *counters]
        records = [n.terminal.node_record() for n in everyone]
        for node in everyone:
            theirs = node.ledger.vv()
            for other in everyone:
                if other is node:
                    continue
                ops = other.ledger.ops_since({o: s for o, s in theirs.items()})
                mine = [op for op in ops if op.origin == other.node_id]
                if mine:
                    node.ledger.ingest(mine, records)
        if not self.hq_enabled:
            hq.up = False
        for node in everyone:
            if node.up:
                roster.start(node)
        for node in counters:
            self.network.apply_links(node)
        self.network.elect()
        self.shoppers.schedule()
        for at, sku_index, factor in self.price_plan:
            if self.hq_enabled:
                self.agenda.push(at, "price", (sku_index, factor))

    def schedule_fault(self, f: FaultConf) -> None:
        self.faults.schedule(f)

    def random_faults(self) -> list[FaultConf]:
        return self.faults.random()

    # -- running --------------------------------------------------------------------------------

    def advance_to(self, t: int) -> None:
        while (ev := self.agenda.due(t)) is not None:
            self._run_net(ev.at)
            self._handle(ev)
        self._run_net(t)

    def _run_net(self, t: int) -> None:
        while self.metrics.watching() and self.net.now < t:
            self.net.run_until(min(t, self.net.now + CHECK_MS))
            self.metrics.check_watches()
        self.net.run_until(t)

    def _handle(self, ev: Event) -> None:
        kind, data = ev.kind, ev.data
        if kind == "customer" and isinstance(data, str):
            self.shoppers.customer(data)
        elif kind == "retry" and isinstance(data, tuple) and len(data) == 4:
            self.shoppers.retry_redeem(data)
        elif kind == "receipt":
            self.shoppers.receipt()
        elif kind == "markdown":
            self.shoppers.markdown()
        elif kind == "price" and isinstance(data, tuple) and len(data) == 2:
            self.shoppers.price(data)
        elif kind == "elect":
            self.network.elect()
        elif kind == "fault" and isinstance(data, FaultConf):
            self.faults.apply(data)
            self._topology_changed()
        elif kind == "replace" and isinstance(data, tuple) and len(data) == 5:
            self.faults.bring_replacement(data)
            self._topology_changed()
        elif isinstance(data, FaultConf):  # a repair scheduled by a fault with a duration
            self.faults.repair(kind, data)
            self._topology_changed()

    def _topology_changed(self) -> None:
        at = self.network.changed()
        if at is not None:
            self.agenda.push(at, "elect", None)

    def _on_action(self, nid: str, action: NodeAction) -> None:
        """What the nodes report, for the ground truth (every node core acts on its own)."""
        now = self.net.now
        self.truth.observe(nid, action, now)
        if isinstance(action, Granted):
            node = self.roster.by_id[nid]
            self.truth.record(node, now)  # the grant is an op the node signed
            self.shoppers.granted(action.points)
        elif isinstance(action, BootstrapDone):
            node = self.roster.by_id[nid]
            if node.gate == "same-identity":
                node.gate = ""
                self.truth.note(now, "open", f"{node.name} sells again")

    def sample(self) -> dict[str, int]:
        return self.metrics.sample()

    # -- the end --------------------------------------------------------------------------------

    def final_heal(self) -> None:
        """Every fault ends: LAN healed, WAN back, crashed counters restarted, replacements
        brought in now. Link quality (a flaky Wi-Fi) stays as it is."""
        for ev in self.agenda.drain("replace"):
            self._handle(ev)
        self.agenda.drain("")
        self.network.heal_all()
        for node in sorted(self.roster.counters(), key=lambda n: n.name):
            if not node.up:
                self.faults.restart(node)
        self.network.changed()
        self.network.elect()
        self.truth.note(self.net.now, "final_heal", "every fault repaired")

    def replicas(self) -> list[SimNode]:
        nodes = [n for n in self.roster.counters() if n.up]
        if self.hq_enabled:
            nodes.append(self.roster.nodes[HQ])
        return nodes

    def converged(self) -> bool:
        nodes = self.replicas()
        first = nodes[0].replica.current()
        return all(n.replica.current() == first for n in nodes) and not any(
            n.ledger.pending_count() for n in nodes
        )

    def settle(self, limit_ms: int) -> None:
        start = self.net.now
        while self.net.now - start < limit_ms:
            if self.converged():
                for n in self.roster.counters():  # gated replacements open as soon as they can
                    self.shoppers.opens(n)
                self.final_converge_ms = self.net.now - start
                return
            self.net.run_until(self.net.now + CHECK_MS)
            self.metrics.check_watches()
        if self.converged():
            self.final_converge_ms = self.net.now - start
