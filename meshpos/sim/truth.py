"""The ground truth of a simulated store, kept next to the replicas and never read by them.

Every op any node signed (its signature, when, where), the ops that died with a disk before any
peer held them, when each op first reached a second node, the price writes (to spot an older
edit winning by a clock running ahead), what replicas refused, peers coming and going, and the
timeline of faults. The report checks the replicas against this, never against the protocol's
internal state.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from meshpos.core.clock import wall_of
from meshpos.domain.giftcards import CREDIT_NOTE, escrow_key, spent_by
from meshpos.node.core import NodeAction
from meshpos.sim.nodes import SimNode
from meshpos.sync.protocol import Applied, PeerDown, PeerUp, Rejected

RECEIPT_OFF_MS = 5 * 60_000
SALE_KINDS = ("sale", "return", "exchange")


@dataclass(frozen=True)
class Rung:
    """One op as its origin signed it: the ground truth the replicas are checked against.
    `points`: what it did to a customer's points, (customer, adjusted, earned, redeemed, given
    back by a return), when it did anything."""

    sig: bytes
    kind: str
    at: int
    node: str
    points: tuple[str, int, int, int, int] | None = None
    cards: tuple[tuple[str, int], ...] = ()  # gift card balance moves: (escrow key, paise)


def points_of(kind: str, payload: dict[str, object]) -> tuple[str, int, int, int, int] | None:
    """An op's effect on its customer's points as signed (whether or not it had authority)."""
    customer = payload.get("customer_id" if kind == "loyalty.adjust" else "customer")
    if not isinstance(customer, str) or not customer:
        return None

    def n(key: str) -> int:
        value = payload.get(key)
        return value if isinstance(value, int) and not isinstance(value, bool) else 0

    if kind == "loyalty.adjust":
        return (customer, n("delta"), 0, 0, 0)
    if kind == "return":
        return (customer, 0, 0, 0, -n("points_redeemed"))
    if kind in ("sale", "exchange"):
        return (customer, 0, n("points_earned"), n("points_redeemed"), 0)
    return None


def cards_of(kind: str, payload: dict[str, object]) -> tuple[tuple[str, int], ...]:
    """An op's effect on gift card and credit note balances as signed: an issue adds its value,
    a tender of a sale or exchange spends its amount, a refund to a credit note adds one."""
    if kind == "giftcard.issue":
        code, amount = payload.get("code"), payload.get("amount")
        if isinstance(code, str) and isinstance(amount, int):
            return ((escrow_key(code), amount),)
        return ()
    if kind not in SALE_KINDS:
        return ()
    tenders = payload.get("tenders")
    out = [] if kind == "return" else [(k, -a) for k, a in spent_by(tenders).items()]
    for t in tenders if isinstance(tenders, list) else []:
        if isinstance(t, dict) and t.get("method") == CREDIT_NOTE:
            code, amount = t.get("code"), t.get("amount")
            if isinstance(code, str) and isinstance(amount, int):
                out.append((escrow_key(code), abs(amount)))
    return tuple(out)


@dataclass
class GroundTruth:
    day_start_ms: int  # the true wall clock at simulated time 0
    rung: dict[tuple[str, int], Rung] = field(default_factory=dict)
    lost_dead: dict[tuple[str, int], Rung] = field(default_factory=dict)
    copied: dict[tuple[str, int], int] = field(default_factory=dict)  # when a 2nd node had it
    price_writes: list[tuple[str, int, int, str, int]] = field(default_factory=list)
    # (sku, at, hlc, origin, price)
    rejections: list[tuple[int, str, str, str]] = field(default_factory=list)
    peer_events: Counter[str] = field(default_factory=Counter)
    timeline: list[tuple[int, str, str]] = field(default_factory=list)  # (at, what, detail)

    def record(self, node: SimNode, now: int) -> None:
        """Note the ops `node` signed since the last time: who signed what, and when."""
        head = node.ledger.head(node.node_id)[0]
        true_wall = self.day_start_ms + now
        for seq in range(node.recorded + 1, head + 1):
            op = node.ledger.get(node.node_id, seq)
            assert op is not None
            payload = dict(op.payload)
            points = points_of(op.kind, payload)
            cards = cards_of(op.kind, payload)
            self.rung[(op.origin, op.seq)] = Rung(op.sig, op.kind, now, node.name, points, cards)
            node.ops_signed += 1
            lead = wall_of(op.hlc) - true_wall
            node.max_lead_ms = max(node.max_lead_ms, lead)
            node.ops_led += lead > RECEIPT_OFF_MS
            if op.kind in SALE_KINDS:
                ts = op.payload.get("ts_ms")
                if isinstance(ts, int) and abs(ts - true_wall) > RECEIPT_OFF_MS:
                    node.receipts_off += 1
            if op.kind == "product.upsert":
                fields = op.payload.get("fields")
                if isinstance(fields, dict) and "price" in fields:
                    sku = str(op.payload.get("sku"))
                    self.price_writes.append((sku, now, op.hlc, op.origin, int(fields["price"])))
        node.recorded = max(node.recorded, head)

    def observe(self, nid: str, action: NodeAction, now: int) -> None:
        """What the network's nodes report: ops reaching another node, refusals, peers."""
        if isinstance(action, Applied):
            copied = self.copied
            for op in action.ops:
                copied.setdefault((op.origin, op.seq), now)
        elif isinstance(action, Rejected):
            self.rejections.append((now, nid, action.peer, action.reason))
        elif isinstance(action, PeerUp):
            self.peer_events["up"] += 1
        elif isinstance(action, PeerDown):
            self.peer_events["down"] += 1

    def points_signed(self) -> list[tuple[str, int, int, int, int]]:
        """Per customer, from every op signed (and not lost with a disk): points adjusted,
        earned and redeemed by sales and exchanges, given back by returns."""
        totals: dict[str, list[int]] = {}
        for r in self.rung.values():
            if r.points is not None:
                row = totals.setdefault(r.points[0], [0, 0, 0, 0])
                for i, v in enumerate(r.points[1:]):
                    row[i] += v
        return [(c, v[0], v[1], v[2], v[3]) for c, v in sorted(totals.items())]

    def cards_signed(self) -> dict[str, tuple[int, int]]:
        """Per gift card or credit note, from every op signed (and not lost with a disk): the
        value it was given and what was spent from it."""
        totals: dict[str, list[int]] = {}
        for r in self.rung.values():
            for key, delta in r.cards:
                row = totals.setdefault(key, [0, 0])
                row[0 if delta > 0 else 1] += abs(delta)
        return {key: (v[0], v[1]) for key, v in sorted(totals.items())}

    def lose_tail(self, node: SimNode, held: int) -> int:
        """The disk of `node` died: its ops past `held` (the most any other replica holds) are
        gone with it. How many."""
        head = node.ledger.head(node.node_id)[0]
        for seq in range(held + 1, head + 1):
            key = (node.node_id, seq)
            if key in self.rung:
                self.lost_dead[key] = self.rung.pop(key)
        return head - held

    def note(self, at: int, what: str, detail: str) -> None:
        self.timeline.append((at, what, detail))
