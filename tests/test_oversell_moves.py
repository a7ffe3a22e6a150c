"""The oversell conflict's read of a SKU's newest removals (`ledger.apply._moves_newest_first`):
a compound SELECT that SQLite merges from two index-ordered scans, so it stops early instead of
sorting a SKU's whole history. It must give exactly what the `all_stock_moves` view gives, sorted
newest first, for any mix of moves: lines of sales and other moves, ties in HLC, several lines
of one SKU in one op, moves netting to zero."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator

from hypothesis import given, settings
from hypothesis import strategies as st

from meshpos.ledger import schema
from meshpos.ledger.apply import _moves_newest_first

ORIGINS = ("a" * 12, "b" * 12, "c" * 12)


def _via_view(conn: sqlite3.Connection, sku: str) -> Iterator[tuple[str, int]]:
    """The reference: every move through the view, sorted in full, netted per op."""
    ref, net = "", 0
    for origin, seq, delta in conn.execute(
        "SELECT origin, seq, delta FROM all_stock_moves WHERE sku = ? "
        "ORDER BY hlc DESC, origin DESC, seq DESC",
        (sku,),
    ):
        if f"{origin}:{seq}" != ref:
            if net:
                yield ref, net
            ref, net = f"{origin}:{seq}", 0
        net += delta
    if net:
        yield ref, net


move = st.tuples(
    st.sampled_from(ORIGINS),
    st.integers(1, 30),  # seq
    st.sampled_from(("S1", "S2")),
    st.integers(-3, 3).filter(bool),  # delta; a sale line moves -qty
    st.integers(1, 8),  # hlc: few values, so ties happen
    st.booleans(),  # a sale line (else a stock move)
)


@settings(max_examples=150, deadline=None)
@given(st.lists(move, max_size=40))
def test_newest_removals_match_the_view_whatever_the_moves(
    moves: list[tuple[str, int, str, int, int, bool]],
) -> None:
    conn = sqlite3.connect(":memory:")
    for stmt in schema.node_ddl() + schema.moves_ddl():
        conn.execute(stmt)
    lines: dict[tuple[str, int], int] = {}
    for origin, seq, sku, delta, hlc, is_line in moves:
        if is_line and delta < 0:
            line = lines[(origin, seq)] = lines.get((origin, seq), -1) + 1
            conn.execute(
                "INSERT INTO sale_lines (origin, seq, line, sku, name, category, qty, unit_price, "
                "discount, gst_rate, tax, total, hlc) VALUES (?, ?, ?, ?, '', '', ?, 0, 0, 0, 0, "
                "0, ?)",
                (origin, seq, line, sku, -delta, hlc),
            )
        else:
            conn.execute(
                "INSERT OR REPLACE INTO stock_moves VALUES (?, ?, ?, ?, 'adjust', ?)",
                (origin, seq + 100, sku, delta, hlc),
            )
    for sku in ("S1", "S2"):
        assert list(_moves_newest_first(conn, "main", sku)) == list(_via_view(conn, sku))
