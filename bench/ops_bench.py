"""Bench section "ops": what encryption at rest and backups cost.

1. Durable sale commit latency with the database encrypted (SQLCipher), measured exactly as the
   "commit" section measures the plain one (`Terminal.sell`, one sale per transaction,
   synchronous=FULL, WAL), plus raw single-row durable commits/s plain vs encrypted.
2. Backup of the at-scale ledger (the cached `--ops` ledger the "scale" section builds, 1,000,000
   ops by default) once encrypted: the one-off `meshpos encrypt` copy, then `create_backup`
   (snapshot, quick_check + Ledger.verify_log, AES-GCM seal and read-back). With --quick
   (or a smaller --ops) the figures are also extrapolated linearly to 1,000,000 ops, and say so.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import Stopwatch, fmt, log, percentile, rate, table, timed
from bench.ledger_bench import (
    DEFAULT_CUSTOMERS,
    STORE,
    TARGET_P99_MS,
    SaleMix,
    _target,
    products_of,
    ring,
    sample_rows,
    store_ledger,
    tenders_for,
    timed_backup,
)
from meshpos.domain.pricing import CartLine, price_lines
from meshpos.ledger.encryption import export_database
from meshpos.ledger.store import open_connection
from meshpos.service.backup.create import BACKUP_CHECK
from meshpos.service.config import init_node
from meshpos.service.encryption import encrypt_node
from meshpos.service.terminal import Terminal

MILLION = 1_000_000
BENCH_KEY = hashlib.sha256(b"meshpos bench database key").digest()


def ops_section(args: argparse.Namespace, results: dict[str, Any]) -> dict[str, Any]:
    res: dict[str, Any] = {}
    res["commit"] = _encrypted_commits(args)
    res["raw_commits"] = _raw_commits(args)
    res["backup"] = _backup(args)
    c, b = res["commit"], res["backup"]
    plain = results.get("commit", {}).get("p99_ms")
    print(
        table(
            "ops 1. durable sale commit with encryption at rest (Terminal.sell, SQLCipher, "
            "synchronous=FULL, WAL)",
            ["sales", "p50 ms", "p90 ms", "p99 ms", "max ms", "sales/s", "verify"],
            [
                [
                    fmt(c["sales"], ",d"),
                    fmt(c["p50_ms"], ".2f"),
                    fmt(c["p90_ms"], ".2f"),
                    fmt(c["p99_ms"], ".2f"),
                    fmt(c["max_ms"], ".2f"),
                    fmt(c["sales_per_s"]),
                    "ok" if not c["verify_problems"] else f"{c['verify_problems']} problems",
                ]
            ],
            [
                "same sale mix as section 1"
                + (f" (plain p99 there: {plain:.2f} ms)" if plain is not None else ""),
                "raw durable single-row commits/s: "
                f"plain {fmt(res['raw_commits']['plain_per_s'])}, "
                f"encrypted {fmt(res['raw_commits']['encrypted_per_s'])}",
            ],
        )
    )
    notes = [
        "snapshot = the database's files copied under a read transaction (ciphertext as it "
        f"is); check = {BACKUP_CHECK}; seal = AES-256-GCM in 1 MiB chunks + read-back of "
        "every chunk",
        f"encrypting the plain ledger first (`meshpos encrypt`'s copy): "
        f"{fmt(b['encrypt_s'], '.1f')} s"
        + (" (cached copy reused)" if b["encrypted_copy_cached"] else ""),
    ]
    if b["extrapolated"]:
        notes.append(
            f"measured on {b['ops']:,} ops and extrapolated linearly to 1,000,000 ops: "
            f"about {fmt(b['total_s_1m'], '.0f')} s"
        )
    print(
        table(
            f"ops 2. backup of an encrypted {b['ops']:,}-op ledger ({b['db_mb']:,.0f} MB)",
            ["ops", "snapshot s", "check s", "seal s", "total s", "MB/s", "file MB"],
            [
                [
                    fmt(b["ops"], ",d"),
                    fmt(b["snapshot_s"], ".1f"),
                    fmt(b["verify_s"], ".1f"),
                    fmt(b["seal_s"], ".1f"),
                    fmt(b["total_s"], ".1f"),
                    fmt(b["mb_per_s"], ".0f"),
                    fmt(b["file_mb"], ",.0f"),
                ]
            ],
            notes,
        )
    )
    res["targets"] = [
        _target("encrypted sale commit p99", c["p99_ms"], TARGET_P99_MS, "ms", lower=True)
    ]
    return res


def _encrypted_commits(args: argparse.Namespace) -> dict[str, Any]:
    n = args.sales
    with tempfile.TemporaryDirectory(dir=args.out, prefix="ops-commit-") as tmp:
        cfg = init_node(Path(tmp) / "node", STORE, "T1")
        encrypt_node(cfg)
        term = Terminal.open(cfg.dir)
        try:
            conn = term.ledger.conn
            assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2
            assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
            rows = sample_rows()
            term.import_catalog(rows)
            cids = [
                term.add_customer({"name": f"Customer {i}", "phone": f"9{i:09d}"})
                for i in range(100)
            ]
            products = products_of(rows)
            mix = SaleMix(list(products), len(cids), args.seed)
            log(f"ops: ringing {n:,} sales on an encrypted terminal")
            lat: list[float] = []
            for i in range(n + 20):
                spec = mix.next()
                cart = [CartLine(products[sku], qty) for sku, qty in spec.items]
                total = price_lines(cart, spec.discount).total
                tenders = tenders_for(spec.pay, total)
                cid = cids[spec.customer] if spec.customer is not None else None
                t0 = time.perf_counter()
                ring(term, spec, tenders, cid)
                if i >= 20:
                    lat.append(time.perf_counter() - t0)
            problems = term.ledger.verify()
        finally:
            term.close()
    ms = [x * 1000 for x in lat]
    return {
        "sales": n,
        "p50_ms": percentile(ms, 50),
        "p90_ms": percentile(ms, 90),
        "p99_ms": percentile(ms, 99),
        "max_ms": max(ms),
        "sales_per_s": rate(n, sum(lat)),
        "verify_problems": len(problems),
    }


def _raw_commits(args: argparse.Namespace, n: int = 500) -> dict[str, Any]:
    """One-row durable transactions, as the brief measured SQLite and SQLCipher."""
    out: dict[str, Any] = {"commits": n}
    with tempfile.TemporaryDirectory(dir=args.out, prefix="ops-raw-") as tmp:
        for label, key in (("plain", None), ("encrypted", BENCH_KEY)):
            conn = open_connection(str(Path(tmp) / f"{label}.db"), key)
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = FULL")
            conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, body BLOB)")
            body = os.urandom(300)
            sw = Stopwatch()
            with sw:
                for i in range(n):
                    conn.execute("BEGIN IMMEDIATE")
                    conn.execute("INSERT INTO t VALUES (?, ?)", (i, body))
                    conn.execute("COMMIT")
            conn.close()
            out[f"{label}_per_s"] = rate(n, sw.seconds)
    return out


def _backup(args: argparse.Namespace) -> dict[str, Any]:
    preamble = 2 * len(sample_rows()) + DEFAULT_CUSTOMERS
    n_sales = max(args.ops - preamble, 5_000)
    path, info = store_ledger(args.out, n_sales, args.seed, use_cache=not args.no_cache)
    enc = path.with_name(path.stem + ".sqlcipher.db")
    cached = enc.exists() and not args.no_cache
    encrypt_s = 0.0
    if not cached:
        with timed(f"ops: encrypting a copy of {path.name}") as sw:
            export_database(path, None, enc.with_suffix(".part"), BENCH_KEY)
            os.replace(enc.with_suffix(".part"), enc)
        encrypt_s = sw.seconds
    db_bytes = enc.stat().st_size
    b = timed_backup(enc, BENCH_KEY, args.out)
    ops, total = b["ops"], b["total_s"]
    scale = MILLION / ops
    return {
        "ops": ops,
        "db_mb": db_bytes / 1e6,
        "file_mb": b["file_mb"],
        "encrypt_s": encrypt_s,
        "encrypted_copy_cached": cached,
        "snapshot_s": b["snapshot_s"],
        "verify_s": b["check_s"],
        "seal_s": b["seal_s"],
        "total_s": total,
        "mb_per_s": db_bytes / 1e6 / total if total else None,
        "extrapolated": ops < 0.9 * MILLION,
        "total_s_1m": total * scale,
        "source_cached": info["cached"],
    }
