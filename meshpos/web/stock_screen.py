"""What the stock page shows: every counter of the store as this one knows it, and stock per SKU
with how each counter's ops moved it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from meshpos.core.clock import wall_ms
from meshpos.core.errors import InputError
from meshpos.ledger.live_feed import OriginSales, sales_by_origin, stock_moves
from meshpos.service.daemon_link import daemon_status
from meshpos.service.terminal import Terminal
from meshpos.service.transfers import elsewhere
from meshpos.web.live import Live
from meshpos.web.session import Notice, WebSession
from meshpos.web.signin import Sessions

NOTHING_RUNG = OriginSales(0, 0, 0)


@dataclass(frozen=True)
class CounterRow:
    """One counter of the store: its ops held here, what it rang, and how the LAN sees it."""

    node_id: str
    name: str
    me: bool
    ops: int
    sales: int
    returns: int
    last_sale_ms: int
    lan: str  # "this counter", "up", "down", "not seen", ...
    last_seen_ms: int
    behind: int
    ahead: int


def _lan(me: bool, hq: bool, daemon_up: bool, peer: Mapping[str, object]) -> str:
    if me:
        return "this counter"
    if hq:
        return "HQ (not on the LAN)"
    if not daemon_up:
        return "unknown (daemon not running)"
    if not peer:
        return "not seen"
    return "up" if peer.get("up") else "down"


class StockScreen:
    def __init__(self, t: Terminal, live: Live, sessions: Sessions) -> None:
        self.t = t
        self.live = live
        self.sessions = sessions

    def move(
        self,
        s: WebSession,
        kind: str,
        code: str,
        qty: int,
        reason: str,
        approver: str = "",
        pin: str = "",
    ) -> None:
        """Stock in (a delivery) or a counted correction, through `Terminal.move_stock`: a
        correction needs a supervisor (the PIN pad posts it again with their PIN)."""
        if kind not in ("receive", "adjust"):
            raise InputError(f"stock change {kind!r}: receive or adjust")
        with self.sessions.acting(s, approver, pin):
            op = self.t.move_stock(kind, code, qty, reason, s.user)
        s.approval = None
        sku = op.payload["sku"]
        what = "received" if kind == "receive" else "adjusted by"
        level = self.t.ledger.views.stock_qty(sku)
        s.notice = Notice("ok", f"{sku} {what} {qty:+d}: {level} in stock now")

    def counters(self) -> list[CounterRow]:
        """Every counter of the store as this one knows it: ops of theirs held here, sales rung,
        and (from the daemon) whether it is reachable now; this counter first."""
        t = self.t
        status = daemon_status(t.cfg.dir)
        peers = {p["node_id"]: p for p in status.get("peers", [])}
        vv = t.ledger.vv()
        sales = sales_by_origin(t.ledger)
        office = t.ledger.hq_origins()
        rows = []
        for node in t.ledger.nodes():
            if node.store != t.cfg.store:
                continue
            me = node.node_id == t.node_id
            peer = peers.get(node.node_id, {})
            rung = sales.get(node.node_id, NOTHING_RUNG)
            rows.append(
                CounterRow(
                    node_id=node.node_id,
                    name=node.name,
                    me=me,
                    ops=vv.get(node.node_id, 0),
                    sales=rung.sales,
                    returns=rung.returns,
                    last_sale_ms=rung.last_ms,
                    lan=_lan(me, node.node_id in office, bool(status), peer),
                    last_seen_ms=int(peer.get("last_seen_ms") or 0),
                    behind=int(peer.get("behind") or 0),
                    ahead=int(peer.get("ahead") or 0),
                )
            )
        rows.sort(key=lambda r: (not r.me, r.name))
        return rows

    def view(self, q: str) -> dict[str, Any]:
        """Stock per SKU in the store's merged view, and how each counter's ops moved it (stock
        is a sum of signed moves, so the columns add up to the total)."""
        products = self.t.products(search=q.strip() or None, limit=200)
        counters = self.counters()
        moves = stock_moves(self.t.ledger, [p["sku"] for p in products])
        shown = [c for c in counters if any(c.node_id in m for m in moves.values())]
        now = wall_ms()
        return {
            "q": q,
            "products": products,
            "elsewhere": {p["sku"]: elsewhere(self.t, p["sku"], now) for p in products[:50]},
            "other_stores": self.t.ledger.other_stores.stores(),
            "now_ms": now,
            "moves": moves,
            "columns": shown or counters[:1],
            "terminals": counters,
            "version": self.live.db_version,
        }
