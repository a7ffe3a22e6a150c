"""Issue 13, point 5: sign-in that a stranger can neither guess nor jam.

- PIN length by role (`staff.pin_min_digits` for supervisors and above, 6 by default;
  `staff.cashier_pin_min_digits`, 4), checked when a PIN is set; old short PINs keep working.
- Wrong PINs lock a user at a terminal for growing times (5, 10, 20 ... minutes, up to a day).
- The web till counts wrong PINs per device (client address) too, and a device that typed a few
  stops being heard before any user is locked: one person at one device cannot lock everyone out.
- A supervisor unlocks, from the web till's sign-in page or `meshpos users unlock`.
- The sign-in page names the users only when the store says so (`staff.list_users_at_signin`).
"""

from __future__ import annotations

import contextlib
import re
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_staff import MINUTE, PINS, pin, staff_store

from meshpos.core.errors import InputError
from meshpos.domain.staff import MAX_LOCK_MINUTES, Policy, device_wait_minutes, lock_minutes
from meshpos.domain.staff import pin_record as make_pin_record
from meshpos.service.staff import (
    LockedOut,
    PermissionDenied,
    add_user,
    approved_by,
    set_pin,
    set_policy,
    sign_in,
)
from meshpos.service.terminal import Terminal
from meshpos.web.app import create_app

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

BOSS, SAM, ANA, LEE = "900900", "567856", "1234", "2468"


# -- the rules --------------------------------------------------------------------------------------


def test_locks_grow_with_each_round_of_wrong_pins_up_to_a_day() -> None:
    p = Policy()  # 5 wrong PINs, 5 minutes
    assert [lock_minutes(n, p) for n in range(1, 16)] == [0, 0, 0, 0, 5] + [0] * 4 + [10] + [
        0
    ] * 4 + [20]
    assert lock_minutes(5 * 40, p) == MAX_LOCK_MINUTES == 24 * 60
    guesses_in_a_day, minutes, n = 0, 0, 0
    while minutes < 24 * 60:
        n += 1
        minutes += lock_minutes(n, p)
        guesses_in_a_day += 1
    assert guesses_in_a_day < 60  # a flat 5-minute lock allowed about 1,440
    assert [device_wait_minutes(n) for n in range(1, 8)] == [0, 0, 1, 2, 4, 8, 16]
    assert device_wait_minutes(10_000) == MAX_LOCK_MINUTES


def test_pin_length_depends_on_the_role_and_the_store_setting() -> None:
    reps = staff_store(1)
    t = reps[0].terminal
    with pin(t, "ada"):
        with pytest.raises(InputError, match="a supervisor's PIN is 6 to 12 digits"):
            add_user(t, "sam", name="Sam", role="supervisor", pin="1234", user="ada")
        add_user(t, "sam", name="Sam", role="supervisor", pin="123456", user="ada")
        add_user(t, "kim", name="Kim", role="cashier", pin="1234", user="ada")
        set_policy(t, "staff.pin_min_digits", "8", user="ada")
        set_policy(t, "staff.cashier_pin_min_digits", "6", user="ada")
        with pytest.raises(InputError, match="a manager's PIN is 8 to 12 digits"):
            set_pin(t, "mia", "123456", user="ada")
        with pytest.raises(InputError, match="a PIN is 6 to 12 digits"):
            set_pin(t, "kim", "4321", user="ada")
        set_pin(t, "kim", "654321", user="ada")
        with pytest.raises(InputError, match="out of range"):
            set_policy(t, "staff.pin_min_digits", "3", user="ada")
        # A supervisor whose 4-digit PIN was set by an older version (or before the rule).
        old = make_pin_record("4321", bytes(16))
        t.append("user.upsert", {"user_id": "old", "fields": {
            "name": "Old", "role": "supervisor", "active": 1, **old}}, "ada")  # fmt: skip
    assert sign_in(t, "sam", "123456").user == "sam"
    assert sign_in(t, "old", "4321").user == "old"  # still signs in
    assert sign_in(t, "kim", "654321").user == "kim"


def test_wrong_pins_lock_a_user_here_for_longer_each_round(tmp_path: Path) -> None:
    rep = staff_store(1)[0]
    t = rep.terminal
    for minutes in (5, 10, 20):
        for _ in range(4):
            with pytest.raises(PermissionDenied, match="wrong PIN for cal"):
                sign_in(t, "cal", "0000")
        with pytest.raises(LockedOut, match=f"for {minutes} more minute"):
            sign_in(t, "cal", "0000")
        with pytest.raises(LockedOut):
            sign_in(t, "cal", PINS["cal"])  # the right PIN does not help while locked
        rep.wall.ms += minutes * MINUTE
    assert sign_in(t, "cal", PINS["cal"]).user == "cal"  # and a success starts again at 5
    for _ in range(4):
        with pytest.raises(PermissionDenied):
            sign_in(t, "cal", "0000")
    with pytest.raises(LockedOut, match="for 5 more minute"):
        sign_in(t, "cal", "0000")


# -- the web till -----------------------------------------------------------------------------------


def _staff(directory: Path, *, listed: bool = False) -> None:
    t = Terminal.open(directory)
    try:
        add_user(t, "boss", name="Boss", role="admin", pin=BOSS)
        with approved_by(t, sign_in(t, "boss", BOSS)):
            add_user(t, "sam", name="Sam", role="supervisor", pin=SAM, user="boss")
            add_user(t, "ana", name="Ana", role="cashier", pin=ANA, user="boss")
            add_user(t, "lee", name="Lee", role="cashier", pin=LEE, user="boss")
            if listed:
                set_policy(t, "staff.list_users_at_signin", "yes", user="boss")
    finally:
        t.close()


