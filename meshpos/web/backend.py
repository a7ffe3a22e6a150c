"""The web till's side of the service layer: one Terminal, one thread, one TillSession per signed-in
cashier.

Every request runs its work on a single worker thread that owns the Terminal (a Ledger is not
thread-safe), so requests are serialised the way one cashier's taps are anyway. What a button does
is a call into the same code the CLI uses: `TillSession` (scan, quantities, customer, tenders,
complete), `Terminal` (customers, returns, exchanges, conflicts), `reports` and the print queue;
staff sign-in and approvals are `meshpos.service.staff`. The page holds no business rule: this
module only turns a form into one of those calls and their results into plain data to render.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import re
import secrets
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from meshpos.core.errors import InputError, LocalError, MeshposError, NotFound
from meshpos.domain.escrow import EscrowShortfall
from meshpos.domain.pricing import Tender
from meshpos.domain.staff import APPROVAL, RANK, Credential
from meshpos.ledger.print_queue import OPEN_STATES
from meshpos.service import escrow
from meshpos.service.daemon_link import daemon_status
from meshpos.service.printing import Printing, PrintWorker, printing_enabled, queue_receipt
from meshpos.service.reports import shift_totals
from meshpos.service.staff import (
    PermissionDenied,
    approved_by,
    sign_in,
)
from meshpos.service.terminal import SaleResult, Terminal
from meshpos.service.till import (
    InvalidCode,
    LineAdded,
    ReturnStarted,
    TillSession,
    UnknownCode,
    change_given,
)
from meshpos.web.live import Live

T = TypeVar("T")
log = logging.getLogger("meshpos.web")
COOKIE = "meshpos_till"
IDLE_MS = 12 * 3_600_000  # a till left signed in overnight signs out
ESCROW_WAIT_S = 2.0
CLI_HINT = re.compile(r"\.?\s*Approve with their PIN \(--approve USER\)[^.]*\.?$")


class ApprovalRefused(LocalError):
    """The supervisor's PIN typed to approve an action was wrong, or they may not approve."""


@dataclass
class Notice:
    """One line of feedback under the scan field; `beep` names a devices.layout beep pattern."""

    level: str  # ok, warn, error
    text: str
    beep: str | None = None
    page: str = "till"  # the screen whose action it answers


@dataclass
class PendingApproval:
    """An action refused for want of a supervisor: the page shows a PIN pad that posts it again."""

    action: str
    fields: dict[str, str]
    message: str


@dataclass
class WebSession:
    token: str
    user: str | None  # None: the node's default user (a store with no staff yet)
    name: str
    role: str | None
    cred: Credential | None
    till: TillSession
    seen_ms: int
    take: TillSession | None = None  # an exchange: the items going out
    notice: Notice | None = None
    approval: PendingApproval | None = None
    last: dict[str, Any] | None = None
    customers: list[dict[str, Any]] = field(default_factory=list)
    products: list[dict[str, Any]] = field(default_factory=list)


def _sale_summary(result: SaleResult) -> dict[str, Any]:
    p = result.payload
    return {
        "kind": result.op.kind,
        "sale_id": result.sale_id,
        "receipt": p.get("receipt"),
        "total": p.get("total", 0),
        "change": change_given(p),
        "tenders": p.get("tenders", []),
        "points_earned": p.get("points_earned", 0),
        "points_redeemed": p.get("points_redeemed", 0),
        "customer": p.get("customer"),
        "user": result.op.user,
    }


