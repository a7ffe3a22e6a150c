"""Fold rules: what each kind of op does to the views. Pure code, no SQL.

`fold(ops)` turns a batch of ops into `Changes`: rows to insert, counter deltas, register writes and
the conflict subjects to re-check. Every rule is order-independent — counters add, registers keep the
greatest `(hlc, origin)`, records are keyed by op id, conflicts are a function of the resulting state —
so any replica that holds the same set of ops holds the same views, whatever order they came in.
A payload that does not have the shape its kind requires raises `EncodingError` before anything is
written.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any

from meshpos.core.errors import EncodingError
from meshpos.core.ops import Op
from meshpos.domain.authority import CARD_FLOAT, RULE_SETTINGS
from meshpos.domain.cards import is_sealed
from meshpos.domain.catalog import FIELDS
from meshpos.domain.giftcards import CREDIT_NOTE, GIFT_CARD, KINDS, KNOWN, escrow_key, is_key
from meshpos.domain.giftcards import TENDER as GIFTCARD_TENDER
from meshpos.domain.gst import Supply, recorded_split
from meshpos.domain.revocation import REVOKE_KIND
from meshpos.domain.revocation import read as read_revocation
from meshpos.domain.staff import ROLES
from meshpos.domain.upi import RESULT_KIND as UPI_RESULT
from meshpos.domain.upi import RESULT_STATUSES as UPI_STATUSES

PRODUCT_FIELDS = (*FIELDS, "active")
INT_PRODUCT_FIELDS = frozenset({"price", "gst_rate", "active"})
CUSTOMER_FIELDS = ("name", "phone", "email")
USER_FIELDS = ("name", "role", "active", "pin_salt", "pin_key")

OVERSELL = "oversell"
OVER_RETURN = "over_return"
UNKNOWN_PRODUCT = "unknown_product"
NEGATIVE_POINTS = "negative_points"
PAYMENT_DECLINED = "payment_declined"
TRANSFER_SHORT = "transfer_short"  # a stock transfer received short (or with extra or twice)
UNAUTHORISED = "unauthorised"  # an op without authority (meshpos/domain/authority.py)
CLOCK_AHEAD = "clock_ahead"  # a node stamped ops further ahead of another's clock than allowed
UPI_UNSETTLED = "upi_unsettled"  # a UPI payment HQ found missing or short in the bank's file
PAYMENT_STATUSES = ("approved", "declined")
VALUE_TENDERS = frozenset({GIFTCARD_TENDER, CREDIT_NOTE})  # tenders that move a card's balance
CONFLICT_KINDS = (
    OVERSELL,
    OVER_RETURN,
    UNKNOWN_PRODUCT,
    NEGATIVE_POINTS,
    PAYMENT_DECLINED,
    TRANSFER_SHORT,
    UNAUTHORISED,
    CLOCK_AHEAD,
    UPI_UNSETTLED,
)
# CARD_FLOAT (from the rulebook) is the escrow pseudo-customer whose rights are a node's share of
# the store's offline card float (meshpos/service/cards.py). No person may hold it.
__all__ = ["CARD_FLOAT", "Changes", "fold"]

# Integers in payloads stay exact in JSON and JavaScript (registers hold JSON, the till reads it),
# and far inside SQLite's 64-bit range, so a signed but absurd op is refused rather than crashing
# the insert.
MAX_INT = 2**53


@dataclass
class Changes:
    """Everything a batch of ops does to the views, gathered before any SQL runs."""

    rows: dict[str, list[tuple[Any, ...]]] = field(default_factory=dict)
    stock: Counter[str] = field(default_factory=Counter)
    # The same moves by (sku, origin): how each counter's ops moved each SKU's stock.
    stock_by_origin: Counter[tuple[str, str]] = field(default_factory=Counter)
    points: Counter[str] = field(default_factory=Counter)
    rights: Counter[tuple[str, str]] = field(default_factory=Counter)
    registers: list[tuple[str, str, str, str, int, str]] = field(default_factory=list)
    touched: set[tuple[str, str]] = field(default_factory=set)
    entities: set[tuple[str, str]] = field(default_factory=set)

    def add(self, table: str, row: tuple[Any, ...]) -> None:
        self.rows.setdefault(table, []).append(row)

    def merge(self, other: Changes) -> None:
        """Add another batch's changes to these (the fold of ops judged one at a time)."""
        for table, rows in other.rows.items():
            self.rows.setdefault(table, []).extend(rows)
        self.stock.update(other.stock)
        self.stock_by_origin.update(other.stock_by_origin)
        self.points.update(other.points)
        self.rights.update(other.rights)
        self.registers.extend(other.registers)
        self.touched |= other.touched
        self.entities |= other.entities

    def move_rights(self, op: Op, customer: str, node: str, delta: int) -> None:
        """Escrow rights move: the `rights` counter, and the `rights_log` row the rulebook reads
        a counter's holding before an op from (authority 1: the op has authority)."""
        self.rights[(customer, node)] += delta
        self.add("rights_log", (customer, node, op.origin, op.seq, op.hlc, delta, 1))


