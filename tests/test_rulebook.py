"""The rulebook: authenticity gates the log, authority gates the fold, the same at every replica.

`judge` rule by rule over a hand-made past; then a store whose compromised tills break every rule
(tests/rulebook_helpers.py), replayed into fresh terminal ledgers and into HQ's storage in random
orders and batchings: every replica stores every op, and all agree on which ops have authority
and on every view.
"""

from __future__ import annotations

import random
import sqlite3
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ledger_helpers import views
from pg import Cluster, pg_cluster_fixture
from rulebook_helpers import (
    PINS,
    STORE,
    STORE_KEY,
    all_ops,
    chunked,
    feed_hq,
    fresh_ledger,
    records,
    scenario,
)

from meshpos.core.clock import pack
from meshpos.core.ops import Op, Signer, make_op
from meshpos.domain.authority import (
    APPROVAL,
    CARD_FLOAT,
    CARD_LIMIT,
    ESCROW,
    HQ_ONLY,
    REVOKED,
    Violation,
    judge,
    spends,
)
from meshpos.domain.enrolment import NodeRecord
from meshpos.domain.revocation import Revoked
from meshpos.domain.staff import issue_credential, pin_private_key, pin_record
from meshpos.hq.storage import HQStorage, open_storage
from meshpos.ledger.store import Ledger

WALL = 1_760_000_000_000
T1 = Signer.from_seed(b"judge-t1")
HQ = Signer.from_seed(b"judge-hq")


# -- judge, rule by rule ---------------------------------------------------------------------------


@dataclass
class FakePast:
    """A replica's knowledge, by hand: roles, the staff start, user and setting histories (each
    value with the HLC that set it), previous HLCs and escrow holdings."""

    roles: dict[str, str] = field(default_factory=lambda: {HQ.node_id: "hq"})
    since: int | None = None
    users: dict[str, list[tuple[int, str, str]]] = field(default_factory=dict)
    settings: dict[str, list[tuple[int, Any]]] = field(default_factory=dict)
    prev: dict[tuple[str, int], int] = field(default_factory=dict)
    held: dict[tuple[str, str], int] = field(default_factory=dict)

    def node_role(self, node_id: str) -> str | None:
        return self.roles.get(node_id, "terminal")

    def node_cert(self, node_id: str) -> bytes | None:
        return None

    def revoked(self, node_id: str) -> Revoked | None:
        return None

    def staff_since(self) -> int | None:
        return self.since

    def user_history(self, user: str, before_hlc: int) -> tuple[set[str], set[str]]:
        rows = [(r, k) for h, r, k in self.users.get(user, ()) if h < before_hlc]
        return {r for r, _ in rows}, {k for _, k in rows}

    def setting_history(self, key: str, before_hlc: int) -> list[Any]:
        return [v for h, v in self.settings.get(key, ()) if h < before_hlc]

    def prev_hlc(self, origin: str, seq: int) -> int | None:
        return self.prev.get((origin, seq))

    def rights_before(self, customer: str, node: str, op: Op) -> int:
        return self.held.get((customer, node), 0)


def at(minutes: int) -> int:
    return pack(WALL + minutes * 60_000, 0)


def an_op(kind: str, payload: dict[str, Any], *, signer: Signer = T1, minutes: int = 0,
          seq: int = 5) -> Op:  # fmt: skip
    return make_op(signer, store=STORE, seq=seq, hlc=at(minutes), user="cal", kind=kind,
                   payload=payload, prev=bytes(32))  # fmt: skip


ADJUST = {"sku": "S", "delta": -1, "reason": "r"}
SUE_SALT = bytes(range(16))
SUE_KEY = pin_record(PINS["sue"], SUE_SALT)["pin_key"]


def approved(kind: str, payload: dict[str, Any], minutes: int, by: str = "sue") -> Op:
    """`payload` carrying `by`'s approval (sue's PIN), signed for the op it sits in."""
    key = pin_private_key(PINS["sue"], SUE_SALT)
    cred = issue_credential(STORE, by, key, bytes(32), WALL + 10**9)
    base = an_op(kind, payload, minutes=minutes)
    approval = cred.approve(base.origin, base.seq, base.user, kind, payload)
    return an_op(kind, {**payload, "approval": approval}, minutes=minutes)


