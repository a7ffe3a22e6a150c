"""Stock transfers between stores through a real HQ process: stock leaves the sender at once, is in
transit at HQ, HQ tells the receiver, the receiver counts it in, shortages are conflicts at the
store; a receipt before HQ's word, two counters receiving one parcel while split, ops in any
order; other stores' stock pulled into a node-local cache with its age; bad input refused."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import run_cli
from hq_helpers import HQServer, Store, certified, make_store
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meshpos.core.errors import InputError
from meshpos.ledger.store import Ledger
from meshpos.service import transfers
from meshpos.service.config import init_node, load_signer
from meshpos.service.terminal import Terminal


@pytest.fixture(scope="module")
def hq(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HQServer]:
    server = HQServer(tmp_path_factory.mktemp("hq"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def stores(hq: HQServer, tmp_path: Path) -> Iterator[tuple[Store, Store]]:
    a = make_store(hq, tmp_path, 2)
    b = make_store(hq, tmp_path, 2)
    try:
        yield a, b
    finally:
        a.close()
        b.close()


def qty(t: Terminal, sku: str) -> int:
    return t.ledger.views.stock_qty(sku)


def hq_status(hq: HQServer, tid: str) -> dict[str, object]:
    rows = hq.get("/v1/report/transfers").json()["transfers"]
    return next(r for r in rows if r["transfer_id"] == tid)


def test_transfer_end_to_end_with_a_shortage(hq: HQServer, stores: tuple[Store, Store]):
    a, b = stores
    op = transfers.send(a.t1, [("TEE", 5), ("CAP", 2)], b.id, note="van 7")
    tid = op.payload["transfer_id"]
    assert tid == f"TR-{a.id}-T1-{op.seq}"
    assert qty(a.t1, "TEE") == 15 and qty(a.t1, "CAP") == 8  # left the store at once
    a.relay()
    row = hq_status(hq, tid)
    assert row["status"] == "in transit" and row["to_store"] == b.id and row["units"] == 7
    stock = {r["sku"]: r["qty"] for r in hq.get("/v1/report/stock", store=a.id).json()["stock"]}
    assert stock["TEE"] == 15  # HQ's view of the sender moved too
    assert transfers.listing(b.t1) == []
    b.relay()  # the receiving store pulls HQ's word
    [coming] = transfers.listing(b.t1)
    assert coming["status"] == "on its way" and coming["store"] == a.id and coming["units"] == 7
    b.mesh()
    r = run_cli(
        ["--dir", str(b.terminals[1].cfg.dir), "transfer", "in", tid, "--received", "TEE:4"]
    )
    assert r.code == 0, r.err
    assert f"received {tid} from {a.id}: TEE x4, CAP x2" in r.out
    assert f"flagged for a manager as conflict transfer_short:{tid}" in r.out
    b.mesh()
    assert qty(b.t1, "TEE") == 24 and qty(b.t1, "CAP") == 12
    [conflict] = b.t1.conflicts()
    assert conflict["conflict_id"] == f"transfer_short:{tid}"
    assert conflict["detail"] == {"transfer_id": tid, "from_store": a.id, "short": {"TEE": 1},
                                  "extra": {}, "receipts": 1}  # fmt: skip
    assert len(conflict["ops"]) == 2  # HQ's word and the receipt
    assert [x["status"] for x in transfers.listing(b.t1)] == ["received short"]
    b.relay(b.t1)
    row = hq_status(hq, tid)
    assert row["status"] == "received short" and row["short"] == {"TEE": 1}
    in_transit = hq.get("/v1/report/transfers", status="in transit").json()["transfers"]
    assert tid not in {x["transfer_id"] for x in in_transit}
    # a manager closes it with a note; it replicates like any resolution
    b.t1.resolve(f"transfer_short:{tid}", "one tee torn in the van, claimed from the courier")
    assert b.t1.conflicts() == []
    assert b.t1.ledger.verify() == [] and a.t1.ledger.verify() == []


def test_full_receipt_has_no_conflict_and_hq_cli_lists_it(
    hq: HQServer, stores: tuple[Store, Store]
):
    a, b = stores
    tid = transfers.send(a.t1, [("JKT", 1)], b.id).payload["transfer_id"]
    a.relay()
    b.relay()
    transfers.receive(b.t1, tid)
    assert qty(b.t1, "JKT") == 6 and b.t1.conflicts() == []
    b.relay()
    r = run_cli(["hq", "transfers", "--dir", str(hq.dir), "--store", b.id, "--json"])
    assert r.code == 0, r.err
    assert [(x["transfer_id"], x["status"]) for x in r.json()] == [(tid, "received")]


def test_receipt_before_hqs_word_is_checked_when_it_arrives(
    hq: HQServer, stores: tuple[Store, Store]
):
    a, b = stores
    tid = transfers.send(a.t1, [("TEE", 3)], b.id).payload["transfer_id"]
    with pytest.raises(InputError, match="HQ has not told this store about"):
        transfers.receive(b.t1, tid)
    transfers.receive(b.t1, tid, {"TEE": 2})  # the van came before the store was back online
    assert qty(b.t1, "TEE") == 22 and b.t1.conflicts() == []
    assert transfers.listing(b.t1)[0]["status"] == "received (HQ's word pending)"
    a.relay()
    b.relay()
    [conflict] = b.t1.conflicts()
    assert conflict["detail"]["short"] == {"TEE": 1}


def test_two_counters_receiving_one_parcel_while_split(hq: HQServer, stores: tuple[Store, Store]):
    a, b = stores
    tid = transfers.send(a.t1, [("CAP", 4)], b.id).payload["transfer_id"]
    a.relay()
    b.relay()
    b.mesh()
    t1, t2 = b.terminals
    transfers.receive(t1, tid)
    transfers.receive(t2, tid)  # split: T2 cannot see T1's receipt
    b.mesh()
    [conflict] = t1.conflicts()
    assert conflict["detail"]["extra"] == {"CAP": 4} and conflict["detail"]["receipts"] == 2
    assert t2.conflicts() == [conflict]
    with pytest.raises(InputError, match="already received here"):
        transfers.receive(t1, tid)


def test_other_stores_stock_is_cached_with_its_age(hq: HQServer, stores: tuple[Store, Store]):
    a, b = stores
    a.relay()
    b.relay()
    with a.client() as client:
        assert transfers.refresh_chain_stock(a.t1, client) >= 1
        assert transfers.refresh_chain_stock(a.t1, client) == 0  # nothing changed at HQ
    rows = transfers.elsewhere(a.t1, "TEE", a.t1.now_ms() + 600_000)
    mine = next(r for r in rows if r["store"] == b.id)
    assert mine["qty"] == 20 and mine["name"] == f"Store {b.id}"
    assert mine["pulled_ms"] >= 600_000 and mine["age_ms"] >= 600_000
    assert a.id not in {r["store"] for r in rows}  # only other stores
    b.t1.sell([("TEE", 2)])
    b.relay()
    with a.client() as client:
        assert transfers.refresh_chain_stock(a.t1, client) == 1  # only the store that changed
    mine = next(r for r in transfers.elsewhere(a.t1, "TEE", a.t1.now_ms()) if r["store"] == b.id)
    assert mine["qty"] == 18
    # the CLI reads the cache offline; sending to a store HQ does not list is refused
    r = run_cli(["--dir", str(a.t1.cfg.dir), "transfer", "stock", "TEE"])
    assert r.code == 0 and b.id in r.out and "ago" in r.out
    with pytest.raises(InputError, match="HQ knows no store 'NOPE'"):
        transfers.send(a.t1, [("TEE", 1)], "NOPE")
    assert a.t1.ledger.transfers.sent() == {}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["out", "TEE", "1", "--to", "{a}"], "is this store"),
        (["out", "TEE", "999", "--to", "{b}"], "only 20 of TEE in stock here"),
        (["out", "TEE", "--to", "{b}"], "give SKU QTY pairs"),
        (["out", "TEE", "0", "--to", "{b}"], "must be a whole number from 1"),
        (["out", "NOSUCH", "1", "--to", "{b}"], "unknown product 'NOSUCH'"),
        (["in", "BLR1-T1-000001"], "is not a transfer id"),
        (["in", "TR-{a}-T1-9"], "was sent by this store"),
        (["in", "TR-{b}-T1-9", "--received", "TEE=2"], "must be SKU:QTY"),
        (["in", "TR-{b}-T1-9", "--received", "TEE:2", "--received", "TEE:3"], "names TEE twice"),
        (["in", "TR-{b}-T1-9", "--received", "TEE:0"], "nothing of TR-"),
    ],
)
def test_bad_input_is_refused_and_changes_nothing(stores: tuple[Store, Store], args, message):
    a, _ = stores
    args = [x.format(a=a.id, b=stores[1].id) for x in args]
    before = a.t1.ledger.vv()
    r = run_cli(["--dir", str(a.t1.cfg.dir), "transfer", *args])
    assert r.code == 1 and r.err.startswith("error: ") and message in r.err, r.err
    assert a.t1.ledger.vv() == before


# -- order does not matter ------------------------------------------------------------------------


@contextlib.contextmanager
def replica(store: Store, tmp: Path, name: str) -> Iterator[Terminal]:
    cfg = init_node(tmp / name, store.id, name)
    t = Terminal(cfg, load_signer(cfg), Ledger(cfg.db_path, store.id, durable=False))
    try:
        yield t
    finally:
        t.close()


def test_views_and_conflicts_do_not_depend_on_arrival_order(
    hq: HQServer, stores: tuple[Store, Store], tmp_path_factory: pytest.TempPathFactory
):
    """HQ's word, two receipts by two counters and a sale of the received stock reach a third
    replica in every order (gaps wait in `pending`): the same stock and the same conflict."""
    a, b = stores
    tid = transfers.send(a.t1, [("CAP", 4), ("TEE", 1)], b.id).payload["transfer_id"]
    a.relay()
    b.relay()
    b.mesh()
    t1, t2 = b.terminals
    transfers.receive(t1, tid, {"CAP": 3, "TEE": 0})
    transfers.receive(t2, tid, {"TEE": 0, "CAP": 1})
    t1.sell([("CAP", 12)])
    b.mesh()
    ops = t1.ledger.ops_since({})
    nodes = certified(t1)
    expected = (t1.ledger.views.stock_levels(), t1.conflicts())
    assert expected[1][0]["detail"]["short"] == {"TEE": 1}

    @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.permutations(range(len(ops))), st.integers(1, 7))
    def check(order: list[int], chunk: int) -> None:
        with replica(b, tmp_path_factory.mktemp("r"), "R") as r:
            shuffled = [ops[i] for i in order]
            for i in range(0, len(shuffled), chunk):
                r.ingest(shuffled[i : i + chunk], nodes)
            assert (r.ledger.views.stock_levels(), r.conflicts()) == expected
            assert r.ledger.verify() == []

    check()


def test_sending_stock_needs_a_supervisor_where_the_store_has_staff(node, monkeypatch):
    """Like a stock adjustment: stock leaving the store is approved by a supervisor's PIN."""
    import io
    import sys

    monkeypatch.setattr(sys, "stdin", io.StringIO("111111\n"))
    node.ok("users", "add", "boss", "--name", "Boss", "--role", "admin", "--pin-stdin")
    monkeypatch.setattr(sys, "stdin", io.StringIO("3333\n"))
    monkeypatch.setenv("MESHPOS_APPROVER_PIN", "111111")
    node.ok("users", "add", "cal", "--role", "cashier", "--pin-stdin", "--approve", "boss")
    monkeypatch.delenv("MESHPOS_APPROVER_PIN")
    refused = node.fail("transfer", "out", "CAP", "1", "--to", "S2", user="cal")
    assert "needs a supervisor" in refused and "sending stock to another store" in refused
    assert node.qty("CAP") == 5
    monkeypatch.setenv("MESHPOS_APPROVER_PIN", "111111")
    out = node.ok("transfer", "out", "CAP", "1", "--to", "S2", "--approve", "boss", user="cal").out
    assert "transfer TR-S1-T1-" in out and node.qty("CAP") == 4


def test_hq_sends_what_it_owes_after_a_crash_once(hq: HQServer, stores: tuple[Store, Store]):
    """HQ stored a transfer but died before telling the receiver: the sweep it runs at start
    sends it, and only once."""
    from hq_helpers import wires

    a, b = stores
    tid = transfers.send(a.t1, [("CAP", 1)], b.id).payload["transfer_id"]
    svc = hq.service()
    try:
        svc.storage.log.ingest(a.id, wires(a.t1, svc.storage.vv(a.id)), certified(a.t1), 0)
        b.relay()
        assert transfers.listing(b.t1) == []  # not told
        sent = svc.send_transfer_expects()
        assert [(op.store, op.payload["transfer_id"]) for op in sent] == [(b.id, tid)]
        assert svc.send_transfer_expects() == []
    finally:
        svc.close()
    b.relay()
    assert [r["status"] for r in transfers.listing(b.t1)] == ["on its way"]
