"""The manager page: open conflicts with the ops behind them, resolving one, X and Z reports, and
the sync error log (HQ relay, mesh, printer)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from meshpos.core.errors import InputError
from meshpos.ledger.live_feed import latest_ops
from meshpos.ledger.print_queue import OPEN_STATES
from meshpos.service.daemon_link import daemon_status
from meshpos.service.reports import shift_totals
from meshpos.service.terminal import Terminal
from meshpos.web.printer import TillPrinter
from meshpos.web.session import Notice, WebSession
from meshpos.web.signin import Sessions


@dataclass(frozen=True)
class OpRow:
    """One op behind a conflict; blank but its ref when this replica does not hold it."""

    ref: str
    terminal: str = ""
    kind: str = ""
    user: str = ""
    at_ms: int = 0
    what: str = ""


@dataclass(frozen=True)
class LogEntry:
    source: str  # "HQ relay", "mesh", "printer"
    text: str


class ManagerScreen:
    def __init__(self, t: Terminal, sessions: Sessions, printer: TillPrinter) -> None:
        self.t = t
        self.sessions = sessions
        self.printer = printer

    # -- actions --------------------------------------------------------------------------------

    def resolve(
        self, s: WebSession, conflict_id: str, note: str, adjust: str, approver: str, pin: str
    ) -> None:
        amount: int | None = None
        if adjust.strip():
            try:
                amount = int(adjust.strip())
            except ValueError:
                raise InputError(f"stock adjustment {adjust!r} must be a whole number") from None
        with self.sessions.acting(s, approver, pin):
            op = self.t.resolve(conflict_id, note, adjust=amount, user=s.user)
        s.approval = None
        s.notice = Notice("ok", f"conflict {conflict_id} resolved (op {op.origin}:{op.seq})")

    def report(self, s: WebSession, which: str) -> None:
        with self.sessions.acting(s):
            totals, job = self.printer.report(which, s.user)
        label = f"Z report #{totals['z_number']}" if which == "z" else "X report"
        s.notice = Notice("ok", f"{label} queued for the printer (job {job})")

    # -- what the page shows --------------------------------------------------------------------

    def _conflicts(self, names: dict[str, str]) -> list[dict[str, Any]]:
        """Open conflicts, each with a row per op involved (blank where the op is not held)."""
        conflicts = []
        for c in self.t.conflicts("open"):
            rows = []
            for ref in c["ops"]:
                origin, _, seq = str(ref).partition(":")
                op = self.t.ledger.get(origin, int(seq)) if seq.isdigit() else None
                if op is None:
                    rows.append(OpRow(str(ref)))
                    continue
                what = op.payload.get("sale_id") or op.payload.get("reason") or ""
                terminal = names.get(op.origin, op.origin)
                rows.append(OpRow(str(ref), terminal, op.kind, op.user, op.hlc >> 16, str(what)))
            conflicts.append({**c, "op_rows": rows})
        return conflicts

    def _z_reports(self) -> list[dict[str, Any]]:
        """This counter's last ten Z reports, newest first."""
        ops = latest_ops(self.t.ledger, self.t.node_id, "report.z", 10)
        return [{**op.payload, "at_ms": op.hlc >> 16, "user": op.user} for op in ops]

    def _sync_log(self, status: dict[str, Any], wan: dict[str, Any]) -> list[LogEntry]:
        """What keeps this counter from syncing or printing, newest HQ relay errors first."""
        entries = [LogEntry("HQ relay", str(e)) for e in reversed(wan.get("errors") or [])]
        if status.get("rejected"):
            text = f"{status['rejected']} connection(s) from unenrolled nodes refused"
            entries.append(LogEntry("mesh", text))
        pending = self.t.ledger.pending_count()
        if pending:
            entries.append(
                LogEntry("mesh", f"{pending} op(s) wait for earlier ops of their origin")
            )
        for p in status.get("peers", []):
            if not p.get("up"):
                entries.append(LogEntry("mesh", f"peer {p.get('name') or p['node_id']} is down"))
        jobs = [j for j in self.t.ledger.print_queue.jobs(OPEN_STATES) if j.last_error]
        for j in jobs[:10]:
            text = f"job {j.id} ({j.sale_id or j.kind}): {j.last_error}"
            entries.append(LogEntry("printer", text))
        return entries

    def view(self) -> dict[str, Any]:
        t = self.t
        names = {n.node_id: n.name for n in t.ledger.nodes()}
        status = daemon_status(t.cfg.dir)
        wan = dict(status.get("wan") or {})
        if wan:
            relay = wan.get("relay")
            wan["relay_name"] = (
                "this counter"
                if relay == t.node_id
                else names.get(str(relay), str(relay or "none (HQ unreachable)"))
            )
        return {
            "conflicts": self._conflicts(names),
            "resolved": len(t.conflicts("resolved")),
            "x": shift_totals(t),
            "zs": self._z_reports(),
            "log": self._sync_log(status, wan),
            "daemon": bool(status),
            "wan": wan,
        }
