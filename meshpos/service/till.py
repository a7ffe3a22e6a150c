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
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
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
from meshpos.domain import giftcards
from meshpos.domain.escrow import EscrowShortfall
from meshpos.domain.gst import Supply, state_label
from meshpos.domain.money import parse_rupees, rupees
from meshpos.domain.pricing import CartLine, PricedSale, Product, Tender, price_lines
from meshpos.domain.staff import Credential, Need, source_required
from meshpos.domain.upi import check_ref
from meshpos.ledger.parked import ParkedCart
from meshpos.service import cards, rights, upi
from meshpos.service.cards import MACHINE, TWO_KINDS, CardInput
from meshpos.service.staff import approved_by, approver_for, store_policy
from meshpos.service.terminal import (
    REFUND_METHODS,
    OversellNotConfirmed,
    SaleResult,
    Terminal,
    units_beyond,
)

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


@dataclass(frozen=True)
class CardScanned:
    """A gift card or credit note was scanned: it pays what is due (as much as it covers), or,
    with nothing to pay for yet, the till says its balance."""

    code: str
    tender: Tender | None
    message: str
    beep: str | None = None


ScanEvent = LineAdded | UnknownCode | InvalidCode | ReturnStarted | CardScanned


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


@dataclass(frozen=True)
class Granted:
    """A supervisor's approval given at a step of this sale, up to `level` (a discount's basis
    points, or units sold beyond stock)."""

    level: int
    cred: Credential


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
    confirmed: dict[str, int] = field(default_factory=dict)  # SKU -> units beyond stock, confirmed
    granted: dict[str, Granted] = field(default_factory=dict)  # "discount", "oversell"
    buyer: tuple[str, str | None] | None = None  # a B2B buyer: GSTIN, state the goods go to


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
        if giftcards.looks_like(code):
            return self._scan_card(code)
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

    def _scan_card(self, code: str) -> ScanEvent:
        """A scanned gift card or credit note starts its redemption."""
        try:
            state = self.terminal.giftcard(code)
            if self._s.mode != "sale" or not self._s.lines or self.totals().due <= 0:
                left = f"{state.label} {state.code}: {rupees(state.balance)} left"
                if state.expires_ms:
                    left += f", valid until {self.terminal.store_time().day(state.expires_ms)}"
                return CardScanned(state.code, None, left)
            tender = self.pay(giftcards.TENDER, code=state.code)
        except (InputError, NotFound) as exc:
            return UnknownCode(code, str(exc))
        return CardScanned(
            state.code,
            tender,
            f"{state.label} {state.code} pays {rupees(tender.amount or 0)}",
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
        method = method.lower().replace("-", "_").replace(" ", "_")
        if method not in REFUND_METHODS:
            raise InputError(f"refund method {method!r} must be cash, card, points or credit note")
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

    def select(self, line: int) -> TillLine:
        """Make `line` (1-based) the one quantity and discount changes go to by default."""
        i = self._index(line)
        self._s.last = i
        return self._s.lines[i]

    @property
    def confirmed(self) -> bool:
        """Whether the cashier confirmed selling beyond stock on this sale."""
        return bool(self._s.confirmed)

    @property
    def selected(self) -> int | None:
        """The line (1-based) changes go to by default: the last scanned, changed or selected."""
        last = self._s.last
        return None if last is None or last >= len(self._s.lines) else last + 1

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
        None removes it. Refused if it is more than what it applies to; beyond the store's
        discount limit it needs a supervisor's approval now (PermissionDenied says who can)."""
        s = self._s
        if s.mode == "return":
            raise InputError("a return refunds what the items were sold for; no discounts")
        target = s.lines[self._index(line)] if line is not None else None
        before = target.discount if target is not None else s.discount
        if target is not None:
            target.discount = spec
        else:
            s.discount = spec
        try:
            self.priced()
            self._check_discount()
        except Exception:
            if target is not None:
                target.discount = before
            else:
                s.discount = before
            raise

    # -- approvals and stock --------------------------------------------------------------------

    @property
    def acting(self) -> str:
        return self.user or self.terminal.cfg.user

    def _authorise(self, key: str, level: int, need: Need | None) -> None:
        """Keep a supervisor's approval for `need` with the sale, from the credentials offered
        now (the cashier's sign-in, a supervisor's PIN typed for it); PermissionDenied if none
        may give it. An approval already given for at least `level` still counts."""
        if need is None or not self.terminal.ledger.staff.has_users():
            return
        given = self._s.granted.get(key)
        if given is not None and given.level >= level and given.cred.exp_ms > self._wall():
            return
        self._s.granted[key] = Granted(level, approver_for(self.terminal, need, self.acting))

    def _wall(self) -> int:
        return self.terminal.now_ms()

    def _check_discount(self) -> None:
        priced = self.priced()
        if priced is None:
            return
        policy = store_policy(self.terminal.ledger)
        need = source_required("sale", {"lines": priced.lines}, policy)
        levels = [
            -(-int(ln["discount"]) * 10_000 // max(1, int(ln["unit_price"]) * int(ln["qty"])))
            for ln in priced.lines
        ]
        self._authorise("discount", max(levels, default=0), need)

    def in_stock(self, sku: str) -> int:
        """Stock of `sku` as this counter sees it (every counter's sales that reached it)."""
        return self.terminal.ledger.views.stock_qty(sku)

    def beyond_stock(self) -> dict[str, tuple[int, int]]:
        """SKUs of this sale asked beyond the stock this counter sees: sku -> (asked, in stock)."""
        if self._s.mode != "sale":
            return {}
        lines = [{"sku": ln.product.sku, "qty": ln.qty} for ln in self._s.lines if ln.qty > 0]
        return self.terminal.beyond_stock(lines)

    def unconfirmed(self) -> dict[str, tuple[int, int]]:
        """What `beyond_stock` has that the cashier has not confirmed yet."""
        done = self._s.confirmed
        return {
            sku: (want, have)
            for sku, (want, have) in self.beyond_stock().items()
            if want - max(have, 0) > done.get(sku, 0)
        }

    def oversell_question(self) -> str | None:
        """What to ask the cashier when the sale takes more than is in stock here (or None)."""
        over = self.unconfirmed()
        if not over:
            return None
        parts = ", ".join(
            f"{sku}: {want} in the sale, {max(have, 0)} in stock"
            for sku, (want, have) in over.items()
        )
        units = sum(units_beyond(self.beyond_stock()).values())
        who = (
            " (a supervisor approves above "
            f"{store_policy(self.terminal.ledger).oversell_limit} units)"
            if self.terminal.ledger.staff.has_users()
            else ""
        )
        return (
            f"more than this counter has in stock ({parts}): sell {units} beyond stock anyway?{who}"
        )

    def confirm_oversell(self) -> None:
        """The cashier has the goods in hand: sell beyond stock. Above the store's oversell limit
        it takes a supervisor (PermissionDenied until one is offered)."""
        over = self.beyond_stock()
        if not over:
            return
        units = units_beyond(over)
        need = source_required("sale", {"oversold": units}, store_policy(self.terminal.ledger))
        self._authorise("oversell", sum(units.values()), need)
        self._s.confirmed = units

    def decline_oversell(self) -> str:
        """Take back what was not confirmed: each such line down to what is in stock (and
        confirmed); a line left with none goes."""
        gone = []
        for sku, (_, have) in self.unconfirmed().items():
            keep = max(have, 0) + self._s.confirmed.get(sku, 0)
            for ln in list(self._s.lines):
                if ln.product.sku == sku:
                    if keep <= 0:
                        self._s.lines.remove(ln)
                    else:
                        ln.qty = keep
                    gone.append(f"{sku} back to {keep}" if keep > 0 else f"{sku} removed")
                    break
        self._s.last = len(self._s.lines) - 1 if self._s.lines else None
        return "; ".join(gone) or "nothing to take back"

    @contextmanager
    def _approvals(self) -> Iterator[None]:
        """Offer the approvals given at this sale's steps to the op `complete` makes."""
        with ExitStack() as stack:
            for given in self._s.granted.values():
                stack.enter_context(approved_by(self.terminal, given.cred))
            yield

    # -- money ----------------------------------------------------------------------------------

    @property
    def buyer(self) -> Supply | None:
        """The sale's supply when a registered buyer is on it (a B2B tax invoice), else None."""
        b = self._s.buyer
        return self.terminal.supply(*b) if b else None

    def set_buyer(self, gstin: str | None, state: str | None = None) -> Supply | None:
        """Put a registered buyer on the sale: their GSTIN, and the state the goods go to when it
        is not the GSTIN's own; another state than the store's means IGST on the invoice. None
        takes the buyer off. Checked here (the GSTIN's check digit, the state), so the cashier
        hears of a typo before the payment, not at Complete."""
        if self._s.mode != "sale":
            raise InputError("a buyer's GSTIN goes on a sale; a return follows its sale's invoice")
        if not gstin:
            self._s.buyer = None
            return None
        found = self.terminal.supply(gstin, state)
        self._s.buyer = (found.buyer_gstin, state or None)
        return found

    def priced(self) -> PricedSale | None:
        """The sale priced as it stands (None while it has no lines)."""
        lines = [ln for ln in self._s.lines if ln.qty > 0]
        if not lines or self._s.mode == "return":
            return None
        return price_lines(
            [CartLine(ln.product, ln.qty, ln.discount) for ln in lines],
            self._s.discount,
            self.buyer or self.terminal.supply(),
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
        """What a tender pays (a gift card's amount is fixed when it is taken)."""
        if t.method == "points":
            return min((t.amount or 0) * point_value, due)
        return t.amount if t.amount is not None else due

    def pay(
        self,
        method: str,
        amount: str | None = None,
        card_last4: str | None = None,
        card: CardInput | None = None,
        approval: str | None = None,
        *,
        code: str | None = None,
        upi_ref: str | None = None,
    ) -> Tender:
        """Take a tender: `cash [RUPEES]` (more than due gives change), `points [N]`, or a card
        of one of the two kinds: `card_machine` (paid on the store's card machine: its
        `approval` code and the card's last four digits, no card data) or `card` with the
        `card` read here (checked offline and sealed to HQ's key at once, pending until HQ
        answers: meshpos/service/cards.py). Without an amount it pays what is still due."""
        s = self._s
        if s.mode == "return":
            raise InputError("a return pays out: choose how with `refund cash|card|points`")
        if not s.lines:
            raise InputError("nothing to pay for yet; scan an item first")
        method = method.lower().replace("-", "_")
        method = MACHINE if method == "machine" else method
        if method not in ("cash", "card", MACHINE, "points", giftcards.TENDER, "upi"):
            raise InputError(
                f"payment method {method!r} must be cash, card, card machine, UPI, gift card "
                "or points"
            )
        due = self.totals().due
        if due <= 0:
            raise InputError("the sale is already paid in full; type done to finish")
        if method == "points":
            return self._pay_points(amount, due)
        if method == giftcards.TENDER:
            return self._pay_giftcard(code or "", amount, due)
        value = due if amount is None else parse_rupees(amount, f"{method} amount")
        if value <= 0:
            raise InputError(f"{method} amount must be more than zero")
        if method != "cash" and value > due:
            raise InputError(f"card payment {rupees(value)} is more than the {rupees(due)} due")
        if card is not None and method != "card":
            raise InputError("card details go with a card payment captured here: pay card")
        if method == MACHINE:
            tender = cards.machine_tender(value, approval or "", card_last4 or "")
        elif method == "upi":
            tender = Tender("upi", value, upi_ref=check_ref(upi_ref or ""))
        elif method == "card":
            if card is None:
                raise InputError(f"a card payment needs the card: {TWO_KINDS}")
            taken = sum(t.amount or 0 for t in s.tenders if t.card_sealed)
            fields = cards.capture(self.terminal, card, value, pending=taken)
            tender = Tender(
                "card",
                value,
                card_last4=fields["card_last4"],
                card_brand=fields["card_brand"],
                card_sealed=fields["card_sealed"],
            )
        else:
            tender = Tender("cash", value)
        s.tenders.append(tender)
        return tender

    def upi_request(self, amount: str | None = None) -> upi.UpiRequest:
        """The UPI request for `amount` (default: what is still due), to show as a QR code or
        print; the payment is taken with `pay("upi", ..., upi_ref=UTR)` once the customer's
        phone shows it went through."""
        due = self.totals().due
        if self._s.mode != "sale" or not self._s.lines or due <= 0:
            raise InputError("nothing is due: scan an item first")
        value = due if amount is None else parse_rupees(amount, "UPI amount")
        if not 0 < value <= due:
            raise InputError(
                f"UPI amount {rupees(value)} must be above zero and at most the {rupees(due)} due"
            )
        return upi.request(self.terminal, value)

    def card_allowed(self, amount: str | None = None) -> int:
        """Whether a card can be taken here offline for `amount` (default: what is due), asked
        before the card is swiped: the limits, and HQ's key to seal it to. The amount."""
        due = self.totals().due
        value = due if amount is None else parse_rupees(amount, "card amount")
        if not self._s.lines or due <= 0:
            raise InputError("nothing is due: scan an item first")
        if value > due:
            raise InputError(f"card payment {rupees(value)} is more than the {rupees(due)} due")
        cards.payment_key(self.terminal)
        pending = value + sum(t.amount or 0 for t in self._s.tenders if t.card_sealed)
        cards.check_floor(self.terminal, pending)
        return value

    def _pay_points(self, amount: str | None, due: int) -> Tender:
        """Points are refused here, before any other tender is taken, when this counter does
        not hold the rights to redeem them (the explanation names who does)."""
        s = self._s
        if s.customer is None:
            raise InputError("paying with points needs a customer: `c PHONE` first")
        cid = s.customer["customer_id"]
        rule = self.terminal.loyalty_rule()
        held = int(self.terminal.points(cid))
        used = sum(t.amount or 0 for t in s.tenders if t.method == "points")
        if amount is None:
            may = min(held, max(self.terminal.rights(cid), 0))
            points = min(may - used, -(-due // rule.point_value))
            if points <= 0 and held > used:
                points = min(held - used, -(-due // rule.point_value))  # refused below, explained
        elif amount.isdigit() and int(amount) > 0:
            points = int(amount)
        else:
            raise InputError(f"points {amount!r} must be a positive whole number")
        points = min(points, due // rule.point_value) if points * rule.point_value > due else points
        if points <= 0:
            raise InputError("the customer has no points to spend, or less than one point is due")
        if points + used > held:
            raise InputError(f"customer has {held - used} points; {points} cannot be redeemed")
        try:
            self.terminal.check_redeem(cid, points + used)
        except EscrowShortfall as short:
            raise rights.explain(self.terminal, short) from None
        tender = Tender("points", points)
        s.tenders.append(tender)
        return tender

    def _pay_giftcard(self, code: str, amount: str | None, due: int) -> Tender:
        """A gift card or credit note pays as much of what is due as it covers (or `amount`);
        refused here, before it is taken, when it is expired, short, or its balance is held by
        another counter (the explanation names who holds it)."""
        try:
            state = self.terminal.giftcard(code)
        except NotFound:
            if amount is None:
                raise
            state = giftcards.CardState(giftcards.parse_code(code), "", 0, 0, None, None)
        used = sum(t.amount or 0 for t in self._s.tenders if t.code == state.code)
        left = state.balance - used
        value = min(left, due) if amount is None else parse_rupees(amount, "gift card amount")
        if value <= 0:
            raise InputError(f"{state.label} {state.code} has nothing left to spend")
        if value > due:
            raise InputError(
                f"gift card payment {rupees(value)} is more than the {rupees(due)} due"
            )
        tender = Tender(giftcards.TENDER, value, code=state.code)
        try:
            self.terminal.check_giftcards(
                [{"method": giftcards.TENDER, "amount": value + used, "code": state.code}]
            )
        except EscrowShortfall as short:
            raise rights.explain(self.terminal, short) from None
        self._s.tenders.append(tender)
        return tender

    def clear_payments(self) -> None:
        self._s.tenders = []

    # -- finishing ------------------------------------------------------------------------------

    def complete(self) -> SaleResult:
        """Record the sale (or return) in one transaction; the session starts afresh after.
        The approvals given at earlier steps go with it; a discount or oversell they no longer
        cover (the sale changed since) asks again."""
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
            over = self.unconfirmed()
            if over:
                raise OversellNotConfirmed(over)
            self._check_discount()
            if self.beyond_stock():
                self.confirm_oversell()
            with self._approvals():
                try:
                    result = self.terminal.sell(
                        [(ln.product.sku, ln.qty) for ln in s.lines],
                        tenders=list(s.tenders),
                        customer=s.customer["customer_id"] if s.customer else None,
                        discount=s.discount,
                        line_discounts={
                            ln.product.sku: ln.discount for ln in s.lines if ln.discount
                        },
                        user=self.user,
                        allow_oversell=bool(s.confirmed),
                        buyer_gstin=s.buyer[0] if s.buyer else None,
                        buyer_state=s.buyer[1] if s.buyer else None,
                    )
                except EscrowShortfall as short:
                    raise rights.explain(self.terminal, short) from None
        self._s = _State()
        return result

    # -- parked carts ---------------------------------------------------------------------------

    def hold(self, label: str = "") -> ParkedCart:
        """Park this sale in the node database (it survives sign-out and restart) and start a
        new one. Payments already taken must be cleared first: money is never parked."""
        s = self._s
        if s.mode != "sale":
            raise InputError("only a sale can be held; finish or void this return first")
        if not s.lines:
            raise InputError("nothing to hold: the sale has no items")
        if s.tenders:
            raise InputError(
                "payments were taken: clear them (or finish the sale) before holding it"
            )
        totals = self.totals()
        who = s.customer["name"] if s.customer else ""
        name = label.strip() or who or f"{totals.items} item(s)"
        doc = {
            "lines": [
                {"sku": ln.product.sku, "qty": ln.qty, "discount": ln.discount} for ln in s.lines
            ],
            "discount": s.discount,
            "customer": s.customer["customer_id"] if s.customer else None,
            "confirmed": dict(s.confirmed),
        }
        cart_id = self.terminal.ledger.parked.add(
            name[:60], self.acting, self.terminal.now_ms(), totals.items, totals.total, doc
        )
        self._s = _State()
        found = self.terminal.ledger.parked.get(cart_id)
        assert found is not None
        return found

    def parked(self) -> list[ParkedCart]:
        return self.terminal.ledger.parked.all()

    def recall(self, cart_id: int) -> list[str]:
        """Bring a held sale back (at today's prices) into this empty session; what changed
        since it was held, in words (a price, an item no longer sold, a customer gone)."""
        if not self.empty:
            raise InputError("finish, hold or void the current sale before recalling another")
        cart = self.terminal.ledger.parked.get(cart_id)
        if cart is None:
            raise NotFound(f"no held sale {cart_id}: see the list of held sales")
        notes: list[str] = []
        state = _State()
        for entry in cart.doc.get("lines", []):
            try:
                product = self.terminal.product(str(entry["sku"]))
            except NotFound:
                notes.append(f"{entry['sku']} is no longer in the catalogue: left out")
                continue
            state.lines.append(TillLine(product, int(entry["qty"]), entry.get("discount")))
        if not state.lines:
            raise InputError(f"held sale {cart_id} has nothing left that can be sold")
        state.discount = cart.doc.get("discount")
        state.confirmed = {str(k): int(v) for k, v in (cart.doc.get("confirmed") or {}).items()}
        state.last = len(state.lines) - 1
        if cart.doc.get("customer"):
            try:
                state.customer = self.terminal.customer(str(cart.doc["customer"]))
            except NotFound:
                notes.append("its customer is no longer known: attach them again")
        if self.terminal.ledger.parked.take(cart_id) is None:
            raise NotFound(f"held sale {cart_id} was just recalled at another till")
        self._s = state
        now = self.totals().total
        if now != cart.total:
            notes.append(
                f"prices changed since it was held: {rupees(cart.total)} then, {rupees(now)} now"
            )
        return notes


def exchange_net(returning: TillSession, going_out: TillSession) -> int:
    """What the customer pays on an exchange (negative: what they get back): the items going
    out at today's prices less what the items coming back were sold for."""
    return going_out.totals().total - returning.totals().total


def exchange_upi_request(returning: TillSession, going_out: TillSession) -> upi.UpiRequest:
    """The UPI request for an exchange's difference, to show as a QR code or print."""
    net = exchange_net(returning, going_out)
    if net <= 0:
        raise InputError(
            "nothing is due on this exchange: the difference goes back to the customer"
        )
    return upi.request(returning.terminal, net)


def exchange_payment(
    method: str, *, approval: str = "", last4: str = "", upi_ref: str = "", code: str = ""
) -> list[Tender]:
    """How the difference of an exchange is paid, as either till gives it: cash, the card
    machine's slip, a UPI payment's UTR, or a gift card or credit note by its code."""
    if method.strip().lower().replace("-", "_") in (giftcards.TENDER, "gift_card", "gc"):
        if not code.strip():
            raise InputError("a gift card payment needs the card's code (or scan the card)")
        return [Tender(giftcards.TENDER, None, code=giftcards.parse_code(code))]
    return cards.final_tenders(method, approval=approval, last4=last4, upi_ref=upi_ref)


def record_exchange(
    returning: TillSession,
    going_out: TillSession,
    payment: list[Tender] | None = None,
    refund: str | None = None,
) -> SaleResult:
    """Record an exchange rung at a till: `returning` is a return started from a receipt (the
    items coming back), `going_out` the items the customer takes instead. The difference is paid
    by `payment` (cash when none) or refunded by `refund` (the return's refund method when
    none). Both tills record exchanges here, so the web and the text till refuse the same
    things; the Terminal checks the rest in one transaction. Both sessions start afresh."""
    ref = returning.ref_sale
    back = [(ln.product.sku, ln.qty) for ln in returning.lines if ln.qty > 0]
    take = [(ln.product.sku, ln.qty) for ln in going_out.lines if ln.qty > 0]
    if returning.mode != "return" or ref is None:
        raise InputError("an exchange starts from a receipt: scan the receipt's code first")
    if not back:
        raise InputError("scan (or add) the items coming back first")
    if not take:
        raise InputError("scan the items going out, or cancel the exchange")
    net = exchange_net(returning, going_out)
    try:
        result = returning.terminal.exchange(
            ref,
            back,
            take,
            tenders=payment or [],
            user=returning.user,
            allow_oversell=bool(going_out.confirmed),
            refund=(refund or returning.refund_method) if net < 0 else "cash",
        )
    except EscrowShortfall as short:
        raise rights.explain(returning.terminal, short) from None
    returning.void()
    going_out.void()
    return result


def change_given(payload: Mapping[str, Any]) -> int:
    """The change handed back on a recorded sale."""
    return sum(int(t.get("change", 0)) for t in payload.get("tenders", []))


def buyer_words(supply: Supply) -> str:
    """'GSTIN 27AAB..., IGST (to 27-Maharashtra)': a sale's registered buyer, as the tills say it."""
    heads = f"IGST (to {state_label(supply.place)})" if supply.inter_state else "CGST + SGST"
    return f"GSTIN {supply.buyer_gstin}, {heads}"
