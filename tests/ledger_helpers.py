"""Shared building blocks for ledger tests: replicas with deterministic keys and clocks, delivery of
ops between them, and a canonical dump of every view for comparison."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from meshpos.core.ops import FORMAT, Op, Signer, decode_body, pack
from meshpos.domain.catalog import CatalogRow
from meshpos.domain.enrolment import NodeRecord
from meshpos.ledger.schema import VIEW_TABLES
from meshpos.ledger.store import IngestResult, Ledger
from meshpos.service.config import NodeConfig
from meshpos.service.terminal import Terminal

STORE = "S1"
EPOCH_MS = 1_760_000_000_000

Views = dict[str, list[tuple[Any, ...]]]


@dataclass
class FakeWall:
    """A wall clock a test moves by hand, forwards or backwards."""

    ms: int = EPOCH_MS

    def __call__(self) -> int:
        return self.ms


@dataclass
class Replica:
    name: str
    signer: Signer
    ledger: Ledger
    terminal: Terminal
    wall: FakeWall = field(default_factory=FakeWall)

    @property
    def node_id(self) -> str:
        return self.signer.node_id


def signer(i: int) -> Signer:
    return Signer.from_seed(f"meshpos-test-node-{i}".encode())


def node_record(s: Signer, name: str, store: str = STORE) -> NodeRecord:
    return NodeRecord(s.node_id, s.public_key, store, name)


OP_FIELDS = (
    "store",
    "origin",
    "seq",
    "hlc",
    "user",
    "kind",
    "payload",
    "prev",
    "body",
    "sig",
    "hash",
)


def rebuilt(op: Op, **change: Any) -> Op:
    """`op` with some fields replaced, nothing recomputed: how a test forges or breaks an op."""
    return Op(**({name: getattr(op, name) for name in OP_FIELDS} | change))


def signed_with_raw_payload(
    s: Signer, store: str, seq: int, hlc: int, prev: bytes, payload: bytes, kind: str = "note"
) -> Op:
    """An op `s` signed whose payload is the bytes given, not encoded by meshpos (to send one that
    does not decode): its header and chain are sound."""
    head = b"".join(pack(f) for f in (FORMAT, store, s.node_id, seq, hlc, "u", kind))
    body = b"\x99" + head + payload + pack(prev)
    return decode_body(body, s.sign(body))


def new_ledger(
    signers: Sequence[Signer], path: str | Path = ":memory:", store: str = STORE
) -> Ledger:
    """A ledger that knows every given node's key (what enrolment gives a real node)."""
    ledger = Ledger(path, store, durable=False)
    for i, s in enumerate(signers):
        ledger.add_node(node_record(s, f"T{i}", store))
    return ledger


def make_replicas(n: int, store: str = STORE) -> list[Replica]:
    signers = [signer(i) for i in range(n)]
    out = []
    for i, s in enumerate(signers):
        ledger = new_ledger(signers, store=store)
        wall = FakeWall()
        cfg = NodeConfig(dir=Path("/nonexistent"), store=store, name=f"T{i}", node_id=s.node_id)
        out.append(Replica(f"T{i}", s, ledger, Terminal(cfg, s, ledger, wall), wall))
    return out


def all_ops(ledger: Ledger) -> list[Op]:
    return ledger.ops_since({})


def ops_lacking(src: Ledger, dst: Ledger) -> list[Op]:
    """What a version-vector exchange sends from `src` to `dst`."""
    return src.ops_since(dst.vv())


def sync(src: Replica, dst: Replica) -> IngestResult:
    return dst.terminal.ingest(ops_lacking(src.ledger, dst.ledger))


def full_sync(replicas: Sequence[Replica]) -> None:
    """Two passes around the ring leave every replica holding every op."""
    for _ in range(2):
        for a in replicas:
            for b in replicas:
                if a is not b:
                    sync(a, b)


