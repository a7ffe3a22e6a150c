"""Receipt, slip and report layout as a list of printer commands, and the driver that plays them.

Rendering is pure (`render_receipt`, `render_report`, `render_beep` return tuples of commands), so
it is testable and benchmarkable without a printer. `drive` plays commands on any python-escpos
printer object through its API. `render_bytes` plays them on python-escpos' `Dummy` printer:
the byte stream a printer driver then sends in one write (the "preprocess printing" pattern from
python-escpos' usage guide), so a print either reaches the printer whole or fails before any byte
of a half-built receipt is sent.
"""

from __future__ import annotations

import contextlib
import io
import textwrap
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from enum import Enum
from typing import Literal

from escpos.escpos import Escpos
from escpos.printer import Dummy

from meshpos.devices.receipt import Receipt, ReceiptLine, ReceiptTender, StoreHeader
from meshpos.domain.gst import STATES, state_label
from meshpos.domain.money import rate as format_rate
from meshpos.domain.money import rupees

Align = Literal["left", "center", "right"]
ScanCode = Literal["code128", "qr"]


@dataclass(frozen=True)
class Init:
    """ESC @: reset the printer's modes so a previous job's bold or size cannot leak in."""


@dataclass(frozen=True)
class Text:
    """One printed line and the style it is printed in."""

    text: str
    align: Align = "left"
    bold: bool = False
    double_width: bool = False
    double_height: bool = False


@dataclass(frozen=True)
class Barcode:
    """A hardware-rendered 1-D barcode with its human-readable text below."""

    data: str
    symbology: str = "CODE128"
    height: int = 60
    module: int = 2


@dataclass(frozen=True)
class QRCode:
    """A QR code rendered by the printer (or as an image when the profile lacks native QR)."""

    data: str
    size: int = 6


@dataclass(frozen=True)
class Feed:
    lines: int = 1


@dataclass(frozen=True)
class Cut:
    partial: bool = False


@dataclass(frozen=True)
class CashDrawer:
    """ESC p: pulse the drawer solenoid wired to the printer's drawer port (pin 2 or 5)."""

    pin: int = 2


@dataclass(frozen=True)
class Buzzer:
    """ESC B n t: sound the printer's buzzer n times for t units (about 50-100 ms each)."""

    times: int
    duration: int


PrintCommand = Init | Text | Barcode | QRCode | Feed | Cut | CashDrawer | Buzzer


@dataclass(frozen=True)
class LayoutOptions:
    """Per-printer layout choices (from meshpos.toml's [printer] table)."""

    width: int = 42
    scan_code: ScanCode = "code128"
    kick_drawer: bool = True
    drawer_pin: int = 2
    gst_split: bool = False  # no longer read: a tax invoice always splits CGST and SGST

    def __post_init__(self) -> None:
        if not 24 <= self.width <= 80:
            raise ValueError("receipt width must be between 24 and 80 columns")


@dataclass(frozen=True)
class ReportPrint:
    """An X or Z report: a title and label/value rows. A row ("", "") prints a rule."""

    title: str
    rows: tuple[tuple[str, str], ...]
    subtitle: str = ""


class BeepPattern(Enum):
    """Distinct buzzer patterns, as (times, duration) for ESC B n t.

    UNKNOWN: a well-formed code that is not in the catalogue: three short beeps.
    INVALID: a code with a bad check digit or unreadable input: one long beep.
    """

    UNKNOWN = (3, 1)
    INVALID = (1, 8)

    @property
    def times(self) -> int:
        return self.value[0]

    @property
    def duration(self) -> int:
        return self.value[1]


TITLES = {"sale": "TAX INVOICE", "return": "CREDIT NOTE", "exchange": "EXCHANGE SLIP"}
NUMBER_LABELS = {"sale": "Invoice", "return": "Credit note", "exchange": "Exchange"}


def format_money(paise: int) -> str:
    """Rupees with Indian digit grouping (12,34,567.89) and an ASCII minus: receipt code pages
    lack ₹ and U+2212."""
    return rupees(paise, symbol="", minus="-")


def _wrap(text: str, width: int) -> list[str]:
    return textwrap.wrap(text, width, break_long_words=True, break_on_hyphens=False) or [""]


def _lr(left: str, right: str, width: int, bold: bool = False) -> list[Text]:
    """Label on the left, value flush right; a label too long to share the line gets its own."""
    if not right:
        return [Text(chunk, bold=bold) for chunk in _wrap(left, width)]
    if len(left) + 1 + len(right) <= width:
        return [Text(left + " " * (width - len(left) - len(right)) + right, bold=bold)]
    out = [Text(chunk, bold=bold) for chunk in _wrap(left, width)]
    out.append(Text(right.rjust(width)[-width:], bold=bold))
    return out


