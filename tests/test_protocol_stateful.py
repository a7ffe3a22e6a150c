"""Stateful property test of the sync protocol on the seeded in-memory network: 2-6 terminals ring
sales, loyalty earns and redemptions and stock receipts while hypothesis drops, duplicates and
reorders messages, partitions and heals the LAN, stops, restarts and wipes terminals. Some pairs of
terminals may never see each other at all ("walls": different floors), so ops and node records
must travel through the others.

At the end the LAN heals (walls stay). While counters keep selling, every op rung before the heal
must reach every terminal within a bound (a stuck origin must not hide behind other traffic); then
every replica must hold every op rung anywhere, with identical views and a sound ledger."""

from __future__ import annotations

import os
from typing import Any

from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule
from mesh_helpers import Mesh

from meshpos.core.ops import Op
from meshpos.domain.escrow import EscrowShortfall
from meshpos.domain.pricing import Tender
from meshpos.ledger.fold import NEGATIVE_POINTS
from meshpos.sync.memnet import LinkSpec

MAX_NODES = 6
WALL = LinkSpec(loss=1.0)
slot = st.integers(0, MAX_NODES - 1)
links = st.builds(
    LinkSpec,
    latency_ms=st.integers(0, 20),
    jitter_ms=st.sampled_from([0, 2, 10, 40, 150]),
    loss=st.sampled_from([0.0, 0.0, 0.05, 0.2, 0.5, 1.0]),
    duplicate=st.sampled_from([0.0, 0.1, 0.3]),
)


def connected(n: int, walls: set[frozenset[int]]) -> bool:
    seen, todo = {0}, [0]
    while todo:
        i = todo.pop()
        for j in range(n):
            if j not in seen and frozenset((i, j)) not in walls:
                seen.add(j)
                todo.append(j)
    return len(seen) == n


