"""Authority: the store's rules on who may make an op, checked on a peer's ops before they apply.

Signatures and hash chains prove who made an op; these rules say whether that node or person was
allowed to. A batch holding an op no honest till could have made is refused whole (RemoteError,
nothing applied):

- `payment.result` and `card.float` ops not signed by a node whose certificate has role `hq`: a
  forged approval would release card float, a forged mint create it;
- an approval whose signatures do not hold for the op it sits in, by a user this replica has
  never known with that PIN key, or by one who never held a role that may approve it; or a
  privileged op with no approval made well after the store had staff.

Staff rules judge against the whole history of users and staff settings (ever held, before the
op's HLC), not against the current view, so a decision can only change from "refuse" to "accept"
as a replica learns more: a refused batch is retried and accepted once the user ops it needs
arrive, and an op approved honestly before a concurrent demotion is never refused (which would
stall every later op of its terminal). User ops inside the same batch count, so a bundle carrying
a new manager and the refund they approved is applied in one go. See docs/decisions.md, "Staff
and roles".

`store_rules` is the one entry point; every `Ledger` applies it unless given another. The rules
read only ledger tables, and stay together here so a later issue can move them into the fold.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from meshpos.core.clock import wall_of
from meshpos.core.errors import RemoteError, SignatureError
from meshpos.core.ops import Op, unpack
from meshpos.domain.staff import (
    RANK,
    Need,
    Policy,
    check_approval,
    lenient_policy,
    read_approval,
    required,
    roles_from,
)
from meshpos.ledger.staff import has_users

Authority = Callable[[sqlite3.Connection, Sequence[Op]], None]
"""Rules a peer's ops must pass before they apply; raises RemoteError to refuse the batch."""

HQ_ONLY_KINDS = frozenset({"payment.result", "card.float", "transfer.expect"})


def store_rules(conn: sqlite3.Connection, ops: Sequence[Op]) -> None:
    """The store's rules, applied by every replica to every batch of foreign ops."""
    hq_only = [o for o in ops if o.kind in HQ_ONLY_KINDS]
    known = _History(conn, ops)
    staffed = any(o.kind == "user.upsert" for o in ops) or has_users(conn)
    policy = known.policy() if staffed else None
    needs = [
        (op, need)
        for op in ops
        if policy is not None and (need := required(op.kind, op.payload, policy))
    ]
    if not hq_only and not needs:
        return
    hq = hq_origins(conn)
    if policy is not None:
        _check_approvals(conn, ops, known, policy, [(o, n) for o, n in needs if o.origin not in hq])
    for op in hq_only:
        if op.origin not in hq:
            raise RemoteError(
                f"op {op.origin}:{op.seq} ({op.kind}) is not signed by HQ (no certificate with "
                "role hq): refused"
            )


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


def _check_approvals(
    conn: sqlite3.Connection,
    batch: Sequence[Op],
    known: _History,
    policy: Policy,
    needs: Sequence[tuple[Op, Need]],
) -> None:
    """Each op in `needs` carries an approval its approver could give (HQ's ops are left out:
    HQ answers for its own staff)."""
    since: int | None = None
    by_id = {o.id: o for o in batch}
    for op, need in needs:
        where = f"op {op.origin}:{op.seq} ({need.what})"
        raw = op.payload.get("approval")
        if raw is None:
            since = known.staff_since() if since is None else since
            grace = policy.bootstrap_grace_minutes * 60_000
            if since is not None and wall_of(op.hlc) < wall_of(since) + grace:
                prev = _hlc_of(conn, by_id, op.origin, op.seq - 1)
                if prev is None or prev <= op.hlc:
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


def _hlc_of(
    conn: sqlite3.Connection, batch: Mapping[tuple[str, int], Op], origin: str, seq: int
) -> int | None:
    """HLC of op `origin:seq`, from the batch or the log; None if neither holds it."""
    op = batch.get((origin, seq))
    if op is not None:
        return op.hlc
    row = conn.execute("SELECT hlc FROM ops WHERE origin = ? AND seq = ?", (origin, seq)).fetchone()
    return int(row[0]) if row else None


class _History:
    """Users and staff settings as a replica knows them: the `staff_log` view plus the batch."""

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
