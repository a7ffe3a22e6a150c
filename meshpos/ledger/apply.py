"""Write a batch's `Changes` into the view tables of one schema, then re-check conflicts.

The same code fills the live views (schema `main`) and the scratch copy that `verify` folds from
scratch, which is what makes "incremental equals rebuild" a meaningful check.
"""

from __future__ import annotations

import itertools
import json
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from meshpos.domain.transfers import discrepancy, registers_of
from meshpos.ledger.fold import (
    CLOCK_AHEAD,
    CUSTOMER_FIELDS,
    NEGATIVE_POINTS,
    OVER_RETURN,
    OVERSELL,
    PAYMENT_DECLINED,
    PRODUCT_FIELDS,
    TRANSFER_SHORT,
    UNAUTHORISED,
    UNKNOWN_PRODUCT,
    UPI_UNSETTLED,
    USER_FIELDS,
    Changes,
)
from meshpos.ledger.judging import unauthorised_detail

INSERT_WIDTH = {
    "stock_moves": 6,
    "sales": 17,
    "sale_lines": 20,
    "tenders": 6,
    "returned": 5,
    "resolutions": 7,
    "staff_log": 7,
    "rights_log": 7,
    "unauthorised": 8,
}
ENTITY_TABLE = {
    "product": ("products", "sku", PRODUCT_FIELDS),
    "customer": ("customers", "customer_id", CUSTOMER_FIELDS),
    "user": ("users", "user_id", USER_FIELDS),
}


def apply_changes(conn: sqlite3.Connection, ch: Changes, s: str = "main") -> None:
    for table, rows in ch.rows.items():
        marks = ",".join("?" * INSERT_WIDTH[table])
        conn.executemany(f"INSERT INTO {s}.{table} VALUES ({marks})", rows)
    if ch.stock:
        conn.executemany(
            f"INSERT INTO {s}.stock VALUES (?, ?) "
            "ON CONFLICT(sku) DO UPDATE SET qty = qty + excluded.qty",
            ch.stock.items(),
        )
        conn.executemany(
            f"INSERT INTO {s}.stock_by_origin VALUES (?, ?, ?) "
            "ON CONFLICT(sku, origin) DO UPDATE SET qty = qty + excluded.qty",
            [(sku, origin, delta) for (sku, origin), delta in ch.stock_by_origin.items()],
        )
    if ch.points:
        conn.executemany(
            f"INSERT INTO {s}.loyalty VALUES (?, ?) "
            "ON CONFLICT(customer_id) DO UPDATE SET points = points + excluded.points",
            ch.points.items(),
        )
    if ch.rights:
        conn.executemany(
            f"INSERT INTO {s}.rights VALUES (?, ?, ?) "
            "ON CONFLICT(customer_id, node) DO UPDATE SET points = points + excluded.points",
            [(c, n, v) for (c, n), v in ch.rights.items()],
        )
    if ch.registers:
        conn.executemany(
            f"INSERT INTO {s}.registers VALUES (?, ?, ?, ?, ?, ?) "
            "ON CONFLICT(entity, key, field) DO UPDATE SET "
            "value = excluded.value, hlc = excluded.hlc, origin = excluded.origin "
            "WHERE (excluded.hlc, excluded.origin) > (registers.hlc, registers.origin)",
            ch.registers,
        )
        for entity, key in ch.entities:
            _refresh_entity(conn, s, entity, key)
    check_conflicts(conn, ch.touched, s)


