"""The nodes of a simulated store: its counters and its HQ replica, their clocks and identities, and
how each is wired to the network.

A counter is a real `Terminal` on an in-memory `Ledger`, run by the daemon's own `NodeCore`
(meshpos/node/core.py) wired as the daemon wires it (`counter_core`): the simulator never
reacts to a protocol action itself. HQ's replica is a bare `SyncNode` standing in for the HQ
service (see meshpos/sim/hq.py). Every node's time is the simulated time plus its own skew and
drift, handed to its `Terminal` as `now_ms`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from meshpos.core.ops import Signer
from meshpos.domain.enrolment import NodeRecord, issue, make_request, read_request
from meshpos.ledger.store import Ledger
from meshpos.node.core import NodeAction, NodeCore
from meshpos.node.host import TerminalHost
from meshpos.service.config import NodeConfig
from meshpos.service.terminal import Terminal
from meshpos.sim.replica import CachedReplica
from meshpos.sim.scenario import NodeConf, Scenario
from meshpos.sync.memnet import MemNet
from meshpos.sync.protocol import SyncConfig, SyncNode

# The simulated day: 2025-10-20, a festival week, India Standard Time wall clock in receipts.
DAY_MS = int(datetime(2025, 10, 20, tzinfo=UTC).timestamp() * 1000) - 19_800_000
HQ = "HQ"


def derive_seed(*parts: object) -> int:
    """A stable 64-bit seed from the scenario seed and names (no hash randomisation)."""
    text = "/".join(str(p) for p in parts)
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")


@dataclass
class NodeClock:
    """A terminal's wall clock: simulated time plus a fixed skew plus drift (ppm)."""

    base_ms: int
    skew_ms: int = 0
    drift_ppm: int = 0

    def wall(self, sim_ms: int) -> int:
        return self.base_ms + sim_ms + self.skew_ms + self.drift_ppm * sim_ms // 1_000_000


@dataclass
class SimNode:
    name: str
    position: str  # the counter position it serves (T3 for T3 and its replacement T3b); HQ
    kind: str  # "counter" or "hq"
    signer: Signer
    terminal: Terminal
    replica: CachedReplica
    clock: NodeClock
    epoch: int = 1
    up: bool = True
    retired: bool = False
    disk_dead: bool = False
    gate: str = ""  # why the counter does not sell yet: "", "bootstrap", "same-identity"
    max_lead_ms: int = 0
    ops_led: int = 0  # ops whose HLC ran more than 5 minutes ahead of the true time
    max_skew_ms: int = 0
    receipts_off: int = 0
    ops_signed: int = 0
    recorded: int = 0  # the head of its own chain the ground truth has noted
    core: NodeCore | None = None  # a counter's, while it runs
    sync: SyncNode | None = None  # its protocol (HQ's is all it has), while it runs

    @property
    def node_id(self) -> str:
        return self.signer.node_id

    @property
    def ledger(self) -> Ledger:
        return self.terminal.ledger


def counter_core(node: SimNode, config: SyncConfig, now: int) -> NodeCore:
    """A counter's node core, wired as the daemon wires its own (meshpos.node.daemon.node_core):
    the terminal's ledger behind the protocol (through the simulator's read cache, which answers
    exactly what the ledger would), this run starting now. Nobody forges certificates here, so
    every node of the store is admitted."""
    me = next((n for n in node.ledger.nodes() if n.node_id == node.node_id and n.cert), None)
    sync = SyncNode(
        node.replica, me or node.terminal.node_record(), epoch=node.epoch, config=config
    )
    return NodeCore(sync, TerminalHost(node.terminal), started=now)


