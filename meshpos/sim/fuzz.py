"""Invariant search: hypothesis generates small scenarios and the simulator checks them.

A generated scenario is one store of 2-4 counters for a few simulated minutes, with a brisk
workload on a tiny catalogue (so counters contend for the same stock and the same customers'
points) and up to five faults drawn from everything the simulator can do: LAN partitions, WAN
cuts, one counter losing its internet or its cable, crashes with and without the disk's un-synced
tail, dead disks replaced by a new terminal or by the same identity restored, lossy, duplicating
and reordering links, skewed clocks. After the run every fault is repaired and the invariants of
the report are checked: convergence after the heal, no acknowledged op lost (unless it died with
its disk before any peer held it), no point spent twice, HQ equal to the union of the store, no
forked chain. When one fails, hypothesis shrinks the scenario and `fuzz` writes the smallest one
it found as a TOML file that `meshpos sim run` replays.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import seed as hseed
from hypothesis import strategies as st

from meshpos.sim.scenario import (
    FaultConf,
    HqConf,
    LinkConf,
    NodeConf,
    Scenario,
    StoreConf,
    WorkloadConf,
    dump,
)

STORE = "F"
Check = Callable[[Scenario], list[str]]


class Violation(AssertionError):
    """An invariant did not hold for a generated scenario."""


@dataclass
class FuzzResult:
    runs: int
    failure: list[str] | None = None
    path: Path | None = None
    scenario: Scenario | None = None
    kinds: dict[str, int] = field(default_factory=dict)


def _link(draw: Any, base_latency: tuple[int, int]) -> LinkConf:
    return LinkConf(
        latency_ms=draw(st.integers(*base_latency)),
        jitter_ms=draw(st.integers(0, 30)),
        loss=draw(st.sampled_from([0.0, 0.0, 0.02, 0.1, 0.3])),
        duplicate=draw(st.sampled_from([0.0, 0.0, 0.05])),
        reorder=draw(st.sampled_from([0.0, 0.0, 0.1])),
        reorder_ms=0,
        bandwidth_kbps=draw(st.sampled_from([0, 0, 256, 2000])),
    )


FAULTS = (
    "partition",
    "wan_down",
    "hq_cut",
    "isolate",
    "link",
    "crash",
    "crash_lose_tail",
    "disk_new",
    "disk_same_acked",
    "disk_same_empty",
    "clock",
)


@st.composite
def scenarios(draw: Any, faults: tuple[str, ...] = FAULTS) -> Scenario:
    counters = draw(st.integers(2, 4))
    names = [f"T{i + 1}" for i in range(counters)]
    duration = draw(st.integers(2, 6)) * 60_000
    out: list[FaultConf] = []
    for _ in range(draw(st.integers(0, 5))):
        kind = draw(st.sampled_from(faults))
        at = draw(st.integers(0, duration // 1000 - 10)) * 1000
        length = draw(st.integers(5, 180)) * 1000
        node = f"{STORE}/{draw(st.sampled_from(names))}"
        if kind == "partition":
            order = draw(st.permutations(names))
            cut = draw(st.integers(1, counters - 1))
            groups = (tuple(sorted(order[:cut])), tuple(sorted(order[cut:])))
            out.append(
                FaultConf(at, "partition", stores=(STORE,), groups=groups, duration_ms=length)
            )
        elif kind == "wan_down":
            out.append(FaultConf(at, "wan_down", stores=(STORE,), duration_ms=length))
        elif kind in ("hq_cut", "isolate", "crash"):
            out.append(FaultConf(at, kind, node=node, duration_ms=length))
        elif kind == "crash_lose_tail":
            out.append(FaultConf(at, "crash", node=node, duration_ms=length, lose_tail=True))
        elif kind == "link":
            link = LinkConf(
                loss=draw(st.sampled_from([0.3, 0.6, 0.9])), latency_ms=20, jitter_ms=50
            )
            out.append(FaultConf(at, "link", node=node, duration_ms=length, link=link))
        elif kind == "clock":
            skew = draw(st.integers(-3 * 3600, 3 * 3600)) * 1000
            out.append(FaultConf(at, "clock", node=node, skew_ms=skew, duration_ms=length))
        else:
            replacement, restore = {
                "disk_new": ("new", "empty"),
                "disk_same_acked": ("same", "acked"),
                "disk_same_empty": ("same", "empty"),
            }[kind]
            out.append(
                FaultConf(
                    at,
                    "disk_death",
                    node=node,
                    replacement=replacement,
                    restore=restore,
                    after_ms=length,
                )
            )
    skewed = draw(st.lists(st.sampled_from(names), max_size=2, unique=True))
    nodes = tuple(
        NodeConf(STORE, n, skew_ms=draw(st.integers(-2 * 3600, 2 * 3600)) * 1000)
        for n in sorted(skewed)
    )
    workload = WorkloadConf(
        shape="flat",
        sales_per_hour=draw(st.sampled_from([60.0, 150.0, 300.0])),
        customers=draw(st.integers(1, 5)),
        loyalty_share=0.3,
        redeem_share=draw(st.sampled_from([0.1, 0.4])),
        return_share=0.05,
        receipts_per_hour=draw(st.sampled_from([0.0, 20.0])),
        markdowns_per_hour=draw(st.sampled_from([0.0, 10.0])),
        opening_points=(50, 500),
    )
    return Scenario(
        name="fuzz",
        description="generated by meshpos sim fuzz",
        seed=draw(st.integers(0, 2**32)),
        start_ms=12 * 3_600_000,
        duration_ms=duration,
        sample_ms=60_000,
        final_heal_ms=600_000,
        catalog_rows=6,
        stock_factor=draw(st.sampled_from([0.3, 1.0])),
        lan=_link(draw, (1, 10)),
        wan=_link(draw, (20, 150)),
        hq=HqConf(
            relay=draw(st.sampled_from(["elected", "all"])),
            failover_ms=3000,
            price_changes=draw(st.integers(0, 3)),
        ),
        workload=workload,
        stores=(StoreConf(STORE, counters, "", (), workload),),
        nodes=nodes,
        faults=tuple(sorted(out, key=lambda f: f.at_ms)),
    )


def check(sc: Scenario) -> list[str]:
    """Run a scenario; the invariant violations its report lists (empty: all hold)."""
    from meshpos.sim.engine import Simulation

    try:
        report = Simulation(sc).run()
    except Exception as exc:  # a crash of the simulator is a finding too
        return [f"the simulation raised {type(exc).__name__}: {exc}"]
    violations: list[str] = report["violations"]
    return violations


def fuzz(
    examples: int,
    seed: int,
    out: Path,
    log: Callable[[str], None] = lambda m: None,
    strategy: Any = None,
    checker: Check = check,
    shrink: bool = True,
) -> FuzzResult:
    result = FuzzResult(runs=0)
    last: list[tuple[Scenario, list[str]]] = []

    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        print_blob=False,
        suppress_health_check=list(HealthCheck),
        phases=(Phase.generate, Phase.shrink) if shrink else (Phase.generate,),
        report_multiple_bugs=False,
    )
    @hseed(seed)
    @given(strategy if strategy is not None else scenarios())
    def prop(sc: Scenario) -> None:
        result.runs += 1
        for f in sc.faults:
            result.kinds[f.kind] = result.kinds.get(f.kind, 0) + 1
        if result.runs % 50 == 0:
            log(f"fuzz: {result.runs} scenarios run")
        violations = checker(sc)
        if violations:
            # Written at once and again for every smaller case, so an interrupted shrink still
            # leaves the smallest failing scenario found so far.
            last.append((sc, violations))
            _write(path, sc, violations, seed)
            raise Violation("; ".join(violations))

    path = out / f"fuzz-failure-{seed}.toml"
    try:
        prop()
    except Violation:
        sc, violations = last[-1]
        _write(path, sc, violations, seed)
        result.failure, result.path, result.scenario = violations, path, sc
    return result


def _write(path: Path, sc: Scenario, violations: list[str], seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    header = "".join(f"# violation: {v}\n" for v in violations)
    path.write_text(
        f"# Found by `meshpos sim fuzz --seed {seed}` and shrunk by hypothesis.\n"
        f"{header}# Replay: meshpos sim run {path.name}\n" + dump(sc)
    )
