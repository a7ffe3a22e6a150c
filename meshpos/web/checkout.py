"""Completing what the web till rang: a sale, a return, or an exchange, recorded by the Terminal in
one transaction with the cashier's sign-in (and a supervisor's, when one approved it).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from meshpos.core.errors import InputError
from meshpos.domain.giftcards import CREDIT_NOTE
from meshpos.domain.money import rupees
from meshpos.service import cards, giftcards
from meshpos.service.terminal import SaleResult, Terminal
from meshpos.service.till import (
    TillSession,
    change_given,
    exchange_net,
    exchange_payment,
    record_exchange,
)
from meshpos.web.printer import TillPrinter
from meshpos.web.session import Notice, WebSession
from meshpos.web.signin import Sessions


def sale_summary(result: SaleResult) -> dict[str, Any]:
    """What the page keeps of the last sale to show under the till."""
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


class Checkout:
    def __init__(self, t: Terminal, sessions: Sessions, printer: TillPrinter) -> None:
        self.t = t
        self.sessions = sessions
        self.printer = printer

    def complete(
        self,
        s: WebSession,
        approver: str = "",
        pin: str = "",
        method: str = "cash",
        approval: str = "",
        last4: str = "",
        *,
        upi_ref: str = "",
        code: str = "",
    ) -> None:
        """Record the sale, return or exchange. A points redemption that needs rights another
        counter holds raises EscrowShortfall (see meshpos/web/escrow_wait.py). An exchange's
        difference is paid in cash, on the card machine (`approval`, `last4` from its slip), by
        UPI (`upi_ref`) or by gift card (`code`)."""
        with self.sessions.acting(s, approver, pin):
            take = s.take
            result = (
                s.till.complete()
                if take is None
                else self._exchange(s, take, method, approval, last4, upi_ref, code)
            )
        s.sale_closed()
        s.last = sale_summary(result)
        self.printer.wake()
        change = f", change {rupees(s.last['change'])}" if s.last["change"] else ""
        total = rupees(abs(s.last["total"]))
        notes = "".join(
            f"; credit note {t['code']} for {rupees(abs(t['amount']))}"
            for t in s.last["tenders"]
            if t.get("method") == "credit_note"
        )
        s.notice = Notice(
            "ok", f"{result.op.kind} {result.sale_id} recorded: {total}{change}{notes}"
        )

    def sell_giftcard(self, s: WebSession, amount: str, form: Mapping[str, str]) -> None:
        """Sell a gift card between sales: paid in cash, on the card machine or by UPI; its slip
        (the code as a barcode) goes to the printer with the next drain."""
        if not s.till.empty:
            raise InputError("finish or hold this sale before selling a gift card")
        tenders = cards.final_tenders(
            form.get("method", "cash"),
            approval=form.get("approval", ""),
            last4=form.get("last4", ""),
            upi_ref=form.get("upi_ref", ""),
        )
        op = giftcards.issue(self.t, amount, tenders=tenders, user=s.user)
        code, value = op.payload["code"], op.payload["amount"]
        self.printer.wake()
        s.notice = Notice("ok", f"gift card {code} sold for {rupees(value)}: its slip prints")

    def _exchange(
        self,
        s: WebSession,
        going_out: TillSession,
        method: str,
        approval: str,
        last4: str,
        upi_ref: str = "",
        code: str = "",
    ) -> SaleResult:
        """The difference is paid by `method` (cash, card machine, UPI, gift card) when the
        customer owes it, and refunded in cash or as a credit note (`method` "credit_note")
        when they are owed it."""
        if exchange_net(s.till, going_out) > 0:
            payment = exchange_payment(
                method, approval=approval, last4=last4, upi_ref=upi_ref, code=code
            )
            return record_exchange(s.till, going_out, payment, "cash")
        refund = CREDIT_NOTE if method == CREDIT_NOTE else "cash"
        return record_exchange(s.till, going_out, None, refund)
