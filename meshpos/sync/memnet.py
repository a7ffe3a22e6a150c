"""An in-memory network for sans-IO nodes: seeded, simulated time, faults on demand.

The tests and the outage simulator use this same helper, so both drive the exact protocol and
ledger code the terminals run: the tests put bare `SyncNode`s on it, the simulator the daemon's
whole `NodeCore` (meshpos/node/core.py); anything with the `Endpoint` interface will do. Links
have latency, jitter, loss, duplication, reordering and bandwidth; groups of nodes can be
partitioned and healed, single links cut and restored; nodes can be stopped, restarted and
removed. Everything is decided by one `random.Random(seed)`, so a run is reproducible.

`lazy=True` (the simulator's mode) ticks a node only when its `next_deadline` is due instead of
on every `tick_ms` grid point: a simulated day of an idle mesh then costs a few pings per second,
not ten protocol ticks per node per second.
"""

from __future__ import annotations

import heapq
import random
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

from meshpos.domain.enrolment import NodeRecord
from meshpos.sync.protocol import (
    Applied,
    PeerComplained,
    PeerDown,
    PeerUp,
    Rejected,
    RequestReceived,
    Send,
    Session,
)

A = TypeVar("A")
A_co = TypeVar("A_co", covariant=True)


class Endpoint(Protocol[A_co]):
    """A node the network drives: bytes and the time in, actions out (`Send`s it carries)."""

    @property
    def me(self) -> NodeRecord: ...

    @property
    def sessions(self) -> Mapping[str, Session]: ...

    def connect(self, peer: str, now: int) -> Sequence[A_co]: ...

    def disconnect(self, peer: str) -> Sequence[A_co]: ...

    def receive(self, peer: str, data: bytes, now: int) -> Sequence[A_co]: ...

    def tick(self, now: int) -> Sequence[A_co]: ...

    def local_changed(self, now: int) -> Sequence[A_co]: ...

    def next_deadline(self, now: int) -> int: ...


@dataclass
class LinkSpec:
    latency_ms: int = 1
    jitter_ms: int = 0
    loss: float = 0.0
    duplicate: float = 0.0
    bandwidth_bps: int = 0  # 0 = unlimited
    reorder: float = 0.0  # share of messages held back by an extra `reorder_ms`
    reorder_ms: int = 0


@dataclass
class NetStats:
    messages: int = 0
    bytes: int = 0
    dropped: int = 0
    duplicated: int = 0
    reordered: int = 0
    delivered: int = 0
    delivered_bytes: int = 0
    rejected: list[tuple[str, str, str]] = field(default_factory=list)
    wire_bytes: Counter[tuple[str, str]] = field(default_factory=Counter)  # sent on a live link


