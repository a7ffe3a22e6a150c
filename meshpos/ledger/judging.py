"""Folding under the rulebook: each op of a batch is judged (meshpos/domain/authority.py) before
it is folded, and only ops with authority change the views.

`BatchPast` answers the rulebook's questions from what a replica stored plus the ops of the
batch judged so far (a user op and the refund it approves may arrive together); a replica
implements the stored half: `NodePast` here over a node's tables, `meshpos.hq.storage.judging`
over HQ's. `judge_batch` turns a batch into one `Changes`: the fold of the ops with authority, and
for the others an `unauthorised` row, their own escrow debits (`rights_log`, authority 0: a
counter's spends count against it with or without authority, which keeps the rules monotone) and
the conflict to open. `Rejudge` is the fixpoint every replica runs after a batch: ops without
authority are judged again, and those that now have it are folded.
"""

from __future__ import annotations

import json
import sqlite3
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from meshpos.core.errors import RemoteError
from meshpos.core.ops import Op, decode_body, unpack
from meshpos.domain.authority import RULES, Violation, is_bootstrap, judge
from meshpos.domain.revocation import REVOKE_KIND, Revoked, points, successor
from meshpos.ledger import body_codec
from meshpos.ledger.fold import RULES as RULES_BY_KIND
from meshpos.ledger.fold import UNAUTHORISED, Changes, fold

MAX_SEQ = 2**62  # past any op of a chain
RightsRow = tuple[str, str, str, int, int, int, int]
"""A `rights_log` row: (customer, node, origin, seq, hlc, delta, authority)."""


def counts_before(origin: str, seq: int, hlc: int, delta: int, authority: int, op: Op) -> bool:
    """Whether a move at `op`'s origin counts in what it held before `op`: its own earlier
    moves by seq (credits with authority, every debit), others' credits with authority stamped
    before it. The SQL twin of this is in each replica's `stored_rights`."""
    if origin == op.origin:
        return seq < op.seq and (authority == 1 or delta < 0)
    return hlc < op.hlc and authority == 1 and delta > 0


