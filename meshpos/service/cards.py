"""Card payments at the till: the two kinds, and offline capture with its checks and limits.

A card is paid one of two ways, and the till always knows which (`check_kinds`):
- on the store's card machine (tender method `card_machine`): the bank's terminal authorises it;
  the till records the approval code and the last four digits from the machine's slip and no
  card data at all (`machine_tender`);
- captured offline by meshpos (method `card`), described below. A card tender that is neither is
  refused: the store could not reconcile it with the bank or with HQ.

A card is read (typed number and expiry, a magstripe track from a keyboard-wedge reader, or a
test-card shorthand), checked offline (check digit, expiry, HQ's blocklist) and sealed at once to
HQ's X25519 payment key (`meshpos.domain.cards.seal_card`) for the exact amount it pays. From then
on only the sealed blob, the last four digits and the brand exist: the number never reaches the
ledger, the print queue, a receipt or a log, and `CardInput` does not show it in a repr.

Floor limits bound the card money a store takes before HQ has answered:
- per sale: `cards.floor_per_sale` (paise; default ₹10,000), a setting anyone may see;
- per store: the card float, escrow rights of the `card-float` pseudo-customer. Only HQ mints it
  (`card.float` ops, `meshpos hq card-float`), to the store's counters. A pending card tender
  takes its amount from the selling counter's share (fold rule), HQ's `payment.result` gives it
  back to that counter, and counters move shares with `escrow.transfer` on request, exactly like
  loyalty rights. So the store total holds across counters even while the LAN is split.

Every replica gives no authority to `payment.result` and `card.float` ops not signed by a node whose
certificate has role `hq`, nor to card money over the per-sale limit or beyond the float a counter
held (the rulebook, meshpos/domain/authority.py: lenient where this module is strict).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from meshpos.core.errors import InputError, LocalError
from meshpos.domain.authority import DEFAULT_PER_SALE as DEFAULT_PER_SALE
from meshpos.domain.authority import MAX_FLOAT as MAX_FLOAT
from meshpos.domain.authority import PER_SALE_SETTING as PER_SALE_SETTING
from meshpos.domain.authority import pending_amount as pending_amount
from meshpos.domain.cards import (
    HQ_KEY_SETTING,
    Card,
    CardRefused,
    blocked_reason,
    blocklist_key,
    brand_of,
    expired,
    is_sealed,
    luhn_ok,
    parse_card,
    seal_card,
)
from meshpos.domain.escrow import EscrowShortfall
from meshpos.domain.money import rupees
from meshpos.domain.pricing import PricedSale, Tender
from meshpos.domain.upi import check_ref
from meshpos.ledger.fold import CARD_FLOAT
from meshpos.service.context import NodeContext

STORE_TOTAL_SETTING = "cards.floor_store_total"
TEST_EXPIRY = "12/49"
MACHINE = "card_machine"
_APPROVAL_CODE = re.compile(r"^[A-Za-z0-9]{4,12}$")
TWO_KINDS = (
    "say how the card is paid: on the store's card machine (its approval code and the card's "
    "last four digits from the slip), or captured here offline (swipe or type the card)"
)


class FloorLimitExceeded(CardRefused):
    """The card money this sale would take offline is above the store's per-sale floor limit."""


class CardFloatShortfall(EscrowShortfall):
    """This counter's share of the store's card float cannot cover the sale. An EscrowShortfall,
    so `escrow.sell_with_escrow` asks the other counters for float and tries again."""

    def __init__(
        self, needed: int, held: int, elsewhere: Mapping[str, int], *, opened: bool
    ) -> None:
        self.customer, self.needed, self.held = CARD_FLOAT, needed, held
        if not opened:
            message = (
                f"offline card payments are not open at this counter: it holds no card float and "
                f"none has reached it ({rupees(needed)} by card asked; HQ opens the store's float "
                "with `meshpos hq card-float RUPEES`): take cash or use the card machine"
            )
        else:
            where = ", ".join(f"{name} {rupees(v)}" for name, v in elsewhere.items())
            message = (
                f"offline card limit reached: this counter may take {rupees(max(held, 0))} more by "
                f"card before HQ answers, {rupees(needed)} asked (the rest of the store's card "
                f"float is held by {where or 'no other counter'}): take cash or use the card "
                "machine"
            )
        LocalError.__init__(self, message)


# -- capture ---------------------------------------------------------------------------------------


def _with_suffix(prefix: str, suffix: str, length: int = 16) -> str:
    width = length - len(prefix) - len(suffix)
    for filler in range(10**width):
        pan = f"{prefix}{filler:0{width}d}{suffix}"
        if luhn_ok(pan):
            return pan
    raise AssertionError(f"no card number {prefix}...{suffix}")  # pragma: no cover


