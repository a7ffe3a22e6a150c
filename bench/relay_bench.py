"""The `relay` bench section: a store's backlog going up to HQ after an outage, with real processes.

A 4-counter store enrolled at HQ (`meshpos hq serve`, SQLite with synchronous=FULL) and four
`meshpos node run` daemons, each in a Linux network namespace of its own on one bridge
(bench/netns.py), the host joined to the bridge as their gateway. Each terminal reaches HQ through
its own byte-counting TCP proxy on the gateway (its "WAN" link), so bytes uploaded are counted on
the wire, HTTP framing included, whichever process sent them and whether or not it lived to report
them. Without namespaces (not root, no `ip` or `nft`), the daemons run on 127.0.0.1 and the two
cuts of part 3 are skipped and say why: there is no real cut to make on loopback.

1. **Drain.** HQ stops (the WAN is down) for a 3-hour festive rush: one sale per counter every
   20 s, 2,160 sales rung through `Terminal.sell` as the tills do; the LAN converges. HQ comes
   back; measured: HQ answering again -> HQ holds every op (the relay noticing included).
2. **Dedup with a failover.** The same outage again, and the terminal uploading is SIGKILLed as
   soon as HQ holds part of the backlog; the next takes over. Dedup ratio = bytes the terminals
   sent to HQ from HQ's return to the end of the drain, divided by the bytes of the unique ops
   (wire form: body + signature); also as ops (applied + duplicates) / applied from HQ's log.
   Failover time = the kill -> the successor's log saying it relays, and -> its first push.
3. **A relay lost without dying**: its process frozen (SIGSTOP: a hung process, whose kernel
   still answers TCP), its cable pulled (the host end of its veth down: LAN and WAN gone, the
   process running), or its WAN cut while the LAN stays (nftables in its namespace drops every
   packet to and from the gateway, silently): the time until a sale rung at another counter is
   at HQ, and until the successor takes over.

`--quick` rings a one-hour rush (720 sales, two pushes of the relay's 256 KiB batches), so the
kill still lands mid-upload and the failover is as real as in the full run, only smaller; when a
kill lands after HQ already holds the whole backlog (no failover happened), the dedup target is
not met and the table says so. The cuts are the same as in the full run.
"""

from __future__ import annotations

import argparse
import contextlib
import random
import re
import shutil
import signal
import socket
import tempfile
import threading
import time
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import netns
from bench.common import BenchError, fmt, log, table
from bench.ledger_bench import _target
from meshpos.core.ops import pack
from meshpos.demo.hq import ELECTED, PUSHED, HQProcess, enrol_store, log_lines, store_vv
from meshpos.demo.processes import Daemons, status_of
from meshpos.domain.pricing import Tender
from meshpos.node import membership
from meshpos.service.terminal import Terminal

COUNTERS = ("C1", "C2", "C3", "C4")
SALE_EVERY_S = 20
WAIT_S = 120.0


