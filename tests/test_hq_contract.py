"""The HQ contract, run against a real `meshpos hq serve` process over HTTP on each storage backend:
SQLite (the default) and a throwaway PostgreSQL 15 cluster. Every test uses its own store, so one
HQ process per backend serves the whole module."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from hq_helpers import (
    HQServer,
    Store,
    certified,
    hq_views,
    make_store,
    open_float,
    ops_of,
    pan_with_suffix,
    push_all,
    sell_by_card,
    settings_of,
    store_views,
    wires,
)
from ledger_helpers import signed_with_raw_payload
from pg import Cluster, pg_cluster_fixture

from meshpos.core.errors import InputError
from meshpos.core.ops import Signer, make_op, pack
from meshpos.domain import giftcards
from meshpos.domain.authority import CARD_FLOAT
from meshpos.domain.cards import blocked_reason, open_card, sealed_from_tender
from meshpos.domain.pricing import Tender
from meshpos.hq.client import HQRefused
from meshpos.hq.service import HQService
from meshpos.service import giftcards as giftcard_service

LIMITS = {"max_batch_ops": 300, "max_body_bytes": 1_000_000}


@pytest.fixture(scope="module")
def pg_cluster() -> Iterator[Cluster]:
    yield from pg_cluster_fixture()


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def hq(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[HQServer]:
    db = None
    if request.param == "postgresql":
        db = request.getfixturevalue("pg_cluster").create_db()
    server = HQServer(tmp_path_factory.mktemp(f"hq-{request.param}") / "hq", db, limits=LIMITS)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def svc(hq: HQServer) -> Iterator[HQService]:
    s = hq.service()
    yield s
    s.close()


@pytest.fixture
def store(hq: HQServer, svc: HQService, tmp_path: Path) -> Iterator[Store]:
    st = make_store(hq, tmp_path, 2, svc=svc)
    st.relay()  # the store learns HQ's payment key; HQ learns the catalogue
    yield st
    st.close()


def _sales(st: Store, n: int) -> None:
    for i in range(n):
        t = st.terminals[i % len(st.terminals)]
        t.sell([("TEE", 1), ("CAP", 1 + i % 2)], allow_oversell=True)
    st.mesh()


# -- ingest, vv, views ----------------------------------------------------------------------------


def test_relay_round_gives_hq_every_op_once_and_matching_views(
    store: Store, svc: HQService
) -> None:
    cid = store.t1.add_customer({"name": "Asha", "phone": "9800000001"})
    _sales(store, 6)
    store.terminals[1].sell([("JKT", 1)], customer=cid)
    store.mesh()
    with store.client() as c:
        vv = push_all(c, store.t1, batch=5)
        assert vv == c.vv() == store.t1.ledger.vv()
        assert vv[svc.node_id] == 1  # HQ's payment key setting, sent at enrolment
    assert svc.storage.log.op_count(store.id) == store.t1.ledger.op_count()
    assert hq_views(svc, store.id) == store_views(store.t1)
    assert store_views(store.t1)["loyalty"] == {cid: 30}


def test_the_same_batch_twice_is_stored_once(store: Store, svc: HQService) -> None:
    _sales(store, 3)
    with store.client() as c:
        batch = wires(store.t1, c.vv())
        first = c.push(batch, certified(store.t1))
        again = c.push(batch, certified(store.t1))
    assert first.applied == len(batch) and first.duplicates == 0
    assert again.applied == 0 and again.duplicates == len(batch)
    assert again.vv == first.vv == store.t1.ledger.vv()
    assert svc.storage.log.op_count(store.id) == store.t1.ledger.op_count()
    assert hq_views(svc, store.id) == store_views(store.t1)


def test_two_relays_pushing_overlapping_batches_at_once_store_each_op_once(
    store: Store, svc: HQService
) -> None:
    _sales(store, 60)
    with store.client() as c:
        everything = wires(store.t1, c.vv())
    applied: list[int] = []
    errors: list[BaseException] = []
    start = threading.Barrier(6)

    def relay(i: int) -> None:
        t = store.terminals[i % 2]
        try:
            with store.client(t) as c:
                start.wait()
                step = 40 + 7 * i
                for lo in range(0, len(everything), step):
                    applied.append(c.push(everything[lo : lo + step], certified(t)).applied)
                applied.append(c.push(everything[-step:], certified(t)).applied)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=relay, args=(i,)) for i in range(6)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(60)
    assert not errors
    with store.client() as c:
        applied.append(c.push(everything, certified(store.t1)).applied)
        assert c.vv() == store.t1.ledger.vv()
    assert sum(applied) == len(everything)
    assert svc.storage.log.op_count(store.id) == store.t1.ledger.op_count()
    assert hq_views(svc, store.id) == store_views(store.t1)


def test_ops_past_a_gap_are_skipped_until_the_gap_is_filled(store: Store, svc: HQService) -> None:
    for _ in range(6):
        store.t1.sell([("CAP", 1)], allow_oversell=True)
    with store.client() as c:
        held = c.vv()[store.t1.node_id]
        mine = [o for o in ops_of(store.t1) if o.origin == store.t1.node_id and o.seq > held]
        res = c.push([o.wire() for o in mine[3:]], certified(store.t1))
        assert res.applied == 0 and res.skipped == {store.t1.node_id: len(mine) - 3}
        assert res.vv[store.t1.node_id] == held
        res = c.push([o.wire() for o in mine], certified(store.t1))
        assert res.applied == len(mine) and res.vv[store.t1.node_id] == mine[-1].seq


# -- downstream -------------------------------------------------------------------------------------


def test_price_change_product_and_loyalty_rule_from_hq_reach_every_terminal(
    store: Store, svc: HQService
) -> None:
    store.relay()
    svc.set_price("TEE", 90_000)
    svc.upsert_product("SCARF", {"name": "Scarf", "price": 40_000, "gst_rate": 500})
    svc.set_setting("loyalty.earn_per_100", 3)
    store.relay(store.terminals[1])
    store.mesh()
    for t in store.terminals:
        assert t.product("TEE").price == 90_000
        assert t.product("SCARF").name == "Scarf"
        assert t.loyalty_rule().earn_per_100 == 3
    sale = store.t1.sell([("TEE", 1)])
    assert sale.payload["total"] == 90_000
    store.relay()
    store.relay(store.terminals[1])  # HQ bridges the counters even with the LAN down
    assert hq_views(svc, store.id) == store_views(store.terminals[1]) == store_views(store.t1)
    hq_op = store.t1.ledger.get(svc.node_id, 2)
    assert hq_op is not None and hq_op.kind == "product.upsert" and hq_op.user == "hq"


def test_a_price_set_at_a_terminal_after_hq_wins_by_hlc(store: Store, svc: HQService) -> None:
    store.relay()
    svc.set_price("CAP", 30_000)
    store.relay()
    store.t1.set_price("CAP", 27_500)
    store.relay()
    assert svc.storage.views.registers(store.id, "product")["CAP"]["price"] == 27_500
    assert store.t1.product("CAP").price == 27_500


def test_pull_is_paged_and_resumes_from_the_vv(store: Store, svc: HQService) -> None:
    store.relay()
    for i in range(7):
        svc.set_setting(f"promo.{i}", i, [store.id])
    with store.client() as c:
        first = c.pull(store.t1.ledger.vv(), limit=3)
        assert len(first.ops) == 3 and first.more
        assert {n.node_id for n in first.nodes} == {svc.node_id}
        store.t1.ingest(first.ops, first.nodes)
        rest = c.pull(store.t1.ledger.vv(), limit=100)
        assert len(rest.ops) == 4 and not rest.more
    store.t1.ingest(rest.ops, rest.nodes)
    assert settings_of(store.t1)["promo.6"] == 6


# -- bad requests -----------------------------------------------------------------------------------


def _refused(fn: object, status: int, code: str) -> HQRefused:
    with pytest.raises(HQRefused) as info:
        fn()  # type: ignore[operator]
    assert (info.value.status, info.value.code) == (status, code), str(info.value)
    return info.value


def test_each_bad_request_is_refused_and_changes_nothing(
    hq: HQServer, store: Store, svc: HQService, tmp_path: Path
) -> None:
    for _ in range(4):
        store.t1.sell([("TEE", 1)])
    t = store.t1
    c = store.client()
    held = c.vv()[t.node_id]
    mine = [o for o in ops_of(t) if o.origin == t.node_id and o.seq > held]
    half = len(mine) // 2
    c.push([o.wire() for o in mine[:half]], certified(t))
    before = (c.vv(), svc.storage.log.op_count(store.id), hq_views(svc, store.id))
    nxt = mine[half]
    path = f"/v1/stores/{store.id}/ops"

    _refused(lambda: c._request("POST", path, b"\xc1 not msgpack"), 400, "malformed")
    _refused(lambda: c._request("POST", path, pack({"ops": ["text"]})), 400, "malformed")
    _refused(lambda: c._request("POST", path, pack({"ops": [b"\x93\x01"]})), 400, "malformed")
    other = _refused(
        lambda: store.client().__class__(hq.url, t.signer, "NOPE").push([nxt.wire()]),
        401,
        "unauthorized",
    )
    assert "not signed by a node HQ knows" in str(other)
    forged = pack([nxt.body, Signer.generate().sign(nxt.body)])
    _refused(lambda: c.push([forged], certified(t)), 400, "bad_signature")
    wrong_prev = make_op(
        t.signer, store=store.id, seq=nxt.seq, hlc=nxt.hlc, user="x", kind="note",
        payload={"text": "rewritten history"}, prev=bytes(32),
    )  # fmt: skip
    _refused(lambda: c.push([wrong_prev.wire()], certified(t)), 422, "broken_chain")
    twin = make_op(
        t.signer, store=store.id, seq=mine[0].seq, hlc=mine[0].hlc, user="x", kind="note",
        payload={"text": "a second op 1"}, prev=mine[0].prev,
    )  # fmt: skip
    _refused(lambda: c.push([twin.wire()], certified(t)), 409, "equivocation")
    # Chained and signed, but its payload is not a map of text keys: found when HQ decodes it.
    odd = signed_with_raw_payload(t.signer, store.id, nxt.seq, nxt.hlc, nxt.prev, b"\x81\x01\x02")
    _refused(lambda: c.push([odd.wire()], certified(t)), 400, "malformed")
    stranger = Signer.generate()
    alien = make_op(stranger, store=store.id, seq=1, hlc=1, user="x", kind="note",
                    payload={}, prev=bytes(32))  # fmt: skip
    _refused(lambda: c.push([alien.wire()]), 403, "not_enrolled")
    elsewhere = make_op(t.signer, store="ELSEWHERE", seq=1, hlc=1, user="x", kind="note",
                        payload={}, prev=bytes(32))  # fmt: skip
    _refused(lambda: c.push([elsewhere.wire()]), 400, "wrong_store")
    resent = pack([mine[0].body, Signer.generate().sign(mine[0].body)])
    assert c.push([resent]).duplicates == 1  # same bytes as held: nothing to store
    _refused(lambda: c.push([nxt.wire()] * 301), 413, "too_large")
    _refused(lambda: c._request("POST", path, b"\x00" * 1_100_000), 413, "too_large")
    unsigned = httpx.post(hq.url + path, content=pack({"ops": [nxt.wire()]}))
    assert unsigned.status_code == 401 and unsigned.json()["error"] == "unauthorized"
    impostor = store.client().__class__(hq.url, stranger, store.id)
    _refused(lambda: impostor.push([nxt.wire()]), 401, "unauthorized")
    _refused(lambda: impostor.pull({}), 401, "unauthorized")
    bad_pull = f"/v1/stores/{store.id}/pull"
    _refused(lambda: c._request("POST", bad_pull, pack({"vv": {"a": -1}})), 400, "malformed")
    _refused(lambda: c._request("POST", bad_pull, pack({"limit": 10**9})), 400, "malformed")

    assert (c.vv(), svc.storage.log.op_count(store.id), hq_views(svc, store.id)) == before
    assert c.push([o.wire() for o in mine[half:]], certified(t)).applied == len(mine) - half
    c.close()
    assert "refused (413)" in hq.logs() and "refused (400)" in hq.logs()


# -- card payments ----------------------------------------------------------------------------------


def test_card_sealed_at_the_till_is_settled_by_hq_and_the_result_flows_back(
    hq: HQServer, store: Store, svc: HQService
) -> None:
    open_float(svc, store)
    good = pan_with_suffix("4242")
    sale = sell_by_card(store.t1, [("TEE", 1)], good)
    tender = sale.payload["tenders"][0]
    assert (tender["card_last4"], tender["card_brand"]) == ("4242", "visa")
    assert good.encode() not in sale.op.body and good[-8:].encode() not in sale.op.body
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    with pytest.raises(Exception, match="does not open"):
        open_card(X25519PrivateKey.generate(), sealed_from_tender(tender, sale.op.sealed.get(0))
                  or b"", store=store.id,
                  amount=tender["amount"], last4="4242", brand="visa")  # fmt: skip
    store.relay()
    store.relay()  # the first push answers before the result could be pulled in the same round
    results = store.t1.query(
        "SELECT field, value FROM registers WHERE entity = 'payment' AND key = ?",
        (f"{sale.sale_id}#0",),
    )
    got = {r["field"]: r["value"] for r in results}
    assert got["status"] == '"approved"' and len(got["auth_code"]) == 8
    assert store.t1.conflicts() == []
    assert [p["status"] for p in svc.storage.views.payments(store.id)] == ["approved"]
    with store.client() as c:  # a second upload of the same sale settles nothing twice
        c.push([sale.op.wire()], certified(store.t1))
    assert len(svc.storage.views.payments(store.id)) == 1
    result_ops = [o for o in ops_of(store.t1) if o.kind == "payment.result"]
    assert len(result_ops) == 1 and result_ops[0].origin == svc.node_id


def test_hq_keeps_a_card_sales_sealed_data_until_a_later_op_gives_the_sale_authority(
    store: Store, svc: HQService
) -> None:
    """A card sale that spends float another counter handed over, reaching HQ before that
    hand-over, has no authority there yet: HQ charges nothing but keeps the sealed card data
    that came beside it. When the hand-over arrives the sale gains authority, its payment job
    takes the data and is settled then (not left to the periodic sweep), and HQ keeps none."""
    open_float(svc, store, rupees=4_000)  # ₹2,000 of offline card float for each counter
    t1, t2 = store.terminals
    store.mesh()
    assert t2.grant_rights(CARD_FLOAT, t1.node_id, 200_000) == 200_000
    store.mesh()
    sale = sell_by_card(t1, [("JKT", 1)], pan_with_suffix("4242"))  # ₹3,000: needs both shares
    assert sale.payload["tenders"][0]["amount"] == 300_000

    def kept() -> list[tuple[object, ...]]:
        return svc.storage.db.run(
            lambda tx: [tuple(r) for r in tx.execute("SELECT origin, seq, tender FROM sealed")]
        )

    with store.client(t1) as c:
        held = c.vv()
        own = [o for o in t1.ledger.ops_since(held) if o.origin == t1.node_id]
        assert [o.seq for o in own][-1] == sale.op.seq and sale.op.sealed
        c.push([o.wire() for o in own], certified(t1))
        assert svc.storage.views.payments(store.id) == []
        assert kept() == [(sale.op.origin, sale.op.seq, 0)]
        c.push(wires(t2, c.vv()), certified(t2))  # the hand-over
    [payment] = svc.storage.views.payments(store.id)  # settled by the push that gave authority
    assert (payment["sale_id"], payment["status"]) == (sale.sale_id, "approved")
    assert kept() == []


def test_declined_card_opens_a_conflict_and_lands_on_every_blocklist(
    hq: HQServer, svc: HQService, tmp_path: Path
) -> None:
    a = make_store(hq, tmp_path / "a", 2, svc=svc)
    b = make_store(hq, tmp_path / "b", 1, svc=svc)
    try:
        open_float(svc, a)
        bad = pan_with_suffix("0002")
        sale = sell_by_card(a.t1, [("JKT", 1)], bad)
        a.relay()
        a.relay(a.terminals[1])
        cid = f"payment_declined:{sale.sale_id}"
        [conflict] = a.terminals[1].conflicts()
        assert conflict["conflict_id"] == cid
        assert conflict["detail"]["code"] == "do_not_honour"
        assert conflict["detail"]["card"] == "visa ending 0002"
        assert conflict["ops"] == [f"{sale.op.origin}:{sale.op.seq}"]
        b.relay()
        for t in (a.terminals[1], b.t1):
            assert blocked_reason(settings_of(t), bad) == "do_not_honour"
            assert blocked_reason(settings_of(t), pan_with_suffix("4242")) is None
        a.terminals[1].resolve(cid, "customer paid cash instead")
        a.mesh()
        assert a.t1.conflicts() == []
        assert a.t1.conflicts("resolved")[0]["conflict_id"] == cid
    finally:
        a.close()
        b.close()


def test_a_card_blocked_at_hq_is_refused_offline_and_declined_if_taken(
    store: Store, svc: HQService
) -> None:
    open_float(svc, store)
    stolen = pan_with_suffix("7777")
    svc.block_card(stolen, "stolen")
    store.relay()
    assert blocked_reason(settings_of(store.t1), stolen) == "stolen"
    sale = sell_by_card(store.t1, [("CAP", 1)], stolen)  # a till that ignored the blocklist
    store.relay()
    pay = [p for p in svc.storage.views.payments(store.id) if p["sale_id"] == sale.sale_id]
    assert [(p["status"], p["code"]) for p in pay] == [("declined", "blocklisted")]


# -- loyalty across stores --------------------------------------------------------------------------


def test_points_earned_in_one_store_are_redeemed_in_another_through_hq(
    hq: HQServer, svc: HQService, tmp_path: Path
) -> None:
    a = make_store(hq, tmp_path / "a", 1, svc=svc)
    b = make_store(hq, tmp_path / "b", 1, svc=svc)
    try:
        ta, tb = a.t1, b.t1
        cid = ta.add_customer({"name": "Ravi", "phone": "9811111111"})
        ta.sell([("JKT", 1)], customer=cid)  # 30 points
        assert ta.points(cid) == 30
        assert ta.grant_rights(cid, svc.node_id, 30) == 30
        a.relay()
        b.relay()
        with b.client() as c:
            assert c.claim_points(cid, 20) == {"moved": 20, "asked": 0}
            assert c.claim_points(cid, 25) == {"moved": 10, "asked": 15}
        b.relay()
        assert tb.customer(cid)["name"] == "Ravi"
        assert tb.rights(cid) == 30 and tb.points(cid) == 30
        tb.sell([("TEE", 1)], tenders=[Tender("points", 30), Tender("cash")], customer=cid)
        a.relay()
        assert ta.points(cid) == 0
        with a.client() as c:
            assert c.pull(ta.ledger.vv()).asks == []
        ta.sell([("JKT", 1)], customer=cid)  # 30 more points at A, held by A's till
        a.relay()
        with a.client() as c:
            [ask] = c.pull(ta.ledger.vv()).asks
        assert ask == {"customer_id": cid, "points": 15, "holders": {ta.node_id: 30}}
        ta.grant_rights(cid, svc.node_id, 15)
        a.relay()  # HQ settles the open ask as soon as the rights arrive
        b.relay()
        earned_at_b = tb.query("SELECT points_earned FROM sales WHERE customer_id = ?", (cid,))
        earned_at_b = earned_at_b[0]["points_earned"]
        assert earned_at_b == 9  # ₹970 paid in cash after 30 points
        assert tb.rights(cid) == 15 + earned_at_b
        chain = {r["customer_id"]: r["points"] for r in svc.storage.views.loyalty()}
        assert chain[cid] == 30 + 30 - 30 + earned_at_b
        assert chain[cid] == ta.points(cid) + tb.points(cid)
    finally:
        a.close()
        b.close()


# -- reports ----------------------------------------------------------------------------------------


def test_another_stores_expired_card_is_not_moved_by_hq_and_the_till_says_why(
    hq: HQServer, svc: HQService, tmp_path: Path
) -> None:
    """Expiry is one rule (`CardState.refusal`) for the till spending a card and for HQ moving
    its value: a card A issued and that has since expired buys nothing at B, although A handed
    its balance to HQ; B's till learns of the card from HQ and names the day it expired."""
    a = make_store(hq, tmp_path / "a", 1, svc=svc)
    b = make_store(hq, tmp_path / "b", 1, svc=svc)
    try:
        ta, tb = a.t1, b.t1
        code = str(giftcard_service.issue(ta, 100_000).payload["code"])
        key = giftcards.escrow_key(code)
        expires = ta.giftcard(code).expires_ms
        assert expires is not None
        assert ta.grant_rights(key, svc.node_id, 100_000) == 100_000
        a.relay()
        b.relay()
        later = expires + giftcards.DAY_MS
        svc.now_ms = tb.now_ms = lambda: later  # the in-process HQ: its clock is ours to set
        day = tb.store_time().day(expires)
        refused = f"gift card {code} expired on {day}: it cannot be spent"
        claimed = svc.claim_points(b.id, key, 40_000, tb.node_id)
        assert claimed == {"moved": 0, "asked": 0, "refused": refused}
        assert svc.storage.escrow.asks() == []  # not left asked: it can never be moved
        b.relay()
        assert tb.rights(key) == 0
        assert tb.giftcard(code).store == a.id
        with pytest.raises(InputError, match=f"gift card {code} expired on {day}"):
            tb.sell([("TEE", 1)], tenders=[Tender("giftcard", 40_000, code=code), Tender("cash")])
        assert tb.query("SELECT COUNT(*) AS n FROM sales")[0]["n"] == 0
        a.relay()
        assert ta.ledger.giftcards.balance(code) == 100_000  # still there, held by HQ in A
        assert ta.conflicts() == [] and tb.conflicts() == []
    finally:
        a.close()
        b.close()


