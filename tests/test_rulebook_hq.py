"""The rulebook between HQ and the stores.

- Who presents a certificate must be the node it names (issue 12, item 6): an impostor with a
  fresh key presenting another node's certificate, or HQ's, is refused; nothing is stored and no
  node is recorded.
- LWW ties (item 8): two writes with equal HLCs, delivered in either order, have the same winner
  at a terminal and at HQ.
- The attack end to end (item 9): a real HQ and real daemons; a compromised terminal pushes an
  unapproved stock adjustment straight to HQ. HQ stores it without effect, exactly as the store
  does once it arrives there; both list it as a conflict; HQ's next price reaches every counter.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
from hq_helpers import HQServer, Store, make_store
from mesh_procs import meshpos, wait_until
from rulebook_helpers import NODES, STORE, fresh_ledger, records
from test_rulebook import hq_at
from test_rulebook import pg_cluster as pg_cluster  # the throwaway PostgreSQL, as a fixture

from meshpos.core.clock import pack, wall_ms
from meshpos.core.ops import Op, Signer, make_op
from meshpos.demo.hq import HQProcess, differences, enrol_store, hq_view, store_view, store_vv
from meshpos.demo.processes import Daemons
from meshpos.domain.enrolment import NodeRecord
from meshpos.hq.client import HQClient, HQRefused
from meshpos.hq.service import HQService
from meshpos.hq.wire import H_CERT
from meshpos.node.membership import NODE_CERT
from meshpos.service.staff import add_user
from meshpos.service.terminal import Terminal

DEADLINE = 45.0
HOT = "TSH-NAV-M"


# -- item 6: a presented certificate must belong to its presenter -----------------------------------


@pytest.fixture(scope="module")
def hq(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HQServer]:
    server = HQServer(tmp_path_factory.mktemp("hq-impostor") / "hq")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def store(hq: HQServer, tmp_path: Path) -> Iterator[tuple[Store, HQService]]:
    svc = hq.service()
    st = make_store(hq, tmp_path, 2, svc=svc)
    st.relay()
    try:
        yield st, svc
    finally:
        st.close()
        svc.close()


def _held(svc: HQService, store: str) -> tuple[Any, ...]:
    nodes = sorted(n.node_id for n in svc.storage.enrolment.nodes(store))
    return (svc.storage.log.op_count(store), svc.storage.vv(store), nodes,
            svc.storage.views.stock(store), svc.storage.views.conflicts(store))  # fmt: skip


def _stock_op(signer: Signer, store: str) -> Op:
    return make_op(
        signer,
        store=store,
        seq=1,
        hlc=pack(wall_ms(), 0),
        user="x",
        kind="stock.adjust",
        payload={"sku": HOT, "delta": -9, "reason": "x"},
        prev=bytes(32),
    )


def _float_op(signer: Signer, store: str) -> Op:
    return make_op(signer, store=store, seq=1, hlc=pack(wall_ms(), 0), user="x",
                   kind="card.float", payload={"to": signer.node_id, "amount": 10**9,
                                               "total": 10**9}, prev=bytes(32))  # fmt: skip


def test_an_impostor_presenting_another_node_s_certificate_is_refused(
    hq: HQServer, store: tuple[Store, HQService]
) -> None:
    st, svc = store
    before = _held(svc, st.id)
    hq_cert = svc.storage.enrolment.store(st.id)
    assert hq_cert is not None and hq_cert.hq_cert is not None
    victim = st.terminals[1]
    victim_cert = (victim.cfg.dir / NODE_CERT).read_bytes()
    impostor = Signer.generate()
    for cert in (victim_cert, hq_cert.hq_cert):
        for op in (_stock_op(impostor, st.id), _float_op(impostor, st.id)):
            # In the request's header, signing as itself ...
            client = HQClient(hq.url, impostor, st.id, cert=cert)
            with pytest.raises(HQRefused) as refused:
                client.push([op.wire()])
            assert (refused.value.status, refused.value.code) == (401, "unauthorized")
            # One answer to every stranger (issue 13): the reason goes to HQ's log only.
            assert "not signed by a node HQ knows in this store" in str(refused.value)
            client.close()
            # ... or as a node record a compromised enrolled terminal relays with its ops.
            record = NodeRecord(impostor.node_id, impostor.public_key, st.id, "T9", cert)
            with st.client() as relay, pytest.raises(HQRefused) as refused:
                relay.push([op.wire()], [record])
            assert (refused.value.status, refused.value.code) == (403, "not_enrolled")
            assert "belongs to another node" in str(refused.value)
    # Presenting another's certificate under the other's node id: the signature gives it away.
    forged = httpx.post(
        f"{hq.url}/v1/stores/{st.id}/ops",
        content=b"\x81\xa3ops\x90",
        headers={
            "x-meshpos-node": victim.node_id,
            "x-meshpos-time": str(wall_ms()),
            "x-meshpos-signature": impostor.sign(b"x").hex(),
            H_CERT: base64.b64encode(victim_cert).decode(),
        },
    )
    assert forged.status_code == 401
    assert _held(svc, st.id) == before
    assert impostor.node_id not in {n.node_id for n in svc.storage.enrolment.nodes(st.id)}


# -- item 8: LWW ties ------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_equal_hlcs_have_the_same_winner_at_terminals_and_at_hq_in_either_order(
    tmp_path: Path, backend: str, request: pytest.FixtureRequest
) -> None:
    """Two counters set one price at the same HLC: the greater origin id wins, everywhere."""
    t0, t1 = (NODES[n][0] for n in ("T0", "T1"))
    hlc = pack(1_760_000_000_000, 3)
    writes = [
        make_op(
            s,
            store=STORE,
            seq=1,
            hlc=hlc,
            user="x",
            kind="product.upsert",
            payload={"sku": "SKU0", "fields": {"name": "Tee", "price": price}},
            prev=bytes(32),
        )
        for s, price in ((t0, 100), (t1, 200))
    ]
    winner = max(writes, key=lambda o: o.origin).payload["fields"]["price"]
    assert {o.hlc for o in writes} == {hlc} and writes[0].origin != writes[1].origin
    for i, order in enumerate((writes, writes[::-1])):
        node = fresh_ledger()
        for op in order:
            node.ingest([op])
        assert node.views.prices() == {"SKU0": winner}
        (tmp_path / str(i)).mkdir()
        url = request.getfixturevalue("pg_cluster").create_db() if backend == "postgresql" else None
        with hq_at(tmp_path / str(i), url) as storage:
            for op in order:
                storage.log.ingest(STORE, [op.wire()], records(), now_ms=1)
            assert storage.views.registers(STORE, "product")["SKU0"]["price"] == winner


# -- item 9: the attack, end to end -----------------------------------------------------------------


def _push_unapproved(url: str, directory: Path, store: str) -> tuple[Op, Any]:
    """A compromised terminal signs a stock adjustment with its own key, with no approval and a
    clock two hours on (past the grace after staff set-up), and pushes it to HQ itself."""
    t = Terminal.open(directory)
    try:
        later = pack(wall_ms() + 2 * 3_600_000, 0)
        op = t.ledger.append(t.signer, kind="stock.adjust", user="cal", hlc=later,
                             payload={"sku": HOT, "delta": -7, "reason": "shrinkage"})  # fmt: skip
        cert = (directory / NODE_CERT).read_bytes()
        record = NodeRecord(t.node_id, t.signer.public_key, store, directory.name, cert)
        own = [o.wire() for o in t.ledger.ops_since({}) if o.origin == t.node_id]  # its chain
        with HQClient(url, t.signer, store, cert=cert) as client:
            return op, client.push(own, [record])
    finally:
        t.close()


def _conflict_ids(rows: list[dict[str, Any]]) -> set[str]:
    return {str(r["conflict_id"]) for r in rows}


def _in_sync(hq: HQProcess, svc: HQService, store: str, dirs: list[Path]) -> bool:
    first = store_vv(dirs[0])
    held = {str(o): int(s) for o, s in svc.storage.vv(store).items()}
    return bool(first) and all(store_vv(d) == first for d in dirs[1:]) and held == first


def _priced(hq: HQProcess, svc: HQService, store: str, dirs: list[Path], price: int) -> bool:
    return _in_sync(hq, svc, store, dirs) and all(
        store_view(d)["prices"][HOT] == price for d in dirs
    )


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_an_unapproved_stock_adjustment_pushed_straight_to_hq_has_no_effect_anywhere(
    tmp_path: Path, backend: str, request: pytest.FixtureRequest
) -> None:
    db = request.getfixturevalue("pg_cluster").create_db() if backend == "postgresql" else None
    hq = HQProcess(tmp_path / "hq", db=db)
    svc = hq.service()
    sid = "ATK"
    a1, a2 = enrol_store(hq, tmp_path / "store", sid, ["A1", "A2"],
                         relay={"probe_ms": 500, "poll_ms": 1000})  # fmt: skip
    try:
        with Daemons() as daemons:
            hq.start()
            daemons.start(a1)
            t = Terminal.open(a1)  # the store gets staff: adjustments need a supervisor
            try:
                add_user(t, "ada", name="Ada", role="admin", pin="111111")
            finally:
                t.close()
            wait_until(partial(_in_sync, hq, svc, sid, [a1]), DEADLINE, "A1 at HQ", daemons)
            before = store_view(a1)["stock"][HOT]

            # A2 is compromised: it signs a stock adjustment with its own key, with no approval
            # and a clock two hours on (past the grace after staff set-up), and pushes it to HQ
            # itself, before its peers ever see it.
            op, pushed = _push_unapproved(hq.url, a2, sid)
            assert pushed.applied == op.seq  # stored: A2's chain goes on at HQ
            cid = f"unauthorised:{op.origin}:{op.seq}"
            assert cid in _conflict_ids(svc.storage.views.conflicts(sid))
            assert {r["sku"]: r["qty"] for r in svc.storage.views.stock(sid)}[HOT] == before

            daemons.start(a2)
            wait_until(partial(_in_sync, hq, svc, sid, [a1, a2]), DEADLINE, "store and HQ", daemons)
            out = meshpos(a1, "hq", "price", HOT, "449", "--dir", str(hq.dir))
            assert "op(s) signed by HQ" in out.out
            wait_until(partial(_priced, hq, svc, sid, [a1, a2], 44_900), DEADLINE,
                       "HQ's price on every counter", daemons)  # fmt: skip

            for d in (a1, a2):
                assert differences(store_view(d), hq_view(hq, sid)) == [], d.name
                assert store_view(d)["stock"][HOT] == before
                listed = meshpos(d, "conflicts", "--json").json()
                [mine] = [c for c in listed if c["conflict_id"] == cid]
                assert mine["detail"]["rule"] == "approval"
                assert mine["detail"]["node"] == "A2" and mine["detail"]["user"] == "cal"
            report = meshpos(a1, "hq", "report", "--json", "--store", sid,
                             "--dir", str(hq.dir)).json()  # fmt: skip
            assert cid in _conflict_ids(report["conflicts"])
            served = hq.report("", store=sid)
            assert cid in _conflict_ids(served["conflicts"])
            row = next(c for c in served["conflicts"] if c["conflict_id"] == cid)
            assert row["detail"]["node"] == "A2" and "approval" in row["detail"]["reason"]
    finally:
        hq.stop()
        svc.close()
