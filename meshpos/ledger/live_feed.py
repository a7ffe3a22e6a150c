"""The reads behind the web till's live screens, so no SQL lives in meshpos/web.

`LiveFeed` is the change watcher's own read-only connection. It cannot share the worker's
`Ledger`: `PRAGMA data_version` moves only for commits made by *other* connections, and the
watcher must see the till's own sales as well as those of `meshpos sell` and the daemon. The
functions below take the `Ledger` the caller already holds (the web till's worker thread).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from meshpos.core.ops import Op
from meshpos.ledger.store import Ledger, open_connection


class LiveFeed:
    """A read-only connection that counts what changed; one per watcher thread."""

    def __init__(self, path: str, key: bytes | None = None) -> None:
        self._conn = open_connection(path, key)
        self._conn.execute("PRAGMA busy_timeout = 5000")
        self._conn.execute("PRAGMA query_only = 1")

    def close(self) -> None:
        self._conn.close()

    def data_version(self) -> int:
        """A number that changes whenever another connection commits to the database."""
        return int(self._conn.execute("PRAGMA data_version").fetchone()[0])

    def own_seq(self, node_id: str) -> int:
        """How many ops this node has made."""
        row = self._conn.execute("SELECT seq FROM vv WHERE origin = ?", (node_id,)).fetchone()
        return int(row[0]) if row else 0

    def acked_seq(self) -> int:
        """The highest of this node's ops a peer confirmed holding (0 before a daemon ever ran)."""
        return int(self._conn.execute("SELECT MAX(seq) FROM peer_acks").fetchone()[0] or 0)

    def pending(self) -> int:
        """Ops held back past a gap in their origin's chain."""
        return int(self._conn.execute("SELECT COUNT(*) FROM pending").fetchone()[0])

    def ops_after(self, wall_ms: int) -> int:
        """Ops in the log stamped after a wall time (HLCs pack wall ms above a 16-bit counter)."""
        sql = "SELECT COUNT(*) FROM ops WHERE hlc > ?"
        return int(self._conn.execute(sql, (wall_ms << 16,)).fetchone()[0])

    def oldest_after(self, node_id: str, seq: int) -> int:
        """Wall time of this node's first op after `seq` (0 if none): since when the ops no
        peer has confirmed have been held here alone."""
        row = self._conn.execute(
            "SELECT hlc FROM ops WHERE origin = ? AND seq > ? ORDER BY seq LIMIT 1",
            (node_id, seq),
        ).fetchone()
        return int(row[0]) >> 16 if row else 0

    def newest(self) -> int:
        """Wall time of the newest op held, whichever counter stamped it (0 if none)."""
        row = self._conn.execute("SELECT MAX(hlc) FROM ops").fetchone()
        return int(row[0] or 0) >> 16

    def print_trouble(self) -> tuple[int, str]:
        """Slips waiting for the printer, and the printer's last error when the first of them
        failed to print ((0, "") when nothing is stuck)."""
        rows = self._conn.execute(
            "SELECT last_error FROM print_jobs WHERE state IN ('waiting', 'printing', 'failed') "
            "ORDER BY id"
        ).fetchall()
        error = next((str(r[0]) for r in rows if r[0]), "")
        return (len(rows), error) if error else (0, "")


@dataclass(frozen=True)
class OriginSales:
    """What one counter rang, as far as this replica holds its ops."""

    sales: int
    returns: int  # returns and exchanges
    last_ms: int


def find_customers(ledger: Ledger, text: str, limit: int = 12) -> list[dict[str, Any]]:
    """Customers whose id is `text`, or whose phone or name contains it, with their points."""
    like = f"%{text}%"
    rows = ledger.conn.execute(
        "SELECT c.customer_id, c.name, c.phone, c.email, COALESCE(l.points, 0) "
        "FROM customers c LEFT JOIN loyalty l ON l.customer_id = c.customer_id "
        "WHERE c.customer_id = ? OR c.phone LIKE ? OR c.name LIKE ? ORDER BY c.name LIMIT ?",
        (text, like, like, limit),
    )
    return [
        {"customer_id": cid, "name": name, "phone": phone, "email": email, "points": int(points)}
        for cid, name, phone, email, points in rows
    ]


def sales_by_origin(ledger: Ledger) -> dict[str, OriginSales]:
    """Per counter: sales, returns and exchanges rung, and when it last rang one."""
    rows = ledger.conn.execute(
        "SELECT origin, COUNT(*) FILTER (WHERE kind = 'sale'), "
        "COUNT(*) FILTER (WHERE kind != 'sale'), MAX(ts_ms) FROM sales GROUP BY origin"
    )
    return {origin: OriginSales(int(s), int(r), int(last or 0)) for origin, s, r, last in rows}


def stock_moves(ledger: Ledger, skus: Sequence[str]) -> dict[str, dict[str, int]]:
    """Per SKU, the net stock each counter's ops moved (receipts +, sales -): stock is a sum of
    signed moves, so the columns add up to the total."""
    return ledger.views.stock_by_counter(skus) if skus else {}


def latest_ops(ledger: Ledger, origin: str, kind: str, limit: int) -> list[Op]:
    """The newest ops of one kind from one origin, newest first (e.g. this counter's Z reports)."""
    rows = ledger.conn.execute(
        "SELECT seq FROM ops WHERE origin = ? AND kind = ? ORDER BY seq DESC LIMIT ?",
        (origin, kind, limit),
    ).fetchall()
    return [op for (seq,) in rows if (op := ledger.get(origin, seq)) is not None]
