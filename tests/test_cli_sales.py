"""CLI: selling, returns, exchanges, stock, customers, loyalty and reports.

Test products (see conftest.TEST_CSV), prices tax-inclusive: TEE-M 1000.00 at 12 % (stock 10),
CAP 250.00 at 5 % (stock 5, barcode 2000000000024), JKT-L 3000.00 at 12 % (stock 3),
LAST 500.00 at 5 % (stock 1). Loyalty: 1 point per 100 rupees paid, a point is worth 1 rupee.
"""

from __future__ import annotations

import datetime as dt
import re

import pytest

MACHINE = ["--card-approval", "A1B2C3", "--card-last4", "4242"]  # a card machine's slip

# -- sell -------------------------------------------------------------------------------------


def test_sell_sku_times_qty_records_lines_tax_stock_and_receipt(node):
    sale = node.sell("TEE-Mx3", "CAP*2")
    assert sale["sale_id"] == "S1-T1-000001" and sale["receipt"] == "T1-000001"
    assert sale["number"] == 1 and sale["terminal"] == "T1"
    assert [(ln["sku"], ln["qty"], ln["total"]) for ln in sale["lines"]] == [
        ("TEE-M", 3, 300000),
        ("CAP", 2, 50000),
    ]
    # 12 % and 5 % inclusive, as CGST + SGST: two equal halves, each rounded to the paisa
    assert [ln["tax"] for ln in sale["lines"]] == [32142, 2380]
    assert [(ln["cgst"], ln["sgst"], ln["igst"]) for ln in sale["lines"]] == [
        (16071, 16071, 0),
        (1190, 1190, 0),
    ]
    assert sale["total"] == 350000 and sale["tax"] == 34522
    assert (sale["cgst"], sale["sgst"], sale["igst"]) == (17261, 17261, 0)
    assert sale["tenders"] == [{"method": "cash", "amount": 350000, "tendered": 350000}]
    assert node.qty("TEE-M") == 7 and node.qty("CAP") == 3
    assert node.sell("CAP")["sale_id"] == "S1-T1-000002"


def test_sell_prints_sale_id_and_total_for_people(node):
    out = node.ok("sell", "TEE-M", "--pay", "cash:1500").out
    assert (
        "sale S1-T1-000001  total ₹1,000.00  tax ₹107.14  paid cash ₹1,000.00  change ₹500.00"
    ) in out
    assert "TEE-M" in out


def test_sell_by_barcode(node):
    sale = node.sell("2000000000024x2")
    assert sale["lines"][0]["sku"] == "CAP" and sale["lines"][0]["qty"] == 2
    assert node.qty("CAP") == 3


def test_cash_change_and_split_tenders(node):
    sale = node.sell("CAP", "--pay", "cash:5000")
    assert sale["tenders"] == [
        {"method": "cash", "amount": 25000, "tendered": 500000, "change": 475000}
    ]
    sale = node.sell("TEE-M", "--pay", "card-machine:400", *MACHINE, "--pay", "cash")
    assert [(t["method"], t["amount"]) for t in sale["tenders"]] == [
        ("card_machine", 40000),
        ("cash", 60000),
    ]
    sale = node.sell("TEE-M", "--pay", "card-machine:400.50", *MACHINE, "--pay", "cash")
    assert [t["amount"] for t in sale["tenders"]] == [40050, 59950]
    x = node.json("report", "x")
    assert {t["method"]: t["amount"] for t in x["tenders"]} == {
        "card_machine": 80050,
        "cash": 144950,
    }


