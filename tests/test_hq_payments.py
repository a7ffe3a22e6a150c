"""Card sealing, the blocklist key and the simulated acquirer (pure code, no HQ process)."""

from __future__ import annotations

import base64

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from hq_helpers import pan_with_suffix
from hypothesis import given, settings
from hypothesis import strategies as st

from meshpos.core.errors import EncodingError, InputError, RemoteError
from meshpos.domain.cards import (
    AuthRequest,
    Card,
    SimulatedAcquirer,
    blocked_reason,
    blocklist_key,
    brand_of,
    luhn_ok,
    open_card,
    parse_card,
    seal_card,
    sealed_from_tender,
)

HQ_KEY = X25519PrivateKey.generate()
HQ_PUB = HQ_KEY.public_key().public_bytes(
    serialization.Encoding.Raw, serialization.PublicFormat.Raw
)
VISA = "4111111111111111"


def test_a_sealed_card_opens_only_with_hqs_key_and_shows_only_last_four_and_brand() -> None:
    card = parse_card("4111 1111 1111 1111", "12/30")
    sealed = seal_card(HQ_PUB, card, store="S1", amount=99_900)
    assert (sealed.last4, sealed.brand) == ("1111", "visa")
    assert VISA.encode() not in sealed.blob and b"1230" not in sealed.blob
    fields = sealed.tender_fields()
    assert set(fields) == {"card_sealed", "card_last4", "card_brand"}
    assert sealed_from_tender(fields) == sealed.blob
    opened = open_card(HQ_KEY, sealed.blob, store="S1", amount=99_900, last4="1111", brand="visa")
    assert opened == Card(VISA, "1230")
    with pytest.raises(RemoteError, match="does not open"):
        open_card(X25519PrivateKey.generate(), sealed.blob, store="S1", amount=99_900,
                  last4="1111", brand="visa")  # fmt: skip


def test_two_seals_of_one_card_differ() -> None:
    card = parse_card(VISA, "12/30")
    a = seal_card(HQ_PUB, card, store="S1", amount=1)
    b = seal_card(HQ_PUB, card, store="S1", amount=1)
    assert a.blob != b.blob


@settings(max_examples=40, deadline=None)
@given(
    amount=st.integers(1, 10**9),
    field=st.sampled_from(["store", "amount", "last4", "brand", "blob"]),
    flip=st.integers(0, 200),
)
def test_changing_the_blob_or_any_readable_field_makes_it_fail_to_open(
    amount: int, field: str, flip: int
) -> None:
    sealed = seal_card(HQ_PUB, parse_card(VISA, "01/31"), store="S1", amount=amount)
    args = {"store": "S1", "amount": amount, "last4": "1111", "brand": "visa"}
    blob = sealed.blob
    if field == "blob":
        i = 4 + flip % (len(blob) - 4)
        blob = blob[:i] + bytes([blob[i] ^ 1]) + blob[i + 1 :]
    elif field == "amount":
        args["amount"] = amount + 1
    else:
        args[field] = "x"
    with pytest.raises((RemoteError, EncodingError)):
        open_card(HQ_KEY, blob, **args)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "blob", [b"", b"MPC1", b"XXXX" + bytes(60), b"MPC1" + bytes(40), b"MPC1" + bytes(5000)]
)
def test_malformed_sealed_data_is_refused_cleanly(blob: bytes) -> None:
    with pytest.raises((RemoteError, EncodingError)):
        open_card(HQ_KEY, blob, store="S1", amount=1, last4="1111", brand="visa")


def test_damaged_base64_in_a_tender_is_kept_as_unreadable() -> None:
    assert sealed_from_tender({"card_sealed": "!!not base64"}) == b""
    assert sealed_from_tender({"method": "card"}) is None
    assert sealed_from_tender({"card_sealed": base64.b64encode(b"x").decode()}) == b"x"


@pytest.mark.parametrize(
    ("pan", "expiry", "message"),
    [
        ("4111", "12/30", "12-19 digits"),
        ("4111111111111112", "12/30", "check digit"),
        ("4111-1111-1111-111x", "12/30", "12-19 digits"),
        (VISA, "13/30", "MM/YY"),
        (VISA, "1230x", "MM/YY"),
    ],
)
def test_bad_card_input_is_refused_with_what_was_wrong(pan: str, expiry: str, message: str) -> None:
    with pytest.raises(InputError, match=message):
        parse_card(pan, expiry)


def test_brands_and_check_digit() -> None:
    assert luhn_ok("79927398713") and not luhn_ok("79927398710")
    assert brand_of("378282246310005") == "amex"
    assert brand_of("5555555555554444") == "mastercard"
    assert brand_of("2221000000000009") == "mastercard"
    assert brand_of("6521000000000000") == "rupay"
    assert brand_of(VISA) == "visa"


def test_the_blocklist_key_hides_the_number_and_the_till_checks_it_offline() -> None:
    key = blocklist_key(VISA)
    assert key.startswith("card.blocked.") and "1111" not in key.removeprefix("card.blocked.")
    assert key == blocklist_key(VISA) != blocklist_key("5555555555554444")
    settings_view = {key: {"blocked": True, "reason": "stolen"}}
    assert blocked_reason(settings_view, VISA) == "stolen"
    assert blocked_reason({key: {"blocked": False, "reason": "found"}}, VISA) is None
    assert blocked_reason({}, VISA) is None


def _ask(pan: str, amount: int = 10_000, expiry: str = "12/39", key: str = "k1") -> AuthRequest:
    return AuthRequest(key, parse_card(pan, expiry), amount)


def test_the_simulated_acquirer_declines_by_rule_and_approves_the_rest() -> None:
    acq = SimulatedAcquirer(limit=50_000, today=(2026, 6))
    ok = acq.authorize(_ask(VISA))
    assert ok.approved and len(ok.auth_code) == 6
    cases = {
        pan_with_suffix("0002"): ("do_not_honour", True),
        pan_with_suffix("0119"): ("lost_or_stolen", True),
        pan_with_suffix("0051"): ("insufficient_funds", False),
    }
    for i, (pan, (code, block)) in enumerate(cases.items()):
        res = acq.authorize(_ask(pan, key=f"d{i}"))
        assert (res.approved, res.code, res.block) == (False, code, block)
    assert acq.authorize(_ask(VISA, 50_001, key="big")).code == "over_limit"
    assert acq.authorize(_ask(VISA, expiry="05/26", key="old")).code == "expired_card"
    assert acq.authorize(_ask(VISA, expiry="06/26", key="this-month")).approved


def test_the_acquirer_answers_a_repeated_key_the_same_way() -> None:
    acq = SimulatedAcquirer()
    first = acq.authorize(_ask(VISA, key="same"))
    again = acq.authorize(_ask(VISA, key="same"))
    assert first == again and acq.calls == 2
    assert SimulatedAcquirer().authorize(_ask(VISA, key="same")) == first
