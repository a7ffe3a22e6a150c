"""One signed-in cashier's state in the web till, and how an action's outcome reaches them.

Sessions live in the server's memory (the cookie only names one): the sale being rung, the
feedback line under the scan field, a pending supervisor approval, the last sale.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from meshpos.core.errors import MeshposError
from meshpos.domain.staff import Credential
from meshpos.service.staff import PermissionDenied, at_the_till
from meshpos.service.till import TillSession

log = logging.getLogger("meshpos.web")


@dataclass
class Notice:
    """One line of feedback under the scan field; `beep` names a devices.layout beep pattern."""

    level: str  # ok, warn, error
    text: str
    beep: str | None = None
    page: str = "till"  # the screen whose action it answers


@dataclass
class PendingApproval:
    """An action refused for want of a supervisor: the page shows a PIN pad that posts it again."""

    action: str
    fields: dict[str, str]
    message: str


@dataclass
class WebSession:
    token: str
    user: str | None  # None: the node's default user (a store with no staff yet)
    name: str
    role: str | None
    cred: Credential | None
    till: TillSession
    seen_ms: int
    take: TillSession | None = None  # an exchange: the items going out
    notice: Notice | None = None
    approval: PendingApproval | None = None
    last: dict[str, Any] | None = None
    customers: list[dict[str, Any]] = field(default_factory=list)
    products: list[dict[str, Any]] = field(default_factory=list)
    picked: str = ""  # what the picks under the scan field are: a search, or a category tile
    panel: str = ""  # an extra panel the cashier opened: "held" (parked carts)

    def sale_closed(self) -> None:
        """The sale was recorded, voided or held: the panels that belonged to it go."""
        self.take = None
        self.approval = None
        self.customers = []
        self.products = []
        self.picked = ""
        self.panel = ""


def run_action(
    s: WebSession,
    fn: Callable[[], None],
    approve_as: tuple[str, dict[str, str]] | None = None,
    *,
    let_through: tuple[type[Exception], ...] = (),
) -> None:
    """Run one action; a refusal becomes the session's notice (and, when it wants a supervisor,
    a PIN pad that posts the action again). Errors in `let_through` are the caller's to handle."""
    try:
        fn()
    except let_through:
        raise
    except PermissionDenied as exc:
        text = at_the_till(exc)  # the PIN pad below is this screen's --approve
        s.notice = Notice("error", text, "invalid")
        if approve_as is not None:
            s.approval = PendingApproval(approve_as[0], approve_as[1], text)
    except MeshposError as exc:
        s.notice = Notice("error", str(exc), "invalid")
    except Exception as exc:  # a bug: the cashier still gets an answer, the log the trace
        if type(exc).__name__ == "OperationalError":  # sqlite3's or SQLCipher's
            s.notice = Notice("error", f"the database is busy ({exc}); try again", "invalid")
        else:
            log.exception("web till action failed")
            text = f"unexpected error ({type(exc).__name__}: {exc}); see the log"
            s.notice = Notice("error", text, "invalid")
