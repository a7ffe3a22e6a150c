"""`meshpos conflicts`: invariant breaks found after a merge, listed (the default) and resolved."""

from __future__ import annotations

import click

from meshpos.cli.common import (
    DefaultGroup,
    acting_user,
    approve_option,
    emit,
    json_option,
    op_ref,
    open_terminal,
)


@click.group(cls=DefaultGroup, default_cmd="list")
def conflicts() -> None:
    """Invariant breaks found after a merge (oversells, over-returns...) for a manager."""


@conflicts.command("list")
@click.option("--all", "show_all", is_flag=True, help="Include resolved conflicts.")
@json_option
@click.pass_context
def conflicts_list(ctx: click.Context, show_all: bool, as_json: bool) -> None:
    """Open conflicts with the ops involved."""
    emit(
        open_terminal(ctx).conflicts(None if show_all else "open"),
        as_json,
        "conflicts",
        ["conflict_id", "status", "detail", "ops", "resolved_by"],
    )


@conflicts.command("resolve")
@click.argument("conflict_id")
@click.option("--note", required=True, help="What was done (recorded in the audit trail).")
@click.option("--adjust", type=int, help="For an oversell: stock adjustment to record with it.")
@approve_option
@click.pass_context
def conflicts_resolve(ctx: click.Context, conflict_id: str, note: str, adjust: int | None) -> None:
    """Resolve a conflict (itself an op, so every terminal sees it)."""
    op = open_terminal(ctx).resolve(conflict_id, note, adjust=adjust, user=acting_user(ctx))
    click.echo(f"{conflict_id} resolved (op {op_ref(op)})")