def _refresh_entity(conn: sqlite3.Connection, s: str, entity: str, key: str) -> None:
    values = {
        field: json.loads(value)
        for field, value in conn.execute(
            f"SELECT field, value FROM {s}.registers WHERE entity = ? AND key = ?", (entity, key)
        )
    }
    if entity == "setting":
        conn.execute(
            f"INSERT OR REPLACE INTO {s}.settings VALUES (?, ?)",
            (key, json.dumps(values.get("value"))),
        )
        return
    if entity not in ENTITY_TABLE:
        return  # kept in registers only (payment results)
    table, pk, fields = ENTITY_TABLE[entity]
    present = [f for f in fields if f in values]
    cols = ", ".join([pk, *present])
    marks = ", ".join("?" * (len(present) + 1))
    updates = ", ".join(f"{f} = excluded.{f}" for f in present) or f"{pk} = excluded.{pk}"
    conn.execute(
        f"INSERT INTO {s}.{table} ({cols}) VALUES ({marks}) "
        f"ON CONFLICT({pk}) DO UPDATE SET {updates}",
        [key, *(values[f] for f in present)],
    )


def _chunks(items: Sequence[str], n: int = 500) -> Iterable[Sequence[str]]:
    for i in range(0, len(items), n):
        yield items[i : i + n]


def _select_in(conn: sqlite3.Connection, sql: str, items: Sequence[str]) -> set[str]:
    found: set[str] = set()
    for chunk in _chunks(items):
        marks = ",".join("?" * len(chunk))
        found.update(row[0] for row in conn.execute(sql.format(marks=marks), chunk))
    return found


def check_conflicts(
    conn: sqlite3.Connection, touched: set[tuple[str, str]], s: str = "main"
) -> None:
    """Re-evaluate the conflict of every touched subject.

    A conflict row is a pure function of the current views: open while its condition holds beyond
    the level a manager acknowledged, resolved once a resolution exists and the condition no longer
    holds, absent otherwise. A cheap batch query first narrows the subjects worth a full look.
    """
    by_kind: dict[str, list[str]] = {}
    for kind, subject in touched:
        by_kind.setdefault(kind, []).append(subject)
    for kind, subjects in by_kind.items():
        known: set[str] = set()
        if _any_of_kind(conn, s, kind):
            ids = [f"{kind}:{x}" for x in subjects]
            known = _select_in(
                conn, f"SELECT conflict_id FROM {s}.conflicts WHERE conflict_id IN ({{marks}})", ids
            ) | _select_in(
                conn,
                f"SELECT DISTINCT conflict_id FROM {s}.resolutions WHERE conflict_id IN ({{marks}})",
                ids,
            )
        suspects = _suspects(conn, s, kind, subjects)
        for subject in sorted(suspects | {c.partition(":")[2] for c in known}):
            _evaluate(conn, s, kind, subject)


def _any_of_kind(conn: sqlite3.Connection, s: str, kind: str) -> bool:
    """Whether any conflict or resolution of `kind` is held: when none is (most batches, most
    kinds), a batch's thousands of subjects need no look-up one by one."""
    span = (f"{kind}:", f"{kind};")  # every id `kind:...` sorts in [kind:, kind;)
    return any(
        conn.execute(
            f"SELECT 1 FROM {s}.{table} WHERE conflict_id >= ? AND conflict_id < ? LIMIT 1", span
        ).fetchone()
        for table in ("conflicts", "resolutions")
    )


def _suspects(conn: sqlite3.Connection, s: str, kind: str, subjects: list[str]) -> set[str]:
    if kind == OVERSELL:
        sql = f"SELECT sku FROM {s}.stock WHERE sku IN ({{marks}}) AND qty < 0"
    elif kind == NEGATIVE_POINTS:
        sql = f"SELECT customer_id FROM {s}.loyalty WHERE customer_id IN ({{marks}}) AND points < 0"
    elif kind == OVER_RETURN:
        if not conn.execute(f"SELECT 1 FROM {s}.returned LIMIT 1").fetchone():
            return set()  # nothing returned yet: a sale's own subject needs no look-up
        sql = f"SELECT DISTINCT ref_sale FROM {s}.returned WHERE ref_sale IN ({{marks}})"
    elif kind in (PAYMENT_DECLINED, TRANSFER_SHORT, UNAUTHORISED, CLOCK_AHEAD, UPI_UNSETTLED):
        return set(subjects)
    elif kind == UNKNOWN_PRODUCT:
        return set(subjects) - _select_in(
            conn, f"SELECT sku FROM {s}.products WHERE sku IN ({{marks}})", subjects
        )
    else:
        raise ValueError(f"unknown conflict kind {kind!r}")
    return _select_in(conn, sql, subjects)


