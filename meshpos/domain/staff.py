"""Staff and roles: the pure rules. No SQL, no files; time and randomness are passed in.

Roles rank cashier < supervisor < manager < admin. What an op needs (`required`) is a function of
its kind, its payload and the store's `Policy` (limits held in `staff.*` settings). A PIN never
leaves the till: it is stretched with scrypt into an Ed25519 key, and only that key's public half
(the "pin key") and the salt are written to the ledger. Signing in derives the key again.

Approvals are signatures. Signing in makes a short-lived credential: a fresh session key whose
public half, user and expiry are certified by the PIN key. An op that needs a role carries
`approval`: the certificate plus the session key's signature over the op's store, origin, seq, acting
user, kind and payload. Any peer checks both signatures with the pin key it holds from the users
view, so a till that does not know a manager's PIN cannot make an op carrying their approval, and an
approval copied into another op does not verify (it names the other op's origin, seq and payload).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from meshpos.core.errors import EncodingError, InputError
from meshpos.core.ops import Op, Payload, canonical, pack
from meshpos.domain.money import parse_rate, parse_rupees, rupees

ROLES = ("cashier", "supervisor", "manager", "admin")
RANK = {role: i for i, role in enumerate(ROLES)}
APPROVER = (
    "supervisor"  # refunds above the limit, discounts above the limit, prices, stock, conflicts
)
USER_ADMIN = "manager"  # creating and changing users, staff settings

SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
SALT_BYTES = 16
KEY_BYTES = 32
PIN_DIGITS = (4, 12)  # what a PIN may ever be; the store's minimum per role is in `Policy`
_PIN = re.compile(r"^[0-9]{4,12}$")
MAX_LOCK_MINUTES = 24 * 60
DEVICE_FREE_FAILURES = 3  # wrong PINs a device may type in a row before it has to wait

SESSION = "session"  # a signed-in user's own credential: approves only that user's ops
APPROVAL = "approval"  # a supervisor's PIN given for someone else's op (--approve)


def check_role(role: str) -> str:
    if role not in RANK:
        raise InputError(f"role {role!r} must be one of {', '.join(ROLES)}")
    return role


def least_pin_digits(role: str, policy: Policy) -> int:
    """The fewest digits a new PIN of `role` may have: `staff.pin_min_digits` for supervisors and
    above (the PINs that approve), `staff.cashier_pin_min_digits` for cashiers."""
    if RANK.get(role, 0) >= RANK[APPROVER]:
        return policy.pin_min_digits
    return policy.cashier_pin_min_digits


def check_pin(pin: str, role: str = "cashier", policy: Policy | None = None) -> str:
    """A new PIN for a user of `role`. PINs set before a minimum was raised keep working: the
    rule is checked when a PIN is set, never at sign-in."""
    least = least_pin_digits(role, policy or Policy())
    if not _PIN.match(pin or "") or len(pin) < least:
        who = "a PIN" if role == "cashier" else f"{'an' if role == 'admin' else 'a'} {role}'s PIN"
        raise InputError(f"{who} is {least} to {PIN_DIGITS[1]} digits")
    return pin


def roles_from(role: str) -> str:
    """'supervisor' -> 'a supervisor, manager or admin': who may do what needs `role`."""
    names = ROLES[RANK[role] :]
    head = ", ".join(names[:-1])
    return f"a {head} or {names[-1]}" if head else f"an {names[-1]}"


# -- PINs ----------------------------------------------------------------------------------------


def pin_private_key(pin: str, salt: bytes) -> Ed25519PrivateKey:
    """Deliberately slow (~30 ms, 16 MiB): every guess at a PIN costs the same."""
    kdf = Scrypt(salt=salt, length=KEY_BYTES, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P)
    return Ed25519PrivateKey.from_private_bytes(kdf.derive(pin.encode()))


def public_bytes(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def pin_record(pin: str, salt: bytes) -> dict[str, str]:
    """The user fields a PIN leaves in the ledger: its salt and its public key."""
    if not _PIN.match(pin or ""):
        raise InputError(f"a PIN is {PIN_DIGITS[0]} to {PIN_DIGITS[1]} digits")
    if len(salt) != SALT_BYTES:
        raise InputError(f"a PIN salt is {SALT_BYTES} bytes")
    return {"pin_salt": salt.hex(), "pin_key": public_bytes(pin_private_key(pin, salt)).hex()}


def pin_matches(pin: str, salt_hex: str, key_hex: str) -> Ed25519PrivateKey | None:
    """The PIN's key if `pin` is the PIN behind `key_hex`, else None."""
    if not _PIN.match(pin or ""):
        return None
    try:
        salt = bytes.fromhex(salt_hex)
    except ValueError:
        return None
    key = pin_private_key(pin, salt)
    return key if public_bytes(key).hex() == key_hex else None


