"""HQ's people: per-person accounts with a role, instead of one shared token for everyone.

Roles, lowest first: `viewer` reads every dashboard page; `operator` also changes prices, the
catalogue, GST bands, loyalty rules and the card blocklist (each change an op HQ signs in their
name); `admin` also manages people and store card floats. Relays keep their signed requests and
scripts the admin token (docs/hq-api.md); accounts are for people.

Passwords are hashed with scrypt (`cryptography`), one random salt each, and never stored or
logged. A run of wrong passwords locks the account for a time that doubles with each further
failure (an admin can unlock it), so a password cannot be guessed online; a sign-in of an unknown
name costs the same scrypt as a real one, so the answer time does not tell who exists. Sessions
expire after a few idle hours and at the latest after a working day.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass

from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from meshpos.core.clock import wall_ms
from meshpos.core.errors import InputError, LocalError, NotFound
from meshpos.hq.storage.database import Tx
from meshpos.hq.storage.people import PeopleStore, PersonRow, SessionRow
from meshpos.service.config import check_name

log = logging.getLogger("meshpos.hq.accounts")

ROLES = ("viewer", "operator", "admin")
SCRYPT_LOG_N, SCRYPT_R, SCRYPT_P, SALT_BYTES, HASH_BYTES = 15, 8, 1, 16, 32
MIN_PASSWORD, MAX_PASSWORD = 10, 256
FREE_FAILURES = 5  # wrong passwords in a row before the account locks
LOCK_BASE_MS = 30_000
LOCK_CAP_MS = 3_600_000
IDLE_MS = 4 * 3_600_000
MAX_AGE_MS = 12 * 3_600_000
TOUCH_EVERY_MS = 60_000  # a session's last use is written at most this often


class SignInRefused(LocalError):
    """Wrong name or password, a disabled account, or one locked after wrong passwords."""


class Forbidden(LocalError):
    """The signed-in person's role does not allow this action."""


def check_role(role: str) -> str:
    if role not in ROLES:
        raise InputError(f"role {role!r} must be one of {', '.join(ROLES)}")
    return role


def rank(role: str) -> int:
    return ROLES.index(role) if role in ROLES else -1


def check_password(password: str, user_id: str) -> str:
    """The rules a new password must meet, each refusal naming what to change."""
    if len(password) < MIN_PASSWORD:
        raise InputError(f"a password needs at least {MIN_PASSWORD} characters")
    if len(password) > MAX_PASSWORD:
        raise InputError(f"a password may have at most {MAX_PASSWORD} characters")
    if password.strip().lower() == user_id.lower() or len(set(password)) < 4:
        raise InputError("that password is too easy to guess: use a longer phrase")
    return password


def _kdf(salt: bytes, log_n: int, r: int, p: int) -> Scrypt:
    return Scrypt(salt=salt, length=HASH_BYTES, n=1 << log_n, r=r, p=p)


def hash_password(password: str) -> str:
    """`scrypt$<log2 n>$<r>$<p>$<salt>$<hash>` (base64): the cost travels with each hash, so
    raising it later leaves old hashes readable."""
    salt = os.urandom(SALT_BYTES)
    digest = _kdf(salt, SCRYPT_LOG_N, SCRYPT_R, SCRYPT_P).derive(password.encode())
    b64 = base64.b64encode
    return (
        f"scrypt${SCRYPT_LOG_N}${SCRYPT_R}${SCRYPT_P}${b64(salt).decode()}${b64(digest).decode()}"
    )


def password_matches(password: str, stored: str) -> bool:
    try:
        scheme, log_n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        kdf = _kdf(base64.b64decode(salt), int(log_n), int(r), int(p))
        kdf.verify(password.encode(), base64.b64decode(digest))
    except Exception:  # a malformed hash or InvalidKey: no match either way
        return False
    return True


