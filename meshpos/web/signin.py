"""Who is signed in to the web till: PIN sign-in, session checks, and acting with credentials.

Sign-in, lockout and approvals are `meshpos.service.staff`, the same code as the CLI's; this
module only keeps the sessions that a cookie names, and ends one whose sign-in no longer holds.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Iterator
from typing import Any

from meshpos.core.errors import InputError, LocalError, NotFound
from meshpos.domain.staff import APPROVAL, RANK, Credential
from meshpos.service.staff import (
    LockedOut,
    PermissionDenied,
    approved_by,
    sign_in,
    store_policy,
    unlock,
)
from meshpos.service.terminal import Terminal
from meshpos.service.till import TillSession
from meshpos.web.session import WebSession

COOKIE = "meshpos_till"
IDLE_MS = 12 * 3_600_000  # a till left signed in overnight signs out


class ApprovalRefused(LocalError):
    """The supervisor's PIN typed to approve an action was wrong, or they may not approve."""


class Sessions:
    def __init__(self, t: Terminal) -> None:
        self.t = t
        self._by_token: dict[str, WebSession] = {}

    def has_staff(self) -> bool:
        return self.t.ledger.staff.has_users()

    def users(self) -> list[dict[str, Any]]:
        return [u for u in self.t.ledger.staff.users(self.t.now_ms()) if u["active"]]

    def listed(self) -> bool:
        """Whether the sign-in page names the users (`staff.list_users_at_signin`); otherwise a
        person types their user id, and a stranger learns no names from the page."""
        return store_policy(self.t.ledger).list_users_at_signin

    def approvers(self) -> list[dict[str, Any]]:
        return [u for u in self.users() if RANK.get(u["role"], 0) >= RANK["supervisor"]]

    def get(self, token: str | None) -> WebSession | None:
        """The session behind a cookie, if it is still good: not idle too long, its sign-in
        unexpired, its user active with the same PIN; a staffless session ends when staff exist."""
        s = self._by_token.get(token or "")
        if s is None:
            return None
        now = self.t.now_ms()
        ok = now - s.seen_ms < IDLE_MS
        if s.cred is None:
            ok = ok and not self.has_staff()
        else:
            row = self.t.ledger.staff.user(s.user)
            ok = (
                ok
                and s.cred.exp_ms > now
                and row is not None
                and bool(row["active"])
                and row["pin_key"] == s.cred.pin_key.hex()
            )
            if ok and row is not None:
                s.role = str(row["role"])
        if not ok:
            self._by_token.pop(s.token, None)
            return None
        s.seen_ms = now
        return s

    def _new(
        self, user: str | None, name: str, role: str | None, cred: Credential | None
    ) -> WebSession:
        token = secrets.token_urlsafe(32)
        s = WebSession(token, user, name, role, cred, TillSession(self.t, user), self.t.now_ms())
        self._by_token[token] = s
        return s

    def sign_in(self, user: str, pin: str, device: str | None = None) -> WebSession:
        """PIN sign-in (service.staff.sign_in: scrypt check, lockouts per user and per `device`,
        the browser's address). With names hidden, an unknown user, a disabled one and a wrong
        PIN get one answer, so the page cannot be used to find out who works here."""
        user = user.strip()
        if not user:
            raise InputError("tap your name first, then type your PIN")
        try:
            cred = sign_in(self.t, user, pin.strip(), device=device)
        except (NotFound, PermissionDenied) as exc:
            if isinstance(exc, LockedOut) or self.listed():
                raise
            raise PermissionDenied("wrong user id or PIN") from None
        row = self.t.ledger.staff.user(user) or {}
        return self._new(user, str(row.get("name") or user), row.get("role"), cred)

    def unlock(self, user: str, approver: str, pin: str) -> str:
        """A supervisor's PIN typed on the sign-in page lifts `user`'s lockout at this terminal
        (none if blank) and every device's wait; it works from a device that must wait, and
        wrong PINs count against the supervisor, as anywhere."""
        if not approver.strip():
            raise InputError("a supervisor types their user id and PIN to unlock")
        try:
            cred = sign_in(self.t, approver.strip(), pin.strip(), purpose=APPROVAL)
        except LocalError as exc:
            raise ApprovalRefused(f"not unlocked: {exc}") from None
        with approved_by(self.t, cred):
            done = unlock(self.t, user.strip() or None)
        who = user.strip() or "this terminal"
        return f"{who} unlocked by {approver.strip()}" if done else f"{who} was not locked"

    def open_staffless(self) -> WebSession:
        """A store with no staff yet: the till runs as the node's default user, as the CLI does."""
        if self.has_staff():
            raise PermissionDenied("this store has staff: sign in with your PIN")
        return self._new(None, self.t.cfg.user, None, None)

    def sign_out(self, token: str | None) -> None:
        self._by_token.pop(token or "", None)

    def clear(self) -> None:
        self._by_token.clear()

    @contextlib.contextmanager
    def acting(self, s: WebSession, approver: str = "", pin: str = "") -> Iterator[None]:
        """Run with the cashier's sign-in (and a supervisor's PIN, if one was typed) as the
        credentials `Terminal.append` checks and signs approvals with."""
        with contextlib.ExitStack() as stack:
            if s.cred is not None:
                stack.enter_context(approved_by(self.t, s.cred))
            if approver.strip():
                try:
                    cred = sign_in(self.t, approver.strip(), pin.strip(), purpose=APPROVAL)
                except LocalError as exc:
                    raise ApprovalRefused(f"approval not given: {exc}") from None
                stack.enter_context(approved_by(self.t, cred))
            yield
