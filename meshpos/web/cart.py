"""The sale being rung on the web till: scans and tiles, quantities, discounts, the customer,
tenders, oversell confirmation, held carts, and the switch from a return to an exchange.

Each method is one button of the till page: it calls `TillSession` (the same code `meshpos till`
drives) and leaves a notice for the cashier. A step that needs a supervisor (a discount beyond
the limit, selling far beyond stock) runs with the PIN typed on the page's PIN pad, and the
approval stays with the sale. Nothing is recorded until checkout.
"""

from __future__ import annotations

from meshpos.core.errors import InputError
from meshpos.domain.money import rupees
from meshpos.ledger.live_feed import find_customers
from meshpos.service.cards import read_card
from meshpos.service.terminal import Terminal
from meshpos.service.till import (
    CardScanned,
    InvalidCode,
    LineAdded,
    ReturnStarted,
    TillSession,
    UnknownCode,
    buyer_words,
)
from meshpos.web.session import Notice, WebSession
from meshpos.web.signin import Sessions


class Cart:
    def __init__(self, t: Terminal, sessions: Sessions) -> None:
        self.t = t
        self.sessions = sessions

    def scan(self, s: WebSession, code: str) -> None:
        """A scanned or typed code; a name that is no code offers the products it matches."""
        target = s.take if s.take is not None else s.till
        s.products, s.picked, s.panel = [], "", ""
        event = target.add_code(code)
        if isinstance(event, LineAdded):
            s.notice = Notice("ok", event.message)
        elif isinstance(event, ReturnStarted):
            s.notice = Notice("ok", event.message)
            s.customers = []
        elif isinstance(event, CardScanned):
            s.notice = Notice("ok", event.message)
        elif isinstance(event, UnknownCode):
            s.notice = Notice("warn", event.message, event.beep)
            text = code.strip()
            if text and not text.isdigit() and target.mode == "sale":
                s.products = self.t.products(search=text, limit=12)
                if s.products:
                    s.picked = f"matching “{text}”"
                    s.notice = Notice("warn", f"no code {text!r}; pick the item below", event.beep)
        elif isinstance(event, InvalidCode):
            s.notice = Notice("error", event.message, event.beep)

    def category(self, s: WebSession, name: str) -> None:
        """A category tile: its products to pick from (items with no barcode to scan)."""
        name = name.strip()
        rows = [p for p in self.t.products(limit=1000) if p.get("category") == name]
        if not rows:
            raise InputError(f"no products in category {name!r}")
        s.products, s.picked, s.panel = rows[:48], name, ""
        s.notice = Notice("ok", f"{name}: tap the item")

    def select(self, s: WebSession, line: int) -> None:
        """Tap a line: the line tools (discount, keypad quantity) act on it."""
        target = s.till.select(line)
        s.notice = Notice("ok", f"line {line}: {target.describe()}")

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

    def discount(
        self, s: WebSession, spec: str, line: int | None, approver: str = "", pin: str = ""
    ) -> None:
        """A discount beyond the store's limit asks for a supervisor here, at the Discount step
        (the PIN pad posts it again with their PIN); the approval stays with the sale."""
        value = spec.strip() or None
        with self.sessions.acting(s, approver, pin):
            s.till.discount(value, line)
        s.approval = None
        where = f"line {line}" if line else "the sale"
        s.notice = Notice(
            "ok", f"discount {value} on {where}" if value else f"no discount on {where}"
        )

    def oversell(self, s: WebSession, sell: bool, approver: str = "", pin: str = "") -> None:
        """The cashier's answer to "more than in stock: sell anyway?"."""
        target = s.take if s.take is not None else s.till
        if sell:
            with self.sessions.acting(s, approver, pin):
                target.confirm_oversell()
            s.approval = None
            s.notice = Notice("ok", "selling beyond stock: the goods are in hand")
        else:
            s.notice = Notice("ok", target.decline_oversell())

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

    def set_buyer(self, s: WebSession, gstin: str | None, state: str | None) -> None:
        found = s.till.set_buyer(gstin, state)
        s.notice = Notice(
            "ok", f"B2B invoice: buyer {buyer_words(found)}" if found else "buyer's GSTIN removed"
        )

    def add_customer(self, s: WebSession, name: str, phone: str, email: str) -> None:
        fields = {"name": name, "phone": phone or None, "email": email or None}
        cid = self.t.add_customer(fields, user=s.user)
        if s.till.mode == "sale":
            s.till.set_customer(cid)
        s.customers = []
        s.notice = Notice("ok", f"customer {name.strip()} added ({cid})")

    def pay(
        self,
        s: WebSession,
        method: str,
        amount: str,
        *,
        approval: str = "",
        last4: str = "",
        card_number: str = "",
        card_expiry: str = "",
        code: str = "",
        upi_ref: str = "",
    ) -> None:
        """Cash, points, a card on the store's card machine (approval code and last four from
        its slip), or a card captured here (typed or swiped into the card field; sealed at once,
        never kept or shown)."""
        if s.take is not None:
            raise InputError("an exchange settles the difference when it completes")
        card = None
        if method == "card" and card_number.strip():
            card = read_card(card_number, card_expiry.strip() or None)
        tender = s.till.pay(
            method,
            amount.strip() or None,
            card_last4=last4.strip() or None,
            card=card,
            approval=approval.strip() or None,
            code=code.strip() or None,
            upi_ref=upi_ref.strip() or None,
        )
        totals = s.till.totals()
        if tender.method == "points":
            what = f"{tender.amount} points"
        elif tender.card_sealed:
            what = f"card ending {tender.card_last4} (authorisation pending with HQ)"
        elif tender.card_approval:
            what = f"card machine payment (approval {tender.card_approval})"
        elif tender.code:
            what = f"{rupees(tender.amount or 0)} from card {tender.code}"
        elif tender.upi_ref:
            what = f"UPI payment (UTR {tender.upi_ref}, pending reconciliation)"
        else:
            what = tender.method
        left = f"{rupees(totals.due)} still due" if totals.due else "paid in full"
        change = f"; change {rupees(totals.change)}" if totals.change else ""
        s.notice = Notice("ok", f"{what} taken: {left}{change}")

    def clear_payments(self, s: WebSession) -> None:
        s.till.clear_payments()
        s.notice = Notice("ok", "payments cleared")

    def refund(self, s: WebSession, method: str) -> None:
        s.till.set_refund(method)
        s.notice = Notice("ok", f"refund by {s.till.refund_method.replace('_', ' ')}")

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

    # -- held carts ---------------------------------------------------------------------------

    def hold(self, s: WebSession, label: str) -> None:
        cart = s.till.hold(label)
        s.sale_closed()
        s.notice = Notice("ok", f"sale held as “{cart.label}” (#{cart.id}): recall it from Held")

    def show_held(self, s: WebSession) -> None:
        s.panel = "" if s.panel == "held" else "held"
        if s.panel and not s.till.parked():
            s.notice = Notice("ok", "no sales are held at this counter")

    def recall(self, s: WebSession, cart_id: int) -> None:
        notes = s.till.recall(cart_id)
        s.panel = ""
        text = f"held sale #{cart_id} recalled"
        s.notice = Notice("warn" if notes else "ok", "; ".join([text, *notes]))
