"""Indian money and count formatting (meshpos/domain/money.py): lakh/crore grouping, the sign
before the rupee sign, round trips with parse_rupees, and loyalty points in words."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshpos.core.errors import InputError
from meshpos.domain.money import (
    MAX_RUPEES,
    MINUS,
    group,
    parse_rupees,
    points_moved,
    rate,
    rupees,
)

INDIAN = re.compile(r"^\d{1,2}(,\d{2})*,\d{3}$|^\d{1,3}$")


@pytest.mark.parametrize(
    ("paise", "text"),
    [
        (0, "₹0.00"),
        (5, "₹0.05"),
        (99900, "₹999.00"),
        (100000, "₹1,000.00"),
        (1504300, "₹15,043.00"),
        (12345600, "₹1,23,456.00"),
        (1234567890, "₹1,23,45,678.90"),
        (-128212, "−₹1,282.12"),
        (-5, "−₹0.05"),
    ],
)
def test_rupees_the_indian_way(paise: int, text: str) -> None:
    assert rupees(paise) == text


def test_receipts_ask_for_no_symbol_and_an_ascii_minus() -> None:
    assert rupees(-128212, symbol="", minus="-") == "-1,282.12"


@pytest.mark.parametrize(
    ("n", "text"),
    [(0, "0"), (999, "999"), (1000, "1,000"), (123456, "1,23,456"), (-1234567, "−12,34,567")],
)
def test_counts_are_grouped_too(n: int, text: str) -> None:
    assert group(n) == text


@given(st.integers(-(10**15), 10**15))
def test_grouping_is_lakhs_and_crores_and_keeps_every_digit(n: int) -> None:
    text = group(n)
    digits = text.removeprefix(MINUS)
    assert INDIAN.match(digits), text
    assert int(digits.replace(",", "")) == abs(n)
    assert text.startswith(MINUS) == (n < 0)


@given(st.integers(0, MAX_RUPEES * 100 + 99))
def test_everything_printed_parses_back(paise: int) -> None:
    assert parse_rupees(rupees(paise)) == paise
    assert parse_rupees(rupees(paise, symbol="", minus="-")) == paise


@given(st.integers(-(MAX_RUPEES * 100 + 99), MAX_RUPEES * 100 + 99))
def test_signed_amounts_parse_back_when_asked_for(paise: int) -> None:
    assert parse_rupees(rupees(paise), signed=True) == paise
    assert parse_rupees(rupees(paise, minus="-"), signed=True) == paise


@pytest.mark.parametrize(
    ("text", "paise"),
    [
        ("499", 49900),
        ("499.5", 49950),
        ("₹1,499.00", 149900),
        ("Rs. 1,23,456", 12345600),
        ("INR 123,456.78", 12345678),  # Western grouping, as a spreadsheet writes it
        (" 2500 ", 250000),
    ],
)
def test_what_people_type_parses(text: str, paise: int) -> None:
    assert parse_rupees(text) == paise


@pytest.mark.parametrize(
    "text", ["", "abc", "1,2,3", "12,34", "1.234", "−₹5.00", "-5", "₹ 1,00,00,00,000", "1e3"]
)
def test_bad_amounts_are_refused_by_name(text: str) -> None:
    with pytest.raises(InputError, match="price"):
        parse_rupees(text, "price")


@pytest.mark.parametrize(("bp", "text"), [(0, "0%"), (500, "5%"), (250, "2.5%"), (1800, "18%")])
def test_rates(bp: int, text: str) -> None:
    assert rate(bp) == text


def test_points_in_words_never_with_signs() -> None:
    assert points_moved(17, 16) == "16 points redeemed · 17 points earned"
    # a return records both negated: redeemed points come back, earned ones are taken back
    assert points_moved(-17, -16) == "16 points given back · 17 points taken back"
    assert points_moved(1, 0) == "1 point earned"
    assert points_moved(0, 0) == ""
    assert "-" not in points_moved(-123456, -1) and "1,23,456 points" in points_moved(-123456, 0)
