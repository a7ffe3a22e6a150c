"""`meshpos devices`, `meshpos print` and `meshpos till` as a cashier and a shell see them: real TCP
listeners for printers, a pseudo-terminal serial port for a scanner, and the till driven through a
pseudo stdin and under a real pty (tmux)."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import threading
import time
import tomllib
import tty
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import tomli_w
from click.testing import CliRunner
from conftest import Node
from printer_listener import PrinterListener
from test_devices_scanners import PID, VID, RecordedBackend

from meshpos.cli.app import cli
from meshpos.cli.till import TillConsole, open_scanner
from meshpos.core.errors import InputError
from meshpos.devices import escpos_decode as ed
from meshpos.devices import layout
from meshpos.devices.hid import text_to_reports
from meshpos.devices.scanners import HidScanner, ScannerUnavailable
from meshpos.service.printing import COPY_NOTE, Printing
from meshpos.service.terminal import Terminal
from meshpos.service.till import TillSession

REPO = Path(__file__).resolve().parent.parent


def configure(node: Node, section: str, table: dict[str, Any] | None) -> None:
    path = node.path / "meshpos.toml"
    doc = tomllib.loads(path.read_text())
    doc.pop(section, None)
    if table is not None:
        doc[section] = table
    path.write_text(tomli_w.dumps(doc))


def network(listener: PrinterListener) -> dict[str, Any]:
    return {"kind": "network", "host": "127.0.0.1", "port": listener.port, "connect_timeout": 1.0}


@pytest.fixture
def listener() -> Iterator[PrinterListener]:
    with PrinterListener() as printer:
        yield printer


def slips(listener: PrinterListener, n: int) -> list[ed.Decoded]:
    return [ed.decode(job) for job in listener.wait_for_jobs(n)]


# -- devices ---------------------------------------------------------------------------------------


def test_devices_list_without_a_printer_table_is_the_demo_file_printer(node: Node) -> None:
    status = node.json("devices", "list")
    p = status["printer"]
    assert p["kind"] == "file" and p["configured"] is False and p["ok"] is True
    assert p["describe"] == f"file printer {node.path / 'receipts.bin'}"
    assert status["scanner"]["kind"] == "wedge" and status["scanner"]["ok"] is True
    text = node.ok("devices", "list").out
    assert (
        "printer" in text and "default: no printer table" in text and "print queue: empty" in text
    )


def test_devices_list_probes_the_configured_printer_and_scanner(
    node: Node, listener: PrinterListener
) -> None:
    configure(node, "printer", network(listener))
    master, slave = os.openpty()
    try:
        configure(node, "scanner", {"kind": "serial", "device": os.ttyname(slave)})
        status = node.json("devices", "list")
        assert status["printer"]["ok"] is True and status["printer"]["kind"] == "network"
        assert status["scanner"]["ok"] is True and "serial scanner" in status["scanner"]["describe"]
        listener.refuse()
        configure(node, "scanner", {"kind": "usb", "vendor_id": "0x0c2e", "product_id": "0x0b61"})
        status = node.json("devices", "list")
        assert status["printer"]["ok"] is False and "unavailable" in status["printer"]["detail"]
        assert status["scanner"]["ok"] is False and "0c2e:0b61" in status["scanner"]["detail"]
        assert listener.connections == 1  # a probe opens the printer; it prints nothing
        assert listener.wait_for_jobs(1) == [b""]
    finally:
        os.close(master)
        os.close(slave)
    configure(node, "printer", {"kind": "laser"})
    status = node.json("devices", "list")
    assert status["printer"]["ok"] is False and "printer.kind" in status["printer"]["detail"]


def test_test_print_reaches_the_printer_or_says_why_not(
    node: Node, listener: PrinterListener
) -> None:
    out = node.ok("devices", "test-print").out
    assert "receipts.bin" in out
    assert "meshpos test print" in ed.decode((node.path / "receipts.bin").read_bytes()).lines
    configure(node, "printer", network(listener))
    node.ok("devices", "test-print")
    (page,) = slips(listener, 1)
    assert "terminal T1" in page.lines and [b.data for b in page.barcodes] == ["MESHPOS-TEST"]
    listener.refuse()
    assert "unavailable" in node.fail("devices", "test-print")


# -- printing after a sale, the queue, retry, reprint, reports -------------------------------------


def test_a_sale_prints_when_the_command_ends(node: Node, listener: PrinterListener) -> None:
    configure(node, "printer", network(listener))
    sale = node.sell("TEE-M", "--pay", "cash:1500")
    (slip,) = slips(listener, 1)
    assert [b.data for b in slip.barcodes] == [sale["sale_id"]]
    assert (
        len(slip.drawer_kicks) == 1 and "  Change                            500.00" in slip.lines
    )
    assert node.json("print", "queue") == []
    (job,) = node.json("print", "queue", "--all")
    assert job["state"] == "printed" and job["sale_id"] == sale["sale_id"]


def test_a_printer_that_is_off_never_fails_a_sale_and_retry_prints_it(
    node: Node, listener: PrinterListener
) -> None:
    configure(node, "printer", network(listener))
    listener.refuse()
    r = node.ok("sell", "CAP", "--json")
    sale = r.json()
    assert r.err.startswith("warning: receipt queued:") and "unavailable" in r.err
    second = node.sell("TEE-M")
    (a, b) = node.json("print", "queue")
    assert (a["sale_id"], a["state"], a["attempts"]) == (sale["sale_id"], "waiting", 1)
    assert "unavailable" in a["last_error"]
    assert (b["sale_id"], b["attempts"]) == (second["sale_id"], 0)
    assert "1 " in node.ok("print", "queue").out  # the table
    listener.accept()
    assert "printed 2 job(s)" in node.ok("print", "retry").out
    assert [s.barcodes[0].data for s in slips(listener, 2)] == [sale["sale_id"], second["sale_id"]]
    assert node.ok("print", "retry").out.strip() == "nothing to print"


def test_reprint_and_printed_reports(node: Node, listener: PrinterListener) -> None:
    sale = node.sell(
        "TEE-M", "--pay", "card-machine", "--card-approval", "A1B2C3", "--card-last4", "4242"
    )
    configure(node, "printer", network(listener))
    assert "printed 1 job(s)" in node.ok("print", "reprint", sale["sale_id"]).out
    (copy,) = slips(listener, 1)
    assert COPY_NOTE in copy.lines and copy.barcodes[0].data == sale["sale_id"]
    assert "unknown sale" in node.fail("print", "reprint", "S1-T1-424242")
    out = node.ok("print", "report", "x").out
    assert out.startswith("X report: 1 sales, net ₹1,000.00")
    out = node.ok("print", "report", "z").out
    assert out.startswith("Z report #1: 1 sales")
    _, x, z = slips(listener, 3)
    assert "X REPORT" in x.lines and "Z REPORT #1" in z.lines
    assert node.json("ops", "tail", "-n", "1")[0]["kind"] == "report.z"
    assert "Invalid value" in node.usage_error("print", "report", "y")


def test_queue_via_a_peer_hands_the_waiting_jobs_over(
    pair: tuple[Node, Node], listener: PrinterListener
) -> None:
    _, t2 = pair  # T2 knows T1 (it imported T1's bundle)
    configure(t2, "printer", network(listener))
    listener.refuse()
    sales = [t2.sell("CAP")["sale_id"] for _ in range(2)]
    r = t2.run("print", "queue", "--via", "T1", "--json")
    assert r.code == 0 and "no daemon is running" in r.err
    rows = r.json()
    assert [(j["sale_id"], j["state"], j["via"]) for j in rows] == [
        (s, "forwarding", "T1") for s in sales
    ]
    assert [j["state"] for j in t2.json("print", "queue")] == ["forwarding", "forwarding"]
    listener.accept()
    t2.ok("print", "retry")  # forwarded jobs are not the local printer's any more
    assert listener.connections == 0
    assert "unknown peer 'T9'" in t2.fail("print", "queue", "--via", "T9")
    assert "is this terminal" in t2.fail("print", "queue", "--via", "T2")


# -- the till --------------------------------------------------------------------------------------


def test_till_rings_a_sale_from_a_pseudo_stdin(node: Node, listener: PrinterListener) -> None:
    configure(node, "printer", network(listener))
    node.ok("customer", "add", "--name", "Asha", "--phone", "9800000001")
    script = "\n".join(
        [
            "2000000000017",  # TEE-M by its barcode
            "2000000000017",
            "8901000009999",  # well-formed, not in the catalogue
            "2000000000018",  # bad check digit
            "CAP",
            "q 3",
            "c 9800000001",
            "frobnicate the till",
            "pay machine A1B2C3 4242 500",
            "pay cash 2500",
            "done",
            "",
        ]
    )
    result = CliRunner().invoke(cli, ["--dir", str(node.path), "till"], input=script)
    assert result.exit_code == 0, result.output
    out = result.output
    assert "+ Test tee TEE-M at ₹1,000.00" in out and "Test tee M/Red now x2" in out
    assert "! unknown scan: EAN-13 8901000009999 is not in the catalogue" in out
    assert "! invalid scan: EAN-13 2000000000018 has a bad check digit (expected 5)" in out
    assert out.count("\a") == 3 + 1  # UNKNOWN: three beeps, INVALID: one
    assert "CAP x3" in out and "customer Asha" in out
    assert "! unknown command 'frobnicate the till'; type help" in out
    assert "paid ₹3,000.00  due ₹0.00  change ₹250.00" in out
    assert "paid in full: type done to finish" in out
    assert "recorded: total ₹2,750.00, card machine ₹500.00, cash ₹2,250.00, change ₹250.00" in out
    assert "receipt printed" in out
    jobs = slips(listener, 3)
    beeps = [s for s in jobs if s.buzzes]
    receipt = next(s for s in jobs if s.barcodes)
    assert {b.buzzes[0] for b in beeps} == {
        ed.Buzzer(*layout.BeepPattern.UNKNOWN.value),
        ed.Buzzer(*layout.BeepPattern.INVALID.value),
    }
    assert any(ln.startswith("TOTAL") and ln.endswith("2,750.00") for ln in receipt.lines)
    assert "Card ****" not in receipt.text and len(receipt.drawer_kicks) == 1
    sale = node.json("ops", "tail", "-n", "1")[0]
    assert sale["kind"] == "sale"


def test_till_return_by_scanning_the_receipt_and_end_of_input_voids(node: Node) -> None:
    sale = node.sell("TEE-Mx2")
    script = f"{sale['sale_id']}\nTEE-M\nrefund card\ndone\nCAP\n"
    result = CliRunner().invoke(cli, ["--dir", str(node.path), "till"], input=script)
    assert result.exit_code == 0, result.output
    assert f"return against sale {sale['sale_id']}" in result.output
    assert "refund ₹1,000.00 by card" in result.output
    assert "return S1-T1-000002 recorded" in result.output
    assert "unfinished sale voided; nothing was recorded" in result.output
    assert [j["kind"] for j in node.json("ops", "tail", "-n", "2")] == ["sale", "return"]
    slips_file = ed.decode((node.path / "receipts.bin").read_bytes())
    assert "CREDIT NOTE" in slips_file.lines


def test_till_reads_a_serial_scanner_alongside_the_keyboard(node: Node) -> None:
    master, slave = os.openpty()
    tty.setraw(slave)
    read_fd, write_fd = os.pipe()
    t = Terminal.open(node.path)
    out: list[str] = []
    lock = threading.Lock()

    def say(text: str) -> None:
        with lock:
            out.append(text)

    console = TillConsole(TillSession(t), Printing(t), say)
    scanner = open_scanner(f"serial:{os.ttyname(slave)}")
    stdin = os.fdopen(read_fd, "r")
    runner = threading.Thread(target=console.run, args=(stdin, [scanner]))
    runner.start()
    try:
        os.write(master, b"2000000000024\r\n")  # CAP, from the scanner

        def seen(text: str) -> bool:
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                with lock:
                    if any(text in line for line in out):
                        return True
                time.sleep(0.01)
            return False

        assert seen("+ Test cap CAP at ₹250.00")
        os.write(write_fd, b"q 2\n")  # the keyboard
        assert seen("CAP x2")
        os.write(write_fd, b"done\n")
        assert seen("recorded: total ₹500.00")
    finally:
        os.close(write_fd)
        runner.join(10)
        os.close(master)
        os.close(slave)
        stdin.close()
        t.close()
    assert not runner.is_alive()
    assert console.completed and console.completed[0].payload["total"] == 50000


def test_till_reads_a_usb_hid_scanner_through_pyusb(node: Node) -> None:
    """Recorded HID boot reports (shift for upper case) from pyusb's own Device over a recorded
    backend, into the same till loop as the keyboard."""
    reports = text_to_reports("2000000000024\n") + text_to_reports("CAP\n")
    scanner = HidScanner(vendor_id=VID, product_id=PID, backend=RecordedBackend(reports))
    t = Terminal.open(node.path)
    out: list[str] = []
    console = TillConsole(TillSession(t), None, out.append)
    read_fd, write_fd = os.pipe()
    stdin = os.fdopen(read_fd, "r")
    runner = threading.Thread(target=console.run, args=(stdin, [scanner]))
    runner.start()
    try:
        deadline = time.monotonic() + 5
        while not any("Test cap Blue now x2" in line for line in list(out)):
            assert time.monotonic() < deadline, out
            time.sleep(0.01)
        os.write(write_fd, b"done\n")
    finally:
        os.close(write_fd)
        runner.join(10)
        stdin.close()
        t.close()
    assert console.completed[0].payload["lines"][0]["qty"] == 2


def test_open_scanner_refuses_a_malformed_spec() -> None:
    with pytest.raises(InputError, match="serial:URL or usb:VID:PID"):
        open_scanner("bluetooth:x")
    with pytest.raises(InputError):
        open_scanner("usb:zz:1")
    with pytest.raises(ScannerUnavailable, match="could not be opened"):
        open_scanner("serial:/dev/nonexistent-scanner")


@pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux for a real pty")
def test_till_under_a_real_terminal(node: Node) -> None:
    """Keys typed into a real pty (as a keyboard-wedge scanner types them), screen read back."""
    sock = f"meshpos-test-{uuid.uuid4().hex[:8]}"
    cmd = shlex.join(
        [
            sys.executable,
            "-c",
            "from meshpos.cli.app import main; main()",
            "--dir",
            str(node.path),
            "till",
        ]
    )

    def tmux(*args: str) -> str:
        return subprocess.run(
            ["tmux", "-L", sock, *args], check=True, capture_output=True, text=True, cwd=REPO
        ).stdout

    def screen_has(text: str, timeout: float = 15.0) -> str:
        deadline = time.monotonic() + timeout
        while True:
            screen = tmux("capture-pane", "-p", "-t", "till", "-S", "-200")
            if text in screen:
                return screen
            if time.monotonic() > deadline:
                raise AssertionError(f"{text!r} never appeared on the till's screen:\n{screen}")
            time.sleep(0.05)

    tmux("new-session", "-d", "-s", "till", "-x", "160", "-y", "50", cmd)
    try:
        screen_has("scan items, `help` for commands")
        for keys in ("8901000000026", "8901000000026", "1234567890128", "q 3", "pay cash 5000"):
            tmux("send-keys", "-t", "till", keys, "Enter")
        screen = screen_has("paid in full")
        assert "Crew T-shirt M/Navy now x2" in screen
        assert "! unknown scan: EAN-13 1234567890128 is not in the catalogue" in screen
        assert "items 3  total ₹3,747.00" in screen and "change ₹1,253.00" in screen
        tmux("send-keys", "-t", "till", "done", "Enter")
        screen_has("receipt printed")
        tmux("send-keys", "-t", "till", "quit", "Enter")
    finally:
        subprocess.run(["tmux", "-L", sock, "kill-server"], capture_output=True)
    receipts = ed.decode((node.path / "receipts.bin").read_bytes())
    assert [b.data for b in receipts.barcodes] == ["S1-T1-000001"]