def test_report_api_serves_chain_views_to_the_admin_only(
    hq: HQServer, store: Store, svc: HQService
) -> None:
    _sales(store, 4)
    store.relay()
    assert httpx.get(hq.url + "/v1/report").status_code == 401
    report = hq.get("/v1/report").json()
    mine = next(s for s in report["stores"] if s["store"] == store.id)
    assert mine["sales"] == 4 and mine["ops"] == store.t1.ledger.op_count()
    stock = hq.get("/v1/report/stock", store=store.id, sku="TEE").json()["stock"]
    assert stock == [{"store": store.id, "sku": "TEE", "name": "Tee", "qty": 16}]
    sales = hq.get("/v1/report/sales", store=store.id).json()["sales"]
    assert sum(d["sales"] for d in sales) == 4
    assert sum(d["net"] for d in sales) == store_views(store.t1)["days"][sales[0]["day"]][1]
    info = httpx.get(hq.url + "/v1/hq").json()
    assert info["node_id"] == svc.node_id and len(bytes.fromhex(info["payment_public_key"])) == 32


def test_two_hq_processes_over_one_database_act_as_one_hq(
    hq: HQServer, store: Store, svc: HQService
) -> None:
    second = HQServer(hq.dir, hq.db)
    try:
        _sales(store, 40)
        everything = wires(store.t1, svc.storage.log.vv(store.id))
        applied: list[int] = []
        errors: list[BaseException] = []

        def relay(url: str, t_index: int) -> None:
            t = store.terminals[t_index]
            try:
                with store.client(t) as c:
                    c.http.base_url = httpx.URL(url)
                    for lo in range(0, len(everything), 25):
                        applied.append(c.push(everything[lo : lo + 50], certified(t)).applied)
            except BaseException as exc:
                errors.append(exc)

        threads = [
            threading.Thread(target=relay, args=(hq.url, 0)),
            threading.Thread(target=relay, args=(second.url, 1)),
        ]
        for th in threads:
            th.start()
        svc.set_price("JKT", 280_000, [store.id])
        for th in threads:
            th.join(60)
        assert not errors
        store.relay()
        assert sum(applied) == len(everything)
        assert svc.storage.log.op_count(store.id) == store.t1.ledger.op_count()
        assert store.t1.product("JKT").price == 280_000
        assert hq_views(svc, store.id) == store_views(store.t1)
    finally:
        second.stop()
