"""Revocation (issue 13 item 6): a stolen terminal's ops after its revocation take no effect on
any replica, whatever order they arrive in; only the store key or HQ revokes; the revoked
terminal stops selling once it hears; daemons drop it at once."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from conftest import run_cli
from hq_helpers import CATALOG, HQServer
from hq_helpers import make_store as hq_store
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ledger_helpers import catalog_rows, full_sync, views
from mesh_procs import db, meshpos, node_id
from mesh_procs import make_store as make_shop
from rulebook_helpers import (
    NODES,
    STORE,
    STORE_KEY,
    Node,
    chunked,
    feed_hq,
    fresh_ledger,
    make_nodes,
)

from meshpos.core.errors import ChainError, LocalError
from meshpos.core.ops import Op, Signer
from meshpos.domain import revocation
from meshpos.domain.authority import CARD_FLOAT, REVOKED
from meshpos.domain.pricing import Tender
from meshpos.domain.revocation import Revoked
from meshpos.hq.client import HQRefused
from meshpos.hq.storage import HQStorage, open_storage
from meshpos.ledger.store import Ledger
from meshpos.service.terminal import Terminal

REASON = "stolen from the counter on Friday night"


def revoke(by: Node, node: Node, *, key: Signer | None = STORE_KEY, reason: str = REASON) -> Op:
    """`by` signs a revocation of `node` from the last op of it that `by` holds."""
    point = by.ledger.head(node.node_id)[0]
    body = revocation.payload(STORE, node.node_id, point, reason, key)
    return by.terminal.append(revocation.REVOKE_KIND, body)


def ravi_at_t2(points: int) -> tuple[dict[str, Node], str]:
    """The store's nodes, a catalogue, and customer Ravi with `points`, 30 of them redeemable
    at T2."""
    nodes = make_nodes()
    t0, t2 = nodes["T0"].terminal, nodes["T2"].terminal
    t0.import_catalog(catalog_rows(3))
    cid = t0.add_customer({"name": "Ravi", "phone": "9800000001"})
    t0.append("loyalty.adjust", {"customer_id": cid, "delta": points, "reason": "welcome"})
    assert t0.grant_rights(cid, t2.node_id, 30) == 30
    return nodes, cid


def stolen_store() -> tuple[dict[str, Node], dict[str, Op]]:
    """T2 sells honestly and is handed loyalty rights; then it is stolen. T0 (with the store key)
    revokes it and HQ too, from a later point. The thief, not having heard, sells, adjusts
    stock and hands its rights to T1, which redeems them: none of that may count anywhere."""
    nodes, cid = ravi_at_t2(50)
    t1, t2 = nodes["T1"].terminal, nodes["T2"].terminal
    every = list(nodes.values())
    marks: dict[str, Op] = {}
    full_sync(every)
    marks["honest"] = t2.sell([("SKU0", 1)]).op
    full_sync(every)
    marks["forged_revoke"] = revoke(nodes["T1"], nodes["T0"], key=Signer.from_seed(b"not-it"))
    marks["by_store"] = revoke(nodes["T0"], nodes["T2"])
    marks["stolen_sale"] = t2.sell([("SKU1", 2)]).op
    marks["stolen_adjust"] = t2.move_stock("adjust", "SKU1", 40, "found")
    marks["by_hq"] = revoke(nodes["HQ"], nodes["T2"], key=None, reason="reported stolen")
    assert t2.grant_rights(cid, t1.node_id, 30) == 30
    marks["handed"] = t2.ledger.get(t2.node_id, t2.ledger.head(t2.node_id)[0])  # type: ignore[assignment]
    full_sync([nodes["T1"], nodes["T2"]])  # T1 hears the thief before the revocation
    marks["redeemed"] = t1.sell([("SKU2", 1)], tenders=[Tender("points", 30), Tender("cash")],
                                customer=cid).op  # fmt: skip
    full_sync(every)
    return nodes, marks


_STORE: dict[str, Any] = {}


def the_store() -> tuple[dict[str, Node], dict[str, Op]]:
    if not _STORE:
        _STORE["nodes"], _STORE["marks"] = stolen_store()
    return _STORE["nodes"], _STORE["marks"]


def unauthorised(ledger: Ledger) -> dict[tuple[str, int], str]:
    return {(o, s): rule for o, s, rule in ledger.conn.execute(
        "SELECT origin, seq, rule FROM unauthorised")}  # fmt: skip


def test_the_stolen_terminal_s_ops_after_the_point_take_no_effect_on_any_replica() -> None:
    nodes, marks = the_store()
    t2 = nodes["T2"].node_id
    ref = nodes["T0"].ledger
    got = unauthorised(ref)
    for name in ("stolen_sale", "stolen_adjust", "handed"):
        assert got[marks[name].id] == REVOKED, name
    assert got[marks["forged_revoke"].id] == REVOKED  # no store key: no authority
    assert got[marks["redeemed"].id] == "escrow"  # it spent rights only the thief handed on
    assert marks["honest"].id not in got and marks["by_store"].id not in got
    # The store's point is the earlier one: it wins over HQ's.
    rev = ref.revocations()
    assert set(rev) == {t2} and rev[t2].after_seq == marks["honest"].seq
    assert rev[t2].reason == REASON and rev[t2].by == "{}:{}".format(*marks["by_store"].id)
    stock = dict(ref.conn.execute("SELECT sku, qty FROM stock"))
    assert (stock["SKU0"], stock["SKU1"], stock["SKU2"]) == (4, 5, 5)  # only the honest sale
    conflicts = {c["conflict_id"] for c in nodes["T1"].terminal.conflicts()}
    assert "unauthorised:{}:{}".format(*marks["stolen_sale"].id) in conflicts
    for node in nodes.values():
        assert views(node.ledger) == views(ref), node.name
        assert node.ledger.verify() == [], node.name


def test_a_revoked_terminal_that_heard_of_it_stops_signing() -> None:
    nodes, _ = the_store()
    t2 = nodes["T2"].terminal
    with pytest.raises(LocalError, match=r"revoked.*stolen from the counter"):
        t2.sell([("SKU0", 1)])
    assert t2.revoked() is not None
    assert nodes["T1"].terminal.revoked() is None


@contextmanager
def hq_storage() -> Iterator[HQStorage]:
    with tempfile.TemporaryDirectory() as tmp:
        storage = open_storage(str(Path(tmp) / "hq.db"), durable=False)
        storage.enrolment.add_store(STORE, STORE, STORE_KEY.public_key, key_at_hq=False, now_ms=0)
        try:
            yield storage
        finally:
            storage.close()


def hq_verdicts(storage: HQStorage) -> dict[tuple[str, int], str]:
    rows = storage.db.query("SELECT origin, seq, rule FROM unauthorised WHERE store = ?", (STORE,))
    return {(str(o), int(s)): str(r) for o, s, r in rows}


def hq_stock(storage: HQStorage) -> dict[str, int]:
    rows = storage.db.query("SELECT sku, qty FROM stock WHERE store = ?", (STORE,))
    return {str(k): int(q) for k, q in rows}


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_any_delivery_order_gives_the_same_views_at_terminals_and_hq(data: st.DataObject) -> None:
    """The revocation may arrive before, between or after the stolen terminal's late ops and
    the ops that built on them: every replica ends with the same views and verdicts."""
    nodes, _ = the_store()
    ref = nodes["T0"].ledger
    ops = sorted(ref.ops_since({}), key=lambda o: o.id)
    chunks = chunked(data, ops)
    node = fresh_ledger()
    for chunk in chunks:
        node.ingest(chunk)
    assert node.pending_count() == 0
    assert views(node) == views(ref)
    with hq_storage() as storage:
        feed_hq(storage, chunks)
        assert hq_verdicts(storage) == unauthorised(ref)
        assert hq_stock(storage) == dict(ref.conn.execute("SELECT sku, qty FROM stock"))


def test_only_the_store_key_or_hq_revokes() -> None:
    nodes = make_nodes()
    t1 = nodes["T1"]
    stranger = Signer.from_seed(b"a key of no store")
    signed = revocation.payload(STORE, NODES["T0"][0].node_id, 0, "x", stranger)
    past = fresh_ledger()
    op = t1.terminal.append(revocation.REVOKE_KIND, signed)
    past.ingest([op])
    assert unauthorised(past) == {op.id: REVOKED}
    assert past.revocations() == {}
    with pytest.raises(Exception, match="needs a reason"):
        revocation.payload(STORE, "n", 0, "  ", STORE_KEY)


# -- the commands ---------------------------------------------------------------------------------


def test_store_revoke_needs_the_store_key_a_known_node_and_a_reason(tmp_path: Path) -> None:
    a, b, c = make_shop(tmp_path, ["A", "B", "C"], catalog=False)
    for d, args, says in (
        (b, ["C", "--reason", "stolen"], "does not hold the store key"),
        (a, ["Z", "--reason", "stolen"], "no node 'Z' is enrolled in this store (nodes: A, B, C)"),
        (a, ["A", "--reason", "stolen"], "is the node signing the revocation"),
        (a, ["C", "--reason", "   "], "needs a reason"),
    ):
        run = meshpos(d, "store", "revoke", *args, check=False)
        assert run.code != 0 and says in run.err, run.err
    assert revocation.REVOKE_KIND not in op_kinds(a)
    done = meshpos(a, "store", "revoke", node_id(c), "--reason", "lost", "--json").json()
    assert done["node"] == "C" and done["reason"] == "lost"
    again = meshpos(a, "store", "revoke", "C", "--reason", "lost", check=False)
    assert again.code != 0 and "C is already revoked (lost)" in again.err
    assert "revoked" not in meshpos(b, "status", "--json").json()["revoked"]


def op_kinds(d: Path) -> list[str]:
    with db(d) as conn:
        return [k for (k,) in conn.execute("SELECT kind FROM ops")]


def test_hq_revokes_a_node_and_the_relay_brings_it_to_the_store(tmp_path: Path) -> None:
    hq_dir = tmp_path / "hq"
    server = HQServer(hq_dir)
    try:
        st = hq_store(server, tmp_path, n=2)
        t1, t2 = st.terminals
        bad = run_cli(["hq", "revoke", "--dir", str(hq_dir), st.id, "T9", "--reason", "x"])
        assert bad.code == 1 and "no node 'T9'" in bad.err
        run = run_cli(["hq", "revoke", "--dir", str(hq_dir), st.id, "T2", "--reason",
                       "lost in transit", "--json"])  # fmt: skip
        assert run.code == 0, run.err
        assert run.json()["node_id"] == t2.node_id
        st.relay(t1)
        assert t1.ledger.revocations()[t2.node_id].reason == "lost in transit"
        with pytest.raises(HQRefused, match="401"):  # HQ no longer hears the revoked node
            st.relay(t2)
        st.mesh()
        with pytest.raises(LocalError, match="revoked by the store"):
            t2.sell([(CATALOG[0].sku, 1)])
        st.close()
    finally:
        server.stop()


# -- retire and replace (issue 13 item 7) -----------------------------------------------------------


def retired_store() -> tuple[dict[str, Node], dict[str, Op], str]:
    """T2 holds 30 points of Ravi's (a grant from T0) and ₹500 of card float and redeems 10; its
    last sale, redeeming 15 more, reached no other counter before its disk died. T0 (the store
    key) retires it into T1, which redeems all it inherited as far as it knows. A grant T0 made
    to T2 after the retirement goes to T1 too. Then a copy of T2's last sale turns up (a
    backup, a peer that was off): it is real, and T1's redemption spent points twice."""
    nodes, cid = ravi_at_t2(100)
    t0, t1, t2, hq = (nodes[n].terminal for n in ("T0", "T1", "T2", "HQ"))
    every = list(nodes.values())
    marks: dict[str, Op] = {}
    marks["float"] = hq.append("card.float", {"to": t2.node_id, "amount": 50_000, "total": 0})
    full_sync(every)
    marks["spent"] = t2.sell([("SKU0", 1)], tenders=[Tender("points", 10), Tender("cash")],
                             customer=cid).op  # fmt: skip
    full_sync(every)
    marks["late"] = t2.sell([("SKU1", 1)], tenders=[Tender("points", 15), Tender("cash")],
                            customer=cid).op  # fmt: skip
    point = t0.ledger.head(t2.node_id)[0]
    body = revocation.payload(STORE, t2.node_id, point, "disk died", STORE_KEY, to=t1.node_id)
    held = t0.rights(cid, t2.node_id)  # 30 granted, 10 spent, what its sale earned
    marks["retire"] = t0.append(revocation.REVOKE_KIND, body)
    full_sync([nodes["T0"], nodes["T1"], nodes["HQ"]])
    assert held > 20 and t1.rights(cid) == held  # inherited, as far as T1 knows
    marks["inherited"] = t1.sell([("SKU2", 1)], tenders=[Tender("points", held), Tender("cash")],
                                 customer=cid).op  # fmt: skip
    full_sync([nodes["T0"], nodes["T1"]])
    assert t0.grant_rights(cid, t2.node_id, 5) == 5  # a slip: it goes to T1
    full_sync(every)
    return nodes, marks, cid


