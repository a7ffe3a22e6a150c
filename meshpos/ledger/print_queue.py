"""The persistent print queue: one node-local table in the node's SQLite database.

A receipt job is inserted in the transaction that records its sale, so a sale and its receipt
commit together or not at all, and a crash, a dead printer or a restart loses neither. Jobs print
strictly in order: `drain` only ever takes the oldest unfinished job, and stops at it while it
waits out its backoff, so a later receipt never overtakes an earlier one.

Exactly once, per job: a job is claimed (state `printing`, with the claimant and time) in one
committed transaction before any byte goes out, and marked `printed` after the printer took it. Two
processes draining the same database (the daemon and a CLI command) therefore never both print
a job. The one window left is a process dying after the printer took the bytes and before the
`printed` commit: the claim's lease then expires and the job prints again, flagged as possibly a
duplicate (`interrupted`), because a customer without a receipt is worse than one with two.

Failover: `forward` hands waiting jobs to a peer terminal (state `forwarding`); the daemon sends
them (meshpos/service/printing.py) until the peer acknowledges that it has queued them under their
`source` key, which is unique there, so a resent job is queued at most once.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from meshpos.core.errors import InputError, MeshposError
from meshpos.ledger.records import WriteTx

BACKOFF_BASE_MS = 1_000
BACKOFF_CAP_MS = 60_000
# Longer than any print can take (connect 2 s + write 10 s by default): a claim older than this
# belongs to a process that died mid-print.
LEASE_MS = 60_000


class JobState(StrEnum):
    WAITING = "waiting"
    PRINTING = "printing"
    PRINTED = "printed"
    FORWARDING = "forwarding"
    FORWARDED = "forwarded"
    FAILED = "failed"


OPEN_STATES = (JobState.WAITING, JobState.PRINTING, JobState.FORWARDING, JobState.FAILED)


class JobKind(StrEnum):
    RECEIPT = "receipt"
    REPRINT = "reprint"
    REPORT = "report"


class PrintError(MeshposError):
    """A job that can never print (its document is damaged); it is set aside, not retried."""


@dataclass(frozen=True)
class PrintJob:
    id: int
    kind: str
    sale_id: str | None
    origin: str | None
    seq: int | None
    doc: dict[str, Any]
    state: JobState
    attempts: int
    next_try_ms: int
    created_ms: int
    printed_ms: int | None
    last_error: str
    via: str | None
    source: str | None
    interrupted: bool

    @classmethod
    def from_row(cls, row: sqlite3.Row | tuple[Any, ...], names: Sequence[str]) -> PrintJob:
        r = dict(zip(names, row, strict=True))
        try:
            doc = json.loads(r["doc"])
        except ValueError:
            doc = {}
        return cls(
            id=r["id"],
            kind=r["kind"],
            sale_id=r["sale_id"],
            origin=r["origin"],
            seq=r["seq"],
            doc=doc if isinstance(doc, dict) else {},
            state=JobState(r["state"]),
            attempts=r["attempts"],
            next_try_ms=r["next_try_ms"],
            created_ms=r["created_ms"],
            printed_ms=r["printed_ms"],
            last_error=r["last_error"],
            via=r["via"],
            source=r["source"],
            interrupted=bool(r["interrupted"]),
        )

    def summary(self) -> dict[str, Any]:
        """The job as `meshpos print queue --json` shows it (the document left out)."""
        return {
            "id": self.id,
            "kind": self.kind,
            "sale_id": self.sale_id,
            "state": str(self.state),
            "attempts": self.attempts,
            "next_try_ms": self.next_try_ms,
            "created_ms": self.created_ms,
            "printed_ms": self.printed_ms,
            "via": self.via,
            "source": self.source,
            "last_error": self.last_error,
        }


@dataclass(frozen=True)
class DrainResult:
    """What one `drain` did: the jobs printed, the printer fault that stopped it (if any), the
    jobs set aside as unprintable, and what is left: how many, when the next try is due, and why
    the oldest is still waiting (its last error, also when this drain did not try it)."""

    printed: tuple[PrintJob, ...]
    error: str | None
    broken: tuple[PrintJob, ...]
    waiting: int
    next_try_ms: int | None
    head_error: str = ""


def backoff_ms(attempts: int, base_ms: int = BACKOFF_BASE_MS, cap_ms: int = BACKOFF_CAP_MS) -> int:
    """Delay before the next try after `attempts` failed ones: 1 s, 2 s, 4 s ... capped at 60 s."""
    if attempts <= 0:
        return 0
    return min(cap_ms, base_ms << min(attempts - 1, 30))


PrintFn = Callable[[PrintJob], None]


class PrintQueue:
    """The print_jobs table (meshpos/ledger/schema.py) over the ledger's connection, as
    `Ledger.print_queue`.

    `write` is the ledger's, so `enqueue` called inside a sale's transaction commits with the
    sale. Not thread-safe, like the Ledger it belongs to.
    """

    def __init__(self, conn: sqlite3.Connection, write: WriteTx) -> None:
        self.conn = conn
        self._write = write
        self._names = [d[1] for d in self.conn.execute("PRAGMA table_info(print_jobs)")]

    # -- writing jobs ---------------------------------------------------------------------------

    def enqueue(
        self,
        kind: str,
        doc: dict[str, Any],
        *,
        now_ms: int,
        sale_id: str | None = None,
        origin: str | None = None,
        seq: int | None = None,
    ) -> int:
        with self._write():
            cur = self.conn.execute(
                "INSERT INTO print_jobs (kind, sale_id, origin, seq, doc, state, created_ms) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (kind, sale_id, origin, seq, _dump(doc), JobState.WAITING, now_ms),
            )
            return int(cur.lastrowid or 0)

    def accept_remote(
        self, source: str, kind: str, doc: dict[str, Any], *, now_ms: int, sale_id: str | None
    ) -> tuple[int, bool]:
        """Queue a job a peer sent us, once per `source` however often it is resent; returns
        (job id, whether it is new)."""
        with self._write():
            cur = self.conn.execute(
                "INSERT OR IGNORE INTO print_jobs "
                "(kind, sale_id, doc, state, created_ms, source) VALUES (?, ?, ?, ?, ?, ?)",
                (kind, sale_id, _dump(doc), JobState.WAITING, now_ms, source),
            )
            new = cur.rowcount == 1
            row = self.conn.execute(
                "SELECT id FROM print_jobs WHERE source = ?", (source,)
            ).fetchone()
            return int(row[0]), new

    # -- reading --------------------------------------------------------------------------------

    def get(self, job_id: int) -> PrintJob | None:
        rows = self._select("WHERE id = ?", (job_id,))
        return rows[0] if rows else None

    def jobs(self, states: Sequence[str] | None = OPEN_STATES, limit: int = 1000) -> list[PrintJob]:
        """Jobs in `states` (default: not yet done), oldest first; None for every state, newest
        `limit` of them."""
        if states is None:
            rows = self._select("ORDER BY id DESC LIMIT ?", (limit,))
            return rows[::-1]
        marks = ",".join("?" * len(states))
        return self._select(f"WHERE state IN ({marks}) ORDER BY id LIMIT ?", (*states, limit))

    def for_sale(self, sale_id: str) -> list[PrintJob]:
        return self._select("WHERE sale_id = ? ORDER BY id", (sale_id,))

    def counts(self) -> dict[str, int]:
        return {
            str(state): int(n)
            for state, n in self.conn.execute(
                "SELECT state, COUNT(*) FROM print_jobs GROUP BY state"
            )
        }

    def _select(self, where: str, params: Sequence[Any]) -> list[PrintJob]:
        cols = ", ".join(self._names)
        return [
            PrintJob.from_row(row, self._names)
            for row in self.conn.execute(f"SELECT {cols} FROM print_jobs {where}", params)
        ]

    # -- printing -------------------------------------------------------------------------------

    def claim_next(self, now_ms: int, owner: str, lease_ms: int = LEASE_MS) -> PrintJob | None:
        """Claim the oldest unfinished job if it may print now; None if there is none, if it is
        waiting out its backoff, or if another process is printing it."""
        with self._write():
            head = self._select(
                "WHERE state IN (?, ?) ORDER BY id LIMIT 1", (JobState.WAITING, JobState.PRINTING)
            )
            if not head:
                return None
            job = head[0]
            interrupted = job.interrupted
            if job.state is JobState.PRINTING:
                row = self.conn.execute(
                    "SELECT claimed_ms FROM print_jobs WHERE id = ?", (job.id,)
                ).fetchone()
                if (row[0] or 0) + lease_ms > now_ms:
                    return None
                interrupted = True
            elif job.next_try_ms > now_ms:
                return None
            self.conn.execute(
                "UPDATE print_jobs SET state = ?, claim = ?, claimed_ms = ?, "
                "attempts = attempts + 1, interrupted = ? WHERE id = ?",
                (JobState.PRINTING, owner, now_ms, int(interrupted), job.id),
            )
        claimed = self.get(job.id)
        assert claimed is not None
        return claimed

    def mark_printed(self, job_id: int, now_ms: int) -> None:
        with self._write():
            self.conn.execute(
                "UPDATE print_jobs SET state = ?, printed_ms = ?, claim = NULL, last_error = '' "
                "WHERE id = ?",
                (JobState.PRINTED, now_ms, job_id),
            )

    def mark_failed(
        self, job_id: int, now_ms: int, error: str, *, interrupted: bool = False
    ) -> int:
        """The printer could not take it: wait with backoff. Returns the next try time.
        `interrupted`: the attempt may have printed it whole, so the next one says so."""
        with self._write():
            row = self.conn.execute(
                "SELECT attempts FROM print_jobs WHERE id = ?", (job_id,)
            ).fetchone()
            next_try = now_ms + backoff_ms(int(row[0]))
            self.conn.execute(
                "UPDATE print_jobs SET state = ?, next_try_ms = ?, last_error = ?, claim = NULL, "
                "interrupted = MAX(interrupted, ?) WHERE id = ?",
                (JobState.WAITING, next_try, error, int(interrupted), job_id),
            )
        return next_try

    def mark_broken(self, job_id: int, error: str) -> None:
        with self._write():
            self.conn.execute(
                "UPDATE print_jobs SET state = ?, last_error = ?, claim = NULL WHERE id = ?",
                (JobState.FAILED, error, job_id),
            )

    def retry_now(self) -> int:
        """Make every waiting job due now (`meshpos print retry`); returns how many."""
        with self._write():
            cur = self.conn.execute(
                "UPDATE print_jobs SET next_try_ms = 0 WHERE state = ?", (JobState.WAITING,)
            )
            return cur.rowcount

    def drain(
        self,
        now_ms: int,
        print_job: PrintFn,
        *,
        owner: str = "drain",
        unavailable: type[Exception] = MeshposError,
        max_jobs: int | None = None,
    ) -> DrainResult:
        """Print due jobs in order through `print_job` until the queue is empty, the head job is
        not due, or the printer fails (`unavailable`: the job waits with backoff). A job whose
        document cannot be printed (PrintError or InputError) is set aside as failed."""
        printed: list[PrintJob] = []
        broken: list[PrintJob] = []
        error: str | None = None
        while max_jobs is None or len(printed) < max_jobs:
            job = self.claim_next(now_ms, owner)
            if job is None:
                break
            try:
                print_job(job)
            except (PrintError, InputError) as exc:
                self.mark_broken(job.id, str(exc))
                broken.append(job)
                continue
            except unavailable as exc:
                self.mark_failed(job.id, now_ms, str(exc))
                error = str(exc)
                break
            except BaseException:
                self.mark_failed(job.id, now_ms, "printing was interrupted", interrupted=True)
                raise
            self.mark_printed(job.id, now_ms)
            printed.append(job)
        waiting = self.jobs((JobState.WAITING, JobState.PRINTING))
        return DrainResult(
            printed=tuple(printed),
            error=error,
            broken=tuple(broken),
            waiting=len(waiting),
            next_try_ms=waiting[0].next_try_ms if waiting else None,
            head_error=waiting[0].last_error if waiting else "",
        )

    # -- failover -------------------------------------------------------------------------------

    def forward(self, via: str, now_ms: int) -> list[PrintJob]:
        """Hand every waiting job (not one being printed now) to peer `via`, in order."""
        with self._write():
            ids = [
                int(r[0])
                for r in self.conn.execute(
                    "SELECT id FROM print_jobs WHERE state = ? ORDER BY id", (JobState.WAITING,)
                )
            ]
            self.conn.executemany(
                "UPDATE print_jobs SET state = ?, via = ?, next_try_ms = ?, last_error = '' "
                "WHERE id = ?",
                [(JobState.FORWARDING, via, now_ms, i) for i in ids],
            )
        return [job for i in ids if (job := self.get(i)) is not None]

    def forwarding(self, now_ms: int | None = None) -> list[PrintJob]:
        """Jobs handed to a peer and not yet acknowledged; with `now_ms`, only those due a
        (re)send."""
        if now_ms is None:
            return self._select("WHERE state = ? ORDER BY id", (JobState.FORWARDING,))
        return self._select(
            "WHERE state = ? AND next_try_ms <= ? ORDER BY id", (JobState.FORWARDING, now_ms)
        )

    def forward_sent(self, job_ids: Sequence[int], next_try_ms: int) -> None:
        with self._write():
            self.conn.executemany(
                "UPDATE print_jobs SET next_try_ms = ?, attempts = attempts + 1 "
                "WHERE id = ? AND state = ?",
                [(next_try_ms, i, JobState.FORWARDING) for i in job_ids],
            )

    def forward_acked(self, job_id: int, peer: str, now_ms: int) -> bool:
        """The peer `via` has queued the job: it is theirs to print now."""
        with self._write():
            cur = self.conn.execute(
                "UPDATE print_jobs SET state = ?, printed_ms = ? "
                "WHERE id = ? AND state = ? AND via = ?",
                (JobState.FORWARDED, now_ms, job_id, JobState.FORWARDING, peer),
            )
            return cur.rowcount == 1

    def forward_refused(self, job_id: int, peer: str, reason: str) -> bool:
        """The peer said it did not queue the job: it waits for our own printer again."""
        with self._write():
            cur = self.conn.execute(
                "UPDATE print_jobs SET state = ?, via = NULL, next_try_ms = 0, last_error = ? "
                "WHERE id = ? AND state = ? AND via = ?",
                (JobState.WAITING, reason, job_id, JobState.FORWARDING, peer),
            )
            return cur.rowcount == 1


def _dump(doc: dict[str, Any]) -> str:
    return json.dumps(doc, separators=(",", ":"), sort_keys=True)
