"""The manager screen: resolving conflicts (a supervisor's PIN when the cashier may not), X and Z
reports, the sync error log."""

from __future__ import annotations

from starlette.requests import Request
from starlette.routing import BaseRoute, Route

from meshpos.web.backend import TillParts
from meshpos.web.common import Action, Context, Form, Screen, Site, dismiss_approval
from meshpos.web.session import WebSession


def manager_view(p: TillParts, s: WebSession, request: Request) -> Context:
    approval = s.approval if s.approval and s.approval.action.startswith("/manager") else None
    return {
        "m": p.manager_screen.view(s.role),
        "notice": s.notice if s.notice and s.notice.page == "manager" else None,
        "approval": approval,
        "approvers": p.sessions.approvers() if approval else [],
    }


MANAGER = Screen("manager", "_manager.html", manager_view)


def resolve(p: TillParts, s: WebSession, d: Form) -> None:
    p.manager_screen.resolve(
        s,
        d.get("conflict_id", ""),
        d.get("note", ""),
        d.get("adjust", ""),
        d.get("approver", ""),
        d.get("approver_pin", ""),
    )


def report(p: TillParts, s: WebSession, d: Form) -> None:
    p.manager_screen.report(
        s, d.get("which", "x"), d.get("approver", ""), d.get("approver_pin", "")
    )


def routes(site: Site) -> list[BaseRoute]:
    def post(path: str, fn: Action, approval: str | None = None) -> Route:
        return Route(path, site.action(fn, MANAGER, approval=approval), methods=["POST"])

    return [
        Route("/manager", site.page("manager", "manager.html", manager_view)),
        post("/manager/resolve", resolve, approval="/manager/resolve"),
        post("/manager/report", report, approval="/manager/report"),
        post("/manager/dismiss", dismiss_approval),
        Route("/part/manager", site.page("manager", "_manager.html", manager_view)),
    ]
