"""The people of a simulated store: customers at the counters and the staff, driven by the seeded
workload.

Customers arrive at their counter (or, when it is down, at one still selling), buy baskets, earn
and redeem loyalty points, return items; deliveries come in, markdowns and HQ's price changes
happen. Every action goes through the real `Terminal` API, and the node hears of each commit the
way the daemon does, so what a till does next (a redemption short of rights writes an escrow ask
that the node core sends to the peers holding them) is the store's own code. A cashier whose
redemption was refused for want of rights retries once, after `escrow_wait_ms`, as
`sell_with_escrow` waits.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from meshpos.core.errors import MeshposError, NotFound
from meshpos.domain.catalog import CatalogRow
from meshpos.domain.escrow import EscrowShortfall
from meshpos.domain.giftcards import GIFT_CARD, TENDER, code_of, is_key, make_code
from meshpos.domain.pricing import Tender, price_lines, settle
from meshpos.node.core import NodeAction
from meshpos.service import cards, escrow, giftcards
from meshpos.service.terminal import SaleResult, Terminal
from meshpos.sim.agenda import Agenda, Retry
from meshpos.sim.metrics import covers
from meshpos.sim.nodes import HQ, Roster, SimNode, derive_seed
from meshpos.sim.scenario import Scenario, StoreConf
from meshpos.sim.truth import GroundTruth
from meshpos.sim.workload import Popularity, arrivals, poisson_times
from meshpos.sync.memnet import MemNet

T = TypeVar("T")


@dataclass
class Tally:
    """Counts of what happened at the counters."""

    counts: Counter[str] = field(default_factory=Counter)
    failures: Counter[str] = field(default_factory=Counter)


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


class Shoppers:
    def __init__(
        self,
        sc: Scenario,
        conf: StoreConf,
        rows: list[CatalogRow],
        seed: int,
        roster: Roster,
        net: MemNet[NodeAction],
        truth: GroundTruth,
        agenda: Agenda,
    ) -> None:
        self.sc = sc
        self.conf = conf
        self.wl = conf.workload
        self.rows = rows
        self.seed = seed
        self.roster = roster
        self.net = net
        self.truth = truth
        self.agenda = agenda
        self.rng = random.Random(derive_seed(seed, conf.name, "workload"))
        self.tally = Tally()
        self.escrow: Counter[str] = Counter()
        self.sales: list[tuple[str, str, list[tuple[str, int]]]] = []
        self.customers: list[str] = []
        self.customer_cum: tuple[float, ...] = ()
        self.popularity: Popularity | None = None
        self.slips = 0
        self.cards: list[str] = []  # gift cards sold at opening (codes)

    # -- opening the store ----------------------------------------------------------------------

    def open(self, counters: list[SimNode]) -> None:
        """Customers with opening points, earned at various counters (so their redemption
        rights are spread out), and which products sell most."""
        self.popularity = Popularity.build(self.rng, [r.sku for r in self.rows])
        lo, hi = self.wl.opening_points
        first = counters[0]
        for k in range(self.wl.customers):
            cid = first.terminal.add_customer({"name": f"Customer {k + 1}", "phone": f"9{k:09d}"})
            self.truth.record(first, 0)
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
                node.terminal.append(
                    "loyalty.adjust", {"customer_id": cid, "delta": points, "reason": "opening"}
                )
                self.truth.record(node, 0)
        for k in range(self.wl.giftcards):
            node = counters[k % len(counters)]
            code = make_code(GIFT_CARD, f"{self.rng.randrange(10**12):012d}")
            giftcards.issue(node.terminal, self.rng.randint(20, 100) * 10_000, code=code)
            self.truth.record(node, 0)
            self.cards.append(code)

    def schedule(self) -> None:
        d = self.sc.duration_ms
        start = self.sc.start_ms
        name = self.conf.name
        for position in self.conf.counter_names():
            rng = random.Random(derive_seed(self.seed, name, position, "arrivals"))
            for at in arrivals(rng, self.wl.sales_per_hour, self.wl.shape, start, d):
                self.agenda.push(at, "customer", position)
        rng = random.Random(derive_seed(self.seed, name, "receipts"))
        for at in poisson_times(rng, self.wl.receipts_per_hour, d):
            self.agenda.push(at, "receipt", None)
        rng = random.Random(derive_seed(self.seed, name, "markdowns"))
        for at in poisson_times(rng, self.wl.markdowns_per_hour, d):
            self.agenda.push(at, "markdown", None)

    # -- acting at a node -----------------------------------------------------------------------

    def act(self, node: SimNode, fn: Callable[[Terminal], T]) -> T:
        """Run a business action at a node, note what it signed, and tell its node of the
        commit as the daemon notices one (`PRAGMA data_version`): new ops are pushed, a new
        escrow ask is sent."""
        mark = node.ledger.changes
        try:
            return fn(node.terminal)
        finally:
            if node.ledger.changes != mark:
                self.truth.record(node, self.net.now)
                self.net.local_changed(node.node_id)

    def granted(self, points: int) -> None:
        """A counter's node core granted a peer's ask for rights."""
        if points:
            self.escrow["grants"] += 1
            self.escrow["points_granted"] += points

    def opens(self, node: SimNode) -> bool:
        """Whether a replacement counter sells now. One with a new identity waits until it has
        caught up with a peer, as `meshpos status` shows it (no peer holds an op it lacks); one
        reusing a dead terminal's identity is held by the terminal itself until its node core
        finishes the bootstrap (`gate` "same-identity", cleared then)."""
        if node.gate == "bootstrap" and node.core is not None:
            core = node.core
            ready = [core.sessions[p] for p in core.ready_peers()]
            ours = node.replica.current()
            if (
                ready
                and not node.ledger.pending_count()
                and any(covers(ours, s.their_vv) for s in ready)
            ):
                node.gate = ""
                self.truth.note(self.net.now, "open", f"{node.name} sells again")
        return not node.gate

    # -- customers ------------------------------------------------------------------------------

    def _available(self, node: SimNode) -> bool:
        if not node.up or node.retired or node.kind != "counter":
            return False
        return self.opens(node)

    def _selling(self) -> list[SimNode]:
        return [
            n for n in sorted(self.roster.counters(), key=lambda n: n.name) if self._available(n)
        ]

    def _serving(self, position: str) -> SimNode | None:
        """The counter a customer at `position` is served at: that one, or (if it is down) one
        picked at random among those still selling; None when the store cannot sell at all."""
        node = self.roster.nodes[self.roster.position[position]]
        if self._available(node):
            return node
        others = self._selling()
        if not others:
            self.tally.counts["turned_away"] += 1
            return None
        self.tally.counts["redirected"] += 1
        return self.rng.choice(others)

    def customer(self, position: str) -> None:
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
        card = rng.random() < 0.45
        redeem = customer is not None and rng.random() < wl.redeem_share / max(
            1e-9, wl.loyalty_share + wl.redeem_share
        )
        if redeem and customer is not None:
            self._redeem(node, customer, items, rng.randint(20, 400), first=True)
            return
        if wl.giftcard_share and self.cards and rng.random() < wl.giftcard_share:
            self._gift(node, items, rng.choice(self.cards), first=True)
            return
        self._sell(node, items, [self._card() if card else Tender("cash")], customer, "sale")

    def _card(self) -> Tender:
        """A card paid on the store's card machine: the cashier types its slip's approval code
        and last four digits."""
        self.slips += 1  # numbered, so the workload's random stream is not drawn on
        n = self.slips
        return cards.machine_tender(None, f"{n:06d}", f"{n * 7919 % 10_000:04d}")

    def _sell(
        self,
        node: SimNode,
        items: list[tuple[str, int]],
        tenders: list[Tender],
        customer: str | None,
        what: str,
    ) -> bool:
        try:
            result = self.act(node, lambda t: self._ring(t, items, tenders, customer))
        except EscrowShortfall:
            if any(t.method in ("points", TENDER) for t in tenders):
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

    def _ring(
        self, t: Terminal, items: list[tuple[str, int]], tenders: list[Tender], customer: str | None
    ) -> SaleResult:
        """`Terminal.sell`, or with the escrow defeated (`escrow_check = false`) a sale recorded
        without the counter's escrow check, as a tampered till would."""
        # The goods are in the customer's hand: a cashier confirms selling beyond stock.
        gift = any(t.method == TENDER for t in tenders)
        if self.wl.escrow_check or (customer is None and not gift):
            return t.sell(items, tenders=tenders, customer=customer, allow_oversell=True)
        with t.transaction():
            priced = price_lines(t.cart(items, {}))
            settled = settle(priced, tenders, t.loyalty_rule(), customer=customer,
                             points_balance=t.points(customer) if customer else 0)  # fmt: skip
            extra = {"ref_sale": None, **t._oversell(settled.lines, True)}
            return t._record("sale", settled, customer, None, extra)

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
            self._sell(node, items, [self._card()], customer, "sale")
            return
        tenders = [Tender("points", points), self._card()]
        try:
            ok = self._sell(node, items, tenders, customer, "redemption")
        except EscrowShortfall as short:
            if first:
                # As `sell_with_escrow` does: the till writes an ask, the node sends it.
                self.escrow["asks"] += 1
                wanted_rights = short.needed - max(short.held, 0)
                self.act(node, lambda t: escrow.ask(t, customer, wanted_rights))
                retry: Retry = (node.name, customer, items, points)
                self.agenda.push(self.net.now + self.wl.escrow_wait_ms, "retry", retry)
                return
            self.escrow["refused"] += 1
            if self._rights_out_of_reach(node, customer):
                self.escrow["refused_out_of_reach"] += 1
            self._sell(node, items, [self._card()], customer, "sale")
            return
        if ok:
            self.tally.counts["points_redeemed"] += points
            if not first:
                self.escrow["redeemed_after_ask"] += 1

    def _gift(self, node: SimNode, items: list[tuple[str, int]], code: str, first: bool) -> None:
        """A customer pays with a gift card, as much as it covers (the card machine the rest).
        Its balance is escrow like points: short here, the till asks its peers once and tries
        again after the wait, else the customer pays another way."""
        t = node.terminal
        balance = t.ledger.giftcards.balance(code)
        total = price_lines(t.cart(items, {})).total
        amount = min(balance, total)
        if amount <= 0:
            self._sell(node, items, [self._card()], None, "sale")
            return
        tenders = [Tender(TENDER, amount, code=code)] + ([self._card()] if amount < total else [])
        try:
            ok = self._sell(node, items, tenders, None, "gift card sale")
        except EscrowShortfall as short:
            if first:
                self.escrow["asks"] += 1
                key, wanted = short.customer, short.needed - max(short.held, 0)
                self.act(node, lambda t: escrow.ask(t, key, wanted))
                retry: Retry = (node.name, key, items, amount)
                self.agenda.push(self.net.now + self.wl.escrow_wait_ms, "retry", retry)
                return
            self.escrow["refused"] += 1
            if self._rights_out_of_reach(node, short.customer):
                self.escrow["refused_out_of_reach"] += 1
            self._sell(node, items, [self._card()], None, "sale")
            return
        if ok:
            self.tally.counts["giftcard_paid"] += amount
            if not first:
                self.escrow["redeemed_after_ask"] += 1

    def retry_redeem(self, retry: Retry) -> None:
        name, customer, items, points = retry
        node = self.roster.nodes[name]
        if not self._available(node):
            self.escrow["abandoned"] += 1
            return
        if is_key(customer):
            self._gift(node, items, code_of(customer), first=False)
            return
        self._redeem(node, customer, items, points, first=False)

    def _rights_out_of_reach(self, node: SimNode, customer: str) -> bool:
        """Whether some of the customer's rights sit at a node this counter cannot reach now."""
        for holder, pts in node.terminal.rights_elsewhere(customer).items():
            other = self.roster.nodes.get(holder)
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
            self.act(node, lambda t: t.return_items(sale_id, [(sku, 1)]))
        except MeshposError as exc:
            self.tally.failures[f"return: {_reason(exc)}"] += 1
            return
        self.tally.counts["return"] += 1

    # -- the staff and HQ -----------------------------------------------------------------------

    def receipt(self) -> None:
        others = self._selling()
        if not others or self.popularity is None:
            self.tally.failures["receipt: no counter up"] += 1
            return
        node = self.rng.choice(others)
        sku = self.popularity.pick(self.rng)
        qty = self.rng.randint(6, 30)
        try:
            self.act(node, lambda t: t.move_stock("receive", sku, qty, "delivery"))
        except MeshposError as exc:
            self.tally.failures[f"receipt: {_reason(exc)}"] += 1
            return
        self.tally.counts["receipt"] += 1

    def markdown(self) -> None:
        others = self._selling()
        if not others or self.popularity is None:
            return
        node = self.rng.choice(others)
        sku = self.popularity.pick(self.rng)
        try:
            price = node.terminal.product(sku).price
            self.act(node, lambda t: t.set_price(sku, price * 8 // 10 // 100 * 100))
        except MeshposError as exc:
            self.tally.failures[f"markdown: {_reason(exc)}"] += 1
            return
        self.tally.counts["markdown"] += 1

    def price(self, change: tuple[int, float]) -> None:
        sku_index, factor = change
        hq = self.roster.nodes[HQ]
        sku = self.rows[sku_index % len(self.rows)].sku
        try:
            price = hq.terminal.product(sku).price
            new = max(100, int(price * factor) // 100 * 100)
            self.act(hq, lambda t: t.set_price(sku, new))
        except MeshposError as exc:
            self.tally.failures[f"hq price: {_reason(exc)}"] += 1
            return
        self.tally.counts["hq_price_change"] += 1
