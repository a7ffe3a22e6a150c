"""Staff and roles: PINs, permissions at the till, the check every peer makes, lockout, replication.

Replicas come from ledger_helpers (deterministic keys, hand-moved clocks). The store: catalogue
SKU0-SKU2 (499.00 / 599.00 / 699.00, 5 each); admin `ada` (PIN 1111), manager `mia` (2222),
supervisor `sue` (4444), cashier `cal` (3333). Refunds above 1000.00 and discounts above 10 % need a
supervisor or above. A "compromised till" below is one whose ledger is written to directly, with
the Terminal's checks bypassed: what such a till signs is stored by every replica (its chain goes
on) but has no authority anywhere: it changes no view and opens a conflict naming the rule.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ledger_helpers import (
    Replica,
    catalog_rows,
    full_sync,
    make_replicas,
    ops_lacking,
    sync,
    views,
)

from meshpos.core.errors import InputError, LocalError
from meshpos.core.ops import GENESIS, Op, Signer, make_op
from meshpos.domain.enrolment import NodeRecord, issue, make_request, read_request
from meshpos.domain.staff import (
    APPROVAL,
    Policy,
    check_pin,
    issue_credential,
    lenient_policy,
    parse_policy_value,
    pin_matches,
    pin_private_key,
    pin_record,
    policy_from,
    required,
)
from meshpos.ledger.store import Ledger
from meshpos.service.staff import (
    LockedOut,
    PermissionDenied,
    add_user,
    approved_by,
    set_active,
    set_pin,
    set_policy,
    set_role,
    sign_in,
    unlock,
)
from meshpos.service.terminal import Terminal

PINS = {"ada": "111111", "mia": "222222", "cal": "3333", "sue": "444444"}
ROLE = {"ada": "admin", "mia": "manager", "cal": "cashier", "sue": "supervisor"}
MINUTE = 60_000


def cred(t: Terminal, user: str, purpose: str = APPROVAL) -> Any:
    return sign_in(t, user, PINS[user], purpose=purpose)


@contextmanager
def pin(t: Terminal, user: str) -> Iterator[None]:
    """`user` types their PIN at this till to approve what happens inside the block."""
    with approved_by(t, cred(t, user)):
        yield


def staff_store(n: int = 2) -> list[Replica]:
    """n replicas in sync; staff created at T0 (ada bootstraps, then approves the others)."""
    reps = make_replicas(n)
    t0 = reps[0].terminal
    t0.import_catalog(catalog_rows(3))
    add_user(t0, "ada", name="Ada", role="admin", pin=PINS["ada"])
    with pin(t0, "ada"):
        for uid in ("mia", "sue", "cal"):
            add_user(t0, uid, name=uid.title(), role=ROLE[uid], pin=PINS[uid], user="ada")
    full_sync(reps)
    return reps


@pytest.fixture
def store2() -> list[Replica]:
    return staff_store(2)


def counts(ledger: Ledger) -> tuple[Any, ...]:
    return (ledger.vv(), ledger.pending_count(), views(ledger))


def without_authority(rep: Replica, op: Op, match: str) -> None:
    """`rep` holds `op` without authority: an open conflict names it and the rule it broke."""
    found = rep.ledger.views.conflict(f"unauthorised:{op.origin}:{op.seq}")
    assert found is not None and found["status"] == "open", rep.ledger.views.conflicts()
    assert found["detail"]["rule"] == "approval"
    assert re.search(match, found["detail"]["reason"]), found["detail"]["reason"]


def unauthorised_everywhere(src: Replica, dst: Replica, op: Op, match: str) -> None:
    """`dst` stores what `src` sends; `op` changes no view at either (their views are those of a
    replica that never saw it, bar its conflict) and both name it in a conflict."""
    before = views(dst.ledger)
    sync(src, dst)
    assert dst.ledger.vv() == src.ledger.vv()
    for rep in (src, dst):
        without_authority(rep, op, match)
    assert views(src.ledger) == views(dst.ledger)
    after = views(dst.ledger)
    for table in ("stock", "sales", "returned", "registers", "settings", "loyalty"):
        assert after[table] == before[table], table


def forge(t: Terminal, kind: str, payload: dict[str, Any], user: str) -> Op:
    """A compromised till: sign an op with the node key, skipping every staff check."""
    hlc = t.clock.observe(t.ledger.max_hlc(), t.now_ms())
    return t.ledger.append(t.signer, kind=kind, payload=payload, user=user, hlc=hlc)


def draft(t: Terminal, make: Callable[[], Any]) -> dict[str, Any]:
    """The payload `make` would record (approved by whoever is approving), without keeping it."""

    class Rollback(Exception):
        pass

    out: dict[str, Any] = {}
    try:
        with t.transaction():
            out.update(make().op.payload)
            raise Rollback
    except Rollback:
        pass
    return out


# -- pure rules --------------------------------------------------------------------------------


def test_pin_is_kept_only_as_salted_scrypt_public_key():
    salt = bytes(range(16))
    rec = pin_record("123456", salt)
    assert rec == pin_record("123456", salt)  # deterministic for one salt
    assert rec["pin_key"] != pin_record("123456", bytes(16))["pin_key"]  # salted
    assert "123456" not in str(rec)
    assert pin_matches("123456", rec["pin_salt"], rec["pin_key"]) is not None
    assert pin_matches("123457", rec["pin_salt"], rec["pin_key"]) is None
    for bad in ("123", "12a4", "", "1234567890123"):
        with pytest.raises(InputError):
            check_pin(bad)


def _role(kind: str, payload: dict[str, Any], target: str | None = None) -> str | None:
    need = required(kind, payload, Policy(), target)
    return need.role if need else None


def test_what_each_op_needs():
    sale = {"lines": [{"unit_price": 10000, "qty": 2, "discount": 2000}]}
    assert _role("sale", sale) is None  # exactly 10 %
    sale["lines"][0]["discount"] = 2001
    need = required("sale", sale, Policy())
    assert need is not None and need.role == "supervisor" and "10.0%" in need.what
    assert _role("return", {"total": 100_000}) is None
    assert _role("return", {"total": 100_001}) == "supervisor"
    assert _role("exchange", {"total": -100_001, "lines": []}) == "supervisor"
    assert _role("exchange", {"total": 500_000, "lines": []}) is None
    assert _role("stock.adjust", {}) == "supervisor"
    assert _role("stock.receive", {}) is None
    assert _role("conflict.resolve", {}) == "supervisor"
    assert _role("product.upsert", {"sku": "A", "fields": {"price": 1}}) == "supervisor"
    assert _role("product.upsert", {"sku": "A", "fields": {"name": "x"}}) is None
    assert _role("setting.set", {"key": "staff.refund_limit", "value": 1}) == "manager"
    assert _role("setting.set", {"key": "loyalty.earn_per_100", "value": 1}) is None
    assert _role("user.upsert", {"user_id": "x", "fields": {"role": "admin"}}) == "admin"
    assert _role("user.upsert", {"user_id": "x", "fields": {"active": 0}}, "admin") == "admin"
    assert _role("user.upsert", {"user_id": "x", "fields": {"active": 0}}) == "manager"
    pin_only = required(
        "user.upsert", {"user_id": "x", "fields": {"pin_key": "", "pin_salt": ""}}, Policy()
    )
    assert pin_only is not None and pin_only.self_user == "x" and pin_only.role == "manager"
    assert _role("return", {"total": "lots"}) is None  # malformed: the fold refuses it


def test_policy_settings_parse_and_peers_take_the_most_lenient_limit():
    assert parse_policy_value("staff.refund_limit", "2500") == 250_000
    assert parse_policy_value("staff.discount_limit_bp", "15%") == 1500
    assert parse_policy_value("staff.require_login", "yes") is True
    for key, bad in (("staff.refund_limit", "-1"), ("staff.lockout_failures", "0"), ("x", "1")):
        with pytest.raises(InputError):
            parse_policy_value(key, bad)
    assert policy_from({"staff.refund_limit": 5, "staff.lockout_minutes": "x"}).refund_limit == 5
    assert policy_from({"staff.lockout_minutes": "x"}).lockout_minutes == 5
    lenient = lenient_policy({"staff.refund_limit": [50_000, 300_000, "junk"]})
    assert lenient.refund_limit == 300_000
    assert lenient_policy({"staff.refund_limit": [50_000]}).refund_limit == 100_000


# -- bootstrap -----------------------------------------------------------------------------------


def test_without_users_nothing_is_checked_and_the_first_user_must_be_an_admin():
    (r,) = make_replicas(1)
    t = r.terminal
    t.import_catalog(catalog_rows(3))
    sale = t.sell([("SKU2", 3)])
    t.return_items(sale.sale_id, [("SKU2", 3)])  # 2097.00 back, no approval: bootstrap mode
    t.move_stock("adjust", "SKU0", -1, "count")
    with pytest.raises(InputError, match="first one must be an admin"):
        add_user(t, "mia", name="Mia", role="manager", pin="222222")
    op = add_user(t, "ada", name="Ada", role="admin", pin="111111")
    assert op.user == "ada" and op.payload["bootstrap"] is True
    with pytest.raises(PermissionDenied, match="not a user of this store"):
        t.sell([("SKU0", 1)])  # the node's default user 'cashier' is nobody now
    with pytest.raises(PermissionDenied, match="changing user mia needs a manager"):
        add_user(t, "mia", name="Mia", role="manager", pin="222222", user="ada")
    assert r.ledger.verify() == []


# -- the till's checks ---------------------------------------------------------------------------


def test_cashier_refund_above_limit_needs_a_supervisor_pin(store2):
    t0, t1 = store2[0].terminal, store2[1].terminal
    sale = t0.sell([("SKU2", 3)], user="cal")
    small = t0.return_items(sale.sale_id, [("SKU2", 1)], user="cal")  # 699.00: within the limit
    assert "approval" not in small.payload
    with pytest.raises(PermissionDenied) as err:
        t0.return_items(sale.sale_id, [("SKU2", 2)], user="cal")
    msg = str(err.value)
    assert "refund of ₹1,398.00 (limit ₹1,000.00)" in msg and "ada, mia, sue" in msg
    assert "--approve" in msg
    with pin(t0, "cal"), pytest.raises(PermissionDenied, match="cal is a cashier"):
        t0.return_items(sale.sale_id, [("SKU2", 2)], user="cal")
    with pin(t0, "mia"):
        big = t0.return_items(sale.sale_id, [("SKU2", 2)], user="cal")
    assert big.op.user == "cal" and big.payload["approval"]["user"] == "mia"
    assert sync(store2[0], store2[1]).applied == 3  # the peer verifies and applies it
    assert t1.query("SELECT COUNT(*) AS n FROM sales WHERE kind = 'return'")[0]["n"] == 2
    assert store2[1].ledger.verify() == []


def test_a_session_approves_only_its_own_users_ops(store2):
    t0 = store2[0].terminal
    sale = t0.sell([("SKU2", 3)], user="cal")
    t0.credentials.append(cred(t0, "mia", purpose="session"))
    with pytest.raises(PermissionDenied):  # mia is signed in, but cal is the one refunding
        t0.return_items(sale.sale_id, [("SKU2", 2)], user="cal")
    assert "approval" in t0.return_items(sale.sale_id, [("SKU2", 2)], user="mia").payload


@pytest.mark.parametrize(
    ("kind", "action"),
    [
        ("stock adjustment", lambda t, u: t.move_stock("adjust", "SKU0", -2, "damaged", u)),
        ("discount", lambda t, u: t.sell([("SKU1", 1)], discount="15%", user=u)),
        ("price", lambda t, u: t.set_price("SKU1", 45_000, u)),
        ("conflict", lambda t, u: t.resolve("oversell:SKU0", "recounted", user=u)),
    ],
)
def test_permissions_need_a_supervisor(store2, kind, action):
    t0 = store2[0].terminal
    t1 = store2[1].terminal
    if kind == "conflict":  # both counters sell the last units while split
        t0.sell([("SKU0", 5)], user="cal")
        t1.sell([("SKU0", 1)], user="cal")
        full_sync(store2)
    with pytest.raises(PermissionDenied, match="needs a supervisor, manager or admin"):
        action(t0, "cal")
    with pin(t0, "sue"):
        op = action(t0, "cal")
    op = getattr(op, "op", op)
    assert op.payload["approval"]["user"] == "sue"
    assert t0.sell([("SKU1", 1)], discount="10%", user="cal")  # at the limit: no approval
    full_sync(store2)
    assert store2[1].ledger.verify() == []
    assert views(store2[0].ledger) == views(store2[1].ledger)


def test_user_management_needs_a_manager_and_admins_need_an_admin(store2):
    t0 = store2[0].terminal
    with pin(t0, "sue"), pytest.raises(PermissionDenied, match="needs a manager"):
        add_user(t0, "bob", name="Bob", role="cashier", pin="5555", user="sue")
    with pin(t0, "ada"):
        with pytest.raises(InputError, match="only active admin"):
            set_active(t0, "ada", False, user="ada")
        add_user(t0, "eve", name="Eve", role="admin", pin="777777", user="ada")
    with pin(t0, "mia"):
        add_user(t0, "bob", name="Bob", role="cashier", pin="5555", user="mia")
        with pytest.raises(PermissionDenied, match="changing user bob needs an admin"):
            set_role(t0, "bob", "admin", user="mia")
        with pytest.raises(PermissionDenied, match="changing user eve needs an admin"):
            set_active(t0, "eve", False, user="mia")
    with pin(t0, "cal"), pytest.raises(PermissionDenied, match="staff setting"):
        set_policy(t0, "staff.refund_limit", "5000", user="cal")
    sale = t0.sell([("SKU2", 3)], user="cal")
    with pin(t0, "mia"):
        set_policy(t0, "staff.refund_limit", "5000", user="mia")
    t0.return_items(sale.sale_id, [("SKU2", 3)], user="cal")  # 2097.00 is within 5000.00 now
    full_sync(store2)
    assert store2[1].ledger.verify() == []


def test_users_change_their_own_pin_and_old_sessions_stop_approving(store2):
    t0 = store2[0].terminal
    old = cred(t0, "sue")
    with approved_by(t0, cred(t0, "cal", purpose="session")):
        set_pin(t0, "cal", "9876", user="cal")  # self-service, approved with the old PIN
    assert sign_in(t0, "cal", "9876")
    with approved_by(t0, old):
        set_pin(t0, "sue", "432109", user="sue")
    with approved_by(t0, old), pytest.raises(PermissionDenied, match="PIN changed"):
        t0.move_stock("adjust", "SKU0", -1, "count", "sue")
    full_sync(store2)
    assert sign_in(store2[1].terminal, "cal", "9876")


def test_require_login_setting_refuses_users_without_a_session(store2):
    t0 = store2[0].terminal
    with pin(t0, "mia"):
        set_policy(t0, "staff.require_login", "yes", user="mia")
    with pytest.raises(PermissionDenied, match="requires sign-in"):
        t0.sell([("SKU0", 1)], user="cal")
    t0.credentials.append(cred(t0, "cal", purpose="session"))
    assert t0.sell([("SKU0", 1)], user="cal").op.user == "cal"


# -- the peer's check ----------------------------------------------------------------------------


def _approved_return(t: Terminal) -> tuple[str, Op]:
    """Two sales by cal; the first's refund legitimately approved by mia."""
    s1 = t.sell([("SKU2", 2)], user="cal").sale_id
    s2 = t.sell([("SKU2", 2)], user="cal").sale_id
    with pin(t, "mia"):
        legit = t.return_items(s1, [("SKU2", 2)], user="cal").op
    return s2, legit