TEST_CARDS: dict[str, str] = {
    "visa": "4111111111111111",
    "mastercard": "5555555555554444",
    "amex": "378282246310005",
    "rupay": _with_suffix("6521", "1115"),
    "declined": _with_suffix("4000", "0002"),  # the simulated acquirer: do_not_honour
    "stolen": _with_suffix("4000", "0119"),  # lost_or_stolen
    "no-funds": _with_suffix("4000", "0051"),  # insufficient_funds
}
_TRACK2 = re.compile(r"^;?(\d{12,19})=(\d{2})(\d{2})\d*\??$")
_TRACK1 = re.compile(r"^%?B(\d{12,19})\^[^^]*\^(\d{2})(\d{2})[^?]*\??$")


@dataclass(frozen=True)
class CardInput:
    """A card as read at the till, until it is sealed. Its repr shows only brand and last four,
    so a traceback or a log line cannot leak the number."""

    card: Card = field(repr=False)

    @property
    def last4(self) -> str:
        return self.card.last4

    @property
    def brand(self) -> str:
        return brand_of(self.card.pan)

    def __str__(self) -> str:
        return f"{self.brand} ending {self.last4}"

    def __repr__(self) -> str:
        return f"CardInput({self})"


def read_card(number: str, expiry: str | None = None) -> CardInput:
    """Parse what the till was given: `4111 1111 1111 1111` with `expiry` MM/YY, a magstripe
    track 1 or 2 (`;PAN=YYMM...?`, which carry the expiry), or `test[:BRAND]` (one of
    TEST_CARDS, expiry 12/49 unless given). Error messages never repeat the number."""
    text = number.strip()
    if not text:
        raise InputError("no card number was given: type it, or swipe the card again")
    low = text.lower()
    if low == "test" or low.startswith("test:"):
        name = low.partition(":")[2] or "visa"
        if name not in TEST_CARDS:
            raise InputError(f"test card {name!r}: one of {', '.join(TEST_CARDS)}")
        return CardInput(parse_card(TEST_CARDS[name], expiry or TEST_EXPIRY))
    track = _TRACK2.match(text) or _TRACK1.match(text)
    if track:
        pan, yy, mm = track.groups()
        return CardInput(parse_card(pan, f"{mm}/{yy}"))
    if not expiry:
        raise InputError("a card needs its expiry, MM/YY (--card-expiry)")
    return CardInput(parse_card(text, expiry))


def read_card_line(line: str, expiry: str | None = None) -> CardInput:
    """One line from stdin or a card reader: `NUMBER [MM/YY]` or a magstripe track."""
    parts = line.split()
    if not parts:
        raise InputError("no card was read: give the number and expiry, or swipe again")
    if len(parts) >= 2 and re.fullmatch(r"\d{1,2}/?\d{2}", parts[-1]):
        return read_card(" ".join(parts[:-1]), parts[-1])
    return read_card(" ".join(parts), expiry)


def payment_key(t: NodeContext) -> bytes:
    """HQ's payment public key as HQ sent it. A key written by any other node is refused: a till
    that sealed cards to it would hand card numbers to whoever holds that key."""
    found = t.ledger.views.setting_writer(HQ_KEY_SETTING)
    if found is None:
        raise CardRefused(
            "this till has no HQ payment key yet, so it cannot take a card offline (the store "
            "must be enrolled at HQ and have synced with it once): take cash or use the card "
            "machine"
        )
    value, writer = found
    if writer not in t.ledger.hq_origins():
        raise CardRefused(
            f"the card key in this store's settings was written by node {writer}, not by HQ: "
            "no card is sealed to it. Have HQ send its key again (`meshpos hq setting "
            f"{HQ_KEY_SETTING} ...`) and report the node"
        )
    try:
        key = bytes.fromhex(str(value))
    except ValueError:
        key = b""
    if len(key) != 32:
        raise CardRefused("HQ's payment key in this store's settings is malformed")
    return key


def offline_check(t: NodeContext, card: CardInput) -> None:
    """What a till can tell about a card with no network: expired, or on HQ's blocklist."""
    today = datetime.fromtimestamp(t.now_ms() / 1000, UTC)
    if expired(card.card, today.year, today.month):
        exp = card.card.expiry
        raise CardRefused(f"the {card} expired {exp[:2]}/{exp[2:]}: ask for another card")
    key = blocklist_key(card.card.pan)
    reason = blocked_reason({key: t.ledger.views.setting(key)}, card.card.pan)
    if reason is not None:
        raise CardRefused(
            f"the {card} is on HQ's blocklist ({reason}): do not take it; ask for another payment"
        )


def capture(t: NodeContext, card: CardInput, amount: int, *, pending: int = 0) -> dict[str, Any]:
    """Check the card offline, that HQ's key is here to seal it to, and that `amount` on top of
    the `pending` paise this sale already took by card fits the offline limits; then seal it for
    `amount` paise. The fields a card tender carries (`card_sealed`, `card_last4`, `card_brand`,
    `pending`); the number is not kept anywhere."""
    if amount <= 0:
        raise InputError("a card payment must be more than zero")
    offline_check(t, card)
    key = payment_key(t)
    check_floor(t, pending + amount)
    sealed = seal_card(key, card.card, store=t.cfg.store, amount=amount)
    return {**sealed.tender_fields(), "pending": True}


