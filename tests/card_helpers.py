"""HQ as a store sees it, for tests of card payments: its payment key, settings, card float,
blocklist and payment results, handed to a terminal directly."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from mesh_helpers import EPOCH_MS

from meshpos.core.clock import HLC
from meshpos.core.ops import GENESIS, Op, Signer, make_op
from meshpos.domain.cards import blocklist_key
from meshpos.domain.enrolment import NodeRecord, issue, make_request, read_request
from meshpos.service.terminal import Terminal


class FakeHQ:
    """HQ as a store sees it: a node with an `hq` certificate signed by the store key, whose ops
    (its payment key, settings, float, payment results) are handed to terminals directly."""

    def __init__(self, store: str = "S1", now_ms: Callable[[], int] = lambda: EPOCH_MS) -> None:
        self.store = store
        self.now_ms = now_ms
        store_key = Signer.from_seed(f"cards-store-{store}".encode())
        self.signer = Signer.from_seed(f"cards-hq-{store}".encode())
        req = read_request(make_request(self.signer, store, "hq", b"0" * 40))
        cert = issue(store_key, store, req, role="hq", now_ms=EPOCH_MS)
        self.record = NodeRecord(self.signer.node_id, self.signer.public_key, store, "hq", cert)
        self.payment = X25519PrivateKey.generate()
        self.ops: list[Op] = []
        self.clock = HLC(0)
        pub = self.payment.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        self.op("setting.set", {"key": "payments.hq_public_key", "value": pub.hex()})

    @property
    def node_id(self) -> str:
        return self.signer.node_id

    def op(self, kind: str, payload: dict[str, Any]) -> Op:
        prev = self.ops[-1].hash if self.ops else GENESIS
        op = make_op(self.signer, store=self.store, seq=len(self.ops) + 1,
                     hlc=self.clock.now(self.now_ms()), user="hq", kind=kind, payload=payload,
                     prev=prev)  # fmt: skip
        self.ops.append(op)
        return op

    def mint(self, node: str, amount: int) -> Op:
        return self.op("card.float", {"to": node, "amount": amount, "total": amount})

    def setting(self, key: str, value: Any) -> Op:
        return self.op("setting.set", {"key": key, "value": value})

    def block(self, pan: str, reason: str = "lost_or_stolen") -> Op:
        value = {"blocked": True, "reason": reason, "since_ms": EPOCH_MS}
        return self.setting(blocklist_key(pan), value)

    def result(self, sale: Op, status: str, tender: int = 0) -> Op:
        t = sale.payload["tenders"][tender]
        return self.op("payment.result", {
            "sale_id": sale.payload["sale_id"], "sale_op": f"{sale.origin}:{sale.seq}",
            "tender": tender, "status": status, "amount": t["amount"],
            "code": "approved" if status == "approved" else "do_not_honour",
            "message": status, "auth_code": "A1B2C3" if status == "approved" else "",
            "card_last4": t["card_last4"], "card_brand": t["card_brand"],
        })  # fmt: skip

    def give(self, t: Terminal) -> None:
        held = t.ledger.head(self.node_id)[0]
        t.ingest([o for o in self.ops if o.seq > held], [self.record])
