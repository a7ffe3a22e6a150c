"""`meshpos power`: the till's battery and UPS state, as the status line and the banner show it."""

from __future__ import annotations

import click

from meshpos.cli.common import emit, json_option, node_dir
from meshpos.service.config import load_config
from meshpos.service.power import power_of


@click.command("power")
@json_option
@click.pass_context
def power(ctx: click.Context, as_json: bool) -> None:
    """Battery and UPS state: mains or battery, charge and time left, low-battery warning.

    Reads Linux's /sys/class/power_supply and, with `[power] ups` set, NUT's `upsc`."""
    state = power_of(load_config(node_dir(ctx)))
    if as_json:
        emit(state.as_dict(), True)
        return
    click.echo(state.text)
    for s in state.supplies:
        parts = [f"{s.kind} {s.name} ({s.source})"]
        if s.online is not None:
            parts.append("mains on" if s.online else "mains off")
        if s.percent is not None:
            parts.append(f"{s.percent}%")
        if s.charging is not None:
            parts.append("charging" if s.charging else "discharging")
        if s.runtime_s is not None:
            parts.append(f"{s.runtime_s // 60} min left")
        if s.low_flag:
            parts.append("reports low")
        click.echo("  " + ", ".join(parts))
    for err in state.errors:
        click.echo(f"  ! {err}")