class CountingProxy:
    """A TCP relay from `address` (loopback, or the lab's gateway) to HQ on loopback that counts
    the bytes each way. When HQ is down it accepts and closes at once, which a terminal sees as
    HQ refusing connections, as when HQ's server is down but its host answers."""

    def __init__(self, upstream_port: int, address: str = "127.0.0.1") -> None:
        self.upstream = upstream_port
        self.address = address
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((address, 0))
        self.sock.listen(64)
        self.port = int(self.sock.getsockname()[1])
        self.up = 0
        self.down = 0
        self._lock = threading.Lock()
        self._closed = False
        self._conns: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True, name="proxy-accept").start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(("127.0.0.1", self.upstream), timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns += [client, server]
            for src, dst, up in ((client, server, True), (server, client, False)):
                threading.Thread(target=self._pump, args=(src, dst, up), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, up: bool) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                with self._lock:
                    if up:
                        self.up += len(data)
                    else:
                        self.down += len(data)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def sent(self) -> int:
        with self._lock:
            return self.up

    def close(self) -> None:
        self._closed = True
        self.sock.close()
        with self._lock:
            for s in self._conns:
                s.close()


def _wait(check: Callable[[], Any], what: str, daemons: Daemons, timeout: float = WAIT_S) -> float:
    t0 = time.monotonic()
    while not check():
        if time.monotonic() - t0 > timeout:
            tails = daemons.logs(1500)
            raise BenchError(f"relay bench: {what} did not happen within {timeout:.0f} s{tails}")
        time.sleep(0.005)
    return time.monotonic() - t0


def _hq_counts(log_text: str, store: str) -> tuple[int, int]:
    applied = dups = 0
    for a, d in re.findall(
        rf"store {re.escape(store)}: (\d+) ops applied, (\d+) duplicates", log_text
    ):
        applied, dups = applied + int(a), dups + int(d)
    return applied, dups


class Rig:
    """HQ, the proxy and the four daemons of one store, and the tills ringing its sales."""

    def __init__(self, base: Path, seed: int, lab: netns.Lab | None) -> None:
        self.store = f"RB{seed}"
        self.lab = lab
        self.hq = HQProcess(base / "hq")
        self.dirs = enrol_store(self.hq, base, self.store, COUNTERS, mesh={"copy_wait_ms": 0})
        if lab is not None:
            _into_lab(self.dirs, lab)
        wan = lab.gateway if lab is not None and lab.gateway else "127.0.0.1"
        self.proxies: dict[Path, CountingProxy] = {}
        for d in self.dirs:  # each terminal's own WAN link, counted
            proxy = self.proxies[d] = CountingProxy(self.hq.port, wan)
            t = Terminal.open(d)
            try:
                membership.set_config(t.cfg, "hq", "url", f"http://{wan}:{proxy.port}")
            finally:
                t.close()
        self.daemons = Daemons()
        self.svc = self.hq.service()
        self.rng = random.Random(seed)
        self.tills = [Terminal.open(d) for d in self.dirs]
        self.skus = [str(r["sku"]) for r in self.tills[0].query("SELECT sku FROM products")]

    def hq_vv(self) -> dict[str, int]:
        return {str(o): int(s) for o, s in self.svc.storage.vv(self.store).items()}

    def in_sync(self, dirs: list[Path] | None = None) -> bool:
        dirs = dirs or self.dirs
        first = store_vv(dirs[0])
        return all(store_vv(d) == first for d in dirs[1:]) and (
            not self.hq.running() or self.hq_vv() == first
        )

    def host(self, directory: Path) -> netns.Node | None:
        return self.lab[self.dirs.index(directory)] if self.lab is not None else None

    def start_daemon(self, directory: Path) -> None:
        host = self.host(directory)
        self.daemons.start(directory, prefix=host.command([]) if host is not None else ())

    def start(self) -> None:
        self.hq.start()
        for d in self.dirs:
            self.start_daemon(d)
        _wait(lambda: self.in_sync() and len(self.hq_vv()) > 1, "the catalogue at HQ", self.daemons)

    def outage(self, sales: int) -> dict[str, Any]:
        """Stop HQ, ring `sales` sales round-robin over the counters, let the LAN converge."""
        self.hq.stop()
        _wait(
            lambda: all(not (status_of(d).get("wan") or {}).get("wan_ok", True) for d in self.dirs),
            "every terminal seeing the WAN down", self.daemons,
        )  # fmt: skip
        before = self.hq_vv()
        t0 = time.perf_counter()
        for i in range(sales):
            self.sell(i % len(self.tills))
        rung = time.perf_counter() - t0
        _wait(lambda: self.in_sync(), "the LAN converging on the backlog", self.daemons)
        raw = self.tills[0].ledger.raw_since(before)
        unique = sum(len(pack([b, s])) for _, _, b, s in raw)
        return {"ops": len(raw), "op_bytes": unique, "ring_s": rung}

    def close(self) -> None:
        for t in self.tills:
            t.close()
        self.daemons.close()
        self.hq.stop()
        for proxy in self.proxies.values():
            proxy.close()
        self.svc.close()

    def sent(self) -> int:
        return sum(p.sent() for p in self.proxies.values())

    def sell(self, till: int) -> None:
        items = [(self.rng.choice(self.skus), 1) for _ in range(self.rng.randint(1, 3))]
        self.tills[till].sell(items, tenders=[Tender("cash")], allow_oversell=True)


def drain(rig: Rig, sales: int) -> dict[str, Any]:
    backlog = rig.outage(sales)
    target = store_vv(rig.dirs[0])
    launched = time.time()
    rig.hq.start()
    up = time.time()  # HQ answers its health check (polled every 10 ms)
    _wait(lambda: rig.hq_vv() == target, "HQ taking in the backlog", rig.daemons)
    done = time.time()
    seen_lines = log_lines(rig.dirs, "WAN to HQ is up", launched)
    seen = seen_lines[0][0] if seen_lines else up
    return {
        **backlog,
        "drain_s": done - up,
        "detect_s": max(0.0, seen - up),
        "transfer_s": done - max(seen, up),
        "ops_per_s": backlog["ops"] / max(done - max(seen, up), 1e-3),
    }


def dedup_with_failover(rig: Rig, sales: int) -> dict[str, Any]:
    backlog = rig.outage(sales)
    target = store_vv(rig.dirs[0])
    before = rig.hq_vv()
    want = sum(target.values()) - sum(before.values())
    log_start = len(rig.hq.log())
    sent0 = rig.sent()
    launched = time.time()
    rig.hq.start()
    up = time.monotonic()
    while True:  # wait for the relay to be uploading, then kill the one that is
        at_hq = sum(rig.hq_vv().values()) - sum(before.values())
        pushes = log_lines(rig.dirs, PUSHED, launched)
        if at_hq > 0 and pushes:
            break
        if time.monotonic() - up > WAIT_S:
            raise BenchError("relay bench: the relay never started uploading")
        time.sleep(0.002)
    victim = pushes[-1][1]
    killed_at = time.time()
    rig.daemons[victim].kill()
    survivors = [d for d in rig.dirs if d != victim]
    _wait(lambda: rig.hq_vv() == target, "the survivors draining the backlog", rig.daemons)
    drained = time.time() - killed_at
    sent = rig.sent() - sent0
    with contextlib.suppress(BenchError):  # none, if the victim was relaying only briefly
        _wait(lambda: log_lines(survivors, ELECTED, killed_at), "a successor", rig.daemons, 10)
    chosen = log_lines(survivors, ELECTED, killed_at)
    elected = chosen[0][0] if chosen else None
    after = log_lines(survivors, PUSHED, killed_at)
    first_push = after[0][0] if after else None
    # HQ logs a push after committing it: the last line may trail what its storage shows.
    _wait(lambda: _hq_counts(rig.hq.log()[log_start:], rig.store)[0] >= want,
          "HQ's log counting every op of the backlog", rig.daemons)  # fmt: skip
    applied, dups = _hq_counts(rig.hq.log()[log_start:], rig.store)
    rig.start_daemon(victim)  # back for the runs that follow
    return {
        **backlog,
        "killed_with_at_hq": at_hq,
        "killed_mid_upload": at_hq < want,
        "backlog_ops": want,
        "bytes_sent": sent,
        "dedup_ratio": sent / backlog["op_bytes"] if backlog["op_bytes"] else None,
        "ops_applied": applied,
        "ops_duplicate": dups,
        "op_dedup_ratio": (applied + dups) / applied if applied else None,
        "failover_elected_s": None if elected is None else elected - killed_at,
        "failover_first_push_s": None if first_push is None else first_push - killed_at,
        "drain_after_kill_s": drained,
    }


def lost_relay(rig: Rig, how: str) -> dict[str, Any]:
    """The relay goes silent without dying (`freeze`: SIGSTOP; `cable`: its veth down; `wan`:
    nftables drops its packets to and from HQ's gateway, the LAN stays). A sale rung at another
    counter then reaches HQ only through the next relay: measured from the fault to the sale at
    HQ, and to the successor's log saying it took over."""
    _wait(lambda: rig.in_sync(), "a quiet store", rig.daemons)
    ids = {_node_id(d): d for d in rig.dirs if rig.daemons[d].running()}
    _wait(
        lambda: all((status_of(d).get("wan") or {}).get("relay") == min(ids) for d in ids.values()),
        "every terminal agreeing on the relay", rig.daemons,
    )  # fmt: skip
    relay = ids[min(ids)]
    host = rig.host(relay)
    if how != "freeze" and (host is None or rig.lab is None or rig.lab.gateway is None):
        raise BenchError(f"relay bench: a {how} cut needs the namespace lab")
    other = rig.dirs.index(ids[max(ids)])
    at = time.time()
    if how == "freeze":
        rig.daemons[relay].signal(signal.SIGSTOP)
    elif how == "cable":
        assert host is not None
        host.partition()
    else:
        assert host is not None and rig.lab is not None and rig.lab.gateway is not None
        host.block(rig.lab.gateway)
    try:
        rig.sell(other)
        target = store_vv(rig.dirs[other])
        _wait(lambda: all(rig.hq_vv().get(o, 0) >= s for o, s in target.items()),
              "the sale reaching HQ through another relay", rig.daemons)  # fmt: skip
        reached = time.time() - at
        survivors = [d for d in ids.values() if d != relay]
        chosen = log_lines(survivors, ELECTED, at)
    finally:
        if how == "freeze":
            rig.daemons[relay].signal(signal.SIGCONT)
        elif how == "cable":
            assert host is not None
            host.heal()
        else:
            assert host is not None
            host.unblock()
    return {
        "sale_at_hq_s": reached,
        "successor_elected_s": chosen[0][0] - at if chosen else None,
    }


def _cut_rows(what: str, fig: dict[str, Any] | None, skipped: str | None) -> list[list[str]]:
    if fig is None:
        return [[what, f"SKIPPED: {skipped}"]]
    return [
        [f"{what} -> successor elected", f"{fmt(fig['successor_elected_s'], '.2f')} s"],
        [f"{what} -> a sale at another counter at HQ", f"{fig['sale_at_hq_s']:.2f} s"],
    ]


def _into_lab(dirs: list[Path], lab: netns.Lab) -> None:
    """Each terminal listens on its namespace's address and dials its peers at theirs."""
    ip_of = {_node_id(d): lab[i].ip for i, d in enumerate(dirs)}
    for d in dirs:
        t = Terminal.open(d)
        try:
            peers = [{**p, "host": ip_of[p["node"]]} for p in _toml(d)["mesh"]["static_peers"]]
            membership.set_config(t.cfg, "mesh", "static_peers", peers)
            membership.set_config(t.cfg, "mesh", "host", ip_of[t.node_id])
        finally:
            t.close()


def _toml(directory: Path) -> dict[str, Any]:
    return tomllib.loads((directory / "meshpos.toml").read_text())


def _node_id(directory: Path) -> str:
    return str(_toml(directory)["node"]["node_id"])


def relay_section(args: argparse.Namespace, results: dict[str, Any]) -> dict[str, Any]:
    hours = 1.0 if args.quick else 3.0
    sales = int(hours * 3600 / SALE_EVERY_S) * len(COUNTERS)
    log(f"relay: {len(COUNTERS)} counters, {hours:g} h outage at one sale per counter every "
        f"{SALE_EVERY_S} s = {sales:,} sales")  # fmt: skip
    with contextlib.ExitStack() as stack:
        tmp = stack.enter_context(tempfile.TemporaryDirectory(dir=args.out, prefix="relay-"))
        lab: netns.Lab | None = None
        skipped = netns.unavailable_reason()
        if skipped is None and shutil.which("nft") is None:
            skipped = "the `nft` command (nftables) is not installed"
        if skipped is None:
            try:
                lab = stack.enter_context(netns.lab(len(COUNTERS), gateway=True))
            except netns.NetnsUnavailable as exc:
                skipped = str(exc)
        if lab is None:
            log(f"relay: NO NETWORK NAMESPACES ({skipped}): daemons on loopback, and the pulled "
                "cable and WAN cut are SKIPPED")  # fmt: skip
        rig = Rig(Path(tmp), args.seed, lab)
        stack.callback(rig.close)
        rig.start()
        d = drain(rig, sales)
        log(f"relay: drained {d['ops']:,} ops ({d['op_bytes'] / 1e6:.2f} MB) in "
            f"{d['drain_s']:.2f} s (detect {d['detect_s']:.2f} s)")  # fmt: skip
        f = dedup_with_failover(rig, sales)
        log(f"relay: dedup {f['dedup_ratio']:.3f} with the relay killed at "
            f"{f['killed_with_at_hq']:,} of {f['backlog_ops']:,} ops")  # fmt: skip
        frozen = lost_relay(rig, "freeze")
        log(f"relay: frozen relay -> sale at HQ after {frozen['sale_at_hq_s']:.2f} s")
        cable = cut = None
        if lab is not None:
            cable = lost_relay(rig, "cable")
            log(f"relay: relay's cable pulled -> sale at HQ after {cable['sale_at_hq_s']:.2f} s")
            cut = lost_relay(rig, "wan")
            log(f"relay: relay's WAN cut -> sale at HQ after {cut['sale_at_hq_s']:.2f} s")
    out: dict[str, Any] = {
        "counters": len(COUNTERS),
        "outage_hours": hours,
        "sales": sales,
        "drain": d,
        "failover": f,
        "where": "in 4 network namespaces" if lab is not None else "on 127.0.0.1",
        "frozen_relay": frozen,
        "relay_cable_pulled": cable if cable is not None else {"skipped": skipped},
        "relay_wan_cut": cut if cut is not None else {"skipped": skipped},
        "targets": [
            _target(
                f"backlog drain after a {hours:g}-hour outage ({len(COUNTERS)} counters)",
                d["drain_s"],
                5.0,
                "s",
                lower=True,
            ),
            _target(
                "upload dedup ratio with a relay failover",
                f["dedup_ratio"] if f["killed_mid_upload"] else None,
                1.05,
                "x",
                lower=True,
            ),
        ],
    }
    print(
        table(
            "relay: a store's backlog to HQ after an outage",
            ["figure", "value"],
            [
                ["sales rung during the outage", f"{sales:,}"],
                ["ops in the backlog", f"{d['ops']:,}"],
                ["bytes of unique ops (body + signature)", f"{d['op_bytes']:,}"],
                ["drain: HQ back -> HQ holds every op", f"{d['drain_s']:.2f} s"],
                ["  of which detection (next probe)", f"{d['detect_s']:.2f} s"],
                ["  of which transfer", f"{d['transfer_s']:.2f} s"],
                ["  upload rate", f"{fmt(d['ops_per_s'])} ops/s"],
                [
                    "failover run: backlog at HQ when the relay was killed",
                    f"{f['killed_with_at_hq']:,} of {f['backlog_ops']:,} ops"
                    + ("" if f["killed_mid_upload"] else " (after the upload: NO failover)"),
                ],
                ["failover: kill -> successor elected", f"{fmt(f['failover_elected_s'], '.2f')} s"],
                [
                    "failover: kill -> successor's first accepted push",
                    f"{fmt(f['failover_first_push_s'], '.2f')} s",
                ],
                ["failover: kill -> backlog drained", f"{f['drain_after_kill_s']:.2f} s"],
                [
                    "relay frozen (SIGSTOP, a hung process) -> successor elected",
                    f"{fmt(frozen['successor_elected_s'], '.2f')} s",
                ],
                [
                    "relay frozen -> a sale at another counter at HQ",
                    f"{frozen['sale_at_hq_s']:.2f} s",
                ],
                *_cut_rows("relay's cable pulled (veth down)", cable, skipped),
                *_cut_rows("relay's WAN cut (nftables drop, LAN up)", cut, skipped),
                ["bytes sent to HQ (HTTP, all terminals)", f"{f['bytes_sent']:,}"],
                ["dedup ratio: bytes sent / unique op bytes", f"{fmt(f['dedup_ratio'], '.3f')}"],
                ["ops sent / ops applied (HQ's log)", f"{fmt(f['op_dedup_ratio'], '.3f')}"],
            ],
            [
                "bytes sent count everything the terminals sent to HQ while it drained: pushes, "
                "probes, pulls and HTTP headers",
            ],
        )
    )
    return out