def test_hq_only_kinds_need_a_certificate_with_role_hq() -> None:
    result = {"sale_id": "x", "tender": 0, "status": "approved", "amount": 1}
    known = {"code": "GC1234567890128", "kind": "giftcard", "amount": 1, "store": "S2"}
    for kind, payload in (
        ("payment.result", result),
        ("card.float", {"to": "x", "amount": 1}),
        ("giftcard.known", known),  # a till may not rewrite a card's expiry
    ):
        found = judge(an_op(kind, payload), FakePast())
        assert found is not None and found.rule == HQ_ONLY and "not HQ" in found.message
        assert judge(an_op(kind, payload, signer=HQ), FakePast()) is None


def test_without_staff_nothing_needs_approval_and_hq_never_does() -> None:
    assert judge(an_op("stock.adjust", ADJUST, minutes=600), FakePast()) is None
    staffed = FakePast(since=at(0))
    assert judge(an_op("stock.adjust", ADJUST, signer=HQ, minutes=600), staffed) is None
    found = judge(an_op("stock.adjust", ADJUST, minutes=600), staffed)
    assert found == Violation(APPROVAL, found.message if found else "")
    assert found is not None and "needs a supervisor, manager or admin's approval" in found.message


def test_the_bootstrap_grace_holds_for_ops_near_staff_set_up_and_not_backdated_ones() -> None:
    staffed = FakePast(since=at(0))
    assert judge(an_op("stock.adjust", ADJUST, minutes=59), staffed) is None
    assert judge(an_op("stock.adjust", ADJUST, minutes=61), staffed) is not None
    staffed.prev[(T1.node_id, 4)] = at(90)  # its op before was stamped later: clock run back
    assert judge(an_op("stock.adjust", ADJUST, minutes=59), staffed) is not None
    # A longer grace set before the op counts (the most lenient value ever set).
    longer = FakePast(since=at(0), settings={"staff.bootstrap_grace_minutes": [(at(1), 120)]})
    assert judge(an_op("stock.adjust", ADJUST, minutes=100), longer) is None


def test_an_approval_counts_if_its_approver_ever_held_the_role_before_the_op() -> None:
    op = approved("stock.adjust", ADJUST, minutes=300)
    past = FakePast(since=at(0), users={"sue": [(at(1), "supervisor", SUE_KEY)]})
    assert judge(op, past) is None
    past.users["sue"].append((at(200), "cashier", SUE_KEY))  # demoted later: still was one
    assert judge(op, past) is None
    cases = {
        "never was": FakePast(since=at(0), users={"sue": [(at(1), "cashier", SUE_KEY)]}),
        "too late": FakePast(since=at(0), users={"sue": [(at(400), "supervisor", SUE_KEY)]}),
        "other PIN": FakePast(since=at(0), users={"sue": [(at(1), "supervisor", "ab" * 32)]}),
    }
    messages = {}
    for name, other in cases.items():
        found = judge(op, other)
        assert found is not None and found.rule == APPROVAL, name
        messages[name] = found.message
    assert "was never a supervisor" in messages["never was"]
    assert "not a user of the store" in messages["too late"]
    assert "not signed with sue's PIN" in messages["other PIN"]
    copied = an_op("stock.adjust", {**ADJUST, "delta": -5, "approval": op.payload["approval"]},
                   minutes=300)  # fmt: skip
    found = judge(copied, past)
    assert found is not None and "was not made for this op" in found.message


def test_a_discount_above_the_most_lenient_limit_needs_approval() -> None:
    line = {"sku": "S", "qty": 1, "unit_price": 10_000, "discount": 1_500}
    sale = {"lines": [line], "tenders": []}
    past = FakePast(since=at(0))
    found = judge(an_op("sale", sale, minutes=300), past)
    assert found is not None and "discount of 15.0%" in found.message
    past.settings["staff.discount_limit_bp"] = [(at(2), 2_000), (at(3), 500)]
    assert judge(an_op("sale", sale, minutes=300), past) is None