def _centred(text: str, width: int, **style: bool) -> list[Text]:
    return [Text(chunk, align="center", **style) for chunk in _wrap(text, width)]


def _header(h: StoreHeader, width: int) -> list[PrintCommand]:
    out: list[PrintCommand] = []
    if len(h.name) <= width // 2:
        out.append(Text(h.name, "center", bold=True, double_width=True, double_height=True))
    else:
        out += [
            Text(chunk, "center", bold=True, double_height=True) for chunk in _wrap(h.name, width)
        ]
    for line in h.address:
        out += _centred(line, width)
    if h.gstin:
        out += _centred(f"GSTIN: {h.gstin}", width)
    if h.state_name:
        out += _centred(f"State: {h.state_name}", width)
    if h.phone:
        out += _centred(f"Ph: {h.phone}", width)
    return out


def _item(line: ReceiptLine, width: int, sign: int) -> list[Text]:
    out = [Text(chunk) for chunk in _wrap(line.name, width)]
    detail = " / ".join(part for part in (line.size, line.colour) if part)
    detail = f"{detail}  {line.sku}" if detail else line.sku
    if line.hsn:
        detail = f"{detail}  HSN {line.hsn}"
    out += [Text("  " + chunk) for chunk in _wrap(detail, width - 2)]
    gross = line.qty * line.unit_price
    out += _lr(f"  {line.qty} x {format_money(line.unit_price)}", format_money(sign * gross), width)
    if line.discount:
        out += _lr("  Discount", format_money(-sign * line.discount), width)
    if gross - line.discount != line.total:
        out += _lr("  Line total", format_money(sign * line.total), width)
    return out


def _tender(t: ReceiptTender, width: int, refund: bool) -> list[Text]:
    if t.amount < 0:
        refund, t = True, replace(t, amount=-t.amount)
    prefix = "Refund " if refund else ""
    if t.method == "cash":
        out = _lr(f"{prefix}Cash", format_money(t.tendered or t.amount), width)
        if t.change:
            out += _lr("  Change", format_money(t.change), width)
        return out
    if t.method == "card":
        label = " ".join(p for p in (f"{prefix}Card", t.card_brand) if p)
        if t.card_last4:
            label += f" ****{t.card_last4}"
        out = _lr(label, format_money(t.amount), width)
        if t.pending:
            out.append(Text("Card authorisation pending", bold=True))
        return out
    if t.method == "points":
        return _lr(f"{prefix}Points ({t.points} pts)", format_money(t.amount), width)
    if t.method == "giftcard":
        return _lr(f"{prefix}Gift card {t.code}", format_money(t.amount), width)
    if t.method == "credit_note":
        return _lr(f"Credit note {t.code}", format_money(t.amount), width)
    if t.method == "upi":
        out = _lr(f"{prefix}UPI", format_money(t.amount), width)
        out.append(Text(f"  UTR {t.upi_ref}"))
        out.append(Text("UPI pending reconciliation", bold=True))
        return out
    out = _lr(f"{prefix}{t.method.replace('_', ' ').title()}", format_money(t.amount), width)
    if t.pending:
        out.append(Text("Authorisation pending", bold=True))
    return out


def _gst(receipt: Receipt, width: int, sign: int) -> list[Text]:
    """The tax summary of a tax invoice, per HSN and rate: taxable value and CGST + SGST (or
    IGST), then each head's total. A table when every figure fits its column; otherwise (narrow
    paper, large amounts) a block per row, so a figure is never cut."""
    rows = receipt.gst_summary()
    if not rows:
        return []
    cgst, sgst, igst = receipt.heads
    inter = receipt.supply.inter_state or any(r.igst for r in rows)
    intra = not receipt.supply.inter_state or any(r.cgst or r.sgst for r in rows)
    heads = [h for h, on in (("CGST", intra), ("SGST", intra), ("IGST", inter)) if on]
    table = [["HSN", "GST", "Taxable", *heads]]
    for r in rows:
        values = {"CGST": r.cgst, "SGST": r.sgst, "IGST": r.igst}
        table.append(
            [r.hsn or "-", format_rate(r.rate), format_money(sign * r.taxable)]
            + [format_money(sign * values[h]) for h in heads]
        )
    cols = [8, 5, width - 13 - 10 * len(heads)] + [10] * len(heads)
    out: list[Text] = []
    fits = cols[2] > 0 and all(
        len(row[0]) <= cols[0] and all(len(c) < w for c, w in zip(row[1:], cols[1:], strict=True))
        for row in table
    )
    if fits:
        out.append(Text(_row(table[0], cols), bold=True))
        out += [Text(_row(row, cols)) for row in table[1:]]
    else:
        for r, row in zip(rows, table[1:], strict=True):
            out += _lr(f"HSN {row[0]}  GST {row[1]}", "", width, bold=True)
            out += _lr("  Taxable value", row[2], width)
            for head, figure in zip(heads, row[3:], strict=True):
                part = r.rate if head == "IGST" else r.rate // 2
                half = (
                    format_rate(part) if head == "IGST" or r.rate % 2 == 0 else f"{r.rate / 200:g}%"
                )
                out += _lr(f"  {head} {half}", figure, width)
    for head, total in (("CGST", cgst), ("SGST", sgst), ("IGST", igst)):
        if head in heads:
            out += _lr(f"Total {head}", format_money(sign * total), width)
    out.append(Text("Prices include GST"))
    return out


