"""CRDT-library baselines for `make bench`: one concurrent stock-counter workload, pycrdt and loro.

The brief rejects a CRDT document library in favour of a signed op ledger; these figures keep that
choice measured. Each replica is a separate document with its own client/peer id. Every SKU starts
with stock 1000, created once on replica 0 and synced to the others, then each replica sells offline
and all replicas exchange incremental updates (each sender diffs against the receiver's state
vector / version vector). Variants show what happens when the per-SKU container is created
concurrently, and what each library offers against that.

Run with `python -m bench.baselines`. pycrdt and loro are imported lazily so this module imports
even when they are absent.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import random
import time
from collections.abc import Callable
from typing import Any, Protocol

BASE_STOCK = 1000

Workload = list[list[tuple[str, int]]]


class _Replica(Protocol):
    def seed_base(self, skus: list[str]) -> None: ...
    def sell(self, sku: str, qty: int) -> None: ...
    def state(self) -> Any: ...
    def update_since(self, state: Any) -> bytes: ...
    def apply(self, update: bytes) -> None: ...
    def stock(self) -> dict[str, int]: ...


ReplicaFactory = Callable[[int, str], _Replica]

# Modes:
#   synced             per-SKU container created once on replica 0 and synced before selling
#   nested_concurrent  each replica creates the per-SKU container itself on its first sale
#   remedy             the library's answer to concurrent creation (see each adapter)
#   naive_rmw          a plain map of ints, stock[sku] = stock[sku] - qty (last writer wins)
MODES_WITH_BASE = {"synced", "naive_rmw"}


class _PycrdtReplica:
    """Yrs has no counter type: each SKU is a Map of per-replica running deltas (plus "base").

    A replica only ever writes its own slot, so read-modify-write of that slot never races; the
    stock is the sum of the slots. Every write replaces the previous value, leaving a tombstone.
    """

    def __init__(self, client_id: int, mode: str) -> None:
        import pycrdt

        self._pycrdt: Any = pycrdt
        self._mode = mode
        self._doc: Any = self._pycrdt.Doc(client_id=client_id)
        self._me = str(client_id)
        self._root: Any = self._doc.get("stock", type=self._pycrdt.Map)
        self._handles: dict[str, Any] = {}

    def seed_base(self, skus: list[str]) -> None:
        Map = self._pycrdt.Map
        with self._doc.transaction():
            for sku in skus:
                self._root[sku] = (
                    BASE_STOCK if self._mode == "naive_rmw" else Map({"base": BASE_STOCK})
                )

    def sell(self, sku: str, qty: int) -> None:
        me = self._me
        with self._doc.transaction():
            if self._mode == "synced":
                slots = self._handles.get(sku)
                if slots is None:
                    slots = self._handles[sku] = self._root[sku]
                slots[me] = slots.get(me, 0) - qty
            elif self._mode == "nested_concurrent":
                if sku in self._root:
                    slots = self._root[sku]
                    slots[me] = slots.get(me, 0) - qty
                else:
                    self._root[sku] = self._pycrdt.Map({me: -qty})
            elif self._mode == "remedy":
                slots = self._doc.get(f"stock:{sku}", type=self._pycrdt.Map)
                slots[me] = slots.get(me, 0) - qty
            else:
                self._root[sku] = self._root[sku] - qty

    def state(self) -> bytes:
        return bytes(self._doc.get_state())

    def update_since(self, state: Any) -> bytes:
        return bytes(self._doc.get_update(state))

    def apply(self, update: bytes) -> None:
        self._doc.apply_update(update)

    def stock(self) -> dict[str, int]:
        if self._mode == "remedy":
            Map = self._pycrdt.Map
            return {
                name.removeprefix("stock:"): round(
                    sum(self._doc.get(name, type=Map).to_py().values())
                )
                for name in self._doc
                if name.startswith("stock:")
            }
        values = self._root.to_py() or {}
        if self._mode == "naive_rmw":
            return {sku: round(v) for sku, v in values.items()}
        return {sku: round(sum(slots.values())) for sku, slots in values.items()}


class _LoroReplica:
    """A root map of native LoroCounter containers, one per SKU; one commit per sale."""

    def __init__(self, client_id: int, mode: str) -> None:
        import loro

        self._loro: Any = loro
        self._mode = mode
        self._doc: Any = self._loro.LoroDoc()
        self._doc.peer_id = client_id
        self._root: Any = self._doc.get_map("stock")
        self._handles: dict[str, Any] = {}

    def seed_base(self, skus: list[str]) -> None:
        for sku in skus:
            if self._mode == "naive_rmw":
                self._root.insert(sku, BASE_STOCK)
            else:
                self._root.insert_container(sku, self._loro.LoroCounter()).increment(BASE_STOCK)
        self._doc.commit()

    def sell(self, sku: str, qty: int) -> None:
        if self._mode == "synced":
            counter = self._handles.get(sku)
            if counter is None:
                counter = self._handles[sku] = self._root.get(sku).container
            counter.decrement(qty)
        elif self._mode == "nested_concurrent":
            entry = self._root.get(sku)
            if entry is None:
                counter = self._root.insert_container(sku, self._loro.LoroCounter())
            else:
                counter = entry.container
            counter.decrement(qty)
        elif self._mode == "remedy":
            self._root.ensure_mergeable_counter(sku).decrement(qty)
        else:
            self._root.insert(sku, self._root.get(sku).value - qty)
        self._doc.commit()

    def state(self) -> Any:
        return self._doc.oplog_vv

    def update_since(self, state: Any) -> bytes:
        return bytes(self._doc.export(self._loro.ExportMode.Updates(state)))

    def apply(self, update: bytes) -> None:
        self._doc.import_(update)

    def stock(self) -> dict[str, int]:
        values = self._doc.get_deep_value().get("stock", {})
        return {sku: round(v) for sku, v in values.items()}


def _workload(replicas: int, sales_per_replica: int, skus: int, seed: int) -> Workload:
    rng = random.Random(seed)
    return [
        [(_sku(rng.randrange(skus)), rng.randint(1, 3)) for _ in range(sales_per_replica)]
        for _ in range(replicas)
    ]


def _sku(i: int) -> str:
    return f"SKU{i:05d}"


def _client_id(replica: int) -> int:
    return 1001 + replica


def _make_replicas(factory: ReplicaFactory, replicas: int, mode: str, skus: int) -> list[_Replica]:
    reps = [factory(_client_id(i), mode) for i in range(replicas)]
    if mode in MODES_WITH_BASE:
        reps[0].seed_base([_sku(i) for i in range(skus)])
        for other in reps[1:]:
            other.apply(reps[0].update_since(other.state()))
    return reps


def _sell_all(reps: list[_Replica], work: Workload) -> float:
    t0 = time.perf_counter()
    for rep, sales in zip(reps, work, strict=True):
        for sku, qty in sales:
            rep.sell(sku, qty)
    return time.perf_counter() - t0


def _exchange(reps: list[_Replica]) -> tuple[float, float, int]:
    """Every replica diffs against every other's state, then every replica imports the rest.

    Returns (export seconds, import seconds, total update bytes).
    """
    states = [r.state() for r in reps]
    t0 = time.perf_counter()
    updates = {
        (src, dst): reps[src].update_since(states[dst])
        for dst in range(len(reps))
        for src in range(len(reps))
        if src != dst
    }
    export_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for (_, dst), update in updates.items():
        reps[dst].apply(update)
    import_s = time.perf_counter() - t0
    return export_s, import_s, sum(len(u) for u in updates.values())


def _lost_pct(
    factory: ReplicaFactory, mode: str, work: Workload, skus: int
) -> tuple[float | None, bool | None]:
    """Percentage of units sold that the merged replica 0 no longer counts; and convergence."""
    reps = _make_replicas(factory, len(work), mode, skus)
    _sell_all(reps, work)
    _exchange(reps)
    views = [r.stock() for r in reps]
    base_total = BASE_STOCK * skus if mode in MODES_WITH_BASE else 0
    sold = sum(qty for sales in work for _, qty in sales)
    counted = base_total - sum(views[0].values())
    converged = all(v == views[0] for v in views[1:])
    return (100.0 * (sold - counted) / sold if sold else None), converged


def _measure(
    name: str, factory: ReplicaFactory, note: str, remedy: str, work: Workload, skus: int
) -> dict[str, Any]:
    replicas = len(work)
    sales_per_replica = len(work[0]) if work else 0
    reps = _make_replicas(factory, replicas, "synced", skus)
    sell_s = _sell_all(reps, work)
    export_s, import_s, exchange_bytes = _exchange(reps)

    expected = {_sku(i): BASE_STOCK for i in range(skus)}
    for sales in work:
        for sku, qty in sales:
            expected[sku] -= qty
    views = [r.stock() for r in reps]
    converged = all(v == views[0] for v in views[1:])

    # One more sale on an already-synced replica, carried to another already-synced replica.
    one_sale_bytes = None
    one_sale_ok = None
    if replicas >= 2:
        sku = _sku(0)
        reps[0].sell(sku, 1)
        expected[sku] -= 1
        update = reps[0].update_since(reps[1].state())
        one_sale_bytes = len(update)
        reps[1].apply(update)
        one_sale_ok = reps[1].stock().get(sku) == expected[sku]

    merged = reps[1].stock() if replicas >= 2 else reps[0].stock()
    merged_ops = replicas * (replicas - 1) * sales_per_replica
    lost_concurrent, _ = _lost_pct(factory, "nested_concurrent", work, skus)
    try:
        lost_remedy, remedy_converged = _lost_pct(factory, "remedy", work, skus)
    except AttributeError:  # ensure_mergeable_counter is recent in loro 1.x
        lost_remedy, remedy_converged = None, None
    lost_naive, _ = _lost_pct(factory, "naive_rmw", work, skus)
    return {
        "name": name,
        "version": importlib.metadata.version(name),
        "installed": True,
        "replicas": replicas,
        "sales_per_replica": sales_per_replica,
        "skus": skus,
        "local_sales_per_s": replicas * sales_per_replica / sell_s if sell_s else None,
        "merge_ops": merged_ops,
        "merge_s": import_s,
        "merge_ops_per_s": merged_ops / import_s if import_s else None,
        "export_s": export_s,
        "exchange_bytes": exchange_bytes,
        "exchange_bytes_per_sale": exchange_bytes / merged_ops if merged_ops else None,
        "one_sale_bytes": one_sale_bytes,
        "one_sale_ok": one_sale_ok,
        "converged": converged,
        "expected_total": sum(expected.values()),
        "merged_total": sum(merged.values()),
        "total_ok": sum(merged.values()) == sum(expected.values()),
        "per_sku_ok": merged == expected,
        "concurrent_create_lost_pct": lost_concurrent,
        "remedy": remedy,
        "remedy_lost_pct": lost_remedy,
        "remedy_converged": remedy_converged,
        "naive_rmw_lost_pct": lost_naive,
        "note": note,
    }


_LIBRARIES: list[tuple[str, ReplicaFactory, str, str]] = [
    (
        "pycrdt",
        _PycrdtReplica,
        "no counter type in Yrs: a nested Map per SKU of per-replica running deltas, each replica "
        "read-modify-writes only its own slot; ints come back as floats; each sale leaves a "
        "tombstone and every diff carries the whole delete set",
        "root-level Map per SKU",
    ),
    (
        "loro",
        _LoroReplica,
        "native LoroCounter per SKU in a root map, one commit per sale; counter values are f64",
        "LoroMap.ensure_mergeable_counter",
    ),
]


def run_baselines(
    replicas: int = 3, sales_per_replica: int = 10_000, skus: int = 300, seed: int = 1
) -> list[dict[str, Any]]:
    """One row per library; a library that is missing or fails gets a row saying so.

    A failing library must not take the meshpos bench down with it, hence the broad except.
    """
    work = _workload(replicas, sales_per_replica, skus, seed)
    rows: list[dict[str, Any]] = []
    for name, factory, note, remedy in _LIBRARIES:
        try:
            rows.append(_measure(name, factory, note, remedy, work, skus))
        except ImportError as exc:
            rows.append({"name": name, "installed": False, "note": f"not installed ({exc})"})
        except Exception as exc:
            rows.append({"name": name, "installed": True, "error": repr(exc), "note": "failed"})
    return rows


def _fmt(value: Any, spec: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "NO"
    return format(value, spec)


def format_table(rows: list[dict[str, Any]]) -> str:
    header = (
        f"{'library':<8} {'version':<8} {'merge ops/s':>12} {'B/1 sale':>9} {'B/sale xchg':>11} "
        f"{'converged':>9} {'total ok':>8} {'lost% conc.':>11} {'lost% remedy':>12} "
        f"{'lost% naive':>11}"
    )
    lines = [header, "-" * len(header)]
    notes = []
    for r in rows:
        if not r.get("installed") or "error" in r:
            lines.append(f"{r['name']:<8} {r.get('error', r['note'])}")
            continue
        lines.append(
            f"{r['name']:<8} {r['version']:<8} {_fmt(r['merge_ops_per_s'], ',.0f'):>12} "
            f"{_fmt(r['one_sale_bytes'], ',d'):>9} {_fmt(r['exchange_bytes_per_sale'], '.1f'):>11} "
            f"{_fmt(r['converged']):>9} {_fmt(r['total_ok']):>8} "
            f"{_fmt(r['concurrent_create_lost_pct'], '.1f'):>11} "
            f"{_fmt(r['remedy_lost_pct'], '.1f'):>12} {_fmt(r['naive_rmw_lost_pct'], '.1f'):>11}"
        )
        notes.append(f"  {r['name']}: {r['note']}; remedy = {r['remedy']}")
    first = next((r for r in rows if "replicas" in r), None)
    if first:
        lines.append(
            f"{first['replicas']} replicas x {first['sales_per_replica']:,} sales, "
            f"{first['skus']} SKUs; merge ops = counter ops imported by all replicas"
        )
    return "\n".join(lines + notes)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--replicas", type=int, default=3)
    parser.add_argument("--sales", type=int, default=10_000, help="sales per replica")
    parser.add_argument("--skus", type=int, default=300)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    print(format_table(run_baselines(args.replicas, args.sales, args.skus, args.seed)))


if __name__ == "__main__":
    main()