def test_a_counter_spends_only_what_it_held_before() -> None:
    sale = {"customer": "C1", "points_redeemed": 30, "points_earned": 5, "tenders": []}
    assert spends(an_op("sale", sale)) == {"C1": 25}
    past = FakePast(held={("C1", T1.node_id): 24})
    found = judge(an_op("sale", sale), past)
    assert found is not None and found.rule == ESCROW
    assert "spends 25 of customer C1's points but its counter held only 24" in found.message
    past.held[("C1", T1.node_id)] = 25
    assert judge(an_op("sale", sale), past) is None
    assert spends(an_op("escrow.transfer", {"customer_id": "C1", "to": "x", "points": 7})) == {
        "C1": 7
    }
    assert spends(an_op("loyalty.adjust", {"customer_id": "C1", "delta": -4})) == {"C1": 4}
    assert spends(an_op("loyalty.adjust", {"customer_id": "C1", "delta": 4})) == {}
    back = {"customer": "C1", "points_redeemed": 0, "points_earned": -40, "tenders": []}
    assert spends(an_op("return", back)) == {}  # a return takes back, whatever is left


def test_card_money_taken_offline_needs_float_and_a_limit_ever_set_before() -> None:
    card = {"method": "card", "amount": 1_200_000, "card_sealed": "x"}
    sale = {"tenders": [card, {"method": "cash", "amount": 500}]}
    assert spends(an_op("sale", sale)) == {CARD_FLOAT: 1_200_000}
    past = FakePast(held={(CARD_FLOAT, T1.node_id): 5_000_000})
    found = judge(an_op("sale", sale, minutes=10), past)
    assert found is not None and found.rule == CARD_LIMIT
    assert "₹12,000.00 by card offline, over the per-sale limit of ₹10,000.00" in found.message
    past.settings["cards.floor_per_sale"] = [(at(20), 2_000_000)]  # set after the sale
    assert judge(an_op("sale", sale, minutes=10), past) is not None
    past.settings["cards.floor_per_sale"].append((at(5), 1_500_000))
    assert judge(an_op("sale", sale, minutes=10), past) is None
    past.held[(CARD_FLOAT, T1.node_id)] = 1_000_000
    found = judge(an_op("sale", sale, minutes=10), past)
    assert found is not None and found.rule == ESCROW and "card float" in found.message


# -- the compromised store, everywhere -----------------------------------------------------------

EXPECTED = {
    "unapproved": APPROVAL,
    "price": APPROVAL,
    "cashier_approves": APPROVAL,
    "result": HQ_ONLY,
    "minted": HQ_ONLY,
    "overspend": ESCROW,
    "after_overspend": ESCROW,
    "no_float": ESCROW,
    "over_limit": CARD_LIMIT,
}

_SCENARIO: dict[str, Any] = {}


def the_store() -> tuple[list[Op], dict[str, Op], dict[str, Any]]:
    if not _SCENARIO:
        nodes, marks = scenario()
        ref = nodes["T0"].ledger
        _SCENARIO.update(ops=all_ops(nodes), marks=marks, state=node_state(ref),
                         views=views(ref))  # fmt: skip
        _SCENARIO["nodes"] = nodes
    return _SCENARIO["ops"], _SCENARIO["marks"], _SCENARIO


def node_state(ledger: Ledger) -> dict[str, Any]:
    """What a terminal and HQ both keep: counters, registers, ops without authority, conflicts."""
    q = ledger.conn.execute
    return {
        "stock": sorted(q("SELECT sku, qty FROM stock WHERE qty != 0")),
        "loyalty": sorted(q("SELECT customer_id, points FROM loyalty WHERE points != 0")),
        "rights": sorted(q("SELECT customer_id, node, points FROM rights WHERE points != 0")),
        "registers": sorted(q("SELECT * FROM registers")),
        "unauthorised": sorted(q("SELECT * FROM unauthorised")),
        "conflicts": sorted(
            q("SELECT conflict_id, status, detail FROM conflicts WHERE kind = 'unauthorised'")
        ),
    }