def _row(cells: Sequence[str], widths: Sequence[int]) -> str:
    """A table line: the first cell left-aligned, the rest right-aligned (they fit: checked)."""
    out = [cells[0].ljust(widths[0])]
    out += [c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True)]
    return "".join(out)


def _invoice(receipt: Receipt, width: int) -> list[Text]:
    """Who and what the document is: its number and date, the terminal and cashier, the buyer
    (name and customer id, GSTIN), the place of supply and, for a credit note, the invoice."""
    h = receipt.header
    out = _lr(
        f"{NUMBER_LABELS[receipt.kind]} {receipt.sale_id}", h.time.stamp(receipt.ts_ms), width
    )
    who = f"Cashier {receipt.cashier}" if receipt.cashier else ""
    out += _lr(f"Terminal {receipt.terminal}" if receipt.terminal else "", who, width)
    if receipt.ref_sale:
        out += _lr(f"Against invoice {receipt.ref_sale}", "", width)
    if receipt.customer:
        name = receipt.customer_name
        out += _lr(f"Customer {name} ({receipt.customer})" if name else
                   f"Customer {receipt.customer}", "", width)  # fmt: skip
    s = receipt.supply
    if s.buyer_gstin:
        out += _lr(f"Buyer GSTIN {s.buyer_gstin}", "", width)
    if s.place in STATES:
        out += _lr(f"Place of supply {state_label(s.place)}", "", width)
    return out


def _loyalty(receipt: Receipt, width: int) -> list[Text]:
    """Earned/redeemed points; on a return they run backwards (taken back, refunded)."""
    out: list[Text] = []
    earned, redeemed = receipt.points_earned, receipt.points_redeemed
    if earned > 0 or (earned == 0 and receipt.kind == "sale"):
        out += _lr("Points earned", str(earned), width)
    elif earned < 0:
        out += _lr("Points taken back", str(-earned), width)
    if redeemed > 0:
        out += _lr("Points redeemed", str(redeemed), width)
    elif redeemed < 0:
        out += _lr("Points given back", str(-redeemed), width)
    if receipt.loyalty_balance is not None:
        out += _lr("Points balance", str(receipt.loyalty_balance), width)
    return out


def _total_label(receipt: Receipt) -> tuple[str, int]:
    if receipt.kind == "return":
        return "REFUND TOTAL", abs(receipt.total)
    if receipt.kind == "exchange":
        return (
            ("REFUND DUE", -receipt.total) if receipt.total < 0 else ("AMOUNT DUE", receipt.total)
        )
    return "TOTAL", receipt.total


def _scan_code(data: str, options: LayoutOptions) -> list[PrintCommand]:
    printable = all(" " <= ch <= "~" for ch in data)
    if options.scan_code == "code128" and printable and 1 <= len(data) <= 60:
        return [Barcode(data)]
    return [QRCode(data), Text(data, "center")]