@pytest.mark.parametrize(
    ("discount", "total", "discounts"),
    [
        (["--discount", "10%"], 112500, [10000, 2500]),
        (["--discount", "50"], 120000, [4000, 1000]),
        (["--discount", "TEE-M:10%"], 115000, [10000, 0]),
        (["--discount", "CAP:25.50", "--discount", "5%"], 116327, [5000, 3673]),
    ],
)
def test_discounts(node, discount, total, discounts):
    sale = node.sell("TEE-M", "CAP", *discount)
    assert sale["subtotal"] == 125000
    assert sale["total"] == total and sale["discount"] == 125000 - total
    assert [ln["discount"] for ln in sale["lines"]] == discounts
    assert sum(ln["total"] for ln in sale["lines"]) == total


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["NOPE"], "unknown product 'NOPE'"),
        (["TEE-M", "99999999"], "unknown product '99999999'"),
        (["TEE-Mx0"], "quantity must be a positive whole number, got 0"),
        (["TEE-Mx-2"], "quantity must be a positive whole number, got -2"),
        (["TEE-Mx20000"], "implausible"),
        (
            ["TEE-M", "--pay", "card-machine:100", *MACHINE],
            "payments are ₹900.00 short of the total ₹1,000.00",
        ),
        (["TEE-M", "--pay", "cash:999.99"], "0.01 short"),
        (["TEE-M", "--pay", "card-machine:2000", *MACHINE], "more than the ₹1,000.00 due"),
        (["TEE-M", "--pay", "cash", "--pay", "card-machine", *MACHINE], "already paid in full"),
        (["TEE-M", "--pay", "card"], "a card payment with no card"),
        (["TEE-M", "--pay", "card-machine"], "needs --card-approval CODE and --card-last4"),
        (
            ["TEE-M", "--pay", "card-machine", "--card-approval", "x", "--card-last4", "4242"],
            "approval code 'x'",
        ),
        (
            ["TEE-M", "--pay", "card-machine", "--card-approval", "A1B2C3", "--card-last4", "42"],
            "last four digits '42'",
        ),
        (["TEE-M", "--card-approval", "A1B2C3"], "go with --pay card-machine"),
        (["TEE-M", "--pay", "cheque"], "method must be one of cash, card, card_machine, points"),
        (["TEE-M", "--pay", "cash:0"], "more than zero"),
        (["TEE-M", "--pay", "cash:abc"], "not an amount"),
        (["TEE-M", "--pay", "points:10"], "needs a customer"),
        (["TEE-M", "--customer", "C-nobody"], "unknown customer 'C-nobody'"),
        (["TEE-M", "--discount", "10%", "--discount", "5%"], "at most one whole-sale"),
        (["TEE-M", "--discount", "1001"], "more than the ₹1,000.00"),
        (["TEE-M", "--discount", "CAP:10%"], "not in the sale: CAP"),
        (["TEE-M", "--discount", "ten"], "not an amount"),
    ],
)
def test_sell_refuses_bad_input_and_writes_nothing(node, args, message):
    before = node.snapshot()
    assert message in node.fail("sell", *args)
    assert node.snapshot() == before
    assert node.qty("TEE-M") == 10


def test_sell_needs_an_item(node):
    assert "Missing argument" in node.usage_error("sell")


def test_receipt_numbers_have_no_gaps_after_a_refused_sale(node):
    assert node.sell("CAP")["number"] == 1
    node.fail("sell", "CAP", "--pay", "card-machine:1", *MACHINE)
    node.fail("sell", "NOPE")
    assert node.sell("CAP")["number"] == 2
    x = node.json("report", "x")
    assert (x["first_receipt"], x["last_receipt"], x["sales"]) == (1, 2, 2)


def test_selling_past_zero_needs_allow_oversell_and_is_flagged(node):
    node.sell("LAST")
    before = node.snapshot()
    err = node.fail("sell", "LAST")
    assert "LAST 1 asked, 0 in stock" in err and "--allow-oversell" in err
    assert node.snapshot() == before
    sale = node.sell("LAST", "--allow-oversell")
    assert sale["oversold"] == {"LAST": 1}
    assert node.qty("LAST") == -1
    [conflict] = node.json("conflicts")
    assert conflict["conflict_id"] == "oversell:LAST" and conflict["detail"]["stock"] == -1


# -- customers and loyalty --------------------------------------------------------------------


def add_customer(node, name="Asha", phone="9800000001", email=None):
    args = (
        ["--name", name]
        + (["--phone", phone] if phone else [])
        + (["--email", email] if email else [])
    )
    return node.json("customer", "add", *args)["customer_id"]


