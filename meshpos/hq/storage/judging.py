"""The rulebook at HQ: the same `judge` every terminal runs (meshpos/domain/authority.py), over
HQ's tables, per store.

`HQPast` answers the rulebook's questions from a store's rows (`staff_log`, `rights_log`, the
certificates in `nodes`) plus the batch judged so far. `write_rulebook` stores what the fold of a
batch says about authority (the staff and escrow history, the ops without authority, the
resolutions) and keeps the store's conflicts view: HQ lists the `unauthorised:<origin>:<seq>`
conflicts of every store, derived by the same rule as at the store (`ledger.apply.conflict_row`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from meshpos.core.ops import Op, decode_body
from meshpos.domain.revocation import REVOKE_KIND
from meshpos.hq.storage.database import Record, Tx
from meshpos.ledger.apply import conflict_row
from meshpos.ledger.fold import UNAUTHORISED, Changes
from meshpos.ledger.judging import BatchPast, Held, unauthorised_detail

RULEBOOK_TABLES = ("staff_log", "rights_log", "unauthorised", "resolutions", "conflicts")


def _since_key(store: str) -> str:
    return f"staff_since:{store}"


def staff_since(tx: Tx, store: str) -> int | None:
    """HLC of the store's first bootstrap user, as HQ noted it from the ops it holds."""
    rows = tx.execute("SELECT value FROM hq_meta WHERE name = ?", (_since_key(store),))
    return int(rows[0][0]) if rows else None


def set_staff_since(tx: Tx, store: str, since: int | None) -> None:
    tx.execute("DELETE FROM hq_meta WHERE name = ?", (_since_key(store),))
    if since is not None:
        tx.execute("INSERT INTO hq_meta VALUES (?, ?)", (_since_key(store), str(since)))


class HQPast(BatchPast):
    """The rulebook's past of one store, over HQ's tables in transaction `tx`."""

    def __init__(self, tx: Tx, store: str) -> None:
        super().__init__()
        self.tx = tx
        self.store = store
        self._since: tuple[int | None] | None = None

    def stored_roles(self) -> dict[str, str]:
        rows = self.tx.execute("SELECT node_id, role FROM nodes WHERE store = ?", (self.store,))
        return {str(n): str(r) for n, r in rows}

    def stored_certs(self) -> dict[str, bytes]:
        rows = self.tx.execute("SELECT node_id, cert FROM nodes WHERE store = ?", (self.store,))
        return {str(n): bytes(c) for n, c in rows}

    def stored_revocations(self) -> list[Op]:
        rows = self.tx.execute(
            f"SELECT body, sig FROM ops WHERE store = ? AND kind = '{REVOKE_KIND}'", (self.store,)
        )
        return [decode_body(bytes(b), bytes(s)) for b, s in rows]

    def staff_since(self) -> int | None:
        if self._since is None:
            self._since = (staff_since(self.tx, self.store),)
        return self._since[0]

    def stored_user(self, user: str, before_hlc: int) -> list[tuple[str, Any]]:
        rows = self.tx.execute(
            "SELECT field, value FROM staff_log WHERE store = ? AND entity = 'user' AND key = ? "
            "AND field IN ('role', 'pin_key') AND hlc < ?",
            (self.store, user, before_hlc),
        )
        return [(str(f), json.loads(v)) for f, v in rows]

    def stored_settings(self) -> list[tuple[str, int, Any]]:
        rows = self.tx.execute(
            "SELECT key, hlc, value FROM staff_log WHERE store = ? AND entity = 'setting'",
            (self.store,),
        )
        return [(str(k), int(h), json.loads(v)) for k, h, v in rows]

    def stored_rights(self, customer: str, node: str, op: Op) -> int:
        rows = self.tx.execute(
            "SELECT CAST(COALESCE(SUM(delta), 0) AS BIGINT) FROM rights_log "
            "WHERE store = ? AND customer_id = ? AND node = ? AND ("
            "(origin = ? AND seq < ? AND (authority = 1 OR delta < 0)) OR "
            "(origin != ? AND hlc < ? AND authority = 1 AND delta > 0))",
            (self.store, customer, node, node, op.seq, node, op.hlc),
        )
        return int(rows[0][0])

    def prev_hlc(self, origin: str, seq: int) -> int | None:
        rows = self.tx.execute(
            "SELECT hlc FROM ops WHERE store = ? AND origin = ? AND seq = ?",
            (self.store, origin, seq),
        )
        return int(rows[0][0]) if rows else None

    def held_without_authority(self) -> list[Held]:
        rows = self.tx.execute(
            "SELECT o.body, o.sig, u.rule, u.detail FROM unauthorised u JOIN ops o "
            "ON o.store = u.store AND o.origin = u.origin AND o.seq = u.seq WHERE u.store = ? "
            "ORDER BY u.origin, u.seq",
            (self.store,),
        )
        return [(decode_body(bytes(b), bytes(s)), str(r), str(m)) for b, s, r, m in rows]

    def forget(self, ops: Sequence[Op], reworded: Sequence[Held]) -> None:
        """Drop the `unauthorised` rows and authority-0 debits of ops that regained authority;
        give the others their new reason."""
        self.tx.executemany(
            "UPDATE unauthorised SET rule = ?, detail = ? WHERE store = ? AND origin = ? "
            "AND seq = ?",
            [(rule, msg, self.store, op.origin, op.seq) for op, rule, msg in reworded],
        )
        keys = [(self.store, o.origin, o.seq) for o in ops]
        self.tx.executemany(
            "DELETE FROM unauthorised WHERE store = ? AND origin = ? AND seq = ?", keys
        )
        self.tx.executemany(
            "DELETE FROM rights_log WHERE store = ? AND origin = ? AND seq = ? AND authority = 0",
            keys,
        )


