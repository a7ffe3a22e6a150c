"""Store time: what the clock on the shop's wall says, for everything a person reads.

Stored times stay UTC milliseconds (op stamps, sale `ts_ms`); a store's day, its hours on a report,
the time on a receipt and the clock on the till are that instant in the store's time zone (an IANA
name, `Asia/Kolkata` unless `[store] timezone` or the `store.timezone` setting says otherwise).
A sale rung at 00:30 IST on 3 October belongs to 3 October, although it is 19:00 UTC on the 2nd.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from meshpos.core.errors import InputError

DEFAULT_ZONE = "Asia/Kolkata"
SETTING = "store.timezone"  # the setting (an op, e.g. from HQ) that overrides [store] timezone
DAY_FORMAT = "%Y-%m-%d"


def zone(name: str, what: str = "time zone") -> ZoneInfo:
    """The IANA zone `name` ('Asia/Kolkata'); InputError naming it when there is no such zone."""
    if not isinstance(name, str) or not name.strip():
        raise InputError(f"{what} must be an IANA time zone name like {DEFAULT_ZONE!r}")
    try:
        return ZoneInfo(name.strip())
    except (ZoneInfoNotFoundError, ValueError):
        raise InputError(
            f"{what} {name!r} is not an IANA time zone name (like {DEFAULT_ZONE!r} or 'Asia/Dubai')"
        ) from None


def parse_day(text: str, what: str = "date") -> dt.date:
    """A calendar day written YYYY-MM-DD."""
    try:
        return dt.datetime.strptime(str(text).strip(), DAY_FORMAT).date()
    except ValueError:
        raise InputError(f"{what} {text!r} is not a date (YYYY-MM-DD)") from None


@dataclass(frozen=True)
class StoreTime:
    """One store's time zone and the ways meshpos writes an instant in it."""

    tz: ZoneInfo = field(default_factory=lambda: ZoneInfo(DEFAULT_ZONE))

    @classmethod
    def named(cls, name: str, what: str = "time zone") -> StoreTime:
        return cls(zone(name, what))

    @property
    def name(self) -> str:
        return self.tz.key

    def local(self, ms: int) -> dt.datetime:
        return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).astimezone(self.tz)

    def clock(self, ms: int, *, seconds: bool = False) -> str:
        """The till's clock: '11:34' (or '11:34:07')."""
        return self.local(ms).strftime("%H:%M:%S" if seconds else "%H:%M")

    def stamp(self, ms: int) -> str:
        """Date and time as Indian receipts print them: '03-10-2025 11:34'."""
        return self.local(ms).strftime("%d-%m-%Y %H:%M")

    def iso(self, ms: int, *, seconds: bool = False) -> str:
        """Date and time with the zone's abbreviation, for reports: '2025-10-03 11:34 IST'."""
        return self.local(ms).strftime(f"%Y-%m-%d %H:%M{':%S' if seconds else ''} %Z")

    def day(self, ms: int) -> str:
        """The store's calendar day of an instant: '2025-10-03'."""
        return self.local(ms).strftime(DAY_FORMAT)

    def hour(self, ms: int) -> str:
        """The store's hour of an instant, as a report groups it: '2025-10-03 11:00'."""
        return self.local(ms).strftime("%Y-%m-%d %H:00")

    def day_start(self, day: dt.date) -> int:
        """UTC milliseconds when `day` begins in the store. On a day whose midnight a clock
        change skips, zoneinfo reads 00:00 with the offset before the change: the change itself,
        the day's first instant."""
        midnight = dt.datetime.combine(day, dt.time(), self.tz)
        return int(midnight.timestamp() * 1000)

    def day_range(
        self, first: str | None, last: str | None, what: tuple[str, str] = ("--from", "--to")
    ) -> tuple[int | None, int | None]:
        """[start, end) in UTC milliseconds of the store days `first` to `last`, both included;
        None where a bound is not given."""
        start = self.day_start(parse_day(first, what[0])) if first else None
        end = None
        if last:
            end = self.day_start(parse_day(last, what[1]) + dt.timedelta(days=1))
        if start is not None and end is not None and end <= start:
            raise InputError(f"{what[1]} {last} is before {what[0]} {first}")
        return start, end


def ago(ms: int, now_ms: int) -> str:
    """How long ago, minute-grained ("under a minute", "12 min", "2 h 5 min"), so a line that
    shows it changes rarely while nothing happens."""
    minutes = max(0, now_ms - ms) // 60_000
    if minutes < 1:
        return "under a minute"
    if minutes < 120:
        return f"{minutes} min"
    return f"{minutes // 60} h {minutes % 60} min"
