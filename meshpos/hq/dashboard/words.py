"""Conflicts in plain words: what happened, in the store's terms, and what a person does about it.
Pure: a conflict's kind and detail in, sentences out."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

Money = Callable[[int], str]


@dataclass(frozen=True)
class Words:
    title: str
    what: str
    todo: str


def describe(kind: str, subject: str, detail: Mapping[str, Any], money: Money) -> Words:
    d = detail
    if kind == "oversell":
        item = f"{d.get('name') or 'SKU'} ({d.get('sku', subject)})"
        return Words(
            f"Sold more {item} than the store held",
            f"Stock of {item} is {d.get('stock')}: more units were sold than the store had, for "
            "example two counters selling the last ones while their link was down.",
            "Count the shelf, then record the count at the store (meshpos stock adjust) or the "
            "delivery that was never entered.",
        )
    if kind == "unknown_product":
        return Words(
            f"Stock moved for {subject}, which the catalogue does not name",
            f"The store recorded stock of {subject} (now {d.get('stock')}) but no product "
            "with that SKU exists in its catalogue.",
            "Add the product on the Catalogue page (it reaches the store with its next sync), "
            "or correct the stock entry at the store.",
        )
    if kind == "negative_points":
        return Words(
            f"Customer {subject} has {d.get('points')} loyalty points",
            "More points were redeemed than the customer earned, for example the same points "
            "spent at two counters that could not see each other.",
            "Check the customer's recent redemptions at the store, then agree an adjustment "
            "with the customer (meshpos loyalty adjust).",
        )
    if kind == "payment_declined":
        amount = money(int(d.get("amount", 0)))
        reason = d.get("reason") or d.get("code") or "no reason given"
        return Words(
            f"Card payment of {amount} declined",
            f"Sale {d.get('sale_id', subject)} was paid by {d.get('card', 'card')} offline; the "
            f"acquirer declined it ({reason}). The goods left the store unpaid.",
            "Contact the customer to pay another way, then record what was done on the "
            "store's manager screen (or write it off there).",
        )
    if kind == "unauthorised":
        who = d.get("user") or "someone"
        where = d.get("node") or d.get("terminal") or d.get("signed_by") or "a terminal"
        what = str(d.get("kind") or "an op").replace(".", " ")
        return Words(
            f"A {what} by {who} at {where} did not take effect",
            f"It is stored, but the store's rules gave it no effect: {d.get('rule_text') or ''}"
            f" ({d.get('reason') or 'no approval carried'}). Op {d.get('op', subject)}.",
            "Ask the store's manager whether it was meant; if so, have a supervisor approve it "
            "again at a till, or resolve it on the store's manager screen.",
        )
    if kind == "over_return":
        return Words(
            f"More returned than sold on sale {subject}",
            "Returns against this sale add up to more items than the sale had.",
            "Check the returns at the store's manager screen.",
        )
    return Words(
        f"{kind.replace('_', ' ').capitalize()}: {subject}",
        "The store flagged this for a manager.",
        "Open the store's manager screen to see both sides and resolve it.",
    )
