"""The store mesh's figures: three real `meshpos node run` daemons on loopback.

Why real daemons in their own processes rather than Daemon objects in threads: a store runs one
daemon per terminal, each with its own interpreter, so latencies here include what they include
in a shop (the CurveZMQ hop, the peer's durable `synchronous=FULL` ingest, the daemon noticing a
commit made by another process) and none of the GIL contention three daemons in one process
would add. Sales are rung from this process through `Terminal.sell`, exactly as `meshpos sell`
writes them; the daemons find each other over real mDNS on 127.0.0.1.

Measured:
1. sale commit -> second durable copy: until the ringing node's `peer_acks` shows a peer's ack
   (what `meshpos sell` waits for before it says "2 copies"), and sale commit -> visible on each
   peer (the peer's durable commit: propagation);
2. bytes on the wire per op during that run, against the op's encoded size (body + signature),
   counted twice: by the daemons' transport (payload, plus CurveZMQ framing per `wire_size`) and
   by the kernel (`ss`: TCP payload of every connection between the daemons, so ZMTP handshakes
   and heartbeats count too);
3. idle traffic per peer per second, both counts;
4. a partition healed with a backlog: one daemon is frozen (SIGSTOP: it neither sends nor
   answers, its peers declare it dead, exactly as if its cable were pulled), the backlog is rung
   at another terminal and syncs among the connected two, then SIGCONT heals it; the time until
   the healed node holds every op, and the bytes the two others sent it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import signal
import sqlite3
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import BenchError, fmt, log, percentile, table
from bench.ledger_bench import (
    SaleMix,
    _target,
    products_of,
    sample_rows,
    tenders_for,
)
from meshpos.core import clock
from meshpos.core.ops import decode_body, make_op
from meshpos.demo.processes import Daemon
from meshpos.domain.pricing import CartLine, price_lines
from meshpos.node import membership
from meshpos.node.transport import wire_size
from meshpos.service.config import init_node
from meshpos.service.terminal import Terminal

NAMES = ("T1", "T2", "T3")
WAIT_S = 60.0
CUSTOMERS = 50
CHUNK = 5_000
TARGET_COPY_P99_MS = 20.0
TARGET_HEAL_S = 10.0
TARGET_WIRE_RATIO = 1.3
TARGET_IDLE_BPS = 1024.0
_SS_BYTES = re.compile(r"bytes_(sent|received):(\d+)")


def wait(check: Callable[[], Any], what: str, timeout: float = WAIT_S, step: float = 0.01) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise BenchError(f"mesh bench: {what} did not happen within {timeout:.0f} s")
        time.sleep(step)


@dataclass
class Node:
    directory: Path
    node_id: str
    daemon: Daemon
    conn: sqlite3.Connection

    @property
    def name(self) -> str:
        return self.directory.name

    def vv(self) -> dict[str, int]:
        return dict(self.conn.execute("SELECT origin, seq FROM vv").fetchall())

    def has(self, origin: str, seq: int) -> bool:
        row = self.conn.execute("SELECT seq FROM vv WHERE origin = ?", (origin,)).fetchone()
        return row is not None and row[0] >= seq

    def status(self, newer_than: float = 0.0) -> dict[str, Any]:
        """The daemon's status.json, waiting for one written after `newer_than` (wall time)."""

        def fresh() -> dict[str, Any] | None:
            try:
                st: dict[str, Any] = json.loads((self.directory / "status.json").read_text())
            except (OSError, ValueError):
                return None
            return st if st.get("written", 0) > newer_than else None

        result: dict[str, Any] = wait(fresh, f"a fresh status from {self.name}")
        return result


def _traffic(nodes: Sequence[Node], newer_than: float) -> dict[str, int]:
    """Every daemon's transport counters summed: payload bytes and messages, both directions
    counted once (what one sends, another receives)."""
    total = {"bytes": 0, "messages": 0, "wire": 0}
    for node in nodes:
        for peer in node.status(newer_than).get("traffic", {}).values():
            total["bytes"] += peer["bytes_sent"]
            total["messages"] += peer["messages_sent"]
    # wire_size() is exact per message; summed counters only allow its mean: 35 or 42 bytes of
    # framing a message, so the larger one bounds it from above.
    total["wire"] = total["bytes"] + total["messages"] * (wire_size(300) - 300)
    return total