def _evaluate(conn: sqlite3.Connection, s: str, kind: str, subject: str) -> None:
    cid = f"{kind}:{subject}"
    latest = conn.execute(
        f"SELECT origin, seq, ack_level, note, user FROM {s}.resolutions WHERE conflict_id = ? "
        "ORDER BY hlc DESC, origin DESC, seq DESC LIMIT 1",
        (cid,),
    ).fetchone()
    ack = latest[2] if latest and latest[2] is not None else None
    row = conflict_row(_CHECKS[kind](conn, s, subject, ack), latest)
    if row is None:
        conn.execute(f"DELETE FROM {s}.conflicts WHERE conflict_id = ?", (cid,))
        return
    conn.execute(
        f"INSERT OR REPLACE INTO {s}.conflicts VALUES (?, ?, ?, ?, ?, ?, ?)",
        (cid, kind, subject, *row),
    )


def conflict_row(found: Found, latest: Sequence[Any] | None) -> tuple[Any, ...] | None:
    """A conflict's (status, detail, ops, resolved_by) from what its check found and the latest
    resolution (origin, seq, ack_level, note, user); None when there is no conflict. HQ's
    conflicts view uses it too."""
    if found is None and latest is None:
        return None
    if found is None:
        assert latest is not None
        resolved_by = f"{latest[0]}:{latest[1]}"
        detail: dict[str, Any] = {"note": latest[3], "ack_level": latest[2], "by": latest[4]}
        return (
            "resolved",
            json.dumps(detail, sort_keys=True),
            json.dumps([resolved_by]),
            resolved_by,
        )
    return "open", json.dumps(found[0], sort_keys=True), json.dumps(found[1]), None


Found = tuple[dict[str, Any], list[str]] | None


def _oversell(conn: sqlite3.Connection, s: str, sku: str, ack: int | None) -> Found:
    """Names the newest removals that together took the stock from above zero to below it: for two
    counters that both sold the last unit, both sales."""
    row = conn.execute(f"SELECT qty FROM {s}.stock WHERE sku = ?", (sku,)).fetchone()
    qty = row[0] if row else 0
    if qty >= min(ack if ack is not None else 0, 0):
        return None
    deficit, ops = -qty, []
    for ref, delta in _moves_newest_first(conn, s, sku):
        if delta >= 0:
            continue
        ops.append(ref)
        deficit += delta
        if deficit < 0 or len(ops) >= 20:
            break
    return {"sku": sku, "stock": qty}, ops


def _moves_newest_first(conn: sqlite3.Connection, s: str, sku: str) -> Iterator[tuple[str, int]]:
    """Each op's net move of `sku` ("origin:seq", delta), newest first, those that net to zero
    left out: a record moves a SKU once per line (schema.MOVES_DDL), an exchange of a SKU for
    itself not at all."""
    ref, net = "", 0
    # The two kinds of move as one compound SELECT, not the `all_stock_moves` view: SQLite then
    # merges the two index-ordered scans and stops when the caller has enough, where the view
    # sorts every move the SKU ever had first (1.3 ms a check at 6,000 moves, growing with them).
    for origin, seq, delta, _ in conn.execute(
        f"SELECT origin, seq, delta, hlc FROM {s}.stock_moves WHERE sku = ?1 UNION ALL "
        f"SELECT origin, seq, -qty, hlc FROM {s}.sale_lines WHERE sku = ?1 "
        "ORDER BY hlc DESC, origin DESC, seq DESC",
        (sku,),
    ):
        this = f"{origin}:{seq}"
        if this != ref:
            if net:
                yield ref, net
            ref, net = this, 0
        net += delta
    if net:
        yield ref, net


