"""Printing through python-escpos' real drivers to a real TCP listener, a file, a pty serial port;
and every way a printer can be unavailable becoming PrinterUnavailable."""

from __future__ import annotations

import copy
import os
import select
import socket
import threading
import time
import tty
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from escpos.printer import Dummy, Network
from printer_listener import PrinterListener
from test_devices_receipt import HEADER, SALE

from meshpos.core.errors import ConfigError
from meshpos.devices import escpos_decode as ed
from meshpos.devices import layout
from meshpos.devices.printers import (
    PrinterConfig,
    PrinterUnavailable,
    beep,
    kick_drawer,
    open_printer,
    print_receipt,
    print_report,
    print_test_page,
    probe,
    render_receipt,
    send,
)
from meshpos.devices.receipt import Receipt, receipt_from_sale


@pytest.fixture
def listener() -> Iterator[PrinterListener]:
    with PrinterListener() as printer:
        yield printer


def net(listener: PrinterListener, **extra: Any) -> PrinterConfig:
    return PrinterConfig.from_dict(
        {"kind": "network", "host": "127.0.0.1", "port": listener.port, **extra}
    )


def sale(n: int) -> Receipt:
    payload = copy.deepcopy(SALE)
    payload["sale_id"] = f"BLR1-T1-{n:06d}"
    payload["receipt"] = f"T1-{n:06d}"
    payload["number"] = n
    return receipt_from_sale(payload, HEADER, loyalty_balance=400 + n)


def test_receipt_over_raw_tcp_decodes_back(listener: PrinterListener) -> None:
    cfg = net(listener)
    sent = print_receipt(cfg, sale(42))
    (job,) = listener.wait_for_jobs(1)
    assert job == sent
    slip = ed.decode(job)
    assert slip.styled_lines[0] == ed.Line("Meshpos Apparel", "center", True, 2, 2)
    assert "Invoice BLR1-T1-000042    24-11-2025 21:30" in slip.lines
    assert "  2 x 499.00                        998.00" in slip.lines
    assert ed.Line("TOTAL                             3,746.00", bold=True) in slip.styled_lines
    assert "Card VISA ****4242                2,746.00" in slip.lines
    assert "Card authorisation pending" in slip.lines
    assert "Points balance                         442" in slip.lines
    assert [(b.symbology, b.data) for b in slip.barcodes] == [("CODE128", "BLR1-T1-000042")]
    assert slip.drawer_kicks == [ed.CashDrawer(2, 100, 100)]
    assert slip.cuts == [ed.Cut(partial=False)] and isinstance(slip.commands[-1], ed.Cut)


def test_refused_connection_is_printer_unavailable(listener: PrinterListener) -> None:
    cfg = net(listener)
    listener.refuse()
    started = time.monotonic()
    with pytest.raises(
        PrinterUnavailable,
        match=rf"network printer 127.0.0.1:{listener.port} is unavailable: .*refused",
    ):
        print_receipt(cfg, sale(1))
    assert time.monotonic() - started < 1.0
    assert listener.connections == 0


def test_five_sales_while_refused_print_once_each_in_order_after(listener: PrinterListener) -> None:
    """The retry loop here is a stand-in for the print queue: what it relies on is that a failed
    print leaves nothing at the printer and raises PrinterUnavailable, every time."""
    cfg = net(listener)
    listener.refuse()
    waiting: list[Receipt] = []
    for n in range(1, 6):
        waiting.append(sale(n))
        for receipt in list(waiting):
            try:
                print_receipt(cfg, receipt)
            except PrinterUnavailable:
                break
            waiting.remove(receipt)
    assert len(waiting) == 5 and listener.connections == 0
    listener.accept()
    while waiting:
        print_receipt(cfg, waiting.pop(0))
    jobs = listener.wait_for_jobs(5)
    assert [b.data for job in jobs for b in ed.decode(job).barcodes] == [
        f"BLR1-T1-{n:06d}" for n in range(1, 6)
    ]
    assert all(len(ed.decode(job).cuts) == 1 for job in jobs)


