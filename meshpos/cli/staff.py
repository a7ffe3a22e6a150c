"""`meshpos users ...`, `login`, `logout`, `whoami`: staff, roles and PINs.

A PIN is read from a hidden prompt, or from one line of stdin with `--pin-stdin` (scripts). The PIN
of an approver named with `--approve USER` comes from a prompt or `$MESHPOS_APPROVER_PIN`.
"""

from __future__ import annotations

import datetime as dt
import os
import sys
from typing import Any

import click

from meshpos.cli.app import OPEN_HOOKS, _open, _user, approve_option, cli, emit, json_option
from meshpos.core.errors import InputError
from meshpos.domain.staff import APPROVAL, ROLES, SESSION, policy_keys
from meshpos.service.staff import (
    add_user,
    clear_session,
    load_session,
    read_session,
    save_session,
    set_active,
    set_pin,
    set_policy,
    set_role,
    sign_in,
    store_policy,
    unlock,
)
from meshpos.service.terminal import Terminal

pin_stdin_option = click.option(
    "--pin-stdin", is_flag=True, help="Read the PIN from one line of stdin (for scripts)."
)


def _read_pin(prompt: str, from_stdin: bool, confirm: bool = False) -> str:
    if from_stdin:
        line = sys.stdin.readline().strip()
        if not line:
            raise InputError("--pin-stdin: no PIN on stdin")
        return line
    pin: str = click.prompt(prompt, hide_input=True, confirmation_prompt=confirm, err=True)
    return pin


def _attach(ctx: click.Context, t: Terminal) -> None:
    """Every command's terminal gets the signed-in user's credential (it approves only that
    user's own ops) and, with --approve USER, that user's, checked against their PIN now."""
    try:
        cred = load_session(t)
    except InputError:
        cred = None
    if cred is not None:
        t.credentials.append(cred)
    approver = ctx.find_root().obj.get("approve")
    if approver:
        pin = os.environ.get("MESHPOS_APPROVER_PIN") or click.prompt(
            f"PIN of {approver} (approving)", hide_input=True, err=True
        )
        t.credentials.insert(0, sign_in(t, approver, pin, purpose=APPROVAL))


OPEN_HOOKS.append(_attach)


