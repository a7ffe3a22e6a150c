"""The store's rulebook: whether an authentic op has the authority to take effect.

Authenticity gates the log; authority gates the fold. A correctly signed op from an enrolled node
that continues its chain is stored by every replica and never refused: refusing it would stall
every later op of its origin. Whether it changes any view is decided here, by `judge`, from the op
and what the replica knows of its past. Every replica (a terminal's ledger, HQ, the simulator's
nodes and HQ) calls this one function through a small `Past` adapter over its own storage, so the
same ops give the same verdicts everywhere.

Every rule is monotone: learning more ops with authority can only turn "no authority" into
"authority", never back. Approvers count with every role they *ever* held before the op; limits
count at the most lenient value ever set before it; a counter's escrow holding counts the grants
that reached it before the op (credits only: nobody else can take rights from it) and *every* one
of its own earlier moves, with authority or not, so a later verdict cannot shrink it. A replica
that re-judges the ops it holds without authority each time it learns more therefore reaches the
least fixpoint, which is a function of the op set alone: the views converge, whatever the order.

One input is not monotone, and is handled by the replicas: the store's staff start (the first
bootstrap user). Before a store has staff nothing needs approval; when a replica learns an
earlier staff start, ops it let through unapproved may fall outside the bootstrap grace, and it
refolds (`needs_refold`).

The service layer refuses to *create* an op without authority (`service.staff.authorize`,
`Terminal.sell`'s escrow and card checks): strict limits at the source, lenient ones here, for
ops from a tampered, stolen or outdated terminal.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from meshpos.core.clock import pack, wall_of
from meshpos.core.errors import MeshposError
from meshpos.core.ops import Op
from meshpos.domain.cards import is_sealed
from meshpos.domain.giftcards import KNOWN as GIFTCARD_KNOWN
from meshpos.domain.giftcards import TENDER as GIFTCARD_TENDER
from meshpos.domain.giftcards import code_of, is_key, spent_by
from meshpos.domain.money import rupees
from meshpos.domain.revocation import REVOKE_KIND, Revoked
from meshpos.domain.revocation import refusal as revocation_refusal
from meshpos.domain.staff import (
    LIMIT_FIELDS,
    RANK,
    Need,
    Policy,
    check_approval,
    lenient_policy,
    read_approval,
    required,
    roles_from,
)

# The rules, by the name a conflict shows, and what each says in plain words.
HQ_ONLY = "hq-only"
APPROVAL = "approval"
ESCROW = "escrow"
CARD_LIMIT = "card-limit"
REVOKED = "revoked"
RULES = {
    HQ_ONLY: "card payment and UPI results, card float and gift card moves between stores are "
    "signed by HQ only",
    APPROVAL: "ops above a staff limit carry a valid approval by a user who held the role",
    ESCROW: "a counter spends only the loyalty points, card float or gift card balance it holds",
    CARD_LIMIT: "card money taken offline in one sale stays within the per-sale floor limit",
    REVOKED: "a revoked node's ops after its revocation take no effect; only the store key or "
    "HQ revokes",
}

HQ_ONLY_KINDS = frozenset(
    {"payment.result", "card.float", "transfer.expect", "upi.result", GIFTCARD_KNOWN}
)
# The escrow pseudo-customer whose rights are a node's share of the store's offline card float.
CARD_FLOAT = "card-float"
PER_SALE_SETTING = "cards.floor_per_sale"
DEFAULT_PER_SALE = 1_000_000  # paise: ₹10,000
MAX_FLOAT = 10**12  # paise: ₹1,000 crore, far above any store's float
STAFF_PREFIX = "staff."
# The settings the rules read (their history is what `Past.setting_history` keeps).
RULE_SETTINGS = (PER_SALE_SETTING, *(f"{STAFF_PREFIX}{name}" for name in LIMIT_FIELDS))


@dataclass(frozen=True)
class Violation:
    """Why an op has no authority: the rule it broke and a sentence for the manager."""

    rule: str
    message: str


class Past(Protocol):
    """What a replica knows of an op's past, as the rules need it. Implemented over the node
    ledger's tables (meshpos/ledger/judging.py) and over HQ's (meshpos/hq/storage/judging.py);
    both count the ops of the batch being folded that were judged before."""

    def node_role(self, node_id: str) -> str | None:
        """The role in the node's certificate ("terminal", "hq"), None when unknown."""

    def node_cert(self, node_id: str) -> bytes | None:
        """The node's certificate as held (admitted against the store key), None when unknown."""

    def revoked(self, node_id: str) -> Revoked | None:
        """The revocation in force for the node, from every revocation op the replica holds
        (meshpos/domain/revocation.py: not monotone, so a replica refolds when one arrives)."""

    def staff_since(self) -> int | None:
        """HLC of the first bootstrap user op with authority: when the store got staff."""

    def user_history(self, user: str, before_hlc: int) -> tuple[set[str], set[str]]:
        """Roles the user ever held and PIN keys (hex) they ever had, by ops with authority
        stamped before `before_hlc`."""

    def setting_history(self, key: str, before_hlc: int) -> list[Any]:
        """Every value the setting was given by ops with authority stamped before `before_hlc`
        (only `RULE_SETTINGS` are asked for)."""

    def prev_hlc(self, origin: str, seq: int) -> int | None:
        """The HLC of the origin's op `seq`, None when not held."""

    def rights_before(self, customer: str, node: str, op: Op) -> int:
        """Escrow rights `node` held for `customer` just before its op `op`: the credits to it
        by other nodes' ops with authority stamped before the op, plus every earlier move of its
        own (credits with authority; debits with or without)."""


