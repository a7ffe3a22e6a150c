"""Devices wired to a terminal: the print queue hook, printing jobs, reprints, reports, beeps,
what `meshpos devices list` shows, and the daemon's side of printing and printer failover.

The receipt of a sale, return or exchange is queued by `queue_receipt`, a record hook a terminal
is given when it is made (`Terminal.open(dir, on_record=[queue_receipt])`), inside the
transaction that records the op, so the sale and its print job commit together. The job stores
what to print (the op payload, the loyalty balance right after it, the cashier), not bytes: it is
rendered when it prints, for whichever printer prints it, which is what lets a peer terminal with a
different paper width print it during failover.

Printing setup comes from meshpos.toml: a `[printer]` table (see devices/printers.py), or, without
one, a file printer appending to `receipts.bin` in the node directory so a demo needs no hardware;
`kind = "none"` turns receipts off. A `[scanner]` table names the till's scanner.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import stat
import textwrap
import threading
import weakref
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from meshpos.core.clock import wall_ms
from meshpos.core.errors import ConfigError, InputError, MeshposError, NotFound
from meshpos.core.ops import Op
from meshpos.devices import layout, printers
from meshpos.devices.printers import PrinterConfig, PrinterUnavailable
from meshpos.devices.receipt import StoreHeader, receipt_from_sale
from meshpos.devices.scanners import HidScanner, ScannerUnavailable, SerialScanner
from meshpos.domain.money import rate
from meshpos.domain.storetime import StoreTime
from meshpos.ledger.print_queue import (
    DrainResult,
    JobKind,
    JobState,
    PrintError,
    PrintJob,
    PrintQueue,
)
from meshpos.ledger.store import Ledger
from meshpos.service.config import NodeConfig
from meshpos.service.reports import close_day, shift_totals
from meshpos.service.terminal import Terminal
from meshpos.service.training import is_practice

log = logging.getLogger("meshpos.devices")

DEFAULT_PRINT_FILE = "receipts.bin"
REQUEST_JOB = "print.job"
REQUEST_ACK = "print.ack"
FORWARD_RETRY_MS = 2_000
FORWARD_BATCH = 50
COPY_NOTE = "*** DUPLICATE COPY ***"
INTERRUPTED_NOTE = "* PRINTED AGAIN: MAY BE A DUPLICATE *"
TRAINING_NOTE = "*** TRAINING - NOT A SALE ***"


# -- configuration ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class PrinterSetup:
    """The terminal's printer, and whether meshpos.toml names it (False: the default file)."""

    config: PrinterConfig
    configured: bool


def printer_setup(cfg: NodeConfig) -> PrinterSetup | None:
    """The printer from `[printer]`; the default file printer without one; None for kind "none".

    Raises ConfigError naming the bad key when the table is malformed."""
    raw = cfg.section("printer")
    if not raw:
        return PrinterSetup(
            PrinterConfig(kind="file", device=str(cfg.dir / DEFAULT_PRINT_FILE)), False
        )
    if raw.get("kind", raw.get("type")) == "none":
        return None
    data = dict(raw)
    device = data.get("device", data.get("path"))
    if data.get("kind") == "file" and isinstance(device, str) and not os.path.isabs(device):
        data.pop("path", None)
        data["device"] = str(cfg.dir / device)
    return PrinterSetup(PrinterConfig.from_dict(data), True)


def printing_enabled(cfg: NodeConfig) -> bool:
    """Whether sales queue receipts here; read without validating the rest of [printer], so a
    typo in the printer settings never stops a sale."""
    raw = cfg.raw.get("printer")
    return not (isinstance(raw, dict) and raw.get("kind", raw.get("type")) == "none")


def store_header(cfg: NodeConfig) -> StoreHeader:
    data = dict(cfg.section("store"))
    name = str(data.get("name") or cfg.store_name or f"meshpos store {cfg.store}")
    data["name"] = name
    try:
        return StoreHeader.from_dict(data)
    except InputError as exc:
        raise ConfigError(f"{cfg.dir / 'meshpos.toml'}: [{exc}]") from None


