"""The SQLite adapter: the durable op log, version vector, pending gaps and live views.

One database file per node, WAL mode, `synchronous=FULL`: an op insert and its view updates commit in
one transaction, so a crash never leaves a view that disagrees with the log, and every sale that was
reported is on disk. Several processes (the daemon, a CLI command) may write the same file: every
write is a `BEGIN IMMEDIATE` transaction, and the next local seq is read inside it.

`Ledger` is the one object the layers above hold, and the only code that speaks SQL to a node's
database. Reads and writes beyond the log are grouped by concern in their own modules and reached
from it: `views` (catalogue, stock, customers, sales, rights, conflicts), `reports`, `staff` (users
and PIN lockouts), `print_queue`, `escrow_asks`, `peer_acks` and `parked`.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from multiprocessing import current_process, get_context
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from meshpos.core.batching import collector_paused
from meshpos.core.errors import ChainError, EncodingError, MeshposError, RemoteError, WrongStore
from meshpos.core.ops import (
    GENESIS,
    Op,
    Payload,
    Signer,
    check_payloads,
    decode_bodies,
    decode_body,
    make_op,
    node_id_of,
    verify_run,
)
from meshpos.domain.authority import GATED_KINDS, grace_end
from meshpos.domain.cards import blob_matches
from meshpos.domain.enrolment import NodeRecord
from meshpos.domain.revocation import REVOKE_KIND, Revoked
from meshpos.domain.staff import Policy
from meshpos.ledger import body_codec, commit_watch
from meshpos.ledger.apply import apply_changes
from meshpos.ledger.body_codec import BodyStore
from meshpos.ledger.encryption import connect_encrypted, create_owner_only, remove_db_files
from meshpos.ledger.escrow_asks import EscrowAsks
from meshpos.ledger.giftcards import GiftCardViews
from meshpos.ledger.history import CustomerHistory
from meshpos.ledger.judging import (
    NodePast,
    bootstrap_start,
    judge_batch,
    may_give_authority,
    node_roles,
    rejudge,
)
from meshpos.ledger.other_stores import OtherStores
from meshpos.ledger.parked import ParkedCarts
from meshpos.ledger.peer_acks import PeerAcks, advisory_acks
from meshpos.ledger.print_queue import PrintQueue
from meshpos.ledger.records import IngestResult, LogWindow
from meshpos.ledger.reports import Reports
from meshpos.ledger.schema import (
    ADDED_COLUMNS,
    RETIRED_TABLES,
    SALE_TAX_VIEW,
    VIEW_TABLES,
    moves_ddl,
    node_ddl,
    view_ddl,
)
from meshpos.ledger.staff import StaffStore
from meshpos.ledger.transfers import TransferViews
from meshpos.ledger.views import Views

__all__ = ["IngestResult", "Ledger", "NodeRecord", "RawOp", "VersionVector", "open_connection"]

RawOp = tuple[bytes, bytes]
VersionVector = dict[str, int]
Progress = Callable[[int], None]
"""Told how many ops a long walk over the log (a refold) has done so far."""

RULEBOOK = "1"
"""`meta.rulebook`: the views were folded under the rulebook (meshpos/domain/authority.py). A
database from before gets its views refolded when it is first opened."""


def open_connection(path: str, key: bytes | None = None) -> sqlite3.Connection:
    """A connection to a node database: plain `sqlite3`, or SQLCipher keyed before its first read
    when `key` is given (see meshpos/ledger/encryption.py). Any second connection a process opens to
    a node's database must come from here, or it cannot read an encrypted one."""
    if key is None:
        return sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn: sqlite3.Connection = connect_encrypted(path, key)
    return conn


