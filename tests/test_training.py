"""Training mode: a till switched to practice rings into its own ledger (this store's catalogue,
a practice customer), with TRAINING on the receipt and the till; nothing reaches the real ledger,
its reports, its peers or HQ; switching back sells for real."""

from __future__ import annotations

import subprocess
import sys

import pytest

from meshpos.core.errors import WrongStore
from meshpos.ledger.store import Ledger
from meshpos.service import training
from meshpos.service.terminal import Terminal


def test_practice_sales_stay_in_the_practice_ledger(node):
    t = Terminal.open(node.path)
    try:  # other stores' stock, pulled from HQ earlier
        t.ledger.other_stores.replace(
            [{"store": "S2", "name": "Two", "version": 3, "as_of_ms": 5, "stock": {"CAP": 4}}], 9
        )
    finally:
        t.close()
    before_vv = node.vv()
    before_x = node.json("report", "x")
    out = node.ok("training", "start").out
    assert "TRAINING MODE" in out
    assert node.json("training", "status")["training"] is True
    r = node.ok("sell", "TEE-Mx2", "--pay", "cash")
    assert training.NOTICE in r.err
    practice = node.path / training.PRACTICE_DIR
    assert node.vv() == before_vv  # nothing in the real ledger
    assert node.json("report", "x") == before_x  # nor in its reports
    assert node.qty("TEE-M") == 10
    receipt = (practice / "receipts.bin").read_bytes()
    assert receipt.count(b"TRAINING - NOT A SALE") == 2  # top and bottom of the slip
    assert (
        not (node.path / "receipts.bin").exists()
        or b"TRAINING" not in (node.path / "receipts.bin").read_bytes()
    )
    t = Terminal.open(practice)
    try:
        assert t.cfg.store == "S1-TRAINING" and training.is_practice(t.cfg)
        assert t.ledger.views.stock_qty("TEE-M") == 8  # copied stock, less the practice sale
        assert t.customer("9000000000")["points"] == training.PRACTICE_POINTS
        assert [
            (r["store"], r["qty"], r["fetched_ms"]) for r in t.ledger.other_stores.stock_of("CAP")
        ] == [("S2", 4, 9)]  # the till still answers "which store has it?" while training
        practice_ops = t.ledger.ops_since({})
    finally:
        t.close()
    real = Ledger(node.db, "S1")
    try:
        with pytest.raises(WrongStore):  # no peer (nor HQ) of the real store takes a practice op
            real.ingest(practice_ops[-1:])
    finally:
        real.close()
    assert "1 practice sale(s) rung" in node.ok("training", "stop").out
    assert node.json("training", "status")["training"] is False
    node.ok("sell", "TEE-M", "--pay", "cash")
    assert node.qty("TEE-M") == 9  # real again


def test_training_start_fresh_or_kept(node):
    node.ok("training", "start")
    node.ok("sell", "CAP")
    node.ok("training", "start", "--keep")
    t = Terminal.open(node.path / "training")
    try:
        assert t.ledger.views.stock_qty("CAP") == 4
    finally:
        t.close()
    node.ok("training", "start")  # a fresh practice ledger
    t = Terminal.open(node.path / "training")
    try:
        assert t.ledger.views.stock_qty("CAP") == 5
    finally:
        t.close()
    refused = node.fail("--dir", str(node.path / "training"), "training", "start")
    assert "is a practice ledger" in refused


def test_text_till_shows_training(node):
    node.ok("training", "start")
    done = subprocess.run(
        [sys.executable, "-c", "from meshpos.cli.app import main; main()", "--dir", str(node.path),
         "till", "--no-print"],
        input="TEE-M\npay cash\ndone\nquit\n", capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert training.NOTICE in done.stderr
    assert "sale S1-TRAINING-T1-000001 recorded" in done.stdout
    assert node.qty("TEE-M") == 10
