"""The report of a run: invariants checked, figures, time series; as JSON, a table and an HTML page.

`build_report` turns a finished `Simulation` into one plain dict. Everything in it is a function of
the scenario and the seed: keys are sorted when written, lists are sorted or in simulated-time
order, numbers are ints or rounded floats, and nothing reads the wall clock, so two runs give the
same bytes. The HTML page embeds its plots (matplotlib, Agg backend) as base64 PNGs: one file.
"""

from __future__ import annotations

import base64
import hashlib
import html
import io
import json
from collections import Counter
from collections.abc import Collection
from typing import Any, Protocol

from meshpos.domain.money import group
from meshpos.domain.storetime import StoreTime
from meshpos.ledger.schema import VIEW_TABLES
from meshpos.ledger.store import Ledger
from meshpos.sim.nodes import DAY_MS, HQ
from meshpos.sim.scenario import FaultConf, Scenario, format_clock
from meshpos.sim.store import StoreSim
from meshpos.sim.truth import SALE_KINDS

SLOW_COPY_MS = 60_000


class FinishedRun(Protocol):
    """A simulation that ran (meshpos.sim.engine.Simulation)."""

    sc: Scenario
    stores: list[StoreSim]
    samples: list[tuple[int, list[dict[str, int]]]]
    faults: list[tuple[str, FaultConf]]


def views_digest(ledger: Ledger) -> str:
    """A digest of every view table, canonically ordered: equal digests, equal views."""
    h = hashlib.sha256()
    for table in VIEW_TABLES:
        h.update(table.encode())
        for row in sorted(ledger.views.table_rows(table), key=repr):
            h.update(repr(row).encode())
    return h.hexdigest()


def _r(x: float, places: int = 3) -> float:
    return round(float(x), places)


def _pct(values: list[int], p: float) -> int:
    if not values:
        return 0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p / 100))]