def hq_state(storage: HQStorage) -> dict[str, Any]:
    def rows(sql: str) -> list[tuple[Any, ...]]:
        return sorted(tuple(r) for r in storage.db.query(sql, (STORE,)))

    return {
        "stock": rows("SELECT sku, qty FROM stock WHERE store = ? AND qty != 0"),
        "loyalty": rows("SELECT customer_id, points FROM loyalty WHERE store = ? AND points != 0"),
        "rights": rows(
            "SELECT customer_id, node, points FROM rights WHERE store = ? AND points != 0"
        ),
        "registers": rows(
            "SELECT entity, key, field, value, hlc, origin FROM registers WHERE store = ?"
        ),
        "unauthorised": rows(
            "SELECT origin, seq, hlc, kind, actor, terminal, rule, detail FROM unauthorised "
            "WHERE store = ?"
        ),
        "conflicts": rows("SELECT conflict_id, status, detail FROM conflicts WHERE store = ?"),
    }


@contextmanager
def hq_at(directory: Path, url: str | None = None) -> Iterator[HQStorage]:
    """HQ's storage (SQLite in `directory`, or the database at `url`) with the store enrolled;
    its key stays at the store."""
    storage = open_storage(url or str(directory / "hq.db"), durable=False)
    storage.enrolment.add_store(STORE, STORE, STORE_KEY.public_key, key_at_hq=False, now_ms=0)
    try:
        yield storage
    finally:
        storage.close()


def test_every_rule_is_broken_once_and_every_replica_agrees() -> None:
    _, marks, ref = the_store()
    by_id = {(o.origin, o.seq): name for name, o in marks.items()}
    got = {by_id.get((r[0], r[1]), f"{r[0]}:{r[1]}"): r[6] for r in ref["state"]["unauthorised"]}
    assert got == EXPECTED
    assert {c[0] for c in ref["state"]["conflicts"]} == {
        f"unauthorised:{marks[n].origin}:{marks[n].seq}" for n in EXPECTED
    }
    for node in ref["nodes"].values():
        assert views(node.ledger) == ref["views"], node.name
        assert node.ledger.verify() == []
    # What the ops without authority would have done, they did not do.
    led = ref["nodes"]["T0"].ledger
    assert led.views.rights(CARD_FLOAT, marks["minted"].origin) == 0
    assert led.views.prices()["SKU0"] != 1
    t1 = marks["overspend"].origin
    assert led.views.rights(CARD_FLOAT, t1) == 3_000_000 - 59_900 - 1_400_000


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_any_order_and_batching_gives_the_same_views_and_verdicts_everywhere(
    data: st.DataObject,
) -> None:
    """Terminal ledgers and HQ's storage, fed the same ops in any order and batching, end with the
    views and the set of ops without authority that one batch gives."""
    with tempfile.TemporaryDirectory() as tmp, hq_at(Path(tmp)) as hq_storage:
        replay(data, hq_storage)


def replay(data: st.DataObject, hq_storage: HQStorage) -> None:
    ops, _, ref = the_store()
    chunks = chunked(data, ops)
    node = fresh_ledger()
    for chunk in chunks:
        node.ingest(chunk)
    assert node.pending_count() == 0
    assert views(node) == ref["views"]
    feed_hq(hq_storage, chunks)
    assert hq_state(hq_storage) == ref["state"]
    hq_storage.log.db.run(lambda tx: hq_storage.log.refold(tx, STORE, 1))
    assert hq_state(hq_storage) == ref["state"]


