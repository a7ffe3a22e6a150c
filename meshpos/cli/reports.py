"""`meshpos report ...`: X and Z reports of this terminal, store-wide sales and GST from the local
views. Days and hours are the store's ([store] timezone)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, TypeVar

import click

from meshpos.cli.common import acting_user, emit, json_option, open_terminal
from meshpos.service.reports import close_day, gst_report, sales_report, shift_totals

F = TypeVar("F", bound=Callable[..., Any])


def date_range(fn: F) -> F:
    """--from and --to: store days (YYYY-MM-DD in [store] timezone), both included."""
    fn = click.option("--to", "date_to", help="Last store day, YYYY-MM-DD (included).")(fn)
    return click.option(
        "--from", "date_from", help="First store day, YYYY-MM-DD (in [store] timezone)."
    )(fn)


@click.group()
def report() -> None:
    """X, Z, sales and GST reports from the local database."""


@report.command("x")
@json_option
@click.pass_context
def report_x(ctx: click.Context, as_json: bool) -> None:
    """This terminal's takings since the last Z report (changes nothing)."""
    _print_shift(shift_totals(open_terminal(ctx)), as_json, "X report")


@report.command("z")
@json_option
@click.pass_context
def report_z(ctx: click.Context, as_json: bool) -> None:
    """Close the day: print the takings and start a new period."""
    _print_shift(close_day(open_terminal(ctx), acting_user(ctx)), as_json, "Z report")


def _print_shift(totals: dict[str, Any], as_json: bool, title: str) -> None:
    if as_json:
        click.echo(json.dumps(totals, indent=2))
        return
    head = {
        k: v for k, v in totals.items() if k not in ("tenders", "gst", "days", "giftcard_tenders")
    }
    emit(head, False, f"{title} of {totals['day']}")
    emit(totals["tenders"], False, "tenders")
    if totals["giftcard_tenders"]:
        emit(totals["giftcard_tenders"], False, "gift cards sold, paid by")
    emit(
        totals["gst"],
        False,
        "GST by rate",
        ["gst_rate", "taxable", "cgst", "sgst", "igst", "tax", "taxable_incl"],
    )
    if len(totals["days"]) > 1:
        emit(totals["days"], False, "by store day")


@report.command("sales")
@click.option(
    "--by",
    default="sku",
    show_default=True,
    type=click.Choice(["sku", "category", "hour", "day", "payment", "cashier", "terminal"]),
)
@date_range
@json_option
@click.pass_context
def report_sales(
    ctx: click.Context, by: str, date_from: str | None, date_to: str | None, as_json: bool
) -> None:
    """Store-wide sales (every terminal's, as replicated here) grouped --by."""
    emit(sales_report(open_terminal(ctx), by, date_from, date_to), as_json, f"sales by {by}")


@report.command("gst")
@click.option(
    "--by",
    default="rate",
    show_default=True,
    type=click.Choice(["rate", "hsn", "place", "buyer"]),
    help="rate; hsn (the HSN summary of a GST return); place (of supply); buyer (B2B, by GSTIN).",
)
@date_range
@json_option
@click.pass_context
def report_gst(
    ctx: click.Context, by: str, date_from: str | None, date_to: str | None, as_json: bool
) -> None:
    """Taxable value, CGST, SGST and IGST of the store's invoices less its credit notes."""
    emit(gst_report(open_terminal(ctx), by, date_from, date_to), as_json, f"GST by {by}")
