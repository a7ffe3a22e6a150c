"""Gift cards and credit notes (issue 15 item 1).

A card's balance is escrow rights per node (the key `giftcard:<CODE>`), so the rulebook's escrow
rule keeps it from being spent twice, even on a split LAN. The rules are asserted through the
three front doors (the CLI, the text till fed line by line, the web till over HTTP with a cashier
signed in), on the store of tests/test_front_doors.py: T1 and T2 of store S1, Ana at T1.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import pytest
from conftest import Node
from hypothesis import given, settings
from hypothesis import strategies as st
from mesh_helpers import Mesh
from test_front_doors import (
    CASH,
    PINS,
    Outcome,
    Store,
    TextDoor,
    WebDoor,
    door_of,
    recording,
    store,
)

from meshpos.core.errors import InputError
from meshpos.devices import layout
from meshpos.devices.receipt import ReceiptTender, StoreHeader
from meshpos.domain import giftcards
from meshpos.domain.authority import ESCROW, HQ_ONLY
from meshpos.domain.escrow import EscrowShortfall
from meshpos.domain.pricing import Tender, parse_tender
from meshpos.service import giftcards as service
from meshpos.service.rights import explain
from meshpos.service.terminal import Terminal

__all__ = ["store"]  # the front doors' store fixture

JACKET = 300_000  # JKT-L, ₹3,000
CHINOS, CHINOS_PRICE = "CHN-BLA-XL", 224_900


# -- codes ------------------------------------------------------------------------------------------


def test_a_code_carries_a_check_digit_that_catches_a_mistyped_digit() -> None:
    code = giftcards.make_code(giftcards.GIFT_CARD, "123456789012")
    assert code.startswith("GC") and len(code) == 15
    assert giftcards.parse_code(code[:2] + " " + code[2:8] + "-" + code[8:]) == code
    wrong = code[:-1] + str((int(code[-1]) + 1) % 10)
    with pytest.raises(InputError, match="wrong check digit"):
        giftcards.parse_code(wrong)
    with pytest.raises(InputError, match="not a gift card"):
        giftcards.parse_code("TSH-NAV-M")
    assert giftcards.make_code(giftcards.CREDIT_NOTE, "123456789012").startswith("CN")


def test_pay_giftcard_parses_the_code_and_an_optional_amount() -> None:
    assert parse_tender("giftcard:gc1:250") == Tender("giftcard", 25_000, code="GC1")
    assert parse_tender("giftcard:GC1") == Tender("giftcard", None, code="GC1")
    with pytest.raises(InputError, match="give the card's code"):
        parse_tender("giftcard")


def test_a_gift_card_above_the_rbi_limit_or_paid_by_another_card_is_refused(node: Node) -> None:
    assert "₹10,000" in node.fail("giftcard", "issue", "--amount", "10001")
    t = Terminal.open(node.path)
    try:
        code = service.issue(t, "500")
        with pytest.raises(InputError, match="not by giftcard"):
            service.issue(t, "100", tenders=[Tender("giftcard", code=code.payload["code"])])
        assert t.ledger.giftcards.balance(code.payload["code"]) == 50_000
    finally:
        t.close()


# -- the three front doors --------------------------------------------------------------------------


class Door(Protocol):
    name: str

    def pay_with_card(
        self, items: list[str], code: str, amount: str | None, rest: bool = True
    ) -> Outcome:
        """Ring `items`, pay with the card (AMOUNT, or as much as it covers), the rest (if
        `rest`) in cash, and finish."""

    def return_to_credit_note(self, sale_id: str, sku: str) -> Outcome: ...


class CliDoor:
    name = "cli"

    def __init__(self, store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
        self.node = store.t1
        self.mp = monkeypatch

    def _run(self, *args: str) -> Outcome:
        with recording(self.node.path) as op:
            r = self.node.run(*args, user="ana")
        return Outcome(op[0], (r.out + r.err).strip())

    def pay_with_card(
        self, items: list[str], code: str, amount: str | None, rest: bool = True
    ) -> Outcome:
        card = f"giftcard:{code}" + (f":{amount}" if amount else "")
        return self._run("sell", *items, "--pay", card, *(["--pay", "cash"] if rest else []))

    def return_to_credit_note(self, sale_id: str, sku: str) -> Outcome:
        """Above the refund limit: Sam approves with his PIN."""
        with self.mp.context() as mp:
            mp.setenv("MESHPOS_APPROVER_PIN", PINS["sam"])
            return self._run("return", sale_id, sku, "--refund", "credit-note", "--approve", "sam")


class TextTill(TextDoor):
    def pay_with_card(
        self, items: list[str], code: str, amount: str | None, rest: bool = True
    ) -> Outcome:
        # Scanning the card pays as much as it covers; a typed `pay giftcard` takes an amount.
        pay = f"pay giftcard {code} {amount}" if amount else code
        script = [*items, pay, *(["pay cash"] if rest else []), "done"]
        return self._feed(script, approve=False, oversell=False, pay=CASH)

    def return_to_credit_note(self, sale_id: str, sku: str) -> Outcome:
        return self._feed(
            [f"return {sale_id}", sku, "refund credit-note", "done"],
            approve=True,
            oversell=False,
            pay=CASH,
        )


class WebTill(WebDoor):
    def pay_with_card(
        self, items: list[str], code: str, amount: str | None, rest: bool = True
    ) -> Outcome:
        self.said.clear()
        self.refused = False
        with recording(self.node.path) as op:
            for sku in items:
                self.post("/till/scan", code=sku)
            if amount:
                self.post("/till/pay", method="giftcard", code=code, amount=amount)
            else:
                self.post("/till/scan", code=code)  # the card's barcode
            if rest:
                self.post("/till/pay", method="cash")
            self.post("/till/complete")
        return self._outcome(op)

    def return_to_credit_note(self, sale_id: str, sku: str) -> Outcome:
        self.said.clear()
        self.refused = False
        with recording(self.node.path) as op:
            self.post("/till/scan", code=sale_id)
            self.post("/till/scan", code=sku)
            self.post("/till/refund", method="credit_note")
            self.post("/till/complete", approve=True)
        return self._outcome(op)


@pytest.fixture(params=["cli", "text", "web"])
def door(
    request: pytest.FixtureRequest, store: Store, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Door]:
    with door_of(request.param, store, monkeypatch, (CliDoor, TextTill, WebTill)) as opened:
        yield opened


def issue(node: Node, rupees: str) -> str:
    return str(node.ok("giftcard", "issue", "--amount", rupees).out.strip())


def card(node: Node, code: str) -> dict[str, Any]:
    found: dict[str, Any] = node.json("giftcard", "show", code)
    return found


def gift_tenders(outcome: Outcome) -> list[dict[str, Any]]:
    return [t for t in outcome.payload["tenders"] if t["method"] in ("giftcard", "credit_note")]


def test_a_gift_card_pays_part_of_a_sale_and_keeps_the_rest(door: Door, store: Store) -> None:
    code = issue(store.t1, "1000")
    out = door.pay_with_card([CHINOS], code, "400")
    assert gift_tenders(out) == [{"method": "giftcard", "amount": 40_000, "code": code}]
    assert sum(t["amount"] for t in out.payload["tenders"]) == CHINOS_PRICE
    assert card(store.t1, code)["balance"] == 60_000
    # Scanned (or without an amount) it pays what it covers: the rest of its balance.
    out = door.pay_with_card([CHINOS], code, None)
    assert gift_tenders(out) == [{"method": "giftcard", "amount": 60_000, "code": code}]
    shown = card(store.t1, code)
    assert shown["balance"] == 0
    assert [m["delta"] for m in shown["history"]] == [100_000, -40_000, -60_000]


def test_a_card_held_by_another_counter_is_refused_before_any_tender(
    door: Door, store: Store
) -> None:
    code = issue(store.t2, "1000")
    store.t2.ok("sync", "export", str(store.t2.path / "gc.bundle"))
    store.t1.ok("sync", "import", str(store.t2.path / "gc.bundle"))
    out = door.pay_with_card([CHINOS], code, "400")
    assert out.op is None and not out.tendered
    assert "held elsewhere: T2 holds ₹1,000.00" in out.said
    assert card(store.t1, code)["balance"] == 100_000


def test_a_return_is_refunded_to_a_credit_note_that_pays_later(door: Door, store: Store) -> None:
    out = door.return_to_credit_note(store.big_sale, "JKT-L")
    (note,) = gift_tenders(out)
    assert note["method"] == "credit_note" and note["amount"] == JACKET
    code = note["code"]
    assert code.startswith("CN") and code in out.said
    shown = card(store.t1, code)
    assert shown["kind"] == "credit_note" and shown["balance"] == JACKET
    assert shown["expires"] is not None
    spent = door.pay_with_card(["TSH-NAV-M"], code, None, rest=False)
    paid = gift_tenders(spent)[0]["amount"]
    assert 0 < paid == spent.payload["total"]
    assert card(store.t1, code)["balance"] == JACKET - paid


def test_the_share_a_gift_card_paid_comes_back_as_a_credit_note_not_cash(node: Node) -> None:
    code = issue(node, "1000")
    sale = node.json("sell", "JKT-L", "--pay", f"giftcard:{code}", "--pay", "cash")
    back = node.json("return", sale["sale_id"], "JKT-L")
    methods = {t["method"]: t["amount"] for t in back["tenders"]}
    assert methods == {"credit_note": 100_000, "cash": JACKET - 100_000}


def test_an_exchange_difference_goes_to_a_credit_note(node: Node) -> None:
    sale = node.json("sell", "JKT-L")
    out = node.json(
        "exchange", sale["sale_id"], "--back", "JKT-L", "--take", "TSH-NAV-M",
        "--refund", "credit-note",
    )  # fmt: skip
    (note,) = out["tenders"]
    assert note["method"] == "credit_note" and note["amount"] == out["total"] < 0
    assert card(node, note["code"])["balance"] == -out["total"]


def test_an_expired_card_and_a_spent_one_are_refused_and_nothing_is_recorded(node: Node) -> None:
    code = issue(node, "100")
    t = Terminal.open(node.path, now_ms=lambda: 4_000_000_000_000)  # in 2096
    try:
        with pytest.raises(InputError, match=f"gift card {code} expired on"):
            t.sell([("JKT-L", 1)], tenders=[Tender("giftcard", code=code), Tender("cash")])
    finally:
        t.close()
    node.sell(CHINOS, "--pay", f"giftcard:{code}", "--pay", "cash")
    said = node.fail("sell", CHINOS, "--pay", f"giftcard:{code}:50", "--pay", "cash")
    assert "has ₹0.00 left" in said
    assert "not known at this store" in node.fail("giftcard", "show", "GC1234567890128")


def test_another_stores_card_with_an_amount_is_refused_saying_only_hq_moves_it(node: Node) -> None:
    """No counter of this store holds any of it: the words must not send the cashier looking
    for one."""
    said = node.fail("sell", CHINOS, "--pay", "giftcard:GC1234567890128:50", "--pay", "cash")
    said = " ".join(said.split())
    assert "card GC1234567890128: ₹50.00 asked, but this counter may spend only ₹0.00" in said
    assert (
        "No counter of this store holds any of it: another store's card is spent through HQ" in said
    )
    assert "counter holding it" not in said, said


# -- escrow: a split LAN, a tampered till, HQ only between stores --------------------------------


def spend(mesh: Mesh, i: int, code: str, amount: int) -> None:
    mesh.sell(i, [("SKU7", 1)], tenders=[Tender("giftcard", amount, code=code), Tender("cash")])


def test_two_counters_on_a_split_lan_cannot_spend_the_same_card_twice() -> None:
    mesh = Mesh(2, customers=0)
    code = mesh.act(0, lambda t: service.issue(t, 100_000)).payload["code"]
    key = giftcards.escrow_key(code)
    mesh.settle()
    mesh.partition([0], [1])
    spend(mesh, 0, code, 30_000)
    with pytest.raises(EscrowShortfall) as short:
        spend(mesh, 1, code, 30_000)
    said = str(explain(mesh.nodes[1].terminal, short.value))
    assert f"card {code}: ₹300.00 asked" in said and "held elsewhere: T0" in said
    mesh.heal()
    assert mesh.ask_rights(1, key, 70_000) == 1
    mesh.settle()
    spend(mesh, 1, code, 70_000)
    mesh.settle()
    for node in mesh.nodes:
        assert node.ledger.giftcards.balance(code) == 0
        assert node.ledger.views.conflicts() == []
    with pytest.raises(InputError, match=r"has ₹0\.00 left"):
        spend(mesh, 0, code, 100)


def forge(t: Terminal, kind: str, payload: dict[str, Any]) -> None:
    """An op written past the service's checks, as a tampered till would sign it."""
    hlc = t.clock.observe(t.ledger.max_hlc(), t.now_ms())
    t.ledger.append(t.signer, kind=kind, payload=payload, user="x", hlc=hlc)