def _store_checks(s: StoreSim) -> dict[str, Any]:
    """Invariants and end-of-run figures of one store, from its replicas and the ground truth."""
    truth = s.truth
    violations: list[str] = []
    replicas = s.replicas()
    converged = bool(replicas) and s.converged()
    if not converged:
        union: dict[str, int] = {}
        for n in replicas:
            for o, q in n.replica.current().items():
                union[o] = max(union.get(o, 0), q)
        behind = {
            n.name: sum(q - n.replica.current().get(o, 0) for o, q in union.items())
            for n in replicas
        }
        pending = {n.name: n.ledger.pending_count() for n in replicas if n.ledger.pending_count()}
        violations.append(
            f"{s.name}: replicas did not converge within the final heal "
            f"(ops behind: {dict(sorted(behind.items()))}; waiting past a gap: {pending})"
        )
    digests = {n.name: views_digest(n.ledger) for n in replicas}
    views_equal = len(set(digests.values())) <= 1
    if converged and not views_equal:
        violations.append(f"{s.name}: replicas hold the same ops but different views: {digests}")
    ref = s.nodes[HQ] if s.hq_enabled else (replicas[0] if replicas else None)
    lost: list[str] = []
    lost_sales = 0
    if ref is not None:
        held = ref.ledger.signatures()
        for key in sorted(truth.rung):
            r = truth.rung[key]
            if held.get(key) != r.sig:
                lost.append(f"{r.node}:{key[1]} ({r.kind}, {format_clock(s.sc.start_ms + r.at)})")
                lost_sales += r.kind in SALE_KINDS
    if lost:
        violations.append(
            f"{s.name}: {len(lost)} acknowledged ops are missing at {ref.name if ref else '-'} "
            f"({lost_sales} sales/returns), e.g. {', '.join(lost[:3])}"
        )
    dead = sorted(truth.lost_dead.values(), key=lambda r: (r.at, r.node))
    forks = [r for r in truth.rejections if _reject_class(r[3]) == "forked chain"]
    if forks:
        violations.append(
            f"{s.name}: {len(forks)} refusals of a forked chain (a node signed two ops with one "
            f"seq, e.g. after coming back with its old identity), first: {forks[0][3]}"
        )
    # A double spend is judged from the ground truth (what counters signed), not from a replica's
    # views: the fold gives no authority to a spend beyond the escrow held, so views never show it.
    points = truth.points_signed()
    negative = _double_spent(points)
    customers = len(points)
    cards = truth.cards_signed()
    overspent = sorted(
        f"{key.partition(':')[2]} (given {given}, spent {spent})"
        for key, (given, spent) in cards.items()
        if spent > given
    )
    conflicts: Counter[str] = Counter()
    examples: list[str] = []
    oversells: list[dict[str, Any]] = []
    stranded = 0
    unauthorised: list[dict[str, Any]] = []
    if ref is not None:
        views = ref.ledger.views
        unauthorised = views.unauthorised()
        open_now = views.conflicts("open")
        conflicts = Counter(str(c["kind"]) for c in open_now)
        examples = [
            f"{c['conflict_id']}: {json.dumps(c['detail'], sort_keys=True)}" for c in open_now[:3]
        ]
        oversells = _oversells(s, ref.ledger, open_now)
        retired = [n.node_id for n in s.nodes.values() if n.retired]
        stranded = views.rights_held_by(retired)
    if negative:
        violations.append(f"{s.name}: points double-spent: {', '.join(sorted(negative)[:5])}")
    if overspent:
        violations.append(f"{s.name}: gift cards double-spent: {', '.join(overspent[:5])}")
    if unauthorised:
        first = unauthorised[0]
        violations.append(
            f"{s.name}: {len(unauthorised)} ops without authority (the fold refused what a "
            f"counter made), e.g. {first['origin']}:{first['seq']} ({first['rule']}): "
            f"{first['detail']}"
        )
    hq_equal = None
    if s.hq_enabled:
        counters = [n for n in replicas if n.kind == "counter"]
        union_c: dict[str, int] = {}
        for n in counters:
            for o, q in n.replica.current().items():
                union_c[o] = max(union_c.get(o, 0), q)
        hq_vv = s.nodes[HQ].replica.current()
        hq_equal = all(hq_vv.get(o, 0) >= q for o, q in union_c.items()) and (
            not counters or digests.get(HQ) == digests.get(counters[0].name)
        )
        if not hq_equal:
            missing = sum(max(0, q - hq_vv.get(o, 0)) for o, q in union_c.items())
            violations.append(
                f"{s.name}: HQ does not equal the union of the store ({missing} ops missing)"
            )
    copy_ms: list[int] = []
    never_copied = 0
    for key, r in truth.rung.items():
        if r.kind not in SALE_KINDS:
            continue
        at = truth.copied.get(key)
        if at is None:
            never_copied += 1
        else:
            copy_ms.append(at - r.at)
    inversions = _lww_inversions(truth.price_writes)
    lan, wan = s.metrics.traffic()
    rejected = Counter(_reject_class(r[3]) for r in truth.rejections)
    received = sum(q for n in replicas for o, q in n.ledger.vv().items() if o != n.node_id)
    return {
        "checked": {
            "converged_after_final_heal": len(replicas),
            "views_equal": len(replicas) * len(VIEW_TABLES),
            "no_lost_acknowledged_ops": len(truth.rung) if ref is not None else 0,
            "no_double_spent_points": customers,
            "no_double_spent_giftcards": len(cards),
            "every_op_had_authority": len(truth.rung) if ref is not None else 0,
            "hq_equals_union_of_stores": 1 if s.hq_enabled else 0,
            # every op a replica took from another origin had its chain link checked on the way
            "no_forked_chains": received,
        },
        "oversells": oversells,
        "violations": violations,
        "converged": converged,
        "final_converge_s": None
        if s.final_converge_ms is None
        else _r(s.final_converge_ms / 1000, 1),
        "views_equal": views_equal,
        "hq_equals_union": hq_equal,
        "lost": len(lost),
        "lost_sales": lost_sales,
        "lost_with_dead_disk": len(dead),
        "lost_with_dead_disk_sales": sum(r.kind in SALE_KINDS for r in dead),
        "forks": len(forks),
        "conflicts": dict(sorted(conflicts.items())),
        "conflict_examples": examples,
        "stranded_points": stranded,
        "unauthorised": dict(sorted(Counter(str(u["rule"]) for u in unauthorised).items())),
        "copy_ms": copy_ms,
        "never_copied": never_copied,
        "lww_inversions": inversions,
        "lan_bytes": lan,
        "wan_bytes": wan,
        "rejected": dict(sorted(rejected.items())),
        "ops": len(truth.rung),
    }


