"""HQ storage: one schema and one implementation of ingest, views, downstream ops, payments and
cross-store loyalty, written once over a small `Database` interface that SQLite (sqlite_store.py)
and PostgreSQL (pg_store.py) implement.

Every write runs in one transaction. Concurrency between HQ processes sharing a database is handled
here, not in memory: the ops of one (store, origin) chain are taken under a lock on that pair
(PostgreSQL: a transaction-scoped advisory lock; SQLite: `BEGIN IMMEDIATE`), checked against the
stored head, and inserted; a batch sent twice or by two relays at once is stored once. Locks are
always taken in sorted key order in one step, and rows of counter tables are upserted in key order,
so two transactions never wait on each other in a cycle.

Views are folded with the store's own fold rules (meshpos.ledger.fold) and written as plain row
upserts (`INSERT ... ON CONFLICT ... DO UPDATE`) that both databases run unchanged.
"""

from __future__ import annotations

import contextlib
import json
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Generic, Protocol, TypeVar

from meshpos.core.clock import HLC
from meshpos.core.errors import (
    ChainError,
    EncodingError,
    LocalError,
    NotFound,
    RemoteError,
    WrongStore,
)
from meshpos.core.ops import (
    GENESIS,
    Op,
    Payload,
    Signer,
    decode_op,
    make_op,
    node_id_of,
    pack,
    verify_run,
)
from meshpos.domain.cards import sealed_from_tender
from meshpos.domain.enrolment import NodeRecord, admit_record, read_certificate
from meshpos.ledger.fold import Changes, fold

T = TypeVar("T")
C = TypeVar("C")
VersionVector = dict[str, int]

HQ_ONLY_KINDS = frozenset({"payment.result", "card.float"})
CARD_KINDS = frozenset({"sale", "exchange"})


class UnknownStore(RemoteError):
    """A request names a store that is not enrolled at HQ."""


class NotEnrolled(RemoteError):
    """Ops or a request from a node HQ cannot tie to a valid certificate of that store."""


class Equivocation(ChainError):
    """A node signed two different ops with the same seq."""


