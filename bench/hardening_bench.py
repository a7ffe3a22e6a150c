"""The hardening section of `make bench` (issue 13): what strangers cost in memory, and what
encryption at rest costs a sale.

- HQ under a flood: `meshpos hq serve` as its own process; 200 unauthenticated clients, each from
  its own loopback address (127.0.0.2, .3, ...: Linux routes all of 127/8 to lo, so the per-address
  limits do not help and only the overall ones and reading nothing before the signature do), each
  posting a 16 MiB batch to an enrolled store with made-up signature headers. HQ's resident memory
  is sampled every 10 ms: before, at its peak, and once the flood is over.
- The web till inside `meshpos node run`: one 300 MiB form post to /signin (no session), sent
  chunked so no Content-Length gives it away; the daemon's memory the same way.
- A sale's commit, plain and encrypted (SQLCipher with a key file, the default of `meshpos init`),
  interleaved sale by sale in one run, so both meet the same load.

`flood` and `RssWatch` are also what tests/test_hardening_memory.py holds under a bound.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import shutil
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil

from bench.common import fmt, log, percentile, table
from bench.ledger_bench import _target, sample_rows
from meshpos.demo.processes import Process, free_port, meshpos
from meshpos.hq.wire import H_DIGEST, H_NODE, H_SIG, H_TIME
from meshpos.service.config import init_node
from meshpos.service.encryption import encrypt_new_node
from meshpos.service.terminal import Terminal

MIB = 1024 * 1024
CHUNK = 64 * 1024
HQ_CLIENTS = 200
HQ_BODY = 16 * MIB
TILL_BODY = 300 * MIB
TARGET_HQ_GROWTH_MB = 64.0
TARGET_TILL_GROWTH_MB = 32.0
TARGET_ENCRYPTED_P99_MS = 10.0  # issue 16, beside the plain p99 of the same run


# -- measuring --------------------------------------------------------------------------------------


class RssWatch:
    """Samples a process's resident memory on a thread until stopped; figures in MiB."""

    def __init__(self, pid: int, every_s: float = 0.01) -> None:
        self.proc = psutil.Process(pid)
        self.every_s = every_s
        self.before = self.peak = self._rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _rss(self) -> float:
        return float(self.proc.memory_info().rss) / MIB

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            try:
                self.peak = max(self.peak, self._rss())
            except psutil.Error:
                return

    def __enter__(self) -> RssWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.after = self._rss()
        self.peak = max(self.peak, self.after)

    @property
    def growth(self) -> float:
        return self.peak - self.before

    def figures(self, prefix: str) -> dict[str, float]:
        return {
            f"{prefix}_rss_before_mb": round(self.before, 1),
            f"{prefix}_rss_peak_mb": round(self.peak, 1),
            f"{prefix}_rss_after_mb": round(self.after, 1),
            f"{prefix}_rss_growth_mb": round(self.growth, 1),
        }


# -- the attack -------------------------------------------------------------------------------------


@dataclass
class FloodResult:
    """How a server answered a flood: status codes (0: the connection was closed with no
    answer), bytes it let the clients send, and how long it took."""

    answers: Counter[int] = field(default_factory=Counter)
    sent: int = 0
    seconds: float = 0.0


def signed_looking(path_store: str) -> dict[str, str]:
    """Signature headers a stranger can make up: a node id, the time, random signature bytes."""
    return {
        H_NODE: secrets.token_hex(6),
        H_TIME: str(int(time.time() * 1000)),
        H_SIG: secrets.token_hex(64),
        H_DIGEST: secrets.token_hex(32),
    }


async def _one(
    host: str,
    port: int,
    path: str,
    body: int,
    source: str | None,
    headers: Mapping[str, str],
    chunked: bool,
    timeout: float,
    out: FloodResult,
) -> None:
    local = (source, 0) if source else None
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(host, port, local_addr=local), timeout
        )
    except (OSError, TimeoutError):
        out.answers[-1] += 1  # could not even connect
        return
    framing = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {body}"
    extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\n{extra}"
        f"Content-Type: application/x-www-form-urlencoded\r\n{framing}\r\n\r\n"
    )
    piece = b"a" * CHUNK
    if chunked:
        piece = f"{CHUNK:x}\r\n".encode() + piece + b"\r\n"

    async def send() -> None:
        writer.write(head.encode())
        sent = 0
        while sent < body:
            writer.write(piece)
            await writer.drain()
            sent += CHUNK
            out.sent += CHUNK
        if chunked:
            writer.write(b"0\r\n\r\n")
            await writer.drain()

    sender = asyncio.ensure_future(send())
    status_line = asyncio.ensure_future(reader.readline())
    try:
        await asyncio.wait({sender, status_line}, timeout=timeout, return_when="FIRST_COMPLETED")
        if not status_line.done():
            await asyncio.wait({status_line}, timeout=timeout)
        line = status_line.result() if status_line.done() and not status_line.exception() else b""
        parts = line.split()
        out.answers[int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0] += 1
    finally:
        for task in (sender, status_line):
            task.cancel()
        await asyncio.gather(sender, status_line, return_exceptions=True)
        writer.close()
        with suppress(OSError):
            await writer.wait_closed()


