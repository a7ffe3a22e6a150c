"""Offline card payments: sealing card data at the till, opening it at HQ, and the acquirer.

At capture the till seals the card (number, expiry) to HQ's X25519 payment public key: an ephemeral
X25519 key agreement, HKDF-SHA256 to a 256-bit key, ChaCha20-Poly1305. The associated data binds the
readable fields (store, amount, last four, brand), so the store cannot change the amount or the card
shown on the receipt without HQ noticing. The ephemeral private key is dropped at once: no terminal,
backup or stolen disk can open the blob again; only HQ's `payment.key` can.

The blocklist names cards by a slow keyed hash (scrypt) of the number, so a store learns no card
number from it, yet a till holding a card can check it offline.

Pure: no I/O; the gateway is an interface, and `SimulatedAcquirer` is the stand-in for a real one.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from meshpos.core.errors import EncodingError, InputError, LocalError, RemoteError
from meshpos.core.ops import Op, pack, unpack

MAGIC = b"MPC1"
NONCE = 12
KEY_BYTES = 32
HKDF_INFO = b"meshpos card seal v1"
BLOCK_PREFIX = "card.blocked."
HQ_KEY_SETTING = "payments.hq_public_key"
BLOCK_SALT = b"meshpos-card-blocklist-v1"
MAX_SEALED = 1024


class CardRefused(LocalError):
    """The till must not take this card offline (blocklisted, invalid number, expired)."""


@dataclass(frozen=True)
class Card:
    pan: str
    expiry: str  # MMYY

    @property
    def last4(self) -> str:
        return self.pan[-4:]


@dataclass(frozen=True)
class SealedCard:
    blob: bytes
    last4: str
    brand: str

    def tender_fields(self) -> dict[str, Any]:
        """What a card tender in a sale op carries: the blob (base64 text, so receipts, the print
        queue and the web till can treat the payload as JSON) and the two readable fields."""
        return {
            "card_sealed": base64.b64encode(self.blob).decode(),
            "card_last4": self.last4,
            "card_brand": self.brand,
        }


SEALED = "card_sealed"  # the blob itself, in the signed body (sales recorded before)
SEALED_HASH = "card_sealed_sha256"  # its SHA-256 in the body; the blob travels beside the op
SEALED_KINDS = ("sale", "exchange")


def is_sealed(tender: Mapping[str, Any]) -> bool:
    """Whether a card tender was captured offline and sealed to HQ (however the blob travels)."""
    return any(isinstance(tender.get(k), str) and tender.get(k) for k in (SEALED, SEALED_HASH))


def sealed_from_tender(tender: Mapping[str, Any], beside: bytes | None = None) -> bytes | None:
    """The sealed blob of a card tender (in its body, or `beside` the op with its hash in the
    body), or None if it carries none (a card paid online). b"" when it is damaged or missing:
    HQ declines it as unreadable."""
    digest = tender.get(SEALED_HASH)
    if isinstance(digest, str) and digest:
        ok = beside is not None and hashlib.sha256(beside).hexdigest() == digest
        return beside if ok and beside is not None else b""
    value = tender.get(SEALED)
    if not isinstance(value, str) or not value:
        return None
    try:
        return base64.b64decode(value, validate=True)
    except ValueError:
        return b""  # present but damaged: HQ declines it as unreadable


def detach_sealed(kind: str, payload: Mapping[str, Any]) -> tuple[dict[str, Any], dict[int, bytes]]:
    """A sale's payload with each sealed card blob replaced by its SHA-256, and the blobs by
    tender index: the blob travels beside the signed op and can be deleted once HQ answered
    ("secure deletion once authorised"), while the op still verifies."""
    out = dict(payload)
    tenders = payload.get("tenders")
    if kind not in SEALED_KINDS or not isinstance(tenders, list):
        return out, {}
    blobs: dict[int, bytes] = {}
    rows: list[Any] = []
    for i, t in enumerate(tenders):
        blob = sealed_from_tender(t) if isinstance(t, Mapping) else None
        if isinstance(t, Mapping) and blob:
            rest = {k: v for k, v in t.items() if k != SEALED}
            rows.append({**rest, SEALED_HASH: hashlib.sha256(blob).hexdigest()})
            blobs[i] = blob
        else:
            rows.append(t)
    out["tenders"] = rows
    return out, blobs


def carries_hash(op: Op) -> bool:
    """Whether a sale's signed body names sealed card data by hash (the blob travels beside)."""
    tenders = op.payload.get("tenders")
    return (
        op.kind in SEALED_KINDS
        and isinstance(tenders, list)
        and any(isinstance(t, Mapping) and t.get(SEALED_HASH) for t in tenders)
    )