def seal_tenders(t: NodeContext, settled: PricedSale, card: CardInput) -> PricedSale:
    """Seal `card` into the sale's one card tender that carries no card yet, for the amount
    `settle` gave it."""
    open_ = [
        i for i, e in enumerate(settled.tenders) if e.get("method") == "card" and not is_sealed(e)
    ]
    if not open_:
        raise InputError("a card was given but the sale has no card payment: add --pay card")
    if len(open_) > 1:
        raise InputError("one card per card payment: give --pay card once with a card")
    tenders = [dict(e) for e in settled.tenders]
    entry = tenders[open_[0]]
    entry.update(capture(t, card, int(entry["amount"]), pending=pending_amount(tenders)))
    return replace(settled, tenders=tenders)


# -- floor limits --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Limits:
    per_sale: int  # paise of pending card money one sale may take
    store_total: int | None  # what HQ set the store's float to, as far as this till knows


def limits(t: NodeContext) -> Limits:
    per_sale = t.ledger.views.setting(PER_SALE_SETTING)
    total = t.ledger.views.setting(STORE_TOTAL_SETTING)

    def ok(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= MAX_FLOAT

    return Limits(per_sale if ok(per_sale) else DEFAULT_PER_SALE, total if ok(total) else None)


def float_held(t: NodeContext, node: str | None = None) -> int:
    """Paise of card money `node` (default: this terminal) may still take before HQ answers."""
    return t.ledger.views.spendable(CARD_FLOAT, node or t.node_id)


def check_floor(t: NodeContext, pending: int) -> None:
    """Refuse a sale whose unauthorised card money (`pending` paise) is above the per-sale
    limit, or above this counter's share of the store's card float."""
    if pending <= 0:
        return
    lim = limits(t)
    if lim.per_sale == 0:
        raise FloorLimitExceeded(
            f"offline card payments are switched off at this store ({PER_SALE_SETTING} is 0): "
            "take cash or use the card machine"
        )
    if pending > lim.per_sale:
        raise FloorLimitExceeded(
            f"{rupees(pending)} is over the offline card limit of {rupees(lim.per_sale)}: take cash "
            "or use the card machine"
        )
    held = float_held(t)
    if held < pending:
        others = t.ledger.views.rights_elsewhere(CARD_FLOAT, t.node_id)
        opened = t.ledger.views.card_float_opened() or bool(others)
        raise CardFloatShortfall(pending, held, others, opened=opened)


def check_sale(t: NodeContext, settled: PricedSale) -> None:
    """Every card tender of the sale says its kind, and the offline ones fit the floor limits."""
    check_kinds(settled.tenders)
    check_floor(t, pending_amount(settled.tenders))


# -- the two kinds ---------------------------------------------------------------------------------


def machine_tender(amount: int | None, approval: str, last4: str) -> Tender:
    """A payment the store's card machine approved, as the cashier reads it off its slip."""
    approval, last4 = approval.strip(), last4.strip()
    if not _APPROVAL_CODE.match(approval):
        raise InputError(
            f"approval code {approval!r}: type the 4 to 12 letters or digits printed as "
            "'APPR CODE' or 'AUTH CODE' on the card machine's slip"
        )
    if not (len(last4) == 4 and last4.isdigit()):
        raise InputError(f"last four digits {last4!r}: type the 4 digits the slip shows (XXXX1234)")
    return Tender(MACHINE, amount, card_last4=last4, card_approval=approval)


def final_tenders(
    method: str, *, approval: str = "", last4: str = "", upi_ref: str = ""
) -> list[Tender]:
    """One payment that is final at the counter, as a till's form gives it: cash (no tender:
    cash is the default), the card machine's slip, or a UPI payment's UTR."""
    method = method.strip().lower().replace("-", "_")
    if method == "cash":
        return []
    if method in (MACHINE, "machine"):
        return [machine_tender(None, approval, last4)]
    if method == "upi":
        return [Tender("upi", upi_ref=check_ref(upi_ref))]
    raise InputError(f"paid by {method!r}: cash, the card machine or UPI")


def check_kinds(tenders: Sequence[Mapping[str, Any]]) -> None:
    """Refuse a card tender that is neither sealed here nor approved by the card machine."""
    for entry in tenders:
        method = entry.get("method")
        if method == "card" and not is_sealed(entry):
            raise InputError(f"a card payment with no card: {TWO_KINDS}")
        if method == MACHINE and not (entry.get("card_approval") and entry.get("card_last4")):
            raise InputError(
                "a card machine payment needs the approval code and the card's last four digits "
                "from the machine's slip"
            )


def status(t: NodeContext) -> dict[str, Any]:
    """The store's card float as this till sees it: what each counter holds, what HQ minted,
    how much card money awaits HQ's answer, and the limits."""
    views = t.ledger.views
    held = views.rights_by_node(CARD_FLOAT)
    minted = views.card_float_minted()
    lim = limits(t)
    return {
        "per_sale_limit": lim.per_sale,
        "store_total": lim.store_total,
        "minted": minted,
        "held_here": float_held(t),
        "held": held,
        "awaiting_hq": minted - sum(held.values()),
        "hq_key": views.has_setting(HQ_KEY_SETTING),
    }