def is_bootstrap(op: Op) -> bool:
    """The op that gives a store its first user (an admin, made without approval)."""
    return op.kind == "user.upsert" and op.payload.get("bootstrap") is True


def spends(op: Op) -> dict[str, int]:
    """Escrow rights `op` spends from its origin's holding, per customer (positive amounts).

    A sale or exchange spends the points it redeems beyond those it earns, and the card float of
    its sealed (offline-captured) card tenders; a transfer spends what it hands on; a negative
    loyalty adjustment spends its points. A return spends nothing: it takes back what was earned,
    however little is left (a negative balance is a conflict for a manager, not a refusal).
    Malformed payloads spend nothing here: the fold refuses their shape before any rule runs."""
    return spends_of(op.kind, op.payload)


def spends_of(kind: str, p: Mapping[str, Any]) -> dict[str, int]:
    """`spends` of an op of `kind` with payload `p` (at the till, before it is signed)."""
    out: dict[str, int] = {}
    if kind in ("sale", "exchange"):
        customer = p.get("customer")
        net = _int(p.get("points_redeemed")) - _int(p.get("points_earned"))
        if isinstance(customer, str) and customer and net > 0:
            out[customer] = net
        tenders = p.get("tenders") or ()
        if _may_spend(tenders):
            card = pending_amount(tenders)
            if card:
                out[CARD_FLOAT] = card
            out.update(spent_by(tenders))
    elif kind == "escrow.transfer":
        customer, points = p.get("customer_id"), _int(p.get("points"))
        if isinstance(customer, str) and points > 0:
            out[customer] = points
    elif kind == "loyalty.adjust":
        customer, delta = p.get("customer_id"), _int(p.get("delta"))
        if isinstance(customer, str) and delta < 0:
            out[customer] = -delta
    return out


# Tender methods that spend escrow rights: a sealed card (the card float), a gift card's balance.
SPENDING_METHODS = ("card", GIFTCARD_TENDER)  # a tuple: a method may be any (unhashable) value


def _may_spend(tenders: Any) -> bool:
    """Whether any tender might spend rights (most sales: cash or UPI only, nothing to count)."""
    if type(tenders) is not list:
        return True  # a tuple (a cart at the till) or malformed: the full count decides
    return any(type(t) is not dict or t.get("method") in SPENDING_METHODS for t in tenders)


def card_pending(op: Op) -> int:
    """Card money a sale takes offline: its sealed card tenders, awaiting HQ's answer."""
    if op.kind not in ("sale", "exchange"):
        return 0
    return pending_amount(op.payload.get("tenders") or ())


def pending_amount(tenders: Iterable[Any]) -> int:
    """The sealed card money among `tenders` (a sale's, or a cart's at the till)."""
    if not isinstance(tenders, list | tuple):
        return 0  # a malformed sale: the fold refuses its shape
    return sum(
        max(_int(t.get("amount")), 0)
        for t in tenders
        if isinstance(t, Mapping) and t.get("method") == "card" and is_sealed(t)
    )


def valid_limit(value: Any) -> bool:
    """Whether a `cards.floor_per_sale` value is one the rules count (paise, in range)."""
    return type(value) is int and 0 <= value <= MAX_FLOAT


