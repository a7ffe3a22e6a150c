"""HQ opens a store's card float: the only minter of `card.float` ops, serial per store.

Card float is escrow rights of the `card-float` pseudo-customer (see `meshpos.service.cards`): what
a store's counters may take in offline card payments before HQ answers.
"""

from __future__ import annotations

from collections.abc import Sequence

from meshpos.core.errors import InputError
from meshpos.core.ops import Op
from meshpos.domain.cards import float_shares
from meshpos.hq.service import HQService
from meshpos.hq.storage.database import Tx, lock_key
from meshpos.hq.storage.log import RULEBOOK_LOCK, OpToSign
from meshpos.hq.storage.views import minted_float, rights_held
from meshpos.ledger.fold import CARD_FLOAT
from meshpos.service.cards import MAX_FLOAT, STORE_TOTAL_SETTING


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
    targets = svc.ready_stores(stores)
    terminals = {s: svc.storage.enrolment.node_ids(s, "terminal") for s in targets}
    empty = [s for s, nodes in terminals.items() if not nodes]
    if empty:
        raise InputError(f"store(s) {', '.join(empty)} have no terminal enrolled at HQ yet")

    def fn(tx: Tx) -> list[Op]:
        # the locks emit_in takes, held sooner
        tx.lock(lock_key(s, k) for s in targets for k in (svc.node_id, RULEBOOK_LOCK))
        items: list[OpToSign] = []
        for s in targets:
            items.append((s, "setting.set", {"key": STORE_TOTAL_SETTING, "value": total}))
            held = rights_held(tx, s, CARD_FLOAT)
            shares = float_shares(total - minted_float(tx, s), terminals[s], held)
            for node, amount in shares.items():
                items.append((s, "card.float", {"to": node, "amount": amount, "total": total}))
        return svc.storage.log.emit_in(tx, svc.signer, items, svc.now_ms(), user)

    return svc.storage.db.run(fn)
