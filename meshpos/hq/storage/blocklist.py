"""HQ's card blocklist: cards (by their blocklist key, never the number) that no till may take.

HQ keeps the list and sends each change to every store it holds a certificate in as a
`setting.set` op, so a till refuses a listed card offline. A store enrolled later gets the whole
list with its first ops from HQ.
"""

from __future__ import annotations

from meshpos.core.ops import Op, Signer
from meshpos.hq.storage.database import Database, Record, Tx
from meshpos.hq.storage.log import OpLog, OpToSign


def _setting(store: str, key: str, reason: str, blocked: bool, since_ms: int) -> OpToSign:
    value = {"blocked": blocked, "reason": reason, "since_ms": since_ms}
    return (store, "setting.set", {"key": key, "value": value})


class Blocklist:
    def __init__(self, db: Database, log: OpLog) -> None:
        self.db = db
        self.log = log

    def record(self, tx: Tx, key: str, reason: str, blocked: bool, now_ms: int) -> list[OpToSign]:
        """Record a change in `tx`; returns the ops that tell every store of it."""
        tx.execute(
            "INSERT INTO blocklist VALUES (?, ?, ?, ?) ON CONFLICT (setting_key) DO UPDATE SET "
            "reason = excluded.reason, blocked = excluded.blocked, changed_ms = excluded.changed_ms",
            (key, reason, int(blocked), now_ms),
        )
        stores = [r[0] for r in tx.execute("SELECT store FROM stores WHERE hq_cert IS NOT NULL")]
        return [_setting(str(s), key, reason, blocked, now_ms) for s in sorted(stores)]

    def change(self, signer: Signer, key: str, reason: str, blocked: bool, now_ms: int) -> list[Op]:
        """Block (or unblock) a card at HQ and in every store, in one transaction."""

        def fn(tx: Tx) -> list[Op]:
            items = self.record(tx, key, reason, blocked, now_ms)
            return self.log.emit_in(tx, signer, items, now_ms, "hq")

        return self.db.run(fn)

    def entries(self) -> list[Record]:
        return self.db.select(
            "SELECT setting_key, reason, blocked, changed_ms FROM blocklist ORDER BY setting_key"
        )

    def is_blocked(self, key: str) -> bool:
        rows = self.db.query("SELECT blocked FROM blocklist WHERE setting_key = ?", (key,))
        return bool(rows and rows[0][0])

    def settings_for(self, store: str) -> list[OpToSign]:
        """The whole blocklist as setting ops for one store (a store enrolled after entries)."""
        return [
            _setting(store, str(e["setting_key"]), str(e["reason"]), bool(e["blocked"]),
                     int(e["changed_ms"]))
            for e in self.entries()
        ]  # fmt: skip