_RETIRED: dict[str, Any] = {}


def test_a_retired_node_s_balances_are_its_successor_s_everywhere() -> None:
    nodes, marks, cid = _RETIRED.get("store") or _RETIRED.setdefault("store", retired_store())
    t1, t2 = nodes["T1"].node_id, nodes["T2"].node_id
    ref = nodes["T0"].ledger
    # T2's last sale counts (a retirement bars nothing); T1 spent some of its points again.
    assert unauthorised(ref) == {marks["inherited"].id: "escrow"}
    assert ref.views.rights(cid, t2) == 0 and ref.views.rights(CARD_FLOAT, t2) == 0
    assert ref.views.rights(cid, t1) > 5  # what T2 held, less its last 15, plus the late 5
    assert sum(ref.views.rights(cid, n.node_id) for n in nodes.values()) == ref.views.points(cid)
    assert ref.views.rights(CARD_FLOAT, t1) == 50_000
    assert ref.views.rights_held_by([t2]) == 0  # nothing stranded
    rev = ref.revocations()[t2]
    assert rev.to == t1 and rev.reason == "disk died"
    for node in nodes.values():
        assert views(node.ledger) == views(ref), node.name
        assert node.ledger.verify() == [], node.name


def replayed_in_any_order(data: st.DataObject, ref: Ledger) -> Ledger:
    """`ref`'s ops cut into runs and delivered shuffled to a fresh terminal ledger and to HQ:
    the terminal ends with `ref`'s views, HQ with its verdicts and escrow rights. Returns the
    terminal's ledger."""
    chunks = chunked(data, sorted(ref.ops_since({}), key=lambda o: o.id))
    node = fresh_ledger()
    for chunk in chunks:
        node.ingest(chunk)
    assert views(node) == views(ref)
    with hq_storage() as storage:
        feed_hq(storage, chunks)
        assert hq_verdicts(storage) == unauthorised(ref)
        rows = storage.db.query("SELECT customer_id, node, points FROM rights WHERE store = ? "
                                "AND points != 0", (STORE,))  # fmt: skip
        want = ref.conn.execute("SELECT customer_id, node, points FROM rights WHERE points != 0")
        assert sorted(tuple(r) for r in rows) == sorted(want)
    return node


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_a_retirement_converges_in_any_delivery_order(data: st.DataObject) -> None:
    """The retirement may reach a replica before or after the retired node's late ops, the
    grants to it and the successor's redemption: the same views at terminals and HQ."""
    nodes, _, _ = _RETIRED.get("store") or _RETIRED.setdefault("store", retired_store())
    ref = nodes["T0"].ledger
    replayed_in_any_order(data, ref)


