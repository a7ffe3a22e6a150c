"""HQ opens a store's card float: the only minter of `card.float` ops, serial per store.

Card float is escrow rights of the `card-float` pseudo-customer (see `meshpos.service.cards`): what
a store's counters may take in offline card payments before HQ answers.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from meshpos.core.errors import InputError, RemoteError
from meshpos.core.ops import Op, unpack
from meshpos.domain.cards import float_shares
from meshpos.domain.enrolment import ROLES
from meshpos.hq.service import HQService
from meshpos.ledger.fold import CARD_FLOAT
from meshpos.service.cards import MAX_FLOAT, STORE_TOTAL_SETTING


def _role(cert: bytes | None) -> str | None:
    if cert is None:
        return None
    try:
        fields = unpack(unpack(cert, "certificate")[0], "certificate")
        role = fields[7] if isinstance(fields, list) and len(fields) == 9 else None
    except (RemoteError, IndexError, KeyError, TypeError):
        return None
    return role if role in ROLES else None


def hq_open_float(
    svc: HQService, total: int, stores: Sequence[str] | None = None, user: str = "hq"
) -> list[Op]:
    """Set each store's card float to `total` paise: sign `cards.floor_store_total` and the
    `card.float` ops for the difference from what HQ minted before, shared out evenly among the
    store's terminals (a lower total takes float back, from the counters holding most first).
    HQ is the only minter and its ops are serial per store, so the minted total is exact even
    while a store's LAN is split."""
    if not 0 <= total <= MAX_FLOAT:
        raise InputError("a store's card float must be between ₹0 and ₹1,000 crore")
    targets = svc._stores(stores)
    terminals = {
        s: sorted(
            n.node_id
            for n in svc.storage.nodes(s)
            if n.node_id != svc.node_id and _role(n.cert) == "terminal"
        )
        for s in targets
    }
    empty = [s for s, nodes in terminals.items() if not nodes]
    if empty:
        raise InputError(f"store(s) {', '.join(empty)} have no terminal enrolled at HQ yet")

    def fn(tx: Any) -> list[Op]:
        tx.lock(f"{s}\x00{svc.node_id}" for s in targets)  # the lock emit_in takes, held sooner
        items: list[tuple[str, str, dict[str, Any]]] = []
        for s in targets:
            minted = sum(
                int(json.loads(v))
                for (v,) in tx.execute(
                    "SELECT value FROM registers WHERE store = ? AND entity = 'card_float' "
                    "AND field = 'amount'",
                    (s,),
                )
            )
            items.append((s, "setting.set", {"key": STORE_TOTAL_SETTING, "value": total}))
            held = dict(
                tx.execute(
                    "SELECT node, points FROM rights WHERE store = ? AND customer_id = ?",
                    (s, CARD_FLOAT),
                )
            )
            for node, amount in float_shares(total - minted, terminals[s], held).items():
                items.append((s, "card.float", {"to": node, "amount": amount, "total": total}))
        out: list[Op] = svc.storage.emit_in(tx, svc.signer, items, svc.now_ms(), user)
        return out

    return svc.storage.db.run(fn)