def _int_ok(value: Any) -> bool:
    return type(value) is int and -MAX_INT <= value <= MAX_INT  # type(...) is int: no bools


def _get(payload: Mapping[str, Any], key: str, typ: type | tuple[type, ...], op: Op) -> Any:
    value = payload.get(key)
    if type(value) is typ and typ is not int:
        return value
    if not (_int_ok(value) if typ is int else isinstance(value, typ)):
        raise EncodingError(f"op {op.origin}:{op.seq} ({op.kind}): field {key!r} is malformed")
    return value


def _opt(payload: Mapping[str, Any], key: str, typ: type, op: Op) -> Any:
    if payload.get(key) is None:
        return None
    return _get(payload, key, typ, op)


def _register(ch: Changes, op: Op, entity: str, key: str, fields: Mapping[str, Any]) -> None:
    for name, value in fields.items():
        ch.registers.append((entity, key, name, json.dumps(value), op.hlc, op.origin))
    ch.entities.add((entity, key))


def _product(ch: Changes, op: Op) -> None:
    sku = _get(op.payload, "sku", str, op)
    fields = _get(op.payload, "fields", dict, op)
    for name, value in fields.items():
        ok = _int_ok(value) if name in INT_PRODUCT_FIELDS else isinstance(value, str)
        if name not in PRODUCT_FIELDS or not ok:
            raise EncodingError(f"op {op.origin}:{op.seq}: product field {name!r} is malformed")
    _register(ch, op, "product", sku, fields)
    ch.touched.add((UNKNOWN_PRODUCT, sku))


def _customer_id(payload: Mapping[str, Any], key: str, op: Op, optional: bool = False) -> Any:
    cid = _opt(payload, key, str, op) if optional else _get(payload, key, str, op)
    if cid == CARD_FLOAT or is_key(cid):
        raise EncodingError(f"op {op.origin}:{op.seq}: customer id {cid!r} is reserved")
    return cid


def _customer(ch: Changes, op: Op) -> None:
    cid = _customer_id(op.payload, "customer_id", op)
    fields = _get(op.payload, "fields", dict, op)
    for name, value in fields.items():
        if name not in CUSTOMER_FIELDS or not isinstance(value, str):
            raise EncodingError(f"op {op.origin}:{op.seq}: customer field {name!r} is malformed")
    _register(ch, op, "customer", cid, fields)


def _setting(ch: Changes, op: Op) -> None:
    key = _get(op.payload, "key", str, op)
    value = op.payload.get("value")
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        raise EncodingError(f"op {op.origin}:{op.seq}: setting {key!r} has no JSON form") from None
    _register(ch, op, "setting", key, {"value": value})
    if key.startswith("staff.") or key in RULE_SETTINGS:
        ch.add("staff_log", (op.origin, op.seq, op.hlc, "setting", key, "value", json.dumps(value)))


def _move(ch: Changes, op: Op, sku: str, delta: int, kind: str) -> None:
    _moved(ch, op, sku, delta)
    ch.add("stock_moves", (op.origin, op.seq, sku, delta, kind, op.hlc))


def _moved(ch: Changes, op: Op, sku: str, delta: int) -> None:
    """A move's effect on stock. A sale's moves are its `sale_lines` rows (schema.MOVES_DDL)."""
    ch.stock[sku] += delta
    ch.stock_by_origin[(sku, op.origin)] += delta
    ch.touched.add((OVERSELL, sku))
    ch.touched.add((UNKNOWN_PRODUCT, sku))


def _stock(ch: Changes, op: Op) -> None:
    sku = _get(op.payload, "sku", str, op)
    delta = _get(op.payload, "delta", int, op)
    _get(op.payload, "reason", str, op)
    _move(ch, op, sku, delta, op.kind)


