"""Receipts: payload parsing, what the slip says, and how it is laid out on paper."""

from __future__ import annotations

import copy
import re
from typing import Any

import pytest
from escpos.printer import Dummy
from hypothesis import given
from hypothesis import strategies as st

from meshpos.core.errors import InputError
from meshpos.devices import escpos_decode as ed
from meshpos.devices import layout
from meshpos.devices.receipt import GstRow, StoreHeader, receipt_from_sale

HEADER = StoreHeader(
    name="Meshpos Apparel",
    address=("12 MG Road", "Bengaluru 560001"),
    gstin="29ABCDE1234F1Z5",
    phone="080 4000 1234",
)

SALE: dict[str, Any] = {
    "kind": "sale",
    "sale_id": "BLR1-T1-000042",
    "receipt": "T1-000042",
    "number": 42,
    "terminal": "T1",
    "customer": "C1a2b3c",
    "lines": [
        {
            "sku": "TSH-BLK-M",
            "name": "Crew T-shirt",
            "size": "M",
            "colour": "Black",
            "qty": 2,
            "unit_price": 49900,
            "discount": 5000,
            "gst_rate": 500,
            "tax": 4514,
            "total": 94800,
        },
        {
            "sku": "JNS-BLU-32",
            "name": "Slim fit jeans",
            "size": "32",
            "colour": "Indigo",
            "qty": 1,
            "unit_price": 249900,
            "discount": 0,
            "gst_rate": 1200,
            "tax": 26775,
            "total": 249900,
        },
        {
            "sku": "SOCK-3P",
            "name": "Ankle socks, 3 pack",
            "qty": 1,
            "unit_price": 29900,
            "discount": 0,
            "gst_rate": 500,
            "tax": 1424,
            "total": 29900,
        },
    ],
    "subtotal": 379600,
    "discount": 5000,
    "tax": 32713,
    "total": 374600,
    "tenders": [
        {"method": "cash", "amount": 100000, "tendered": 150000, "change": 50000},
        {
            "method": "card",
            "amount": 274600,
            "card_last4": "4242",
            "card_brand": "VISA",
            "pending": True,
        },
    ],
    "points_earned": 37,
    "points_redeemed": 0,
    "ref_sale": None,
    "ts_ms": 1764000000000,  # 2025-11-24 16:00 UTC = 21:30 IST
}

RETURN: dict[str, Any] = {
    "kind": "return",
    "sale_id": "BLR1-T2-000007",
    "receipt": "T2-000007",
    "number": 7,
    "terminal": "T2",
    "customer": None,
    "lines": [SALE["lines"][0]],
    "subtotal": 99800,
    "discount": 5000,
    "tax": 4514,
    "total": 94800,
    "tenders": [{"method": "cash", "amount": 94800}],
    "points_earned": 0,
    "points_redeemed": 0,
    "ref_sale": "BLR1-T1-000042",
    "ts_ms": 1764003600000,
}


def decoded(commands: tuple[layout.PrintCommand, ...]) -> ed.Decoded:
    return ed.decode(layout.render_bytes(commands))


def sale_slip(**options: Any) -> ed.Decoded:
    receipt = receipt_from_sale(SALE, HEADER, loyalty_balance=412)
    return decoded(layout.render_receipt(receipt, layout.LayoutOptions(**options)))


def test_payload_becomes_a_receipt() -> None:
    r = receipt_from_sale(SALE, HEADER, loyalty_balance=412, cashier="asha")
    assert r.kind == "sale" and r.sale_id == "BLR1-T1-000042" and r.receipt_no == "T1-000042"
    assert [line.sku for line in r.lines] == ["TSH-BLK-M", "JNS-BLU-32", "SOCK-3P"]
    assert r.lines[2].size == "" and r.lines[2].colour == ""
    assert r.tenders[0].tendered == 150000 and r.tenders[1].tendered is None
    assert r.has_cash and r.has_pending_card
    # A payload recorded before GST was split: its one tax halved, the odd paisa to CGST.
    assert r.gst_summary() == (
        GstRow("", 500, 94800 - 4514 + 29900 - 1424, 2969, 2969, 0),
        GstRow("", 1200, 223125, 13388, 13387, 0),
    )
    assert r.heads == (2969 + 13388, 2969 + 13387, 0)
    assert r.loyalty_balance == 412 and r.cashier == "asha"


