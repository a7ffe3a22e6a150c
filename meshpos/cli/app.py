"""The `meshpos` command: the root group, every command group added to it, and `main`.

A thin layer: commands parse arguments, call the services, print. Every data command prints a table
for people and `--json` for scripts. Any `MeshposError` becomes a one-line `error: ...` on stderr and
exit code 1; nothing is written when a command fails.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import Any

import click

from meshpos import __version__
from meshpos.cli import (
    audit,
    cards,
    catalog,
    cheatsheet,
    conflicts,
    customers,
    devices,
    drill,
    giftcards,
    hq,
    logs,
    mesh,
    oplog,
    paper,
    power,
    printing,
    reports,
    sales,
    sim,
    staff,
    stock,
    storage,
    sync,
    till,
    training,
    transfers,
    upi,
    web,
)
from meshpos.core.errors import MeshposError
from meshpos.ledger.errors import DATABASE_ERRORS
from meshpos.service.config import OWNER_ONLY, check_name, resolve_dir


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False),
    envvar="MESHPOS_DIR",
    help="Node directory (default $MESHPOS_DIR or ./meshpos-node).",
)
@click.option("--user", envvar="MESHPOS_USER", help="Acting user recorded on every op.")
@click.version_option(__version__, prog_name="meshpos")
@click.pass_context
def cli(ctx: click.Context, directory: str | None, user: str | None) -> None:
    """meshpos: a point of sale whose terminals keep selling when the internet is down."""
    ctx.ensure_object(dict)
    ctx.obj["dir"] = resolve_dir(directory)
    ctx.obj["user"] = check_name(user, "user") if user else None


@cli.result_callback()
def _after_command(result: Any, **_: Any) -> Any:
    printing.print_new_receipts(click.get_current_context())
    return result


for _command in (
    mesh.init,
    catalog.catalog,
    sales.sell,
    sales.return_cmd,
    sales.exchange,
    stock.stock,
    customers.customer,
    customers.loyalty,
    giftcards.giftcard,
    paper.paper_group,
    reports.report,
    conflicts.conflicts,
    sync.sync,
    oplog.ops,
    oplog.verify,
    oplog.rebuild,
    printing.print_group,
    devices.devices,
    till.till,
    hq.hq,
    mesh.store,
    mesh.enroll,
    mesh.node,
    mesh.peers,
    mesh.status,
    logs.logs,
    storage.encrypt,
    storage.backup,
    storage.restore,
    audit.audit,
    sim.sim,
    staff.users,
    staff.login,
    staff.logout,
    staff.whoami,
    web.web,
    cards.cards_group,
    power.power,
    transfers.transfer,
    training.training_group,
    cheatsheet.cheatsheet_cmd,
    drill.drill,
):
    cli.add_command(_command)
hq.hq.add_command(upi.hq_upi)


def main(argv: Sequence[str] | None = None) -> None:
    os.umask(OWNER_ONLY)  # whatever this process writes (database, logs, backups) is its owner's
    try:
        cli.main(
            args=list(argv) if argv is not None else None,
            prog_name="meshpos",
            standalone_mode=False,
        )
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except MeshposError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    except DATABASE_ERRORS as exc:
        click.echo(f"error: the database could not be used: {exc}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)
