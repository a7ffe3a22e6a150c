"""Small formatting helpers for the web till's templates (pure: no SQLite, no files, no clock).

The state shown at the top of every page is meshpos/service/counter_state.py, shared with the
text till; conflicts in plain words are meshpos/service/conflict_words.py.
"""

from __future__ import annotations

from meshpos.domain.money import rupees
from meshpos.domain.storetime import StoreTime


def clock(ms: int, zone: StoreTime | None = None) -> str:
    """Store time of a ms timestamp, HH:MM:SS (`Terminal.store_time()`; India's by default)."""
    return (zone or StoreTime()).clock(ms, seconds=True) if ms else "never"


def stamp(ms: int, zone: StoreTime | None = None) -> str:
    """Store date and time of a ms timestamp, as receipts print it: 03-10-2025 11:34."""
    return (zone or StoreTime()).stamp(ms) if ms else "never"


def day(ms: int, zone: StoreTime | None = None) -> str:
    """The store day of a ms timestamp: 2025-10-03."""
    return (zone or StoreTime()).day(ms)


def money(paise: int | None) -> str:
    return rupees(int(paise or 0))


def method_label(method: str) -> str:
    """A tender's method as the till says it: "Card machine", "Card (captured here)"."""
    return {
        "card": "Card (captured here)",
        "card_machine": "Card machine",
        "giftcard": "Gift card / credit note",
        "upi": "UPI",
    }.get(method, method.replace("_", " ").capitalize())
