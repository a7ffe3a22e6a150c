"""GST tax invoices: GSTIN and state checks, price bands (5 % up to ₹2,500 a piece, 18 % above),
the CGST + SGST or IGST split rounded to the paisa, B2B sales, returns, reports, receipts, and
ledgers recorded before the split."""

from __future__ import annotations

import sqlite3
import tomllib
from pathlib import Path
from typing import Any

import pytest
import tomli_w
from conftest import Node
from hypothesis import given
from hypothesis import strategies as st

from meshpos.cli.till import TillConsole
from meshpos.core.errors import InputError
from meshpos.core.ops import Signer
from meshpos.devices import escpos_decode as ed
from meshpos.devices import layout
from meshpos.devices.receipt import StoreHeader, receipt_from_sale
from meshpos.domain.catalog import SAMPLE_CATALOG, parse_csv
from meshpos.domain.gst import (
    APPAREL,
    Band,
    GstRules,
    Supply,
    band_rate,
    check_gstin,
    describe_bands,
    invoice_tax,
    parse_bands,
    recorded_split,
    split,
    state_code,
    supply,
)
from meshpos.domain.pricing import CartLine, Product, price_lines
from meshpos.domain.store_settings import check_setting
from meshpos.ledger.store import Ledger
from meshpos.service.config import NodeConfig
from meshpos.service.terminal import Terminal
from meshpos.service.till import TillSession

KA = "29ABCDE1234F1ZW"  # Karnataka, valid check character
MH = "27AAACM1234B1Z6"  # Maharashtra
KA_BUYER = "29AAGCM4321K1ZB"


# -- GSTINs and states ----------------------------------------------------------------------------


def test_gstins_are_checked_to_the_last_character() -> None:
    assert check_gstin(" 29abcde1234f1zw ") == KA
    assert check_gstin("27AAPFU0939F1ZV")  # a published example
    with pytest.raises(InputError, match=r"fails its check character.*would be W"):
        check_gstin("29ABCDE1234F1Z5")
    with pytest.raises(InputError, match="starts with 25, which is no state's code"):
        check_gstin("25ABCDE1234F1Z5")
    for bad in ("", "29ABCDE1234F1Z", "29ABCDE1234F1X5", "2XABCDE1234F1ZW", "29ABCD11234F1ZW"):
        with pytest.raises(InputError, match=r"buyer GSTIN .* is not a GSTIN"):
            check_gstin(bad, "buyer GSTIN")


def test_states_by_name_or_code() -> None:
    assert state_code("Karnataka") == "29" == state_code("29") == state_code(" karnataka ")
    assert state_code("7") == "07"
    with pytest.raises(InputError, match="'Atlantis' is not an Indian state"):
        state_code("Atlantis")


def test_place_of_supply_decides_igst() -> None:
    assert not supply("29", KA).inter_state
    assert supply("29", KA, MH).inter_state and supply("29", KA, MH).place == "27"
    assert not supply("29", KA, KA_BUYER).inter_state  # a registered buyer in the same state
    assert supply("29", KA, None, "Kerala").place == "32"  # goods delivered to another state
    with pytest.raises(InputError, match="store's state is not set"):
        supply("", "", MH)
    with pytest.raises(InputError, match="is the store's own"):
        supply("29", KA, KA)


# -- price bands ----------------------------------------------------------------------------------


def test_bands_read_from_text_and_stored_form() -> None:
    bands = parse_bands("5% up to 2500, 18% above")
    assert bands == APPAREL == (Band(500, 250_000), Band(1800))
    assert parse_bands([{"rate": 500, "up_to": 250_000}, {"rate": 1800, "up_to": None}]) == bands
    assert describe_bands(bands) == "5% up to ₹2,500.00 a piece, 18% above"
    for bad, why in [
        ("5% up to 2500", "last band"),
        ("18% above, 5% up to 2500", "last band"),
        ("5% up to 2500, 12% up to 1000, 18% above", "rise"),
        ("five percent", "is not a band"),
        ("150% above", "more than 100%"),
    ]:
        with pytest.raises(InputError, match=why):
            parse_bands(bad, "[gst.bands] Tops")