def test_customer_add_show_edit(node):
    cid = add_customer(node, email="asha@example.in")
    assert re.fullmatch(r"C[0-9a-f]{6}\d+", cid)
    shown = node.json("customer", "show", cid)
    assert {k: shown[k] for k in ("customer_id", "name", "phone", "email", "points")} == {
        "customer_id": cid,
        "name": "Asha",
        "phone": "9800000001",
        "email": "asha@example.in",
        "points": 0,
    }
    assert (shown["recent"], shown["sizes"], shown["cards"]) == ([], [], [])  # test_history.py
    assert node.json("customer", "show", "9800000001")["customer_id"] == cid
    assert "updated" in node.ok("customer", "edit", cid, "--name", "Asha K").out
    node.ok("customer", "edit", "9800000001", "--email", "ak@example.in", "--phone", "9800000002")
    shown = node.json("customer", "show", cid)
    assert (shown["name"], shown["phone"], shown["email"]) == (
        "Asha K",
        "9800000002",
        "ak@example.in",
    )
    assert node.snapshot()[1][4] == 1  # editing by phone did not create a second customer
    other = add_customer(node, name="Bo", phone="9800000001")
    assert other != cid


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["add", "--name", "Dup", "--phone", "9800000001"], "already exists"),
        (["add", "--name", "  "], "needs a name"),
        (["add", "--name", "X", "--phone", "98-00"], "must be digits"),
        (["add", "--name", "X", "--email", "nobody"], "not an email address"),
        (["edit", "{cid}"], "nothing to change"),
        (["edit", "{cid}", "--name", ""], "name cannot be empty"),
        (["edit", "{cid}", "--phone", "9800000009"], "already exists"),
        (["edit", "C-nobody", "--name", "X"], "unknown customer"),
        (["show", "C-nobody"], "unknown customer 'C-nobody'"),
    ],
)
def test_customer_bad_input_is_refused(node, args, message):
    cid = add_customer(node)
    add_customer(node, name="Bo", phone="9800000009")
    before = node.snapshot()
    assert message in node.fail("customer", *(a.format(cid=cid) for a in args))
    assert node.snapshot() == before


def test_customer_add_needs_name(node):
    assert "--name" in node.usage_error("customer", "add", "--phone", "9800000001")


def test_points_earned_on_a_sale_and_redeemed_as_a_tender(node):
    cid = add_customer(node)
    sale = node.sell("JKT-L", "--customer", "9800000001")
    assert sale["customer"] == cid and sale["points_earned"] == 30
    out = node.ok("sell", "CAP", "--customer", cid, "--pay", "points:2", "--pay", "cash").out
    assert f"customer {cid}: 2 points redeemed · 2 points earned" in out
    ret = node.json("return", "S1-T1-000002", "CAP")  # what points paid goes back as points
    assert ret["tenders"] == [
        {"method": "points", "amount": 200, "points": 2},
        {"method": "cash", "amount": 24800},
    ]
    assert (ret["points_earned"], ret["points_redeemed"]) == (-2, -2)
    assert node.json("loyalty", "show", cid)["points"] == 30
    assert node.json("loyalty", "show", cid) == {"customer_id": cid, "name": "Asha", "points": 30}
    sale = node.sell("CAP", "--customer", cid, "--pay", "points:20", "--pay", "cash")
    assert sale["tenders"][0] == {"method": "points", "amount": 2000, "points": 20}
    assert sale["tenders"][1]["amount"] == 23000
    assert (sale["points_redeemed"], sale["points_earned"]) == (20, 2)
    assert node.json("loyalty", "show", cid)["points"] == 12
    out = node.ok("loyalty", "show", cid).out
    assert "points" in out and "12" in out
    # `points` with no amount pays what it can
    sale = node.sell(
        "TEE-M", "--customer", cid, "--pay", "points", "--pay", "card-machine", *MACHINE
    )
    assert sale["tenders"][0]["points"] == 12 and sale["tenders"][1]["amount"] == 98800
    assert node.json("loyalty", "show", cid)["points"] == 9


def test_points_beyond_the_balance_are_refused(node):
    cid = add_customer(node)
    node.sell("JKT-L", "--customer", cid)
    before = node.snapshot()
    assert "has 30 points; 31 cannot be redeemed" in node.fail(
        "sell", "TEE-M", "--customer", cid, "--pay", "points:31", "--pay", "cash"
    )
    assert node.snapshot() == before
    assert node.json("loyalty", "show", cid)["points"] == 30


def test_loyalty_show_unknown_customer(node):
    assert "unknown customer" in node.fail("loyalty", "show", "C-nobody")


# -- returns ----------------------------------------------------------------------------------