def render_receipt(
    receipt: Receipt, options: LayoutOptions | None = None
) -> tuple[PrintCommand, ...]:
    """The whole slip for a sale, return or exchange, ending in a cut."""
    opt = options or LayoutOptions()
    w = opt.width
    rule = Text("-" * w)
    refund = receipt.kind == "return"
    out: list[PrintCommand] = [Init()]
    if opt.kick_drawer and receipt.has_cash:
        out.append(CashDrawer(opt.drawer_pin))
    out += _header(receipt.header, w)
    out.append(Text("", "center"))
    out.append(Text(TITLES[receipt.kind], "center", bold=True))
    out += _invoice(receipt, w)
    out.append(rule)
    if receipt.kind == "exchange":
        if receipt.returned:
            out.append(Text("Returned", bold=True))
            for line in receipt.returned:
                out += _item(line, w, -1)
        if receipt.sold:
            out.append(Text("New items", bold=True))
            for line in receipt.sold:
                out += _item(line, w, 1)
    else:
        if refund:
            out.append(Text("Items returned", bold=True))
        for line in receipt.lines:
            out += _item(line, w, 1)
    out.append(rule)
    items = sum(line.qty for line in receipt.lines)
    out += _lr(f"Items {items}", "", w)
    out += _lr("Subtotal", format_money(receipt.subtotal), w)
    if receipt.discount:
        out += _lr("Discount", format_money(-receipt.discount), w)
    label, amount = _total_label(receipt)
    out += _lr(label, format_money(amount), w, bold=True)
    out.append(rule)
    out += _gst(receipt, w, -1 if refund else 1)
    if receipt.tenders:
        out.append(rule)
        for tender in receipt.tenders:
            out += _tender(tender, w, refund)
    if receipt.customer or receipt.points_earned or receipt.points_redeemed:
        out.append(rule)
        out += _loyalty(receipt, w)
    for t in receipt.tenders:
        if t.method == "credit_note" and t.code:
            expires = receipt.header.time.day(t.expires_ms) if t.expires_ms else ""
            out += _voucher_code("CREDIT NOTE", t.code, abs(t.amount), expires, opt)
    out.append(Text("", "center"))
    out += _scan_code(receipt.sale_id, opt)
    for footer in receipt.header.footer:
        out += _centred(footer, w)
    out.append(Cut())
    return tuple(out)


def _voucher_code(
    title: str, code: str, amount: int, expires: str, opt: LayoutOptions
) -> list[PrintCommand]:
    """A gift card or credit note's code as a barcode the till scans to redeem it."""
    out: list[PrintCommand] = [Text("-" * opt.width), Text(title, "center", bold=True)]
    out += _centred(f"Value {format_money(amount)}", opt.width, bold=True)
    if expires:
        out += _centred(f"Valid until {expires}", opt.width)
    out += _scan_code(code, opt)
    out += _centred("Scan at the till to pay with it", opt.width)
    return out


def render_voucher(
    header: StoreHeader,
    *,
    title: str,
    code: str,
    amount: int,
    expires: str,
    issued: str,
    options: LayoutOptions | None = None,
) -> tuple[PrintCommand, ...]:
    """A gift card slip: the store, the value, the expiry and the code as a barcode."""
    opt = options or LayoutOptions()
    out: list[PrintCommand] = [Init()]
    out += _header(header, opt.width)
    out += _centred(f"Issued {issued}", opt.width)
    out += _voucher_code(title, code, amount, expires, opt)
    for footer in header.footer:
        out += _centred(footer, opt.width)
    out.append(Cut())
    return tuple(out)


def render_upi_request(
    header: StoreHeader,
    *,
    uri: str,
    vpa: str,
    amount: int,
    reference: str,
    options: LayoutOptions | None = None,
) -> tuple[PrintCommand, ...]:
    """A slip the customer scans with a UPI app: the amount, the store's UPI id and the QR."""
    opt = options or LayoutOptions()
    out: list[PrintCommand] = [Init(), *_centred(header.name, opt.width, bold=True)]
    out += _centred("Pay by UPI", opt.width, bold=True, double_height=True)
    out += _centred(f"Amount INR {format_money(amount)}", opt.width, bold=True)
    out += _centred(f"To {vpa}", opt.width)
    out.append(QRCode(uri, size=8))
    out += _centred(f"Ref {reference}", opt.width)
    out += _centred("Show the cashier the UTR once paid", opt.width)
    out.append(Cut())
    return tuple(out)


def render_report(
    report: ReportPrint, header: StoreHeader | None = None, options: LayoutOptions | None = None
) -> tuple[PrintCommand, ...]:
    """An X/Z report: optional store header, the title, then label/value rows, then a cut."""
    opt = options or LayoutOptions()
    w = opt.width
    out: list[PrintCommand] = [Init()]
    if header is not None:
        out += _header(header, w)
    out += _centred(report.title, w, bold=True, double_height=True)
    if report.subtitle:
        out += _centred(report.subtitle, w)
    out.append(Text("-" * w))
    for label, value in report.rows:
        if not label and not value:
            out.append(Text("-" * w))
        else:
            out += _lr(label, value, w)
    out.append(Text("-" * w))
    out.append(Cut())
    return tuple(out)


