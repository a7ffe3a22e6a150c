"""Counts the daemon's metrics read from a node's ledger: ops in the log by kind (counted from
the last rowid seen, so a scrape never re-reads the whole log) and open conflicts by kind."""

from __future__ import annotations

from collections import Counter

from meshpos.ledger.store import Ledger

OpKinds = Counter[tuple[str, bool]]
"""Ops per (kind, made by this node)."""


def op_kinds_since(ledger: Ledger, node_id: str, after_rowid: int) -> tuple[OpKinds, int]:
    """Ops stored after `after_rowid`, per kind and whether this node made them; and the last
    rowid counted (ops are only ever appended, so rowids only grow)."""
    counts: OpKinds = Counter()
    last = after_rowid
    for kind, own, n, top in ledger.conn.execute(
        "SELECT kind, origin = ?, COUNT(*), MAX(rowid) FROM ops WHERE rowid > ? "
        "GROUP BY kind, origin = ?",
        (node_id, after_rowid, node_id),
    ):
        counts[(str(kind), bool(own))] += int(n)
        last = max(last, int(top))
    return counts, last


def open_conflicts(ledger: Ledger) -> dict[str, int]:
    """Open conflicts per kind."""
    return {
        str(kind): int(n)
        for kind, n in ledger.conn.execute(
            "SELECT kind, COUNT(*) FROM conflicts WHERE status = 'open' GROUP BY kind"
        )
    }