class MeshMachine(RuleBasedStateMachine):
    mesh: Mesh

    @initialize(
        n=st.integers(2, MAX_NODES),
        seed=st.integers(0, 2**32 - 1),
        link=links,
        walls=st.lists(st.tuples(slot, slot), max_size=5),
    )
    def build(self, n: int, seed: int, link: LinkSpec, walls: list[tuple[int, int]]) -> None:
        self.n = n
        self.walls: set[frozenset[int]] = set()
        for a, b in walls:
            wall = frozenset((a % n, b % n))
            if len(wall) == 2 and connected(n, self.walls | {wall}):
                self.walls.add(wall)
        if self.walls:
            event("some terminals never see each other")
        self.mesh = Mesh(
            n,
            seed=seed,
            link=link,
            links={(min(w), max(w)): WALL for w in self.walls},
            customers=3,
        )
        self.rung: dict[tuple[str, int], bytes] = {
            op.id: op.hash for op in self.mesh.nodes[0].ledger.ops_since({})
        }
        t0 = self.mesh.nodes[0]
        self.setup = (t0.node_id, t0.ledger.head(t0.node_id)[0])
        self.down: set[int] = set()
        self.rebooting: dict[int, int] = {}  # wiped node -> its own seq it must get back first
        self.mesh.may_sign = self.may_ring  # a peer's escrow request is answered with an op

    def at(self, k: int) -> int:
        return k % self.n

    def keep(self, op: Op) -> None:
        self.rung[op.id] = op.hash

    def may_ring(self, i: int) -> bool:
        """A wiped terminal rings nothing until it holds its own earlier ops again (else it would
        reuse their seqs) and the catalogue and customers: the daemon's job, assumed here."""
        want = self.rebooting.get(i)
        node = self.mesh.nodes[i]
        if want is not None and node.ledger.head(node.node_id)[0] >= want:
            del self.rebooting[i]
        return i not in self.rebooting and node.ledger.vv().get(self.setup[0], 0) >= self.setup[1]

    # -- business ------------------------------------------------------------------------------

    @rule(
        k=slot,
        sku=st.integers(0, 7),
        qty=st.integers(1, 3),
        who=st.integers(-1, 2),
        redeem=st.integers(0, 400),
    )
    def sell(self, k: int, sku: int, qty: int, who: int, redeem: int) -> None:
        i = self.at(k)
        if not self.may_ring(i):
            return
        term = self.mesh.nodes[i].terminal
        customer = self.mesh.customers[who] if who >= 0 else None
        tenders: list[Tender] = []
        if customer is not None and redeem:
            total = term.product(f"SKU{sku}").price * qty
            points = min(redeem, term.points(customer), total // 100 - 1)
            if points > 0:
                tenders = [Tender("points", points), Tender("cash")]
        try:
            sale = self.mesh.sell(i, [(f"SKU{sku}", qty)], customer=customer, tenders=tenders)
        except EscrowShortfall as short:
            event("escrow refused a redemption beyond this counter's rights")
            assert customer is not None
            if self.mesh.ask_rights(i, customer, short.needed - max(short.held, 0)):
                event("a counter asked its peers for redemption rights")
            return
        self.keep(sale.op)

    @rule(k=slot, to=st.integers(0, 5), who=st.integers(0, 2), points=st.integers(1, 200))
    def transfer_rights(self, k: int, to: int, who: int, points: int) -> None:
        """Escrow: a counter hands redemption rights to another, even across a partition."""
        i = self.at(k)
        j = to % self.n
        if i == j or not self.may_ring(i):
            return
        target = self.mesh.nodes[j].node_id
        granted = self.mesh.act(
            i, lambda t: t.grant_rights(self.mesh.customers[who], target, points)
        )
        if granted:
            event("rights moved between counters")
            self.keep(self.mesh.nodes[i].ledger.tail(1)[0])

    @rule(k=slot, who=st.integers(0, 2), points=st.integers(1, 300))
    def earn(self, k: int, who: int, points: int) -> None:
        i = self.at(k)
        if self.may_ring(i):
            self.keep(self.mesh.earn(i, self.mesh.customers[who], points))

    @rule(k=slot, sku=st.integers(0, 7), qty=st.integers(1, 20))
    def receive_stock(self, k: int, sku: int, qty: int) -> None:
        i = self.at(k)
        if self.may_ring(i):
            self.keep(self.mesh.receive_stock(i, f"SKU{sku}", qty))

    @rule(
        burst=st.lists(
            st.tuples(
                slot,
                st.integers(0, 9),
                st.integers(0, 7),
                st.integers(-1, 2),
                st.integers(0, 300),
                st.integers(0, 60),
            ),
            min_size=1,
            max_size=12,
        )
    )
    def busy(self, burst: list[tuple[int, int, int, int, int, int]]) -> None:
        """A rush: actions at random counters a few ms apart, with the network running."""
        for k, kind, sku, who, amount, gap in burst:
            if kind < 6:
                self.sell(k, sku, 1 + kind % 3, who, amount if kind % 2 else 0)
            elif kind < 8:
                self.earn(k, max(who, 0), 1 + amount)
            else:
                self.receive_stock(k, sku, 1 + amount % 20)
            self.mesh.net.run_for(gap)

    # -- the network ---------------------------------------------------------------------------

    @rule(a=slot, b=slot, spec=links)
    def set_link(self, a: int, b: int, spec: LinkSpec) -> None:
        i, j = self.at(a), self.at(b)
        if i != j and frozenset((i, j)) not in self.walls:
            self.mesh.net.set_link(self.mesh.nodes[i].node_id, self.mesh.nodes[j].node_id, spec)

    @rule(spec=links)
    def set_default_link(self, spec: LinkSpec) -> None:
        self.mesh.net.default = spec

    @rule(groups=st.lists(st.integers(0, 2), min_size=MAX_NODES, max_size=MAX_NODES))
    def partition(self, groups: list[int]) -> None:
        self.mesh.partition(*[[i for i in range(self.n) if groups[i] == g] for g in (1, 2)])

    @rule()
    def heal(self) -> None:
        self.mesh.heal()

    @rule(ms=st.integers(1, 3000))
    def run(self, ms: int) -> None:
        self.mesh.net.run_for(ms)

    # -- terminals -----------------------------------------------------------------------------

    @rule(k=slot)
    def stop(self, k: int) -> None:
        i = self.at(k)
        self.mesh.stop(i)
        self.down.add(i)

    @rule(k=slot)
    def restart(self, k: int) -> None:
        i = self.at(k)
        self.mesh.restart(i)
        self.down.discard(i)

    @precondition(lambda self: len(self.down) < self.n)
    @rule(k=slot)
    def wipe(self, k: int) -> None:
        """The disk dies, but only once every op it holds is held elsewhere too (the promise of
        "copies before the receipt"; a wipe earlier than that loses ops by design)."""
        i = self.at(k)
        node = self.mesh.nodes[i]
        mine = node.ledger.vv()
        others = [self.mesh.nodes[j].ledger.vv() for j in range(self.n) if j != i]
        if not all(any(vv.get(o, 0) >= s for vv in others) for o, s in mine.items()):
            return
        own = mine.get(node.node_id, 0)
        event("a terminal was wiped")
        self.mesh.wipe(i)
        self.down.discard(i)
        if own:
            self.rebooting[i] = own

    # -- checks --------------------------------------------------------------------------------

    @invariant()
    def ledgers_stay_sound(self) -> None:
        """Whatever the network does, nothing held is ever lost or half-applied."""
        self.steps = getattr(self, "steps", 0) + 1
        for node in self.mesh.nodes[: self.n]:
            vv = node.ledger.vv()
            assert node.ledger.op_count() == sum(vv.values())
            own = node.ledger.query(
                "SELECT MIN(points) AS p FROM rights WHERE node = ?", (node.node_id,)
            )
            assert (own[0]["p"] or 0) >= 0, "a counter spent redemption rights it did not hold"

    def teardown(self) -> None:
        if not hasattr(self, "mesh"):
            return
        mesh = self.mesh
        mesh.heal()
        mesh.net.links.clear()
        for w in self.walls:
            i, j = sorted(w)
            mesh.net.set_link(mesh.nodes[i].node_id, mesh.nodes[j].node_id, WALL)
        mesh.net.default = LinkSpec(latency_ms=1, jitter_ms=2)
        for i in sorted(self.down):
            mesh.restart(i)
        self.down.clear()
        self.deliver_while_selling()
        took = mesh.settle(limit_ms=60_000)
        assert took >= 0, f"no convergence; rejected: {mesh.net.stats.rejected[-3:]}"
        event(f"nodes={self.n}")
        event(f"steps={getattr(self, 'steps', 0) // 10 * 10}+ ops={len(self.rung) - self.setup[1]}")
        event(f"ops rung beyond setup: {min(len(self.rung) - self.setup[1], 40) // 10 * 10}+")
        event(f"settled after heal within {min(took // 1000, 10)} s")
        first = mesh.views(0)
        for i in range(self.n):
            ledger = mesh.nodes[i].ledger
            assert ledger.verify() == [], f"T{i}"
            assert mesh.views(i) == first, f"T{i} views differ from T0"
            for (origin, seq), digest in self.rung.items():
                op = ledger.get(origin, seq)
                assert op is not None, f"T{i} lost op {origin}:{seq}"
                assert op.hash == digest
        self.check_points(mesh.nodes[0].ledger.query)

    def deliver_while_selling(self, bound_ms: int = 20_000) -> None:
        """Counters keep ringing a sale every 250 ms; everything rung before must still arrive."""
        wanted: dict[str, int] = {}
        for origin, seq in self.rung:
            wanted[origin] = max(seq, wanted.get(origin, 0))
        net = self.mesh.net
        start = net.now
        k = 0
        while True:
            missing = [
                (i, o)
                for i, node in enumerate(self.mesh.nodes[: self.n])
                for o, seq in wanted.items()
                if node.ledger.vv().get(o, 0) < seq
            ]
            if not missing:
                return
            assert net.now - start < bound_ms, (
                f"still missing under load (terminal, origin): {missing}"
            )
            i = k % self.n
            k += 1
            if self.may_ring(i):
                self.keep(self.mesh.sell(i, [("SKU0", 1)]).op)
            net.run_for(250)

    def check_points(self, query: Any) -> None:
        """No customer spends more points than they earned, even with counters split by
        partitions: escrow lets each counter redeem only the rights it holds."""
        for cid in self.mesh.customers:
            earned = query(
                "SELECT COALESCE(SUM(points_earned), 0) AS n FROM sales WHERE customer_id = ?",
                (cid,),
            )[0]["n"]
            redeemed = query(
                "SELECT COALESCE(SUM(points_redeemed), 0) AS n FROM sales WHERE customer_id = ?",
                (cid,),
            )[0]["n"]
            held = query("SELECT points FROM loyalty WHERE customer_id = ?", (cid,))
            balance = held[0]["points"] if held else 0
            adjusts = balance - (earned - redeemed)
            assert adjusts >= 0  # only positive loyalty.adjust ops are rung here
            flagged = query(
                "SELECT 1 FROM conflicts WHERE conflict_id = ? AND status = 'open'",
                (f"{NEGATIVE_POINTS}:{cid}",),
            )
            assert redeemed <= earned + adjusts, f"{cid} redeemed {redeemed} of {earned + adjusts}"
            assert not flagged
            rights = query("SELECT node, points FROM rights WHERE customer_id = ?", (cid,))
            assert all(r["points"] >= 0 for r in rights), rights
            assert sum(r["points"] for r in rights) == balance
            if redeemed:
                event("points were redeemed")


MeshMachine.TestCase.settings = settings(
    # MESHPOS_SOAK=2000 explores far more (minutes); the default keeps the suite fast.
    max_examples=int(os.environ.get("MESHPOS_SOAK", "25")),
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
TestMeshProtocol = MeshMachine.TestCase