@dataclass(frozen=True)
class ScannerSetup:
    """The till's scanner: `[scanner]` kind = "wedge" (default), "serial" (device, baudrate)
    or "usb" (vendor_id, product_id)."""

    kind: str = "wedge"
    device: str = ""
    baudrate: int = 9600
    vendor_id: int = 0
    product_id: int = 0

    @property
    def spec(self) -> str:
        if self.kind == "serial":
            return f"serial:{self.device}"
        if self.kind == "usb":
            return f"usb:{self.vendor_id:04x}:{self.product_id:04x}"
        return "wedge"

    def describe(self) -> str:
        if self.kind == "serial":
            return f"serial scanner {self.device} at {self.baudrate} baud"
        if self.kind == "usb":
            return f"USB HID scanner {self.vendor_id:04x}:{self.product_id:04x}"
        return "keyboard-wedge scanner (types into `meshpos till`)"


def scanner_setup(cfg: NodeConfig) -> ScannerSetup:
    raw = cfg.section("scanner")
    kind = raw.get("kind", "wedge")
    if kind not in ("wedge", "serial", "usb"):
        raise ConfigError(f"scanner.kind must be wedge, serial or usb, not {kind!r}")
    unknown = set(raw) - {"kind", "device", "baudrate", "vendor_id", "product_id"}
    if unknown:
        raise ConfigError(f"scanner.{sorted(unknown)[0]} is not a scanner setting")
    try:
        setup = ScannerSetup(
            kind=kind,
            device=str(raw.get("device", "")),
            baudrate=int(raw.get("baudrate", 9600)),
            vendor_id=int(str(raw.get("vendor_id", 0)), 0),
            product_id=int(str(raw.get("product_id", 0)), 0),
        )
    except ValueError:
        raise ConfigError("scanner.baudrate, vendor_id and product_id must be numbers") from None
    if kind == "serial" and not setup.device:
        raise ConfigError("scanner.device is required for a serial scanner")
    if kind == "usb" and not (setup.vendor_id and setup.product_id):
        raise ConfigError("scanner.vendor_id and scanner.product_id are required for USB")
    return setup


# -- rendering and sending -------------------------------------------------------------------------


def _notes(text: str, width: int) -> list[layout.Text]:
    return [
        layout.Text(chunk, "center", bold=True)
        for chunk in textwrap.wrap(text, width, break_long_words=True)
    ]


def render_job(
    kind: str,
    doc: Mapping[str, Any],
    cfg: PrinterConfig,
    header: StoreHeader,
    *,
    interrupted: bool = False,
) -> bytes:
    """The ESC/POS bytes of a queued job for printer `cfg`; PrintError if its document is
    damaged. A reprint (or a job printed again after an interruption) is marked as a copy and
    never opens the cash drawer."""
    if kind in (JobKind.RECEIPT, JobKind.REPRINT) and doc.get("op_kind") == "giftcard.issue":
        return _voucher_bytes(doc, cfg, header)
    if kind in (JobKind.RECEIPT, JobKind.REPRINT) and doc.get("op_kind") == UPI_REQUEST:
        fields = [doc.get(k) for k in ("uri", "vpa", "amount", "reference")]
        if not (all(isinstance(f, str) for f in fields[:2]) and type(fields[2]) is int):
            raise PrintError("UPI request slip is damaged")
        slip = layout.render_upi_request(
            header, uri=str(fields[0]), vpa=str(fields[1]), amount=int(str(fields[2])),
            reference=str(fields[3] or ""), options=cfg.layout,
        )  # fmt: skip
        return layout.render_bytes(slip, cfg.profile)
    if kind in (JobKind.RECEIPT, JobKind.REPRINT):
        payload = doc.get("payload")
        if not isinstance(payload, Mapping):
            raise PrintError("print job has no sale to print")
        balance = doc.get("loyalty_balance")
        try:
            if isinstance(doc.get("timezone"), str):
                header = replace(header, time=StoreTime.named(doc["timezone"]))
            receipt = receipt_from_sale(
                payload,
                header,
                balance if isinstance(balance, int) else None,
                kind=str(doc.get("op_kind") or "sale"),
                cashier=str(doc.get("cashier") or ""),
                customer_name=str(doc.get("customer_name") or ""),
            )
        except InputError as exc:
            raise PrintError(f"receipt cannot be printed: {exc}") from None
        copy = kind == JobKind.REPRINT
        options = replace(cfg.layout, kick_drawer=cfg.kick_drawer and not copy and not interrupted)
        commands = list(layout.render_receipt(receipt, options))
        notes = (_notes(COPY_NOTE, cfg.width) if copy else []) + (
            _notes(INTERRUPTED_NOTE, cfg.width) if interrupted else []
        )
        if doc.get("training"):
            notes[:0] = _notes(TRAINING_NOTE, cfg.width)
            commands.extend(_notes(TRAINING_NOTE, cfg.width))
        title = layout.TITLES[receipt.kind]
        at = next(
            (
                i + 1
                for i, c in enumerate(commands)
                if isinstance(c, layout.Text) and c.text == title
            ),
            1,
        )
        commands[at:at] = notes
        return layout.render_bytes(commands, cfg.profile)
    if kind == JobKind.REPORT:
        rows = doc.get("rows")
        if not isinstance(rows, list) or not all(
            isinstance(r, list | tuple) and len(r) == 2 for r in rows
        ):
            raise PrintError("report job has no rows to print")
        report = layout.ReportPrint(
            title=str(doc.get("title", "REPORT")),
            rows=tuple((str(a), str(b)) for a, b in rows),
            subtitle=str(doc.get("subtitle", "")),
        )
        return layout.render_bytes(layout.render_report(report, header, cfg.layout), cfg.profile)
    raise PrintError(f"unknown print job kind {kind!r}")