def _forged_approval(t: Terminal, how: str, sale_id: str, legit: Op) -> dict[str, Any]:
    if how == "copied":  # a real approval by mia, lifted from another op
        with pin(t, "mia"):
            payload = draft(t, lambda: t.return_items(sale_id, [("SKU2", 2)], user="cal"))
        return {**payload, "approval": legit.payload["approval"]}
    with pin(t, "cal"):  # cal's own PIN, valid signatures
        payload = draft(t, lambda: _as_supervisor(t, sale_id))
    if how == "renamed":  # ... relabelled as mia's
        mia = t.ledger.staff.user("mia")
        assert mia is not None
        payload["approval"] = {**payload["approval"], "user": "mia", "pin_key": mia["pin_key"]}
    if how == "none":
        del payload["approval"]
    return payload


def _as_supervisor(t: Terminal, sale_id: str) -> Any:
    """Make the till believe cal may approve, to obtain a well-formed payload signed by cal."""
    mine = t.ledger.staff.user("cal")
    assert mine is not None
    t.ledger.conn.execute("UPDATE users SET role = 'supervisor' WHERE user_id = 'cal'")
    return t.return_items(sale_id, [("SKU2", 2)], user="cal")


@pytest.mark.parametrize(
    ("how", "match"),
    [
        ("copied", "was not made for this op"),
        ("renamed", "not certified by mia's PIN"),
        ("cashier", "cal was never a supervisor, manager or admin"),
        ("none", "has none"),
    ],
)
def test_a_forged_refund_has_no_authority_anywhere(store2, how, match):
    src, dst = store2
    sale_id, legit = _approved_return(src.terminal)
    sync(src, dst)
    src.wall.ms += 3 * 60 * MINUTE  # well after the store got staff (past the bootstrap grace)
    payload = _forged_approval(src.terminal, how, sale_id, legit)
    forged = forge(src.terminal, "return", payload, user="cal")
    assert src.ledger.views.returned(sale_id) == {}
    unauthorised_everywhere(src, dst, forged, match)
    third = make_replicas(3)[2]  # a fresh replica judges the whole log in one batch the same
    third.terminal.ingest(ops_lacking(src.ledger, third.ledger))
    without_authority(third, forged, match)
    assert views(third.ledger) == views(src.ledger)