class BatchPast(ABC):
    """The rulebook's `Past` over a replica's stored views plus the batch judged so far."""

    def __init__(self) -> None:
        self._roles: dict[str, str] | None = None
        self._settings: dict[str, list[tuple[int, Any]]] | None = None
        self._users: dict[str, list[tuple[int, str, Any]]] = {}
        self._rights: dict[tuple[str, str], list[RightsRow]] = {}
        self._certs: dict[str, bytes] | None = None
        self._revoked: dict[str, Revoked] | None = None

    # -- what the replica stored ----------------------------------------------------------------

    @abstractmethod
    def stored_roles(self) -> dict[str, str]:
        """Role by node id, from the certificates the replica holds."""

    @abstractmethod
    def stored_certs(self) -> dict[str, bytes]:
        """Certificate by node id, as the replica holds them."""

    @abstractmethod
    def stored_revocations(self) -> list[Op]:
        """Every `node.revoke` op stored (a batch's ops are stored before it is judged)."""

    @abstractmethod
    def staff_since(self) -> int | None: ...

    @abstractmethod
    def stored_user(self, user: str, before_hlc: int) -> list[tuple[str, Any]]:
        """(field, value) of the user's `role` and `pin_key` writes with authority before."""

    @abstractmethod
    def stored_settings(self) -> list[tuple[str, int, Any]]:
        """(key, hlc, value) of every rule-setting write with authority."""

    @abstractmethod
    def stored_rights(self, customer: str, node: str, op: Op) -> int:
        """`rights_before` over the stored `rights_log` (see `counts_before`)."""

    @abstractmethod
    def prev_hlc(self, origin: str, seq: int) -> int | None:
        """The HLC of the origin's op `seq` (a batch's ops are stored before it is judged)."""

    # -- the batch ------------------------------------------------------------------------------

    def absorb(self, staff: Iterable[tuple[Any, ...]], rights: Iterable[tuple[Any, ...]]) -> None:
        """Count the `staff_log` and `rights_log` rows of an op just judged (all of them with
        authority; only its own debits without)."""
        for row in staff:
            _, _, hlc, entity, key, name, value = row
            if entity == "user":
                self._users.setdefault(key, []).append((hlc, name, json.loads(value)))
            else:
                self.settings_of(key).append((hlc, json.loads(value)))
        for r in rights:
            self._rights.setdefault((r[0], r[1]), []).append(r)

    def settings_of(self, key: str) -> list[tuple[int, Any]]:
        if self._settings is None:
            self._settings = {}
            for k, hlc, value in self.stored_settings():
                self._settings.setdefault(k, []).append((hlc, value))
        return self._settings.setdefault(key, [])

    # -- Past -----------------------------------------------------------------------------------

    def node_role(self, node_id: str) -> str | None:
        if self._roles is None:
            self._roles = self.stored_roles()
        return self._roles.get(node_id)

    def node_cert(self, node_id: str) -> bytes | None:
        if self._certs is None:
            self._certs = self.stored_certs()
        return self._certs.get(node_id)

    def revoked(self, node_id: str) -> Revoked | None:
        return self.revocations().get(node_id)

    def revocations(self) -> dict[str, Revoked]:
        """The revocation in force for each revoked node (meshpos/domain/revocation.py)."""
        if self._revoked is None:
            self._revoked = points(self.stored_revocations(), self.node_role, self.node_cert)
        return self._revoked

    def user_history(self, user: str, before_hlc: int) -> tuple[set[str], set[str]]:
        roles: set[str] = set()
        keys: set[str] = set()
        batch = [(n, v) for hlc, n, v in self._users.get(user, ()) if hlc < before_hlc]
        for name, value in self.stored_user(user, before_hlc) + batch:
            if name == "role" and isinstance(value, str):
                roles.add(value)
            elif name == "pin_key" and isinstance(value, str):
                keys.add(value)
        return roles, keys

    def setting_history(self, key: str, before_hlc: int) -> list[Any]:
        return [value for hlc, value in self.settings_of(key) if hlc < before_hlc]

    def rights_before(self, customer: str, node: str, op: Op) -> int:
        return self._held(customer, node, op) + self._inherited(customer, node, op)

    def _held(self, customer: str, node: str, op: Op) -> int:
        batch = sum(
            r[5]
            for r in self._rights.get((customer, node), ())
            if counts_before(r[2], r[3], r[4], r[5], r[6], op)
        )
        return self.stored_rights(customer, node, op) + batch

    def _inherited(self, customer: str, node: str, op: Op) -> int:
        """What `node` holds of nodes retired into it before `op` (meshpos/domain/revocation.py):
        each one's own moves, all of them (a replica refolds when more arrive: they can lower
        it), and others' credits to it stamped before `op`."""
        total = 0
        for old, rev in self.revocations().items():
            if rev.to != node or rev.hlc >= op.hlc or old == node:
                continue
            end = op.standing_for(old, MAX_SEQ)
            total += self._held(customer, old, end) + self._inherited(customer, old, end)
        return total


def refusal(op: Op, violation: Violation) -> Changes:
    """What an op without authority leaves in the views: its `unauthorised` row, its own escrow
    debits (authority 0) and the conflict subject to open."""
    ch = Changes()
    terminal = op.payload.get("terminal")
    ch.add(
        "unauthorised",
        (
            op.origin,
            op.seq,
            op.hlc,
            op.kind,
            op.user,
            terminal if isinstance(terminal, str) else "",
            violation.rule,
            violation.message,
        ),
    )
    for r in fold([op]).rows.get("rights_log", ()):
        if r[1] == op.origin and r[5] < 0:
            ch.add("rights_log", (*r[:6], 0))
    ch.touched.add((UNAUTHORISED, f"{op.origin}:{op.seq}"))
    return ch


def reassign(ch: Changes, past: BatchPast) -> Changes:
    """The `rights` view credits a retired node's balances to its successor (its `rights_log`
    rows stay its own: they are what its own ops were judged by)."""
    revoked = past.revocations()
    if any(rev.to for rev in revoked.values()):
        moved: Counter[tuple[str, str]] = Counter()
        for (customer, node), delta in ch.rights.items():
            moved[(customer, successor(revoked, node))] += delta
        ch.rights = moved
    return ch