class Tx(Protocol):
    """One open transaction. SQL uses `?` placeholders; the backend translates."""

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]: ...

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None: ...

    def select(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        """Rows as dicts keyed by result column name."""

    def insert_new(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        """Insert rows whose keys are known to be new (checked under lock); the fast path."""

    def lock(self, keys: Iterable[str]) -> None:
        """Hold locks on these names until the transaction ends (taken in sorted order)."""


class Database(ABC):
    """What a backend provides: transactions on a pool of connections, and its SQL dialect."""

    backend: str
    blob: str
    integer: str
    for_update: str
    skip_locked: str

    @abstractmethod
    def transaction(self, write: bool = True) -> AbstractContextManager[Tx]: ...

    def run(self, fn: Callable[[Tx], T], write: bool = True) -> T:
        """Run `fn` in one transaction; backends retry it on a deadlock or serialisation error."""
        with self.transaction(write) as tx:
            return fn(tx)

    @abstractmethod
    def close(self) -> None: ...

    def describe(self) -> str:
        return self.backend


class Pool(Generic[C]):
    """A bounded pool of database connections shared by the server's worker threads. Connections
    are made on demand, reused, and dropped when a use of them failed."""

    def __init__(
        self,
        connect: Callable[[], C],
        close: Callable[[C], None],
        size: int,
        broken: Callable[[C, BaseException], bool] = lambda conn, exc: False,
    ) -> None:
        self._connect, self._close, self._broken = connect, close, broken
        self._free: list[C] = []
        self._all: list[C] = []
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(size)

    @contextmanager
    def connection(self) -> Iterator[C]:
        self._slots.acquire()
        try:
            with self._lock:
                conn = self._free.pop() if self._free else None
            if conn is None:
                conn = self._connect()
                with self._lock:
                    self._all.append(conn)
            try:
                yield conn
            except BaseException as exc:
                if self._broken(conn, exc):
                    self._discard(conn)
                else:
                    with self._lock:
                        self._free.append(conn)
                raise
            with self._lock:
                self._free.append(conn)
        finally:
            self._slots.release()

    def _discard(self, conn: C) -> None:
        with self._lock:
            if conn in self._all:
                self._all.remove(conn)
        with contextlib.suppress(Exception):  # a broken connection may fail to close
            self._close(conn)

    def close(self) -> None:
        with self._lock:
            conns, self._all, self._free = self._all, [], []
        for conn in conns:
            with contextlib.suppress(Exception):  # at shutdown: nothing left to do with it
                self._close(conn)


SCHEMA_VERSION = "1"
DDL = """
CREATE TABLE IF NOT EXISTS hq_meta (
    name  TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS stores (
    store       TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    public_key  {blob} NOT NULL,
    key_at_hq   {int} NOT NULL,
    enrolled_ms {int} NOT NULL,
    hq_cert     {blob}
);
CREATE TABLE IF NOT EXISTS nodes (
    store      TEXT NOT NULL,
    node_id    TEXT NOT NULL,
    public_key {blob} NOT NULL,
    name       TEXT NOT NULL,
    role       TEXT NOT NULL,
    cert       {blob} NOT NULL,
    PRIMARY KEY (store, node_id)
);
CREATE TABLE IF NOT EXISTS ops (
    store  TEXT NOT NULL,
    origin TEXT NOT NULL,
    seq    {int} NOT NULL,
    hlc    {int} NOT NULL,
    kind   TEXT NOT NULL,
    actor  TEXT NOT NULL,
    body   {blob} NOT NULL,
    sig    {blob} NOT NULL,
    PRIMARY KEY (store, origin, seq)
);
CREATE TABLE IF NOT EXISTS heads (
    store      TEXT NOT NULL,
    origin     TEXT NOT NULL,
    seq        {int} NOT NULL,
    head       {blob} NOT NULL,
    hlc        {int} NOT NULL,
    updated_ms {int} NOT NULL,
    PRIMARY KEY (store, origin)
);
CREATE TABLE IF NOT EXISTS sales (
    store    TEXT NOT NULL,
    origin   TEXT NOT NULL,
    seq      {int} NOT NULL,
    sale_id  TEXT NOT NULL,
    kind     TEXT NOT NULL,
    day      TEXT NOT NULL,
    ts_ms    {int} NOT NULL,
    hlc      {int} NOT NULL,
    terminal TEXT NOT NULL,
    actor    TEXT NOT NULL,
    customer_id TEXT,
    subtotal {int} NOT NULL,
    discount {int} NOT NULL,
    tax      {int} NOT NULL,
    total    {int} NOT NULL,
    points_earned   {int} NOT NULL,
    points_redeemed {int} NOT NULL,
    ref_sale TEXT,
    PRIMARY KEY (store, origin, seq)
);
CREATE INDEX IF NOT EXISTS sales_customer ON sales (customer_id);
CREATE TABLE IF NOT EXISTS sales_daily (
    store     TEXT NOT NULL,
    day       TEXT NOT NULL,
    sales     {int} NOT NULL,
    returns   {int} NOT NULL,
    exchanges {int} NOT NULL,
    net       {int} NOT NULL,
    tax       {int} NOT NULL,
    discount  {int} NOT NULL,
    PRIMARY KEY (store, day)
);
CREATE TABLE IF NOT EXISTS stock (
    store TEXT NOT NULL,
    sku   TEXT NOT NULL,
    qty   {int} NOT NULL,
    PRIMARY KEY (store, sku)
);
CREATE TABLE IF NOT EXISTS loyalty (
    store       TEXT NOT NULL,
    customer_id TEXT NOT NULL,
    points      {int} NOT NULL,
    PRIMARY KEY (store, customer_id)
);
CREATE INDEX IF NOT EXISTS loyalty_customer ON loyalty (customer_id);
CREATE TABLE IF NOT EXISTS rights (
    store       TEXT NOT NULL,
    customer_id TEXT NOT NULL,
    node        TEXT NOT NULL,
    points      {int} NOT NULL,
    PRIMARY KEY (store, customer_id, node)
);
CREATE INDEX IF NOT EXISTS rights_customer ON rights (customer_id, node);
CREATE TABLE IF NOT EXISTS registers (
    store  TEXT NOT NULL,
    entity TEXT NOT NULL,
    key    TEXT NOT NULL,
    field  TEXT NOT NULL,
    value  TEXT NOT NULL,
    hlc    {int} NOT NULL,
    origin TEXT NOT NULL,
    PRIMARY KEY (store, entity, key, field)
);
CREATE TABLE IF NOT EXISTS payments (
    store      TEXT NOT NULL,
    origin     TEXT NOT NULL,
    seq        {int} NOT NULL,
    tender     {int} NOT NULL,
    sale_id    TEXT NOT NULL,
    amount     {int} NOT NULL,
    last4      TEXT NOT NULL,
    brand      TEXT NOT NULL,
    sealed     {blob} NOT NULL,
    status     TEXT NOT NULL,
    attempts   {int} NOT NULL,
    claimed_ms {int} NOT NULL,
    created_ms {int} NOT NULL,
    code       TEXT NOT NULL,
    message    TEXT NOT NULL,
    auth_code  TEXT NOT NULL,
    result_seq {int} NOT NULL,
    PRIMARY KEY (store, origin, seq, tender)
);
CREATE INDEX IF NOT EXISTS payments_status ON payments (status, created_ms);
CREATE TABLE IF NOT EXISTS blocklist (
    setting_key TEXT PRIMARY KEY,
    reason      TEXT NOT NULL,
    blocked     {int} NOT NULL,
    changed_ms  {int} NOT NULL
);
CREATE TABLE IF NOT EXISTS loyalty_asks (
    store       TEXT NOT NULL,
    customer_id TEXT NOT NULL,
    node        TEXT NOT NULL,
    points      {int} NOT NULL,
    asked_ms    {int} NOT NULL,
    PRIMARY KEY (store, customer_id, node)
)
"""

OP_COLUMNS = ("store", "origin", "seq", "hlc", "kind", "actor", "body", "sig")
SALE_COLUMNS = (
    "store", "origin", "seq", "sale_id", "kind", "day", "ts_ms", "hlc", "terminal", "actor",
    "customer_id", "subtotal", "discount", "tax", "total", "points_earned", "points_redeemed",
    "ref_sale",
)  # fmt: skip
UPSERT_CHUNK = 500
DAILY_FIELDS = ("sales", "returns", "exchanges", "net", "tax", "discount")


@dataclass(frozen=True)
class StoreRow:
    store: str
    name: str
    public_key: bytes
    key_at_hq: bool
    enrolled_ms: int
    hq_cert: bytes | None


@dataclass(frozen=True)
class IngestOutcome:
    applied: int
    duplicates: int
    skipped: dict[str, int]
    vv: VersionVector
    payments: int = 0
    transfers: frozenset[tuple[str, str]] = frozenset()  # (customer, to) of escrow transfers


@dataclass(frozen=True)
class PaymentJob:
    store: str
    origin: str
    seq: int
    tender: int
    sale_id: str
    amount: int
    last4: str
    brand: str
    sealed: bytes
    attempt: int

    @property
    def key(self) -> str:
        return f"{self.store}:{self.origin}:{self.seq}:{self.tender}"


@dataclass(frozen=True)
class PaymentOutcome:
    status: str  # approved | declined
    code: str
    message: str
    auth_code: str = ""
    block_key: str | None = None  # blocklist setting key to add for this card


@dataclass
class _Batch:
    """Rows a batch of ops adds to the HQ views, gathered before any SQL runs."""

    sales: list[tuple[Any, ...]] = field(default_factory=list)
    daily: dict[tuple[str, str], list[int]] = field(default_factory=dict)
    payments: list[tuple[Any, ...]] = field(default_factory=list)


def day_of(ts_ms: int) -> str:
    """The UTC calendar day, as the store's own `reports --by day` counts it."""
    return datetime.fromtimestamp(ts_ms / 1000, UTC).strftime("%Y-%m-%d")


def _lock_key(store: str, name: str) -> str:
    return f"{store}\x00{name}"


def _node_rows(nodes: Iterable[NodeRecord]) -> list[tuple[Any, ...]]:
    return [n.as_row() for n in nodes]


class HQStorage:
    """Everything HQ keeps, over one database. Holds no state of its own between calls, so any
    number of HQ processes can share the database."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.db.run(self._create)

    def close(self) -> None:
        self.db.close()

    def _create(self, tx: Tx) -> None:
        tx.lock(["hq-schema"])
        for stmt in DDL.format(blob=self.db.blob, int=self.db.integer).split(";"):
            if stmt.strip():
                tx.execute(stmt)
        rows = tx.execute("SELECT value FROM hq_meta WHERE name = 'schema'")
        if not rows:
            tx.execute("INSERT INTO hq_meta VALUES ('schema', ?)", (SCHEMA_VERSION,))
        elif rows[0][0] != SCHEMA_VERSION:
            raise LocalError(f"HQ database has schema {rows[0][0]}; this HQ needs {SCHEMA_VERSION}")

    # -- stores and nodes -----------------------------------------------------------------------

    def add_store(
        self, store: str, name: str, public_key: bytes, *, key_at_hq: bool, now_ms: int
    ) -> StoreRow:
        if len(public_key) != 32:
            raise LocalError("a store public key is 32 bytes (64 hex digits)")

        def fn(tx: Tx) -> None:
            if tx.execute("SELECT 1 FROM stores WHERE store = ?", (store,)):
                raise LocalError(f"store {store} is already enrolled at HQ")
            tx.execute(
                "INSERT INTO stores VALUES (?, ?, ?, ?, ?, NULL)",
                (store, name, public_key, int(key_at_hq), now_ms),
            )

        self.db.run(fn)
        row = self.store(store)
        assert row is not None
        return row

    def store(self, store: str, tx: Tx | None = None) -> StoreRow | None:
        def fn(t: Tx) -> StoreRow | None:
            rows = t.execute(
                "SELECT store, name, public_key, key_at_hq, enrolled_ms, hq_cert FROM stores "
                "WHERE store = ?",
                (store,),
            )
            if not rows:
                return None
            s, name, pub, at_hq, ms, cert = rows[0]
            return StoreRow(s, name, bytes(pub), bool(at_hq), int(ms), _b(cert))

        return fn(tx) if tx is not None else self.db.run(fn, write=False)

    def stores(self) -> list[StoreRow]:
        rows = self.db.run(
            lambda tx: tx.execute(
                "SELECT store, name, public_key, key_at_hq, enrolled_ms, hq_cert FROM stores "
                "ORDER BY store"
            ),
            write=False,
        )
        return [StoreRow(s, n, bytes(p), bool(a), int(m), _b(c)) for s, n, p, a, m, c in rows]

    def _require_store(self, tx: Tx, store: str) -> StoreRow:
        row = self.store(store, tx)
        if row is None:
            raise UnknownStore(f"store {store!r} is not enrolled at HQ (`meshpos hq enroll-store`)")
        return row

    def add_nodes(self, store: str, certs: Sequence[bytes]) -> list[NodeRecord]:
        """Record nodes of a store from their certificates (checked against the store key)."""

        def fn(tx: Tx) -> list[NodeRecord]:
            row = self._require_store(tx, store)
            records = []
            for raw in certs:
                cert = read_certificate(raw, row.public_key, store)
                records.append(cert.record())
            self._upsert_nodes(tx, store, row.public_key, records)
            return records

        return self.db.run(fn)

    def set_hq_cert(self, store: str, cert_bytes: bytes, hq_node_id: str) -> NodeRecord:
        def fn(tx: Tx) -> NodeRecord:
            row = self._require_store(tx, store)
            cert = read_certificate(cert_bytes, row.public_key, store)
            if cert.node_id != hq_node_id or cert.role != "hq":
                raise RemoteError("this certificate is not HQ's (wrong node or role)")
            tx.execute("UPDATE stores SET hq_cert = ? WHERE store = ?", (cert_bytes, store))
            self._upsert_nodes(tx, store, row.public_key, [cert.record()])
            return cert.record()

        return self.db.run(fn)

    def _upsert_nodes(
        self, tx: Tx, store: str, store_key: bytes, nodes: Sequence[NodeRecord]
    ) -> None:
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
        rows = self.db.run(
            lambda tx: tx.execute(
                "SELECT node_id, public_key, store, name, cert FROM nodes WHERE store = ? "
                "ORDER BY node_id",
                (store,),
            ),
            write=False,
        )
        wanted = set(ids) if ids is not None else None
        return [
            NodeRecord(n, bytes(k), s, name, _b(c))
            for n, k, s, name, c in rows
            if wanted is None or n in wanted
        ]

    def node_key(self, store: str, node_id: str) -> tuple[bytes, str] | None:
        rows = self.db.run(
            lambda tx: tx.execute(
                "SELECT public_key, role FROM nodes WHERE store = ? AND node_id = ?",
                (store, node_id),
            ),
            write=False,
        )
        return (bytes(rows[0][0]), str(rows[0][1])) if rows else None

    # -- version vectors and the log ------------------------------------------------------------

    def vv(self, store: str, tx: Tx | None = None) -> VersionVector:
        def fn(t: Tx) -> VersionVector:
            rows = t.execute("SELECT origin, seq FROM heads WHERE store = ?", (store,))
            return {str(o): int(s) for o, s in rows}

        return fn(tx) if tx is not None else self.db.run(fn, write=False)

    def ops_since(
        self, store: str, theirs: Mapping[str, int], limit: int
    ) -> tuple[list[bytes], VersionVector, bool]:
        """Wire forms of the ops of `store` that the holder of `theirs` lacks, per origin in seq
        order, at most `limit`; HQ's vv; and whether more remain."""

        def fn(tx: Tx) -> tuple[list[bytes], VersionVector, bool]:
            self._require_store(tx, store)
            vv = self.vv(store, tx)
            out: list[bytes] = []
            more = False
            for origin, seq in sorted(vv.items()):
                have = theirs.get(origin, 0)
                if seq <= have:
                    continue
                room = limit - len(out)
                if room <= 0:
                    more = True
                    break
                rows = tx.execute(
                    "SELECT body, sig FROM ops WHERE store = ? AND origin = ? AND seq > ? "
                    "ORDER BY seq LIMIT ?",
                    (store, origin, have, room),
                )
                out.extend(pack([bytes(b), bytes(s)]) for b, s in rows)
                if have + len(rows) < seq:
                    more = True
            return out, vv, more

        return self.db.run(fn, write=False)

    def op_count(self, store: str | None = None) -> int:
        sql = "SELECT CAST(COALESCE(SUM(seq), 0) AS BIGINT) FROM heads"
        params: tuple[Any, ...] = ()
        if store is not None:
            sql += " WHERE store = ?"
            params = (store,)
        return int(self.db.run(lambda tx: tx.execute(sql, params), write=False)[0][0])

    # -- ingest ---------------------------------------------------------------------------------

    def ingest(
        self, store: str, wires: Sequence[bytes], nodes: Sequence[NodeRecord], now_ms: int
    ) -> IngestOutcome:
        """Check a batch like the mesh does and apply what continues each chain; all or nothing.

        Ops at or below HQ's head are duplicates (refused if their bytes differ); ops past a gap
        are not stored and show up in `skipped`, so the relay resends from HQ's vv."""
        ops = [decode_op(w) for w in wires]
        for op in ops:
            if op.store != store:
                raise WrongStore(f"op {op.origin}:{op.seq} belongs to store {op.store!r}")
        for node in nodes:
            if node.store != store:
                raise WrongStore(f"node {node.node_id} belongs to store {node.store!r}")
            if node_id_of(node.public_key) != node.node_id:
                raise NotEnrolled(f"node {node.node_id} does not match its public key")
        return self.db.run(lambda tx: self._ingest(tx, store, ops, nodes, now_ms))

    def _ingest(
        self, tx: Tx, store: str, ops: Sequence[Op], nodes: Sequence[NodeRecord], now_ms: int
    ) -> IngestOutcome:
        row = self._require_store(tx, store)
        nodes = [n for n in nodes if n.cert is not None]  # a record without one proves nothing
        for node in nodes:
            reason = admit_record(node, row.public_key, store)
            if reason is not None:
                raise NotEnrolled(f"node {node.name} ({node.node_id}): {reason}")
        by_origin: dict[str, dict[int, Op]] = {}
        dupes = 0
        for op in ops:
            same = by_origin.setdefault(op.origin, {})
            twin = same.get(op.seq)
            if twin is None:
                same[op.seq] = op
            elif twin.body != op.body:
                raise Equivocation(f"node {op.origin} signed two different ops with seq {op.seq}")
            else:
                dupes += 1
        tx.lock(_lock_key(store, k) for k in {*by_origin, *(n.node_id for n in nodes)})
        self._upsert_nodes(tx, store, row.public_key, nodes)
        known = self._keys(tx, store, sorted(by_origin))
        heads = self._heads(tx, store, sorted(by_origin))
        applied: list[Op] = []
        skipped: dict[str, int] = {}
        for origin in sorted(by_origin):
            got = by_origin[origin]
            if origin not in known:
                raise NotEnrolled(
                    f"ops from node {origin}, which has no certificate of store {store} at HQ "
                    "(send its node record with the batch)"
                )
            key, role = known[origin]
            bad = {op.kind for op in got.values() if op.kind in HQ_ONLY_KINDS}
            if bad and role != "hq":
                raise NotEnrolled(f"node {origin} may not sign {', '.join(sorted(bad))} ops")
            held, head = heads.get(origin, (0, GENESIS))
            old = sorted(s for s in got if s <= held)
            if old:
                stored = {
                    int(s): bytes(b)
                    for s, b in tx.execute(
                        "SELECT seq, body FROM ops WHERE store = ? AND origin = ? "
                        "AND seq >= ? AND seq <= ?",
                        (store, origin, old[0], old[-1]),
                    )
                }
                for s in old:
                    if stored.get(s) != got[s].body:
                        raise Equivocation(f"node {origin} signed two different ops with seq {s}")
                dupes += len(old)
            run: list[Op] = []
            seq = held + 1
            while seq in got:
                run.append(got[seq])
                seq += 1
            rest = len(got) - len(old) - len(run)
            if rest:
                skipped[origin] = rest
            verify_run(run, key, head)
            applied.extend(run)
        batch = self._commit(tx, store, applied, now_ms) if applied else _Batch()
        transfers = frozenset(
            (str(op.payload.get("customer_id")), str(op.payload.get("to")))
            for op in applied
            if op.kind == "escrow.transfer"
        )
        return IngestOutcome(
            applied=len(applied),
            duplicates=dupes,
            skipped=skipped,
            vv=self.vv(store, tx),
            payments=len(batch.payments),
            transfers=transfers,
        )

    def _keys(self, tx: Tx, store: str, ids: Sequence[str]) -> dict[str, tuple[bytes, str]]:
        out: dict[str, tuple[bytes, str]] = {}
        for chunk in _chunks(ids):
            marks = ",".join("?" * len(chunk))
            for node_id, key, role in tx.execute(
                f"SELECT node_id, public_key, role FROM nodes WHERE store = ? "
                f"AND node_id IN ({marks})",
                (store, *chunk),
            ):
                out[str(node_id)] = (bytes(key), str(role))
        return out

    def _heads(self, tx: Tx, store: str, origins: Sequence[str]) -> dict[str, tuple[int, bytes]]:
        out: dict[str, tuple[int, bytes]] = {}
        for chunk in _chunks(origins):
            marks = ",".join("?" * len(chunk))
            for origin, seq, head in tx.execute(
                f"SELECT origin, seq, head FROM heads WHERE store = ? AND origin IN ({marks})",
                (store, *chunk),
            ):
                out[str(origin)] = (int(seq), bytes(head))
        return out

    def _commit(self, tx: Tx, store: str, ops: Sequence[Op], now_ms: int) -> _Batch:
        """Insert ops that continue their chains (checked under lock) and fold them into views."""
        changes = fold(ops)
        batch = _gather(store, ops, changes, now_ms)
        tx.insert_new(
            "ops",
            OP_COLUMNS,
            [(store, o.origin, o.seq, o.hlc, o.kind, o.user, o.body, o.sig) for o in ops],
        )
        last: dict[str, Op] = {}
        for o in ops:
            last[o.origin] = o
        tx.executemany(
            "INSERT INTO heads VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (store, origin) DO UPDATE SET "
            "seq = excluded.seq, head = excluded.head, hlc = excluded.hlc, "
            "updated_ms = excluded.updated_ms",
            [(store, o.origin, o.seq, o.hash, o.hlc, now_ms) for _, o in sorted(last.items())],
        )
        self._apply(tx, store, changes, batch)
        return batch

    def _apply(self, tx: Tx, store: str, ch: Changes, batch: _Batch) -> None:
        if batch.sales:
            tx.insert_new("sales", SALE_COLUMNS, batch.sales)
        if batch.daily:
            sets = ", ".join(f"{f} = sales_daily.{f} + excluded.{f}" for f in DAILY_FIELDS)
            _upsert(
                tx,
                "sales_daily",
                [(s, d, *v) for (s, d), v in sorted(batch.daily.items())],
                f"ON CONFLICT (store, day) DO UPDATE SET {sets}",
            )
        for table, key, col, counter in (
            ("stock", "sku", "qty", ch.stock),
            ("loyalty", "customer_id", "points", ch.points),
        ):
            _upsert(
                tx,
                table,
                sorted((store, k, v) for k, v in counter.items() if v),
                f"ON CONFLICT (store, {key}) DO UPDATE SET {col} = {table}.{col} + excluded.{col}",
            )
        _upsert(
            tx,
            "rights",
            sorted((store, c, n, v) for (c, n), v in ch.rights.items() if v),
            "ON CONFLICT (store, customer_id, node) DO UPDATE SET "
            "points = rights.points + excluded.points",
        )
        latest: dict[tuple[str, str, str], tuple[str, str, str, str, int, str]] = {}
        for r in ch.registers:  # one row per register: a statement may not touch a row twice
            held = latest.get(r[:3])
            if held is None or (r[4], r[5]) > (held[4], held[5]):
                latest[r[:3]] = r
        _upsert(
            tx,
            "registers",
            sorted((store, *r) for r in latest.values()),
            "ON CONFLICT (store, entity, key, field) DO UPDATE SET "
            "value = excluded.value, hlc = excluded.hlc, origin = excluded.origin "
            "WHERE (excluded.hlc, excluded.origin) > (registers.hlc, registers.origin)",
        )
        _upsert(
            tx,
            "payments",
            [(*p[:9], "pending", 0, 0, p[9], "", "", "", 0) for p in batch.payments],
            "ON CONFLICT (store, origin, seq, tender) DO NOTHING",
        )

    # -- HQ's own ops ---------------------------------------------------------------------------

    def emit(
        self, signer: Signer, items: Sequence[tuple[str, str, Payload]], now_ms: int, user: str
    ) -> list[Op]:
        """Sign and store HQ ops `(store, kind, payload)`, all in one transaction."""
        return self.db.run(lambda tx: self.emit_in(tx, signer, items, now_ms, user))

    def emit_in(
        self,
        tx: Tx,
        signer: Signer,
        items: Sequence[tuple[str, str, Payload]],
        now_ms: int,
        user: str,
    ) -> list[Op]:
        stores = sorted({s for s, _, _ in items})
        tx.lock(_lock_key(s, signer.node_id) for s in stores)
        for store in stores:
            row = self._require_store(tx, store)
            if row.hq_cert is None:
                raise NotEnrolled(
                    f"HQ holds no certificate in store {store}: sign HQ's request there "
                    "(`meshpos enroll sign --role hq`) and run `meshpos hq install-cert`"
                )
        out: list[Op] = []
        for store, kind, payload in items:
            top = tx.execute("SELECT MAX(hlc) FROM heads WHERE store = ?", (store,))[0][0]
            held = self._heads(tx, store, [signer.node_id]).get(signer.node_id, (0, GENESIS))
            op = make_op(
                signer,
                store=store,
                seq=held[0] + 1,
                hlc=HLC(int(top or 0)).now(now_ms),
                user=user,
                kind=kind,
                payload=payload,
                prev=held[1],
            )
            self._commit(tx, store, [op], now_ms)
            out.append(op)
        return out

    # -- payments -------------------------------------------------------------------------------

    def claim_payment(self, now_ms: int, stale_ms: int) -> PaymentJob | None:
        """Take one card payment to settle: pending, or claimed by a process that never finished.
        Under PostgreSQL, `SKIP LOCKED` lets several HQ processes take different jobs at once."""

        def fn(tx: Tx) -> PaymentJob | None:
            rows = tx.execute(
                "SELECT p.store, p.origin, p.seq, p.tender, p.sale_id, p.amount, p.last4, p.brand, "
                "p.sealed, p.attempts FROM payments p JOIN stores s ON s.store = p.store "
                "WHERE s.hq_cert IS NOT NULL AND (p.status = 'pending' OR "
                "(p.status = 'working' AND p.claimed_ms < ?)) "
                "ORDER BY p.created_ms, p.store, p.origin, p.seq, p.tender LIMIT 1"
                + self.db.skip_locked.replace("FOR UPDATE", "FOR UPDATE OF p"),
                (now_ms - stale_ms,),
            )
            if not rows:
                return None
            store, origin, seq, tender, sale_id, amount, last4, brand, sealed, attempts = rows[0]
            tx.execute(
                "UPDATE payments SET status = 'working', claimed_ms = ?, attempts = ? "
                "WHERE store = ? AND origin = ? AND seq = ? AND tender = ?",
                (now_ms, int(attempts) + 1, store, origin, seq, tender),
            )
            return PaymentJob(
                store, origin, int(seq), int(tender), sale_id, int(amount), last4, brand,
                bytes(sealed), int(attempts) + 1,
            )  # fmt: skip

        return self.db.run(fn)

    def finish_payment(
        self, signer: Signer, job: PaymentJob, outcome: PaymentOutcome, now_ms: int
    ) -> Op | None:
        """Record the gateway's answer and sign the `payment.result` op for the store (plus the
        blocklist entry in every store for a card the acquirer says to refuse). None if another
        process finished this job first."""

        def fn(tx: Tx) -> Op | None:
            rows = tx.execute(
                "SELECT status, attempts FROM payments WHERE store = ? AND origin = ? AND seq = ? "
                "AND tender = ?" + self.db.for_update,
                (job.store, job.origin, job.seq, job.tender),
            )
            if not rows or rows[0][0] != "working" or int(rows[0][1]) != job.attempt:
                return None
            payload = {
                "sale_id": job.sale_id,
                "sale_op": f"{job.origin}:{job.seq}",
                "tender": job.tender,
                "status": outcome.status,
                "amount": job.amount,
                "code": outcome.code,
                "message": outcome.message,
                "auth_code": outcome.auth_code,
                "card_last4": job.last4,
                "card_brand": job.brand,
            }
            items: list[tuple[str, str, Payload]] = [(job.store, "payment.result", payload)]
            if outcome.block_key:
                items += self._block_items(tx, outcome.block_key, outcome.code, True, now_ms)
            ops = self.emit_in(tx, signer, items, now_ms, "hq-payments")
            tx.execute(
                "UPDATE payments SET status = ?, code = ?, message = ?, auth_code = ?, "
                "result_seq = ?, sealed = ? WHERE store = ? AND origin = ? AND seq = ? "
                "AND tender = ?",
                (
                    outcome.status, outcome.code, outcome.message, outcome.auth_code, ops[0].seq,
                    b"", job.store, job.origin, job.seq, job.tender,
                ),
            )  # fmt: skip
            return ops[0]

        return self.db.run(fn)

    def payments(self, store: str | None = None) -> list[dict[str, Any]]:
        sql = (
            "SELECT store, sale_id, origin, seq, tender, amount, last4, brand, status, code, "
            "message, auth_code, attempts FROM payments"
        )
        params: tuple[Any, ...] = ()
        if store is not None:
            sql += " WHERE store = ?"
            params = (store,)
        return self._dicts(sql + " ORDER BY store, created_ms, origin, seq, tender", params)

    # -- the card blocklist ---------------------------------------------------------------------

    def _block_items(
        self, tx: Tx, key: str, reason: str, blocked: bool, now_ms: int
    ) -> list[tuple[str, str, Payload]]:
        tx.execute(
            "INSERT INTO blocklist VALUES (?, ?, ?, ?) ON CONFLICT (setting_key) DO UPDATE SET "
            "reason = excluded.reason, blocked = excluded.blocked, changed_ms = excluded.changed_ms",
            (key, reason, int(blocked), now_ms),
        )
        value = {"blocked": blocked, "reason": reason, "since_ms": now_ms}
        stores = [r[0] for r in tx.execute("SELECT store FROM stores WHERE hq_cert IS NOT NULL")]
        return [(s, "setting.set", {"key": key, "value": value}) for s in sorted(stores)]

    def set_block(
        self, signer: Signer, key: str, reason: str, blocked: bool, now_ms: int
    ) -> list[Op]:
        def fn(tx: Tx) -> list[Op]:
            items = self._block_items(tx, key, reason, blocked, now_ms)
            return self.emit_in(tx, signer, items, now_ms, "hq")

        return self.db.run(fn)

    def blocklist(self) -> list[dict[str, Any]]:
        return self._dicts(
            "SELECT setting_key, reason, blocked, changed_ms FROM blocklist ORDER BY setting_key"
        )

    def is_blocked(self, key: str) -> bool:
        rows = self.db.run(
            lambda tx: tx.execute("SELECT blocked FROM blocklist WHERE setting_key = ?", (key,)),
            write=False,
        )
        return bool(rows and rows[0][0])

    def blocklist_items(self, store: str) -> list[tuple[str, str, Payload]]:
        """The whole blocklist as setting ops for one store (a store enrolled after entries)."""
        return [
            (store, "setting.set", {"key": k, "value": {"blocked": bool(b), "reason": r,
                                                         "since_ms": int(ms)}})
            for k, r, b, ms in self.db.run(
                lambda tx: tx.execute(
                    "SELECT setting_key, reason, blocked, changed_ms FROM blocklist "
                    "ORDER BY setting_key"
                ),
                write=False,
            )
        ]  # fmt: skip

    # -- loyalty across stores ------------------------------------------------------------------

    def move_points(
        self,
        signer: Signer,
        store: str,
        customer: str,
        points: int,
        node: str,
        now_ms: int,
    ) -> tuple[int, int]:
        """Give node `node` of `store` up to `points` of redemption rights for `customer`, taken
        from rights that nodes of other stores handed to HQ. Returns (moved, still asked).

        HQ is the escrow holder between stores: it burns the points where it holds them
        (`loyalty.adjust -n` signed by HQ in the source store, which also spends HQ's rights
        there), mints them in the target store (`loyalty.adjust +n`, HQ's rights there) and
        transfers those rights to the asking node (`escrow.transfer`). What it cannot move yet
        stays asked, and is moved when rights reach HQ."""
        if points <= 0:
            raise LocalError("points to move must be positive")

        def fn(tx: Tx) -> tuple[int, int]:
            tx.lock([f"loyalty\x00{customer}"])
            self._require_store(tx, store)
            if node not in self._keys(tx, store, [node]):
                raise NotEnrolled(f"node {node} is not enrolled in store {store} at HQ")
            held = tx.execute(
                "SELECT store, points FROM rights WHERE customer_id = ? AND node = ? "
                "AND store != ? AND points > 0 ORDER BY store",
                (customer, signer.node_id, store),
            )
            takes: list[tuple[str, int]] = []
            moved = 0
            for src, pts in held:
                take = min(int(pts), points - moved)
                if take <= 0:
                    break
                takes.append((str(src), take))
                moved += take
            items: list[tuple[str, str, Payload]] = []
            if moved:
                tx.lock(_lock_key(s, signer.node_id) for s in {store, *(s for s, _ in takes)})
                for src, take in takes:
                    items.append(
                        (src, "loyalty.adjust", {"customer_id": customer, "delta": -take,
                                                 "reason": f"moved to store {store} by HQ"})
                    )  # fmt: skip
                items += self._customer_items(tx, store, customer)
                items.append(
                    (store, "loyalty.adjust", {"customer_id": customer, "delta": moved,
                                               "reason": "moved from other stores by HQ"})
                )  # fmt: skip
                items.append(
                    (store, "escrow.transfer", {"customer_id": customer, "to": node,
                                                "points": moved})
                )  # fmt: skip
                self.emit_in(tx, signer, items, now_ms, "hq-loyalty")
            left = points - moved
            tx.execute(
                "DELETE FROM loyalty_asks WHERE store = ? AND customer_id = ? AND node = ?",
                (store, customer, node),
            )
            if left:
                tx.execute(
                    "INSERT INTO loyalty_asks VALUES (?, ?, ?, ?, ?)",
                    (store, customer, node, left, now_ms),
                )
            return moved, left

        return self.db.run(fn)

    def _customer_items(self, tx: Tx, store: str, customer: str) -> list[tuple[str, str, Payload]]:
        """A `customer.upsert` for a store that has never seen this customer, with the profile
        fields HQ knows from other stores."""
        if tx.execute(
            "SELECT 1 FROM registers WHERE store = ? AND entity = 'customer' AND key = ?",
            (store, customer),
        ):
            return []
        fields: dict[str, Any] = {}
        best: dict[str, tuple[int, str]] = {}
        for name, value, hlc, origin in tx.execute(
            "SELECT field, value, hlc, origin FROM registers WHERE entity = 'customer' AND key = ?",
            (customer,),
        ):
            if (int(hlc), str(origin)) > best.get(name, (-1, "")):
                best[name] = (int(hlc), str(origin))
                fields[name] = json.loads(value)
        if not fields:
            return []
        return [(store, "customer.upsert", {"customer_id": customer, "fields": fields})]

    def asks(self) -> list[tuple[str, str, str, int]]:
        return [
            (str(s), str(c), str(n), int(p))
            for s, c, n, p in self.db.run(
                lambda tx: tx.execute(
                    "SELECT store, customer_id, node, points FROM loyalty_asks "
                    "ORDER BY asked_ms, store, customer_id, node"
                ),
                write=False,
            )
        ]

    def asks_for(self, store: str, hq_node: str) -> list[dict[str, Any]]:
        """What the nodes of `store` are asked to hand to HQ: open asks of other stores for
        customers whose rights nodes of this store hold."""
        rows = self.db.run(
            lambda tx: tx.execute(
                "SELECT a.customer_id, a.wanted, r.node, r.points FROM (SELECT customer_id, "
                "CAST(SUM(points) AS BIGINT) AS wanted FROM loyalty_asks WHERE store != ? "
                "GROUP BY customer_id) a "
                "JOIN rights r ON r.customer_id = a.customer_id AND r.store = ? AND r.node != ? "
                "AND r.points > 0 ORDER BY a.customer_id, r.node",
                (store, store, hq_node),
            ),
            write=False,
        )
        out: dict[str, dict[str, Any]] = {}
        for customer, wanted, node, points in rows:
            ask = out.setdefault(
                str(customer), {"customer_id": str(customer), "points": int(wanted), "holders": {}}
            )
            ask["holders"][str(node)] = int(points)
        return list(out.values())

    # -- chain-wide views -----------------------------------------------------------------------

    def _dicts(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        return self.db.run(lambda tx: tx.select(sql, params), write=False)

    def sales_by_day(
        self, store: str | None = None, since: str | None = None, until: str | None = None
    ) -> list[dict[str, Any]]:
        where, params = _where(("store = ?", store), ("day >= ?", since), ("day <= ?", until))
        return self._dicts(
            "SELECT store, day, sales, returns, exchanges, net, tax, discount FROM sales_daily"
            f"{where} ORDER BY store, day",
            params,
        )

    def chain_by_day(
        self, since: str | None = None, until: str | None = None
    ) -> list[dict[str, Any]]:
        where, params = _where(("day >= ?", since), ("day <= ?", until))
        return self._dicts(
            "SELECT day, COUNT(*) AS stores, CAST(SUM(sales) AS BIGINT) AS sales, "
            "CAST(SUM(returns) AS BIGINT) AS returns, "
            "CAST(SUM(exchanges) AS BIGINT) AS exchanges, CAST(SUM(net) AS BIGINT) AS net, "
            "CAST(SUM(tax) AS BIGINT) AS tax FROM sales_daily"
            f"{where} GROUP BY day ORDER BY day",
            params,
        )

    def stock(self, store: str | None = None, sku: str | None = None) -> list[dict[str, Any]]:
        where, params = _where(("s.store = ?", store), ("s.sku = ?", sku))
        rows = self._dicts(
            "SELECT s.store, s.sku, r.value AS name, s.qty FROM stock s LEFT JOIN registers r "
            "ON r.store = s.store AND r.entity = 'product' AND r.key = s.sku AND r.field = 'name'"
            f"{where} ORDER BY s.store, s.sku",
            params,
        )
        for row in rows:
            row["name"] = json.loads(row["name"]) if row["name"] else ""
        return rows

    def loyalty(self, customer: str | None = None) -> list[dict[str, Any]]:
        """Points per customer across every store: the sum of each store's PN-counter."""
        where, params = _where(("customer_id = ?", customer))
        return self._dicts(
            "SELECT customer_id, CAST(SUM(points) AS BIGINT) AS points, COUNT(*) AS stores FROM loyalty"
            f"{where} GROUP BY customer_id ORDER BY customer_id",
            params,
        )

    def loyalty_by_store(self, customer: str | None = None) -> list[dict[str, Any]]:
        where, params = _where(("customer_id = ?", customer))
        return self._dicts(
            f"SELECT store, customer_id, points FROM loyalty{where} ORDER BY customer_id, store",
            params,
        )

    def registers(self, store: str, entity: str) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for row in self._dicts(
            "SELECT key, field, value FROM registers WHERE store = ? AND entity = ? "
            "ORDER BY key, field",
            (store, entity),
        ):
            out.setdefault(row["key"], {})[row["field"]] = json.loads(row["value"])
        return out

    def known_skus(self, store: str) -> set[str]:
        return {
            str(r[0])
            for r in self.db.run(
                lambda tx: tx.execute(
                    "SELECT DISTINCT key FROM registers WHERE store = ? AND entity = 'product'",
                    (store,),
                ),
                write=False,
            )
        }

    def summary(self) -> list[dict[str, Any]]:
        """One row per store: ops held, origins, last upload, sales and takings."""
        return self._dicts(
            "SELECT st.store, st.name, "
            "(SELECT CAST(COALESCE(SUM(h.seq), 0) AS BIGINT) FROM heads h "
            "WHERE h.store = st.store) AS ops, "
            "(SELECT COUNT(*) FROM heads h WHERE h.store = st.store) AS origins, "
            "(SELECT MAX(h.updated_ms) FROM heads h WHERE h.store = st.store) AS last_sync_ms, "
            "(SELECT CAST(COALESCE(SUM(d.sales), 0) AS BIGINT) FROM sales_daily d "
            "WHERE d.store = st.store) "
            "AS sales, "
            "(SELECT CAST(COALESCE(SUM(d.net), 0) AS BIGINT) FROM sales_daily d "
            "WHERE d.store = st.store) AS net, "
            "(SELECT COUNT(*) FROM payments p WHERE p.store = st.store AND p.status = 'pending') "
            "AS card_pending, "
            "(SELECT COUNT(*) FROM payments p WHERE p.store = st.store AND p.status = 'declined') "
            "AS card_declined "
            "FROM stores st ORDER BY st.store"
        )


def _gather(store: str, ops: Sequence[Op], ch: Changes, now_ms: int) -> _Batch:
    """Map the fold's rows onto HQ's tables (store-qualified) and collect card tenders."""
    batch = _Batch()
    for r in ch.rows.get("sales", ()):
        (sale_id, origin, seq, kind, _number, terminal, hlc, ts_ms, user, customer,
         subtotal, discount, tax, total, earned, redeemed, ref) = r  # fmt: skip
        day = day_of(ts_ms)
        batch.sales.append(
            (store, origin, seq, sale_id, kind, day, ts_ms, hlc, terminal, user, customer,
             subtotal, discount, tax, total, earned, redeemed, ref)
        )  # fmt: skip
        counts = batch.daily.setdefault((store, day), [0] * len(DAILY_FIELDS))
        counts[("sale", "return", "exchange").index(kind)] += 1
        counts[3] += total
        counts[4] += tax
        counts[5] += discount
    for op in ops:
        if op.kind not in CARD_KINDS:
            continue
        for i, t in enumerate(op.payload.get("tenders") or ()):
            if not isinstance(t, dict) or t.get("method") != "card":
                continue
            sealed = sealed_from_tender(t)
            if sealed is None:
                continue
            batch.payments.append(
                (store, op.origin, op.seq, i, str(op.payload.get("sale_id")), int(t["amount"]),
                 str(t.get("card_last4") or ""), str(t.get("card_brand") or ""), sealed, now_ms)
            )  # fmt: skip
    return batch


def _upsert(tx: Tx, table: str, rows: Sequence[Sequence[Any]], conflict: str) -> None:
    """`INSERT ... VALUES (..), (..) ... ON CONFLICT ...` in chunks: one statement per few hundred
    rows (rows must not repeat a key), which both databases run far faster than one per row."""
    if not rows:
        return
    width = len(rows[0])
    one = "(" + ", ".join("?" * width) + ")"
    for lo in range(0, len(rows), UPSERT_CHUNK):
        chunk = rows[lo : lo + UPSERT_CHUNK]
        values = ", ".join([one] * len(chunk))
        tx.execute(
            f"INSERT INTO {table} VALUES {values} {conflict}",
            [v for row in chunk for v in row],
        )


def _where(*conds: tuple[str, Any]) -> tuple[str, tuple[Any, ...]]:
    used = [(c, v) for c, v in conds if v is not None]
    if not used:
        return "", ()
    return " WHERE " + " AND ".join(c for c, _ in used), tuple(v for _, v in used)


def _chunks(items: Sequence[str], n: int = 500) -> Iterator[Sequence[str]]:
    for i in range(0, len(items), n):
        yield items[i : i + n]


def _b(value: Any) -> bytes | None:
    return None if value is None else bytes(value)


def parse_vv(value: Any) -> VersionVector:
    if not isinstance(value, dict) or len(value) > 100_000:
        raise EncodingError("version vector must be a map of origin to seq")
    for k, v in value.items():
        if not isinstance(k, str) or not isinstance(v, int) or isinstance(v, bool) or v < 0:
            raise EncodingError("version vector entry is malformed")
    return dict(value)


__all__ = [
    "Database",
    "Equivocation",
    "HQStorage",
    "IngestOutcome",
    "NotEnrolled",
    "NotFound",
    "PaymentJob",
    "PaymentOutcome",
    "StoreRow",
    "Tx",
    "UnknownStore",
    "parse_vv",
]
