"""The sale being rung on the web till: scans, quantities, discounts, the customer, tenders, and
the switch from a return to an exchange.

Each method is one button of the till page: it calls `TillSession` (the same code `meshpos till`
drives) and leaves a notice for the cashier. Nothing is recorded until checkout.
"""

from __future__ import annotations

from meshpos.core.errors import InputError
from meshpos.ledger.live_feed import find_customers
from meshpos.service.terminal import Terminal
from meshpos.service.till import (
    InvalidCode,
    LineAdded,
    ReturnStarted,
    TillSession,
    UnknownCode,
)
from meshpos.web.session import Notice, WebSession


class Cart:
    def __init__(self, t: Terminal) -> None:
        self.t = t

    def scan(self, s: WebSession, code: str) -> None:
        """A scanned or typed code; a name that is no code offers the products it matches."""
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

    @staticmethod
    def _lines_of(s: WebSession, which: str) -> TillSession:
        """The items coming back or sold ("sale"), or those going out in an exchange ("take")."""
        if which == "take":
            if s.take is None:
                raise InputError("no exchange is in progress")
            return s.take
        return s.till

    def set_qty(self, s: WebSession, which: str, line: int, qty: int | None, delta: int) -> None:
        till = self._lines_of(s, which)
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
        gone = self._lines_of(s, which).remove_line(line)
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
        s.customers = find_customers(self.t.ledger, q)
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
        s.sale_closed()
        s.notice = Notice("ok", "sale voided; nothing was recorded")