def test_an_approval_signature_by_another_key_is_refused(store2):
    src, dst = store2
    sale_id = src.terminal.sell([("SKU2", 2)], user="cal").sale_id
    sync(src, dst)
    mia = src.ledger.staff.user("mia")
    assert mia is not None
    with pin(src.terminal, "mia"):
        payload = draft(
            src.terminal, lambda: src.terminal.return_items(sale_id, [("SKU2", 2)], user="cal")
        )
    # A PIN guessed wrong still makes a key: it certifies a session, but is not mia's.
    wrong = issue_credential("S1", "mia", pin_private_key("0000", bytes(16)), bytes(32), 2**60)
    payload["approval"] = {**payload["approval"], "cert": wrong.cert.hex(), "pub": wrong.pub.hex()}
    forged = forge(src.terminal, "return", payload, user="cal")
    unauthorised_everywhere(src, dst, forged, "not certified by mia's PIN")


def test_user_op_and_the_op_it_approves_apply_in_one_batch_and_on_retry():
    reps = staff_store(3)
    t0, t1, t2 = (r.terminal for r in reps)
    with pin(t0, "mia"):
        add_user(t0, "sam", name="Sam", role="supervisor", pin="666666", user="mia")
    sync(reps[0], reps[1])  # T1 learns of sam; T2 has not yet
    sale = t1.sell([("SKU2", 3)], user="cal")
    with approved_by(t1, sign_in(t1, "sam", "666666", purpose=APPROVAL)):
        t1.return_items(sale.sale_id, [("SKU2", 3)], user="cal")
    # A bundle from T1 carries T0's user op too: one ingest folds both.
    data, held = t1.export_bundle()
    fresh = make_replicas(4)[3]
    assert fresh.terminal.import_bundle(data).applied == held
    assert views(reps[1].ledger) == views(fresh.ledger)
    # T1's own ops alone (what the protocol sends per origin): T2 does not know sam yet, so the
    # return is stored without authority, and gains it when sam's user op arrives.
    mine = [o for o in ops_lacking(reps[1].ledger, reps[2].ledger) if o.origin == t1.node_id]
    assert t2.ingest(mine).applied == len(mine)
    without_authority(reps[2], mine[-1], "approver sam is not a user of the store")
    assert reps[2].ledger.views.returned(sale.sale_id) == {}
    data, _ = t1.export_bundle(reps[2].ledger.vv())
    assert t2.import_bundle(data).applied == 1
    assert views(reps[1].ledger) == views(reps[2].ledger)
    assert reps[2].ledger.views.conflicts() == reps[1].ledger.views.conflicts() == []
    assert reps[2].ledger.verify() == []