# -- policy --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Policy:
    """The store's staff rules; each field is the `staff.<field>` setting (a `setting.set` op)."""

    refund_limit: int = 100_000  # paise: a refund above this needs a supervisor
    discount_limit_bp: int = 1_000  # basis points of the gross: a discount above needs one too
    require_login: bool = False  # ops by a user who has not signed in at this till are refused
    lockout_failures: int = 5  # wrong PINs in a row before the user is locked at this till
    lockout_minutes: int = 5  # the first lock; each further round of failures doubles it
    session_minutes: int = 480  # how long `meshpos login` lasts
    approval_minutes: int = 5  # how long a PIN typed for --approve is good for
    bootstrap_grace_minutes: int = 60  # see docs/decisions.md: unapproved ops near staff set-up
    oversell_limit: int = 5  # units a sale may take beyond the stock its counter sees, unapproved
    pin_min_digits: int = 6  # new PINs of supervisors, managers and admins
    cashier_pin_min_digits: int = 4  # new PINs of cashiers
    list_users_at_signin: bool = False  # the web till's sign-in page shows every user's name


LIMIT_FIELDS = ("refund_limit", "discount_limit_bp", "bootstrap_grace_minutes", "oversell_limit")
"""The fields a peer takes the most lenient value of (see `lenient_policy`)."""


def policy_keys() -> list[str]:
    return [f"staff.{f.name}" for f in fields(Policy)]


BOOL_FIELDS = ("require_login", "list_users_at_signin")


def _valid(name: str, value: Any) -> bool:
    if name in BOOL_FIELDS:
        return isinstance(value, bool)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0 or value > 2**53:
        return False
    if name.endswith("pin_min_digits"):
        return PIN_DIGITS[0] <= value <= PIN_DIGITS[1]
    return value >= 1 if name.endswith(("failures", "_minutes")) else True


def parse_policy_value(key: str, text: str) -> Any:
    """A `staff.*` setting typed by a person: limits in rupees, percentages, counts, yes/no."""
    name = key.removeprefix("staff.")
    if key not in policy_keys():
        raise InputError(f"unknown staff setting {key!r}: one of {', '.join(policy_keys())}")
    text = text.strip()
    value: Any
    if name in BOOL_FIELDS:
        if text.lower() not in ("yes", "no", "true", "false", "1", "0"):
            raise InputError(f"{key} is yes or no, not {text!r}")
        value = text.lower() in ("yes", "true", "1")
    elif name == "refund_limit":
        value = parse_rupees(text, key)
    elif name == "discount_limit_bp":
        value = parse_rate(text, key)
    else:
        value = int(text) if text.isdigit() else -1
    if not _valid(name, value):
        raise InputError(f"{key}: {text!r} is out of range")
    return value


def policy_from(settings: Mapping[str, Any]) -> Policy:
    """The policy from `staff.*` settings; a missing or malformed value keeps its default."""
    out = Policy()
    for f in fields(Policy):
        value = settings.get(f"staff.{f.name}")
        if value is not None and _valid(f.name, value):
            out = replace(out, **{f.name: value})
    return out


