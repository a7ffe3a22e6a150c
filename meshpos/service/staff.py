"""Staff and roles, the stateful side: the users view, sign-in with lockout, sessions, the check a
terminal makes when it creates an op (`authorize`) and the one every peer makes before it applies
foreign ops (`staff_check`, installed in `Ledger.checks`). The rules themselves are in staff.py.

Bootstrap: while a store's ledger holds no user at all, nothing is checked (every existing flow and
test runs that way) and the first user may be created without approval; it must be an admin.

What a peer refuses is what no honest till could have made: an approval whose signatures do not
hold for the op it sits in, by a user the peer has never known with that PIN key, or by one who
never held a role that may approve it; or a privileged op with no approval made well after the
store had staff. Peers judge against the whole history of users and staff settings (ever held,
before the op's HLC), not against the current view, so a decision can only change from "refuse"
to "accept" as they learn more: a refused batch is retried and accepted once the user ops it
needs arrive, and an op approved honestly before a concurrent demotion is never refused (which
would stall every later op of its terminal). Revocation is enforced when ops are made, at every
till that has heard of it. See docs/decisions.md, "Staff and roles".
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from meshpos.core.clock import wall_of
from meshpos.core.errors import InputError, LocalError, NotFound, RemoteError, SignatureError
from meshpos.core.ops import Op, Payload, unpack
from meshpos.domain.staff import (
    APPROVAL,
    RANK,
    ROLES,
    SALT_BYTES,
    SESSION,
    USER_ADMIN,
    Credential,
    Need,
    Policy,
    check_approval,
    check_pin,
    check_role,
    credential_ok,
    issue_credential,
    lenient_policy,
    parse_policy_value,
    pin_matches,
    pin_record,
    policy_from,
    read_approval,
    required,
    roles_from,
)
from meshpos.ledger.store import Ledger
from meshpos.service.config import check_name

if TYPE_CHECKING:
    from meshpos.service.terminal import Terminal

SESSION_FILE = "session.json"
LOCKOUT_DDL = """
CREATE TABLE IF NOT EXISTS staff_lockout (
    user_id         TEXT PRIMARY KEY,
    failures        INTEGER NOT NULL,
    locked_until_ms INTEGER NOT NULL
)
"""

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


# -- the users view ------------------------------------------------------------------------------


def has_users(conn: sqlite3.Connection) -> bool:
    return conn.execute("SELECT 1 FROM users LIMIT 1").fetchone() is not None


def get_user(conn: sqlite3.Connection, uid: object) -> dict[str, Any] | None:
    if not isinstance(uid, str):
        return None
    row = conn.execute(
        "SELECT user_id, name, role, active, pin_salt, pin_key FROM users WHERE user_id = ?",
        (uid,),
    ).fetchone()
    if row is None:
        return None
    keys = ("user_id", "name", "role", "active", "pin_salt", "pin_key")
    return dict(zip(keys, row, strict=True))


def list_users(conn: sqlite3.Connection, now_ms: int) -> list[dict[str, Any]]:
    """Users as a manager sees them; `locked_here` is this terminal's lockout (per terminal)."""
    _ensure_lockout(conn)
    return [
        {
            "user_id": uid,
            "name": name,
            "role": role,
            "active": bool(active),
            "locked_here": bool(until and until > now_ms),
        }
        for uid, name, role, active, until in conn.execute(
            "SELECT u.user_id, u.name, u.role, u.active, l.locked_until_ms FROM users u "
            "LEFT JOIN staff_lockout l ON l.user_id = u.user_id ORDER BY u.user_id"
        )
    ]


def store_policy(conn: sqlite3.Connection) -> Policy:
    """The policy in force at this till: current `staff.*` settings over the defaults."""
    settings = {
        key: json.loads(value)
        for key, value in conn.execute("SELECT key, value FROM settings WHERE key LIKE 'staff.%'")
    }
    return policy_from(settings)


def _approvers(conn: sqlite3.Connection, role: str) -> list[str]:
    ok = [r for r in ROLES if RANK[r] >= RANK[role]]
    marks = ",".join("?" * len(ok))
    return [
        r[0]
        for r in conn.execute(
            f"SELECT user_id FROM users WHERE active = 1 AND role IN ({marks}) ORDER BY user_id",
            ok,
        )
    ]


# -- sign-in and lockout -------------------------------------------------------------------------


def _ensure_lockout(conn: sqlite3.Connection) -> None:
    conn.execute(LOCKOUT_DDL)


