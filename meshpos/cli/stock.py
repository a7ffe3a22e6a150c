"""`meshpos stock ...`: stock levels (the default), receiving and adjusting."""

from __future__ import annotations

from collections.abc import Callable

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


@click.group(cls=DefaultGroup, default_cmd="show")
def stock() -> None:
    """Stock levels; receive and adjust."""


@stock.command("show")
@click.argument("sku", required=False)
@click.option(
    "--by-counter",
    is_flag=True,
    help="Add a column per counter: what its ops moved (receipts +, sales -); they add up to qty.",
)
@json_option
@click.pass_context
def stock_show(ctx: click.Context, sku: str | None, by_counter: bool, as_json: bool) -> None:
    """Stock of one SKU, or of every SKU."""
    t = open_terminal(ctx)
    if not by_counter:
        emit(t.stock(sku), as_json, "stock")
        return
    rows = t.stock_by_counter(sku)
    if as_json:
        emit(rows, as_json, "stock")
        return
    counters = sorted({name for row in rows for name in row["by_counter"]})
    flat = [
        {**{k: v for k, v in row.items() if k not in ("by_counter", "qty")},
         **{name: row["by_counter"].get(name, "") for name in counters}, "qty": row["qty"]}
        for row in rows
    ]  # fmt: skip
    emit(flat, as_json, "stock by counter")


def _stock_cmd(kind: str, help_text: str) -> Callable[..., None]:
    @click.argument("sku")
    @click.argument("qty", type=int)
    @click.option("--reason", required=True, help="Why: delivery note, count, damage...")
    @approve_option
    @click.pass_context
    def command(ctx: click.Context, sku: str, qty: int, reason: str) -> None:
        t = open_terminal(ctx)
        op = t.move_stock(kind, sku, qty, reason, acting_user(ctx))
        sku = op.payload["sku"]
        level = t.stock(sku)[0]["qty"]
        click.echo(f"{kind} {qty:+d} {sku}: stock now {level} (op {op_ref(op)})")

    command.__doc__ = help_text
    return command


# A QTY like -3 is a number, not an option: let it through to the quantity checks.
_QTY_ARGS = {"ignore_unknown_options": True}
stock.command("receive", context_settings=_QTY_ARGS)(
    _stock_cmd("receive", "Receive QTY units of SKU into stock.")
)
stock.command("adjust", context_settings=_QTY_ARGS)(
    _stock_cmd("adjust", "Adjust stock of SKU by QTY (negative for shrinkage).")
)