@pytest.fixture(scope="module")
def pg_cluster() -> Iterator[Cluster]:
    yield from pg_cluster_fixture()


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_hq_judges_like_the_store_and_shows_who_signed_what(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """On either database: the store's ops, each origin's in runs and the runs of all origins
    interleaved, give HQ the store's verdicts and views, again after a refold."""
    url = request.getfixturevalue("pg_cluster").create_db() if backend == "postgresql" else None
    ops, marks, ref = the_store()
    runs: dict[str, list[list[Op]]] = {}
    for o in ops:
        mine = runs.setdefault(o.origin, [[]])
        if len(mine[-1]) == 3:
            mine.append([])
        mine[-1].append(o)
    rnd = random.Random(12)
    with hq_at(tmp_path, url) as storage:
        while any(runs.values()):
            origin = rnd.choice(sorted(o for o, r in runs.items() if r))
            chunk = runs[origin].pop(0)
            storage.log.ingest(STORE, [o.wire() for o in chunk], records(), now_ms=1)
        assert hq_state(storage) == ref["state"]
        storage.db.run(lambda tx: storage.log.refold(tx, STORE, 1))
        assert hq_state(storage) == ref["state"]
        listed = storage.views.conflicts(STORE)
        assert [c["conflict_id"] for c in listed] == sorted(c[0] for c in ref["state"]["conflicts"])
        unapproved = marks["unapproved"]
        [row] = [c for c in listed if c["subject"] == f"{unapproved.origin}:{unapproved.seq}"]
        assert row["detail"]["node"] == "T2" and row["detail"]["user"] == "cal"
        assert row["detail"]["rule"] == APPROVAL and row["detail"]["kind"] == "stock.adjust"
        store_side = ref["nodes"]["T1"].ledger.views.conflict(row["conflict_id"])
        assert store_side is not None and store_side["detail"] == row["detail"]
        assert storage.views.summary()[0]["conflicts"] == len(EXPECTED)
        assert storage.views.conflicts("ELSEWHERE") == []


# -- upgrade ------------------------------------------------------------------------------------


def test_a_ledger_from_before_the_rulebook_refolds_to_the_same_views(tmp_path: Path) -> None:
    ops, _, ref = the_store()
    path = tmp_path / "old.db"
    led = Ledger(path, STORE)
    for r in records():
        led.add_node(r)
    led.ingest(ops)
    led.close()
    raw = sqlite3.connect(path)  # what the version before left: no rulebook tables, no marks
    for table in ("unauthorised", "rights_log"):
        raw.execute(f"DROP TABLE {table}")
    raw.execute("DELETE FROM meta WHERE key IN ('rulebook', 'staff_since')")
    raw.execute("DELETE FROM conflicts")
    raw.commit()
    raw.close()
    led = Ledger(path, STORE)
    assert views(led) == ref["views"]
    assert led.verify() == []
    led.close()


def test_an_hq_database_of_schema_1_is_upgraded_and_refolded(tmp_path: Path) -> None:
    ops, _, ref = the_store()
    url = str(tmp_path / "hq.db")
    storage = open_storage(url, durable=False)
    storage.enrolment.add_store(STORE, STORE, STORE_KEY.public_key, key_at_hq=False, now_ms=0)
    storage.log.ingest(STORE, [o.wire() for o in ops], records(), now_ms=1)
    storage.close()
    raw = sqlite3.connect(url)
    for table in ("unauthorised", "rights_log", "staff_log", "conflicts", "resolutions"):
        raw.execute(f"DROP TABLE {table}")
    raw.execute("UPDATE hq_meta SET value = '1' WHERE name = 'schema'")
    raw.execute("DELETE FROM hq_meta WHERE name LIKE 'staff_since:%'")
    raw.execute("UPDATE stock SET qty = qty + 100")  # views folded by the old rules
    raw.commit()
    raw.close()
    storage = open_storage(url, durable=False)
    try:
        assert storage.db.query("SELECT value FROM hq_meta WHERE name = 'schema'") == [("2",)]
        assert hq_state(storage) == ref["state"]
    finally:
        storage.close()


# -- what a manager sees --------------------------------------------------------------------------


def test_meshpos_conflicts_lists_an_op_without_authority_and_a_manager_resolves_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ledger_helpers import catalog_rows
    from mesh_procs import meshpos

    from meshpos.service.config import init_node
    from meshpos.service.staff import add_user
    from meshpos.service.terminal import Terminal

    directory = tmp_path / "T1"
    init_node(directory, "S1", "T1")
    t = Terminal.open(directory)
    try:
        t.import_catalog(catalog_rows(2))
        add_user(t, "ada", name="Ada", role="admin", pin="111111")
        late = pack(t.now_ms() + 2 * 3_600_000, 0)  # a till whose clock says two hours on
        op = t.ledger.append(t.signer, kind="stock.adjust", user="cashier", hlc=late,
                             payload={"sku": "SKU0", "delta": -4, "reason": "x"})  # fmt: skip
        stock = t.ledger.views.stock_qty("SKU0")
    finally:
        t.close()
    assert stock == 5
    cid = f"unauthorised:{op.origin}:{op.seq}"
    [found] = [
        c for c in meshpos(directory, "conflicts", "--json").json() if c["kind"] != "oversell"
    ]
    assert found["conflict_id"] == cid and found["status"] == "open"
    detail = found["detail"]
    assert (detail["node"], detail["signed_by"], detail["user"]) == ("T1", op.origin, "cashier")
    assert detail["rule"] == APPROVAL and "stock adjustment" in detail["reason"]
    assert "has none" in detail["reason"] and detail["rule_text"]
    assert cid in meshpos(directory, "conflicts").out
    monkeypatch.setenv("MESHPOS_APPROVER_PIN", "111111")
    meshpos(directory, "conflicts", "resolve", cid, "--note", "counted again", "--approve", "ada")
    assert meshpos(directory, "conflicts", "--json").json() == []
    [done] = meshpos(directory, "conflicts", "--all", "--json").json()
    assert done["status"] == "resolved" and done["detail"]["note"] == "counted again"
    assert meshpos(directory, "verify").code == 0


def test_hq_s_op_gains_authority_when_its_certificate_arrives() -> None:
    """A replica that knows HQ's key but not yet its certificate holds HQ's float mint without
    authority; the certificate (a node record, no new op) gives it."""
    from rulebook_helpers import NODES

    hq_signer, hq_record = NODES["HQ"]
    t1 = NODES["T1"][0].node_id
    mint = make_op(hq_signer, store=STORE, seq=1, hlc=at(0), user="hq", kind="card.float",
                   payload={"to": t1, "amount": 5_000, "total": 0}, prev=bytes(32))  # fmt: skip
    led = Ledger(":memory:", STORE, durable=False)
    bare = NodeRecord(hq_record.node_id, hq_record.public_key, STORE, "HQ")
    led.ingest([mint], [bare])
    assert led.views.rights(CARD_FLOAT, t1) == 0
    assert [u["rule"] for u in led.views.unauthorised()] == [HQ_ONLY]
    assert led.ingest([], [hq_record]).applied == 0
    assert led.views.rights(CARD_FLOAT, t1) == 5_000
    assert led.views.unauthorised() == [] and led.views.conflicts() == []
    assert led.verify() == []


def test_concurrent_oversells_stay_allowed_and_flagged() -> None:
    """Stock is physical: two counters that each sold the last unit while apart both keep their
    sale; no rule refuses it, and the oversell conflict names both sales."""
    from ledger_helpers import catalog_rows, make_replicas, sync

    a, b = make_replicas(2)
    a.terminal.import_catalog(catalog_rows(1, stock=1))
    sync(a, b)
    one = a.terminal.sell([("SKU0", 1)]).op
    two = b.terminal.sell([("SKU0", 1)]).op
    sync(a, b)
    sync(b, a)
    for rep in (a, b):
        assert rep.ledger.views.unauthorised() == []
        assert rep.ledger.views.stock_qty("SKU0") == -1
        [found] = rep.ledger.views.conflicts()
        assert found["conflict_id"] == "oversell:SKU0"
        assert set(found["ops"]) == {f"{one.origin}:{one.seq}", f"{two.origin}:{two.seq}"}


def test_the_till_counts_its_own_spends_without_authority_as_the_fold_does() -> None:
    """A counter that once over-spent (a tampered moment) is in debt: its till refuses a
    redemption the rights view alone would allow, because the fold would give it no authority."""
    from ledger_helpers import catalog_rows, make_replicas
    from rulebook_helpers import record

    from meshpos.domain.escrow import EscrowShortfall
    from meshpos.domain.pricing import Tender

    [a] = make_replicas(1)
    t = a.terminal
    t.import_catalog(catalog_rows(3))
    cid = t.add_customer({"name": "R", "phone": "9800000001"})
    t.append("loyalty.adjust", {"customer_id": cid, "delta": 50, "reason": "welcome"})
    over = record(t, [("SKU2", 1)], [Tender("points", 80), Tender("cash")], cid)
    assert [u["rule"] for u in t.ledger.views.unauthorised()] == [ESCROW]
    assert t.ledger.views.rights(cid, t.node_id) == 50  # the view: the over-spend did nothing
    held = t.rights(cid)
    net = over.payload["points_redeemed"] - over.payload["points_earned"]
    assert held == 50 - net < 20
    with pytest.raises(EscrowShortfall):
        t.sell([("SKU0", 1)], tenders=[Tender("points", 20), Tender("cash")], customer=cid)


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**60), 2**60) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=12,
)
_KEYS = ["sku", "delta", "lines", "tenders", "customer", "customer_id", "points", "points_redeemed",
         "points_earned", "approval", "fields", "key", "value", "total", "bootstrap", "to",
         "amount", "user_id", "discount"]  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(sorted(__import__("meshpos.ledger.fold", fromlist=["RULES"]).RULES)),
    st.fixed_dictionaries({}, optional=dict.fromkeys(_KEYS, _JSON)),
    st.booleans(),
)
def test_judge_answers_any_payload_without_raising(kind: str, payload: dict[str, Any],
                                                   staffed: bool) -> None:  # fmt: skip
    """The rulebook runs before the fold checks a payload's shape: whatever a signed op holds,
    `judge` gives a verdict (the fold then refuses a malformed shape as not authentic)."""
    past = FakePast(since=at(0) if staffed else None, held={("x", T1.node_id): 5})
    found = judge(an_op(kind, payload, minutes=300), past)
    assert found is None or found.rule in (APPROVAL, ESCROW, CARD_LIMIT, HQ_ONLY, REVOKED)


