"""The manager page: open conflicts in plain words with both sides and what to do, resolving one,
X and Z reports (closing the day is for a supervisor or above), and the sync error log (HQ
relay, mesh, printer)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from meshpos.core.errors import InputError, NotFound
from meshpos.core.ops import Op
from meshpos.domain.staff import APPROVER, RANK
from meshpos.ledger.live_feed import latest_ops
from meshpos.ledger.print_queue import OPEN_STATES
from meshpos.service import conflict_words
from meshpos.service.daemon_link import daemon_status
from meshpos.service.reports import shift_totals
from meshpos.service.terminal import Terminal
from meshpos.web.printer import TillPrinter
from meshpos.web.session import Notice, WebSession
from meshpos.web.signin import Sessions


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

    def report(self, s: WebSession, which: str, approver: str = "", pin: str = "") -> None:
        """An X report, or closing the day: a Z report needs a supervisor or above (one signed
        in, or approving here with their PIN)."""
        with self.sessions.acting(s, approver, pin):
            totals, job = self.printer.report(which, s.user)
        s.approval = None
        label = f"Z report #{totals['z_number']}" if which == "z" else "X report"
        s.notice = Notice("ok", f"{label} queued for the printer (job {job})")

    # -- what the page shows --------------------------------------------------------------------

    def _customer_name(self, cid: str) -> str:
        try:
            return str(self.t.customer(cid)["name"])
        except NotFound:
            return f"customer {cid}"

    def _conflicts(self, names: dict[str, str]) -> list[dict[str, Any]]:
        """Open conflicts in plain words, each with every op behind it (those this counter
        holds; the others say so)."""
        conflicts = []
        for c in self.t.conflicts("open"):
            ops: dict[str, Op | None] = {}
            for ref in c["ops"]:
                origin, _, seq = str(ref).partition(":")
                ops[str(ref)] = self.t.ledger.get(origin, int(seq)) if seq.isdigit() else None
            words = conflict_words.describe(c, ops, names, self._customer_name)
            conflicts.append({**c, "words": words})
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

    def view(self, role: str | None = None) -> dict[str, Any]:
        """`role`: the signed-in user's (None in a store with no staff yet: everything shown)."""
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
            "supervisor": role is None or RANK.get(role, -1) >= RANK[APPROVER],
        }