def judge_batch(ops: Iterable[Op], past: BatchPast) -> tuple[Changes, list[Op]]:
    """The views' changes of a batch under the rulebook, and the ops that had authority. A
    malformed payload raises EncodingError (from the fold) before any verdict counts. Ops with
    authority fold straight into the batch's changes (the hot path: a plain sale pays a verdict
    and nothing else)."""
    out = Changes()
    allowed: list[Op] = []
    rows = out.rows
    staff_log: list[tuple[Any, ...]] = rows.setdefault("staff_log", [])
    rights_log: list[tuple[Any, ...]] = rows.setdefault("rights_log", [])
    for op in ops:
        verdict = judge(op, past)
        if verdict is None:
            staff, rights = len(staff_log), len(rights_log)
            rule = RULES_BY_KIND.get(op.kind)
            if rule is None:
                fold([op], out)  # raises: unknown kind
            else:
                rule(out, op)
            allowed.append(op)
            if len(staff_log) != staff or len(rights_log) != rights:
                past.absorb(staff_log[staff:], rights_log[rights:])
        else:
            mine = refusal(op, verdict)
            out.merge(mine)
            past.absorb((), mine.rows.get("rights_log", ()))
    for table in ("staff_log", "rights_log"):
        if not rows[table]:
            del rows[table]
    return reassign(out, past), allowed


Held = tuple[Op, str, str]
"""An op held without authority, with the rule and reason it was last given."""


def rejudge(held: Sequence[Held], past: BatchPast) -> tuple[Changes, list[Op], list[Held]]:
    """Judge again the ops held without authority: the fold of those that have it now (their
    conflicts re-checked), them, and those still without whose reason changed (a verdict's
    words must be a function of the op set too: "not a user of the store" becomes "was never
    a supervisor" once the user op arrives). Each is judged against the same stored past: with
    monotone rules a verdict earned on less is still right on more, and the next round sees
    what this one folded."""
    flipped: list[Op] = []
    reworded: list[Held] = []
    for op, rule, message in held:
        verdict = judge(op, past)
        if verdict is None:
            flipped.append(op)
        elif (verdict.rule, verdict.message) != (rule, message):
            reworded.append((op, verdict.rule, verdict.message))
    ch = reassign(fold(flipped), past)
    ch.touched |= {(UNAUTHORISED, f"{op.origin}:{op.seq}") for op in flipped}
    ch.touched |= {(UNAUTHORISED, f"{op.origin}:{op.seq}") for op, _, _ in reworded}
    return ch, flipped, reworded


def may_give_authority(ch: Changes) -> bool:
    """Whether a batch folded something the rulebook reads: staff or rule settings, or escrow
    credits. Only then can an op held without authority have it now (or a node's certificate
    arrived, which the replica knows itself)."""
    return bool(ch.rows.get("staff_log")) or any(
        r[5] > 0 and r[6] == 1 for r in ch.rows.get("rights_log", ())
    )


def unauthorised_detail(row: Sequence[Any]) -> dict[str, Any]:
    """A conflict's detail from an `unauthorised` row (the node's name is added where shown)."""
    origin, seq, _hlc, kind, user, terminal, rule, message = row
    return {
        "op": f"{origin}:{seq}",
        "kind": kind,
        "signed_by": origin,
        "terminal": terminal,
        "user": user,
        "rule": rule,
        "rule_text": RULES.get(rule, rule),
        "reason": message,
    }


def bootstrap_start(ops: Iterable[Op], prev_hlc: Callable[[str, int], int | None]) -> int | None:
    """The earliest HLC among bootstrap user ops whose origin's clock did not run back before
    them (`prev_hlc(origin, seq)` is the HLC of the origin's op `seq`): the store's staff start
    as these ops tell it."""
    found = [
        op.hlc
        for op in ops
        if is_bootstrap(op) and ((p := prev_hlc(op.origin, op.seq - 1)) is None or p <= op.hlc)
    ]
    return min(found, default=None)


# -- a node's ledger --------------------------------------------------------------------------------


def node_roles(conn: sqlite3.Connection) -> dict[str, str]:
    """Role by node id from the certificates in a node's `nodes` table (unchecked here: a node's
    record is admitted against the store key before it is stored)."""
    out: dict[str, str] = {}
    for node_id, cert in conn.execute("SELECT node_id, cert FROM nodes WHERE cert IS NOT NULL"):
        try:
            fields = unpack(unpack(cert, "certificate")[0], "certificate")
            if isinstance(fields, list) and len(fields) == 9 and isinstance(fields[7], str):
                out[str(node_id)] = fields[7]
        except (RemoteError, IndexError, KeyError, TypeError):
            continue
    return out