def _by_device(app: Any) -> Any:
    """The app, seeing each request come from the address in its X-Device header (a test's
    stand-in for browsers on several machines)."""

    async def wrapped(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            device = dict(scope["headers"]).get(b"x-device")
            if device:
                scope = {**scope, "client": (device.decode(), 40000)}
        await app(scope, receive, send)

    return wrapped


@contextlib.contextmanager
def web(directory: Path) -> Iterator[TestClient]:
    app = create_app(directory, live_interval=0.02)
    with TestClient(_by_device(app), base_url="http://127.0.0.1", follow_redirects=False) as c:
        yield c


def _sign_in(c: TestClient, device: str, user: str, pin_: str) -> tuple[int, str]:
    r = c.post("/signin", data={"user": user, "pin": pin_}, headers={"x-device": device})
    c.cookies.clear()
    error = re.search(r'id="signin-error"[^>]*>([^<]*)<', r.text)
    return r.status_code, error.group(1) if error else ""


def _unlocked_by_sam(
    c: TestClient, device: str, who: tuple[str, str], unlock: str, refused: tuple[str, str, str]
) -> None:
    """`who` (user, PIN) cannot sign in at `device`, and the page offers a supervisor's unlock;
    `refused` (approver, PIN, why) does not unlock `unlock`; Sam does; then `who` signs in."""
    user, pin_ = who
    r = c.post("/signin", data={"user": user, "pin": pin_}, headers={"x-device": device})
    assert r.status_code == 401 and 'id="unlock-form"' in r.text
    for approver, approver_pin, status, said in (
        (*refused[:2], 401, refused[2]),
        ("sam", SAM, 200, f"{unlock or 'this terminal'} unlocked by sam"),
    ):
        form = {"user": unlock, "approver": approver, "approver_pin": approver_pin}
        r = c.post("/signin/unlock", data=form, headers={"x-device": device})
        assert r.status_code == status and said in r.text, r.text[-500:]
    assert _sign_in(c, device, user, pin_)[0] == 303


def _lockouts(directory: Path) -> dict[str, tuple[int, int]]:
    t = Terminal.open(directory)
    try:
        return {u: t.ledger.staff.lockout(u) for u in ("boss", "sam", "ana", "lee")}
    finally:
        t.close()


def test_one_person_at_one_device_cannot_lock_everyone_out(node: Any) -> None:
    _staff(node.path)
    with web(node.path) as c:
        answers = [_sign_in(c, "10.0.0.66", u, "000000") for u in ("ana", "lee", "sam", "boss")]
        answers += [_sign_in(c, "10.0.0.66", u, "000000") for u in ("ana", "lee") * 10]
        assert [s for s, _ in answers] == [401] * len(answers)
        assert "too many wrong PINs from this device" in answers[2][1]
        assert all("from this device" in e for _, e in answers[3:])  # heard no more
        counted = _lockouts(node.path)
        assert sum(n for n, _ in counted.values()) == 3  # 3 wrong PINs reached users; 21 did not
        assert all(until == 0 for _, until in counted.values())  # nobody is locked
        for user, p in (("ana", ANA), ("lee", LEE), ("sam", SAM), ("boss", BOSS)):
            assert _sign_in(c, "10.0.0.7", user, p)[0] == 303  # every user, at another device
        # A supervisor at the waiting device unlocks it on the sign-in page; a cashier cannot.
        _unlocked_by_sam(c, "10.0.0.66", ("ana", ANA), "", ("ana", ANA, "needs a supervisor"))


def test_a_user_locked_from_several_devices_is_unlocked_by_a_supervisor(node: Any) -> None:
    _staff(node.path)
    with web(node.path) as c:
        for device in ("10.0.1.1", "10.0.1.2", "10.0.1.3"):
            for _ in range(2):
                error = _sign_in(c, device, "lee", "0000")[1]
        assert "lee is locked at this terminal for 5 more minute(s)" in error
        assert _lockouts(node.path)["lee"][1] > 0
        wrong = ("sam", "111111", "not unlocked: wrong PIN for sam")
        _unlocked_by_sam(c, "10.0.1.9", ("lee", LEE), "lee", wrong)


def test_the_sign_in_page_names_users_only_when_the_store_says_so(node: Any) -> None:
    _staff(node.path)
    with web(node.path) as c:
        page = c.get("/signin").text
        assert 'name="user" id="user"' in page
        assert not any(name in page for name in ("Ana", "Lee", "Sam", "Boss", 'value="ana"'))
        unknown = _sign_in(c, "10.0.2.1", "zed", ANA)
        wrong = _sign_in(c, "10.0.2.2", "ana", "9999")
        disabled_or_not = _sign_in(c, "10.0.2.3", "boss", "0000")
        assert unknown == wrong == disabled_or_not == (401, "wrong user id or PIN")
    t = Terminal.open(node.path)
    try:
        with approved_by(t, sign_in(t, "boss", BOSS)):
            set_policy(t, "staff.list_users_at_signin", "yes", user="boss")
    finally:
        t.close()
    with web(node.path) as c:
        page = c.get("/signin").text
        assert all(f'value="{u}"' in page for u in ("ana", "lee", "sam", "boss"))
        assert _sign_in(c, "10.0.2.4", "ana", "9999")[1].startswith("wrong PIN for ana")
