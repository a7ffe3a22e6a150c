"""A small chain for the dashboard tests, built in-process over one HQ database: two stores of two
terminals each (HQ holds the store keys), the test catalogue, a card float, and a day of trade:
cash, card and points sales, a return, a loyal customer, a card the acquirer declines, a card
payment still waiting for HQ, and the same last jackets sold at two counters that could not see
each other (stock below zero). Terminals relay to HQ by calling its service directly: what the
HTTP routes do, without the network."""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from hq_helpers import Store, certified, make_store, pan_with_suffix, sell_by_card, wires

from meshpos.core.ops import decode_op
from meshpos.domain.pricing import Tender
from meshpos.hq.card_float import hq_open_float
from meshpos.hq.service import HQService
from meshpos.hq.wire import parse_node
from meshpos.service.terminal import Terminal

STORES = {"KOR": "Koramangala", "IND": "Indiranagar"}
APPROVED = pan_with_suffix("4242")
DECLINED = pan_with_suffix("0002")


def push(svc: HQService, st: Store, t: Terminal, *, settle: bool = True) -> None:
    """Upload what HQ lacks from `t` (without settling card payments when `settle` is off)."""
    batch = wires(t, svc.storage.vv(st.id))
    if not batch:
        return
    if settle:
        svc.ingest(st.id, batch, certified(t))
    else:
        svc.storage.log.ingest(st.id, batch, certified(t), svc.now_ms())


def pull(svc: HQService, st: Store, t: Terminal) -> None:
    answer = svc.pull(st.id, t.ledger.vv(), 5000)
    t.ingest([decode_op(w) for w in answer["ops"]], [parse_node(n) for n in answer["nodes"]])


def relay(svc: HQService, st: Store) -> None:
    for t in st.terminals:
        push(svc, st, t)
    for t in st.terminals:
        pull(svc, st, t)
    st.mesh()


@dataclass
class Chain:
    svc: HQService
    stores: dict[str, Store]
    customer: str
    sold: dict[str, int]  # net paise per store
    by_kind: dict[str, int]  # takings per payment kind, paise

    def close(self) -> None:
        for st in self.stores.values():
            st.close()


def build_chain(svc: HQService, base: Path) -> Chain:
    stores = {
        sid: make_store(None, base, 2, store=sid, svc=svc)  # type: ignore[arg-type]
        for sid in STORES
    }
    for sid, name in STORES.items():
        svc.storage.db.run(
            lambda tx, sid=sid, name=name: tx.execute(
                "UPDATE stores SET name = ? WHERE store = ?", (name, sid)
            )
        )
    hq_open_float(svc, 5_000_000)
    for st in stores.values():
        relay(svc, st)
    kor, ind = stores["KOR"], stores["IND"]
    customer = kor.t1.add_customer({"name": "Priya Nair", "phone": "9811111111"})
    results = [
        kor.t1.sell([("TEE", 2)]),
        kor.t1.sell([("CAP", 1)], customer=customer),
        kor.terminals[1].sell([("JKT", 1)]),
        ind.t1.sell([("CAP", 3)], tenders=[Tender("cash", 100_000)]),
    ]
    kor.mesh()
    results.append(kor.terminals[1].sell([("TEE", 1)], customer=customer))
    results.append(sell_by_card(kor.t1, [("CAP", 1)], APPROVED))
    kor.t1.sell([("CAP", 1)], customer=customer, tenders=[Tender("points", 2), Tender("cash")])
    back = kor.t1.return_items(results[0].sale_id, [("TEE", 1)])
    for st in stores.values():
        relay(svc, st)
    results.append(sell_by_card(ind.t1, [("JKT", 1)], DECLINED))
    ind.t1.sell([("JKT", 3)])  # IND holds 4 jackets now: each counter sells 3 unseen by the other
    ind.terminals[1].sell([("JKT", 3)])
    for st in stores.values():
        relay(svc, st)
    results.append(sell_by_card(kor.t1, [("TEE", 1)], APPROVED))
    push(svc, kor, kor.t1, settle=False)  # HQ holds it, not yet settled: pending
    sold: dict[str, int] = {}
    kinds: dict[str, int] = {}
    for sid, st in stores.items():
        for t in st.terminals:
            for row in t.query("SELECT total FROM sales WHERE origin = ?", (t.node_id,)):
                sold[sid] = sold.get(sid, 0) + int(row["total"])
            for row in t.query("SELECT method, amount FROM tenders WHERE origin = ?", (t.node_id,)):
                kinds[row["method"]] = kinds.get(row["method"], 0) + int(row["amount"])
    assert back.sale_id
    return Chain(svc, stores, customer, sold, kinds)


def trade_history(svc: HQService, st: Store, days: int = 14, seed: int = 0) -> None:
    """Cash sales on each of the last `days` days (each terminal's clock set back), relayed: what
    the sales chart draws. The number of sales per day varies with `seed`."""
    rng = random.Random(seed)
    real = st.terminals[0].now_ms
    today = real()
    for t in st.terminals:  # each counter's own share: none sells stock it has not seen
        for sku in ("TEE", "CAP"):
            t.move_stock("receive", sku, days * 4, "the season's delivery")
    for back in range(days, 0, -1):
        for t in st.terminals:
            t.now_ms = lambda back=back: today - back * 86_400_000  # type: ignore[misc]
            for _ in range(rng.randint(1, 4)):
                t.sell([(rng.choice(["TEE", "CAP"]), 1)])
    for t in st.terminals:
        t.now_ms = real  # type: ignore[method-assign]
    relay(svc, st)