def _points(ch: Changes, op: Op, customer: str | None, delta: int, redeemed: int = 0) -> None:
    """Points move the customer's balance and the redemption rights of the node where they moved
    (escrow). A redemption re-checks the customer's conflict even when it nets to zero points: it
    is one of the ops a negative-points conflict names."""
    if customer and delta:
        ch.points[customer] += delta
        ch.move_rights(op, customer, op.origin, delta)
    if customer and (delta or redeemed):
        ch.touched.add((NEGATIVE_POINTS, customer))


SECTIONS: dict[str, tuple[tuple[str, int], ...]] = {
    "sale": (("lines", 1),),
    "return": (("lines", -1),),
    "exchange": (("lines", 1), ("returned", -1)),
}


def _record(ch: Changes, op: Op) -> None:
    """Sales, returns and exchanges: immutable records plus their stock and loyalty effects.

    A plain sale whose every field has its exact type (all of them, in practice) takes
    `_plain_sale`, which checks a line or tender in one expression instead of a call per field;
    anything else, including every malformed op, takes `_checked_record`, which names the field
    that is wrong. Both write the same changes (tests/test_fold_fast.py)."""
    if op.kind != "sale" or not _plain_sale(ch, op):
        _checked_record(ch, op)


# The fields a plain sale and each of its lines must have, read in one call each; a missing one
# sends the sale to the checked path, which names it.
_SALE_FIELDS = itemgetter(
    "sale_id",
    "points_earned",
    "points_redeemed",
    "number",
    "ts_ms",
    "subtotal",
    "discount",
    "tax",
    "total",
)
_SALE_PARTS = itemgetter("terminal", "lines", "tenders")
_LINE_FIELDS = itemgetter(
    "sku",
    "name",
    "qty",
    "unit_price",
    "discount",
    "gst_rate",
    "tax",
    "total",
    "cgst",
    "sgst",
    "igst",
)


def _plain_sale(ch: Changes, op: Op) -> bool:
    """Fold a well-typed sale and return True; return False, changing nothing, otherwise.

    One pass reads each line's fields once, checks them in one expression and builds its rows
    aside; they join `ch` only when the whole sale passed."""
    p = op.payload
    if "paper" in p:
        return False  # a paper sale has its own register (`_paper`)
    try:
        sale_id, earned, redeemed, number, ts_ms, subtotal, discount, tax, total = _SALE_FIELDS(p)
        terminal, lines, tenders = _SALE_PARTS(p)
    except KeyError:
        return False
    customer, ref = p.get("customer"), p.get("ref_sale")
    lo, hi = -MAX_INT, MAX_INT
    if not (
        type(sale_id) is str
        and (
            customer is None
            or (type(customer) is str and customer != CARD_FLOAT and not is_key(customer))
        )
        and (ref is None or type(ref) is str)
        and type(terminal) is str
        and type(lines) is list
        and type(tenders) is list
        # type(...) is int: no bools; chained, every one of them is int
        and type(earned) is type(redeemed) is type(number) is type(ts_ms) is int
        and type(subtotal) is type(discount) is type(tax) is type(total) is int
        and lo <= min(earned, redeemed, number, ts_ms, subtotal, discount, tax, total)
        and max(earned, redeemed, number, ts_ms, subtotal, discount, tax, total) <= hi
    ):
        return False
    origin, seq, hlc = op.origin, op.seq, op.hlc
    place, gstin = _supply_of(p)
    line_rows: list[tuple[Any, ...]] = []
    moves: dict[str, int] = {}
    for n, line in enumerate(lines):
        if type(line) is not dict:
            return False
        try:
            sku, name, qty, price, off, rate, ltax, ltotal, cgst, sgst, igst = _LINE_FIELDS(line)
        except KeyError:
            return False
        cat, hsn = line.get("category"), line.get("hsn")
        if not (
            type(sku) is type(name) is str
            and type(qty) is type(price) is type(off) is type(rate) is type(ltax) is int
            and type(ltotal) is type(cgst) is type(sgst) is type(igst) is int
            and 0 < qty <= hi
            and lo <= min(price, off, rate, ltax, ltotal, cgst, sgst, igst)
            and max(price, off, rate, ltax, ltotal, cgst, sgst, igst) <= hi
            and (cat is None or type(cat) is str)
            and (hsn is None or type(hsn) is str)
        ):
            return False
        line_rows.append(
            (
                origin,
                seq,
                n,
                sku,
                name,
                cat or "",
                qty,
                price,
                off,
                rate,
                ltax,
                ltotal,
                hsn or "",
                ltotal - cgst - sgst - igst,
                cgst,
                sgst,
                igst,
                place,
                gstin,
                hlc,
            )
        )
        moves[sku] = moves.get(sku, 0) - qty
    for tender in tenders:
        if not (
            type(tender) is dict
            and type(tender.get("method")) is str
            and tender["method"] not in VALUE_TENDERS
            and _int_ok(tender.get("amount"))
            and ((pts := tender.get("points")) is None or _int_ok(pts))
        ):
            return False
    rows = ch.rows
    rows.setdefault("sales", []).append(
        (
            sale_id,
            origin,
            seq,
            "sale",
            number,
            terminal,
            hlc,
            ts_ms,
            op.user,
            customer,
            subtotal,
            discount,
            tax,
            total,
            earned,
            redeemed,
            ref,
        )
    )
    if line_rows:
        rows.setdefault("sale_lines", []).extend(line_rows)
    if moves:
        stock, by_origin, touched = ch.stock, ch.stock_by_origin, ch.touched
        for sku, delta in moves.items():
            stock[sku] += delta
            by_origin[(sku, origin)] += delta
            touched.add((OVERSELL, sku))
            touched.add((UNKNOWN_PRODUCT, sku))
    if tenders:
        out = rows.setdefault("tenders", [])
        for i, tender in enumerate(tenders):
            method, amount = tender["method"], tender["amount"]
            out.append((origin, seq, i, method, amount, tender.get("points") or 0))
            if method == "card" and is_sealed(tender):
                ch.move_rights(op, CARD_FLOAT, origin, -max(amount, 0))
    ch.touched.add((OVER_RETURN, sale_id))
    _points(ch, op, customer, earned - redeemed, redeemed)
    return True


