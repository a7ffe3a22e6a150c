"""The `hq` bench section: how fast HQ takes in a store's backlog, on SQLite and on PostgreSQL.

The store's ops are the ledger bench's generated store (catalogue plus `--merge-ops` sales over
three tills, cached under bench/out/cache), certified by a store key enrolled at HQ. Each backend
is measured twice on a fresh database: `storage` calls `HQStorage.log.ingest` directly (checks, chain
verification with one signature per run, fold, inserts and view upserts in one transaction per
batch), and `http` pushes the same batches through a real uvicorn server with the relay client
(signing, msgpack, HTTP on loopback; client and server share this process and its GIL). A second
push of everything measures the cost of a relay re-sending what HQ already holds.

PostgreSQL runs in a throwaway cluster started here (tests/pg.py) with its durable defaults
(fsync on); SQLite runs with synchronous=FULL, as `meshpos hq serve` does. The server shares the
machine's cores with the client, so the storage and process runs count its CPU too (`ServerCPU`,
from /proc) beside the client's: ops per CPU-second of client plus server.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench.common import BenchError, Stopwatch, fmt, load_average, log, rate, table
from bench.ledger_bench import STORE, Generator, _target, store_ledger
from meshpos.core.ops import GENESIS, Op, Signer, decode_ops, make_op, pack
from meshpos.domain.enrolment import EnrolRequest, NodeRecord, issue
from meshpos.hq import keys
from meshpos.hq.client import HQClient
from meshpos.hq.storage import HQStorage, open_storage
from meshpos.ledger.store import Ledger

BATCH = 2_000
NOW_MS = 1_770_000_000_000
SECOND_STORE = f"{STORE}-2"
PROCESS_START_S = 600
"""How long a worker waits for the others to be ready (re-signing a backlog takes seconds)."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def certified(
    nodes: Sequence[NodeRecord], store_key: Signer, store: str = STORE, now_ms: int = NOW_MS
) -> list[NodeRecord]:
    """The nodes with certificates of `store` signed by its key."""
    out = []
    for n in nodes:
        req = EnrolRequest(store, n.node_id, n.name, n.public_key, b"0" * 40, b"")
        cert = issue(store_key, store, req, now_ms=now_ms)
        out.append(NodeRecord(n.node_id, n.public_key, store, n.name, cert))
    return out


def _store_key(store: str) -> Signer:
    extra = b"" if store == STORE else store.encode()
    return Signer.from_seed(b"meshpos-bench-hq-store-key" + extra)


def resigned(ops: Sequence[Op], signers: Sequence[Signer], store: str) -> list[Op]:
    """The same ops signed again by the same nodes as ops of `store` (an op names its store in
    its signed body, so another store's backlog needs its own signatures)."""
    by_id = {s.node_id: s for s in signers}
    heads: dict[str, bytes] = {}
    out = []
    for op in ops:
        new = make_op(by_id[op.origin], store=store, seq=op.seq, hlc=op.hlc, user=op.user,
                      kind=op.kind, payload=op.payload, prev=heads.get(op.origin, GENESIS))  # fmt: skip
        heads[op.origin] = new.hash
        out.append(new)
    return out


def _source(path: Path) -> tuple[list[bytes], list[NodeRecord], dict[str, int]]:
    """The cached store's ops as wire forms, its nodes (not yet certified) and its vv."""
    source = Ledger(path, STORE)
    try:
        raw = source.raw_since({})
        return [pack([b, s]) for _, _, b, s in raw], source.nodes(), source.vv()
    finally:
        source.close()


def _backlog(path: Path, seed: int, store: str) -> list[bytes]:
    """The cached store's ops as `store`'s backlog: re-signed for any other store."""
    wires, _, _ = _source(path)
    if store == STORE:
        return wires
    return [op.wire() for op in resigned(decode_ops(wires), Generator(seed).signers, store)]


TICKS_S = os.sysconf("SC_CLK_TCK")