def lenient_policy(history: Mapping[str, Iterable[Any]]) -> Policy:
    """The policy a peer enforces: for each limit, the most lenient value the store ever set (or
    the default). A peer cannot know which limit the till saw when it made an op; taking the most
    lenient one means an op made honestly under a limit later lowered elsewhere is never refused,
    which would block every later op of its terminal at that peer."""
    out = Policy()
    for name in LIMIT_FIELDS:
        values = [v for v in history.get(f"staff.{name}", ()) if _valid(name, v)]
        out = replace(out, **{name: max([getattr(out, name), *values])})
    return out


# -- wrong PINs ----------------------------------------------------------------------------------


def lock_minutes(failures: int, policy: Policy) -> int:
    """How long the `failures`-th wrong PIN in a row locks a user at a till: every
    `lockout_failures`-th one locks for `lockout_minutes`, doubled for each round before it, up to
    a day (5 guesses, 5 minutes, 5 more, 10 minutes, ...: about 50 guesses in the first day, then
    5 a day); the others do not lock."""
    if failures <= 0 or failures % policy.lockout_failures:
        return 0
    rounds = failures // policy.lockout_failures
    return min(policy.lockout_minutes << min(rounds - 1, 20), MAX_LOCK_MINUTES)


def device_wait_minutes(failures: int) -> int:
    """How long a device (a web till's browser, by its address) waits after its `failures`-th
    wrong PIN in a row, whoever it was typed for: the first few are free, then 1, 2, 4, ...
    minutes, up to a day. Checked before a user's lockout, so one person at one device cannot
    lock every user out: the device stops long before the users do."""
    over = failures - DEVICE_FREE_FAILURES
    return 0 if over < 0 else min(1 << min(over, 20), MAX_LOCK_MINUTES)


# -- what an op needs ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Need:
    role: str
    what: str
    self_user: str | None = None  # a user who may approve this op for themselves, whatever role


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _discount(payload: Payload, policy: Policy) -> Need | None:
    lines = payload.get("lines")
    if not isinstance(lines, list):
        return None
    gross = disc = 0
    for line in lines:
        if isinstance(line, Mapping):
            gross += _int(line.get("unit_price")) * _int(line.get("qty"))
            disc += _int(line.get("discount"))
    if disc > 0 and disc * 10_000 > policy.discount_limit_bp * gross:
        pct = disc * 100 / gross if gross else 100.0
        limit = policy.discount_limit_bp / 100
        return Need(APPROVER, f"a discount of {pct:.1f}% (limit {limit:g}%)")
    return None


def _oversell(payload: Payload, policy: Policy) -> Need | None:
    """`oversold` is what the selling counter saw: units per SKU beyond its stock."""
    oversold = payload.get("oversold")
    if not isinstance(oversold, Mapping):
        return None
    units = sum(_int(v) for v in oversold.values())
    if units > policy.oversell_limit:
        skus = ", ".join(sorted(str(k) for k in oversold))
        return Need(
            APPROVER,
            f"selling {units} units beyond stock ({skus}; limit {policy.oversell_limit})",
        )
    return None


def _refund(amount: int, policy: Policy) -> Need | None:
    if amount > policy.refund_limit:
        return Need(APPROVER, f"a refund of {rupees(amount)} (limit {rupees(policy.refund_limit)})")
    return None


