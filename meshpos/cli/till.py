"""`meshpos till`: the interactive till for a keyboard, a keyboard-wedge scanner or a serial/USB
scanner. `TillConsole` is its text front over a `TillSession` (meshpos/service/till.py)."""

from __future__ import annotations

import contextlib
import queue
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TextIO

import click

from meshpos.cli.common import acting_user
from meshpos.cli.printing import drain_note, selling_terminal
from meshpos.cli.till_info import HELP as INFO_HELP
from meshpos.cli.till_info import info_command
from meshpos.core.clock import wall_ms
from meshpos.core.errors import ConfigError, InputError, MeshposError
from meshpos.devices import layout, qr
from meshpos.devices.scanners import HidScanner, ScannerUnavailable, SerialScanner
from meshpos.domain.escrow import EscrowShortfall
from meshpos.domain.money import rupees
from meshpos.domain.staff import APPROVAL
from meshpos.ledger.live_feed import LiveFeed
from meshpos.service import cards, counter_state, giftcards, printer_words
from meshpos.service.cards import read_card_line
from meshpos.service.counter_state import CounterState
from meshpos.service.daemon_link import daemon_status
from meshpos.service.escrow import RightsWait
from meshpos.service.history import customer_history, summary_lines
from meshpos.service.power import till_power_guard
from meshpos.service.printing import (
    Printing,
    queue_upi_request,
    scanner_setup,
    take_enqueued,
)
from meshpos.service.staff import PermissionDenied, approved_by, at_the_till, sign_in
from meshpos.service.terminal import OversellNotConfirmed, SaleResult, Terminal
from meshpos.service.till import (
    CardScanned,
    InvalidCode,
    LineAdded,
    ReturnStarted,
    ScanEvent,
    TillSession,
    buyer_words,
    change_given,
    exchange_net,
    exchange_payment,
    exchange_upi_request,
    record_exchange,
)
from meshpos.service.training import is_practice
from meshpos.service.upi import UpiRequest

HELP = (
    """\
scan or type a barcode or SKU to add it; scan a receipt to start a return
  q N [LINE]            quantity of the last line (or of LINE)
  rm [LINE]             remove the last line (or LINE)
  c PHONE|ID  /  c -    attach a customer (loyalty) / detach
  history [PHONE|ID]    the customer's purchases, returns, sizes, points, credit notes
  gstin GSTIN [STATE]   a registered buyer (a B2B tax invoice; another state: IGST); gstin -
  disc 10%|50 [LINE]    discount on the sale (or on LINE); disc - [LINE] removes it
  pay cash [RUPEES]     cash (more than due gives change)
  pay machine CODE LAST4 [RUPEES]
                        a card paid on the store's card machine: its slip's approval code
                        and the card's last four digits
  pay card [RUPEES]     a card captured here: swipe it or type it when asked (not shown)
  pay points [N]        redeem the customer's points; pay clear drops the payments
  pay giftcard CODE [RUPEES]  a gift card or credit note (or scan its barcode)
  giftcard CODE         a card's balance;  giftcard sell RUPEES [upi UTR|machine CODE LAST4]
                        sells one between sales (cash by default); its slip prints
  pay upi [RUPEES]      show (and print) the UPI QR for what is due, then type the UTR
                        the customer's phone shows; pay upi UTR [RUPEES] records it at once
  refund cash|card|points|credit-note   how a return is paid out
  return SALE_ID        start a return by typing the receipt's sale id
  exchange  /  exchange -   during a return: the customer takes other items instead (scans,
                        q and rm then act on the items going out) / back to a plain return
  done [cash|machine CODE LAST4|upi [UTR]|giftcard CODE]
                        an exchange: how the customer pays the difference (cash by default);
                        when they are owed it, `refund cash|credit-note` chooses how
  hold [NAME]  held  recall N   park this sale / list parked sales / bring one back
  stock SKU             what this counter has in stock
  receive SKU N REASON  /  adjust SKU +-N REASON   stock in / a counted correction
  retry  reprint [SALE]  print on COUNTER   printer trouble: try again, a copy, elsewhere
  state                 sync and printer state in detail
  void                  drop this sale (nothing was recorded)
  done                  record the sale and print the receipt
  help                  this text;  quit  leave the till
"""
    + INFO_HELP
)