def test_the_band_is_chosen_from_the_value_per_piece_before_gst() -> None:
    # ₹2,625.00 inclusive is ₹2,500.00 before 5 % GST: the last price taxed at 5 %.
    assert band_rate(APPAREL, 262_500, 1) == 500
    assert band_rate(APPAREL, 262_501, 1) == 1800
    assert band_rate(APPAREL, 3 * 262_500, 3) == 500  # per piece, not per line
    assert band_rate(APPAREL, 3 * 262_500 + 1, 3) == 1800


def test_rules_by_category_then_longest_hsn_prefix() -> None:
    rules = GstRules().merged({"Gifts": (Band(1200),), "hsn:6403": (Band(1800),), "hsn:63": None})
    assert rules.for_product("Tops", "610910") == APPAREL  # the law's default for chapter 61
    assert rules.for_product("Gifts", "610910") == (Band(1200),)  # the category wins
    assert rules.for_product("Footwear", "640399") == (Band(1800),)  # longer prefix wins
    assert rules.for_product("Footwear", "640419") == APPAREL
    assert rules.for_product("Home", "630260") == ()  # removed: the catalogue rate applies
    assert rules.for_product("Belts", "420330") == ()


def _apparel(price: int, hsn: str = "620342") -> Product:
    return Product("JNS", "Jeans", price, 1200, hsn=hsn, gst_bands=APPAREL)


def test_a_discount_can_move_a_line_into_the_lower_band() -> None:
    full = price_lines([CartLine(_apparel(299_900), 1)])
    assert full.lines[0]["gst_rate"] == 1800
    line_off = price_lines([CartLine(_apparel(299_900), 1, "20%")])  # ₹2,399.20
    assert line_off.lines[0]["gst_rate"] == 500
    sale_off = price_lines([CartLine(_apparel(299_900), 1)], "20%")
    assert sale_off.lines[0]["gst_rate"] == 500 and sale_off.total == 239_920
    assert sale_off.lines[0]["hsn"] == "620342"


# -- the split ------------------------------------------------------------------------------------


@given(st.integers(0, 10**10), st.sampled_from([0, 250, 500, 1200, 1800, 2800]))
def test_cgst_and_sgst_are_equal_halves_and_everything_adds_up(total: int, rate: int) -> None:
    intra = split(total, rate, False)
    inter = split(total, rate, True)
    assert intra.cgst == intra.sgst and intra.igst == 0
    assert intra.taxable + intra.tax == total == inter.taxable + inter.tax
    assert inter.cgst == inter.sgst == 0
    assert abs(inter.igst - intra.tax) <= 1  # each rounded to the paisa on its own
    # the tax is within a paisa of the exact rate on the taxable value
    assert abs(intra.tax * 10000 - intra.taxable * rate) <= 10000 + rate


def test_an_odd_paisa_of_tax_stays_in_the_taxable_value() -> None:
    t = split(10_501, 500, False)  # exactly 500.0476... paise of GST in ₹105.01
    assert (t.taxable, t.cgst, t.sgst) == (10_001, 250, 250)
    assert split(10_501, 500, True).igst == 500
    # a sale recorded before the split carries one tax: halved, the odd paisa to CGST
    old = recorded_split({"total": 10_501, "tax": 501}, False)
    assert (old.cgst, old.sgst, old.taxable) == (251, 250, 10_000)
    back = recorded_split({"total": -10_501, "tax": -501}, False)
    assert (back.cgst, back.sgst) == (-251, -250)


carts = st.lists(
    st.tuples(
        st.integers(1, 500_000),
        st.integers(1, 5),
        st.sampled_from([None, "10%", "33%", "1.5"]),
        st.booleans(),
    ),
    min_size=1,
    max_size=8,
)


@given(carts, st.sampled_from([None, "7%", "99"]), st.booleans())
def test_invoice_totals_are_the_sums_of_their_lines(
    cart: list[tuple[int, int, str | None, bool]], discount: str | None, inter: bool
) -> None:
    lines = [
        CartLine(Product(f"P{i}", "p", price, 500, gst_bands=APPAREL if banded else ()), qty, disc)
        for i, (price, qty, disc, banded) in enumerate(cart)
    ]
    try:
        priced = price_lines(lines, discount, Supply("29", "27" if inter else "29"))
    except InputError:
        return  # a discount larger than what it applies to
    tax = invoice_tax({"lines": priced.lines, "place_of_supply": "27" if inter else "29",
                       "seller_state": "29"})  # fmt: skip
    assert priced.tax == tax.tax == sum(ln["tax"] for ln in priced.lines)
    assert tax.taxable + tax.tax == priced.total
    for ln in priced.lines:
        assert ln["cgst"] + ln["sgst"] + ln["igst"] == ln["tax"]
        assert (ln["igst"] > 0) <= inter and ln["cgst"] == ln["sgst"]