def lock_ms(failures: int) -> int:
    """How long an account stays locked after `failures` wrong passwords in a row."""
    if failures < FREE_FAILURES:
        return 0
    return int(min(LOCK_CAP_MS, LOCK_BASE_MS * 2 ** (failures - FREE_FAILURES)))


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _minutes(ms: int) -> str:
    minutes = max(1, -(-ms // 60_000))
    return f"{minutes} minute{'s' if minutes != 1 else ''}"


@dataclass(frozen=True)
class Person:
    user_id: str
    name: str
    role: str
    disabled: bool
    locked_until_ms: int
    created_ms: int
    signed_in_ms: int

    @classmethod
    def of(cls, row: PersonRow) -> Person:
        return cls(
            row.user_id, row.name, row.role, row.disabled, row.locked_until_ms, row.created_ms,
            row.signed_in_ms,
        )  # fmt: skip

    def can(self, role: str) -> bool:
        """Whether this person holds `role` or a higher one."""
        return not self.disabled and rank(self.role) >= rank(role)

    @property
    def op_user(self) -> str:
        """The acting user HQ's ops carry for this person's changes: stores see who it was."""
        return f"hq-{self.user_id}"


@dataclass(frozen=True)
class Session:
    person: Person
    token_hash: str
    csrf: str
    created_ms: int


@dataclass(frozen=True)
class SignedIn:
    session: Session
    token: str  # the cookie's value; only its hash is stored


class Accounts:
    """HQ's people over the database every HQ process shares."""

    def __init__(self, store: PeopleStore, now_ms: Callable[[], int] = wall_ms) -> None:
        self.store = store
        self.now_ms = now_ms
        self._decoy: str | None = None

    # -- managing people ------------------------------------------------------------------------

    def add(self, user_id: str, name: str, role: str, password: str) -> Person:
        check_name(user_id, "user id")
        check_role(role)
        check_password(password, user_id)
        name = name.strip() or user_id
        if len(name) > 80:
            raise InputError("a name may have at most 80 characters")
        now = self.now_ms()
        row = PersonRow(user_id, name, role, hash_password(password), False, 0, 0, now, now, 0)
        self.store.add(row)
        log.info("HQ user %s added as %s", user_id, role)
        return Person.of(row)

    def people(self) -> list[Person]:
        return [Person.of(r) for r in self.store.all()]

    def person(self, user_id: str) -> Person:
        row = self.store.get(user_id)
        if row is None:
            raise NotFound(f"there is no HQ user {user_id!r} (`meshpos hq user list`)")
        return Person.of(row)

    def _change(self, user_id: str, fn: Callable[[Tx, PersonRow], None]) -> Person:
        def run(tx: Tx) -> Person:
            row = self.store.get(user_id, tx)
            if row is None:
                raise NotFound(f"there is no HQ user {user_id!r} (`meshpos hq user list`)")
            fn(tx, row)
            changed = self.store.get(user_id, tx)
            assert changed is not None
            return Person.of(changed)

        return self.store.db.run(run)

    def _keep_an_admin(self, tx: Tx, row: PersonRow) -> None:
        if (
            row.role == "admin"
            and not row.disabled
            and self.store.active_admins(tx) == [row.user_id]
        ):
            raise InputError(
                f"{row.user_id} is the only active admin: make someone else admin first"
            )

    def set_role(self, user_id: str, role: str) -> Person:
        check_role(role)

        def fn(tx: Tx, row: PersonRow) -> None:
            if role != "admin":
                self._keep_an_admin(tx, row)
            self.store.update(tx, user_id, role=role, changed_ms=self.now_ms())
            self.store.end_sessions(tx, user_id)  # the new role applies from the next sign-in

        person = self._change(user_id, fn)
        log.info("HQ user %s is now %s", user_id, role)
        return person

    def set_password(self, user_id: str, password: str) -> Person:
        check_password(password, user_id)
        hashed = hash_password(password)

        def fn(tx: Tx, row: PersonRow) -> None:
            self.store.update(tx, user_id, pw_hash=hashed, failures=0, locked_until_ms=0,
                              changed_ms=self.now_ms())  # fmt: skip
            self.store.end_sessions(tx, user_id)

        person = self._change(user_id, fn)
        log.info("HQ user %s has a new password; their sessions ended", user_id)
        return person

    def set_disabled(self, user_id: str, disabled: bool) -> Person:
        def fn(tx: Tx, row: PersonRow) -> None:
            if disabled:
                self._keep_an_admin(tx, row)
            self.store.update(tx, user_id, disabled=int(disabled), changed_ms=self.now_ms())
            self.store.end_sessions(tx, user_id)

        person = self._change(user_id, fn)
        log.info("HQ user %s %s", user_id, "disabled" if disabled else "enabled")
        return person

    def unlock(self, user_id: str) -> Person:
        def fn(tx: Tx, row: PersonRow) -> None:
            self.store.update(tx, user_id, failures=0, locked_until_ms=0)

        person = self._change(user_id, fn)
        log.info("HQ user %s unlocked", user_id)
        return person

    # -- signing in -----------------------------------------------------------------------------

    def _check(self, user_id: str, password: str, address: str, now: int) -> PersonRow:
        """The person whose password this is; a wrong one counts towards a lock."""
        row = self.store.get(user_id) if user_id else None
        if row is None or not password:
            password_matches(password, self._decoy_hash())  # the same cost as a real check
            log.warning("HQ sign-in refused for unknown user %r from %s", user_id[:40], address)
            raise SignInRefused("wrong user name or password")
        if row.locked_until_ms > now:
            raise SignInRefused(
                f"{user_id} is locked after {row.failures} wrong passwords: try again in "
                f"{_minutes(row.locked_until_ms - now)}, or ask an admin to unlock it"
            )
        if not password_matches(password, row.pw_hash):
            failures = row.failures + 1
            until = now + lock_ms(failures) if lock_ms(failures) else 0
            self.store.db.run(
                lambda tx: self.store.update(tx, user_id, failures=failures, locked_until_ms=until)
            )
            log.warning("HQ sign-in refused for %s from %s: wrong password (%d in a row)",
                        user_id, address, failures)  # fmt: skip
            if until:
                raise SignInRefused(
                    f"wrong password; {user_id} is now locked for {_minutes(until - now)}"
                )
            raise SignInRefused("wrong user name or password")
        if row.disabled:
            raise SignInRefused(f"{user_id}'s account is disabled: ask an HQ admin")
        return row

    def sign_in(self, user_id: str, password: str, address: str = "") -> SignedIn:
        now = self.now_ms()
        row = self._check(user_id, password, address, now)
        token, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(24)
        session = SessionRow(_token_hash(token), user_id, csrf, now, now, address[:64])

        def fn(tx: Tx) -> None:
            self.store.prune_sessions(tx, now - IDLE_MS, now - MAX_AGE_MS)
            self.store.update(tx, user_id, failures=0, locked_until_ms=0, signed_in_ms=now)
            self.store.add_session(tx, session)

        self.store.db.run(fn)
        log.info("HQ user %s signed in from %s", user_id, address)
        person = Person.of(row)
        return SignedIn(Session(person, session.token_hash, csrf, now), token)

    def change_password(self, user_id: str, current: str, new: str) -> Person:
        """A person's own change: the current password first (a wrong one counts as a failed
        sign-in), then the new one; every session of theirs ends."""
        try:
            self._check(user_id, current, "password change", self.now_ms())
        except SignInRefused as exc:
            raise SignInRefused(f"the current password is not right ({exc})") from None
        return self.set_password(user_id, new)

    def _decoy_hash(self) -> str:
        if self._decoy is None:
            self._decoy = hash_password(secrets.token_urlsafe(16))
        return self._decoy

    def session(self, token: str | None) -> Session | None:
        """The live session a cookie names, or None (unknown, expired, or its person disabled)."""
        if not token or len(token) > 128:
            return None
        found = self.store.session(_token_hash(token))
        if found is None:
            return None
        row, person = found
        now = self.now_ms()
        if now - row.seen_ms > IDLE_MS or now - row.created_ms > MAX_AGE_MS or person.disabled:
            self.store.end_session(row.token_hash)
            return None
        if now - row.seen_ms > TOUCH_EVERY_MS:
            self.store.touch_session(row.token_hash, now)
        return Session(Person.of(person), row.token_hash, row.csrf, row.created_ms)

    def sign_out(self, token: str | None) -> None:
        if token:
            self.store.end_session(_token_hash(token))


def csrf_matches(session: Session, given: str | None) -> bool:
    return bool(given) and hmac.compare_digest(session.csrf.encode(), (given or "").encode())
