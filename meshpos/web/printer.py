"""The web till's printing: slips and reports go into the print queue with the op that makes them
(meshpos.service.printing); this drains the queue on its own thread when the till runs alone,
wakes it after queueing, and tells the page how the last slip is doing.
"""

from __future__ import annotations

from typing import Any

from meshpos.core.errors import LocalError
from meshpos.service.daemon_link import daemon_status
from meshpos.service.printing import Printing, PrintWorker, printing_enabled
from meshpos.service.terminal import Terminal

RECEIPT_TEXT = {
    "waiting": "waiting for the printer",
    "printing": "printing",
    "printed": "printed",
    "forwarding": "sent to a peer's printer",
    "forwarded": "printed at a peer",
    "failed": "could not be printed",
}


class TillPrinter:
    """`drain=False` when the daemon serves the page: it has its own print worker."""

    def __init__(self, t: Terminal, *, drain: bool) -> None:
        self.t = t
        self._worker: PrintWorker | None = None
        if drain and printing_enabled(t.cfg):
            self._worker = PrintWorker(t.cfg, t.ledger.key, poll_s=0.25)
            self._worker.start()

    def close(self) -> None:
        if self._worker is not None:
            self._worker.close()

    def wake(self) -> None:
        """Print now what was just queued, rather than at the next poll."""
        if self._worker is not None:
            self._worker.wake.set()

    def retry(self) -> int:
        """Try the printer again now (the worker prints; the page hears how it went)."""
        due = self.t.ledger.print_queue.retry_now()
        self.wake()
        return due

    def reprint(self, sale_id: str) -> int:
        """Queue a duplicate of a sale's slip; the job id."""
        job = Printing(self.t).reprint(sale_id)
        self.wake()
        return job

    def forward(self, peer: str) -> tuple[str, int]:
        """Hand the waiting slips to another counter's printer (its name, how many); the sync
        service carries them there."""
        status = daemon_status(self.t.cfg.dir)
        if not status:
            raise LocalError(
                "the sync service is not running here, so slips cannot go to another counter"
            )
        seen = {p["node_id"]: p["name"] for p in status.get("peers", []) if p.get("name")}
        name, jobs = Printing(self.t).forward(peer, seen)
        return name, len(jobs)

    def report(self, which: str, user: str | None) -> tuple[dict[str, Any], int]:
        """Queue an X report, or close the day with a Z report; the totals and the job id."""
        totals, job = Printing(self.t).report(which, user=user)
        self.wake()
        return totals, job

    def receipt(self, sale_id: str) -> dict[str, str]:
        """How the slip of a sale is doing, in the cashier's words."""
        jobs = self.t.ledger.print_queue.for_sale(sale_id)
        job = jobs[-1] if jobs else None
        if job is None:
            text = "receipts are off" if not printing_enabled(self.t.cfg) else "not queued"
            return {"receipt_state": "", "receipt_text": text, "receipt_error": ""}
        return {
            "receipt_state": str(job.state),
            "receipt_text": RECEIPT_TEXT.get(str(job.state), str(job.state)),
            "receipt_error": job.last_error,
        }
