"""Stock transfers between stores: ids, counted lines, and what a receipt lacks. Pure.

A transfer leaves one store (`transfer.out`: the stock goes down there at once), is in transit at
HQ until the receiving store counts it in (`transfer.in`: the stock goes up by what arrived), and
HQ tells the receiving store what was sent (`transfer.expect`), so a count that differs from it is
flagged for a manager (a `transfer_short` conflict). The id names the sending store and terminal,
so a receipt can be recorded even before HQ's word has reached a store that is offline.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from meshpos.core.errors import InputError

_ID = re.compile(
    r"^TR-([A-Za-z0-9][A-Za-z0-9_.-]{0,31})-([A-Za-z0-9][A-Za-z0-9_.-]{0,31})-(\d{1,12})$"
)
MAX_LINES = 200
MAX_QTY = 100_000


def transfer_id(store: str, terminal: str, seq: int) -> str:
    """`TR-<store>-<terminal>-<n>`: unique, since n is the sending terminal's op seq."""
    return f"TR-{store}-{terminal}-{seq}"


def sender_of(tid: str) -> str:
    """The sending store named in a transfer id; InputError if it is not one."""
    m = _ID.match(tid)
    if m is None or "-" in m.group(1):
        raise InputError(
            f"{tid!r} is not a transfer id (it looks like TR-BLR1-T1-42, as `meshpos transfer out` "
            "printed it)"
        )
    return m.group(1)


def parse_counts(items: Iterable[str], what: str = "--received") -> dict[str, int]:
    """`SKU:QTY` items (a count of 0 is allowed: nothing of it arrived)."""
    out: dict[str, int] = {}
    for item in items:
        sku, sep, qty = item.rpartition(":")
        if not sep or not sku or not qty.isdigit():
            raise InputError(f"{what} {item!r} must be SKU:QTY, such as TSH-NAV-M:4")
        if sku in out:
            raise InputError(f"{what} names {sku} twice")
        if int(qty) > MAX_QTY:
            raise InputError(f"{what} {item!r}: a quantity above {MAX_QTY} is not plausible")
        out[sku] = int(qty)
    return out


def pairs(args: Sequence[str]) -> list[tuple[str, int]]:
    """`SKU QTY [SKU QTY ...]` from the command line, each quantity a positive whole number."""
    if not args or len(args) % 2:
        raise InputError("give SKU QTY pairs, such as: TSH-NAV-M 4 JNS-BLA-L 2")
    out = []
    for sku, qty in zip(args[::2], args[1::2], strict=True):
        if not qty.isdigit() or not 0 < int(qty) <= MAX_QTY:
            raise InputError(
                f"quantity {qty!r} of {sku} must be a whole number from 1 to {MAX_QTY}"
            )
        out.append((sku, int(qty)))
    if len(out) > MAX_LINES:
        raise InputError(f"a transfer holds at most {MAX_LINES} lines")
    return out


def registers_of(rows: Iterable[tuple[str, str, str]]) -> dict[str, dict[str, Any]]:
    """Register rows (key, field, JSON value) as {key: {field: value}}."""
    out: dict[str, dict[str, Any]] = {}
    for key, field, value in rows:
        out.setdefault(key, {})[field] = json.loads(value)
    return out


def counted(lines: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for line in lines:
        out[str(line["sku"])] = out.get(str(line["sku"]), 0) + int(line["qty"])
    return out


def discrepancy(
    tid: str, sent: Mapping[str, Any], receipts: Sequence[Mapping[str, Any]]
) -> dict[str, Any] | None:
    """What a transfer's receipts lack against what was sent: per SKU short and extra units, and
    how many receipts were recorded (two counters receiving one parcel while split count it
    twice). None when they agree."""
    want = counted(sent.get("lines") or ())
    got: dict[str, int] = {}
    for receipt in receipts:
        for sku, qty in counted(receipt.get("lines") or ()).items():
            got[sku] = got.get(sku, 0) + qty
    short = {sku: q - got.get(sku, 0) for sku, q in sorted(want.items()) if got.get(sku, 0) < q}
    extra = {sku: q - want.get(sku, 0) for sku, q in sorted(got.items()) if q > want.get(sku, 0)}
    if not short and not extra:
        return None
    return {
        "transfer_id": tid,
        "from_store": str(sent.get("from_store", "")),
        "short": short,
        "extra": extra,
        "receipts": len(receipts),
    }