RIGHTS_WAIT_MS = 2000  # how long a step waits for rights it asked for, as the web till does


@dataclass
class Ask:
    """A question the till put to the cashier: the next line answers it."""

    prompt: str
    answer: Callable[[str], None]
    secret: bool = False  # a PIN or a card: not echoed


class Source(Protocol):
    def codes(self, stop: threading.Event | None = None) -> Any: ...

    def close(self) -> None: ...


def open_scanner(spec: str) -> Source:
    """`serial:URL` (a device path or pyserial URL) or `usb:VID:PID` (hex)."""
    kind, _, rest = spec.partition(":")
    if kind == "serial" and rest:
        return SerialScanner.open(rest)
    if kind == "usb":
        vid, _, pid = rest.partition(":")
        try:
            return HidScanner(vendor_id=int(vid, 16), product_id=int(pid, 16))
        except ValueError:
            pass
    raise InputError(f"scanner {spec!r} must be serial:URL or usb:VID:PID (hex ids)")


def _int_arg(text: str, what: str) -> int:
    if not text.lstrip("-").isdigit():
        raise InputError(f"{what} {text!r} must be a whole number")
    return int(text)


class TillConsole:
    """The text front of a TillSession: one input line (a command, a scan, or the answer to a
    question the till asked) at a time.

    The till asks where a step needs it, as the web till does: "sell anyway? [y/N]" when a sale
    takes more than this counter has in stock, a supervisor's user id and PIN when a step needs
    their approval (the command then runs again with it), the card when `pay card` is typed. A
    PIN or a card is read without echo (`echo`). The state line (sync, printer) is printed at
    the start and whenever it changes."""

    def __init__(
        self,
        session: TillSession,
        printing: Printing | None,
        out: Callable[[str], None],
        *,
        bell: Callable[[layout.BeepPattern], None] | None = None,
        state: Callable[[], CounterState] | None = None,
        echo: Callable[[bool], None] | None = None,
    ) -> None:
        self.session = session
        self.printing = printing
        self.out = out
        self.bell = bell or (lambda pattern: None)
        self.read_state = state
        self.echo = echo or (lambda on: None)
        self.completed: list[SaleResult] = []
        self.asks: list[Ask] = []
        self.take: TillSession | None = None  # an exchange: the items going out
        self._line = ""
        self.rights_wait_ms = RIGHTS_WAIT_MS

    @property
    def terminal(self) -> Terminal:
        return self.session.terminal

    @property
    def editing(self) -> TillSession:
        """The lines scans, `q` and `rm` act on: the items going out during an exchange."""
        return self.take if self.take is not None else self.session

    # -- showing the sale -----------------------------------------------------------------------

    def show(self) -> None:
        s = self.session
        if s.empty:
            self.out("(no sale in progress: scan an item)")
            return
        title = f"return of {s.ref_sale}" if s.mode == "return" else "sale"
        if self.take is not None:
            title = f"exchange against {s.ref_sale}: coming back"
        if s.customer:
            title += f"  customer {s.customer['name']} ({s.customer['customer_id']}, "
            title += f"{s.customer['points']} pts)"
        buyer = s.buyer if s.mode == "sale" else None
        if buyer is not None:
            title += f"  buyer {buyer_words(buyer)}"
        self.out(title)
        priced = s.priced()
        totals_by_line = iter(priced.lines) if priced else iter(())
        for i, line in enumerate(s.lines, start=1):
            stock = ""
            if s.mode == "return":
                amount = f"of {line.limit}"
            elif line.qty > 0:
                amount = rupees(next(totals_by_line)["total"])
                have = s.in_stock(line.product.sku)
                stock = f"  [{have} in stock{'!' if line.qty > have else ''}]"
            else:
                amount = ""
            disc = f" -{line.discount}" if line.discount else ""
            self.out(
                f"{i:>3} {line.product.sku:<14.14} {line.describe():<26.26}"
                f"{line.qty:>4} x {rupees(line.product.price):>9} {amount:>10}{disc}{stock}"
            )
        t = s.totals()
        if t.mode == "return" and self.take is not None:
            self._show_exchange(t.total)
            return
        if t.mode == "return":
            self.out(
                f"    items {t.items}  refund {rupees(t.total)} by {s.refund_method}"
                "  (type done to record it)"
            )
            return
        disc = f"  discount {rupees(t.discount)}" if t.discount else ""
        self.out(f"    items {t.items}  total {rupees(t.total)}{disc}  (GST {rupees(t.tax)})")
        if s.tenders:
            change = f"  change {rupees(t.change)}" if t.change else ""
            self.out(f"    paid {rupees(t.paid)}  due {rupees(t.due)}{change}")

    def _show_exchange(self, back: int) -> None:
        assert self.take is not None
        self.out(f"    coming back {rupees(back)}; going out:")
        priced = self.take.priced()
        totals_by_line = iter(priced.lines) if priced else iter(())
        for i, line in enumerate(self.take.lines, start=1):
            amount = rupees(next(totals_by_line)["total"]) if line.qty > 0 else ""
            self.out(
                f"{i:>3} {line.product.sku:<14.14} {line.describe():<26.26}"
                f"{line.qty:>4} x {rupees(line.product.price):>9} {amount:>10}"
            )
        net = exchange_net(self.session, self.take)
        if not self.take.lines:
            self.out("    scan the items going out (exchange - goes back to a plain return)")
        elif net > 0:
            self.out(
                f"    customer pays {rupees(net)}: done cash | done machine CODE LAST4 | "
                "done upi [UTR] | done giftcard CODE"
            )
        elif net == 0:
            self.out("    nothing to pay either way (type done to record it)")
        else:
            by = "credit note" if self.session.refund_method == "credit_note" else "cash"
            self.out(f"    customer gets {rupees(-net)} back by {by} (type done to record it)")

    def show_state(self, detail: bool = False) -> None:
        """The state line when it changed (every time with `detail`, and the details after)."""
        if self.read_state is None:
            return
        try:
            now = self.read_state()
        except MeshposError as exc:
            self.out(f"! state unknown: {exc}")
            return
        text = now.line()
        if text != self._line or detail:
            self._line = text
            self.out(text)
        if detail:
            for line in now.details:
                self.out(f"    {line}")

    # -- questions --------------------------------------------------------------------------------

    def ask(self, prompt: str, answer: Callable[[str], None], *, secret: bool = False) -> None:
        self.asks.append(Ask(prompt, answer, secret))
        self.out(f"? {prompt}")

    @property
    def prompt_text(self) -> str:
        return "  answer> " if self.asks else "> "

    @property
    def secret(self) -> bool:
        return bool(self.asks) and self.asks[0].secret

    def _attempt(self, action: Callable[[], None], *, asked: bool = False) -> None:
        """Run a step; one refused for want of a supervisor asks for one and runs again, and one
        refused for rights another counter (or, through HQ, another store) holds asks for them,
        waits a moment and runs once more, as `meshpos sell` and the web till do."""
        try:
            action()
        except EscrowShortfall as short:
            if not asked and self._rights_arrived(short):
                self._attempt(action, asked=True)
            else:
                self.out(f"! {short}")
        except PermissionDenied as exc:
            self.out(f"! {at_the_till(exc)}")
            self.ask(
                "supervisor's user id to approve (Enter cancels)",
                lambda uid: self._approver_pin(uid.strip(), action),
            )
        except OversellNotConfirmed:
            self._ask_oversell()
        except MeshposError as exc:
            self.out(f"! {exc}")

    def _rights_arrived(self, short: EscrowShortfall) -> bool:
        """Ask for the rights `short` lacks when someone can answer (`escrow.worth_asking`) and
        wait, bounded, for them; whether they arrived."""
        wait = RightsWait.ask_if_answerable(self.terminal, short, self.rights_wait_ms)
        if wait is None:
            return False
        self.out("  asking for the rest; a moment...")
        return wait.waited()

    def _approver_pin(self, uid: str, action: Callable[[], None]) -> None:
        if not uid:
            self.out("not approved; nothing changed")
            return
        self.ask(f"PIN of {uid}", lambda pin: self._approve(uid, pin.strip(), action), secret=True)

    def _approve(self, uid: str, pin: str, action: Callable[[], None]) -> None:
        try:
            cred = sign_in(self.terminal, uid, pin, purpose=APPROVAL)
        except MeshposError as exc:
            self.out(f"! approval not given: {exc}")
            return
        with approved_by(self.terminal, cred):
            self._attempt(action)

    def _ask_oversell(self) -> None:
        question = self.editing.oversell_question()
        if question is None:
            return
        self.bell(layout.BeepPattern.UNKNOWN)
        self.ask(f"{question} [y/N]", self._oversell_answer)

    def _oversell_answer(self, text: str) -> None:
        if text.strip().lower() in ("y", "yes"):

            def confirm() -> None:
                self.editing.confirm_oversell()
                self.out("selling beyond stock: the goods are in hand")
                self.show()

            self._attempt(confirm)
        else:
            self.out(self.editing.decline_oversell())
            self.show()

    # -- input ----------------------------------------------------------------------------------

    def scan(self, code: str) -> ScanEvent:
        event = self.editing.add_code(code)
        if isinstance(event, CardScanned):
            self.out(event.message)
            if event.tender is not None:
                self._paid()
        elif isinstance(event, LineAdded | ReturnStarted):
            self.out(("+ " if isinstance(event, LineAdded) else "") + event.message)
            self.show()
            if isinstance(event, LineAdded):
                self._ask_oversell()
        else:
            label = "invalid" if isinstance(event, InvalidCode) else "unknown"
            self.out(f"! {label} scan: {event.message}")
            pattern = layout.BeepPattern[event.beep.upper()]
            self.bell(pattern)
        return event

    def handle(self, line: str) -> bool:
        """One line from the keyboard or a wedge scanner; False when the cashier quits."""
        if self.asks:
            ask = self.asks.pop(0)
            self._attempt(lambda: ask.answer(line.rstrip("\r\n")))
            self.show_state()
            return True
        text = line.strip()
        if not text:
            return True
        word, *args = text.split()
        cmd = word.lower()
        going = True

        def run() -> None:
            nonlocal going
            going = self._command(cmd, args, text)

        self._attempt(run)
        self.show_state()
        return going

    def _command(self, cmd: str, args: list[str], text: str) -> bool:
        s = self.session
        if cmd in ("help", "?", "h"):
            self.out(HELP)
        elif cmd in ("quit", "exit") and not args:
            return False
        elif cmd in ("q", "qty") and 1 <= len(args) <= 2:
            line = _int_arg(args[1], "line") if len(args) == 2 else None
            changed = self.editing.set_qty(_int_arg(args[0], "quantity"), line)
            self.out(f"{changed.product.sku} x{changed.qty}")
            self.show()
            self._ask_oversell()
        elif cmd in ("rm", "del") and len(args) <= 1:
            removed = self.editing.remove_line(_int_arg(args[0], "line") if args else None)
            self.out(f"removed {removed.product.sku}")
            self.show()
        elif cmd in ("c", "customer") and len(args) == 1:
            cust = s.set_customer(None if args[0] == "-" else args[0])
            self.out(
                f"customer {cust['name']} ({cust['customer_id']}), {cust['points']} points"
                if cust
                else "customer removed"
            )
            self.show()
        elif cmd == "gstin" and 1 <= len(args) <= 2:
            found = s.set_buyer(None if args[0] == "-" else args[0], args[1] if args[1:] else None)
            self.out(f"buyer {buyer_words(found)}" if found else "buyer's GSTIN removed")
            self.show()
        elif cmd in ("giftcard", "gc") and args:
            self._giftcard(args)
        elif cmd in ("history", "hist") and len(args) <= 1:
            who = str(args[0] if args else (s.customer or {}).get("customer_id") or "")
            if not who:
                raise InputError("history of whom? attach a customer (c PHONE) or: history PHONE")
            for said in summary_lines(self.terminal, customer_history(self.terminal, who, 5)):
                self.out(said)
        elif cmd in ("disc", "discount") and 1 <= len(args) <= 2:
            line = _int_arg(args[1], "line") if len(args) == 2 else None
            s.discount(None if args[0] == "-" else args[0], line)
            self.show()
        elif cmd == "pay" and args and self.take is not None:
            raise InputError(
                "an exchange settles its difference when it is recorded: done cash, "
                "done machine CODE LAST4, done upi [UTR] or done giftcard CODE"
            )
        elif cmd == "pay" and args:
            self._pay(args[0].lower(), args[1:])
        elif cmd == "exchange" and args == ["-"]:
            if self.take is None:
                raise InputError("no exchange is in progress")
            self.take = None
            self.out("back to a plain return")
            self.show()
        elif cmd == "exchange" and not args:
            if s.mode != "return" or s.ref_sale is None:
                raise InputError("an exchange starts from a receipt: scan it (or: return SALE_ID)")
            if self.take is None:
                self.take = TillSession(self.terminal, s.user)
            self.out(f"exchange against sale {s.ref_sale}: scan the items going out")
            self.show()
        elif cmd == "done" and self.take is not None:
            self._exchange_done(args)
        elif cmd == "refund" and len(args) == 1:
            s.set_refund(args[0].lower())
            self.show()
        elif cmd == "return" and len(args) == 1:
            s.start_return(args[0])
            self.out(f"return against sale {s.ref_sale}: scan the items coming back")
            self.show()
        elif cmd == "hold" and (not args or len(text.split(None, 1)) == 2):
            cart = s.hold(text.split(None, 1)[1] if args else "")
            self.out(f"sale held as {cart.label!r} (#{cart.id}); `recall {cart.id}` brings it back")
        elif cmd == "held" and not args:
            self._held()
        elif cmd == "recall" and len(args) == 1:
            notes = s.recall(_int_arg(args[0], "held sale"))
            self.out(f"held sale #{args[0]} recalled" + "".join(f"; {n}" for n in notes))
            self.show()
        elif cmd == "stock" and len(args) == 1:
            for row in self.terminal.stock(args[0]):
                self.out(
                    f"{row['sku']} {row.get('name', '')}: {row['qty']} in stock at this counter"
                )
        elif cmd in ("receive", "adjust") and len(args) >= 3:
            qty = _int_arg(args[1], "quantity")
            user = self.session.user
            op = self.terminal.move_stock(cmd, args[0], qty, " ".join(args[2:]), user)
            self.out(f"stock of {op.payload['sku']} {'+' if qty > 0 else ''}{qty}: recorded")
        elif cmd == "state" and not args:
            self.show_state(detail=True)
        elif cmd == "retry" and not args:
            self._printer(lambda p: p.retry())
        elif cmd == "reprint" and len(args) <= 1:
            sale = args[0] if args else (self.completed[-1].sale_id if self.completed else None)
            if sale is None:
                raise InputError("no sale rung here yet: reprint SALE_ID")
            self._printer(lambda p: (p.reprint(sale), p.drain())[1])
        elif cmd == "print" and len(args) == 2 and args[0].lower() == "on":
            self._forward(args[1])
        elif cmd == "void" and not args:
            s.void()
            self.take = None
            self.out("sale voided; nothing was recorded")
        elif cmd == "done" and not args:
            self._done()
        elif info_command(s.terminal, cmd, args, self.out):
            pass
        elif len(text.split()) == 1:
            self.scan(text)
        else:
            self.out(f"! unknown command {text!r}; type help")
        return True

    def _pay(self, method: str, rest: list[str]) -> None:
        s = self.session
        if method == "clear" and not rest:
            s.clear_payments()
            self.out("payments cleared")
            self.show()
            return
        if method == "machine":
            if len(rest) < 2:
                amount = rest[0] if rest else None
                self.ask(
                    "approval code and last four digits from the card machine's slip "
                    "(e.g. 123456 4242)",
                    lambda reply: self._pay(
                        "machine", [*reply.split()[:2], *([amount] if amount else [])]
                    ),
                )
                return
            if len(rest) > 3:
                raise InputError("usage: pay machine CODE LAST4 [RUPEES]")
            s.pay("card_machine", rest[2] if len(rest) > 2 else None, rest[1], approval=rest[0])
        elif method == "card":
            if len(rest) > 1:
                raise InputError("usage: pay card [RUPEES] (the card is asked for next)")
            amount = rest[0] if rest else None
            s.card_allowed(amount)  # before the card is swiped
            self.ask(
                "swipe the card, or type its number and expiry MM/YY (Enter cancels)",
                lambda reply: self._card(reply, amount),
                secret=True,
            )
            return
        elif method == "upi":
            if rest and rest[0].replace(" ", "").isdigit() and len(rest[0]) == 12:
                if len(rest) > 2:
                    raise InputError("usage: pay upi UTR [RUPEES]")
                s.pay("upi", rest[1] if len(rest) > 1 else None, upi_ref=rest[0])
            else:
                if len(rest) > 1:
                    raise InputError("usage: pay upi [RUPEES] (the UTR is asked for next)")
                self._upi_request(rest[0] if rest else None)
                return
        elif method in ("giftcard", "gift", "gc"):
            if not 1 <= len(rest) <= 2:
                raise InputError("usage: pay giftcard CODE [RUPEES] (or scan the card)")
            s.pay("giftcard", rest[1] if len(rest) > 1 else None, code=rest[0])
        elif method in ("cash", "points"):
            if len(rest) > 1:
                raise InputError(f"usage: pay {method} [{'N' if method == 'points' else 'RUPEES'}]")
            s.pay(method, rest[0] if rest else None)
        else:
            raise InputError("pay cash|machine|card|upi|giftcard|points|clear: see help")
        self._paid()

    def _giftcard(self, args: list[str]) -> None:
        """`giftcard CODE`: what is left on it; `giftcard sell RUPEES [how]`: sell one."""
        if args[0].lower() != "sell":
            if len(args) != 1:
                raise InputError("usage: giftcard CODE, or giftcard sell RUPEES [upi UTR]")
            for said in giftcards.balance_lines(self.terminal, args[0]):
                self.out(said)
            return
        if not self.session.empty:
            raise InputError("finish or hold this sale before selling a gift card")
        how = [a.lower() for a in args[2:3]]
        if (
            len(args) < 2
            or (how == ["upi"] and len(args) != 4)
            or (how == ["machine"] and len(args) != 5)
            or (how and how[0] not in ("cash", "upi", "machine"))
        ):
            raise InputError("usage: giftcard sell RUPEES [cash | upi UTR | machine CODE LAST4]")
        tenders = cards.final_tenders(
            how[0] if how else "cash",
            approval=args[3] if how == ["machine"] else "",
            last4=args[4] if how == ["machine"] else "",
            upi_ref=args[3] if how == ["upi"] else "",
        )
        op = giftcards.issue(self.terminal, args[1], tenders=tenders, user=self.session.user)
        self.out(f"gift card {op.payload['code']} sold for {rupees(op.payload['amount'])}")
        if self.printing is not None:
            take_enqueued(self.printing.terminal)
            try:
                self._print_outcome(self.printing.drain(), "gift card slip")
            except ConfigError as exc:
                self.out(f"! gift card slip not printed: {exc}")

    def _upi_request(self, amount: str | None) -> None:
        """Show the UPI QR here and print it, then ask for the UTR the customer's phone shows."""
        req = self.session.upi_request(amount)
        self._show_upi(req)
        value = f"{req.amount // 100}.{req.amount % 100:02d}"
        self.ask(
            "UTR from the customer's phone or the sound box, once paid (Enter cancels)",
            lambda reply: self._upi_paid(reply, value),
        )

    def _show_upi(self, req: UpiRequest) -> None:
        """The UPI request's QR on the screen, and on the receipt printer when there is one."""
        self.out(f"UPI: {rupees(req.amount)} to {req.vpa}, reference {req.reference}")
        for line in qr.text_lines(req.uri):
            self.out("  " + line)
        if self.printing is not None:
            t = self.printing.terminal
            try:
                if queue_upi_request(t, req.uri, req.vpa, req.amount, req.reference):
                    take_enqueued(t)
                    self._print_outcome(self.printing.drain(), "UPI slip")
            except ConfigError as exc:
                self.out(f"! UPI slip not printed: {exc}")

    def _upi_paid(self, reply: str, value: str) -> None:
        if not reply.strip():
            self.out("no UPI payment taken")
            return
        self.session.pay("upi", value, upi_ref=reply)
        self.out("UPI payment recorded: pending reconciliation by HQ")
        self._paid()

    def _card(self, reply: str, amount: str | None) -> None:
        if not reply.strip():
            self.out("no card taken")
            return
        self.session.pay("card", amount, card=read_card_line(reply))
        self._paid()

    def _paid(self) -> None:
        self.show()
        if self.session.totals().due == 0:
            self.out("paid in full: type done to finish")

    def _held(self) -> None:
        carts = self.session.parked()
        if not carts:
            self.out("no sales are held at this counter")
        for c in carts:
            self.out(
                f"  #{c.id} {c.label}: {c.items} item(s), {rupees(c.total)}, held by {c.user} "
                f"at {counter_state.hhmm(c.held_ms)}"
            )

    def _printer(self, act: Callable[[Printing], Any]) -> None:
        if self.printing is None:
            raise InputError("this till was started with --no-print: the daemon prints")
        result = act(self.printing)
        self._print_outcome(result, "job")

    def _print_outcome(self, drained: Any, what: str) -> None:
        if drained.waiting or drained.broken:
            error = drained.error or drained.head_error
            if error:
                trouble = printer_words.explain(error, drained.waiting)
                self.out(f"! {trouble.text}")
                self.out(
                    f"  type retry, reprint, or print on COUNTER ({self._peers() or 'none reachable'})"
                )
            else:
                self.out(f"! {drain_note(drained, what)}")
        elif drained.printed:
            self.out(f"printed {len(drained.printed)} {what}(s)")
        else:
            self.out("nothing waits for the printer")

    def _peers(self) -> str:
        status = daemon_status(self.terminal.cfg.dir)
        return ", ".join(str(p.get("name")) for p in status.get("peers") or [] if p.get("up"))

    def _forward(self, peer: str) -> None:
        if self.printing is None:
            raise InputError("this till was started with --no-print: the daemon prints")
        status = daemon_status(self.terminal.cfg.dir)
        if not status:
            raise InputError(
                "the sync service is not running here, so slips cannot go to another counter"
            )
        seen = {p["node_id"]: p["name"] for p in status.get("peers", []) if p.get("name")}
        name, jobs = self.printing.forward(peer, seen)
        self.out(f"{len(jobs)} slip(s) sent to {name}'s printer")

    def _exchange_done(self, args: list[str]) -> None:
        assert self.take is not None
        method = args[0].lower() if args else "cash"
        rest = args[1:]
        if method == "upi" and not rest:
            ask = exchange_upi_request(self.session, self.take)
            self._show_upi(ask)
            self.ask(
                "UTR from the customer's phone or the sound box, once paid (Enter cancels)",
                self._exchange_upi_paid,
            )
            return
        usage = {
            "cash": 0,
            "machine": 2,
            "card_machine": 2,
            "upi": 1,
            "giftcard": 1,
            "gc": 1,
        }
        if method not in usage or len(rest) != usage[method]:
            raise InputError("usage: done [cash | machine CODE LAST4 | upi [UTR] | giftcard CODE]")
        machine = method in ("machine", "card_machine")
        payment = exchange_payment(
            method,
            approval=rest[0] if machine else "",
            last4=rest[1] if machine else "",
            upi_ref=rest[0] if method == "upi" else "",
            code=rest[0] if method in ("giftcard", "gc") else "",
        )
        # The Terminal refuses a payment when the customer is owed the difference.
        result = record_exchange(self.session, self.take, payment)
        self.take = None
        self._recorded(result)

    def _exchange_upi_paid(self, reply: str) -> None:
        if not reply.strip():
            self.out("no UPI payment taken; the exchange is not recorded yet")
            return
        self._exchange_done(["upi", reply.strip()])

    def _done(self) -> None:
        self._recorded(self.session.complete())

    def _recorded(self, result: SaleResult) -> None:
        self.completed.append(result)
        p = result.payload
        kind = result.op.kind
        change = change_given(p)
        paid = ", ".join(
            f"{t['method'].replace('_', ' ')} {rupees(abs(t['amount']))}"
            + (f" {t['code']}" if t.get("code") else "")
            for t in p["tenders"]
        )
        self.out(
            f"{kind} {result.sale_id} recorded: total {rupees(p['total'])}, {paid or '-'}"
            + (f", change {rupees(change)}" if change else "")
        )
        if self.printing is None:
            return
        take_enqueued(self.printing.terminal)
        try:
            drained = self.printing.drain()
        except ConfigError as exc:
            self.out(f"! receipt queued, not printed: {exc}")
            return
        if drained.waiting or drained.broken:
            self._print_outcome(drained, "receipt")
        elif any(j.sale_id == result.sale_id for j in drained.printed):
            self.out("receipt printed")

    def finish(self) -> None:
        self.take = None
        if not self.session.empty:
            self.session.void()
            self.out("unfinished sale voided; nothing was recorded")

    # -- the loop -------------------------------------------------------------------------------

    def run(
        self,
        stdin: TextIO,
        sources: Sequence[Source] = (),
        prompt: Callable[[], None] | None = None,
    ) -> None:
        """Read stdin (keyboard, wedge scanner) and any scanners until EOF or `quit`."""
        self.out("meshpos till: scan items, `help` for commands")
        self.show_state()

        def ready() -> None:
            self.echo(not self.secret)
            if prompt:
                prompt()

        if not sources:
            try:
                while True:
                    ready()
                    line = stdin.readline()
                    if not line or not self.handle(line):
                        break
            finally:
                self.echo(True)
            self.finish()
            return
        events: queue.Queue[tuple[str, str]] = queue.Queue()
        stop = threading.Event()

        def read_scanner(source: Source) -> None:
            try:
                for code in source.codes(stop):
                    events.put(("scan", code))
            except ScannerUnavailable as exc:
                events.put(("error", str(exc)))

        def read_stdin() -> None:
            for line in iter(stdin.readline, ""):
                events.put(("line", line))
            events.put(("eof", ""))

        threads = [
            threading.Thread(target=read_scanner, args=(src,), name="till-scanner", daemon=True)
            for src in sources
        ]
        threads.append(threading.Thread(target=read_stdin, name="till-stdin", daemon=True))
        for thread in threads:
            thread.start()
        try:
            while True:
                ready()
                kind, value = events.get()
                if kind == "eof":
                    break
                if kind == "error":
                    self.out(f"! {value}")
                elif kind == "scan":
                    if self.asks:  # a scan while a question waits: the answer is no
                        self.handle("")
                    self.scan(value)
                elif not self.handle(value):
                    break
        finally:
            self.echo(True)
            stop.set()
            for thread in threads[:-1]:
                thread.join(timeout=2)
            for src in sources:
                src.close()
        self.finish()