class ServerCPU:
    """CPU seconds the database server has used so far: the PostgreSQL postmaster and every
    process it started (backends, WAL writer, checkpointer), the ended ones through the
    postmaster's count of its reaped children, read from /proc. SQLite runs inside the client,
    whose own CPU already counts it: 0."""

    def __init__(self, pid_file: Path | None = None) -> None:
        self.pid_file = pid_file

    def seconds(self) -> float:
        if self.pid_file is None:
            return 0.0
        postmaster = int(self.pid_file.read_text().split()[0])
        ticks = 0
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                stat = (Path("/proc") / entry / "stat").read_text()
            except OSError:
                continue  # ended meanwhile: its CPU is in the postmaster's reaped children
            fields = stat.rsplit(")", 1)[1].split()
            if int(entry) == postmaster:
                ticks += sum(int(f) for f in fields[11:15])  # its own and its reaped children's
            elif int(fields[1]) == postmaster:
                ticks += int(fields[11]) + int(fields[12])
        return ticks / TICKS_S


@contextmanager
def _backend(name: str, tmp: Path) -> Iterator[tuple[Callable[[], str], ServerCPU]]:
    """Yields a function that returns a fresh database URL (or SQLite path) per call, and the
    server's CPU clock."""
    if name == "sqlite":
        count = iter(range(1_000))
        yield (lambda: str(tmp / f"hq-{next(count)}.db")), ServerCPU()
        return
    from tests.pg import cluster, unavailable

    reason = unavailable()
    if reason:
        raise RuntimeError(reason)
    with cluster(durable=True) as c:
        yield c.create_db, ServerCPU(c.data / "postmaster.pid")


def _enrol(
    storage: HQStorage, store_key: Signer, nodes: list[NodeRecord], store: str = STORE
) -> None:
    storage.enrolment.add_store(
        store, f"bench store {store}", store_key.public_key, key_at_hq=False, now_ms=NOW_MS
    )
    storage.enrolment.add_nodes(store, [n.cert for n in nodes if n.cert])


def _storage_run(url: str, server: ServerCPU, wires: list[bytes], nodes: list[NodeRecord],
                 store_key: Signer, vv: dict[str, int]) -> dict[str, Any]:  # fmt: skip
    storage = open_storage(url)
    try:
        _enrol(storage, store_key, nodes)
        fresh, again = Stopwatch(), Stopwatch()
        applied = dupes = 0
        load = load_average()
        cpu, server_cpu = time.process_time(), server.seconds()
        for lo in range(0, len(wires), BATCH):
            with fresh:
                applied += storage.log.ingest(STORE, wires[lo : lo + BATCH], (), NOW_MS).applied
        cpu, server_cpu = time.process_time() - cpu, server.seconds() - server_cpu
        for lo in range(0, len(wires), BATCH):
            with again:
                dupes += storage.log.ingest(STORE, wires[lo : lo + BATCH], (), NOW_MS).duplicates
        ok = storage.log.vv(STORE) == vv and applied == dupes == len(wires)
        return {"ops_s": rate(applied, fresh.seconds), "dup_ops_s": rate(dupes, again.seconds),
                "seconds": fresh.seconds, "complete": ok, "cpu_ops_s": rate(applied, cpu),
                "client_cpu_s": cpu, "server_cpu_s": server_cpu,
                "all_cpu_ops_s": rate(applied, cpu + server_cpu), "load_average": load}  # fmt: skip
    finally:
        storage.close()


def _http_run(url: str, tmp: Path, wires: list[bytes], nodes: list[NodeRecord],
              store_key: Signer, relay: Signer, vv: dict[str, int]) -> dict[str, Any]:  # fmt: skip
    import uvicorn

    from meshpos.hq.app import create_app
    from meshpos.hq.service import HQService

    cfg = keys.init_hq(Path(tempfile.mkdtemp(dir=tmp, prefix="hqdir-")), db=url)
    service = HQService(cfg, open_storage(cfg.db_url))
    _enrol(service.storage, store_key, nodes)
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(service, sweep_s=0),
            host="127.0.0.1",
            port=port,
            log_level="warning",
            log_config=None,
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the bench HQ server did not start")
        time.sleep(0.02)
    cert = next(n.cert for n in nodes if n.node_id == relay.node_id)
    fresh, again = Stopwatch(), Stopwatch()
    applied = dupes = sent = 0
    try:
        with HQClient(f"http://127.0.0.1:{port}", relay, STORE, cert=cert, timeout=120) as c:
            for lo in range(0, len(wires), BATCH):
                chunk = wires[lo : lo + BATCH]
                sent += len(pack({"ops": chunk, "nodes": []}))
                with fresh:
                    applied += c.push(chunk).applied
            for lo in range(0, len(wires), BATCH):
                with again:
                    dupes += c.push(wires[lo : lo + BATCH]).duplicates
            ok = c.vv() == vv and applied == dupes == len(wires)
    finally:
        server.should_exit = True
        thread.join(30)
    return {"ops_s": rate(applied, fresh.seconds), "dup_ops_s": rate(dupes, again.seconds),
            "seconds": fresh.seconds, "mb_per_s": rate(sent / 1e6, fresh.seconds),
            "complete": ok}  # fmt: skip


