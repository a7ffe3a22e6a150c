"""Barcode check digits (EAN-13, UPC-A, EAN-8) and scanner-input clean-up.

A till should look a scanned code up in the catalogue first (an internal 8-digit SKU is not an
EAN-8), and only when nothing matches ask `classify`: INVALID then means "misread, rescan", which
deserves a different message and beep from "not in the catalogue".
"""

from __future__ import annotations

from enum import StrEnum

from meshpos.core.errors import InputError

GTIN_LENGTHS = {13: "ean13", 12: "upca", 8: "ean8"}
# Scanners wrap codes in CR/LF, tabs and, on some models, STX/ETX framing; none of that is data.
_FRAMING = " \t\r\n\v\f\x00\x02\x03\x04"


class BarcodeKind(StrEnum):
    EAN13 = "ean13"
    UPCA = "upca"
    EAN8 = "ean8"
    TEXT = "text"
    INVALID = "invalid"


class InvalidBarcode(InputError):
    """A scanned code that cannot be right: wrong check digit, control characters, or empty."""


def gtin_check_digit(body: str) -> int:
    """The GS1 mod-10 check digit for the digits before it (EAN-8/13, UPC-A, GTIN-14 alike).

    Weights alternate 3, 1, 3, ... starting from the digit next to the check digit.
    """
    if not body or not body.isascii() or not body.isdigit():
        raise ValueError(f"check digit needs digits, got {body!r}")
    total = sum(int(d) * (3 if i % 2 == 0 else 1) for i, d in enumerate(reversed(body)))
    return (10 - total % 10) % 10


def with_check_digit(body: str) -> str:
    return body + str(gtin_check_digit(body))


def is_valid_gtin(code: str) -> bool:
    """True for an all-digit EAN-13, UPC-A or EAN-8 whose last digit is the right check digit."""
    if len(code) not in GTIN_LENGTHS or not code.isascii() or not code.isdigit():
        return False
    return gtin_check_digit(code[:-1]) == int(code[-1])


def is_valid_ean13(code: str) -> bool:
    return len(code) == 13 and is_valid_gtin(code)


def is_valid_upca(code: str) -> bool:
    return len(code) == 12 and is_valid_gtin(code)


def is_valid_ean8(code: str) -> bool:
    return len(code) == 8 and is_valid_gtin(code)


def upca_to_ean13(code: str) -> str:
    """A UPC-A is an EAN-13 with a leading 0; catalogues usually store one form."""
    return "0" + code


def normalise(raw: str | bytes) -> str:
    """Strip the scanner's framing (CR/LF, whitespace, STX/ETX) from both ends; keep the inside,
    where a GS (0x1D) separates GS1 fields."""
    text = raw.decode("latin-1") if isinstance(raw, bytes | bytearray) else raw
    return text.strip(_FRAMING)


def classify(code: str) -> BarcodeKind:
    """What a (normalised) code is: a valid EAN-13/UPC-A/EAN-8, other text (a SKU, a receipt's
    sale id), or INVALID (empty, control characters, or GTIN-length digits with a bad check)."""
    if not code or any((ord(ch) < 0x20 and ch != "\x1d") or ord(ch) == 0x7F for ch in code):
        return BarcodeKind.INVALID
    if code.isascii() and code.isdigit() and len(code) in GTIN_LENGTHS:
        return BarcodeKind(GTIN_LENGTHS[len(code)]) if is_valid_gtin(code) else BarcodeKind.INVALID
    return BarcodeKind.TEXT


def validate(code: str) -> BarcodeKind:
    """`classify`, raising InvalidBarcode with a message a cashier can act on."""
    kind = classify(code)
    if kind is not BarcodeKind.INVALID:
        return kind
    if not code:
        raise InvalidBarcode("empty scan; scan the code again")
    if code.isascii() and code.isdigit():
        label = {13: "EAN-13", 12: "UPC-A", 8: "EAN-8"}[len(code)]
        raise InvalidBarcode(
            f"{label} {code} has a bad check digit (expected {gtin_check_digit(code[:-1])}); "
            "scan it again or type the SKU"
        )
    raise InvalidBarcode(f"scan {code!r} contains control characters; scan it again")
