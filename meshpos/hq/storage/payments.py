"""Settling card payments taken offline: the tenders sealed at a till wait in `payments` (added by
the views' fold) until an HQ process claims one, asks the acquirer, and signs the result.

A job is claimed in one transaction and finished in another, so a process that dies in between
leaves it `working`; after `stale_ms` any process may claim it again, and a result is recorded
only by the process holding the latest claim. Under PostgreSQL, `SKIP LOCKED` lets several HQ
processes take different jobs at once.
"""

from __future__ import annotations

from dataclasses import dataclass

from meshpos.core.ops import Op, Signer
from meshpos.hq.storage.blocklist import Blocklist
from meshpos.hq.storage.database import Database, Tx
from meshpos.hq.storage.log import OpLog, OpToSign


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


class Settlement:
    def __init__(self, db: Database, log: OpLog, blocklist: Blocklist) -> None:
        self.db = db
        self.log = log
        self.blocklist = blocklist

    def claim(self, now_ms: int, stale_ms: int) -> PaymentJob | None:
        """Take one card payment to settle: pending, or claimed by a process that never finished."""

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

    def finish(
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
            items: list[OpToSign] = [(job.store, "payment.result", payload)]
            if outcome.block_key:
                items += self.blocklist.record(tx, outcome.block_key, outcome.code, True, now_ms)
            ops = self.log.emit_in(tx, signer, items, now_ms, "hq-payments")
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