def test_retry_after_the_user_op_arrives():
    reps = staff_store(3)
    t0, t1, t2 = (r.terminal for r in reps)
    with pin(t0, "mia"):
        add_user(t0, "sam", name="Sam", role="supervisor", pin="666666", user="mia")
    sync(reps[0], reps[1])
    with approved_by(t1, sign_in(t1, "sam", "666666", purpose=APPROVAL)):
        t1.move_stock("adjust", "SKU1", -1, "damaged", "cal")
    mine = [o for o in ops_lacking(reps[1].ledger, reps[2].ledger) if o.origin == t1.node_id]
    t2.ingest(mine)
    assert reps[2].ledger.views.stock_qty("SKU1") == 5
    without_authority(reps[2], mine[-1], "sam")
    sync(reps[0], reps[2])
    assert reps[2].ledger.views.stock_qty("SKU1") == 4
    assert reps[2].ledger.views.conflicts() == []
    assert views(reps[1].ledger) == views(reps[2].ledger)


def test_approval_before_a_concurrent_demotion_is_still_accepted(store2):
    """Peers judge by what the approver ever was before the op, so a demotion that reaches a peer
    first does not make it refuse an op approved honestly elsewhere (that would stall the till's
    whole chain); the demoted manager cannot approve anything new where the demotion is known."""
    a, b = store2
    with pin(a.terminal, "ada"):
        set_role(a.terminal, "mia", "cashier", user="ada")
    b.wall.ms += MINUTE  # T1 has not heard, and approves later by its clock
    with pin(b.terminal, "mia"):
        b.terminal.move_stock("adjust", "SKU2", -1, "damaged", "cal")
    full_sync(store2)
    assert views(a.ledger) == views(b.ledger)
    assert b.ledger.staff.user("mia")["role"] == "cashier"  # type: ignore[index]
    with pin(b.terminal, "mia"), pytest.raises(PermissionDenied, match="mia is a cashier"):
        b.terminal.move_stock("adjust", "SKU2", -1, "damaged", "cal")