def views(ledger: Ledger) -> Views:
    out: Views = {}
    for table in VIEW_TABLES:
        width = len(ledger.conn.execute(f"SELECT * FROM {table} LIMIT 0").description)
        order = ", ".join(str(i + 1) for i in range(width))
        out[table] = ledger.conn.execute(f"SELECT * FROM {table} ORDER BY {order}").fetchall()
    return out


def table_counts(ledger: Ledger) -> dict[str, int]:
    tables = ("ops", "vv", "pending", "nodes", *VIEW_TABLES)
    return {t: ledger.conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in tables}


def fold_of(ops: Iterable[Op], signers: Sequence[Signer]) -> Ledger:
    """The reference: a fresh ledger that ingests the whole set in seq order, in one batch."""
    ledger = new_ledger(signers)
    ledger.ingest(sorted(ops, key=lambda o: (o.origin, o.seq)))
    return ledger


def union(ledgers: Iterable[Ledger]) -> list[Op]:
    seen: dict[tuple[str, int], Op] = {}
    for ledger in ledgers:
        for op in all_ops(ledger):
            seen.setdefault(op.id, op)
    return sorted(seen.values(), key=lambda o: o.id)


def catalog_rows(n: int, stock: int = 5) -> list[CatalogRow]:
    return [
        CatalogRow(
            line=i + 2,
            sku=f"SKU{i}",
            fields={
                "name": f"Item {i}",
                "barcode": f"890100000{i:04d}",
                "category": "Tops" if i % 2 else "Bottoms",
                "size": "M",
                "colour": "Navy",
                "price": 49_900 + 10_000 * i,
                "gst_rate": 1200 if i % 2 else 500,
            },
            stock=stock,
        )
        for i in range(n)
    ]


# -- stock moves (a record's are its sale lines, see meshpos/ledger/schema.py MOVES_DDL) -----------

RECORDS = ("sale", "return", "exchange")


def moves_by_op(ledger: Ledger) -> Counter[tuple[str, int, str]]:
    """Net stock moved per op and SKU, as the view gives it."""
    got: Counter[tuple[str, int, str]] = Counter()
    for origin, seq, sku, delta in ledger.conn.execute(
        "SELECT origin, seq, sku, delta FROM all_stock_moves"
    ):
        got[(origin, seq, sku)] += delta
    return +got + -got  # drops the zeros an exchange of a SKU for itself nets to


def moves_of_ops(ops: list[Op]) -> Counter[tuple[str, int, str]]:
    """The same, from the ops' payloads alone: what the `stock_moves` rows of every op said
    before a sale's moves were its lines."""
    want: Counter[tuple[str, int, str]] = Counter()
    for op in ops:
        p = op.payload
        if op.kind in ("stock.receive", "stock.adjust"):
            want[(op.origin, op.seq, p["sku"])] += p["delta"]
        elif op.kind in RECORDS:
            sold = -1 if op.kind == "return" else 1
            for line in p["lines"]:
                want[(op.origin, op.seq, line["sku"])] -= sold * line["qty"]
            for line in p.get("returned", ()):
                want[(op.origin, op.seq, line["sku"])] += line["qty"]
    return +want + -want


def stock_is_the_sum_of_its_moves(ledger: Ledger) -> None:
    stock = dict(ledger.conn.execute("SELECT sku, qty FROM stock WHERE qty != 0"))
    summed = dict(
        ledger.conn.execute(
            "SELECT sku, SUM(delta) FROM all_stock_moves GROUP BY sku HAVING SUM(delta) != 0"
        )
    )
    assert stock == summed
    # Each counter's share, which the stock screen shows, is the sum of that counter's moves.
    by_origin = {(sku, o): q for sku, o, q in ledger.conn.execute("SELECT * FROM stock_by_origin")}
    per_move = {
        (sku, o): q
        for sku, o, q in ledger.conn.execute(
            "SELECT sku, origin, SUM(delta) FROM all_stock_moves GROUP BY sku, origin"
        )
    }
    assert by_origin == per_move