def blob_matches(op_payload: Mapping[str, Any], tender: int, blob: bytes) -> bool:
    """Whether `blob` is the one whose hash the op's tender `tender` carries."""
    tenders = op_payload.get("tenders")
    if not isinstance(tenders, list) or not 0 <= tender < len(tenders):
        return False
    t = tenders[tender]
    digest = t.get(SEALED_HASH) if isinstance(t, Mapping) else None
    return isinstance(digest, str) and hashlib.sha256(blob).hexdigest() == digest


def luhn_ok(pan: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(pan)):
        d = ord(ch) - 48
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def brand_of(pan: str) -> str:
    if pan.startswith(("34", "37")):
        return "amex"
    if pan.startswith("4"):
        return "visa"
    if pan[:2] in {"51", "52", "53", "54", "55"} or 2221 <= int(pan[:4]) <= 2720:
        return "mastercard"
    if pan.startswith(("60", "65", "81", "82", "508")):
        return "rupay"
    return "card"


def parse_card(pan: str, expiry: str) -> Card:
    digits = re.sub(r"[\s-]", "", pan)
    if not digits.isdigit() or not 12 <= len(digits) <= 19:
        raise InputError("a card number must be 12-19 digits")
    if not luhn_ok(digits):
        raise InputError("the card number fails its check digit: re-enter or swipe again")
    exp = expiry.replace("/", "").strip()
    if not (len(exp) == 4 and exp.isdigit() and 1 <= int(exp[:2]) <= 12):
        raise InputError(f"card expiry {expiry!r} must be MM/YY")
    return Card(digits, exp)


def expired(card: Card, year: int, month: int) -> bool:
    """`year` and `month` of today, passed in so this stays pure."""
    yy, mm = 2000 + int(card.expiry[2:]), int(card.expiry[:2])
    return (yy, mm) < (year, month)


def _aad(store: str, amount: int, last4: str, brand: str) -> bytes:
    return pack(["meshpos-card-v1", store, amount, last4, brand])


def _raw(public: X25519PublicKey) -> bytes:
    return public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _key(shared: bytes, eph: bytes, recipient: bytes) -> bytes:
    return HKDF(
        algorithm=hashes.SHA256(), length=KEY_BYTES, salt=eph + recipient, info=HKDF_INFO
    ).derive(shared)


def seal_card(hq_public_key: bytes, card: Card, *, store: str, amount: int) -> SealedCard:
    """Encrypt the card to HQ's payment key; only last four and brand stay readable."""
    if len(hq_public_key) != 32:
        raise LocalError("HQ's payment public key must be 32 bytes (X25519)")
    recipient = X25519PublicKey.from_public_bytes(hq_public_key)
    eph = X25519PrivateKey.generate()
    eph_pub = _raw(eph.public_key())
    key = _key(eph.exchange(recipient), eph_pub, hq_public_key)
    nonce = os.urandom(NONCE)
    brand = brand_of(card.pan)
    plain = pack({"pan": card.pan, "exp": card.expiry})
    ct = ChaCha20Poly1305(key).encrypt(nonce, plain, _aad(store, amount, card.last4, brand))
    return SealedCard(MAGIC + eph_pub + nonce + ct, card.last4, brand)


def open_card(
    private_key: X25519PrivateKey, blob: bytes, *, store: str, amount: int, last4: str, brand: str
) -> Card:
    """HQ side: decrypt a sealed card; any change to the blob or its readable fields fails."""
    if not isinstance(blob, bytes) or len(blob) > MAX_SEALED or not blob.startswith(MAGIC):
        raise EncodingError("sealed card data is malformed")
    eph_pub = blob[4:36]
    nonce = blob[36 : 36 + NONCE]
    ct = blob[36 + NONCE :]
    if len(eph_pub) != 32 or len(nonce) != NONCE or len(ct) < 16:
        raise EncodingError("sealed card data is truncated")
    key = _key(
        private_key.exchange(X25519PublicKey.from_public_bytes(eph_pub)),
        eph_pub,
        _raw(private_key.public_key()),
    )
    try:
        plain = ChaCha20Poly1305(key).decrypt(nonce, ct, _aad(store, amount, last4, brand))
    except InvalidTag:
        raise RemoteError(
            "sealed card data does not open with HQ's payment key for this store, amount and card"
        ) from None
    data = unpack(plain, "sealed card")
    if not isinstance(data, dict) or not isinstance(data.get("pan"), str):
        raise EncodingError("sealed card content is malformed")
    return Card(str(data["pan"]), str(data.get("exp", "")))