def test_partial_returns_then_over_return_refused(node):
    sale = node.sell("TEE-Mx3", "CAP")["sale_id"]
    ret = node.json("return", sale, "TEE-M")
    assert ret["ref_sale"] == sale and ret["sale_id"] == "S1-T1-000002"
    assert ret["total"] == 100000 and ret["tenders"] == [{"method": "cash", "amount": 100000}]
    assert node.qty("TEE-M") == 8
    out = node.ok("return", "000001", "TEE-Mx2", "CAP").out  # the short receipt number works
    assert "return S1-T1-000003  total ₹2,250.00" in out and "refunded cash ₹2,250.00" in out
    assert node.qty("TEE-M") == 10 and node.qty("CAP") == 5
    before = node.snapshot()
    assert "only 0 of TEE-M can still be returned, not 1" in node.fail("return", sale, "TEE-M")
    assert node.snapshot() == before
    x = node.json("report", "x")
    assert (x["sales"], x["returns"], x["net"]) == (1, 2, 0)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["{sale}", "TEE-Mx4"], "only 3 of TEE-M can still be returned, not 4"),
        (["{sale}", "TEE-Mx2", "TEE-Mx2"], "only 3 of TEE-M can still be returned, not 4"),
        (["{sale}", "JKT-L"], "has no JKT-L"),
        (["{sale}", "NOPE"], "unknown product 'NOPE'"),
        (["{sale}", "TEE-Mx0"], "positive whole number"),
        (["S1-T1-000099", "TEE-M"], "unknown sale 'S1-T1-000099'"),
        (["%", "TEE-M"], "unknown sale '%'"),
        (["{sale}", "TEE-M", "--refund", "points"], "needs a sale with a customer"),
    ],
)
def test_return_refuses_bad_input_and_writes_nothing(node, args, message):
    sale = node.sell("TEE-Mx3")["sale_id"]
    before = node.snapshot()
    assert message in node.fail("return", *(a.format(sale=sale) for a in args))
    assert node.snapshot() == before


def test_returning_in_parts_refunds_and_claws_back_exactly_the_whole(node):
    cid = add_customer(node)
    sale = node.sell("TEE-Mx3", "CAP", "--discount", "1", "--customer", cid)
    assert sale["total"] == 324900 and sale["points_earned"] == 32
    refunds = [node.json("return", sale["sale_id"], "TEE-M") for _ in range(3)]
    refunds.append(node.json("return", sale["sale_id"], "CAP"))
    assert sum(r["total"] for r in refunds) == sale["total"]
    assert sum(r["tax"] for r in refunds) == sale["tax"]
    assert sum(-r["points_earned"] for r in refunds) == 32
    assert node.json("loyalty", "show", cid)["points"] == 0
    assert node.json("report", "x")["net"] == 0


def test_refund_to_points(node):
    cid = add_customer(node)
    sale = node.sell("CAP", "--customer", cid)["sale_id"]
    assert node.json("loyalty", "show", cid)["points"] == 2
    ret = node.json("return", sale, "CAP", "--refund", "points")
    assert ret["tenders"] == [{"method": "points", "amount": 25000, "points": 250}]
    assert node.json("loyalty", "show", cid)["points"] == 250


# -- exchanges --------------------------------------------------------------------------------


def test_exchange_with_difference_paid(node):
    sale = node.sell("CAP")["sale_id"]
    ex = node.json(
        "exchange", sale, "--back", "CAP", "--take", "TEE-M", "--pay", "card-machine", *MACHINE
    )
    assert ex["ref_sale"] == sale and ex["total"] == 75000
    assert ex["tenders"] == [
        {"method": "card_machine", "amount": 75000, "card_last4": "4242", "card_approval": "A1B2C3"}
    ]
    assert [ln["sku"] for ln in ex["returned"]] == ["CAP"] and ex["lines"][0]["sku"] == "TEE-M"
    assert node.qty("CAP") == 5 and node.qty("TEE-M") == 9
    assert "only 0 of CAP can still be returned" in node.fail("return", sale, "CAP")
    assert node.json("report", "x")["net"] == 100000


