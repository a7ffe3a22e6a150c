"""`meshpos users ...`, `login`, `logout`, `whoami`: staff, roles and PINs.

A PIN is read from a hidden prompt, or from one line of stdin with `--pin-stdin` (scripts). The PIN
of an approver named with `--approve USER` comes from a prompt or `$MESHPOS_APPROVER_PIN`.
"""

from __future__ import annotations

import datetime as dt
import sys
from typing import Any

import click

from meshpos.cli.common import (
    acting_user,
    approve_option,
    emit,
    json_option,
    node_dir,
    op_ref,
    open_terminal,
)
from meshpos.core.errors import InputError
from meshpos.domain.staff import ROLES, SESSION, policy_keys
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


def _when(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


# -- users -------------------------------------------------------------------------------------


@click.group()
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
    t = open_terminal(ctx)
    pin = _read_pin(f"PIN for {user_id}", pin_stdin, confirm=True)
    op = add_user(t, user_id, name=name, role=role, pin=pin, user=acting_user(ctx))
    emit(
        {"user_id": user_id, "role": role, "by": op.user, "op": op_ref(op)},
        as_json,
        "user added",
    )


@users.command("list")
@json_option
@click.pass_context
def users_list(ctx: click.Context, as_json: bool) -> None:
    """Users with role and state; `locked_here` is this terminal's PIN lockout."""
    t = open_terminal(ctx)
    emit(t.ledger.staff.users(t.now_ms()), as_json, "users")


def _set_active(ctx: click.Context, user_id: str, active: bool) -> None:
    op = set_active(open_terminal(ctx), user_id, active, acting_user(ctx))
    click.echo(f"{user_id} {'enabled' if active else 'disabled'} (op {op_ref(op)})")


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
    """Lift a PIN lockout at this terminal, and every web till device's wait (a supervisor,
    signed in or --approve)."""
    done = unlock(open_terminal(ctx), user_id)
    click.echo(f"{user_id} unlocked at this terminal" if done else f"{user_id} was not locked")


@users.command("set-role")
@click.argument("user_id")
@click.argument("role", type=click.Choice(ROLES))
@approve_option
@click.pass_context
def users_set_role(ctx: click.Context, user_id: str, role: str) -> None:
    """Change a user's role (a manager may not change admins or make one)."""
    op = set_role(open_terminal(ctx), user_id, role, acting_user(ctx))
    click.echo(f"{user_id} is now a {role} (op {op_ref(op)})")


@users.command("set-pin")
@click.argument("user_id")
@pin_stdin_option
@approve_option
@click.pass_context
def users_set_pin(ctx: click.Context, user_id: str, pin_stdin: bool) -> None:
    """Give a user a new PIN: the user themselves (signed in, or --approve with the old PIN), or
    a manager."""
    t = open_terminal(ctx)
    pin = _read_pin(f"new PIN for {user_id}", pin_stdin, confirm=True)
    op = set_pin(t, user_id, pin, acting_user(ctx))
    click.echo(f"PIN of {user_id} changed (op {op_ref(op)})")


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
    t = open_terminal(ctx)
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
            set_policy(t, key, value, acting_user(ctx))
    emit({f"staff.{k}": v for k, v in vars(store_policy(t.ledger)).items()}, as_json, "staff")


# -- sign-in -----------------------------------------------------------------------------------


@click.command()
@click.argument("user_id")
@pin_stdin_option
@json_option
@click.pass_context
def login(ctx: click.Context, user_id: str, pin_stdin: bool, as_json: bool) -> None:
    """Sign in at this terminal: later commands act as USER (unless --user) until `logout` or
    the session expires (staff.session_minutes)."""
    t = open_terminal(ctx)
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


@click.command()
@click.pass_context
def logout(ctx: click.Context) -> None:
    """Sign out at this terminal (deletes the session file)."""
    gone = clear_session(node_dir(ctx))
    click.echo("signed out" if gone else "nobody was signed in")


@click.command()
@json_option
@click.pass_context
def whoami(ctx: click.Context, as_json: bool) -> None:
    """Who commands act as here: --user, else the signed-in user, else the node's default."""
    t = open_terminal(ctx)
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