def _sent_to(node: Node, peer: str, newer_than: float) -> int:
    """Payload bytes `node`'s daemon queued for `peer` since it started."""
    traffic = node.status(newer_than).get("traffic", {})
    return int(traffic.get(peer, {}).get("bytes_sent", 0))


def _kernel_bytes(ports: Sequence[int]) -> int:
    """TCP payload bytes of every established connection to a daemon's ROUTER port (both
    directions, counted at the ROUTER's end, so each connection once)."""
    out = subprocess.run(
        ["ss", "-tinH", "state", "established"], capture_output=True, text=True, timeout=30
    ).stdout
    total = 0
    lines = out.splitlines()
    for i, line in enumerate(lines):
        parts = line.split()
        if len(parts) < 4 or i + 1 >= len(lines):
            continue
        local = parts[2]
        if not any(local.endswith(f":{p}") for p in ports):
            continue
        total += sum(int(n) for _, n in _SS_BYTES.findall(lines[i + 1]))
    return total


def _setup(base: Path) -> list[Path]:
    dirs = [base / name for name in NAMES]
    store = f"BENCH{int(time.time() * 1000) % 10**8:08d}"
    terms = [Terminal.open(init_node(d, store, d.name).dir) for d in dirs]
    try:
        t1 = terms[0]
        membership.store_init(t1)
        for t in terms[1:]:
            membership.install(t, membership.sign(t1, membership.request(t)))
        t1.import_catalog(sample_rows())
        for i in range(CUSTOMERS):
            t1.add_customer({"name": f"Customer {i}", "phone": f"9{i:09d}"})
    finally:
        for t in terms:
            t.close()
    return dirs


@contextlib.contextmanager
def _mesh(base: Path) -> Iterator[list[Node]]:
    dirs = _setup(base)
    nodes: list[Node] = []
    try:
        for d in dirs:
            daemon = Daemon(d)
            daemon.start()
            conn = sqlite3.connect(d / "meshpos.db", timeout=30, isolation_level=None)
            t = Terminal.open(d)
            nodes.append(Node(d, t.node_id, daemon, conn))
            t.close()
        yield nodes
    finally:
        for node in nodes:
            if node.daemon.popen is not None and node.daemon.popen.poll() is None:
                node.daemon.popen.send_signal(signal.SIGCONT)
        for node in nodes:
            node.daemon.stop()
            node.conn.close()


def _converged(nodes: Sequence[Node]) -> bool:
    first = nodes[0].vv()
    return all(n.vv() == first for n in nodes[1:])


def _latency(nodes: list[Node], t1: Terminal, sales: int, seed: int) -> dict[str, Any]:
    rows = sample_rows()
    products = products_of(rows)
    cids = [r[0] for r in t1.ledger.conn.execute("SELECT customer_id FROM customers")]
    mix = SaleMix(list(products), len(cids), seed)
    peers = nodes[1:]
    warmup = 10
    copy_ms: list[float] = []
    seen_ms: list[float] = []
    op_bytes: list[int] = []
    acks = t1.ledger.conn
    for i in range(sales + warmup):
        spec = mix.next()
        total = price_lines([CartLine(products[s], q) for s, q in spec.items], spec.discount).total
        cid = cids[spec.customer] if spec.customer is not None else None
        result = t1.sell(
            list(spec.items),
            tenders=tenders_for(spec.pay, total),
            customer=cid,
            discount=spec.discount,
            allow_oversell=True,
        )
        committed = time.perf_counter()
        seq, origin = result.op.seq, result.op.origin
        copy_at: float | None = None
        seen: dict[str, float] = {}
        deadline = committed + 10
        while copy_at is None or len(seen) < len(peers):
            now = time.perf_counter()
            if copy_at is None:
                row = acks.execute("SELECT MAX(seq) FROM peer_acks").fetchone()
                if row[0] is not None and row[0] >= seq:
                    copy_at = now
            for p in peers:
                if p.name not in seen and p.has(origin, seq):
                    seen[p.name] = now
            if now > deadline:
                raise BenchError(f"mesh bench: sale {seq} not acknowledged within 10 s")
            time.sleep(0.0002)
        if i >= warmup:
            copy_ms.append((copy_at - committed) * 1000)
            seen_ms += [(at - committed) * 1000 for at in seen.values()]
            op_bytes.append(len(result.op.body) + len(result.op.sig))
    return {"copy_ms": copy_ms, "seen_ms": seen_ms, "op_bytes": op_bytes}


