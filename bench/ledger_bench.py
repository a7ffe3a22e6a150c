"""The ledger's own figures: durable sale commits, merge throughput, verify and size at scale, and
the CRDT-library baselines' counter workload run through meshpos.

Generated ledgers are real: every op is Ed25519-signed by its origin and chained to the one before,
and they are built through `Ledger.ingest`, the path foreign ops take. Signing (~50 µs an op) is the
slow part, and an origin's chain covers each op's signature, so one process per till prices, signs
and chains that till's sales while this process decodes and ingests them. A built ledger is cached
under `<out>/cache`, keyed by the ledger's source code and the generator version, so a second run
skips the build.

`python -m bench.ledger_bench verify DB` is the child that verifies a ledger in a fresh interpreter,
so its peak RSS is that of a node holding the ledger, not of the bench that built it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing
import os
import queue as queue_module
import random
import resource
import sqlite3
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import meshpos
from bench import baselines
from bench.common import (
    BenchError,
    Stopwatch,
    fmt,
    log,
    peak_rss_mb,
    percentile,
    rate,
    run_child,
    table,
    timed,
)
from meshpos.core import clock
from meshpos.core.ops import (
    GENESIS,
    Op,
    Signer,
    decode_bodies,
    decode_body,
    decode_ops,
    make_op,
    pack,
    verify_run,
)
from meshpos.core.ops import verify_signature as check_signature
from meshpos.domain.catalog import SAMPLE_CATALOG, CatalogRow, parse_csv
from meshpos.domain.enrolment import NodeRecord
from meshpos.domain.pricing import (
    CartLine,
    LoyaltyRule,
    Product,
    Tender,
    price_lines,
    settle,
)
from meshpos.ledger import body_codec
from meshpos.ledger.encryption import export_database
from meshpos.ledger.store import Ledger
from meshpos.service.backup.create import BACKUP_CHECK, create_backup
from meshpos.service.backup.targets import BackupSettings
from meshpos.service.config import NodeConfig, init_node, load_signer
from meshpos.service.terminal import Terminal
from meshpos.sync.bundle import decode_bundle, encode_bundle

STORE = "BENCH"
GEN_VERSION = "2"
BATCH = 5_000
T0_MS = 1_760_000_000_000
LEDGER_SOURCES = ("core", "domain", "ledger")

# Keys this generator fills in a sale payload; anything else Terminal.sell writes is copied from
# a real sale (see `sale_template`).
SALE_KEYS = frozenset(
    {
        "sale_id",
        "receipt",
        "number",
        "terminal",
        "customer",
        "lines",
        "subtotal",
        "discount",
        "tax",
        "total",
        "tenders",
        "points_earned",
        "points_redeemed",
        "ts_ms",
        "ref_sale",
    }
)

DEFAULT_CUSTOMERS = 500

TARGET_P99_MS = 10.0
TARGET_MERGE_OPS_S = 100_000.0  # issue 16 (its bar: 60,000)
TARGET_DECODE_OPS_S = 300_000.0
TARGET_BACKLOG_BYTES = 300.0
TARGET_LONE_BYTES = 600.0
TARGET_RSS_MB = 150.0
TARGET_FULL_VERIFY_S = 10.0  # issue 16, at a million ops
TARGET_BACKUP_S = 30.0  # issue 16: snapshot + check + seal of a million ops
TARGET_DISK_BYTES_PER_OP = 700.0  # issue 16, at a million ops
MILLION_OPS = 1_000_000
SCALE_KEY = hashlib.sha256(b"meshpos bench scale database key").digest()


# -- realistic till traffic -----------------------------------------------------------------------


@dataclass(frozen=True)
class SaleSpec:
    items: tuple[tuple[str, int], ...]
    customer: int | None
    discount: str | None
    pay: str


class SaleMix:
    """Till traffic: 1-3 distinct lines (60/30/10 %), mostly one unit a line, a third of sales to a
    loyalty customer, one in ten with a 10 % sale discount, paid cash, card or card + cash."""

    def __init__(self, skus: Sequence[str], customers: int, seed: int) -> None:
        self.skus = list(skus)
        self.customers = customers
        self.rng = random.Random(seed)

    def next(self) -> SaleSpec:
        rng = self.rng
        lines = rng.choices((1, 2, 3), (60, 30, 10))[0]
        items = tuple(
            (sku, rng.choices((1, 2, 3), (85, 12, 3))[0]) for sku in rng.sample(self.skus, lines)
        )
        customer = rng.randrange(self.customers) if self.customers and rng.random() < 0.3 else None
        discount = "10%" if rng.random() < 0.1 else None
        pay = rng.choices(("cash", "card", "split"), (50, 40, 10))[0]
        return SaleSpec(items, customer, discount, pay)


def ring(term: Terminal, spec: SaleSpec, tenders: list[Tender], customer: str | None) -> None:
    """One generated sale, rung as a cashier would (beyond stock too: the goods are in hand)."""
    term.sell(
        list(spec.items),
        tenders=tenders,
        customer=customer,
        discount=spec.discount,
        allow_oversell=True,
    )


def tenders_for(pay: str, total: int) -> list[Tender]:
    """Card pays exactly; cash is handed over rounded up to 100 rupees; split puts half on card."""
    card = Tender("card_machine", card_last4="4242", card_approval="A1B2C3")
    if pay == "card":
        return [card]
    if pay == "split" and total >= 200:
        return [replace(card, amount=total // 2), Tender("cash")]
    return [Tender("cash", -(-total // 10_000) * 10_000)]


def products_of(rows: Sequence[CatalogRow]) -> dict[str, Product]:
    return {r.sku: Product(sku=r.sku, **r.fields) for r in rows}  # type: ignore[arg-type]


def sample_rows() -> list[CatalogRow]:
    return parse_csv(SAMPLE_CATALOG.read_text(), str(SAMPLE_CATALOG))


def sale_template(row: CatalogRow) -> dict[str, Any]:
    """The payload of one real `Terminal.sell`, so generated sales carry every field the service
    layer writes today rather than a copy of what it wrote when this bench was written."""
    signer = Signer.from_seed(b"meshpos-bench-template")
    with tempfile.TemporaryDirectory() as tmp:
        cfg = NodeConfig(dir=Path(tmp), store=STORE, name="T0", node_id=signer.node_id)
        term = Terminal(cfg, signer, Ledger(":memory:", STORE), now_ms=lambda: T0_MS)
        try:
            term.import_catalog([row])
            payload = dict(term.sell([(row.sku, 1)], allow_oversell=True).payload)
        finally:
            term.close()
    missing = SALE_KEYS - set(payload)
    if missing:
        raise BenchError(
            f"Terminal.sell no longer writes {', '.join(sorted(missing))}: update SALE_KEYS and "
            "the sale generator in bench/ledger_bench.py"
        )
    return payload


# -- signed op generation -------------------------------------------------------------------------


class Generator:
    """The ops of one store. Node 0 loads the catalogue (and customers); every node may ring
    sales. An origin's chain covers each op's signature, so one origin's ops are signed one after
    another; different origins are generated in parallel by `run_tills`."""

    def __init__(
        self,
        seed: int,
        names: Sequence[str] = ("HQ", "T1", "T2", "T3"),
        rows: Sequence[CatalogRow] | None = None,
        customers: int = DEFAULT_CUSTOMERS,
    ) -> None:
        self.seed = seed
        self.seeds = [f"meshpos-bench-{seed}-{name}".encode() for name in names]
        self.names = list(names)
        self.signers = [Signer.from_seed(s) for s in self.seeds]
        self.index = {s.node_id: i for i, s in enumerate(self.signers)}
        self.heads = [(0, GENESIS)] * len(names)
        self.numbers = [0] * len(names)
        self.rows = list(rows) if rows is not None else sample_rows()
        self.products = products_of(self.rows)
        self.customers = customers
        self.rng = random.Random(seed)
        self.mix = SaleMix(list(self.products), customers, seed)
        self.template = sale_template(self.rows[0])
        self.rule = LoyaltyRule()
        self.wall = T0_MS

    def focus(self, node: int, head: tuple[int, bytes]) -> None:
        """Continue `node`'s chain from `head`, with its own random stream and clock."""
        self.heads[node] = head
        self.rng = random.Random(f"{self.seed}:{node}:rng")
        self.mix = SaleMix(list(self.products), self.customers, self.rng.randrange(2**32))
        self.wall = T0_MS + 10 * 60_000

    def nodes(self) -> list[NodeRecord]:
        return [
            NodeRecord(s.node_id, s.public_key, STORE, name)
            for s, name in zip(self.signers, self.names, strict=True)
        ]

    def _op(self, node: int, kind: str, payload: dict[str, Any], user: str = "manager") -> Op:
        seq, prev = self.heads[node]
        op = make_op(
            self.signers[node],
            store=STORE,
            seq=seq + 1,
            hlc=clock.pack(self.wall, 0),
            user=user,
            kind=kind,
            payload=payload,
            prev=prev,
        )
        self.heads[node] = (seq + 1, op.hash)
        return op

    def preamble(self, stock_per_sku: int) -> list[Op]:
        """Catalogue, a stock receipt per SKU and the loyalty customers, from node 0."""
        ops = []
        for row in self.rows:
            self.wall += 1
            ops.append(self._op(0, "product.upsert", {"sku": row.sku, "fields": row.fields}))
            ops.append(
                self._op(
                    0,
                    "stock.receive",
                    {"sku": row.sku, "delta": stock_per_sku, "reason": "opening stock"},
                )
            )
        for i in range(self.customers):
            self.wall += 1
            fields = {"name": f"Customer {i}", "phone": f"9{i:09d}"}
            ops.append(
                self._op(0, "customer.upsert", {"customer_id": customer_id(i), "fields": fields})
            )
        return ops

    def sale(self, node: int, spec: SaleSpec) -> Op:
        """One signed sale op, priced by the real pricing rules."""
        cart = [CartLine(self.products[sku], qty) for sku, qty in spec.items]
        priced = price_lines(cart, spec.discount)
        cid = customer_id(spec.customer) if spec.customer is not None else None
        settled = settle(priced, tenders_for(spec.pay, priced.total), self.rule, customer=cid)
        self.wall += self.rng.randint(1, 4_000)
        self.numbers[node] += 1
        number, name = self.numbers[node], self.names[node]
        payload = dict(self.template)
        payload.update(
            sale_id=f"{STORE}-{name}-{number:06d}",
            receipt=f"{name}-{number:06d}",
            number=number,
            terminal=name,
            customer=cid,
            lines=settled.lines,
            subtotal=settled.subtotal,
            discount=settled.discount,
            tax=settled.tax,
            total=settled.total,
            tenders=settled.tenders,
            points_earned=settled.points_earned,
            points_redeemed=settled.points_redeemed,
            ts_ms=self.wall,
            ref_sale=None,
        )
        return self._op(node, "sale", payload, user=f"cashier{self.rng.randint(1, 3)}")


