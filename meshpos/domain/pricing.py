"""Pricing a sale: lines, discounts, GST per line, tenders, change and loyalty points.

Everything is integer paise. Prices are tax-inclusive (Indian MRP), so a discount lowers the line
total and GST is the part of that total the line's rate contains. A product with price bands
(meshpos/domain/gst.py) takes its rate from its value per piece after every discount.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from meshpos.core.errors import InputError
from meshpos.domain.gst import Bands, Supply, band_rate, split
from meshpos.domain.money import allocate, parse_rate, parse_rupees, rupees

TENDER_METHODS = ("cash", "card", "card_machine", "points", "giftcard", "upi")
"""`card`: captured offline by meshpos and sealed to HQ; `card_machine`: paid on the store's own
card machine (the bank authorised it; the till keeps its approval code and last four digits);
`giftcard`: a gift card or credit note's balance (its code); `upi`: a UPI payment the customer's
phone made, confirmed by its reference (UTR) and pending HQ's reconciliation."""
_ITEM = re.compile(r"^(?P<code>[^\sx*][^\s]*?)(?:[x*](?P<qty>-?\d+))?$")


@dataclass(frozen=True)
class Product:
    sku: str
    name: str
    price: int
    gst_rate: int
    barcode: str = ""
    category: str = ""
    size: str = ""
    colour: str = ""
    active: int = 1
    hsn: str = ""
    # The price bands of its category or HSN (GstRules.for_product); empty: `gst_rate` always.
    gst_bands: Bands = ()

    def rate_for(self, total: int, qty: int) -> int:
        """The GST rate of a line of `qty` of it whose total after discounts is `total`."""
        return band_rate(self.gst_bands, total, qty) if self.gst_bands else self.gst_rate

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Product:
        return cls(**{k: row[k] for k in cls.__dataclass_fields__ if k in row})


@dataclass(frozen=True)
class CartLine:
    product: Product
    qty: int
    line_discount: str | None = None


@dataclass(frozen=True)
class Tender:
    method: str
    amount: int | None = None  # paise; for points, the number of points
    card_last4: str | None = None
    card_brand: str | None = None
    # A card captured offline: its number and expiry sealed to HQ's payment key for exactly
    # `amount` (meshpos/service/cards.py). The tender is recorded as pending until HQ's answer arrives.
    card_sealed: str | None = None
    # Paid on the store's card machine: the approval code on the machine's slip.
    card_approval: str | None = None
    # A gift card or credit note (meshpos/domain/giftcards.py): its code.
    code: str | None = None
    # UPI: the payment's reference (UTR) the customer's phone or the sound box shows.
    upi_ref: str | None = None


@dataclass(frozen=True)
class LoyaltyRule:
    earn_per_100: int = 1  # points earned per 100 rupees paid other than by points
    point_value: int = 100  # paise one point is worth when redeemed


@dataclass(frozen=True)
class PricedSale:
    lines: list[dict[str, Any]]
    subtotal: int
    discount: int
    tax: int
    total: int
    tenders: list[dict[str, Any]] = field(default_factory=list)
    points_earned: int = 0
    points_redeemed: int = 0
    change: int = 0


def parse_item(text: str) -> tuple[str, int]:
    """'TSH-BLK-M' -> (code, 1); 'TSH-BLK-Mx3' -> (code, 3). Quantity must be a positive integer."""
    m = _ITEM.match(text.strip())
    if not m:
        raise InputError(f"item {text!r} is not SKU or SKUxQTY")
    qty = int(m.group("qty")) if m.group("qty") is not None else 1
    if qty <= 0:
        raise InputError(f"item {text!r}: quantity must be a positive whole number, got {qty}")
    if qty > 10000:
        raise InputError(f"item {text!r}: quantity {qty} is implausible (limit 10000)")
    return m.group("code"), qty


def parse_tender(text: str) -> Tender:
    """'cash', 'cash:500', 'card', 'points:120', 'giftcard:CODE', 'giftcard:CODE:500'. Cash,
    card and gift card amounts are rupees; points are points."""
    method, _, amount = text.partition(":")
    method = method.strip().lower().replace("-", "_")
    if method not in TENDER_METHODS:
        raise InputError(f"payment {text!r}: method must be one of {', '.join(TENDER_METHODS)}")
    code = None
    if method == "giftcard":
        code, _, amount = amount.partition(":")
        if not code.strip():
            raise InputError(f"payment {text!r}: give the card's code, giftcard:CODE[:AMOUNT]")
        code = code.strip().upper()
    if not amount:
        return Tender(method, code=code)
    if method == "points":
        if not amount.isdigit() or int(amount) <= 0:
            raise InputError(f"payment {text!r}: points must be a positive whole number")
        return Tender(method, int(amount))
    value = parse_rupees(amount, f"payment {text!r}")
    if value <= 0:
        raise InputError(f"payment {text!r}: amount must be more than zero")
    return Tender(method, value, code=code)


def _discount_amount(spec: str, base: int, what: str) -> int:
    spec = spec.strip()
    if spec.endswith("%"):
        bp = parse_rate(spec, what)
        amount = (base * bp + 5000) // 10000
    else:
        amount = parse_rupees(spec, what)
    if amount > base:
        raise InputError(f"{what} {spec!r} is more than the {rupees(base)} it applies to")
    return amount