def test_printer_that_stops_reading_times_out(listener: PrinterListener) -> None:
    cfg = net(listener, timeout=0.3)
    listener.stall()
    started = time.monotonic()
    with pytest.raises(PrinterUnavailable, match="timed out"):
        send(cfg, b"\x00" * (64 << 20))
    assert time.monotonic() - started < 5
    listener.resume()


def test_connect_to_a_hung_printer_gives_up_after_connect_timeout() -> None:
    # A listener whose accept queue is full drops SYNs, like a printer that has hung.
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    filler = socket.create_connection(server.getsockname(), timeout=1)
    try:
        host, port = server.getsockname()
        cfg = PrinterConfig(kind="network", host=host, port=port, connect_timeout=0.3)
        started = time.monotonic()
        with pytest.raises(PrinterUnavailable, match="timed out"):
            print_receipt(cfg, sale(1))
        assert 0.25 < time.monotonic() - started < 2
    finally:
        filler.close()
        server.close()


def test_network_driver_gets_short_connect_then_write_timeout(listener: PrinterListener) -> None:
    printer = open_printer(net(listener, connect_timeout=0.5, timeout=7))
    try:
        assert isinstance(printer, Network) and printer.timeout == 0.5
        assert printer.device.gettimeout() == 7
    finally:
        printer.close()


def test_reports_drawer_beep_and_test_page(listener: PrinterListener) -> None:
    cfg = net(listener)
    print_report(
        cfg, layout.ReportPrint("X REPORT", (("Sales", "3"), ("Cash", "1,500.00"))), HEADER
    )
    kick_drawer(cfg)
    beep(cfg, layout.BeepPattern.UNKNOWN)
    print_test_page(cfg, node="BLR1-T1")
    report, drawer, buzz, test_page = (ed.decode(j) for j in listener.wait_for_jobs(4))
    assert "X REPORT" in report.lines and "Cash" + " " * 30 + "1,500.00" in report.lines
    assert drawer.drawer_kicks == [ed.CashDrawer(2, 100, 100)] and drawer.lines == []
    assert buzz.buzzes == [ed.Buzzer(3, 1)]
    assert (
        "terminal BLR1-T1" in test_page.lines
        and "123456789012345678901234567890123456789012" in test_page.lines
    )
    assert [b.data for b in test_page.barcodes] == ["MESHPOS-TEST"] and test_page.qr_codes == [
        "MESHPOS-TEST"
    ]


def test_probe(listener: PrinterListener) -> None:
    cfg = net(listener)
    assert probe(cfg).ok
    listener.refuse()
    state = probe(cfg)
    assert not state.ok and "refused" in state.detail


def test_file_printer(tmp_path: Path) -> None:
    out = tmp_path / "lp0"
    cfg = PrinterConfig.from_dict({"kind": "file", "device": str(out), "width": 48})
    print_receipt(cfg, sale(9))
    slip = ed.decode(out.read_bytes())
    assert [b.data for b in slip.barcodes] == ["BLR1-T1-000009"]
    assert "Subtotal" + " " * 32 + "3,796.00" in slip.lines


def test_file_printer_missing_directory(tmp_path: Path) -> None:
    cfg = PrinterConfig(kind="file", device=str(tmp_path / "no" / "lp0"))
    with pytest.raises(PrinterUnavailable, match=r"file printer .*/no/lp0 is unavailable"):
        print_receipt(cfg, sale(1))


