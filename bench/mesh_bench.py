"""The store mesh's figures: three real `meshpos node run` daemons, each on its own "host".

Why real daemons in their own processes rather than Daemon objects in threads: a store runs one
daemon per terminal, each with its own interpreter, so latencies here include what they include
in a shop (the CurveZMQ hop, the peer's durable `synchronous=FULL` ingest, the daemon noticing a
commit made by another process) and none of the GIL contention three daemons in one process
would add. Sales are rung from this process through `Terminal.sell`, exactly as `meshpos sell`
writes them.

Each daemon runs in a Linux network namespace of its own, joined to the others by a veth pair on
a bridge (bench/netns.py, the lab the namespace tests use), listening on its namespace's address;
they find each other over real mDNS across the bridge. Without namespaces (not root, no `ip`, or
the kernel refuses) the daemons run on 127.0.0.1 instead, and the partition (4) is skipped and
says why: freezing a process is not a partition, so there is no stand-in.

Measured:
1. sale commit -> second durable copy: until the ringing node's `peer_acks` shows a peer's ack
   (what `meshpos sell` waits for before it says "2 copies"), and sale commit -> visible on each
   peer (the peer's durable commit: propagation);
2. bytes on the wire per op during that run, against the op's encoded size (body + signature),
   counted twice: by the daemons' transport (payload, plus CurveZMQ framing per `wire_size`) and
   by the kernel (`ss` in each daemon's namespace: TCP payload of every connection to that
   daemon's port, so ZMTP handshakes and heartbeats count too);
3. idle traffic per peer per second, both counts;
4. a partition healed with a backlog: T3's cable is pulled (the host end of its veth taken down:
   its packets go nowhere and nothing reaches it, so TCP has nothing to buffer into), the bench
   waits until T1, T2 and T3 have each declared the others gone, rings the backlog at T1 (it
   syncs to T2), then plugs the cable back in: the time from the heal until T3 holds every op,
   how T3 noticed (its log's first link and sync session up after the heal), and the bytes the
   two others sent it. `--quick` does the same with a smaller backlog.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import sqlite3
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from bench import netns
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
from meshpos.demo.hq import log_lines
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
    host: netns.Node | None  # its namespace, or None on the host's loopback
    endpoint: str = ""  # where its daemon listens, as its peers' logs name it

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


def _kernel_bytes(nodes: Sequence[Node], ports: Sequence[int]) -> int:
    """TCP payload bytes of every established connection to a daemon's ROUTER port (both
    directions, counted at the ROUTER's end, so each connection once), read by `ss` in the
    daemon's own namespace."""
    total = 0
    for node, port in zip(nodes, ports, strict=True):
        argv = ["ss", "-tinH", "state", "established"]
        out = subprocess.run(
            node.host.command(argv) if node.host else argv,
            capture_output=True,
            text=True,
            timeout=30,
        ).stdout
        lines = out.splitlines()
        for i, line in enumerate(lines):
            parts = line.split()
            if len(parts) < 4 or i + 1 >= len(lines) or not parts[2].endswith(f":{port}"):
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
def _mesh(base: Path, lab: netns.Lab | None) -> Iterator[list[Node]]:
    """The three daemons, in the lab's namespaces (listening on each one's address) or, without
    a lab, on loopback; stopped when the block ends, whatever happened."""
    dirs = _setup(base)
    daemons: list[Daemon] = []
    nodes: list[Node] = []
    try:
        for i, d in enumerate(dirs):
            host = lab[i] if lab is not None else None
            daemon = (
                Daemon(d, ["--host", host.ip], prefix=host.command([]))
                if host is not None
                else Daemon(d)
            )
            daemons.append(daemon)
            daemon.start()
            t = Terminal.open(d)
            node_id = t.node_id
            t.close()
            conn = sqlite3.connect(d / "meshpos.db", timeout=30, isolation_level=None)
            nodes.append(Node(d, node_id, daemon, conn, host))
        yield nodes
    finally:
        for daemon in daemons:
            daemon.terminate()
        for daemon in daemons:
            daemon.stop()
        for node in nodes:
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


