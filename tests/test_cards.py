"""Offline card payments at the till (meshpos/service/cards.py): capture and sealing, offline refusals,
floor limits, the store's card float as escrow across a split LAN, HQ's results releasing it, and
peers refusing HQ-only ops from anyone else."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from card_helpers import FakeHQ
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from mesh_helpers import EPOCH_MS, Mesh

from meshpos.core.errors import EncodingError, InputError, RemoteError
from meshpos.core.ops import Signer
from meshpos.devices.layout import Text, render_receipt
from meshpos.devices.receipt import StoreHeader, receipt_from_sale
from meshpos.domain.cards import CardRefused, open_card, sealed_from_tender
from meshpos.domain.catalog import CatalogRow
from meshpos.domain.pricing import Tender
from meshpos.ledger.fold import CARD_FLOAT
from meshpos.ledger.store import Ledger
from meshpos.service import cards
from meshpos.service.card_scan import find_card_numbers
from meshpos.service.cards import (
    CardFloatShortfall,
    FloorLimitExceeded,
    read_card,
    read_card_line,
)
from meshpos.service.config import NodeConfig
from meshpos.service.terminal import Terminal
from meshpos.service.till import TillSession

VISA = cards.TEST_CARDS["visa"]
DECLINED = cards.TEST_CARDS["declined"]


ROWS = [
    CatalogRow(line=2, sku="TEE", fields={"name": "Tee", "price": 99_900, "gst_rate": 1200},
               stock=50),
    CatalogRow(line=3, sku="JKT", fields={"name": "Jacket", "price": 450_000, "gst_rate": 1200},
               stock=10),
]  # fmt: skip


def make_terminal(path: Path | str, name: str = "T1", seed: str = "a") -> Terminal:
    s = Signer.from_seed(f"cards-{seed}".encode())
    cfg = NodeConfig(dir=Path("/nonexistent"), store="S1", name=name, node_id=s.node_id)
    ledger = Ledger(path, "S1", durable=False) if str(path) == ":memory:" else Ledger(path, "S1")
    return Terminal(cfg, s, ledger, now_ms=lambda: EPOCH_MS)


@pytest.fixture
def till(tmp_path: Path) -> Iterator[tuple[Terminal, FakeHQ]]:
    """One terminal on a database file, catalogue loaded, HQ's key and ₹20,000 of float held."""
    t = make_terminal(tmp_path / "meshpos.db")
    t.import_catalog(ROWS)
    hq = FakeHQ()
    hq.mint(t.node_id, 2_000_000)
    hq.give(t)
    yield t, hq
    t.close()


def sell_card(t: Terminal, card: str = VISA, items: Any = (("TEE", 1),), **kw: Any) -> Any:
    return t.sell(list(items), tenders=kw.pop("tenders", [Tender("card")]),
                  card=read_card(card, "12/30"), **kw)  # fmt: skip


def op_count(t: Terminal) -> int:
    return t.ledger.op_count()


# -- reading a card --------------------------------------------------------------------------------


def test_card_input_forms_and_a_repr_that_hides_the_number() -> None:
    typed = read_card("4111 1111 1111 1111", "12/30")
    assert (typed.card.pan, typed.card.expiry, typed.brand) == (VISA, "1230", "visa")
    assert repr(typed) == "CardInput(visa ending 1111)" and VISA not in f"{typed} {[typed]}"
    assert read_card(f";{VISA}=3012101?").card.expiry == "1230"  # magstripe track 2
    assert read_card(f"%B{VISA}^DOE/JANE^3012101?").card.expiry == "1230"  # track 1
    assert read_card("test").card.pan == VISA and read_card("test:rupay").brand == "rupay"
    assert read_card("test:declined").last4 == "0002"
    assert read_card_line(f"{VISA} 12/30").card.expiry == "1230"
    for bad, expiry, message in [
        ("4111 1111 1111 1112", "12/30", "check digit"),
        (VISA, None, "expiry"),
        (VISA, "13/30", "MM/YY"),
        ("test:diners", None, "test card"),
        ("", None, "no card number"),
        ("4111-1111", "12/30", "12-19 digits"),
    ]:
        with pytest.raises(InputError, match=message) as err:
            read_card(bad, expiry)
        assert VISA not in str(err.value) and "41111111" not in str(err.value)


