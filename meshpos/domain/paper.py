"""Paper sales (pure): sales written on paper slips while every counter was down, entered later.

A paper entry is a sale op like any other (stock, GST, loyalty, tenders, returns all work), with
a `paper` field: its own number per terminal (the terminal's receipt numbers stay gapless, so a
paper entry takes none: its `number` is 0), the slip's number and the time written on it. Its
`ts_ms` is that written time, so reports count it when it happened, in store time; the op's HLC
says when it was entered, and the audit trail marks it as a paper entry.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from typing import Any

from meshpos.core.errors import InputError
from meshpos.domain.storetime import StoreTime

MAX_AGE_DAYS = 31  # a slip older than this is an accounting matter, not a till's
_SLIP = re.compile(r"^[A-Za-z0-9][A-Za-z0-9/\-]{0,19}$")
_WHEN = re.compile(r"^\s*(?:(\d{4}-\d{2}-\d{2})[ T])?(\d{1,2}):(\d{2})\s*$")


def check_slip(text: str) -> str:
    """The slip's number as written on it: letters, digits, / and -, up to 20."""
    slip = text.strip()
    if not _SLIP.match(slip):
        raise InputError(
            f"slip number {text!r}: type the number written on the paper slip (letters, digits, "
            "/ or -, up to 20)"
        )
    return slip


def written_at(text: str, zone: StoreTime, now_ms: int) -> int:
    """The time written on a slip, in store time: 'YYYY-MM-DD HH:MM', or 'HH:MM' for today.
    It must be in the past and at most `MAX_AGE_DAYS` old."""
    m = _WHEN.match(text)
    if m is None:
        raise InputError(
            f"time {text!r}: give the time written on the slip as HH:MM (today) or YYYY-MM-DD HH:MM"
        )
    day_text, hour, minute = m.groups()
    try:
        day = dt.date.fromisoformat(day_text) if day_text else zone.local(now_ms).date()
        clock = dt.time(int(hour), int(minute))
    except ValueError:
        raise InputError(f"time {text!r} is not a real date and time") from None
    ms = zone.day_start(day) + (clock.hour * 60 + clock.minute) * 60_000
    if ms > now_ms:
        raise InputError(f"time {text!r} is in the future: a paper sale was written earlier")
    if now_ms - ms > MAX_AGE_DAYS * 86_400_000:
        raise InputError(
            f"time {text!r} is more than {MAX_AGE_DAYS} days ago: enter it with the accounts, "
            "not at the till"
        )
    return ms


def paper_of(payload: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """A sale's paper entry fields, None for a sale rung at a till."""
    found = payload.get("paper")
    return found if isinstance(found, Mapping) else None
