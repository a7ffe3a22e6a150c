"""Takings per store, day and payment kind (cash, card, points...): a chain view HQ folds from the
same tender rows the store's own reports read, in the transaction that stores the ops.

An HQ database from before this view gets it filled once from the op log when it is first opened
(`backfill`), under a lock that holds ingest back meanwhile, so no tender is counted twice or
missed.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping

from meshpos.core.ops import decode_body
from meshpos.domain.storetime import StoreTime
from meshpos.hq.storage.database import Database, Record, SQLValue, Tx, upsert, where
from meshpos.hq.storage.views import StoreDays, store_time
from meshpos.ledger.fold import Changes, fold

log = logging.getLogger("meshpos.hq.storage")
TAKINGS_TABLE = MARK = "takings_daily"
SALE_KINDS = ("sale", "return", "exchange")
BACKFILL_BATCH = 5000

Key = tuple[str, str]  # (day, method)


def gather(ch: Changes, zone: StoreTime) -> dict[Key, list[int]]:
    """[amount, tenders] per (day, method) of a fold's tender rows, dated by their sale in the
    store's time (the day the store's own report counts it on)."""
    day_of = StoreDays(zone)
    return tally(ch, {(r[1], r[2]): day_of(int(r[7])) for r in ch.rows.get("sales", ())})


def tally(ch: Changes, days: Mapping[tuple[str, int], str]) -> dict[Key, list[int]]:
    """`gather`, with each sale's store day (by origin and seq) already worked out."""
    out: dict[Key, list[int]] = {}
    for origin, seq, _i, method, amount, _points in ch.rows.get("tenders", ()):
        day = days.get((origin, seq))
        if day is None:
            continue
        entry = out.setdefault((day, str(method)[:32]), [0, 0])
        entry[0] += int(amount)
        entry[1] += 1
    return out


def write(
    tx: Tx, store: str, ch: Changes, days: Mapping[tuple[str, int], str] | None = None
) -> None:
    """Add a fold's tenders to the view (rows in key order: no two writers wait in a cycle).
    `days`: the store day of each of its sales, as the views dated them (else dated here)."""
    _add(tx, store, gather(ch, store_time(tx, store)) if days is None else tally(ch, days))


def _add(tx: Tx, store: str, sums: dict[Key, list[int]]) -> None:
    rows: list[tuple[SQLValue, ...]] = [
        (store, day, method, amount, n) for (day, method), (amount, n) in sorted(sums.items())
    ]
    upsert(
        tx,
        "takings_daily",
        rows,
        "ON CONFLICT (store, day, method) DO UPDATE SET "
        "amount = takings_daily.amount + excluded.amount, "
        "tenders = takings_daily.tenders + excluded.tenders",
    )


def _batches(tx: Tx, store: str) -> Iterator[list[tuple[bytes, bytes]]]:
    after: tuple[str, int] = ("", 0)
    while True:
        rows = tx.execute(
            "SELECT origin, seq, body, sig FROM ops WHERE store = ? AND kind IN (?, ?, ?) "
            "AND (origin > ? OR (origin = ? AND seq > ?)) ORDER BY origin, seq LIMIT ?",
            (store, *SALE_KINDS, after[0], after[0], after[1], BACKFILL_BATCH),
        )
        if not rows:
            return
        after = (str(rows[-1][0]), int(rows[-1][1]))
        yield [(bytes(b), bytes(s)) for _, _, b, s in rows]


def backfill(db: Database) -> None:
    """Fill the view from the op log once, for a database that held ops before it existed."""

    def fn(tx: Tx) -> None:
        tx.lock(["hq-takings"])
        if tx.execute("SELECT 1 FROM hq_meta WHERE name = ?", (MARK,)):
            return
        if db.backend == "postgresql":  # ingest waits until the view is whole
            tx.execute("LOCK TABLE ops IN SHARE MODE")
        tx.execute("DELETE FROM takings_daily")
        stores = [str(s) for (s,) in tx.execute("SELECT DISTINCT store FROM ops ORDER BY store")]
        for store in stores:
            zone = store_time(tx, store)
            for batch in _batches(tx, store):
                _add(tx, store, gather(fold(decode_body(b, s) for b, s in batch), zone))
        tx.execute("INSERT INTO hq_meta VALUES (?, '1')", (MARK,))
        if stores:
            log.info("takings by payment kind filled from the op log of %d stores", len(stores))

    db.run(fn)


class Takings:
    def __init__(self, db: Database) -> None:
        self.db = db

    def by_kind(
        self, store: str | None = None, since: str | None = None, until: str | None = None
    ) -> list[Record]:
        """Amount and number of tenders per payment kind (returns count negative)."""
        cond, params = where(("store = ?", store), ("day >= ?", since), ("day <= ?", until))
        return self.db.select(
            "SELECT method, CAST(SUM(amount) AS BIGINT) AS amount, "
            f"CAST(SUM(tenders) AS BIGINT) AS tenders FROM takings_daily{cond} "
            "GROUP BY method ORDER BY amount DESC, method",
            params,
        )

    def by_store(self, since: str | None = None, until: str | None = None) -> list[Record]:
        cond, params = where(("day >= ?", since), ("day <= ?", until))
        return self.db.select(
            "SELECT store, method, CAST(SUM(amount) AS BIGINT) AS amount FROM takings_daily"
            f"{cond} GROUP BY store, method ORDER BY store, method",
            params,
        )