# -- selling: intra-state, inter-state, B2B, returns ----------------------------------------------


def set_store(node: Node, **store: str) -> None:
    path = node.path / "meshpos.toml"
    doc = tomllib.loads(path.read_text())
    doc["store"].update(store)
    path.write_text(tomli_w.dumps(doc))


def test_intra_state_sale_carries_cgst_and_sgst_and_the_seller(node: Node) -> None:
    set_store(node, gstin=KA)
    sale = node.sell("JNS-BLA-M", "TSH-NAV-M")
    assert [ln["hsn"] for ln in sale["lines"]] == ["620342", "610910"]
    assert [ln["gst_rate"] for ln in sale["lines"]] == [500, 500]  # ₹1,999 jeans: 5 %, not 12
    assert sale["seller_gstin"] == KA and sale["place_of_supply"] == sale["seller_state"] == "29"
    assert "buyer_gstin" not in sale and sale["igst"] == 0
    assert sale["cgst"] == sale["sgst"] == sum(ln["cgst"] for ln in sale["lines"])
    assert sale["tax"] == sale["cgst"] + sale["sgst"]


def test_a_buyer_from_another_state_pays_igst(node: Node) -> None:
    set_store(node, gstin=KA, state="Karnataka")
    sale = node.sell("JNS-BLA-M", "--buyer-gstin", MH.lower())
    assert sale["buyer_gstin"] == MH and sale["place_of_supply"] == "27"
    assert sale["igst"] == sale["tax"] == 9519 and sale["cgst"] == sale["sgst"] == 0
    out = node.ok("sell", "JNS-BLA-M", "--buyer-gstin", KA_BUYER).out
    assert "GST CGST ₹47.60 + SGST ₹47.60, place of supply 29-Karnataka" in out
    assert f"buyer GSTIN {KA_BUYER}" in out
    delivered = node.sell("JNS-BLA-M", "--buyer-state", "Goa")
    assert delivered["place_of_supply"] == "30" and delivered["igst"] == 9519


def test_the_text_till_puts_a_registered_buyer_on_the_sale(node: Node) -> None:
    set_store(node, gstin=KA, state="Karnataka")
    t = Terminal.open(node.path)
    said: list[str] = []
    try:
        till = TillConsole(TillSession(t, None), None, said.append)
        before = t.ledger.op_count()
        till.handle("JNS-BLA-M")
        till.handle("gstin " + MH[:-1] + "7")  # a typo: refused at once, the sale unchanged
        assert any("fails its check character" in line for line in said)
        assert till.session.buyer is None and t.ledger.op_count() == before
        till.handle("gstin " + MH.lower())
        assert f"buyer GSTIN {MH}, IGST (to 27-Maharashtra)" in said
        till.handle("done")
        [sale] = [o.payload for o in t.ledger.tail(1) if o.kind == "sale"]
        assert sale["buyer_gstin"] == MH and sale["place_of_supply"] == "27"
        assert sale["igst"] == sale["tax"] == 9519 and sale["cgst"] == 0
        till.handle("JNS-BLA-M")  # the next sale starts without a buyer
        assert till.session.buyer is None
        till.handle("gstin " + KA_BUYER)
        assert f"buyer GSTIN {KA_BUYER}, CGST + SGST" in said
        till.handle("gstin -")
        assert "buyer's GSTIN removed" in said and till.session.buyer is None
    finally:
        t.close()


def test_bad_buyers_are_refused_and_nothing_is_written(node: Node) -> None:
    before = node.snapshot()
    assert "store's state is not set" in node.fail("sell", "CAP", "--buyer-gstin", MH)
    set_store(node, gstin=KA)
    assert "fails its check character" in node.fail("sell", "CAP", "--buyer-gstin", MH[:-1] + "7")
    assert "not an Indian state" in node.fail("sell", "CAP", "--buyer-state", "Wessex")
    assert node.snapshot() == before