def test_unapproved_privileged_ops_near_staff_setup_are_accepted_later_ones_not():
    reps = make_replicas(2)
    a, b = reps
    a.terminal.import_catalog(catalog_rows(3))
    sync(a, b)
    b.wall.ms += 10 * MINUTE
    b.terminal.move_stock("adjust", "SKU0", -1, "count")  # T1 has not heard of staff
    add_user(a.terminal, "ada", name="Ada", role="admin", pin="111111")  # meanwhile, at T0
    full_sync(reps)
    assert views(a.ledger) == views(b.ledger)
    assert views(a.ledger)["conflicts"] == []
    b.wall.ms += 2 * 60 * MINUTE  # past the grace: a till that pretends it never heard
    late = forge(b.terminal, "stock.adjust", {"sku": "SKU0", "delta": -1, "reason": "x"}, "cal")
    unauthorised_everywhere(b, a, late, "has none")


def test_ops_from_an_hq_node_need_no_approval_but_a_terminal_s_do(store2):
    """HQ pushes settings and prices under its own access control; a till certified as a
    terminal does not get that pass by naming itself HQ."""
    src = store2[1]
    store_key = Signer.from_seed(b"store-key")
    records = []
    for i, role in ((7, "hq"), (8, "terminal")):
        node = Signer.from_seed(f"node-{i}".encode())
        req = read_request(make_request(node, "S1", f"N{i}", b"x" * 40))
        cert = issue(store_key, "S1", req, role=role, now_ms=0)
        records.append((node, NodeRecord(node.node_id, node.public_key, "S1", f"N{i}", cert)))
    late = src.ledger.max_hlc() + (3 * 60 * MINUTE << 16)
    for (node, record), ok in zip(records, (True, False), strict=True):
        op = make_op(
            node,
            store="S1",
            seq=1,
            hlc=late,
            user="hq",
            kind="setting.set",
            payload={"key": "staff.refund_limit", "value": 10**9},
            prev=GENESIS,
        )
        assert src.terminal.ingest([op], [record]).applied == 1
        if ok:
            assert src.ledger.views.setting("staff.refund_limit") == 10**9
        else:
            without_authority(src, op, "has none")
            assert src.ledger.views.setting("staff.refund_limit") == 10**9  # HQ's, not N8's
            assert src.ledger.views.setting_writer("staff.refund_limit") == (
                10**9,
                records[0][0].node_id,
            )


