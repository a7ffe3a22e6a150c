"""`meshpos customer ...` and `meshpos loyalty show`: customers and their points."""

from __future__ import annotations

import click

from meshpos.cli.common import acting_user, emit, json_option, op_ref, open_terminal
from meshpos.service.history import customer_history, summary_lines


@click.group()
def customer() -> None:
    """Customers: add, show, edit."""


@customer.command("add")
@click.option("--name", required=True)
@click.option("--phone")
@click.option("--email")
@json_option
@click.pass_context
def customer_add(
    ctx: click.Context, name: str, phone: str | None, email: str | None, as_json: bool
) -> None:
    """Add a customer; prints the new customer id."""
    cid = open_terminal(ctx).add_customer(
        {"name": name, "phone": phone or "", "email": email or ""}, acting_user(ctx)
    )
    emit({"customer_id": cid}, as_json, "customer added")


@customer.command("show")
@click.argument("customer_id")
@click.option("-n", "count", default=10, show_default=True, type=click.IntRange(1, 1000),
              help="How many recent purchases and returns to list.")  # fmt: skip
@json_option
@click.pass_context
def customer_show(ctx: click.Context, customer_id: str, count: int, as_json: bool) -> None:
    """Show a customer (by id or phone) with their points and history: recent purchases and
    returns, sizes bought, gift cards and credit notes (from this till's own data, offline)."""
    t = open_terminal(ctx)
    found = customer_history(t, customer_id, count)
    if as_json:
        emit(found, True)
        return
    for line in summary_lines(t, found):
        click.echo(line)


@customer.command("edit")
@click.argument("customer_id")
@click.option("--name")
@click.option("--phone")
@click.option("--email")
@click.pass_context
def customer_edit(
    ctx: click.Context, customer_id: str, name: str | None, phone: str | None, email: str | None
) -> None:
    """Change a customer's name, phone or email (each field last-writer-wins)."""
    op = open_terminal(ctx).edit_customer(
        customer_id, {"name": name, "phone": phone, "email": email}, acting_user(ctx)
    )
    click.echo(f"customer {customer_id} updated (op {op_ref(op)})")


@click.group()
def loyalty() -> None:
    """Loyalty points."""


@loyalty.command("show")
@click.argument("customer_id")
@json_option
@click.pass_context
def loyalty_show(ctx: click.Context, customer_id: str, as_json: bool) -> None:
    """A customer's points balance."""
    c = open_terminal(ctx).customer(customer_id)
    emit(
        {"customer_id": c["customer_id"], "name": c["name"], "points": c["points"]},
        as_json,
        "loyalty",
    )