def retired_twice() -> tuple[dict[str, Node], dict[str, Op], str]:
    """`retired_store`, then T1, T2's successor, is retired into T0 in turn: a chain T2 -> T1
    -> T0 down which everything T2 and T1 held passes."""
    nodes, marks, cid = retired_store()
    t0, t1 = nodes["T0"].terminal, nodes["T1"].terminal
    point = t0.ledger.head(t1.node_id)[0]
    body = revocation.payload(STORE, t1.node_id, point, "counter closed", STORE_KEY, to=t0.node_id)
    marks["retire_t1"] = t0.append(revocation.REVOKE_KIND, body)
    full_sync(list(nodes.values()))
    return nodes, marks, cid


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_a_chain_of_retirements_hands_every_balance_to_its_end_in_any_order(
    data: st.DataObject,
) -> None:
    """T2's balances reach T0 through T1, whatever order the two retirements, T2's late sale,
    T1's redemption and the grants arrive in, at a terminal and at HQ; nothing is stranded."""
    nodes, _, cid = _RETIRED.get("twice") or _RETIRED.setdefault("twice", retired_twice())
    t0, t1, t2 = (nodes[n].node_id for n in ("T0", "T1", "T2"))
    ref = nodes["T0"].ledger
    assert ref.views.rights_held_by([t1, t2]) == 0
    assert ref.views.rights(CARD_FLOAT, t0) == 50_000
    assert ref.views.rights(cid, t0) == ref.views.points(cid) > 0
    assert {n: r.to for n, r in ref.revocations().items()} == {t2: t1, t1: t0}
    for node in nodes.values():
        assert views(node.ledger) == views(ref), node.name
    assert replayed_in_any_order(data, ref).verify() == []


