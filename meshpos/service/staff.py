"""Staff and roles, the stateful side: sign-in with lockout, sessions, user management, and the
check a terminal makes when it creates an op (`authorize`). The rules themselves are in
meshpos/domain/staff.py; the users view and lockouts are `Ledger.staff`; the second line, the
rulebook every replica judges each op with, is meshpos/domain/authority.py.

Bootstrap: while a store's ledger holds no user at all, nothing is checked (every existing flow and
test runs that way) and the first user may be created without approval; it must be an admin.
Revocation is enforced when ops are made, at every till that has heard of it. See
docs/decisions.md, "Staff and roles".
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from meshpos.core.clock import wall_of
from meshpos.core.errors import InputError, LocalError, NotFound
from meshpos.core.ops import Op, Payload
from meshpos.domain.staff import (
    APPROVAL,
    APPROVER,
    RANK,
    ROLES,
    SALT_BYTES,
    SESSION,
    Credential,
    Need,
    Policy,
    check_pin,
    check_role,
    credential_ok,
    device_wait_minutes,
    issue_credential,
    lock_minutes,
    parse_policy_value,
    pin_matches,
    pin_record,
    policy_from,
    roles_from,
    source_required,
)
from meshpos.ledger.staff import device_key
from meshpos.ledger.store import Ledger
from meshpos.service.config import check_name
from meshpos.service.context import NodeContext, Recorder

SESSION_FILE = "session.json"

# Ops a person makes: in a store with staff, the acting user must be an active user.
PERSON_KINDS = frozenset(
    {
        "sale",
        "return",
        "exchange",
        "stock.receive",
        "stock.adjust",
        "conflict.resolve",
        "product.upsert",
        "customer.upsert",
        "setting.set",
        "user.upsert",
        "loyalty.adjust",
        "report.z",
    }
)


class PermissionDenied(LocalError):
    """The acting user may not do this here without a supervisor's (or manager's) PIN."""


class LockedOut(PermissionDenied):
    """Too many wrong PINs for this user at this terminal."""


_CLI_HINT = re.compile(r"\.?\s*Approve with their PIN \(--approve USER\)[^.]*\.?$")


def at_the_till(exc: PermissionDenied) -> str:
    """The refusal without its command-line hint, for a till that asks for the PIN itself."""
    return _CLI_HINT.sub("", str(exc))


class DeviceWaiting(LockedOut):
    """Too many wrong PINs from this web till device: it waits before its next try."""


# -- the users view ------------------------------------------------------------------------------


def store_policy(ledger: Ledger) -> Policy:
    """The policy in force at this till: current `staff.*` settings over the defaults."""
    return policy_from(ledger.views.settings("staff."))


def _approvers(ledger: Ledger, role: str) -> list[str]:
    return ledger.staff.active_with_role([r for r in ROLES if RANK[r] >= RANK[role]])


# -- sign-in and lockout -------------------------------------------------------------------------


def sign_in(
    t: NodeContext,
    uid: str,
    pin: str,
    *,
    purpose: str = SESSION,
    seed: bytes | None = None,
    device: str | None = None,
) -> Credential:
    """Check `uid`'s PIN against the users view (works offline: the view is local) and return a
    credential. Wrong PINs count per user at this terminal, and lock the user here for growing
    times (`lock_minutes`). `device`: the web till's client address; its wrong PINs count too,
    whoever they were for, and a device that typed too many waits before its next try is even
    checked (`device_wait_minutes`), so that one person at one device cannot lock everyone out."""
    staff = t.ledger.staff
    now = t.now_ms()
    if not staff.has_users():
        raise NotFound(
            "this store has no users yet: create the first admin with `meshpos users add`"
        )
    if device is not None:
        waits = staff.lockout(device_key(device))[1]
        if waits > now:
            raise DeviceWaiting(_device_message(waits - now))
    policy = store_policy(t.ledger)
    row = staff.user(uid)
    if row is None or not row["active"]:
        _device_failed(t, device)
        if row is None:
            raise NotFound(f"unknown user {uid!r}: see `meshpos users list`")
        raise PermissionDenied(f"user {uid} is disabled")
    failures, until = staff.lockout(uid)
    if until > now:
        raise LockedOut(_locked_message(uid, until, now))
    key = pin_matches(pin, row["pin_salt"], row["pin_key"])
    if key is None:
        failures += 1
        minutes = lock_minutes(failures, policy)
        until = now + minutes * 60_000 if minutes else 0
        staff.set_lockout(uid, failures, until)
        if until:
            with contextlib.suppress(DeviceWaiting):
                _device_failed(t, device)
            raise LockedOut(_locked_message(uid, until, now))
        _device_failed(t, device)
        left = policy.lockout_failures - failures % policy.lockout_failures
        raise PermissionDenied(
            f"wrong PIN for {uid} ({left} more wrong PIN(s) lock {uid} at this terminal)"
        )
    staff.clear_lockout(uid)
    if device is not None:
        staff.clear_lockout(device_key(device))
    minutes = policy.session_minutes if purpose == SESSION else policy.approval_minutes
    # An op's expiry is judged by its HLC, which a peer's fast clock may have pushed ahead of ours.
    base = max(now, wall_of(t.ledger.max_hlc()))
    return issue_credential(
        t.cfg.store, uid, key, seed or os.urandom(32), base + minutes * 60_000, purpose
    )


def _device_failed(t: NodeContext, device: str | None) -> None:
    """Count a wrong PIN against the device; the answer says so at once when it must wait."""
    if device is None:
        return
    failures = t.ledger.staff.lockout(device_key(device))[0] + 1
    wait = device_wait_minutes(failures) * 60_000
    t.ledger.staff.set_lockout(device_key(device), failures, t.now_ms() + wait if wait else 0)
    if wait:
        raise DeviceWaiting(_device_message(wait))


def _device_message(ms: int) -> str:
    return (
        f"too many wrong PINs from this device: try again in {_minutes(ms)} minute(s), or ask "
        "a supervisor to unlock it"
    )


def _minutes(ms: int) -> int:
    return max(1, -(-ms // 60_000))


def _locked_message(uid: str, until: int, now: int) -> str:
    return (
        f"{uid} is locked at this terminal for {_minutes(until - now)} more minute(s) after "
        f"too many wrong PINs (a supervisor can unlock: `meshpos users unlock {uid}`, or on the "
        "web till's sign-in page)"
    )


def unlock(t: NodeContext, uid: str | None) -> bool:
    """Clear `uid`'s lockout at this terminal (or none: `uid` None), and every web till device's
    wait here; takes a supervisor's credential (session or --approve). Local only: lockouts are
    per terminal and never replicate. Whether anything was locked."""
    if uid is not None:
        _existing(t.ledger, uid)
    now = t.now_ms()
    for c in t.credentials:
        row = t.ledger.staff.user(c.user)
        if (
            row is not None
            and row["active"]
            and row["pin_key"] == c.pin_key.hex()
            and c.exp_ms > now
            and RANK[row["role"]] >= RANK[APPROVER]
        ):
            break
    else:
        what = f"unlocking {uid}" if uid else "unlocking"
        raise PermissionDenied(
            f"{what} needs {roles_from(APPROVER)}: approve with their PIN (--approve)"
        )
    with t.ledger.write():
        user = t.ledger.staff.clear_lockout(uid) if uid is not None else False
        return t.ledger.staff.clear_devices() > 0 or user


@contextmanager
def approved_by(t: NodeContext, cred: Credential) -> Iterator[None]:
    """Let `cred` approve the ops made inside the block (the web till's PIN pad uses this)."""
    t.credentials.insert(0, cred)
    try:
        yield
    finally:
        t.credentials.remove(cred)


# -- sessions (files in the node directory) ------------------------------------------------------


def session_path(directory: str | os.PathLike[str]) -> Path:
    return Path(directory) / SESSION_FILE


def save_session(directory: str | os.PathLike[str], cred: Credential) -> Path:
    """Write the session file, mode 0600 from the start (it holds the session's private key)."""
    path = session_path(directory)
    tmp = path.with_name(f".{SESSION_FILE}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(cred.to_json(), fh)
    tmp.replace(path)
    return path


def read_session(directory: str | os.PathLike[str]) -> Credential | None:
    path = session_path(directory)
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror}") from None
    try:
        data = json.loads(text)
    except ValueError:
        raise InputError(f"{path} is damaged: run `meshpos logout` and sign in again") from None
    return Credential.from_json(data)


def session_user(directory: str | os.PathLike[str], now_ms: int) -> str | None:
    """The signed-in user, if a session exists and has not expired."""
    try:
        cred = read_session(directory)
    except InputError:
        return None
    return cred.user if cred and cred.exp_ms > now_ms else None


def clear_session(directory: str | os.PathLike[str]) -> bool:
    path = session_path(directory)
    existed = path.exists()
    path.unlink(missing_ok=True)
    return existed


def load_session(t: NodeContext) -> Credential | None:
    """The session credential if it is still good here: unexpired, for this store, certified by
    the PIN key the user has now, and the user active. Otherwise None."""
    cred = read_session(t.cfg.dir)
    if cred is None or cred.exp_ms <= t.now_ms() or cred.store != t.cfg.store:
        return None
    row = t.ledger.staff.user(cred.user)
    if row is None or not row["active"] or row["pin_key"] != cred.pin_key.hex():
        return None
    return cred if credential_ok(cred) else None


# -- creating ops: the till's check --------------------------------------------------------------


def authorize(t: NodeContext, kind: str, payload: Payload, acting: str, hlc: int) -> Payload:
    """Called by `Terminal.append` inside its transaction: refuse what `acting` may not do, and
    sign the approval into the payload of an op that needs one."""
    staff = t.ledger.staff
    if not staff.has_users():
        return payload
    policy = store_policy(t.ledger)
    if kind in PERSON_KINDS:
        who = staff.user(acting)
        if who is None or not who["active"]:
            state = "disabled" if who else "not a user of this store"
            raise PermissionDenied(
                f"{acting!r} is {state}: sign in with `meshpos login USER` (or pass --user)"
            )
        if policy.require_login and not any(
            c.user == acting and c.purpose == SESSION for c in t.credentials
        ):
            raise PermissionDenied(
                f"this store requires sign-in: run `meshpos login {acting}` at this terminal"
            )
    target = staff.user(payload.get("user_id")) if kind == "user.upsert" else None
    need = source_required(kind, payload, policy, target["role"] if target else None)
    if need is None:
        return payload
    cred = _pick(t, need, acting, wall_of(hlc))
    seq = t.ledger.head(t.node_id)[0] + 1
    return {**payload, "approval": cred.approve(t.node_id, seq, acting, kind, payload)}


def approver_for(t: NodeContext, need: Need, acting: str) -> Credential:
    """The credential offered here now that may approve `need` for `acting`; PermissionDenied
    naming who can. A till asks this at the step that needs it, before the op is made."""
    return _pick(t, need, acting, max(t.now_ms(), wall_of(t.ledger.max_hlc())))


def _pick(t: NodeContext, need: Need, acting: str, wall_ms: int) -> Credential:
    why: list[str] = []
    for c in t.credentials:
        if (c.purpose != APPROVAL and c.user != acting) or c.store != t.cfg.store:
            continue
        row = t.ledger.staff.user(c.user)
        if row is None or not row["active"]:
            why.append(f"{c.user} is disabled")
        elif row["pin_key"] != c.pin_key.hex():
            why.append(f"{c.user}'s PIN changed since they signed in")
        elif c.exp_ms < wall_ms:
            why.append(f"{c.user}'s sign-in has expired")
        elif RANK[row["role"]] >= RANK[need.role] or need.self_user == c.user:
            return c
        else:
            why.append(f"{c.user} is a {row['role']}")
    who = ", ".join(_approvers(t.ledger, need.role)[:6]) or "nobody yet"
    detail = f" ({'; '.join(why)})" if why else ""
    raise PermissionDenied(
        f"{need.what} needs {roles_from(need.role)} to approve{detail}; who can: {who}. "
        "Approve with their PIN (--approve USER) or sign in as one"
    )


# -- managing users (service layer for the CLI and the till) -------------------------------------


def _salt() -> bytes:
    return os.urandom(SALT_BYTES)


def _user_op(t: Recorder, uid: str, fields: dict[str, Any], user: str | None, **extra: Any) -> Op:
    return t.append("user.upsert", {"user_id": uid, "fields": fields, **extra}, user)


def add_user(
    t: Recorder, uid: str, *, name: str, role: str, pin: str, user: str | None = None
) -> Op:
    """Create a user. The store's first user must be an admin and needs no approval (bootstrap);
    after that it takes a manager (an admin to create another admin)."""
    check_name(uid, "user id")
    check_role(role)
    first = not t.ledger.staff.has_users()
    if first and role != "admin":
        raise InputError(
            "this store has no users yet: the first one must be an admin (--role admin)"
        )
    check_pin(pin, role, store_policy(t.ledger))
    record = pin_record(pin, _salt())
    fields = {"name": name.strip() or uid, "role": role, "active": 1, **record}
    with t.transaction():
        if t.ledger.staff.user(uid) is not None:
            raise InputError(f"user {uid} already exists: see `meshpos users set-role` / `set-pin`")
        if first and t.ledger.staff.has_users():
            raise InputError("another user was added meanwhile: add this one again")
        if first:
            return _user_op(t, uid, fields, uid, bootstrap=True)
        return _user_op(t, uid, fields, user)


def _existing(ledger: Ledger, uid: str) -> dict[str, Any]:
    row = ledger.staff.user(uid)
    if row is None:
        raise NotFound(f"unknown user {uid!r}: see `meshpos users list`")
    return row


def _keep_an_admin(ledger: Ledger, row: dict[str, Any]) -> None:
    if row["role"] == "admin" and row["active"] and _approvers(ledger, "admin") == [row["user_id"]]:
        raise InputError(
            f"{row['user_id']} is the store's only active admin: make another admin first"
        )


def set_role(t: Recorder, uid: str, role: str, user: str | None = None) -> Op:
    check_role(role)
    with t.transaction():
        row = _existing(t.ledger, uid)
        if row["role"] == role:
            raise InputError(f"{uid} is already a {role}")
        if role != "admin":
            _keep_an_admin(t.ledger, row)
        return _user_op(t, uid, {"role": role}, user)


def set_active(t: Recorder, uid: str, active: bool, user: str | None = None) -> Op:
    with t.transaction():
        row = _existing(t.ledger, uid)
        if bool(row["active"]) == active:
            raise InputError(f"{uid} is already {'active' if active else 'disabled'}")
        if not active:
            _keep_an_admin(t.ledger, row)
        return _user_op(t, uid, {"active": int(active)}, user)


def set_pin(t: Recorder, uid: str, pin: str, user: str | None = None) -> Op:
    """A new PIN: approved by the user themselves (signed in, or --approve with the old PIN) or
    by a manager. Sessions made with the old PIN stop approving. The store's minimum length for
    the user's role applies (`staff.pin_min_digits`): PINs set before it was raised still work."""
    check_pin(pin, _existing(t.ledger, uid)["role"], store_policy(t.ledger))
    record = pin_record(pin, _salt())
    return _user_op(t, uid, record, user)


def set_policy(t: Recorder, key: str, text: str, user: str | None = None) -> Op:
    value = parse_policy_value(key, text)
    return t.append("setting.set", {"key": key, "value": value}, user)
