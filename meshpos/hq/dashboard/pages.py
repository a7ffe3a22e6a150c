"""What each dashboard page shows: a view reads HQ's storage for the filters in the query and
returns the template's context. Views run in a worker thread; bad filters raise InputError, which
the page shows instead of its figures."""

from __future__ import annotations

import json
from datetime import date, timedelta
from typing import Any

from starlette.datastructures import QueryParams

from meshpos.core.errors import InputError
from meshpos.domain.gst import BANDS_SETTING
from meshpos.domain.storetime import StoreTime
from meshpos.hq.accounts import Session
from meshpos.hq.dashboard import forms
from meshpos.hq.dashboard.charts import Bar, bar_chart, hbar_chart, sparkline
from meshpos.hq.dashboard.site import Context, Site, money
from meshpos.hq.dashboard.words import describe
from meshpos.hq.overview import store_statuses
from meshpos.hq.storage.browse import Page, StockQuery

CHAIN_TIME = StoreTime()
"""The dashboard's calendar: store time in the default zone (each store's own days are in its zone)."""
day_of = CHAIN_TIME.day
STOCK_PAGE = 100
LIST_PAGE = 50
FIGURES = ("sales", "returns", "exchanges", "net", "tax", "discount")
DEFAULT_DAYS = 14
MAX_DAYS = 366
LOW_STOCK = 5
GST_PREFIX = BANDS_SETTING
LOYALTY_KEYS = ("loyalty.earn_per_100", "loyalty.point_value")
PAYMENT_STATUSES = ("pending", "declined", "approved", "all")


def _store_names(site: Site) -> dict[str, str]:
    return {s.store: s.name for s in site.storage.enrolment.stores()}


def _store_filter(site: Site, q: QueryParams) -> str | None:
    store = (q.get("store") or "").strip() or None
    if store is not None and store not in _store_names(site):
        raise InputError(f"store {store!r} is not enrolled at HQ")
    return store


def _page(q: QueryParams) -> int:
    return forms.whole(q.get("page"), "page", 1, 100_000, 1)


def _days(since: str, until: str) -> list[str]:
    first, last = date.fromisoformat(since), date.fromisoformat(until)
    return [(first + timedelta(days=i)).isoformat() for i in range((last - first).days + 1)]


def _short_day(day: str) -> str:
    return date.fromisoformat(day).strftime("%d %b")


