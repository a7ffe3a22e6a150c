"""The store-to-HQ relay: which terminal carries the store to HQ, and how it does one round.

Election is pure: among the terminals that can reach HQ (each says so in its sync pings), the one
with the lowest node id relays. Every node computes the same answer from what it sees, so exactly
one relays at a time once the mesh agrees; when the relay dies (its link drops, or its pings stop)
or loses its WAN (its next ping says so), the next one takes over within about a second.

Every node probes HQ with a signed request for HQ's version vector of the store, so "WAN up" means
"HQ answers this node and knows the store", and every node can say how many of its ops HQ lacks.
A round pushes exactly what HQ lacks, in batches bounded in ops and bytes, starting from HQ's own
version vector and continuing from each answer's (so a new relay never re-sends what an old one
delivered, and a relay killed mid-upload costs at most the one batch in flight), then pulls what
the store lacks from HQ and acts on HQ's loyalty asks. `RelayWorker` runs probes and rounds on its
own thread and database connection, so HTTP never stalls the mesh.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from meshpos.core.clock import wall_ms
from meshpos.core.errors import ConfigError, MeshposError
from meshpos.core.ops import wire_of
from meshpos.domain.relay import backoff_ms, ops_missing, plan_grants, take_batch
from meshpos.service.transfers import refresh_chain_stock

if TYPE_CHECKING:
    from meshpos.hq.client import HQClient
    from meshpos.service.terminal import Terminal

log = logging.getLogger("meshpos.relay")


@dataclass(frozen=True)
class RelaySettings:
    """The `[hq]` table of meshpos.toml: where HQ is, and how the relay paces itself."""

    url: str = ""
    batch_ops: int = 2000  # HQ refuses more than its max_batch_ops (5000) per push
    batch_bytes: int = 256 * 1024  # bounds what a relay killed mid-push makes the next re-send
    probe_ms: int = 2000  # how often every node checks that HQ answers it (1 s while down)
    poll_ms: int = 3000  # how often the relay pulls HQ's changes when nothing is new here
    min_round_ms: int = 200
    handover_ms: int = 2000  # longest a new relay waits for another node's push to land
    settle_ms: int = 500  # the first relay after an outage waits for peers to probe HQ too
    timeout_s: float = 5.0
    stock_pull_ms: int = 120_000  # how often this node refreshes other stores' stock from HQ

    @classmethod
    def from_config(cls, raw: Mapping[str, Any], where: str) -> RelaySettings:
        unknown = set(raw) - set(cls.__dataclass_fields__)
        if unknown:
            raise ConfigError(f"{where}: unknown [hq] key(s) {', '.join(sorted(unknown))}")
        values = dict(raw)
        if not isinstance(values.get("url", ""), str):
            raise ConfigError(f"{where}: [hq] url must be a string such as http://hq:8470")
        for key in ("batch_ops", "batch_bytes", "probe_ms", "poll_ms", "min_round_ms",
                    "stock_pull_ms"):  # fmt: skip
            if key in values and (not isinstance(values[key], int) or values[key] < 1):
                raise ConfigError(f"{where}: [hq] {key} must be a whole number >= 1")
        for key in ("handover_ms", "settle_ms"):
            if key in values and (not isinstance(values[key], int) or values[key] < 0):
                raise ConfigError(f"{where}: [hq] {key} must be a whole number >= 0")
        if "timeout_s" in values:
            t = values["timeout_s"]
            if not isinstance(t, int | float) or isinstance(t, bool) or t <= 0:
                raise ConfigError(f"{where}: [hq] timeout_s must be a number of seconds > 0")
            values["timeout_s"] = float(t)
        return cls(**values)


@dataclass
class RelayStatus:
    wan_ok: bool = False
    wan_since_ms: int = 0
    relay: str | None = None
    relaying: bool = False
    last_sync_ms: int = 0  # last time HQ and this node were known to hold the same ops
    last_round_ms: int = 0  # last round this node completed (relay or `sync now`)
    last_error: str = ""
    last_error_ms: int = 0
    ops_waiting: int = 0  # ops this node holds that HQ lacked at the last probe or round
    rounds: int = 0
    ops_up: int = 0
    bytes_up: int = 0
    ops_down: int = 0
    granted_to_hq: int = 0
    claimed_from_hq: int = 0
    errors: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


class RelayWorker(threading.Thread):
    """Probes HQ and, while this node is the elected relay (or a round is forced), syncs with it.

    `open_terminal` opens this thread's own Terminal (SQLite connections stay per thread). The
    daemon reads `outbox` for escrow requests to send to peers (peer, customer, points, to) and
    puts loyalty claims (customer, points) in `claims`.
    """

    def __init__(
        self,
        open_terminal: Callable[[], Terminal],
        settings: RelaySettings,
        *,
        wall_ms: Callable[[], int] = wall_ms,
    ) -> None:
        super().__init__(name="meshpos-relay", daemon=True)
        self.open_terminal = open_terminal
        self.settings = settings
        self.url = settings.url
        self.wall_ms = wall_ms
        self.status = RelayStatus()
        self.is_relay = False
        self.wake = threading.Event()
        self.work = threading.Event()  # new ops to push: a round as soon as allowed
        self.force = threading.Event()
        self.probe_now = threading.Event()
        self.hold_until = 0.0  # no round before this (monotonic): a handover in progress
        self._held_since: float | None = None
        self.pushing = False  # a push loop is running: peers hear it in the `pushing` ping flag
        self.stop_event = threading.Event()
        self.outbox: queue.Queue[tuple[str, str, int, str]] = queue.Queue()
        self.claims: queue.Queue[tuple[str, int]] = queue.Queue()
        self.hq_node: str | None = None
        self._hq_vv: dict[str, int] = {}  # HQ's version vector of the store, as last seen
        self._served: dict[str, float] = {}
        self._lock = threading.Lock()

    def snapshot(self) -> dict[str, object]:
        with self._lock:
            return self.status.as_dict()

    def stop(self) -> None:
        self.stop_event.set()
        self.wake.set()

    def poke(self, *, force: bool = False) -> None:
        """Ask for a round as soon as the rate limit allows (`force`: even if not the relay)."""
        (self.force if force else self.work).set()
        self.wake.set()

    def elected(
        self, relay: str | None, me: bool, *, first: bool = False, others_pushing: bool = False
    ) -> None:
        """The daemon's election result. Becoming the relay starts a round at once: HQ's version
        vector says where the previous relay stopped. Two cases wait instead of sending what
        another node is sending: the first relay after nobody reached HQ (`first`: HQ is back,
        and peers with lower ids may be a probe away from taking over) waits `settle_ms`; and
        while another live node says it is in the middle of a push (`others_pushing`: its
        `pushing` ping flag), the new relay waits for that push to land, at most `handover_ms`.
        A relay that died gets no wait: its successor starts at once."""
        was = self.is_relay
        self.is_relay = me
        with self._lock:
            self.status.relay = relay
            self.status.relaying = me
        now = time.monotonic()
        if me and not was and first:
            self.hold_until = max(self.hold_until, now + self.settings.settle_ms / 1000)
        if me and others_pushing:
            if self._held_since is None:
                self._held_since = now
                self.hold_until = now + self.settings.handover_ms / 1000
        elif self._held_since is not None:
            self._held_since = None
            self.hold_until = now
            self.wake.set()
        if me and not was:
            self.poke()

    def probe_soon(self) -> None:
        """A peer just found HQ reachable: look now rather than at the next scheduled probe."""
        self.probe_now.set()
        self.wake.set()

    def run(self) -> None:
        from meshpos.hq.client import HQClient
        from meshpos.node.membership import NODE_CERT

        # One line per probe every two seconds would drown the daemon's log: pushes, rounds,
        # WAN changes and failures are logged here instead.
        logging.getLogger("httpx").setLevel(logging.WARNING)
        t = self.open_terminal()
        cert_path = t.cfg.dir / NODE_CERT
        cert = cert_path.read_bytes() if cert_path.exists() else None
        s = self.settings
        client = HQClient(self.url, t.signer, t.cfg.store, cert=cert, timeout=s.timeout_s)
        attempt = 0
        next_probe = 0.0
        next_try = 0.0  # earliest next round (rate limit and backoff)
        next_poll = 0.0  # a round to pull HQ's changes even when nothing is new here
        next_stock = 0.0  # other stores' stock, pulled by every node that reaches HQ
        try:
            while not self.stop_event.is_set():
                now = time.monotonic()
                if now >= next_probe or self.probe_now.is_set():
                    self.probe_now.clear()
                    try:
                        self._probe(t, client)
                    except Exception as exc:  # a local fault (say, a locked database)
                        log.exception("relay: probe failed")
                        self._set_wan(False, f"probe failed here: {exc!r}")
                    up = self.status.wan_ok
                    next_probe = now + (s.probe_ms if up else min(s.probe_ms, 1000)) / 1000
                if self.status.wan_ok and now >= next_stock:
                    next_stock = now + s.stock_pull_ms / 1000
                    self._chain_stock(t, client)
                relaying = self.is_relay and self.status.wan_ok
                claims = not self.claims.empty() and self.status.wan_ok
                wanted = (
                    self.force.is_set()
                    or claims
                    or (relaying and (self.work.is_set() or now >= next_poll or attempt > 0))
                )
                forced = self.force.is_set()  # `sync now` skips the backoff, not a handover
                due = self.hold_until if forced else max(next_try, self.hold_until)
                if wanted and now >= due:
                    self.force.clear()
                    self.work.clear()
                    try:
                        self._claims(t, client)
                        self._round(t, client, forced)
                        attempt = 0
                        next_try = now + s.min_round_ms / 1000
                        next_poll = now + s.poll_ms / 1000
                    except Exception as exc:
                        attempt += 1
                        delay = backoff_ms(attempt)
                        next_try = now + delay / 1000
                        if not isinstance(exc, MeshposError):
                            log.exception("relay: round failed")
                        self._failed(exc, delay)
                relaying = self.is_relay and self.status.wan_ok
                waits = [next_probe, next_poll if relaying else next_probe]
                if self.force.is_set():
                    waits.append(self.hold_until)
                elif (relaying and (self.work.is_set() or attempt)) or (
                    self.status.wan_ok and not self.claims.empty()
                ):
                    waits.append(max(next_try, self.hold_until))
                self.wake.wait(timeout=max(0.01, min(waits) - time.monotonic()))
                self.wake.clear()
        finally:
            client.close()
            t.close()

    def _chain_stock(self, t: Terminal, client: HQClient) -> None:
        try:
            changed = refresh_chain_stock(t, client)
        except MeshposError as exc:
            self._error(f"other stores' stock not refreshed: {exc}")
            return
        except Exception:  # a local fault; the till keeps the copy it has
            log.exception("relay: other stores' stock not refreshed")
            return
        if changed:
            log.info("other stores' stock: %d store(s) refreshed from HQ", changed)

    # -- probing --------------------------------------------------------------------------------

    def _probe(self, t: Terminal, client: HQClient) -> None:
        from meshpos.hq.client import HQRefused

        try:
            known = self.status.wan_since_ms  # probed before: the count means something
            hq_vv = client.vv(waiting=self.status.ops_waiting if known else None)
        except MeshposError as exc:
            refused = isinstance(exc, HQRefused)
            self._set_wan(False, f"HQ {'refuses this node' if refused else 'unreachable'}: {exc}")
            self._synced(t.ledger.vv(), self._hq_vv, reached=False)
            return
        if self.hq_node is None:
            with contextlib.suppress(MeshposError):
                self.hq_node = str(client.info().get("node_id") or "") or None
        self._set_wan(True)
        self._synced(t.ledger.vv(), hq_vv)

    def _set_wan(self, ok: bool, why: str = "") -> None:
        with self._lock:
            changed = ok != self.status.wan_ok or not self.status.wan_since_ms  # or first probe
            if changed:
                self.status.wan_since_ms = self.wall_ms()
                self.status.wan_ok = ok
        if changed:
            log.info("WAN to HQ is %s", "up" if ok else "down")
        if why and (changed or not self.status.last_error):
            self._error(why)

    def _synced(
        self, ours: Mapping[str, int], hq_vv: Mapping[str, int], *, reached: bool = True
    ) -> None:
        """Ops waiting against HQ's version vector (the last one seen, while HQ is away); a
        moment HQ was seen holding exactly this node's ops counts as a sync."""
        if reached:
            self._hq_vv = dict(hq_vv)
        waiting = ops_missing(ours, hq_vv)
        with self._lock:
            self.status.ops_waiting = waiting
            if reached and waiting == 0 and ops_missing(hq_vv, ours) == 0:
                self.status.last_sync_ms = self.wall_ms()

    # -- a round --------------------------------------------------------------------------------

    def _round(self, t: Terminal, client: HQClient, forced: bool) -> None:
        from meshpos.hq.client import ingest_pull

        s = self.settings
        hq_vv = client.vv()
        pushed = 0
        try:
            while forced or self.is_relay:
                raw = t.ledger.raw_since(hq_vv, s.batch_ops)
                if not raw:
                    break
                self.pushing = True
                beside = t.ledger.sealed_blobs()
                wires = [wire_of(b, sig, beside.get((o, q))) for o, q, b, sig in raw]
                wires = wires[: take_batch([len(w) for w in wires], s.batch_ops, s.batch_bytes)]
                origins = {origin for origin, *_ in raw[: len(wires)]}
                nodes = [n for n in t.ledger.nodes() if n.node_id in origins]
                size = sum(len(w) for w in wires)
                with self._lock:
                    self.status.ops_up += len(wires)
                    self.status.bytes_up += size
                result = client.push(wires, nodes)
                log.info(
                    "pushed %d ops (%d bytes): HQ applied %d, %d duplicates",
                    len(wires), size, result.applied, result.duplicates,
                )  # fmt: skip
                if not any(result.vv.get(o, 0) > hq_vv.get(o, 0) for o in origins):
                    raise MeshposError("HQ accepted none of the ops sent; stopping this round")
                hq_vv = result.vv
                pushed += len(wires)
        finally:
            self.pushing = False
        pulled = 0
        asks: list[dict[str, Any]] = []
        while True:
            got = client.pull(t.ledger.vv())
            asks = got.asks
            if got.ops:
                pulled += ingest_pull(t, got).applied
            if got.vv:
                hq_vv = {**hq_vv, **{o: max(v, hq_vv.get(o, 0)) for o, v in got.vv.items()}}
            if not got.more or not got.ops:
                break
        self._serve_asks(t, asks)
        with self._lock:
            self.status.rounds += 1
            self.status.ops_down += pulled
            self.status.last_round_ms = self.wall_ms()
            self.status.last_error = ""
        self._synced(t.ledger.vv(), hq_vv)
        if pushed or pulled:
            log.info("HQ sync: %d ops up, %d ops down", pushed, pulled)

    def _failed(self, exc: Exception, delay: int) -> None:
        from meshpos.hq.client import HQUnavailable

        if isinstance(exc, HQUnavailable):
            self._set_wan(False)  # hand over at once rather than at the next probe
        self._error(f"{exc} (retry in {delay / 1000:.1f} s)")

    # -- loyalty across stores ------------------------------------------------------------------

    def _serve_asks(self, t: Terminal, asks: list[dict[str, Any]]) -> None:
        """HQ lists customers other stores wait for whose rights nodes of this store hold: grant
        ours to HQ; ask the peers holding the rest to grant theirs to HQ (through the daemon)."""
        if not asks or not self.hq_node:
            return
        now = time.monotonic()
        mine, theirs = plan_grants(asks, t.node_id, self._served, now)
        for customer, points in mine:
            granted = int(t.grant_rights(customer, self.hq_node, points))
            self._served[customer] = now
            if granted:
                log.info(
                    "loyalty: granted %d points of %s to HQ for another store", granted, customer
                )
                with self._lock:
                    self.status.granted_to_hq += granted
        for peer, customer, points in theirs:
            self._served[customer] = now
            self.outbox.put((peer, customer, points, self.hq_node))
        if mine:
            self.work.set()  # the grant goes up in the next round

    def _claims(self, t: Terminal, client: HQClient) -> None:
        """Redemptions at this node that no LAN peer can cover: HQ moves rights it holds in
        other stores to this node (they arrive with this round's pull)."""
        while True:
            try:
                customer, points = self.claims.get_nowait()
            except queue.Empty:
                return
            try:
                got = client.claim_points(customer, points, t.node_id)
            except MeshposError:
                self.claims.put((customer, points))
                raise
            if got.get("refused"):
                log.warning("loyalty: HQ moved nothing of %s here: %s", customer, got["refused"])
            else:
                log.info(
                    "loyalty: HQ moved %d of %d points of %s here (%d still asked of other stores)",
                    got["moved"], points, customer, got["asked"],
                )  # fmt: skip
            with self._lock:
                self.status.claimed_from_hq += int(got["moved"])

    def _error(self, message: str) -> None:
        log.warning("relay: %s", message)
        with self._lock:
            self.status.last_error = message
            self.status.last_error_ms = self.wall_ms()
            self.status.errors = [*self.status.errors[-19:], message]
