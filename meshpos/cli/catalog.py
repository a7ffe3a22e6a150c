"""`meshpos catalog ...`: import the product catalogue, list it, change a price."""

from __future__ import annotations

from pathlib import Path

import click

from meshpos.cli.common import (
    acting_user,
    approve_option,
    emit,
    json_option,
    op_ref,
    open_terminal,
    progress_bar,
)
from meshpos.core.errors import InputError
from meshpos.domain.catalog import SAMPLE_CATALOG, parse_csv
from meshpos.domain.money import parse_rupees


@click.group()
def catalog() -> None:
    """The product catalogue: import, list, change prices."""


@catalog.command("import")
@click.argument("file", required=False, type=click.Path(dir_okay=False))
@click.option("--sample", is_flag=True, help="Import the sample clothing-store catalogue.")
@json_option
@approve_option
@click.pass_context
def catalog_import(ctx: click.Context, file: str | None, sample: bool, as_json: bool) -> None:
    """Import products from a CSV: sku,name,barcode,category,size,colour,price,gst_rate,hsn,stock.

    sku, name, price (rupees, tax-inclusive) and gst_rate are required; hsn is the HSN code (4, 6
    or 8 digits) printed on tax invoices, which also chooses price-banded GST rates
    (docs/gst.md)."""
    if bool(file) == sample:
        raise InputError("give either a CSV FILE or --sample")
    path = SAMPLE_CATALOG if sample else Path(file or "")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read {path}: {exc}") from None
    rows = parse_csv(text, path.name)
    t = open_terminal(ctx)
    with progress_bar(len(rows), "importing", hidden=as_json) as tick:
        products, receipts = t.import_catalog(rows, acting_user(ctx), progress=tick)
    emit({"products": products, "stock_receipts": receipts}, as_json, "catalogue imported")


@catalog.command("list")
@click.option("--search", help="Filter by SKU, name, category or exact barcode.")
@click.option("--limit", default=1000, show_default=True, type=click.IntRange(1, 100000))
@json_option
@click.pass_context
def catalog_list(ctx: click.Context, search: str | None, limit: int, as_json: bool) -> None:
    """List products with price, GST rate (the catalogue's; a price band may replace it at
    the till, see docs/gst.md), HSN code and stock."""
    rows = open_terminal(ctx).products(search, limit)
    emit(
        rows,
        as_json,
        "products",
        [
            "sku",
            "name",
            "size",
            "colour",
            "category",
            "barcode",
            "price",
            "gst_rate",
            "hsn",
            "stock",
        ],
    )


@catalog.command("set-price")
@click.argument("sku")
@click.argument("price")
@approve_option
@click.pass_context
def catalog_set_price(ctx: click.Context, sku: str, price: str) -> None:
    """Change a product's price (rupees, tax-inclusive)."""
    op = open_terminal(ctx).set_price(sku, parse_rupees(price, "price"), acting_user(ctx))
    click.echo(f"price of {sku} set to {price} (op {op_ref(op)})")