def required(
    kind: str, payload: Payload, policy: Policy, target_role: str | None = None
) -> Need | None:
    """The role an op needs, or None. Payloads of the wrong shape need nothing here: the fold
    refuses them. `target_role` is the current role of the user a `user.upsert` changes, where
    known (at the till), so a manager cannot change an admin."""
    if kind == "return":
        return _refund(_int(payload.get("total")), policy)
    if kind == "exchange":
        return (
            _refund(-_int(payload.get("total")), policy)
            or _discount(payload, policy)
            or _oversell(payload, policy)
        )
    if kind == "sale":
        return _discount(payload, policy) or _oversell(payload, policy)
    if kind == "stock.adjust":
        return Need(APPROVER, "a stock adjustment")
    if kind == "transfer.out":
        return Need(APPROVER, "sending stock to another store")
    if kind == "conflict.resolve":
        return Need(APPROVER, "resolving a conflict")
    if kind == "product.upsert":
        body = payload.get("fields")
        if isinstance(body, Mapping) and "price" in body:
            return Need(APPROVER, f"setting the price of {payload.get('sku')}")
        return None
    if kind == "setting.set":
        key = payload.get("key")
        if isinstance(key, str) and key.startswith("staff."):
            return Need(USER_ADMIN, f"changing the staff setting {key}")
        return None
    if kind == "user.upsert":
        uid = payload.get("user_id")
        body = payload.get("fields")
        if not isinstance(body, Mapping) or not isinstance(uid, str):
            return None
        role = USER_ADMIN
        for other in (body.get("role"), target_role):
            if isinstance(other, str) and RANK.get(other, 0) > RANK[role]:
                role = other
        if set(body) <= {"pin_salt", "pin_key"}:
            return Need(role, f"changing the PIN of {uid}", self_user=uid)
        return Need(role, f"changing user {uid}")
    return None


def _line_discount(payload: Payload, policy: Policy) -> Need | None:
    lines = payload.get("lines")
    for line in lines if isinstance(lines, list) else ():
        if not isinstance(line, Mapping):
            continue
        gross = _int(line.get("unit_price")) * _int(line.get("qty"))
        disc = _int(line.get("discount"))
        if disc > 0 and disc * 10_000 > policy.discount_limit_bp * gross:
            pct = disc * 100 / gross if gross else 100.0
            limit = policy.discount_limit_bp / 100
            return Need(
                APPROVER, f"a discount of {pct:.1f}% on {line.get('sku')} (limit {limit:g}%)"
            )
    return None


def source_required(
    kind: str, payload: Payload, policy: Policy, target_role: str | None = None
) -> Need | None:
    """What a till asks before it makes an op: `required`, and stricter where the till can be,
    since the rule at the source need not be one a peer can check the same way: any line
    discounted beyond the limit needs the approver, even when the sale as a whole is within it;
    and closing the day (a Z report) is for a supervisor or above."""
    need = required(kind, payload, policy, target_role)
    if need is None and kind in ("sale", "exchange"):
        return _line_discount(payload, policy)
    if kind == "report.z":
        return Need(APPROVER, "closing the day (Z report)")
    return need


# -- credentials and approvals -------------------------------------------------------------------


def _cert_content(store: str, user: str, pin_key: bytes, pub: bytes, exp_ms: int) -> bytes:
    return pack(["meshpos-staff-session", store, user, pin_key, pub, exp_ms])


def approval_content(
    store: str, origin: str, seq: int, user: str, kind: str, payload: Payload
) -> bytes:
    """What an approval signs: the op's identity and everything in it but the approval itself."""
    body = canonical({k: v for k, v in payload.items() if k != "approval"})
    return pack(["meshpos-staff-approval", store, origin, seq, user, kind, body])