def _backlog(t1: Terminal, n: int, templates: Sequence[dict[str, Any]]) -> int:
    """`n` ops at T1 as if rung while T3 was away: a delivery of stock for every SKU, then
    sales copied from the real ones (new ids and numbers), signed and chained like any
    sale, ingested in chunks so T1's daemon streams them to T2 meanwhile. Returns their bytes."""
    seq, prev = t1.ledger.head(t1.node_id)
    number = int(
        t1.ledger.conn.execute(
            "SELECT COALESCE(MAX(number), 0) FROM sales WHERE origin = ?", (t1.node_id,)
        ).fetchone()[0]
    )
    hlc = clock.HLC(t1.ledger.max_hlc())
    skus = [r[0] for r in t1.ledger.conn.execute("SELECT sku FROM products ORDER BY sku")]
    store, name = t1.cfg.store, t1.cfg.name
    size = 0
    chunk = []
    for k in range(n):
        if k < len(skus):
            kind = "stock.receive"
            payload: dict[str, Any] = {"sku": skus[k], "delta": n, "reason": "delivery"}
        else:
            number += 1
            kind = "sale"
            payload = dict(templates[k % len(templates)])
            payload.update(
                sale_id=f"{store}-{name}-{number:06d}",
                receipt=f"{name}-{number:06d}",
                number=number,
                ts_ms=t1.now_ms(),
            )
        seq += 1
        op = make_op(
            t1.signer,
            store=store,
            seq=seq,
            hlc=hlc.now(t1.now_ms()),
            user="cashier",
            kind=kind,
            payload=payload,
            prev=prev,
        )
        prev = op.hash
        size += len(op.body) + len(op.sig)
        chunk.append(op)
        if len(chunk) == CHUNK or k == n - 1:
            t1.ingest(chunk)
            chunk = []
    return size