def test_absent_optional_keys_are_fine() -> None:
    minimal = {
        "sale_id": "S1",
        "lines": [{"sku": "A", "name": "A", "qty": 1, "unit_price": 100, "total": 100}],
        "tenders": [{"method": "card", "amount": 100}],
        "subtotal": 100,
        "total": 100,
        "ts_ms": 0,
    }
    r = receipt_from_sale(minimal, HEADER)
    assert r.kind == "sale" and r.receipt_no == "S1" and r.ref_sale is None
    assert r.tenders[0].change == 0 and not r.tenders[0].pending
    slip = decoded(layout.render_receipt(r))
    assert "TOTAL" in slip.text and slip.cuts


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (("sale_id",), None, "'sale_id'"),
        (("total",), "12", "'total'"),
        (("lines", 0, "qty"), None, "sale line 1 lacks a valid 'qty'"),
        (("lines", 1, "discount"), 1.5, "sale line 2: 'discount' must be a whole number"),
        (("tenders", 0, "amount"), True, "tender 1 lacks a valid 'amount'"),
        (("kind",), "refund", "unknown kind 'refund'"),
        (("lines",), "oops", "'lines' must be a list"),
    ],
)
def test_malformed_payload_names_the_bad_key(
    path: tuple[Any, ...], value: Any, message: str
) -> None:
    payload = copy.deepcopy(SALE)
    target = payload
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    with pytest.raises(InputError, match=re.escape(message)):
        receipt_from_sale(payload, HEADER)


def test_sale_slip_says_everything() -> None:
    slip = sale_slip()
    lines = slip.lines
    styled = slip.styled_lines
    assert styled[0] == ed.Line("Meshpos Apparel", "center", True, 2, 2)
    assert ed.Line("GSTIN: 29ABCDE1234F1Z5", "center") in styled
    assert ed.Line("TAX INVOICE", "center", True) in styled
    assert "Invoice BLR1-T1-000042    24-11-2025 21:30" in lines
    assert "Customer C1a2b3c" in lines
    i = lines.index("Crew T-shirt")
    assert lines[i + 1 : i + 4] == [
        "  M / Black  TSH-BLK-M",
        "  2 x 499.00                        998.00",
        "  Discount                          -50.00",
    ]
    assert "  32 / Indigo  JNS-BLU-32" in lines
    assert "  1 x 2,499.00                    2,499.00" in lines
    assert "  SOCK-3P" in lines  # no size or colour
    assert "Subtotal                          3,796.00" in lines
    assert "Discount                            -50.00" in lines
    assert ed.Line("TOTAL                             3,746.00", bold=True) in styled
    i = lines.index("HSN       GST  Taxable      CGST      SGST")
    assert lines[i + 1 : i + 5] == [
        "-          5% 1,187.62     29.69     29.69",
        "-         12% 2,231.25    133.88    133.87",
        "Total CGST                          163.57",
        "Total SGST                          163.56",
    ]
    assert "Cash                              1,500.00" in lines
    assert "  Change                            500.00" in lines
    assert "Card VISA ****4242                2,746.00" in lines
    assert ed.Line("Card authorisation pending", bold=True) in styled
    assert "Points earned                           37" in lines
    assert "Points balance                         412" in lines
    assert [(b.symbology, b.data) for b in slip.barcodes] == [("CODE128", "BLR1-T1-000042")]
    assert slip.drawer_kicks == [ed.CashDrawer(2, 100, 100)]
    assert isinstance(slip.commands[-1], ed.Cut) and len(slip.cuts) == 1
    assert all(len(line) <= 42 for line in lines)


def test_card_only_sale_does_not_open_the_drawer_and_paid_card_says_nothing_pending() -> None:
    payload = copy.deepcopy(SALE)
    payload["tenders"] = [{"method": "card", "amount": 374600, "card_last4": "1111"}]
    slip = decoded(layout.render_receipt(receipt_from_sale(payload, HEADER)))
    assert slip.drawer_kicks == []
    assert not any("pending" in line for line in slip.lines)
    assert "Card ****1111                     3,746.00" in slip.lines


