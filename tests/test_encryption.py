"""Encryption at rest: SQLCipher database, WAL and verify scratch unreadable without the key, a wrong
key refused in one line, and the on-disk card-number scan that `meshpos verify` runs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import Node

from meshpos.ledger.encryption import WrongKey
from meshpos.ledger.store import Ledger
from meshpos.service.card_scan import find_card_numbers, looks_like_card, luhn_ok, scan_file
from meshpos.service.config import load_config
from meshpos.service.encryption import DB_KEY_FILE, encrypt_node, write_key_file
from meshpos.service.terminal import Terminal

PAN = "4111111111111111"  # the well-known Visa test number: Luhn-valid
CUSTOMER = "Zenobia Featherstonehaugh"


def _plain_names(t: Terminal) -> list[bytes]:
    names = {r["name"] for r in t.query("SELECT name FROM products")}
    return sorted({n.encode() for n in names if len(n) >= 6})


def _node_files(path: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(path.glob("meshpos.db*")))


def test_encrypted_database_and_wal_hold_nothing_readable(node: Node) -> None:
    t = Terminal.open(node.path)
    products = _plain_names(t)
    cid = t.add_customer({"name": f"{CUSTOMER} {PAN}", "phone": "9800000001"})
    t.close()
    # The plain database shows all of it: the scan below has something to miss.
    assert CUSTOMER.encode() in _node_files(node.path)
    assert find_card_numbers([node.path])
    encrypt_node(load_config(node.path))

    t = Terminal.open(node.path)
    try:
        t.sell([("TSH-NAV-M", 2)], customer=cid)
        t.add_customer({"name": "Second Customer Quixote", "phone": "9800000002"})
        wal = Path(str(t.ledger.path) + "-wal")
        assert wal.exists() and wal.stat().st_size > 0  # the connection is open: WAL not merged
        raw = _node_files(node.path)
        for secret in [*products, CUSTOMER.encode(), b"Quixote", PAN.encode(), b"TSH-NAV-M"]:
            assert secret not in raw, secret
        assert find_card_numbers([node.path]) == []
        assert t.ledger.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert t.ledger.conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
        assert t.ledger.conn.execute("PRAGMA cipher_version").fetchone()[0]
        assert t.customer(cid)["name"] == f"{CUSTOMER} {PAN}"
    finally:
        t.close()


def test_encrypt_command_migrates_verifies_and_is_idempotent(node: Node) -> None:
    sale = node.sell("TSH-NAV-M")
    before = node.vv()
    info = node.json("encrypt")
    assert info["status"] == "encrypted and verified"
    assert (node.path / DB_KEY_FILE).stat().st_mode & 0o777 == 0o600
    assert not (node.path / "meshpos.db.encrypting").exists()
    assert not node.db.read_bytes().startswith(b"SQLite format 3")
    assert "encrypt = true" in (node.path / "meshpos.toml").read_text()
    assert node.vv() == before
    assert node.json("sync", "vv") == before
    assert node.ok("verify").out.startswith("ok:")
    node.sell("TSH-NAV-M")
    assert node.qty("TSH-NAV-M") == 28 - 2
    assert node.json("encrypt")["status"] == "already encrypted"
    assert sale["sale_id"]


def test_wrong_key_is_refused_in_one_line(node: Node) -> None:
    node.ok("encrypt")
    key = node.path / DB_KEY_FILE
    key.unlink()
    write_key_file(key, os.urandom(32))
    err = node.fail("stock", "TSH-NAV-M")
    assert "wrong key or passphrase" in err and "file is not a database" in err
    with pytest.raises(WrongKey):
        Ledger(node.db, "S1", key=os.urandom(32))
    # A plain sqlite3 reader sees no database at all.
    assert not node.db.read_bytes().startswith(b"SQLite format 3")


def test_wrong_key_from_the_console_script_is_one_line_on_stderr(node: Node) -> None:
    """SQLCipher itself logs a failed HMAC check to fd 2; the user must see only our line."""
    node.ok("encrypt")
    key = node.path / DB_KEY_FILE
    key.unlink()
    write_key_file(key, os.urandom(32))
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            "from meshpos.cli.app import main; main()",
            "--dir",
            str(node.path),
            "stock",
            "TSH-NAV-M",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 1
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("error: cannot open meshpos.db")
    assert "Traceback" not in proc.stderr


def test_passphrase_unlocks_and_a_wrong_one_is_refused(
    node: Node, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MESHPOS_PASSPHRASE", "correct horse battery staple")
    assert node.json("encrypt", "--passphrase")["key"] == "passphrase (scrypt)"
    assert not (node.path / DB_KEY_FILE).exists()
    assert node.qty("TSH-NAV-M") == 28
    monkeypatch.setenv("MESHPOS_PASSPHRASE", "wrong horse")
    assert "wrong key or passphrase" in node.fail("stock", "TSH-NAV-M")
    monkeypatch.delenv("MESHPOS_PASSPHRASE")
    assert "MESHPOS_PASSPHRASE" in node.fail("stock", "TSH-NAV-M")


def test_a_missing_key_file_and_a_loose_one_are_named(node: Node) -> None:
    node.ok("encrypt")
    key = node.path / DB_KEY_FILE
    key.chmod(0o644)
    assert "chmod 600" in node.fail("stock")
    key.unlink()
    assert "db.key is missing" in node.fail("stock")


def test_verify_under_sqlcipher_uses_an_encrypted_scratch_and_still_finds_damage(
    node: Node,
) -> None:
    node.ok("encrypt")
    t = Terminal.open(node.path)
    try:
        assert t.ledger.verify(every_signature=True) == []
        t.ledger.conn.execute("UPDATE stock SET qty = qty + 5 WHERE sku = 'TSH-NAV-M'")
        problems = t.ledger.verify()
        assert any(p.startswith("stock:") for p in problems)
        assert not list(node.path.glob(".verify-*"))
    finally:
        t.close()


def test_verify_command_reports_a_readable_card_number(node: Node) -> None:
    (node.path / "receipts").mkdir()
    (node.path / "receipts" / "r1.txt").write_text(
        f"VISA {PAN[:4]} {PAN[4:8]} {PAN[8:12]} {PAN[12:]}\n"
    )
    r = node.run("verify")
    assert r.code == 1
    assert "readable card number 4111********1111" in r.err and "r1.txt" in r.err


def test_card_scan_rules() -> None:
    assert luhn_ok(PAN) and looks_like_card(PAN)
    assert not looks_like_card("4111111111111112")  # Luhn fails
    assert not looks_like_card("8901000000019")  # an EAN-13 barcode (India's 890 prefix)
    assert not looks_like_card("1764074362146")  # a millisecond timestamp
    assert looks_like_card("378282246310005")  # Amex test number, 15 digits
    assert looks_like_card("6522940000000003")  # RuPay-style 65 prefix, Luhn-valid


def test_card_scan_finds_a_number_split_across_reads_once(tmp_path: Path) -> None:
    path = tmp_path / "blob.bin"
    for at in range(90, 140):
        data = b"\x00" * at + PAN.encode() + b"\xff" * 200
        path.write_bytes(data)
        hits = scan_file(path, chunk_size=128)
        assert [h.offset for h in hits] == [at], at
    # Part of a longer digit run is not a card number.
    path.write_bytes(b"x" + PAN.encode() + b"0123" + b"x")
    assert scan_file(path, chunk_size=7) == []
    # Nor is a run inside hex text (a key file, a node id, a signature): that made `verify`
    # report a "card number" in one random db.key in a few thousand.
    path.write_bytes(b"9f" + PAN.encode() + b"c0de\n")
    assert scan_file(path) == []
    path.write_bytes(b'{"pan": "' + PAN.encode() + b'"}')
    assert [h.offset for h in scan_file(path)] == [9]


def test_encrypt_refuses_while_another_process_has_the_database_open(node: Node) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); c.execute('SELECT 1 FROM ops');"
         " print('open', flush=True); sys.stdin.read()", str(node.db)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "open"
        err = node.fail("encrypt")
        assert f"is open in process(es) {holder.pid}" in err
        assert node.db.read_bytes().startswith(b"SQLite format 3")
    finally:
        holder.communicate(timeout=30)
    assert node.json("encrypt")["status"] == "encrypted and verified"