@dataclass(frozen=True)
class Credential:
    """Proof that `user` typed their PIN at this till, good until `exp_ms`; `purpose` says whether
    it approves only the user's own ops (a session) or any op it is offered for (an approval)."""

    store: str
    user: str
    pin_key: bytes
    seed: bytes = field(repr=False)
    exp_ms: int
    cert: bytes = field(repr=False)
    purpose: str = SESSION

    @property
    def pub(self) -> bytes:
        return public_bytes(Ed25519PrivateKey.from_private_bytes(self.seed))

    def approve(
        self, origin: str, seq: int, user: str, kind: str, payload: Payload
    ) -> dict[str, Any]:
        key = Ed25519PrivateKey.from_private_bytes(self.seed)
        sig = key.sign(approval_content(self.store, origin, seq, user, kind, payload))
        return {
            "user": self.user,
            "pin_key": self.pin_key.hex(),
            "pub": self.pub.hex(),
            "exp_ms": self.exp_ms,
            "cert": self.cert.hex(),
            "sig": sig.hex(),
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "store": self.store,
            "user": self.user,
            "pin_key": self.pin_key.hex(),
            "seed": self.seed.hex(),
            "exp_ms": self.exp_ms,
            "cert": self.cert.hex(),
            "purpose": self.purpose,
        }

    @classmethod
    def from_json(cls, data: Any) -> Credential:
        try:
            cred = cls(
                store=str(data["store"]),
                user=str(data["user"]),
                pin_key=bytes.fromhex(data["pin_key"]),
                seed=bytes.fromhex(data["seed"]),
                exp_ms=int(data["exp_ms"]),
                cert=bytes.fromhex(data["cert"]),
                purpose=str(data["purpose"]),
            )
        except (KeyError, TypeError, ValueError):
            raise InputError("the session file is damaged: sign in again") from None
        if len(cred.seed) != KEY_BYTES or cred.purpose not in (SESSION, APPROVAL):
            raise InputError("the session file is damaged: sign in again")
        return cred


def issue_credential(
    store: str,
    user: str,
    pin_key: Ed25519PrivateKey,
    seed: bytes,
    exp_ms: int,
    purpose: str = SESSION,
) -> Credential:
    """Certify a fresh session key (`seed`, random from the caller) with the PIN key."""
    pub = public_bytes(Ed25519PrivateKey.from_private_bytes(seed))
    pin_pub = public_bytes(pin_key)
    cert = pin_key.sign(_cert_content(store, user, pin_pub, pub, exp_ms))
    return Credential(store, user, pin_pub, seed, exp_ms, cert, purpose)


def credential_ok(cred: Credential) -> bool:
    """Whether a stored credential's certificate holds (a session file edited by hand does not)."""
    try:
        Ed25519PublicKey.from_public_bytes(cred.pin_key).verify(
            cred.cert, _cert_content(cred.store, cred.user, cred.pin_key, cred.pub, cred.exp_ms)
        )
    except (InvalidSignature, ValueError):
        return False
    return True


@dataclass(frozen=True)
class Approval:
    user: str
    pin_key: bytes
    pub: bytes
    exp_ms: int
    cert: bytes
    sig: bytes


def read_approval(value: Any, where: str) -> Approval:
    """Parse an op's `approval`; EncodingError (a RemoteError) when it is malformed."""
    try:
        if not isinstance(value, Mapping) or not isinstance(value["user"], str):
            raise TypeError
        exp = value["exp_ms"]
        if not isinstance(exp, int) or isinstance(exp, bool):
            raise TypeError
        raw = {k: bytes.fromhex(value[k]) for k in ("pin_key", "pub", "cert", "sig")}
    except (KeyError, TypeError, ValueError):
        raise EncodingError(f"{where}: its approval is malformed") from None
    if len(raw["pin_key"]) != 32 or len(raw["pub"]) != 32:
        raise EncodingError(f"{where}: its approval is malformed")
    return Approval(value["user"], raw["pin_key"], raw["pub"], exp, raw["cert"], raw["sig"])


def check_approval(a: Approval, op: Op, wall_ms: int) -> str | None:
    """Why the approval's signatures do not hold for `op`, or None. Whether `a.pin_key` is the
    approver's, and their role, is for the caller, who holds the users view."""
    try:
        Ed25519PublicKey.from_public_bytes(a.pin_key).verify(
            a.cert, _cert_content(op.store, a.user, a.pin_key, a.pub, a.exp_ms)
        )
    except (InvalidSignature, ValueError):
        return f"is not certified by {a.user}'s PIN"
    try:
        Ed25519PublicKey.from_public_bytes(a.pub).verify(
            a.sig, approval_content(op.store, op.origin, op.seq, op.user, op.kind, op.payload)
        )
    except (InvalidSignature, ValueError):
        return "was not made for this op (signature does not match its content)"
    if wall_ms > a.exp_ms:
        return f"was used after {a.user}'s sign-in expired"
    return None
