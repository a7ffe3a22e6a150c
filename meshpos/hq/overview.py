"""Each store as HQ sees it right now: online or not, when it last synced, what waits to come up,
which terminal relays, open conflicts, card payments. The dashboard's stores page and HQ's
metrics read the same rows, so they never disagree.

A store is online while any of its terminals reached HQ within `ONLINE_MS` (every terminal probes
HQ every couple of seconds while its WAN is up). "Ops waiting" is what the terminals said HQ
lacked at their last probe: the most any of them holds.
"""

from __future__ import annotations

from dataclasses import dataclass

from meshpos.hq.storage import HQStorage
from meshpos.hq.storage.contacts import UNKNOWN
from meshpos.hq.storage.database import Record

ONLINE_MS = 60_000


@dataclass(frozen=True)
class StoreStatus:
    store: str
    name: str
    online: bool
    last_contact_ms: int  # 0: never
    last_sync_ms: int  # the relay's last push or pull (else HQ's last stored op), 0: never
    ops_waiting: int | None  # None: no terminal has said
    relay: str  # the terminal that pushed or pulled last
    terminals: int
    terminals_online: int
    revoked: int  # terminals revoked (a retirement into a successor is not counted)
    open_conflicts: int
    ops: int
    sales: int
    net: int
    card_pending: int
    card_declined: int


def store_statuses(storage: HQStorage, now_ms: int) -> list[StoreStatus]:
    summary = storage.views.summary()
    contacts: dict[str, list[Record]] = {}
    for c in storage.contacts.nodes():
        contacts.setdefault(str(c["store"]), []).append(c)
    conflicts = storage.anomalies.counts()
    terminals = storage.browse.terminals()
    revoked = storage.log.revoked_counts([str(row["store"]) for row in summary])
    out = []
    for row in summary:
        store = str(row["store"])
        seen = contacts.get(store, [])
        last = max((int((c["seen_ms"])) for c in seen), default=0)
        fresh = [c for c in seen if now_ms - int(c["seen_ms"]) <= ONLINE_MS]
        relays = sorted(seen, key=lambda c: int(c["relay_ms"]))
        relay = relays[-1] if relays and int(relays[-1]["relay_ms"]) else None
        said = [int(c["waiting"]) for c in (fresh or seen) if int(c["waiting"]) != UNKNOWN]
        out.append(
            StoreStatus(
                store=store,
                name=str(row["name"]),
                online=bool(fresh),
                last_contact_ms=last,
                last_sync_ms=int(relay["relay_ms"]) if relay else int(row["last_sync_ms"] or 0),
                ops_waiting=max(said) if said else None,
                relay=str(relay["name"] or relay["node"]) if relay else "",
                terminals=terminals.get(store, 0),
                terminals_online=len(fresh),
                revoked=revoked.get(store, 0),
                open_conflicts=conflicts.get(store, 0),
                ops=int(row["ops"]),
                sales=int(row["sales"]),
                net=int(row["net"]),
                card_pending=int(row["card_pending"]),
                card_declined=int(row["card_declined"]),
            )
        )
    return out