# -- sealing and what the store keeps -------------------------------------------------------------


def test_a_card_sale_is_sealed_pending_and_leaves_no_card_number_on_disk(
    till: tuple[Terminal, FakeHQ], tmp_path: Path
) -> None:
    t, hq = till
    sale = sell_card(t)
    [tender] = sale.payload["tenders"]
    assert tender["pending"] is True and tender["amount"] == 99_900
    assert (tender["card_last4"], tender["card_brand"]) == ("1111", "visa")
    assert set(tender) == {"method", "amount", "card_last4", "card_brand",
                           "card_sealed_sha256", "pending"}  # fmt: skip
    # The signed op carries the blob's hash; the blob travels beside it until HQ answers.
    blob = sealed_from_tender(tender, sale.op.sealed[0])
    assert blob and sealed_from_tender(tender, blob + b"x") == b""
    assert t.ledger.sealed_blobs() == {sale.op.id: {0: blob}}
    # HQ opens it; anyone else (the store holds no private key at all) cannot.
    opened = open_card(hq.payment, blob, store="S1", amount=99_900, last4="1111", brand="visa")
    assert (opened.pan, opened.expiry) == (VISA, "1230")
    with pytest.raises(RemoteError, match="does not open"):
        open_card(X25519PrivateKey.generate(), blob, store="S1", amount=99_900, last4="1111",
                  brand="visa")  # fmt: skip
    # The receipt says the card is awaiting authorisation and shows only the last four.
    receipt = receipt_from_sale(sale.payload, StoreHeader(name="Shop"))
    text = "\n".join(c.text for c in render_receipt(receipt) if isinstance(c, Text))
    assert "authorisation pending" in text and "****1111" in text and VISA not in text
    for path in tmp_path.iterdir():  # the database and its WAL
        assert VISA.encode() not in path.read_bytes()
    assert find_card_numbers([tmp_path]) == []
    assert t.ledger.verify() == []


def test_a_till_seals_only_to_the_key_hq_sent(till: tuple[Terminal, FakeHQ]) -> None:
    t, _ = till
    rogue = (
        X25519PrivateKey.generate()
        .public_key()
        .public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    )
    t.append("setting.set", {"key": "payments.hq_public_key", "value": rogue.hex()})
    before = op_count(t)
    with pytest.raises(CardRefused, match="not by HQ"):
        sell_card(t)
    assert op_count(t) == before
    bare = make_terminal(":memory:", seed="bare")
    bare.import_catalog(ROWS)
    with pytest.raises(CardRefused, match="no HQ payment key"):
        sell_card(bare)


# -- offline refusals ------------------------------------------------------------------------------


def test_a_blocklisted_card_is_refused_offline(till: tuple[Terminal, FakeHQ]) -> None:
    t, hq = till
    hq.block(DECLINED, "do_not_honour")
    hq.give(t)
    before = op_count(t)
    with pytest.raises(CardRefused, match=r"blocklist \(do_not_honour\)") as err:
        sell_card(t, DECLINED)
    assert DECLINED not in str(err.value) and "ending 0002" in str(err.value)
    assert op_count(t) == before and cards.float_held(t) == 2_000_000
    with pytest.raises(CardRefused, match="expired 01/20"):
        t.sell([("TEE", 1)], tenders=[Tender("card")], card=read_card(VISA, "01/20"))
    assert sell_card(t).payload["tenders"][0]["card_last4"] == "1111"  # other cards still go