def test_exchange_with_difference_refunded(node):
    sale = node.sell("JKT-L")["sale_id"]
    before = node.snapshot()
    assert "nothing is due" in node.fail(
        "exchange", sale, "--back", "JKT-L", "--take", "TEE-M", "--pay", "card-machine", *MACHINE
    )
    assert node.snapshot() == before
    out = node.ok("exchange", sale, "--back", "JKT-L", "--take", "TEE-M").out
    assert "total −₹2,000.00" in out and "refunded cash ₹2,000.00" in out
    [ex] = [s for s in node.json("report", "sales", "--by", "payment") if s["key"] == "cash"]
    assert ex["amount"] == 100000  # 3000 paid, 2000 refunded
    assert node.qty("JKT-L") == 3 and node.qty("TEE-M") == 9


def test_even_exchange_needs_no_payment(node):
    sale = node.sell("TEE-M")["sale_id"]
    ex = node.json("exchange", sale, "--back", "TEE-M", "--take", "2000000000017")
    assert ex["total"] == 0 and ex["tenders"] == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--back", "TEE-Mx2", "--take", "CAP"], "only 1 of TEE-M can still be returned"),
        (["--back", "JKT-L", "--take", "CAP"], "has no JKT-L"),
        (["--back", "TEE-M", "--take", "NOPE"], "unknown product 'NOPE'"),
        (["--back", "TEE-M", "--take", "JKT-L", "--pay", "card-machine:1", *MACHINE], "short"),
    ],
)
def test_exchange_refuses_bad_input_and_writes_nothing(node, args, message):
    sale = node.sell("TEE-M")["sale_id"]
    before = node.snapshot()
    assert message in node.fail("exchange", sale, *args)
    assert node.snapshot() == before


def test_exchange_needs_back_and_take(node):
    sale = node.sell("TEE-M")["sale_id"]
    assert "--take" in node.usage_error("exchange", sale, "--back", "TEE-M")


# -- stock ------------------------------------------------------------------------------------


def test_stock_lists_every_sku_or_one(node):
    rows = node.json("stock")
    assert len(rows) == len(node.json("catalog", "list", "--limit", "100000"))
    assert {"sku": "TEE-M", "name": "Test tee", "size": "M", "colour": "Red", "qty": 10} in rows
    assert node.json("stock", "TEE-M") == [
        {"sku": "TEE-M", "name": "Test tee", "size": "M", "colour": "Red", "qty": 10}
    ]
    assert node.json("stock", "show", "2000000000024")[0]["sku"] == "CAP"
    assert "TEE-M" in node.ok("stock", "TEE-M").out
    assert "unknown product 'NOPE'" in node.fail("stock", "NOPE")


def test_stock_receive_and_adjust(node):
    out = node.ok("stock", "receive", "TEE-M", "5", "--reason", "delivery note 42").out
    assert out.startswith("receive +5 TEE-M: stock now 15")
    out = node.ok("stock", "adjust", "TEE-M", "-3", "--reason", "shrinkage").out
    assert out.startswith("adjust -3 TEE-M: stock now 12")
    node.ok("stock", "adjust", "2000000000024", "2", "--reason", "count")
    assert node.qty("CAP") == 7
    assert node.json("conflicts", "--all") == []
    kinds = [(o["kind"], o["summary"]) for o in node.json("ops", "tail", "-n", "3")]
    assert kinds == [
        ("stock.receive", "TEE-M +5"),
        ("stock.adjust", "TEE-M -3"),
        ("stock.adjust", "CAP +2"),
    ]
    node.ok("stock", "adjust", "LAST", "-2", "--reason", "stolen")
    assert node.qty("LAST") == -1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["receive", "TEE-M", "0", "--reason", "x"], "must be positive, got 0"),
        (["receive", "TEE-M", "-3", "--reason", "x"], "must be positive, got -3"),
        (["adjust", "TEE-M", "0", "--reason", "x"], "changes nothing"),
        (["adjust", "TEE-M", "-1", "--reason", "  "], "needs a reason"),
        (["receive", "NOPE", "1", "--reason", "x"], "unknown product 'NOPE'"),
    ],
)
def test_stock_moves_refuse_bad_input(node, args, message):
    before = node.snapshot()
    assert message in node.fail("stock", *args)
    assert node.snapshot() == before


@pytest.mark.parametrize("verb", ["receive", "adjust"])
def test_stock_moves_require_a_reason_and_a_whole_quantity(node, verb):
    assert "--reason" in node.usage_error("stock", verb, "TEE-M", "1")
    assert "not a valid integer" in node.usage_error("stock", verb, "TEE-M", "1.5", "--reason", "x")