class MemNet(Generic[A]):
    """Nodes returning actions of type `A` (the protocol's, or a wider set that includes them)."""

    def __init__(
        self,
        seed: int = 0,
        link: LinkSpec | None = None,
        tick_ms: int = 100,
        *,
        lazy: bool = False,
    ) -> None:
        self.rng = random.Random(seed)
        self.default = link or LinkSpec()
        self.links: dict[frozenset[str], LinkSpec] = {}
        self.nodes: dict[str, Endpoint[A]] = {}
        self.up: set[str] = set()
        self.group: dict[str, int] = {}
        self.now = 0
        self.tick_ms = tick_ms
        self._queue: list[tuple[int, int, str, str, bytes]] = []
        self._n = 0
        self._busy_until: dict[tuple[str, str], int] = {}
        self.stats = NetStats()
        self.on_action: Callable[[str, A], None] | None = None
        self._next_tick = 0
        self.cuts: Counter[frozenset[str]] = Counter()
        self.apart: set[frozenset[str]] = set()
        self.lazy = lazy
        self._due: dict[str, int] = {}
        self._earliest: int | None = None  # min of _due over the nodes up; None = work it out
        self._dial_cache: dict[str, tuple[tuple[int, int], list[str]]] = {}

    # -- topology -------------------------------------------------------------------------------

    def add(self, node: Endpoint[A]) -> None:
        nid = node.me.node_id
        self._dial_cache.clear()
        self.nodes[nid] = node
        self.up.add(nid)
        self.group.setdefault(nid, 0)
        for other in self._dials(nid):
            self._do(nid, node.connect(other, self.now))
        self.touch(nid)

    def replace(self, node: Endpoint[A]) -> None:
        """A node restarts (same id, a new node object and epoch); peers learn of it by its Hello."""
        self.nodes[node.me.node_id] = node
        self.up.add(node.me.node_id)
        for other in self._dials(node.me.node_id):
            self._do(node.me.node_id, node.connect(other, self.now))
        self.touch(node.me.node_id)

    def stop(self, nid: str) -> None:
        self.up.discard(nid)
        self._earliest = None

    def remove(self, nid: str) -> None:
        """A node leaves for good (a dead terminal): nobody dials it any more."""
        self.up.discard(nid)
        self._dial_cache.clear()
        self.nodes.pop(nid, None)
        self.group.pop(nid, None)
        self._due.pop(nid, None)
        self._earliest = None

    def cut(self, a: str, b: str) -> None:
        """Take the link between two nodes down; cuts nest (each needs its own `restore`)."""
        self.cuts[frozenset((a, b))] += 1

    def restore(self, a: str, b: str) -> None:
        key = frozenset((a, b))
        if self.cuts[key] <= 1:
            del self.cuts[key]
        else:
            self.cuts[key] -= 1

    def unpeer(self, a: str, b: str) -> None:
        """The two nodes stop being peers (a terminal that is not the store's relay has no
        session with HQ): their sessions close and neither dials the other until `peer`."""
        key = frozenset((a, b))
        if key in self.apart:
            return
        self.apart.add(key)
        self._dial_cache.clear()
        for x, y in ((a, b), (b, a)):
            node = self.nodes.get(x)
            if node is not None and x in self.up:
                self._do(x, node.disconnect(y))
                self.touch(x)

    def peer(self, a: str, b: str) -> None:
        self.apart.discard(frozenset((a, b)))
        self._dial_cache.clear()
        for x in (a, b):
            self.touch(x)

    def _dials(self, nid: str) -> list[str]:
        """The nodes `nid` keeps a session with (everyone, bar those set apart)."""
        key = (len(self.nodes), len(self.apart))
        cached = self._dial_cache.get(nid)
        if cached is not None and cached[0] == key:
            return cached[1]
        apart = self.apart
        others = [o for o in self.nodes if o != nid and frozenset((nid, o)) not in apart]
        self._dial_cache[nid] = (key, others)
        return others

    def touch(self, nid: str) -> None:
        """The node's state changed outside a tick or a delivery (ops appended to its ledger, a
        request sent): in lazy mode, work out again when it next needs a tick."""
        if self.lazy and nid in self.up:
            due = self._next_due(nid)
            old = self._due.get(nid)
            self._due[nid] = due
            if self._earliest is not None and (due < self._earliest or old == self._earliest):
                self._earliest = min(due, self._earliest) if due < self._earliest else None

    def _next_due(self, nid: str) -> int:
        """When the node next needs a tick: now if it lacks a session with a node it dials (the
        tick reconnects it), else its own next deadline."""
        node = self.nodes[nid]
        sessions = node.sessions
        for other in self._dials(nid):
            if other not in sessions:
                return self.now
        return node.next_deadline(self.now)

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
        return (
            a in self.up
            and b in self.up
            and self.group.get(a, 0) == self.group.get(b, 0)
            and (not self.cuts or frozenset((a, b)) not in self.cuts)
            and (not self.apart or frozenset((a, b)) not in self.apart)
        )

    # -- the event loop -------------------------------------------------------------------------

    def send(self, src: str, dst: str, data: bytes) -> None:
        spec = self.links.get(frozenset((src, dst)), self.default)
        stats = self.stats
        size = len(data)
        stats.messages += 1
        stats.bytes += size
        rng = self.rng
        up = self.up
        group = self.group
        reachable = (
            src in up
            and dst in up
            and group.get(src, 0) == group.get(dst, 0)
            and (not self.cuts or frozenset((src, dst)) not in self.cuts)
            and (not self.apart or frozenset((src, dst)) not in self.apart)
        )
        if not reachable or rng.random() < spec.loss:
            stats.dropped += 1
            return
        key = (src, dst)
        stats.wire_bytes[key] += size
        copies = 2 if rng.random() < spec.duplicate else 1
        stats.duplicated += copies - 1
        start = self.now
        busy = self._busy_until
        if spec.bandwidth_bps:
            start = max(start, busy.get(key, 0))
            busy[key] = start + size * 8000 // spec.bandwidth_bps
        ready = max(start, busy.get(key, start)) + spec.latency_ms
        for _ in range(copies):
            at = ready + rng.randint(0, spec.jitter_ms) if spec.jitter_ms else ready
            if spec.reorder and rng.random() < spec.reorder:
                at += spec.reorder_ms or 10 * (spec.latency_ms + spec.jitter_ms + 1)
                stats.reordered += 1
            self._n += 1
            heapq.heappush(self._queue, (at, self._n, src, dst, data))

    def _do(self, nid: str, actions: Sequence[A]) -> None:
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
            self.touch(nid)

    def run_until(self, t: int) -> None:
        if self.lazy:
            self._run_lazy(t)
            return
        while True:
            next_msg = self._queue[0][0] if self._queue else None
            if self._next_tick <= t and (next_msg is None or self._next_tick <= next_msg):
                self.now = self._next_tick
                self._next_tick += self.tick_ms
                for nid in sorted(self.up):
                    node = self.nodes[nid]
                    for other in self._dials(nid):
                        if other not in node.sessions:
                            self._do(nid, node.connect(other, self.now))
                    self._do(nid, node.tick(self.now))
                continue
            if next_msg is None or next_msg > t:
                break
            self._deliver()
        self.now = max(self.now, t)

    def _deliver(self) -> None:
        at, _, src, dst, data = heapq.heappop(self._queue)
        self.now = at
        if dst in self.up and self.reachable(src, dst):
            self.stats.delivered += 1
            self.stats.delivered_bytes += len(data)
            actions = self.nodes[dst].receive(src, data, self.now)
            self._do(dst, actions)
            # A delivery that yields no action (a Ping, a Have that frees nothing) only moves the
            # node's deadlines later, so the due time worked out before stays safe.
            if actions and self.lazy:
                self.touch(dst)
        else:
            self.stats.dropped += 1

    def _run_lazy(self, t: int) -> None:
        """`run_until` that skips grid points where no node has a timer due (see `_next_due`)."""
        step = self.tick_ms
        while True:
            next_msg = self._queue[0][0] if self._queue else None
            due = self._earliest
            if due is None:
                due = self._earliest = min((self._due.get(n, 0) for n in self.up), default=None)
            tick_at = None
            if due is not None:
                tick_at = max(self._next_tick, -(-due // step) * step)
            if tick_at is not None and tick_at <= t and (next_msg is None or tick_at <= next_msg):
                self.now = tick_at
                self._next_tick = tick_at + step
                for nid in sorted(self.up):
                    if self._due.get(nid, 0) > tick_at:
                        continue
                    node = self.nodes[nid]
                    for other in self._dials(nid):
                        if other not in node.sessions:
                            self._do(nid, node.connect(other, self.now))
                    self._do(nid, node.tick(self.now))
                    self.touch(nid)
                continue
            if next_msg is None or next_msg > t:
                break
            self._deliver()
            # Grid points up to now are behind us (an eager run ticked them before this message),
            # so a node this delivery woke ticks at the next one, as it would in an eager run.
            if self._next_tick <= next_msg:
                self._next_tick = next_msg - next_msg % step + step
        if self._next_tick <= t:
            self._next_tick = t - t % step + step
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