def test_the_per_sale_floor_limit_is_refused_clearly(till: tuple[Terminal, FakeHQ]) -> None:
    t, hq = till
    hq.setting(cards.PER_SALE_SETTING, 200_000)  # ₹2,000
    hq.give(t)
    before = op_count(t)
    with pytest.raises(
        FloorLimitExceeded,
        match=r"over the offline card limit of ₹2,000\.00: take cash or use the card machine",
    ):
        sell_card(t, items=[("JKT", 1)])
    assert op_count(t) == before
    split = sell_card(t, items=[("JKT", 1)], tenders=[Tender("card", 200_000), Tender("cash")])
    assert [x["method"] for x in split.payload["tenders"]] == ["card", "cash"]
    assert cards.float_held(t) == 2_000_000 - 200_000
    hq.setting(cards.PER_SALE_SETTING, 0)
    hq.give(t)
    with pytest.raises(FloorLimitExceeded, match="switched off"):
        sell_card(t)


def test_no_float_means_no_offline_cards(tmp_path: Path) -> None:
    t = make_terminal(tmp_path / "x.db")
    t.import_catalog(ROWS)
    FakeHQ().give(t)
    with pytest.raises(CardFloatShortfall, match="not open at this counter"):
        sell_card(t)
    assert t.sell([("TEE", 1)]).payload["tenders"][0]["method"] == "cash"
    t.close()


# -- the store's float: escrow across counters ----------------------------------------------------


def test_the_store_float_holds_across_a_split_lan_and_moves_on_request() -> None:
    mesh = Mesh(2, rows=ROWS, customers=0)
    t0, t1 = (n.terminal for n in mesh.nodes)
    hq = FakeHQ(now_ms=mesh.now_ms)
    hq.mint(t0.node_id, 300_000)  # ₹3,000 at T0
    hq.mint(t1.node_id, 150_000)  # ₹1,500 at T1: the store's total is ₹4,500
    for t in (t0, t1):
        hq.give(t)
    assert mesh.settle() >= 0
    mesh.partition([0], [1])
    taken = {0: 0, 1: 0}
    for i in (0, 1):
        while True:
            try:
                mesh.act(i, sell_card)
            except CardFloatShortfall as short:
                assert short.customer == CARD_FLOAT and "offline card limit" in str(short)
                break
            taken[i] += 99_900
    assert taken == {0: 3 * 99_900, 1: 1 * 99_900}
    assert sum(taken.values()) <= 450_000
    assert mesh.ask_rights(1, CARD_FLOAT, 99_900) == 0  # nobody reachable: still refused
    with pytest.raises(CardFloatShortfall, match="held by T0"):
        sell_card(t1)
    mesh.heal()
    assert mesh.settle() >= 0
    held = {i: cards.float_held(n.terminal) for i, n in enumerate(mesh.nodes)}
    assert held == {0: 300_000 - 3 * 99_900, 1: 150_000 - 99_900}
    assert cards.status(t1)["awaiting_hq"] == 4 * 99_900
    # HQ approves one of T0's sales: its float goes back to T0, who can hand it over on request.
    first = t0.query("SELECT seq FROM sales WHERE origin = ? ORDER BY seq LIMIT 1",
                     (t0.node_id,))[0]["seq"]  # fmt: skip
    hq.result(t0.ledger.get(t0.node_id, first), "approved")  # type: ignore[arg-type]
    hq.give(t0)
    mesh.net.local_changed(t0.node_id)
    assert mesh.settle() >= 0
    assert cards.float_held(t0) == 300_000 - 2 * 99_900
    assert mesh.ask_rights(1, CARD_FLOAT, 99_900 - cards.float_held(t1)) == 1
    mesh.net.run_for(100)
    assert cards.float_held(t1) >= 99_900
    mesh.act(1, lambda t: sell_card(t))
    assert mesh.settle() >= 0
    total = sum(cards.float_held(n.terminal) for n in mesh.nodes)
    assert total == 450_000 - 4 * 99_900  # one approved, four awaiting HQ
    assert all(n.ledger.verify() == [] for n in mesh.nodes)


# -- HQ's answers ----------------------------------------------------------------------------------