@pytest.mark.parametrize("bad", [5, True, "card", {"method": "card"}, [5, None, ["x"]]])
@pytest.mark.parametrize("key", ["tenders", "lines", "approval", "fields", "points_redeemed"])
@pytest.mark.parametrize("kind", ["sale", "exchange", "return", "stock.adjust", "user.upsert"])
def test_judge_answers_malformed_fields_without_raising(kind: str, key: str, bad: Any) -> None:
    for past in (FakePast(), FakePast(since=at(0))):
        found = judge(an_op(kind, {key: bad}, minutes=300), past)
        assert found is None or found.rule == APPROVAL


def test_hq_processes_folding_one_store_at_once_reach_the_store_s_verdicts(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Two relays (or HQ processes) push different counters' chains of one store at the same time
    to HQ on PostgreSQL, one op per transaction: the rules read across chains (T0's grant gives
    T1's redemption its authority), and HQ still ends with the store's views and verdicts, no op
    folded twice. (The store's rulebook lock makes this hold by construction; the race it closes
    is too narrow for this test to hit reliably without it.)"""
    import threading

    url = request.getfixturevalue("pg_cluster").create_db()
    ops, _, ref = the_store()
    by_origin: dict[str, list[Op]] = {}
    for o in ops:
        by_origin.setdefault(o.origin, []).append(o)
    origins = sorted(by_origin)
    lanes = [origins[0::2], origins[1::2]]
    errors: list[BaseException] = []
    with hq_at(tmp_path, url) as storage:
        start = threading.Barrier(len(lanes))

        def push(mine: list[str]) -> None:
            try:
                start.wait()
                for i in range(max(len(by_origin[o]) for o in mine)):
                    for origin in mine:
                        chunk = by_origin[origin][i : i + 1]
                        if chunk:
                            storage.log.ingest(STORE, [o.wire() for o in chunk], records(), 1)
            except BaseException as exc:  # handed to the test thread
                errors.append(exc)

        threads = [threading.Thread(target=push, args=(lane,)) for lane in lanes]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        assert hq_state(storage) == ref["state"]