class Ledger:
    """One node's replica. Not thread-safe: one Ledger per thread, any number per file.

    Authenticity gates the log: `ingest` refuses what is not signed by an enrolled node or does
    not continue its chain. Authority gates the fold: every op stored, local or foreign, is
    judged by the rulebook (meshpos/domain/authority.py) and changes the views only with
    authority; the others are kept in `unauthorised`, each a conflict, and judged again after
    every batch that could give them authority."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        store: str,
        *,
        durable: bool = True,
        key: bytes | None = None,
    ) -> None:
        self.path = str(path)
        self.store = store
        self.key = key
        create_owner_only(self.path)
        self.conn = open_connection(self.path, key)
        self.conn.execute("PRAGMA busy_timeout = 30000")
        if self.path != ":memory:":
            self.conn.execute("PRAGMA journal_mode = WAL")
        self.conn.execute(f"PRAGMA synchronous = {'FULL' if durable else 'OFF'}")
        self._depth = 0
        self._stored_ops = False
        self.bodies = BodyStore(self.conn)
        with self.write():
            before = {r[0] for r in self.conn.execute("SELECT name FROM sqlite_master")}
            for stmt in node_ddl():
                self.conn.execute(stmt)
            row = self.conn.execute("SELECT value FROM meta WHERE key = 'store'").fetchone()
            if row is None:
                self.conn.execute("INSERT INTO meta VALUES ('store', ?)", (store,))
            elif row[0] != store:
                raise WrongStore(f"database {self.path} belongs to store {row[0]!r}, not {store!r}")
            self._upgrade_views(before)
            self._upgrade()
        if self.conn.execute("SELECT 1 FROM meta WHERE key = 'refold'").fetchone():
            self.rebuild()
        self.views = Views(self.conn)
        self.reports = Reports(self.views)
        self.staff = StaffStore(self.conn, self.write)
        self.print_queue = PrintQueue(self.conn, self.write)
        self.escrow_asks = EscrowAsks(self.conn, self.write)
        self.peer_acks = PeerAcks(self.conn, self.write)
        self.other_stores = OtherStores(self.conn, self.write)
        self.transfers = TransferViews(self.conn)
        self.giftcards = GiftCardViews(self.conn)
        self.history = CustomerHistory(self.conn)
        self.parked = ParkedCarts(self.conn, self.write)

    def close(self) -> None:
        self.conn.close()

    def _upgrade_views(self, tables_before: set[str]) -> None:
        """A database made by an older meshpos: add the view columns it lacks, drop the view
        tables since retired (`sale_tax`, now a view of `sale_lines`), and mark its views for
        one refold when a view table or column is new while the log holds ops (a new table
        would otherwise miss the rows of every op folded before it existed; the refold also
        drops the `stock_moves` rows a sale wrote before its lines were its moves)."""
        added = False
        for table, column, definition in ADDED_COLUMNS:
            have = {r[1] for r in self.conn.execute(f"PRAGMA main.table_info({table})")}
            if column not in have:
                self.conn.execute(f"ALTER TABLE main.{table} ADD COLUMN {column} {definition}")
                added = True
        for table in RETIRED_TABLES:
            kind = self.conn.execute(
                "SELECT type FROM main.sqlite_master WHERE name = ?", (table,)
            ).fetchone()
            if kind == ("table",):
                self.conn.execute(f"DROP TABLE main.{table}")
                added = True
        for stmt in moves_ddl():
            self.conn.execute(stmt)
        self.conn.execute(SALE_TAX_VIEW)
        fresh = tables_before and not set(VIEW_TABLES) <= tables_before
        if (added or fresh) and self.conn.execute("SELECT 1 FROM ops LIMIT 1").fetchone():
            self.conn.execute("INSERT OR REPLACE INTO meta VALUES ('refold', '1')")

    # -- transactions ---------------------------------------------------------------------------

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """A write transaction; nested uses join the outer one."""
        if self._depth:
            self._depth += 1
            try:
                yield self.conn
            finally:
                self._depth -= 1
            return
        self.conn.execute("BEGIN IMMEDIATE")
        self._depth = 1
        self._stored_ops = False
        started = time.perf_counter()
        try:
            yield self.conn
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        else:
            if self._stored_ops:
                self.bodies.keep_up()
            self.conn.execute("COMMIT")
            if commit_watch.watchers:
                commit_watch.committed(time.perf_counter() - started, self._stored_ops)
        finally:
            self._depth = 0

    # -- nodes ----------------------------------------------------------------------------------

    def add_node(self, node: NodeRecord) -> None:
        if node_id_of(node.public_key) != node.node_id:
            raise RemoteError(f"node {node.node_id} does not match its public key")
        if node.store != self.store:
            raise WrongStore(
                f"node {node.node_id} belongs to store {node.store!r}, not {self.store!r}"
            )
        with self.write():
            self.conn.execute(
                "INSERT INTO nodes VALUES (?, ?, ?, ?, ?) ON CONFLICT(node_id) DO UPDATE SET "
                "name = excluded.name, cert = COALESCE(excluded.cert, nodes.cert)",
                node.as_row(),
            )

    def nodes(self) -> list[NodeRecord]:
        return [NodeRecord(*row) for row in self.conn.execute("SELECT * FROM nodes ORDER BY name")]

    def public_key(self, node_id: str) -> bytes | None:
        row = self.conn.execute(
            "SELECT public_key FROM nodes WHERE node_id = ?", (node_id,)
        ).fetchone()
        return row[0] if row else None

    def hq_origins(self) -> set[str]:
        """Nodes whose certificate has role `hq`."""
        return {n for n, role in node_roles(self.conn).items() if role == "hq"}

    # -- this node's own state ------------------------------------------------------------------

    def set_bootstrapping(self, on: bool) -> None:
        """Hold (or release) signing at a node that lost its database, until its peers gave it
        back its own earlier ops (a flag in `meta`, seen by every process on the file)."""
        with self.write():
            if on:
                self.conn.execute("INSERT OR REPLACE INTO meta VALUES ('bootstrap', '1')")
            else:
                self.conn.execute("DELETE FROM meta WHERE key = 'bootstrap'")

    def note_revoked(self, reason: str, peer: str) -> None:
        """A peer refused this node as revoked (its word only: the op may come later). Kept in
        `meta`, node-local, so every process on the file stops signing."""
        with self.write():
            self.conn.execute(
                "INSERT OR REPLACE INTO meta VALUES ('revoked', ?)", (f"{peer}\n{reason}",)
            )

    def revoked_notice(self) -> Revoked | None:
        row = self.conn.execute("SELECT value FROM meta WHERE key = 'revoked'").fetchone()
        if row is None:
            return None
        peer, _, reason = str(row[0]).partition("\n")
        return Revoked("", -1, reason, f"peer {peer}")

    def bootstrapping(self) -> bool:
        row = self.conn.execute("SELECT 1 FROM meta WHERE key = 'bootstrap'").fetchone()
        return row is not None

    # -- version vectors ------------------------------------------------------------------------

    def vv(self) -> VersionVector:
        return dict(self.conn.execute("SELECT origin, seq FROM vv").fetchall())

    def head(self, origin: str) -> tuple[int, bytes]:
        row = self.conn.execute("SELECT seq, head FROM vv WHERE origin = ?", (origin,)).fetchone()
        return (row[0], row[1]) if row else (0, GENESIS)

    def max_hlc(self, below: int | None = None) -> int:
        """The highest HLC held; with `below`, of the ops stamped under it."""
        if below is None:
            row = self.conn.execute("SELECT MAX(hlc) FROM ops").fetchone()
        else:
            row = self.conn.execute("SELECT MAX(hlc) FROM ops WHERE hlc < ?", (below,)).fetchone()
        return int(row[0] or 0)

    def pending_count(self) -> int:
        return int(self.conn.execute("SELECT COUNT(*) FROM pending").fetchone()[0])

    def gaps(self) -> dict[str, int]:
        """Per origin, the lowest seq held past a gap: what to ask peers for again."""
        return dict(self.conn.execute("SELECT origin, MIN(seq) FROM pending GROUP BY origin"))

    # -- local writes ---------------------------------------------------------------------------

    def append(
        self,
        signer: Signer,
        *,
        kind: str,
        payload: Payload,
        user: str,
        hlc: int,
        sealed: Mapping[int, bytes] | None = None,
    ) -> Op:
        """Sign a new local op, store it and fold it, in one durable transaction. `sealed`: the
        sealed card data that travels beside it (meshpos/domain/cards.py: `detach_sealed`)."""
        with self.write():
            seq, prev = self.head(signer.node_id)
            op = make_op(
                signer,
                store=self.store,
                seq=seq + 1,
                hlc=hlc,
                user=user,
                kind=kind,
                payload=payload,
                prev=prev,
            )
            if sealed:
                op = op.with_sealed(dict(sealed))
            self._commit_ops([op])
        return op

    def _commit_ops(self, ops: Sequence[Op], nodes_changed: bool = False) -> None:
        """Store authentic ops and fold them under the rulebook (one transaction, the caller's)."""
        self._stored_ops = True
        self.conn.executemany(
            "INSERT INTO ops VALUES (?, ?, ?, ?, ?, ?, ?)",
            [
                (o.origin, o.seq, o.hlc, o.user, o.kind, self.bodies.store(o.body), o.sig)
                for o in ops
            ],
        )
        last: dict[str, Op] = {}
        for o in ops:
            last[o.origin] = o
        self.conn.executemany(
            "INSERT INTO vv VALUES (?, ?, ?) ON CONFLICT(origin) DO UPDATE SET "
            "seq = excluded.seq, head = excluded.head",
            [(o.origin, o.seq, o.hash) for o in last.values()],
        )
        kept = self._keep_sealed(ops)
        stale = self._note_staff_start(ops) or self._note_revocations(ops) or self._heirs_of(ops)
        changes, _ = judge_batch(ops, NodePast(self.conn))
        apply_changes(self.conn, changes)
        if stale:
            self._refold("main")
        elif nodes_changed or may_give_authority(changes):
            self._rejudge("main")
        if kept or any(o.kind == "payment.result" for o in ops):
            self._forget_answered()

    # -- sealed card data (meshpos/domain/cards.py) ------------------------------------------------

    def _keep_sealed(self, ops: Sequence[Op]) -> bool:
        """Keep the sealed card data that came beside ops (only a blob whose hash the op's
        signed body carries: anything else is dropped)."""
        rows = [
            (o.origin, o.seq, i, blob)
            for o in ops
            for i, blob in o.sealed.items()
            if blob_matches(o.payload, i, blob)
        ]
        if rows:
            self.conn.executemany("INSERT OR IGNORE INTO sealed VALUES (?, ?, ?, ?)", rows)
        return bool(rows)

    def _forget_answered(self) -> None:
        """Secure deletion once authorised: the sealed card data of every card tender HQ has
        answered (a `payment.result` with authority in the views) is deleted, its pages
        overwritten; the signed op keeps only its hash."""
        self.conn.execute("PRAGMA secure_delete = ON")
        try:
            self.conn.execute(
                "DELETE FROM sealed WHERE EXISTS (SELECT 1 FROM registers r WHERE "
                "r.entity = 'payment' AND r.field = 'sale_op' AND "
                "r.value = '\"' || sealed.origin || ':' || sealed.seq || '\"' AND "
                "r.key LIKE '%#' || sealed.tender)"
            )
        finally:
            self.conn.execute("PRAGMA secure_delete = OFF")

    def _check_sealed(self) -> list[str]:
        """Each sealed card blob held is the one its signed op names by hash."""
        problems = []
        for (origin, seq), blobs in self.sealed_blobs().items():
            op = self.get(origin, seq)
            for i, blob in blobs.items():
                if op is None or not blob_matches(op.payload, i, blob):
                    problems.append(f"sealed card data of op {origin}:{seq} #{i} is not its own")
        return problems

    def sealed_blobs(self) -> dict[tuple[str, int], dict[int, bytes]]:
        """The sealed card data held, by op: what is still waiting for HQ's answer (few)."""
        out: dict[tuple[str, int], dict[int, bytes]] = {}
        for origin, seq, tender, blob in self.conn.execute("SELECT * FROM sealed"):
            out.setdefault((str(origin), int(seq)), {})[int(tender)] = bytes(blob)
        return out

    def sealed_status(self) -> dict[str, int]:
        """For `verify`: sealed card tenders whose data is held (awaiting HQ) and those HQ
        answered, whose data was deleted (the signed op keeps its hash)."""
        held = self.conn.execute("SELECT COUNT(*) FROM sealed").fetchone()[0]
        answered = self.conn.execute(
            "SELECT COUNT(*) FROM registers WHERE entity = 'payment' AND field = 'status'"
        ).fetchone()[0]
        return {"held_awaiting_hq": int(held), "answered": int(answered)}

    # -- the rulebook ---------------------------------------------------------------------------

    def staff_since(self) -> int | None:
        """HLC of the store's first bootstrap user: before it nothing needs approval."""
        row = self.conn.execute("SELECT value FROM meta WHERE key = 'staff_since'").fetchone()
        return int(row[0]) if row else None

    def _set_staff_since(self, since: int | None) -> None:
        self.conn.execute("DELETE FROM meta WHERE key = 'staff_since'")
        if since is not None:
            self.conn.execute("INSERT INTO meta VALUES ('staff_since', ?)", (str(since),))

    def _note_staff_start(self, ops: Sequence[Op]) -> bool:
        """Move the staff start earlier if a bootstrap user op of the batch says so; whether ops
        already folded may have lost their authority by it (the one input of the rulebook that
        is not monotone: see meshpos/domain/authority.py), so the views must be refolded."""
        if not any(o.kind == "user.upsert" for o in ops):
            return False
        found = bootstrap_start(ops, NodePast(self.conn).prev_hlc)
        held = self.staff_since()
        if found is None or (held is not None and found >= held):
            return False
        self._set_staff_since(found)
        marks = ",".join("?" * len(GATED_KINDS))
        late = self.conn.execute(
            f"SELECT 1 FROM ops WHERE hlc >= ? AND kind IN ({marks}) LIMIT 1",
            (grace_end(found, Policy()), *sorted(GATED_KINDS)),
        ).fetchone()
        return late is not None

    def _note_revocations(self, ops: Sequence[Op]) -> bool:
        """Whether a revocation of the batch takes effect from ops already held, which may have
        been folded with authority, or retires a node into another: then the views must be
        refolded (revocations are not monotone, see meshpos/domain/revocation.py)."""
        named = {o.payload.get("node") for o in ops if o.kind == REVOKE_KIND}
        if not named:
            return False
        for node, rev in NodePast(self.conn).revocations().items():
            if node not in named:
                continue
            if rev.to:  # a retirement: its balances move to the successor
                return True
            later = "SELECT 1 FROM ops WHERE origin = ? AND seq > ? LIMIT 1"
            if self.conn.execute(later, (node, rev.after_seq)).fetchone():
                return True
        return False

    def _heirs_of(self, ops: Sequence[Op]) -> bool:
        """Whether the batch holds ops of a retired node: they change what its successor
        inherited, up or down, so the views are refolded."""
        if not self.conn.execute(f"SELECT 1 FROM ops WHERE kind = '{REVOKE_KIND}'").fetchone():
            return False
        retired = {n for n, rev in self.revocations().items() if rev.to}
        return any(o.origin in retired for o in ops)

    def revocations(self) -> dict[str, Revoked]:
        """The revocation in force for each revoked node, from the revocation ops held."""
        return NodePast(self.conn).revocations()

    def _scan_staff_since(self) -> int | None:
        rows = self.conn.execute(
            "SELECT origin, seq, body, sig FROM ops WHERE kind = 'user.upsert' ORDER BY hlc"
        ).fetchall()
        ops = decode_bodies((self.bodies.restore(b, o, q), s) for o, q, b, s in rows)
        return bootstrap_start(ops, NodePast(self.conn).prev_hlc)

    def _rejudge(self, schema: str) -> None:
        """The fixpoint: fold the ops held without authority that have it now, until none does."""
        while True:
            past = NodePast(self.conn, schema)
            held = past.held_without_authority()
            if not held:
                return
            changes, flipped, reworded = rejudge(held, past)
            past.forget(flipped, reworded)
            apply_changes(self.conn, changes, schema)
            if not flipped:
                return

    def _refold(self, schema: str) -> list[str]:
        for table in VIEW_TABLES:
            self.conn.execute(f"DELETE FROM {schema}.{table}")
        return self._fold_all(schema, 5000)

    def _upgrade(self) -> None:
        """A database from before the rulebook: note its staff start and refold its views."""
        if self.conn.execute("SELECT 1 FROM meta WHERE key = 'rulebook'").fetchone():
            return
        if self.conn.execute("SELECT 1 FROM ops LIMIT 1").fetchone():
            self._set_staff_since(self._scan_staff_since())
            problems = self._refold("main")
            if problems:
                raise MeshposError("upgrading the views stopped: " + "; ".join(problems[:3]))
            self.conn.execute("DELETE FROM meta WHERE key = 'refold'")  # done just now
        self.conn.execute("INSERT INTO meta VALUES ('rulebook', ?)", (RULEBOOK,))

    # -- merging foreign ops --------------------------------------------------------------------

    def ingest(self, ops: Iterable[Op], nodes: Iterable[NodeRecord] = ()) -> IngestResult:
        """Merge ops from elsewhere. All of it is checked before anything is written: on any error
        the whole call changes nothing. Ops past a gap are kept in `pending` until it is filled."""
        with collector_paused(), self.write():
            nodes = list(nodes)
            roles = node_roles(self.conn) if nodes else {}
            for node in nodes:
                self.add_node(node)
            # A certificate that names a role not known before may give ops authority (HQ's).
            new_role = bool(nodes) and node_roles(self.conn) != roles
            by_origin: dict[str, dict[int, Op]] = {}
            dupes = 0
            for op in ops:
                if op.store != self.store:
                    raise WrongStore(
                        f"op {op.origin}:{op.seq} belongs to store {op.store!r}, not {self.store!r}"
                    )
                same = by_origin.setdefault(op.origin, {})
                twin = same.get(op.seq)
                if twin is None:
                    same[op.seq] = op
                    continue
                if twin.body != op.body:
                    raise ChainError(f"node {op.origin} signed two different ops with seq {op.seq}")
                dupes += 1
            applied: list[Op] = []
            parked: list[Op] = []
            for origin in sorted(by_origin):
                got = by_origin[origin]
                key = self.public_key(origin)
                if key is None:
                    raise RemoteError(f"ops from unknown node {origin}: it is not enrolled here")
                held, head = self.head(origin)
                old = [seq for seq in got if seq <= held]
                dupes += len(old)
                self._check_duplicates(origin, [got[s] for s in old])
                fresh = {seq: op for seq, op in got.items() if seq > held}
                waiting = self._pending(origin)
                for seq, op in fresh.items():
                    if seq in waiting:
                        if waiting[seq].body != op.body:
                            raise ChainError(
                                f"node {origin} signed two different ops with seq {seq}"
                            )
                        dupes += 1
                merged = {**fresh, **waiting}
                run: list[Op] = []
                seq = held + 1
                while seq in merged:
                    run.append(merged.pop(seq))
                    seq += 1
                verify_run(run, key, head)
                for segment in _segments(sorted(merged.values(), key=lambda o: o.seq)):
                    verify_run(segment, key, None)
                applied.extend(run)
                parked.extend(op for op in merged.values() if op.seq not in waiting)
                if run:
                    self.conn.execute(
                        "DELETE FROM pending WHERE origin = ? AND seq <= ?", (origin, run[-1].seq)
                    )
            check_payloads(applied)
            check_payloads(parked)
            if parked:
                self.conn.executemany(
                    "INSERT OR IGNORE INTO pending VALUES (?, ?, ?, ?)",
                    [(o.origin, o.seq, o.body, o.sig) for o in parked],
                )
                self._keep_sealed(parked)
            if applied:
                self._commit_ops(applied, nodes_changed=new_role)
            elif new_role:
                self._rejudge("main")
        return IngestResult(
            applied=len(applied),
            duplicates=dupes,
            pending=len(parked),
            max_hlc=max((o.hlc for o in applied), default=0),
            applied_ops=tuple(applied),
        )

    def _pending(self, origin: str) -> dict[int, Op]:
        return {
            seq: decode_body(body, sig)
            for seq, body, sig in self.conn.execute(
                "SELECT seq, body, sig FROM pending WHERE origin = ?", (origin,)
            )
        }

    def _check_duplicates(self, origin: str, ops: list[Op]) -> None:
        for op in ops:
            row = self.conn.execute(
                "SELECT body FROM ops WHERE origin = ? AND seq = ?", (origin, op.seq)
            ).fetchone()
            if row is not None and self.bodies.restore(row[0], origin, op.seq) != op.body:
                raise ChainError(f"node {origin} signed two different ops with seq {op.seq}")

    # -- reading the log ------------------------------------------------------------------------

    def raw_since(
        self, theirs: Mapping[str, int], limit: int | None = None
    ) -> list[tuple[str, int, bytes, bytes]]:
        """Ops the holder of version vector `theirs` lacks, per origin in seq order."""
        out: list[tuple[str, int, bytes, bytes]] = []
        for origin, seq in sorted(self.vv().items()):
            have = theirs.get(origin, 0)
            if seq <= have:
                continue
            room = -1 if limit is None else limit - len(out)
            if room == 0:
                break
            out.extend(
                (origin, s, self.bodies.restore(body, origin, s), sig)
                for s, body, sig in self.conn.execute(
                    "SELECT seq, body, sig FROM ops WHERE origin = ? AND seq > ? "
                    "ORDER BY seq LIMIT ?",
                    (origin, have, room),
                )
            )
        return out

    def ops_since(self, theirs: Mapping[str, int], limit: int | None = None) -> list[Op]:
        """Ops the holder of `theirs` lacks, with the sealed card data held beside them."""
        blobs = self.sealed_blobs()
        ops = decode_bodies((b, s) for _, _, b, s in self.raw_since(theirs, limit))
        if not blobs:
            return ops
        return [op.with_sealed(beside) if (beside := blobs.get(op.id)) else op for op in ops]

    def get(self, origin: str, seq: int) -> Op | None:
        row = self.conn.execute(
            "SELECT body, sig FROM ops WHERE origin = ? AND seq = ?", (origin, seq)
        ).fetchone()
        return decode_body(self.bodies.restore(row[0], origin, seq), row[1]) if row else None

    def tail(self, n: int = 20) -> list[Op]:
        rows = self.conn.execute(
            "SELECT origin, seq, body, sig FROM ops ORDER BY hlc DESC, origin DESC LIMIT ?", (n,)
        ).fetchall()
        return decode_bodies((self.bodies.restore(b, o, q), s) for o, q, b, s in reversed(rows))

    def op_count(self) -> int:
        return int(self.conn.execute("SELECT COALESCE(SUM(seq), 0) FROM vv").fetchone()[0])

    @contextmanager
    def snapshot(self) -> Iterator[None]:
        """A read transaction: every read inside sees one state, whatever others commit."""
        self.conn.execute("BEGIN")
        try:
            yield
        finally:
            self.conn.execute("COMMIT")

    def hlc_window(self, origin: str, lo_hlc: int, hi_hlc: int) -> LogWindow | None:
        """`origin`'s ops from the first to the last whose HLC is in [lo_hlc, hi_hlc), with the
        hash of the op before them (the chain anchor); None if it has none in the range."""
        first, last = self.conn.execute(
            "SELECT MIN(seq), MAX(seq) FROM ops WHERE origin = ? AND hlc >= ? AND hlc < ?",
            (origin, lo_hlc, hi_hlc),
        ).fetchone()
        if first is None:
            return None
        before = self.get(origin, first - 1) if first > 1 else None
        raw = self.conn.execute(
            "SELECT seq, body, sig FROM ops WHERE origin = ? AND seq BETWEEN ? AND ? ORDER BY seq",
            (origin, first, last),
        ).fetchall()
        anchor = before.hash if before is not None else GENESIS
        bodies = tuple((self.bodies.restore(b, origin, q), s) for q, b, s in raw)
        return LogWindow(first, last, anchor, bodies)

    def query(self, sql: str, params: Sequence[Any] | Mapping[str, Any] = ()) -> list[sqlite3.Row]:
        cur = self.conn.execute(sql, params)
        names = [d[0] for d in cur.description or ()]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]  # type: ignore[misc]

    # -- the database file ----------------------------------------------------------------------

    @property
    def changes(self) -> int:
        """A count that moves with every write through this ledger (cheap; for caches)."""
        return self.conn.total_changes

    def signatures(self) -> dict[tuple[str, int], bytes]:
        """Every held op's signature by (origin, seq): what the simulator checks its ground
        truth against."""
        return {
            (o, q): bytes(sig)
            for o, q, sig in self.conn.execute("SELECT origin, seq, sig FROM ops")
        }

    def clone_into(self, other: Ledger) -> None:
        """Copy this whole database into `other` (in-memory ledgers in the simulator)."""
        self.conn.backup(other.conn)

    def advisory_acks(self) -> AbstractContextManager[PeerAcks]:
        """`peer_acks` through a second connection that never fsyncs (see `advisory_acks`)."""
        return advisory_acks(open_connection(self.path, self.key))

    def data_version(self) -> int:
        """Changes when another connection commits to the file (cheap to poll)."""
        return int(self.conn.execute("PRAGMA data_version").fetchone()[0])

    def quick_check(self) -> list[str]:
        """SQLite's own page-level check; the problems found (empty: sound)."""
        rows = self.conn.execute("PRAGMA quick_check").fetchall()
        return [f"quick_check: {r[0]}" for r in rows if r[0] != "ok"]

    def checkpoint(self) -> bool:
        """Merge the WAL into the database file and empty it; whether all of it was (not while
        another connection reads or writes)."""
        busy, _, _ = self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        return not busy

    def copy_to(self, dest: Path) -> None:
        """A consistent copy of the database into new file `dest`, under the same key, while
        other connections go on committing.

        In WAL mode, the files' bytes: inside a read transaction, which keeps checkpoints from
        writing anything newer than this reader's snapshot into the database file and the WAL
        from restarting, the database file and then its WAL are copied as they are. Every page
        the database file may gain meanwhile is in the WAL copied after it, and opening the
        copy replays that WAL up to its last whole commit: the database as of one commit, the
        one read or a later one. No page is decrypted and encrypted again (SQLCipher's pages are
        copied as ciphertext: 5x faster than the backup API on an encrypted database).
        Otherwise (in memory, a URI, a rollback journal, inside a write) the online backup API,
        in one step."""
        dest.unlink(missing_ok=True)
        remove_db_files(dest)
        mode = self.conn.execute("PRAGMA journal_mode").fetchone()[0]
        in_files = self.path != ":memory:" and not self.path.startswith("file:")
        if not in_files or str(mode).lower() != "wal" or self._depth:
            target = open_connection(str(dest), self.key)
            try:
                self.conn.backup(target)
            finally:
                target.close()
            return
        with self.snapshot():
            self.conn.execute("SELECT COUNT(*) FROM sqlite_schema").fetchone()
            for suffix in ("", "-wal"):
                source = Path(self.path + suffix)
                if source.exists():
                    create_owner_only(str(dest) + suffix)
                    shutil.copyfile(source, str(dest) + suffix)

    # -- verify and rebuild ---------------------------------------------------------------------

    def verify(
        self,
        *,
        every_signature: bool = False,
        batch: int = 5000,
        workers: int | None = None,
        progress: Progress | None = None,
    ) -> list[str]:
        """Check every hash chain, the signatures, and that each view equals a fresh fold of the
        log. Returns the problems found (empty means the ledger is sound). `progress` is told
        how many ops have been refolded so far, after each batch.

        With `every_signature`, each op's signature is checked by `workers` processes (default:
        one per core for a log of `PARALLEL_MIN` ops or more on disk, 0 = in this process), each
        from its own read-only connection, while this process refolds the views: Ed25519 holds
        the GIL, so threads would not overlap."""
        problems: list[str] = []
        scratch = self._scratch_path()
        try:
            self.conn.execute("ATTACH DATABASE ? AS fresh", (scratch,))
            self.conn.execute("PRAGMA fresh.synchronous = OFF")
            self.conn.execute("PRAGMA fresh.journal_mode = OFF")
            for stmt in view_ddl("fresh").split(";"):
                if stmt.strip():
                    self.conn.execute(stmt)
            # One read transaction: the fold and the comparison see the same snapshot of the log
            # and views, however much a running daemon commits meanwhile.
            self.conn.execute("BEGIN")
            try:
                with self._signature_checks(every_signature, workers) as signatures:
                    since = self._scan_staff_since()
                    if since != self.staff_since():
                        problems.append(
                            f"the staff start noted is {self.staff_since()}, the log says {since}"
                        )
                    problems += self._fold_all("fresh", batch, progress)
                    problems += self._compare("fresh")
                    problems += self._check_sealed()
                    problems += signatures.problems()
            finally:
                self.conn.execute("COMMIT")
        finally:
            self.conn.execute("DETACH DATABASE fresh")
            for suffix in ("", "-journal"):
                Path(scratch + suffix).unlink(missing_ok=True)
        return problems

    def verify_log(self, *, every_signature: bool = False, workers: int | None = None) -> list[str]:
        """The log alone, views not refolded: each origin's hash chain from genesis to the head
        the version vector names, its head's signature (which through the chain authenticates
        every body and signature before it; each op's with `every_signature`), no op outside the
        chains, and the sealed card data. What a backup proves before it is sealed: the views
        are a fold of the log, rebuilt and checked in full at restore.

        The chain is checked on the stored bytes, one SELECT per origin and a SHA-256 per op:
        prev is the last field of the signed body, so no body is decoded but the head's."""
        problems: list[str] = []
        self.conn.execute("BEGIN")
        try:
            with self._signature_checks(every_signature, workers) as signatures:
                heads = self.conn.execute("SELECT origin, seq, head FROM vv ORDER BY origin")
                for origin, held, head in heads.fetchall():
                    key = self.public_key(origin)
                    if key is None:
                        problems.append(f"origin {origin} has ops but no known key")
                        continue
                    problems += self._check_chain(origin, held, head, key)
                stored, chained = self.conn.execute(
                    "SELECT (SELECT COUNT(*) FROM ops), (SELECT COALESCE(SUM(seq), 0) FROM vv)"
                ).fetchone()
                if stored != chained:
                    problems.append(
                        f"the log holds {stored} ops, the version vector's chains {chained}"
                    )
                problems += self._check_sealed()
                problems += signatures.problems()
        finally:
            self.conn.execute("COMMIT")
        return problems

    def _check_chain(self, origin: str, held: int, head: bytes, key: bytes) -> list[str]:
        expected, seq = GENESIS, 0
        last: tuple[bytes, bytes] | None = None
        cursor = self.conn.execute(
            "SELECT seq, body, sig FROM ops WHERE origin = ? ORDER BY seq", (origin,)
        )
        restore = self.bodies.restore
        while rows := cursor.fetchmany(10_000):
            for stored_seq, stored, sig in rows:
                seq += 1
                if stored_seq != seq:
                    return [f"origin {origin}: the log lacks op {origin}:{seq}"]
                try:
                    body = restore(stored, origin, seq)
                except EncodingError as exc:
                    return [str(exc)]
                if body[-34:] != _PREV_TAG + expected:
                    return [
                        f"op {origin}:{seq} does not follow the op before it "
                        "(an op was removed or altered)"
                    ]
                expected = hashlib.sha256(body + sig).digest()
            last = (body, sig)
        if seq != held or expected != head:
            return [f"origin {origin}: log ends at seq {seq}, version vector says {held}"]
        if last is None:
            return []
        try:
            op = decode_body(*last)
            if (op.origin, op.seq) != (origin, seq):
                raise ChainError(f"op {origin}:{seq} holds the body of {op.origin}:{op.seq}")
            verify_run([op], key, None)
        except (RemoteError, EncodingError) as exc:
            return [str(exc)]
        return []

    @contextmanager
    def _signature_checks(self, wanted: bool, workers: int | None) -> Iterator[SignatureChecks]:
        """Every op's signature, checked beside whatever runs in the block (see `verify`)."""
        tasks: list[SignatureTask] = []
        if wanted:
            for origin, held in self.conn.execute("SELECT origin, seq FROM vv ORDER BY origin"):
                key = self.public_key(origin)
                tasks += [
                    SignatureTask(origin, key, lo, min(lo + SIGNATURE_CHUNK - 1, held))
                    for lo in range(1, held + 1, SIGNATURE_CHUNK)
                    if key is not None
                ]
        if workers is None:
            total = sum(t.hi - t.lo + 1 for t in tasks)
            workers = (os.cpu_count() or 1) if total >= PARALLEL_MIN else 0
        # A daemonic process (the daemon's backup child) may not start processes.
        apart = self.path != ":memory:" and not self.path.startswith("file:")
        apart = apart and not current_process().daemon
        checks = SignatureChecks(self.conn, self.path, self.key, tasks, workers if apart else 0)
        with checks:
            yield checks

    def rebuild(self, batch: int = 5000, progress: Progress | None = None) -> None:
        """Drop and refold every view from the op log (`progress` as for `verify`)."""
        with self.write():
            self._set_staff_since(self._scan_staff_since())
            for table in VIEW_TABLES:
                self.conn.execute(f"DELETE FROM main.{table}")
            problems = self._fold_all("main", batch, progress)
            if problems:
                raise MeshposError("rebuild stopped: " + "; ".join(problems[:3]))
            self.conn.execute("DELETE FROM meta WHERE key = 'refold'")

    def _scratch_path(self) -> str:
        base = Path(self.path).parent if self.path != ":memory:" else Path("/tmp")
        return str(base / f".verify-{os.getpid()}-{id(self)}.db")

    def _fold_all(self, schema: str, batch: int, progress: Progress | None = None) -> list[str]:
        with collector_paused():
            return self._fold_each(schema, batch, progress)

    def _fold_each(self, schema: str, batch: int, progress: Progress | None) -> list[str]:
        problems: list[str] = []
        done = 0
        retired = {n for n, rev in self.revocations().items() if rev.to}
        heads = self.conn.execute("SELECT origin, seq, head FROM vv ORDER BY origin").fetchall()
        # Retired nodes first: their successors' spends are judged by what they inherit.
        for origin, held, head in sorted(heads, key=lambda row: row[0] not in retired):
            key = self.public_key(origin)
            if key is None:
                problems.append(f"origin {origin} has ops but no known key")
                continue
            prev = GENESIS
            last_seq = 0
            cursor = self.conn.execute(
                "SELECT seq, body, sig FROM ops WHERE origin = ? ORDER BY seq", (origin,)
            )
            while rows := cursor.fetchmany(batch):
                try:
                    ops = decode_bodies(
                        (self.bodies.restore(body, origin, seq), sig) for seq, body, sig in rows
                    )
                    verify_run(ops, key, prev)
                except (RemoteError, EncodingError) as exc:
                    problems.append(str(exc))
                    break
                prev, last_seq = ops[-1].hash, ops[-1].seq
                apply_changes(self.conn, judge_batch(ops, NodePast(self.conn, schema))[0], schema)
                done += len(ops)
                if progress is not None:
                    progress(done)
            if last_seq != held or prev != head:
                problems.append(
                    f"origin {origin}: log ends at seq {last_seq}, version vector says {held}"
                )
        self._rejudge(schema)
        return problems

    def _compare(self, schema: str) -> list[str]:
        problems = []
        for table in VIEW_TABLES:
            if self._same_rows(table, schema):
                continue
            for a, b, label in (
                ("main", schema, "only in the live view"),
                (schema, "main", "missing from the live view"),
            ):
                rows = self.conn.execute(
                    f"SELECT * FROM {a}.{table} EXCEPT SELECT * FROM {b}.{table} LIMIT 3"
                ).fetchall()
                for row in rows:
                    problems.append(f"{table}: {label}: {row}")
        return problems

    def _same_rows(self, table: str, schema: str) -> bool:
        """Whether `table` holds the same rows in `main` and `schema`, by counting: both sides
        hold n rows and n rows of main find their twin (equal in every column) in `schema` by
        primary key. Four times faster than two EXCEPTs, which run only to name the rows that
        differ when this says no (and for a table without a primary key)."""
        info = self.conn.execute(f"PRAGMA main.table_info({table})").fetchall()
        keys = [row[1] for row in info if row[5]]
        if not keys:
            return False
        on = " AND ".join(
            f"a.{name} = b.{name}" if name in keys else f"a.{name} IS b.{name}"
            for name in (row[1] for row in info)
        )
        mine, theirs, twins = self.conn.execute(
            f"SELECT (SELECT COUNT(*) FROM main.{table}), (SELECT COUNT(*) FROM {schema}.{table}), "
            f"(SELECT COUNT(*) FROM main.{table} a JOIN {schema}.{table} b ON {on})"
        ).fetchone()
        return bool(mine == theirs == twins)