def _negative_points(conn: sqlite3.Connection, s: str, cust: str, ack: int | None) -> Found:
    row = conn.execute(f"SELECT points FROM {s}.loyalty WHERE customer_id = ?", (cust,)).fetchone()
    points = row[0] if row else 0
    if points >= min(ack if ack is not None else 0, 0):
        return None
    ops = [
        f"{o}:{q}"
        for o, q in conn.execute(
            f"SELECT origin, seq FROM {s}.sales WHERE customer_id = ? AND points_redeemed > 0 "
            "ORDER BY hlc DESC, origin DESC, seq DESC LIMIT 20",
            (cust,),
        )
    ]
    return {"customer_id": cust, "points": points}, ops


def _over_return(conn: sqlite3.Connection, s: str, sale_id: str, ack: int | None) -> Found:
    sale = conn.execute(
        f"SELECT origin, seq FROM {s}.sales WHERE sale_id = ? AND kind != 'return' "
        "ORDER BY origin, seq LIMIT 1",
        (sale_id,),
    ).fetchone()
    if sale is None:
        return None
    sold = dict(
        conn.execute(
            f"SELECT sku, SUM(qty) FROM {s}.sale_lines WHERE origin = ? AND seq = ? AND qty > 0 "
            "GROUP BY sku",
            sale,
        ).fetchall()
    )
    back = dict(
        conn.execute(
            f"SELECT sku, SUM(qty) FROM {s}.returned WHERE ref_sale = ? GROUP BY sku", (sale_id,)
        ).fetchall()
    )
    excess = {sku: q - sold.get(sku, 0) for sku, q in back.items() if q > sold.get(sku, 0)}
    if sum(excess.values()) <= (ack or 0):
        return None
    ops = [f"{sale[0]}:{sale[1]}"] + [
        f"{o}:{q}"
        for o, q in conn.execute(
            f"SELECT DISTINCT origin, seq FROM {s}.returned WHERE ref_sale = ? ORDER BY origin, seq",
            (sale_id,),
        )
    ]
    return {"sale_id": sale_id, "excess": dict(sorted(excess.items()))}, ops


def _unknown_product(conn: sqlite3.Connection, s: str, sku: str, ack: int | None) -> Found:
    if conn.execute(f"SELECT 1 FROM {s}.products WHERE sku = ?", (sku,)).fetchone():
        return None
    if ack is not None:
        return None
    ops = [ref for ref, _ in itertools.islice(_moves_newest_first(conn, s, sku), 20)]
    if not ops:
        return None
    return {"sku": sku}, ops


def _payment_declined(conn: sqlite3.Connection, s: str, sale_id: str, ack: int | None) -> Found:
    """Open while HQ's latest result for any card tender of the sale is a decline, until a
    manager records what was done (collected another way, written off)."""
    if ack is not None:
        return None
    tenders: dict[str, dict[str, Any]] = {}
    for key, name, value in conn.execute(
        f"SELECT key, field, value FROM {s}.registers WHERE entity = 'payment' "
        "AND key > ? AND key < ?",
        (sale_id + "#", sale_id + "$"),
    ):
        tenders.setdefault(key, {})[name] = json.loads(value)
    declined = [t for _, t in sorted(tenders.items()) if t.get("status") == "declined"]
    if not declined:
        return None
    first = declined[0]
    detail = {
        "sale_id": sale_id,
        "amount": sum(int(t.get("amount", 0)) for t in declined),
        "card": f"{first.get('card_brand', '')} ending {first.get('card_last4', '')}",
        "reason": first.get("message", ""),
        "code": first.get("code", ""),
    }
    return detail, sorted({str(t.get("sale_op", "")) for t in declined})


