"""The outage simulator's speed: simulated store-hours per wall second for the 4-counter festive
day (target: one simulated day of a 4-counter store in <= 30 s wall), and wall time for the
50-store chain. Both run the shipped scenarios unchanged (shortened with --quick)."""

from __future__ import annotations

import argparse
import time
from typing import Any

from bench.common import load_average, log, table
from bench.ledger_bench import _target

DAY_H = 12.0  # a store's day: the festive scenario runs 10:00-22:00


def _run(name: str, shorten: float) -> dict[str, Any]:
    from meshpos.sim.engine import Simulation
    from meshpos.sim.scenario import load, shipped

    sc = load(shipped()[name])
    if shorten < 1:
        sc = sc.scaled(shorten)
    log(f"sim: {name} ({sc.duration_ms / 3_600_000:.1f} h x {len(sc.stores)} store(s))")
    load0 = load_average()
    c0, t0 = time.process_time(), time.perf_counter()
    report = Simulation(sc).run()
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    store_hours = sc.duration_ms / 3_600_000 * len(sc.stores)
    return {
        "scenario": name,
        "shorten": shorten,
        "simulated_hours": sc.duration_ms / 3_600_000,
        "stores": len(sc.stores),
        "counters": sum(s.counters for s in sc.stores),
        "ops": report["ops"]["signed"],
        "messages": report["network"]["messages"],
        "ok": report["ok"],
        "wall_s": wall,
        "cpu_s": cpu,
        "store_hours_per_wall_s": store_hours / wall,
        "store_hours_per_cpu_s": store_hours / cpu,
        "load_average": [load0, load_average()],
    }


def sim_section(args: argparse.Namespace, results: dict[str, Any]) -> dict[str, Any]:
    festive = _run("festive-wan-outage", 0.1 if args.quick else 1.0)
    chain = _run("chain-regional-outage", 0.04 if args.quick else 1.0)
    day_wall = DAY_H / festive["store_hours_per_wall_s"]
    day_cpu = DAY_H / festive["store_hours_per_cpu_s"]
    rows = [
        [
            r["scenario"],
            f"{r['simulated_hours']:.1f} h x {r['stores']}",
            f"{r['ops']:,}",
            f"{r['wall_s']:.1f}",
            f"{r['cpu_s']:.1f}",
            f"{r['store_hours_per_wall_s']:.2f}",
            "yes" if r["ok"] else "NO",
        ]
        for r in (festive, chain)
    ]
    print(
        table(
            "sim: simulation speed",
            ["scenario", "simulated", "ops", "wall s", "cpu s", "store-h / wall s", "invariants"],
            rows,
            notes=[
                f"one 12 h day of the 4-counter festive store: {day_wall:.1f} s wall, "
                f"{day_cpu:.1f} s CPU (load average {festive['load_average']})",
            ],
        )
    )
    return {
        "festive": festive,
        "chain": chain,
        "festive_day_wall_s": day_wall,
        "festive_day_cpu_s": day_cpu,
        "targets": [
            _target(
                "sim: 4-counter festive day, wall"
                + (
                    f" (extrapolated from {festive['simulated_hours']:.1f} h)" if args.quick else ""
                ),
                day_wall,
                30,
                "s",
                lower=True,
            ),
        ],
    }
