"""Conflicts in a manager's words: what happened, both sides (who, where, when, what), and what to do.

The fold opens a conflict with a kind, a subject and a small detail (`{"sku": ..., "stock": -3}`)
and names the ops behind it; this turns that into sentences for the manager page, from the ops
this replica holds. An op it does not hold yet is still listed, as "not here yet". Pure: the caller
passes the ops and the counters' names.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from meshpos.core.ops import Op
from meshpos.domain.money import rupees


@dataclass(frozen=True)
class Side:
    """One op behind a conflict, as a person reads it."""

    ref: str
    who: str = ""
    where: str = ""
    when_ms: int = 0
    what: str = "not on this counter yet (it arrives with the next sync)"


@dataclass(frozen=True)
class ConflictWords:
    title: str
    what: str
    sides: tuple[Side, ...]
    todo: str


def _lines(op: Op, sku: str | None, key: str = "lines") -> list[Mapping[str, Any]]:
    lines = op.payload.get(key) or []
    return [ln for ln in lines if isinstance(ln, Mapping) and (sku is None or ln.get("sku") == sku)]


def _qty(lines: Sequence[Mapping[str, Any]]) -> int:
    return sum(int(ln.get("qty") or 0) for ln in lines)


def _what(op: Op, kind: str, subject: str) -> str:
    """What one op did, as far as the conflict is concerned."""
    p = op.payload
    sku = subject if kind in ("oversell", "unknown_product") else None
    sale = p.get("sale_id", "")
    if op.kind in ("sale", "exchange"):
        if sku is not None:
            beyond = (p.get("oversold") or {}).get(sku)
            note = f", {beyond} beyond the stock it showed, confirmed" if beyond else ""
            return f"sold {_qty(_lines(op, sku))} of {sku} ({op.kind} {sale}{note})"
        redeemed = int(p.get("points_redeemed") or 0)
        if kind == "negative_points" and redeemed:
            return f"redeemed {redeemed} points ({op.kind} {sale})"
        return f"{op.kind} {sale}, {rupees(int(p.get('total') or 0))}"
    if op.kind == "return":
        back = _qty(_lines(op, sku))
        return f"took back {back} item(s) from sale {p.get('ref_sale')}, refunding " + rupees(
            abs(int(p.get("total") or 0))
        )
    if op.kind.startswith("stock."):
        verb = "received" if op.kind == "stock.receive" else "corrected stock by"
        return f"{verb} {int(p.get('delta') or 0):+d} ({p.get('reason', '')})"
    if op.kind == "loyalty.adjust":
        return f"changed points by {int(p.get('delta') or 0):+d} ({p.get('reason', '')})"
    if op.kind == "payment.result":
        return f"HQ answered the card payment: {p.get('status')} ({p.get('message', '')})"
    return op.kind.replace(".", " ")


def describe(
    conflict: Mapping[str, Any],
    ops: Mapping[str, Op | None],
    names: Mapping[str, str],
    customer_name: Callable[[str], str] = lambda cid: cid,
) -> ConflictWords:
    """`conflict` as the views list it; `ops` by ref (origin:seq); `names` of counters by id."""
    kind, subject = str(conflict["kind"]), str(conflict["subject"])
    detail: Mapping[str, Any] = conflict.get("detail") or {}
    sides = []
    for ref in conflict.get("ops") or []:
        op = ops.get(str(ref))
        if op is None:
            sides.append(Side(str(ref)))
            continue
        where = names.get(op.origin, op.origin)
        sides.append(Side(str(ref), op.user, where, op.hlc >> 16, _what(op, kind, subject)))
    confirmed = sum(
        1 for op in ops.values() if op is not None and subject in (op.payload.get("oversold") or {})
    )
    title, what, todo = _words(kind, subject, detail, len(sides), confirmed, customer_name)
    return ConflictWords(title, what, tuple(sides), todo)


def _words(
    kind: str,
    subject: str,
    detail: Mapping[str, Any],
    n: int,
    confirmed: int,
    customer_name: Callable[[str], str],
) -> tuple[str, str, str]:
    if kind == "oversell":
        stock = detail.get("stock")
        if confirmed and confirmed == n:
            how = (
                f"{n} sale(s) sold it beyond the stock the counter showed; the cashier "
                "confirmed the goods were in the customer's hand."
            )
        else:
            how = (
                f"{n} sale(s) took the last units, on counters that could not see each "
                "other's sales at the time."
            )
        return (
            f"More {subject} sold than the store had: stock shows {stock}",
            how,
            "Count the shelf and the stock room. Type what you find beyond the screen as a stock "
            "adjustment (e.g. 2 if two turn up, nothing if the count matches) and resolve with "
            "a note of what you did.",
        )
    if kind == "over_return":
        excess = ", ".join(f"{q} × {sku}" for sku, q in (detail.get("excess") or {}).items())
        return (
            f"Sale {subject} was returned more than it sold",
            f"More came back than was sold ({excess} too many), on counters that returned "
            "it at the same time.",
            "Check whether the refund was paid out twice. Note how the money was recovered (or "
            "that it was not), and resolve.",
        )
    if kind == "negative_points":
        name = customer_name(subject)
        return (
            f"{name}'s loyalty points went below zero ({detail.get('points')})",
            "Points were spent twice, or a return took back points the customer had already spent.",
            "Agree with the customer what they keep; correct their points if needed, then "
            "resolve with a note.",
        )
    if kind == "upi_unsettled":
        settled = int(detail.get("settled") or 0)
        what = (
            f"settled only {rupees(settled)}"
            if detail.get("status") == "wrong_amount"
            else "was not in the bank's settlement file"
        )
        return (
            f"A UPI payment on sale {subject} did not reach the bank as recorded",
            f"The UPI payment of {rupees(int(detail.get('amount') or 0))} (UTR "
            f"{detail.get('utr', '?')}) {what}: {detail.get('reason') or 'no reason given'}.",
            "Check the UTR on the customer's phone or the sound box's log; ask the customer to "
            "pay what is missing, then resolve with a note of how it was settled.",
        )
    if kind == "payment_declined":
        return (
            f"HQ declined a card payment on sale {subject}",
            f"The {detail.get('card', 'card')} taken offline for {rupees(int(detail.get('amount') or 0))}"
            f" was declined: {detail.get('reason') or detail.get('code') or 'no reason given'}.",
            "Contact the customer to pay another way (their phone is on the customer record), "
            "then resolve with a note of how it was settled.",
        )
    if kind == "unknown_product":
        return (
            f"Stock moved for {subject}, which is not in the catalogue",
            "A counter received or sold an item this store's catalogue does not have.",
            "Add the product to the catalogue, or correct its stock to zero; then resolve "
            "with a note.",
        )
    facts = "; ".join(f"{str(k).replace('_', ' ')}: {v}" for k, v in detail.items())
    return (
        f"{kind.replace('_', ' ').capitalize()}: {subject}",
        facts or "The counters' records disagree here.",
        "Check with the people named below what happened, put it right, and resolve with a note.",
    )
