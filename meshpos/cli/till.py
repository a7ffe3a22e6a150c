"""`meshpos till`: the interactive till for a keyboard, a keyboard-wedge scanner or a serial/USB
scanner. `TillConsole` is its text front over a `TillSession` (meshpos/service/till.py)."""

from __future__ import annotations

import queue
import sys
import threading
from collections.abc import Callable, Sequence
from typing import Any, Protocol, TextIO

import click

from meshpos.cli.common import acting_user
from meshpos.cli.printing import drain_note, selling_terminal
from meshpos.cli.till_info import HELP as INFO_HELP
from meshpos.cli.till_info import info_command
from meshpos.core.clock import wall_ms
from meshpos.core.errors import ConfigError, InputError, MeshposError
from meshpos.devices import layout
from meshpos.devices.scanners import HidScanner, ScannerUnavailable, SerialScanner
from meshpos.domain.money import rupees
from meshpos.service.power import till_power_guard
from meshpos.service.printing import Printing, scanner_setup, take_enqueued
from meshpos.service.terminal import SaleResult
from meshpos.service.till import (
    InvalidCode,
    LineAdded,
    ReturnStarted,
    ScanEvent,
    TillSession,
    change_given,
)
from meshpos.service.training import is_practice

HELP = (
    """\
scan or type a barcode or SKU to add it; scan a receipt to start a return
  q N [LINE]            quantity of the last line (or of LINE)
  rm [LINE]             remove the last line (or LINE)
  c PHONE|ID  /  c -    attach a customer (loyalty) / detach
  disc 10%|50 [LINE]    discount on the sale (or on LINE); disc - [LINE] removes it
  pay cash [RUPEES]     cash (more than due gives change); pay card [RUPEES] [LAST4]
  pay points [N]        redeem the customer's points; pay clear drops the payments
  refund cash|card|points   how a return is paid out
  return SALE_ID        start a return by typing the receipt's sale id
  void                  drop this sale (nothing was recorded)
  done                  record the sale and print the receipt
  help                  this text;  quit  leave the till
"""
    + INFO_HELP
)


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
    """The text front of a TillSession: one input line (a command or a scan) at a time."""

    def __init__(
        self,
        session: TillSession,
        printing: Printing | None,
        out: Callable[[str], None],
        *,
        bell: Callable[[layout.BeepPattern], None] | None = None,
    ) -> None:
        self.session = session
        self.printing = printing
        self.out = out
        self.bell = bell or (lambda pattern: None)
        self.completed: list[SaleResult] = []

    # -- showing the sale -----------------------------------------------------------------------

    def show(self) -> None:
        s = self.session
        if s.empty:
            self.out("(no sale in progress: scan an item)")
            return
        title = f"return of {s.ref_sale}" if s.mode == "return" else "sale"
        if s.customer:
            title += f"  customer {s.customer['name']} ({s.customer['customer_id']}, "
            title += f"{s.customer['points']} pts)"
        self.out(title)
        priced = s.priced()
        totals_by_line = iter(priced.lines) if priced else iter(())
        for i, line in enumerate(s.lines, start=1):
            if s.mode == "return":
                amount = f"of {line.limit}"
            elif line.qty > 0:
                amount = rupees(next(totals_by_line)["total"])
            else:
                amount = ""
            disc = f" -{line.discount}" if line.discount else ""
            self.out(
                f"{i:>3} {line.product.sku:<14.14} {line.describe():<26.26}"
                f"{line.qty:>4} x {rupees(line.product.price):>9} {amount:>10}{disc}"
            )
        t = s.totals()
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

    # -- input ----------------------------------------------------------------------------------

    def scan(self, code: str) -> ScanEvent:
        event = self.session.add_code(code)
        if isinstance(event, LineAdded | ReturnStarted):
            self.out(("+ " if isinstance(event, LineAdded) else "") + event.message)
            self.show()
        else:
            label = "invalid" if isinstance(event, InvalidCode) else "unknown"
            self.out(f"! {label} scan: {event.message}")
            pattern = layout.BeepPattern[event.beep.upper()]
            self.bell(pattern)
        return event

    def handle(self, line: str) -> bool:
        """One line from the keyboard or a wedge scanner; False when the cashier quits."""
        text = line.strip()
        if not text:
            return True
        word, *args = text.split()
        cmd = word.lower()
        try:
            return self._command(cmd, args, text)
        except MeshposError as exc:
            self.out(f"! {exc}")
            return True

    def _command(self, cmd: str, args: list[str], text: str) -> bool:
        s = self.session
        if cmd in ("help", "?", "h"):
            self.out(HELP)
        elif cmd in ("quit", "exit") and not args:
            return False
        elif cmd in ("q", "qty") and 1 <= len(args) <= 2:
            line = _int_arg(args[1], "line") if len(args) == 2 else None
            changed = s.set_qty(_int_arg(args[0], "quantity"), line)
            self.out(f"{changed.product.sku} x{changed.qty}")
            self.show()
        elif cmd in ("rm", "del") and len(args) <= 1:
            removed = s.remove_line(_int_arg(args[0], "line") if args else None)
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
        elif cmd in ("disc", "discount") and 1 <= len(args) <= 2:
            line = _int_arg(args[1], "line") if len(args) == 2 else None
            s.discount(None if args[0] == "-" else args[0], line)
            self.show()
        elif cmd == "pay" and args and args[0].lower() == "clear" and len(args) == 1:
            s.clear_payments()
            self.out("payments cleared")
            self.show()
        elif cmd == "pay" and 1 <= len(args) <= 3:
            amount = args[1] if len(args) > 1 else None
            last4 = args[2] if len(args) > 2 else None
            if args[0].lower() == "points" and len(args) > 2:
                raise InputError("usage: pay points [N]")
            s.pay(args[0], amount, last4)
            self.show()
            if s.totals().due == 0:
                self.out("paid in full: type done to finish")
        elif cmd == "refund" and len(args) == 1:
            s.set_refund(args[0].lower())
            self.show()
        elif cmd == "return" and len(args) == 1:
            s.start_return(args[0])
            self.out(f"return against sale {s.ref_sale}: scan the items coming back")
            self.show()
        elif cmd == "void" and not args:
            s.void()
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

    def _done(self) -> None:
        result = self.session.complete()
        self.completed.append(result)
        p = result.payload
        kind = result.op.kind
        change = change_given(p)
        paid = ", ".join(f"{t['method']} {rupees(abs(t['amount']))}" for t in p["tenders"])
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
            self.out(f"! receipt queued: {drain_note(drained, 'receipt')}")
        elif any(j.sale_id == result.sale_id for j in drained.printed):
            self.out("receipt printed")

    def finish(self) -> None:
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
        if not sources:
            while True:
                if prompt:
                    prompt()
                line = stdin.readline()
                if not line or not self.handle(line):
                    break
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
                if prompt:
                    prompt()
                kind, value = events.get()
                if kind == "eof":
                    break
                if kind == "error":
                    self.out(f"! {value}")
                elif kind == "scan":
                    self.scan(value)
                elif not self.handle(value):
                    break
        finally:
            stop.set()
            for thread in threads[:-1]:
                thread.join(timeout=2)
            for src in sources:
                src.close()
        self.finish()


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

    console = TillConsole(
        TillSession(t, acting_user(ctx)), None if no_print else printing, click.echo, bell=bell
    )
    mark = "TRAINING " if is_practice(t.cfg) else ""  # selling_terminal said why
    guard = till_power_guard(t, printing)

    def prompt() -> None:
        for message in guard.poll(wall_ms(), sale_open=not console.session.empty):
            click.echo(f"! {message}")
        if tty:
            click.echo(f"{mark}> ", nl=False)

    console.run(stdin, sources, prompt=prompt)
    take_enqueued(t)
    sys.stdout.flush()
