"""`meshpos devices ...`: this terminal's receipt printer, cash drawer and scanner, and a test
print."""

from __future__ import annotations

import click

from meshpos.cli.common import emit, json_option, open_terminal
from meshpos.service.printing import Printing


@click.group()
def devices() -> None:
    """Receipt printer, cash drawer and barcode scanner of this terminal."""


@devices.command("list")
@click.option("--no-probe", is_flag=True, help="Do not try to open the printer and scanner.")
@json_option
@click.pass_context
def devices_list(ctx: click.Context, no_probe: bool, as_json: bool) -> None:
    """What is configured in meshpos.toml and whether it answers."""
    status = Printing(open_terminal(ctx)).status(probe=not no_probe)
    if as_json:
        emit(status, True)
        return
    p, s = status["printer"], status["scanner"]
    rows = [
        {
            "device": "printer",
            "what": p.get("describe", p.get("kind", "")),
            "state": "ok" if p["ok"] else "unavailable",
            "detail": p["detail"]
            + ("" if p.get("configured", True) else " (the default: no printer table)"),
        },
        {
            "device": "scanner",
            "what": s.get("describe", ""),
            "state": "ok" if s["ok"] else "unavailable",
            "detail": s["detail"],
        },
    ]
    emit(rows, False, f"devices of {status['terminal']}")
    queue_counts = ", ".join(f"{n} {state}" for state, n in sorted(status["queue"].items()))
    click.echo(f"print queue: {queue_counts or 'empty'}")


@devices.command("test-print")
@click.pass_context
def devices_test_print(ctx: click.Context) -> None:
    """Print a test page: settings, a ruler for the paper width, a barcode and a QR code."""
    setup = Printing(open_terminal(ctx)).test_print()
    click.echo(f"test page sent to {setup.config.describe()}")