def test_a_tampered_till_spending_a_card_it_does_not_hold_changes_no_balance() -> None:
    mesh = Mesh(2, customers=0)
    code = mesh.act(0, lambda t: service.issue(t, 50_000)).payload["code"]
    mesh.settle()
    t1 = mesh.nodes[1].terminal
    forged = {
        **t1.sell([("SKU0", 1)]).payload,
        "sale_id": "S1-T1-999999",
        "number": 999_999,
        "tenders": [{"method": "giftcard", "amount": 49_900, "code": code}],
    }
    hq_move = {"customer_id": giftcards.escrow_key(code), "delta": 50_000, "reason": "mint"}
    forever = {"code": code, "kind": "giftcard", "amount": 50_000, "store": "S9"}  # no expiry
    expires = mesh.nodes[0].terminal.giftcard(code).expires_ms
    mesh.act(1, lambda t: forge(t, "sale", forged))
    mesh.act(1, lambda t: forge(t, "loyalty.adjust", hq_move))
    mesh.act(1, lambda t: forge(t, "giftcard.known", forever))
    mesh.settle()
    for node in mesh.nodes:
        assert node.ledger.giftcards.balance(code) == 50_000
        assert node.terminal.giftcard(code).expires_ms == expires is not None
        rules = {row["rule"] for row in node.ledger.views.unauthorised()}
        assert rules == {ESCROW, HQ_ONLY}


