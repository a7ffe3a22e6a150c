"""`meshpos print ...`, and the receipts of the commands that ring sales.

A command that rings a sale opens its terminal with `selling_terminal`, so the receipt is queued in
the transaction that records the op (meshpos/service/printing.py); once the command is done the
root command calls `print_new_receipts`. A printer that is off only leaves the job waiting, and
the sale has already been recorded and reported by then.
"""

from __future__ import annotations

import click

from meshpos.cli.common import acting_user, emit, json_option, open_terminal
from meshpos.core.errors import ConfigError
from meshpos.domain.money import rupees
from meshpos.ledger.print_queue import OPEN_STATES, DrainResult
from meshpos.service import training
from meshpos.service.daemon_link import daemon_status
from meshpos.service.printing import Printing, jobs_table, queue_receipt, take_enqueued
from meshpos.service.terminal import Terminal


def selling_terminal(ctx: click.Context) -> Terminal:
    """The terminal of a command that rings sales: each one queues its receipt. While this till
    is in training mode, it is the practice ledger's (meshpos/service/training.py)."""
    obj = ctx.find_root().obj
    practice = training.selling_dir(obj["dir"])
    if practice != obj["dir"] and obj.get("terminal") is None:
        click.echo(training.NOTICE, err=True)
        obj["terminal"] = Terminal.open(practice, on_record=[queue_receipt])
        ctx.call_on_close(obj["terminal"].close)
    return open_terminal(ctx, on_record=[queue_receipt])


def drain_note(result: DrainResult, what: str = "job") -> str:
    parts = []
    if result.printed:
        parts.append(f"printed {len(result.printed)} {what}(s)")
    if result.broken:
        parts.append(f"{len(result.broken)} job(s) could not be printed and were set aside")
    if result.waiting:
        why = result.error or result.head_error or "waiting to retry"
        parts.append(
            f"{result.waiting} waiting: {why}; they print when the printer is back "
            "(`meshpos print retry` to try now)"
        )
    return "; ".join(parts) or "nothing to print"


def print_new_receipts(ctx: click.Context) -> None:
    """Print the receipts this command queued, if any; a printer problem is a warning, never a
    failure of the command."""
    t = (ctx.obj or {}).get("terminal")
    if not (isinstance(t, Terminal) and take_enqueued(t)):
        return
    try:
        result = Printing(t).drain()
    except ConfigError as exc:
        click.echo(f"warning: receipt queued, not printed: {exc}", err=True)
        return
    if result.waiting or result.broken:
        click.echo(f"warning: receipt queued: {drain_note(result, 'receipt')}", err=True)


# -- meshpos print ---------------------------------------------------------------------------------


@click.group("print")
def print_group() -> None:
    """The print queue: receipts wait here while the printer is off, then print once, in order."""


def _names(t: Terminal) -> dict[str, str]:
    return {n.node_id: n.name for n in t.ledger.nodes()}


QUEUE_COLUMNS = ("id", "kind", "sale_id", "state", "attempts", "next_try", "via", "last_error")


@print_group.command("queue")
@click.option("--all", "show_all", is_flag=True, help="Include printed and forwarded jobs.")
@click.option("--via", "via", metavar="PEER", help="Send the waiting jobs to PEER's printer.")
@json_option
@click.pass_context
def print_queue(ctx: click.Context, show_all: bool, via: str | None, as_json: bool) -> None:
    """Show the jobs not yet printed; --via PEER hands them to a peer terminal's printer."""
    t = open_terminal(ctx)
    printing = Printing(t)
    if via:
        daemon = daemon_status(t.cfg.dir)
        seen = {p["node_id"]: p["name"] for p in daemon.get("peers", []) if p.get("name")}
        name, jobs = printing.forward(via, seen)
        rows = list(jobs_table(jobs, {**seen, **_names(t)}))
        if as_json:
            emit(rows, True)
        else:
            click.echo(
                f"{len(jobs)} job(s) handed to {name}'s printer; they count as printed here once "
                f"{name} confirms it has queued them"
            )
        if jobs and not daemon:
            click.echo(
                "warning: no daemon is running here; `meshpos node run` sends them", err=True
            )
        return
    rows = list(jobs_table(printing.queue.jobs(None if show_all else OPEN_STATES), _names(t)))
    now = printing.now_ms()
    for row in rows:
        wait = row["next_try_ms"] - now
        row["next_try"] = (
            f"in {wait / 1000:.0f} s" if row["state"] == "waiting" and wait > 0 else ""
        )
    if as_json:
        emit(rows, True)
    else:
        emit(rows, False, "print jobs", QUEUE_COLUMNS)


@print_group.command("retry")
@click.pass_context
def print_retry(ctx: click.Context) -> None:
    """Try the printer now instead of waiting out the backoff."""
    click.echo(drain_note(Printing(open_terminal(ctx)).retry()))


@print_group.command("reprint")
@click.argument("sale_id")
@click.pass_context
def print_reprint(ctx: click.Context, sale_id: str) -> None:
    """Print a duplicate copy of a receipt (SALE_ID or the receipt number on it)."""
    printing = Printing(open_terminal(ctx))
    job = printing.reprint(sale_id)
    click.echo(f"reprint queued as job {job}; {drain_note(printing.drain())}")


@print_group.command("report")
@click.argument("which", type=click.Choice(["x", "z"]))
@click.pass_context
def print_report(ctx: click.Context, which: str) -> None:
    """Print an X report (takings so far), or Z: close the day and print it."""
    printing = Printing(open_terminal(ctx))
    totals, job = printing.report(which, acting_user(ctx))
    label = f"Z report #{totals['z_number']}" if which == "z" else "X report"
    click.echo(
        f"{label}: {totals['sales']} sales, net {rupees(int(totals['net'] or 0))}; "
        f"queued as job {job}; {drain_note(printing.drain())}"
    )