def blocklist_key(pan: str) -> str:
    """The setting key naming a card on the blocklist: a slow hash (~tens of ms), so a list of them
    cannot be turned back into card numbers by trying every number in a card range."""
    digest = hashlib.scrypt(pan.encode(), salt=BLOCK_SALT, n=2**14, r=8, p=1, dklen=16)
    return BLOCK_PREFIX + digest.hex()


def blocked_reason(settings: Mapping[str, Any], pan: str) -> str | None:
    """Offline check at the till: `settings` maps setting keys to their (decoded) values."""
    value = settings.get(blocklist_key(pan))
    if isinstance(value, dict) and value.get("blocked"):
        return str(value.get("reason") or "blocked")
    return None


# -- the acquirer --------------------------------------------------------------------------------


@dataclass(frozen=True)
class AuthRequest:
    idempotency_key: str
    card: Card
    amount: int  # paise
    currency: str = "INR"
    merchant: str = ""


@dataclass(frozen=True)
class AuthResult:
    approved: bool
    code: str  # "approved" or the decline reason code
    message: str
    auth_code: str = ""
    block: bool = False  # HQ should add the card to the blocklist


class Gateway(Protocol):
    """A payment gateway. `authorize` must be idempotent per `idempotency_key`: HQ retries a
    request it never saw answered (a crash between asking and recording) with the same key."""

    def authorize(self, request: AuthRequest) -> AuthResult: ...


DECLINE_SUFFIXES: dict[str, tuple[str, str, bool]] = {
    "0002": ("do_not_honour", "the issuer declined the card", True),
    "0119": ("lost_or_stolen", "the card is reported lost or stolen", True),
    "0051": ("insufficient_funds", "insufficient funds", False),
}


@dataclass
class SimulatedAcquirer:
    """Approves and declines by rules, since no real acquirer can be reached. Deterministic: the
    same request always gets the same answer, and repeats of a key are answered from memory."""

    limit: int = 20_000_000  # paise: larger single authorisations are declined
    today: tuple[int, int] = (2000, 1)  # (year, month) for expiry checks
    seen: dict[str, AuthResult] = field(default_factory=dict)
    calls: int = 0

    def authorize(self, request: AuthRequest) -> AuthResult:
        self.calls += 1
        done = self.seen.get(request.idempotency_key)
        if done is not None:
            return done
        result = self._decide(request)
        self.seen[request.idempotency_key] = result
        return result

    def _decide(self, request: AuthRequest) -> AuthResult:
        card = request.card
        if not luhn_ok(card.pan):
            return AuthResult(False, "invalid_card", "the card number is invalid")
        rule = DECLINE_SUFFIXES.get(card.pan[-4:])
        if rule is not None:
            return AuthResult(False, rule[0], rule[1], block=rule[2])
        if request.amount > self.limit:
            return AuthResult(False, "over_limit", "the amount is over the card's limit")
        if len(card.expiry) == 4 and expired(card, *self.today):
            return AuthResult(False, "expired_card", "the card has expired")
        code = hashlib.sha256(request.idempotency_key.encode()).hexdigest()[:6].upper()
        return AuthResult(True, "approved", "approved", auth_code=code)


def float_shares(delta: int, nodes: Sequence[str], held: Mapping[str, int]) -> dict[str, int]:
    """How a change of a store's card float is shared among its terminals: a rise evenly, a cut
    from the counters holding most first."""
    if delta > 0:
        base, extra = divmod(delta, len(nodes))
        return {n: base + (i < extra) for i, n in enumerate(nodes) if base + (i < extra)}
    out: dict[str, int] = {}
    left = -delta
    for node in sorted(nodes, key=lambda n: (-int(held.get(n, 0)), n)):
        take = min(left, max(int(held.get(node, 0)), 0))
        if take:
            out[node] = -take
            left -= take
    if left:
        first = nodes[0]
        out[first] = out.get(first, 0) - left
    return out