@settings(max_examples=25, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 2), st.integers(1, 40_000), st.booleans()),
        min_size=1,
        max_size=12,
    )
)
def test_whatever_the_splits_a_card_never_pays_more_than_it_holds(
    plan: list[tuple[int, int, bool]],
) -> None:
    mesh = Mesh(3, customers=0, rows=None)
    code = mesh.act(0, lambda t: service.issue(t, 100_000)).payload["code"]
    key = giftcards.escrow_key(code)
    mesh.settle()
    paid = 0
    for i, amount, split in plan:
        if split:
            mesh.partition([i], [j for j in range(3) if j != i])
        else:
            mesh.heal()
            mesh.ask_rights(i, key, amount)
        mesh.settle()
        try:
            spend(mesh, i, code, amount)
            paid += amount
        except (EscrowShortfall, InputError):
            pass
    mesh.heal()
    mesh.settle()
    balances = {node.ledger.giftcards.balance(code) for node in mesh.nodes}
    assert balances == {100_000 - paid} and paid <= 100_000
    assert all(not node.ledger.views.unauthorised() for node in mesh.nodes)


# -- printed with a barcode ----------------------------------------------------------------------


def test_a_gift_card_slip_and_a_credit_note_carry_the_code_as_a_barcode() -> None:
    header = StoreHeader("Shop")
    slip = layout.render_voucher(
        header, title="GIFT CARD", code="GC1234567890128", amount=100_000, expires="2027-01-01",
        issued="01-01-2026 10:00",
    )  # fmt: skip
    assert layout.Barcode("GC1234567890128") in slip
    assert any(isinstance(c, layout.Text) and "Valid until 2027-01-01" in c.text for c in slip)
    note = ReceiptTender("credit_note", 50_000, code="CN1234567890121")
    commands = layout._voucher_code(
        "CREDIT NOTE", note.code, note.amount, "", layout.LayoutOptions()
    )
    assert layout.Barcode("CN1234567890121") in commands


