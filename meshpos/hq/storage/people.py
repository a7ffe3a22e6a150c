"""HQ's people: the accounts that sign in to the dashboard, and their sessions.

Only rows live here; the rules (roles, password hashing, lockouts, expiry) are meshpos.hq.accounts.
Sessions are rows too, keyed by a hash of the cookie's token (a copied database holds no usable
session), so every HQ process sharing the database honours a sign-in or sign-out at once.
"""

from __future__ import annotations

from dataclasses import dataclass

from meshpos.core.errors import LocalError
from meshpos.hq.storage.database import Database, Row, Tx

USER_COLUMNS = (
    "user_id, name, role, pw_hash, disabled, failures, locked_until_ms, created_ms, changed_ms, "
    "signed_in_ms"
)


@dataclass(frozen=True)
class PersonRow:
    user_id: str
    name: str
    role: str
    pw_hash: str
    disabled: bool
    failures: int
    locked_until_ms: int
    created_ms: int
    changed_ms: int
    signed_in_ms: int

    @classmethod
    def of(cls, row: Row) -> PersonRow:
        uid, name, role, pw, disabled, failures, locked, created, changed, signed = row
        return cls(
            str(uid), str(name), str(role), str(pw), bool(disabled), int(failures), int(locked),
            int(created), int(changed), int(signed),
        )  # fmt: skip


@dataclass(frozen=True)
class SessionRow:
    token_hash: str
    user_id: str
    csrf: str
    created_ms: int
    seen_ms: int
    address: str


class PeopleStore:
    """Rows of `hq_users` and `hq_sessions`."""

    def __init__(self, db: Database) -> None:
        self.db = db

    # -- people ---------------------------------------------------------------------------------

    def add(self, row: PersonRow) -> None:
        def fn(tx: Tx) -> None:
            if tx.execute("SELECT 1 FROM hq_users WHERE user_id = ?", (row.user_id,)):
                raise LocalError(f"HQ user {row.user_id} already exists")
            tx.execute(
                f"INSERT INTO hq_users ({USER_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    row.user_id, row.name, row.role, row.pw_hash, int(row.disabled), row.failures,
                    row.locked_until_ms, row.created_ms, row.changed_ms, row.signed_in_ms,
                ),
            )  # fmt: skip

        self.db.run(fn)

    def get(self, user_id: str, tx: Tx | None = None) -> PersonRow | None:
        def fn(t: Tx) -> PersonRow | None:
            rows = t.execute(f"SELECT {USER_COLUMNS} FROM hq_users WHERE user_id = ?", (user_id,))
            return PersonRow.of(rows[0]) if rows else None

        return fn(tx) if tx is not None else self.db.run(fn, write=False)

    def all(self) -> list[PersonRow]:
        rows = self.db.query(f"SELECT {USER_COLUMNS} FROM hq_users ORDER BY user_id")
        return [PersonRow.of(r) for r in rows]

    def active_admins(self, tx: Tx) -> list[str]:
        rows = tx.execute(
            "SELECT user_id FROM hq_users WHERE role = 'admin' AND disabled = 0 ORDER BY user_id"
        )
        return [str(u) for (u,) in rows]

    def update(self, tx: Tx, user_id: str, **fields: str | int) -> None:
        """Set some columns of one person (names are this module's, never a caller's input)."""
        sets = ", ".join(f"{name} = ?" for name in fields)
        tx.execute(f"UPDATE hq_users SET {sets} WHERE user_id = ?", (*fields.values(), user_id))

    # -- sessions -------------------------------------------------------------------------------

    def add_session(self, tx: Tx, row: SessionRow) -> None:
        tx.execute(
            "INSERT INTO hq_sessions (token_hash, user_id, csrf, created_ms, seen_ms, address) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (row.token_hash, row.user_id, row.csrf, row.created_ms, row.seen_ms, row.address),
        )

    def session(self, token_hash: str) -> tuple[SessionRow, PersonRow] | None:
        rows = self.db.query(
            "SELECT s.token_hash, s.user_id, s.csrf, s.created_ms, s.seen_ms, s.address, "
            f"{', '.join('u.' + c for c in USER_COLUMNS.split(', '))} "
            "FROM hq_sessions s JOIN hq_users u ON u.user_id = s.user_id WHERE s.token_hash = ?",
            (token_hash,),
        )
        if not rows:
            return None
        th, uid, csrf, created, seen, address, *person = rows[0]
        session = SessionRow(str(th), str(uid), str(csrf), int(created), int(seen), str(address))
        return session, PersonRow.of(tuple(person))

    def touch_session(self, token_hash: str, seen_ms: int) -> None:
        self.db.run(
            lambda tx: tx.execute(
                "UPDATE hq_sessions SET seen_ms = ? WHERE token_hash = ?", (seen_ms, token_hash)
            )
        )

    def end_session(self, token_hash: str) -> None:
        self.db.run(
            lambda tx: tx.execute("DELETE FROM hq_sessions WHERE token_hash = ?", (token_hash,))
        )

    def end_sessions(self, tx: Tx, user_id: str) -> None:
        tx.execute("DELETE FROM hq_sessions WHERE user_id = ?", (user_id,))

    def prune_sessions(self, tx: Tx, seen_before_ms: int, created_before_ms: int) -> None:
        tx.execute(
            "DELETE FROM hq_sessions WHERE seen_ms < ? OR created_ms < ?",
            (seen_before_ms, created_before_ms),
        )

    def sessions_of(self, user_id: str) -> int:
        rows = self.db.query("SELECT COUNT(*) FROM hq_sessions WHERE user_id = ?", (user_id,))
        return int(rows[0][0])