def customer_id(i: int) -> str:
    return f"C{i:05d}"


def one_line(sku: str, qty: int) -> SaleSpec:
    return SaleSpec(((sku, qty),), None, None, "cash")


@dataclass(frozen=True)
class TillJob:
    """What one worker process generates: `sales` sales of node `node`, continuing its chain from
    `head`. Mixed till traffic, or with `counter` = (replicas, sales, skus, seed) that replica's
    share of the CRDT baselines' workload."""

    seed: int
    names: tuple[str, ...]
    rows: tuple[CatalogRow, ...]
    customers: int
    node: int
    head: tuple[int, bytes]
    sales: int
    counter: tuple[int, int, int, int] | None = None


def _till_worker(job: TillJob, queue: Any) -> None:
    try:
        gen = Generator(job.seed, job.names, job.rows, job.customers)
        gen.focus(job.node, job.head)
        if job.counter is None:
            specs: Iterable[SaleSpec] = (gen.mix.next() for _ in range(job.sales))
        else:
            work = baselines._workload(*job.counter)[job.node]
            specs = (one_line(sku, qty) for sku, qty in work[: job.sales])
        batch: list[tuple[bytes, bytes]] = []
        for spec in specs:
            op = gen.sale(job.node, spec)
            batch.append((op.body, op.sig))
            if len(batch) == BATCH:
                queue.put((job.node, batch))
                batch = []
        if batch:
            queue.put((job.node, batch))
        queue.put((job.node, None))
    except BaseException as exc:
        queue.put((job.node, f"{type(exc).__name__}: {exc}"))
        raise


def run_tills(jobs: Sequence[TillJob]) -> Iterator[tuple[int, list[Op]]]:
    """Run one worker process per job; yield (node, decoded ops) batches as they arrive. Each
    node's batches arrive in chain order; nodes interleave as counters open at once would."""
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue(maxsize=2 * len(jobs))
    procs = [ctx.Process(target=_till_worker, args=(job, queue), daemon=True) for job in jobs]
    for proc in procs:
        proc.start()
    try:
        live = len(procs)
        while live:
            try:
                node, item = queue.get(timeout=2)
            except queue_module.Empty:
                dead = [p.exitcode for p in procs if p.exitcode not in (None, 0)]
                if dead:
                    raise BenchError(
                        f"a sale generator process died (exit code {dead[0]})"
                    ) from None
                continue
            if item is None:
                live -= 1
            elif isinstance(item, str):
                raise BenchError(f"sale generator for node {node} failed: {item}")
            else:
                yield node, [decode_body(body, sig) for body, sig in item]
    finally:
        for proc in procs:
            if proc.is_alive() and live:
                proc.terminate()
            proc.join()


# -- cached store ledgers -------------------------------------------------------------------------


def _cache_key(n_sales: int, seed: int) -> str:
    h = hashlib.sha256(f"{GEN_VERSION}:{n_sales}:{seed}".encode())
    base = Path(meshpos.__file__).parent
    for name in LEDGER_SOURCES:
        path = base / name
        for f in sorted(path.rglob("*.py")) if path.is_dir() else [path]:
            h.update(f.read_bytes())
    return h.hexdigest()[:12]


