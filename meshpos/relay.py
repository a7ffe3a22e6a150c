"""The store-to-HQ relay: which terminal carries the store to HQ, and how it does one round.

Election is pure: among the terminals that can reach HQ (each says so in its sync pings), the one
with the lowest node id relays. Every node computes the same answer from what it sees, so exactly
one relays at a time once the mesh agrees; when the relay dies (its pings stop) or loses its WAN (its
next ping says so), the next one takes over within a few seconds.

A round pushes exactly what HQ lacks, in batches, starting from HQ's own version vector (so a new
relay never re-sends what an old one already delivered), then pulls what the store lacks from HQ.
`RelayWorker` runs rounds on its own thread and database connection, so HTTP never stalls the mesh.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from meshpos.errors import MeshposError
from meshpos.ops import pack

log = logging.getLogger("meshpos.relay")
BATCH_OPS = 2000


def elect(me: str, my_wan: bool, peers_wan: Mapping[str, bool]) -> str | None:
    """The node that relays, as seen from `me`; None when nobody can reach HQ."""
    candidates = sorted([p for p, ok in peers_wan.items() if ok] + ([me] if my_wan else []))
    return candidates[0] if candidates else None


def backoff_ms(attempt: int, base_ms: int = 500, cap_ms: int = 30_000) -> int:
    """Delay before retry number `attempt` (1, 2, ...): doubling from `base_ms`, capped."""
    return int(min(cap_ms, base_ms * 2 ** max(0, attempt - 1)))


@dataclass
class RelayStatus:
    wan_ok: bool = False
    wan_since_ms: int = 0
    relay: str | None = None
    last_sync_ms: int = 0
    last_error: str = ""
    ops_waiting: int = 0
    rounds: int = 0
    ops_up: int = 0
    bytes_up: int = 0
    ops_down: int = 0
    errors: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class RelayWorker(threading.Thread):
    """Probes HQ and, while this node is the elected relay (or a round is forced), syncs with it.

    `open_terminal` opens this thread's own Terminal (SQLite connections stay per thread).
    """

    def __init__(
        self,
        open_terminal: Callable[[], Any],
        url: str,
        *,
        probe_ms: int = 2000,
        min_round_ms: int = 200,
        poll_ms: int = 3000,
        timeout_s: float = 5.0,
    ) -> None:
        super().__init__(name="meshpos-relay", daemon=True)
        self.open_terminal = open_terminal
        self.url = url
        self.probe_ms = probe_ms
        self.min_round_ms = min_round_ms
        self.poll_ms = poll_ms
        self.timeout_s = timeout_s
        self.status = RelayStatus()
        self.is_relay = False
        self.wake = threading.Event()
        self.work = threading.Event()  # new ops to push: a round as soon as allowed
        self.force = threading.Event()
        self.stop_event = threading.Event()
        self._lock = threading.Lock()

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return self.status.as_dict()

    def stop(self) -> None:
        self.stop_event.set()
        self.wake.set()

    def run(self) -> None:
        from meshpos.hq.client import HQClient
        from meshpos.membership import NODE_CERT

        t = self.open_terminal()
        cert_path = t.cfg.dir / NODE_CERT
        cert = cert_path.read_bytes() if cert_path.exists() else None
        client = HQClient(self.url, t.signer, t.cfg.store, cert=cert, timeout=self.timeout_s)
        attempt = 0
        next_probe = 0.0
        next_try = 0.0  # earliest next round (rate limit and backoff)
        next_poll = 0.0  # a round to pull HQ's changes even when nothing is new here
        try:
            while not self.stop_event.is_set():
                now = time.monotonic()
                if now >= next_probe:
                    self._probe(client)
                    next_probe = now + self.probe_ms / 1000
                relaying = self.is_relay and self.status.wan_ok
                wanted = self.force.is_set() or (
                    relaying and (self.work.is_set() or now >= next_poll or attempt)
                )
                if wanted and now >= next_try:
                    self.force.clear()
                    self.work.clear()
                    try:
                        self._round(t, client)
                        attempt = 0
                        next_try = now + self.min_round_ms / 1000
                        next_poll = now + self.poll_ms / 1000
                    except MeshposError as exc:
                        attempt += 1
                        delay = backoff_ms(attempt)
                        next_try = now + delay / 1000
                        self._error(f"{exc} (retry in {delay / 1000:.1f} s)")
                waits = [next_probe, next_poll if relaying else next_probe]
                if wanted or self.work.is_set():
                    waits.append(next_try)
                self.wake.wait(timeout=max(0.01, min(waits) - time.monotonic()))
                self.wake.clear()
        finally:
            client.close()
            t.close()

    def _probe(self, client: Any) -> None:
        try:
            client.info()
            ok = True
        except MeshposError as exc:
            ok = False
            if self.status.wan_ok:
                self._error(f"HQ unreachable: {exc}")
        with self._lock:
            if ok != self.status.wan_ok:
                self.status.wan_since_ms = time.time_ns() // 1_000_000
                log.info("WAN to HQ is %s", "up" if ok else "down")
            self.status.wan_ok = ok

    def _round(self, t: Any, client: Any) -> None:
        from meshpos.hq.client import ingest_pull

        hq_vv = client.vv()
        pushed = 0
        while True:
            raw = t.ledger.raw_since(hq_vv, BATCH_OPS)
            if not raw:
                break
            wires = [pack([body, sig]) for _, _, body, sig in raw]
            origins = {origin for origin, *_ in raw}
            nodes = [n for n in t.ledger.nodes() if n.node_id in origins]
            result = client.push(wires, nodes)
            with self._lock:
                self.status.ops_up += len(wires)
                self.status.bytes_up += sum(len(w) for w in wires)
            if not any(result.vv.get(o, 0) > hq_vv.get(o, 0) for o in origins):
                raise MeshposError("HQ accepted none of the ops sent; stopping this round")
            hq_vv = result.vv
            pushed += len(wires)
        pulled = 0
        while True:
            got = client.pull(t.ledger.vv())
            if got.ops:
                pulled += ingest_pull(t, got).applied
            if not got.more or not got.ops:
                break
        ours = t.ledger.vv()
        with self._lock:
            self.status.rounds += 1
            self.status.ops_down += pulled
            self.status.last_sync_ms = time.time_ns() // 1_000_000
            self.status.last_error = ""
            self.status.ops_waiting = sum(max(0, s - hq_vv.get(o, 0)) for o, s in ours.items())
        if pushed or pulled:
            log.info("HQ sync: %d ops up, %d ops down", pushed, pulled)

    def _error(self, message: str) -> None:
        log.warning("relay: %s", message)
        with self._lock:
            self.status.last_error = message
            self.status.errors = [*self.status.errors[-19:], message]
