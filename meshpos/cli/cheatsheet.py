"""`meshpos cheatsheet`: the one-page offline guide for the counter, from this store's config."""

from __future__ import annotations

import click

from meshpos.cli.common import open_terminal, write_file
from meshpos.core.clock import wall_ms
from meshpos.service import cheatsheet


@click.command("cheatsheet")
@click.option(
    "--out", "out", required=True, metavar="FILE", help="Where to write it (.html or .pdf)."
)
@click.option(
    "--format", "fmt", type=click.Choice(cheatsheet.FORMATS), help="Default: from FILE's name."
)
@click.pass_context
def cheatsheet_cmd(ctx: click.Context, out: str, fmt: str | None) -> None:
    """Render a one-page offline guide: payments that work offline and their limits, how to tell
    the till is offline, how to sync, power cuts, and who to call ([store] contacts)."""
    kind = cheatsheet.format_of(out, fmt)
    sheet = cheatsheet.gather(open_terminal(ctx), wall_ms())
    write_file(out, cheatsheet.render(sheet, kind))
    click.echo(f"cheat sheet for {sheet.store_name} written to {out} ({kind})")
    if not sheet.contacts:
        click.echo("! no contacts on it: add [store] contacts to meshpos.toml (see docs/config.md)")
