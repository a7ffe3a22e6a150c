"""Loyalty across stores: HQ as the escrow holder between them.

A customer's redemption rights are held per node of each store (escrow). When a node of one store
needs points its LAN cannot cover, HQ moves rights that nodes of other stores handed to it: it
burns the points where it holds them (`loyalty.adjust -n` signed by HQ in the source store, which
also spends HQ's rights there), mints them in the target store (`loyalty.adjust +n`, HQ's rights
there) and transfers those rights to the asking node (`escrow.transfer`). What it cannot move yet
stays asked (`loyalty_asks`); the stores holding rights learn of the asks when they pull, and the
ask is moved when their rights reach HQ.
"""

from __future__ import annotations

import json
import logging
from typing import Any, TypedDict

from meshpos.core.errors import LocalError
from meshpos.core.ops import Signer
from meshpos.domain.giftcards import KNOWN, CardState, code_of, is_key
from meshpos.hq.storage.database import Database, Tx, lock_key
from meshpos.hq.storage.enrolment import Enrolment, NotEnrolled
from meshpos.hq.storage.log import RULEBOOK_LOCK, OpLog, OpToSign
from meshpos.hq.storage.views import store_time

log = logging.getLogger(__name__)


class Ask(TypedDict):
    """Points of a customer other stores wait for, and the nodes of this store holding rights."""

    customer_id: str
    points: int
    holders: dict[str, int]


