"""A small builder for sync tests and the simulator: N terminals of one store on in-memory ledgers,
wired to a seeded `MemNet`, sharing a catalogue and a few customers.

Terminals start knowing only their own node record plus T0's (the catalogue's origin), so the
others are learnt the way a real node learns them: from Hello, or from node rows in an Ops batch.
Time is the network's simulated clock, so a run is reproducible from its seed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from meshpos.core.clock import HLC
from meshpos.core.errors import MeshposError
from meshpos.core.ops import Op, Signer, make_op
from meshpos.domain.catalog import CatalogRow
from meshpos.domain.enrolment import NodeRecord
from meshpos.domain.escrow import NEED
from meshpos.ledger.schema import VIEW_TABLES
from meshpos.ledger.store import Ledger
from meshpos.service import escrow
from meshpos.service.config import NodeConfig
from meshpos.service.terminal import RecordHook, SaleResult, Terminal
from meshpos.sync.memnet import LinkSpec, MemNet
from meshpos.sync.protocol import Action, Admit, RequestReceived, Send, SyncConfig, SyncNode

STORE = "S1"
EPOCH_MS = 1_760_000_000_000

T = TypeVar("T")
Views = dict[str, list[tuple[Any, ...]]]


def signer(i: int, salt: str = "mesh") -> Signer:
    return Signer.from_seed(f"meshpos-{salt}-node-{i}".encode())


def catalog(n: int = 8, stock: int = 20) -> list[CatalogRow]:
    return [
        CatalogRow(
            line=i + 2,
            sku=f"SKU{i}",
            fields={
                "name": f"Item {i}",
                "barcode": f"890200000{i:04d}",
                "category": "Tops" if i % 2 else "Bottoms",
                "price": 49_900 + 10_000 * i,
                "gst_rate": 1200 if i % 2 else 500,
            },
            stock=stock,
        )
        for i in range(n)
    ]


def views(ledger: Ledger) -> Views:
    """Every materialised view, in a canonical order, for comparing replicas."""
    return {
        table: sorted(ledger.conn.execute(f"SELECT * FROM {table}").fetchall(), key=repr)
        for table in VIEW_TABLES
    }


@dataclass
class MeshNode:
    index: int
    signer: Signer
    terminal: Terminal
    epoch: int = 1

    @property
    def node_id(self) -> str:
        return self.signer.node_id

    @property
    def name(self) -> str:
        return self.terminal.cfg.name

    @property
    def ledger(self) -> Ledger:
        return self.terminal.ledger


class Mesh:
    """N terminals on one MemNet. Index-based helpers ring business actions at a terminal and tell
    its SyncNode at once, as the daemon does after every local write."""

    def __init__(
        self,
        n: int = 3,
        *,
        seed: int = 0,
        link: LinkSpec | None = None,
        links: Mapping[tuple[int, int], LinkSpec] | None = None,
        config: SyncConfig | None = None,
        admit: Callable[[int], Admit | None] | None = None,
        rows: Sequence[CatalogRow] | None = None,
        customers: int = 3,
        store: str = STORE,
        salt: str = "mesh",
        tick_ms: int = 100,
        on_record: Sequence[RecordHook] = (),
    ) -> None:
        self.store = store
        self.on_record = on_record
        self.config = config
        self.admit = admit or (lambda i: None)
        self.net = MemNet(seed=seed, link=link, tick_ms=tick_ms)
        self.net.on_action = self._on_action
        self.watchers: list[Callable[[str, Action], None]] = []
        self.may_sign: Callable[[int], bool] = lambda i: True
        self.nodes = [self._terminal(i, signer(i, salt)) for i in range(n)]
        self.rows = list(rows if rows is not None else catalog())
        self.customers: list[str] = []
        t0 = self.nodes[0].terminal
        if self.rows:
            t0.import_catalog(self.rows)
        for k in range(customers):
            self.customers.append(t0.add_customer({"name": f"Customer {k}", "phone": f"98{k:08d}"}))
        shared = t0.ledger.ops_since({})
        for node in self.nodes[1:]:
            node.ledger.ingest(shared, [t0.node_record()])
        for (i, j), spec in (links or {}).items():
            self.net.set_link(self.nodes[i].node_id, self.nodes[j].node_id, spec)
        for node in self.nodes:
            self.net.add(self._sync(node))

    # -- building -------------------------------------------------------------------------------

    def now_ms(self) -> int:
        return EPOCH_MS + self.net.now

    def _terminal(self, i: int, s: Signer, ledger: Ledger | None = None) -> MeshNode:
        cfg = NodeConfig(
            dir=Path("/nonexistent"), store=self.store, name=f"T{i}", node_id=s.node_id
        )
        ledger = ledger or Ledger(":memory:", self.store, durable=False)
        return MeshNode(
            i, s, Terminal(cfg, s, ledger, now_ms=self.now_ms, on_record=self.on_record)
        )

    def _sync(self, node: MeshNode) -> SyncNode:
        return SyncNode(
            node.ledger,
            node.terminal.node_record(),
            epoch=node.epoch,
            admit=self.admit(node.index),
            config=self.config,
        )

    def add_node(self, s: Signer, name: str, *, store: str | None = None) -> MeshNode:
        """A further node (an outsider, a node of another store) with an empty ledger."""
        cfg = NodeConfig(
            dir=Path("/nonexistent"), store=store or self.store, name=name, node_id=s.node_id
        )
        ledger = Ledger(":memory:", store or self.store, durable=False)
        node = MeshNode(len(self.nodes), s, Terminal(cfg, s, ledger, now_ms=self.now_ms))
        self.nodes.append(node)
        self.net.add(self._sync(node))
        return node

    def watch(self, fn: Callable[[str, Action], None]) -> None:
        """Call `fn(node_id, action)` for every action any SyncNode returns."""
        self.watchers.append(fn)

    def index(self, node_id: str) -> int:
        return next(n.index for n in self.nodes if n.node_id == node_id)

    def _on_action(self, nid: str, action: Action) -> None:
        """What the daemon does with requests: a peer asking for loyalty redemption rights is
        granted what this terminal holds, and the grant (an op) is pushed at once."""
        if isinstance(action, RequestReceived) and action.kind == NEED:
            i = self.index(nid)
            if self.may_sign(i):
                try:
                    granted = escrow.handle_need(self.nodes[i].terminal, action.peer, action.body)
                except MeshposError:
                    granted = 0
                if granted:
                    self.net.local_changed(nid)
        for fn in self.watchers:
            fn(nid, action)

    # -- acting at a terminal -------------------------------------------------------------------

    def sync_node(self, i: int) -> SyncNode:
        return self.net.nodes[self.nodes[i].node_id]

    def act(self, i: int, action: Callable[[Terminal], T]) -> T:
        """Run a business action at terminal `i`, then push its ops as the daemon would."""
        result = action(self.nodes[i].terminal)
        self.net.local_changed(self.nodes[i].node_id)
        return result

    def sell(self, i: int, items: Sequence[tuple[str, int]], **kw: Any) -> SaleResult:
        return self.act(i, lambda t: t.sell(items, **{"allow_oversell": True, **kw}))

    def earn(self, i: int, customer: str, points: int) -> Op:
        payload = {"customer_id": customer, "delta": points, "reason": "promotion"}
        return self.act(i, lambda t: t.append("loyalty.adjust", payload))

    def ask_rights(self, i: int, customer: str, points: int) -> int:
        """Terminal `i` asks every peer it can reach for `points` of `customer`'s redemption
        rights, as the daemon does after an EscrowShortfall; returns how many peers were asked."""
        node = self.nodes[i]
        sync = self.net.nodes[node.node_id]
        peers = sync.ready_peers() if node.node_id in self.net.up else []
        body: dict[str, object] = {"customer_id": customer, "points": points}
        for peer in peers:
            for action in sync.request(peer, NEED, body, self.net.now):
                if isinstance(action, Send):
                    self.net.send(node.node_id, action.peer, action.data)
        return len(peers)

    def receive_stock(self, i: int, sku: str, qty: int) -> Op:
        return self.act(i, lambda t: t.move_stock("receive", sku, qty, "delivery"))

    def backlog(self, i: int, n: int) -> list[Op]:
        """`n` stock receipts at terminal `i`, signed and stored in one batch (fast: no per-op
        transaction), without telling the network: the ops a node rang while it was away."""
        node = self.nodes[i]
        seq, prev = node.ledger.head(node.node_id)
        clock = HLC(node.ledger.max_hlc())
        ops = []
        for k in range(n):
            op = make_op(
                node.signer,
                store=self.store,
                seq=seq + 1 + k,
                hlc=clock.now(self.now_ms()),
                user="cashier",
                kind="stock.receive",
                payload={"sku": self.rows[k % len(self.rows)].sku, "delta": 1, "reason": "count"},
                prev=prev,
            )
            prev = op.hash
            ops.append(op)
        node.ledger.ingest(ops)
        return ops

    # -- faults ---------------------------------------------------------------------------------

    def stop(self, i: int) -> None:
        self.net.stop(self.nodes[i].node_id)

    def restart(self, i: int) -> SyncNode:
        """The process restarts: same ledger, a new SyncNode with a new epoch."""
        node = self.nodes[i]
        node.epoch += 1
        sync = self._sync(node)
        self.net.replace(sync)
        return sync

    def wipe(self, i: int) -> SyncNode:
        """The disk dies: a new empty ledger under the same identity, then the node restarts."""
        old = self.nodes[i]
        old.ledger.close()
        node = self._terminal(i, old.signer)
        node.epoch = old.epoch + 1
        self.nodes[i] = node
        sync = self._sync(node)
        self.net.replace(sync)
        return sync

    def partition(self, *groups: Sequence[int]) -> None:
        self.net.partition(*[[self.nodes[i].node_id for i in g] for g in groups])

    def heal(self) -> None:
        self.net.heal()

    # -- observing ------------------------------------------------------------------------------

    def ledgers(self, among: Sequence[int] | None = None) -> list[Ledger]:
        idx = range(len(self.nodes)) if among is None else among
        return [self.nodes[i].ledger for i in idx]

    def converged(self, among: Sequence[int] | None = None) -> bool:
        ledgers = self.ledgers(among)
        first = ledgers[0].vv()
        return all(lg.vv() == first and not lg.pending_count() for lg in ledgers)

    def settle(self, among: Sequence[int] | None = None, limit_ms: int = 120_000) -> int:
        """Run the network until the replicas hold the same ops: simulated ms taken, -1 at limit."""
        return self.net.settle(lambda: self.converged(among), limit_ms=limit_ms)

    def views(self, i: int) -> Views:
        return views(self.nodes[i].ledger)

    def node_record(self, i: int) -> NodeRecord:
        return self.nodes[i].terminal.node_record()
