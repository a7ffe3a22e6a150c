"""Stock transfers between stores, and other stores' stock at the till.

`send` takes stock out here (`transfer.out`); HQ, once the op reaches it, tells the receiving store
what is on its way (`transfer.expect`); `receive` there records what was counted in
(`transfer.in`), and a count that differs from what was sent opens a `transfer_short` conflict for
a manager. Receiving works before HQ's word arrives (a store that is offline when the van comes):
the counts are then given in full, and the conflict check runs once the word is in.

Other stores' stock comes from HQ's view, pulled by this node's relay worker while HQ answers
(`refresh_chain_stock`), cached node-locally with when HQ last heard from each store and when this
node pulled it, so the till answers offline and says how old the answer is.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from meshpos.core.errors import InputError, NotFound
from meshpos.core.ops import Op
from meshpos.domain.transfers import counted, discrepancy, parse_counts, sender_of, transfer_id
from meshpos.service.config import check_name
from meshpos.service.terminal import Terminal


class ChainStockSource(Protocol):
    """What answers for other stores' stock (meshpos.hq.client.HQClient)."""

    def chain_stock(self, held: Mapping[str, int]) -> tuple[list[dict[str, Any]], list[str]]: ...


__all__ = ["elsewhere", "listing", "parse_counts", "receive", "refresh_chain_stock", "send"]


def send(
    t: Terminal,
    items: Sequence[tuple[str, int]],
    to_store: str,
    *,
    note: str = "",
    user: str | None = None,
) -> Op:
    """Send stock to store `to_store`: it leaves this store's stock now. Refused for a store HQ
    does not list (when this node has HQ's list) and for more than this store holds."""
    to = check_name(to_store.strip(), "store")
    if to == t.cfg.store:
        raise InputError(f"store {to} is this store: a transfer goes to another store")
    known = t.ledger.other_stores.versions()
    if known and to not in known:
        raise InputError(f"HQ knows no store {to!r}; stores it listed: {', '.join(sorted(known))}")
    lines: dict[str, int] = {}
    for code, qty in items:
        sku = t.product(code).sku
        lines[sku] = lines.get(sku, 0) + qty
    with t.transaction():
        for sku, qty in lines.items():
            have = t.ledger.views.stock_qty(sku)
            if qty > have:
                raise InputError(f"only {have} of {sku} in stock here; cannot send {qty}")
        seq = t.ledger.head(t.node_id)[0] + 1
        payload = {
            "transfer_id": transfer_id(t.cfg.store, t.cfg.name, seq),
            "to_store": to,
            "lines": [{"sku": sku, "qty": qty} for sku, qty in lines.items()],
            "terminal": t.cfg.name,
            "note": note,
            "ts_ms": t.now_ms(),
        }
        return t.append("transfer.out", payload, user)


def receive(
    t: Terminal,
    tid: str,
    counts: Mapping[str, int] | None = None,
    *,
    user: str | None = None,
) -> Op:
    """Count transfer `tid` in. With HQ's word of what was sent, items not in `counts` are
    taken as arrived as sent; without it, `counts` must name everything that arrived."""
    sender = sender_of(tid)
    if sender == t.cfg.store:
        raise InputError(f"{tid} was sent by this store; it is received at {sender}'s destination")
    done = t.ledger.transfers.receipts(tid).get(tid)
    if done:
        first = done[0]
        raise InputError(
            f"{tid} was already received here (at {first.get('terminal')}, op {first.get('op')}); "
            "a recount is a stock adjustment"
        )
    given = {t.product(code).sku: qty for code, qty in (counts or {}).items()}
    expected = t.ledger.transfers.expected(tid).get(tid)
    if expected is None:
        if not given:
            raise InputError(
                f"HQ has not told this store about {tid} yet (the store may be offline): count "
                "what arrived and name every item with --received SKU:QTY"
            )
        lines = given
    else:
        if str(expected.get("from_store")) != sender:
            raise InputError(f"{tid} does not come from store {sender}")
        lines = {**counted(expected.get("lines") or ()), **given}
    if not any(lines.values()):
        raise InputError(f"nothing of {tid} arrived: record it with a manager, not as a receipt")
    payload = {
        "transfer_id": tid,
        "from_store": sender,
        "lines": [{"sku": sku, "qty": qty} for sku, qty in lines.items()],
        "terminal": t.cfg.name,
        "ts_ms": t.now_ms(),
    }
    return t.append("transfer.in", payload, user)


def listing(t: Terminal) -> list[dict[str, Any]]:
    """This store's transfers, oldest first: those it sent (`out`) and those coming to it
    (`in`: on its way, received, received short, or received before HQ's word)."""
    rows: list[dict[str, Any]] = []
    for tid, f in t.ledger.transfers.sent().items():
        rows.append(_row(tid, "out", str(f.get("to_store", "")), f, "sent"))
    expected = t.ledger.transfers.expected()
    receipts = t.ledger.transfers.receipts()
    for tid in sorted(set(expected) | set(receipts)):
        got = receipts.get(tid, [])
        sent = expected.get(tid)
        if sent is None:
            status = "received (HQ's word pending)"
            fields = got[0]
        else:
            found = discrepancy(tid, sent, got) if got else None
            status = "on its way" if not got else "received short" if found else "received"
            fields = sent
        row = _row(tid, "in", str(fields.get("from_store", "")), fields, status)
        row["received"] = [line for r in got for line in r.get("lines") or []]
        rows.append(row)
    return sorted(rows, key=lambda r: (r["ts_ms"], r["transfer_id"]))


def _row(tid: str, way: str, other: str, f: Mapping[str, Any], status: str) -> dict[str, Any]:
    lines = list(f.get("lines") or [])
    return {
        "transfer_id": tid,
        "direction": way,
        "store": other,
        "lines": lines,
        "units": sum(int(x["qty"]) for x in lines),
        "ts_ms": int(f.get("ts_ms", 0)),
        "status": status,
    }


def elsewhere(t: Terminal, code: str, now_ms: int) -> list[dict[str, Any]]:
    """Other stores' last known stock of a product, best first, each with the age of HQ's
    word of that store (`age_ms`) and of this node's copy (`pulled_ms` ago)."""
    try:
        sku = t.product(code).sku
    except NotFound:
        sku = code
    rows = t.ledger.other_stores.stock_of(sku)
    for r in rows:
        r["sku"] = sku
        r["age_ms"] = max(0, now_ms - int(r["as_of_ms"])) if r["as_of_ms"] else None
        r["pulled_ms"] = max(0, now_ms - int(r["fetched_ms"]))
    return rows


def refresh_chain_stock(t: Terminal, client: ChainStockSource) -> int:
    """Pull other stores' stock from HQ into this node's cache; returns stores updated."""
    changed, same = client.chain_stock(t.ledger.other_stores.versions())
    t.ledger.other_stores.replace(changed, t.now_ms(), keep=same)
    return len(changed)
