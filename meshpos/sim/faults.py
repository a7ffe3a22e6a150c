"""Faults on a simulated store: the scenario's, and random ones drawn from its seed; each applied
when due and repaired when its duration ends.

Network faults change the store's network state (meshpos/sim/network.py). Node faults stop and
start nodes: a crash stops a counter's node core with its disk intact; a dead disk loses what no
other replica holds (the ground truth books it as lost with the disk) and a replacement comes
later, a new terminal or the old identity restored. A restored identity comes back marked as
bootstrapping, as a terminal that lost its database does, and its node core decides when it may
sign again.
"""

from __future__ import annotations

import random

from meshpos.domain import revocation
from meshpos.ledger.store import Ledger
from meshpos.sim.agenda import Agenda, Replacement
from meshpos.sim.metrics import Metrics
from meshpos.sim.network import StoreNetwork
from meshpos.sim.nodes import Roster, SimNode, derive_seed
from meshpos.sim.scenario import FaultConf, Scenario, StoreConf
from meshpos.sim.truth import GroundTruth
from meshpos.sim.workload import poisson_times


class Faults:
    def __init__(
        self,
        sc: Scenario,
        conf: StoreConf,
        seed: int,
        roster: Roster,
        network: StoreNetwork,
        truth: GroundTruth,
        metrics: Metrics,
        agenda: Agenda,
    ) -> None:
        self.sc = sc
        self.conf = conf
        self.roster = roster
        self.network = network
        self.net = network.net
        self.truth = truth
        self.metrics = metrics
        self.agenda = agenda
        self.rng = random.Random(derive_seed(seed, conf.name, "faults"))
        self.spans: list[tuple[int, int, str]] = []  # (from, to, kind) for the report's plots

    def _note(self, what: str, detail: str) -> None:
        self.truth.note(self.net.now, what, detail)

    # -- which faults -----------------------------------------------------------------------------

    def schedule(self, f: FaultConf) -> None:
        self.agenda.push(f.at_ms, "fault", f)

    def random(self) -> list[FaultConf]:
        """Random faults of this store, drawn from the scenario's seed."""
        r = self.sc.random
        d = self.sc.duration_ms
        rng = self.rng
        out: list[FaultConf] = []
        name = self.conf.name
        names = self.conf.counter_names()

        def outage() -> int:
            ms = int(rng.expovariate(1.0) * r.mean_outage_ms)
            return max(5_000, min(ms, 4 * r.mean_outage_ms))

        for at in poisson_times(rng, r.crash_per_hour, d):
            out.append(
                FaultConf(at, "crash", node=f"{name}/{rng.choice(names)}", duration_ms=outage())
            )
        for at in poisson_times(rng, r.partition_per_hour, d):
            if len(names) < 2:
                break
            shuffled = list(names)
            rng.shuffle(shuffled)
            cut = rng.randint(1, len(names) - 1)
            groups = (tuple(sorted(shuffled[:cut])), tuple(sorted(shuffled[cut:])))
            out.append(
                FaultConf(at, "partition", stores=(name,), groups=groups, duration_ms=outage())
            )
        for at in poisson_times(rng, r.wan_flap_per_hour, d):
            out.append(FaultConf(at, "wan_down", stores=(name,), duration_ms=outage()))
        for at in poisson_times(rng, r.disk_death_per_hour, d):
            node = f"{name}/{rng.choice(names)}"
            out.append(FaultConf(at, "disk_death", node=node, replacement="new", after_ms=outage()))
        return out

    # -- applying and repairing -------------------------------------------------------------------

    def apply(self, f: FaultConf) -> None:
        now = self.net.now
        kind = f.kind
        network = self.network
        if f.duration_ms and kind not in ("disk_death",):
            end = now + f.duration_ms
            self.agenda.push(end, f"end_{kind}", f)
            self.spans.append((now, min(end, self.sc.duration_ms), kind))
        if kind == "wan_down":
            network.wan_down += 1
            self._note("wan_down", "WAN down")
        elif kind == "wan_up":
            self._wan_up()
        elif kind == "hq_cut":
            node = self.roster.at(f.node)
            network.hq_cut[node.position] += 1
            self._note("hq_cut", f"{node.position} loses internet")
        elif kind == "hq_restore":
            self._hq_restore(self.roster.at(f.node))
        elif kind == "partition":
            network.group_of = {m: i + 1 for i, g in enumerate(f.groups) for m in g}
            self._note("partition", " | ".join(",".join(g) for g in f.groups))
        elif kind == "heal":
            self._heal()
        elif kind == "isolate":
            node = self.roster.at(f.node)
            network.isolated[node.position] += 1
            self._note("isolate", f"{node.position} cut off the LAN")
        elif kind == "link":
            assert f.link is not None
            node = self.roster.at(f.node)
            network.link_override[node.position] = f.link
            network.apply_links(node)
            self._note(
                "link", f"{node.position}: loss {f.link.loss:.0%}, latency {f.link.latency_ms} ms"
            )
        elif kind == "link_reset":
            self._link_reset(self.roster.at(f.node))
        elif kind == "crash":
            node = self.roster.at(f.node)
            if f.lose_tail:
                self.disk_death(node, "same", "acked", f.duration_ms, f.bootstrap_first)
            else:
                self._crash(node)
        elif kind == "restart":
            self.restart(self.roster.at(f.node))
        elif kind == "disk_death":
            node = self.roster.at(f.node)
            self.disk_death(node, f.replacement, f.restore, f.after_ms, f.bootstrap_first)
            self.spans.append((now, min(now + f.after_ms, self.sc.duration_ms), kind))
        elif kind == "clock":
            node = self.roster.at(f.node)
            if f.skew_ms is not None:
                node.clock.skew_ms = f.skew_ms
                if abs(f.skew_ms) > abs(node.max_skew_ms):
                    node.max_skew_ms = f.skew_ms
            if f.drift_ppm is not None:
                node.clock.drift_ppm = f.drift_ppm
            self._note("clock", f"{node.position} clock skew {node.clock.skew_ms // 1000} s")

    def repair(self, kind: str, f: FaultConf) -> None:
        """The end of a fault with a duration (`kind` is "end_" and the fault's kind)."""
        if kind == "end_wan_down":
            self._wan_up()
        elif kind == "end_hq_cut":
            self._hq_restore(self.roster.at(f.node))
        elif kind == "end_partition":
            self._heal()
        elif kind == "end_isolate":
            node = self.roster.at(f.node)
            isolated = self.network.isolated
            isolated[node.position] = max(0, isolated[node.position] - 1)
            self._note("unisolate", f"{node.position} back on the LAN")
            self.metrics.watch("lan", f"{node.position} back on the LAN")
        elif kind == "end_link":
            self._link_reset(self.roster.at(f.node))
        elif kind == "end_crash":
            if not f.lose_tail:
                self.restart(self.roster.at(f.node))
        elif kind == "end_clock":
            node = self.roster.at(f.node)
            base = self.roster.clock(node.position)
            node.clock.skew_ms, node.clock.drift_ppm = base.skew_ms, base.drift_ppm
            self._note("clock", f"{node.position} clock set right")

    def _wan_up(self) -> None:
        network = self.network
        if network.wan_down:
            network.wan_down -= 1
        if not network.wan_down:
            self._note("wan_up", "WAN back")
            self.metrics.watch("hq", "WAN back")

    def _hq_restore(self, node: SimNode) -> None:
        cut = self.network.hq_cut
        cut[node.position] = max(0, cut[node.position] - 1)
        self._note("hq_restore", f"{node.position} internet back")
        self.metrics.watch("hq", f"{node.position} internet back")

    def _heal(self) -> None:
        if self.network.group_of:
            self.network.group_of = {}
            self._note("heal", "LAN healed")
            self.metrics.watch("lan", "LAN healed")

    def _link_reset(self, node: SimNode) -> None:
        self.network.link_override.pop(node.position, None)
        self.network.apply_links(node)
        self._note("link_reset", f"{node.position} link back to normal")

    # -- nodes going down and coming back ---------------------------------------------------------

    def _crash(self, node: SimNode) -> None:
        if not node.up:
            return
        node.up = False
        self.net.stop(node.node_id)
        self._note("crash", f"{node.name} crashed")

    def restart(self, node: SimNode) -> None:
        if node.up or node.retired or node.disk_dead:
            return
        node.up = True
        node.epoch += 1
        self.roster.start(node, restart=True)
        self._note("restart", f"{node.name} restarted")
        self.metrics.watch(f"node:{node.name}", f"{node.name} restarted")

    def _holders_max(self, node: SimNode) -> int:
        """The highest seq of `node`'s chain any other replica holds (a down one's disk too)."""
        best = 0
        for other in self.roster.nodes.values():
            if other is node or other.retired or other.disk_dead:
                continue
            best = max(best, other.replica.current().get(node.node_id, 0))
        return best

    def disk_death(
        self,
        node: SimNode,
        replacement: str,
        restore: str,
        after: int,
        bootstrap_first: bool = True,
    ) -> None:
        """The disk dies now: what no other replica holds is gone. The replacement comes later."""
        if node.retired or node.disk_dead:
            return  # a disk that is already dead cannot die again
        held = self._holders_max(node)
        acked = 0
        if node.core is not None:  # what peers acknowledged before it went down
            acked = node.core.sync.acked_by_peer()
        lost = self.truth.lose_tail(node, held)
        node.up = False
        node.disk_dead = True
        self.net.stop(node.node_id)
        self._note("disk_death", f"{node.name}'s disk died ({lost} ops held by no peer)")
        later: Replacement = (node.name, replacement, restore, min(acked, held), bootstrap_first)
        self.agenda.push(self.net.now + after, "replace", later)

    def retire(self, old: SimNode, new: SimNode) -> None:
        """`meshpos store retire OLD --to NEW` at a counter that is up: the dead counter's
        loyalty rights and card float move to its replacement, so none stay stranded."""
        for signer in self.roster.counters():
            if signer is new or not signer.up or signer.disk_dead or signer.gate:
                continue
            point = signer.ledger.head(old.node_id)[0]
            body = revocation.payload(
                self.roster.store, old.node_id, point, "disk died", self.roster.store_key,
                to=new.node_id,
            )  # fmt: skip
            signer.terminal.append(revocation.REVOKE_KIND, body)
            self._note("retired", f"{signer.name} retires {old.name} into {new.name}")
            return
        self._note("retired", f"no counter up to retire {old.name}: its balances stay stranded")

    def bring_replacement(self, later: Replacement) -> None:
        name, replacement, restore, acked, bootstrap_first = later
        old = self.roster.nodes[name]
        if old.retired or not old.disk_dead:
            return
        if replacement == "new":
            old.retired = True
            self.net.remove(old.node_id)
            new_name = self.roster.replacement_name(old.position)
            node = self.roster.make(new_name, old.position, "counter", clock=old.clock)
            self.roster.position[old.position] = new_name
            if bootstrap_first:
                node.gate = "bootstrap"
            self.roster.start(node)
            self.network.apply_links(node)
            self._note("replacement", f"{new_name} replaces {name} (new identity, empty disk)")
            self.metrics.watch(f"node:{new_name}", f"{new_name} replaces {name}")
            self.retire(old, node)
            return
        ledger = Ledger(":memory:", self.roster.store, durable=False)
        if restore == "acked":
            keep = [
                op for op in old.ledger.ops_since({}) if op.origin != old.node_id or op.seq <= acked
            ]
            ledger.ingest(keep, old.ledger.nodes())
        old.ledger.close()
        old.retired = True
        self.net.remove(old.node_id)
        # A chain reset (meshpos/domain/revocation.py): the terminal keeps its name and place but
        # signs with a new key from now on, certified by the store key, and its old chain is
        # retired into the new one. Ops of the old chain only an unreachable replica holds can
        # no longer collide with new ones (a fork): they are another chain, and count when they
        # turn up.
        self.roster.rekey(name)
        node = self.roster.make(name, old.position, "counter", ledger, clock=old.clock)
        node.epoch = old.epoch + 1
        node.ops_signed, node.max_lead_ms = old.ops_signed, old.max_lead_ms
        node.receipts_off, node.max_skew_ms = old.receipts_off, old.max_skew_ms
        if bootstrap_first:
            node.gate = "bootstrap"  # it sells once it caught up with a peer, as a new one
        self.roster.start(node)
        self.network.apply_links(node)
        self._note("replacement", f"{name} restored ({restore}), chain reset to a new key")
        self.metrics.watch(f"node:{name}", f"{name} restored from {restore} copy")
        self.retire(old, node)
