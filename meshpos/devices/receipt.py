"""What a printed receipt says, built from a sale/return/exchange op payload.

Pure data: no printer, no clock. Money is integer paise, GST rates are basis points and prices
are tax-inclusive, exactly as the domain records them, so a reprint says what the sale said. A
sale is a tax invoice: seller GSTIN, invoice number and date, HSN, taxable value and CGST + SGST
or IGST per line, the place of supply and, for a B2B sale, the buyer's GSTIN (docs/gst.md). A sale
recorded before meshpos split GST prints its tax halved into CGST and SGST.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from meshpos.core.errors import InputError
from meshpos.domain.gst import STATES, Supply, recorded_split, state_code
from meshpos.domain.storetime import DEFAULT_ZONE, StoreTime

ReceiptKind = Literal["sale", "return", "exchange"]
KINDS: tuple[ReceiptKind, ...] = ("sale", "return", "exchange")


@dataclass(frozen=True)
class StoreHeader:
    """The store's name and legal lines printed at the top of every slip."""

    name: str
    address: tuple[str, ...] = ()
    gstin: str = ""
    phone: str = ""
    footer: tuple[str, ...] = ("Thank you for shopping with us",)
    time: StoreTime = field(default_factory=StoreTime)
    state: str = ""  # GST state code; from `state`, else the GSTIN's first two digits

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> StoreHeader:
        """Build from a config table such as meshpos.toml's [store]; unknown keys are ignored."""
        name = data.get("name")
        if not isinstance(name, str) or not name.strip():
            raise InputError("store.name must be a non-empty string")
        address = data.get("address", ())
        if isinstance(address, str):
            address = tuple(part.strip() for part in address.split("\n") if part.strip())
        footer = data.get("footer", cls.footer)
        if isinstance(footer, str):
            footer = (footer,)
        gstin = str(data.get("gstin") or "")
        state = str(data.get("state") or "")
        return cls(
            name=name.strip(),
            address=tuple(str(a) for a in address),
            gstin=gstin,
            phone=str(data.get("phone", "")),
            footer=tuple(str(f) for f in footer),
            time=StoreTime.named(str(data.get("timezone") or DEFAULT_ZONE), "store.timezone"),
            state=state_code(state, "store.state") if state else gstin[:2],
        )

    @property
    def state_name(self) -> str:
        return f"{STATES[self.state]} ({self.state})" if self.state in STATES else ""


@dataclass(frozen=True)
class ReceiptLine:
    """One line of goods; `returned` marks goods coming back (a return, or the old half of an
    exchange), whose amounts are refunds."""

    sku: str
    name: str
    qty: int
    unit_price: int
    discount: int
    gst_rate: int
    tax: int
    total: int
    size: str = ""
    colour: str = ""
    returned: bool = False
    hsn: str = ""
    cgst: int = 0
    sgst: int = 0
    igst: int = 0

    @property
    def taxable(self) -> int:
        """Value before GST: prices are tax-inclusive, so taxable value is total minus tax."""
        return self.total - self.tax


@dataclass(frozen=True)
class ReceiptTender:
    """One payment (or, on a return slip, one refund)."""

    method: str
    amount: int
    tendered: int | None = None
    change: int = 0
    points: int = 0
    card_last4: str = ""
    card_brand: str = ""
    pending: bool = False
    code: str = ""  # a gift card spent, or the credit note a refund was paid as
    upi_ref: str = ""  # a UPI payment's reference (UTR)
    expires_ms: int | None = None  # a credit note's expiry


@dataclass(frozen=True)
class GstRow:
    """Taxable value and tax heads for one HSN code at one rate; negative where goods came
    back."""

    hsn: str
    rate: int
    taxable: int
    cgst: int
    sgst: int
    igst: int

    @property
    def tax(self) -> int:
        return self.cgst + self.sgst + self.igst


