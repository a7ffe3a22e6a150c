"""`meshpos training start|stop|status`: switch this till to practice and back."""

from __future__ import annotations

import click

from meshpos.cli.common import acting_user, emit, json_option, node_dir, open_terminal
from meshpos.core.clock import wall_ms
from meshpos.service import training
from meshpos.service.terminal import Terminal
from meshpos.web.views import clock


@click.group("training")
def training_group() -> None:
    """Training mode: practice on this till without touching real sales."""


@training_group.command("start")
@click.option("--keep", is_flag=True, help="Carry on with the last practice ledger.")
@click.pass_context
def training_start(ctx: click.Context, keep: bool) -> None:
    """Switch this till to practice: `meshpos till`, sell, return and exchange ring into a
    separate practice ledger (this store's catalogue and stock, a practice customer), marked
    TRAINING on every screen and receipt, never synced, never in reports."""
    real = open_terminal(ctx)
    state = training.start(real, acting_user(ctx) or real.cfg.user, wall_ms(), keep=keep)
    click.echo(f"{training.NOTICE}")
    click.echo(f"practice ledger: {state.practice_dir}")
    click.echo(
        "a web till picks it up when it next opens (restart `meshpos web serve` or the daemon)"
    )
    click.echo("`meshpos training stop` switches back to real selling")


@training_group.command("stop")
@click.pass_context
def training_stop(ctx: click.Context) -> None:
    """Switch this till back to real selling (the practice ledger is kept for review)."""
    state = training.stop(node_dir(ctx))
    if state is None:
        click.echo("this till was not in training mode")
        return
    t = Terminal.open(state.practice_dir)
    try:
        sales = t.ledger.views.next_number(t.node_id) - 1
    finally:
        t.close()
    click.echo(
        f"training over: {sales} practice sale(s) rung, none of them real; selling for real again"
    )


@training_group.command("status")
@json_option
@click.pass_context
def training_status(ctx: click.Context, as_json: bool) -> None:
    """Whether this till is in training mode."""
    state = training.active(node_dir(ctx))
    if as_json:
        emit({"training": state is not None, **(state.as_dict() if state else {})}, True)
    elif state is None:
        click.echo("selling for real (training mode is off)")
    else:
        click.echo(f"{training.NOTICE} (since {clock(state.started_ms)}, by {state.by})")
