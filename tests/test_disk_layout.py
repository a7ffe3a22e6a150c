"""The views' disk layout (issue 16): a sale's stock moves are its `sale_lines` rows, read with
the other moves through `all_stock_moves` (checked against the ops' payloads for any history by
tests/test_ledger_properties.py); receipt numbers come from the end of a counter's sales; a
database laid out as before opens, is upgraded once and verifies."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from ledger_helpers import (
    FakeWall,
    Replica,
    catalog_rows,
    full_sync,
    make_replicas,
    moves_by_op,
    new_ledger,
    signer,
    stock_is_the_sum_of_its_moves,
    sync,
    views,
)

from meshpos.ledger.live_feed import stock_moves
from meshpos.ledger.store import Ledger
from meshpos.service.config import NodeConfig
from meshpos.service.terminal import Terminal

# -- readers of the moves -----------------------------------------------------------------------


def test_an_oversell_names_a_sale_with_two_lines_of_the_sku_once() -> None:
    a, b = make_replicas(2)
    a.terminal.import_catalog(catalog_rows(2, stock=2))
    sync(a, b)
    a.terminal.move_stock("receive", "SKU0", 1, "delivery")  # 3 on the shelf
    older = a.terminal.sell([("SKU1", 1), ("SKU0", 1)]).op
    twice = a.terminal.sell([("SKU0", 1), ("SKU1", 1), ("SKU0", 1)]).op
    assert [ln["sku"] for ln in twice.payload["lines"]].count("SKU0") == 2
    b.wall.ms += 60_000
    newest = b.terminal.sell([("SKU0", 2)], allow_oversell=True).op
    full_sync([a, b])
    for rep in (a, b):
        (conflict,) = rep.terminal.conflicts()
        assert conflict["detail"] == {"sku": "SKU0", "stock": -2}
        # newest first until the shortfall is covered: b's sale of 2, then a's two-line sale
        # (its 2 units of SKU0 count together, and it is named once); a's first sale is not needed
        assert conflict["ops"] == [f"{op.origin}:{op.seq}" for op in (newest, twice)]
        assert f"{older.origin}:{older.seq}" not in conflict["ops"]
        assert rep.ledger.verify() == []


def test_the_stock_screen_moves_add_receipts_and_sales_per_counter() -> None:
    a, b = make_replicas(2)
    a.terminal.import_catalog(catalog_rows(2, stock=5))
    sync(a, b)
    b.terminal.sell([("SKU0", 2), ("SKU1", 1), ("SKU0", 1)])
    b.terminal.move_stock("receive", "SKU0", 4, "delivery")
    full_sync([a, b])
    moves = stock_moves(a.ledger, ["SKU0", "SKU1", "NOPE"])
    assert moves == {
        "SKU0": {a.node_id: 5, b.node_id: 1},
        "SKU1": {a.node_id: 5, b.node_id: -1},
    }
    for sku, per_origin in moves.items():
        assert sum(per_origin.values()) == a.terminal.stock(sku)[0]["qty"]


def test_a_database_without_stock_per_counter_gains_it_when_it_opens(tmp_path: Path) -> None:
    """`stock_by_origin` is newer than the log it sums: opening an older database refolds it."""
    a, b = _file_replicas(tmp_path)
    a.terminal.import_catalog(catalog_rows(2, stock=5))
    sync(a, b)
    b.terminal.sell([("SKU0", 2), ("SKU1", 1)])
    b.terminal.move_stock("receive", "SKU1", 3, "delivery")
    full_sync([a, b])
    want = stock_moves(a.ledger, ["SKU0", "SKU1"])
    assert want == {"SKU0": {a.node_id: 5, b.node_id: -2}, "SKU1": {a.node_id: 5, b.node_id: 2}}
    path = a.ledger.path
    a.ledger.close()
    b.ledger.close()
    with sqlite3.connect(path) as conn:
        conn.execute("DROP TABLE stock_by_origin")
    ledger = Ledger(path, "S1", durable=False)
    try:
        assert stock_moves(ledger, ["SKU0", "SKU1"]) == want
        assert ledger.verify() == []
    finally:
        ledger.close()


def test_receipt_numbers_follow_the_highest_number_a_counter_gave() -> None:
    (a,) = make_replicas(1)
    a.terminal.import_catalog(catalog_rows(2, stock=9))
    first = a.terminal.sell([("SKU0", 1)])
    a.terminal.sell([("SKU1", 1)])
    a.terminal.return_items(first.sale_id, [("SKU0", 1)], refund="cash")
    highest = "SELECT MAX(number) FROM sales WHERE origin = ?"
    (top,) = a.ledger.conn.execute(highest, (a.node_id,)).fetchone()
    assert top == 3
    assert a.ledger.views.next_number(a.node_id) == top + 1
    assert a.ledger.views.next_number("nobody") == 1


# -- a database laid out as before ----------------------------------------------------------------


def _file_replicas(tmp_path: Path) -> tuple[Replica, Replica]:
    """Two counters whose ledgers are files (the first one's is the database under test)."""
    signers = [signer(0), signer(1)]
    out = []
    for i, s in enumerate(signers):
        ledger = new_ledger(signers, tmp_path / f"t{i}.db")
        wall = FakeWall()
        cfg = NodeConfig(dir=tmp_path, store="S1", name=f"T{i}", node_id=s.node_id)
        out.append(Replica(f"T{i}", s, ledger, Terminal(cfg, s, ledger, wall), wall))
    return out[0], out[1]


def _lay_out_as_before(conn: sqlite3.Connection) -> None:
    """Rewrite a database as meshpos laid its views out before: a `stock_moves` row per SKU a
    record moved (net of its lines, kind and hlc of the record), no `sale_lines.hlc`, an index of
    receipt numbers, one of every sale by customer and one of every escrow move by op, and no
    stock per counter (`stock_by_origin`)."""
    conn.executescript(
        """
        DROP VIEW all_stock_moves;
        DROP TABLE stock_by_origin;
        DROP INDEX sale_lines_sku;
        DROP INDEX sales_by_customer;
        DROP INDEX sales_paper;
        DROP INDEX rights_log_unheld;
        CREATE INDEX rights_log_op ON rights_log (origin, seq);
        CREATE INDEX sales_customer ON sales (customer_id, ts_ms);
        CREATE INDEX sales_number ON sales (origin, number);
        INSERT INTO stock_moves
            SELECT l.origin, l.seq, l.sku, -SUM(l.qty), s.kind, s.hlc
            FROM sale_lines l JOIN sales s ON s.origin = l.origin AND s.seq = l.seq
            GROUP BY l.origin, l.seq, l.sku HAVING SUM(l.qty) != 0;
        ALTER TABLE sale_lines DROP COLUMN hlc;
        """
    )


def test_a_database_laid_out_as_before_is_upgraded_once_and_verifies(tmp_path: Path) -> None:
    a, b = _file_replicas(tmp_path)
    a.terminal.import_catalog(catalog_rows(3, stock=1))
    sync(a, b)
    sold = a.terminal.sell([("SKU0", 1), ("SKU1", 1), ("SKU0", 1)], allow_oversell=True)
    a.terminal.return_items(sold.sale_id, [("SKU1", 1)], refund="cash")
    a.terminal.exchange(sold.sale_id, [("SKU0", 1)], [("SKU2", 1)], allow_oversell=True)
    b.terminal.sell([("SKU2", 1)], allow_oversell=True)
    a.terminal.move_stock("receive", "SKU1", 2, "delivery")
    full_sync([a, b])
    want = views(a.ledger)
    want_moves = moves_by_op(a.ledger)
    want_next = a.ledger.views.next_number(a.node_id)
    assert any(c["conflict_id"].startswith("oversell:") for c in a.terminal.conflicts())
    path = a.ledger.path
    a.ledger.close()
    b.ledger.close()

    with sqlite3.connect(path) as conn:
        _lay_out_as_before(conn)
        old_rows = conn.execute("SELECT COUNT(*) FROM stock_moves").fetchone()[0]
        assert old_rows == len(want_moves)  # the receipt and every record's SKUs

    ledger = Ledger(path, "S1", durable=False)
    try:
        names = {r[0] for r in ledger.conn.execute("SELECT name FROM sqlite_master")}
        assert {"all_stock_moves", "sale_lines_sku", "sales_by_customer", "sales_paper"} <= names
        assert not {"sales_customer", "sales_number", "rights_log_op"} & names
        plan = ledger.conn.execute(  # the one query by op: the debits judged without authority
            "EXPLAIN QUERY PLAN DELETE FROM rights_log WHERE origin = ? AND seq = ? "
            "AND authority = 0",
            ("a", 1),
        ).fetchall()
        assert "USING INDEX rights_log_unheld" in plan[0][3]
        assert ledger.conn.execute("SELECT value FROM meta WHERE key = 'refold'").fetchone() is None
        kinds = ledger.conn.execute("SELECT DISTINCT kind FROM stock_moves").fetchall()
        assert kinds == [("stock.receive",)]
        unstamped = "SELECT COUNT(*) FROM sale_lines l JOIN sales s USING (origin, seq) "
        assert ledger.conn.execute(unstamped + "WHERE l.hlc != s.hlc").fetchone() == (0,)
        assert views(ledger) == want
        assert moves_by_op(ledger) == want_moves
        assert ledger.views.next_number(a.node_id) == want_next
        stock_is_the_sum_of_its_moves(ledger)
        assert ledger.verify() == []
    finally:
        ledger.close()
    again = Ledger(path, "S1", durable=False)  # upgraded once: a second open changes nothing
    try:
        assert views(again) == want and again.verify() == []
    finally:
        again.close()