def _paged(found: Page, page: int, size: int) -> Context:
    """A page of rows, and what the pager shows."""
    return {"rows": found.rows, "found": found.total, "page": page,
            "pages": max(1, -(-found.total // size))}  # fmt: skip


def date_range(site: Site, q: QueryParams) -> tuple[str, str]:
    """The days a page covers: `from`..`to`, by default the last two weeks to today."""
    today = day_of(site.now_ms())
    until = forms.day(q.get("to"), "to date") or today
    start = (date.fromisoformat(until) - timedelta(days=DEFAULT_DAYS - 1)).isoformat()
    since = forms.day(q.get("from"), "from date") or start
    if since > until:
        raise InputError(f"the from date {since} is after the to date {until}")
    if len(_days(since, until)) > MAX_DAYS:
        raise InputError(f"choose at most {MAX_DAYS} days (a year) at a time")
    return since, until


# -- stores ---------------------------------------------------------------------------------------


def stores(site: Site, session: Session, q: QueryParams) -> Context:
    now = site.now_ms()
    rows = store_statuses(site.storage, now)
    show = q.get("show", "all")
    if show not in ("all", "offline", "attention"):
        raise InputError("show must be all, offline or attention")
    search = forms.text(q, "q", "search").lower()
    total = len(rows)
    if search:
        rows = [r for r in rows if search in r.store.lower() or search in r.name.lower()]
    if show == "offline":
        rows = [r for r in rows if not r.online]
    elif show == "attention":
        rows = [
            r for r in rows
            if not r.online or r.open_conflicts or r.card_declined or (r.ops_waiting or 0) > 0
        ]  # fmt: skip
    rows.sort(key=lambda r: (r.online, r.store))
    since = day_of(now - (DEFAULT_DAYS - 1) * 86_400_000)
    days = _days(since, day_of(now))
    nets: dict[str, dict[str, int]] = {}
    for d in site.storage.views.sales_by_day(None, since, None):
        nets.setdefault(str(d["store"]), {})[str(d["day"])] = int(d["net"])
    every = store_statuses(site.storage, now) if search or show != "all" else rows
    return {
        "rows": rows,
        "spark": {
            r.store: sparkline([nets.get(r.store, {}).get(d, 0) for d in days]) for r in rows
        },
        "total": total,
        "online": sum(r.online for r in every),
        "waiting": sum(r.ops_waiting or 0 for r in every),
        "conflicts": sum(r.open_conflicts for r in every),
        "card_pending": sum(r.card_pending for r in every),
        "show": show,
        "q": search,
        "days": DEFAULT_DAYS,
    }


# -- sales ----------------------------------------------------------------------------------------


def sales(site: Site, session: Session, q: QueryParams) -> Context:
    since, until = date_range(site, q)
    store = _store_filter(site, q)
    views = site.storage.views
    daily = views.sales_by_day(store, since, until) if store else views.chain_by_day(since, until)
    by_day = {str(d["day"]): d for d in daily}
    days = _days(since, until)
    bars = [
        Bar(_short_day(d), int(by_day[d]["net"]) if d in by_day else 0,
            f"{d}: {money(int(by_day[d]['net']) if d in by_day else 0)}")
        for d in days
    ]  # fmt: skip
    per_store: dict[str, dict[str, int]] = {}
    for d in views.sales_by_day(store, since, until):
        row = per_store.setdefault(
            str(d["store"]),
            dict.fromkeys(FIGURES, 0),
        )
        for k in row:
            row[k] += int(d[k])
    names = _store_names(site)
    ranked = sorted(per_store.items(), key=lambda kv: -kv[1]["net"])
    kinds = site.storage.takings.by_kind(store, since, until)
    return {
        "since": since,
        "until": until,
        "store": store or "",
        "stores": names,
        "chart": bar_chart(bars),
        "daily": [by_day[d] for d in days if d in by_day],
        "per_store": ranked,
        "store_chart": hbar_chart(
            [Bar(names.get(s, s), v["net"], money(v["net"])) for s, v in ranked[:15]]
        ),
        "kinds": kinds,
        "kinds_chart": hbar_chart(
            [Bar(str(k["method"]), int(k["amount"]), money(int(k["amount"]))) for k in kinds]
        ),
        "totals": {k: sum(v[k] for v in per_store.values()) for k in FIGURES},
    }


# -- stock ----------------------------------------------------------------------------------------


def stock(site: Site, session: Session, q: QueryParams) -> Context:
    store = _store_filter(site, q)
    low = q.get("low") == "1"
    at_most = forms.whole(q.get("at_most"), "low stock level", -1_000_000, 1_000_000, LOW_STOCK)
    page = _page(q)
    query = StockQuery(
        search=forms.text(q, "q", "search", limit=64),
        store=store,
        category=(q.get("category") or "").strip() or None,
        at_most=at_most if low else None,
        limit=STOCK_PAGE,
        offset=(page - 1) * STOCK_PAGE,
    )
    found = site.storage.browse.stock(query)
    return {
        **_paged(found, page, STOCK_PAGE),
        "stores": _store_names(site),
        "categories": site.storage.browse.categories(),
        "query": query,
        "low": low,
        "at_most": at_most,
    }


# -- loyalty --------------------------------------------------------------------------------------


def loyalty(site: Site, session: Session, q: QueryParams) -> Context:
    page = _page(q)
    search = forms.text(q, "q", "search", limit=64)
    found = site.storage.browse.customers(search, LIST_PAGE, (page - 1) * LIST_PAGE)
    rules = [r for r in site.storage.browse.settings("loyalty.") if r["key"] in LOYALTY_KEYS]
    return {
        **_paged(found, page, LIST_PAGE),
        "q": search,
        "asks": site.storage.escrow.asks(),
        "rules": rules,
        "stores": _store_names(site),
    }


# -- catalogue ------------------------------------------------------------------------------------


def catalogue(site: Site, session: Session, q: QueryParams) -> Context:
    page = _page(q)
    search = forms.text(q, "q", "search", limit=64)
    found = site.storage.browse.products(search, LIST_PAGE, (page - 1) * LIST_PAGE)
    bands: dict[tuple[str, str], dict[str, Any]] = {}
    for row in site.storage.browse.settings(GST_PREFIX):
        category = str(row["key"])[len(GST_PREFIX) :]
        entry = bands.setdefault(
            (category, json.dumps(row["value"])),
            {"category": category, "bands": _bands(row["value"]), "stores": []},
        )
        entry["stores"].append(row["store"])
    return {
        **_paged(found, page, LIST_PAGE),
        "q": search,
        "bands": [bands[k] for k in sorted(bands)],
        "categories": site.storage.browse.categories(),
        "stores": _store_names(site),
    }


def _bands(value: object) -> list[dict[str, Any]]:
    """A band setting as the page lists it; a value of another shape shows as one line."""
    if isinstance(value, list) and all(isinstance(b, dict) and "rate" in b for b in value):
        return [{"up_to": b.get("up_to"), "rate": b["rate"]} for b in value]
    return []


# -- payments -------------------------------------------------------------------------------------


def payments(site: Site, session: Session, q: QueryParams) -> Context:
    store = _store_filter(site, q)
    status = q.get("status") or "pending"
    if status not in PAYMENT_STATUSES:
        raise InputError(f"status must be one of {', '.join(PAYMENT_STATUSES)}")
    names = _store_names(site)
    b = site.storage.browse
    return {
        "status": status,
        "store": store or "",
        "stores": names,
        "rows": b.payments(None if status == "all" else status, store),
        "floats": b.card_floats([store] if store else sorted(names)),
        "blocklist": site.storage.blocklist.entries(),
    }


# -- conflicts ------------------------------------------------------------------------------------


def conflicts(site: Site, session: Session, q: QueryParams) -> Context:
    store = _store_filter(site, q)
    names = _store_names(site)
    grouped: dict[str, list[dict[str, object]]] = {}
    for a in site.storage.anomalies.open(store):
        words = describe(a.kind, a.subject, a.detail, money)
        grouped.setdefault(a.store, []).append({"kind": a.kind, "words": words})
    return {"store": store or "", "stores": names, "grouped": grouped}


# -- people ---------------------------------------------------------------------------------------


def people(site: Site, session: Session, q: QueryParams) -> Context:
    return {"people": site.accounts.people()}


def account(site: Site, session: Session, q: QueryParams) -> Context:
    return {}