def test_serial_printer_over_a_pty() -> None:
    master, slave = os.openpty()
    tty.setraw(master)
    received = bytearray()
    done = threading.Event()

    def read() -> None:
        while not done.is_set():
            if select.select([master], [], [], 0.05)[0]:
                received.extend(os.read(master, 65536))

    reader = threading.Thread(target=read)
    reader.start()
    try:
        cfg = PrinterConfig.from_dict(
            {"kind": "serial", "device": os.ttyname(slave), "baudrate": 19200}
        )
        sent = print_receipt(cfg, sale(5))
        deadline = time.monotonic() + 5
        while len(received) < len(sent) and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        done.set()
        reader.join()
        os.close(master)
        os.close(slave)
    assert bytes(received) == sent
    assert [b.data for b in ed.decode(bytes(received)).barcodes] == ["BLR1-T1-000005"]


def test_serial_printer_absent() -> None:
    cfg = PrinterConfig(kind="serial", device="/dev/ttyNOPE0")
    with pytest.raises(PrinterUnavailable, match="serial printer /dev/ttyNOPE0 is unavailable"):
        print_receipt(cfg, sale(1))


def test_usb_printer_absent_or_no_libusb() -> None:
    cfg = PrinterConfig.from_dict({"kind": "usb", "vendor_id": "0x04b8", "product_id": "0x0202"})
    with pytest.raises(PrinterUnavailable, match="USB printer 04b8:0202 is unavailable"):
        print_receipt(cfg, sale(1))


def test_dummy_printer_and_rendering_match() -> None:
    cfg = PrinterConfig()
    assert print_receipt(cfg, sale(3)) == render_receipt(cfg, sale(3))
    assert isinstance(open_printer(cfg), Dummy)


def test_profile_changes_nothing_for_ascii_but_is_validated() -> None:
    assert render_receipt(PrinterConfig(profile="TM-T88III"), sale(3)) == render_receipt(
        PrinterConfig(), sale(3)
    )
    with pytest.raises(ConfigError, match=r"printer\.profile 'TM-NOPE'"):
        PrinterConfig.from_dict({"kind": "dummy", "profile": "TM-NOPE"})


def test_config_parsing() -> None:
    cfg = PrinterConfig.from_dict(
        {
            "kind": "usb",
            "vendor_id": "0x04b8",
            "product_id": 514,
            "width": 48,
            "scan_code": "qr",
            "kick_drawer": False,
            "timeout": 5,
        }
    )
    assert (cfg.vendor_id, cfg.product_id, cfg.width, cfg.timeout) == (0x04B8, 0x0202, 48, 5.0)
    assert cfg.layout == layout.LayoutOptions(width=48, scan_code="qr", kick_drawer=False)
    assert PrinterConfig.from_dict({"type": "serial", "path": "/dev/ttyS0"}).device == "/dev/ttyS0"


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({}, "printer.kind is missing"),
        ({"kind": "parallel"}, "printer.kind must be one of"),
        ({"kind": "network"}, "printer.host is required"),
        (
            {"kind": "network", "host": "10.0.0.9", "port": "ninety"},
            "printer.port must be a whole number",
        ),
        ({"kind": "network", "host": "10.0.0.9", "port": 70000}, "printer.port must be between"),
        ({"kind": "usb", "vendor_id": 1}, "printer.vendor_id and printer.product_id are required"),
        ({"kind": "serial"}, "printer.device is required"),
        ({"kind": "dummy", "width": 12}, "printer.width must be between"),
        ({"kind": "dummy", "width": True}, "printer.width must be a whole number"),
        ({"kind": "dummy", "timeout": 0}, "printer.timeout must be a positive number"),
        ({"kind": "dummy", "kick_drawer": "yes"}, "printer.kick_drawer must be true or false"),
        ({"kind": "dummy", "scan_code": "ean13"}, "printer.scan_code must be code128 or qr"),
        ({"kind": "dummy", "drawer_pin": 3}, "printer.drawer_pin must be 2 or 5"),
        ({"kind": "dummy", "colour": "red"}, "printer.colour is not a printer setting"),
        ({"kind": "dummy", "host": 5}, "printer.host must be a string"),
    ],
)
def test_bad_config_names_the_key(table: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        PrinterConfig.from_dict(table)