def test_store_config_is_checked_at_start(node: Node) -> None:
    set_store(node, gstin="29ABCDE1234F1Z5")
    assert "[store] gstin 29ABCDE1234F1Z5 fails its check character" in node.fail("report", "x")
    set_store(node, gstin=KA, state="27")
    assert "[store] state 27 does not match" in node.fail("report", "x")


def give_back(node: Node, sale_id: str, item: str) -> dict[str, Any]:
    back: dict[str, Any] = node.json("return", sale_id, item)
    return back


def test_returns_give_back_each_head_exactly_over_partial_returns(node: Node) -> None:
    set_store(node, gstin=KA)
    sale = node.sell("JNS-BLA-Mx3", "--buyer-gstin", MH)
    backs = [give_back(node, sale["sale_id"], "JNS-BLA-M") for _ in range(3)]
    assert sum(b["igst"] for b in backs) == sale["igst"]
    assert all(b["place_of_supply"] == "27" and b["buyer_gstin"] == MH for b in backs)
    local = node.sell("TSH-NAV-Mx3", "--discount", "7%")
    parts = [
        give_back(node, local["sale_id"], "TSH-NAV-Mx2"),
        give_back(node, local["sale_id"], "TSH-NAV-M"),
    ]
    for head in ("cgst", "sgst", "tax", "total"):
        assert sum(p[head] for p in parts) == local[head], head
    rows = node.json("report", "gst", "--by", "rate")
    assert all(r["cgst"] == r["sgst"] and r["igst"] == 0 for r in rows)  # everything came back


def test_x_report_and_gst_reports_show_the_split(node: Node) -> None:
    set_store(node, gstin=KA)
    node.sell("JNS-BLA-M", "--buyer-gstin", MH)
    node.sell("TSH-NAV-Mx2")
    x = node.json("report", "x")
    five = next(g for g in x["gst"] if g["gst_rate"] == 500)
    assert five["igst"] == 9519 and five["cgst"] == five["sgst"] > 0
    assert five["taxable"] + five["tax"] == five["taxable_incl"] == 199_900 + 249_800
    hsn = {(r["hsn"], r["gst_rate"]): r for r in node.json("report", "gst", "--by", "hsn")}
    assert hsn["620342", 500]["igst"] == 9519 and hsn["610910", 500]["invoices"] == 1
    b2b = node.json("report", "gst", "--by", "buyer")
    assert [(r["buyer_gstin"], r["igst"]) for r in b2b] == [(MH, 9519)]
    places = {(r["place"], r["state"]) for r in node.json("report", "gst", "--by", "place")}
    assert places == {("27", "Maharashtra"), ("29", "Karnataka")}
    assert "igst" in node.ok("report", "x").out


# -- receipts -------------------------------------------------------------------------------------


def test_the_invoice_carries_what_the_law_asks(node: Node) -> None:
    set_store(node, gstin=KA)
    cid = node.json("customer", "add", "--name", "Asha Rao", "--phone", "9800000001")["customer_id"]
    node.ok("sell", "JNS-BLA-M", "--customer", cid, "--buyer-gstin", MH)
    slip = ed.decode((node.path / "receipts.bin").read_bytes())
    lines = slip.lines
    assert "GSTIN: 29ABCDE1234F1ZW" in lines and "State: Karnataka (29)" in lines
    assert "TAX INVOICE" in lines
    assert any(ln.startswith("Invoice S1-T1-000001 ") for ln in lines)
    assert f"Customer Asha Rao ({cid})" in lines
    assert f"Buyer GSTIN {MH}" in lines and "Place of supply 27-Maharashtra" in lines
    assert "  M / Black  JNS-BLA-M  HSN 620342" in lines
    i = lines.index("HSN       GST            Taxable      IGST")
    assert lines[i + 1] == "620342     5%           1,903.81     95.19"
    assert "Total IGST                           95.19" in lines


