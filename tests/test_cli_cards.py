"""`meshpos sell` with a card, `meshpos cards`, and `meshpos hq card-float` against a real HQ
service (in-process, SQLite) settling the sealed cards with its simulated acquirer."""

from __future__ import annotations

import io
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import Node, run_cli
from test_cards import DECLINED, VISA, FakeHQ

from meshpos.core.errors import MeshposError
from meshpos.core.ops import decode_op
from meshpos.domain.catalog import CatalogRow
from meshpos.hq import keys
from meshpos.hq.client import PullResult, ingest_pull, parse_node
from meshpos.hq.service import HQService
from meshpos.ledger.store import Ledger
from meshpos.node import membership
from meshpos.service import cards
from meshpos.service.card_scan import find_card_numbers
from meshpos.service.config import init_node, load_signer
from meshpos.service.terminal import Terminal
from meshpos.sync.bundle import decode_bundle


def provision(node: Node, float_paise: int, per_sale: int | None = None) -> FakeHQ:
    """What a sync with HQ leaves at the store: HQ's key, float at this till, a blocklist."""
    t = Terminal.open(node.path)
    try:
        hq = FakeHQ("S1")
        hq.mint(t.node_id, float_paise)
        if per_sale is not None:
            hq.setting(cards.PER_SALE_SETTING, per_sale)
        hq.block(DECLINED, "do_not_honour")
        hq.give(t)
    finally:
        t.close()
    return hq


def sell_stdin(node: Node, line: str, *args: str) -> tuple[int, str, str]:
    old = sys.stdin
    sys.stdin = io.StringIO(line + "\n")
    try:
        r = node.run("sell", *args, "--card-stdin")
    finally:
        sys.stdin = old
    return r.code, r.out, r.err


def no_card_numbers_in(path: Path) -> None:
    for f in path.rglob("*"):
        if f.is_file():
            data = f.read_bytes()
            assert VISA.encode() not in data and DECLINED.encode() not in data, f
    assert find_card_numbers([path]) == []


def test_selling_by_card_from_the_cli_keeps_no_card_number(node: Node) -> None:
    provision(node, 200_000, per_sale=150_000)  # ₹2,000 of float; ₹1,500 a sale
    code, out, err = sell_stdin(node, f"{VISA} 12/30", "TEE-M")
    assert code == 0, err
    assert "card ₹1,000.00 (visa ending 1111, authorisation pending)" in out
    assert VISA not in out + err
    sale = node.sell("CAP", "--card-number", "test:mastercard")  # no --pay: the card pays it all
    [tender] = sale["tenders"]
    assert tender["pending"] is True and tender["card_last4"] == "4444"
    assert tender["card_brand"] == "mastercard" and tender["amount"] == 25_000

    before = node.snapshot()
    err = node.fail("sell", "TEE-M", "--card-number", DECLINED, "--card-expiry", "12/30")
    assert "blocklist (do_not_honour)" in err and DECLINED not in err
    err = node.fail("sell", "JKT-L", "--pay", "card", "--card-number", "test")
    assert "over the offline card limit of ₹1,500.00: take cash or use the card machine" in err
    err = node.fail("sell", "TEE-M", "--pay", "card", "--card-number", "test")
    assert "offline card limit reached" in err and "may take ₹750.00 more" in err
    err = node.fail("sell", "TEE-M", "--card-expiry", "12/30")
    assert "--card-expiry needs a card" in err
    err = node.fail("sell", "TEE-M", "--card-number", "4111111111111112", "--card-expiry", "12/30")
    assert "check digit" in err and "4111111111111112" not in err
    assert node.snapshot() == before
    split = node.sell("TEE-M", "--pay", "card:750", "--pay", "cash", "--card-number", "test")
    assert [t["method"] for t in split["tenders"]] == ["card", "cash"]

    status = node.json("cards")
    assert (status["minted"], status["held_here"]) == (200_000, 0)
    assert status["awaiting_hq"] == 200_000 and status["per_sale_limit"] == 150_000
    assert "float minted       ₹2,000.00" in node.ok("cards").out
    assert (
        "ok: the visa ending 1111 may be taken offline"
        in node.ok("cards", "check", "--card-number", "test").out
    )
    assert "blocklist" in node.fail("cards", "check", "--card-number", "test:declined")
    receipts = node.path / "receipts.bin"
    assert b"authorisation pending" in receipts.read_bytes()
    no_card_numbers_in(node.path)
    assert "ok:" in node.ok("verify").out  # also scans the node's files for card numbers


# -- against HQ ------------------------------------------------------------------------------------


def relay(svc: HQService, t: Terminal) -> None:
    """One relay round, in-process: push what HQ lacks, pull what it has (results included)."""
    store = t.cfg.store
    have = svc.storage.vv(store)
    wires = [o.wire() for o in t.ledger.ops_since(have)]
    certified = [n for n in t.ledger.nodes() if n.cert is not None]
    svc.ingest(store, wires, certified)
    while True:
        ans = svc.pull(store, t.ledger.vv(), 5000)
        res = PullResult([decode_op(w) for w in ans["ops"]], [parse_node(n) for n in ans["nodes"]],
                         ans["vv"], ans["more"], ans["asks"])  # fmt: skip
        if res.ops:
            ingest_pull(t, res)
        if not res.more:
            return