def test_points_tender_and_no_drawer_when_disabled() -> None:
    payload = copy.deepcopy(SALE)
    payload["tenders"] = [
        {"method": "points", "amount": 4600, "points": 46},
        {"method": "cash", "amount": 370000},
    ]
    payload["points_redeemed"] = 46
    r = receipt_from_sale(payload, HEADER, loyalty_balance=0)
    slip = decoded(layout.render_receipt(r, layout.LayoutOptions(kick_drawer=False)))
    assert "Points (46 pts)                      46.00" in slip.lines
    assert "Points redeemed                         46" in slip.lines
    assert slip.drawer_kicks == []


def test_width_48_and_qr_option() -> None:
    slip = sale_slip(width=48, scan_code="qr")
    assert "Subtotal" + " " * 32 + "3,796.00" in slip.lines
    assert all(len(line) <= 48 for line in slip.lines)
    assert slip.qr_codes == ["BLR1-T1-000042"] and slip.barcodes == []
    assert ed.Line("BLR1-T1-000042", "center") in slip.styled_lines


def test_narrow_paper_prints_the_split_as_blocks() -> None:
    lines = sale_slip(width=32).lines
    i = lines.index("HSN -  GST 12%")
    assert lines[i + 1 : i + 4] == [
        "  Taxable value         2,231.25",
        "  CGST 6%                 133.88",
        "  SGST 6%                 133.87",
    ]
    assert "  CGST 2.5%                29.69" in lines
    assert all(len(line) <= 32 for line in lines)


def test_return_slip() -> None:
    r = receipt_from_sale(RETURN, HEADER)
    assert r.returned == r.lines
    slip = decoded(layout.render_receipt(r))
    assert ed.Line("CREDIT NOTE", "center", True) in slip.styled_lines
    assert "Against invoice BLR1-T1-000042" in slip.lines
    assert "Items returned" in slip.lines
    assert "REFUND TOTAL                        948.00" in slip.lines
    assert "Refund Cash                         948.00" in slip.lines
    assert "-          5%   902.86     22.57     22.57" in slip.lines
    assert slip.drawer_kicks  # the cashier pays the refund out of the drawer
    assert [b.data for b in slip.barcodes] == ["BLR1-T2-000007"]


def test_return_to_points_with_clawback_as_the_terminal_records_it() -> None:
    payload = copy.deepcopy(RETURN)
    del payload["kind"]  # the op's kind, not repeated in its payload
    payload.update(
        customer="C1a2b3c",
        tenders=[{"method": "points", "amount": 94800, "points": 948}],
        points_earned=-9,
        points_redeemed=-948,
    )
    r = receipt_from_sale(payload, HEADER, loyalty_balance=1351, kind="return")
    lines = decoded(layout.render_receipt(r)).lines
    assert "CREDIT NOTE" in lines
    assert "Refund Points (948 pts)             948.00" in lines
    assert "Points taken back                        9" in lines
    assert "Points given back                      948" in lines
    assert "Points balance                        1351" in lines
    assert not any(line.startswith("Points earned") for line in lines)


def test_exchange_slip_nets_returned_against_new() -> None:
    payload = copy.deepcopy(RETURN)
    payload.update(
        kind="exchange",
        returned=[SALE["lines"][0]],
        lines=[SALE["lines"][2]],
        total=29900 - 94800,
        tenders=[{"method": "cash", "amount": -64900}],
    )
    r = receipt_from_sale(payload, HEADER)
    assert [line.returned for line in r.lines] == [False, True]
    slip = decoded(layout.render_receipt(r))
    lines = slip.lines
    assert ed.Line("EXCHANGE SLIP", "center", True) in slip.styled_lines
    assert lines.index("Returned") < lines.index("Crew T-shirt") < lines.index("New items")
    assert "  2 x 499.00                       -998.00" in lines
    assert "REFUND DUE                          649.00" in lines
    assert "Refund Cash                         649.00" in lines
    assert "-          5%  -618.10    -15.45    -15.45" in lines


def test_x_and_z_reports() -> None:
    report = layout.ReportPrint(
        title="Z REPORT",
        subtitle="T1 24-11-2025",
        rows=(("Sales", "42"), ("Gross", "1,23,456.00"), ("", ""), ("Cash in drawer", "12,000.00")),
    )
    slip = decoded(layout.render_report(report, HEADER))
    assert ed.Line("Z REPORT", "center", True, 1, 2) in slip.styled_lines
    assert "Gross                          1,23,456.00" in slip.lines
    assert slip.lines.count("-" * 42) == 3
    assert slip.styled_lines[0].text == "Meshpos Apparel"
    assert isinstance(slip.commands[-1], ed.Cut)


