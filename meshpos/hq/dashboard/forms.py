"""Reading what people type into the dashboard's forms and filters: each field checked, and a
refusal that names the field and what a good value looks like."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from datetime import date

from meshpos.core.errors import InputError
from meshpos.domain.money import parse_rate, parse_rupees
from meshpos.service.config import check_name

Form = Mapping[str, str]
MAX_TEXT = 200
_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def text(form: Form, key: str, what: str, *, required: bool = False, limit: int = MAX_TEXT) -> str:
    value = form.get(key, "").strip()
    if required and not value:
        raise InputError(f"{what} is required")
    if len(value) > limit:
        raise InputError(f"{what} may have at most {limit} characters")
    if any(ord(c) < 32 for c in value):
        raise InputError(f"{what} may not contain control characters")
    return value


def optional_text(form: Form, key: str, what: str) -> str | None:
    return text(form, key, what) or None


def day(value: str | None, what: str) -> str | None:
    """A calendar day as YYYY-MM-DD, or None when left blank."""
    value = (value or "").strip()
    if not value:
        return None
    try:
        if not _DAY.match(value):
            raise ValueError
        return date.fromisoformat(value).isoformat()
    except ValueError:
        raise InputError(f"{what} {value!r} is not a date like 2025-09-22") from None


def whole(value: str | None, what: str, lo: int, hi: int, default: int) -> int:
    value = (value or "").strip()
    if not value:
        return default
    if not re.fullmatch(r"-?\d{1,12}", value) or not lo <= int(value) <= hi:
        raise InputError(f"{what} {value!r} must be a whole number from {lo} to {hi}")
    return int(value)


def rupees(form: Form, key: str, what: str, *, required: bool = True) -> int | None:
    value = text(form, key, what, required=required)
    return parse_rupees(value, what) if value else None


def percent(form: Form, key: str, what: str, *, required: bool = True) -> int | None:
    value = text(form, key, what, required=required)
    return parse_rate(value, what) if value else None


def sku(form: Form, key: str = "sku") -> str:
    value = text(form, key, "SKU", required=True, limit=64)
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_./-]*", value):
        raise InputError(f"SKU {value!r} may hold only letters, digits and . _ / -")
    return value


def stores(form: Form, enrolled: Iterable[str], key: str = "stores") -> list[str] | None:
    """Store ids separated by commas or spaces; None (every store) when left blank."""
    given = [s for s in re.split(r"[\s,]+", text(form, key, "stores", limit=4000)) if s]
    if not given:
        return None
    known = set(enrolled)
    unknown = sorted({s for s in given if s not in known})
    if unknown:
        raise InputError(f"store(s) {', '.join(unknown)} are not enrolled at HQ")
    return list(dict.fromkeys(given))


def user_id(form: Form, key: str = "user_id") -> str:
    return check_name(text(form, key, "user id", required=True, limit=32), "user id")


def choice(form: Form, key: str, what: str, options: Iterable[str]) -> str:
    value = text(form, key, what, required=True)
    allowed = list(options)
    if value not in allowed:
        raise InputError(f"{what} must be one of {', '.join(allowed)}")
    return value
