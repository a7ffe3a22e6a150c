"""What the till page shows of a session, as plain data for its template (and as JSON)."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from meshpos.core.errors import ConfigError, NotFound
from meshpos.domain.gst import Supply
from meshpos.domain.pricing import LoyaltyRule
from meshpos.domain.upi import VPA_SETTING
from meshpos.ledger.print_queue import JobState
from meshpos.service import printer_words
from meshpos.service.daemon_link import daemon_status
from meshpos.service.history import customer_history
from meshpos.service.terminal import Terminal
from meshpos.service.till import TillLine, TillSession, TillTotals
from meshpos.web.printer import TillPrinter
from meshpos.web.session import WebSession
from meshpos.web.signin import Sessions

MAX_TILES = 12


def _item(n: int, ln: TillLine) -> dict[str, Any]:
    p = ln.product
    return {
        "n": n,
        "sku": p.sku,
        "name": p.name,
        "size": p.size,
        "colour": p.colour,
        "price": p.price,
        "qty": ln.qty,
    }


def _lines(till: TillSession) -> list[dict[str, Any]]:
    """The lines with their discounts and totals as priced (unpriced lines are coming back), and
    the stock this counter sees of each."""
    priced = till.priced()
    priced_lines = iter(priced.lines if priced else [])
    lines = []
    for i, ln in enumerate(till.lines, 1):
        pl = next(priced_lines) if priced and ln.qty > 0 else None
        stock = till.in_stock(ln.product.sku)
        lines.append(
            {
                **_item(i, ln),
                "limit": ln.limit,
                "discount_spec": ln.discount,
                "discount": pl["discount"] if pl else 0,
                "total": pl["total"] if pl else ln.product.price * ln.qty,
                "stock": stock,
                "short": till.mode == "sale" and ln.qty > stock,
                "selected": i == till.selected,
            }
        )
    return lines


def _going_out(take: TillSession, coming_back: TillTotals) -> dict[str, Any]:
    """An exchange's items going out, and what the customer pays (or gets back) net."""
    total = take.totals().total
    return {
        "lines": [
            {
                **_item(i, ln),
                "total": ln.product.price * ln.qty,
                "stock": take.in_stock(ln.product.sku),
            }
            for i, ln in enumerate(take.lines, 1)
        ],
        "total": total,
        "net": total - coming_back.total,
    }


def _tenders(till: TillSession, rule: LoyaltyRule) -> list[dict[str, Any]]:
    return [
        {
            "method": tn.method,
            "points": tn.amount if tn.method == "points" else None,
            "amount": (tn.amount or 0) * rule.point_value if tn.method == "points" else tn.amount,
            "last4": tn.card_last4,
            "approval": tn.card_approval,
            "pending": bool(tn.card_sealed),
            "code": tn.code,
            "upi_ref": tn.upi_ref,
        }
        for tn in till.tenders
    ]


def _names(cfg_value: Any, key: str) -> list[str]:
    if cfg_value is None:
        return []
    if not isinstance(cfg_value, list) or not all(isinstance(v, str) for v in cfg_value):
        raise ConfigError(f"[till] {key} must be a list of strings")
    return list(cfg_value)