class Roster:
    """The store's nodes, by name, node id and counter position; it makes them and starts them
    on the network."""

    def __init__(self, sc: Scenario, store: str, net: MemNet[NodeAction], config: SyncConfig):
        self.sc = sc
        self.store = store
        self.net = net
        self.config = config
        self.node_conf: dict[str, NodeConf] = {n.name: n for n in sc.nodes if n.store == store}
        self.nodes: dict[str, SimNode] = {}
        self.by_id: dict[str, SimNode] = {}
        self.position: dict[str, str] = {}  # counter position -> current node name
        self._generation: dict[str, int] = {}
        # The store key (kept at a counter in a real store): certifies the counters and signs a
        # dead counter's retirement (meshpos/domain/revocation.py).
        self.store_key = Signer.from_seed(f"meshpos-sim/{store}/store-key".encode())

    def signer(self, name: str) -> Signer:
        gen = self._generation.get(name, 0)
        return Signer.from_seed(f"meshpos-sim/{self.store}/{name}/{gen}".encode())

    def clock(self, position: str) -> NodeClock:
        nc = self.node_conf.get(position)
        return NodeClock(
            DAY_MS + self.sc.start_ms, nc.skew_ms if nc else 0, nc.drift_ppm if nc else 0
        )

    def make(
        self,
        name: str,
        position: str,
        kind: str,
        ledger: Ledger | None = None,
        clock: NodeClock | None = None,
    ) -> SimNode:
        signer = self.signer(name)
        clock = clock or self.clock(position)
        # After a chain reset the terminal numbers its receipts in a new series (T1.1-000001):
        # numbers of its old chain may still turn up from a replica that was off.
        series = self._generation.get(name, 0)
        label = f"{name}.{series}" if series else name
        cfg = NodeConfig(
            dir=Path("/nonexistent"), store=self.store, name=label, node_id=signer.node_id
        )
        if kind == "hq":
            cfg.user = "hq"
        ledger = ledger or Ledger(":memory:", self.store, durable=False)
        net = self.net
        terminal = Terminal(cfg, signer, ledger, now_ms=lambda: clock.wall(net.now))
        if kind == "counter":  # certified by the store key, as enrolment does
            request = read_request(make_request(signer, self.store, label, b"x" * 40))
            cert = issue(self.store_key, self.store, request, now_ms=0)
            ledger.add_node(NodeRecord(signer.node_id, signer.public_key, self.store, label, cert))
        node = SimNode(name, position, kind, signer, terminal, CachedReplica(ledger), clock)
        node.max_skew_ms = clock.skew_ms
        node.recorded = ledger.head(node.node_id)[0]
        self.nodes[name] = node
        self.by_id[node.node_id] = node
        return node

    def rekey(self, name: str) -> None:
        """The next key for `name` (a chain reset: the same terminal, a new chain)."""
        self._generation[name] = self._generation.get(name, 0) + 1

    def replacement_name(self, position: str) -> str:
        """A new identity for a counter position: T3 is replaced by T3b, then T3c."""
        gen = self._generation.get(position, 0) + 1
        self._generation[position] = gen
        name = position + "bcdefghijklmnopqrstuvwxyz"[(gen - 1) % 25]
        self._generation[name] = 0
        return name

    def start(self, node: SimNode, *, restart: bool = False) -> None:
        """Run the node on the network (`restart`: it ran before, under the same identity)."""
        node.sync = None
        if node.kind == "counter":
            node.core = counter_core(node, self.config, self.net.now)
            node.sync = node.core.sync
            endpoint: NodeCore | SyncNode = node.core
        else:
            node.sync = endpoint = SyncNode(
                node.replica, node.terminal.node_record(), epoch=node.epoch, config=self.config
            )
        if restart:
            self.net.replace(endpoint)
        else:
            self.net.add(endpoint)

    def counters(self) -> list[SimNode]:
        return [n for n in self.nodes.values() if n.kind == "counter" and not n.retired]

    def at(self, ref: str) -> SimNode:
        """The node serving the position a fault names ("F/T2" or "T2")."""
        position = ref.rpartition("/")[2]
        return self.nodes[self.position[position]]
