"""The discrete-event simulation of a whole scenario: every store, sampled together, then healed
and checked.

Each store is one `StoreSim` (meshpos/sim/store.py): real terminals, ledgers and the daemon's own
node cores on a seeded in-memory network. Stores never share a network, so the chain advances
store by store between sampling points; a run is a pure function of the scenario and the seed.
The report (meshpos/sim/report.py) is built from the finished run.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from meshpos.sim.nodes import derive_seed
from meshpos.sim.report import build_report
from meshpos.sim.scenario import FaultConf, Scenario
from meshpos.sim.store import StoreSim
from meshpos.sim.workload import catalogue


@dataclass
class Progress:
    done_ms: int
    total_ms: int
    phase: str


class Simulation:
    """A whole scenario: every store, sampled together, then healed and checked."""

    def __init__(self, sc: Scenario, seed: int | None = None) -> None:
        self.sc = sc if seed is None else _with_seed(sc, seed)
        self.seed = self.sc.seed
        rows = catalogue(self.sc.catalog_rows, self.sc.stock_factor)
        plan_rng = random.Random(derive_seed(self.seed, "hq-prices"))
        plan = sorted(
            (
                plan_rng.randrange(max(1, self.sc.duration_ms)),
                plan_rng.randrange(len(rows)),
                round(plan_rng.uniform(0.8, 1.2), 2),
            )
            for _ in range(self.sc.hq.price_changes)
        )
        self.stores = [StoreSim(self.sc, conf, rows, self.seed, plan) for conf in self.sc.stores]
        self.samples: list[tuple[int, list[dict[str, int]]]] = []
        self.faults: list[tuple[str, FaultConf]] = []
        self.ended_at = 0

    def _targets(self, f: FaultConf) -> list[StoreSim]:
        if f.node:
            store = f.node.rpartition("/")[0]
            return [s for s in self.stores if s.name == store]
        chosen = [s for s in self.stores if not f.stores or s.name in f.stores]
        if f.region:
            chosen = [s for s in chosen if s.conf.region == f.region]
        return chosen

    def run(self, progress: Callable[[Progress], None] | None = None) -> dict[str, Any]:
        total = self.sc.duration_ms
        for i, store in enumerate(self.stores):
            store.setup()
            if progress:
                progress(Progress(i + 1, len(self.stores), "setup"))
        for f in self.sc.faults:
            for store in self._targets(f):
                store.schedule_fault(f)
                self.faults.append((store.name, f))
        for store in self.stores:
            for f in store.random_faults():
                store.schedule_fault(f)
                self.faults.append((store.name, f))
        step = self.sc.sample_every_ms
        t = 0
        self._sample()
        while t < total:
            t = min(t + step, total)
            for store in self.stores:
                store.advance_to(t)
            self._sample()
            if progress:
                progress(Progress(t, total, "run"))
        self.ended_at = total
        for store in self.stores:
            store.final_heal()
            store.settle(self.sc.final_heal_ms)
        if progress:
            progress(Progress(total, total, "check"))
        return build_report(self)

    def _sample(self) -> None:
        now = self.stores[0].net.now if self.stores else 0
        self.samples.append((now, [s.sample() for s in self.stores]))


def _with_seed(sc: Scenario, seed: int) -> Scenario:
    return replace(sc, seed=seed)
