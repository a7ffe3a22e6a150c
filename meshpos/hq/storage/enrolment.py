"""The stores enrolled at HQ and the nodes certified in each: who may relay a store's ops, and whose
signatures HQ checks them against. A node is known from its certificate, always checked against
the store's key before it is recorded.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from meshpos.core.errors import LocalError, RemoteError
from meshpos.domain.enrolment import NodeRecord, read_certificate
from meshpos.hq.storage.database import Database, Row, Tx, chunks, optional_bytes


class UnknownStore(RemoteError):
    """A request names a store that is not enrolled at HQ."""


class NotEnrolled(RemoteError):
    """Ops or a request from a node HQ cannot tie to a valid certificate of that store."""


@dataclass(frozen=True)
class StoreRow:
    store: str
    name: str
    public_key: bytes
    key_at_hq: bool
    enrolled_ms: int
    hq_cert: bytes | None

    @classmethod
    def of(cls, row: Row) -> StoreRow:
        s, name, pub, at_hq, ms, cert = row
        return cls(str(s), str(name), bytes(pub), bool(at_hq), int(ms), optional_bytes(cert))


STORE_SELECT = "SELECT store, name, public_key, key_at_hq, enrolled_ms, hq_cert FROM stores"


class Enrolment:
    """Stores and their certified nodes."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def add_store(
        self, store: str, name: str, public_key: bytes, *, key_at_hq: bool, now_ms: int
    ) -> StoreRow:
        if len(public_key) != 32:
            raise LocalError("a store public key is 32 bytes (64 hex digits)")

        def fn(tx: Tx) -> StoreRow:
            if tx.execute("SELECT 1 FROM stores WHERE store = ?", (store,)):
                raise LocalError(f"store {store} is already enrolled at HQ")
            tx.execute(
                "INSERT INTO stores VALUES (?, ?, ?, ?, ?, NULL)",
                (store, name, public_key, int(key_at_hq), now_ms),
            )
            return StoreRow(store, name, public_key, key_at_hq, now_ms, None)

        return self.db.run(fn)

    def store(self, store: str, tx: Tx | None = None) -> StoreRow | None:
        def fn(t: Tx) -> StoreRow | None:
            rows = t.execute(f"{STORE_SELECT} WHERE store = ?", (store,))
            return StoreRow.of(rows[0]) if rows else None

        return fn(tx) if tx is not None else self.db.run(fn, write=False)

    def stores(self) -> list[StoreRow]:
        return [StoreRow.of(r) for r in self.db.query(f"{STORE_SELECT} ORDER BY store")]

    def require(self, tx: Tx, store: str) -> StoreRow:
        row = self.store(store, tx)
        if row is None:
            raise UnknownStore(f"store {store!r} is not enrolled at HQ (`meshpos hq enroll-store`)")
        return row

    def add_nodes(self, store: str, certs: Sequence[bytes]) -> list[NodeRecord]:
        """Record nodes of a store from their certificates (checked against the store key)."""

        def fn(tx: Tx) -> list[NodeRecord]:
            row = self.require(tx, store)
            records = [read_certificate(raw, row.public_key, store).record() for raw in certs]
            self.upsert_nodes(tx, store, row.public_key, records)
            return records

        return self.db.run(fn)

    def set_hq_cert(self, store: str, cert_bytes: bytes, hq_node_id: str) -> NodeRecord:
        def fn(tx: Tx) -> NodeRecord:
            row = self.require(tx, store)
            cert = read_certificate(cert_bytes, row.public_key, store)
            if cert.node_id != hq_node_id or cert.role != "hq":
                raise RemoteError("this certificate is not HQ's (wrong node or role)")
            tx.execute("UPDATE stores SET hq_cert = ? WHERE store = ?", (cert_bytes, store))
            self.upsert_nodes(tx, store, row.public_key, [cert.record()])
            return cert.record()

        return self.db.run(fn)

    def upsert_nodes(
        self, tx: Tx, store: str, store_key: bytes, nodes: Sequence[NodeRecord]
    ) -> None:
        """Record (or update) the nodes whose record carries a certificate by the store key."""
        rows = []
        for node in nodes:
            if node.cert is None:
                continue
            cert = read_certificate(node.cert, store_key, store)
            rows.append((store, node.node_id, node.public_key, node.name, cert.role, node.cert))
        if rows:
            tx.executemany(
                "INSERT INTO nodes VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (store, node_id) "
                "DO UPDATE SET name = excluded.name, role = excluded.role, cert = excluded.cert",
                sorted(rows),
            )

    def nodes(self, store: str, ids: Iterable[str] | None = None) -> list[NodeRecord]:
        rows = self.db.query(
            "SELECT node_id, public_key, store, name, cert FROM nodes WHERE store = ? "
            "ORDER BY node_id",
            (store,),
        )
        wanted = set(ids) if ids is not None else None
        return [
            NodeRecord(n, bytes(k), s, name, optional_bytes(c))
            for n, k, s, name, c in rows
            if wanted is None or n in wanted
        ]

    def node_ids(self, store: str, role: str) -> list[str]:
        """The nodes of a store certified with `role` (terminal, hq), in id order."""
        rows = self.db.query(
            "SELECT node_id FROM nodes WHERE store = ? AND role = ? ORDER BY node_id", (store, role)
        )
        return [str(n) for (n,) in rows]

    def node_key(self, store: str, node_id: str) -> tuple[bytes, str] | None:
        """A node's public key and role, if HQ holds its certificate."""
        found = self.db.run(lambda tx: self.keys(tx, store, [node_id]), write=False)
        return found.get(node_id)

    def keys(self, tx: Tx, store: str, ids: Sequence[str]) -> dict[str, tuple[bytes, str]]:
        """Public key and role of each of these nodes HQ holds a certificate of."""
        out: dict[str, tuple[bytes, str]] = {}
        for chunk in chunks(ids):
            marks = ",".join("?" * len(chunk))
            for node_id, key, role in tx.execute(
                f"SELECT node_id, public_key, role FROM nodes WHERE store = ? "
                f"AND node_id IN ({marks})",
                (store, *chunk),
            ):
                out[str(node_id)] = (bytes(key), str(role))
        return out