def _supply_of(p: Mapping[str, Any]) -> tuple[str, str]:
    """`Supply.of(p)`'s place of supply and buyer GSTIN, without building a Supply per sale."""
    seller, place, buyer = p.get("seller_state"), p.get("place_of_supply"), p.get("buyer_gstin")
    seller = seller if isinstance(seller, str) else ""
    place = place if isinstance(place, str) and place else seller
    return place, buyer if isinstance(buyer, str) else ""


def _checked_record(ch: Changes, op: Op) -> None:
    p = op.payload
    sale_id = _get(p, "sale_id", str, op)
    customer = _customer_id(p, "customer", op, optional=True)
    ref = _opt(p, "ref_sale", str, op)
    earned = _get(p, "points_earned", int, op)
    redeemed = _get(p, "points_redeemed", int, op)
    flip = -1 if op.kind == "return" else 1
    supply = Supply.of(p)
    ch.add(
        "sales",
        (
            sale_id,
            op.origin,
            op.seq,
            op.kind,
            _get(p, "number", int, op),
            _get(p, "terminal", str, op),
            op.hlc,
            _get(p, "ts_ms", int, op),
            op.user,
            customer,
            flip * _get(p, "subtotal", int, op),
            flip * _get(p, "discount", int, op),
            flip * _get(p, "tax", int, op),
            flip * _get(p, "total", int, op),
            earned,
            redeemed,
            ref,
        ),
    )
    moves: Counter[str] = Counter()
    back: Counter[str] = Counter()
    n = 0
    for key, sign in SECTIONS[op.kind]:
        for line in _get(p, key, list, op):
            if not isinstance(line, dict):
                raise EncodingError(f"op {op.origin}:{op.seq}: a sale line is malformed")
            sku = _get(line, "sku", str, op)
            qty = _get(line, "qty", int, op)
            if qty <= 0:
                raise EncodingError(f"op {op.origin}:{op.seq}: line quantity must be positive")
            ch.add(
                "sale_lines",
                (
                    op.origin,
                    op.seq,
                    n,
                    sku,
                    _get(line, "name", str, op),
                    str(line.get("category") or ""),
                    sign * qty,
                    _get(line, "unit_price", int, op),
                    sign * _get(line, "discount", int, op),
                    _get(line, "gst_rate", int, op),
                    sign * _get(line, "tax", int, op),
                    sign * _get(line, "total", int, op),
                    *_line_tax(op, line, sign, supply),
                    op.hlc,
                ),
            )
            n += 1
            moves[sku] -= sign * qty
            if sign < 0:
                back[sku] += qty
    for sku, delta in moves.items():
        if delta:
            _moved(ch, op, sku, delta)
    if back:
        if ref is None:
            raise EncodingError(f"op {op.origin}:{op.seq}: a return must name its original sale")
        for sku, qty in back.items():
            ch.add("returned", (op.origin, op.seq, ref, sku, qty))
        ch.touched.add((OVER_RETURN, ref))
    for i, tender in enumerate(_get(p, "tenders", list, op)):
        if not isinstance(tender, dict):
            raise EncodingError(f"op {op.origin}:{op.seq}: a tender is malformed")
        points = tender.get("points") or 0
        if not _int_ok(points):
            raise EncodingError(f"op {op.origin}:{op.seq}: tender points are malformed")
        method = _get(tender, "method", str, op)
        amount = flip * _get(tender, "amount", int, op)
        ch.add("tenders", (op.origin, op.seq, i, method, amount, points))
        if method == "card" and is_sealed(tender) and op.kind != "return":
            ch.move_rights(op, CARD_FLOAT, op.origin, -max(amount, 0))
        if method == GIFTCARD_TENDER and op.kind != "return":
            _redeem(ch, op, tender, amount)
        if method == CREDIT_NOTE:
            _credit_note(ch, op, tender, -amount)
    if op.kind != "return":
        ch.touched.add((OVER_RETURN, sale_id))
    if "paper" in p:
        _paper(ch, op, sale_id)
    _points(ch, op, customer, earned - redeemed, redeemed)


