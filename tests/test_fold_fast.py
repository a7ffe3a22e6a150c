"""The fold's fast path for plain sales writes exactly what the field-by-field checked path
writes, and leaves every op it does not take (malformed ones too) to the checked path."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from meshpos.core.errors import EncodingError
from meshpos.core.ops import GENESIS, Signer, make_op
from meshpos.ledger.fold import CARD_FLOAT, Changes, _checked_record, _plain_sale, fold

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
