"""The till session (meshpos/service/till.py): scanning into a sale, quantities, customers, discounts,
split tenders and change, returns started from a receipt's barcode; and bad scans that explain
themselves instead of crashing."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from conftest import Node
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meshpos.core.errors import InputError, NotFound
from meshpos.devices.barcodes import with_check_digit
from meshpos.domain.catalog import CatalogRow
from meshpos.service.printing import queue_receipt
from meshpos.service.terminal import Terminal
from meshpos.service.till import (
    BEEP_INVALID,
    BEEP_UNKNOWN,
    InvalidCode,
    LineAdded,
    ReturnStarted,
    TillSession,
    UnknownCode,
    change_given,
)

UPC = with_check_digit("03600029145")  # a UPC-A whose product is catalogued as EAN-13 "0" + UPC


@pytest.fixture
def terminal(node: Node) -> Iterator[Terminal]:
    t = Terminal.open(node.path, on_record=[queue_receipt])
    t.import_catalog(
        [
            CatalogRow(
                2, "12345678", {"name": "House brand socks", "price": 9900, "gst_rate": 500}, 5
            ),
            CatalogRow(
                3,
                "UPC-TEA",
                {"name": "Imported tea", "barcode": "0" + UPC, "price": 45000, "gst_rate": 500},
                5,
            ),
        ]
    )
    yield t
    t.close()


@pytest.fixture
def till(terminal: Terminal) -> TillSession:
    return TillSession(terminal)


def ops(t: Terminal) -> int:
    return t.ledger.op_count()


# -- scanning --------------------------------------------------------------------------------------


def test_scanning_an_ean13_adds_a_line_and_scanning_it_again_adds_one_more(
    till: TillSession,
) -> None:
    first = till.add_code("8901000000026\r\n")  # scanners frame codes with CR/LF
    assert isinstance(first, LineAdded) and first.sku == "TSH-NAV-M" and first.line == 1
    assert first.beep is None and "₹1,249.00" in first.message
    again = till.add_code("8901000000026")
    assert isinstance(again, LineAdded) and again.qty == 2 and again.line == 1
    sku = till.add_code("CAP")
    assert isinstance(sku, LineAdded) and sku.line == 2
    assert [(ln.product.sku, ln.qty) for ln in till.lines] == [("TSH-NAV-M", 2), ("CAP", 1)]
    t = till.totals()
    assert (t.items, t.total, t.due) == (3, 2 * 124900 + 25000, 2 * 124900 + 25000)


def test_the_catalogue_is_asked_before_check_digits(till: TillSession) -> None:
    # TEE-M's barcode 2000000000017 has a wrong check digit, and SKU 12345678 is not a valid EAN-8:
    # both are what the catalogue says, so both scan.
    assert isinstance(till.add_code("2000000000017"), LineAdded)
    assert isinstance(till.add_code("12345678"), LineAdded)
    upc = till.add_code(UPC)
    assert isinstance(upc, LineAdded) and upc.sku == "UPC-TEA"
    assert [ln.product.sku for ln in till.lines] == ["TEE-M", "12345678", "UPC-TEA"]


def test_unknown_and_invalid_codes_say_what_to_do_and_beep_differently(
    till: TillSession, terminal: Terminal
) -> None:
    before = ops(terminal)
    unknown = till.add_code(with_check_digit("890100000999"))
    assert isinstance(unknown, UnknownCode) and unknown.beep == BEEP_UNKNOWN
    assert unknown.message == (
        "EAN-13 8901000009999 is not in the catalogue; put the item aside or type its SKU"
    )
    invalid = till.add_code("2000000000018")
    assert isinstance(invalid, InvalidCode) and invalid.beep == BEEP_INVALID
    assert "bad check digit (expected 5)" in invalid.message and "scan it again" in invalid.message
    ean8 = till.add_code("12345679")
    assert isinstance(ean8, InvalidCode) and "EAN-8" in ean8.message
    text = till.add_code("NO-SUCH-SKU")
    assert isinstance(text, UnknownCode) and "no product SKU or barcode" in text.message
    control = till.add_code("\x1b[A")
    assert isinstance(control, InvalidCode) and "control characters" in control.message
    assert isinstance(till.add_code("\r\n"), InvalidCode)
    assert till.lines == () and ops(terminal) == before
    assert BEEP_UNKNOWN != BEEP_INVALID


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(code=st.text(max_size=40) | st.from_regex(r"[0-9]{6,14}", fullmatch=True))
def test_no_scan_ever_raises_or_writes(till: TillSession, terminal: Terminal, code: str) -> None:
    before_lines = [(ln.product.sku, ln.qty) for ln in till.lines]
    before = ops(terminal)
    event = till.add_code(code)
    assert event.message
    if not isinstance(event, LineAdded | ReturnStarted):
        assert [(ln.product.sku, ln.qty) for ln in till.lines] == before_lines
    assert ops(terminal) == before
    till.void()


# -- editing the sale ------------------------------------------------------------------------------


def test_quantity_remove_and_their_refusals(till: TillSession) -> None:
    with pytest.raises(InputError, match="no lines yet"):
        till.set_qty(2)
    till.add_code("TEE-M")
    till.add_code("CAP")
    assert till.set_qty(3).product.sku == "CAP"  # the last line scanned
    assert till.set_qty(2, line=1).qty == 2
    for bad, line, msg in ((0, None, "positive"), (10_001, None, "implausible"), (2, 3, "line 3")):
        with pytest.raises(InputError, match=msg):
            till.set_qty(bad, line)
    assert [(ln.product.sku, ln.qty) for ln in till.lines] == [("TEE-M", 2), ("CAP", 3)]
    assert till.remove_line(1).product.sku == "TEE-M"
    assert [ln.product.sku for ln in till.lines] == ["CAP"]
    till.void()
    assert till.empty and till.totals().total == 0


def test_customer_discounts_split_tender_and_change(till: TillSession, terminal: Terminal) -> None:
    cid = terminal.add_customer({"name": "Asha", "phone": "9800000001"})
    till.add_code("TEE-M")  # 1000.00 at 12 %
    till.add_code("CAP")  # 250.00 at 5 %
    assert till.set_customer("9800000001")["customer_id"] == cid
    till.discount("10%", line=1)
    with pytest.raises(InputError, match="more than"):
        till.discount("5000")  # more than the sale: refused, the 10 % stays
    assert till.sale_discount is None and till.lines[0].discount == "10%"
    assert till.totals().total == 90000 + 25000
    with pytest.raises(InputError, match="more than the"):
        till.pay("card_machine", "2000", card_last4="4242", approval="A1B2C3")
    with pytest.raises(InputError, match="a card payment needs the card"):
        till.pay("card", "500", card_last4="4242")  # neither kind: refused
    with pytest.raises(InputError, match="approval code"):
        till.pay("card_machine", "500", card_last4="4242")
    till.pay("machine", "500", card_last4="4242", approval="A1B2C3")
    mid = till.totals()
    assert (mid.paid, mid.due, mid.change) == (50000, 65000, 0)
    with pytest.raises(InputError, match="still due"):
        till.complete()
    till.pay("cash", "1000")
    t = till.totals()
    assert (t.paid, t.due, t.change) == (150000, 0, 35000)
    with pytest.raises(InputError, match="already paid"):
        till.pay("cash", "10")
    result = till.complete()
    p = result.payload
    assert p["customer"] == cid and p["total"] == 115000
    assert p["tenders"] == [
        {
            "method": "card_machine",
            "amount": 50000,
            "card_last4": "4242",
            "card_approval": "A1B2C3",
        },
        {"method": "cash", "amount": 65000, "tendered": 100000, "change": 35000},
    ]
    assert change_given(p) == 35000 and p["points_earned"] == 11
    assert till.empty  # ready for the next customer
    (job,) = terminal.ledger.print_queue.jobs()
    assert job.sale_id == result.sale_id and job.doc["loyalty_balance"] == 11


def test_points_pay_part_and_need_a_customer(till: TillSession, terminal: Terminal) -> None:
    cid = terminal.add_customer({"name": "Bo", "phone": "9800000002"})
    terminal.append("loyalty.adjust", {"customer_id": cid, "delta": 50, "reason": "promotion"})
    till.add_code("CAP")
    with pytest.raises(InputError, match="needs a customer"):
        till.pay("points", "10")
    till.set_customer(cid)
    with pytest.raises(InputError, match="has 50 points"):
        till.pay("points", "60")
    till.pay("points", "20")  # 20 x 1.00
    assert till.totals().due == 25000 - 2000
    with pytest.raises(InputError, match=r"230\.00 is still due"):
        till.complete()
    till.pay("cash")  # the rest, exact
    result = till.complete()
    assert [t["method"] for t in result.payload["tenders"]] == ["points", "cash"]
    assert terminal.points(cid) == 50 - 20 + result.payload["points_earned"] == 32


def test_done_without_a_tender_is_exact_cash_and_an_empty_sale_is_refused(
    till: TillSession,
) -> None:
    with pytest.raises(InputError, match="nothing to sell"):
        till.complete()
    with pytest.raises(InputError, match="scan an item first"):
        till.pay("cash")
    till.add_code("CAP")
    result = till.complete()
    assert result.payload["tenders"] == [{"method": "cash", "amount": 25000, "tendered": 25000}]


# -- returns ---------------------------------------------------------------------------------------


def test_scanning_a_receipt_starts_a_return_of_what_it_sold(
    till: TillSession, terminal: Terminal
) -> None:
    till.add_code("TEE-M")
    till.set_qty(2)
    till.add_code("CAP")
    sale = till.complete()
    till.add_code("JKT-L")
    busy = till.add_code(sale.sale_id)
    assert isinstance(busy, UnknownCode) and "finish or void" in busy.message
    till.void()

    started = till.add_code(sale.payload["receipt"])  # the receipt number works as well
    assert isinstance(started, ReturnStarted) and started.sale_id == sale.sale_id
    assert till.mode == "return" and till.ref_sale == sale.sale_id
    assert isinstance(till.add_code("2000000000017"), LineAdded)
    assert isinstance(till.add_code("TEE-M"), LineAdded)
    over = till.add_code("TEE-M")
    assert isinstance(over, UnknownCode) and "only 2 of TEE-M" in over.message
    stranger = till.add_code("JKT-L")
    assert isinstance(stranger, UnknownCode) and "not on sale" in stranger.message
    assert till.totals().total == 200000
    with pytest.raises(InputError, match="pays out"):
        till.pay("cash")
    till.set_refund("card")
    back = till.complete()
    assert back.op.kind == "return" and back.payload["ref_sale"] == sale.sale_id
    assert back.payload["tenders"][0]["method"] == "card"
    assert [(ln["sku"], ln["qty"]) for ln in back.payload["lines"]] == [("TEE-M", 2)]

    # the CAP is all that can still come back
    till.start_return(sale.sale_id)
    assert [ln.product.sku for ln in till.lines] == ["CAP"]
    till.void()
    with pytest.raises(NotFound):
        till.start_return("S1-T1-999999")