def test_store_retire_moves_the_balances_to_the_node_named(tmp_path: Path) -> None:
    a, b, c = make_shop(tmp_path, ["A", "B", "C"], catalog=False)
    bad = meshpos(a, "store", "retire", "C", "--to", "C", check=False)
    assert bad.code != 0 and "'C' is the node being retired" in bad.err
    out = meshpos(a, "store", "retire", "C", "--to", "B", "--json").json()
    assert out["to"] == "B" and out["to_node_id"] == node_id(b) and out["node"] == "C"
    again = meshpos(a, "store", "retire", "C", "--to", "B", check=False)
    assert again.code != 0 and "already revoked" in again.err
    assert revoked_of(a)[node_id(c)].to == node_id(b)


def revoked_of(d: Path) -> dict[str, Revoked]:
    t = Terminal.open(d)
    try:
        return t.ledger.revocations()
    finally:
        t.close()


# -- coming back with an old identity: a chain reset (issue 13 item 8) ---------------------------


def test_a_terminal_restored_from_an_old_backup_resets_its_chain_and_cannot_fork(
    tmp_path: Path,
) -> None:
    """B is restored from a backup older than ops A already holds. Signing as itself it would
    fork its chain (A refuses the second op with a seq it holds); after `node reset-chain` and
    the store-key holder's `enroll sign` + `store retire`, it signs a new chain that A takes."""
    a, b = make_shop(tmp_path, ["A", "B"])
    sell = ("sell", "TSH-NAV-M", "--json")
    exchange(a, b)  # the catalogue
    meshpos(b, *sell)
    backup = tmp_path / "b-backup.db"
    shutil.copy(b / "meshpos.db", backup)  # the backup (the daemon-less node is checkpointed)
    meshpos(b, *sell)
    meshpos(b, *sell)
    exchange(b, a)  # A holds all three of B's sales
    shutil.copy(backup, b / "meshpos.db")  # B's disk died: restored from the old backup
    old_id = node_id(b)
    forked = meshpos(b, *sell).json()
    with pytest.raises(ChainError, match=r"signed two different ops|does not follow"):
        exchange(a, b)  # what would happen: a fork (A's copy of B's chain no longer fits)
    shutil.copy(backup, b / "meshpos.db")  # restore again, and this time reset the chain
    out = meshpos(b, "node", "reset-chain", "--name", "B.2", "--out", str(tmp_path / "req"))
    assert f"store retire {old_id} --to B.2" in out.out
    meshpos(a, "enroll", "sign", str(tmp_path / "req"), "--out", str(tmp_path / "enr"))
    meshpos(a, "store", "retire", old_id, "--to", "B.2")
    meshpos(b, "enroll", "install", str(tmp_path / "enr"))
    again = meshpos(b, *sell).json()
    assert again["sale_id"].split("-")[-2] == "B.2" and again["sale_id"] != forked["sale_id"]
    exchange(b, a)
    exchange(a, b)
    for d in (a, b):
        assert meshpos(d, "verify").code == 0
    assert revoked_of(a)[old_id].to == node_id(b) != old_id
    assert (b / "replaced" / f"chain-{old_id}" / "node.key").exists()


def exchange(src: Path, dst: Path) -> None:
    """What a sync session does: `dst` takes what it lacks of `src`'s log."""
    s, d = Terminal.open(src), Terminal.open(dst)
    try:
        d.ingest(s.ledger.ops_since(d.ledger.vv()), [n for n in s.ledger.nodes() if n.cert])
    finally:
        s.close()
        d.close()