@dataclass(frozen=True)
class Receipt:
    """Everything a slip prints; built by `receipt_from_sale`."""

    header: StoreHeader
    kind: ReceiptKind
    sale_id: str
    receipt_no: str
    number: int
    terminal: str
    ts_ms: int
    lines: tuple[ReceiptLine, ...]
    subtotal: int
    discount: int
    tax: int
    total: int
    tenders: tuple[ReceiptTender, ...] = ()
    customer: str | None = None
    points_earned: int = 0
    points_redeemed: int = 0
    loyalty_balance: int | None = None
    ref_sale: str | None = None
    cashier: str = ""
    customer_name: str = ""
    supply: Supply = field(default_factory=Supply)

    @property
    def sold(self) -> tuple[ReceiptLine, ...]:
        return tuple(line for line in self.lines if not line.returned)

    @property
    def returned(self) -> tuple[ReceiptLine, ...]:
        return tuple(line for line in self.lines if line.returned)

    @property
    def has_cash(self) -> bool:
        return any(t.method == "cash" for t in self.tenders)

    @property
    def has_pending_card(self) -> bool:
        return any(t.pending for t in self.tenders)

    @property
    def heads(self) -> tuple[int, int, int]:
        """The invoice's CGST, SGST and IGST: the sums of its lines (returned goods negative)."""
        rows = self.gst_summary()
        return (
            sum(r.cgst for r in rows),
            sum(r.sgst for r in rows),
            sum(r.igst for r in rows),
        )

    def gst_summary(self) -> tuple[GstRow, ...]:
        """GST grouped by rate and HSN, ascending; returned goods count negative so an exchange
        nets out."""
        sums: dict[tuple[int, str], list[int]] = {}
        for line in self.lines:
            sign = -1 if line.returned else 1
            row = sums.setdefault((line.gst_rate, line.hsn), [0, 0, 0, 0])
            for i, v in enumerate((line.taxable, line.cgst, line.sgst, line.igst)):
                row[i] += sign * v
        return tuple(GstRow(hsn, rate, *sums[rate, hsn]) for rate, hsn in sorted(sums))


def _need(data: Mapping[str, Any], key: str, kind: type, where: str) -> Any:
    value = data.get(key)
    if kind is int and isinstance(value, bool):
        value = None
    if not isinstance(value, kind):
        raise InputError(f"{where} lacks a valid {key!r} ({kind.__name__})")
    return value


def _opt_str(data: Mapping[str, Any], key: str) -> str:
    value = data.get(key)
    return "" if value is None else str(value)


def _opt_int(data: Mapping[str, Any], key: str, default: int, where: str) -> int:
    value = data.get(key, default)
    if value is None:
        return default
    if not isinstance(value, int) or isinstance(value, bool):
        raise InputError(f"{where}: {key!r} must be a whole number")
    return value


def _line(data: Any, returned: bool, where: str, inter_state: bool) -> ReceiptLine:
    if not isinstance(data, Mapping):
        raise InputError(f"{where} is not a table")
    for key in ("cgst", "sgst", "igst"):
        _opt_int(data, key, 0, where)
    split = recorded_split(
        {**data, "total": _need(data, "total", int, where), "tax": _opt_int(data, "tax", 0, where)},
        inter_state,
    )
    return ReceiptLine(
        sku=_need(data, "sku", str, where),
        name=_need(data, "name", str, where),
        qty=abs(_need(data, "qty", int, where)),
        unit_price=_need(data, "unit_price", int, where),
        discount=_opt_int(data, "discount", 0, where),
        gst_rate=_opt_int(data, "gst_rate", 0, where),
        tax=_opt_int(data, "tax", 0, where),
        total=_need(data, "total", int, where),
        size=_opt_str(data, "size"),
        colour=_opt_str(data, "colour") or _opt_str(data, "color"),
        returned=returned,
        hsn=_opt_str(data, "hsn"),
        cgst=split.cgst,
        sgst=split.sgst,
        igst=split.igst,
    )