def price_lines(
    cart: Sequence[CartLine], sale_discount: str | None = None, supply: Supply | None = None
) -> PricedSale:
    """Lines with their discounts, rate and tax split as `supply` says (default: within the
    store's state, CGST + SGST)."""
    inter = supply.inter_state if supply is not None else False
    if not cart:
        raise InputError("a sale needs at least one item")
    gross = [c.product.price * c.qty for c in cart]
    line_disc = [
        _discount_amount(c.line_discount, g, f"discount on {c.product.sku}")
        if c.line_discount
        else 0
        for c, g in zip(cart, gross, strict=True)
    ]
    net = [g - d for g, d in zip(gross, line_disc, strict=True)]
    extra = _discount_amount(sale_discount, sum(net), "discount") if sale_discount else 0
    shares = allocate(extra, net)
    lines: list[dict[str, Any]] = []
    for c, g, d, share in zip(cart, gross, line_disc, shares, strict=True):
        total = g - d - share
        p = c.product
        rate_bp = p.rate_for(total, c.qty)
        tax = split(total, rate_bp, inter)
        lines.append(
            {
                "sku": p.sku,
                "name": p.name,
                "category": p.category,
                "size": p.size,
                "colour": p.colour,
                "qty": c.qty,
                "unit_price": p.price,
                "discount": d + share,
                "hsn": p.hsn,
                "gst_rate": rate_bp,
                "tax": tax.tax,
                "cgst": tax.cgst,
                "sgst": tax.sgst,
                "igst": tax.igst,
                "total": total,
            }
        )
    return PricedSale(
        lines=lines,
        subtotal=sum(gross),
        discount=sum(line_disc) + extra,
        tax=sum(ln["tax"] for ln in lines),
        total=sum(ln["total"] for ln in lines),
    )


def settle(
    priced: PricedSale,
    tenders: Sequence[Tender],
    rule: LoyaltyRule,
    *,
    customer: str | None,
    points_balance: int = 0,
    card_balances: Mapping[str, int] | None = None,
) -> PricedSale:
    """Apply tenders in order; a tender without an amount pays what is still due (a gift card:
    as much of it as its balance in `card_balances` covers). Cash may exceed what is due (change
    is given); card, gift card, UPI and points may not."""
    due = priced.total
    out: list[dict[str, Any]] = []
    redeemed = 0
    change = 0
    left = dict(card_balances or {})
    for t in tenders or [Tender("cash")]:
        if due <= 0:
            raise InputError(f"payment {t.method}: the sale is already paid in full")
        if t.method == "giftcard":
            if not t.code:
                raise InputError("a gift card payment needs the card's code")
            have = left.get(t.code, 0)
            amount = t.amount if t.amount is not None else min(have, due)
            if amount <= 0:
                raise InputError(f"gift card {t.code} has nothing left to spend")
            if amount > due:
                raise InputError(
                    f"gift card payment {rupees(amount)} is more than the {rupees(due)} due"
                )
            left[t.code] = have - amount
            due -= amount
            out.append({"method": "giftcard", "amount": amount, "code": t.code})
            continue
        if t.method == "points":
            if customer is None:
                raise InputError("paying with points needs a customer (--customer ID)")
            points = (
                t.amount
                if t.amount is not None
                else min(points_balance - redeemed, -(-due // rule.point_value))
            )
            value = points * rule.point_value
            if value > due:
                points = due // rule.point_value
                value = points * rule.point_value
                if points <= 0:
                    raise InputError("the amount still due is less than one point's value")
            if points <= 0 or points + redeemed > points_balance:
                raise InputError(
                    f"customer {customer} has {points_balance - redeemed} points; "
                    f"{points} cannot be redeemed"
                )
            redeemed += points
            due -= value
            out.append({"method": "points", "amount": value, "points": points})
            continue
        if t.card_sealed and t.amount is None:
            raise InputError("a card sealed at capture must name the amount it was sealed for")
        amount = t.amount if t.amount is not None else due
        entry: dict[str, Any] = {"method": t.method, "amount": min(amount, due)}
        if t.method == "cash":
            entry["tendered"] = amount
            if amount > due:
                change = amount - due
                entry["change"] = change
        elif amount > due:
            raise InputError(f"card payment {rupees(amount)} is more than the {rupees(due)} due")
        else:
            if t.card_last4:
                entry["card_last4"] = t.card_last4
            if t.card_brand:
                entry["card_brand"] = t.card_brand
            if t.card_approval:
                entry["card_approval"] = t.card_approval
            if t.card_sealed:
                entry["card_sealed"] = t.card_sealed
                entry["pending"] = True
            if t.method == "upi":
                if not t.upi_ref:
                    raise InputError("a UPI payment needs its reference (UTR) to be confirmed")
                entry["upi_ref"] = t.upi_ref
                entry["pending"] = True
        due -= entry["amount"]
        out.append(entry)
    if due > 0:
        raise InputError(f"payments are {rupees(due)} short of the total {rupees(priced.total)}")
    paid_money = priced.total - redeemed * rule.point_value
    earned = (paid_money // 10000) * rule.earn_per_100 if customer else 0
    return PricedSale(
        lines=priced.lines,
        subtotal=priced.subtotal,
        discount=priced.discount,
        tax=priced.tax,
        total=priced.total,
        tenders=out,
        points_earned=earned,
        points_redeemed=redeemed,
        change=change,
    )