class NodePast(BatchPast):
    """The rulebook's past over a node's views in schema `s` (`main`, or `verify`'s scratch)."""

    def __init__(self, conn: sqlite3.Connection, s: str = "main") -> None:
        super().__init__()
        self.conn = conn
        self.s = s
        self._since: tuple[int | None] | None = None

    def stored_roles(self) -> dict[str, str]:
        return node_roles(self.conn)

    def stored_certs(self) -> dict[str, bytes]:
        rows = self.conn.execute("SELECT node_id, cert FROM nodes WHERE cert IS NOT NULL")
        return {str(n): bytes(c) for n, c in rows}

    def stored_revocations(self) -> list[Op]:
        rows = self.conn.execute(
            f"SELECT origin, seq, body, sig FROM ops WHERE kind = '{REVOKE_KIND}'"
        )
        return [decode_body(body_codec.restore(b, o, q, self.conn), s) for o, q, b, s in rows]

    def staff_since(self) -> int | None:
        if self._since is None:
            row = self.conn.execute("SELECT value FROM meta WHERE key = 'staff_since'").fetchone()
            self._since = (int(row[0]) if row else None,)
        return self._since[0]

    def stored_user(self, user: str, before_hlc: int) -> list[tuple[str, Any]]:
        return [
            (str(f), json.loads(v))
            for f, v in self.conn.execute(
                f"SELECT field, value FROM {self.s}.staff_log WHERE entity = 'user' AND key = ? "
                "AND field IN ('role', 'pin_key') AND hlc < ?",
                (user, before_hlc),
            )
        ]

    def stored_settings(self) -> list[tuple[str, int, Any]]:
        return [
            (str(k), int(h), json.loads(v))
            for k, h, v in self.conn.execute(
                f"SELECT key, hlc, value FROM {self.s}.staff_log WHERE entity = 'setting'"
            )
        ]

    def stored_rights(self, customer: str, node: str, op: Op) -> int:
        row = self.conn.execute(
            f"SELECT COALESCE(SUM(delta), 0) FROM {self.s}.rights_log "
            "WHERE customer_id = ? AND node = ? AND ("
            "(origin = ? AND seq < ? AND (authority = 1 OR delta < 0)) OR "
            "(origin != ? AND hlc < ? AND authority = 1 AND delta > 0))",
            (customer, node, node, op.seq, node, op.hlc),
        ).fetchone()
        return int(row[0])

    def prev_hlc(self, origin: str, seq: int) -> int | None:
        row = self.conn.execute(
            "SELECT hlc FROM ops WHERE origin = ? AND seq = ?", (origin, seq)
        ).fetchone()
        return int(row[0]) if row else None

    def held_without_authority(self) -> list[Held]:
        rows = self.conn.execute(
            f"SELECT o.origin, o.seq, o.body, o.sig, u.rule, u.detail FROM {self.s}.unauthorised u "
            "JOIN ops o ON o.origin = u.origin AND o.seq = u.seq ORDER BY u.origin, u.seq"
        ).fetchall()
        return [
            (decode_body(body_codec.restore(b, o, q, self.conn), s), str(rule), str(msg))
            for o, q, b, s, rule, msg in rows
        ]

    def forget(self, ops: Sequence[Op], reworded: Sequence[Held]) -> None:
        """Drop the `unauthorised` rows and authority-0 debits of ops that regained authority;
        give the others their new reason."""
        self.conn.executemany(
            f"UPDATE {self.s}.unauthorised SET rule = ?, detail = ? WHERE origin = ? AND seq = ?",
            [(rule, msg, op.origin, op.seq) for op, rule, msg in reworded],
        )
        keys = [(o.origin, o.seq) for o in ops]
        self.conn.executemany(
            f"DELETE FROM {self.s}.unauthorised WHERE origin = ? AND seq = ?", keys
        )
        self.conn.executemany(
            f"DELETE FROM {self.s}.rights_log WHERE origin = ? AND seq = ? AND authority = 0", keys
        )