def sign_in(
    t: Terminal, uid: str, pin: str, *, purpose: str = SESSION, seed: bytes | None = None
) -> Credential:
    """Check `uid`'s PIN against the users view (works offline: the view is local) and return a
    credential. Wrong PINs count per user at this terminal; too many lock the user here."""
    conn = t.ledger.conn
    now = t.now_ms()
    if not has_users(conn):
        raise NotFound(
            "this store has no users yet: create the first admin with `meshpos users add`"
        )
    row = get_user(conn, uid)
    if row is None:
        raise NotFound(f"unknown user {uid!r}: see `meshpos users list`")
    if not row["active"]:
        raise PermissionDenied(f"user {uid} is disabled")
    policy = store_policy(conn)
    with t.ledger.write():
        _ensure_lockout(conn)
        found = conn.execute(
            "SELECT failures, locked_until_ms FROM staff_lockout WHERE user_id = ?", (uid,)
        ).fetchone()
    failures, until = found if found else (0, 0)
    if until > now:
        raise LockedOut(_locked_message(uid, until, now, policy))
    key = pin_matches(pin, row["pin_salt"], row["pin_key"])
    with t.ledger.write():
        if key is not None:
            conn.execute("DELETE FROM staff_lockout WHERE user_id = ?", (uid,))
        else:
            failures = (0 if until else failures) + 1
            until = 0
            if failures >= policy.lockout_failures:
                failures, until = 0, now + policy.lockout_minutes * 60_000
            conn.execute(
                "INSERT OR REPLACE INTO staff_lockout VALUES (?, ?, ?)", (uid, failures, until)
            )
    if key is None:
        if until:
            raise LockedOut(_locked_message(uid, until, now, policy))
        left = policy.lockout_failures - failures
        raise PermissionDenied(
            f"wrong PIN for {uid} ({left} more wrong PIN(s) lock {uid} at this terminal)"
        )
    minutes = policy.session_minutes if purpose == SESSION else policy.approval_minutes
    # An op's expiry is judged by its HLC, which a peer's fast clock may have pushed ahead of ours.
    base = max(now, wall_of(t.ledger.max_hlc()))
    return issue_credential(
        t.cfg.store, uid, key, seed or os.urandom(32), base + minutes * 60_000, purpose
    )