# -- sign-in and lockout -------------------------------------------------------------------------


def test_lockout_after_five_wrong_pins_is_per_terminal_and_expires(store2):
    t0, t1 = store2[0].terminal, store2[1].terminal
    for left in (4, 3, 2, 1):
        with pytest.raises(PermissionDenied, match=f"{left} more wrong PIN"):
            sign_in(t0, "cal", "0000")
    with pytest.raises(LockedOut, match="locked at this terminal for 5 more minute"):
        sign_in(t0, "cal", "0000")
    with pytest.raises(LockedOut):
        sign_in(t0, "cal", PINS["cal"])  # the right PIN does not help while locked
    assert sign_in(t1, "cal", PINS["cal"]).user == "cal"  # lockouts do not replicate
    store2[0].wall.ms += 5 * MINUTE
    assert sign_in(t0, "cal", PINS["cal"]).user == "cal"
    for _ in range(4):
        with pytest.raises(PermissionDenied):
            sign_in(t0, "cal", "0000")
    assert sign_in(t0, "cal", PINS["cal"])  # a success resets the count
    with pytest.raises(PermissionDenied, match="4 more"):
        sign_in(t0, "cal", "0000")


def test_a_supervisor_unlocks_a_user_at_this_terminal(store2):
    t0 = store2[0].terminal
    for _ in range(5):
        with pytest.raises(PermissionDenied):
            sign_in(t0, "cal", "0000")
    with pytest.raises(PermissionDenied, match="needs a supervisor"):
        unlock(t0, "cal")
    with pin(t0, "sue"):
        assert unlock(t0, "cal") is True
    assert sign_in(t0, "cal", PINS["cal"])


