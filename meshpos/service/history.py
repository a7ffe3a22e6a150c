"""A customer's history for every front door (`meshpos customer show`, the text till's `history`,
the web till's customer panel): recent purchases and returns, sizes bought, points and where they
can be redeemed, gift cards and credit notes with what is left. Read from this node's views only,
so it works with the store offline."""

from __future__ import annotations

from typing import Any

from meshpos.domain.giftcards import LABELS
from meshpos.domain.money import rupees
from meshpos.service.terminal import Terminal


def customer_history(t: Terminal, code: str, limit: int = 10) -> dict[str, Any]:
    """The customer (id or phone) with their history; NotFound when unknown."""
    customer = t.customer(code)
    cid = str(customer["customer_id"])
    now = t.now_ms()
    cards = []
    for card in t.ledger.giftcards.of_customer(cid):
        expires = card.get("expires_ms")
        cards.append(
            {
                "code": card["code"],
                "kind": card.get("kind"),
                "label": LABELS.get(str(card.get("kind")), "gift card"),
                "balance": card["balance"],
                "issued": card.get("amount"),
                "expires_ms": expires,
                "expired": isinstance(expires, int) and now >= expires,
            }
        )
    return {
        **customer,
        "rights_here": t.rights(cid),
        "points_elsewhere": t.rights_elsewhere(cid),
        **t.ledger.history.totals(cid),
        "recent": t.ledger.history.visits(cid, limit),
        "sizes": t.ledger.history.sizes(cid),
        "cards": cards,
    }


def summary_lines(t: Terminal, h: dict[str, Any]) -> list[str]:
    """The history in a few lines of text, for the text till and the CLI."""
    zone = t.store_time()
    out = [
        f"{h['name']} ({h['customer_id']}{', ' + h['phone'] if h.get('phone') else ''}): "
        f"{h['points']} points, {h['rights_here']} redeemable here; {h['purchases']} purchase(s), "
        f"{h['returns']} return(s), {rupees(h['spent'])} spent"
        + (f", last visit {zone.stamp(h['last_ms'])}" if h.get("last_ms") else "")
    ]
    if h["sizes"]:
        out.append(
            "  sizes: "
            + ", ".join(f"{s['category'] or '-'} {s['size']} ×{s['qty']}" for s in h["sizes"][:6])
        )
    for c in h["cards"]:
        if c["balance"] > 0 or not c["expired"]:
            until = f", until {zone.day(c['expires_ms'])}" if c.get("expires_ms") else ""
            gone = " (expired)" if c["expired"] else ""
            out.append(f"  {c['label']} {c['code']}: {rupees(c['balance'])} left{until}{gone}")
    for v in h["recent"]:
        items = ", ".join(
            f"{ln['name']}{' ' + ln['size'] if ln['size'] else ''} ×{abs(ln['qty'])}"
            for ln in v["lines"]
        )
        tag = " (paper)" if v["paper"] else ""
        out.append(
            f"  {zone.stamp(v['ts_ms'])} {v['kind']} {v['sale_id']}{tag}: "
            f"{rupees(v['total'])} - {items or 'no items'}"
        )
    return out
