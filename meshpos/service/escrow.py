"""Loyalty escrow across processes: a till asks its peers for redemption rights through the daemon.

The rule itself is in the fold (rights per customer and node, moved only by the holder's
`escrow.transfer` op) and in `Terminal.sell` (a redemption beyond this node's rights raises
`EscrowShortfall`). This module is the plumbing: a selling process writes an ask into the node's
database, the daemon sends it to every reachable peer as a sync Request, a peer that holds rights
answers with a transfer op, which replicates back; the seller waits (bounded) and tries again.
"""

from __future__ import annotations

import time
from typing import Any

from meshpos.core.errors import RemoteError
from meshpos.domain.escrow import NEED as NEED
from meshpos.service.terminal import EscrowShortfall, SaleResult, Terminal

ASKS_DDL = """
CREATE TABLE IF NOT EXISTS escrow_asks (
    id          INTEGER PRIMARY KEY,
    customer_id TEXT NOT NULL,
    points      INTEGER NOT NULL,
    at_ms       INTEGER NOT NULL,
    sent        INTEGER NOT NULL DEFAULT 0
)
"""


def ask(t: Terminal, customer_id: str, points: int) -> None:
    with t.ledger.write():
        t.ledger.conn.execute(ASKS_DDL)
        t.ledger.conn.execute(
            "INSERT INTO escrow_asks (customer_id, points, at_ms) VALUES (?, ?, ?)",
            (customer_id, points, t.now_ms()),
        )


def take_unsent(t: Terminal) -> list[tuple[str, int]]:
    """For the daemon: asks not yet sent to peers (marked sent as they are taken)."""
    with t.ledger.write():
        t.ledger.conn.execute(ASKS_DDL)
        rows = t.ledger.conn.execute(
            "SELECT id, customer_id, points FROM escrow_asks WHERE sent = 0 ORDER BY id"
        ).fetchall()
        if rows:
            t.ledger.conn.executemany(
                "UPDATE escrow_asks SET sent = 1 WHERE id = ?", [(r[0],) for r in rows]
            )
    return [(r[1], int(r[2])) for r in rows]


def handle_need(t: Terminal, peer: str, body: dict[str, Any]) -> int:
    """A peer asks for rights: grant what this node holds, up to what was asked, to the peer or
    to the node named in `to` (the relay asks holders to hand rights to HQ for another store)."""
    customer, points, to = body.get("customer_id"), body.get("points"), body.get("to", peer)
    if not isinstance(customer, str) or not isinstance(points, int) or points <= 0:
        raise RemoteError(f"escrow request from {peer} is malformed")
    if points > 10_000_000:
        raise RemoteError(f"escrow request from {peer} asks for an implausible {points} points")
    if not isinstance(to, str) or t.ledger.public_key(to) is None:
        raise RemoteError(f"escrow request from {peer} names a node this store does not know")
    return t.grant_rights(customer, to, points)


def sell_with_escrow(
    t: Terminal, *, wait_ms: int = 1500, peers_up: bool = True, **kwargs: Any
) -> SaleResult:
    """Ring a sale; when a points redemption needs rights held elsewhere, ask the peers through
    the daemon and retry until the rights arrive or `wait_ms` passes."""
    try:
        return t.sell(**kwargs)
    except EscrowShortfall as short:
        if not peers_up:
            raise
        ask(t, short.customer, short.needed - max(short.held, 0))
        deadline = time.monotonic() + wait_ms / 1000
        while time.monotonic() < deadline:
            if t.rights(short.customer) >= short.needed:
                return t.sell(**kwargs)
            time.sleep(0.005)
        raise
