"""A till session: the sale being rung at a counter, scan by scan, until it is paid.

No terminal I/O here: `meshpos till` (meshpos/cli/till.py) and the touch web till drive the same
`TillSession` and show what it returns. A scan looks the code up in the catalogue first, by barcode
or SKU (an internal 8-digit SKU must not be mistaken for a misread EAN-8); only when nothing
matches is the code checked as a receipt's sale id (which starts a return) and then against
barcode check digits, to tell "misread, scan again" (InvalidCode) from "not in the catalogue"
(UnknownCode). Each carries a message for the cashier and the name of its beep pattern
(devices.layout.BeepPattern). Nothing is written until `complete()`, which records the sale,
return or exchange through the Terminal in one transaction.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from meshpos.core.errors import InputError, NotFound
from meshpos.devices.barcodes import (
    BarcodeKind,
    InvalidBarcode,
    classify,
    is_valid_upca,
    normalise,
    validate,
)
from meshpos.domain.money import parse_rupees, rupees
from meshpos.domain.pricing import CartLine, PricedSale, Product, Tender, price_lines
from meshpos.service import cards
from meshpos.service.cards import CardInput
from meshpos.service.terminal import SaleResult, Terminal

Mode = Literal["sale", "return"]
BEEP_UNKNOWN = "unknown"
BEEP_INVALID = "invalid"
# A receipt's scan code is its sale id, STORE-TERMINAL-NNNNNN, or the receipt number TERMINAL-NNNNNN.
SALE_ID = re.compile(r"^\S+-\d{6,}$")
MAX_QTY = 10_000


@dataclass(frozen=True)
class LineAdded:
    """A scan added a line, or one more of a line already in the sale."""

    code: str
    line: int
    sku: str
    qty: int
    message: str
    beep: str | None = None


@dataclass(frozen=True)
class UnknownCode:
    """A well-formed code that matches no product (or, in a return, nothing on the receipt)."""

    code: str
    message: str
    beep: str = BEEP_UNKNOWN


@dataclass(frozen=True)
class InvalidCode:
    """A code that cannot be right: bad check digit, control characters, empty."""

    code: str
    message: str
    beep: str = BEEP_INVALID


@dataclass(frozen=True)
class ReturnStarted:
    """A receipt's barcode was scanned: items scanned next are coming back."""

    code: str
    sale_id: str
    message: str
    beep: str | None = None


ScanEvent = LineAdded | UnknownCode | InvalidCode | ReturnStarted


@dataclass
class TillLine:
    product: Product
    qty: int
    discount: str | None = None
    # In a return: what the original sale may still give back of this SKU, and its refund.
    limit: int | None = None
    refund_total: int = 0
    sold_qty: int = 0
    done_qty: int = 0

    def describe(self) -> str:
        detail = "/".join(part for part in (self.product.size, self.product.colour) if part)
        return f"{self.product.name} {detail}".strip()


@dataclass(frozen=True)
class TillTotals:
    """The running sale as the cashier sees it; all amounts in paise."""

    mode: Mode
    items: int
    subtotal: int
    discount: int
    tax: int
    total: int
    paid: int
    due: int
    change: int


@dataclass
class _State:
    mode: Mode = "sale"
    lines: list[TillLine] = field(default_factory=list)
    customer: dict[str, Any] | None = None
    tenders: list[Tender] = field(default_factory=list)
    discount: str | None = None
    ref_sale: str | None = None
    refund: str = "cash"
    last: int | None = None


