"""The `hq` bench section: how fast HQ takes in a store's backlog, on SQLite and on PostgreSQL.

The store's ops are the ledger bench's generated store (catalogue plus `--merge-ops` sales over
three tills, cached under bench/out/cache), certified by a store key enrolled at HQ. Each backend
is measured twice on a fresh database: `storage` calls `HQStorage.log.ingest` directly (checks, chain
verification with one signature per run, fold, inserts and view upserts in one transaction per
batch), and `http` pushes the same batches through a real uvicorn server with the relay client
(signing, msgpack, HTTP on loopback; client and server share this process and its GIL). A second
push of everything measures the cost of a relay re-sending what HQ already holds.

PostgreSQL runs in a throwaway cluster started here (tests/pg.py) with its durable defaults
(fsync on); SQLite runs with synchronous=FULL, as `meshpos hq serve` does.
"""

from __future__ import annotations

import argparse
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench.common import Stopwatch, fmt, log, rate, table
from bench.ledger_bench import STORE, _target, store_ledger
from meshpos.core.ops import Signer, pack
from meshpos.domain.enrolment import EnrolRequest, NodeRecord, issue
from meshpos.hq import keys
from meshpos.hq.client import HQClient
from meshpos.hq.storage import HQStorage, open_storage
from meshpos.ledger.store import Ledger

BATCH = 2_000
NOW_MS = 1_770_000_000_000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _certified(nodes: list[NodeRecord], store_key: Signer) -> list[NodeRecord]:
    out = []
    for n in nodes:
        req = EnrolRequest(STORE, n.node_id, n.name, n.public_key, b"0" * 40, b"")
        cert = issue(store_key, STORE, req, now_ms=NOW_MS)
        out.append(NodeRecord(n.node_id, n.public_key, STORE, n.name, cert))
    return out


@contextmanager
def _backend(name: str, tmp: Path) -> Iterator[Callable[[], str]]:
    """Yields a function that returns a fresh database URL (or SQLite path) per call."""
    if name == "sqlite":
        count = iter(range(1_000))
        yield lambda: str(tmp / f"hq-{next(count)}.db")
        return
    from tests.pg import cluster, unavailable

    reason = unavailable()
    if reason:
        raise RuntimeError(reason)
    with cluster(durable=True) as c:
        yield c.create_db


def _enrol(storage: HQStorage, store_key: Signer, nodes: list[NodeRecord]) -> None:
    storage.enrolment.add_store(
        STORE, "bench store", store_key.public_key, key_at_hq=False, now_ms=NOW_MS
    )
    storage.enrolment.add_nodes(STORE, [n.cert for n in nodes if n.cert])


def _storage_run(url: str, wires: list[bytes], nodes: list[NodeRecord], store_key: Signer,
                 vv: dict[str, int]) -> dict[str, Any]:  # fmt: skip
    storage = open_storage(url)
    try:
        _enrol(storage, store_key, nodes)
        fresh, again = Stopwatch(), Stopwatch()
        applied = dupes = 0
        cpu = time.process_time()
        for lo in range(0, len(wires), BATCH):
            with fresh:
                applied += storage.log.ingest(STORE, wires[lo : lo + BATCH], (), NOW_MS).applied
        cpu = time.process_time() - cpu
        for lo in range(0, len(wires), BATCH):
            with again:
                dupes += storage.log.ingest(STORE, wires[lo : lo + BATCH], (), NOW_MS).duplicates
        ok = storage.log.vv(STORE) == vv and applied == dupes == len(wires)
        return {"ops_s": rate(applied, fresh.seconds), "dup_ops_s": rate(dupes, again.seconds),
                "seconds": fresh.seconds, "complete": ok, "cpu_ops_s": rate(applied, cpu)}  # fmt: skip
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


def hq_section(args: argparse.Namespace, results: dict[str, Any]) -> dict[str, Any]:
    path, _ = store_ledger(args.out, args.merge_ops, args.seed, use_cache=not args.no_cache)
    source = Ledger(path, STORE)
    try:
        raw = source.raw_since({})
        vv = source.vv()
        plain = source.nodes()
    finally:
        source.close()
    wires = [pack([b, s]) for _, _, b, s in raw]
    store_key = Signer.from_seed(b"meshpos-bench-hq-store-key")
    nodes = _certified(plain, store_key)
    relay = Signer.from_seed(f"meshpos-bench-{args.seed}-T1".encode())
    log(f"hq: {len(wires):,} ops from {len(nodes)} nodes, batches of {BATCH:,}")
    out: dict[str, Any] = {"ops": len(wires), "batch": BATCH, "backends": {}, "targets": []}
    rows = []
    with tempfile.TemporaryDirectory(dir=args.out, prefix="hq-") as tmp_name:
        tmp = Path(tmp_name)
        for backend in ("sqlite", "postgresql"):
            try:
                ctx = _backend(backend, tmp)
                with ctx as fresh_db:
                    log(f"hq: {backend}: storage ingest")
                    st = _storage_run(fresh_db(), wires, nodes, store_key, vv)
                    log(f"hq: {backend}: {fmt(st['ops_s'])} ops/s; now over HTTP")
                    http = _http_run(fresh_db(), tmp, wires, nodes, store_key, relay, vv)
            except RuntimeError as exc:
                log(f"hq: {backend} skipped: {exc}")
                out["backends"][backend] = {"skipped": str(exc)}
                continue
            out["backends"][backend] = {"storage": st, "http": http}
            label = "SQLite" if backend == "sqlite" else "PostgreSQL"
            for mode, r in (("storage", st), ("http", http)):
                rows.append([f"{label} {mode}", fmt(r["ops_s"]), fmt(r.get("cpu_ops_s")),
                             fmt(r["dup_ops_s"]), fmt(r["seconds"], ".2f"),
                             fmt(r["complete"])])  # fmt: skip
            out["targets"].append(
                _target(f"HQ ingest, {label} (HTTP)", http["ops_s"], 10_000, "ops/s")
            )
            out["targets"].append(
                _target(f"HQ ingest, {label} (storage)", st["ops_s"], 10_000, "ops/s")
            )
    print(
        table(
            "HQ ingest",
            ["backend", "new ops/s", "per CPU-s", "re-sent ops/s", "seconds", "complete"],
            rows,
            [
                f"{len(wires):,} ops in batches of {BATCH:,}; one transaction per batch",
                "re-sent: the same batches again, all duplicates (a relay retrying)",
                "per CPU-s: new ops per second of this process's CPU (storage runs only): the "
                "rate without other load on the machine's 2 cores",
            ],
        )
    )
    return out