def _paper(ch: Changes, op: Op, sale_id: str) -> None:
    """A sale written on a paper slip (meshpos/domain/paper.py): a register per slip number,
    which the till checks so one slip is not entered twice."""
    paper = _get(op.payload, "paper", dict, op)
    if op.kind != "sale" or _get(op.payload, "number", int, op) != 0:
        raise EncodingError(f"op {op.origin}:{op.seq}: a paper entry is a sale with no number")
    fields = {
        "sale_id": sale_id,
        "number": _get(paper, "number", int, op),
        "written_ms": _get(paper, "written_ms", int, op),
        "entered": f"{op.origin}:{op.seq}",
    }
    _register(ch, op, "paper", _get(paper, "slip", str, op), fields)


def _redeem(ch: Changes, op: Op, tender: Mapping[str, Any], amount: int) -> None:
    """A gift card or credit note spends its balance held at the selling counter (escrow)."""
    code = _get(tender, "code", str, op)
    if amount <= 0 or not code:
        raise EncodingError(f"op {op.origin}:{op.seq}: a gift card tender is malformed")
    ch.move_rights(op, escrow_key(code), op.origin, -amount)


def _credit_note(ch: Changes, op: Op, tender: Mapping[str, Any], refunded: int) -> None:
    """A refund (a return, or an exchange's difference) paid as a new credit note: its balance
    is minted at the refunding counter, which alone may spend it until it hands rights on."""
    code = _get(tender, "code", str, op)
    if refunded <= 0 or not code:
        raise EncodingError(f"op {op.origin}:{op.seq}: a credit note tender is malformed")
    fields = {
        "kind": CREDIT_NOTE,
        "amount": refunded,
        "expires_ms": _opt(tender, "expires_ms", int, op),
        "issued_ms": _get(op.payload, "ts_ms", int, op),
        "sale_id": _get(op.payload, "sale_id", str, op),
        "customer": op.payload.get("customer"),
    }
    _register(ch, op, "giftcard", code, fields)
    ch.move_rights(op, escrow_key(code), op.origin, refunded)


def _giftcard_issue(ch: Changes, op: Op) -> None:
    """A gift card sold at a counter: its register (amount, expiry, how it was paid) and its
    whole balance as that counter's escrow rights."""
    p = op.payload
    code = _get(p, "code", str, op)
    amount = _get(p, "amount", int, op)
    if _get(p, "kind", str, op) != GIFT_CARD or amount <= 0 or not code:
        raise EncodingError(f"op {op.origin}:{op.seq}: gift card issue is malformed")
    tenders = _get(p, "tenders", list, op)
    for t in tenders:
        if not isinstance(t, dict):
            raise EncodingError(f"op {op.origin}:{op.seq}: a gift card tender is malformed")
        _get(t, "method", str, op)
        _get(t, "amount", int, op)
    fields = {
        "kind": GIFT_CARD,
        "amount": amount,
        "expires_ms": _opt(p, "expires_ms", int, op),
        "issued_ms": _get(p, "ts_ms", int, op),
        "sale_id": None,
        "customer": _customer_id(p, "customer", op, optional=True),
        "tenders": tenders,
        "terminal": _get(p, "terminal", str, op),
        "op": f"{op.origin}:{op.seq}",
    }
    _register(ch, op, "giftcard", code, fields)
    ch.move_rights(op, escrow_key(code), op.origin, amount)