_PREV_TAG = b"\xc4\x20"
"""msgpack's header of a 32-byte bin: the prev hash that ends every op body (meshpos/core/ops.py)."""

SIGNATURE_CHUNK = 50_000
"""Ops per task of the every-signature check."""

PARALLEL_MIN = 20_000
"""From this many ops, the every-signature check runs in worker processes (starting one costs
~0.5 s of imports, some 4,000 signature checks)."""


@dataclass(frozen=True)
class SignatureTask:
    """Ops `lo`..`hi` of `origin`, whose signatures are checked against `public_key`."""

    origin: str
    public_key: bytes
    lo: int
    hi: int


def check_signatures(conn: sqlite3.Connection, task: SignatureTask) -> list[str]:
    """Each op's signature over its signed body bytes (restored, nothing decoded); the first
    bad one."""
    verifier = Ed25519PublicKey.from_public_bytes(task.public_key)
    rows = conn.execute(
        "SELECT seq, body, sig FROM ops WHERE origin = ? AND seq BETWEEN ? AND ?",
        (task.origin, task.lo, task.hi),
    )
    for seq, body, sig in rows:
        try:
            verifier.verify(sig, body_codec.restore(body, task.origin, seq, conn))
        except EncodingError as exc:
            return [str(exc)]
        except (InvalidSignature, ValueError):
            return [
                f"op {task.origin}:{seq} has a signature that does not verify against its "
                "origin's key"
            ]
    return []


