"""CLI: `meshpos users add|list|disable|enable|set-role|set-pin|unlock|policy`, `login`, `logout`,
`whoami`, and `--approve USER` on the commands that may need a supervisor.

PINs come from `--pin-stdin` (stdin is replaced per command) and the approver's from
$MESHPOS_APPROVER_PIN, as a script would give them. Test products: see conftest.TEST_CSV.
"""

from __future__ import annotations

import io
import stat
import sys
from typing import Any

import pytest
from conftest import Node

BOSS = "111111"
CAL = "3333"


@pytest.fixture
def stdin(monkeypatch: pytest.MonkeyPatch) -> Any:
    def feed(text: str) -> None:
        monkeypatch.setattr(sys, "stdin", io.StringIO(text))

    return feed


@pytest.fixture
def approver(monkeypatch: pytest.MonkeyPatch) -> Any:
    def give(pin: str | None) -> None:
        if pin is None:
            monkeypatch.delenv("MESHPOS_APPROVER_PIN", raising=False)
        else:
            monkeypatch.setenv("MESHPOS_APPROVER_PIN", pin)

    give(None)
    return give


def staffed(node: Node, stdin: Any, approver: Any) -> Node:
    """boss (admin, bootstrap) and cal (cashier, added with boss's approval)."""
    stdin(BOSS + "\n")
    node.ok("users", "add", "boss", "--name", "The Boss", "--role", "admin", "--pin-stdin")
    stdin(CAL + "\n")
    approver(BOSS)
    node.ok("users", "add", "cal", "--role", "cashier", "--pin-stdin", "--approve", "boss")
    approver(None)
    return node


def users(node: Node) -> dict[str, dict[str, Any]]:
    return {u["user_id"]: u for u in node.json("users", "list")}


def test_first_user_is_an_admin_added_without_approval(node, stdin):
    stdin("1234\n")
    assert "first one must be an admin" in node.fail(
        "users", "add", "mia", "--role", "manager", "--pin-stdin"
    )
    stdin("1234\n")
    assert "an admin's PIN is 6 to 12 digits" in node.fail(
        "users", "add", "boss", "--role", "admin", "--pin-stdin"
    )
    stdin(BOSS + "\n")
    added = node.json("users", "add", "boss", "--role", "admin", "--pin-stdin")
    assert added["by"] == "boss" and added["role"] == "admin"
    assert users(node)["boss"] == {
        "user_id": "boss",
        "name": "boss",
        "role": "admin",
        "active": True,
        "locked_here": False,
    }
    assert "boss" in node.ok("ops", "tail", "-n", "1").out
    node.ok("verify")


def test_users_add_set_role_disable_enable_need_a_manager(node, stdin, approver):
    staffed(node, stdin, approver)
    stdin("555555\n")
    before = node.snapshot()
    err = node.fail("users", "add", "sue", "--role", "supervisor", "--pin-stdin", user="cal")
    assert "changing user sue needs a manager or admin to approve" in err and "boss" in err
    assert node.snapshot() == before
    approver("999999")
    stdin("555555\n")
    err = node.fail(
        "users", "add", "sue", "--role", "supervisor", "--pin-stdin", "--approve", "boss"
    )
    assert "wrong PIN for boss" in err
    approver(BOSS)
    node.ok("users", "set-role", "cal", "supervisor", "--approve", "boss", user="boss")
    assert users(node)["cal"]["role"] == "supervisor"
    out = node.ok("users", "disable", "cal", "--approve", "boss", user="boss").out
    assert out.startswith("cal disabled (op ")
    assert users(node)["cal"]["active"] is False
    stdin(CAL + "\n")
    assert "user cal is disabled" in node.fail("login", "cal", "--pin-stdin")
    assert "cal is already disabled" in node.fail(
        "users", "disable", "cal", "--approve", "boss", user="boss"
    )
    node.ok("users", "enable", "cal", "--approve", "boss", user="boss")
    assert "only active admin" in node.fail(
        "users", "set-role", "boss", "manager", "--approve", "boss", user="boss"
    )
    node.ok("verify")