def store_ledger(
    out: Path, n_sales: int, seed: int, *, use_cache: bool = True
) -> tuple[Path, dict[str, Any]]:
    """Node 0's catalogue plus `n_sales` sales over three tills: built once, then cached."""
    cache = out / "cache"
    cache.mkdir(parents=True, exist_ok=True)
    key = _cache_key(n_sales, seed)
    path = cache / f"ledger-{n_sales}-{key}.db"
    info_path = path.with_suffix(".json")
    if use_cache and path.exists() and info_path.exists():
        info = json.loads(info_path.read_text())
        built = f"{info['ops']:,} ops, built in {info['build_s']:.0f} s"
        log(f"using cached ledger {path.name} ({built})")
        return path, {**info, "cached": True}
    for stale in cache.glob(f"ledger-{n_sales}-*"):
        stale.unlink()
    building = cache / f"ledger-{n_sales}-{key}.building"
    t0 = time.perf_counter()
    ops = _build(building, n_sales, seed)
    os.replace(building, path)
    info = {"ops": ops, "sales": n_sales, "build_s": time.perf_counter() - t0, "key": key}
    info_path.write_text(json.dumps(info))
    return path, {**info, "cached": False}


def _build(path: Path, n_sales: int, seed: int) -> int:
    gen = Generator(seed)
    # Generous opening stock, as a store replenishes: no oversell conflicts in the steady state.
    preamble = gen.preamble(max(100, n_sales * 3 // len(gen.rows)))
    tills = len(gen.names) - 1
    jobs = [
        TillJob(
            seed,
            tuple(gen.names),
            tuple(gen.rows),
            gen.customers,
            node,
            (0, GENESIS),
            n_sales // tills + (1 if node <= n_sales % tills else 0),
        )
        for node in range(1, tills + 1)
    ]
    ledger = Ledger(path, STORE, durable=False)
    try:
        ledger.ingest(preamble, gen.nodes())
        log(
            f"building a ledger of {n_sales:,} signed sales on {tills} tills "
            f"(+{len(preamble):,} catalogue ops), one signing process per till"
        )
        t0 = time.perf_counter()
        done, report = 0, max(n_sales // 10, BATCH)
        for _, ops in run_tills(jobs):
            ledger.ingest(ops)
            done += len(ops)
            if done % report < len(ops) or done == n_sales:
                elapsed = time.perf_counter() - t0
                speed = f"{done / elapsed:,.0f} ops/s"
                log(f"  {done:,}/{n_sales:,} sales signed and ingested ({speed})")
        ledger.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return ledger.op_count()
    finally:
        ledger.close()


# -- section 1: durable sale commit latency -------------------------------------------------------


def commit_section(args: argparse.Namespace, results: dict[str, Any]) -> dict[str, Any]:
    """A real node on a file database rings sales through `Terminal.sell`, one at a time."""
    n = args.sales
    with tempfile.TemporaryDirectory(dir=args.out, prefix="commit-") as tmp:
        cfg = init_node(Path(tmp) / "node", STORE, "T1")
        term = Terminal(cfg, load_signer(cfg), Ledger(cfg.db_path, cfg.store))
        try:
            conn = term.ledger.conn
            synchronous = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}[
                conn.execute("PRAGMA synchronous").fetchone()[0]
            ]
            journal = conn.execute("PRAGMA journal_mode").fetchone()[0]
            rows = sample_rows()
            with Stopwatch() as cat_sw:
                products_n, receipts_n = term.import_catalog(rows)
            cids = [
                term.add_customer({"name": f"Customer {i}", "phone": f"9{i:09d}"})
                for i in range(100)
            ]
            products = products_of(rows)
            mix = SaleMix(list(products), len(cids), args.seed)
            log(f"commit: ringing {n:,} sales on one terminal (synchronous={synchronous})")
            lat: list[float] = []
            cpu = 0.0
            for i in range(n + 20):
                spec = mix.next()
                cart = [CartLine(products[sku], qty) for sku, qty in spec.items]
                total = price_lines(cart, spec.discount).total
                tenders = tenders_for(spec.pay, total)
                cid = cids[spec.customer] if spec.customer is not None else None
                c0, t0 = time.process_time(), time.perf_counter()
                ring(term, spec, tenders, cid)
                if i >= 20:  # the first few warm SQLite's page cache and Python's caches
                    lat.append(time.perf_counter() - t0)
                    cpu += time.process_time() - c0
            problems = term.ledger.verify()
            conflicts = conn.execute("SELECT COUNT(*) FROM conflicts").fetchone()[0]
            ops = term.ledger.op_count()
        finally:
            term.close()
    ms = [x * 1000 for x in lat]
    res = {
        "sales": n,
        "synchronous": synchronous,
        "journal_mode": journal,
        "p50_ms": percentile(ms, 50),
        "p90_ms": percentile(ms, 90),
        "p99_ms": percentile(ms, 99),
        "max_ms": max(ms),
        "mean_ms": sum(ms) / len(ms),
        "sales_per_s": rate(n, sum(lat)),
        "cpu_ms_per_sale": cpu * 1000 / n,
        "catalog_ops": products_n + receipts_n,
        "catalog_ops_per_s": rate(products_n + receipts_n, cat_sw.seconds),
        "ops": ops,
        "open_conflicts": conflicts,
        "verify_problems": len(problems),
    }
    print(
        table(
            f"1. durable sale commit: Terminal.sell on a file DB (synchronous={synchronous}, "
            f"journal={journal})",
            ["sales", "p50 ms", "p90 ms", "p99 ms", "max ms", "sales/s", "CPU ms/sale", "verify"],
            [
                [
                    fmt(n, ",d"),
                    fmt(res["p50_ms"], ".2f"),
                    fmt(res["p90_ms"], ".2f"),
                    fmt(res["p99_ms"], ".2f"),
                    fmt(res["max_ms"], ".2f"),
                    fmt(res["sales_per_s"]),
                    fmt(res["cpu_ms_per_sale"], ".2f"),
                    "ok" if not problems else f"{len(problems)} problems",
                ]
            ],
            [
                f"sample catalogue ({len(rows)} SKUs, {products_n + receipts_n} ops in one "
                f"transaction, {fmt(res['catalog_ops_per_s'])} ops/s) and 100 customers first; "
                "1-3 lines a sale, 30 % with a loyalty customer, cash/card/split",
                f"{conflicts} conflicts open after the run (the sample catalogue's stock is small, "
                "so some SKUs are oversold)",
                "CPU ms/sale: this process's CPU time; the rest of the latency is waiting for "
                "fsync (and for the CPU, when other processes compete for it)",
            ],
        )
    )
    res["targets"] = [_target("sale commit p99", res["p99_ms"], TARGET_P99_MS, "ms", lower=True)]
    return res


# -- section 2: merge throughput ------------------------------------------------------------------


def merge_section(args: argparse.Namespace, results: dict[str, Any]) -> dict[str, Any]:
    """100k foreign sales synced into a fresh durable ledger, 5,000 ops per call."""
    n = args.merge_ops
    path, info = store_ledger(args.out, n, args.seed, use_cache=not args.no_cache)
    source = Ledger(path, STORE)
    nodes = source.nodes()
    hq = next(node.node_id for node in nodes if node.name == "HQ")
    read_sw, decode_sw, check_sw, ingest_sw = Stopwatch(), Stopwatch(), Stopwatch(), Stopwatch()
    wire_bytes = signatures = batches = 0
    bundle_overhead = None
    with tempfile.TemporaryDirectory(dir=args.out, prefix="merge-") as tmp:
        target = Ledger(Path(tmp) / "merge.db", STORE)
        try:
            tills = {o: s for o, s in source.vv().items() if o != hq}
            preamble = [decode_body(b, s) for _, _, b, s in source.raw_since(tills)]
            target.ingest(preamble, nodes)
            log(f"merge: syncing {n:,} foreign sales from 3 tills in batches of {BATCH:,}")
            merged = 0
            while True:
                with read_sw:
                    raw = source.raw_since(target.vv(), BATCH)
                if not raw:
                    break
                with decode_sw:
                    ops = decode_bodies((body, sig) for _, _, body, sig in raw)
                with check_sw:
                    signatures += _check_chains(target, ops)
                with ingest_sw:
                    target.ingest(ops)
                merged += len(ops)
                batches += 1
                wire_bytes += sum(len(op.wire()) for op in ops)
                if bundle_overhead is None:
                    bundle = encode_bundle(
                        Signer.from_seed(b"bench-bundle"),
                        STORE,
                        nodes,
                        target.vv(),
                        [(b, s) for _, _, b, s in raw],
                    )
                    bundle_overhead = len(bundle) / len(ops)
                # Freeing a batch is part of taking it in, not of decoding the next one.
                with ingest_sw:
                    del ops, raw
            sample = [decode_body(b, s) for _, _, b, s in source.raw_since({}, 1_000)]
            keys = {node.node_id: node.public_key for node in nodes}
            with Stopwatch() as sig_sw:
                for op in sample:
                    check_signature(keys[op.origin], op)
            converged = target.vv() == source.vv() and _stock(target) == _stock(source)
            conflicts = target.conn.execute("SELECT COUNT(*) FROM conflicts").fetchone()[0]
            target.close()
            proto = _protocol_merge(source, preamble, nodes, Path(tmp) / "proto.db")
        finally:
            target.close()
            source.close()
    if merged != n:
        raise BenchError(f"merge synced {merged:,} ops, expected {n:,}")
    receive_s = decode_sw.seconds + ingest_sw.seconds
    sig_us = sig_sw.seconds / len(sample) * 1e6
    res = {
        "ops": n,
        "batch": BATCH,
        "batches": batches,
        "merge_ops_per_s": rate(n, receive_s),
        "merge_s": receive_s,
        "ingest_ops_per_s": rate(n, ingest_sw.seconds),
        "decode_s": decode_sw.seconds,
        "ingest_s": ingest_sw.seconds,
        "check_s": check_sw.seconds,
        "check_ops_per_s": rate(n, check_sw.seconds),
        "signatures_checked": signatures,
        "check_share_of_merge": check_sw.seconds / receive_s if receive_s else None,
        "sender_read_ops_per_s": rate(n, read_sw.seconds),
        "every_signature_us_per_op": sig_us,
        "every_signature_ops_per_s": 1e6 / sig_us if sig_us else None,
        "wire_bytes_per_sale": wire_bytes / n,
        "bundle_bytes_per_sale": bundle_overhead,
        "converged": converged,
        "open_conflicts": conflicts,
        "source_cached": info["cached"],
        "source_build_s": info["build_s"],
        **proto,
    }
    merge_sw = Stopwatch()
    merge_sw.seconds, merge_sw.cpu = receive_s, decode_sw.cpu + ingest_sw.cpu
    res["merge_cpu_s"] = merge_sw.cpu
    res["merge_ops_per_cpu_s"] = rate(n, merge_sw.cpu)
    rows = [
        _step("decode (header + sha256 per op)", n, decode_sw, receive_s),
        _step("ingest (payload, check, fold, commit)", n, ingest_sw, receive_s),
        _step("  of which chain + signature check*", n, check_sw, receive_s),
        _step("merge = decode + ingest", n, merge_sw, receive_s),
        _step("sender: read missing ops (raw_since)", n, read_sw, None),
    ]
    if "protocol_error" in proto:
        rows.append(["merge via sync messages", "-", "-", "-", "-", proto["protocol_error"]])
    else:
        proto_sw = Stopwatch()
        proto_sw.seconds, proto_sw.cpu = proto["protocol_merge_s"], proto["protocol_merge_cpu_s"]
        label = f"merge via sync Ops messages of {proto['protocol_batch_ops']} ops"
        rows.append(_step(label, n, proto_sw, None))
    print(
        table(
            f"2. merge: {n:,} foreign sales (3 tills) into a fresh durable ledger, "
            f"{BATCH:,} ops per ingest",
            ["step", "seconds", "ops/s", "CPU s", "ops/CPU-s", "share"],
            rows,
            [
                f"* timed apart on the same batches: a hash per op, {signatures} Ed25519 "
                f"verifies in all (one per contiguous run of an origin's ops per batch)",
                f"checking every op's signature instead would cost {sig_us:.0f} µs an op "
                f"(= {fmt(res['every_signature_ops_per_s'])} ops/s on one core)",
                f"a sale op is {res['wire_bytes_per_sale']:.0f} B (body + signature); in sync Ops "
                f"messages of {proto.get('protocol_batch_ops')} deflated with dictionary "
                f"{proto.get('protocol_zdict')} it is "
                f"{fmt(proto.get('backlog_bytes_per_sale'), '.1f')} B a sale (message encoding, "
                f"before ZeroMQ/CURVE); {fmt(bundle_overhead, '.1f')} B a sale in signed "
                f"{BATCH:,}-op bundles; a lone sale pushed in its own Ops message (deflated "
                f"from {proto.get('protocol_min_batch')} op up, with the same dictionary): "
                f"{fmt(proto.get('lone_push_bytes_mean'), '.0f')} B on average, "
                f"{fmt(proto.get('lone_push_bytes_max'), ',d')} B at most",
                "sync Ops messages: sender raw_since + messages.encode; receiver messages.decode "
                "+ decode_ops + one Ledger.ingest per origin per message, as SyncNode does",
                "decode checks each op's header and hashes it (what a receiver needs to tell a "
                "new op from a duplicate and check the chain); its payload is decoded when first "
                "used, so ingest counts it, and the freeing of each batch once taken in",
                "CPU s: this process's CPU time (fsync waits and other processes' load excluded)",
                f"converged with the source: {fmt(converged)}; open conflicts: {conflicts}; "
                f"source ledger {'cached' if info['cached'] else 'built'} "
                f"({info['build_s']:.0f} s to build)",
            ],
        )
    )
    res["targets"] = [
        _target("merge incl. checks", res["merge_ops_per_s"], TARGET_MERGE_OPS_S, "ops/s"),
        _target("decode", rate(n, decode_sw.seconds), TARGET_DECODE_OPS_S, "ops/s"),
    ]
    if "backlog_bytes_per_sale" in proto:
        res["targets"] += [
            _target(
                "sale in a synced backlog",
                proto["backlog_bytes_per_sale"],
                TARGET_BACKLOG_BYTES,
                "B",
                lower=True,
            ),
            _target("sale in a bundle", bundle_overhead, TARGET_BACKLOG_BYTES, "B", lower=True),
        ]
    return res


def _step(label: str, n: int, sw: Stopwatch, whole: float | None) -> list[str]:
    return [
        label,
        fmt(sw.seconds, ".2f"),
        fmt(rate(n, sw.seconds)),
        fmt(sw.cpu, ".2f"),
        fmt(rate(n, sw.cpu)),
        _share(sw.seconds, whole) if whole else "",
    ]


def _protocol_merge(
    source: Ledger, preamble: Sequence[Op], nodes: Sequence[NodeRecord], path: Path
) -> dict[str, Any]:
    """The same merge as SyncNode carries it: Ops messages of `SyncConfig.batch_ops` wire ops,
    decoded and ingested per origin per message. Only the receiver's work is timed."""
    try:
        from meshpos.sync import compression, messages
        from meshpos.sync.protocol import SyncConfig

        batch_ops = min(SyncConfig().batch_ops, messages.MAX_BATCH_OPS)
        zdict = compression.best(compression.known())
    except (ImportError, AttributeError) as exc:
        return {"protocol_error": f"sync protocol not available ({exc})"}
    target = Ledger(path, STORE)
    try:
        target.ingest(preamble, nodes)
        receive_sw = Stopwatch()
        merged = msg_bytes = wire_bytes = 0
        while raw := source.raw_since(target.vv(), batch_ops):
            wires = tuple(pack([body, sig]) for _, _, body, sig in raw)
            data = messages.encode(messages.Ops(wires), zdict)
            msg_bytes += len(data)
            wire_bytes += sum(len(w) for w in wires)
            with receive_sw:
                msg = messages.decode(data)
                if not isinstance(msg, messages.Ops):
                    raise BenchError("an Ops message decoded as something else")
                by_origin: dict[str, list[Op]] = {}
                for op in decode_ops(msg.ops):
                    by_origin.setdefault(op.origin, []).append(op)
                for origin in sorted(by_origin):
                    merged += target.ingest(by_origin[origin]).applied
        _, _, body, sig = source.raw_since({}, 1)[0]
        wire = pack([body, sig])
        one_framing = len(messages.encode(messages.Ops((wire,)))) - len(wire)
        sales = [pack([b, s]) for _, _, b, s in source.raw_since(dict.fromkeys(source.vv(), 0))]
        sample = sales[:: max(1, len(sales) // 500)]
        alone = compression.for_batch(zdict, 1)  # what SyncNode does with one op
        lone = [len(messages.encode(messages.Ops((w,)), alone)) for w in sample]
    finally:
        target.close()
    return {
        "protocol_batch_ops": batch_ops,
        "protocol_merged": merged,
        "protocol_merge_s": receive_sw.seconds,
        "protocol_merge_cpu_s": receive_sw.cpu,
        "protocol_merge_ops_per_s": rate(merged, receive_sw.seconds),
        "protocol_framing_bytes_per_op": (msg_bytes - wire_bytes) / merged if merged else None,
        "protocol_one_op_framing_bytes": one_framing,
        "protocol_zdict": zdict,
        "protocol_min_batch": compression.MIN_BATCH,
        "backlog_bytes_per_sale": msg_bytes / merged if merged else None,
        "lone_push_bytes_mean": sum(lone) / len(lone),
        "lone_push_bytes_max": max(lone),
    }


def _check_chains(ledger: Ledger, ops: Sequence[Op]) -> int:
    """What `ingest` checks before writing: each origin's run chains on from what the ledger
    holds, and its last op's signature. Returns the number of signatures checked."""
    runs: dict[str, list[Op]] = {}
    for op in ops:
        runs.setdefault(op.origin, []).append(op)
    for origin, run in runs.items():
        key = ledger.public_key(origin)
        if key is None:
            raise BenchError(f"merge: origin {origin} is not enrolled in the target ledger")
        held, head = ledger.head(origin)
        if run[0].seq != held + 1:
            raise BenchError(f"merge: batch for {origin} starts at {run[0].seq}, not {held + 1}")
        verify_run(run, key, head)
    return len(runs)


def _stock(ledger: Ledger) -> list[tuple[str, int]]:
    return ledger.conn.execute("SELECT sku, qty FROM stock ORDER BY sku").fetchall()


def _share(part: float, whole: float) -> str:
    return f"{100 * part / whole:.0f}%" if whole else "-"


# -- section 3: a million ops ---------------------------------------------------------------------


def _oversell_check(path: Path, runs: int = 50) -> tuple[str, int, float]:
    """The oversell conflict's read of a SKU's newest removals (ledger/apply.py), at the SKU
    with the most moves: (sku, its moves, median ms to read 20). It runs on every sale of a SKU
    whose stock is below zero, so it must not grow with the SKU's history."""
    from meshpos.ledger.apply import _moves_newest_first

    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        sku, moves = conn.execute(
            "SELECT sku, COUNT(*) AS n FROM sale_lines GROUP BY sku ORDER BY n DESC LIMIT 1"
        ).fetchone()
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            for _n, _move in zip(range(20), _moves_newest_first(conn, "main", sku), strict=False):
                pass
            times.append((time.perf_counter() - t0) * 1000)
        return str(sku), int(moves), sorted(times)[len(times) // 2]
    finally:
        conn.close()


def scale_section(args: argparse.Namespace, results: dict[str, Any]) -> dict[str, Any]:
    """Verify time (default and --full), backup time (plain and encrypted), bytes per op and peak
    RSS of a node holding `--ops` ops."""
    preamble = 2 * len(sample_rows()) + DEFAULT_CUSTOMERS
    n_sales = max(args.ops - preamble, BATCH)
    path, info = store_ledger(args.out, n_sales, args.seed, use_cache=not args.no_cache)
    encrypted = _encrypted_copy(path, use_cache=not args.no_cache)
    log(f"scale: verifying and backing up {info['ops']:,} ops in a child process")
    child = run_child("bench.ledger_bench", ["verify", str(path), "--encrypted", str(encrypted)])
    with timed("scale: size breakdown (dbstat)"):
        sizes = _sizes(path)
    hot_sku, hot_moves, oversell_ms = _oversell_check(path)
    ops = child["ops"]
    res = {
        "ops": ops,
        "sales": info["sales"],
        "cached": info["cached"],
        "build_s": info["build_s"],
        "verify_s": child["verify_s"],
        "verify_ops_per_s": rate(ops, child["verify_s"]),
        "verify_cpu_s": child["verify_cpu_s"],
        "verify_problems": child["problems"],
        "verify_full_s": child["full_s"],
        "verify_full_cpu_s": child["full_cpu_s"],
        "verify_full_problems": child["full_problems"],
        "backup": child["backup"],
        "open_s": child["open_s"],
        "peak_rss_mb": child["peak_rss_mb"],
        "baseline_rss_mb": child["baseline_rss_mb"],
        "db_bytes": sizes["file"],
        "bytes_per_op": sizes["file"] / ops,
        "log_bytes_per_op": sizes["log"] / ops,
        "view_bytes_per_op": sizes["views"] / ops,
        "wire_bytes_per_op": sizes["wire"] / ops,
        "largest": {k: v / ops for k, v in sizes["largest"].items()},
        "table_bytes_per_op": {k: v / ops for k, v in sizes["tables"].items()},
        "btree_bytes_per_op": {k: v / ops for k, v in sizes["btrees"].items()},
        "oversell_check_ms": oversell_ms,
        "oversell_check_sku_moves": hot_moves,
    }
    largest = ", ".join(f"{k} {v:.0f}" for k, v in res["largest"].items())
    btrees = ", ".join(
        f"{k} {v:.0f}"
        for k, v in sorted(res["btree_bytes_per_op"].items(), key=lambda kv: -kv[1])
        if v >= 1
    )
    backups = child["backup"]
    print(
        table(
            f"3b. verify --full and backups at {ops:,} ops",
            ["what", "wall s", "CPU s", "snapshot s", "check s", "seal s", "problems"],
            [
                [
                    "verify --full",
                    fmt(res["verify_full_s"], ".1f"),
                    fmt(res["verify_full_cpu_s"], ".1f"),
                    "-",
                    "-",
                    "-",
                    fmt(res["verify_full_problems"], ",d"),
                ],
                *(
                    [
                        f"backup, {kind}",
                        fmt(b["total_s"], ".1f"),
                        fmt(b["cpu_s"], ".1f"),
                        fmt(b["snapshot_s"], ".1f"),
                        fmt(b["check_s"], ".1f"),
                        fmt(b["seal_s"], ".1f"),
                        "-",
                    ]
                    for kind, b in backups.items()
                ),
            ],
            [
                "verify --full = verify with every op's Ed25519 signature checked, in one worker "
                f"process per core ({os.cpu_count()}) beside the refold; CPU = this process + "
                "its workers",
                "backup = create_backup: snapshot (the files copied under a read transaction), "
                f"check ({BACKUP_CHECK}), seal (AES-GCM) and read-back; CPU of the process "
                "and of its quick_check thread or process",
            ],
        )
    )
    print(
        table(
            f"3. at scale: {ops:,} ops ({info['sales']:,} sales on 3 tills + catalogue)",
            [
                "ops",
                "verify s",
                "verify ops/s",
                "CPU s",
                "DB MB",
                "B/op",
                "log B/op",
                "views B/op",
                "peak RSS MB",
            ],
            [
                [
                    fmt(ops, ",d"),
                    fmt(res["verify_s"], ".1f"),
                    fmt(res["verify_ops_per_s"]),
                    fmt(res["verify_cpu_s"], ".1f"),
                    fmt(sizes["file"] / 2**20, ",.0f"),
                    fmt(res["bytes_per_op"]),
                    fmt(res["log_bytes_per_op"]),
                    fmt(res["view_bytes_per_op"]),
                    fmt(res["peak_rss_mb"], ".0f"),
                ]
            ],
            [
                "verify = every hash chain + one signature per 5,000-op run + a fresh fold of "
                f"every view compared with the live views: {child['problems']} problems",
                f"bytes after a WAL checkpoint; an op's body + signature alone is "
                f"{res['wire_bytes_per_op']:.0f} B; largest per op: {largest}",
                f"bytes per op by b-tree (tables and indexes, 1 B and up): {btrees}",
                f"peak RSS of a fresh process that opens the ledger and verifies it "
                f"({res['baseline_rss_mb']:.0f} MB after imports, before opening)",
                f"ledger {'cached' if info['cached'] else 'built'}: {info['build_s']:.0f} s to "
                "sign and ingest (one signing process per till)",
                f"oversell check (each sale of a SKU below zero): the 20 newest removals of "
                f"{hot_sku}, {hot_moves:,} moves, read in {oversell_ms:.3f} ms (median of 50)",
            ],
        )
    )
    res["targets"] = [
        _target(f"peak RSS at {ops:,} ops", res["peak_rss_mb"], TARGET_RSS_MB, "MB", lower=True),
        _target("verify finds no problem", float(child["problems"]), 0.0, "problems", lower=True),
        _target(
            "verify --full finds no problem",
            float(child["full_problems"]),
            0.0,
            "problems",
            lower=True,
        ),
    ]
    if ops >= 0.9 * MILLION_OPS:
        res["targets"] += [
            _target(
                f"verify --full at {ops:,} ops",
                res["verify_full_s"],
                TARGET_FULL_VERIFY_S,
                "s",
                lower=True,
            ),
            _target(
                f"encrypted backup of {ops:,} ops (snapshot + check + seal)",
                backups["encrypted"]["total_s"],
                TARGET_BACKUP_S,
                "s",
                lower=True,
            ),
            _target(
                f"disk per op at {ops:,} ops",
                res["bytes_per_op"],
                TARGET_DISK_BYTES_PER_OP,
                "B",
                lower=True,
            ),
        ]
    return res


def _encrypted_copy(path: Path, *, use_cache: bool) -> Path:
    """The at-scale ledger under SQLCipher (the copy `meshpos encrypt` makes), cached beside it."""
    enc = path.with_name(path.stem + ".scale.sqlcipher.db")
    if not (use_cache and enc.exists()):
        with timed(f"scale: encrypting a copy of {path.name}"):
            export_database(path, None, enc.with_suffix(".part"), SCALE_KEY)
            os.replace(enc.with_suffix(".part"), enc)
    return enc


def _sizes(path: Path) -> dict[str, Any]:
    """Bytes by table (a table with its indexes) and by b-tree, from dbstat; `wire`: the ops'
    bodies as signed (restored from their compressed rows) plus signatures."""
    log_tables = {"ops", "vv", "pending", "nodes", "meta", "body_dicts"}
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        owner = dict(conn.execute("SELECT name, tbl_name FROM sqlite_schema"))
        by_table: dict[str, int] = {}
        btrees: dict[str, int] = {}
        for name, size in conn.execute("SELECT name, SUM(pgsize) FROM dbstat GROUP BY name"):
            table_name = owner.get(name, name)
            by_table[table_name] = by_table.get(table_name, 0) + size
            btrees[name] = size
        rows = conn.execute("SELECT origin, seq, body, length(sig) FROM ops")
        wire = sum(len(body_codec.restore(b, o, q, conn)) + n for o, q, b, n in rows)
    finally:
        conn.close()
    log_bytes = sum(v for k, v in by_table.items() if k in log_tables)
    views = {k: v for k, v in by_table.items() if k not in log_tables}
    top = dict(sorted(by_table.items(), key=lambda kv: -kv[1])[:4])
    return {
        "file": path.stat().st_size,
        "log": log_bytes,
        "views": sum(views.values()),
        "wire": wire,
        "largest": top,
        "tables": by_table,
        "btrees": btrees,
    }


def _verify_child(db: str, encrypted: str | None = None) -> dict[str, Any]:
    baseline = peak_rss_mb()
    t0 = time.perf_counter()
    ledger = Ledger(db, STORE)
    ops = ledger.op_count()
    open_s = time.perf_counter() - t0
    try:
        c0, t0 = time.process_time(), time.perf_counter()
        problems = ledger.verify()
        verify_s = time.perf_counter() - t0
        verify_cpu_s = time.process_time() - c0
        peak = peak_rss_mb()
        c0, w0, t0 = time.process_time(), _children_cpu(), time.perf_counter()
        full = ledger.verify(every_signature=True)
        full_s = time.perf_counter() - t0
        full_cpu_s = time.process_time() - c0 + _children_cpu() - w0
    finally:
        ledger.close()
    for p in (problems + full)[:5]:
        print(f"verify: {p}", file=sys.stderr)
    backups = {"plain": timed_backup(Path(db), None, Path(db).parent)}
    if encrypted:
        backups["encrypted"] = timed_backup(Path(encrypted), SCALE_KEY, Path(db).parent)
    return {
        "ops": ops,
        "open_s": open_s,
        "verify_s": verify_s,
        "verify_cpu_s": verify_cpu_s,
        "problems": len(problems),
        "full_s": full_s,
        "full_cpu_s": full_cpu_s,
        "full_problems": len(full),
        "backup": backups,
        "peak_rss_mb": peak,
        "baseline_rss_mb": baseline,
    }


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed_backup(db: Path, key: bytes | None, workdir: Path) -> dict[str, Any]:
    """`create_backup` of the ledger at `db` as `meshpos backup` takes it, timed (the ops and
    scale sections)."""
    with tempfile.TemporaryDirectory(dir=workdir, prefix="bench-backup-") as tmp:
        node = Path(tmp)
        cfg = NodeConfig(dir=node, store=STORE, name="T1", node_id="bench", raw={})
        settings = BackupSettings(every_minutes=0, keep=1, dir=node / "backups")
        ledger = Ledger(db, STORE, key=key)
        try:
            ops = ledger.op_count()
            log(f"backing up the {'encrypted ' if key else ''}{ops:,}-op ledger {db.name}")
            c0, w0, t0 = time.process_time(), _children_cpu(), time.perf_counter()
            r = create_backup(cfg, ledger, now_ms=time.time_ns() // 1_000_000, settings=settings)
            total = time.perf_counter() - t0
            cpu = time.process_time() - c0 + _children_cpu() - w0
        finally:
            ledger.close()
    return {
        "ops": ops,
        "total_s": total,
        "cpu_s": cpu,
        "snapshot_s": r.snapshot_s,
        "check_s": r.verify_s,
        "seal_s": r.seal_s,
        "file_mb": r.bytes / 1e6,
        "checked": r.checked,
    }


# -- section 4: the CRDT-library baselines' workload ----------------------------------------------


def baselines_section(args: argparse.Namespace, results: dict[str, Any]) -> dict[str, Any]:
    """pycrdt and loro on their concurrent counter workload, and meshpos on the same sales."""
    replicas, sales, skus, seed = 3, args.baseline_sales, 300, 1
    with timed(f"baselines: pycrdt and loro, {replicas} replicas x {sales:,} sales"):
        rows = baselines.run_baselines(replicas, sales, skus, seed)
    mesh = meshpos_counter_workload(args.out, replicas, sales, skus, seed)
    merge = results.get("merge", {})
    lines = []
    for r in rows:
        if not r.get("installed") or "error" in r:
            lines.append([r["name"], "-", "-", "-", "-", "-", r.get("error", r["note"])])
            continue
        lines.append(
            [
                f"{r['name']} {r['version']}",
                fmt(r["merge_ops_per_s"]),
                fmt(r["one_sale_bytes"], ",d"),
                fmt(r["one_sale_bytes"], ",d"),
                fmt(r["exchange_bytes_per_sale"], ".1f"),
                fmt(r["converged"] and r["total_ok"]),
                "in memory, unsigned update",
            ]
        )
    framed = mesh["one_sale_message_bytes"]
    lines.append(
        [
            f"meshpos {meshpos.__version__}",
            fmt(mesh["merge_ops_per_s"]),
            fmt(mesh["one_sale_op_bytes"], ",d"),
            fmt(framed if framed is not None else mesh["one_sale_bundle_bytes"], ",d"),
            fmt(mesh["exchange_bytes_per_sale"], ".1f"),
            fmt(mesh["converged"] and mesh["total_ok"] and mesh["one_sale_ok"]),
            "durable, signed sale record",
        ]
    )
    if "merge_ops_per_s" in merge:
        lines.append(
            [
                "meshpos, section 2",
                fmt(merge["merge_ops_per_s"]),
                fmt(merge["wire_bytes_per_sale"], ",.0f"),
                fmt(merge.get("lone_push_bytes_mean"), ",.0f"),
                fmt(merge.get("backlog_bytes_per_sale"), ".1f"),
                fmt(merge["converged"]),
                "1-3 line sales, 5,000 a batch",
            ]
        )
    framing = (
        "in one sync Ops message (message encoding; ZeroMQ/CURVE framing not counted)"
        if framed is not None
        else "in a signed sync bundle"
    )
    print(
        table(
            f"4. the same concurrent counter workload: {replicas} replicas x {sales:,} sales of "
            f"{skus} SKUs, then every replica merges the others'",
            [
                "system",
                "merge ops/s",
                "B/1 sale",
                "B/1 sale framed",
                "B/sale xchg",
                "converged",
                "merged op",
            ],
            lines,
            [
                "B/1 sale: one more sale carried to an already-synced replica (CRDT libraries: "
                "the incremental update; meshpos: the op's wire form, body + signature); "
                f"framed: meshpos {framing}; as a signed bundle file it is "
                f"{mesh['one_sale_bundle_bytes']:,} B",
                "B/sale xchg: all bytes exchanged / merged sales; meshpos exchanges signed "
                f"bundles of up to {BATCH:,} ops holding exactly the ops the receiver lacks "
                "(section 2 row: deflated Ops messages of a backlog; B/1 sale framed: a lone push)",
                "merge ops/s: sales imported by all replicas / import time; meshpos: "
                "decode_bundle + Ledger.ingest into durable SQLite (every chain, one signature "
                "per run, views folded, fsync)",
                f"a meshpos sale here has one line ({mesh['one_sale_op_bytes']} B: receipt number, "
                "line with price and GST, tender, cashier, HLC, signature); the CRDT libraries "
                "carry only a counter decrement",
            ],
        )
    )
    print(baselines.format_table(rows))
    targets = []
    if framed is not None:
        # On the wire: the message plus its CURVE framing (imported here, not at the top, so the
        # scale section's child process does not load ZeroMQ into the RSS it measures).
        from meshpos.node.transport import wire_size

        pushed = wire_size(framed)
        targets.append(
            _target("one-line sale pushed alone", pushed, TARGET_LONE_BYTES, "B", lower=True)
        )
    return {"libraries": rows, "meshpos": mesh, "targets": targets}


def meshpos_counter_workload(
    out: Path, replicas: int, sales: int, skus: int, seed: int
) -> dict[str, Any]:
    """The baselines' workload (same SKUs, same sales per replica) as one-line meshpos sales on
    durable ledgers; merged by exchanging signed bundles, as `meshpos sync export/import` does."""
    work = baselines._workload(replicas, sales, skus, seed)
    csv_rows = ["sku,name,category,price,gst_rate,stock"] + [
        f"{baselines._sku(i)},Item {i},Bench,{499 + i % 50}.00,12,0" for i in range(skus)
    ]
    rows = parse_csv("\n".join(csv_rows), "bench catalogue")
    gen = Generator(seed, names=[f"R{i}" for i in range(replicas)], rows=rows, customers=0)
    preamble = gen.preamble(baselines.BASE_STOCK)
    nodes = gen.nodes()
    with tempfile.TemporaryDirectory(dir=out, prefix="counter-") as tmp:
        ledgers = [Ledger(Path(tmp) / f"r{i}.db", STORE) for i in range(replicas)]
        try:
            for ledger in ledgers:
                ledger.ingest(preamble, nodes)

            r0 = gen.signers[0].node_id
            jobs = [
                TillJob(
                    seed,
                    tuple(gen.names),
                    tuple(rows),
                    0,
                    r,
                    ledgers[0].head(r0) if r == 0 else (0, GENESIS),
                    sales,
                    counter=(replicas, sales, skus, seed),
                )
                for r in range(replicas)
            ]
            with timed(f"baselines: meshpos, {replicas} replicas ring {sales:,} signed sales each"):
                for node, ops in run_tills(jobs):
                    ledgers[node].ingest(ops)
            vvs = [ledger.vv() for ledger in ledgers]
            export_sw, import_sw = Stopwatch(), Stopwatch()
            bundles: dict[tuple[int, int], list[bytes]] = {}
            for dst in range(replicas):
                for src in range(replicas):
                    if src != dst:
                        with export_sw:
                            bundles[(src, dst)] = _bundles(gen.signers[src], ledgers[src], vvs[dst])
            count = sum(len(b) for b in bundles.values())
            log(f"baselines: meshpos merging {count} bundles of up to {BATCH:,} ops")
            merged = 0
            for (_, dst), datas in bundles.items():
                for data in datas:
                    with import_sw:
                        bundle = decode_bundle(data, STORE)
                        merged += ledgers[dst].ingest(bundle.ops, bundle.nodes).applied
            exchange_bytes = sum(len(b) for datas in bundles.values() for b in datas)
            bundles.clear()
            expected = {baselines._sku(i): baselines.BASE_STOCK for i in range(skus)}
            for replica_work in work:
                for sku, qty in replica_work:
                    expected[sku] -= qty
            views = [dict(_stock(ledger)) for ledger in ledgers]
            converged = all(v == views[0] for v in views[1:])
            total_ok = sum(views[0].values()) == sum(expected.values())
            per_sku_ok = views[0] == expected
            # One more sale on replica 0, carried to replica 1 in a bundle of its own.
            gen.heads[0] = ledgers[0].head(r0)
            gen.numbers[0] = sales
            gen.wall = clock.wall_of(ledgers[0].max_hlc()) + 1_000
            extra = [gen.sale(0, one_line(baselines._sku(0), 1))]
            ledgers[0].ingest(extra)
            expected[baselines._sku(0)] -= 1
            [one] = _bundles(gen.signers[0], ledgers[0], ledgers[1].vv())
            ledgers[1].ingest(decode_bundle(one, STORE).ops)
            one_sale_ok = dict(_stock(ledgers[1])) == expected
            conflicts = sum(
                ledger.conn.execute("SELECT COUNT(*) FROM conflicts").fetchone()[0]
                for ledger in ledgers
            )
        finally:
            for ledger in ledgers:
                ledger.close()
    merge_ops = replicas * (replicas - 1) * sales
    if merged != merge_ops:
        raise BenchError(f"meshpos merged {merged:,} ops, expected {merge_ops:,}")
    return {
        "replicas": replicas,
        "sales_per_replica": sales,
        "skus": skus,
        "merge_ops": merge_ops,
        "merge_s": import_sw.seconds,
        "merge_ops_per_s": rate(merge_ops, import_sw.seconds),
        "export_s": export_sw.seconds,
        "exchange_bytes": exchange_bytes,
        "exchange_bytes_per_sale": exchange_bytes / merge_ops,
        "one_sale_op_bytes": len(extra[0].wire()),
        "one_sale_bundle_bytes": len(one),
        "one_sale_message_bytes": _ops_message_size(extra[0].wire()),
        "converged": converged,
        "total_ok": total_ok,
        "per_sku_ok": per_sku_ok,
        "one_sale_ok": one_sale_ok,
        "open_conflicts": conflicts,
    }


def _ops_message_size(wire: bytes) -> int | None:
    """Bytes of a sync Ops message carrying this one op, or None without the sync protocol."""
    try:
        from meshpos.sync import compression, messages

        zdict = compression.for_batch(compression.best(compression.known()), 1)
        return len(messages.encode(messages.Ops((wire,)), zdict))
    except (ImportError, AttributeError, TypeError):
        return None


def _bundles(signer: Signer, ledger: Ledger, theirs: dict[str, int]) -> list[bytes]:
    """What `ledger` has that `theirs` lacks, as signed bundles of up to BATCH ops (the sync
    protocol's batch; one bundle of 30,000 ops exceeds `unpack`'s 4 MB limit on a bin)."""
    raw = ledger.raw_since(theirs)
    nodes, vv = ledger.nodes(), ledger.vv()
    return [
        encode_bundle(signer, STORE, nodes, vv, [(b, s) for _, _, b, s in raw[i : i + BATCH]])
        for i in range(0, len(raw), BATCH)
    ]


# -- shared ---------------------------------------------------------------------------------------


def _target(
    name: str, value: float | None, target: float, unit: str, *, lower: bool = False
) -> dict[str, Any]:
    ok = value is not None and (value <= target if lower else value >= target)
    return {"name": name, "value": value, "target": target, "unit": unit, "lower": lower, "ok": ok}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="bench child processes")
    sub = parser.add_subparsers(dest="cmd", required=True)
    verify = sub.add_parser("verify", help="open a ledger, verify it, print figures as JSON")
    verify.add_argument("db")
    verify.add_argument("--encrypted", help="the same ledger under SQLCipher, to back up too")
    args = parser.parse_args(argv)
    if args.cmd == "verify":
        print(json.dumps(_verify_child(args.db, args.encrypted)))


if __name__ == "__main__":
    main()