@pytest.fixture
def hq_store(tmp_path: Path) -> Iterator[tuple[Path, HQService, Terminal]]:
    hq_dir = tmp_path / "hq"
    keys.init_hq(hq_dir)
    svc = HQService.open(hq_dir)
    svc.enroll_store("S7", "Store 7")
    cfg = init_node(tmp_path / "t1", "S7", "T1")
    t = Terminal(cfg, load_signer(cfg), Ledger(cfg.db_path, "S7"))
    membership.install(t, svc.enroll_node("S7", membership.request(t)))
    t.import_catalog(
        [
            cards_row(2, "TEE", 99_900),
            cards_row(3, "JKT", 450_000),
        ]
    )
    yield hq_dir, svc, t
    t.close()
    svc.close()


def cards_row(line: int, sku: str, price: int) -> CatalogRow:
    return CatalogRow(line=line, sku=sku, fields={"name": sku, "price": price, "gst_rate": 500},
                      stock=20)  # fmt: skip


def test_hq_opens_the_float_settles_cards_and_blocks_a_declined_one(
    hq_store: tuple[Path, HQService, Terminal],
) -> None:
    hq_dir, svc, t = hq_store
    relay(svc, t)
    with pytest.raises(MeshposError, match="not open at this counter"):
        t.sell([("TEE", 1)], tenders=[], card=cards.read_card("test"))
    r = run_cli(["hq", "card-float", "10000", "--dir", str(hq_dir)])
    assert r.code == 0, r.err
    assert f"store S7: ₹10,000.00 of float to {t.node_id}" in r.out
    relay(svc, t)
    assert cards.float_held(t) == 1_000_000 and cards.limits(t).store_total == 1_000_000

    good = t.sell([("TEE", 1)], card=cards.read_card("test:visa"))
    bad = t.sell([("JKT", 1)], card=cards.read_card("test:declined"))
    assert cards.float_held(t) == 1_000_000 - 99_900 - 450_000
    relay(svc, t)  # HQ opens the blobs, asks the acquirer and signs the results
    got = {p["sale_id"]: p["status"] for p in svc.storage.payments("S7")}
    assert got == {good.sale_id: "approved", bad.sale_id: "declined"}
    assert cards.float_held(t) == 1_000_000  # both answered: the float is whole again
    [conflict] = t.conflicts()
    assert conflict["conflict_id"] == f"payment_declined:{bad.sale_id}"
    with pytest.raises(MeshposError, match="blocklist"):  # HQ put the card on every blocklist
        t.sell([("TEE", 1)], card=cards.read_card("test:declined"))
    # HQ lowers the float: it takes the difference back from the counter.
    r = run_cli(["hq", "card-float", "1000", "--dir", str(hq_dir), "--json"])
    assert r.code == 0, r.err
    relay(svc, t)
    assert cards.float_held(t) == 100_000 and cards.status(t)["minted"] == 100_000
    assert t.ledger.verify() == []
    no_card_numbers_in(t.cfg.dir)


def test_sealed_card_data_is_deleted_once_hq_answered_and_verify_says_so(
    hq_store: tuple[Path, HQService, Terminal],
) -> None:
    """Issue 13 item 10: the blob travels beside the signed sale (its SHA-256 inside) until
    HQ's answer reaches the terminal; then it is deleted, pages overwritten, and the sale still
    verifies."""
    hq_dir, svc, t = hq_store
    relay(svc, t)
    assert run_cli(["hq", "card-float", "10000", "--dir", str(hq_dir)]).code == 0
    relay(svc, t)
    sale = t.sell([("TEE", 1)], card=cards.read_card("test:visa"))
    [blob] = sale.op.sealed.values()
    assert t.ledger.sealed_blobs() == {sale.op.id: {0: blob}}
    assert blob not in sale.op.body  # the signed body carries its hash only
    t.ledger.checkpoint()
    assert blob in (t.cfg.db_path).read_bytes()  # held, for the relay to carry to HQ
    carried = {o.id: o.sealed for o in decode_bundle(t.export_bundle()[0], "S7").ops}
    assert carried[sale.op.id] == {0: blob}  # a USB bundle carries it too
    relay(svc, t)  # HQ opens it, answers; the answer comes back
    assert [p["status"] for p in svc.storage.payments("S7")] == ["approved"]
    assert t.ledger.sealed_blobs() == {}
    assert t.ledger.sealed_status() == {"held_awaiting_hq": 0, "answered": 1}
    t.ledger.checkpoint()
    files = list(t.cfg.dir.glob("meshpos.db*"))
    assert t.cfg.db_path in files
    for path in files:
        assert blob not in path.read_bytes(), path.name
    assert t.ledger.get(*sale.op.id) == sale.op  # the sale itself stays, signed
    assert t.ledger.verify() == []
    out = run_cli(["--dir", str(t.cfg.dir), "verify"])
    assert out.code == 0, out.err
    assert "0 held awaiting HQ's answer; 1 answered by HQ and deleted here" in out.out