# -- reports ----------------------------------------------------------------------------------


def test_x_report_changes_nothing_and_z_numbers_increase(node):
    node.sell("TEE-M", "CAP")
    node.sell("JKT-L", "--pay", "card-machine", *MACHINE)
    before = node.snapshot()
    x = node.json("report", "x")
    assert node.snapshot() == before
    assert (x["z_number"], x["sales"], x["net"], x["first_receipt"], x["last_receipt"]) == (
        1,
        2,
        425000,
        1,
        2,
    )
    assert {t["method"]: (t["amount"], t["count"]) for t in x["tenders"]} == {
        "card_machine": (300000, 1),
        "cash": (125000, 1),
    }
    assert {g["gst_rate"]: g["taxable_incl"] for g in x["gst"]} == {500: 25000, 1200: 400000}
    assert sum(g["tax"] for g in x["gst"]) == x["tax"]
    z1 = node.json("report", "z")
    assert z1["z_number"] == 1 and z1["net"] == 425000
    after = node.json("report", "x")
    assert after["z_number"] == 2
    assert (after["sales"], after["net"], after["tenders"], after["gst"]) == (0, 0, [], [])
    assert after["first_receipt"] is None
    node.sell("CAP")
    z2 = node.json("report", "z")
    assert (z2["z_number"], z2["sales"], z2["first_receipt"]) == (2, 1, 3)
    assert node.json("report", "z")["z_number"] == 3
    kinds = [o["kind"] for o in node.json("ops", "tail", "-n", "3")]
    assert kinds == ["sale", "report.z", "report.z"]
    text = node.ok("report", "x").out
    assert "X report" in text and "GST by rate" in text


@pytest.fixture
def sold(node):
    node.sell("TEE-Mx2", user="alice")
    node.sell("CAP", "--pay", "card-machine", *MACHINE, user="bob")
    node.sell("JKT-L", "--discount", "100", user="alice")
    return node


@pytest.mark.parametrize(
    ("by", "expected"),
    [
        ("sku", {"TEE-M": (2, 200000), "CAP": (1, 25000), "JKT-L": (1, 290000)}),
        ("category", {"Tops": (2, 200000), "Accessories": (1, 25000), "Outerwear": (1, 290000)}),
        ("payment", {"cash": (2, 490000), "card_machine": (1, 25000)}),
        ("cashier", {"alice": (2, 490000), "bob": (1, 25000)}),
        ("terminal", {"T1": (3, 515000)}),
    ],
)
def test_sales_report_by(sold, by, expected):
    rows = sold.json("report", "sales", "--by", by)
    count = "qty" if by in ("sku", "category") else "count"
    value = "amount" if by == "payment" else "net"
    assert {r["key"]: (r[count], r[value]) for r in rows} == expected


@pytest.mark.parametrize(
    ("by", "pattern"), [("hour", r"\d{4}-\d\d-\d\d \d\d:00"), ("day", r"\d{4}-\d\d-\d\d")]
)
def test_sales_report_by_time(sold, by, pattern):
    [row] = sold.json("report", "sales", "--by", by)
    assert re.fullmatch(pattern, row["key"]) and row["count"] == 3 and row["net"] == 515000


def test_sales_report_default_and_date_range(sold):
    assert sold.json("report", "sales") == sold.json("report", "sales", "--by", "sku")
    ts = sold.json("ops", "tail", "-n", "1")[0]["time"]
    day = dt.date.fromisoformat(ts[:10])
    assert len(sold.json("report", "sales", "--from", str(day), "--to", str(day))) == 3
    assert sold.json("report", "sales", "--from", str(day + dt.timedelta(days=1))) == []
    assert sold.json("report", "sales", "--to", str(day - dt.timedelta(days=1))) == []
    assert "is not a date" in sold.fail("report", "sales", "--from", "2024-13-45")
    assert "Invalid value" in sold.usage_error("report", "sales", "--by", "colour")


def test_reports_on_an_empty_node(node):
    x = node.json("report", "x")
    assert (x["sales"], x["net"], x["z_number"]) == (0, 0, 1)
    assert node.json("report", "sales", "--by", "payment") == []
    assert "(no sales by sku)" in node.ok("report", "sales").out