def mesh_section(args: argparse.Namespace, results: dict[str, Any]) -> dict[str, Any]:
    sales, backlog = args.mesh_sales, args.mesh_backlog
    idle_s = 2.0 if args.quick else 10.0
    hold_s = 0.0 if args.quick else 5.0
    with (
        tempfile.TemporaryDirectory(dir=args.out, prefix="mesh-") as tmp,
        _mesh(Path(tmp)) as nodes,
    ):
        n1, n2, n3 = nodes
        log("mesh: three daemons on 127.0.0.1, waiting for mDNS discovery and the catalogue")
        started = time.monotonic()
        wait(lambda: all(n.status().get("peers_up") == 2 for n in nodes), "discovery")
        wait(lambda: _converged(nodes), "the catalogue reaching every node")
        discovery_s = time.monotonic() - started
        ports = [int(n.status()["port"]) for n in nodes]
        t1 = Terminal.open(n1.directory)
        try:
            # 1 + 2: latency and bytes per op, ringing sales at T1 one after another.
            log(f"mesh: ringing {sales:,} sales at T1, each until both peers hold it")
            mark = time.time()
            before, k_before = _traffic(nodes, mark), _kernel_bytes(ports)
            lat = _latency(nodes, t1, sales, args.seed)
            wait(lambda: _converged(nodes), "the sales settling")
            time.sleep(0.3)  # the last Haves
            mark = time.time()
            after, k_after = _traffic(nodes, mark), _kernel_bytes(ports)
            op_total = sum(lat["op_bytes"]) * (len(nodes) - 1)
            run_wire = after["wire"] - before["wire"]
            run_messages = after["messages"] - before["messages"]
            run_payload = after["bytes"] - before["bytes"]
            run_kernel = k_after - k_before

            # 3: idle.
            log(f"mesh: idle for {idle_s:.0f} s")
            mark = time.time()
            idle0, k_idle0, t_idle0 = _traffic(nodes, mark), _kernel_bytes(ports), time.time()
            time.sleep(idle_s)
            mark = time.time()
            idle1, k_idle1 = _traffic(nodes, mark), _kernel_bytes(ports)
            idle_span = time.time() - t_idle0
            pairs = len(nodes) * (len(nodes) - 1) // 2
            idle_wire = (idle1["wire"] - idle0["wire"]) / pairs / idle_span
            idle_kernel = (k_idle1 - k_idle0) / pairs / idle_span

            # 4: partition with a backlog, then heal.
            assert n3.daemon.popen is not None
            log(f"mesh: T3 cut off (SIGSTOP); ringing a backlog of {backlog:,} ops at T1")
            # Counted from before the cut: what T1 queued for T3 before noticing it had gone
            # sits in socket buffers and reaches T3 after the heal.
            mark = time.time()
            to3 = {n.name: _sent_to(n, n3.node_id, mark) for n in (n1, n2)}
            n3.daemon.popen.send_signal(signal.SIGSTOP)
            cut = time.monotonic()
            templates = _sale_payloads(t1)
            gen0 = time.monotonic()
            backlog_bytes = _backlog(t1, backlog, templates)
            gen_s = time.monotonic() - gen0
            wait(lambda: n1.vv() == n2.vv(), "T2 receiving the backlog while T3 is away")
            # Long enough for T1 and T2 to declare T3 dead, as after a pulled cable (a smoke
            # run skips the wait).
            time.sleep(max(0.0, hold_s - (time.monotonic() - cut)))
            log("mesh: healing (SIGCONT); waiting for T3 to hold every op")
            n3.daemon.popen.send_signal(signal.SIGCONT)
            healed = time.monotonic()
            target = n1.vv()
            first_op: list[float] = []
            before_heal = n3.vv().get(n1.node_id, 0)

            def caught_up() -> bool:
                got = n3.vv()
                if not first_op and got.get(n1.node_id, 0) > before_heal:
                    first_op.append(time.monotonic())
                return all(got.get(o, 0) >= s for o, s in target.items())

            wait(caught_up, "T3 catching up", timeout=120, step=0.005)
            heal_s = time.monotonic() - healed
            start_s = (first_op[0] - healed) if first_op else None
            time.sleep(0.5)
            mark = time.time()
            to3 = {n.name: _sent_to(n, n3.node_id, mark) - to3[n.name] for n in (n1, n2)}
            problems = {}
            for n in nodes:
                t = Terminal.open(n.directory)
                try:
                    problems[n.name] = t.ledger.verify()
                finally:
                    t.close()
        finally:
            t1.close()

    copy_ms, seen_ms = lat["copy_ms"], lat["seen_ms"]
    op_avg = sum(lat["op_bytes"]) / len(lat["op_bytes"])
    res: dict[str, Any] = {
        "sales": sales,
        "discovery_s": discovery_s,
        "copy_p50_ms": percentile(copy_ms, 50),
        "copy_p99_ms": percentile(copy_ms, 99),
        "copy_max_ms": max(copy_ms),
        "seen_p50_ms": percentile(seen_ms, 50),
        "seen_p99_ms": percentile(seen_ms, 99),
        "seen_max_ms": max(seen_ms),
        "sale_op_bytes": op_avg,
        "wire_bytes_per_sale_per_peer": run_wire / sales / (len(nodes) - 1),
        "wire_ratio": run_wire / op_total,
        "messages_per_sale": run_messages / sales,
        "payload_bytes_per_message": run_payload / max(run_messages, 1),
        "kernel_ratio": run_kernel / op_total,
        "idle_wire_bps_per_peer": idle_wire,
        "idle_kernel_bps_per_peer": idle_kernel,
        "backlog_ops": backlog,
        "partition_hold_s": hold_s,
        "backlog_op_bytes": backlog_bytes / backlog,
        "backlog_generate_s": gen_s,
        "heal_s": heal_s,
        "heal_first_op_s": start_s,
        "heal_ops_per_s": backlog / heal_s if heal_s > 0 else None,
        "heal_payload_ratio": sum(to3.values()) / backlog_bytes,
        "heal_payload_to_t3_by": {name: b / backlog_bytes for name, b in to3.items()},
        "verify_problems": sum(len(p) for p in problems.values()),
    }
    print(
        table(
            "mesh: 3 daemons on loopback (real mDNS, CurveZMQ, synchronous=FULL)",
            ["figure", "p50", "p99", "max"],
            [
                ["sale -> 2nd durable copy (ack seen by seller), ms"]
                + [fmt(res[f"copy_{k}_ms"], ".2f") for k in ("p50", "p99", "max")],
                ["sale -> visible on a peer, ms"]
                + [fmt(res[f"seen_{k}_ms"], ".2f") for k in ("p50", "p99", "max")],
            ],
            [
                f"{sales:,} sales rung at T1 one after another (1-3 lines, 1/3 with a loyalty "
                f"customer), {op_avg:,.0f} B per sale op; discovery took {discovery_s:.1f} s",
            ],
        )
    )
    print(
        table(
            "mesh: bytes and the healed partition",
            ["figure", "value"],
            [
                [
                    "wire bytes per op / op bytes (transport, + CURVE framing)",
                    fmt(res["wire_ratio"], ".2f"),
                ],
                [
                    "TCP payload per op / op bytes (kernel, all ZMTP)",
                    fmt(res["kernel_ratio"], ".2f"),
                ],
                ["idle B/s per peer pair (transport)", fmt(idle_wire, ".0f")],
                ["idle B/s per peer pair (kernel)", fmt(idle_kernel, ".0f")],
                [f"heal with {backlog:,}-op backlog, s", fmt(heal_s, ".2f")],
                ["  first backlog op on T3 after heal, s", fmt(start_s, ".2f")],
                ["  ops/s while catching up", fmt(res["heal_ops_per_s"])],
                ["  payload sent to T3 / backlog bytes", fmt(res["heal_payload_ratio"], ".2f")],
                ["    of which by T1 (the origin)", fmt(res["heal_payload_to_t3_by"]["T1"], ".2f")],
                ["    of which by T2 (forwarding)", fmt(res["heal_payload_to_t3_by"]["T2"], ".2f")],
                ["verify problems on the three nodes", fmt(res["verify_problems"], "d")],
            ],
            [
                "a peer pair is two daemons (both directions, both connections); the wire ratio "
                "counts every message of the run (ops, acks, pings) against each op's body + "
                "signature once per peer that needed it",
                f"backlog: one stock delivery per SKU, then sales like the ones above "
                f"({res['backlog_op_bytes']:,.0f} B an op on average), signed at "
                f"{backlog / gen_s:,.0f} ops/s",
            ],
        )
    )
    res["targets"] = [
        _target("mesh: 2nd copy p99", res["copy_p99_ms"], TARGET_COPY_P99_MS, "ms", lower=True),
        _target("mesh: propagation p99", res["seen_p99_ms"], TARGET_COPY_P99_MS, "ms", lower=True),
        _target(f"mesh: heal {backlog:,} backlog", heal_s, TARGET_HEAL_S, "s", lower=True),
        _target(
            "mesh: wire bytes per op bytes",
            res["wire_ratio"] * 100,
            TARGET_WIRE_RATIO * 100,
            "%",
            lower=True,
        ),
        _target("mesh: idle per peer", idle_kernel, TARGET_IDLE_BPS, "B/s", lower=True),
    ]
    return res


def _sale_payloads(t: Terminal) -> list[dict[str, Any]]:
    rows = t.ledger.conn.execute(
        "SELECT body, sig FROM ops WHERE origin = ? AND kind = 'sale' ORDER BY seq DESC LIMIT 200",
        (t.node_id,),
    ).fetchall()
    payloads = [dict(decode_body(t.ledger.bodies.restore(body), sig).payload) for body, sig in rows]
    if not payloads:
        raise BenchError("mesh bench: no sale to copy into the backlog")
    return payloads