def test_users_replicate_and_their_pins_work_offline_elsewhere(store2):
    a, b = store2
    t1 = b.terminal
    assert {u: b.ledger.staff.user(u)["role"] for u in PINS} == ROLE  # type: ignore[index]
    with pin(t1, "sue"):  # T1 alone (no network in this test at all)
        t1.move_stock("adjust", "SKU1", -1, "damaged", "cal")
    with pin(a.terminal, "mia"):
        set_active(a.terminal, "cal", False, user="mia")
    sync(a, b)
    with pytest.raises(PermissionDenied, match="disabled"):
        sign_in(t1, "cal", PINS["cal"])
    with pytest.raises(PermissionDenied, match="disabled"):
        t1.sell([("SKU0", 1)], user="cal")
    sync(b, a)
    assert views(a.ledger) == views(b.ledger)
    assert a.ledger.verify() == [] and b.ledger.verify() == []


def test_unknown_user_is_named(store2):
    t0 = store2[0].terminal
    with pytest.raises(LocalError, match="unknown user 'zed'"):
        sign_in(t0, "zed", "1234")


# -- convergence under any delivery order ------------------------------------------------------


_SCENARIO: dict[str, Any] = {}


def _scenario() -> tuple[list[Op], Any]:
    """Three tills: T0 makes staff and a supervisor; T1 and T2 make approved and plain ops."""
    if not _SCENARIO:
        reps = staff_store(3)
        t0, t1, t2 = (r.terminal for r in reps)
        with pin(t0, "mia"):
            add_user(t0, "sam", name="Sam", role="supervisor", pin="666666", user="mia")
        full_sync(reps)
        for t in (t1, t2):
            t.sell([("SKU1", 1)], user="cal")
            with approved_by(t, sign_in(t, "sam", "666666", purpose=APPROVAL)):
                t.move_stock("adjust", "SKU2", -1, "damaged", "cal")
            with pin(t, "sue"):
                t.sell([("SKU0", 2)], discount="20%", user="cal")
        full_sync(reps)
        everything = sorted(
            {o.id: o for r in reps for o in r.ledger.ops_since({})}.values(), key=lambda o: o.id
        )
        _SCENARIO["ops"] = everything
        _SCENARIO["views"] = views(reps[0].ledger)
    return _SCENARIO["ops"], _SCENARIO["views"]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_any_delivery_order_converges(data):
    """Per-origin chunks in any order: ops past a gap wait, ops whose approver is not known yet
    wait without authority; in the end the views equal one batch's. Staff rules only ever change
    a verdict from "no authority" to "authority"."""
    ops, expected = _scenario()
    chunks: list[list[Op]] = []
    by_origin: dict[str, list[Op]] = {}
    for o in ops:
        by_origin.setdefault(o.origin, []).append(o)
    for run in by_origin.values():
        cuts = sorted(data.draw(st.sets(st.integers(1, max(1, len(run) - 1)), max_size=3)))
        cuts = [c for c in cuts if c < len(run)]
        chunks += [run[i:j] for i, j in zip([0, *cuts], [*cuts, len(run)], strict=True)]
    queue = data.draw(st.permutations(chunks))
    dst = make_replicas(4)[3]  # a fourth till that knows the three nodes and nothing else
    for chunk in queue:
        dst.terminal.ingest(chunk)
    assert dst.ledger.pending_count() == 0
    assert views(dst.ledger) == expected
