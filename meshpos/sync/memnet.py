"""An in-memory network for the sans-IO sync protocol: seeded, simulated time, faults on demand.

The tests and the outage simulator use this same helper, so both drive the exact protocol and
ledger code the terminals run. Links have latency, jitter, loss and duplication (jitter reorders);
groups of nodes can be partitioned and healed; nodes can be stopped and started. Everything is
decided by one `random.Random(seed)`, so a run is reproducible.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from meshpos.sync.protocol import (
    Action,
    Applied,
    PeerComplained,
    PeerDown,
    PeerUp,
    Rejected,
    RequestReceived,
    Send,
    SyncNode,
)


@dataclass
class LinkSpec:
    latency_ms: int = 1
    jitter_ms: int = 0
    loss: float = 0.0
    duplicate: float = 0.0
    bandwidth_bps: int = 0  # 0 = unlimited


@dataclass
class NetStats:
    messages: int = 0
    bytes: int = 0
    dropped: int = 0
    duplicated: int = 0
    rejected: list[tuple[str, str, str]] = field(default_factory=list)


class MemNet:
    def __init__(self, seed: int = 0, link: LinkSpec | None = None, tick_ms: int = 100) -> None:
        self.rng = random.Random(seed)
        self.default = link or LinkSpec()
        self.links: dict[frozenset[str], LinkSpec] = {}
        self.nodes: dict[str, SyncNode] = {}
        self.up: set[str] = set()
        self.group: dict[str, int] = {}
        self.now = 0
        self.tick_ms = tick_ms
        self._queue: list[tuple[int, int, str, str, bytes]] = []
        self._n = 0
        self._busy_until: dict[tuple[str, str], int] = {}
        self.stats = NetStats()
        self.on_action: Callable[[str, Action], None] | None = None
        self._next_tick = 0

    # -- topology -------------------------------------------------------------------------------

    def add(self, node: SyncNode) -> None:
        nid = node.me.node_id
        self.nodes[nid] = node
        self.up.add(nid)
        self.group.setdefault(nid, 0)
        for other in self.nodes:
            if other != nid:
                self._do(nid, node.connect(other, self.now))

    def replace(self, node: SyncNode) -> None:
        """A node restarts (same id, new SyncNode and epoch); peers learn of it by its Hello."""
        self.nodes[node.me.node_id] = node
        self.up.add(node.me.node_id)
        for other in self.nodes:
            if other != node.me.node_id:
                self._do(node.me.node_id, node.connect(other, self.now))

    def stop(self, nid: str) -> None:
        self.up.discard(nid)

    def set_link(self, a: str, b: str, spec: LinkSpec) -> None:
        self.links[frozenset((a, b))] = spec

    def partition(self, *groups: Iterable[str]) -> None:
        """Nodes in different groups cannot reach each other; unnamed nodes form group 0."""
        self.group = {nid: 0 for nid in self.nodes}
        for i, members in enumerate(groups, start=1):
            for nid in members:
                self.group[nid] = i

    def heal(self) -> None:
        self.group = {nid: 0 for nid in self.nodes}

    def reachable(self, a: str, b: str) -> bool:
        return a in self.up and b in self.up and self.group.get(a, 0) == self.group.get(b, 0)

    # -- the event loop -------------------------------------------------------------------------

    def send(self, src: str, dst: str, data: bytes) -> None:
        spec = self.links.get(frozenset((src, dst)), self.default)
        self.stats.messages += 1
        self.stats.bytes += len(data)
        if not self.reachable(src, dst) or self.rng.random() < spec.loss:
            self.stats.dropped += 1
            return
        copies = 2 if self.rng.random() < spec.duplicate else 1
        self.stats.duplicated += copies - 1
        start = self.now
        if spec.bandwidth_bps:
            key = (src, dst)
            start = max(self.now, self._busy_until.get(key, 0))
            self._busy_until[key] = start + len(data) * 8000 // spec.bandwidth_bps
        for _ in range(copies):
            jitter = self.rng.randint(0, spec.jitter_ms) if spec.jitter_ms else 0
            at = max(start, self._busy_until.get((src, dst), start)) + spec.latency_ms + jitter
            self._n += 1
            heapq.heappush(self._queue, (at, self._n, src, dst, data))

    def _do(self, nid: str, actions: list[Action]) -> None:
        for action in actions:
            if isinstance(action, Send):
                self.send(nid, action.peer, action.data)
            elif isinstance(action, Rejected):
                self.stats.rejected.append((nid, action.peer, action.reason))
            if self.on_action is not None:
                self.on_action(nid, action)

    def local_changed(self, nid: str) -> None:
        if nid in self.up:
            self._do(nid, self.nodes[nid].local_changed(self.now))

    def run_until(self, t: int) -> None:
        while True:
            next_msg = self._queue[0][0] if self._queue else None
            if self._next_tick <= t and (next_msg is None or self._next_tick <= next_msg):
                self.now = self._next_tick
                self._next_tick += self.tick_ms
                for nid in sorted(self.up):
                    node = self.nodes[nid]
                    for other in self.nodes:
                        if other != nid and other not in node.sessions:
                            self._do(nid, node.connect(other, self.now))
                    self._do(nid, node.tick(self.now))
                continue
            if next_msg is None or next_msg > t:
                break
            at, _, src, dst, data = heapq.heappop(self._queue)
            self.now = at
            if dst in self.up and self.reachable(src, dst):
                self._do(dst, self.nodes[dst].receive(src, data, self.now))
            else:
                self.stats.dropped += 1
        self.now = max(self.now, t)

    def run_for(self, ms: int) -> None:
        self.run_until(self.now + ms)

    def settle(self, check: Callable[[], bool], limit_ms: int = 120_000, step_ms: int = 50) -> int:
        """Run until `check()` holds; returns the simulated ms it took, or -1 at the limit."""
        start = self.now
        while self.now - start < limit_ms:
            if check():
                return self.now - start
            self.run_for(step_ms)
        return -1 if not check() else self.now - start


__all__ = [
    "Applied",
    "LinkSpec",
    "MemNet",
    "NetStats",
    "PeerComplained",
    "PeerDown",
    "PeerUp",
    "RequestReceived",
]