def judge(op: Op, past: Past) -> Violation | None:
    """None when `op` has authority to change the views; else the rule it breaks."""
    revoked = past.revoked(op.origin)
    if revoked is not None and revoked.bars(op.seq):
        return Violation(
            REVOKED,
            f"{_where(op)} was signed after {op.origin} was revoked (from its op "
            f"{revoked.after_seq + 1} on): {revoked.reason}",
        )
    role = past.node_role(op.origin)
    if op.kind == REVOKE_KIND:
        refused = revocation_refusal(op, role, past.node_cert(op.origin))
        return None if refused is None else Violation(REVOKED, refused)
    if (op.kind in HQ_ONLY_KINDS or _moves_card_value(op)) and role != "hq":
        return Violation(HQ_ONLY, f"{_where(op)} is signed by {op.origin}, which is not HQ")
    if role == "hq":
        return None  # HQ answers for its own staff and mints the float it hands out
    found = _approval(op, past)
    if found is not None:
        return found
    spent = spends(op)
    if not spent:
        return None
    pending = spent.get(CARD_FLOAT, 0)
    if pending > DEFAULT_PER_SALE:  # no limit the rules count is below the default
        limit = per_sale_limit(past.setting_history(PER_SALE_SETTING, op.hlc))
        if pending > limit:
            return Violation(
                CARD_LIMIT,
                f"{_where(op)} took {rupees(pending)} by card offline, over the per-sale limit "
                f"of {rupees(limit)}",
            )
    for customer, amount in sorted(spent.items()):
        held = past.rights_before(customer, op.origin, op)
        if amount > held and is_key(customer):
            return Violation(
                ESCROW,
                f"{_where(op)} spends {rupees(amount)} of gift card {code_of(customer)}'s "
                f"balance but its counter held only {rupees(max(held, 0))}",
            )
        if amount > held:
            what = "card float" if customer == CARD_FLOAT else f"customer {customer}'s points"
            have = rupees(max(held, 0)) if customer == CARD_FLOAT else str(max(held, 0))
            asked = rupees(amount) if customer == CARD_FLOAT else str(amount)
            return Violation(
                ESCROW, f"{_where(op)} spends {asked} of {what} but its counter held only {have}"
            )
    return None


def _moves_card_value(op: Op) -> bool:
    """A loyalty adjustment of a gift card's balance: only HQ moves one between stores."""
    return op.kind == "loyalty.adjust" and is_key(op.payload.get("customer_id"))


def per_sale_limit(values: Iterable[Any]) -> int:
    """The per-sale offline card limit the rules apply: the most lenient of the default and
    every value the setting was given (a till may have seen any of them)."""
    return max([DEFAULT_PER_SALE, *(int(v) for v in values if valid_limit(v))])


def policy_before(past: Past, hlc: int) -> Policy:
    """The most lenient staff policy of everything set before `hlc`."""
    return lenient_policy(
        {
            f"{STAFF_PREFIX}{name}": past.setting_history(f"{STAFF_PREFIX}{name}", hlc)
            for name in LIMIT_FIELDS
        }
    )


def grace_end(since: int, policy: Policy) -> int:
    """The first HLC past the bootstrap grace of a store that got staff at `since`."""
    return pack(wall_of(since) + policy.bootstrap_grace_minutes * 60_000, 0)


def _where(op: Op) -> str:
    return f"op {op.origin}:{op.seq} ({op.kind})"


def _approval(op: Op, past: Past) -> Violation | None:
    since = past.staff_since()
    if is_bootstrap(op):
        since = op.hlc if since is None else min(since, op.hlc)
    if since is None:
        return None  # no staff yet: every op is a person's at an unlocked till
    need = _need(op, past)
    if need is None:
        return None
    where = f"{_where(op)}: {need.what}"
    raw = op.payload.get("approval")
    if raw is None:
        if op.hlc < grace_end(since, policy_before(past, op.hlc)):
            prev = past.prev_hlc(op.origin, op.seq - 1)
            if prev is None or prev <= op.hlc:
                return None
        return Violation(APPROVAL, f"{where} needs {roles_from(need.role)}'s approval and has none")
    try:
        approval = read_approval(raw, where)
    except MeshposError as exc:
        return Violation(APPROVAL, str(exc))
    reason = check_approval(approval, op, wall_of(op.hlc))
    if reason is not None:
        return Violation(APPROVAL, f"{where}: the approval by {approval.user} {reason}")
    roles, keys = past.user_history(approval.user, op.hlc)
    if not roles and not keys:
        return Violation(APPROVAL, f"{where}: approver {approval.user} is not a user of the store")
    if approval.pin_key.hex() not in keys:
        return Violation(
            APPROVAL, f"{where}: the approval is not signed with {approval.user}'s PIN"
        )
    if need.self_user != approval.user and not any(
        RANK.get(r, -1) >= RANK[need.role] for r in roles
    ):
        return Violation(
            APPROVAL,
            f"{where}: the approver {approval.user} was never {roles_from(need.role)} before it",
        )
    return None


# Kinds `domain.staff.required` may ask an approval for; any other kind skips the policy look-up.
GATED_KINDS = frozenset(
    {"sale", "return", "exchange", "stock.adjust", "conflict.resolve", "product.upsert",
     "setting.set", "user.upsert"}
)  # fmt: skip


def _need(op: Op, past: Past) -> Need | None:
    if op.kind not in GATED_KINDS:
        return None
    if op.kind == "sale" and not _discounted(op.payload):
        return None  # a sale needs approval only for its discount
    return required(op.kind, op.payload, policy_before(past, op.hlc))


def _discounted(payload: Mapping[str, Any]) -> bool:
    lines = payload.get("lines")
    return isinstance(lines, list) and any(
        isinstance(line, Mapping) and _int(line.get("discount")) > 0 for line in lines
    )


def _int(value: Any) -> int:
    return value if type(value) is int else 0