def _when(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def _op(op: Any) -> str:
    return f"{op.origin}:{op.seq}"


# -- users -------------------------------------------------------------------------------------


@cli.group()
def users() -> None:
    """Staff: users, roles and PINs. Changes are ops, so every terminal gets them."""


@users.command("add")
@click.argument("user_id")
@click.option("--name", default="", help="Full name (default: the user id).")
@click.option("--role", type=click.Choice(ROLES), default="cashier", show_default=True)
@pin_stdin_option
@approve_option
@json_option
@click.pass_context
def users_add(
    ctx: click.Context, user_id: str, name: str, role: str, pin_stdin: bool, as_json: bool
) -> None:
    """Add a user with a PIN. The store's first user must be an admin; after that a manager
    (signed in, or --approve) adds users."""
    t = _open(ctx)
    pin = _read_pin(f"PIN for {user_id}", pin_stdin, confirm=True)
    op = add_user(t, user_id, name=name, role=role, pin=pin, user=_user(ctx))
    emit(
        {"user_id": user_id, "role": role, "by": op.user, "op": _op(op)},
        as_json,
        "user added",
    )


@users.command("list")
@json_option
@click.pass_context
def users_list(ctx: click.Context, as_json: bool) -> None:
    """Users with role and state; `locked_here` is this terminal's PIN lockout."""
    t = _open(ctx)
    emit(t.ledger.staff.users(t.now_ms()), as_json, "users")


def _set_active(ctx: click.Context, user_id: str, active: bool) -> None:
    op = set_active(_open(ctx), user_id, active, _user(ctx))
    click.echo(f"{user_id} {'enabled' if active else 'disabled'} (op {_op(op)})")


@users.command("disable")
@click.argument("user_id")
@approve_option
@click.pass_context
def users_disable(ctx: click.Context, user_id: str) -> None:
    """Disable a user: they can no longer sign in, sell or approve at any terminal that knows."""
    _set_active(ctx, user_id, False)


@users.command("enable")
@click.argument("user_id")
@approve_option
@click.pass_context
def users_enable(ctx: click.Context, user_id: str) -> None:
    """Enable a disabled user again."""
    _set_active(ctx, user_id, True)


@users.command("unlock")
@click.argument("user_id")
@approve_option
@click.pass_context
def users_unlock(ctx: click.Context, user_id: str) -> None:
    """Lift a PIN lockout at this terminal (a manager, signed in or --approve)."""
    done = unlock(_open(ctx), user_id)
    click.echo(f"{user_id} unlocked at this terminal" if done else f"{user_id} was not locked")


@users.command("set-role")
@click.argument("user_id")
@click.argument("role", type=click.Choice(ROLES))
@approve_option
@click.pass_context
def users_set_role(ctx: click.Context, user_id: str, role: str) -> None:
    """Change a user's role (a manager may not change admins or make one)."""
    op = set_role(_open(ctx), user_id, role, _user(ctx))
    click.echo(f"{user_id} is now a {role} (op {_op(op)})")


@users.command("set-pin")
@click.argument("user_id")
@pin_stdin_option
@approve_option
@click.pass_context
def users_set_pin(ctx: click.Context, user_id: str, pin_stdin: bool) -> None:
    """Give a user a new PIN: the user themselves (signed in, or --approve with the old PIN), or
    a manager."""
    t = _open(ctx)
    pin = _read_pin(f"new PIN for {user_id}", pin_stdin, confirm=True)
    op = set_pin(t, user_id, pin, _user(ctx))
    click.echo(f"PIN of {user_id} changed (op {_op(op)})")


@users.command("policy")
@click.option(
    "--set",
    "assignments",
    multiple=True,
    metavar="KEY=VALUE",
    help="Change a staff setting, e.g. staff.refund_limit=500 or staff.discount_limit_bp=15%.",
)
@approve_option
@json_option
@click.pass_context
def users_policy(ctx: click.Context, assignments: tuple[str, ...], as_json: bool) -> None:
    """Show the staff rules (limits, lockout, sign-in); --set changes one (a manager's op)."""
    t = _open(ctx)
    parsed = []
    for item in assignments:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep:
            raise InputError(f"--set {item!r}: expected KEY=VALUE")
        if not key.startswith("staff."):
            key = f"staff.{key}"
        if key not in policy_keys():
            raise InputError(f"unknown staff setting {key!r}: one of {', '.join(policy_keys())}")
        parsed.append((key, value))
    with t.transaction():
        for key, value in parsed:
            set_policy(t, key, value, _user(ctx))
    emit({f"staff.{k}": v for k, v in vars(store_policy(t.ledger)).items()}, as_json, "staff")


# -- sign-in -----------------------------------------------------------------------------------


@cli.command()
@click.argument("user_id")
@pin_stdin_option
@json_option
@click.pass_context
def login(ctx: click.Context, user_id: str, pin_stdin: bool, as_json: bool) -> None:
    """Sign in at this terminal: later commands act as USER (unless --user) until `logout` or
    the session expires (staff.session_minutes)."""
    t = _open(ctx)
    pin = _read_pin(f"PIN for {user_id}", pin_stdin)
    cred = sign_in(t, user_id, pin, purpose=SESSION)
    path = save_session(t.cfg.dir, cred)
    row = t.ledger.staff.user(user_id) or {}
    emit(
        {
            "user_id": user_id,
            "role": row.get("role"),
            "until": _when(cred.exp_ms),
            "session": str(path),
        },
        as_json,
        "signed in",
    )


@cli.command()
@click.pass_context
def logout(ctx: click.Context) -> None:
    """Sign out at this terminal (deletes the session file)."""
    gone = clear_session(ctx.find_root().obj["dir"])
    click.echo("signed out" if gone else "nobody was signed in")


@cli.command()
@json_option
@click.pass_context
def whoami(ctx: click.Context, as_json: bool) -> None:
    """Who commands act as here: --user, else the signed-in user, else the node's default."""
    t = _open(ctx)
    obj = ctx.find_root().obj
    session = load_session(t)
    stored = read_session(t.cfg.dir)
    acting = obj.get("user") or (session.user if session else None) or t.cfg.user
    row = t.ledger.staff.user(acting)
    out: dict[str, Any] = {
        "user": acting,
        "role": row["role"] if row else None,
        "active": bool(row["active"]) if row else None,
        "signed_in": session is not None and session.user == acting,
        "until": _when(session.exp_ms) if session else None,
    }
    if stored is not None and session is None:
        out["note"] = f"the session of {stored.user} has expired or is no longer valid"
    emit(out, as_json, "whoami")