@contextlib.contextmanager
def _state_reader(t: Terminal) -> Iterator[Callable[[], CounterState]]:
    """The counter's state, read through a connection of its own (as the web till does)."""
    feed = LiveFeed(str(t.cfg.db_path), t.ledger.key)
    try:
        yield lambda: counter_state.read(feed, t.cfg, t.node_id, wall_ms())
    finally:
        feed.close()


def _tty_echo(stream: TextIO) -> Callable[[bool], None]:
    """Switch the terminal's echo, so a PIN or a swiped card is not shown."""
    try:
        import termios

        fd = stream.fileno()
        saved = termios.tcgetattr(fd)
    except (ImportError, OSError, ValueError):
        return lambda on: None

    def echo(on: bool) -> None:
        quiet = list(saved)
        quiet[3] = saved[3] & ~termios.ECHO
        termios.tcsetattr(fd, termios.TCSANOW, saved if on else quiet)

    return echo


@click.command()
@click.option(
    "--scanner",
    "scanners",
    multiple=True,
    metavar="serial:URL|usb:VID:PID",
    help="Also read this scanner (repeatable). Default: [scanner] in meshpos.toml, if any.",
)
@click.option("--no-print", is_flag=True, help="Queue receipts; leave printing to the daemon.")
@click.pass_context
def till(ctx: click.Context, scanners: tuple[str, ...], no_print: bool) -> None:
    """Ring sales interactively: scan or type codes, see the running total, take payment."""
    t = selling_terminal(ctx)
    specs = list(scanners)
    if not specs:
        configured = scanner_setup(t.cfg)
        if configured.kind != "wedge":
            specs.append(configured.spec)
    sources = [open_scanner(spec) for spec in specs]
    printing = Printing(t)
    stdin = sys.stdin
    tty = stdin.isatty()

    def bell(pattern: layout.BeepPattern) -> None:
        click.echo(layout.terminal_bell(pattern), nl=False)
        printing.beep(pattern)

    mark = "TRAINING " if is_practice(t.cfg) else ""  # selling_terminal said why
    guard = till_power_guard(t, printing)
    with _state_reader(t) as state:
        console = TillConsole(
            TillSession(t, acting_user(ctx)),
            None if no_print else printing,
            click.echo,
            bell=bell,
            state=state,
            echo=_tty_echo(stdin) if tty else None,
        )

        def prompt() -> None:
            for message in guard.poll(wall_ms(), sale_open=not console.session.empty):
                click.echo(f"! {message}")
            if tty:
                click.echo(f"{mark}{console.prompt_text}", nl=False)

        console.run(stdin, sources, prompt=prompt)
    take_enqueued(t)
    sys.stdout.flush()