def _tender(data: Any, where: str) -> ReceiptTender:
    if not isinstance(data, Mapping):
        raise InputError(f"{where} is not a table")
    tendered = data.get("tendered")
    if tendered is not None and (not isinstance(tendered, int) or isinstance(tendered, bool)):
        raise InputError(f"{where}: 'tendered' must be a whole number")
    return ReceiptTender(
        method=_need(data, "method", str, where),
        amount=_need(data, "amount", int, where),
        tendered=tendered,
        change=_opt_int(data, "change", 0, where),
        points=_opt_int(data, "points", 0, where),
        card_last4=_opt_str(data, "card_last4"),
        card_brand=_opt_str(data, "card_brand"),
        pending=bool(data.get("pending", False)),
        code=_opt_str(data, "code"),
        upi_ref=_opt_str(data, "upi_ref"),
        expires_ms=data.get("expires_ms") if type(data.get("expires_ms")) is int else None,
    )


def _rows(payload: Mapping[str, Any], key: str) -> Sequence[Any]:
    rows = payload.get(key) or []
    if not isinstance(rows, list | tuple):
        raise InputError(f"sale payload's {key!r} must be a list")
    return rows


def receipt_from_sale(
    payload: Mapping[str, Any],
    header: StoreHeader,
    loyalty_balance: int | None = None,
    *,
    kind: str | None = None,
    cashier: str = "",
    customer_name: str = "",
) -> Receipt:
    """Turn a sale/return/exchange op payload into a Receipt.

    `kind` is the op's kind (the payload may not repeat it); without either, "sale". A return's
    `lines` are all refunds; an exchange carries new goods in `lines` and the goods coming back
    in `returned`. On a return, negative points_earned/points_redeemed are points taken back and
    points refunded. Optional keys may be absent; a missing required one raises InputError naming
    it, so a reprint of a damaged record fails loudly instead of printing zeros.
    """
    kind = kind or payload.get("kind", "sale")
    if kind not in KINDS:
        raise InputError(
            f"sale payload has unknown kind {kind!r}; expected sale, return or exchange"
        )
    supply = Supply.of(payload)
    lines: list[ReceiptLine] = []
    for i, row in enumerate(_rows(payload, "lines")):
        lines.append(_line(row, kind == "return", f"sale line {i + 1}", supply.inter_state))
    for i, row in enumerate(_rows(payload, "returned")):
        lines.append(_line(row, True, f"returned line {i + 1}", supply.inter_state))
    tenders = tuple(_tender(t, f"tender {i + 1}") for i, t in enumerate(_rows(payload, "tenders")))
    sale_id = _need(payload, "sale_id", str, "sale payload")
    customer = payload.get("customer")
    ref = payload.get("ref_sale")
    return Receipt(
        header=header,
        kind=kind,
        sale_id=sale_id,
        receipt_no=_opt_str(payload, "receipt") or sale_id,
        number=_opt_int(payload, "number", 0, "sale payload"),
        terminal=_opt_str(payload, "terminal"),
        ts_ms=_need(payload, "ts_ms", int, "sale payload"),
        lines=tuple(lines),
        subtotal=_need(payload, "subtotal", int, "sale payload"),
        discount=_opt_int(payload, "discount", 0, "sale payload"),
        tax=_opt_int(payload, "tax", 0, "sale payload"),
        total=_need(payload, "total", int, "sale payload"),
        tenders=tenders,
        customer=str(customer) if customer else None,
        points_earned=_opt_int(payload, "points_earned", 0, "sale payload"),
        points_redeemed=_opt_int(payload, "points_redeemed", 0, "sale payload"),
        loyalty_balance=loyalty_balance,
        ref_sale=str(ref) if ref else None,
        cashier=cashier,
        customer_name=customer_name,
        supply=supply,
    )