def test_the_printer_gets_the_card_slip_and_the_credit_note_under_the_return(
    node: Node, tmp_path: Path
) -> None:
    out = tmp_path / "printer.bin"
    cfg = node.path / "meshpos.toml"
    cfg.write_text(cfg.read_text() + f'\n[printer]\nkind = "file"\npath = "{out}"\n')
    code = issue(node, "250")
    slip = out.read_bytes()
    assert b"GIFT CARD" in slip and b"Value 250.00" in slip
    assert b"\x1dk" in slip and code.encode() in slip  # GS k: a hardware barcode of the code
    sale = node.json("sell", "CAP", "--pay", f"giftcard:{code}")
    assert f"Gift card {code}".encode() in out.read_bytes()
    back = node.json("return", sale["sale_id"], "CAP")
    (note,) = back["tenders"]
    printed = out.read_bytes()
    assert b"CREDIT NOTE" in printed and note["code"].encode() in printed


def test_the_x_report_counts_the_gift_cards_sold_and_how_they_were_paid(node: Node) -> None:
    node.ok("giftcard", "issue", "--amount", "1000")
    node.ok("giftcard", "issue", "--amount", "500", "--pay", "upi", "--upi-ref", "412345678901")
    node.sell("TSH-NAV-M")
    x = node.json("report", "x")
    assert (x["sales"], x["net"]) == (1, 124_900)  # a gift card sold is not a sale
    assert (x["giftcards_sold"], x["giftcards_amount"]) == (2, 150_000)
    assert x["giftcard_tenders"] == [
        {"method": "cash", "amount": 100_000}, {"method": "upi", "amount": 50_000}
    ]  # fmt: skip
    node.json("report", "z")
    assert node.json("report", "x")["giftcards_sold"] == 0


