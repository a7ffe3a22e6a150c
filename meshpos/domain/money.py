"""Money is integer paise everywhere; this module turns it into text a person reads and back.

Every screen, receipt and report formats through here, Indian style: digits grouped in lakhs and
crores (₹1,23,456.00), the minus sign before the rupee sign (−₹1,282.12). Machine output
(`--json`, op payloads) stays integer paise. Receipt printers lack ₹ and U+2212 in their code
pages, so they ask for `rupees(p, symbol="", minus="-")`.
"""

from __future__ import annotations

import re

from meshpos.core.errors import InputError

RUPEE = "₹"
MINUS = "\u2212"  # the typographic minus: "−₹1,282.12", not "-₹1,282.12"

MAX_RUPEES = 999_999_999  # what a person may type for one amount: ₹99,99,99,999
_SIGN = r"(?P<sign>[-\u2212])?"
_CURRENCY = r"(?:₹|rs\.?|inr)?"
_WHOLE = (
    r"(?P<whole>\d{1,2}(?:,\d{2})*,\d{3}"  # Indian grouping: 1,23,456
    r"|\d{1,3}(?:,\d{3})+"  # Western grouping: 123,456
    r"|\d+)"
)
_AMOUNT = re.compile(
    rf"^\s*{_SIGN}\s*{_CURRENCY}\s*{_WHOLE}(?:\.(?P<frac>\d{{1,2}}))?\s*$", re.IGNORECASE
)
_RATE = re.compile(r"^\s*(\d{1,3})(?:\.(\d{1,2}))?\s*%?\s*$")


def group(n: int) -> str:
    """A whole number with Indian digit grouping: 1234567 -> '12,34,567'; negatives with −."""
    digits = str(abs(n))
    head, tail = digits[:-3], digits[-3:]
    groups = [head[max(0, i - 2) : i] for i in range(len(head), 0, -2)][::-1]
    text = ",".join([*groups, tail]) if head else tail
    return MINUS + text if n < 0 else text


def rupees(paise: int, *, symbol: str = RUPEE, minus: str = MINUS) -> str:
    """Paise as a person reads them: 12345600 -> '₹1,23,456.00', -128212 -> '−₹1,282.12'."""
    whole, frac = divmod(abs(paise), 100)
    sign = minus if paise < 0 else ""
    return f"{sign}{symbol}{group(whole)}.{frac:02d}"


def parse_rupees(text: str, what: str = "amount", *, signed: bool = False) -> int:
    """'499', '499.5', '₹1,23,456.00', 'Rs. 1,499' -> paise; with `signed`, also '−₹1,282.12'.

    Everything `rupees` prints parses back to the same paise. Refuses a third decimal, digit
    groups in the wrong places ('1,2,3'), text, and more than ₹99,99,99,999."""
    m = _AMOUNT.match(str(text))
    if not m or (m.group("sign") and not signed):
        kind = "an amount" if signed else "an amount of rupees zero or more"
        raise InputError(f"{what} {text!r} is not {kind} (like 499, 499.50 or ₹1,499.00)")
    whole = int(m.group("whole").replace(",", ""))
    if whole > MAX_RUPEES:
        raise InputError(f"{what} {text!r} is more than {rupees(MAX_RUPEES * 100)}")
    paise = whole * 100 + int((m.group("frac") or "0").ljust(2, "0"))
    return -paise if m.group("sign") else paise


def parse_rate(text: str, what: str = "GST rate") -> int:
    """'5', '12%', '2.5' -> basis points (500, 1200, 250)."""
    m = _RATE.match(str(text))
    if not m:
        raise InputError(f"{what} {text!r} is not a percentage (like 5 or 12%)")
    bp = int(m.group(1)) * 100 + int((m.group(2) or "0").ljust(2, "0"))
    if bp > 10000:
        raise InputError(f"{what} {text!r} is more than 100%")
    return bp


def rate(basis_points: int) -> str:
    """A rate in basis points as a person writes it: 500 -> '5%', 250 -> '2.5%', 1250 -> '12.5%'."""
    whole, frac = divmod(basis_points, 100)
    return f"{whole}%" if frac == 0 else f"{whole}.{frac:02d}".rstrip("0") + "%"


def points(n: int, what: str) -> str:
    """'1 point earned', '16 points given back': a count of loyalty points and what happened."""
    return f"{group(n)} point{'' if abs(n) == 1 else 's'} {what}"


def points_moved(earned: int, redeemed: int) -> str:
    """The loyalty line of a sale or a return, in words and without signs.

    A sale earns and redeems; a return records both negated (its points_earned are taken back
    from the customer, its points_redeemed given back to them)."""
    parts = []
    if redeemed > 0:
        parts.append(points(redeemed, "redeemed"))
    elif redeemed < 0:
        parts.append(points(-redeemed, "given back"))
    if earned > 0:
        parts.append(points(earned, "earned"))
    elif earned < 0:
        parts.append(points(-earned, "taken back"))
    return " · ".join(parts)


def inclusive_tax(amount: int, rate_bp: int) -> int:
    """GST contained in a tax-inclusive amount, rounded half up to the paisa."""
    if rate_bp <= 0:
        return 0
    num = amount * rate_bp
    den = 10000 + rate_bp
    return (2 * num + den) // (2 * den)


def portion(amount: int, sold: int, done: int, qty: int) -> int:
    """The part of a line's `amount` that `qty` more of its `sold` units carry once `done` have
    come back; cumulative, so a line returned in parts refunds what it would returned whole."""
    return amount * (done + qty) // sold - amount * done // sold


def allocate(total: int, weights: list[int]) -> list[int]:
    """Split `total` across `weights` proportionally with no paisa lost (largest remainder)."""
    base = sum(weights)
    if base <= 0 or total == 0:
        return [0] * len(weights)
    shares = [total * w // base for w in weights]
    rest = total - sum(shares)
    order = sorted(range(len(weights)), key=lambda i: (-(total * weights[i] % base), i))
    for i in order[:rest]:
        shares[i] += 1
    return shares
