"""HQ's people (meshpos.hq.accounts over hq/storage/people.py): scrypt password hashes, roles,
sign-in with lockouts, sessions that expire and end, the last admin kept, and `meshpos hq user`.
The storage runs on SQLite and, where a throwaway cluster can start, on PostgreSQL."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import run_cli
from pg import pg_cluster_fixture

from meshpos.core.errors import InputError, LocalError, NotFound
from meshpos.hq import keys
from meshpos.hq.accounts import (
    IDLE_MS,
    LOCK_BASE_MS,
    MAX_AGE_MS,
    Accounts,
    SignInRefused,
    hash_password,
    lock_ms,
    password_matches,
)
from meshpos.hq.storage import HQStorage, open_storage

PW = "correct horse battery"


class Clock:
    def __init__(self) -> None:
        self.ms = 1_760_000_000_000

    def __call__(self) -> int:
        return self.ms


@pytest.fixture(scope="module")
def pg_cluster() -> Iterator[Any]:
    yield from pg_cluster_fixture()


@pytest.fixture(params=["sqlite", "postgresql"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[HQStorage]:
    if request.param == "sqlite":
        st = open_storage(str(tmp_path / "hq.db"))
    else:
        st = open_storage(request.getfixturevalue("pg_cluster").create_db())
    yield st
    st.close()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def accounts(storage: HQStorage, clock: Clock) -> Accounts:
    acc = Accounts(storage.people, clock)
    acc.add("asha", "Asha Rao", "admin", PW)
    return acc


def test_a_hash_is_salted_and_verifies_only_its_password() -> None:
    one, two = hash_password(PW), hash_password(PW)
    assert one != two and one.startswith("scrypt$15$8$1$")
    assert password_matches(PW, one) and password_matches(PW, two)
    assert not password_matches(PW + "!", one)
    assert not password_matches(PW, "scrypt$15$8$1$AAAA$BBBB")
    assert not password_matches(PW, "md5$whatever")
    assert PW not in one


@pytest.mark.parametrize(
    ("user", "role", "password", "says"),
    [
        ("bad id!", "viewer", PW, "user id"),
        ("ravi", "owner", PW, "role 'owner' must be one of viewer, operator, admin"),
        ("ravi", "viewer", "short", "at least 10 characters"),
        ("ravi", "viewer", "ravi", "at least 10 characters"),
        ("ravi", "viewer", "aaaaaaaaaaaa", "too easy to guess"),
        ("asha", "viewer", PW, "already exists"),
    ],
)
def test_a_bad_account_is_refused_saying_why_and_nothing_is_stored(
    accounts: Accounts, user: str, role: str, password: str, says: str
) -> None:
    before = accounts.people()
    with pytest.raises(LocalError, match=says):
        accounts.add(user, "", role, password)
    assert accounts.people() == before


def test_sign_in_gives_a_session_the_cookie_names_and_sign_out_ends_it(
    accounts: Accounts,
) -> None:
    done = accounts.sign_in("asha", PW, "10.0.0.5")
    session = accounts.session(done.token)
    assert session is not None and session.person.user_id == "asha"
    assert session.person.can("admin") and session.csrf == done.session.csrf
    assert accounts.session(done.token + "x") is None
    assert accounts.session(None) is None
    accounts.sign_out(done.token)
    assert accounts.session(done.token) is None


def test_wrong_passwords_lock_the_account_for_growing_times(
    accounts: Accounts, clock: Clock
) -> None:
    for _ in range(4):
        with pytest.raises(SignInRefused, match="wrong user name or password"):
            accounts.sign_in("asha", "not the password", "x")
    with pytest.raises(SignInRefused, match="now locked for 1 minute"):
        accounts.sign_in("asha", "not the password", "x")
    with pytest.raises(SignInRefused, match="locked after 5 wrong passwords"):
        accounts.sign_in("asha", PW, "x")  # even the right one, while locked
    clock.ms += LOCK_BASE_MS + 1
    with pytest.raises(SignInRefused, match="now locked for 1 minute"):
        accounts.sign_in("asha", "still wrong", "x")  # a sixth: 60 s
    assert lock_ms(6) == 2 * LOCK_BASE_MS and lock_ms(40) == 3_600_000
    accounts.unlock("asha")
    assert accounts.session(accounts.sign_in("asha", PW, "x").token) is not None
    assert accounts.person("asha").locked_until_ms == 0


def test_an_unknown_user_gets_the_same_answer_as_a_wrong_password(accounts: Accounts) -> None:
    with pytest.raises(SignInRefused) as unknown:
        accounts.sign_in("nobody", PW, "x")
    with pytest.raises(SignInRefused) as wrong:
        accounts.sign_in("asha", "not the password", "x")
    assert str(unknown.value) == str(wrong.value) == "wrong user name or password"


def test_sessions_end_when_idle_too_long_or_older_than_a_day_of_work(
    accounts: Accounts, clock: Clock
) -> None:
    idle = accounts.sign_in("asha", PW, "x").token
    busy = accounts.sign_in("asha", PW, "x").token
    clock.ms += IDLE_MS - 60_000
    assert accounts.session(busy) is not None  # used: touched
    clock.ms += 120_000
    assert accounts.session(idle) is None
    assert accounts.session(busy) is not None
    while clock.ms < 1_760_000_000_000 + MAX_AGE_MS:
        clock.ms += IDLE_MS // 2
        accounts.session(busy)
    assert accounts.session(busy) is None


@pytest.mark.parametrize("change", ["role", "password", "disable"])
def test_a_change_to_an_account_ends_its_sessions(accounts: Accounts, change: str) -> None:
    accounts.add("ravi", "Ravi", "operator", PW)
    token = accounts.sign_in("ravi", PW, "x").token
    if change == "role":
        accounts.set_role("ravi", "viewer")
    elif change == "password":
        accounts.set_password("ravi", "another long phrase")
    else:
        accounts.set_disabled("ravi", True)
    assert accounts.session(token) is None
    if change == "disable":
        with pytest.raises(SignInRefused, match="disabled"):
            accounts.sign_in("ravi", PW, "x")
    elif change == "role":
        session = accounts.session(accounts.sign_in("ravi", PW, "x").token)
        assert session is not None and not session.person.can("operator")


def test_the_only_active_admin_cannot_be_demoted_or_disabled(accounts: Accounts) -> None:
    with pytest.raises(InputError, match="only active admin"):
        accounts.set_role("asha", "operator")
    with pytest.raises(InputError, match="only active admin"):
        accounts.set_disabled("asha", True)
    accounts.add("ravi", "Ravi", "admin", PW)
    accounts.set_role("asha", "viewer")
    assert accounts.person("asha").role == "viewer"
    with pytest.raises(NotFound, match="no HQ user 'nobody'"):
        accounts.set_role("nobody", "viewer")


def test_own_password_change_needs_the_current_one(accounts: Accounts) -> None:
    with pytest.raises(SignInRefused, match="current password is not right"):
        accounts.change_password("asha", "not it at all", "a brand new phrase")
    accounts.change_password("asha", PW, "a brand new phrase")
    accounts.sign_in("asha", "a brand new phrase", "x")


# -- the CLI ---------------------------------------------------------------------------------------


def hq_cli(d: Path, *args: str, stdin: str | None = None) -> Any:
    import io
    import sys

    old = sys.stdin
    sys.stdin = io.StringIO(stdin or "")
    try:
        return run_cli(["hq", *args, "--dir", str(d)])
    finally:
        sys.stdin = old


def test_hq_user_commands_add_list_change_and_refuse_bad_input(tmp_path: Path) -> None:
    d = tmp_path / "hq"
    keys.init_hq(d)
    added = hq_cli(d, "user", "add", "asha", "--name", "Asha Rao", "--role", "admin",
                   "--password-stdin", "--json", stdin=PW + "\n")  # fmt: skip
    assert added.code == 0, added.err
    assert json.loads(added.out)["role"] == "admin"
    short = hq_cli(d, "user", "add", "ravi", "--role", "viewer", "--password-stdin", stdin="short")
    assert short.err.strip() == "error: a password needs at least 10 characters"
    bad_role = hq_cli(d, "user", "add", "ravi", "--role", "boss", "--password-stdin", stdin=PW)
    assert bad_role.code == 2 and "'boss' is not one of" in bad_role.err
    assert hq_cli(d, "user", "add", "ravi", "--role", "operator", "--password-stdin",
                  stdin=PW).code == 0  # fmt: skip
    only = hq_cli(d, "user", "role", "asha", "viewer")
    assert only.code == 1 and "asha is the only active admin" in only.err
    assert hq_cli(d, "user", "role", "ravi", "admin").code == 0
    assert hq_cli(d, "user", "role", "asha", "viewer").code == 0
    listed = {r["user_id"]: r for r in json.loads(hq_cli(d, "user", "list", "--json").out)}
    assert (listed["asha"]["role"], listed["ravi"]["role"]) == ("viewer", "admin")
    refused = hq_cli(d, "user", "disable", "nobody")
    assert refused.code == 1 and "no HQ user 'nobody'" in refused.err
    assert hq_cli(d, "user", "disable", "ravi").code == 1  # the only active admin now
    assert hq_cli(d, "user", "disable", "asha").code == 0
    assert hq_cli(d, "user", "enable", "asha").code == 0
    assert hq_cli(d, "user", "unlock", "ravi").code == 0
    assert (
        hq_cli(d, "user", "password", "ravi", "--password-stdin", stdin="a new long phrase").code
        == 0
    )
    svc_storage = open_storage(keys.load_hq(d).db_url)
    try:
        acc = Accounts(svc_storage.people)
        acc.sign_in("ravi", "a new long phrase", "x")
        states = {p.user_id: (p.role, p.disabled) for p in acc.people()}
    finally:
        svc_storage.close()
    assert states["ravi"] == ("admin", False)