def _voucher_bytes(doc: Mapping[str, Any], cfg: PrinterConfig, header: StoreHeader) -> bytes:
    """The slip of a gift card sold: its value, expiry and code as a barcode."""
    p = doc.get("payload")
    if not isinstance(p, Mapping) or not isinstance(p.get("code"), str):
        raise PrintError("gift card slip has no card to print")
    amount, expires, issued = p.get("amount"), p.get("expires_ms"), p.get("ts_ms")
    if type(amount) is not int or type(issued) is not int:
        raise PrintError("gift card slip is damaged: no amount or time")
    if isinstance(doc.get("timezone"), str):
        header = replace(header, time=StoreTime.named(doc["timezone"]))
    commands = layout.render_voucher(
        header,
        title="GIFT CARD",
        code=p["code"],
        amount=amount,
        expires=header.time.day(expires) if type(expires) is int else "",
        issued=header.time.stamp(issued),
        options=cfg.layout,
    )
    return layout.render_bytes(commands, cfg.profile)


def _is_plain_file(path: str) -> bool:
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except FileNotFoundError:
        return True
    except OSError:
        return False


def send(cfg: PrinterConfig, data: bytes) -> None:
    """Send one rendered job. A file printer that is a plain file gets the job appended (python-
    escpos' File truncates on open, which would keep only the last receipt of a demo); a device
    file (/dev/usb/lp0), and every other kind, goes through python-escpos."""
    if cfg.kind == "file" and _is_plain_file(cfg.device):
        try:
            fd = os.open(cfg.device, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            raise PrinterUnavailable(
                f"{cfg.describe()} is unavailable: {exc.strerror or exc}"
            ) from exc
        return
    printers.send(cfg, data)


# -- the receipt hook ------------------------------------------------------------------------------

_enqueued: weakref.WeakKeyDictionary[Terminal, list[int]] = weakref.WeakKeyDictionary()


def receipt_doc(terminal: Terminal, op: Op, payload: Mapping[str, Any]) -> dict[str, Any]:
    """What a slip prints beyond its op: the customer's name and points right after it, and
    the store's time zone then (a setting from HQ may differ from meshpos.toml)."""
    customer = payload.get("customer")
    found = terminal.ledger.views.customer(str(customer)) if customer else None
    return {
        "op_kind": op.kind,
        "payload": dict(payload),
        "loyalty_balance": int(found["points"]) if found else None,
        "customer_name": str(found["name"]) if found else "",
        "cashier": op.user,
        "timezone": terminal.store_time().name,
        "training": is_practice(terminal.cfg),
    }


def queue_receipt(terminal: Terminal, op: Op, payload: dict[str, Any]) -> None:
    """The record hook: queue the slip of a sale, return or exchange in its transaction (not
    of a paper entry: its customer left with the paper slip)."""
    if not printing_enabled(terminal.cfg) or "paper" in payload:
        return
    job = terminal.ledger.print_queue.enqueue(
        JobKind.RECEIPT,
        receipt_doc(terminal, op, payload),
        now_ms=terminal.now_ms(),
        sale_id=str(payload.get("sale_id", "")),
        origin=op.origin,
        seq=op.seq,
    )
    recent = _enqueued.setdefault(terminal, [])
    recent.append(job)
    del recent[:-1000]


UPI_REQUEST = "upi.request"


def queue_upi_request(terminal: Terminal, uri: str, vpa: str, amount: int, reference: str) -> bool:
    """Queue the slip with a UPI request's QR code (the text till has no screen to show it);
    False when this till prints no receipts."""
    if not printing_enabled(terminal.cfg):
        return False
    doc = {"op_kind": UPI_REQUEST, "uri": uri, "vpa": vpa, "amount": amount,
           "reference": reference}  # fmt: skip
    job = terminal.ledger.print_queue.enqueue(JobKind.RECEIPT, doc, now_ms=terminal.now_ms())
    _enqueued.setdefault(terminal, []).append(job)
    return True


def take_enqueued(terminal: Terminal) -> list[int]:
    """Jobs this process queued through `terminal` since the last call."""
    return _enqueued.pop(terminal, [])


# -- printing at a terminal ------------------------------------------------------------------------


def _owner() -> str:
    return f"{os.getpid()}.{threading.get_ident()}"


def report_rows(totals: Mapping[str, Any]) -> list[list[str]]:
    """X/Z totals (meshpos.service.reports.shift_totals) as label/value rows for the printer."""
    money = layout.format_money
    rows: list[list[str]] = [
        ["Terminal", str(totals.get("terminal", ""))],
        ["Sales", str(totals.get("sales", 0))],
        ["Returns", str(totals.get("returns", 0))],
        ["Exchanges", str(totals.get("exchanges", 0))],
        [
            "Receipts",
            f"{totals.get('first_receipt') or '-'} to {totals.get('last_receipt') or '-'}",
        ],
        ["", ""],
        ["Gross", money(int(totals.get("gross") or 0))],
        ["Discounts", money(-int(totals.get("discounts") or 0))],
        ["Net takings", money(int(totals.get("net") or 0))],
        ["GST included", money(int(totals.get("tax") or 0))],
    ]
    if totals.get("tenders"):
        rows.append(["", ""])
        for t in totals["tenders"]:
            label = str(t["method"]).replace("_", " ").capitalize()
            rows.append([f"{label} ({t['count']})", money(int(t["amount"]))])
    if totals.get("giftcards_sold"):
        rows.append(["", ""])
        rows.append(
            [
                f"Gift cards sold ({totals['giftcards_sold']})",
                money(int(totals["giftcards_amount"])),
            ]
        )
        for t in totals.get("giftcard_tenders") or []:
            label = str(t["method"]).replace("_", " ").capitalize()
            rows.append([f"  paid {label}", money(int(t["amount"]))])
    if totals.get("gst"):
        rows.append(["", ""])
        for g in totals["gst"]:
            rows.append([f"GST {rate(int(g['gst_rate']))} taxable", money(int(g["taxable"]))])
            for head in ("cgst", "sgst", "igst"):
                if g.get(head):
                    rows.append([f"  {head.upper()}", money(int(g[head]))])
    return rows


class JobPrinter:
    """Prints one node's queued jobs through its configured printer."""

    def __init__(self, cfg: NodeConfig, queue: PrintQueue) -> None:
        self.cfg = cfg
        self.queue = queue
        self._setup: tuple[PrinterSetup | None] | None = None

    @property
    def setup(self) -> PrinterSetup | None:
        """The printer (parsed once); raises ConfigError for a malformed [printer] table."""
        if self._setup is None:
            self._setup = (printer_setup(self.cfg),)
        return self._setup[0]

    def print_job(self, job: PrintJob) -> None:
        setup = self.setup
        if setup is None:
            raise PrinterUnavailable('printing is off here ([printer] kind = "none")')
        data = render_job(
            job.kind, job.doc, setup.config, store_header(self.cfg), interrupted=job.interrupted
        )
        send(setup.config, data)

    def drain(self, now_ms: int) -> DrainResult:
        """Print every due job, in order, until the printer fails."""
        return self.queue.drain(
            now_ms, self.print_job, owner=_owner(), unavailable=PrinterUnavailable
        )


class Printing:
    """Printing for one terminal: drains its queue through its printer, reprints, reports,
    failover requests, beeps and device status. Used by the CLI and the till."""

    def __init__(self, terminal: Terminal, now_ms: Callable[[], int] | None = None) -> None:
        self.terminal = terminal
        self.now_ms = now_ms or terminal.now_ms
        self.queue = terminal.ledger.print_queue
        self.printer = JobPrinter(terminal.cfg, self.queue)

    @property
    def setup(self) -> PrinterSetup | None:
        return self.printer.setup

    def header(self) -> StoreHeader:
        return store_header(self.terminal.cfg)

    def drain(self, now_ms: int | None = None) -> DrainResult:
        return self.printer.drain(self.now_ms() if now_ms is None else now_ms)

    def retry(self) -> DrainResult:
        self.queue.retry_now()
        return self.drain()

    def reprint(self, sale_id: str) -> int:
        """Queue a duplicate copy of a sale's, return's or exchange's slip (full sale id, or the
        receipt number printed on it)."""
        t = self.terminal
        rows = t.ledger.views.sales(sale_id, returns=True)
        exact = [r for r in rows if r["sale_id"] == sale_id]
        rows = exact or rows
        if not rows:
            raise NotFound(f"unknown sale {sale_id!r}: see `meshpos ops tail` for sale ids")
        if len({r["sale_id"] for r in rows}) > 1:
            raise InputError(f"sale {sale_id!r} is ambiguous: give the full sale id")
        op = t.ledger.get(rows[0]["origin"], rows[0]["seq"])
        if op is None:
            raise NotFound(f"unknown sale {sale_id!r}")
        return self.queue.enqueue(
            JobKind.REPRINT,
            receipt_doc(t, op, op.payload),
            now_ms=self.now_ms(),
            sale_id=str(op.payload.get("sale_id", sale_id)),
            origin=op.origin,
            seq=op.seq,
        )

    def report(self, which: str, user: str | None = None) -> tuple[dict[str, Any], int]:
        """Queue an X report, or close the day with a Z report and queue it in the same
        transaction as the `report.z` op."""
        t = self.terminal
        if which not in ("x", "z"):
            raise InputError(f"report {which!r} must be x or z")
        with t.transaction():
            totals = close_day(t, user) if which == "z" else shift_totals(t)
            title = f"Z REPORT #{totals['z_number']}" if which == "z" else "X REPORT"
            subtitle = f"{totals['day']} (printed {t.store_time().iso(self.now_ms())})"
            job = self.queue.enqueue(
                JobKind.REPORT,
                {"title": title, "subtitle": subtitle, "rows": report_rows(totals)},
                now_ms=self.now_ms(),
            )
        return totals, job

    def resolve_peer(self, name: str, seen: Mapping[str, str] | None = None) -> tuple[str, str]:
        """A terminal of this store by name or node id: (node_id, name). `seen` adds peers the
        daemon is talking to (node id -> name) that the ledger has no record of yet."""
        me = self.terminal.node_id
        known = {
            n.node_id: n.name
            for n in self.terminal.ledger.nodes()
            if n.store == self.terminal.cfg.store
        }
        for node_id, peer_name in (seen or {}).items():
            known.setdefault(node_id, peer_name)
        for node_id, peer_name in known.items():
            if name in (peer_name, node_id):
                if node_id == me:
                    raise InputError(f"{name} is this terminal; --via names a peer's printer")
                return node_id, peer_name
        others = ", ".join(sorted(n for i, n in known.items() if i != me)) or "none yet"
        raise NotFound(f"unknown peer {name!r}; terminals known here: {others}")

    def forward(
        self, peer: str, seen: Mapping[str, str] | None = None
    ) -> tuple[str, list[PrintJob]]:
        """Hand every waiting job to `peer`'s printer (the daemon sends them)."""
        node_id, name = self.resolve_peer(peer, seen)
        return name, self.queue.forward(node_id, self.now_ms())

    def test_print(self) -> PrinterSetup:
        setup = self.setup
        if setup is None:
            raise ConfigError('printing is off here ([printer] kind = "none")')
        send(setup.config, printers.render_test_page(setup.config, self.terminal.cfg.name))
        return setup

    def beep(self, pattern: layout.BeepPattern, wait: bool = False) -> threading.Thread | None:
        """Sound the printer's buzzer, best effort and off the caller's thread (a dead printer
        must not hold up the till); only for a printer meshpos.toml names."""
        try:
            setup = self.setup
        except ConfigError:
            return None
        if setup is None or not setup.configured:
            return None
        cfg = setup.config

        def run() -> None:
            with contextlib.suppress(MeshposError):
                send(cfg, layout.render_bytes(layout.render_beep(pattern), cfg.profile))

        thread = threading.Thread(target=run, name="printer-beep", daemon=True)
        thread.start()
        if wait:
            thread.join()
        return thread

    def status(self, probe: bool = True) -> dict[str, Any]:
        """What `meshpos devices list` shows: the printer, its state, the scanner, the queue."""
        cfg = self.terminal.cfg
        out: dict[str, Any] = {"terminal": cfg.name}
        try:
            setup = self.setup
        except ConfigError as exc:
            out["printer"] = {"configured": True, "ok": False, "detail": str(exc)}
            setup = None
        else:
            if setup is None:
                out["printer"] = {
                    "kind": "none",
                    "configured": True,
                    "ok": False,
                    "detail": 'printing is off ([printer] kind = "none")',
                }
            else:
                c = setup.config
                state = _probe(c) if probe else printers.PrinterState(True, "not probed")
                out["printer"] = {
                    "kind": c.kind,
                    "describe": c.describe(),
                    "configured": setup.configured,
                    "width": c.width,
                    "kick_drawer": c.kick_drawer,
                    "ok": state.ok,
                    "detail": state.detail,
                }
        try:
            scanner = scanner_setup(cfg)
            out["scanner"] = {
                "kind": scanner.kind,
                "describe": scanner.describe(),
                **(_probe_scanner(scanner) if probe else {"ok": True, "detail": "not probed"}),
            }
        except ConfigError as exc:
            out["scanner"] = {"ok": False, "detail": str(exc)}
        out["queue"] = self.queue.counts()
        return out


def _probe(cfg: PrinterConfig) -> printers.PrinterState:
    if cfg.kind == "file" and _is_plain_file(cfg.device):
        parent = Path(cfg.device).parent
        if os.access(cfg.device, os.W_OK) or (
            not Path(cfg.device).exists() and os.access(parent, os.W_OK)
        ):
            return printers.PrinterState(True, f"{cfg.describe()} is writable")
        return printers.PrinterState(False, f"{cfg.describe()} is not writable")
    return printers.probe(cfg)


def _probe_scanner(setup: ScannerSetup) -> dict[str, Any]:
    if setup.kind == "wedge":
        return {"ok": True, "detail": "reads what the scanner types into `meshpos till`"}
    try:
        if setup.kind == "serial":
            SerialScanner.open(setup.device, setup.baudrate).close()
        else:
            HidScanner(vendor_id=setup.vendor_id, product_id=setup.product_id).close()
    except ScannerUnavailable as exc:
        return {"ok": False, "detail": str(exc)}
    return {"ok": True, "detail": f"{setup.describe()} is connected"}


# -- the daemon's side -----------------------------------------------------------------------------

SendRequest = Callable[[str, str, dict[str, object]], bool]


class PrintWorker:
    """Drains the queue on its own thread and SQLite connection, so a printer that hangs for its
    full timeout never stalls the daemon's sync loop."""

    def __init__(self, cfg: NodeConfig, key: bytes | None = None, poll_s: float = 0.25) -> None:
        self.cfg = cfg
        self.key = key
        self.poll_s = poll_s
        self.stop_event = threading.Event()
        self.wake = threading.Event()
        self.thread = threading.Thread(target=self._run, name="print-worker", daemon=True)
        self.last: DrainResult | None = None

    def start(self) -> None:
        self.thread.start()

    def close(self) -> None:
        self.stop_event.set()
        self.wake.set()
        if self.thread.is_alive():
            self.thread.join(timeout=30)

    def _run(self) -> None:
        ledger = Ledger(self.cfg.db_path, self.cfg.store, key=self.key)
        try:
            printer = JobPrinter(self.cfg, ledger.print_queue)
            try:
                printer.setup  # noqa: B018  (validate the config once, loudly)
            except ConfigError as exc:
                log.error("printing is off until meshpos.toml is fixed: %s", exc)
                return
            last_error = None
            while not self.stop_event.is_set():
                result = printer.drain(wall_ms())
                self.last = result
                for job in result.printed:
                    log.info("printed job %d (%s %s)", job.id, job.kind, job.sale_id or "")
                for job in result.broken:
                    log.error("job %d cannot be printed and was set aside", job.id)
                if result.error and result.error != last_error:
                    log.warning("printer: %s; %d job(s) waiting", result.error, result.waiting)
                last_error = result.error
                wait = self.poll_s
                if result.next_try_ms is not None:
                    wait = min(wait, max(0.0, (result.next_try_ms - wall_ms()) / 1000))
                self.wake.wait(max(wait, 0.01))
                self.wake.clear()
        finally:
            ledger.close()


class DaemonPrinting:
    """The daemon's printing: a PrintWorker for the local printer; forwarding jobs a cashier
    sent `--via` a peer (resent every FORWARD_RETRY_MS until the peer acknowledges); taking jobs
    peers forward to us.

    `send_request(peer, kind, body)` sends a sync Request and says whether it went out (the peer's
    session is up). The protocol: REQUEST_JOB {"jobs": [{"id", "kind", "sale_id", "doc"}]} carries
    every unacknowledged job for that peer, oldest first; the peer queues each under the key
    "sender node id:job id" (once, however often resent, and in the order sent) and answers
    REQUEST_ACK {"acks": [ids], "refused": [[id, reason]]}. Only an ack moves a job to
    `forwarded`; a refusal puts it back to waiting for our own printer.
    """

    def __init__(
        self, terminal: Terminal, send_request: SendRequest, *, worker: bool = True
    ) -> None:
        self.terminal = terminal
        self.send_request = send_request
        self.queue = terminal.ledger.print_queue
        self.worker = PrintWorker(terminal.cfg, terminal.ledger.key) if worker else None
        self._next_forward = 0

    def start(self) -> None:
        if self.worker is not None:
            self.worker.start()

    def close(self) -> None:
        if self.worker is not None:
            self.worker.close()

    def tick(self, now_ms: int) -> None:
        """Called every daemon loop iteration: (re)send jobs handed to peers, when due."""
        if now_ms < self._next_forward:
            return
        self._next_forward = now_ms + 250
        by_peer: dict[str, list[PrintJob]] = {}
        for job in self.queue.forwarding():
            if job.via:
                by_peer.setdefault(job.via, []).append(job)
        for peer, jobs in by_peer.items():
            if jobs[0].next_try_ms > now_ms:
                continue
            batch = jobs[:FORWARD_BATCH]
            body: dict[str, object] = {
                "jobs": [
                    {"id": j.id, "kind": j.kind, "sale_id": j.sale_id, "doc": json.dumps(j.doc)}
                    for j in batch
                ]
            }
            sent = self.send_request(peer, REQUEST_JOB, body)
            self.queue.forward_sent([j.id for j in batch], now_ms + FORWARD_RETRY_MS)
            if sent:
                log.info("sent %d print job(s) to peer %s", len(batch), peer)

    def on_request(self, peer: str, kind: str, body: Mapping[str, object], now_ms: int) -> bool:
        """Handle a print request from `peer`; False if `kind` is not about printing."""
        if kind == REQUEST_JOB:
            self._take_jobs(peer, body, now_ms)
            return True
        if kind == REQUEST_ACK:
            self._take_acks(peer, body, now_ms)
            return True
        return False

    def _take_jobs(self, peer: str, body: Mapping[str, object], now_ms: int) -> None:
        jobs = body.get("jobs")
        if not isinstance(jobs, list) or len(jobs) > FORWARD_BATCH * 4:
            log.warning("peer %s sent a malformed print request", peer)
            return
        acks: list[int] = []
        refused: list[list[object]] = []
        cfg = self.terminal.cfg
        with self.terminal.transaction():
            for item in jobs:
                parsed = _parse_remote(item)
                if isinstance(parsed, str):
                    log.warning("peer %s sent a bad print job: %s", peer, parsed)
                    if isinstance(item, dict) and isinstance(item.get("id"), int):
                        refused.append([item["id"], parsed])
                    continue
                job_id, job_kind, sale_id, doc = parsed
                reason = _check_printable(cfg, job_kind, doc)
                if reason:
                    refused.append([job_id, f"{cfg.name} cannot print it: {reason}"])
                    continue
                _, new = self.queue.accept_remote(
                    f"{peer}:{job_id}", job_kind, doc, now_ms=now_ms, sale_id=sale_id
                )
                if new:
                    log.info("queued print job %d from peer %s (%s)", job_id, peer, sale_id)
                acks.append(job_id)
        self.send_request(peer, REQUEST_ACK, {"acks": acks, "refused": refused})
        if self.worker is not None:
            self.worker.wake.set()

    def _take_acks(self, peer: str, body: Mapping[str, object], now_ms: int) -> None:
        acks, refused = body.get("acks", []), body.get("refused", [])
        if not isinstance(acks, list) or not isinstance(refused, list):
            log.warning("peer %s sent a malformed print ack", peer)
            return
        for job_id in acks:
            if isinstance(job_id, int) and self.queue.forward_acked(job_id, peer, now_ms):
                log.info("peer %s took print job %d", peer, job_id)
        for entry in refused:
            if (
                isinstance(entry, list)
                and len(entry) == 2
                and isinstance(entry[0], int)
                and self.queue.forward_refused(entry[0], peer, f"peer refused: {entry[1]}"[:300])
            ):
                log.warning("peer %s refused print job %d: %s", peer, entry[0], entry[1])


def _parse_remote(item: object) -> tuple[int, str, str | None, dict[str, Any]] | str:
    if not isinstance(item, dict):
        return "job is not a map"
    job_id, kind, sale_id, raw = (
        item.get("id"),
        item.get("kind"),
        item.get("sale_id"),
        item.get("doc"),
    )
    if not isinstance(job_id, int) or isinstance(job_id, bool) or job_id <= 0:
        return "job id is missing"
    if kind not in tuple(JobKind):
        return f"unknown job kind {kind!r}"
    if sale_id is not None and not isinstance(sale_id, str):
        return "sale id is not text"
    if not isinstance(raw, str) or len(raw) > 256 * 1024:
        return "document is missing or too large"
    try:
        doc = json.loads(raw)
    except ValueError:
        return "document is not JSON"
    if not isinstance(doc, dict):
        return "document is not a map"
    return job_id, str(kind), sale_id, doc


def _check_printable(cfg: NodeConfig, kind: str, doc: Mapping[str, Any]) -> str | None:
    try:
        setup = printer_setup(cfg)
        if setup is None:
            return "printing is off there"
        render_job(kind, doc, setup.config, store_header(cfg))
    except MeshposError as exc:
        return str(exc)
    return None


def jobs_table(jobs: list[PrintJob], names: Mapping[str, str]) -> Iterator[dict[str, Any]]:
    """Rows for `meshpos print queue`: peer ids shown by name."""
    for job in jobs:
        row = job.summary()
        if job.via:
            row["via"] = names.get(job.via, job.via)
        if job.source:
            origin = job.source.split(":", 1)[0]
            row["source"] = f"{names.get(origin, origin)}:{job.source.split(':', 1)[1]}"
        yield row


__all__ = [
    "DaemonPrinting",
    "JobState",
    "PrintWorker",
    "Printing",
    "printer_setup",
    "queue_receipt",
    "render_job",
    "send",
]