def _locked_message(uid: str, until: int, now: int, policy: Policy) -> str:
    minutes = max(1, -(-(until - now) // 60_000))
    return (
        f"{uid} is locked at this terminal for {minutes} more minute(s) after "
        f"{policy.lockout_failures} wrong PINs (a manager can `meshpos users unlock {uid}`)"
    )


def unlock(t: Terminal, uid: str) -> bool:
    """Clear `uid`'s lockout at this terminal; takes a manager's credential (session or
    --approve). Local only: lockouts are per terminal and never replicate."""
    _existing(t, uid)
    now = t.now_ms()
    for c in t.credentials:
        row = get_user(t.ledger.conn, c.user)
        if (
            row is not None
            and row["active"]
            and row["pin_key"] == c.pin_key.hex()
            and c.exp_ms > now
            and RANK[row["role"]] >= RANK[USER_ADMIN]
        ):
            break
    else:
        raise PermissionDenied(
            f"unlocking {uid} needs {roles_from(USER_ADMIN)}: approve with their PIN (--approve)"
        )
    with t.ledger.write():
        _ensure_lockout(t.ledger.conn)
        gone = t.ledger.conn.execute("DELETE FROM staff_lockout WHERE user_id = ?", (uid,))
    return gone.rowcount > 0


@contextmanager
def approved_by(t: Terminal, cred: Credential) -> Iterator[None]:
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


def load_session(t: Terminal) -> Credential | None:
    """The session credential if it is still good here: unexpired, for this store, certified by
    the PIN key the user has now, and the user active. Otherwise None."""
    cred = read_session(t.cfg.dir)
    if cred is None or cred.exp_ms <= t.now_ms() or cred.store != t.cfg.store:
        return None
    row = get_user(t.ledger.conn, cred.user)
    if row is None or not row["active"] or row["pin_key"] != cred.pin_key.hex():
        return None
    return cred if credential_ok(cred) else None


# -- creating ops: the till's check --------------------------------------------------------------


def authorize(t: Terminal, kind: str, payload: Payload, acting: str, hlc: int) -> Payload:
    """Called by `Terminal.append` inside its transaction: refuse what `acting` may not do, and
    sign the approval into the payload of an op that needs one."""
    conn = t.ledger.conn
    if not has_users(conn):
        return payload
    policy = store_policy(conn)
    if kind in PERSON_KINDS:
        who = get_user(conn, acting)
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
    target = get_user(conn, payload.get("user_id")) if kind == "user.upsert" else None
    need = required(kind, payload, policy, target["role"] if target else None)
    if need is None:
        return payload
    cred = _pick(t, need, acting, wall_of(hlc))
    seq = t.ledger.head(t.node_id)[0] + 1
    return {**payload, "approval": cred.approve(t.node_id, seq, acting, kind, payload)}


def _pick(t: Terminal, need: Need, acting: str, wall_ms: int) -> Credential:
    conn = t.ledger.conn
    why: list[str] = []
    for c in t.credentials:
        if (c.purpose != APPROVAL and c.user != acting) or c.store != t.cfg.store:
            continue
        row = get_user(conn, c.user)
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
    who = ", ".join(_approvers(conn, need.role)[:6]) or "nobody yet"
    detail = f" ({'; '.join(why)})" if why else ""
    raise PermissionDenied(
        f"{need.what} needs {roles_from(need.role)} to approve{detail}; who can: {who}. "
        "Approve with their PIN (--approve USER) or sign in as one"
    )


# -- applying foreign ops: the peer's check ------------------------------------------------------


class _History:
    """Users and staff settings as a peer knows them: the `staff_log` view plus the batch."""

    def __init__(self, conn: sqlite3.Connection, ops: Sequence[Op]) -> None:
        self.conn = conn
        self.batch = [o for o in ops if o.kind in ("user.upsert", "setting.set")]

    def _batch_fields(self, uid: str, before: int) -> Iterator[tuple[str, Any]]:
        for o in self.batch:
            body = o.payload.get("fields")
            mine = o.kind == "user.upsert" and o.payload.get("user_id") == uid
            if mine and o.hlc < before and isinstance(body, Mapping):
                yield from body.items()

    def user(self, uid: str, before: int) -> tuple[set[str], set[str]]:
        """Roles `uid` ever held and PIN keys they ever had, by ops stamped before `before`."""
        roles: set[str] = set()
        keys: set[str] = set()
        rows = self.conn.execute(
            "SELECT field, value FROM staff_log WHERE entity = 'user' AND key = ? "
            "AND field IN ('role', 'pin_key') AND hlc < ?",
            (uid, before),
        ).fetchall()
        for name, value in [(f, json.loads(v)) for f, v in rows] + list(
            self._batch_fields(uid, before)
        ):
            if name == "role" and isinstance(value, str):
                roles.add(value)
            elif name == "pin_key" and isinstance(value, str):
                keys.add(value)
        return roles, keys

    def staff_since(self) -> int | None:
        """HLC of the first bootstrap user op known: when the store got staff."""
        row = self.conn.execute(
            "SELECT MIN(hlc) FROM staff_log WHERE entity = 'user' AND field = '#bootstrap'"
        ).fetchone()
        found = [row[0]] if row[0] is not None else []
        found += [
            o.hlc for o in self.batch if o.kind == "user.upsert" and o.payload.get("bootstrap")
        ]
        return min(found) if found else None

    def policy(self) -> Policy:
        history: dict[str, list[Any]] = {}
        for key, value in self.conn.execute(
            "SELECT key, value FROM staff_log WHERE entity = 'setting'"
        ):
            history.setdefault(key, []).append(json.loads(value))
        for o in self.batch:
            key = o.payload.get("key")
            if o.kind == "setting.set" and isinstance(key, str) and key.startswith("staff."):
                history.setdefault(key, []).append(o.payload.get("value"))
        return lenient_policy(history)


def hq_origins(conn: sqlite3.Connection) -> set[str]:
    """Nodes whose certificate names them HQ: HQ answers for its own staff (its ops are signed by
    the chain's office, not by a person at a till), so peers do not ask them for approvals."""
    out = set()
    for node_id, cert in conn.execute("SELECT node_id, cert FROM nodes WHERE cert IS NOT NULL"):
        try:
            content = unpack(cert, "certificate")[0]
            fields = unpack(content, "certificate")
            if isinstance(fields, list) and len(fields) == 9 and fields[7] == "hq":
                out.add(node_id)
        except (RemoteError, IndexError, KeyError, TypeError):
            continue
    return out


def staff_check(ledger: Ledger, ops: Sequence[Op]) -> None:
    """Refuse (RemoteError, nothing applied) a batch holding an op no honest till could have made.
    User ops inside the same batch count, so a bundle carrying a new manager and the refund they
    approved is applied in one go."""
    conn = ledger.conn
    if not any(o.kind == "user.upsert" for o in ops) and not has_users(conn):
        return
    known = _History(conn, ops)
    policy = known.policy()
    needs = [(op, need) for op in ops if (need := required(op.kind, op.payload, policy))]
    if not needs:
        return
    hq = hq_origins(conn)
    since: int | None = None
    by_id = {o.id: o for o in ops}
    for op, need in needs:
        if op.origin in hq:
            continue
        where = f"op {op.origin}:{op.seq} ({need.what})"
        raw = op.payload.get("approval")
        if raw is None:
            since = known.staff_since() if since is None else since
            grace = policy.bootstrap_grace_minutes * 60_000
            if since is not None and wall_of(op.hlc) < wall_of(since) + grace:
                prev = by_id.get((op.origin, op.seq - 1)) or ledger.get(op.origin, op.seq - 1)
                if prev is None or prev.hlc <= op.hlc:
                    continue
            raise RemoteError(
                f"{where} needs {roles_from(need.role)}'s approval and carries none: refused"
            )
        approval = read_approval(raw, where)
        reason = check_approval(approval, op, wall_of(op.hlc))
        if reason is not None:
            raise SignatureError(f"{where}: the approval by {approval.user} {reason}")
        roles, keys = known.user(approval.user, op.hlc)
        if not roles and not keys:
            raise RemoteError(
                f"{where}: approver {approval.user} is not a user known here yet "
                "(it is retried when their user record arrives)"
            )
        if approval.pin_key.hex() not in keys:
            raise SignatureError(f"{where}: the approval is not signed with {approval.user}'s PIN")
        if need.self_user != approval.user and not any(
            RANK.get(r, -1) >= RANK[need.role] for r in roles
        ):
            raise RemoteError(
                f"{where}: {approval.user} was never {roles_from(need.role)}, so cannot approve it"
            )


def install_check(ledger: Ledger) -> None:
    if staff_check not in ledger.checks:
        ledger.checks.append(staff_check)


# -- managing users (service layer for the CLI and the till) -------------------------------------


def _salt() -> bytes:
    return os.urandom(SALT_BYTES)


def _user_op(t: Terminal, uid: str, fields: dict[str, Any], user: str | None, **extra: Any) -> Op:
    return t.append("user.upsert", {"user_id": uid, "fields": fields, **extra}, user)


def add_user(
    t: Terminal, uid: str, *, name: str, role: str, pin: str, user: str | None = None
) -> Op:
    """Create a user. The store's first user must be an admin and needs no approval (bootstrap);
    after that it takes a manager (an admin to create another admin)."""
    check_name(uid, "user id")
    check_role(role)
    check_pin(pin)
    record = pin_record(pin, _salt())
    fields = {"name": name.strip() or uid, "role": role, "active": 1, **record}
    with t.transaction():
        if get_user(t.ledger.conn, uid) is not None:
            raise InputError(f"user {uid} already exists: see `meshpos users set-role` / `set-pin`")
        if not has_users(t.ledger.conn):
            if role != "admin":
                raise InputError(
                    "this store has no users yet: the first one must be an admin (--role admin)"
                )
            return _user_op(t, uid, fields, uid, bootstrap=True)
        return _user_op(t, uid, fields, user)


def _existing(t: Terminal, uid: str) -> dict[str, Any]:
    row = get_user(t.ledger.conn, uid)
    if row is None:
        raise NotFound(f"unknown user {uid!r}: see `meshpos users list`")
    return row


def _keep_an_admin(t: Terminal, row: dict[str, Any]) -> None:
    if (
        row["role"] == "admin"
        and row["active"]
        and _approvers(t.ledger.conn, "admin") == [row["user_id"]]
    ):
        raise InputError(
            f"{row['user_id']} is the store's only active admin: make another admin first"
        )


def set_role(t: Terminal, uid: str, role: str, user: str | None = None) -> Op:
    check_role(role)
    with t.transaction():
        row = _existing(t, uid)
        if row["role"] == role:
            raise InputError(f"{uid} is already a {role}")
        if role != "admin":
            _keep_an_admin(t, row)
        return _user_op(t, uid, {"role": role}, user)


def set_active(t: Terminal, uid: str, active: bool, user: str | None = None) -> Op:
    with t.transaction():
        row = _existing(t, uid)
        if bool(row["active"]) == active:
            raise InputError(f"{uid} is already {'active' if active else 'disabled'}")
        if not active:
            _keep_an_admin(t, row)
        return _user_op(t, uid, {"active": int(active)}, user)


def set_pin(t: Terminal, uid: str, pin: str, user: str | None = None) -> Op:
    """A new PIN: approved by the user themselves (signed in, or --approve with the old PIN) or
    by a manager. Sessions made with the old PIN stop approving."""
    check_pin(pin)
    _existing(t, uid)
    record = pin_record(pin, _salt())
    return _user_op(t, uid, record, user)


def set_policy(t: Terminal, key: str, text: str, user: str | None = None) -> Op:
    value = parse_policy_value(key, text)
    return t.append("setting.set", {"key": key, "value": value}, user)
