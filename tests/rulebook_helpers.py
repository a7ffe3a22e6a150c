"""A store whose ops break every rule of the rulebook, for the tests that replay it anywhere.

Four nodes certified by one store key: T0, T1, T2 (terminals) and HQ (role hq), each a real
`Terminal` over an in-memory ledger with hand-moved clocks. Honest ops go through the service;
a "compromised till" signs with its node key directly (`forge`), or records a sale without the
escrow and card checks (`record`), as a tampered, stolen or outdated terminal could.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hypothesis import strategies as st
from ledger_helpers import EPOCH_MS, FakeWall, catalog_rows, full_sync

from meshpos.core.ops import Op, Signer
from meshpos.domain.catalog import CatalogRow
from meshpos.domain.enrolment import NodeRecord, issue, make_request, read_request
from meshpos.domain.pricing import Tender, price_lines, settle
from meshpos.domain.staff import APPROVAL
from meshpos.hq.storage import HQStorage
from meshpos.ledger.store import Ledger
from meshpos.service.config import NodeConfig
from meshpos.service.staff import add_user, approved_by, sign_in
from meshpos.service.terminal import Terminal

STORE = "S1"
STORE_KEY = Signer.from_seed(b"rulebook-store-key")
PINS = {"ada": "111111", "sue": "444444", "cal": "3333", "sam": "666666"}
MINUTE = 60_000
BIG = CatalogRow(line=9, sku="SAREE", fields={"name": "Silk saree", "price": 2_000_000,
                                               "gst_rate": 500}, stock=5)  # fmt: skip


@dataclass
class Node:
    name: str
    signer: Signer
    record: NodeRecord
    terminal: Terminal
    wall: FakeWall

    @property
    def ledger(self) -> Ledger:
        return self.terminal.ledger

    @property
    def node_id(self) -> str:
        return self.signer.node_id


def certified(name: str, role: str) -> tuple[Signer, NodeRecord]:
    s = Signer.from_seed(f"rulebook-{name}".encode())
    req = read_request(make_request(s, STORE, name, b"x" * 40))
    cert = issue(STORE_KEY, STORE, req, role=role, now_ms=0)
    return s, NodeRecord(s.node_id, s.public_key, STORE, name, cert)


NODES = {name: certified(name, "hq" if name == "HQ" else "terminal") for name in
         ("T0", "T1", "T2", "HQ")}  # fmt: skip


def records() -> list[NodeRecord]:
    return [r for _, r in NODES.values()]


def fresh_ledger() -> Ledger:
    """A replica that knows the store's nodes (their certificates) and no op."""
    ledger = Ledger(":memory:", STORE, durable=False)
    for r in records():
        ledger.add_node(r)
    return ledger


def make_nodes() -> dict[str, Node]:
    out = {}
    for name, (s, rec) in NODES.items():
        ledger = fresh_ledger()
        wall = FakeWall(EPOCH_MS)
        cfg = NodeConfig(dir=Path("/nonexistent"), store=STORE, name=name, node_id=s.node_id)
        if name == "HQ":
            cfg.user = "hq"
        out[name] = Node(name, s, rec, Terminal(cfg, s, ledger, wall), wall)
    return out


def forge(t: Terminal, kind: str, payload: dict[str, Any], user: str = "cal") -> Op:
    """A compromised till: sign an op with the node key, skipping every check of the service."""
    hlc = t.clock.observe(t.ledger.max_hlc(), t.now_ms())
    return t.ledger.append(t.signer, kind=kind, payload=payload, user=user, hlc=hlc)


def record(
    t: Terminal,
    items: list[tuple[str, int]],
    tenders: list[Tender],
    customer: str | None = None,
    card: int = 0,
) -> Op:
    """A sale recorded without the escrow and card-float checks `Terminal.sell` makes; `card`
    paise of it paid by a card captured offline (a sealed tender)."""
    priced = price_lines(t.cart(items, {}))
    if card:
        tenders = [Tender("card", card), *tenders]
    settled = settle(priced, tenders, t.loyalty_rule(), customer=customer, points_balance=10**6)
    if card:
        settled.tenders[0].update(card_sealed="c2VhbGVk", card_last4="1111", card_brand="visa",
                                  pending=True)  # fmt: skip
    return t._record("sale", settled, customer, "cal", {"ref_sale": None}).op