def test_the_web_till_refunds_an_exchange_difference_as_a_credit_note(store: Store) -> None:
    web = WebTill(store)
    try:
        with recording(store.t1.path) as op:
            web.post("/till/scan", code=store.big_sale)
            web.post("/till/scan", code="JKT-L")
            web.post("/till/exchange")
            web.post("/till/scan", code="TSH-NAV-M")
            assert "Refund as credit note" in web.c.get("/part/till").text
            web.post("/till/complete", approve=True, method="credit_note")
        out = web._outcome(op)
    finally:
        web.close()
    (note,) = out.payload["tenders"]
    assert note["method"] == "credit_note" and note["amount"] == out.payload["total"] < 0
    assert card(store.t1, note["code"])["balance"] == -out.payload["total"]
    assert f"credit note {note['code']}" in out.said


@pytest.mark.parametrize("door", ["cli", "text", "web"])
def test_a_gift_card_is_sold_at_every_door_and_its_balance_read_back(
    door: str, store: Store
) -> None:
    node = store.t1
    with recording(node.path) as op:
        if door == "cli":
            node.ok("giftcard", "issue", "--amount", "750", "--pay", "upi", "--upi-ref",
                    "412345678901", user="ana")  # fmt: skip
        elif door == "text":
            text = TextTill(store)
            try:
                text.console.handle("giftcard sell 750 upi 412345678901")
                assert any("sold for ₹750.00" in line for line in text.lines)
            finally:
                text.close()
        else:
            web = WebTill(store)
            try:
                html = web.post("/till/giftcard", amount="750", method="upi",
                                upi_ref="412345678901")  # fmt: skip
                assert "sold for ₹750.00" in html and 'data-level="ok"' in html
            finally:
                web.close()
    assert op[0] is not None and op[0].kind == "giftcard.issue" and op[0].user == "ana"
    p = op[0].payload
    assert p["amount"] == 75_000
    assert p["tenders"] == [
        {"method": "upi", "amount": 75_000, "upi_ref": "412345678901", "pending": True}
    ]
    text = TextTill(store)
    try:
        text.console.handle(f"giftcard {p['code']}")
        assert any(f"gift card {p['code']}: ₹750.00 left" in line for line in text.lines)
        text.console.handle("giftcard sell 20000")
        assert any("RBI's limit" in line for line in text.lines)
    finally:
        text.close()