def _oversells(s: StoreSim, ledger: Ledger, open_now: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Open oversell conflicts by SKU: the stock left, the units each counter sold, and the
    counters whose sales took it below zero (the ops the conflict names, newest first)."""
    names = {n.node_id: n.name for n in s.nodes.values()}
    out = []
    for c in open_now:
        if c["kind"] != "oversell":
            continue
        sku = str(c["subject"])
        last = {str(op).rpartition(":")[0] for op in c["ops"]}
        out.append(
            {
                "store": s.name,
                "sku": sku,
                "stock": int(c["detail"].get("stock", 0)),
                "sold_by": {
                    names.get(o, o): q for o, q in ledger.views.sold_by_origin(sku).items()
                },
                "counters": sorted(names.get(o, o) for o in last),
            }
        )
    return sorted(out, key=lambda o: (o["stock"], o["store"], o["sku"]))


def _double_spent(points: list[tuple[str, int, int, int, int]]) -> list[str]:
    """Customers who redeemed more points than were ever credited to them (earned, adjusted, or
    given back by a return). A balance below zero alone is not a double spend: a return can claw
    back points already redeemed, and the fold flags that as a conflict for a manager."""
    out = []
    for cid, adjusted, earned, redeemed, refunded in points:
        credited = max(adjusted, 0) + earned + refunded
        if redeemed > credited:
            out.append(f"{cid} redeemed {redeemed} of {credited} credited")
    return out


def _reject_class(reason: str) -> str:
    """A refusal's kind. In the simulator nobody forges ops, so an op signed twice with one seq,
    or one that does not follow its origin's op before it, means that origin's chain forked."""
    if "two different ops" in reason or "does not follow the op before it" in reason:
        return "forked chain"
    for mark in ("unknown node", "signature", "store", "malformed"):
        if mark in reason:
            return mark
    return "other"


def _lww_inversions(price_writes: list[tuple[str, int, int, str, int]]) -> int:
    """Prices where the write that wins by (HLC, origin) is not the one made last in true time:
    a clock running ahead made an older edit win."""
    by_sku: dict[str, list[tuple[str, int, int, str, int]]] = {}
    for w in price_writes:
        by_sku.setdefault(w[0], []).append(w)
    count = 0
    for writes in by_sku.values():
        if len(writes) < 2:
            continue
        winner = max(writes, key=lambda w: (w[2], w[3]))
        latest = max(writes, key=lambda w: (w[1], w[2], w[3]))
        if winner is not latest and winner[1] < latest[1]:
            count += 1
    return count


def build_report(sim: FinishedRun) -> dict[str, Any]:
    sc = sim.sc
    stores = sim.stores
    checks = {s.name: _store_checks(s) for s in stores}
    violations = sorted(v for c in checks.values() for v in c["violations"])
    counts: Counter[str] = Counter()
    failures: Counter[str] = Counter()
    escrow: Counter[str] = Counter()
    for s in stores:
        counts.update(s.shoppers.tally.counts)
        failures.update(s.shoppers.tally.failures)
        escrow.update(s.shoppers.escrow)
    copy_ms = [ms for c in checks.values() for ms in c["copy_ms"]]
    heals: list[dict[str, Any]] = []
    for s in stores:
        for w in s.metrics.watches:
            took = None if w.done_at is None or w.done_at < 0 else _r((w.done_at - w.at) / 1000, 1)
            heals.append(
                {
                    "store": s.name,
                    "at": format_clock(sc.start_ms + w.at),
                    "at_s": w.at // 1000,
                    "what": w.label,
                    "converged_after_s": took,
                }
            )
    heals.sort(key=lambda h: (h["at_s"], h["store"], h["what"]))
    times = [h["converged_after_s"] for h in heals if h["converged_after_s"] is not None]
    series = _series(sim)
    hq_lag_max = max(series["hq_lag_s"], default=0)
    clocks = {}
    for s in stores:
        for n in sorted(s.nodes.values(), key=lambda n: n.name):
            if n.max_skew_ms or n.clock.drift_ppm or n.max_lead_ms > 1000 or n.receipts_off:
                clocks[f"{s.name}/{n.name}"] = {
                    "skew_s": n.max_skew_ms // 1000,
                    "drift_ppm": n.clock.drift_ppm,
                    "max_hlc_lead_s": _r(n.max_lead_ms / 1000, 1),
                    "ops_hlc_ahead_5min": n.ops_led,
                    "ops_signed": n.ops_signed,
                    "receipts_off_by_5min": n.receipts_off,
                }
    per_store = [
        {
            "store": s.name,
            "region": s.conf.region,
            "counters": s.conf.counters,
            "sales": s.shoppers.tally.counts["sale"] + s.shoppers.tally.counts["redemption"],
            "ops": checks[s.name]["ops"],
            "lost": checks[s.name]["lost"],
            "lost_with_dead_disk": checks[s.name]["lost_with_dead_disk"],
            "oversells": checks[s.name]["conflicts"].get("oversell", 0),
            "escrow_refused": s.shoppers.escrow["refused"],
            "hq_lag_max_s": _r(
                max((smp[idx]["hq_lag_ms"] for _, smp in sim.samples), default=0) / 1000, 1
            ),
            "lan_bytes": checks[s.name]["lan_bytes"],
            "wan_bytes": checks[s.name]["wan_bytes"],
            "relay_changes": s.hq_link.changes,
            "final_converge_s": checks[s.name]["final_converge_s"],
        }
        for idx, s in enumerate(stores)
    ]
    conflicts: Counter[str] = Counter()
    for c in checks.values():
        conflicts.update(c["conflicts"])
    rejected: Counter[str] = Counter()
    for c in checks.values():
        rejected.update(c["rejected"])
    lan = sum(c["lan_bytes"] for c in checks.values())
    wan = sum(c["wan_bytes"] for c in checks.values())
    stats = [s.net.stats for s in stores]
    fault_list = sorted(
        (
            {
                "store": store,
                "at": format_clock(sc.start_ms + f.at_ms),
                "at_s": f.at_ms // 1000,
                "kind": f.kind,
                "target": f.node or ",".join(f.stores) or f.region or "all",
                "duration_s": (f.duration_ms or (f.after_ms if f.kind == "disk_death" else 0))
                // 1000,
            }
            for store, f in sim.faults
        ),
        key=lambda d: (d["at_s"], d["store"], d["kind"], d["target"]),
    )
    total_ops = sum(c["ops"] for c in checks.values())
    invariant_checks = _invariant_checks(checks, violations)
    return {
        "scenario": {
            "name": sc.name,
            "description": sc.description,
            "seed": sc.seed,
            "start": format_clock(sc.start_ms),
            "zone": StoreTime().local(DAY_MS + sc.start_ms).strftime("%Z"),
            "duration_s": sc.duration_ms // 1000,
            "stores": len(stores),
            "counters": sum(s.conf.counters for s in stores),
            "relay": sc.hq.relay if sc.hq.enabled else "none",
            "catalogue_skus": len(stores[0].rows) if stores else 0,
        },
        "ok": not violations,
        "violations": violations,
        "invariant_checks": invariant_checks,
        "invariants": {i["invariant"]: i["holds"] for i in invariant_checks},
        "workload": {
            "sales": counts["sale"],
            "redemptions": counts["redemption"],
            "returns": counts["return"],
            "loyalty_sales": counts["loyalty_sales"],
            "points_earned": counts["points_earned"],
            "points_redeemed": counts["points_redeemed"],
            "stock_receipts": counts["receipt"],
            "markdowns": counts["markdown"],
            "hq_price_changes": counts["hq_price_change"],
            "redirected_to_another_counter": counts["redirected"],
            "turned_away": counts["turned_away"],
            "refused": dict(sorted(failures.items())),
        },
        "ops": {
            "signed": total_ops,
            "lost": sum(c["lost"] for c in checks.values()),
            "lost_sales": sum(c["lost_sales"] for c in checks.values()),
            "lost_with_dead_disk": sum(c["lost_with_dead_disk"] for c in checks.values()),
            "lost_with_dead_disk_sales": sum(
                c["lost_with_dead_disk_sales"] for c in checks.values()
            ),
            "second_copy_ms": {
                "p50": _pct(copy_ms, 50),
                "p99": _pct(copy_ms, 99),
                "max": max(copy_ms, default=0),
                "over_60s": sum(ms > SLOW_COPY_MS for ms in copy_ms),
                "never": sum(c["never_copied"] for c in checks.values()),
            },
        },
        "convergence": {
            "heals": heals,
            "heals_converged": len(times),
            "heals_not_converged": len(heals) - len(times),
            "max_s": max(times, default=0),
            "median_s": _pct([int(t * 10) for t in times], 50) / 10 if times else 0,
            "final_s": max((c["final_converge_s"] or 0 for c in checks.values()), default=0),
        },
        "stock": {
            "max_divergent_skus": max(series["stock_skus"], default=0),
            "max_units_spread": max(series["stock_units"], default=0),
        },
        "conflicts": {
            "open": dict(sorted(conflicts.items())),
            "oversells": conflicts.get("oversell", 0),
            "oversells_by_sku": sorted(
                (o for c in checks.values() for o in c["oversells"]),
                key=lambda o: (o["stock"], o["store"], o["sku"]),
            )[:100],
            "examples": sorted(e for c in checks.values() for e in c["conflict_examples"])[:5],
        },
        "escrow": {
            "asks": escrow["asks"],
            "grants": escrow["grants"],
            "points_granted": escrow["points_granted"],
            "redeemed_after_ask": escrow["redeemed_after_ask"],
            "double_spends_prevented": escrow["refused"],
            "refused_rights_out_of_reach": escrow["refused_out_of_reach"],
            "abandoned": escrow["abandoned"],
            "stranded_points_on_dead_terminals": sum(c["stranded_points"] for c in checks.values()),
        },
        "hq": {
            "relay": sc.hq.relay if sc.hq.enabled else "none",
            "max_lag_s": hq_lag_max,
            "max_ops_waiting": max(series["hq_missing"], default=0),
            "relay_changes": sum(s.hq_link.changes for s in stores),
            "relay_history": [
                {"at": format_clock(sc.start_ms + at), "store": s.name, "node": node, "what": why}
                for s in stores
                for at, node, why in s.hq_link.history
            ][:200],
            "catch_up_after_wan_s": sorted(
                h["converged_after_s"] or -1
                for h in heals
                if "WAN" in h["what"] or "internet" in h["what"]
            ),
        },
        "clocks": {
            "nodes": clocks,
            "lww_inversions": sum(c["lww_inversions"] for c in checks.values()),
        },
        "network": {
            "lan_bytes": lan,
            "wan_bytes": wan,
            "wan_bytes_per_op": _r(wan / total_ops, 1) if total_ops else 0,
            "messages": sum(st.messages for st in stats),
            "delivered": sum(st.delivered for st in stats),
            "dropped": sum(st.dropped for st in stats),
            "duplicated": sum(st.duplicated for st in stats),
            "reordered": sum(st.reordered for st in stats),
            "rejected": dict(sorted(rejected.items())),
            "peer_up_events": sum(s.truth.peer_events["up"] for s in stores),
            "peer_down_events": sum(s.truth.peer_events["down"] for s in stores),
        },
        "faults": fault_list,
        "timeline": sorted(
            (
                {
                    "at": format_clock(sc.start_ms + at),
                    "at_s": at // 1000,
                    "store": s.name,
                    "what": what,
                    "detail": detail,
                }
                for s in stores
                for at, what, detail in s.truth.timeline
            ),
            key=lambda d: (d["at_s"], d["store"], d["what"], d["detail"]),
        )[:500],
        "per_store": per_store,
        "series": series,
        "spans": sorted({(a // 1000, b // 1000, k) for s in stores for a, b, k in s.faults.spans}),
    }


INVARIANTS = (  # (key, what it says, what it is checked on: one, many)
    (
        "converged_after_final_heal",
        "every replica converged after the final heal",
        ("replica", "replicas"),
    ),
    (
        "views_equal",
        "replicas holding the same ops hold the same views",
        ("view table", "view tables"),
    ),
    (
        "no_lost_acknowledged_ops",
        "no acknowledged op lost (disk survived)",
        ("acknowledged op", "acknowledged ops"),
    ),
    ("no_double_spent_points", "no loyalty point redeemed twice", ("customer", "customers")),
    (
        "no_double_spent_giftcards",
        "no gift card or credit note spent beyond its value",
        ("card", "cards"),
    ),
    (
        "every_op_had_authority",
        "every op had authority under the store's rules",
        ("op signed", "ops signed"),
    ),
    ("hq_equals_union_of_stores", "HQ holds the union of each store", ("store", "stores")),
    (
        "no_forked_chains",
        "no chain forked (one seq signed twice)",
        ("op received", "ops received"),
    ),
)


def _invariant_checks(
    checks: dict[str, dict[str, Any]], violations: list[str]
) -> list[dict[str, Any]]:
    """Each invariant: what it says, whether it held, and how many things it was checked on."""
    results = {
        "converged_after_final_heal": all(c["converged"] for c in checks.values()),
        "views_equal": all(c["views_equal"] for c in checks.values()),
        "no_lost_acknowledged_ops": all(c["lost"] == 0 for c in checks.values()),
        "no_double_spent_points": not any("points double-spent" in v for v in violations),
        "no_double_spent_giftcards": not any("gift cards double-spent" in v for v in violations),
        "every_op_had_authority": all(not c["unauthorised"] for c in checks.values()),
        "hq_equals_union_of_stores": all(
            c["hq_equals_union"] is not False for c in checks.values()
        ),
        "no_forked_chains": all(c["forks"] == 0 for c in checks.values()),
    }
    out = []
    for key, says, (one, many) in INVARIANTS:
        n = sum(c["checked"][key] for c in checks.values())
        out.append(
            {"invariant": key, "says": says, "holds": results[key], "checked": n,
             "unit": one if n == 1 else many}
        )  # fmt: skip
    return out


def _series(sim: FinishedRun) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {
        "t_s": [],
        "stock_skus": [],
        "stock_units": [],
        "ops_behind": [],
        "hq_missing": [],
        "hq_lag_s": [],
        "counters_selling": [],
        "lan_bytes": [],
        "wan_bytes": [],
    }
    for t, per_store in sim.samples:
        out["t_s"].append(t // 1000)
        out["stock_skus"].append(sum(p["stock_skus"] for p in per_store))
        out["stock_units"].append(sum(p["stock_units"] for p in per_store))
        out["ops_behind"].append(sum(p["ops_behind"] for p in per_store))
        out["hq_missing"].append(sum(p["hq_missing"] for p in per_store))
        out["hq_lag_s"].append(_r(max((p["hq_lag_ms"] for p in per_store), default=0) / 1000, 1))
        out["counters_selling"].append(sum(p["counters_selling"] for p in per_store))
        out["lan_bytes"].append(sum(p["lan_bytes"] for p in per_store))
        out["wan_bytes"].append(sum(p["wan_bytes"] for p in per_store))
    return out


# -- output -------------------------------------------------------------------------------------


def to_json(report: dict[str, Any]) -> bytes:
    return (json.dumps(report, sort_keys=True, indent=1, ensure_ascii=False) + "\n").encode()


OVERSELL_ROWS = 12  # in the table; the HTML page lists them all


def _mb(n: int) -> str:
    return f"{n / 1e6:,.2f} MB" if n >= 100_000 else f"{n / 1e3:,.1f} kB"


def summary_rows(report: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(section, figure, value) rows for the table."""
    w, o, c, e, h, n = (
        report[k] for k in ("workload", "ops", "convergence", "escrow", "hq", "network")
    )
    inv = report["invariants"]
    rows = [
        (
            "result",
            "invariants",
            "all hold" if report["ok"] else f"{len(report['violations'])} VIOLATED",
        ),
        *(
            (
                "invariants",
                i["says"],
                f"{'holds' if i['holds'] else 'VIOLATED'}: {group(i['checked'])} {i['unit']} checked",
            )
            for i in report["invariant_checks"]
        ),
        (
            "workload",
            "sales / redemptions / returns",
            f"{w['sales']:,} / {w['redemptions']:,} / {w['returns']:,}",
        ),
        (
            "workload",
            "stock receipts / markdowns / HQ prices",
            f"{w['stock_receipts']} / {w['markdowns']} / {w['hq_price_changes']}",
        ),
        (
            "workload",
            "redirected / turned away",
            f"{w['redirected_to_another_counter']} / {w['turned_away']}",
        ),
        ("ops", "signed", f"{o['signed']:,}"),
        ("ops", "lost (acknowledged, disk survived)", str(o["lost"])),
        (
            "ops",
            "lost with a dead disk (no peer had them)",
            f"{o['lost_with_dead_disk']} ({o['lost_with_dead_disk_sales']} sales)",
        ),
        (
            "ops",
            "second copy p50 / p99 / max",
            "{p50} / {p99} / {max:,} ms".format(**o["second_copy_ms"]),
        ),
        ("ops", "sales on one copy > 60 s", str(o["second_copy_ms"]["over_60s"])),
        (
            "convergence",
            "heals (converged / not)",
            f"{c['heals_converged']} / {c['heals_not_converged']}",
        ),
        ("convergence", "after a heal: median / max", f"{c['median_s']} s / {c['max_s']} s"),
        ("convergence", "after the final heal", f"{c['final_s']} s"),
        ("convergence", "views equal everywhere", "yes" if inv["views_equal"] else "NO"),
        ("stock", "max SKUs counters disagree on", str(report["stock"]["max_divergent_skus"])),
        ("stock", "max units of disagreement", str(report["stock"]["max_units_spread"])),
        ("conflicts", "oversells flagged", str(report["conflicts"]["oversells"])),
        *(
            (
                "conflicts",
                f"oversold {o['sku']}"
                + (f" ({o['store']})" if len(report["per_store"]) > 1 else ""),
                f"stock {o['stock']}, taken below 0 by {', '.join(o['counters'])}",
            )
            for o in report["conflicts"]["oversells_by_sku"][:OVERSELL_ROWS]
        ),
        (
            "conflicts",
            "open, by kind",
            ", ".join(f"{k} {v}" for k, v in report["conflicts"]["open"].items()) or "none",
        ),
        (
            "escrow",
            "asks / grants / redeemed after ask",
            f"{e['asks']} / {e['grants']} / {e['redeemed_after_ask']}",
        ),
        (
            "escrow",
            "double spends prevented (refused)",
            f"{e['double_spends_prevented']} ({e['refused_rights_out_of_reach']} rights out of reach)",
        ),
        (
            "escrow",
            "points stranded on dead terminals",
            str(e["stranded_points_on_dead_terminals"]),
        ),
        ("hq", "max lag / ops waiting", f"{h['max_lag_s']:,} s / {h['max_ops_waiting']:,}"),
        (
            "hq",
            "caught up after WAN back",
            ", ".join(f"{x} s" for x in h["catch_up_after_wan_s"][:6]) or "-",
        ),
        (
            "hq",
            "equals the union of the stores",
            "yes" if inv["hq_equals_union_of_stores"] else "NO",
        ),
        ("clocks", "LWW inversions (older edit won)", str(report["clocks"]["lww_inversions"])),
        ("network", "bytes LAN / WAN", f"{_mb(n['lan_bytes'])} / {_mb(n['wan_bytes'])}"),
        (
            "network",
            "messages / dropped (lost or unreachable) / duplicated / reordered",
            f"{n['messages']:,} / {n['dropped']:,} / {n['duplicated']:,} / {n['reordered']:,}",
        ),
    ]
    for name, info in report["clocks"]["nodes"].items():
        rows.append(
            (
                "clocks",
                f"{name} skew {info['skew_s']} s"
                + (f", drift {info['drift_ppm']} ppm" if info["drift_ppm"] else ""),
                f"HLC lead {info['max_hlc_lead_s']} s, receipts off {info['receipts_off_by_5min']}",
            )
        )
    return rows


def print_table(report: dict[str, Any], console: Any) -> None:
    from rich.markup import escape
    from rich.table import Table

    sc = report["scenario"]
    table = Table(
        title=f"{sc['name']} (seed {sc['seed']}): {sc['stores']} store(s), "
        f"{sc['counters']} counters, {sc['duration_s'] // 60} min"
    )
    table.add_column("section", style="dim")
    table.add_column("figure")
    table.add_column("value", justify="right")
    for section, figure, value in summary_rows(report):
        style = "bold red" if ("VIOLATED" in value or value == "NO") else None
        table.add_row(section, figure, value, style=style)
    console.print(table)
    for v in report["violations"]:
        console.print(f"[bold red]violation:[/] {escape(str(v))}")


# -- HTML ---------------------------------------------------------------------------------------


def _plots(report: dict[str, Any]) -> list[tuple[str, str]]:
    """The plots worth drawing: a series that stayed at zero the whole run is left out (its
    absence is listed on the page), so no plot is an empty axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    s = report["series"]
    start_s = _clock_s(report["scenario"]["start"])
    hours = [(start_s + t) / 3600 for t in s["t_s"]]
    spans = report["spans"]
    out: list[tuple[str, str]] = []

    def shade(ax: Any) -> None:
        colours = {
            "wan_down": "#f4c7a1",
            "partition": "#b8d4f0",
            "crash": "#e0b4e0",
            "disk_death": "#f0a0a0",
        }
        for a, b, kind in spans:
            ax.axvspan(
                (start_s + a) / 3600,
                (start_s + b) / 3600,
                color=colours.get(kind, "#dddddd"),
                alpha=0.35,
                lw=0,
            )

    def finish(fig: Any, ax: Any, title: str, ylabel: str) -> None:
        ax.set_title(title)
        ax.set_xlabel(f"time of day ({report['scenario']['zone']})")
        ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: _hhmm(x)))
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        buf = io.BytesIO()
        fig.tight_layout()
        fig.savefig(buf, format="png", dpi=90, metadata={"Software": None})
        plt.close(fig)
        out.append((title, base64.b64encode(buf.getvalue()).decode()))

    if _drawn(s, "stock_skus", "stock_units"):
        fig, ax = plt.subplots(figsize=(9, 3.2))
        shade(ax)
        ax.step(hours, s["stock_skus"], where="post", label="SKUs counters disagree on")
        ax.step(hours, s["stock_units"], where="post", label="units of disagreement")
        ax.legend(loc="upper right")
        finish(fig, ax, PLOTS["stock"], "count")

    if _drawn(s, "hq_lag_s", "hq_missing"):
        fig, ax = plt.subplots(figsize=(9, 3.2))
        shade(ax)
        ax.plot(hours, [x / 60 for x in s["hq_lag_s"]], label="oldest op HQ lacks (min)")
        ax2 = ax.twinx()
        ax2.plot(hours, s["hq_missing"], color="tab:red", alpha=0.6, label="ops waiting for HQ")
        ax2.set_ylabel("ops waiting")
        handles = ax.get_legend_handles_labels()[0] + ax2.get_legend_handles_labels()[0]
        ax.legend(handles=handles, loc="upper left")
        finish(fig, ax, PLOTS["hq"], "minutes")

    if _drawn(s, "ops_behind"):
        fig, ax = plt.subplots(figsize=(9, 3.2))
        shade(ax)
        ax.step(hours, s["ops_behind"], where="post", color="tab:purple")
        finish(fig, ax, PLOTS["behind"], "ops")

    if _drawn(s, "lan_bytes", "wan_bytes"):
        fig, ax = plt.subplots(figsize=(9, 3.2))
        ax.plot(hours, [b / 1e6 for b in s["lan_bytes"]], label="LAN")
        ax.plot(hours, [b / 1e6 for b in s["wan_bytes"]], label="WAN")
        ax.legend(loc="upper left")
        finish(fig, ax, PLOTS["bytes"], "MB")

    heals = [h for h in report["convergence"]["heals"]][:60]
    if heals:
        fig, ax = plt.subplots(figsize=(9, 3.2))
        values = [
            h["converged_after_s"] if h["converged_after_s"] is not None else 0 for h in heals
        ]
        labels = [f"{h['at']} {h['store']}: {h['what']}"[:40] for h in heals]
        ax.barh(
            range(len(values)),
            values,
            color=["tab:green" if h["converged_after_s"] is not None else "tab:red" for h in heals],
        )
        ax.set_yticks(range(len(values)))
        ax.set_yticklabels(labels, fontsize=6)
        ax.invert_yaxis()
        ax.set_title(PLOTS["heals"])
        ax.set_xlabel("seconds")
        buf = io.BytesIO()
        fig.set_size_inches(9, max(2.5, 0.18 * len(values) + 1))
        fig.tight_layout()
        fig.savefig(buf, format="png", dpi=90, metadata={"Software": None})
        plt.close(fig)
        out.append((PLOTS["heals"], base64.b64encode(buf.getvalue()).decode()))
    return out


PLOTS = {
    "stock": "Divergence of stock views between counters",
    "hq": "HQ lag",
    "behind": "Ops the selling counters lack (sum over counters)",
    "bytes": "Bytes moved (cumulative)",
    "heals": "Time to converge after each heal",
}


def _drawn(series: dict[str, list[Any]], *keys: str) -> bool:
    return any(v for k in keys for v in series[k])


def _hhmm(hours: float) -> str:
    """A plot's x value (hours since the simulated midnight) as the clock reads it."""
    minutes = round(hours * 60)
    return f"{minutes // 60 % 24:02d}:{minutes % 60:02d}"


def _clock_s(text: str) -> int:
    hh, mm = text.split(":")
    return int(hh) * 3600 + int(mm) * 60


def _html_table(head: list[str], rows: list[list[str]], numeric: Collection[int] = ()) -> str:
    """A table whose `numeric` columns are right-aligned."""
    esc = html.escape
    th = "".join(f"<th>{esc(h)}</th>" for h in head)
    body = "\n".join(
        "<tr>"
        + "".join(
            f"<td class=v>{esc(c)}</td>" if i in numeric else f"<td>{esc(c)}</td>"
            for i, c in enumerate(row)
        )
        + "</tr>"
        for row in rows
    )
    return f"<table><tr>{th}</tr>\n{body}</table>"


def to_html(report: dict[str, Any]) -> str:
    sc = report["scenario"]
    esc = html.escape
    rows = "\n".join(
        f"<tr><td>{esc(a)}</td><td>{esc(b)}</td><td class=v>{esc(c)}</td></tr>"
        for a, b, c in summary_rows(report)
        if a != "invariants"  # their own table, above
    )
    violations = (
        "<ul>" + "".join(f"<li>{esc(v)}</li>" for v in report["violations"]) + "</ul>"
        if report["violations"]
        else ""
    )
    invariants = _html_table(
        ["invariant", "result", "checked"],
        [
            [i["says"], "holds" if i["holds"] else "VIOLATED", f"{group(i['checked'])} {i['unit']}"]
            for i in report["invariant_checks"]
        ],
        {2},
    )
    oversold = report["conflicts"]["oversells_by_sku"]
    oversells = (
        "<h2>Oversells by item</h2>\n<p>Items sold below zero stock, each a conflict for a "
        "manager: the counters whose sales took it below zero (newest first, as the conflict "
        "names them), and every counter's units sold.</p>\n"
        + _html_table(
            ["store", "SKU", "stock", "taken below 0 by", "units sold by counter"],
            [
                [
                    o["store"],
                    o["sku"],
                    str(o["stock"]),
                    ", ".join(o["counters"]),
                    ", ".join(f"{k} {v}" for k, v in sorted(o["sold_by"].items())),
                ]
                for o in oversold
            ],
            {2},
        )
        if oversold
        else ""
    )
    drawn = _plots(report)
    plots = "\n".join(
        f'<h3>{esc(title)}</h3><img alt="{esc(title)}" src="data:image/png;base64,{data}">'
        for title, data in drawn
    )
    left_out = [t for t in PLOTS.values() if t not in {title for title, _ in drawn}]
    omitted = (
        f"<p>Not plotted, nothing happened: {esc('; '.join(left_out))}.</p>" if left_out else ""
    )
    faults = "\n".join(
        f"<tr><td>{esc(f['at'])}</td><td>{esc(f['store'])}</td><td>{esc(f['kind'])}</td>"
        f"<td>{esc(f['target'])}</td><td>{f['duration_s']}</td></tr>"
        for f in report["faults"][:200]
    )
    faults_table = (
        "<h2>Faults</h2>\n<table><tr><th>at</th><th>store</th><th>kind</th><th>target</th>"
        f"<th>duration (s)</th></tr>\n{faults}</table>"
        if faults
        else "<h2>Faults</h2>\n<p>None: a run without faults.</p>"
    )
    status = (
        "all invariants hold"
        if report["ok"]
        else f"{len(report['violations'])} invariant violation(s)"
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>meshpos sim: {esc(sc["name"])}</title>
<style>
body {{ font-family: sans-serif; max-width: 60em; margin: 2em auto; color: #222; }}
table {{ border-collapse: collapse; }} td, th {{ padding: 2px 10px; border-bottom: 1px solid #ddd; }}
td.v {{ text-align: right; font-variant-numeric: tabular-nums; }}
.ok {{ color: #176317; }} .bad {{ color: #b00; }} img {{ max-width: 100%; }}
</style></head><body>
<h1>{esc(sc["name"])}</h1>
<p>{esc(sc["description"])}</p>
<p>seed {sc["seed"]} &middot; {sc["stores"]} store(s), {sc["counters"]} counters &middot;
from {esc(sc["start"])} {esc(sc["zone"])} for {sc["duration_s"] // 60} min &middot; relay: {esc(sc["relay"])}
&middot; {sc["catalogue_skus"]} SKUs</p>
<h2 class="{"ok" if report["ok"] else "bad"}">{esc(status)}</h2>
{violations}
{invariants}
<h2>Figures</h2>
<table>{rows}</table>
{oversells}
<h2>Plots</h2>
<p>Shaded: WAN down (orange), LAN split (blue), crash (violet), dead disk until replaced (red).</p>
{plots}
{omitted}
{faults_table}
</body></html>
"""