class TillSession:
    """One counter's current sale. Methods raise InputError/NotFound (with a message for the
    cashier) and change nothing when they refuse."""

    def __init__(self, terminal: Terminal, user: str | None = None) -> None:
        self.terminal = terminal
        self.user = user
        self._s = _State()

    # -- state ----------------------------------------------------------------------------------

    @property
    def mode(self) -> Mode:
        return self._s.mode

    @property
    def lines(self) -> tuple[TillLine, ...]:
        return tuple(self._s.lines)

    @property
    def customer(self) -> dict[str, Any] | None:
        return self._s.customer

    @property
    def tenders(self) -> tuple[Tender, ...]:
        return tuple(self._s.tenders)

    @property
    def ref_sale(self) -> str | None:
        return self._s.ref_sale

    @property
    def refund_method(self) -> str:
        return self._s.refund

    @property
    def sale_discount(self) -> str | None:
        return self._s.discount

    @property
    def empty(self) -> bool:
        return not self._s.lines and self._s.ref_sale is None

    def void(self) -> None:
        """Drop the sale being rung; nothing was recorded, so nothing needs undoing."""
        self._s = _State()

    # -- scanning -------------------------------------------------------------------------------

    def _lookup(self, code: str) -> Product | None:
        candidates = [code]
        if is_valid_upca(code):
            candidates.append("0" + code)
        elif len(code) == 13 and code.startswith("0") and code.isdigit():
            candidates.append(code[1:])
        for candidate in candidates:
            try:
                return self.terminal.product(candidate)
            except NotFound:
                continue
        return None

    def add_code(self, raw: str) -> ScanEvent:
        """One scan (or a typed SKU). Never raises for a bad code: the event says what is wrong."""
        code = normalise(raw)
        if not code:
            return InvalidCode("", "empty scan; scan the code again")
        product = self._lookup(code)
        if product is not None:
            return self._add_product(code, product)
        if SALE_ID.match(code):
            started = self._start_return_from_scan(code)
            if started is not None:
                return started
        if classify(code) is BarcodeKind.INVALID:
            try:
                validate(code)
            except InvalidBarcode as exc:
                return InvalidCode(code, str(exc))
            return InvalidCode(code, f"code {code!r} cannot be read; scan it again")
        kind = classify(code)
        if kind in (BarcodeKind.EAN13, BarcodeKind.UPCA, BarcodeKind.EAN8):
            label = {"ean13": "EAN-13", "upca": "UPC-A", "ean8": "EAN-8"}[kind.value]
            return UnknownCode(
                code,
                f"{label} {code} is not in the catalogue; put the item aside or type its SKU",
            )
        return UnknownCode(code, f"unknown code {code!r}: no product SKU or barcode matches")

    def _add_product(self, code: str, product: Product) -> ScanEvent:
        s = self._s
        for i, line in enumerate(s.lines):
            if line.product.sku == product.sku:
                if s.mode == "return" and line.limit is not None and line.qty >= line.limit:
                    return UnknownCode(
                        code,
                        f"only {line.limit} of {product.sku} can come back on sale {s.ref_sale}",
                    )
                if line.qty >= MAX_QTY:
                    return UnknownCode(code, f"{product.sku}: quantity is at the {MAX_QTY} limit")
                line.qty += 1
                s.last = i
                return LineAdded(
                    code, i + 1, product.sku, line.qty, f"{line.describe()} now x{line.qty}"
                )
        if s.mode == "return":
            return UnknownCode(
                code,
                f"{product.sku} is not on sale {s.ref_sale} or has all come back already",
            )
        s.lines.append(TillLine(product, 1))
        s.last = len(s.lines) - 1
        return LineAdded(
            code,
            len(s.lines),
            product.sku,
            1,
            f"{product.name} {product.sku} at {rupees(product.price)}",
        )

    def _start_return_from_scan(self, code: str) -> ScanEvent | None:
        try:
            sale = self.terminal.sale(code)
        except (NotFound, InputError):
            return None
        if not self.empty:
            return UnknownCode(
                code,
                f"that is the receipt of sale {sale['sale_id']}: finish or void this sale "
                "before starting a return",
            )
        self.start_return(sale["sale_id"])
        return ReturnStarted(
            code,
            sale["sale_id"],
            f"return against sale {sale['sale_id']}: scan the items coming back",
        )

    # -- returns --------------------------------------------------------------------------------

    def start_return(self, sale_id: str) -> None:
        """Start a return against a sale; its returnable lines become the lines to fill in."""
        if not self.empty:
            raise InputError("finish or void the current sale before starting a return")
        avail = self.terminal.returnable(sale_id)
        sale = self.terminal.sale(sale_id)
        lines = []
        for sku, entry in avail.items():
            left = entry["qty"] - entry["returned"]
            if left <= 0:
                continue
            src = entry["line"]
            product = Product(
                sku=sku,
                name=str(src.get("name", sku)),
                price=int(src["unit_price"]),
                gst_rate=int(src.get("gst_rate", 0)),
                size=str(src.get("size", "")),
                colour=str(src.get("colour", "")),
            )
            lines.append(
                TillLine(
                    product,
                    0,
                    limit=left,
                    refund_total=int(entry["total"]),
                    sold_qty=int(entry["qty"]),
                    done_qty=int(entry["returned"]),
                )
            )
        if not lines:
            raise InputError(f"everything on sale {sale['sale_id']} has already come back")
        customer = None
        if sale.get("customer_id"):
            customer = self.terminal.customer(sale["customer_id"])
        self._s = _State(mode="return", lines=lines, ref_sale=sale["sale_id"], customer=customer)

    def set_refund(self, method: str) -> None:
        if self._s.mode != "return":
            raise InputError("`refund` is for returns; take payment with `pay`")
        if method not in ("cash", "card", "points"):
            raise InputError(f"refund method {method!r} must be cash, card or points")
        if method == "points" and not self._s.customer:
            raise InputError("a refund to points needs a sale with a customer")
        self._s.refund = method

    # -- editing --------------------------------------------------------------------------------

    def _index(self, line: int | None) -> int:
        s = self._s
        if not s.lines:
            raise InputError("the sale has no lines yet; scan an item first")
        if line is None:
            if s.last is None:
                raise InputError("no line to change: scan an item or give a line number")
            return s.last
        if not 1 <= line <= len(s.lines):
            raise InputError(f"line {line} does not exist; lines are 1 to {len(s.lines)}")
        return line - 1

    def set_qty(self, qty: int, line: int | None = None) -> TillLine:
        """Set the quantity of `line` (1-based), or of the last line scanned or changed."""
        i = self._index(line)
        target = self._s.lines[i]
        if qty < 0 or (qty == 0 and self._s.mode == "sale"):
            raise InputError("quantity must be a positive whole number (remove a line with rm)")
        if qty > MAX_QTY:
            raise InputError(f"quantity {qty} is implausible (limit {MAX_QTY})")
        if target.limit is not None and qty > target.limit:
            raise InputError(
                f"only {target.limit} of {target.product.sku} can come back on sale "
                f"{self._s.ref_sale}"
            )
        target.qty = qty
        self._s.last = i
        return target

    def remove_line(self, line: int | None = None) -> TillLine:
        i = self._index(line)
        s = self._s
        if s.mode == "return":
            s.lines[i].qty = 0
            return s.lines[i]
        removed = s.lines.pop(i)
        s.last = len(s.lines) - 1 if s.lines else None
        return removed

    def set_customer(self, code: str | None) -> dict[str, Any] | None:
        """Attach a customer by id or phone (None detaches); loyalty points follow the sale."""
        if self._s.mode == "return":
            raise InputError("a return keeps the customer of the original sale")
        if code is None:
            self._s.customer = None
            self._s.tenders = [t for t in self._s.tenders if t.method != "points"]
            return None
        self._s.customer = self.terminal.customer(code)
        return self._s.customer

    def discount(self, spec: str | None, line: int | None = None) -> None:
        """`10%` or `50` (rupees) off the whole sale, or off one line when `line` is given;
        None removes it. Refused if it is more than what it applies to."""
        s = self._s
        if s.mode == "return":
            raise InputError("a return refunds what the items were sold for; no discounts")
        if line is not None:
            target = s.lines[self._index(line)]
            before = target.discount
            target.discount = spec
            try:
                self.priced()
            except InputError:
                target.discount = before
                raise
            return
        before_sale = s.discount
        s.discount = spec
        try:
            self.priced()
        except InputError:
            s.discount = before_sale
            raise

    # -- money ----------------------------------------------------------------------------------

    def priced(self) -> PricedSale | None:
        """The sale priced as it stands (None while it has no lines)."""
        lines = [ln for ln in self._s.lines if ln.qty > 0]
        if not lines or self._s.mode == "return":
            return None
        return price_lines(
            [CartLine(ln.product, ln.qty, ln.discount) for ln in lines], self._s.discount
        )

    def _refund_total(self) -> int:
        total = 0
        for ln in self._s.lines:
            if ln.qty and ln.sold_qty:
                amount, sold, done = ln.refund_total, ln.sold_qty, ln.done_qty
                total += amount * (done + ln.qty) // sold - amount * done // sold
        return total

    def totals(self) -> TillTotals:
        s = self._s
        items = sum(ln.qty for ln in s.lines)
        if s.mode == "return":
            refund = self._refund_total()
            return TillTotals("return", items, refund, 0, 0, refund, 0, refund, 0)
        priced = self.priced()
        if priced is None:
            return TillTotals("sale", 0, 0, 0, 0, 0, 0, 0, 0)
        due, paid, change = priced.total, 0, 0
        point_value = self.terminal.loyalty_rule().point_value
        for t in s.tenders:
            value = self._tender_value(t, point_value, due)
            paid += value
            taken = min(value, due)
            if t.method == "cash":
                change += value - taken
            due -= taken
        return TillTotals(
            "sale",
            items,
            priced.subtotal,
            priced.discount,
            priced.tax,
            priced.total,
            paid,
            due,
            change,
        )

    @staticmethod
    def _tender_value(t: Tender, point_value: int, due: int) -> int:
        if t.method == "points":
            return min((t.amount or 0) * point_value, due)
        return t.amount if t.amount is not None else due

    def pay(
        self,
        method: str,
        amount: str | None = None,
        card_last4: str | None = None,
        card: CardInput | None = None,
    ) -> Tender:
        """Take a tender: `cash [RUPEES]` (more than due gives change), `card [RUPEES]`,
        `points [N]`. Without an amount it pays what is still due. A `card` read at the till is
        checked offline and sealed to HQ's key at once (meshpos/service/cards.py): the tender keeps only
        the sealed blob, last four and brand, and the sale is recorded as pending."""
        s = self._s
        if s.mode == "return":
            raise InputError("a return pays out: choose how with `refund cash|card|points`")
        if not s.lines:
            raise InputError("nothing to pay for yet; scan an item first")
        method = method.lower()
        if method not in ("cash", "card", "points"):
            raise InputError(f"payment method {method!r} must be cash, card or points")
        due = self.totals().due
        if due <= 0:
            raise InputError("the sale is already paid in full; type done to finish")
        if card_last4 is not None and not (len(card_last4) == 4 and card_last4.isdigit()):
            raise InputError("card's last four digits must be four digits")
        if method == "points":
            return self._pay_points(amount, due)
        value = due if amount is None else parse_rupees(amount, f"{method} amount")
        if value <= 0:
            raise InputError(f"{method} amount must be more than zero")
        if method == "card" and value > due:
            raise InputError(f"card payment {rupees(value)} is more than the {rupees(due)} due")
        if card is not None:
            if method != "card":
                raise InputError("card details go with a card payment: pay card")
            pending = value + sum(t.amount or 0 for t in s.tenders if t.card_sealed)
            cards.check_floor(self.terminal, pending)
            fields = cards.capture(self.terminal, card, value)
            tender = Tender(
                "card",
                value,
                card_last4=fields["card_last4"],
                card_brand=fields["card_brand"],
                card_sealed=fields["card_sealed"],
            )
        else:
            tender = Tender(method, value, card_last4=card_last4 if method == "card" else None)
        s.tenders.append(tender)
        return tender

    def _pay_points(self, amount: str | None, due: int) -> Tender:
        s = self._s
        if s.customer is None:
            raise InputError("paying with points needs a customer: `c PHONE` first")
        rule = self.terminal.loyalty_rule()
        held = int(self.terminal.points(s.customer["customer_id"]))
        used = sum(t.amount or 0 for t in s.tenders if t.method == "points")
        if amount is None:
            points = min(held - used, -(-due // rule.point_value))
        elif amount.isdigit() and int(amount) > 0:
            points = int(amount)
        else:
            raise InputError(f"points {amount!r} must be a positive whole number")
        points = min(points, due // rule.point_value) if points * rule.point_value > due else points
        if points <= 0:
            raise InputError("the customer has no points to spend, or less than one point is due")
        if points + used > held:
            raise InputError(f"customer has {held - used} points; {points} cannot be redeemed")
        tender = Tender("points", points)
        s.tenders.append(tender)
        return tender

    def clear_payments(self) -> None:
        self._s.tenders = []

    # -- finishing ------------------------------------------------------------------------------

    def complete(self) -> SaleResult:
        """Record the sale (or return) in one transaction; the session starts afresh after."""
        s = self._s
        if s.mode == "return":
            items = [(ln.product.sku, ln.qty) for ln in s.lines if ln.qty > 0]
            if not items or s.ref_sale is None:
                raise InputError("scan the items coming back before finishing the return")
            result = self.terminal.return_items(s.ref_sale, items, refund=s.refund, user=self.user)
        else:
            if not s.lines:
                raise InputError("nothing to sell yet; scan an item first")
            totals = self.totals()
            if s.tenders and totals.due > 0:
                raise InputError(f"{rupees(totals.due)} is still due; take another payment")
            result = self.terminal.sell(
                [(ln.product.sku, ln.qty) for ln in s.lines],
                tenders=list(s.tenders),
                customer=s.customer["customer_id"] if s.customer else None,
                discount=s.discount,
                line_discounts={ln.product.sku: ln.discount for ln in s.lines if ln.discount},
                user=self.user,
            )
        self._s = _State()
        return result


def change_given(payload: Mapping[str, Any]) -> int:
    """The change handed back on a recorded sale."""
    return sum(int(t.get("change", 0)) for t in payload.get("tenders", []))