class TillScreen:
    def __init__(self, t: Terminal, sessions: Sessions, printer: TillPrinter) -> None:
        self.t = t
        self.sessions = sessions
        self.printer = printer

    def _customer(self, till: TillSession) -> dict[str, Any] | None:
        """The sale's customer as stored now, with where their redeemable points are held."""
        if not till.customer:
            return None
        cid = till.customer["customer_id"]
        try:
            fresh = self.t.customer(cid)
        except NotFound:
            fresh = till.customer
        return {
            **fresh,
            "rights_here": self.t.rights(cid),
            "elsewhere": self.t.rights_elsewhere(cid),
            "history": customer_history(self.t, cid, 5),
        }

    def tiles(self) -> dict[str, list[Any]]:
        """Favourite items and category tiles, from `[till] favourites` (SKUs) and `[till]
        categories` (names; default: the catalogue's categories)."""
        section = self.t.cfg.section("till")
        favourites = []
        for sku in _names(section.get("favourites"), "favourites")[:MAX_TILES]:
            try:
                product = self.t.product(sku)
            except NotFound:
                continue
            favourites.append({"sku": product.sku, "name": product.name, "price": product.price})
        categories = _names(section.get("categories"), "categories")
        if not categories:
            seen = {str(p.get("category") or "") for p in self.t.products(limit=5000)}
            categories = sorted(c for c in seen if c)
        return {"favourites": favourites, "categories": categories[:MAX_TILES]}

    def printer_trouble(self) -> dict[str, Any] | None:
        """The receipt printer's trouble in plain words, and the counters it could print on."""
        jobs = self.t.ledger.print_queue.jobs(
            (JobState.WAITING, JobState.PRINTING, JobState.FAILED)
        )
        error = next((j.last_error for j in jobs if j.last_error), "")
        if not error:
            return None
        trouble = printer_words.explain(error, len(jobs))
        status = daemon_status(self.t.cfg.dir)
        peers = [str(p.get("name")) for p in status.get("peers") or [] if p.get("up")]
        return {"text": trouble.text, "raw": trouble.raw, "peers": peers, "daemon": bool(status)}

    def view(self, s: WebSession) -> dict[str, Any]:
        till = s.till
        totals = till.totals()
        rule = self.t.loyalty_rule()
        active = s.take if s.take is not None else till
        return {
            "mode": till.mode,
            "ref_sale": till.ref_sale,
            "refund": till.refund_method,
            "lines": _lines(till),
            "totals": totals,
            "sale_discount": till.sale_discount,
            "customer": self._customer(till),
            "buyer": _buyer(b) if till.mode == "sale" and (b := till.buyer) else None,
            "tenders": _tenders(till, rule),
            "point_value": rule.point_value,
            "take": None if s.take is None else _going_out(s.take, totals),
            "notice": s.notice if s.notice and s.notice.page == "till" else None,
            "approval": s.approval
            if s.approval and s.approval.action.startswith("/till")
            else None,
            "approvers": self.sessions.approvers() if s.approval else [],
            "customers": s.customers,
            "products": s.products,
            "picked": s.picked,
            "empty": till.empty,
            "selected": till.selected,
            "oversell": active.oversell_question(),
            "tiles": self.tiles(),
            "held": till.parked() if s.panel == "held" else [],
            "held_count": len(till.parked()),
            "panel": s.panel,
            "printer": self.printer_trouble(),
            "upi_vpa": self.t.cfg.section("store").get(VPA_SETTING) or "",
        }

    def last(self, s: WebSession) -> dict[str, Any] | None:
        """The last sale of this session, and how its receipt is doing."""
        if s.last is None:
            return None
        return {**s.last, **self.printer.receipt(s.last["sale_id"])}

    def context(self, s: WebSession) -> dict[str, Any]:
        """What the till's fragment template needs."""
        view = self.view(s)
        return {
            "v": view,
            "last": self.last(s),
            "printer": view["printer"],
            "has_last": s.last is not None,
        }

    def as_json(self, s: WebSession) -> dict[str, Any]:
        """The till state as JSON (for scripts and tests; the page itself is HTML)."""
        view = self.view(s)
        out: dict[str, Any] = json.loads(
            json.dumps(
                {
                    "user": s.user or self.t.cfg.user,
                    "mode": view["mode"],
                    "ref_sale": view["ref_sale"],
                    "lines": view["lines"],
                    "totals": dataclasses.asdict(view["totals"]),
                    "customer": view["customer"],
                    "tenders": view["tenders"],
                    "notice": None if s.notice is None else dataclasses.asdict(s.notice),
                    "oversell": view["oversell"],
                    "held": view["held_count"],
                    "last": self.last(s),
                },
                default=str,
            )
        )
        return out


def _buyer(supply: Supply) -> str:
    """The buyer line of the totals, short enough for one line: GSTIN and the tax heads."""
    return f"{supply.buyer_gstin} · {'IGST' if supply.inter_state else 'CGST + SGST'}"
