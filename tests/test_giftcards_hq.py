"""Another store's gift card, redeemed through HQ as loyalty points are (issue 15 item 1): the
store holding the balance hands it to HQ, HQ burns it there and mints it for the asking counter of
the other store, which spends it; both stores then show the same balance."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from hq_helpers import HQServer, make_store

from meshpos.core.errors import EncodingError, InputError, NotFound
from meshpos.core.ops import GENESIS, Signer, make_op
from meshpos.domain import giftcards
from meshpos.domain.escrow import EscrowShortfall
from meshpos.domain.pricing import Tender
from meshpos.hq.service import HQService
from meshpos.ledger.fold import Changes, fold
from meshpos.service import giftcards as service


@pytest.fixture
def hq(tmp_path: Path) -> Iterator[HQServer]:
    server = HQServer(tmp_path / "hq")
    try:
        yield server
    finally:
        server.stop()


def test_a_card_sold_in_one_store_is_spent_in_another_through_hq(
    hq: HQServer, tmp_path: Path
) -> None:
    svc: HQService = hq.service()
    a = make_store(hq, tmp_path / "a", 1, svc=svc)
    b = make_store(hq, tmp_path / "b", 1, svc=svc)
    try:
        ta, tb = a.t1, b.t1
        code = str(service.issue(ta, 100_000).payload["code"])
        key = giftcards.escrow_key(code)
        with pytest.raises(NotFound):
            tb.giftcard(code)  # B has never seen it
        with pytest.raises(EscrowShortfall):  # named with an amount: asked of HQ
            tb.sell([("TEE", 1)], tenders=[Tender("giftcard", 40_000, code=code), Tender("cash")])
        assert ta.grant_rights(key, svc.node_id, 100_000) == 100_000  # A's relay hands it on
        a.relay()
        b.relay()
        with b.client() as c:
            assert c.claim_points(key, 40_000) == {"moved": 40_000, "asked": 0}
        b.relay()
        assert tb.rights(key) == 40_000
        known = tb.giftcard(code)  # HQ told B how A issued it, with the move
        assert (known.store, known.issued, known.balance) == (a.id, 100_000, 40_000)
        assert known.expires_ms == ta.giftcard(code).expires_ms is not None
        shown = service.show(tb, code)
        assert shown["issued_in"] == a.id and shown["balance"] == 40_000
        assert f"issued in store {a.id}" in "\n".join(service.balance_lines(tb, code))
        with pytest.raises(EscrowShortfall):  # more than came over: asked of HQ, not refused
            tb.sell([("TEE", 1)], tenders=[Tender("giftcard", 50_000, code=code), Tender("cash")])
        tb.sell([("TEE", 1)], tenders=[Tender("giftcard", 40_000, code=code), Tender("cash")])
        assert tb.ledger.giftcards.balance(code) == 0
        with pytest.raises(InputError, match=f"issued in store {a.id}: name the amount"):
            tb.sell([("TEE", 1)], tenders=[Tender("giftcard", code=code), Tender("cash")])
        with pytest.raises(EscrowShortfall):  # named: the rest is asked of HQ again
            tb.sell([("TEE", 1)], tenders=[Tender("giftcard", 10_000, code=code), Tender("cash")])
        a.relay()
        assert ta.ledger.giftcards.balance(code) == 60_000
        assert ta.conflicts() == [] and tb.conflicts() == []
    finally:
        a.close()
        b.close()
        svc.close()


KNOWN = {"code": "GC1234567890128", "kind": "giftcard", "amount": 100_000, "store": "S1",
         "expires_ms": 1_900_000_000_000, "issued_ms": 1_800_000_000_000}  # fmt: skip


def _known(payload: dict[str, object]) -> Changes:
    op = make_op(Signer.from_seed(b"hq"), store="S2", seq=1, hlc=1 << 16, user="hq",
                 kind=giftcards.KNOWN, payload=payload, prev=GENESIS)  # fmt: skip
    return fold([op])


def test_a_card_record_from_hq_writes_the_register_and_moves_no_value() -> None:
    ch = _known(KNOWN)
    fields = {(r[0], r[1], r[2]): r[3] for r in ch.registers}
    assert fields[("giftcard", KNOWN["code"], "expires_ms")] == "1900000000000"
    assert fields[("giftcard", KNOWN["code"], "store")] == '"S1"'
    assert not ch.rows.get("rights_log") and not ch.rights


@pytest.mark.parametrize(
    "bad",
    [{"amount": 0}, {"amount": "100"}, {"kind": "voucher"}, {"store": ""}, {"code": 5},
     {"expires_ms": "2030-01-01"}],
)  # fmt: skip
def test_a_malformed_card_record_from_hq_is_refused(bad: dict[str, object]) -> None:
    with pytest.raises(EncodingError):
        _known({**KNOWN, **bad})
