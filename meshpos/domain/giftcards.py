"""Gift cards and credit notes: stored value a customer spends like cash (pure).

Both are a code printed as a barcode and a balance in paise. A gift card is sold for money; a
credit note is what a return or an exchange refunds instead of cash. Their balances are spendable
value, so they live in the store's escrow, like loyalty points: the rights of the escrow key
`giftcard:<CODE>` per node are the balance that node may spend (the issuing counter holds all of
it at first), moved between counters by the holder's `escrow.transfer` ops, and judged by the
rulebook's escrow rule (meshpos/domain/authority.py). A card's balance is the sum of the rights
over every node; no counter spends what it does not hold, so a card is never spent twice, even
while the LAN is split.

Codes are `GC` or `CN` and 13 digits, the last a Luhn check digit: a mistyped digit is caught at
the till, and a scan tells a card from a product barcode or a receipt by its prefix.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from meshpos.core.errors import InputError
from meshpos.domain.cards import luhn_ok

KEY_PREFIX = "giftcard:"
GIFT_CARD = "giftcard"
CREDIT_NOTE = "credit_note"
KINDS = {GIFT_CARD: "GC", CREDIT_NOTE: "CN"}
LABELS = {GIFT_CARD: "gift card", CREDIT_NOTE: "credit note"}
TENDER = "giftcard"  # the tender method that spends a card or a credit note
# HQ telling a store of a card another store issued (its kind, value and expiry), so the
# store's tills apply the same expiry to it as the issuing store's do; it moves no value.
KNOWN = "giftcard.known"
DIGITS = 12  # random digits of a code; a 13th is the check digit
DEFAULT_VALID_DAYS = {GIFT_CARD: 365, CREDIT_NOTE: 180}
MAX_AMOUNT = 1_000_000  # paise: ₹10,000, the RBI's ceiling for a gift PPI
DAY_MS = 86_400_000
_CODE = re.compile(r"^(GC|CN)(\d{13})$")


@dataclass(frozen=True)
class CardState:
    """What the views hold of one card: how it was issued and what is left."""

    code: str
    kind: str
    issued: int  # paise
    balance: int  # paise, over every node
    expires_ms: int | None
    issued_ms: int | None
    store: str | None = None  # the store that issued it, when another one did (`KNOWN`)

    @classmethod
    def of_register(cls, code: str, fields: Mapping[str, Any], balance: int) -> CardState:
        """A card from its `giftcard` register fields (how it was issued) and its balance."""
        expires, issued = fields.get("expires_ms"), fields.get("issued_ms")
        return cls(
            code=code,
            kind=str(fields.get("kind") or kind_of(code)),
            issued=int(fields.get("amount") or 0),
            balance=balance,
            expires_ms=expires if type(expires) is int else None,
            issued_ms=issued if type(issued) is int else None,
            store=str(fields["store"]) if fields.get("store") else None,
        )

    def expired(self, now_ms: int) -> bool:
        return self.expires_ms is not None and now_ms >= self.expires_ms

    def refusal(self, now_ms: int, day: Callable[[int], str]) -> str | None:
        """Why the card cannot be spent at `now_ms` whatever its balance (None: it can). One rule
        for a till spending it and for HQ moving its value to another store; `day` writes the
        expiry as the store's calendar day."""
        if self.expired(now_ms):
            return f"{self.label} {self.code} expired on {day(self.expires_ms or 0)}: it cannot be spent"
        return None

    def known_payload(self, store: str) -> dict[str, Any]:
        """What HQ signs (`KNOWN`) to tell another store of this card, issued in `store`."""
        return {
            "code": self.code,
            "kind": self.kind,
            "amount": self.issued,
            "expires_ms": self.expires_ms,
            "issued_ms": self.issued_ms,
            "store": store,
        }

    @property
    def label(self) -> str:
        return LABELS.get(self.kind, "gift card")


def make_code(kind: str, digits: str) -> str:
    """The code of a new card from `DIGITS` random digits (chosen by the caller)."""
    if kind not in KINDS:
        raise InputError(f"card kind {kind!r} must be one of {', '.join(KINDS)}")
    if len(digits) != DIGITS or not digits.isdigit():
        raise InputError(f"a card code needs {DIGITS} digits")
    for check in "0123456789":
        if luhn_ok(digits + check):
            return f"{KINDS[kind]}{digits}{check}"
    raise AssertionError("one check digit always fits")


def normalise(text: str) -> str:
    """A code as typed or scanned: spaces and dashes dropped, letters upper case."""
    return re.sub(r"[\s-]", "", text).upper()


def looks_like(text: str) -> bool:
    """Whether `text` has the shape of a card code (a scan to redeem, not a product)."""
    return _CODE.match(normalise(text)) is not None


def parse_code(text: str) -> str:
    """A typed or scanned code, checked; InputError naming what is wrong otherwise."""
    code = normalise(text)
    m = _CODE.match(code)
    if m is None:
        raise InputError(
            f"{text!r} is not a gift card or credit note code (GC or CN and 13 digits)"
        )
    if not luhn_ok(m.group(2)):
        raise InputError(f"gift card code {text!r} has a wrong check digit: type it again")
    return code


def kind_of(code: str) -> str:
    return CREDIT_NOTE if code.startswith(KINDS[CREDIT_NOTE]) else GIFT_CARD


def escrow_key(code: str) -> str:
    """The escrow key whose rights are this card's balance."""
    return f"{KEY_PREFIX}{code}"


def is_key(key: Any) -> bool:
    return isinstance(key, str) and key.startswith(KEY_PREFIX)


def code_of(key: str) -> str:
    return key[len(KEY_PREFIX) :]


def expiry(issued_ms: int, days: int) -> int | None:
    """When a card issued at `issued_ms` stops being spendable (None: it never expires)."""
    if days <= 0:
        return None
    return issued_ms + days * DAY_MS


def spent_by(tenders: Any) -> dict[str, int]:
    """Paise each card pays among a sale's tenders, by escrow key (malformed entries: none)."""
    out: dict[str, int] = {}
    if not isinstance(tenders, list | tuple):
        return out
    for t in tenders:
        if not isinstance(t, dict) or t.get("method") != TENDER:
            continue
        code, amount = t.get("code"), t.get("amount")
        if isinstance(code, str) and type(amount) is int and amount > 0:
            key = escrow_key(code)
            out[key] = out.get(key, 0) + amount
    return out


def check_amount(amount: int, what: str = "a gift card") -> int:
    if amount <= 0:
        raise InputError(f"{what} needs an amount above zero")
    if amount > MAX_AMOUNT:
        raise InputError(
            f"{what} of more than ₹10,000 is not allowed (the RBI's limit for gift cards)"
        )
    return amount