def _ingest_worker(url: str, path: Path, seed: int, store: str, start: Any, results: Any) -> None:
    """One HQ process: ingest one store's backlog into the shared database once every worker
    is ready, and report (store, applied, sent, start, end, CPU seconds) or an error."""
    try:
        wires = _backlog(path, seed, store)
        storage = open_storage(url)
        try:
            start.wait(PROCESS_START_S)
            t0, cpu = time.perf_counter(), time.process_time()
            applied = 0
            for lo in range(0, len(wires), BATCH):
                applied += storage.log.ingest(store, wires[lo : lo + BATCH], (), NOW_MS).applied
            end, cpu = time.perf_counter(), time.process_time() - cpu
        finally:
            storage.close()
        results.put((store, applied, len(wires), t0, end, cpu))
    except BaseException as exc:
        results.put((store, f"{type(exc).__name__}: {exc}"))
        raise


def _process_run(
    url: str, server: ServerCPU, path: Path, seed: int, stores: tuple[str, ...]
) -> dict[str, Any]:
    """One HQ process per store, each ingesting its store's backlog into one fresh database at
    the same time (separate processes: no shared GIL, pool or lock in memory). The aggregate is
    every op over the time from the first start to the last end (perf_counter is the system's
    monotonic clock, the same in every process). The server's CPU is counted from before the
    workers start to after they end (their set-up's few statements included)."""
    storage = open_storage(url)
    try:
        _, plain, vv = _source(path)
        for store in stores:
            _enrol(storage, _store_key(store), certified(plain, _store_key(store), store), store)
        server_cpu = server.seconds()
        ctx = multiprocessing.get_context("spawn")
        start, results = ctx.Barrier(len(stores)), ctx.Queue()
        procs = [
            ctx.Process(target=_ingest_worker, args=(url, path, seed, s, start, results))
            for s in stores
        ]
        for proc in procs:
            proc.start()
        got = []
        try:
            for _ in stores:
                item = results.get(timeout=PROCESS_START_S + 600)
                if len(item) == 2:
                    raise BenchError(f"HQ ingest process for store {item[0]} failed: {item[1]}")
                got.append(item)
        finally:
            for proc in procs:
                proc.join(60)
                if proc.is_alive():
                    proc.terminate()
        server_cpu = server.seconds() - server_cpu
        complete = all(a == n for _, a, n, _, _, _ in got) and all(
            storage.log.vv(s) == vv for s in stores
        )
    finally:
        storage.close()
    ops = sum(a for _, a, _, _, _, _ in got)
    wall = max(e for *_, e, _ in got) - min(t for *_, t, _, _ in got)
    return {"processes": len(stores), "ops": ops, "seconds": wall, "ops_s": rate(ops, wall),
            "per_process_ops_s": [rate(a, e - t) for _, a, _, t, e, _ in got],
            "cpu_ops_s": rate(ops, sum(c for *_, c in got)), "server_cpu_s": server_cpu,
            "all_cpu_ops_s": rate(ops, sum(c for *_, c in got) + server_cpu),
            "complete": complete, "load_average": load_average()}  # fmt: skip


