"""Check digits and scan clean-up: a misread EAN must never be taken for a different product."""

from __future__ import annotations

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from meshpos.core.errors import InputError
from meshpos.devices.barcodes import (
    BarcodeKind,
    InvalidBarcode,
    classify,
    gtin_check_digit,
    is_valid_ean8,
    is_valid_ean13,
    is_valid_gtin,
    is_valid_upca,
    normalise,
    upca_to_ean13,
    validate,
    with_check_digit,
)

digits = st.text(alphabet="0123456789", min_size=1, max_size=1)


def bodies(length: int) -> st.SearchStrategy[str]:
    return st.text(alphabet="0123456789", min_size=length, max_size=length)


def gtin_sum(code: str) -> int:
    """The mod-10 sum over the whole code, check digit included (weight 1); valid iff 0 mod 10."""
    return sum(int(d) * (3 if i % 2 == 1 else 1) for i, d in enumerate(reversed(code)))


gtins = st.sampled_from([8, 12, 13]).flatmap(lambda n: bodies(n - 1))


@pytest.mark.parametrize(
    ("code", "kind"),
    [
        ("8901234567890", BarcodeKind.EAN13),  # an Indian (890) EAN-13
        ("4006381333931", BarcodeKind.EAN13),
        ("036000291452", BarcodeKind.UPCA),
        ("96385074", BarcodeKind.EAN8),
        ("8901234567897", BarcodeKind.INVALID),
        ("036000291453", BarcodeKind.INVALID),
        ("96385075", BarcodeKind.INVALID),
        ("TSH-BLK-M", BarcodeKind.TEXT),
        ("BLR1-T1-000042", BarcodeKind.TEXT),
        ("12345", BarcodeKind.TEXT),
        ("", BarcodeKind.INVALID),
        ("AB\x07C", BarcodeKind.INVALID),
        ("(01)0890123456789\x1d10ABC", BarcodeKind.TEXT),
    ],
)
def test_known_codes(code: str, kind: BarcodeKind) -> None:
    assert classify(code) is kind


@given(bodies(12))
def test_any_12_digits_with_computed_check_digit_is_a_valid_ean13(body: str) -> None:
    code = with_check_digit(body)
    assert is_valid_ean13(code)
    assert classify(code) is BarcodeKind.EAN13


@given(bodies(11))
def test_upca_validates_and_matches_its_ean13_form(body: str) -> None:
    code = with_check_digit(body)
    assert is_valid_upca(code)
    assert classify(code) is BarcodeKind.UPCA
    assert is_valid_ean13(upca_to_ean13(code))


@given(bodies(7))
def test_ean8_validates(body: str) -> None:
    code = with_check_digit(body)
    assert is_valid_ean8(code)
    assert classify(code) is BarcodeKind.EAN8


@given(gtins, st.data())
def test_any_single_digit_change_is_detected(body: str, data: st.DataObject) -> None:
    code = with_check_digit(body)
    pos = data.draw(st.integers(0, len(code) - 1))
    new = data.draw(digits.filter(lambda d: d != code[pos]))
    changed = code[:pos] + new + code[pos + 1 :]
    assert not is_valid_gtin(changed)
    assert classify(changed) is BarcodeKind.INVALID


@given(gtins, st.data())
def test_adjacent_transposition_that_changes_the_sum_is_detected(
    body: str, data: st.DataObject
) -> None:
    code = with_check_digit(body)
    pos = data.draw(st.integers(0, len(code) - 2))
    a, b = code[pos], code[pos + 1]
    assume(a != b)
    swapped = code[:pos] + b + a + code[pos + 2 :]
    assume(gtin_sum(swapped) % 10 != gtin_sum(code) % 10)
    assert not is_valid_gtin(swapped)


def test_a_transposition_of_digits_five_apart_is_the_known_blind_spot() -> None:
    code = "4006381333931"
    swapped = "4006831333931"  # 3 and 8 differ by 5: mod-10 weights 3/1 cannot see it
    assert is_valid_ean13(code) and is_valid_ean13(swapped)


def test_check_digit_needs_digits() -> None:
    with pytest.raises(ValueError):
        gtin_check_digit("12A")
    with pytest.raises(ValueError):
        gtin_check_digit("")
    assert gtin_check_digit("890123456789") == 0


def test_non_ascii_digits_are_not_barcodes() -> None:
    assert not is_valid_gtin("٨٩٠١٢٣٤٥٦٧٨٩٧")  # Arabic-Indic digits pass str.isdigit()


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        ("8901234567897\r\n", "8901234567897"),
        ("  8901234567897\n", "8901234567897"),
        (b"\x028901234567897\x03\r", "8901234567897"),
        ("SKU-Abc-1\t", "SKU-Abc-1"),
        ("\r\n", ""),
        ("01\x1d10", "01\x1d10"),
    ],
)
def test_normalise_strips_framing_only(raw: str | bytes, code: str) -> None:
    assert normalise(raw) == code


def test_validate_messages_say_what_to_do() -> None:
    assert validate("8901234567890") is BarcodeKind.EAN13
    with pytest.raises(
        InvalidBarcode, match=r"EAN-13 8901234567897 has a bad check digit \(expected 0\)"
    ):
        validate("8901234567897")
    with pytest.raises(InvalidBarcode, match="UPC-A"):
        validate("036000291453")
    with pytest.raises(InvalidBarcode, match="empty"):
        validate("")
    with pytest.raises(InputError, match="control characters"):
        validate("AB\x07")
