"""The users view and this terminal's PIN lockouts: what staff sign-in and approvals read and write.

Users are folded from `user.upsert` ops (see fold.py); lockouts are node-local (`staff_lockout`):
wrong PINs count per terminal and never replicate. The same table counts wrong PINs per device of
the web till, under the key `@ADDRESS` (a user id cannot start with `@`), so they outlive a restart
and `meshpos users unlock` clears them too.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

from meshpos.ledger.records import WriteTx

USER_COLUMNS = ("user_id", "name", "role", "active", "pin_salt", "pin_key")


def has_users(conn: sqlite3.Connection) -> bool:
    return conn.execute("SELECT 1 FROM users LIMIT 1").fetchone() is not None


class StaffStore:
    """Reads of the users view and the lockout table, over the ledger's connection."""

    def __init__(self, conn: sqlite3.Connection, write: WriteTx) -> None:
        self.conn = conn
        self._write = write

    def has_users(self) -> bool:
        """Whether the store has staff at all (without, nothing is checked: bootstrap)."""
        return has_users(self.conn)

    def user(self, uid: object) -> dict[str, Any] | None:
        """One user's row (`USER_COLUMNS`), or None for an unknown id or one that is not text."""
        if not isinstance(uid, str):
            return None
        row = self.conn.execute(
            f"SELECT {', '.join(USER_COLUMNS)} FROM users WHERE user_id = ?", (uid,)
        ).fetchone()
        return dict(zip(USER_COLUMNS, row, strict=True)) if row else None

    def users(self, now_ms: int) -> list[dict[str, Any]]:
        """Users as a manager sees them; `locked_here` is this terminal's lockout."""
        return [
            {
                "user_id": uid,
                "name": name,
                "role": role,
                "active": bool(active),
                "locked_here": bool(until and until > now_ms),
            }
            for uid, name, role, active, until in self.conn.execute(
                "SELECT u.user_id, u.name, u.role, u.active, l.locked_until_ms FROM users u "
                "LEFT JOIN staff_lockout l ON l.user_id = u.user_id ORDER BY u.user_id"
            )
        ]

    def active_with_role(self, roles: Sequence[str]) -> list[str]:
        """Ids of active users holding one of `roles`, sorted."""
        marks = ",".join("?" * len(roles))
        return [
            r[0]
            for r in self.conn.execute(
                f"SELECT user_id FROM users WHERE active = 1 AND role IN ({marks}) "
                "ORDER BY user_id",
                tuple(roles),
            )
        ]

    def lockout(self, uid: str) -> tuple[int, int]:
        """(wrong PINs counted, locked until ms) for `uid` at this terminal; (0, 0) if none."""
        row = self.conn.execute(
            "SELECT failures, locked_until_ms FROM staff_lockout WHERE user_id = ?", (uid,)
        ).fetchone()
        return (int(row[0]), int(row[1])) if row else (0, 0)

    def set_lockout(self, uid: str, failures: int, until_ms: int) -> None:
        with self._write():
            self.conn.execute(
                "INSERT OR REPLACE INTO staff_lockout VALUES (?, ?, ?)", (uid, failures, until_ms)
            )

    def clear_lockout(self, uid: str) -> bool:
        """Forget `uid`'s (or a `device_key`'s) wrong PINs here; whether there were any."""
        with self._write():
            cur = self.conn.execute("DELETE FROM staff_lockout WHERE user_id = ?", (uid,))
        return cur.rowcount > 0

    def clear_devices(self) -> int:
        """Forget every device's wrong PINs here; how many devices had some."""
        with self._write():
            cur = self.conn.execute("DELETE FROM staff_lockout WHERE user_id LIKE '@%'")
        return cur.rowcount


def device_key(address: str) -> str:
    """The `staff_lockout` key of a web till device (its client address)."""
    return f"@{address}"
