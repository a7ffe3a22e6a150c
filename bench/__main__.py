"""`python -m bench`: run the bench sections, print a table per section and the targets, and
write every figure to `<out>/results.json`.

A later subsystem (mesh, HQ, devices, sim) adds its figures by appending `(name, function)` to
SECTIONS; a function takes the parsed arguments and the results of the sections run before it, and
returns a JSON-able dict (with an optional "targets" list, see `ledger_bench._target`).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import platform
import pstats
import sqlite3
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import meshpos
from bench import (
    devices_bench,
    hardening_bench,
    hq_bench,
    ledger_bench,
    mesh_bench,
    ops_bench,
    relay_bench,
    sim_bench,
    web_bench,
)
from bench.common import (
    DEFAULT_OUT,
    BenchError,
    fmt,
    load_average,
    log,
    peak_rss_mb,
    storage_of,
    table,
)

Section = Callable[[argparse.Namespace, dict[str, Any]], dict[str, Any]]

SECTIONS: list[tuple[str, Section]] = [
    ("commit", ledger_bench.commit_section),
    ("merge", ledger_bench.merge_section),
    ("scale", ledger_bench.scale_section),
    ("baselines", ledger_bench.baselines_section),
    ("ops", ops_bench.ops_section),
    ("mesh", mesh_bench.mesh_section),
    ("devices", devices_bench.devices_section),
    ("hq", hq_bench.hq_section),
    ("relay", relay_bench.relay_section),
    ("web", web_bench.web_section),
    ("hardening", hardening_bench.hardening_section),
    ("sim", sim_bench.sim_section),
]
GROUPS = {"ledger": ("commit", "merge", "scale")}

QUICK = {
    "sales": 200,
    "merge_ops": 5_000,
    "ops": 20_000,
    "baseline_sales": 1_000,
    "mesh_sales": 30,
    "mesh_backlog": 2_000,
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    names = [name for name, _ in SECTIONS]
    parser = argparse.ArgumentParser(
        prog="python -m bench", description="meshpos benchmarks (see docs/architecture.md)"
    )
    parser.add_argument(
        "--only",
        help=f"comma-separated sections to run: {', '.join(names)}, or a group: "
        + ", ".join(f"{g} ({'+'.join(s)})" for g, s in GROUPS.items()),
    )
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument("--ops", type=int, help="ops in the at-scale ledger (default 1,000,000)")
    parser.add_argument("--sales", type=int, help="sales rung for commit latency (default 2,000)")
    parser.add_argument("--merge-ops", type=int, help="foreign ops to merge (default 100,000)")
    parser.add_argument(
        "--baseline-sales", type=int, help="sales per replica in the baselines (default 30,000)"
    )
    parser.add_argument(
        "--mesh-sales", type=int, help="sales timed across the 3-daemon mesh (default 1,000)"
    )
    parser.add_argument(
        "--mesh-backlog", type=int, help="ops healed after a mesh partition (default 100,000)"
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="results and cached ledgers")
    parser.add_argument("--no-cache", action="store_true", help="rebuild generated ledgers")
    parser.add_argument(
        "--profile", action="store_true", help="cProfile each section into <out>/profile-NAME.txt"
    )
    args = parser.parse_args(argv)
    defaults = (
        QUICK
        if args.quick
        else {
            "sales": 2_000,
            "merge_ops": 100_000,
            "ops": 1_000_000,
            "baseline_sales": 30_000,
            "mesh_sales": 1_000,
            "mesh_backlog": 100_000,
        }
    )
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
        if getattr(args, key) <= 0:
            parser.error(f"--{key.replace('_', '-')} must be positive")
    wanted: list[str] = []
    for part in (args.only or ",".join(names)).split(","):
        part = part.strip()
        if part in GROUPS:
            wanted += GROUPS[part]
        elif part in names:
            wanted.append(part)
        elif part:
            parser.error(f"unknown section {part!r}; choose from {', '.join(names + list(GROUPS))}")
    args.sections = [n for n in names if n in wanted]
    return args


def run(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the chosen sections; returns what it writes to results.json."""
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    load_start = load_average()
    t0 = time.perf_counter()
    storage = storage_of(args.out)
    log(
        f"bench: sections {', '.join(args.sections)}; results in {args.out} "
        f"({storage['filesystem']} on {storage['device']}: {storage['disk']}); "
        f"load average {load_start}"
    )
    results: dict[str, Any] = {}
    for name, fn in SECTIONS:
        if name not in args.sections:
            continue
        load = load_average()
        log(f"== {name} (load average {load})")
        s0 = time.perf_counter()
        try:
            if args.profile:
                prof = cProfile.Profile()
                results[name] = prof.runcall(fn, args, results)
                _dump_profile(prof, args.out / f"profile-{name}.txt")
            else:
                results[name] = fn(args, results)
        except Exception as exc:
            traceback.print_exc()
            results[name] = {"error": f"{type(exc).__name__}: {exc}"}
        results[name]["seconds"] = time.perf_counter() - s0
        results[name]["load_average"] = [load, load_average()]
        print(flush=True)
    targets = [t for r in results.values() for t in r.get("targets", ())]
    elapsed = time.perf_counter() - t0
    summary = {
        "meta": {
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
            "seconds": elapsed,
            "meshpos": meshpos.__version__,
            "python": platform.python_version(),
            "sqlite": sqlite3.sqlite_version,
            "cpus": os.cpu_count(),
            "machine": platform.machine(),
            "argv": sys.argv[1:] if argv is None else argv,
            "quick": args.quick,
            "bench_peak_rss_mb": peak_rss_mb(),
            "load_average_start": load_start,
            "load_average_end": load_average(),
            "storage": storage,
        },
        "targets": targets,
        "sections": results,
    }
    if targets:
        print(
            table(
                "targets",
                ["figure", "measured", "target", "met"],
                [
                    [
                        t["name"],
                        f"{fmt(t['value'], ',.2f' if t['value'] and t['value'] < 100 else ',.0f')} "
                        f"{t['unit']}",
                        f"{'<=' if t['lower'] else '>='} "
                        f"{fmt(t['target'], ',.2f' if t['target'] < 100 else ',.0f')} {t['unit']}",
                        fmt(t["ok"]),
                    ]
                    for t in targets
                ],
            )
        )
    failed = [name for name, r in results.items() if "error" in r]
    path = args.out / "results.json"
    path.write_text(json.dumps(summary, indent=2, default=str) + "\n")
    log(f"bench: done in {elapsed:.0f} s; figures in {path}")
    if failed:
        raise BenchError(f"bench section(s) failed: {', '.join(failed)} (traceback above)")
    return summary


def _dump_profile(prof: cProfile.Profile, path: Path) -> None:
    buf = io.StringIO()
    stats = pstats.Stats(prof, stream=buf)
    stats.sort_stats("tottime").print_stats(30)
    stats.sort_stats("cumulative").print_stats(30)
    path.write_text(buf.getvalue())
    log(f"profile written to {path}")


def main() -> None:
    try:
        run()
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
