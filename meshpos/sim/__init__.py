"""The outage simulator: seeded, reproducible outages of meshpos stores, with numbers and plots.

It drives the real `Terminal`, `Ledger` and the daemon's own sans-IO `NodeCore` over the in-memory
`MemNet` (meshpos/sync/memnet.py); see meshpos/sim/store.py for how, and
meshpos/sim/scenarios/README.md for the scenario format. `meshpos sim run|fuzz|live` is the
command line (meshpos/cli/sim.py).
"""

from meshpos.sim.engine import Simulation
from meshpos.sim.scenario import Scenario, ScenarioError, load, loads

__all__ = ["Scenario", "ScenarioError", "Simulation", "load", "loads"]