class Backend:
    """Owns the Terminal, the live watcher and the sessions; all methods but `call` run on the
    worker thread (through `call`)."""

    def __init__(
        self, directory: Path, *, print_worker: bool = True, live_interval: float = 0.1
    ) -> None:
        self.directory = directory
        self.print_worker = print_worker
        self.live_interval = live_interval
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="meshpos-web")
        self._t: Terminal | None = None
        self._live: Live | None = None
        self._worker: PrintWorker | None = None
        self.sessions: dict[str, WebSession] = {}

    # -- lifecycle ------------------------------------------------------------------------------

    async def call(self, fn: Callable[..., T], *args: Any, **kw: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, functools.partial(fn, *args, **kw))

    @property
    def t(self) -> Terminal:
        if self._t is None:
            raise LocalError("the web till is not open")
        return self._t

    @property
    def live(self) -> Live:
        if self._live is None:
            raise LocalError("the web till is not open")
        return self._live

    def open(self) -> None:
        t = self._t = Terminal.open(self.directory, on_record=[queue_receipt])
        self._live = Live(t.cfg, t.ledger.key, t.node_id, self.live_interval)
        self._live.start()
        if self.print_worker and printing_enabled(t.cfg):
            self._worker = PrintWorker(t.cfg, t.ledger.key, poll_s=0.25)
            self._worker.start()

    def close(self) -> None:
        if self._live is not None:
            self._live.close()
        if self._worker is not None:
            self._worker.close()
        if self._t is not None:
            self._t.close()
            self._t = None
        self.sessions.clear()

    def shutdown(self) -> None:
        self._pool.shutdown(wait=True)

    def _wake_printer(self) -> None:
        if self._worker is not None:
            self._worker.wake.set()

    # -- staff and sessions ---------------------------------------------------------------------

    def has_staff(self) -> bool:
        return self.t.ledger.staff.has_users()

    def users(self) -> list[dict[str, Any]]:
        return [u for u in self.t.ledger.staff.users(self.t.now_ms()) if u["active"]]

    def approvers(self) -> list[dict[str, Any]]:
        return [u for u in self.users() if RANK.get(u["role"], 0) >= RANK["supervisor"]]

    def session(self, token: str | None) -> WebSession | None:
        """The session behind a cookie, if it is still good: not idle too long, its sign-in
        unexpired, its user active with the same PIN; a staffless session ends when staff exist."""
        s = self.sessions.get(token or "")
        if s is None:
            return None
        now = self.t.now_ms()
        staff = self.t.ledger.staff
        ok = now - s.seen_ms < IDLE_MS
        if s.cred is None:
            ok = ok and not staff.has_users()
        else:
            row = staff.user(s.user)
            ok = (
                ok
                and s.cred.exp_ms > now
                and row is not None
                and bool(row["active"])
                and row["pin_key"] == s.cred.pin_key.hex()
            )
            if ok and row is not None:
                s.role = str(row["role"])
        if not ok:
            self.sessions.pop(s.token, None)
            return None
        s.seen_ms = now
        return s

    def _new_session(
        self, user: str | None, name: str, role: str | None, cred: Credential | None
    ) -> WebSession:
        token = secrets.token_urlsafe(32)
        s = WebSession(token, user, name, role, cred, TillSession(self.t, user), self.t.now_ms())
        self.sessions[token] = s
        return s

    def sign_in(self, user: str, pin: str) -> WebSession:
        """PIN sign-in (staff_store.sign_in: scrypt check, lockout after repeated failures)."""
        user = user.strip()
        if not user:
            raise InputError("tap your name first, then type your PIN")
        cred = sign_in(self.t, user, pin.strip())
        row = self.t.ledger.staff.user(user) or {}
        return self._new_session(user, str(row.get("name") or user), row.get("role"), cred)

    def open_session(self) -> WebSession:
        """A store with no staff yet: the till runs as the node's default user, as the CLI does."""
        if self.has_staff():
            raise PermissionDenied("this store has staff: sign in with your PIN")
        return self._new_session(None, self.t.cfg.user, None, None)

    def sign_out(self, token: str | None) -> None:
        self.sessions.pop(token or "", None)

    @contextlib.contextmanager
    def acting(self, s: WebSession, approver: str = "", pin: str = "") -> Iterator[None]:
        """Run with the cashier's sign-in (and a supervisor's PIN, if one was typed) as the
        credentials `Terminal.append` checks and signs approvals with."""
        with contextlib.ExitStack() as stack:
            if s.cred is not None:
                stack.enter_context(approved_by(self.t, s.cred))
            if approver.strip():
                try:
                    cred = sign_in(self.t, approver.strip(), pin.strip(), purpose=APPROVAL)
                except LocalError as exc:
                    raise ApprovalRefused(f"approval not given: {exc}") from None
                stack.enter_context(approved_by(self.t, cred))
            yield

    # -- running an action ----------------------------------------------------------------------

    def act(
        self,
        s: WebSession,
        fn: Callable[[], None],
        approve_as: tuple[str, dict[str, str]] | None = None,
    ) -> bool:
        """Run one action; a refusal becomes the notice (and, when it wants a supervisor, a PIN
        pad that posts the action again). Returns whether it succeeded."""
        try:
            fn()
        except PermissionDenied as exc:
            text = CLI_HINT.sub("", str(exc))  # the PIN pad below is this screen's --approve
            s.notice = Notice("error", text, "invalid")
            if approve_as is not None:
                s.approval = PendingApproval(approve_as[0], approve_as[1], text)
            return False
        except MeshposError as exc:
            s.notice = Notice("error", str(exc), "invalid")
            return False
        except Exception as exc:  # a bug: the cashier still gets an answer, the log the trace
            if type(exc).__name__ == "OperationalError":  # sqlite3's or SQLCipher's
                s.notice = Notice("error", f"the database is busy ({exc}); try again", "invalid")
                return False
            log.exception("web till action failed")
            s.notice = Notice(
                "error", f"unexpected error ({type(exc).__name__}: {exc}); see the log", "invalid"
            )
            return False
        return True

    # -- the till -------------------------------------------------------------------------------

    def scan(self, s: WebSession, code: str) -> None:
        target = s.take if s.take is not None else s.till
        s.products = []
        event = target.add_code(code)
        if isinstance(event, LineAdded):
            s.notice = Notice("ok", event.message)
        elif isinstance(event, ReturnStarted):
            s.notice = Notice("ok", event.message)
            s.customers = []
        elif isinstance(event, UnknownCode):
            s.notice = Notice("warn", event.message, event.beep)
            text = code.strip()
            if text and not text.isdigit() and target.mode == "sale":
                s.products = self.t.products(search=text, limit=12)
                if s.products:
                    s.notice = Notice("warn", f"no code {text!r}; pick the item below", event.beep)
        elif isinstance(event, InvalidCode):
            s.notice = Notice("error", event.message, event.beep)

    def _session_for(self, s: WebSession, which: str) -> TillSession:
        if which == "take":
            if s.take is None:
                raise InputError("no exchange is in progress")
            return s.take
        return s.till

    def set_qty(self, s: WebSession, which: str, line: int, qty: int | None, delta: int) -> None:
        till = self._session_for(s, which)
        if not 1 <= line <= len(till.lines):
            raise InputError(f"line {line} does not exist")
        current = till.lines[line - 1].qty
        wanted = qty if qty is not None else current + delta
        if wanted <= 0 and till.mode == "sale":
            till.remove_line(line)
            s.notice = Notice("ok", f"line {line} removed")
            return
        target = till.set_qty(wanted, line)
        s.notice = Notice("ok", f"{target.describe()} x{target.qty}")

    def remove(self, s: WebSession, which: str, line: int) -> None:
        gone = self._session_for(s, which).remove_line(line)
        s.notice = Notice("ok", f"{gone.describe()} removed")

    def discount(self, s: WebSession, spec: str, line: int | None) -> None:
        value = spec.strip() or None
        s.till.discount(value, line)
        where = f"line {line}" if line else "the sale"
        s.notice = Notice(
            "ok", f"discount {value} on {where}" if value else f"no discount on {where}"
        )

    def find_customers(self, s: WebSession, q: str) -> None:
        q = q.strip()
        if not q:
            s.customers = []
            return
        like = f"%{q}%"
        s.customers = self.t.query(
            "SELECT c.customer_id, c.name, c.phone, c.email, COALESCE(l.points, 0) AS points "
            "FROM customers c LEFT JOIN loyalty l ON l.customer_id = c.customer_id "
            "WHERE c.customer_id = ? OR c.phone LIKE ? OR c.name LIKE ? ORDER BY c.name LIMIT 12",
            (q, like, like),
        )
        if not s.customers:
            s.notice = Notice("warn", f"no customer matches {q!r}: add them below")

    def attach_customer(self, s: WebSession, code: str | None) -> None:
        found = s.till.set_customer(code or None)
        s.customers = []
        if found is None:
            s.notice = Notice("ok", "customer removed from the sale")
        else:
            s.notice = Notice("ok", f"customer {found['name']} ({found['points']} points)")

    def add_customer(self, s: WebSession, name: str, phone: str, email: str) -> None:
        fields = {"name": name, "phone": phone or None, "email": email or None}
        cid = self.t.add_customer(fields, user=s.user)
        if s.till.mode == "sale":
            s.till.set_customer(cid)
        s.customers = []
        s.notice = Notice("ok", f"customer {name.strip()} added ({cid})")

    def pay(self, s: WebSession, method: str, amount: str) -> None:
        if s.take is not None:
            raise InputError("an exchange settles the difference when it completes")
        tender = s.till.pay(method, amount.strip() or None)
        totals = s.till.totals()
        what = f"{tender.amount} points" if tender.method == "points" else tender.method
        left = f"{totals.due / 100:.2f} still due" if totals.due else "paid in full"
        change = f"; change {totals.change / 100:.2f}" if totals.change else ""
        s.notice = Notice("ok", f"{what} taken: {left}{change}")

    def clear_payments(self, s: WebSession) -> None:
        s.till.clear_payments()
        s.notice = Notice("ok", "payments cleared")

    def refund(self, s: WebSession, method: str) -> None:
        s.till.set_refund(method)
        s.notice = Notice("ok", f"refund by {method}")

    def start_exchange(self, s: WebSession) -> None:
        if s.till.mode != "return" or s.till.ref_sale is None:
            raise InputError("an exchange starts from a receipt: scan the receipt's code first")
        s.take = TillSession(self.t, s.user)
        s.notice = Notice("ok", "exchange: scan the items going out")

    def cancel_exchange(self, s: WebSession) -> None:
        s.take = None
        s.notice = Notice("ok", "back to a plain return")

    def void(self, s: WebSession) -> None:
        s.till.void()
        s.take = None
        s.approval = None
        s.customers = []
        s.products = []
        s.notice = Notice("ok", "sale voided; nothing was recorded")

    def complete(
        self, s: WebSession, approver: str = "", pin: str = "", method: str = "cash"
    ) -> None:
        with self.acting(s, approver, pin):
            result = self._exchange(s, method) if s.take is not None else self._complete(s)
        s.take = None
        s.approval = None
        s.customers = []
        s.products = []
        s.last = _sale_summary(result)
        self._wake_printer()
        change = f", change ₹{s.last['change'] / 100:.2f}" if s.last["change"] else ""
        s.notice = Notice(
            "ok",
            f"{result.op.kind} {result.sale_id} recorded: ₹{abs(s.last['total']) / 100:.2f}{change}",
        )

    def _complete(self, s: WebSession) -> SaleResult:
        """Complete the sale; a points redemption that needs rights another counter holds asks
        the peers through the daemon (escrow) and tries again for a moment, like `meshpos sell`."""
        try:
            return s.till.complete()
        except EscrowShortfall as short:
            if not daemon_status(self.t.cfg.dir).get("peers_up"):
                raise
            escrow.ask(self.t, short.customer, short.needed - max(short.held, 0))
            deadline = time.monotonic() + ESCROW_WAIT_S
            while time.monotonic() < deadline:
                if self.t.rights(short.customer) >= short.needed:
                    return s.till.complete()
                time.sleep(0.02)
            raise

    def _exchange(self, s: WebSession, method: str) -> SaleResult:
        assert s.take is not None
        ref = s.till.ref_sale
        back = [(ln.product.sku, ln.qty) for ln in s.till.lines if ln.qty > 0]
        take = [(ln.product.sku, ln.qty) for ln in s.take.lines]
        if ref is None or not back:
            raise InputError("scan (or tap +) the items coming back first")
        if not take:
            raise InputError("scan the items going out, or cancel the exchange")
        net = s.take.totals().total - s.till.totals().total
        tenders = [Tender(method)] if net > 0 and method != "cash" else []
        result = self.t.exchange(ref, back, take, tenders=tenders, user=s.user)
        s.till.void()
        return result

    # -- manager --------------------------------------------------------------------------------

    def resolve(
        self, s: WebSession, conflict_id: str, note: str, adjust: str, approver: str, pin: str
    ) -> None:
        amount: int | None = None
        if adjust.strip():
            try:
                amount = int(adjust.strip())
            except ValueError:
                raise InputError(f"stock adjustment {adjust!r} must be a whole number") from None
        with self.acting(s, approver, pin):
            op = self.t.resolve(conflict_id, note, adjust=amount, user=s.user)
        s.approval = None
        s.notice = Notice("ok", f"conflict {conflict_id} resolved (op {op.origin}:{op.seq})")

    def report(self, s: WebSession, which: str) -> None:
        with self.acting(s):
            totals, job = Printing(self.t).report(which, user=s.user)
        self._wake_printer()
        label = f"Z report #{totals['z_number']}" if which == "z" else "X report"
        s.notice = Notice("ok", f"{label} queued for the printer (job {job})")

    # -- what the pages show --------------------------------------------------------------------

    def till_view(self, s: WebSession) -> dict[str, Any]:
        t = self.t
        till = s.till
        totals = till.totals()
        priced = till.priced()
        priced_lines = iter(priced.lines if priced else [])
        lines = []
        for i, ln in enumerate(till.lines, 1):
            pl = next(priced_lines) if priced and ln.qty > 0 else None
            lines.append(
                {
                    "n": i,
                    "sku": ln.product.sku,
                    "name": ln.product.name,
                    "size": ln.product.size,
                    "colour": ln.product.colour,
                    "price": ln.product.price,
                    "qty": ln.qty,
                    "limit": ln.limit,
                    "discount_spec": ln.discount,
                    "discount": pl["discount"] if pl else 0,
                    "total": pl["total"] if pl else ln.product.price * ln.qty,
                }
            )
        customer = None
        rule = t.loyalty_rule()
        if till.customer:
            cid = till.customer["customer_id"]
            try:
                fresh = t.customer(cid)
            except NotFound:
                fresh = till.customer
            customer = {
                **fresh,
                "rights_here": t.rights(cid),
                "elsewhere": t.rights_elsewhere(cid),
            }
        tenders = [
            {
                "method": tn.method,
                "points": tn.amount if tn.method == "points" else None,
                "amount": (tn.amount or 0) * rule.point_value
                if tn.method == "points"
                else tn.amount,
            }
            for tn in till.tenders
        ]
        take = None
        if s.take is not None:
            tt = s.take.totals()
            take = {
                "lines": [
                    {
                        "n": i,
                        "sku": ln.product.sku,
                        "name": ln.product.name,
                        "size": ln.product.size,
                        "colour": ln.product.colour,
                        "price": ln.product.price,
                        "qty": ln.qty,
                        "total": ln.product.price * ln.qty,
                    }
                    for i, ln in enumerate(s.take.lines, 1)
                ],
                "total": tt.total,
                "net": tt.total - totals.total,
            }
        return {
            "mode": till.mode,
            "ref_sale": till.ref_sale,
            "refund": till.refund_method,
            "lines": lines,
            "totals": totals,
            "sale_discount": till.sale_discount,
            "customer": customer,
            "tenders": tenders,
            "point_value": rule.point_value,
            "take": take,
            "notice": s.notice if s.notice and s.notice.page == "till" else None,
            "approval": s.approval
            if s.approval and s.approval.action.startswith("/till")
            else None,
            "approvers": self.approvers() if s.approval else [],
            "customers": s.customers,
            "products": s.products,
            "empty": till.empty,
        }

    def last_view(self, s: WebSession) -> dict[str, Any] | None:
        if s.last is None:
            return None
        jobs = self.t.ledger.print_queue.for_sale(s.last["sale_id"])
        job = jobs[-1] if jobs else None
        receipt = "receipts are off" if not printing_enabled(self.t.cfg) else "not queued"
        if job is not None:
            receipt = {
                "waiting": "waiting for the printer",
                "printing": "printing",
                "printed": "printed",
                "forwarding": "sent to a peer's printer",
                "forwarded": "printed at a peer",
                "failed": "could not be printed",
            }.get(str(job.state), str(job.state))
        return {
            **s.last,
            "receipt_state": str(job.state) if job else "",
            "receipt_text": receipt,
            "receipt_error": job.last_error if job else "",
        }

    def terminals_view(self) -> list[dict[str, Any]]:
        """Every counter of the store as this one knows it: ops of theirs held here, sales rung,
        and (from the daemon) whether it is reachable now."""
        t = self.t
        status = daemon_status(t.cfg.dir)
        peers = {p["node_id"]: p for p in status.get("peers", [])}
        vv = t.ledger.vv()
        sales = {
            r["origin"]: r
            for r in t.query(
                "SELECT origin, COUNT(*) FILTER (WHERE kind = 'sale') AS sales, "
                "COUNT(*) FILTER (WHERE kind != 'sale') AS returns, MAX(ts_ms) AS last_ms "
                "FROM sales GROUP BY origin"
            )
        }
        rows = []
        office = t.ledger.hq_origins()
        for node in t.ledger.nodes():
            if node.store != t.cfg.store:
                continue
            peer = peers.get(node.node_id, {})
            me = node.node_id == t.node_id
            if me:
                lan = "this counter"
            elif node.node_id in office:
                lan = "HQ (not on the LAN)"
            elif not status:
                lan = "unknown (daemon not running)"
            elif not peer:
                lan = "not seen"
            else:
                lan = "up" if peer.get("up") else "down"
            rows.append(
                {
                    "node_id": node.node_id,
                    "name": node.name,
                    "me": me,
                    "ops": vv.get(node.node_id, 0),
                    "sales": int(sales.get(node.node_id, {}).get("sales") or 0),
                    "returns": int(sales.get(node.node_id, {}).get("returns") or 0),
                    "last_sale_ms": int(sales.get(node.node_id, {}).get("last_ms") or 0),
                    "lan": lan,
                    "last_seen_ms": int(peer.get("last_seen_ms") or 0),
                    "behind": int(peer.get("behind") or 0),
                    "ahead": int(peer.get("ahead") or 0),
                }
            )
        rows.sort(key=lambda r: (not r["me"], r["name"]))
        return rows

    def stock_view(self, q: str) -> dict[str, Any]:
        """Stock per SKU in the store's merged view, and how each counter's ops moved it (stock
        is a sum of signed moves, so the columns add up to the total)."""
        t = self.t
        products = t.products(search=q.strip() or None, limit=200)
        terminals = self.terminals_view()
        moves: dict[str, dict[str, int]] = {}
        skus = [p["sku"] for p in products]
        if skus:
            marks = ",".join("?" * len(skus))
            for r in t.query(
                f"SELECT sku, origin, SUM(delta) AS delta FROM stock_moves WHERE sku IN ({marks}) "
                "GROUP BY sku, origin",
                skus,
            ):
                moves.setdefault(r["sku"], {})[r["origin"]] = int(r["delta"])
        shown = [term for term in terminals if any(term["node_id"] in m for m in moves.values())]
        return {
            "q": q,
            "products": products,
            "moves": moves,
            "columns": shown or terminals[:1],
            "terminals": terminals,
            "version": self.live.db_version,
        }

    def manager_view(self) -> dict[str, Any]:
        t = self.t
        names = {n.node_id: n.name for n in t.ledger.nodes()}
        conflicts = []
        for c in t.conflicts("open"):
            ops = []
            for ref in c["ops"]:
                origin, _, seq = str(ref).partition(":")
                op = t.ledger.get(origin, int(seq)) if seq.isdigit() else None
                if op is not None:
                    ops.append(
                        {
                            "ref": ref,
                            "terminal": names.get(op.origin, op.origin),
                            "kind": op.kind,
                            "user": op.user,
                            "at_ms": op.hlc >> 16,
                            "what": op.payload.get("sale_id") or op.payload.get("reason") or "",
                        }
                    )
                else:
                    ops.append(
                        {"ref": ref, "terminal": "", "kind": "", "user": "", "at_ms": 0, "what": ""}
                    )
            conflicts.append({**c, "op_rows": ops})
        resolved = len(t.conflicts("resolved"))
        zs = []
        for row in t.query(
            "SELECT seq FROM ops WHERE origin = ? AND kind = 'report.z' ORDER BY seq DESC LIMIT 10",
            (t.node_id,),
        ):
            op = t.ledger.get(t.node_id, row["seq"])
            if op is not None:
                zs.append({**op.payload, "at_ms": op.hlc >> 16, "user": op.user})
        status = daemon_status(t.cfg.dir)
        wan = dict(status.get("wan") or {})
        if wan:
            relay = wan.get("relay")
            wan["relay_name"] = (
                "this counter"
                if relay == t.node_id
                else names.get(str(relay), str(relay or "none (HQ unreachable)"))
            )
        entries = [{"source": "HQ relay", "text": e} for e in reversed(wan.get("errors") or [])]
        if status.get("rejected"):
            entries.append(
                {
                    "source": "mesh",
                    "text": f"{status['rejected']} connection(s) from unenrolled nodes refused",
                }
            )
        if t.ledger.pending_count():
            entries.append(
                {
                    "source": "mesh",
                    "text": f"{t.ledger.pending_count()} op(s) wait for earlier ops of their origin",
                }
            )
        for p in status.get("peers", []):
            if not p.get("up"):
                entries.append(
                    {"source": "mesh", "text": f"peer {p.get('name') or p['node_id']} is down"}
                )
        jobs = [j for j in t.ledger.print_queue.jobs(OPEN_STATES) if j.last_error]
        for j in jobs[:10]:
            entries.append(
                {"source": "printer", "text": f"job {j.id} ({j.sale_id or j.kind}): {j.last_error}"}
            )
        return {
            "conflicts": conflicts,
            "resolved": resolved,
            "x": shift_totals(t),
            "zs": zs,
            "log": entries,
            "daemon": bool(status),
            "wan": wan,
        }

    def till_json(self, s: WebSession) -> dict[str, Any]:
        """The till state as JSON (for scripts and tests; the page itself is HTML)."""
        view = self.till_view(s)
        totals = view["totals"]
        out: dict[str, Any] = json.loads(
            json.dumps(
                {
                    "user": s.user or self.t.cfg.user,
                    "mode": view["mode"],
                    "ref_sale": view["ref_sale"],
                    "lines": view["lines"],
                    "totals": {k: getattr(totals, k) for k in totals.__dataclass_fields__},
                    "customer": view["customer"],
                    "tenders": view["tenders"],
                    "notice": None if s.notice is None else s.notice.__dict__,
                    "last": self.last_view(s),
                },
                default=str,
            )
        )
        return out
