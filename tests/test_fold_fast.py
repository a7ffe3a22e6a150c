"""The fold's fast path for plain sales writes exactly what the field-by-field checked path
writes, and leaves every op it does not take (malformed ones too) to the checked path."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from meshpos.core.errors import EncodingError
from meshpos.core.ops import GENESIS, Op, Signer, make_op
from meshpos.domain.authority import judge, pending_amount, spends_of
from meshpos.domain.giftcards import spent_by
from meshpos.ledger.fold import CARD_FLOAT, Changes, _checked_record, _plain_sale, fold
from meshpos.ledger.judging import BatchPast, judge_batch, refusal

SIGNER = Signer.from_seed(b"fold-fast")

LINE: dict[str, Any] = {
    "sku": "KUR-OLI-M",
    "name": "Cotton kurta",
    "category": "Ethnic",
    "hsn": "621142",
    "qty": 1,
    "unit_price": 254900,
    "discount": 0,
    "gst_rate": 500,
    "tax": 12138,
    "cgst": 6069,
    "sgst": 6069,
    "igst": 0,
    "total": 254900,
}
SALE: dict[str, Any] = {
    "sale_id": "S-T1-000001",
    "receipt": "T1-000001",
    "number": 1,
    "terminal": "T1",
    "customer": None,
    "lines": [LINE],
    "subtotal": 254900,
    "discount": 0,
    "tax": 12138,
    "total": 254900,
    "tenders": [{"method": "cash", "amount": 254900, "tendered": 260000, "change": 5100}],
    "points_earned": 0,
    "points_redeemed": 0,
    "ts_ms": 1_760_000_000_000,
    "ref_sale": None,
}

# Values of every shape a field might hold in a signed but odd op.
ODD = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**60), max_value=2**60),
    st.sampled_from([0, 1, -1, 2**53, 2**53 + 1, "", "x", CARD_FLOAT, "27", "card"]),
    st.lists(st.integers(0, 3), max_size=2),
    st.dictionaries(st.sampled_from(["sku", "qty", "method"]), st.integers(0, 3), max_size=2),
)
SALE_KEYS = [*SALE, "place_of_supply", "seller_state", "buyer_gstin", "seller_gstin"]
LINE_KEYS = [*LINE, "extra"]
TENDER_KEYS = ["method", "amount", "points", "card_sealed", "card_sealed_sha256", "code"]


def _op(payload: dict[str, Any], kind: str = "sale") -> Any:
    return make_op(
        SIGNER,
        store="S",
        seq=1,
        hlc=7 << 16,
        user="cashier1",
        kind=kind,
        payload=payload,
        prev=GENESIS,
    )


def _outcome(fn: Any, op: Any) -> tuple[str, Any]:
    ch = Changes()
    try:
        fn(ch, op)
    except EncodingError as exc:
        return "error", str(exc)
    return "ok", ch


@st.composite
def sales(draw: st.DrawFn) -> dict[str, Any]:
    payload: dict[str, Any] = {
        **SALE,
        "lines": [dict(LINE)],
        "tenders": [dict(t) for t in SALE["tenders"]],
    }
    if draw(st.booleans()):
        payload["lines"].append(
            {**LINE, "sku": draw(st.sampled_from(["KUR-OLI-M", "B"])), "qty": 2}
        )
    if draw(st.booleans()):
        key = draw(st.sampled_from(["card_sealed", "card_sealed_sha256"]))  # in the body, beside
        card = {"method": "card", "amount": 1000, key: draw(st.sampled_from(["", "s"]))}
        payload["tenders"].append(card)
    if draw(st.booleans()):  # a gift card or credit note moves a card's balance (escrow)
        method = draw(st.sampled_from(["giftcard", "credit_note"]))
        payload["tenders"].append({"method": method, "amount": 500, "code": "GC7X2KQ9"})
    if draw(st.booleans()):
        payload.update(paper={"slip": "12", "number": 1, "written_ms": 5}, number=0)
    if draw(st.booleans()):
        customer = draw(st.sampled_from(["C00001", "giftcard:GC7X2KQ9"]))
        payload.update(
            customer=customer, points_earned=25, points_redeemed=draw(st.integers(0, 40))
        )
    lines, tenders = payload["lines"], payload["tenders"]
    for _ in range(draw(st.integers(0, 3))):
        where = draw(st.sampled_from(["sale", "line", "tender"]))
        if where == "sale":
            target, keys = payload, SALE_KEYS
        elif where == "line":
            target, keys = draw(st.sampled_from(lines)), LINE_KEYS
        else:
            target, keys = draw(st.sampled_from(tenders)), TENDER_KEYS
        key = draw(st.sampled_from(keys))
        if draw(st.booleans()):
            target.pop(key, None)
        else:
            target[key] = draw(ODD)
    return payload


@settings(max_examples=400, deadline=None)
@given(sales())
def test_fast_path_writes_what_the_checked_path_writes(payload: dict[str, Any]) -> None:
    op = _op(payload)
    checked = _outcome(_checked_record, op)
    fast = Changes()
    if _plain_sale(fast, op):
        assert checked == ("ok", fast)
    else:
        assert fast == Changes()  # not taken: nothing written, the checked path decides
    assert _outcome(lambda ch, o: fold([o], ch), op) == checked


def test_a_plain_sale_takes_the_fast_path() -> None:
    ch = Changes()
    assert _plain_sale(ch, _op(SALE))
    assert ch == fold([_op(SALE)]) and ch.rows["sale_lines"]


def test_returns_and_malformed_sales_do_not() -> None:
    bad = {**SALE, "lines": [{**LINE, "qty": 0}]}
    assert not _plain_sale(Changes(), _op(bad))
    assert _outcome(lambda ch, o: fold([o], ch), _op(bad))[0] == "error"
    assert not _plain_sale(Changes(), _op({**SALE, "customer": CARD_FLOAT}))


ODD_VALUES = [None, True, False, 0, 1, -1, 2**53 + 1, "", "x", CARD_FLOAT, [1], {"sku": 1}]


def test_every_field_set_to_every_odd_value() -> None:
    """Exhaustively: one field of a sale, a line or a tender missing or odd."""
    for where, keys in (("sale", SALE_KEYS), ("line", LINE_KEYS), ("tender", TENDER_KEYS)):
        for key in keys:
            for value in [*ODD_VALUES, "missing"]:
                payload: dict[str, Any] = {
                    **SALE,
                    "lines": [dict(LINE)],
                    "tenders": [dict(SALE["tenders"][0])],
                }
                targets = {"sale": payload, "line": payload["lines"][0]}
                target: dict[str, Any] = targets.get(where, payload["tenders"][0])
                if value == "missing":
                    target.pop(key, None)
                else:
                    target[key] = value
                op = _op(payload)
                fast = Changes()
                if _plain_sale(fast, op):
                    assert _outcome(_checked_record, op) == ("ok", fast), (where, key, value)
                else:
                    assert fast == Changes(), (where, key, value)


# -- the rulebook's side of the hot path -------------------------------------------------------


def _spends_counted_in_full(p: dict[str, Any]) -> dict[str, int]:
    """`spends_of` of a sale as it was before it skipped tenders that spend nothing."""
    out: dict[str, int] = {}
    customer = p.get("customer")
    redeemed, earned = p.get("points_redeemed"), p.get("points_earned")
    net = (redeemed if type(redeemed) is int else 0) - (earned if type(earned) is int else 0)
    if isinstance(customer, str) and customer and net > 0:
        out[customer] = net
    card = pending_amount(p.get("tenders") or ())
    if card:
        out[CARD_FLOAT] = card
    out.update(spent_by(p.get("tenders")))
    return out


@settings(max_examples=300, deadline=None)
@given(
    sales(),
    st.sampled_from(
        [None, (), 0, "", {}, [1], ({"method": "card", "amount": 5, "card_sealed": "s"},)]
    ),
)
def test_spends_skips_only_tenders_that_spend_nothing(payload: dict[str, Any], odd: Any) -> None:
    assert spends_of("sale", payload) == _spends_counted_in_full(payload)
    weird = {**payload, "tenders": odd}
    assert spends_of("sale", weird) == _spends_counted_in_full(weird)


class _NoPast(BatchPast):
    """A replica with no staff, settings, rights or revocations stored: the batch is all."""

    def stored_roles(self) -> dict[str, str]:
        return {}

    def stored_certs(self) -> dict[str, bytes]:
        return {}

    def stored_revocations(self) -> list[Op]:
        return []

    def staff_since(self) -> int | None:
        return None

    def stored_user(self, user: str, before_hlc: int) -> list[tuple[str, Any]]:
        return []

    def stored_settings(self) -> list[tuple[str, int, Any]]:
        return []

    def stored_rights(self, customer: str, node: str, op: Op) -> int:
        return 0

    def prev_hlc(self, origin: str, seq: int) -> int | None:
        return None


def _judged_one_by_one(ops: list[Op], past: BatchPast) -> Changes:
    """`judge_batch` as it was: a `fold([op])` per op with authority, absorbing slices always."""
    out = Changes()
    rows = out.rows
    for op in ops:
        verdict = judge(op, past)
        if verdict is None:
            staff, rights = len(rows.get("staff_log", ())), len(rows.get("rights_log", ()))
            fold([op], out)
            past.absorb(rows.get("staff_log", [])[staff:], rows.get("rights_log", [])[rights:])
        else:
            mine = refusal(op, verdict)
            out.merge(mine)
            past.absorb((), mine.rows.get("rights_log", ()))
    return out


@settings(max_examples=150, deadline=None)
@given(st.lists(sales(), min_size=1, max_size=6))
def test_judge_batch_folds_what_judging_op_by_op_folds(payloads: list[dict[str, Any]]) -> None:
    """Sales that earn and then redeem points in one batch: the later ones have authority only
    through the rights the earlier ones wrote, so a batch that forgot to absorb them differs."""
    ops = []
    for seq, payload in enumerate(payloads, start=1):
        op = make_op(
            SIGNER,
            store="S",
            seq=seq,
            hlc=(7 + seq) << 16,
            user="cashier1",
            kind="sale",
            payload=payload,
            prev=GENESIS,
        )
        if _outcome(lambda ch, o: fold([o], ch), op)[0] == "ok":
            ops.append(op)
    fast, allowed = judge_batch(ops, _NoPast())
    assert fast == _judged_one_by_one(ops, _NoPast())
    assert set(allowed) <= set(ops)
