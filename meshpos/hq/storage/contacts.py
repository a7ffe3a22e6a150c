"""When each terminal of each store last reached HQ: what the dashboard's online/offline, relay and
ops-waiting columns and the per-store lag metrics read.

Every node of a store probes HQ every few seconds and the relay pushes and pulls, so contacts are
gathered in memory (meshpos.hq.traffic) and written here in one small transaction every few
seconds, not one write per request. Values only move forward: a late flush from another HQ
process never makes a store look older than it is.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from meshpos.hq.storage.database import Database, Record, SQLValue, Tx, upsert, where

UNKNOWN = -1


@dataclass(frozen=True)
class Contact:
    """One node's latest requests: any (`seen_ms`), a push or pull (`relay_ms`, 0 if none), and
    the ops it said HQ lacked (`waiting`, UNKNOWN when it did not say)."""

    store: str
    node: str
    seen_ms: int
    relay_ms: int = 0
    waiting: int = UNKNOWN
    address: str = ""

    def merged(self, newer: Contact) -> Contact:
        return Contact(
            self.store,
            self.node,
            max(self.seen_ms, newer.seen_ms),
            max(self.relay_ms, newer.relay_ms),
            newer.waiting if newer.waiting != UNKNOWN else self.waiting,
            newer.address or self.address,
        )


def _later(column: str) -> str:
    return (
        f"{column} = CASE WHEN excluded.{column} > store_contacts.{column} "
        f"THEN excluded.{column} ELSE store_contacts.{column} END"
    )


class Contacts:
    def __init__(self, db: Database) -> None:
        self.db = db

    def record(self, contacts: Sequence[Contact]) -> None:
        rows: list[tuple[SQLValue, ...]] = [
            (c.store, c.node, c.seen_ms, c.relay_ms, c.waiting, c.address[:64])
            for c in sorted(contacts, key=lambda c: (c.store, c.node))
        ]

        def fn(tx: Tx) -> None:
            upsert(
                tx,
                "store_contacts",
                rows,
                "ON CONFLICT (store, node) DO UPDATE SET "
                f"{_later('seen_ms')}, {_later('relay_ms')}, "
                "waiting = CASE WHEN excluded.waiting >= 0 AND excluded.seen_ms >= "
                "store_contacts.seen_ms THEN excluded.waiting ELSE store_contacts.waiting END, "
                "address = excluded.address",
            )

        if rows:
            self.db.run(fn)

    def nodes(self, store: str | None = None) -> list[Record]:
        """Every node HQ heard from (of one store), with its name when HQ holds its certificate."""
        cond, params = where(("c.store = ?", store))
        return self.db.select(
            "SELECT c.store, c.node, n.name, c.seen_ms, c.relay_ms, c.waiting, c.address "
            "FROM store_contacts c LEFT JOIN nodes n ON n.store = c.store AND n.node_id = c.node"
            f"{cond} ORDER BY c.store, c.node",
            params,
        )
