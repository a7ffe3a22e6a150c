"""Building blocks for the HQ tests: a real HQ process over HTTP, and stores of real terminals
enrolled through HQ, with a relay loop like the daemon's (push what HQ lacks, pull what HQ has)."""

from __future__ import annotations

import itertools
import os
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from meshpos.core.ops import Op
from meshpos.domain.catalog import CatalogRow
from meshpos.domain.enrolment import NodeRecord
from meshpos.hq import keys
from meshpos.hq.client import HQClient, PullResult, ingest_pull
from meshpos.hq.service import HQService
from meshpos.ledger.store import Ledger
from meshpos.node import membership
from meshpos.service.config import init_node, load_signer
from meshpos.service.terminal import Terminal

ROOT = Path(__file__).resolve().parents[1]
_ids = itertools.count(1)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def unique_store(prefix: str = "S") -> str:
    return f"{prefix}{os.getpid() % 1000}x{next(_ids)}"


class HQServer:
    """`meshpos hq serve` in a child process on a free loopback port."""

    def __init__(
        self, directory: Path, db: str | None = None, *, limits: dict[str, int] | None = None
    ):
        self.dir = directory
        self.db = db
        if not (directory / keys.CONFIG_FILE).exists():
            keys.init_hq(directory, db=db or "")
        if limits:
            text = (directory / keys.CONFIG_FILE).read_text()
            for k, v in limits.items():
                text = text.replace(f"{k} = {keys.DEFAULTS[k]}", f"{k} = {v}")
            (directory / keys.CONFIG_FILE).write_text(text)
        self.cfg = keys.load_hq(directory)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(directory / "serve.log", "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-c", "from meshpos.cli.app import main; main()", "hq", "serve",
             "--dir", str(directory), "--port", str(self.port), "--log-level", "INFO"],
            stdout=self.log, stderr=subprocess.STDOUT, cwd=ROOT,
        )  # fmt: skip
        deadline = time.monotonic() + 20
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"hq serve exited: {(directory / 'serve.log').read_text()}")
            try:
                if httpx.get(self.url + "/v1/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("hq serve did not come up in 20 s")
            time.sleep(0.05)
        self.token = keys.admin_token(self.cfg)

    def service(self) -> HQService:
        """An in-process HQ over the same directory and database (what the CLI does)."""
        return HQService.open(self.dir)

    def get(self, path: str, **params: Any) -> httpx.Response:
        return httpx.get(
            self.url + path, params=params, headers={"authorization": f"Bearer {self.token}"}
        )

    def logs(self) -> str:
        return (self.dir / "serve.log").read_text(errors="replace")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


_ITEMS: list[tuple[str, dict[str, str | int], int]] = [
    ("TEE", {"name": "Tee", "price": 100_000, "gst_rate": 1200, "category": "Tops"}, 20),
    ("CAP", {"name": "Cap", "price": 25_000, "gst_rate": 500, "category": "Acc"}, 10),
    ("JKT", {"name": "Jacket", "price": 300_000, "gst_rate": 1200, "category": "Top"}, 5),
]
CATALOG = [
    CatalogRow(line=i + 2, sku=sku, fields=fields, stock=stock)
    for i, (sku, fields, stock) in enumerate(_ITEMS)
]


@dataclass
class Store:
    """A store of terminals enrolled by HQ (HQ holds the store key)."""

    id: str
    hq: HQServer
    terminals: list[Terminal] = field(default_factory=list)

    @property
    def t1(self) -> Terminal:
        return self.terminals[0]

    def client(self, t: Terminal | None = None, **kw: Any) -> HQClient:
        t = t or self.t1
        cert = membership.load(t.cfg).cert
        return HQClient(self.hq.url, t.signer, self.id, cert=cert.raw if cert else None, **kw)

    def mesh(self) -> None:
        """Full LAN sync between the terminals (what the mesh does)."""
        for _ in range(2):
            for a in self.terminals:
                for b in self.terminals:
                    if a is not b:
                        b.ingest(a.ledger.ops_since(b.ledger.vv()), certified(a))

    def relay(self, t: Terminal | None = None, batch: int = 500) -> None:
        """One relay round from terminal `t`: push what HQ lacks, then pull what HQ has."""
        t = t or self.t1
        with self.client(t) as c:
            push_all(c, t, batch)
            pull_all(c, t)

    def close(self) -> None:
        for t in self.terminals:
            t.close()


def certified(t: Terminal) -> list[NodeRecord]:
    return [n for n in t.ledger.nodes() if n.cert is not None]


def wires(t: Terminal, since: dict[str, int], limit: int | None = None) -> list[bytes]:
    return [o.wire() for o in t.ledger.ops_since(since, limit)]


def push_all(c: HQClient, t: Terminal, batch: int = 500) -> dict[str, int]:
    vv = c.vv()
    while True:
        chunk = wires(t, vv, batch)
        if not chunk:
            return vv
        vv = c.push(chunk, certified(t)).vv


def pull_all(c: HQClient, t: Terminal) -> list[PullResult]:
    out = []
    while True:
        res = c.pull(t.ledger.vv())
        out.append(res)
        if res.ops:
            ingest_pull(t, res)
        if not res.more:
            return out


def make_store(
    hq: HQServer,
    tmp: Path,
    n: int = 2,
    *,
    store: str | None = None,
    catalog: Sequence[CatalogRow] = CATALOG,
    svc: HQService | None = None,
) -> Store:
    sid = store or unique_store()
    own = svc is None
    svc = svc or hq.service()
    try:
        svc.enroll_store(sid, f"Store {sid}")
        st = Store(sid, hq)
        for i in range(n):
            d = tmp / f"{sid}-T{i + 1}"
            cfg = init_node(d, sid, f"T{i + 1}")
            t = Terminal(cfg, load_signer(cfg), Ledger(cfg.db_path, sid, durable=False))
            membership.install(t, svc.enroll_node(sid, membership.request(t)))
            st.terminals.append(t)
    finally:
        if own:
            svc.close()
    if catalog:
        st.t1.import_catalog(list(catalog))
        st.mesh()
    return st


def store_views(t: Terminal) -> dict[str, Any]:
    """The store-side figures HQ's chain views must match."""
    q = t.query
    return {
        "stock": {r["sku"]: r["qty"] for r in q("SELECT sku, qty FROM stock WHERE qty != 0")},
        "loyalty": {
            r["customer_id"]: r["points"]
            for r in q("SELECT customer_id, points FROM loyalty WHERE points != 0")
        },
        "days": _days(t),
        "prices": {r["sku"]: r["price"] for r in q("SELECT sku, price FROM products")},
    }


def _days(t: Terminal) -> dict[str, tuple[int, int]]:
    """Sales and net per store day (IST by default), as HQ's sales_daily groups them: a sale
    rung at 00:05 IST belongs to that IST day although it is the previous day in UTC."""
    zone = t.store_time()
    days: dict[str, tuple[int, int]] = {}
    for r in t.query("SELECT ts_ms, kind, total FROM sales"):
        sales, net = days.get(zone.day(r["ts_ms"]), (0, 0))
        days[zone.day(r["ts_ms"])] = (sales + (r["kind"] == "sale"), net + r["total"])
    return days


def hq_views(svc: HQService, store: str) -> dict[str, Any]:
    s = svc.storage.views
    return {
        "stock": {r["sku"]: r["qty"] for r in s.stock(store) if r["qty"]},
        "loyalty": {r["customer_id"]: r["points"] for r in s.loyalty_by_store() if
                    r["store"] == store and r["points"]},
        "days": {r["day"]: (r["sales"], r["net"]) for r in s.sales_by_day(store)},
        "prices": {k: v["price"] for k, v in s.registers(store, "product").items() if "price" in v},
    }  # fmt: skip


def ops_of(t: Terminal) -> list[Op]:
    return t.ledger.ops_since({})


def pan_with_suffix(suffix: str, prefix: str = "4000", length: int = 16) -> str:
    """A card number that passes the check digit and ends in `suffix` (the acquirer's rules)."""
    from meshpos.domain.cards import luhn_ok

    for filler in range(10 ** (length - len(prefix) - len(suffix))):
        pan = f"{prefix}{filler:0{length - len(prefix) - len(suffix)}d}{suffix}"
        if luhn_ok(pan):
            return pan
    raise AssertionError(f"no valid card number ends in {suffix}")


def hq_payment_key(t: Terminal) -> bytes:
    """HQ's payment public key as the store learnt it (a setting HQ sends at enrolment)."""
    import json

    from meshpos.domain.cards import HQ_KEY_SETTING

    rows = t.query("SELECT value FROM settings WHERE key = ?", (HQ_KEY_SETTING,))
    assert rows, "the store has not pulled HQ's payment key yet"
    return bytes.fromhex(json.loads(rows[0]["value"]))


def open_float(svc: Any, store: Store, rupees: int = 100_000) -> None:
    """HQ opens the store's card float and the relay brings it down: without a share of it a
    card sale taken offline has no authority anywhere (the rulebook's escrow rule)."""
    from meshpos.hq.card_float import hq_open_float

    hq_open_float(svc, rupees * 100, [store.id])
    store.relay()


def sell_by_card(t: Terminal, items: list[tuple[str, int]], pan: str, expiry: str = "12/39") -> Any:
    """What the till does for an offline card sale: price it, seal the card to HQ's key for the
    amount due, keep only last four and brand readable, and record the sale as pending (the
    floor checks skipped: see `open_float`)."""
    from meshpos.domain.cards import parse_card, seal_card
    from meshpos.domain.pricing import Tender, price_lines, settle

    card = parse_card(pan, expiry)
    priced = price_lines(t.cart(items, {}))
    sealed = seal_card(hq_payment_key(t), card, store=t.cfg.store, amount=priced.total)
    tender = Tender("card", None, sealed.last4, sealed.brand)
    settled = settle(priced, [tender], t.loyalty_rule(), customer=None)
    settled.tenders[0].update(sealed.tender_fields())
    return t._record("sale", settled, None, None, {"ref_sale": None})


def settings_of(t: Terminal) -> dict[str, Any]:
    import json

    return {r["key"]: json.loads(r["value"]) for r in t.query("SELECT key, value FROM settings")}
