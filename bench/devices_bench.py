"""The devices section of `make bench`: scan-to-line latency at the till, receipt render time, and
what queueing the receipt costs a sale.

Scan to line: the HID boot reports a USB scanner sends for one EAN-13 (press and release per
character, then Enter) go through the report decoder into `TillSession.add_code`, which looks the
code up in a real node's catalogue (a file database, sample catalogue) and adds the line; the clock
stops when the line is on the sale. Render: a sale's op payload to the ESC/POS bytes the printer
is sent (receipt model, layout, python-escpos). Both run in this process on a warm cache.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import fmt, log, percentile, table
from bench.ledger_bench import _target, sample_rows
from meshpos.devices.hid import HidDecoder, text_to_reports
from meshpos.devices.printers import PrinterConfig
from meshpos.domain.pricing import Tender
from meshpos.ledger.store import Ledger
from meshpos.service.config import init_node, load_signer
from meshpos.service.printing import queue_receipt, render_job, store_header
from meshpos.service.terminal import Terminal
from meshpos.service.till import LineAdded, TillSession

TARGET_SCAN_P99_MS = 5.0
LINES_PER_SALE = 8
MACHINE = Tender("card_machine", card_last4="4242", card_approval="A1B2C3")


def _ms_stats(samples: list[float]) -> dict[str, float]:
    ms = [s * 1000 for s in samples]
    return {
        "p50_ms": percentile(ms, 50),
        "p99_ms": percentile(ms, 99),
        "max_ms": max(ms),
        "mean_ms": sum(ms) / len(ms),
    }


def devices_section(args: argparse.Namespace, results: dict[str, Any]) -> dict[str, Any]:
    scans = 300 if args.quick else 5_000
    renders = 100 if args.quick else 2_000
    sales = 50 if args.quick else 500
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory(dir=args.out, prefix="devices-") as tmp:
        cfg = init_node(Path(tmp) / "node", "S1", "T1")
        term = Terminal(cfg, load_signer(cfg), Ledger(cfg.db_path, cfg.store))
        try:
            rows = sample_rows()
            term.import_catalog(rows)
            barcodes = [(str(r.fields["barcode"]), r.sku) for r in rows if r.fields.get("barcode")]
            log(f"devices: {scans:,} HID scans into a till session ({len(barcodes)} barcodes)")
            reports = {code: text_to_reports(code + "\n") for code, _ in barcodes}
            decoder = HidDecoder()
            till = TillSession(term)
            scan_lat: list[float] = []
            priced_lat: list[float] = []
            for i in range(scans + 50):
                code, sku = rng.choice(barcodes)
                stream = reports[code]
                t0 = time.perf_counter()
                event = None
                for report in stream:
                    for scanned in decoder.feed(report):
                        event = till.add_code(scanned)
                if not (
                    isinstance(event, LineAdded) and till.lines[event.line - 1].product.sku == sku
                ):
                    raise AssertionError(f"scan of {code} did not put {sku} on the sale: {event}")
                t1 = time.perf_counter()
                till.totals()  # what the till shows next: the sale repriced
                t2 = time.perf_counter()
                if i >= 50:
                    scan_lat.append(t1 - t0)
                    priced_lat.append(t2 - t0)
                if len(till.lines) >= LINES_PER_SALE:
                    till.void()

            log(f"devices: {renders:,} receipt renders")
            till.void()
            for code, _ in barcodes[:3]:
                till.add_code(code)
            cid = term.add_customer({"name": "Bench", "phone": "9000000001"})
            till.set_customer(cid)
            till.discount("10%")
            till.pay(
                "machine", "500", card_last4="4242", approval="A1B2C3"
            )  # the store's card machine
            till.pay("cash", "5000")
            sale = till.complete()
            printer = PrinterConfig(kind="dummy")
            header = store_header(cfg)
            doc = {
                "op_kind": "sale",
                "payload": sale.payload,
                "loyalty_balance": 12,
                "cashier": "c",
            }
            render_lat: list[float] = []
            size = 0
            for i in range(renders + 10):
                t0 = time.perf_counter()
                size = len(render_job("receipt", doc, printer, header))
                if i >= 10:
                    render_lat.append(time.perf_counter() - t0)

            log(
                f"devices: {sales:,} sales with and without the receipt queued in their transaction"
            )
            skus = [sku for _, sku in barcodes]
            plain: list[float] = []
            queued: list[float] = []
            printing = Terminal(term.cfg, term.signer, term.ledger, on_record=[queue_receipt])
            for seller, into in ((term, plain), (printing, queued)):
                for _ in range(sales):
                    items = [(rng.choice(skus), 1)]
                    t0 = time.perf_counter()
                    seller.sell(items, tenders=[MACHINE], allow_oversell=True)
                    into.append(time.perf_counter() - t0)
        finally:
            term.close()

    scan = _ms_stats(scan_lat)
    shown = _ms_stats(priced_lat)
    render = _ms_stats(render_lat)
    sale_plain, sale_queued = _ms_stats(plain), _ms_stats(queued)
    res: dict[str, Any] = {
        "scans": scans,
        "scan_to_line": scan,
        "scan_to_priced_sale": shown,
        "renders": renders,
        "receipt_render": render,
        "receipt_bytes": size,
        "sales": sales,
        "sale_commit": sale_plain,
        "sale_commit_with_print_job": sale_queued,
    }
    print(
        table(
            "devices: scan to line, receipt render, print-queue cost (ms)",
            ["figure", "samples", "p50", "p99", "max"],
            [
                [
                    name,
                    fmt(n, ",d"),
                    fmt(s["p50_ms"], ".3f"),
                    fmt(s["p99_ms"], ".3f"),
                    fmt(s["max_ms"], ".3f"),
                ]
                for name, n, s in (
                    ("HID reports -> decoder -> add_code -> line on sale", scans, scan),
                    ("  ... and the sale repriced for the screen", scans, shown),
                    ("sale payload -> ESC/POS bytes", renders, render),
                    ("Terminal.sell, no print job", sales, sale_plain),
                    ("Terminal.sell + receipt job, one transaction", sales, sale_queued),
                )
            ],
            [
                f"sample catalogue on a durable file database; up to {LINES_PER_SALE} lines a "
                "sale; 27 HID reports a scan (13 digits pressed and released, then Enter)",
                f"a receipt of 3 lines, a customer, a discount, card + cash: {size:,} bytes",
            ],
        )
    )
    res["targets"] = [
        _target("scan to line p99", scan["p99_ms"], TARGET_SCAN_P99_MS, "ms", lower=True)
    ]
    return res