def test_login_whoami_logout_and_the_session_acts_for_later_commands(node, stdin, approver):
    staffed(node, stdin, approver)
    stdin("0000\n")
    assert "wrong PIN for boss" in node.fail("login", "boss", "--pin-stdin")
    stdin(BOSS + "\n")
    signed = node.json("login", "boss", "--pin-stdin")
    assert signed["user_id"] == "boss" and signed["role"] == "admin"
    session = node.path / "session.json"
    assert stat.S_IMODE(session.stat().st_mode) == 0o600
    assert BOSS not in session.read_text()
    me = node.json("whoami")
    assert me["user"] == "boss" and me["signed_in"] is True and me["role"] == "admin"
    # Acting as the signed-in manager: no --user, no --approve.
    stdin("555555\n")
    assert node.json("users", "add", "sue", "--role", "supervisor", "--pin-stdin")["by"] == "boss"
    node.ok("stock", "adjust", "CAP", "-1", "--reason", "damaged")
    assert node.qty("CAP") == 4
    # --user still wins over the session, and the session does not approve for another user.
    assert "needs a supervisor" in node.fail(
        "stock", "adjust", "CAP", "-1", "--reason", "count", user="cal"
    )
    assert node.ok("logout").out.strip() == "signed out"
    assert not session.exists()
    me = node.json("whoami")
    assert me["user"] == "cashier" and me["signed_in"] is False and me["role"] is None
    assert "not a user of this store" in node.fail("sell", "CAP")
    assert node.ok("logout").out.strip() == "nobody was signed in"


def test_refund_above_limit_by_a_cashier_needs_approve(node, stdin, approver):
    staffed(node, stdin, approver)
    sale = node.sell("JKT-L", user="cal")  # 3000.00
    before = node.snapshot()
    err = node.fail("return", sale["sale_id"], "JKT-L", user="cal")
    assert "refund of ₹3,000.00 (limit ₹1,000.00) needs a supervisor, manager or admin" in err
    assert "who can: boss" in err and "--approve USER" in err
    assert node.snapshot() == before
    approver(BOSS)
    back = node.json("return", sale["sale_id"], "JKT-L", "--approve", "boss", user="cal")
    assert back["approval"]["user"] == "boss" and back["total"] == 300000
    assert "needs a supervisor" not in node.ok("sell", "CAP", "--discount", "10%", user="cal").out
    approver(None)
    assert "discount of 20.0%" in node.fail("sell", "CAP", "--discount", "20%", user="cal")
    assert "price of TEE-M" in node.fail("catalog", "set-price", "TEE-M", "900", user="cal")
    node.ok("verify")


def test_lockout_shows_in_users_list_and_a_supervisor_unlocks(node, stdin, approver):
    staffed(node, stdin, approver)
    for _ in range(4):
        stdin("0000\n")
        node.fail("login", "cal", "--pin-stdin")
    stdin("0000\n")
    assert "cal is locked at this terminal for 5 more minute(s)" in node.fail(
        "login", "cal", "--pin-stdin"
    )
    stdin(CAL + "\n")
    assert "locked" in node.fail("login", "cal", "--pin-stdin")
    assert users(node)["cal"]["locked_here"] is True
    approver(BOSS)
    assert node.ok("users", "unlock", "cal", "--approve", "boss").out.startswith("cal unlocked")
    stdin(CAL + "\n")
    assert node.json("login", "cal", "--pin-stdin")["role"] == "cashier"


def test_users_replicate_by_bundle_and_sign_in_works_there(pair, stdin, approver, tmp_path):
    t1, t2 = pair
    staffed(t1, stdin, approver)
    bundle = str(tmp_path / "staff.bundle")
    t1.ok("sync", "export", bundle)
    t2.ok("sync", "import", bundle)
    assert users(t2) == users(t1)
    stdin(CAL + "\n")
    assert t2.json("login", "cal", "--pin-stdin")["user_id"] == "cal"
    assert t2.json("whoami")["user"] == "cal"
    t2.sell("CAP")
    assert t2.json("ops", "tail", "-n", "1")[0]["user"] == "cal"
    t2.ok("verify")


def test_policy_shows_defaults_and_changes_need_a_manager(node, stdin, approver):
    staffed(node, stdin, approver)
    shown = node.json("users", "policy")
    assert shown["staff.refund_limit"] == 100_000 and shown["staff.lockout_failures"] == 5
    assert "staff setting staff.refund_limit" in node.fail(
        "users", "policy", "--set", "refund_limit=5000", user="cal"
    )
    assert "unknown staff setting" in node.fail("users", "policy", "--set", "nope=1")
    approver(BOSS)
    changed = node.json(
        "users", "policy", "--set", "refund_limit=5000", "--approve", "boss", user="boss"
    )
    assert changed["staff.refund_limit"] == 500_000
    approver(None)
    sale = node.sell("JKT-L", user="cal")
    assert node.json("return", sale["sale_id"], "JKT-L", user="cal")["total"] == 300000
