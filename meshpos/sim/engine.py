"""The discrete-event simulation: real terminals, ledgers and sync nodes on a simulated network.

Each store is one `StoreSim`: its counters (a `Terminal` on an in-memory `Ledger` and a `SyncNode`
each) and its HQ replica, on one seeded `MemNet` in lazy mode. Stores never share a network, so
the chain advances store by store between sampling points; a run is a pure function of the
scenario and the seed. Nothing reads the wall clock: every node's time is the simulated time plus
its own skew and drift, handed to its `Terminal` as `now_ms`.

The simulator keeps the ground truth next to the replicas: every op any node signed (its
signature, when, where), which ops died with a disk before any peer held them, when each op first
reached a second node, which redemptions escrow refused. Metrics and invariants are computed from
that truth and the replicas' own views, never from the protocol's internal state.
"""

from __future__ import annotations

import hashlib
import heapq
import random
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from meshpos.core.clock import wall_of
from meshpos.core.errors import MeshposError, NotFound
from meshpos.core.ops import Op, Signer
from meshpos.domain.catalog import CatalogRow
from meshpos.domain.pricing import Tender
from meshpos.ledger.schema import VIEW_TABLES
from meshpos.ledger.store import Ledger
from meshpos.service import escrow
from meshpos.service.config import NodeConfig
from meshpos.service.terminal import EscrowShortfall, Terminal
from meshpos.sim.hq import SyncRelay
from meshpos.sim.replica import CachedReplica
from meshpos.sim.scenario import FaultConf, LinkConf, NodeConf, Scenario, StoreConf, format_clock
from meshpos.sim.workload import HOUR, Popularity, arrivals, catalogue, poisson_times
from meshpos.sync.memnet import LinkSpec, MemNet
from meshpos.sync.protocol import (
    Action,
    Applied,
    PeerDown,
    PeerUp,
    Rejected,
    RequestReceived,
    Send,
    SyncConfig,
    SyncNode,
)

# The simulated day: 2025-10-20, a festival week, India Standard Time wall clock in receipts.
DAY_MS = int(datetime(2025, 10, 20, tzinfo=UTC).timestamp() * 1000) - 19_800_000
CHECK_MS = 100  # how finely convergence after a heal is timed
WATCH_LIMIT_MS = 4 * HOUR
RECEIPT_OFF_MS = 5 * 60_000
HQ = "HQ"


def derive_seed(*parts: object) -> int:
    """A stable 64-bit seed from the scenario seed and names (no hash randomisation)."""
    text = "/".join(str(p) for p in parts)
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")


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


@dataclass
class NodeClock:
    """A terminal's wall clock: simulated time plus a fixed skew plus drift (ppm)."""

    base_ms: int
    skew_ms: int = 0
    drift_ppm: int = 0

    def wall(self, sim_ms: int) -> int:
        return self.base_ms + sim_ms + self.skew_ms + self.drift_ppm * sim_ms // 1_000_000


@dataclass
class SimNode:
    name: str
    position: str  # the counter position it serves (T3 for T3 and its replacement T3b); HQ
    kind: str  # "counter" or "hq"
    signer: Signer
    terminal: Terminal
    replica: CachedReplica
    clock: NodeClock
    epoch: int = 1
    up: bool = True
    retired: bool = False
    disk_dead: bool = False
    gate: str = ""  # why the counter does not sell yet: "", "bootstrap", "same-identity"
    gate_since: int = 0
    max_lead_ms: int = 0
    max_skew_ms: int = 0
    receipts_off: int = 0
    ops_signed: int = 0

    @property
    def node_id(self) -> str:
        return self.signer.node_id

    @property
    def ledger(self) -> Ledger:
        return self.terminal.ledger


@dataclass(frozen=True)
class Rung:
    """One op as its origin signed it: the ground truth the replicas are checked against."""

    sig: bytes
    kind: str
    at: int
    node: str


@dataclass
class Watch:
    """Time from a heal until every replica in scope holds what any of them held at the heal."""

    label: str
    at: int
    scope: str  # "lan", "hq", "node:NAME"
    target: dict[str, int]
    done_at: int | None = None


@dataclass
class Event:
    at: int
    seq: int
    kind: str
    data: Any = field(compare=False)

    def __lt__(self, other: Event) -> bool:
        return (self.at, self.seq) < (other.at, other.seq)