def test_a_sale_recorded_before_the_split_still_folds_and_prints(tmp_path: Path) -> None:
    """An op payload as meshpos wrote it before GST invoices (one tax per line, no HSN, no
    supply) replicates into a new ledger, folds into the GST view and prints halves."""
    signer = Signer.generate()
    cfg = NodeConfig(dir=tmp_path, store="OLD", name="T1", node_id=signer.node_id)
    t = Terminal(cfg, signer, Ledger(":memory:", "OLD"), lambda: 1_764_000_000_000)
    old = {
        "sale_id": "OLD-T1-000001", "receipt": "T1-000001", "number": 1, "terminal": "T1",
        "customer": None, "subtotal": 199_900, "discount": 0, "tax": 21_418, "total": 199_900,
        "tenders": [{"method": "cash", "amount": 199_900}], "points_earned": 0,
        "points_redeemed": 0, "ts_ms": 1_764_000_000_000, "ref_sale": None,
        "lines": [{"sku": "JNS", "name": "Jeans", "category": "Bottoms", "qty": 1,
                   "unit_price": 199_900, "discount": 0, "gst_rate": 1200, "tax": 21_417,
                   "total": 199_900}],
    }  # fmt: skip
    t.append("product.upsert", {"sku": "JNS", "fields": {"name": "Jeans", "price": 199_900}})
    op = t.append("sale", old)
    rows = t.ledger.query("SELECT hsn, gst_rate, taxable, cgst, sgst, igst, place FROM sale_tax")
    assert rows == [
        {"hsn": "", "gst_rate": 1200, "taxable": 178_483, "cgst": 10_709, "sgst": 10_708,
         "igst": 0, "place": ""}
    ]  # fmt: skip
    assert t.ledger.verify() == []
    slip = ed.decode(layout.render_bytes(layout.render_receipt(
        receipt_from_sale(op.payload, StoreHeader("Old store"), kind="sale"))))  # fmt: skip
    assert "-         12% 1,784.83    107.09    107.08" in slip.lines
    t.close()


# -- settings, catalogue, upgrades ----------------------------------------------------------------


def test_bands_from_config_and_from_hq_settings(node: Node) -> None:
    path = node.path / "meshpos.toml"
    doc = tomllib.loads(path.read_text())
    doc["gst"] = {"bands": {"Tops": "12% above"}}
    path.write_text(tomli_w.dumps(doc))
    assert node.sell("TEE-M")["lines"][0]["gst_rate"] == 1200  # config: Tops at 12 %
    assert node.sell("TSH-NAV-M")["lines"][0]["gst_rate"] == 1200  # Tops wins over hsn:61
    t = Terminal.open(node.path)
    try:
        value = check_setting("gst.bands.Tops", "5% up to 1000, 18% above")
        assert value == [{"rate": 500, "up_to": 100_000}, {"rate": 1800, "up_to": None}]
        t.append("setting.set", {"key": "gst.bands.Tops", "value": value})
        t.append("setting.set", {"key": "gst.bands.hsn:62", "value": None})
    finally:
        t.close()
    assert node.sell("TEE-M")["lines"][0]["gst_rate"] == 500  # ₹1,000: the setting wins
    assert node.sell("JKT-L")["lines"][0]["gst_rate"] == 1200  # no band: the catalogue's rate
    assert node.sell("JNS-BLA-M")["lines"][0]["gst_rate"] == 500  # hsn:62 removed: catalogue 5 %
    doc["gst"] = {"bands": {"Tops": "5% up to 2500"}}
    path.write_text(tomli_w.dumps(doc))
    assert "[gst.bands] Tops: the last band" in node.fail("report", "x")
    with pytest.raises(InputError, match="hsn:6x"):
        check_setting("gst.bands.hsn:6x", "5% above")


def test_the_catalogue_takes_hsn_codes(node: Node, tmp_path: Path) -> None:
    csv = tmp_path / "p.csv"
    csv.write_text("sku,name,price,gst_rate,hsn,stock\nKRT-1,Kurta,2999,12,6211.42,3\n")
    node.ok("catalog", "import", str(csv))
    sale = node.sell("KRT-1")
    assert sale["lines"][0]["hsn"] == "621142" and sale["lines"][0]["gst_rate"] == 1800
    csv.write_text("sku,name,price,gst_rate,hsn\nKRT-2,Kurta,2999,12,61X\n")
    assert "line 2, column hsn" in node.fail("catalog", "import", str(csv))


