"""HQ storage without HTTP: whatever batches relays send, in whatever order and however often,
HQ ends up with every op once and views equal to the store's (property test), and the SQL
helpers behave the same way on each backend."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hq_helpers import CATALOG
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pg import Cluster, pg_cluster_fixture

from meshpos.core.errors import EncodingError
from meshpos.core.ops import Op, Signer
from meshpos.domain.enrolment import EnrolRequest, NodeRecord, issue
from meshpos.hq.storage import HQStorage, open_storage
from meshpos.hq.storage.log import parse_vv
from meshpos.ledger.store import Ledger
from meshpos.service.config import NodeConfig
from meshpos.service.terminal import Terminal

STORE = "P1"
T0 = 1_760_000_000_000
STORE_KEY = Signer.from_seed(b"hq-prop-store-key")


def _terminal(i: int) -> tuple[Terminal, NodeRecord]:
    signer = Signer.from_seed(f"hq-prop-node-{i}".encode())
    req = EnrolRequest(STORE, signer.node_id, f"T{i}", signer.public_key, b"0" * 40, b"")
    cert = issue(STORE_KEY, STORE, req, now_ms=T0)
    cfg = NodeConfig(dir=Path("/nonexistent"), store=STORE, name=f"T{i}", node_id=signer.node_id)
    clock = iter(range(T0, T0 + 10**9, 997))
    t = Terminal(cfg, signer, Ledger(":memory:", STORE, durable=False), lambda: next(clock))
    return t, NodeRecord(signer.node_id, signer.public_key, STORE, f"T{i}", cert)


def _build() -> tuple[list[Op], list[NodeRecord], dict[str, Any]]:
    (a, ra), (b, rb) = _terminal(1), _terminal(2)
    a.import_catalog(list(CATALOG))
    b.ingest(a.ledger.ops_since({}), [ra])
    cid = a.add_customer({"name": "Meera"})
    b.ingest(a.ledger.ops_since(b.ledger.vv()), [ra])
    for i in range(8):
        (a if i % 2 else b).sell([("TEE", 1 + i % 3)], customer=cid if i % 3 == 0 else None)
        b.sell([("CAP", 1)])
    b.set_price("JKT", 310_000)
    a.set_price("JKT", 320_000)
    a.ingest(b.ledger.ops_since(a.ledger.vv()), [rb])
    ops = a.ledger.ops_since({})
    views = {
        "stock": dict(a.ledger.conn.execute("SELECT sku, qty FROM stock WHERE qty != 0")),
        "loyalty": dict(a.ledger.conn.execute("SELECT customer_id, points FROM loyalty")),
        "price": a.product("JKT").price,
        "sales": a.ledger.conn.execute("SELECT COUNT(*), SUM(total) FROM sales").fetchone(),
        "vv": a.ledger.vv(),
    }
    a.close()
    b.close()
    return ops, [ra, rb], views


OPS, NODES, VIEWS = _build()


@pytest.fixture
def storage() -> Iterator[HQStorage]:
    s = _fresh()
    yield s
    s.close()


def _fresh(url: str = ":memory:") -> HQStorage:
    s = open_storage(url, durable=False)
    s.enrolment.add_store(STORE, "prop", STORE_KEY.public_key, key_at_hq=False, now_ms=T0)
    s.enrolment.add_nodes(STORE, [n.cert for n in NODES if n.cert])
    return s


def _hq_views(s: HQStorage) -> dict[str, Any]:
    days = s.views.sales_by_day(STORE)
    return {
        "stock": {r["sku"]: r["qty"] for r in s.views.stock(STORE) if r["qty"]},
        "loyalty": {r["customer_id"]: r["points"] for r in s.views.loyalty_by_store()},
        "price": s.views.registers(STORE, "product")["JKT"]["price"],
        "sales": (
            sum(d["sales"] + d["returns"] + d["exchanges"] for d in days),
            sum(d["net"] for d in days),
        ),
        "vv": s.log.vv(STORE),
    }


batches = st.lists(
    st.tuples(st.integers(0, len(OPS)), st.integers(1, len(OPS)), st.randoms()),
    min_size=1,
    max_size=8,
)


@pytest.fixture(scope="module")
def pg_cluster() -> Iterator[Cluster]:
    yield from pg_cluster_fixture()


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(batches=batches)
def test_any_batches_in_any_order_store_each_op_once_with_the_stores_views(
    backend: str, request: pytest.FixtureRequest, batches: list[tuple[int, int, Any]]
) -> None:
    """On either database (PostgreSQL: binary COPY and array upserts; SQLite: plain INSERTs)."""
    pg = request.getfixturevalue("pg_cluster") if backend == "postgresql" else None
    s = _fresh(pg.create_db()) if pg is not None else _fresh()
    try:
        applied = 0
        for lo, size, rnd in batches:
            chunk = OPS[lo : lo + size]
            rnd.shuffle(chunk)
            if rnd.random() < 0.3:
                chunk = chunk + chunk[: len(chunk) // 2]
            out = s.log.ingest(STORE, [o.wire() for o in chunk], NODES, T0)
            applied += out.applied
            assert out.vv == s.log.vv(STORE)  # worked out in memory, as stored
            for origin, seq in out.vv.items():
                assert seq <= VIEWS["vv"][origin]
        applied += s.log.ingest(STORE, [o.wire() for o in OPS], (), T0).applied
        assert applied == len(OPS)
        assert s.log.op_count(STORE) == len(OPS)
        assert _hq_views(s) == VIEWS
    finally:
        s.close()


def test_pull_returns_exactly_what_a_vv_lacks(storage: HQStorage) -> None:
    storage.log.ingest(STORE, [o.wire() for o in OPS], NODES, T0)
    theirs = {NODES[0].node_id: 5}
    wires, vv, more = storage.log.ops_since(STORE, theirs, 10_000)
    lacking = [o for o in OPS if o.seq > theirs.get(o.origin, 0)]
    assert sorted(wires) == sorted(o.wire() for o in lacking) and not more
    page, _, more = storage.log.ops_since(STORE, theirs, 3)
    assert len(page) == 3 and more
    assert storage.log.ops_since(STORE, vv, 10)[0] == []


def test_version_vectors_from_the_wire_are_checked() -> None:
    assert parse_vv({"a": 1}) == {"a": 1}
    bad: Any
    for bad in ([], {"a": -1}, {"a": True}, {1: 2}, {"a": "1"}):
        with pytest.raises(EncodingError):
            parse_vv(bad)