class LoyaltyEscrow:
    def __init__(self, db: Database, log: OpLog, enrolment: Enrolment) -> None:
        self.db = db
        self.log = log
        self.enrolment = enrolment

    def move_points(
        self,
        signer: Signer,
        store: str,
        customer: str,
        points: int,
        node: str,
        now_ms: int,
    ) -> tuple[int, int, str]:
        """Give node `node` of `store` up to `points` of redemption rights for `customer`, taken
        from rights that nodes of other stores handed to HQ. Returns (moved, still asked, why
        nothing may move: an expired gift card's refusal, "" otherwise)."""
        if points <= 0:
            raise LocalError("points to move must be positive")

        def fn(tx: Tx) -> tuple[int, int, str]:
            tx.lock([f"loyalty\x00{customer}"])
            self.enrolment.require(tx, store)
            if node not in self.enrolment.keys(tx, store, [node]):
                raise NotEnrolled(f"node {node} is not enrolled in store {store} at HQ")
            card, told = self._card(tx, store, customer)
            refused = card.refusal(now_ms, store_time(tx, store).day) if card else None
            takes = [] if refused else self._takes(tx, signer.node_id, store, customer, points)
            moved = sum(take for _, take in takes)
            items = told
            if moved:
                tx.lock(
                    lock_key(s, k)
                    for s in {store, *(s for s, _ in takes)}
                    for k in (signer.node_id, RULEBOOK_LOCK)
                )
                items += self._move(tx, store, customer, node, takes)
            if items:
                self.log.emit_in(tx, signer, items, now_ms, "hq-loyalty")
            if refused:
                log.info("store %s asked for %s: %s; nothing moved", store, customer, refused)
            # a refused card is never movable: its ask is dropped, and the store's tills say why
            left = 0 if refused else points - moved
            tx.execute(
                "DELETE FROM loyalty_asks WHERE store = ? AND customer_id = ? AND node = ?",
                (store, customer, node),
            )
            if left:
                tx.execute(
                    "INSERT INTO loyalty_asks VALUES (?, ?, ?, ?, ?)",
                    (store, customer, node, left, now_ms),
                )
            return moved, left, refused or ""

        return self.db.run(fn)

    def _card(self, tx: Tx, store: str, key: str) -> tuple[CardState | None, list[OpToSign]]:
        """For a gift card's escrow key: the card as the store that issued it holds it (None
        when HQ has not seen another store issue it), and the `giftcard.known` op telling
        `store` of it when `store` holds no record of it yet. (None, []) for loyalty points."""
        if not is_key(key):
            return None, []
        code = code_of(key)
        records: dict[str, dict[str, Any]] = {}
        for src, name, value in tx.execute(
            "SELECT store, field, value FROM registers WHERE entity = 'giftcard' AND key = ?",
            (code,),
        ):
            records.setdefault(str(src), {})[str(name)] = json.loads(value)
        issuer = next((src for src, f in sorted(records.items()) if not f.get("store")), None)
        if issuer is None or issuer == store:
            return None, []
        card = CardState.of_register(code, records[issuer], 0)
        if store in records:
            return card, []
        return card, [(store, KNOWN, card.known_payload(issuer))]

    def _takes(
        self, tx: Tx, hq_node: str, store: str, customer: str, points: int
    ) -> list[tuple[str, int]]:
        """(store, points) of HQ's rights in other stores to take, up to `points` in all."""
        held = tx.execute(
            "SELECT store, points FROM rights WHERE customer_id = ? AND node = ? "
            "AND store != ? AND points > 0 ORDER BY store",
            (customer, hq_node, store),
        )
        takes: list[tuple[str, int]] = []
        moved = 0
        for src, pts in held:
            take = min(int(pts), points - moved)
            if take <= 0:
                break
            takes.append((str(src), take))
            moved += take
        return takes

    def _move(
        self, tx: Tx, store: str, customer: str, node: str, takes: list[tuple[str, int]]
    ) -> list[OpToSign]:
        """The ops that burn `takes` where HQ holds them and mint them for `node` of `store`."""
        items: list[OpToSign] = [
            (src, "loyalty.adjust", {"customer_id": customer, "delta": -take,
                                     "reason": f"moved to store {store} by HQ"})
            for src, take in takes
        ]  # fmt: skip
        moved = sum(take for _, take in takes)
        items += self._customer_items(tx, store, customer)
        items.append(
            (store, "loyalty.adjust", {"customer_id": customer, "delta": moved,
                                       "reason": "moved from other stores by HQ"})
        )  # fmt: skip
        items.append(
            (store, "escrow.transfer", {"customer_id": customer, "to": node, "points": moved})
        )
        return items

    def _customer_items(self, tx: Tx, store: str, customer: str) -> list[OpToSign]:
        """A `customer.upsert` for a store that has never seen this customer, with the profile
        fields HQ knows from other stores."""
        if tx.execute(
            "SELECT 1 FROM registers WHERE store = ? AND entity = 'customer' AND key = ?",
            (store, customer),
        ):
            return []
        fields: dict[str, Any] = {}
        best: dict[str, tuple[int, str]] = {}
        for name, value, hlc, origin in tx.execute(
            "SELECT field, value, hlc, origin FROM registers WHERE entity = 'customer' AND key = ?",
            (customer,),
        ):
            if (int(hlc), str(origin)) > best.get(name, (-1, "")):
                best[name] = (int(hlc), str(origin))
                fields[name] = json.loads(value)
        if not fields:
            return []
        return [(store, "customer.upsert", {"customer_id": customer, "fields": fields})]

    def asks(self) -> list[tuple[str, str, str, int]]:
        """Open asks, oldest first: (store, customer, node, points)."""
        return [
            (str(s), str(c), str(n), int(p))
            for s, c, n, p in self.db.query(
                "SELECT store, customer_id, node, points FROM loyalty_asks "
                "ORDER BY asked_ms, store, customer_id, node"
            )
        ]

    def asks_for(self, store: str, hq_node: str) -> list[Ask]:
        """What the nodes of `store` are asked to hand to HQ: open asks of other stores for
        customers whose rights nodes of this store hold."""
        rows = self.db.query(
            "SELECT a.customer_id, a.wanted, r.node, r.points FROM (SELECT customer_id, "
            "CAST(SUM(points) AS BIGINT) AS wanted FROM loyalty_asks WHERE store != ? "
            "GROUP BY customer_id) a "
            "JOIN rights r ON r.customer_id = a.customer_id AND r.store = ? AND r.node != ? "
            "AND r.points > 0 ORDER BY a.customer_id, r.node",
            (store, store, hq_node),
        )
        out: dict[str, Ask] = {}
        for customer, wanted, node, points in rows:
            ask = out.setdefault(
                str(customer), Ask(customer_id=str(customer), points=int(wanted), holders={})
            )
            ask["holders"][str(node)] = int(points)
        return list(out.values())