def _peer_up(node: Node, other: Node) -> bool | None:
    """Whether `node`'s daemon has a sync session with `other` (None: it does not know it)."""
    for peer in node.status().get("peers", []):
        if peer["node_id"] == other.node_id:
            return bool(peer["up"])
    return None


def _first_log(node: Node, text: str, after: float) -> float | None:
    """Seconds from `after` (wall time) to the first line of `node`'s daemon log containing
    `text`, or None."""
    lines = log_lines([node.directory], text, after)
    return lines[0][0] - after if lines else None


def _cpu_s(node: Node) -> float:
    """CPU seconds (user + system) its daemon has used so far."""
    times = psutil.Process(node.daemon.pid).cpu_times()
    return float(times.user + times.system)


def _first_of(seconds: Sequence[float | None]) -> float | None:
    return min((s for s in seconds if s is not None), default=None)


def _partition_heal(
    nodes: list[Node], lab: netns.Lab, t1: Terminal, backlog: int
) -> dict[str, Any]:
    """Pull T3's cable, ring `backlog` ops at T1 while it is away, plug it back in: the figures of
    the heal (see the module's docstring)."""
    n1, n2, n3 = nodes
    others = (n1, n2)
    # Counted from before the cut: what T1 queued for T3 before noticing it had gone sits in
    # socket buffers and reaches T3 after the heal, or is lost and sent again.
    mark = time.time()
    to3 = {n.name: _sent_to(n, n3.node_id, mark) for n in others}
    log(f"mesh: T3's cable pulled (host end of its veth down: {lab[2].host_veth})")
    cut_wall, cut = time.time(), time.monotonic()
    lab[2].partition()
    wait(
        lambda: (
            all(_peer_up(n, n3) is False for n in others)
            and all(_peer_up(n3, n) is False for n in others)
        ),
        "T1, T2 and T3 noticing the partition",
    )
    detect_s = time.monotonic() - cut
    down_by = {n.name: _first_log(n, "is down", cut_wall) for n in nodes}
    log(f"mesh: partition noticed by every side after {detect_s:.2f} s; ringing a backlog of "
        f"{backlog:,} ops at T1")  # fmt: skip
    templates = _sale_payloads(t1)
    gen0 = time.monotonic()
    backlog_bytes = _backlog(t1, backlog, templates)
    gen_s = time.monotonic() - gen0
    wait(lambda: n1.vv() == n2.vv(), "T2 receiving the backlog while T3 is away", timeout=300)
    target = n1.vv()
    before_heal = n3.vv()
    if all(before_heal.get(o, 0) >= s for o, s in target.items()):
        raise BenchError("mesh bench: T3 holds the backlog although it was cut off")
    partitioned_s = time.monotonic() - cut
    log("mesh: cable back in; waiting for T3 to hold every op")
    cpu0 = {n.name: _cpu_s(n) for n in nodes}
    healed_wall, healed = time.time(), time.monotonic()
    lab[2].heal()
    first_op: list[float] = []

    def caught_up() -> bool:
        got = n3.vv()
        if not first_op and got.get(n1.node_id, 0) > before_heal.get(n1.node_id, 0):
            first_op.append(time.monotonic())
        return all(got.get(o, 0) >= s for o, s in target.items())

    wait(caught_up, "T3 catching up after the heal", timeout=300, step=0.005)
    heal_s = time.monotonic() - healed
    heal_cpu = {n.name: _cpu_s(n) - cpu0[n.name] for n in nodes}
    wait(
        lambda: all(_peer_up(n3, n) for n in others) and all(_peer_up(n, n3) for n in others),
        "T3's sync sessions with T1 and T2 up again",
    )
    mark = time.time()
    to3 = {n.name: _sent_to(n, n3.node_id, mark) - to3[n.name] for n in others}
    return {
        "backlog_ops": backlog,
        "partition_how": "host end of T3's veth down (pulled cable)",
        "partition_detect_s": detect_s,
        "partition_down_logged_s": down_by,
        "partition_s": partitioned_s,
        "backlog_op_bytes": backlog_bytes / backlog,
        "backlog_generate_s": gen_s,
        "heal_s": heal_s,
        "heal_first_op_s": (first_op[0] - healed) if first_op else None,
        "heal_link_up_s": _first_of(
            [_first_log(n3, f"link to {n.node_id} at {n.endpoint} up", healed_wall) for n in others]
        ),
        "heal_session_up_s": _first_log(n3, ") is up", healed_wall),
        "heal_ops_per_s": backlog / heal_s if heal_s > 0 else None,
        "heal_cpu_s": heal_cpu,
        "heal_ops_per_t3_cpu_s": backlog / heal_cpu["T3"] if heal_cpu["T3"] > 0 else None,
        "heal_payload_ratio": sum(to3.values()) / backlog_bytes,
        "heal_payload_to_t3_by": {name: b / backlog_bytes for name, b in to3.items()},
    }