def _check_signatures_apart(path: str, key: bytes | None, task: SignatureTask) -> list[str]:
    """`check_signatures` in a worker process, from its own read-only connection."""
    conn = open_connection(path, key)
    try:
        conn.execute("PRAGMA query_only = 1")
        conn.execute("PRAGMA busy_timeout = 30000")
        return check_signatures(conn, task)
    finally:
        conn.close()


class SignatureChecks:
    """The every-signature check of a verify: with workers, started in processes when the block
    is entered and gathered by `problems()`; without, run by `problems()` on the verify's own
    connection (inside its read transaction)."""

    def __init__(
        self,
        conn: sqlite3.Connection,
        path: str,
        key: bytes | None,
        tasks: list[SignatureTask],
        workers: int,
    ) -> None:
        self._conn, self._path, self._key, self._tasks = conn, path, key, tasks
        self._workers = min(workers, len(tasks))
        self._pool: ProcessPoolExecutor | None = None
        self._futures: list[Future[list[str]]] = []

    def __enter__(self) -> SignatureChecks:
        if self._workers:
            self._pool = ProcessPoolExecutor(self._workers, mp_context=get_context("spawn"))
            self._futures = [
                self._pool.submit(_check_signatures_apart, self._path, self._key, t)
                for t in self._tasks
            ]
        return self

    def problems(self) -> list[str]:
        if self._pool is None:
            return [p for t in self._tasks for p in check_signatures(self._conn, t)]
        return [p for f in self._futures for p in f.result()]

    def __exit__(self, *exc: object) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)


def _segments(ops: list[Op]) -> Iterator[list[Op]]:
    run: list[Op] = []
    for op in ops:
        if run and op.seq != run[-1].seq + 1:
            yield run
            run = []
        run.append(op)
    if run:
        yield run