def hq_section(args: argparse.Namespace, results: dict[str, Any]) -> dict[str, Any]:
    path, _ = store_ledger(args.out, args.merge_ops, args.seed, use_cache=not args.no_cache)
    wires, plain, vv = _source(path)
    store_key = _store_key(STORE)
    nodes = certified(plain, store_key)
    relay = Signer.from_seed(f"meshpos-bench-{args.seed}-T1".encode())
    log(f"hq: {len(wires):,} ops from {len(nodes)} nodes, batches of {BATCH:,}")
    out: dict[str, Any] = {"ops": len(wires), "batch": BATCH, "backends": {}, "targets": []}
    rows, proc_rows = [], []
    with tempfile.TemporaryDirectory(dir=args.out, prefix="hq-") as tmp_name:
        tmp = Path(tmp_name)
        for backend in ("sqlite", "postgresql"):
            try:
                ctx = _backend(backend, tmp)
                with ctx as (fresh_db, server):
                    log(f"hq: {backend}: storage ingest")
                    st = _storage_run(fresh_db(), server, wires, nodes, store_key, vv)
                    log(f"hq: {backend}: {fmt(st['ops_s'])} ops/s; now over HTTP")
                    http = _http_run(fresh_db(), tmp, wires, nodes, store_key, relay, vv)
                    procs = []
                    for stores in ((STORE,), (STORE, SECOND_STORE)):
                        log(f"hq: {backend}: {len(stores)} HQ process(es), one store each")
                        procs.append(_process_run(fresh_db(), server, path, args.seed, stores))
            except RuntimeError as exc:
                log(f"hq: {backend} skipped: {exc}")
                out["backends"][backend] = {"skipped": str(exc)}
                continue
            out["backends"][backend] = {"storage": st, "http": http, "processes": procs}
            label = "SQLite" if backend == "sqlite" else "PostgreSQL"
            per_process = 10_000 if backend == "sqlite" else 30_000
            for r in procs:
                proc_rows.append([f"{label}", str(r["processes"]), fmt(r["ops"]),
                                  fmt(r["ops_s"]), " / ".join(fmt(v) for v in r["per_process_ops_s"]),
                                  fmt(r["cpu_ops_s"]), fmt(r["all_cpu_ops_s"]),
                                  fmt(r["seconds"], ".2f"), fmt(r["load_average"], ".2f"),
                                  fmt(r["complete"])])  # fmt: skip
            for mode, r in (("storage", st), ("http", http)):
                rows.append([f"{label} {mode}", fmt(r["ops_s"]), fmt(r.get("cpu_ops_s")),
                             fmt(r.get("all_cpu_ops_s")), fmt(r["dup_ops_s"]),
                             fmt(r["seconds"], ".2f"), fmt(r.get("load_average"), ".2f"),
                             fmt(r["complete"])])  # fmt: skip
            out["targets"].append(
                _target(f"HQ ingest, {label} (HTTP)", http["ops_s"], 10_000, "ops/s")
            )
            out["targets"].append(
                _target(f"HQ ingest, {label} (storage)", st["ops_s"], per_process, "ops/s")
            )
            if backend == "postgresql":
                one, two = procs
                out["targets"].append(
                    _target(
                        "HQ ingest, PostgreSQL, 2 processes (2 stores) above 1 process",
                        two["ops_s"],
                        one["ops_s"],
                        "ops/s",
                    )
                )
    print(
        table(
            "HQ ingest",
            [
                "backend",
                "new ops/s",
                "per CPU-s",
                "per CPU-s +server",
                "re-sent ops/s",
                "seconds",
                "load",
                "complete",
            ],
            rows,
            [
                f"{len(wires):,} ops in batches of {BATCH:,}; one transaction per batch",
                "re-sent: the same batches again, all duplicates (a relay retrying)",
                "per CPU-s: new ops per second of this process's CPU (storage runs only): the "
                "rate without other load on the machine's 2 cores",
                "per CPU-s +server: the same over this process's CPU plus the database server's "
                "(PostgreSQL's processes, from /proc; SQLite runs in the process)",
            ],
        )
    )
    print(
        table(
            "HQ ingest, several HQ processes on one database",
            [
                "backend",
                "processes",
                "ops",
                "ops/s (all)",
                "ops/s per process",
                "per CPU-s",
                "+server",
                "seconds",
                "load",
                "complete",
            ],
            proc_rows,
            [
                "each process a separate Python process ingesting its own store's backlog "
                f"(store {SECOND_STORE}: the same ops re-signed for it) into one fresh database",
                "ops/s (all): every op over first start to last end; per CPU-s: ops per second "
                "of the processes' own CPU; +server: of theirs plus the database server's",
            ],
        )
    )
    return out
