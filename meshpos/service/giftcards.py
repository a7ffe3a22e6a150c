"""Selling gift cards and reading a card's balance, for every front door.

Spending one is a tender of a sale or exchange (`Terminal.sell`, `Tender("giftcard", code=...)`)
and a refund to a credit note is a refund method (`Terminal.return_items(refund="credit_note")`);
both go through the Terminal so the escrow checks are the sale's own. The balance and its rights
are the rulebook's escrow (meshpos/domain/giftcards.py).
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from typing import Any

from meshpos.core.errors import InputError
from meshpos.core.ops import Op
from meshpos.domain import giftcards
from meshpos.domain.money import parse_rupees, rupees
from meshpos.domain.pricing import PricedSale, Tender, settle
from meshpos.service import cards
from meshpos.service.terminal import Terminal

PAID_WITH = ("cash", cards.MACHINE, "upi")
"""How a gift card may be paid for: money that is final at the counter (a card captured offline
could be declined later, and a gift card cannot pay for another)."""


def valid_days(t: Terminal) -> int:
    """Days a new gift card stays spendable (`[giftcards] valid_days`; 0: no expiry)."""
    value = t.cfg.section("giftcards").get("valid_days", giftcards.DEFAULT_VALID_DAYS["giftcard"])
    if type(value) is not int or value < 0:
        raise InputError("[giftcards] valid_days must be a whole number of days (0: no expiry)")
    return value


def issue(
    t: Terminal,
    amount: str | int,
    *,
    tenders: Sequence[Tender] = (),
    customer: str | None = None,
    user: str | None = None,
    code: str | None = None,
) -> Op:
    """Sell a new gift card of `amount` (rupees as typed, or paise): one `giftcard.issue` op whose
    counter then holds the card's whole balance. Paid in cash unless `tenders` say otherwise.
    `code`: the card's code when the caller chose it (the simulator, from its seed); else a new
    random one."""
    paise = amount if isinstance(amount, int) else parse_rupees(amount, "gift card amount")
    giftcards.check_amount(paise)
    for tender in tenders:
        if tender.method not in PAID_WITH:
            raise InputError(
                f"a gift card is paid in cash, on the card machine or by UPI, not by {tender.method}"
            )
    priced = PricedSale(lines=[], subtotal=paise, discount=0, tax=0, total=paise)
    settled = settle(priced, tenders, t.loyalty_rule(), customer=None)
    cards.check_kinds(settled.tenders)
    if code is None:
        digits = "".join(secrets.choice("0123456789") for _ in range(giftcards.DIGITS))
        code = giftcards.make_code(giftcards.GIFT_CARD, digits)
    elif giftcards.kind_of(giftcards.parse_code(code)) != giftcards.GIFT_CARD:
        raise InputError(f"{code} is a credit note's code, not a gift card's")
    with t.transaction():
        cid = t.customer(customer)["customer_id"] if customer else None
        now = t.now_ms()
        payload: dict[str, Any] = {
            "code": code,
            "kind": giftcards.GIFT_CARD,
            "amount": paise,
            "expires_ms": giftcards.expiry(now, valid_days(t)),
            "ts_ms": now,
            "terminal": t.cfg.name,
            "customer": cid,
            "tenders": settled.tenders,
        }
        op = t.append("giftcard.issue", payload, user)
        for hook in t.on_record:
            hook(t, op, dict(op.payload))
    return op


def show(t: Terminal, code: str) -> dict[str, Any]:
    """Everything a cashier or a customer asks about a card: its balance, how much of it this
    counter may spend now and who holds the rest, its expiry and its history."""
    state = t.giftcard(code)
    key = giftcards.escrow_key(state.code)
    now = t.now_ms()
    zone = t.store_time()
    return {
        "code": state.code,
        "kind": state.kind,
        "label": state.label,
        "balance": state.balance,
        "issued": state.issued,
        "issued_at": zone.stamp(state.issued_ms) if state.issued_ms else None,
        "issued_in": state.store,  # another store's card (HQ told this store of it)
        "expires_ms": state.expires_ms,
        "expires": zone.day(state.expires_ms) if state.expires_ms else None,
        "expired": state.expired(now),
        "spendable_here": max(t.rights(key), 0),
        "held_elsewhere": t.rights_elsewhere(key),
        "history": [
            {**move, "at": zone.stamp(move["ts_ms"]) if move.get("ts_ms") else None}
            for move in t.ledger.giftcards.history(state.code)
        ],
    }


def balance_lines(t: Terminal, code: str) -> list[str]:
    """A card's balance in a line or two, for the text till."""
    card = show(t, code)
    until = f", valid until {card['expires']}" if card["expires"] else ""
    gone = " (EXPIRED)" if card["expired"] else ""
    out = [f"{card['label']} {card['code']}: {rupees(card['balance'])} left{until}{gone}"]
    if card["issued_in"]:
        out.append(f"  issued in store {card['issued_in']}: what is left there is asked of HQ")
    if card["held_elsewhere"]:
        where = ", ".join(f"{n} {rupees(v)}" for n, v in card["held_elsewhere"].items())
        out.append(f"  spendable here {rupees(card['spendable_here'])}; held by {where}")
    return out