def test_beep_patterns_are_distinct_buzzer_commands() -> None:
    unknown = layout.beep_bytes(layout.BeepPattern.UNKNOWN)
    invalid = layout.beep_bytes(layout.BeepPattern.INVALID)
    assert unknown == b"\x1bB\x03\x01" and invalid == b"\x1bB\x01\x08"
    assert layout.render_bytes(layout.render_beep(layout.BeepPattern.UNKNOWN)) == unknown
    printer = Dummy()
    layout.beep(printer, layout.BeepPattern.INVALID)
    assert ed.decode(printer.output).buzzes == [ed.Buzzer(1, 8)]
    assert layout.terminal_bell(layout.BeepPattern.UNKNOWN) == "\a\a\a"


def test_drive_reuses_a_printer_object_cleanly() -> None:
    printer = Dummy()
    r = receipt_from_sale(SALE, HEADER)
    layout.print_receipt_to(printer, r)
    once = printer.output
    layout.print_receipt_to(printer, r)
    assert printer.output == once + once


def test_long_names_wrap_within_the_width() -> None:
    payload = copy.deepcopy(SALE)
    payload["lines"][0]["name"] = "Handloom Kanjeevaram silk saree with zari border, peacock motif"
    payload["lines"][0]["colour"] = "Temple red with antique gold"
    slip = decoded(layout.render_receipt(receipt_from_sale(payload, HEADER)))
    assert all(len(line) <= 42 for line in slip.lines)
    assert "Handloom Kanjeevaram silk saree with zari" in slip.lines


@pytest.mark.parametrize(
    ("paise", "text"),
    [
        (0, "0.00"),
        (5, "0.05"),
        (99900, "999.00"),
        (123456, "1,234.56"),
        (1234567890, "1,23,45,678.90"),
        (-5000, "-50.00"),
    ],
)
def test_indian_money_format(paise: int, text: str) -> None:
    assert layout.format_money(paise) == text


@given(st.integers(-(10**12), 10**12))
def test_money_format_round_trips(paise: int) -> None:
    text = layout.format_money(paise)
    assert round(float(text.replace(",", "")) * 100) == paise


@pytest.mark.parametrize(
    ("bp", "text"), [(0, "0%"), (500, "5%"), (1250, "12.5%"), (25, "0.25%"), (2800, "28%")]
)
def test_rate_format(bp: int, text: str) -> None:
    assert layout.format_rate(bp) == text


def test_store_header_from_config() -> None:
    h = StoreHeader.from_dict({"name": " Meshpos ", "address": "1 Road\nCity", "footer": "Bye"})
    assert h.name == "Meshpos" and h.address == ("1 Road", "City") and h.footer == ("Bye",)
    assert h.time.name == "Asia/Kolkata" and h.state == ""
    with pytest.raises(InputError, match=r"store\.name"):
        StoreHeader.from_dict({"name": ""})
    with pytest.raises(InputError, match=r"store\.timezone 'Mars/Olympus'"):
        StoreHeader.from_dict({"name": "M", "timezone": "Mars/Olympus"})
    dubai = StoreHeader.from_dict({"name": "M", "timezone": "Asia/Dubai", "gstin": HEADER.gstin})
    assert dubai.state == "29" and dubai.state_name == "Karnataka (29)"
    r = receipt_from_sale(SALE, dubai)
    assert "Invoice BLR1-T1-000042    24-11-2025 20:00" in decoded(layout.render_receipt(r)).lines


def test_control_characters_in_catalogue_text_cannot_inject_commands() -> None:
    payload = copy.deepcopy(SALE)
    payload["lines"][0]["name"] = "Evil\x1bp\x00\x19\x19 shirt\x1dV\x00"
    payload["tenders"] = [{"method": "card", "amount": 374600}]
    slip = decoded(layout.render_receipt(receipt_from_sale(payload, HEADER)))
    assert slip.drawer_kicks == [] and len(slip.cuts) == 1
    assert "Evil p    shirt V " in slip.lines