def _upi_unsettled(conn: sqlite3.Connection, s: str, sale_id: str, ack: int | None) -> Found:
    """Open while HQ's latest reconciliation of any UPI tender of the sale found it missing
    from the bank's settlement file or settled for another amount, until a manager records
    what was done (the customer paid again, the bank credited it late)."""
    if ack is not None:
        return None
    tenders: dict[str, dict[str, Any]] = {}
    for key, name, value in conn.execute(
        f"SELECT key, field, value FROM {s}.registers WHERE entity = 'upi' AND key > ? AND key < ?",
        (sale_id + "#", sale_id + "$"),
    ):
        tenders.setdefault(key, {})[name] = json.loads(value)
    bad = [t for _, t in sorted(tenders.items()) if t.get("status") != "matched"]
    if not bad:
        return None
    first = bad[0]
    detail = {
        "sale_id": sale_id,
        "status": first.get("status", ""),
        "amount": sum(int(t.get("amount", 0)) for t in bad),
        "settled": sum(int(t.get("settled") or 0) for t in bad),
        "utr": first.get("utr", ""),
        "reason": first.get("message", ""),
    }
    return detail, sorted({str(t.get("sale_op", "")) for t in bad})


def _transfer_short(conn: sqlite3.Connection, s: str, tid: str, ack: int | None) -> Found:
    """Open once both what was sent (HQ's `transfer.expect`) and what was counted on arrival
    (`transfer.in`, every receipt of it) are known here and they differ, until a manager
    records what was done (found in the van, claimed from the courier)."""
    if ack is not None:
        return None
    sent = registers_of(_registers(conn, s, "transfer_expect", tid, tid + "\x00"))
    got = registers_of(_registers(conn, s, "transfer_in", tid + "#", tid + "$"))
    if not sent or not got:
        return None
    found = discrepancy(tid, next(iter(sent.values())), list(got.values()))
    if found is None:
        return None
    return found, sorted({str(r.get("op", "")) for r in (*sent.values(), *got.values())})


def _registers(
    conn: sqlite3.Connection, s: str, entity: str, lo: str, hi: str
) -> list[tuple[str, str, str]]:
    return conn.execute(
        f"SELECT key, field, value FROM {s}.registers WHERE entity = ? AND key >= ? AND key < ?",
        (entity, lo, hi),
    ).fetchall()


def _unauthorised(conn: sqlite3.Connection, s: str, op_id: str, ack: int | None) -> Found:
    """Open while the op has no authority, until a manager records what was done about it."""
    if ack is not None:
        return None
    origin, _, seq = op_id.rpartition(":")
    row = conn.execute(
        f"SELECT * FROM {s}.unauthorised WHERE origin = ? AND seq = ?",
        (origin, int(seq) if seq.isdigit() else -1),
    ).fetchone()
    return None if row is None else (unauthorised_detail(row), [op_id])


def _clock_ahead(conn: sqlite3.Connection, s: str, node: str, ack: int | None) -> Found:
    """Open from a counter's flag until a manager acknowledges it (`ack_level`: the wall time
    of the flag's HLC); a later flag opens it again."""
    row = conn.execute(
        f"SELECT MAX(hlc) FROM {s}.registers WHERE entity = 'clock_ahead' AND key = ?", (node,)
    ).fetchone()
    if row is None or row[0] is None or (ack is not None and int(row[0]) >> 16 <= ack):
        return None
    fields = {
        name: json.loads(value)
        for name, value in conn.execute(
            f"SELECT field, value FROM {s}.registers WHERE entity = 'clock_ahead' AND key = ?",
            (node,),
        )
    }
    detail = {"node": node, **fields}
    return detail, [str(fields.get("op", ""))]


_CHECKS = {
    OVERSELL: _oversell,
    NEGATIVE_POINTS: _negative_points,
    OVER_RETURN: _over_return,
    UNKNOWN_PRODUCT: _unknown_product,
    PAYMENT_DECLINED: _payment_declined,
    TRANSFER_SHORT: _transfer_short,
    UNAUTHORISED: _unauthorised,
    CLOCK_AHEAD: _clock_ahead,
    UPI_UNSETTLED: _upi_unsettled,
}
