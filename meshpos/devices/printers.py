"""Receipt printers: configuration, opening a python-escpos driver, and printing a job whole.

Every job is rendered to bytes first (python-escpos' Dummy), then the printer is opened and the
bytes go out in one write. A layout or data error therefore surfaces before any paper moves, and any
failure of the printer itself (off, unplugged, refusing, timing out, out of paper with its buffer
full) becomes `PrinterUnavailable`, which the print queue retries. Nothing here retries or sleeps.
"""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, cast

import serial
import usb.core
from escpos.capabilities import get_profile
from escpos.escpos import Escpos
from escpos.exceptions import DeviceNotFoundError
from escpos.exceptions import Error as EscposError
from escpos.printer import Dummy, File, Network, Serial, Usb

from meshpos.core.errors import ConfigError, MeshposError
from meshpos.devices import layout
from meshpos.devices.receipt import Receipt, StoreHeader

PrinterKind = Literal["usb", "network", "serial", "file", "dummy"]
KINDS: tuple[PrinterKind, ...] = ("usb", "network", "serial", "file", "dummy")


class PrinterUnavailable(MeshposError):
    """The printer could not take the job now (off, unplugged, refused, timed out); retry later."""


@dataclass(frozen=True)
class PrinterConfig:
    """One terminal's printer, from meshpos.toml's [printer] table.

    `connect_timeout` bounds how long a dead network printer can hold up the print queue;
    `timeout` bounds a write (a printer out of paper stops reading and its buffer fills).
    """

    kind: PrinterKind = "dummy"
    host: str = ""
    port: int = 9100
    vendor_id: int = 0
    product_id: int = 0
    in_ep: int = 0x82
    out_ep: int = 0x01
    device: str = ""
    baudrate: int = 9600
    width: int = 42
    profile: str | None = None
    connect_timeout: float = 2.0
    timeout: float = 10.0
    scan_code: layout.ScanCode = "code128"
    kick_drawer: bool = True
    drawer_pin: int = 2
    gst_split: bool = False

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], section: str = "printer") -> PrinterConfig:
        """Parse and validate; ConfigError names the bad key as `section.key`."""
        return _parse(data, section)

    @property
    def layout(self) -> layout.LayoutOptions:
        return layout.LayoutOptions(
            width=self.width,
            scan_code=self.scan_code,
            kick_drawer=self.kick_drawer,
            drawer_pin=self.drawer_pin,
            gst_split=self.gst_split,
        )

    def describe(self) -> str:
        if self.kind == "network":
            return f"network printer {self.host}:{self.port}"
        if self.kind == "usb":
            return f"USB printer {self.vendor_id:04x}:{self.product_id:04x}"
        if self.kind in ("serial", "file"):
            return f"{self.kind} printer {self.device}"
        return "dummy printer"


_INT_KEYS = (
    "port",
    "vendor_id",
    "product_id",
    "in_ep",
    "out_ep",
    "baudrate",
    "width",
    "drawer_pin",
)
_FLOAT_KEYS = ("connect_timeout", "timeout")
_BOOL_KEYS = ("kick_drawer", "gst_split")
_STR_KEYS = ("host", "device", "profile")
_ALIASES = {"path": "device", "type": "kind", "vendor": "vendor_id", "product": "product_id"}