def write_rulebook(tx: Tx, store: str, ch: Changes) -> None:
    """Store a batch's staff and escrow history, its ops without authority and resolutions, and
    re-derive the conflicts they touch."""
    for table in ("staff_log", "rights_log", "unauthorised", "resolutions"):
        rows = ch.rows.get(table)
        if rows:
            tx.insert_new(table, (), [(store, *r) for r in rows])
    # Only this kind is HQ's to re-derive: picked out of a batch's thousands before sorting.
    for subject in sorted(subject for kind, subject in ch.touched if kind == UNAUTHORISED):
        _evaluate(tx, store, subject)


def _evaluate(tx: Tx, store: str, subject: str) -> None:
    cid = f"{UNAUTHORISED}:{subject}"
    latest = tx.execute(
        "SELECT origin, seq, ack_level, note, actor FROM resolutions WHERE store = ? "
        "AND conflict_id = ? ORDER BY hlc DESC, origin DESC, seq DESC LIMIT 1",
        (store, cid),
    )
    origin, _, seq = subject.rpartition(":")
    found = None
    if not latest or latest[0][2] is None:
        rows = tx.execute(
            "SELECT origin, seq, hlc, kind, actor, terminal, rule, detail FROM unauthorised "
            "WHERE store = ? AND origin = ? AND seq = ?",
            (store, origin, int(seq) if seq.isdigit() else -1),
        )
        found = (unauthorised_detail(rows[0]), [subject]) if rows else None
    row = conflict_row(found, latest[0] if latest else None)
    tx.execute("DELETE FROM conflicts WHERE store = ? AND conflict_id = ?", (store, cid))
    if row is not None:
        tx.execute(
            "INSERT INTO conflicts VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (store, cid, UNAUTHORISED, subject, *row),
        )


def conflicts(tx: Tx, store: str | None, status: str | None = "open") -> list[Record]:
    """A store's conflicts (every store's without `store`), detail and ops decoded, with the
    name of the node that signed the op."""
    cond, params = "", list[str]()
    for column, value in (("c.store", store), ("c.status", status)):
        if value is not None:
            cond += (" AND " if cond else " WHERE ") + f"{column} = ?"
            params.append(value)
    rows = tx.select(
        "SELECT c.store, c.conflict_id, c.kind, c.subject, c.status, c.detail, c.ops, "
        "c.resolved_by FROM conflicts c" + cond + " ORDER BY c.store, c.conflict_id",
        params,
    )
    names = {
        (str(s), str(n)): str(name)
        for s, n, name in tx.execute("SELECT store, node_id, name FROM nodes")
    }
    for row in rows:
        row["detail"] = json.loads(row["detail"])
        row["ops"] = json.loads(row["ops"])
        signer = row["detail"].get("signed_by")
        if signer is not None:
            row["detail"]["node"] = names.get((row["store"], signer), "")
    return rows
