"""The op log HQ keeps per store, its version vectors, and the ops HQ signs itself.

Every write runs in one transaction. Concurrency between HQ processes sharing a database is
handled here, not in memory: the ops of one (store, origin) chain are taken under a lock on that
pair (PostgreSQL: a transaction-scoped advisory lock; SQLite: `BEGIN IMMEDIATE`), and under the
store's rulebook lock (`RULEBOOK_LOCK`: its verdicts read across chains), checked against the
stored head, and inserted; a batch sent twice or by two relays at once is stored once. Locks
are always taken in sorted key order in one step, so two transactions never wait on each other in
a cycle. Stored ops are folded into the chain views (views.py) in the same transaction.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from meshpos.core.batching import collector_paused
from meshpos.core.clock import HLC
from meshpos.core.errors import ChainError, EncodingError, WrongStore
from meshpos.core.ops import (
    GENESIS,
    Op,
    Payload,
    Signer,
    check_payloads,
    decode_bodies,
    decode_body,
    decode_ops,
    make_op,
    node_id_of,
    pack,
    verify_run,
    verify_signature,
)
from meshpos.domain.authority import GATED_KINDS, grace_end
from meshpos.domain.cards import SEALED_HASH, blob_matches, carries_hash
from meshpos.domain.enrolment import NodeRecord, admit_record
from meshpos.domain.revocation import REVOKE_KIND, Revoked
from meshpos.domain.staff import Policy
from meshpos.hq.storage.database import Database, SQLValue, Tx, chunks, lock_key, upsert
from meshpos.hq.storage.enrolment import Enrolment, NotEnrolled
from meshpos.hq.storage.judging import (
    RULEBOOK_TABLES,
    HQPast,
    set_staff_since,
    staff_since,
)
from meshpos.hq.storage.schema import OP_COLUMNS
from meshpos.hq.storage.takings import TAKINGS_TABLE
from meshpos.hq.storage.takings import write as write_takings
from meshpos.hq.storage.views import VIEW_TABLES, ViewRows, gather, write_views
from meshpos.ledger.judging import bootstrap_start, judge_batch, may_give_authority, rejudge

VersionVector = dict[str, int]
OpToSign = tuple[str, str, Payload]
"""An op HQ is to sign: (store, kind, payload)."""

REFOLD_BATCH = 5000
RULEBOOK_LOCK = "#rulebook"
"""With `lock_key(store, ...)`: held by every transaction that folds ops of the store. The
rulebook reads across chains (a transfer from one counter gives another authority), so a store's
verdicts are made one transaction at a time, each seeing the ones before; chains of different
stores still ingest in parallel."""


SEALED_HASH_BYTES = SEALED_HASH.encode()
"""Any msgpack encoding of the key that names sealed card data holds these bytes: a signed body
without them carries none, so its tenders are not searched."""


class Equivocation(ChainError):
    """A node signed two different ops with the same seq."""


@dataclass(frozen=True)
class IngestOutcome:
    applied: int
    duplicates: int
    skipped: dict[str, int]
    vv: VersionVector
    payments: int = 0  # card tenders that arrived to be settled
    transfers: frozenset[tuple[str, str]] = frozenset()  # (customer, to) of escrow transfers


def parse_vv(value: object) -> VersionVector:
    """A version vector from the wire, checked."""
    if not isinstance(value, dict) or len(value) > 100_000:
        raise EncodingError("version vector must be a map of origin to seq")
    for k, v in value.items():
        if not isinstance(k, str) or not isinstance(v, int) or isinstance(v, bool) or v < 0:
            raise EncodingError("version vector entry is malformed")
    return dict(value)


def _by_origin(ops: Sequence[Op]) -> tuple[dict[str, dict[int, Op]], int, list[tuple[Op, Op]]]:
    """A batch's ops per origin and seq, how many repeat an op earlier in the batch, and the
    pairs that share an id but differ (judged once the origin's key is at hand)."""
    by_origin: dict[str, dict[int, Op]] = {}
    dupes = 0
    twins: list[tuple[Op, Op]] = []
    for op in ops:
        same = by_origin.setdefault(op.origin, {})
        twin = same.get(op.seq)
        if twin is None:
            same[op.seq] = op
        elif twin.body != op.body:
            twins.append((twin, op))
        else:
            dupes += 1
    return by_origin, dupes, twins


def _equivocation(key: bytes, ops: Sequence[Op]) -> Equivocation:
    """Two different ops with one id are an equivocation only if the origin signed both: anyone
    can forge a variant of an op, and that must not make an honest terminal look dishonest."""
    for op in ops:
        verify_signature(key, op)  # SignatureError: a forgery, refused as such
    op = ops[-1]
    return Equivocation(f"node {op.origin} signed two different ops with seq {op.seq}")


class OpLog:
    """Each store's ops as HQ holds them: ingest from relays, pages for pulls, HQ's own ops."""

    def __init__(self, db: Database, enrolment: Enrolment) -> None:
        self.db = db
        self.enrolment = enrolment

    # -- reading --------------------------------------------------------------------------------

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
            self.enrolment.require(tx, store)
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
        params: tuple[str, ...] = ()
        if store is not None:
            sql += " WHERE store = ?"
            params = (store,)
        return int(self.db.query(sql, params)[0][0])

    def heads(self, tx: Tx, store: str, origins: Sequence[str]) -> dict[str, tuple[int, bytes]]:
        """The last seq and op hash HQ holds of each of these origins' chains."""
        out: dict[str, tuple[int, bytes]] = {}
        for chunk in chunks(origins):
            marks = ",".join("?" * len(chunk))
            for origin, seq, head in tx.execute(
                f"SELECT origin, seq, head FROM heads WHERE store = ? AND origin IN ({marks})",
                (store, *chunk),
            ):
                out[str(origin)] = (int(seq), bytes(head))
        return out

    def _store_heads(self, tx: Tx, store: str) -> dict[str, tuple[int, bytes]]:
        """The last seq and op hash of every chain of the store HQ holds."""
        rows = tx.execute("SELECT origin, seq, head FROM heads WHERE store = ?", (store,))
        return {str(origin): (int(seq), bytes(head)) for origin, seq, head in rows}

    # -- ingest ---------------------------------------------------------------------------------

    def ingest(
        self, store: str, wires: Sequence[bytes], nodes: Sequence[NodeRecord], now_ms: int
    ) -> IngestOutcome:
        """Check a batch like the mesh does and apply what continues each chain; all or nothing.

        Ops at or below HQ's head are duplicates (refused if their bytes differ); ops past a gap
        are not stored and show up in `skipped`, so the relay resends from HQ's vv."""
        ops = decode_ops(wires)
        for op in ops:
            if op.store != store:
                raise WrongStore(f"op {op.origin}:{op.seq} belongs to store {op.store!r}")
        for node in nodes:
            if node.store != store:
                raise WrongStore(f"node {node.node_id} belongs to store {node.store!r}")
            if node_id_of(node.public_key) != node.node_id:
                raise NotEnrolled(f"node {node.node_id} does not match its public key")
        with collector_paused():
            return self.db.run(lambda tx: self._ingest(tx, store, ops, nodes, now_ms))

    def _ingest(
        self, tx: Tx, store: str, ops: Sequence[Op], nodes: Sequence[NodeRecord], now_ms: int
    ) -> IngestOutcome:
        row = self.enrolment.require(tx, store)
        nodes = [n for n in nodes if n.cert is not None]  # a record without one proves nothing
        for node in nodes:
            reason = admit_record(node, row.public_key, store)
            if reason is not None:
                raise NotEnrolled(f"node {node.name} ({node.node_id}): {reason}")
        by_origin, dupes, twins = _by_origin(ops)
        tx.lock(
            lock_key(store, k) for k in {*by_origin, *(n.node_id for n in nodes), RULEBOOK_LOCK}
        )
        presented = sorted({n.node_id for n in nodes})
        before = self.enrolment.keys(tx, store, presented)
        self.enrolment.upsert_nodes(tx, store, row.public_key, nodes)
        # A certificate new to HQ (or a new role) may give authority to ops held without it.
        new_node = bool(presented) and self.enrolment.keys(tx, store, presented) != before
        known = self.enrolment.keys(tx, store, sorted(by_origin))
        for pair in twins:
            if pair[0].origin in known:
                raise _equivocation(known[pair[0].origin][0], pair)
        # Every chain of the store, not only the batch's: the store's lock is held, so its vv
        # afterwards is these heads moved on by the runs applied (no read after the writes).
        heads = self._store_heads(tx, store)
        applied: list[Op] = []
        skipped: dict[str, int] = {}
        for origin in sorted(by_origin):
            got = by_origin[origin]
            if origin not in known:
                raise NotEnrolled(
                    f"ops from node {origin}, which has no certificate of store {store} at HQ "
                    "(send its node record with the batch)"
                )
            run, held = self._continuation(tx, store, origin, got, known[origin], heads.get(origin))
            past_gap = len(got) - held - len(run)
            if past_gap:
                skipped[origin] = past_gap
            dupes += held
            applied.extend(run)
            if run:
                heads[origin] = (run[-1].seq, run[-1].hash)
        check_payloads(applied)
        rows = ViewRows()
        if applied:
            rows = self.commit(tx, store, applied, now_ms, nodes_changed=new_node)
        elif new_node:
            rows.payments = self.rejudge(tx, store, now_ms)
        transfers = frozenset(
            (str(op.payload.get("customer_id")), str(op.payload.get("to")))
            for op in rows.allowed
            if op.kind == "escrow.transfer"
        )
        return IngestOutcome(
            applied=len(applied),
            duplicates=dupes,
            skipped=skipped,
            vv={origin: seq for origin, (seq, _) in heads.items()},
            payments=len(rows.payments),
            transfers=transfers,
        )

    def _continuation(
        self,
        tx: Tx,
        store: str,
        origin: str,
        got: Mapping[int, Op],
        signer: tuple[bytes, str],
        head: tuple[int, bytes] | None,
    ) -> tuple[list[Op], int]:
        """One origin's ops of a batch (by seq): the run that continues HQ's copy of its chain
        (verified), and how many of the batch HQ holds already (their bytes checked against the
        stored ones)."""
        key, _ = signer
        held, prev = head or (0, GENESIS)
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
                    raise _equivocation(key, [got[s]])
        run: list[Op] = []
        seq = held + 1
        while seq in got:
            run.append(got[seq])
            seq += 1
        verify_run(run, key, prev)
        return run, len(old)

    def commit(
        self, tx: Tx, store: str, ops: Sequence[Op], now_ms: int, *, nodes_changed: bool = False
    ) -> ViewRows:
        """Insert ops that continue their chains (checked under lock) and fold them into views
        under the rulebook, as every terminal does: only ops with authority change a view."""
        tx.insert_new(
            "ops",
            OP_COLUMNS,
            [(store, o.origin, o.seq, o.hlc, o.kind, o.user, o.body, o.sig) for o in ops],
        )
        last: dict[str, Op] = {}
        for o in ops:
            last[o.origin] = o
        head_rows: list[tuple[SQLValue, ...]] = [
            (store, o.origin, o.seq, o.hash, o.hlc, now_ms) for _, o in sorted(last.items())
        ]
        upsert(
            tx,
            "heads",
            head_rows,
            "ON CONFLICT (store, origin) DO UPDATE SET seq = excluded.seq, head = excluded.head, "
            "hlc = excluded.hlc, updated_ms = excluded.updated_ms",
        )
        self._keep_sealed(tx, store, ops)
        stale = self._note_staff_start(tx, store, ops) or self._note_revocations(tx, store, ops)
        past = HQPast(tx, store)  # read once for the heirs and the verdicts: the batch is stored
        stale = stale or self._heirs_of(past, ops)
        rows = self._fold(tx, store, ops, now_ms, past)
        if stale:
            rows.payments = self.refold(tx, store, now_ms)
        elif nodes_changed or rows.authority:
            rows.payments += self.rejudge(tx, store, now_ms)
        return rows

    # -- the rulebook ---------------------------------------------------------------------------

    def _keep_sealed(self, tx: Tx, store: str, ops: Sequence[Op]) -> None:
        """Keep the sealed card data that came beside ops (each blob whose hash its op's signed
        body names) until the sale has authority and its payment job takes it over."""
        rows: list[tuple[SQLValue, ...]] = [
            (store, o.origin, o.seq, i, blob)
            for o in ops
            for i, blob in o.sealed.items()
            if blob_matches(o.payload, i, blob)
        ]
        if rows:
            tx.executemany(
                "INSERT INTO sealed VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (store, origin, seq, tender) DO NOTHING",
                rows,
            )

    def _with_sealed(self, tx: Tx, store: str, ops: Sequence[Op]) -> list[Op]:
        """`ops` with the sealed card data kept for them (a sale that gains authority after
        it arrived, a refold), taken out of `sealed`: their payment jobs hold it now."""
        out = []
        for op in ops:
            if SEALED_HASH_BYTES not in op.body or not carries_hash(op):
                out.append(op)
                continue
            if not op.sealed:
                found = tx.execute(
                    "SELECT tender, blob FROM sealed WHERE store = ? AND origin = ? AND seq = ?",
                    (store, op.origin, op.seq),
                )
                if found:
                    op = op.with_sealed({int(i): bytes(b) for i, b in found})
            tx.execute(
                "DELETE FROM sealed WHERE store = ? AND origin = ? AND seq = ?",
                (store, op.origin, op.seq),
            )
            out.append(op)
        return out

    def _fold(
        self, tx: Tx, store: str, ops: Sequence[Op], now_ms: int, past: HQPast | None = None
    ) -> ViewRows:
        changes, allowed = judge_batch(ops, past or HQPast(tx, store))
        allowed = self._with_sealed(tx, store, allowed)
        rows = gather(store, allowed, changes, now_ms)
        write_views(tx, store, changes, rows)
        write_takings(tx, store, changes, rows.days)
        rows.allowed = allowed
        rows.authority = may_give_authority(changes)
        return rows

    def rejudge(self, tx: Tx, store: str, now_ms: int) -> list[tuple[SQLValue, ...]]:
        """The fixpoint: fold the store's ops held without authority that have it now. Returns
        the card payments it queued (a sale that gained authority), for the caller to settle."""
        queued: list[tuple[SQLValue, ...]] = []
        while True:
            past = HQPast(tx, store)
            held = past.held_without_authority()
            if not held:
                return queued
            changes, flipped, reworded = rejudge(held, past)
            past.forget(flipped, reworded)
            flipped = self._with_sealed(tx, store, flipped)
            rows = gather(store, flipped, changes, now_ms)
            write_views(tx, store, changes, rows)
            write_takings(tx, store, changes, rows.days)
            queued += rows.payments
            if not flipped:
                return queued

    def _note_staff_start(self, tx: Tx, store: str, ops: Sequence[Op]) -> bool:
        """Move the store's staff start earlier if a bootstrap user op says so; whether the views
        must be refolded for it (see `Ledger._note_staff_start`: the same rule)."""
        if not any(o.kind == "user.upsert" for o in ops):
            return False
        past = HQPast(tx, store)
        found = bootstrap_start(ops, past.prev_hlc)
        held = staff_since(tx, store)
        if found is None or (held is not None and found >= held):
            return False
        set_staff_since(tx, store, found)
        kinds = sorted(GATED_KINDS)
        marks = ",".join("?" * len(kinds))
        late = tx.execute(
            f"SELECT 1 FROM ops WHERE store = ? AND hlc >= ? AND kind IN ({marks}) LIMIT 1",
            (store, grace_end(found, Policy()), *kinds),
        )
        return bool(late)

    def _note_revocations(self, tx: Tx, store: str, ops: Sequence[Op]) -> bool:
        """Whether a revocation of the batch takes effect from ops already held: then the
        store's views are refolded (see `Ledger._note_revocations`: the same rule)."""
        named = {o.payload.get("node") for o in ops if o.kind == REVOKE_KIND}
        if not named:
            return False
        for node, rev in HQPast(tx, store).revocations().items():
            if node in named and rev.to:
                return True
            if node in named and tx.execute(
                "SELECT 1 FROM ops WHERE store = ? AND origin = ? AND seq > ? LIMIT 1",
                (store, node, rev.after_seq),
            ):
                return True
        return False

    def _heirs_of(self, past: HQPast, ops: Sequence[Op]) -> bool:
        """Whether the batch holds ops of a retired node (see `Ledger._heirs_of`)."""
        retired = {n for n, rev in past.revocations().items() if rev.to}
        return any(o.origin in retired for o in ops)

    def revocations(self, store: str) -> dict[str, Revoked]:
        """The revocation in force for each revoked node of the store."""
        return self.db.run(lambda tx: HQPast(tx, store).revocations())

    def revoked_counts(self, stores: Sequence[str]) -> dict[str, int]:
        """Terminals revoked per store (a retirement into a successor is not counted), read in
        one transaction for a page that lists every store."""

        def count(tx: Tx) -> dict[str, int]:
            return {
                s: sum(1 for r in HQPast(tx, s).revocations().values() if not r.retired_only)
                for s in stores
            }

        return self.db.run(count, write=False)

    def refold(self, tx: Tx, store: str, now_ms: int) -> list[tuple[SQLValue, ...]]:
        """Fold a store's views again from its ops (an upgrade, a staff start moved earlier).
        Card payments keep their settlement; the store's ops are read in chunks per origin.
        Returns the card payments of sales with authority (those already settled stay so)."""
        queued: list[tuple[SQLValue, ...]] = []
        for table in (*VIEW_TABLES, *RULEBOOK_TABLES, TAKINGS_TABLE):
            tx.execute(f"DELETE FROM {table} WHERE store = ?", (store,))
        users = [
            decode_body(bytes(b), bytes(s))
            for b, s in tx.execute(
                "SELECT body, sig FROM ops WHERE store = ? AND kind = 'user.upsert'", (store,)
            )
        ]
        set_staff_since(tx, store, bootstrap_start(users, HQPast(tx, store).prev_hlc))
        retired = {n for n, rev in HQPast(tx, store).revocations().items() if rev.to}
        heads = sorted(self.vv(store, tx).items())
        # Retired nodes first: their successors' spends are judged by what they inherit.
        for origin, top in sorted(heads, key=lambda item: item[0] not in retired):
            for lo in range(1, top + 1, REFOLD_BATCH):
                chunk = tx.execute(
                    "SELECT body, sig FROM ops WHERE store = ? AND origin = ? AND seq >= ? "
                    "AND seq < ? ORDER BY seq",
                    (store, origin, lo, lo + REFOLD_BATCH),
                )
                ops = decode_bodies((bytes(b), bytes(s)) for b, s in chunk)
                queued += self._fold(tx, store, ops, now_ms).payments
        return queued + self.rejudge(tx, store, now_ms)

    def refold_all(self, tx: Tx, now_ms: int) -> None:
        """Every store's views folded again (an HQ database from before the rulebook)."""
        for (store,) in tx.execute("SELECT store FROM stores ORDER BY store"):
            self.refold(tx, str(store), now_ms)

    # -- HQ's own ops ---------------------------------------------------------------------------

    def emit(self, signer: Signer, items: Sequence[OpToSign], now_ms: int, user: str) -> list[Op]:
        """Sign and store HQ ops, all in one transaction."""
        return self.db.run(lambda tx: self.emit_in(tx, signer, items, now_ms, user))

    def emit_in(
        self, tx: Tx, signer: Signer, items: Sequence[OpToSign], now_ms: int, user: str
    ) -> list[Op]:
        """`emit` inside a transaction the caller holds (with what it checked or wrote)."""
        stores = sorted({s for s, _, _ in items})
        tx.lock(lock_key(s, k) for s in stores for k in (signer.node_id, RULEBOOK_LOCK))
        for store in stores:
            row = self.enrolment.require(tx, store)
            if row.hq_cert is None:
                raise NotEnrolled(
                    f"HQ holds no certificate in store {store}: sign HQ's request there "
                    "(`meshpos enroll sign --role hq`) and run `meshpos hq install-cert`"
                )
        out: list[Op] = []
        for store, kind, payload in items:
            top = tx.execute("SELECT MAX(hlc) FROM heads WHERE store = ?", (store,))[0][0]
            held = self.heads(tx, store, [signer.node_id]).get(signer.node_id, (0, GENESIS))
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
            self.commit(tx, store, [op], now_ms)
            out.append(op)
        return out