def scenario() -> tuple[dict[str, Node], dict[str, Op]]:
    """Every node ends holding every op; `marks` names the ops the tests look at."""
    nodes = make_nodes()
    t0, t1, t2, hq = (nodes[n].terminal for n in ("T0", "T1", "T2", "HQ"))
    every = list(nodes.values())
    marks: dict[str, Op] = {}
    t0.import_catalog([*catalog_rows(3), BIG])
    add_user(t0, "ada", name="Ada", role="admin", pin=PINS["ada"])
    with approved_by(t0, sign_in(t0, "ada", PINS["ada"], purpose=APPROVAL)):
        add_user(t0, "sue", name="Sue", role="supervisor", pin=PINS["sue"], user="ada")
        add_user(t0, "cal", name="Cal", role="cashier", pin=PINS["cal"], user="ada")
    cid = t0.add_customer({"name": "Ravi", "phone": "9800000001"}, user="cal")
    t0.append("loyalty.adjust", {"customer_id": cid, "delta": 50, "reason": "welcome"}, "cal")
    marks["mint"] = hq.append("card.float", {"to": t1.node_id, "amount": 3_000_000, "total": 0})
    hq.append("setting.set", {"key": "cards.floor_per_sale", "value": 1_500_000})
    full_sync([n_ for n_ in every])
    _later(nodes)
    marks["grant"] = _grant(t0, cid, t1.node_id, 20)
    with approved_by(t0, sign_in(t0, "ada", PINS["ada"], purpose=APPROVAL)):
        marks["sam"] = add_user(t0, "sam", name="Sam", role="supervisor", pin=PINS["sam"],
                                user="ada")  # fmt: skip
    full_sync(every)
    _later(nodes)
    # Honest, approved ops: a supervisor's stock adjustment and discount; a redemption and a card
    # sale within what T1 holds; an approval by sam (a user some replicas learn late).
    with approved_by(t1, sign_in(t1, "sue", PINS["sue"], purpose=APPROVAL)):
        marks["adjust"] = t1.move_stock("adjust", "SKU0", -1, "damaged", "cal")
        marks["discount"] = t1.sell([("SKU1", 1)], discount="25%", user="cal").op
    with approved_by(t1, sign_in(t1, "sam", PINS["sam"], purpose=APPROVAL)):
        marks["by_sam"] = t1.move_stock("adjust", "SKU2", -1, "count", "cal")
    marks["redeem"] = record(t1, [("SKU0", 1)], [Tender("points", 15), Tender("cash")], cid)
    marks["card_ok"] = record(t1, [("SKU1", 1)], [], card=59_900)
    # Over the default per-sale limit, within the one HQ set: the fold counts the most lenient.
    marks["card_big_ok"] = record(t1, [("SAREE", 1)], [Tender("cash")], card=1_400_000)
    # A compromised T2 and T1, well past the bootstrap grace.
    for n in (nodes["T1"], nodes["T2"]):
        n.wall.ms += 3 * 60 * MINUTE
    marks["unapproved"] = forge(t2, "stock.adjust", {"sku": "SKU1", "delta": -3, "reason": "x"})
    marks["price"] = forge(t2, "product.upsert", {"sku": "SKU0", "fields": {"price": 1}})
    marks["result"] = forge(t2, "payment.result", {
        "sale_id": "x", "sale_op": f"{t2.node_id}:1", "tender": 0, "status": "approved",
        "amount": 10**6, "code": "", "message": "", "auth_code": "", "card_last4": "",
        "card_brand": ""})  # fmt: skip
    marks["minted"] = forge(t2, "card.float", {"to": t2.node_id, "amount": 10**7, "total": 0})
    marks["overspend"] = record(t1, [("SKU2", 1)], [Tender("points", 30), Tender("cash")], cid)
    # Within what T1 held before the over-spend, but its own spends count against it, with
    # authority or without.
    marks["after_overspend"] = record(t1, [("SKU2", 1)], [Tender("points", 10), Tender("cash")],
                                      cid)  # fmt: skip
    marks["over_limit"] = record(t1, [("SAREE", 1)], [], card=2_000_000)
    marks["no_float"] = record(t2, [("SKU0", 1)], [Tender("cash")], card=10_000)
    with approved_by(t2, sign_in(t2, "cal", PINS["cal"], purpose=APPROVAL)):
        t2.ledger.conn.execute("UPDATE users SET role = 'supervisor' WHERE user_id = 'cal'")
        marks["cashier_approves"] = t2.move_stock("adjust", "SKU0", -2, "x", "cal")
        t2.ledger.conn.execute("UPDATE users SET role = 'cashier' WHERE user_id = 'cal'")
    full_sync(every)
    return nodes, marks


def _later(nodes: dict[str, Node]) -> None:
    for n in nodes.values():
        n.wall.ms += MINUTE


def _grant(t: Terminal, customer: str, to: str, points: int) -> Op:
    assert t.grant_rights(customer, to, points) == points
    found = t.ledger.get(t.node_id, t.ledger.head(t.node_id)[0])
    assert found is not None and found.kind == "escrow.transfer"
    return found


def all_ops(nodes: dict[str, Node]) -> list[Op]:
    return sorted(nodes["T0"].ledger.ops_since({}), key=lambda o: o.id)


def chunked(data: st.DataObject, ops: list[Op]) -> list[list[Op]]:
    """Each origin's ops cut into runs, the runs shuffled (a run may come before the one it
    continues: it waits past the gap)."""
    by_origin: dict[str, list[Op]] = {}
    for o in ops:
        by_origin.setdefault(o.origin, []).append(o)
    chunks: list[list[Op]] = []
    for run in by_origin.values():
        cuts = sorted(data.draw(st.sets(st.integers(1, max(1, len(run) - 1)), max_size=4)))
        cuts = [c for c in cuts if c < len(run)]
        chunks += [run[i:j] for i, j in zip([0, *cuts], [*cuts, len(run)], strict=True)]
    return list(data.draw(st.permutations(chunks)))


def feed_hq(storage: HQStorage, chunks: list[list[Op]]) -> None:
    """HQ stores no op past a gap (the relay resends from HQ's vv): it takes each run once the
    run before it is in, in the order drawn."""
    heads: dict[str, int] = {}
    waiting = list(chunks)
    while waiting:
        for chunk in list(waiting):
            if heads.get(chunk[0].origin, 0) == chunk[0].seq - 1:
                storage.log.ingest(STORE, [o.wire() for o in chunk], records(), now_ms=1)
                heads[chunk[0].origin] = chunk[-1].seq
                waiting.remove(chunk)