def mesh_section(args: argparse.Namespace, results: dict[str, Any]) -> dict[str, Any]:
    sales, backlog = args.mesh_sales, args.mesh_backlog
    idle_s = 2.0 if args.quick else 10.0
    with contextlib.ExitStack() as stack:
        tmp = stack.enter_context(tempfile.TemporaryDirectory(dir=args.out, prefix="mesh-"))
        lab: netns.Lab | None = None
        skipped = netns.unavailable_reason()
        if skipped is None:
            try:
                lab = stack.enter_context(netns.lab(len(NAMES)))
            except netns.NetnsUnavailable as exc:
                skipped = str(exc)
        if lab is not None:
            where = f"in 3 network namespaces on a bridge ({netns.SUBNET}.0/{netns.PREFIX_LEN})"
        else:
            where = "on 127.0.0.1"
            log(f"mesh: NO NETWORK NAMESPACES ({skipped}): daemons on loopback, and the "
                "partition/heal figures are SKIPPED (a frozen process is no partition)")  # fmt: skip
        nodes = stack.enter_context(_mesh(Path(tmp), lab))
        n1 = nodes[0]
        log(f"mesh: three daemons {where}, waiting for mDNS discovery and the catalogue")
        started = time.monotonic()
        wait(lambda: all(n.status().get("peers_up") == 2 for n in nodes), "discovery")
        wait(lambda: _converged(nodes), "the catalogue reaching every node")
        discovery_s = time.monotonic() - started
        ports = [int(n.status()["port"]) for n in nodes]
        for n, port in zip(nodes, ports, strict=True):
            n.endpoint = f"tcp://{n.host.ip if n.host else '127.0.0.1'}:{port}"
        t1 = stack.enter_context(contextlib.closing(Terminal.open(n1.directory)))

        # 1 + 2: latency and bytes per op, ringing sales at T1 one after another.
        log(f"mesh: ringing {sales:,} sales at T1, each until both peers hold it")
        mark = time.time()
        before, k_before = _traffic(nodes, mark), _kernel_bytes(nodes, ports)
        lat = _latency(nodes, t1, sales, args.seed)
        wait(lambda: _converged(nodes), "the sales settling")
        time.sleep(0.3)  # the last Haves
        mark = time.time()
        after, k_after = _traffic(nodes, mark), _kernel_bytes(nodes, ports)
        op_total = sum(lat["op_bytes"]) * (len(nodes) - 1)
        run_wire = after["wire"] - before["wire"]
        run_messages = after["messages"] - before["messages"]
        run_payload = after["bytes"] - before["bytes"]
        run_kernel = k_after - k_before

        # 3: idle.
        log(f"mesh: idle for {idle_s:.0f} s")
        mark = time.time()
        idle0, k_idle0, t_idle0 = _traffic(nodes, mark), _kernel_bytes(nodes, ports), time.time()
        time.sleep(idle_s)
        mark = time.time()
        idle1, k_idle1 = _traffic(nodes, mark), _kernel_bytes(nodes, ports)
        idle_span = time.time() - t_idle0
        pairs = len(nodes) * (len(nodes) - 1) // 2
        idle_wire = (idle1["wire"] - idle0["wire"]) / pairs / idle_span
        idle_kernel = (k_idle1 - k_idle0) / pairs / idle_span

        # 4: partition with a backlog, then heal.
        heal = _partition_heal(nodes, lab, t1, backlog) if lab is not None else None
        problems = {}
        for n in nodes:
            t = Terminal.open(n.directory)
            try:
                problems[n.name] = t.ledger.verify()
            finally:
                t.close()

    copy_ms, seen_ms = lat["copy_ms"], lat["seen_ms"]
    op_avg = sum(lat["op_bytes"]) / len(lat["op_bytes"])
    res: dict[str, Any] = {
        "sales": sales,
        "where": where,
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
        "partition": heal if heal is not None else {"skipped": skipped},
        "verify_problems": sum(len(p) for p in problems.values()),
    }
    print(
        table(
            f"mesh: 3 daemons {where} (real mDNS, CurveZMQ, synchronous=FULL)",
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
    rows = [
        [
            "wire bytes per op / op bytes (transport, + CURVE framing)",
            fmt(res["wire_ratio"], ".2f"),
        ],
        ["TCP payload per op / op bytes (kernel, all ZMTP)", fmt(res["kernel_ratio"], ".2f")],
        ["idle B/s per peer pair (transport)", fmt(idle_wire, ".0f")],
        ["idle B/s per peer pair (kernel)", fmt(idle_kernel, ".0f")],
    ]
    notes = [
        "a peer pair is two daemons (both directions, both connections); the wire ratio counts "
        "every message of the run (ops, acks, pings) against each op's body + signature once per "
        "peer that needed it",
    ]
    if heal is not None:
        by = heal["heal_payload_to_t3_by"]
        rows += [
            ["T3's cable pulled -> every side noticed, s", fmt(heal["partition_detect_s"], ".2f")],
            [f"heal with {backlog:,}-op backlog: cable in -> T3 holds every op, s",
             fmt(heal["heal_s"], ".2f")],
            ["  T3's first link up after the heal, s", fmt(heal["heal_link_up_s"], ".2f")],
            ["  T3's first sync session up after the heal, s",
             fmt(heal["heal_session_up_s"], ".2f")],
            ["  first backlog op on T3 after the heal, s", fmt(heal["heal_first_op_s"], ".2f")],
            ["  ops/s from the heal to caught up", fmt(heal["heal_ops_per_s"])],
            ["  ops per CPU-second of T3's daemon", fmt(heal["heal_ops_per_t3_cpu_s"])],
            ["  CPU s of the daemons meanwhile (T1 / T2 / T3)",
             " / ".join(f"{heal['heal_cpu_s'][n]:.1f}" for n in NAMES)],
            ["  payload sent to T3 / backlog bytes", fmt(heal["heal_payload_ratio"], ".2f")],
            ["    of which by T1 (the origin)", fmt(by["T1"], ".2f")],
            ["    of which by T2 (forwarding)", fmt(by["T2"], ".2f")],
        ]  # fmt: skip
        notes.append(
            f"partition: {heal['partition_how']} for {heal['partition_s']:.1f} s; backlog: one "
            f"stock delivery per SKU, then sales like the ones above "
            f"({heal['backlog_op_bytes']:,.0f} B an op on average), signed at "
            f"{backlog / heal['backlog_generate_s']:,.0f} ops/s"
        )
    else:
        rows.append(["partition and heal", f"SKIPPED: {skipped}"])
    rows.append(["verify problems on the three nodes", fmt(res["verify_problems"], "d")])
    print(table("mesh: bytes and the healed partition", ["figure", "value"], rows, notes))
    res["targets"] = [
        _target("mesh: 2nd copy p99", res["copy_p99_ms"], TARGET_COPY_P99_MS, "ms", lower=True),
        _target("mesh: propagation p99", res["seen_p99_ms"], TARGET_COPY_P99_MS, "ms", lower=True),
        _target(
            "mesh: TCP payload per op byte, sales run",
            res["kernel_ratio"] * 100,
            TARGET_WIRE_RATIO * 100,
            "%",
            lower=True,
        ),
        _target("mesh: idle per peer pair (TCP)", idle_kernel, TARGET_IDLE_BPS, "B/s", lower=True),
    ]
    if heal is not None:
        res["targets"].insert(
            2,
            _target(
                f"mesh: heal {backlog:,} backlog after a real partition",
                heal["heal_s"],
                TARGET_HEAL_S,
                "s",
                lower=True,
            ),
        )
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