def test_approval_releases_float_and_a_decline_opens_a_conflict(
    till: tuple[Terminal, FakeHQ],
) -> None:
    t, hq = till
    good = sell_card(t)
    bad = sell_card(t, DECLINED)
    assert cards.float_held(t) == 2_000_000 - 2 * 99_900
    hq.result(good.op, "approved")
    hq.give(t)
    assert cards.float_held(t) == 2_000_000 - 99_900
    assert t.conflicts() == []
    hq.result(bad.op, "declined", 0)
    hq.give(t)
    [conflict] = t.conflicts()
    assert conflict["conflict_id"] == f"payment_declined:{bad.sale_id}"
    assert conflict["detail"]["card"] == "visa ending 0002"
    assert cards.float_held(t) == 2_000_000  # HQ answered both: nothing awaits authorisation
    assert t.grant_rights(CARD_FLOAT, hq.node_id, 10_000) == 0  # float never leaves for HQ
    assert t.ledger.verify() == []


def test_hq_only_ops_signed_by_a_terminal_change_nothing_anywhere() -> None:
    """Stored (the terminal's chain goes on), without authority at its own ledger and at peers:
    no float released, none minted, a conflict naming the rule."""
    a = make_terminal(":memory:", "T1", "a")
    b = make_terminal(":memory:", "T2", "b")
    hq = FakeHQ()
    a.import_catalog(ROWS)
    hq.mint(a.node_id, 500_000)
    for t in (a, b):
        hq.give(t)
    b.ingest(a.ledger.ops_since({}), [a.node_record()])
    sale = sell_card(a)
    b.ingest(a.ledger.ops_since(b.ledger.vv()), [a.node_record()])
    before = (b.ledger.vv(), cards.float_held(b, a.node_id))
    forged = a.append("payment.result", {
        "sale_id": sale.sale_id, "sale_op": f"{sale.op.origin}:{sale.op.seq}", "tender": 0,
        "status": "approved", "amount": 99_900, "code": "approved", "message": "ok",
        "auth_code": "FORGED", "card_last4": "1111", "card_brand": "visa",
    })  # fmt: skip
    assert b.ingest([forged], [a.node_record()]).applied == 1
    assert cards.float_held(b, a.node_id) == before[1] == cards.float_held(a, a.node_id)
    for t in (a, b):
        found = t.ledger.views.conflict(f"unauthorised:{a.node_id}:{forged.seq}")
        assert found is not None and found["detail"]["rule"] == "hq-only"
    c = make_terminal(":memory:", "T3", "c")
    mint = c.append("card.float", {"to": c.node_id, "amount": 10**9, "total": 10**9})
    b.ingest([], [c.node_record()])
    b.ingest([mint])
    assert cards.float_held(b, c.node_id) == 0 == cards.float_held(c, c.node_id)
    assert b.ledger.views.conflict(f"unauthorised:{c.node_id}:{mint.seq}") is not None
    # No one may mint float as loyalty points of a customer named like the float.
    d = make_terminal(":memory:", "T4", "d")
    with pytest.raises(EncodingError, match="reserved"):
        d.append("loyalty.adjust", {"customer_id": CARD_FLOAT, "delta": 10**9, "reason": "x"})
    # HQ's own result is accepted and releases the float at the selling counter.
    hq.result(sale.op, "approved")
    hq.give(b)
    assert cards.float_held(b, a.node_id) == 500_000


# -- the touch till --------------------------------------------------------------------------------


def test_the_till_session_seals_the_card_when_it_is_taken(till: tuple[Terminal, FakeHQ]) -> None:
    t, _ = till
    s = TillSession(t)
    s.add_code("TEE")
    s.add_code("TEE")
    cash = s.pay("cash", "500")
    assert cash.card_sealed is None
    tender = s.pay("card", None, card=read_card(VISA, "12/30"))
    assert tender.amount == 2 * 99_900 - 50_000 and tender.card_sealed
    assert VISA not in repr(tender) and VISA not in json.dumps(tender.__dict__)
    other = TillSession(t)
    other.add_code("TEE")
    with pytest.raises(InputError, match="card payment"):
        other.pay("cash", None, card=read_card(VISA, "12/30"))
    result = s.complete()
    card = result.payload["tenders"][1]
    assert card["pending"] is True and card["amount"] == tender.amount
    assert cards.float_held(t) == 2_000_000 - tender.amount
