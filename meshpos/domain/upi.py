"""UPI payments at the counter (pure): the `upi://pay` request the till shows as a QR code, and the
reference (UTR) the cashier confirms the payment with.

The customer's phone pays over its own data, so UPI keeps working while the store is offline: the
till shows the request for the amount, the customer pays, and the cashier types the 12-digit UTR
the phone (or the store's sound box) shows. The tender is then "UPI, pending reconciliation" until
HQ matches it against the bank's settlement file (meshpos/hq/upi.py).
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from meshpos.core.errors import InputError
from meshpos.domain.money import parse_rupees, rupees

_UTR = re.compile(r"^\d{12}$")
_VPA = re.compile(r"^[A-Za-z0-9.\-_]{2,256}@[A-Za-z][A-Za-z0-9.\-]{1,64}$")
VPA_SETTING = "upi_vpa"  # `[store] upi_vpa` in meshpos.toml


def check_ref(text: str) -> str:
    """A UTR as typed: 12 digits (spaces ignored)."""
    ref = re.sub(r"\s", "", text)
    if not _UTR.match(ref):
        raise InputError(
            f"UPI reference {text!r}: type the 12-digit UTR (UPI transaction reference) the "
            "customer's phone or the sound box shows"
        )
    return ref


def check_vpa(vpa: str) -> str:
    """The store's UPI id (VPA), like `shop@okaxis`."""
    vpa = vpa.strip()
    if not _VPA.match(vpa):
        raise InputError(
            f"[store] upi_vpa {vpa!r} is not a UPI id: it looks like name@bank (shop@okaxis)"
        )
    return vpa


def pay_uri(vpa: str, payee: str, amount: int, reference: str, note: str = "") -> str:
    """The `upi://pay` request for `amount` paise to `vpa`, carrying the sale's `reference`
    (`tr`), which the bank's settlement file echoes back for reconciliation."""
    if amount <= 0:
        raise InputError("a UPI request needs an amount above zero")
    params = {
        "pa": check_vpa(vpa),
        "pn": payee or vpa,
        "am": f"{amount // 100}.{amount % 100:02d}",
        "cu": "INR",
        "tr": reference,
        "tn": note or f"Bill {reference}",
    }
    return "upi://pay?" + "&".join(f"{k}={quote(v, safe='@.-_')}" for k, v in params.items())


# -- reconciliation at HQ --------------------------------------------------------------------------

MATCHED = "matched"
MISSING = "missing"
WRONG_AMOUNT = "wrong_amount"
RESULT_STATUSES = (MATCHED, MISSING, WRONG_AMOUNT)
RESULT_KIND = "upi.result"  # HQ's verdict on one UPI tender, folded by the store

_COLUMNS = {
    "utr": ("utr", "rrn", "bank_rrn", "upi_ref", "upi_txn_id", "customer_ref_no"),
    "reference": ("reference", "tr", "merchant_tran_id", "order_id", "sale_id", "bill_no"),
    "amount": ("amount", "txn_amount", "transaction_amount", "amt"),
    "date": ("date", "txn_date", "transaction_date", "settled_at"),
    "status": ("status", "txn_status"),
}
_OK_STATUSES = ("", "success", "successful", "settled", "credited", "ok")


@dataclass(frozen=True)
class SettlementRow:
    """One payment the bank says reached the store's account."""

    line: int
    utr: str
    reference: str
    amount: int  # paise
    date: str = ""


@dataclass(frozen=True)
class RecordedUpi:
    """A UPI tender a store recorded, pending reconciliation."""

    store: str
    sale_id: str
    tender: int
    sale_op: str
    utr: str
    amount: int
    ts_ms: int

    @property
    def key(self) -> str:
        """The register key of HQ's verdict on this tender."""
        return f"{self.sale_id}#{self.tender}"


@dataclass(frozen=True)
class Verdict:
    payment: RecordedUpi
    status: str
    settled: int | None  # what the bank paid, None when no row matched
    message: str


def parse_settlement(text: str, source: str = "settlement file") -> list[SettlementRow]:
    """A bank's UPI settlement report as CSV: a header naming the UTR (or RRN), the merchant
    reference and the amount in rupees (column names as banks spell them); failed payments left
    out. InputError names the line that cannot be read; nothing is half-read."""
    reader = csv.reader(io.StringIO(text.lstrip("\ufeff")))
    try:
        header = [h.strip().lower().replace(" ", "_").replace(".", "") for h in next(reader)]
    except StopIteration:
        raise InputError(f"{source} is empty: it needs a header and one row per payment") from None
    cols: dict[str, int] = {}
    for name, aliases in _COLUMNS.items():
        for i, h in enumerate(header):
            if h in aliases:
                cols[name] = i
                break
    if "amount" not in cols or not ({"utr", "reference"} & cols.keys()):
        raise InputError(
            f"{source}: the header needs an amount column and a UTR (or RRN) or reference "
            f"column; found {', '.join(header) or 'nothing'}"
        )
    rows: list[SettlementRow] = []
    for n, cells in enumerate(reader, start=2):
        if not any(c.strip() for c in cells):
            continue

        def cell(name: str, cells: list[str] = cells) -> str:
            i = cols.get(name)
            return cells[i].strip() if i is not None and i < len(cells) else ""

        if cell("status").lower() not in _OK_STATUSES:
            continue
        utr, ref = cell("utr"), cell("reference")
        if not utr and not ref:
            raise InputError(f"{source} line {n}: no UTR and no reference")
        if utr:
            try:
                utr = check_ref(utr)
            except InputError:
                raise InputError(f"{source} line {n}: UTR {utr!r} is not 12 digits") from None
        amount = parse_rupees(cell("amount"), f"{source} line {n}: amount")
        rows.append(SettlementRow(n, utr, ref, amount, cell("date")))
    return rows


def reconcile(payments: Sequence[RecordedUpi], rows: Sequence[SettlementRow]) -> list[Verdict]:
    """Each recorded payment against the bank's rows, matched by its UTR or by the sale's
    reference (the `tr` its QR carried): matched, paid a different amount, or missing."""
    by_utr = {r.utr: r for r in rows if r.utr}
    by_ref = {r.reference: r for r in rows if r.reference}
    out: list[Verdict] = []
    for p in payments:
        row = by_utr.get(p.utr) or by_ref.get(p.sale_id)
        if row is None:
            out.append(
                Verdict(
                    p, MISSING, None,
                    f"no UPI payment with UTR {p.utr} (or reference {p.sale_id}) reached the "
                    "store's account",
                )
            )  # fmt: skip
        elif row.amount != p.amount:
            out.append(
                Verdict(
                    p, WRONG_AMOUNT, row.amount,
                    f"UTR {p.utr}: the bank settled {rupees(row.amount)}, the till recorded "
                    f"{rupees(p.amount)}",
                )
            )  # fmt: skip
        else:
            out.append(Verdict(p, MATCHED, row.amount, f"settled, UTR {row.utr or p.utr}"))
    return out


def upi_tenders(payload: Mapping[str, Any]) -> list[tuple[int, str, int]]:
    """(index, UTR, amount) of a sale's UPI tenders."""
    out = []
    for i, t in enumerate(payload.get("tenders") or []):
        if isinstance(t, Mapping) and t.get("method") == "upi":
            ref, amount = t.get("upi_ref"), t.get("amount")
            if isinstance(ref, str) and type(amount) is int and amount > 0:
                out.append((i, ref, amount))
    return out