def _giftcard_known(ch: Changes, op: Op) -> None:
    """HQ telling this store of a card another store issued: its register only (kind, value,
    expiry, issuing store), so the tills here refuse it once expired; its value moves as rights
    (`loyalty.adjust` and `escrow.transfer` by HQ), never by this op."""
    p = op.payload
    code = _get(p, "code", str, op)
    amount = _get(p, "amount", int, op)
    store = _get(p, "store", str, op)
    kind = _get(p, "kind", str, op)
    if kind not in KINDS or amount <= 0 or not code or not store:
        raise EncodingError(f"op {op.origin}:{op.seq}: a gift card record from HQ is malformed")
    fields = {
        "kind": kind,
        "amount": amount,
        "expires_ms": _opt(p, "expires_ms", int, op),
        "issued_ms": _opt(p, "issued_ms", int, op),
        "store": store,
    }
    _register(ch, op, "giftcard", code, fields)


def _line_tax(op: Op, line: Mapping[str, Any], sign: int, supply: Supply) -> tuple[Any, ...]:
    """A line's GST as its tax invoice states it: HSN, taxable value and the CGST, SGST and
    IGST it carries (a sale recorded before meshpos split GST: its tax halved, the odd paisa to
    CGST), with the place of supply and the buyer's GSTIN (the last columns of its `sale_lines`
    row)."""
    for key in ("cgst", "sgst", "igst"):
        if key in line and not _int_ok(line[key]):
            raise EncodingError(f"op {op.origin}:{op.seq}: a sale line's {key} is malformed")
    hsn = line.get("hsn") or ""
    if not isinstance(hsn, str):
        raise EncodingError(f"op {op.origin}:{op.seq}: a sale line's hsn is malformed")
    t = recorded_split(line, supply.inter_state)
    return (
        hsn,
        sign * t.taxable,
        sign * t.cgst,
        sign * t.sgst,
        sign * t.igst,
        supply.place,
        supply.buyer_gstin,
    )


def _loyalty(ch: Changes, op: Op) -> None:
    _get(op.payload, "reason", str, op)
    key = _get(op.payload, "customer_id", str, op)
    if is_key(key):
        # HQ moving a gift card's balance between stores (hq/storage/loyalty.py): rights only;
        # the rulebook lets only HQ sign it.
        ch.move_rights(op, key, op.origin, _get(op.payload, "delta", int, op))
        return
    customer = _customer_id(op.payload, "customer_id", op)
    _points(ch, op, customer, _get(op.payload, "delta", int, op))


def _transfer(ch: Changes, op: Op) -> None:
    """Escrow: the holder of redemption rights hands some to another node. Only the holder can
    sign such an op, and it checks its own rights before it does, so rights never go below zero
    and no point can be redeemed twice, even by counters that cannot see each other."""
    customer = _get(op.payload, "customer_id", str, op)
    to = _get(op.payload, "to", str, op)
    points = _get(op.payload, "points", int, op)
    if points <= 0 or to == op.origin:
        raise EncodingError(f"op {op.origin}:{op.seq}: escrow transfer is malformed")
    ch.move_rights(op, customer, op.origin, -points)
    ch.move_rights(op, customer, to, points)


def _resolve(ch: Changes, op: Op) -> None:
    cid = _get(op.payload, "conflict_id", str, op)
    kind, _, subject = cid.partition(":")
    if kind not in CONFLICT_KINDS or not subject:
        raise EncodingError(f"op {op.origin}:{op.seq}: conflict id {cid!r} is malformed")
    ack = _opt(op.payload, "ack_level", int, op)
    note = _get(op.payload, "note", str, op)
    ch.add("resolutions", (op.origin, op.seq, cid, op.hlc, op.user, ack, note))
    ch.touched.add((kind, subject))


