"""Stock transfers across the chain at HQ, and other stores' stock for the tills.

HQ holds no table of its own for transfers: the ops fold into its per-store `registers` like at a
store (`transfer_out` in the sender, `transfer_expect` and `transfer_in` in the receiver), and
this module reads them. After every ingest, HQ tells each receiving store about transfers sent to
it (a `transfer.expect` op it signs into that store's log): found by what the registers lack, so
an answer lost to a crash or to a store not yet enrolled is sent on a later ingest.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from meshpos.domain.transfers import discrepancy, registers_of
from meshpos.hq.storage.database import Database, Record, Tx, chunks
from meshpos.hq.storage.log import OpToSign


def _entity(
    tx: Tx, entity: str, store: str | None = None, keys: Sequence[str] | None = None
) -> dict[tuple[str, str], dict[str, Any]]:
    """Registers of `entity` (of one store; of some keys) as {(store, key): {field: value}}."""
    sql = "SELECT store, key, field, value FROM registers WHERE entity = ?"
    params: tuple[str, ...] = (entity,)
    if store is not None:
        sql += " AND store = ?"
        params += (store,)
    rows = []
    if keys is None:
        rows = tx.execute(sql, params)
    for chunk in chunks(list(keys or ())):
        marks = ",".join("?" * len(chunk))
        rows += tx.execute(f"{sql} AND key IN ({marks})", (*params, *chunk))
    per_store: dict[str, list[tuple[str, str, str]]] = {}
    for s, key, field, value in rows:
        per_store.setdefault(str(s), []).append((str(key), str(field), str(value)))
    return {
        (s, key): fields
        for s, rows in per_store.items()
        for key, fields in registers_of(rows).items()
    }


class ChainTransfers:
    """As `HQStorage.transfers`."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def expects_due(
        self, tx: Tx, store: str, ready: set[str], tids: Sequence[str] | None = None
    ) -> list[OpToSign]:
        """`transfer.expect` ops HQ owes the stores `store` sent transfers to (those in `ready`,
        where HQ holds a certificate): of the transfers `tids`, or of every one it sent."""
        sent = _entity(tx, "transfer_out", store, tids)
        out: list[OpToSign] = []
        for (_, tid), fields in sorted(sent.items()):
            to = str(fields.get("to_store", ""))
            if to not in ready or _entity(tx, "transfer_expect", to, [tid]):
                continue
            payload = {
                "transfer_id": tid,
                "from_store": store,
                "lines": fields.get("lines") or [],
                "ts_ms": int(fields.get("ts_ms", 0)),
                "sent_by": str(fields.get("terminal", "")),
            }
            out.append((to, "transfer.expect", payload))
        return out

    def listing(self, store: str | None = None, status: str | None = None) -> list[Record]:
        """Every transfer the chain knows, oldest first: from, to, lines, when sent, and its
        status (`in transit`, `received`, `received short`)."""

        def fn(tx: Tx) -> list[Record]:
            sent = _entity(tx, "transfer_out")
            receipts: dict[str, list[dict[str, Any]]] = {}
            for (_, key), fields in sorted(_entity(tx, "transfer_in").items()):
                receipts.setdefault(key.partition("#")[0], []).append(fields)
            rows: list[Record] = []
            for (sender, tid), fields in sent.items():
                to = str(fields.get("to_store", ""))
                if store is not None and store not in (sender, to):
                    continue
                got = receipts.get(tid, [])
                found = discrepancy(tid, {**fields, "from_store": sender}, got) if got else None
                state = "in transit" if not got else "received short" if found else "received"
                if status is not None and state != status:
                    continue
                rows.append(
                    {
                        "transfer_id": tid,
                        "from_store": sender,
                        "to_store": to,
                        "lines": fields.get("lines") or [],
                        "units": sum(int(x["qty"]) for x in fields.get("lines") or []),
                        "sent_ms": int(fields.get("ts_ms", 0)),
                        "status": state,
                        "received_ms": max((int(r.get("ts_ms", 0)) for r in got), default=None),
                        "short": (found or {}).get("short", {}),
                        "extra": (found or {}).get("extra", {}),
                    }
                )
            return sorted(rows, key=lambda r: (r["sent_ms"], r["transfer_id"]))

        return self.db.run(fn, write=False)

    def chain_stock(
        self, asking: str, held: Mapping[str, int]
    ) -> tuple[list[dict[str, Any]], list[str]]:
        """Other stores' stock for a till of store `asking`: stores whose version (HQ's op count
        for them) differs from what the till holds come whole (store, name, version, as_of_ms,
        stock); the names of the unchanged ones come alone."""

        def fn(tx: Tx) -> tuple[list[dict[str, Any]], list[str]]:
            heads = tx.execute(
                "SELECT st.store, st.name, CAST(COALESCE(SUM(h.seq), 0) AS BIGINT), "
                "MAX(h.updated_ms) FROM stores st LEFT JOIN heads h ON h.store = st.store "
                "WHERE st.store != ? GROUP BY st.store, st.name ORDER BY st.store",
                (asking,),
            )
            changed, same = [], []
            for store, name, version, as_of in heads:
                if held.get(str(store)) == int(version):
                    same.append(str(store))
                    continue
                stock = tx.execute("SELECT sku, qty FROM stock WHERE store = ?", (store,))
                changed.append(
                    {
                        "store": str(store),
                        "name": str(name),
                        "version": int(version),
                        "as_of_ms": int(as_of or 0),
                        "stock": {str(sku): int(qty) for sku, qty in stock},
                    }
                )
            return changed, same

        return self.db.run(fn, write=False)
