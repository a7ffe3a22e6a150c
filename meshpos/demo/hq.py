"""`make demo`, part three: a store of three terminals and its HQ; the store's WAN goes down.

It starts `meshpos hq serve` on its SQLite default and three `meshpos node run` daemons (each
with `[hq] url` set, so every terminal probes HQ and the lowest reachable one relays), rings sales,
then stops HQ: the store keeps selling, `meshpos status` shows the WAN down and the ops waiting,
and HQ changes a price meanwhile. HQ comes back, `meshpos sync now` runs a round, and HQ's chain
view (from its JSON report API) is printed side by side with the store's own views.

The building blocks (an HQ process on a fixed port, a store enrolled at HQ with static peers,
the two views to compare) are shared with tests/test_relay_hq.py and bench/relay_bench.py.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from collections.abc import Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
from rich.markup import escape
from rich.table import Table

from meshpos.core.errors import MeshposError
from meshpos.demo.bundle import cmd, console, step
from meshpos.demo.mesh import run_demo
from meshpos.demo.processes import (
    LOG_FILE,
    Daemons,
    DemoFailed,
    Process,
    free_port,
    meshpos,
    status_of,
    wait_for,
)
from meshpos.domain.catalog import SAMPLE_CATALOG, parse_csv
from meshpos.domain.enrolment import NodeRecord
from meshpos.domain.money import rupees
from meshpos.hq import keys
from meshpos.hq.service import HQService
from meshpos.ledger.errors import DATABASE_ERRORS
from meshpos.node import membership
from meshpos.service.config import DB_FILE, init_node, load_config
from meshpos.service.terminal import Terminal

NAMES = ("T1", "T2", "T3")
HOT = "TSH-NAV-M"
UNREADABLE: tuple[type[Exception], ...] = (MeshposError, *DATABASE_ERRORS)


# -- HQ as a process ------------------------------------------------------------------------------


class HQProcess(Process):
    """`meshpos hq serve` on a fixed loopback port, so it can stop and come back at the same URL
    (the store's WAN going down and up). Logs to DIR/serve.log."""

    def __init__(self, directory: Path, *, db: str | None = None, port: int | None = None) -> None:
        if not (directory / keys.CONFIG_FILE).exists():
            keys.init_hq(directory, db=db or "")
        self.dir = directory
        self.db = db
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        args = ["hq", "serve", "--dir", str(directory), "--port", str(self.port)]
        super().__init__([*args, *(["--db", db] if db else [])], directory / "serve.log")

    def start(self, wait_s: float = 30.0) -> HQProcess:
        """Start it and wait until it answers its health check."""
        super().start()
        try:
            wait_for(
                self.healthy, "hq serve answering", watch=[self], timeout=wait_s, interval=0.01
            )
        except DemoFailed:
            self.stop()
            raise
        return self

    def healthy(self) -> bool:
        try:
            return httpx.get(self.url + "/v1/health", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    def token(self) -> str:
        return keys.admin_token(keys.load_hq(self.dir))

    def report(self, path: str, **params: str) -> Any:
        """GET a report endpoint of the JSON API (admin token), e.g. "stock" or "sales"."""
        resp = httpx.get(
            f"{self.url}/v1/report/{path}".rstrip("/"),
            params=params,
            headers={"authorization": f"Bearer {self.token()}"},
            timeout=10,
        )
        resp.raise_for_status()
        return resp.json()

    def service(self) -> HQService:
        """An in-process HQService over the same directory and database (what `meshpos hq` does)."""
        return HQService.open(self.dir, self.db)


# -- a store enrolled at HQ -----------------------------------------------------------------------


def enrol_store(
    hq: HQProcess,
    base: Path,
    store: str,
    names: Sequence[str] = NAMES,
    *,
    catalog: bool = True,
    url: str | None = None,
    mesh: dict[str, Any] | None = None,
    relay: dict[str, Any] | None = None,
) -> list[Path]:
    """Node directories of one store whose key HQ holds: each terminal enrolled at HQ, told the
    others' certificates (the roster) and where they listen (static peers on loopback, no mDNS),
    and where HQ is (`[hq] url`: HQ's, or `url` when something stands between; plus `relay`
    settings). The first imports the sample catalogue."""
    svc = hq.service()
    dirs = [base / name for name in names]
    ports = {name: free_port() for name in names}
    records: list[NodeRecord] = []
    try:
        svc.enroll_store(store, f"Store {store}")
        for directory, name in zip(dirs, names, strict=True):
            init_node(directory, store, name)
            t = Terminal.open(directory)
            try:
                cert = membership.install(t, svc.enroll_node(store, membership.request(t)))
                records.append(NodeRecord(t.node_id, t.signer.public_key, store, name, cert.raw))
            finally:
                t.close()
    finally:
        svc.close()
    for i, (directory, name) in enumerate(zip(dirs, names, strict=True)):
        t = Terminal.open(directory)
        try:
            for rec in records:
                if rec.node_id != t.node_id:
                    t.ledger.add_node(rec)
            peers = [
                {"node": r.node_id, "host": "127.0.0.1", "port": ports[r.name]}
                for r in records
                if r.node_id != t.node_id
            ]
            table = {"port": ports[name], "discovery": False, "static_peers": peers, **(mesh or {})}
            for key, value in table.items():
                membership.set_config(t.cfg, "mesh", key, value)
            for key, value in {"url": url or hq.url, **(relay or {})}.items():
                membership.set_config(t.cfg, "hq", key, value)
            if catalog and i == 0:
                t.import_catalog(parse_csv(SAMPLE_CATALOG.read_text(), SAMPLE_CATALOG.name))
        finally:
            t.close()
    return dirs


def log_lines(dirs: Sequence[Path], text: str, after: float = 0.0) -> list[tuple[float, Path]]:
    """(wall time, node directory) of each daemon log line containing `text`, stamped at or
    after `after` (log stamps have millisecond resolution), oldest first."""
    out = []
    for d in dirs:
        for line in (d / LOG_FILE).read_text(errors="replace").splitlines():
            if text in line and line[:2] == "20":
                at = datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()
                if at >= after - 0.001:
                    out.append((at, d))
    return sorted(out)


PUSHED = "meshpos.relay: pushed "  # the relay's log line for a push HQ answered
ELECTED = "HQ relay is now this node"


# -- the two views ----------------------------------------------------------------------------


@contextlib.contextmanager
def _terminal(directory: Path) -> Iterator[Terminal]:
    """A terminal opened to read its views; never one that would create its database."""
    if not (directory / DB_FILE).exists():
        raise DemoFailed(f"{directory} holds no database")
    t = Terminal.open(directory)
    try:
        yield t
    finally:
        t.close()


def store_vv(directory: Path) -> dict[str, int]:
    """A terminal's version vector ({} while its database cannot be read)."""
    try:
        with _terminal(directory) as t:
            return t.ledger.vv()
    except UNREADABLE:
        return {}


def store_view(directory: Path) -> dict[str, Any]:
    """What a terminal's own views say: ops held, sales per store day, stock, loyalty, prices."""
    with _terminal(directory) as t:
        views = t.ledger.views
        return {
            "ops": t.ledger.op_count(),
            "days": t.ledger.reports.daily_sales(t.store_time()),
            "stock": views.stock_levels(),
            "loyalty": views.loyalty_balances(),
            "prices": views.prices(),
        }


def hq_view(hq: HQProcess, store: str) -> dict[str, Any]:
    """HQ's chain view of one store, through its JSON report API (what a dashboard reads)."""
    stores = {r["store"]: r for r in hq.report("stores")["stores"]}
    days = {
        r["day"]: (int(r["sales"]), int(r["net"])) for r in hq.report("sales", store=store)["sales"]
    }
    stock = {r["sku"]: int(r["qty"]) for r in hq.report("stock", store=store)["stock"]}
    loyalty = {
        r["customer_id"]: int(r["points"])
        for r in hq.report("loyalty")["by_store"]
        if r["store"] == store and r["points"]
    }
    svc = hq.service()
    try:
        products = svc.storage.registers(store, "product")
    finally:
        svc.close()
    prices = {sku: int(f["price"]) for sku, f in products.items() if "price" in f}
    ops = int(stores[store]["ops"]) if store in stores else 0
    return {"ops": ops, "days": days, "stock": stock, "loyalty": loyalty, "prices": prices}


def differences(ours: dict[str, Any], theirs: dict[str, Any]) -> list[str]:
    """Where the store's view and HQ's differ (zero stock rows count as absent)."""
    out = []
    for key in ("ops", "days", "stock", "loyalty", "prices"):
        a, b = ours[key], theirs[key]
        if isinstance(a, dict):
            a = {k: v for k, v in a.items() if v != 0}
            b = {k: v for k, v in b.items() if v != 0}
        if a != b:
            out.append(f"{key}: store {a} != HQ {b}")
    return out


# -- the demo -------------------------------------------------------------------------------------


def run(base: Path) -> int:
    store = f"HQDEMO{os.getpid() % 10000:04d}"
    step(f"HQ on its SQLite default, and store {store} of three terminals enrolled at HQ")
    hq = HQProcess(base / "hq")
    cmd(f"hq init --dir {hq.dir}")
    cmd(f"hq enroll-store {store} --dir {hq.dir}")
    dirs = enrol_store(hq, base, store, mesh={"copy_wait_ms": 500})
    for d in dirs:
        cmd(f"--dir {d} enroll request --out {d.name}.req   # then at HQ: hq enroll-node ...")
    cmd(f"--dir {dirs[0]} config: \\[hq] url = {hq.url}   (on every terminal)")
    with Daemons() as daemons, _stopping(hq):
        hq.start()
        cmd(f"hq serve --dir {hq.dir} --port {hq.port} &   # log: {hq.log_path}")
        for d in dirs:
            daemons.start(d)
            cmd(f"--dir {d} node run &")
        every: list[Process] = [hq, *daemons.all]

        def hq_holds_store() -> bool:
            ours = store_vv(dirs[0])
            return (
                bool(ours) and all(store_vv(d) == ours for d in dirs) and _hq_vv(hq, store) == ours
            )

        took = wait_for(hq_holds_store, "the catalogue reaching every terminal and HQ", watch=every)
        relay = status_of(dirs[0]).get("wan", {}).get("relay")
        names = {load_config(d).node_id: d.name for d in dirs}
        console.print(
            f"    every terminal and HQ hold the same {sum(store_vv(dirs[0]).values())} ops after "
            f"{took:.1f} s; the relay is {names.get(relay, relay)} (lowest node id that reaches HQ)"
        )

        step("Sales at all three counters, WAN up: the relay carries them to HQ")
        for d in dirs:
            meshpos("--dir", str(d), "sell", HOT, "--pay", "cash")
            cmd(f"--dir {d} sell {HOT} --pay cash")
        wait_for(hq_holds_store, "HQ holding every sale", watch=every)
        console.print(f"    HQ holds every op: {sum(_hq_vv(hq, store).values())}")

        step("The store's WAN goes down (HQ stops); the counters keep selling")
        hq.stop()
        wait_for(
            lambda: all(not status_of(d).get("wan", {}).get("wan_ok", True) for d in dirs),
            "every terminal noticing the WAN is down",
            watch=every,
        )
        skus = [HOT, "JNS-BLA-L", "KUR-GRE-M"]
        for i in range(2):
            for j, d in enumerate(dirs):
                meshpos("--dir", str(d), "sell", skus[(i + j) % 3], "--pay", "cash")
        cmd(f"--dir {dirs[0]} sell ...   # 2 sales at each counter, offline from HQ")
        wait_for(lambda: _same(store_vv(d) for d in dirs), "the LAN converging", watch=every)
        st = json.loads(meshpos("--dir", str(dirs[0]), "status", "--json").stdout)
        cmd(f"--dir {dirs[0]} status")
        for key in ("wan", "hq_relay", "last_hq_sync", "ops_waiting_for_hq", "last_hq_error"):
            console.print(f"      {key:<20} {escape(_clip(str(st.get(key, '')), 76))}")
        failed = meshpos("--dir", str(dirs[0]), "sync", "now", "--wait", "2", check=False)
        cmd(f"--dir {dirs[0]} sync now --wait 2")
        console.print(f"      exit {failed.returncode}: {escape(_clip(failed.stderr.strip(), 90))}")

        step("Meanwhile HQ changes a price (it signs a product.upsert for the store)")
        out = meshpos("hq", "price", HOT, "449", "--dir", str(hq.dir))
        cmd(f"hq price {HOT} 449 --dir {hq.dir}")
        console.print("      " + escape(out.stdout.strip().replace("\n", "\n      ")[:400]))

        step("WAN back: HQ restarts; `meshpos sync now` runs a round at once")
        t0 = time.monotonic()
        hq.start()
        cmd(f"hq serve --dir {hq.dir} --port {hq.port} &")
        wait_for(lambda: status_of(dirs[0]).get("wan", {}).get("wan_ok"), "the WAN coming back")
        done = meshpos("--dir", str(dirs[0]), "sync", "now", check=False)
        cmd(f"--dir {dirs[0]} sync now")
        console.print(f"      {escape((done.stdout or done.stderr).strip())}")

        def every_price() -> bool:
            return all(store_view(d)["prices"].get(HOT) == 44_900 for d in dirs)

        wait_for(
            lambda: hq_holds_store() and every_price(), "HQ and the store converging", watch=every
        )
        console.print(
            f"    the backlog is at HQ and HQ's price on every terminal {time.monotonic() - t0:.1f} s "
            "after HQ came back"
        )

        step("HQ's chain view (JSON report API) next to the store's own views")
        ours, theirs = store_view(dirs[0]), hq_view(hq, store)
        table = Table(show_lines=False)
        for col in ("figure", f"store {store} ({dirs[0].name})", "HQ", ""):
            table.add_column(col)
        rows: list[tuple[str, Any, Any]] = [("ops", ours["ops"], theirs["ops"])]
        for day in sorted(ours["days"] | theirs["days"]):
            a, b = ours["days"].get(day, (0, 0)), theirs["days"].get(day, (0, 0))
            rows.append((f"sales {day}", a[0], b[0]))
            rows.append((f"takings {day}", rupees(a[1]), rupees(b[1])))
        for sku in sorted(set(skus)):
            rows.append((f"stock {sku}", ours["stock"].get(sku, 0), theirs["stock"].get(sku, 0)))
        p1, p2 = ours["prices"].get(HOT, 0), theirs["prices"].get(HOT, 0)
        rows.append((f"price {HOT}", rupees(p1), rupees(p2)))
        for figure, a, b in rows:
            table.add_row(figure, str(a), str(b), "[green]=[/]" if a == b else "[red]≠[/]")
        console.print(table)
        diff = differences(ours, theirs)
        for d in dirs[1:]:
            diff += [f"{d.name} {x}" for x in differences(store_view(d), ours)]
        if diff:
            raise DemoFailed("HQ and the store disagree: " + "; ".join(diff))
        console.print(
            "[bold green]HQ matches the store[/]: every op once, same sales, takings, stock, prices"
        )
    return 0


@contextlib.contextmanager
def _stopping(hq: HQProcess) -> Iterator[HQProcess]:
    try:
        yield hq
    finally:
        hq.stop()


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _same(vvs: Iterator[dict[str, int]] | list[dict[str, int]]) -> bool:
    items = list(vvs)
    return bool(items[0]) and all(v == items[0] for v in items[1:])


def _hq_vv(hq: HQProcess, store: str) -> dict[str, int]:
    if not hq.running():
        return {}
    svc = hq.service()
    try:
        return {str(o): int(s) for o, s in svc.storage.vv(store).items()}
    finally:
        svc.close()


def main(argv: list[str]) -> int:
    return run_demo(run, argv, "meshpos-hq-demo-", "HQ and daemons")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
