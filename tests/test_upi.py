"""UPI (issue 15 item 2): the `upi://pay` request the till shows or prints, the UTR the cashier
confirms it with at every front door, and HQ's reconciliation against the bank's settlement file
(a missing and a wrong-amount payment open conflicts at the store)."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest
from conftest import Node, run_cli
from hq_helpers import HQServer, make_store
from test_front_doors import CASH, Outcome, Store, TextDoor, WebDoor, recording, store
from test_giftcards_hq import hq

from meshpos.core.errors import ConfigError, InputError
from meshpos.devices import layout
from meshpos.devices.receipt import StoreHeader
from meshpos.domain import upi
from meshpos.domain.pricing import Tender
from meshpos.node import membership
from meshpos.service import printing
from meshpos.service.config import load_config
from meshpos.service.conflict_words import describe
from meshpos.service.terminal import Terminal
from meshpos.service.till import TillSession

__all__ = ["hq", "store"]  # fixtures shared with the front doors' and gift cards' tests

UTR = "412345678901"
VPA = "kalafashions@okaxis"


def test_the_request_carries_the_vpa_the_amount_and_the_sale_reference() -> None:
    uri = upi.pay_uri(VPA, "Kala Fashions", 124_950, "S1-T1-000042")
    parsed = urlparse(uri)
    assert parsed.scheme == "upi" and parsed.netloc == "pay"
    q = {k: v[0] for k, v in parse_qs(parsed.query).items()}
    assert q == {"pa": VPA, "pn": "Kala Fashions", "am": "1249.50", "cu": "INR",
                 "tr": "S1-T1-000042", "tn": "Bill S1-T1-000042"}  # fmt: skip
    with pytest.raises(InputError, match="not a UPI id"):
        upi.pay_uri("not a vpa", "x", 100, "r")


def test_a_utr_is_twelve_digits() -> None:
    assert upi.check_ref("4123 4567 8901") == UTR
    for bad in ("41234567890", "41234567890A", ""):
        with pytest.raises(InputError, match="12-digit UTR"):
            upi.check_ref(bad)


# -- the three front doors ----------------------------------------------------------------------


def with_vpa(node: Node) -> None:
    membership.set_config(load_config(node.path), "store", "upi_vpa", VPA)


def pay_upi(door: str, store: Store, utr: str) -> Outcome:
    with_vpa(store.t1)
    if door == "cli":
        with recording(store.t1.path) as op:
            r = store.t1.run("sell", "TSH-NAV-M", "--pay", "upi", "--upi-ref", utr, user="ana")
        return Outcome(op[0], (r.out + r.err).strip())
    if door == "text":
        text = TextDoor(store)
        try:
            text.console.handle("TSH-NAV-M")
            text.console.handle("pay upi")
            said = "\n".join(text.lines)
            assert f"UPI: ₹1,249.00 to {VPA}, reference S1-T1-000002" in said
            assert "█" in said  # the QR code, drawn in the terminal
            assert text.console.asks and "UTR" in text.console.asks[0].prompt
            return text._feed([utr, "done"], approve=False, oversell=False, pay=CASH)
        finally:
            text.close()
    web = WebDoor(store)
    try:
        web.post("/till/scan", code="TSH-NAV-M")
        svg = web.c.get("/till/upi.svg")
        assert svg.status_code == 200 and svg.headers["content-type"] == "image/svg+xml"
        assert svg.text.startswith("<svg") and "<path" in svg.text
        assert VPA in web.c.get("/part/till").text
        with recording(store.t1.path) as op:
            web.post("/till/pay", method="upi", upi_ref=utr)
            web.post("/till/complete")
        return web._outcome(op)
    finally:
        web.close()


@pytest.mark.parametrize("door", ["cli", "text", "web"])
def test_a_upi_payment_is_recorded_with_its_utr_pending_reconciliation(
    door: str, store: Store
) -> None:
    out = pay_upi(door, store, UTR)
    (tender,) = out.payload["tenders"]
    assert tender == {"method": "upi", "amount": 124_900, "upi_ref": UTR, "pending": True}


@pytest.mark.parametrize("door", ["cli", "text", "web"])
def test_a_upi_payment_without_a_proper_utr_is_refused(door: str, store: Store) -> None:
    out = pay_upi(door, store, "12345")
    assert out.op is None and "12-digit UTR" in out.said


def test_without_a_vpa_the_till_says_where_to_set_it(node: Node) -> None:
    t = Terminal.open(node.path)
    try:
        till = TillSession(t)
        till.add_code("TSH-NAV-M")
        with pytest.raises(ConfigError, match=r"upi_vpa = 'shop@okaxis' under \[store\]"):
            till.upi_request()
    finally:
        t.close()


def test_the_text_till_prints_the_request_as_a_qr_slip() -> None:
    slip = layout.render_upi_request(
        StoreHeader("Kala Fashions"), uri="upi://pay?pa=x@y&am=1.00", vpa="x@y", amount=100,
        reference="S1-T1-000001",
    )  # fmt: skip
    assert layout.QRCode("upi://pay?pa=x@y&am=1.00", size=8) in slip
    assert any(isinstance(c, layout.Text) and "Amount INR 1.00" in c.text for c in slip)
    assert printing.UPI_REQUEST == "upi.request"


# -- HQ's reconciliation --------------------------------------------------------------------------


SETTLEMENT = """Txn Date,Bank RRN,Merchant Tran ID,Txn Amount,Status
2026-12-07,{ok},{ok_ref},1249.00,SUCCESS
2026-12-07,{short},{short_ref},1000.00,SUCCESS
2026-12-07,999999999999,X-1,50.00,FAILED
"""


def test_settlement_files_are_read_by_the_banks_column_names() -> None:
    rows = upi.parse_settlement(
        SETTLEMENT.format(ok=UTR, ok_ref="A", short="1" * 12, short_ref="B")
    )
    assert [(r.utr, r.reference, r.amount) for r in rows] == [
        (UTR, "A", 124_900), ("1" * 12, "B", 100_000)
    ]  # fmt: skip
    with pytest.raises(InputError, match="line 2: UTR '12' is not 12 digits"):
        upi.parse_settlement("utr,amount\n12,5.00\n")
    with pytest.raises(InputError, match="needs an amount column"):
        upi.parse_settlement("utr,when\n")


def test_hq_matches_the_file_and_a_missing_and_a_wrong_amount_payment_open_conflicts(
    hq: HQServer, tmp_path: Path
) -> None:
    svc = hq.service()
    st = make_store(hq, tmp_path, 1, svc=svc)
    try:
        t = st.t1
        sales = [
            t.sell([("TEE", 1)], tenders=[Tender("upi", upi_ref=utr)]).sale_id
            for utr in (UTR, "2" * 12, "3" * 12)
        ]
        cash = t.sell([("CAP", 1)]).sale_id  # no UPI: not reconciled
        st.relay()
        sample = tmp_path / "settlement.csv"
        sample.write_text(
            "Txn Date,Bank RRN,Merchant Tran ID,Txn Amount,Status\n"
            f"2026-12-07,{UTR},{sales[0]},1000.00,SUCCESS\n"
            f"2026-12-07,{'2' * 12},{sales[1]},900.00,SUCCESS\n"
        )  # the third payment never reached the bank; the second is ₹100 short
        r = run_cli(["hq", "upi", "import", str(sample), "--dir", str(hq.dir), "--through",
                     "2999-01-01", "--json"])  # fmt: skip
        assert r.code == 0, r.err
        verdicts = {v["sale_id"]: (v["status"], v["settled"]) for v in r.json()}
        assert verdicts == {
            sales[0]: ("matched", 100_000),
            sales[1]: ("wrong_amount", 90_000),
            sales[2]: ("missing", None),
        }
        assert cash not in verdicts
        st.relay()
        conflicts = {c["conflict_id"]: c for c in t.conflicts()}
        assert set(conflicts) == {f"upi_unsettled:{sales[1]}", f"upi_unsettled:{sales[2]}"}
        short = conflicts[f"upi_unsettled:{sales[1]}"]["detail"]
        assert short["settled"] == 90_000 and short["utr"] == "2" * 12
        words = describe(conflicts[f"upi_unsettled:{sales[1]}"], {}, {})
        assert words.title == f"A UPI payment on sale {sales[1]} did not reach the bank as recorded"
        assert "(UTR 222222222222) settled only ₹900.00" in words.what
        # Importing the same file again signs nothing new (what stays missing is not said
        # again); a later file with the missing payment settles it and its conflict closes.
        heads = svc.storage.vv(st.id)
        again = svc.import_upi(sample.read_text(), 2**62)
        assert [v.status for v in again] == ["wrong_amount"]
        assert svc.storage.vv(st.id) == heads
        late = f"utr,reference,amount\n{'3' * 12},{sales[2]},1000.00\n"
        assert [v.status for v in svc.import_upi(late, 2**62)] == ["matched"]
        st.relay()
        assert {c["conflict_id"] for c in t.conflicts()} == {f"upi_unsettled:{sales[1]}"}
    finally:
        st.close()
        svc.close()


def test_the_receipt_says_the_upi_payment_awaits_reconciliation(node: Node, tmp_path: Path) -> None:
    out = tmp_path / "printer.bin"
    cfg = node.path / "meshpos.toml"
    cfg.write_text(cfg.read_text() + f'\n[printer]\nkind = "file"\npath = "{out}"\n')
    node.sell("CAP", "--pay", "upi", "--upi-ref", UTR)
    printed = out.read_bytes()
    assert f"UTR {UTR}".encode() in printed and b"UPI pending reconciliation" in printed