def _tender_result(
    ch: Changes,
    op: Op,
    entity: str,
    statuses: tuple[str, ...],
    conflict: str,
    texts: tuple[str, ...],
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """HQ's verdict on one tender of a sale: a register `<entity>` per `<sale_id>#<tender>`
    (its status, amount, the text fields `texts` and `extra`), re-checking the sale's
    `conflict`. The fields, as registered."""
    p = op.payload
    sale_id = _get(p, "sale_id", str, op)
    tender = _get(p, "tender", int, op)
    status = _get(p, "status", str, op)
    amount = _get(p, "amount", int, op)
    if status not in statuses or tender < 0 or amount < 0:
        raise EncodingError(f"op {op.origin}:{op.seq}: {entity} result is malformed")
    fields = {"status": status, "amount": amount, **(extra or {})}
    fields.update({name: _get(p, name, str, op) for name in texts})
    _register(ch, op, entity, f"{sale_id}#{tender}", fields)
    ch.touched.add((conflict, sale_id))
    return fields


def _payment_result(ch: Changes, op: Op) -> None:
    """HQ's answer for an offline card tender (see meshpos/domain/cards.py): a register per
    `<sale_id>#<tender>`, and a decline opens a `payment_declined:<sale_id>` conflict."""
    texts = ("sale_op", "code", "message", "auth_code", "card_last4", "card_brand")
    fields = _tender_result(ch, op, "payment", PAYMENT_STATUSES, PAYMENT_DECLINED, texts)
    # HQ's answer ends the money's unauthorised state, approved or declined (a decline is then
    # the manager's conflict): the float the sale took goes back to the counter that took it.
    sale_origin = fields["sale_op"].rpartition(":")[0]
    if sale_origin:
        ch.move_rights(op, CARD_FLOAT, sale_origin, fields["amount"])


def _upi_result(ch: Changes, op: Op) -> None:
    """HQ's reconciliation of one UPI tender against the bank's settlement file: a register per
    `<sale_id>#<tender>`; a payment missing from the file or settled for another amount opens a
    `upi_unsettled:<sale_id>` conflict (meshpos/domain/upi.py)."""
    settled = {"settled": _opt(op.payload, "settled", int, op)}
    texts = ("utr", "sale_op", "message")
    _tender_result(ch, op, "upi", UPI_STATUSES, UPI_UNSETTLED, texts, settled)


def _card_float(ch: Changes, op: Op) -> None:
    """HQ mints (or, negative, takes back) part of a store's offline card float at node `to`:
    escrow rights of the `card-float` pseudo-customer, moved between counters by
    `escrow.transfer` like loyalty rights. Only HQ's has authority (meshpos/domain/authority.py)."""
    to = _get(op.payload, "to", str, op)
    amount = _get(op.payload, "amount", int, op)
    if not to or amount == 0:
        raise EncodingError(f"op {op.origin}:{op.seq}: card float is malformed")
    ch.move_rights(op, CARD_FLOAT, to, amount)
    _register(ch, op, "card_float", f"{op.origin}:{op.seq}", {"to": to, "amount": amount})


def _user(ch: Changes, op: Op) -> None:
    """Staff (meshpos/domain/staff.py): LWW registers per field for the users view, and every write kept
    in `staff_log`, the history a peer checks approvals against."""
    uid = _get(op.payload, "user_id", str, op)
    fields = _get(op.payload, "fields", dict, op)
    for name, value in fields.items():
        if name == "role":
            ok = value in ROLES
        elif name == "active":
            ok = value in (0, 1) and not isinstance(value, bool)
        elif name in ("pin_salt", "pin_key"):
            ok = isinstance(value, str) and len(value) == (32 if name == "pin_salt" else 64)
            ok = ok and all(c in "0123456789abcdef" for c in value)
        else:
            ok = name in USER_FIELDS and isinstance(value, str)
        if not ok or not uid:
            raise EncodingError(f"op {op.origin}:{op.seq}: user field {name!r} is malformed")
    _register(ch, op, "user", uid, fields)
    for name, value in fields.items():
        ch.add("staff_log", (op.origin, op.seq, op.hlc, "user", uid, name, json.dumps(value)))
    if op.payload.get("bootstrap") is True:
        ch.add("staff_log", (op.origin, op.seq, op.hlc, "user", uid, "#bootstrap", "true"))


def _transfer_lines(op: Op) -> list[dict[str, Any]]:
    lines = _get(op.payload, "lines", list, op)
    out: dict[str, int] = {}
    for line in lines:
        if not isinstance(line, dict):
            raise EncodingError(f"op {op.origin}:{op.seq}: a transfer line is malformed")
        sku, qty = _get(line, "sku", str, op), _get(line, "qty", int, op)
        if qty < 0 or not sku or sku in out:
            raise EncodingError(f"op {op.origin}:{op.seq}: transfer line {sku!r} is malformed")
        out[sku] = qty
    if not lines:
        raise EncodingError(f"op {op.origin}:{op.seq}: a transfer needs at least one line")
    return [{"sku": sku, "qty": qty} for sku, qty in out.items()]


def _stock_transfer(ch: Changes, op: Op) -> None:
    """Stock transfers between stores (meshpos/service/transfers.py). `transfer.out` takes the
    stock out at the sending store; HQ answers with `transfer.expect` in the receiving store;
    `transfer.in` there adds what was counted on arrival. Each is a register keyed by the transfer
    id (receipts also by op, so two counters receiving the same parcel while split both count and
    show up), which is all HQ needs for its in-transit view; a receipt that differs from what was
    sent opens a `transfer_short` conflict."""
    tid = _get(op.payload, "transfer_id", str, op)
    lines = _transfer_lines(op)
    ref = f"{op.origin}:{op.seq}"
    fields: dict[str, Any] = {
        "lines": lines,
        "ts_ms": _get(op.payload, "ts_ms", int, op),
        "op": ref,
    }
    if op.kind == "transfer.out":
        fields["to_store"] = _get(op.payload, "to_store", str, op)
        fields["terminal"] = _get(op.payload, "terminal", str, op)
        for line in lines:
            if line["qty"] <= 0:
                raise EncodingError(f"op {ref}: a transfer sends a positive quantity")
            _move(ch, op, line["sku"], -line["qty"], op.kind)
        _register(ch, op, "transfer_out", tid, fields)
        return
    fields["from_store"] = _get(op.payload, "from_store", str, op)
    if op.kind == "transfer.expect":
        fields["sent_by"] = _get(op.payload, "sent_by", str, op)
        _register(ch, op, "transfer_expect", tid, fields)
    else:
        fields["terminal"] = _get(op.payload, "terminal", str, op)
        for line in lines:
            if line["qty"]:
                _move(ch, op, line["sku"], line["qty"], op.kind)
        _register(ch, op, "transfer_in", f"{tid}#{ref}", fields)
    ch.touched.add((TRANSFER_SHORT, tid))


def _clock_ahead(ch: Changes, op: Op) -> None:
    """A counter saw ops of `node` stamped further ahead of its own clock than `[mesh]
    max_skew_ms` (meshpos/service/clocks.py): a `clock_ahead:<node>` conflict, open until a
    manager records that the clock was set right (a later flag opens it again)."""
    node = _get(op.payload, "node", str, op)
    lead = _get(op.payload, "lead_ms", int, op)
    seen = _get(op.payload, "op", str, op)
    if not node or lead <= 0:
        raise EncodingError(f"op {op.origin}:{op.seq}: clock flag is malformed")
    _register(ch, op, CLOCK_AHEAD, node, {"lead_ms": lead, "op": seen, "by": op.origin})
    ch.touched.add((CLOCK_AHEAD, node))


def _revoke(ch: Changes, op: Op) -> None:
    """A node's revocation changes no view itself: the rulebook reads every revocation held
    before it judges an op (meshpos/domain/revocation.py)."""
    read_revocation(op)


def _inert(ch: Changes, op: Op) -> None:
    """Ops that live in the log (audit trail, node records) but change no view."""


RULES: dict[str, Callable[[Changes, Op], None]] = {
    "product.upsert": _product,
    "customer.upsert": _customer,
    "setting.set": _setting,
    "stock.receive": _stock,
    "stock.adjust": _stock,
    "sale": _record,
    "return": _record,
    "exchange": _record,
    "loyalty.adjust": _loyalty,
    "escrow.transfer": _transfer,
    "conflict.resolve": _resolve,
    "payment.result": _payment_result,
    "card.float": _card_float,
    "user.upsert": _user,
    "transfer.out": _stock_transfer,
    "transfer.expect": _stock_transfer,
    "transfer.in": _stock_transfer,
    "giftcard.issue": _giftcard_issue,
    KNOWN: _giftcard_known,
    UPI_RESULT: _upi_result,
    "note": _inert,
    REVOKE_KIND: _revoke,
    "clock.ahead": _clock_ahead,
    "report.z": _inert,
}


def register_rule(kind: str, rule: Callable[[Changes, Op], None]) -> None:
    """Let a subsystem (escrow, payments, staff) add its op kinds without editing this module."""
    RULES[kind] = rule


def fold(ops: Iterable[Op], into: Changes | None = None) -> Changes:
    ch = into if into is not None else Changes()
    for op in ops:
        rule = RULES.get(op.kind)
        if rule is None:
            raise EncodingError(f"op {op.origin}:{op.seq} has unknown kind {op.kind!r}")
        rule(ch, op)
    return ch
