"""The CRDT property: any set of ops, delivered to any replica in any order, with duplicates and
with gaps filled later, folds into the same views, equal to the fold of the union and to `rebuild`.

Ops are made by real terminals (so sale payloads are realistic) on 2-5 replicas that sync now and
then while they work, which gives returns of other replicas' sales, concurrent LWW edits, oversells,
over-returns, negative loyalty balances, unknown products and resolutions of merged conflicts.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)
from ledger_helpers import (
    Replica,
    catalog_rows,
    fold_of,
    full_sync,
    make_replicas,
    moves_by_op,
    moves_of_ops,
    new_ledger,
    ops_lacking,
    signer,
    stock_is_the_sum_of_its_moves,
    sync,
    union,
    views,
)

from meshpos.core.errors import LocalError
from meshpos.core.ops import Op
from meshpos.domain.pricing import Tender
from meshpos.ledger.store import Ledger

SKUS = 4  # the catalogue has SKU0..SKU2; SKU3 is created during the run by some replica
CUSTOMERS = 2

Action = tuple[Any, ...]

# -- actions ------------------------------------------------------------------------------------

sku_index = st.integers(0, SKUS - 1)
FIELD_VALUES = {
    "name": st.sampled_from(["Tee", "Shirt", "Kurta"]),
    "price": st.integers(100, 200_000),
    "category": st.sampled_from(["Tops", "Ethnic"]),
    "colour": st.sampled_from(["Red", "Navy"]),
    "gst_rate": st.sampled_from([500, 1200]),
    "active": st.just(1),
}
# A non-empty subset of fields, so concurrent edits of different fields of one product meet.
product_fields = st.one_of(
    [
        st.fixed_dictionaries({k: v}, optional={o: w for o, w in FIELD_VALUES.items() if o != k})
        for k, v in FIELD_VALUES.items()
    ]
)
pay = st.sampled_from(["cash", "card", "points", "points1", "points4"])
customer = st.none() | st.integers(0, CUSTOMERS - 1)
return_qty = st.sampled_from([1, 1, 1, 2])


def actions(n: int, with_sync: bool = True) -> st.SearchStrategy[Action]:
    r = st.integers(0, n - 1)
    sell = st.tuples(
        st.just("sell"),
        r,
        st.lists(st.tuples(sku_index, st.integers(1, 3)), min_size=1, max_size=3),
        customer,
        pay,
    )
    sync = st.tuples(st.just("sync"), r, r)
    resolve = st.tuples(st.just("resolve"), r, st.integers(0, 20), st.booleans())
    return st.one_of(
        sell,
        sell,
        sell,
        *([sync, sync] if with_sync else []),
        resolve,
        st.tuples(st.just("product"), r, sku_index, product_fields),
        st.tuples(st.just("receive"), r, sku_index, st.integers(1, 4)),
        st.tuples(st.just("adjust"), r, sku_index, st.sampled_from([-4, -2, -1, 1, 3])),
        st.tuples(st.just("ghost"), r, st.integers(0, 1), st.integers(1, 3)),
        st.tuples(st.just("sell"), r, st.just([(0, 1)]), customer, pay),
        st.tuples(st.just("return"), r, st.integers(0, 50), st.integers(0, 3), return_qty),
        st.tuples(st.just("return"), r, st.integers(0, 50), st.integers(0, 3), return_qty),
        st.tuples(st.just("exchange"), r, st.integers(0, 50), st.integers(0, 3), sku_index),
        st.tuples(st.just("loyalty"), r, st.integers(0, CUSTOMERS - 1), st.integers(-30, 30)),
        st.tuples(
            st.just("customer"),
            r,
            st.integers(0, CUSTOMERS - 1),
            st.sampled_from(["name", "email", "phone"]),
        ),
        st.tuples(st.just("setting"), r, st.integers(0, 3)),
        resolve,
        st.tuples(st.just("tick"), r, st.integers(-3000, 3000)),
    )


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[int, list[Action]]:
    n = draw(st.integers(2, 5))
    return n, draw(st.lists(actions(n), min_size=10, max_size=50))


def genesis(replicas: Sequence[Replica]) -> list[str]:
    """Replica 0 loads a small catalogue and two customers with points; everyone syncs it."""
    t = replicas[0].terminal
    t.import_catalog(catalog_rows(SKUS - 1, stock=2))
    cids = [
        t.add_customer({"name": f"Cust {i}", "phone": f"98000000{i:02d}"}) for i in range(CUSTOMERS)
    ]
    for cid in cids:
        t.append("loyalty.adjust", {"customer_id": cid, "delta": 5, "reason": "welcome"})
    for other in replicas[1:]:
        sync(replicas[0], other)
    return cids


def perform(replicas: Sequence[Replica], cids: Sequence[str], action: Action) -> None:
    """Run one action on one replica; refusals of the service layer (LocalError) are fine."""
    kind, who, *args = action
    rep = replicas[who]
    t = rep.terminal
    rep.wall.ms += 7
    try:
        if kind == "product":
            sku, fields = args
            t.append("product.upsert", {"sku": f"SKU{sku}", "fields": fields})
        elif kind in ("receive", "adjust"):
            sku, qty = args
            t.move_stock(kind, f"SKU{sku}", qty, "count")
        elif kind == "ghost":
            # A receipt of a SKU nobody created: only the service layer would stop it.
            n, qty = args
            t.append("stock.receive", {"sku": f"GHOST{n}", "delta": qty, "reason": "pallet"})
        elif kind == "sell":
            items, cust, method = args
            cid = cids[cust] if cust is not None else None
            if cid is None and method.startswith("points"):
                method = "card"
            tenders = {
                "cash": [Tender("cash")],
                "card": [Tender("card_machine", card_last4="4242", card_approval="A1B2C3")],
                "points": [Tender("points"), Tender("cash")],
                "points1": [Tender("points", 1), Tender("cash")],
                "points4": [Tender("points", 4), Tender("cash")],
            }[method]
            t.sell(
                [(f"SKU{i}", q) for i, q in items],
                tenders=tenders,
                customer=cid,
                allow_oversell=True,  # concurrent oversells are what this explores
            )
        elif kind in ("return", "exchange"):
            pick, line, extra = args
            sales = rep.ledger.query("SELECT sale_id FROM sales WHERE kind = 'sale' ORDER BY 1")
            if not sales:
                return
            sale = t.sale(sales[pick % len(sales)]["sale_id"])
            skus = sorted({ln["sku"] for ln in sale["payload"]["lines"]})
            back = [(skus[line % len(skus)], 1)]
            if kind == "return":
                t.return_items(sale["sale_id"], [(back[0][0], extra)], refund="cash")
            else:
                t.exchange(sale["sale_id"], back, [(f"SKU{extra}", 1)], allow_oversell=True)
        elif kind == "loyalty":
            cust, delta = args
            if delta:
                t.append(
                    "loyalty.adjust", {"customer_id": cids[cust], "delta": delta, "reason": "fix"}
                )
        elif kind == "customer":
            cust, field = args
            value = {"name": f"N{rep.name}", "email": f"{rep.name}@x.in", "phone": "9100000000"}
            t.edit_customer(cids[cust], {field: value[field]})
        elif kind == "setting":
            (value,) = args
            t.append("setting.set", {"key": "loyalty.earn_per_100", "value": value})
        elif kind == "resolve":
            pick, adjust = args
            # The first replica from `who` on that shows an open conflict: a manager walks over.
            ring = [replicas[(who + i) % len(replicas)].terminal for i in range(len(replicas))]
            t, open_ = next(
                ((x, x.conflicts("open")) for x in ring if x.conflicts("open")), (t, [])
            )
            if not open_:
                return
            c = open_[pick % len(open_)]
            fix = -c["detail"]["stock"] if adjust and c["kind"] == "oversell" else None
            t.resolve(c["conflict_id"], "counted the shelf", adjust=fix)
        elif kind == "sync":
            (dst,) = args
            if dst != who:
                sync(rep, replicas[dst])
        elif kind == "tick":
            (delta,) = args
            rep.wall.ms += delta
        else:
            raise AssertionError(kind)
    except LocalError:
        pass


# -- delivery -----------------------------------------------------------------------------------


def contiguous(held: set[tuple[str, int]]) -> dict[str, int]:
    top: dict[str, int] = {}
    for origin in {o for o, _ in held}:
        seq = 0
        while (origin, seq + 1) in held:
            seq += 1
        top[origin] = seq
    return {o: s for o, s in top.items() if s}


def deliver(data: st.DataObject, ledger: Ledger, everything: list[Op], label: str) -> None:
    """Deliver `everything` in a drawn order, with duplicates, in drawn chunks, withholding a
    drawn subset until the rest has been checked for gaps."""
    held = {(o, s) for o, s, _, _ in ledger.raw_since({})}
    n = len(everything)
    order = data.draw(st.permutations(range(n)), label=f"{label} order")
    late = data.draw(st.sets(st.integers(0, n - 1)), label=f"{label} late") if n else set()
    dupes = (
        data.draw(st.lists(st.sampled_from(order), max_size=5), label=f"{label} dupes") if n else []
    )
    first = [everything[k] for i, k in enumerate(order) if i not in late]
    rest = [everything[k] for i, k in enumerate(order) if i in late]
    first += [everything[k] for k in dupes]
    rest += [everything[k] for k in dupes]

    applied = _ingest_in_chunks(data, ledger, first, label)
    now = held | {op.id for op in first}
    want_vv = contiguous(now)
    assert ledger.vv() == want_vv
    assert applied == sum(want_vv.values()) - len(held)
    parked = {(o, s) for o, s in now if s > want_vv.get(o, 0)}
    assert ledger.pending_count() == len(parked)
    want_gaps: dict[str, int] = {}
    for o, s in parked:
        want_gaps[o] = min(s, want_gaps.get(o, s))
    assert ledger.gaps() == want_gaps
    for origin, seq in ledger.gaps().items():
        # What a peer is asked for again starts right after the version vector.
        assert want_vv.get(origin, 0) + 1 < seq
    if late:
        assert ledger.verify() == []

    applied += _ingest_in_chunks(data, ledger, rest, label)
    assert applied == n - len(held)
    assert ledger.pending_count() == 0
    assert ledger.gaps() == {}


def _ingest_in_chunks(data: st.DataObject, ledger: Ledger, ops: list[Op], label: str) -> int:
    applied = i = 0
    while i < len(ops):
        n = data.draw(st.integers(1, max(1, len(ops) - i)), label=f"{label} chunk")
        applied += ledger.ingest(ops[i : i + n]).applied
        i += n
    return applied


def assert_converged(ledgers: Sequence[Ledger], everything: list[Op]) -> None:
    reference = fold_of(everything, [signer(i) for i in range(5)])
    want = views(reference)
    want_vv = reference.vv()
    assert reference.verify() == []
    for ledger in ledgers:
        assert ledger.vv() == want_vv
        got = views(ledger)
        for table, rows in want.items():
            assert got[table] == rows, table
        assert moves_by_op(ledger) == moves_of_ops(everything)
        stock_is_the_sum_of_its_moves(ledger)
        assert ledger.verify() == []


# -- the property -------------------------------------------------------------------------------


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(scenarios(), st.data())
def test_any_delivery_order_converges_to_the_fold_of_the_union(
    scenario: tuple[int, list[Action]], data: st.DataObject
) -> None:
    n, script = scenario
    replicas = make_replicas(n)
    cids = genesis(replicas)
    for action in script:
        perform(replicas, cids, action)
    everything = union(r.ledger for r in replicas)
    observer = new_ledger([r.signer for r in replicas])
    for i, rep in enumerate(replicas):
        deliver(data, rep.ledger, everything, f"replica {i}")
    deliver(data, observer, everything, "observer")
    assert_converged([*(r.ledger for r in replicas), observer], everything)
    for table in ("conflicts", "returned", "resolutions", "sales"):
        event(f"{table} rows > 0: {bool(observer.query(f'SELECT 1 FROM {table} LIMIT 1'))}")
    for (kind,) in observer.conn.execute("SELECT DISTINCT kind FROM conflicts"):
        event(f"conflict {kind}")
    event(f"ops: {len(everything) // 10 * 10}+")


# -- oversell -----------------------------------------------------------------------------------


def test_concurrent_sales_of_the_last_unit_raise_one_conflict_everywhere() -> None:
    a, b, c = make_replicas(3)
    a.terminal.import_catalog(catalog_rows(2, stock=1))
    sync(a, b)
    sync(a, c)
    sold_a = a.terminal.sell([("SKU0", 1)]).op
    b.wall.ms -= 60_000  # b's clock is a minute behind
    sold_b = b.terminal.sell([("SKU0", 1)]).op
    assert a.terminal.conflicts() == [] and b.terminal.conflicts() == []

    sync(a, b)
    sync(b, a)
    for rep in (a, b):
        (conflict,) = rep.terminal.conflicts()
        assert conflict["conflict_id"] == "oversell:SKU0"
        assert conflict["detail"] == {"sku": "SKU0", "stock": -1}
        assert sorted(conflict["ops"]) == sorted(f"{op.origin}:{op.seq}" for op in (sold_a, sold_b))
    assert views(a.ledger)["conflicts"] == views(b.ledger)["conflicts"]

    resolution = b.terminal.resolve("oversell:SKU0", "found one in the back", adjust=1)
    assert resolution.kind == "conflict.resolve"
    full_sync([a, b, c])
    for rep in (a, b, c):
        assert rep.terminal.conflicts("open") == []
        (closed,) = rep.terminal.conflicts("resolved")
        assert closed["resolved_by"] == f"{resolution.origin}:{resolution.seq}"
        assert rep.terminal.stock("SKU0")[0]["qty"] == 0
        assert rep.ledger.verify() == []
    assert views(a.ledger) == views(b.ledger) == views(c.ledger)

    # Selling past the acknowledged level reopens it, on every replica.
    c.terminal.sell([("SKU0", 1)], allow_oversell=True)
    full_sync([a, b, c])
    for rep in (a, b, c):
        assert [x["conflict_id"] for x in rep.terminal.conflicts("open")] == ["oversell:SKU0"]


def test_an_acknowledged_oversell_stays_closed_until_stock_falls_further() -> None:
    a, b = make_replicas(2)
    a.terminal.import_catalog(catalog_rows(1, stock=1))
    sync(a, b)
    a.terminal.sell([("SKU0", 1)])
    b.terminal.sell([("SKU0", 1)])
    full_sync([a, b])
    a.terminal.resolve("oversell:SKU0", "write off", adjust=None)
    full_sync([a, b])
    for rep in (a, b):
        assert rep.terminal.conflicts("open") == []
        assert rep.terminal.stock("SKU0")[0]["qty"] == -1
    b.terminal.move_stock("receive", "SKU0", 1, "delivery")
    full_sync([a, b])
    assert views(a.ledger) == views(b.ledger)
    assert a.ledger.verify() == [] and b.ledger.verify() == []


def test_a_redemption_that_nets_to_zero_points_still_updates_the_conflict_it_belongs_to() -> None:
    """A sale that earns exactly what it redeems changes no balance but is one of the ops a
    negative-points conflict names, so it must re-check that conflict wherever it arrives."""
    a, b = make_replicas(2)
    (cid, _) = genesis([a, b])
    bought = a.terminal.sell([("SKU1", 2)], customer=cid)  # earns points at a
    earned = bought.payload["points_earned"]
    assert earned > 4
    assert a.terminal.grant_rights(cid, b.terminal.node_id, 4) == 4  # escrow: b may redeem 4
    sync(a, b)
    # a spends what it holds, then takes back the points the returned sale earned: below zero.
    a.terminal.append("loyalty.adjust", {"customer_id": cid, "delta": -(1 + earned), "reason": "x"})
    a.terminal.return_items(bought.sale_id, [("SKU1", 2)])
    # 499.00 paid as 4 points + 495.00 cash earns 4 points: the balance does not move.
    sale = b.terminal.sell(
        [("SKU0", 1)], tenders=[Tender("points", 4), Tender("cash")], customer=cid
    )
    assert (sale.payload["points_earned"], sale.payload["points_redeemed"]) == (4, 4)
    sync(b, a)
    sync(a, b)
    for rep in (a, b):
        (conflict,) = rep.terminal.conflicts()
        assert conflict["conflict_id"] == f"negative_points:{cid}"
        assert conflict["ops"] == [f"{sale.op.origin}:{sale.op.seq}"]
        assert rep.ledger.verify() == []
    assert views(a.ledger) == views(b.ledger)


# -- stateful -----------------------------------------------------------------------------------


class Replicas(RuleBasedStateMachine):
    """Terminals that ring ops and sync pairwise at random, sometimes losing ops in transit."""

    def __init__(self) -> None:
        super().__init__()
        self.replicas: list[Replica] = []
        self.cids: list[str] = []
        self.seen_vv: list[dict[str, int]] = []
        self.steps = 0
        self.parked = 0

    @initialize(n=st.integers(2, 4))
    def start(self, n: int) -> None:
        self.replicas = make_replicas(n)
        self.cids = genesis(self.replicas)
        self.seen_vv = [r.ledger.vv() for r in self.replicas]

    @rule(data=st.data())
    def act(self, data: st.DataObject) -> None:
        action = data.draw(actions(len(self.replicas), with_sync=False))
        perform(self.replicas, self.cids, action)

    def pairs(self) -> st.SearchStrategy[tuple[int, int]]:
        n = len(self.replicas)
        return st.tuples(st.integers(0, n - 1), st.integers(1, n - 1)).map(
            lambda p: (p[0], (p[0] + p[1]) % n)
        )

    @rule(data=st.data())
    def sync_pair(self, data: st.DataObject) -> None:
        src, dst = data.draw(self.pairs())
        sync(self.replicas[src], self.replicas[dst])

    @rule(data=st.data())
    def lossy_sync(self, data: st.DataObject) -> None:
        """A transfer that drops and reorders ops: the receiver parks what follows a gap."""
        src, dst = data.draw(self.pairs())
        sent = ops_lacking(self.replicas[src].ledger, self.replicas[dst].ledger)
        if not sent:
            return
        lost = data.draw(st.sets(st.integers(0, len(sent) - 1), min_size=1))
        kept = data.draw(st.permutations([op for i, op in enumerate(sent) if i not in lost]))
        self.parked += self.replicas[dst].terminal.ingest(kept).pending

    @precondition(lambda self: self.replicas)
    @invariant()
    def version_vectors_only_grow(self) -> None:
        for i, rep in enumerate(self.replicas):
            vv = rep.ledger.vv()
            for origin, seq in self.seen_vv[i].items():
                assert vv.get(origin, 0) >= seq
            self.seen_vv[i] = vv
            for origin, low in rep.ledger.gaps().items():
                assert low > vv.get(origin, 0) + 1

    @precondition(lambda self: self.replicas)
    @invariant()
    def sometimes_views_equal_rebuild(self) -> None:
        self.steps += 1
        if self.steps % 7 == 0:
            rep = self.replicas[self.steps % len(self.replicas)]
            assert rep.ledger.verify() == []

    def teardown(self) -> None:
        if not self.replicas:
            return
        full_sync(self.replicas)
        everything = union(r.ledger for r in self.replicas)
        assert_converged([r.ledger for r in self.replicas], everything)
        event(f"ops parked past a gap: {self.parked > 0}")
        for (kind,) in self.replicas[0].ledger.conn.execute("SELECT DISTINCT kind FROM conflicts"):
            event(f"conflict {kind}")
        for rep in self.replicas:
            rep.ledger.close()


Replicas.TestCase.settings = settings(
    max_examples=25,
    stateful_step_count=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
TestReplicas = Replicas.TestCase