@dataclass
class Tally:
    """Counts of what happened at the counters."""

    counts: Counter[str] = field(default_factory=Counter)
    failures: Counter[str] = field(default_factory=Counter)


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
        self.seed = seed
        self.wl = conf.workload
        self.rng = random.Random(derive_seed(seed, conf.name, "workload"))
        self.fault_rng = random.Random(derive_seed(seed, conf.name, "faults"))
        cfg = dict(sc.sync)
        self.sync_config = SyncConfig(**cfg)
        self.net: MemNet[Action] = MemNet(
            seed=derive_seed(seed, conf.name, "net"),
            link=link_spec(sc.lan),
            tick_ms=sc.tick_ms,
            lazy=True,
        )
        self.net.on_action = self._on_action
        self.node_conf: dict[str, NodeConf] = {n.name: n for n in sc.nodes if n.store == conf.name}
        self.nodes: dict[str, SimNode] = {}
        self.by_id: dict[str, SimNode] = {}
        self.position: dict[str, str] = {}  # counter position -> current node name
        self.events: list[Event] = []
        self._seq = 0
        self.price_plan = price_plan
        self.hq_link = SyncRelay(sc.hq.relay, sc.hq.failover_ms)
        # network state set by faults
        self.wan_down = 0
        self.hq_cut: Counter[str] = Counter()
        self.isolated: Counter[str] = Counter()
        self.group_of: dict[str, int] = {}
        self.cut_now: set[frozenset[str]] = set()
        self.apart_now: set[frozenset[str]] = set()
        self.link_override: dict[str, LinkConf] = {}
        # ground truth and metrics
        self.rung: dict[tuple[str, int], Rung] = {}
        self.lost_dead: dict[tuple[str, int], Rung] = {}
        self.copied: dict[tuple[str, int], int] = {}
        self.sales: list[tuple[str, str, list[tuple[str, int]]]] = []
        self.price_writes: list[tuple[str, int, int, str, int]] = []  # sku, at, hlc, origin, price
        self.customers: list[str] = []
        self.customer_cum: tuple[float, ...] = ()
        self.watches: list[Watch] = []
        self.tally = Tally()
        self.escrow: Counter[str] = Counter()
        self.rejections: list[tuple[int, str, str, str]] = []
        self.peer_events: Counter[str] = Counter()
        self.timeline: list[tuple[int, str, str]] = []  # (at, what, detail) of faults applied
        self.fault_spans: list[tuple[int, int, str]] = []
        self.popularity: Popularity | None = None
        self.hq_enabled = sc.hq.enabled
        self._generation: Counter[str] = Counter()
        self.final_converge_ms: int | None = None

    # -- building -----------------------------------------------------------------------------

    def _signer(self, name: str) -> Signer:
        gen = self._generation[name]
        return Signer.from_seed(f"meshpos-sim/{self.name}/{name}/{gen}".encode())

    def _clock(self, position: str) -> NodeClock:
        nc = self.node_conf.get(position)
        return NodeClock(
            DAY_MS + self.sc.start_ms, nc.skew_ms if nc else 0, nc.drift_ppm if nc else 0
        )

    def _make_node(
        self,
        name: str,
        position: str,
        kind: str,
        ledger: Ledger | None = None,
        clock: NodeClock | None = None,
    ) -> SimNode:
        signer = self._signer(name)
        clock = clock or self._clock(position)
        cfg = NodeConfig(
            dir=Path("/nonexistent"), store=self.name, name=name, node_id=signer.node_id
        )
        if kind == "hq":
            cfg.user = "hq"
        ledger = ledger or Ledger(":memory:", self.name, durable=False)
        net = self.net
        terminal = Terminal(cfg, signer, ledger, now_ms=lambda: clock.wall(net.now))
        node = SimNode(name, position, kind, signer, terminal, CachedReplica(ledger), clock)
        node.max_skew_ms = clock.skew_ms
        self.nodes[name] = node
        self.by_id[node.node_id] = node
        return node

    def _sync(self, node: SimNode) -> SyncNode:
        return SyncNode(
            node.replica, node.terminal.node_record(), epoch=node.epoch, config=self.sync_config
        )

    def _sync_of(self, nid: str) -> SyncNode | None:
        node = self.net.nodes.get(nid)
        return node if isinstance(node, SyncNode) else None

    def setup(self) -> None:
        """The store at opening time: catalogue from HQ, customers with opening points (earned at
        various counters, so their redemption rights are spread out), every replica in sync."""
        names = self.conf.counter_names()
        hq = self._make_node(HQ, HQ, "hq")
        with hq.ledger.write():
            hq.terminal.import_catalog(self.rows, user="hq")
        self._record(hq, 0, 0)
        template = hq.ledger
        counters = []
        for name in names:
            ledger = Ledger(":memory:", self.name, durable=False)
            template.conn.backup(ledger.conn)
            node = self._make_node(name, name, "counter", ledger)
            self.position[name] = name
            counters.append(node)
        self.popularity = Popularity.build(self.rng, [r.sku for r in self.rows])
        lo, hi = self.wl.opening_points
        first = counters[0]
        for k in range(self.wl.customers):
            before = first.ledger.head(first.node_id)[0]
            cid = first.terminal.add_customer({"name": f"Customer {k + 1}", "phone": f"9{k:09d}"})
            self._record(first, before, 0)
            self.customers.append(cid)
        weights = [1.0 / (rank + 1) ** 0.7 for rank in range(len(self.customers))]
        total = 0.0
        cum = []
        for w in weights:
            total += w
            cum.append(total)
        self.customer_cum = tuple(cum)
        for k, cid in enumerate(self.customers):
            node = counters[k % len(counters)]
            points = self.rng.randint(lo, hi)
            if points:
                before = node.ledger.head(node.node_id)[0]
                node.terminal.append(
                    "loyalty.adjust", {"customer_id": cid, "delta": points, "reason": "opening"}
                )
                self._record(node, before, 0)
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
                self.net.add(self._sync(node))
        for node in counters:
            self._apply_links(node)
        self.hq_link.elect(self, 0)
        self._reconcile()
        self._schedule_workload()
        for at, sku_index, factor in self.price_plan:
            if self.hq_enabled:
                self._push(at, "price", (sku_index, factor))

    def _apply_links(self, node: SimNode) -> None:
        """The node's links: its own Wi-Fi (a link fault or [[nodes]] link) to LAN peers, the WAN
        spec to HQ."""
        conf = self.link_override.get(node.position)
        if conf is None:
            nc = self.node_conf.get(node.position)
            conf = nc.link if nc and nc.link else None
        for other in self.nodes.values():
            if other is node or other.retired:
                continue
            if other.kind == "hq" or node.kind == "hq":
                spec = link_spec(self.sc.wan)
            else:
                mine = conf
                theirs = self.link_override.get(other.position)
                if theirs is None:
                    onc = self.node_conf.get(other.position)
                    theirs = onc.link if onc and onc.link else None
                chosen = _worse(mine, theirs) or self.sc.lan
                spec = link_spec(chosen)
            self.net.set_link(node.node_id, other.node_id, spec)

    # -- the topology the HQ link sees ---------------------------------------------------------

    def counters(self) -> list[SimNode]:
        return [n for n in self.nodes.values() if n.kind == "counter" and not n.retired]

    def counters_online(self) -> list[str]:
        return sorted(n.name for n in self.counters() if n.up)

    def wan_ok(self, name: str) -> bool:
        node = self.nodes[name]
        return (
            self.hq_enabled
            and node.up
            and self.wan_down == 0
            and self.hq_cut[node.position] == 0
            and self.isolated[node.position] == 0  # its cable is out: no internet either
        )

    def _lan_key(self, node: SimNode) -> tuple[int, str]:
        if self.isolated[node.position]:
            return (-1, node.name)
        return (self.group_of.get(node.position, 0), "")

    def node_id(self, name: str) -> str:
        return self.nodes[name].node_id

    def lan_components(self) -> list[list[str]]:
        comps: dict[tuple[int, str], list[str]] = {}
        for node in sorted(self.counters(), key=lambda n: n.name):
            if node.up:
                comps.setdefault(self._lan_key(node), []).append(node.name)
        return [comps[k] for k in sorted(comps)]

    def _reconcile(self) -> None:
        """Cut exactly the links the current faults and the relay choice call for."""
        want: set[frozenset[str]] = set()
        counters = self.counters()
        for i, a in enumerate(counters):
            for b in counters[i + 1 :]:
                if self._lan_key(a) != self._lan_key(b) or self._lan_key(a)[0] == -1:
                    want.add(frozenset((a.node_id, b.node_id)))
        for pair in sorted(self.cut_now - want, key=sorted):
            self.net.restore(*sorted(pair))
        for pair in sorted(want - self.cut_now, key=sorted):
            self.net.cut(*sorted(pair))
        self.cut_now = want
        # A counter that does not relay has no session with HQ at all (it is not an HQ peer);
        # the relay's session is torn down when its WAN goes, as its uploads would fail.
        hq = self.nodes[HQ]
        talking = self.hq_link.talking(self)
        apart = {
            frozenset((c.node_id, hq.node_id))
            for c in counters
            if not (c.name in talking and self.wan_ok(c.name))
        }
        for pair in sorted(self.apart_now - apart, key=sorted):
            self.net.peer(*sorted(pair))
        for pair in sorted(apart - self.apart_now, key=sorted):
            self.net.unpeer(*sorted(pair))
        self.apart_now = apart

    def _topology_changed(self) -> None:
        at = self.hq_link.changed(self, self.net.now)
        if at is not None:
            self._push(at, "elect", None)
        self._reconcile()

    # -- events -------------------------------------------------------------------------------

    def _push(self, at: int, kind: str, data: Any) -> None:
        self._seq += 1
        heapq.heappush(self.events, Event(at, self._seq, kind, data))

    def _schedule_workload(self) -> None:
        d = self.sc.duration_ms
        start = self.sc.start_ms
        for position in self.conf.counter_names():
            rng = random.Random(derive_seed(self.seed, self.name, position, "arrivals"))
            for at in arrivals(rng, self.wl.sales_per_hour, self.wl.shape, start, d):
                self._push(at, "customer", position)
        rng = random.Random(derive_seed(self.seed, self.name, "receipts"))
        for at in poisson_times(rng, self.wl.receipts_per_hour, d):
            self._push(at, "receipt", None)
        rng = random.Random(derive_seed(self.seed, self.name, "markdowns"))
        for at in poisson_times(rng, self.wl.markdowns_per_hour, d):
            self._push(at, "markdown", None)

    def schedule_fault(self, f: FaultConf) -> None:
        self._push(f.at_ms, "fault", f)

    def random_faults(self) -> list[FaultConf]:
        """Random faults of this store, drawn from the scenario's seed."""
        r = self.sc.random
        d = self.sc.duration_ms
        rng = self.fault_rng
        out: list[FaultConf] = []
        names = self.conf.counter_names()

        def outage() -> int:
            ms = int(rng.expovariate(1.0) * r.mean_outage_ms)
            return max(5_000, min(ms, 4 * r.mean_outage_ms))

        for at in poisson_times(rng, r.crash_per_hour, d):
            out.append(
                FaultConf(
                    at, "crash", node=f"{self.name}/{rng.choice(names)}", duration_ms=outage()
                )
            )
        for at in poisson_times(rng, r.partition_per_hour, d):
            if len(names) < 2:
                break
            shuffled = list(names)
            rng.shuffle(shuffled)
            cut = rng.randint(1, len(names) - 1)
            groups = (tuple(sorted(shuffled[:cut])), tuple(sorted(shuffled[cut:])))
            out.append(
                FaultConf(at, "partition", stores=(self.name,), groups=groups, duration_ms=outage())
            )
        for at in poisson_times(rng, r.wan_flap_per_hour, d):
            out.append(FaultConf(at, "wan_down", stores=(self.name,), duration_ms=outage()))
        for at in poisson_times(rng, r.disk_death_per_hour, d):
            node = f"{self.name}/{rng.choice(names)}"
            out.append(FaultConf(at, "disk_death", node=node, replacement="new", after_ms=outage()))
        return out

    def advance_to(self, t: int) -> None:
        while self.events and self.events[0].at <= t:
            ev = heapq.heappop(self.events)
            self._run_net(ev.at)
            self._handle(ev)
        self._run_net(t)

    def _run_net(self, t: int) -> None:
        while self._open_watches() and self.net.now < t:
            self.net.run_until(min(t, self.net.now + CHECK_MS))
            self._check_watches()
        self.net.run_until(t)

    def _handle(self, ev: Event) -> None:
        kind = ev.kind
        if kind == "customer":
            self._customer(ev.data)
        elif kind == "retry":
            self._retry_redeem(*ev.data)
        elif kind == "receipt":
            self._receipt()
        elif kind == "markdown":
            self._markdown()
        elif kind == "price":
            self._price(*ev.data)
        elif kind == "elect":
            self.hq_link.elect(self, self.net.now)
            self._reconcile()
        elif kind == "fault":
            self._fault(ev.data)
        elif kind == "replace":
            self._bring_replacement(*ev.data)
        else:  # a repair scheduled by a fault with a duration
            self._repair(kind, ev.data)

    # -- recording ------------------------------------------------------------------------------

    def _record(self, node: SimNode, before: int, now: int) -> list[Op]:
        """Note the ops `node` signed since its head was `before`: the ground truth."""
        head = node.ledger.head(node.node_id)[0]
        ops = []
        for seq in range(before + 1, head + 1):
            op = node.ledger.get(node.node_id, seq)
            assert op is not None
            ops.append(op)
            self.rung[(op.origin, op.seq)] = Rung(op.sig, op.kind, now, node.name)
            node.ops_signed += 1
            true_wall = DAY_MS + self.sc.start_ms + now
            node.max_lead_ms = max(node.max_lead_ms, wall_of(op.hlc) - true_wall)
            if op.kind in ("sale", "return", "exchange"):
                ts = op.payload.get("ts_ms")
                if isinstance(ts, int) and abs(ts - true_wall) > RECEIPT_OFF_MS:
                    node.receipts_off += 1
            if op.kind == "product.upsert":
                fields = op.payload.get("fields")
                if isinstance(fields, dict) and "price" in fields:
                    sku = str(op.payload.get("sku"))
                    self.price_writes.append((sku, now, op.hlc, op.origin, int(fields["price"])))
        return ops

    def _act(self, node: SimNode, fn: Callable[[Terminal], Any]) -> Any:
        """Run a business action at a node, note what it signed, and push it as the daemon does."""
        before = node.ledger.head(node.node_id)[0]
        try:
            return fn(node.terminal)
        finally:
            if node.ledger.head(node.node_id)[0] != before:
                self._record(node, before, self.net.now)
                self.net.local_changed(node.node_id)

    def _on_action(self, nid: str, action: Action) -> None:
        if type(action) is Send:
            return
        now = self.net.now
        if isinstance(action, Applied):
            copied = self.copied
            for op in action.ops:
                copied.setdefault((op.origin, op.seq), now)
        elif isinstance(action, RequestReceived):
            node = self.by_id.get(nid)
            if action.kind != escrow.NEED or node is None:
                return
            self.escrow["requests_received"] += 1
            if node.kind != "counter" or node.gate:
                return  # HQ holds no rights; a counter still bootstrapping must not sign
            try:
                granted = self._act(node, lambda t: escrow.handle_need(t, action.peer, action.body))
            except MeshposError:
                granted = 0
            if granted:
                self.escrow["grants"] += 1
                self.escrow["points_granted"] += granted
        elif isinstance(action, Rejected):
            self.rejections.append((now, nid, action.peer, action.reason))
        elif isinstance(action, PeerUp):
            self.peer_events["up"] += 1
        elif isinstance(action, PeerDown):
            self.peer_events["down"] += 1

    # -- customers ------------------------------------------------------------------------------

    def _available(self, node: SimNode) -> bool:
        if not node.up or node.retired or node.kind != "counter":
            return False
        if node.gate:
            self._check_gate(node)
        return not node.gate

    def _serving(self, position: str) -> SimNode | None:
        """The counter a customer at `position` is served at: that one, or (if it is down) one
        picked at random among those still selling; None when the store cannot sell at all."""
        node = self.nodes[self.position[position]]
        if self._available(node):
            return node
        others = [n for n in sorted(self.counters(), key=lambda n: n.name) if self._available(n)]
        if not others:
            self.tally.counts["turned_away"] += 1
            return None
        self.tally.counts["redirected"] += 1
        return self.rng.choice(others)

    def _customer(self, position: str) -> None:
        node = self._serving(position)
        if node is None:
            return
        rng = self.rng
        r = rng.random()
        wl = self.wl
        if r < wl.return_share and self.sales:
            self._return(node)
            return
        customer = None
        if self.customers and rng.random() < wl.loyalty_share + wl.redeem_share:
            customer = rng.choices(self.customers, cum_weights=self.customer_cum)[0]
        assert self.popularity is not None
        items = self.popularity.basket(rng, *wl.basket)
        method = "card" if rng.random() < 0.45 else "cash"
        redeem = customer is not None and rng.random() < wl.redeem_share / max(
            1e-9, wl.loyalty_share + wl.redeem_share
        )
        if redeem and customer is not None:
            self._redeem(node, customer, items, rng.randint(20, 400), first=True)
            return
        self._sell(node, items, [Tender(method)], customer, "sale")

    def _sell(
        self,
        node: SimNode,
        items: list[tuple[str, int]],
        tenders: list[Tender],
        customer: str | None,
        what: str,
    ) -> bool:
        try:
            result = self._act(node, lambda t: t.sell(items, tenders=tenders, customer=customer))
        except EscrowShortfall:
            if any(t.method == "points" for t in tenders):
                raise
            # Terminal.sell refuses even a sale without points when this counter's rights for
            # the customer are below zero (a return here clawed back points earned elsewhere).
            # The cashier rings it again without the loyalty card.
            self.tally.failures[f"{what}: escrow refusal without points (card dropped)"] += 1
            return self._sell(node, items, tenders, None, what)
        except MeshposError as exc:
            self.tally.failures[f"{what}: {_reason(exc)}"] += 1
            return False
        self.tally.counts[what] += 1
        if customer:
            self.tally.counts["loyalty_sales"] += 1
            self.tally.counts["points_earned"] += int(result.payload["points_earned"])
        self.sales.append((result.sale_id, node.name, items))
        return True

    def _redeem(
        self, node: SimNode, customer: str, items: list[tuple[str, int]], wanted: int, first: bool
    ) -> None:
        t = node.terminal
        try:
            balance = t.points(customer)
        except MeshposError:
            balance = 0
        points = min(balance, wanted)
        if points <= 0:
            self._sell(node, items, [Tender("card")], customer, "sale")
            return
        tenders = [Tender("points", points), Tender("card")]
        try:
            ok = self._sell(node, items, tenders, customer, "redemption")
        except EscrowShortfall as short:
            if first:
                self._ask(node, customer, short.needed - max(short.held, 0))
                self._push(
                    self.net.now + self.wl.escrow_wait_ms,
                    "retry",
                    (node.name, customer, items, points),
                )
                return
            self.escrow["refused"] += 1
            if self._rights_out_of_reach(node, customer):
                self.escrow["refused_out_of_reach"] += 1
            self._sell(node, items, [Tender("card")], customer, "sale")
            return
        if ok:
            self.tally.counts["points_redeemed"] += points
            if not first:
                self.escrow["redeemed_after_ask"] += 1

    def _ask(self, node: SimNode, customer: str, points: int) -> None:
        """What the daemon does with an escrow ask: a Request to every peer it can reach."""
        self.escrow["asks"] += 1
        sync = self._sync_of(node.node_id)
        assert sync is not None
        body: dict[str, object] = {"customer_id": customer, "points": points}
        for peer in sync.ready_peers():
            for action in sync.request(peer, escrow.NEED, body, self.net.now):
                if isinstance(action, Send):
                    self.net.send(node.node_id, action.peer, action.data)
        self.net.touch(node.node_id)

    def _retry_redeem(
        self, name: str, customer: str, items: list[tuple[str, int]], points: int
    ) -> None:
        node = self.nodes[name]
        if not self._available(node):
            self.escrow["abandoned"] += 1
            return
        self._redeem(node, customer, items, points, first=False)

    def _rights_out_of_reach(self, node: SimNode, customer: str) -> bool:
        """Whether some of the customer's rights sit at a node this counter cannot reach now."""
        for holder, pts in node.terminal.rights_elsewhere(customer).items():
            other = self.nodes.get(holder)
            if other is None or pts <= 0:
                continue
            if not self.net.reachable(node.node_id, other.node_id):
                return True
        return False

    def _return(self, node: SimNode) -> None:
        rng = self.rng
        sale_id, _, items = self.sales[-1 - int(rng.expovariate(1 / 40)) % len(self.sales)]
        sku = rng.choice(items)[0]
        try:
            node.terminal.sale(sale_id)
        except NotFound:
            self.tally.failures["return: the sale is not on this counter yet"] += 1
            return
        try:
            self._act(node, lambda t: t.return_items(sale_id, [(sku, 1)]))
        except MeshposError as exc:
            self.tally.failures[f"return: {_reason(exc)}"] += 1
            return
        self.tally.counts["return"] += 1

    def _receipt(self) -> None:
        others = [n for n in sorted(self.counters(), key=lambda n: n.name) if self._available(n)]
        if not others or self.popularity is None:
            self.tally.failures["receipt: no counter up"] += 1
            return
        node = self.rng.choice(others)
        sku = self.popularity.pick(self.rng)
        qty = self.rng.randint(6, 30)
        try:
            self._act(node, lambda t: t.move_stock("receive", sku, qty, "delivery"))
        except MeshposError as exc:
            self.tally.failures[f"receipt: {_reason(exc)}"] += 1
            return
        self.tally.counts["receipt"] += 1

    def _markdown(self) -> None:
        others = [n for n in sorted(self.counters(), key=lambda n: n.name) if self._available(n)]
        if not others or self.popularity is None:
            return
        node = self.rng.choice(others)
        sku = self.popularity.pick(self.rng)
        try:
            price = node.terminal.product(sku).price
            self._act(node, lambda t: t.set_price(sku, price * 8 // 10 // 100 * 100))
        except MeshposError as exc:
            self.tally.failures[f"markdown: {_reason(exc)}"] += 1
            return
        self.tally.counts["markdown"] += 1

    def _price(self, sku_index: int, factor: float) -> None:
        hq = self.nodes[HQ]
        sku = self.rows[sku_index % len(self.rows)].sku
        try:
            price = hq.terminal.product(sku).price
            new = max(100, int(price * factor) // 100 * 100)
            self._act(hq, lambda t: t.set_price(sku, new))
        except MeshposError as exc:
            self.tally.failures[f"hq price: {_reason(exc)}"] += 1
            return
        self.tally.counts["hq_price_change"] += 1

    # -- faults ---------------------------------------------------------------------------------

    def _node_at(self, ref: str) -> SimNode:
        position = ref.rpartition("/")[2]
        return self.nodes[self.position[position]]

    def _note(self, what: str, detail: str) -> None:
        self.timeline.append((self.net.now, what, detail))

    def _fault(self, f: FaultConf) -> None:
        now = self.net.now
        kind = f.kind
        if f.duration_ms and kind not in ("disk_death",):
            end = now + f.duration_ms
            self._push(end, f"end_{kind}", f)
            self.fault_spans.append((now, min(end, self.sc.duration_ms), kind))
        if kind == "wan_down":
            self.wan_down += 1
            self._note("wan_down", "WAN down")
        elif kind == "wan_up":
            self._wan_up()
        elif kind == "hq_cut":
            node = self._node_at(f.node)
            self.hq_cut[node.position] += 1
            self._note("hq_cut", f"{node.position} loses internet")
        elif kind == "hq_restore":
            node = self._node_at(f.node)
            self.hq_cut[node.position] = max(0, self.hq_cut[node.position] - 1)
            self._note("hq_restore", f"{node.position} internet back")
            self._watch("hq", f"{node.position} internet back")
        elif kind == "partition":
            self.group_of = {m: i + 1 for i, g in enumerate(f.groups) for m in g}
            self._note("partition", " | ".join(",".join(g) for g in f.groups))
        elif kind == "heal":
            self._heal()
        elif kind == "isolate":
            node = self._node_at(f.node)
            self.isolated[node.position] += 1
            self._note("isolate", f"{node.position} cut off the LAN")
        elif kind == "link":
            assert f.link is not None
            node = self._node_at(f.node)
            self.link_override[node.position] = f.link
            self._apply_links(node)
            self._note(
                "link", f"{node.position}: loss {f.link.loss:.0%}, latency {f.link.latency_ms} ms"
            )
        elif kind == "link_reset":
            node = self._node_at(f.node)
            self.link_override.pop(node.position, None)
            self._apply_links(node)
            self._note("link_reset", f"{node.position} link back to normal")
        elif kind == "crash":
            node = self._node_at(f.node)
            if f.lose_tail:
                self._disk_death(node, "same", "acked", f.duration_ms, f.bootstrap_first)
            else:
                self._crash(node)
        elif kind == "restart":
            self._restart(self._node_at(f.node))
        elif kind == "disk_death":
            node = self._node_at(f.node)
            self._disk_death(node, f.replacement, f.restore, f.after_ms, f.bootstrap_first)
            self.fault_spans.append((now, min(now + f.after_ms, self.sc.duration_ms), kind))
        elif kind == "clock":
            node = self._node_at(f.node)
            if f.skew_ms is not None:
                node.clock.skew_ms = f.skew_ms
                if abs(f.skew_ms) > abs(node.max_skew_ms):
                    node.max_skew_ms = f.skew_ms
            if f.drift_ppm is not None:
                node.clock.drift_ppm = f.drift_ppm
            self._note("clock", f"{node.position} clock skew {node.clock.skew_ms // 1000} s")
        self._topology_changed()

    def _repair(self, kind: str, f: FaultConf) -> None:
        if kind == "end_wan_down":
            self._wan_up()
        elif kind == "end_hq_cut":
            node = self._node_at(f.node)
            self.hq_cut[node.position] = max(0, self.hq_cut[node.position] - 1)
            self._note("hq_restore", f"{node.position} internet back")
            self._watch("hq", f"{node.position} internet back")
        elif kind == "end_partition":
            self._heal()
        elif kind == "end_isolate":
            node = self._node_at(f.node)
            self.isolated[node.position] = max(0, self.isolated[node.position] - 1)
            self._note("unisolate", f"{node.position} back on the LAN")
            self._watch("lan", f"{node.position} back on the LAN")
        elif kind == "end_link":
            node = self._node_at(f.node)
            self.link_override.pop(node.position, None)
            self._apply_links(node)
            self._note("link_reset", f"{node.position} link back to normal")
        elif kind == "end_crash":
            node = self._node_at(f.node)
            if not f.lose_tail:
                self._restart(node)
        elif kind == "end_clock":
            node = self._node_at(f.node)
            base = self._clock(node.position)
            node.clock.skew_ms, node.clock.drift_ppm = base.skew_ms, base.drift_ppm
            self._note("clock", f"{node.position} clock set right")
        self._topology_changed()

    def _wan_up(self) -> None:
        if self.wan_down:
            self.wan_down -= 1
        if not self.wan_down:
            self._note("wan_up", "WAN back")
            self._watch("hq", "WAN back")

    def _heal(self) -> None:
        if self.group_of:
            self.group_of = {}
            self._note("heal", "LAN healed")
            self._watch("lan", "LAN healed")

    def _crash(self, node: SimNode) -> None:
        if not node.up:
            return
        node.up = False
        self.net.stop(node.node_id)
        self._note("crash", f"{node.name} crashed")

    def _restart(self, node: SimNode) -> None:
        if node.up or node.retired or node.disk_dead:
            return
        node.up = True
        node.epoch += 1
        self.net.replace(self._sync(node))
        self._note("restart", f"{node.name} restarted")
        self._watch(f"node:{node.name}", f"{node.name} restarted")

    def _holders_max(self, node: SimNode) -> int:
        """The highest seq of `node`'s chain any other replica holds (a down one's disk too)."""
        best = 0
        for other in self.nodes.values():
            if other is node or other.retired or other.disk_dead:
                continue
            best = max(best, other.replica.current().get(node.node_id, 0))
        return best

    def _disk_death(
        self,
        node: SimNode,
        replacement: str,
        restore: str,
        after: int,
        bootstrap_first: bool = True,
    ) -> None:
        """The disk dies now: what no other replica holds is gone. The replacement comes later."""
        if node.retired or node.disk_dead:
            return  # a disk that is already dead cannot die again
        held = self._holders_max(node)
        head = node.ledger.head(node.node_id)[0]
        acked = 0
        sync = self._sync_of(node.node_id)
        if sync is not None:
            acked = sync.acked_by_peer()  # what peers acknowledged before the node went down
        for seq in range(held + 1, head + 1):
            key = (node.node_id, seq)
            if key in self.rung:
                self.lost_dead[key] = self.rung.pop(key)
        node.up = False
        node.disk_dead = True
        self.net.stop(node.node_id)
        self._note("disk_death", f"{node.name}'s disk died ({head - held} ops held by no peer)")
        self._push(
            self.net.now + after,
            "replace",
            (node.name, replacement, restore, min(acked, held), bootstrap_first),
        )

    def _bring_replacement(
        self, name: str, replacement: str, restore: str, acked: int, bootstrap_first: bool
    ) -> None:
        old = self.nodes[name]
        if old.retired or not old.disk_dead:
            return
        now = self.net.now
        if replacement == "new":
            old.retired = True
            self.net.remove(old.node_id)
            gen = self._generation[old.position] + 1
            self._generation[old.position] = gen
            new_name = old.position + "bcdefghijklmnopqrstuvwxyz"[(gen - 1) % 25]
            self._generation[new_name] = 0
            node = self._make_node(new_name, old.position, "counter", clock=old.clock)
            self.position[old.position] = new_name
            node.gate, node.gate_since = "bootstrap", now
            self.net.add(self._sync(node))
            self._apply_links(node)
            self._note("replacement", f"{new_name} replaces {name} (new identity, empty disk)")
            self._watch(f"node:{new_name}", f"{new_name} replaces {name}")
        else:
            ledger = Ledger(":memory:", self.name, durable=False)
            if restore == "acked":
                keep = [
                    op
                    for op in old.ledger.ops_since({})
                    if op.origin != old.node_id or op.seq <= acked
                ]
                ledger.ingest(keep, old.ledger.nodes())
            old.ledger.close()
            del self.by_id[old.node_id]
            node = self._make_node(name, old.position, "counter", ledger, clock=old.clock)
            node.epoch = old.epoch + 1
            node.ops_signed, node.max_lead_ms = old.ops_signed, old.max_lead_ms
            node.receipts_off, node.max_skew_ms = old.receipts_off, old.max_skew_ms
            node.gate, node.gate_since = "same-identity", now
            self.net.replace(self._sync(node))
            self._apply_links(node)
            self._note("replacement", f"{name} restored ({restore}), same identity")
            self._watch(f"node:{name}", f"{name} restored from {restore} copy")
        if not bootstrap_first:
            node.gate = ""  # today's daemon does not hold a till back while it bootstraps
        self._topology_changed()

    def _check_gate(self, node: SimNode) -> None:
        """A replacement sells once it has caught up with a peer; one that reuses the dead
        terminal's identity also waits until no peer it can reach holds more of its own chain
        (else its next op would fork the chain) and has listened for a few seconds."""
        sync = self._sync_of(node.node_id)
        if sync is None:
            return
        ready = [sync.sessions[p] for p in sync.ready_peers()]
        if not ready or node.ledger.pending_count():
            return
        ours = node.replica.current()
        if node.gate == "bootstrap":
            if any(all(ours.get(o, 0) >= s for o, s in sess.their_vv.items()) for sess in ready):
                node.gate = ""
        else:
            head = ours.get(node.node_id, 0)
            listened = self.net.now - node.gate_since >= self.sync_config.dead_after_ms
            if listened and all(sess.their_vv.get(node.node_id, 0) <= head for sess in ready):
                node.gate = ""
        if not node.gate:
            self._note("open", f"{node.name} sells again")

    # -- convergence watches ------------------------------------------------------------------

    def _scope(self, scope: str) -> list[SimNode]:
        nodes = [n for n in self.counters() if n.up]
        if scope == "hq" and self.hq_enabled:
            nodes.append(self.nodes[HQ])
        return nodes

    def _union(self, nodes: Iterable[SimNode]) -> dict[str, int]:
        out: dict[str, int] = {}
        for n in nodes:
            for o, s in n.replica.current().items():
                if s > out.get(o, 0):
                    out[o] = s
        return out

    def _watch(self, scope: str, label: str) -> None:
        if scope == "hq" and not self.hq_enabled:
            return
        nodes = self._scope("hq" if scope.startswith("node:") else scope)
        self.watches.append(Watch(label, self.net.now, scope, self._union(nodes)))

    def _open_watches(self) -> bool:
        return any(w.done_at is None for w in self.watches)

    def _check_watches(self) -> None:
        now = self.net.now
        for w in self.watches:
            if w.done_at is not None:
                continue
            scope = w.scope
            nodes = [self.nodes[scope[5:]]] if scope.startswith("node:") else self._scope(scope)
            if all(_covers(n.replica.current(), w.target) for n in nodes if n.up):
                w.done_at = now
            elif now - w.at > WATCH_LIMIT_MS:
                w.done_at = -1

    # -- sampling -------------------------------------------------------------------------------

    def sample(self) -> dict[str, int]:
        """This store's state now: stock divergence between counters, ops behind, HQ lag."""
        now = self.net.now
        live = [n for n in sorted(self.counters(), key=lambda n: n.name) if n.up and not n.gate]
        union = self._union(n for n in self.counters() if not n.disk_dead)
        behind = 0
        groups: dict[tuple[tuple[str, int], ...], SimNode] = {}
        for n in live:
            vv = n.replica.current()
            behind += sum(s - vv.get(o, 0) for o, s in union.items())
            groups.setdefault(tuple(sorted(vv.items())), n)
        skus = units = 0
        if len(groups) > 1:
            views = [
                dict(g.ledger.conn.execute("SELECT sku, qty FROM stock")) for g in groups.values()
            ]
            for sku in sorted(set().union(*views)):
                values = [v.get(sku, 0) for v in views]
                if max(values) != min(values):
                    skus += 1
                    units += max(values) - min(values)
        hq_missing = hq_lag = 0
        if self.hq_enabled:
            hq = self.nodes[HQ]
            hvv = hq.replica.current()
            oldest = None
            for origin, seq in union.items():
                held = hvv.get(origin, 0)
                if seq > held:
                    hq_missing += seq - held
                    first = self.rung.get((origin, held + 1))
                    if first is not None and (oldest is None or first.at < oldest):
                        oldest = first.at
            hq_lag = 0 if oldest is None else now - oldest
        lan = wan = 0
        hq_id = self.nodes[HQ].node_id
        for (src, dst), size in self.net.stats.wire_bytes.items():
            if hq_id in (src, dst):
                wan += size
            else:
                lan += size
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

    # -- the end --------------------------------------------------------------------------------

    def final_heal(self) -> None:
        """Every fault ends: LAN healed, WAN back, crashed counters restarted, replacements
        brought in now. Link quality (a flaky Wi-Fi) stays as it is."""
        now = self.net.now
        self.events = [e for e in self.events if e.kind in ("replace",)]
        heapq.heapify(self.events)
        for ev in sorted(self.events):
            self._handle(ev)
        self.events = []
        self.group_of = {}
        self.isolated.clear()
        self.wan_down = 0
        self.hq_cut.clear()
        for node in sorted(self.counters(), key=lambda n: n.name):
            if not node.up:
                self._restart(node)
        self._topology_changed()
        self.hq_link.elect(self, now)
        self._reconcile()
        self._note("final_heal", "every fault repaired")

    def replicas(self) -> list[SimNode]:
        nodes = [n for n in self.counters() if n.up]
        if self.hq_enabled:
            nodes.append(self.nodes[HQ])
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
                # gated replacements open as soon as they can
                for n in self.counters():
                    if n.gate:
                        self._check_gate(n)
                self.final_converge_ms = self.net.now - start
                return
            self.net.run_until(self.net.now + CHECK_MS)
            self._check_watches()
        if self.converged():
            self.final_converge_ms = self.net.now - start


def _covers(vv: dict[str, int], target: dict[str, int]) -> bool:
    return all(vv.get(o, 0) >= s for o, s in target.items())


def _worse(a: LinkConf | None, b: LinkConf | None) -> LinkConf | None:
    """A link is as bad as the worse end of it (a flaky Wi-Fi client spoils both directions)."""
    if a is None:
        return b
    if b is None:
        return a
    return a if (a.loss, a.latency_ms) >= (b.loss, b.latency_ms) else b


def _reason(exc: Exception) -> str:
    """A short, stable label for a refusal (the message minus ids and amounts)."""
    text = str(exc)
    for mark in ("unknown product", "points", "only", "already", "payments are", "escrow"):
        if mark in text:
            return {
                "unknown product": "unknown product (catalogue not here yet)",
                "points": "not enough points",
                "only": "nothing left to return",
                "already": "already returned",
                "payments are": "payment short",
                "escrow": "escrow",
            }[mark]
    return type(exc).__name__


@dataclass
class Progress:
    done_ms: int
    total_ms: int
    phase: str


class Simulation:
    """A whole scenario: every store, sampled together, then healed and checked."""

    def __init__(self, sc: Scenario, seed: int | None = None) -> None:
        self.sc = sc if seed is None else _with_seed(sc, seed)
        self.seed = self.sc.seed
        rows = catalogue(self.sc.catalog_rows, self.sc.stock_factor)
        plan_rng = random.Random(derive_seed(self.seed, "hq-prices"))
        plan = sorted(
            (
                plan_rng.randrange(max(1, self.sc.duration_ms)),
                plan_rng.randrange(len(rows)),
                round(plan_rng.uniform(0.8, 1.2), 2),
            )
            for _ in range(self.sc.hq.price_changes)
        )
        self.stores = [StoreSim(self.sc, conf, rows, self.seed, plan) for conf in self.sc.stores]
        self.samples: list[tuple[int, list[dict[str, int]]]] = []
        self.faults: list[tuple[str, FaultConf]] = []
        self.ended_at = 0

    def _targets(self, f: FaultConf) -> list[StoreSim]:
        if f.node:
            store = f.node.rpartition("/")[0]
            return [s for s in self.stores if s.name == store]
        chosen = [s for s in self.stores if not f.stores or s.name in f.stores]
        if f.region:
            chosen = [s for s in chosen if s.conf.region == f.region]
        return chosen

    def run(self, progress: Callable[[Progress], None] | None = None) -> dict[str, Any]:
        from meshpos.sim.report import build_report

        total = self.sc.duration_ms
        for i, store in enumerate(self.stores):
            store.setup()
            if progress:
                progress(Progress(i + 1, len(self.stores), "setup"))
        for f in self.sc.faults:
            for store in self._targets(f):
                store.schedule_fault(f)
                self.faults.append((store.name, f))
        for store in self.stores:
            for f in store.random_faults():
                store.schedule_fault(f)
                self.faults.append((store.name, f))
        step = self.sc.sample_every_ms
        t = 0
        self._sample()
        while t < total:
            t = min(t + step, total)
            for store in self.stores:
                store.advance_to(t)
            self._sample()
            if progress:
                progress(Progress(t, total, "run"))
        self.ended_at = total
        for store in self.stores:
            store.final_heal()
            store.settle(self.sc.final_heal_ms)
        if progress:
            progress(Progress(total, total, "check"))
        return build_report(self)

    def _sample(self) -> None:
        now = self.stores[0].net.now if self.stores else 0
        self.samples.append((now, [s.sample() for s in self.stores]))


def _with_seed(sc: Scenario, seed: int) -> Scenario:
    from dataclasses import replace

    return replace(sc, seed=seed)


def views_digest(ledger: Ledger) -> str:
    """A digest of every view table, canonically ordered: equal digests, equal views."""
    h = hashlib.sha256()
    for table in VIEW_TABLES:
        h.update(table.encode())
        for row in sorted(ledger.conn.execute(f"SELECT * FROM {table}").fetchall(), key=repr):
            h.update(repr(row).encode())
    return h.hexdigest()


def clock_label(sc: Scenario, at_ms: int) -> str:
    return format_clock(sc.start_ms + at_ms)