def flood(
    host: str,
    port: int,
    path: str,
    *,
    clients: int,
    body: int,
    addresses: int = 1,
    headers: Mapping[str, str] | None = None,
    chunked: bool = False,
    timeout: float = 30.0,
) -> FloodResult:
    """`clients` connections at once, each trying to post `body` bytes to `path`; with
    `addresses` > 1 they come from that many loopback addresses (127.0.0.2 and up)."""
    out = FloodResult()

    def source(i: int) -> str | None:
        n = i % addresses + 2
        return f"127.0.{n // 256}.{n % 256}" if addresses > 1 else None

    async def main() -> None:
        clients_ = (
            _one(host, port, path, body, source(i), headers or {}, chunked, timeout, out)
            for i in range(clients)
        )
        await asyncio.gather(*clients_)

    t0 = time.perf_counter()
    asyncio.run(main())
    out.seconds = time.perf_counter() - t0
    return out


# -- the servers ------------------------------------------------------------------------------------


def wait_http(url: str, proc: Process, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if not proc.running():
            raise RuntimeError(f"{proc.label} exited: {proc.log_path.read_text()[-2000:]}")
        try:
            if httpx.get(url, timeout=1).status_code < 500:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{url} did not answer in {timeout:.0f} s")
        time.sleep(0.05)


@contextmanager
def served(args: list[str], log_path: Path, port: int, probe: str) -> Iterator[tuple[Process, str]]:
    """`meshpos ARGS` in the background until it answers `probe`; (process, base url)."""
    proc = Process(args, log_path, label=" ".join(args[-4:-2])).start()
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(url + probe, proc)
        yield proc, url
    finally:
        proc.stop()


@contextmanager
def hq_process(base: Path, store: str = "FLOOD") -> Iterator[tuple[Process, str]]:
    """`meshpos hq serve` on a free loopback port, with one enrolled store; (process, url)."""
    directory = base / "hq"
    meshpos("hq", "init", "--dir", str(directory))
    meshpos("hq", "enroll-store", store, "--dir", str(directory))
    port = free_port()
    args = ["hq", "serve", "--dir", str(directory), "--port", str(port)]
    with served(args, base / "hq.log", port, "/v1/health") as out:
        yield out


@contextmanager
def till_daemon(base: Path) -> Iterator[tuple[Process, str]]:
    """`meshpos node run` with the web till on a free loopback port; (process, url)."""
    directory = base / "node"
    meshpos("--dir", str(directory), "init", "--store", "FLOOD", "--name", "T1")
    meshpos("--dir", str(directory), "store", "init")
    port = free_port()
    with open(directory / "meshpos.toml", "a") as fh:
        fh.write(f"\n[web]\nport = {port}\n\n[mesh]\ndiscovery = false\n")
    args = ["--dir", str(directory), "node", "run"]
    with served(args, directory / "daemon.log", port, "/signin") as out:
        yield out


def hq_flood(base: Path, clients: int = HQ_CLIENTS, body: int = HQ_BODY) -> dict[str, Any]:
    """HQ's memory under `clients` unauthenticated posts of `body` bytes each."""
    store = "FLOOD"
    with hq_process(base, store) as (proc, url):
        port = int(url.rsplit(":", 1)[1])
        path = f"/v1/stores/{store}/ops"
        with RssWatch(proc.pid) as watch:
            result = flood("127.0.0.1", port, path, clients=clients, body=body,
                           addresses=clients, headers=signed_looking(store))  # fmt: skip
        healthy = httpx.get(url + "/v1/health", timeout=5).status_code == 200
    return {
        "hq_clients": clients,
        "hq_body_mb": body / MIB,
        **watch.figures("hq"),
        "hq_answers": dict(sorted(result.answers.items())),
        "hq_accepted_mb": round(result.sent / MIB, 1),
        "hq_flood_s": round(result.seconds, 2),
        "hq_healthy_after": healthy,
    }


def till_post(base: Path, body: int = TILL_BODY) -> dict[str, Any]:
    """The daemon's memory after one chunked post of `body` bytes to the till's /signin."""
    with till_daemon(base) as (proc, url):
        port = int(url.rsplit(":", 1)[1])
        with RssWatch(proc.pid) as watch:
            result = flood("127.0.0.1", port, "/signin", clients=1, body=body, chunked=True)
        healthy = httpx.get(url + "/signin", timeout=5).status_code == 200
    return {
        "till_body_mb": body / MIB,
        **watch.figures("till"),
        "till_answers": dict(sorted(result.answers.items())),
        "till_accepted_mb": round(result.sent / MIB, 1),
        "till_healthy_after": healthy,
    }


# -- encryption at rest -----------------------------------------------------------------------------


def commit_cost(base: Path, sales: int) -> dict[str, Any]:
    """Per-sale commit latency (ms) on a plain node and an encrypted one, interleaved sale by sale
    (which goes first alternates), so both see the same load, disk and page cache."""
    out: dict[str, Any] = {}
    rows = sample_rows()
    skus = [r.sku for r in rows[:50]]
    labels = ("plain", "encrypted")
    terminals: dict[str, Terminal] = {}
    times: dict[str, list[float]] = {label: [] for label in labels}
    try:
        for label in labels:
            cfg = init_node(base / label, "COST", "T1")
            if label == "encrypted":
                encrypt_new_node(cfg)
            terminals[label] = Terminal.open(base / label)
            terminals[label].import_catalog(rows)
        for i in range(sales):
            for label in labels if i % 2 == 0 else labels[::-1]:
                t0 = time.perf_counter()
                terminals[label].sell([(skus[i % len(skus)], 1)], allow_oversell=True)
                times[label].append((time.perf_counter() - t0) * 1000)
    finally:
        for t in terminals.values():
            t.close()
    for label in labels:
        out[f"{label}_p50_ms"] = percentile(times[label], 50)
        out[f"{label}_p99_ms"] = percentile(times[label], 99)
        out[f"{label}_sales_per_s"] = sales / (sum(times[label]) / 1000)
    out["encryption_cost"] = out["encrypted_p50_ms"] / out["plain_p50_ms"]
    out["commit_load_average"] = os.getloadavg()[0]
    return out


def hardening_section(args: argparse.Namespace, results: dict[str, Any]) -> dict[str, Any]:
    base = Path(tempfile.mkdtemp(prefix="meshpos-hardening-"))
    try:
        out: dict[str, Any] = {}
        out.update(hq_flood(base / "flood"))
        log(f"HQ flood: {out['hq_answers']}, peak +{out['hq_rss_growth_mb']:.1f} MiB")
        out.update(till_post(base / "till"))
        log(f"till post: {out['till_answers']}, peak +{out['till_rss_growth_mb']:.1f} MiB")
        out.update(commit_cost(base / "commit", min(args.sales, 500)))
    finally:
        shutil.rmtree(base, ignore_errors=True)
    out["targets"] = [
        _target("HQ peak memory growth, 200 x 16 MiB strangers", out["hq_rss_growth_mb"],
                TARGET_HQ_GROWTH_MB, "MiB", lower=True),
        _target("daemon peak memory growth, 300 MiB till post", out["till_rss_growth_mb"],
                TARGET_TILL_GROWTH_MB, "MiB", lower=True),
        _target("encrypted sale commit p99", out["encrypted_p99_ms"],
                TARGET_ENCRYPTED_P99_MS, "ms", lower=True),
    ]  # fmt: skip
    print(
        table(
            "hardening: memory of strangers, cost of encryption",
            ["figure", "value"],
            [
                [
                    "HQ RSS before / peak / after (MiB)",
                    f"{fmt(out['hq_rss_before_mb'], '.1f')} / {fmt(out['hq_rss_peak_mb'], '.1f')} / "
                    f"{fmt(out['hq_rss_after_mb'], '.1f')}",
                ],
                ["HQ answers (status: count; 0 = closed)", str(out["hq_answers"])],
                ["HQ body bytes accepted by the kernel (MiB)", fmt(out["hq_accepted_mb"], ".1f")],
                [
                    "daemon RSS before / peak / after (MiB)",
                    f"{fmt(out['till_rss_before_mb'], '.1f')} / {fmt(out['till_rss_peak_mb'], '.1f')}"
                    f" / {fmt(out['till_rss_after_mb'], '.1f')}",
                ],
                ["till answers", str(out["till_answers"])],
                [
                    "sale commit p50 plain / encrypted (ms)",
                    f"{fmt(out['plain_p50_ms'], '.2f')} / {fmt(out['encrypted_p50_ms'], '.2f')}",
                ],
                [
                    "sale commit p99 plain / encrypted (ms), interleaved",
                    f"{fmt(out['plain_p99_ms'], '.2f')} / {fmt(out['encrypted_p99_ms'], '.2f')}",
                ],
            ],
            [
                f"{HQ_CLIENTS} clients from {HQ_CLIENTS} loopback addresses; load average "
                f"{os.getloadavg()[0]:.2f}"
            ],
        )
    )
    return out