def render_beep(pattern: BeepPattern) -> tuple[PrintCommand, ...]:
    """The printer-buzzer form of a scan-error pattern: ESC B n t (bytes 1B 42 n t).

    That is the buzzer command python-escpos' `Escpos.buzzer()` sends, understood by the common
    80 mm thermal printers (Xprinter, Rongta, HPRT and other ESC/POS clones); printers without a
    buzzer ignore it, and Epson TM models need their own `ESC ( A` command instead.
    """
    return (Buzzer(pattern.times, pattern.duration),)


def beep_bytes(pattern: BeepPattern) -> bytes:
    return b"\x1bB" + bytes((pattern.times, pattern.duration))


def terminal_bell(pattern: BeepPattern) -> str:
    """The same pattern for the terminal running the till: ASCII BEL per beep."""
    return "\a" * pattern.times


def _barcode(printer: Escpos, cmd: Barcode) -> None:
    data = "{B" + cmd.data.replace("{", "{{")
    if printer.profile.supports("barcodeB"):
        # The public `barcode()` prints "Using hardware barcode renderer" on stdout, which would
        # garble the till's terminal; its hardware path is `_hw_barcode`.
        printer._hw_barcode(
            data, cmd.symbology, cmd.height, cmd.module, "BELOW", "A", True, "B", True
        )
        return
    with contextlib.redirect_stdout(io.StringIO()):
        printer.barcode(data, cmd.symbology, cmd.height, cmd.module, function_type="B")


_CONTROL = dict.fromkeys([*range(0x20), 0x7F], " ")


def _printable(text: str) -> str:
    """Control characters in catalogue text (an ESC in a product name) must not reach the printer
    as commands."""
    return text.translate(_CONTROL)


def drive(printer: Escpos, commands: Iterable[PrintCommand]) -> None:
    """Play commands on a python-escpos printer (Dummy, Network, File, Serial, Usb).

    Style changes are sent only when they differ from the previous line's, keeping serial
    printers at 9600 baud quick.
    """
    align: str | None = None
    bold: bool | None = None
    size: tuple[bool, bool] | None = None
    for cmd in commands:
        if isinstance(cmd, Init):
            printer.hw("INIT")
            printer.magic.encoding = None
            align, bold, size = "left", False, (False, False)
        elif isinstance(cmd, Text):
            want_size = (cmd.double_width, cmd.double_height)
            if want_size != size:
                # ESC ! also clears emphasis on the printer, so bold is re-sent after it.
                printer.set(
                    double_width=cmd.double_width,
                    double_height=cmd.double_height,
                    normal_textsize=not any(want_size),
                )
                size, bold = want_size, None
            printer.set(
                bold=cmd.bold if cmd.bold != bold else None,
                align=cmd.align if cmd.align != align else None,
            )
            align, bold = cmd.align, cmd.bold
            printer.textln(_printable(cmd.text))
        elif isinstance(cmd, Barcode):
            _barcode(printer, cmd)
            align = "center"
        elif isinstance(cmd, QRCode):
            native = printer.profile.supports("qrCode")
            if native:
                printer.set(align="center")
            printer.qr(cmd.data, size=cmd.size, native=native, center=not native)
            if native:
                printer.ln()
            align = "center" if native else None
        elif isinstance(cmd, Feed):
            printer.print_and_feed(cmd.lines)
        elif isinstance(cmd, Cut):
            printer.cut(mode="PART" if cmd.partial else "FULL")
        elif isinstance(cmd, CashDrawer):
            printer.cashdraw(cmd.pin)
        elif isinstance(cmd, Buzzer):
            printer.buzzer(cmd.times, cmd.duration)


def render_bytes(commands: Sequence[PrintCommand], profile: str | None = None) -> bytes:
    """The ESC/POS byte stream for commands, as python-escpos would send it to `profile`."""
    dummy = Dummy(profile=profile)
    drive(dummy, commands)
    return bytes(dummy.output)


def print_receipt_to(
    printer: Escpos, receipt: Receipt, options: LayoutOptions | None = None
) -> None:
    drive(printer, render_receipt(receipt, options))


def print_report_to(
    printer: Escpos,
    report: ReportPrint,
    header: StoreHeader | None = None,
    options: LayoutOptions | None = None,
) -> None:
    drive(printer, render_report(report, header, options))


def beep(printer: Escpos, pattern: BeepPattern) -> None:
    drive(printer, render_beep(pattern))
