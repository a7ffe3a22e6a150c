"""Money is integer paise everywhere; these convert at the edges (CLI, CSV, receipts)."""

from __future__ import annotations

import re

from meshpos.core.errors import InputError

_AMOUNT = re.compile(r"^\s*(?:₹|rs\.?\s*|inr\s*)?(\d{1,9})(?:\.(\d{1,2}))?\s*$", re.IGNORECASE)
_RATE = re.compile(r"^\s*(\d{1,2})(?:\.(\d{1,2}))?\s*%?\s*$")


def parse_rupees(text: str, what: str = "amount") -> int:
    """'499', '499.5', '₹499.00' -> paise. Refuses negatives, floats with 3 decimals, text."""
    m = _AMOUNT.match(str(text))
    if not m:
        raise InputError(f"{what} {text!r} is not an amount in rupees (like 499 or 499.50)")
    return int(m.group(1)) * 100 + int((m.group(2) or "0").ljust(2, "0"))


def parse_rate(text: str, what: str = "GST rate") -> int:
    """'5', '12%', '2.5' -> basis points (500, 1200, 250)."""
    m = _RATE.match(str(text))
    if not m:
        raise InputError(f"{what} {text!r} is not a percentage (like 5 or 12%)")
    bp = int(m.group(1)) * 100 + int((m.group(2) or "0").ljust(2, "0"))
    if bp > 10000:
        raise InputError(f"{what} {text!r} is more than 100%")
    return bp


def rupees(paise: int) -> str:
    sign = "-" if paise < 0 else ""
    return f"{sign}{abs(paise) // 100}.{abs(paise) % 100:02d}"


def inr(paise: int) -> str:
    """An amount as a person reads it, with the rupee sign."""
    return ("-₹" if paise < 0 else "₹") + rupees(abs(paise))


def inclusive_tax(amount: int, rate_bp: int) -> int:
    """GST contained in a tax-inclusive amount, rounded half up to the paisa."""
    if rate_bp <= 0:
        return 0
    num = amount * rate_bp
    den = 10000 + rate_bp
    return (2 * num + den) // (2 * den)


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
