"""`meshpos paper ...`: enter sales written on paper slips while every counter was down."""

from __future__ import annotations

import json

import click

from meshpos.cli.cards import final_payment, final_payment_options
from meshpos.cli.common import acting_user, emit, json_option, op_ref, open_terminal
from meshpos.cli.printing import selling_terminal
from meshpos.domain.money import rupees
from meshpos.domain.pricing import parse_item
from meshpos.service import paper


@click.group("paper")
def paper_group() -> None:
    """Paper sales: what was written on slips while every counter was down."""


@paper_group.command("add")
@click.argument("items", nargs=-1, required=True)
@click.option("--slip", required=True, help="The number written on the paper slip.")
@click.option(
    "--at",
    "written",
    required=True,
    metavar="TIME",
    help="The time written on the slip, store time: HH:MM (today) or 'YYYY-MM-DD HH:MM'.",
)
@final_payment_options(
    "How it was paid: cash|card-machine|upi[:AMOUNT], as for `sell` (default cash)."
)
@click.option("--customer", help="Customer id or phone, when the slip names one.")
@click.option("--discount", help="A discount written on the slip: 10% or 50 (rupees).")
@click.option(
    "--total", help="The total written on the slip, in rupees: refused when the items differ."
)
@json_option
@click.pass_context
def paper_add(
    ctx: click.Context,
    items: tuple[str, ...],
    slip: str,
    written: str,
    pays: tuple[str, ...],
    card_approval: str | None,
    card_last4: str | None,
    upi_ref: str | None,
    customer: str | None,
    discount: str | None,
    total: str | None,
    as_json: bool,
) -> None:
    """Enter a sale written on paper slip --slip at --at: ITEMS as for `sell` (SKU[xQTY]). It
    gets its own number (the till's receipt numbers stay gapless), counts in reports at the time
    on the slip, and shows as a paper entry in the audit trail (`meshpos ops tail`)."""
    tenders = final_payment(pays, card_approval, card_last4, upi_ref)
    result = paper.add(
        selling_terminal(ctx),
        [parse_item(i) for i in items],
        slip=slip,
        written=written,
        tenders=tenders,
        customer=customer,
        discount=discount,
        total=total,
        user=acting_user(ctx),
    )
    p = result.payload
    if as_json:
        click.echo(json.dumps({"sale_id": result.sale_id, "op": op_ref(result.op), **p}, indent=2))
        return
    at = open_terminal(ctx).store_time().stamp(p["ts_ms"])
    click.echo(
        f"paper sale {result.sale_id} (slip {p['paper']['slip']}, written {at}): total "
        f"{rupees(p['total'])}, {len(p['lines'])} line(s)"
    )


@paper_group.command("list")
@click.option("-n", "count", default=20, show_default=True, type=click.IntRange(1, 10000))
@json_option
@click.pass_context
def paper_list(ctx: click.Context, count: int, as_json: bool) -> None:
    """Paper entries, newest written first."""
    t = open_terminal(ctx)
    rows = paper.recent(t, count)
    if as_json:
        emit(rows, True)
        return
    zone = t.store_time()
    emit(
        [
            {
                "sale": r["sale_id"],
                "slip": r["slip"],
                "written": zone.stamp(r["ts_ms"]),
                "total": rupees(r["total"]),
                "entered by": r["user"],
            }
            for r in rows
        ],
        False,
        "paper sales",
    )