def _int(value: Any, key: str) -> int:
    if isinstance(value, bool):
        raise ConfigError(f"{key} must be a whole number, not {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        try:
            return int(value.strip(), 0)
        except ValueError:
            pass
    raise ConfigError(f"{key} must be a whole number (hex like 0x04b8 is fine), not {value!r}")


def _parse(data: Mapping[str, Any], section: str) -> PrinterConfig:
    values: dict[str, Any] = {}
    for raw_key, value in data.items():
        key = _ALIASES.get(raw_key, raw_key)
        name = f"{section}.{raw_key}"
        if key == "kind":
            if value not in KINDS:
                raise ConfigError(f"{name} must be one of {', '.join(KINDS)}, not {value!r}")
            values[key] = value
        elif key in _INT_KEYS:
            values[key] = _int(value, name)
        elif key in _FLOAT_KEYS:
            if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                raise ConfigError(f"{name} must be a positive number of seconds, not {value!r}")
            values[key] = float(value)
        elif key in _BOOL_KEYS:
            if not isinstance(value, bool):
                raise ConfigError(f"{name} must be true or false, not {value!r}")
            values[key] = value
        elif key in _STR_KEYS:
            if not isinstance(value, str):
                raise ConfigError(f"{name} must be a string, not {value!r}")
            values[key] = value
        elif key == "scan_code":
            if value not in ("code128", "qr"):
                raise ConfigError(f"{name} must be code128 or qr, not {value!r}")
            values[key] = value
        else:
            raise ConfigError(f"{name} is not a printer setting")
    if "kind" not in values:
        raise ConfigError(f"{section}.kind is missing (one of {', '.join(KINDS)})")
    cfg = PrinterConfig(**values)
    _check(cfg, section)
    return cfg


def _check(cfg: PrinterConfig, section: str) -> None:
    if cfg.kind == "network" and not cfg.host:
        raise ConfigError(f"{section}.host is required for a network printer")
    if not 0 < cfg.port < 65536:
        raise ConfigError(f"{section}.port must be between 1 and 65535")
    if cfg.kind == "usb" and not (0 < cfg.vendor_id < 0x10000 and 0 < cfg.product_id < 0x10000):
        raise ConfigError(f"{section}.vendor_id and {section}.product_id are required for USB")
    if cfg.kind in ("serial", "file") and not cfg.device:
        raise ConfigError(f"{section}.device is required for a {cfg.kind} printer")
    if not 24 <= cfg.width <= 80:
        raise ConfigError(f"{section}.width must be between 24 and 80 columns (42 or 48 usually)")
    if cfg.drawer_pin not in (2, 5):
        raise ConfigError(f"{section}.drawer_pin must be 2 or 5")
    if cfg.baudrate <= 0:
        raise ConfigError(f"{section}.baudrate must be positive")
    if cfg.profile is not None:
        try:
            get_profile(cfg.profile)
        except KeyError:
            raise ConfigError(
                f"{section}.profile {cfg.profile!r} is not a python-escpos printer profile"
            ) from None


_FAULTS = (OSError, EscposError, usb.core.NoBackendError)


def _unavailable(cfg: PrinterConfig, err: BaseException) -> PrinterUnavailable:
    reason = str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__
    if isinstance(err, usb.core.NoBackendError):
        reason = "no libusb backend (install Debian's libusb-1.0-0)"
    elif isinstance(err, TimeoutError):
        reason = "timed out"
    return PrinterUnavailable(f"{cfg.describe()} is unavailable: {reason}")


# How long close() waits for the printer to close its side after our FIN.
NETWORK_LINGER = 0.5


class _Network(Network):  # type: ignore[misc]
    """python-escpos' Network printer, changed in three ways: a connect timeout separate from the
    write timeout; no leaked socket when the connect fails (the stock open() drops it unclosed);
    and a graceful close. The stock close() is shutdown(RDWR) + close(), which resets the
    connection if the printer has sent status bytes, and a reset can discard the tail of a
    receipt still in our send buffer. Here we half-close, read until the printer closes too (or
    NETWORK_LINGER passes), and only then close."""

    def __init__(self, cfg: PrinterConfig) -> None:
        super().__init__(cfg.host, cfg.port, timeout=cfg.connect_timeout, profile=cfg.profile)
        self.write_timeout = cfg.timeout

    def _socket(self) -> socket.socket | None:
        sock = getattr(self, "_device", None)
        return sock if isinstance(sock, socket.socket) else None

    def open(self, raise_not_found: bool = True) -> None:
        self.close()
        try:
            sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
        except OSError as err:
            self.device = None
            raise DeviceNotFoundError(f"Could not open socket for {self.host}:\n{err}") from err
        sock.settimeout(self.write_timeout)
        self.device = sock

    def close(self) -> None:
        sock = self._socket()
        if sock is None:
            return
        self.device = cast(Any, False)
        try:
            sock.shutdown(socket.SHUT_WR)
            deadline = time.monotonic() + NETWORK_LINGER
            while (left := deadline - time.monotonic()) > 0:
                sock.settimeout(left)
                if not sock.recv(4096):
                    break
        except OSError:
            pass
        finally:
            sock.close()


def _build(cfg: PrinterConfig) -> Escpos:
    profile = cfg.profile
    if cfg.kind == "network":
        return _Network(cfg)
    if cfg.kind == "usb":
        return Usb(
            cfg.vendor_id,
            cfg.product_id,
            timeout=int(cfg.timeout * 1000),
            in_ep=cfg.in_ep,
            out_ep=cfg.out_ep,
            profile=profile,
        )
    if cfg.kind == "serial":
        return Serial(cfg.device, baudrate=cfg.baudrate, timeout=cfg.timeout, profile=profile)
    if cfg.kind == "file":
        return File(cfg.device, profile=profile)
    return Dummy(profile=profile)


def open_printer(cfg: PrinterConfig) -> Escpos:
    """Build the python-escpos driver for `cfg` and open its connection.

    A network printer gets `connect_timeout` for the TCP connect, then `timeout` for writes; a
    serial port gets a write timeout so hardware flow control cannot block forever.
    """
    printer = _build(cfg)
    try:
        if isinstance(printer, Network | Usb | Serial | File):
            printer.open()
        device = printer.device
        if isinstance(printer, Serial) and device is not None:
            cast(Any, device).write_timeout = cfg.timeout
    except _FAULTS as err:
        _close_quietly(printer)
        raise _unavailable(cfg, err) from err
    return printer


def _close_quietly(printer: Escpos) -> None:
    with contextlib.suppress(*_FAULTS):
        printer.close()


def send(cfg: PrinterConfig, data: bytes) -> None:
    """Open the printer, write an already-rendered job in one write, close."""
    printer = open_printer(cfg)
    try:
        printer._raw(data)
    except (*_FAULTS, serial.SerialTimeoutException) as err:
        raise _unavailable(cfg, err) from err
    finally:
        _close_quietly(printer)


def render_receipt(cfg: PrinterConfig, receipt: Receipt) -> bytes:
    return layout.render_bytes(layout.render_receipt(receipt, cfg.layout), cfg.profile)


def print_receipt(cfg: PrinterConfig, receipt: Receipt) -> bytes:
    """Print a receipt (kicking the drawer when a tender is cash); returns the bytes sent.

    Raises PrinterUnavailable when the printer cannot take it, having sent nothing or, if the
    link died mid-write, part of it: a retry prints the receipt whole.
    """
    data = render_receipt(cfg, receipt)
    send(cfg, data)
    return data


def print_report(
    cfg: PrinterConfig, report: layout.ReportPrint, header: StoreHeader | None = None
) -> bytes:
    data = layout.render_bytes(layout.render_report(report, header, cfg.layout), cfg.profile)
    send(cfg, data)
    return data


def kick_drawer(cfg: PrinterConfig) -> None:
    """Open the cash drawer without printing (a manager's no-sale)."""
    send(cfg, layout.render_bytes((layout.CashDrawer(cfg.drawer_pin),), cfg.profile))


def beep(cfg: PrinterConfig, pattern: layout.BeepPattern) -> None:
    send(cfg, layout.render_bytes(layout.render_beep(pattern), cfg.profile))


def render_test_page(cfg: PrinterConfig, node: str = "") -> bytes:
    """What `meshpos devices test-print` prints: settings, a ruler for the width, both codes."""
    w = cfg.width
    ruler = "".join(str(i % 10) for i in range(1, w + 1))
    commands: list[layout.PrintCommand] = [
        layout.Init(),
        layout.Text("meshpos test print", "center", bold=True, double_height=True),
        layout.Text(cfg.describe(), "center"),
    ]
    if node:
        commands.append(layout.Text(f"terminal {node}", "center"))
    commands += [
        layout.Text(ruler),
        layout.Text(f"{w} columns"),
        layout.Barcode("MESHPOS-TEST"),
        layout.QRCode("MESHPOS-TEST"),
        layout.Cut(),
    ]
    return layout.render_bytes(commands, cfg.profile)


def print_test_page(cfg: PrinterConfig, node: str = "") -> None:
    send(cfg, render_test_page(cfg, node))


@dataclass(frozen=True)
class PrinterState:
    ok: bool
    detail: str


def probe(cfg: PrinterConfig) -> PrinterState:
    """Can the printer be opened right now? For `meshpos devices list`; prints nothing."""
    try:
        printer = open_printer(cfg)
    except PrinterUnavailable as err:
        return PrinterState(False, str(err))
    _close_quietly(printer)
    return PrinterState(True, f"{cfg.describe()} is reachable")