def test_the_sample_catalogue_is_taxed_as_apparel_is_today() -> None:
    rows = parse_csv(SAMPLE_CATALOG.read_text(), "sample")
    rules = GstRules()
    assert {str(r.fields["hsn"])[:2] for r in rows} == {"61", "62", "63", "64"}
    for r in rows:
        price, rate = int(r.fields["price"]), int(r.fields["gst_rate"])
        bands = rules.for_product(str(r.fields.get("category", "")), str(r.fields["hsn"]))
        assert rate == band_rate(bands, price, 1), r.sku
        assert rate in (500, 1800), r.sku  # 12 % no longer exists for apparel
    jeans = next(
        r for r in rows if r.fields["name"] == "Slim jeans" and r.fields["price"] == 199_900
    )
    assert jeans.fields["gst_rate"] == 500


LINE_TAX_COLUMNS = ("hsn", "taxable", "cgst", "sgst", "igst", "place", "buyer_gstin")
OLD_SALE_TAX = """CREATE TABLE sale_tax (
    origin TEXT NOT NULL, seq INTEGER NOT NULL, line INTEGER NOT NULL, hsn TEXT NOT NULL,
    gst_rate INTEGER NOT NULL, taxable INTEGER NOT NULL, cgst INTEGER NOT NULL,
    sgst INTEGER NOT NULL, igst INTEGER NOT NULL, place TEXT NOT NULL,
    buyer_gstin TEXT NOT NULL, PRIMARY KEY (origin, seq, line)
) WITHOUT ROWID"""


def _lines_without_tax(conn: sqlite3.Connection) -> None:
    """`sale_lines` as it was before each line's GST joined its row (and its `hlc`, added after)."""
    conn.execute("DROP VIEW sale_tax")
    conn.execute("DROP VIEW all_stock_moves")
    conn.execute("DROP INDEX sale_lines_sku")
    for column in (*LINE_TAX_COLUMNS, "hlc"):
        conn.execute(f"ALTER TABLE sale_lines DROP COLUMN {column}")


def test_an_older_database_gains_the_gst_view_and_verifies(node: Node) -> None:
    node.sell("JNS-BLA-M", "TEE-M")
    with sqlite3.connect(node.db) as conn:  # as meshpos left it before GST invoices
        _lines_without_tax(conn)
        conn.execute("ALTER TABLE products DROP COLUMN hsn")
    node.ok("verify")
    with sqlite3.connect(node.db) as conn:
        assert conn.execute("SELECT COUNT(*) FROM sale_tax").fetchone()[0] == 2
        assert conn.execute("SELECT hsn FROM products WHERE sku = 'JNS-BLA-M'").fetchone() == (
            "620342",
        )
        assert conn.execute("SELECT value FROM meta WHERE key = 'refold'").fetchone() is None


def test_a_database_with_the_sale_tax_table_moves_it_into_sale_lines(node: Node) -> None:
    """A ledger as meshpos wrote it while `sale_tax` was a table of its own (a row per line
    beside `sale_lines`): it opens, drops that table, refolds each line's GST into its
    `sale_lines` row, and the GST view reads what the table held."""
    node.sell("JNS-BLA-M", "TEE-M")
    node.sell("TSH-NAV-M")
    query = "SELECT * FROM sale_tax ORDER BY origin, seq, line"
    with sqlite3.connect(node.db) as conn:
        held = conn.execute(query).fetchall()
        _lines_without_tax(conn)
        conn.execute(OLD_SALE_TAX)
        conn.executemany(f"INSERT INTO sale_tax VALUES ({','.join('?' * 11)})", held)
    assert len(held) == 3 and all(row[4] > 0 and row[6] + row[7] > 0 for row in held)
    node.ok("verify")
    with sqlite3.connect(node.db) as conn:
        kind = conn.execute("SELECT type FROM sqlite_master WHERE name = 'sale_tax'").fetchone()
        assert kind == ("view",)
        assert conn.execute(query).fetchall() == held
        have = {r[1] for r in conn.execute("PRAGMA table_info(sale_lines)")}
        assert set(LINE_TAX_COLUMNS) <= have
        assert conn.execute("SELECT value FROM meta WHERE key = 'refold'").fetchone() is None
