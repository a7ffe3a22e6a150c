"""The `meshpos` command. A thin layer: it parses arguments, calls the terminal service, prints.

Every data command prints a table for people and `--json` for scripts. Any `MeshposError` becomes a
one-line `error: ...` on stderr and exit code 1; nothing is written when a command fails.
"""

from __future__ import annotations

import json
import sqlite3
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table
from sqlcipher3 import dbapi2 as sqlcipher_dbapi2

from meshpos import __version__
from meshpos.core.clock import wall_ms
from meshpos.core.errors import InputError, MeshposError
from meshpos.domain.catalog import SAMPLE_CATALOG, parse_csv
from meshpos.domain.money import parse_rupees, rupees
from meshpos.domain.pricing import parse_item, parse_tender
from meshpos.service.config import check_name, init_node, resolve_dir
from meshpos.service.printing import queue_receipt
from meshpos.service.staff import session_user
from meshpos.service.terminal import Terminal

MONEY_KEYS = {
    "price",
    "total",
    "net",
    "tax",
    "gross",
    "discounts",
    "discount",
    "subtotal",
    "amount",
    "unit_price",
    "taxable_incl",
}

console = Console(highlight=False, width=None if sys.stdout.isatty() else 160)


class DefaultGroup(click.Group):
    """A group that runs `default_cmd` when the first argument is not one of its commands,
    so `meshpos stock SKU` and `meshpos conflicts` work next to `meshpos stock receive ...`."""

    def __init__(self, *args: Any, default_cmd: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.default_cmd = default_cmd

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if not args or (args[0] not in self.commands and args[0] not in ("--help", "-h")):
            args = [self.default_cmd, *args]
        return super().parse_args(ctx, args)


# Called once with each command's terminal as it is opened (cli_staff: session, --approve PIN).
OPEN_HOOKS: list[Callable[[click.Context, Terminal], None]] = []


def _open(ctx: click.Context) -> Terminal:
    obj = ctx.find_root().obj
    if obj.get("terminal") is None:
        obj["terminal"] = Terminal.open(obj["dir"], on_record=[queue_receipt])
        ctx.call_on_close(obj["terminal"].close)
        for hook in OPEN_HOOKS:
            hook(ctx, obj["terminal"])
    t: Terminal = obj["terminal"]
    return t


def _user(ctx: click.Context) -> str | None:
    """--user, else whoever signed in here (`meshpos login`), else the --approve user, else the
    node's default user."""
    obj = ctx.find_root().obj
    user: str | None = obj.get("user") or session_user(obj["dir"], wall_ms()) or obj.get("approve")
    return user


def _fmt(key: str, value: Any) -> str:
    if value is None:
        return ""
    if key == "gst_rate" and isinstance(value, int):
        return f"{value / 100:g}%"
    if key in MONEY_KEYS and isinstance(value, int):
        return rupees(value)
    if isinstance(value, list | dict):
        return json.dumps(value)
    return str(value)


def emit(
    rows: Sequence[dict[str, Any]] | dict[str, Any],
    as_json: bool,
    title: str = "",
    columns: Iterable[str] | None = None,
) -> None:
    if as_json:
        click.echo(json.dumps(rows, indent=2, default=str))
        return
    if isinstance(rows, dict):
        table = Table(title=title or None, show_header=False)
        table.add_column("field", style="bold")
        table.add_column("value")
        for key, value in rows.items():
            table.add_row(key, _fmt(key, value))
        console.print(table)
        return
    if not rows:
        console.print(f"(no {title or 'rows'})")
        return
    cols = list(columns or rows[0].keys())
    table = Table(title=title or None)
    for col in cols:
        table.add_column(col, justify="right" if isinstance(rows[0].get(col), int) else "left")
    for row in rows:
        table.add_row(*(_fmt(c, row.get(c)) for c in cols))
    console.print(table)


json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")


def _set_approver(ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
    if value:
        ctx.find_root().obj["approve"] = check_name(value, "approver")


approve_option = click.option(
    "--approve",
    metavar="USER",
    expose_value=False,
    callback=_set_approver,
    help="A supervisor or manager approves with their PIN (asked, or $MESHPOS_APPROVER_PIN).",
)


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


@cli.command()
@click.option("--store", required=True, help="Store id shared by every terminal of the store.")
@click.option("--name", required=True, help="This terminal's name, unique in the store (e.g. T1).")
@click.option(
    "--default-user",
    default="cashier",
    show_default=True,
    help="User recorded on ops when --user is not given.",
)
@json_option
@click.pass_context
def init(ctx: click.Context, store: str, name: str, default_user: str, as_json: bool) -> None:
    """Create a node: key pair (0600), config file and database."""
    cfg = init_node(ctx.obj["dir"], store, name, default_user)
    t = _open(ctx)
    emit(
        {"dir": str(cfg.dir), "store": cfg.store, "name": cfg.name, "node_id": t.node_id},
        as_json,
        "node created",
    )


# -- catalogue --------------------------------------------------------------------------------


@cli.group()
def catalog() -> None:
    """The product catalogue: import, list, change prices."""


@catalog.command("import")
@click.argument("file", required=False, type=click.Path(dir_okay=False))
@click.option("--sample", is_flag=True, help="Import the sample clothing-store catalogue.")
@json_option
@approve_option
@click.pass_context
def catalog_import(ctx: click.Context, file: str | None, sample: bool, as_json: bool) -> None:
    """Import products from a CSV: sku,name,barcode,category,size,colour,price,gst_rate,stock."""
    if bool(file) == sample:
        raise InputError("give either a CSV FILE or --sample")
    path = SAMPLE_CATALOG if sample else Path(file or "")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read {path}: {exc}") from None
    rows = parse_csv(text, path.name)
    t = _open(ctx)
    with click.progressbar(
        length=len(rows),
        label="importing",
        file=sys.stderr,
        hidden=as_json or not sys.stderr.isatty(),
    ) as bar:
        last = [0]

        def tick(n: int) -> None:
            bar.update(n - last[0])
            last[0] = n

        products, receipts = t.import_catalog(rows, _user(ctx), progress=tick)
    emit({"products": products, "stock_receipts": receipts}, as_json, "catalogue imported")


@catalog.command("list")
@click.option("--search", help="Filter by SKU, name, category or exact barcode.")
@click.option("--limit", default=1000, show_default=True, type=click.IntRange(1, 100000))
@json_option
@click.pass_context
def catalog_list(ctx: click.Context, search: str | None, limit: int, as_json: bool) -> None:
    """List products with price, GST rate and stock."""
    rows = _open(ctx).products(search, limit)
    emit(
        rows,
        as_json,
        "products",
        ["sku", "name", "size", "colour", "category", "barcode", "price", "gst_rate", "stock"],
    )


@catalog.command("set-price")
@click.argument("sku")
@click.argument("price")
@approve_option
@click.pass_context
def catalog_set_price(ctx: click.Context, sku: str, price: str) -> None:
    """Change a product's price (rupees, tax-inclusive)."""
    op = _open(ctx).set_price(sku, parse_rupees(price, "price"), _user(ctx))
    click.echo(f"price of {sku} set to {price} (op {op.origin}:{op.seq})")


# -- selling ----------------------------------------------------------------------------------


def _discounts(specs: Sequence[str]) -> tuple[str | None, dict[str, str]]:
    sale: str | None = None
    lines: dict[str, str] = {}
    for spec in specs:
        if ":" in spec:
            sku, _, amount = spec.partition(":")
            lines[sku] = amount
        elif sale is not None:
            raise InputError("give at most one whole-sale --discount")
        else:
            sale = spec
    return sale, lines


LINE_COLUMNS = ("sku", "name", "qty", "unit_price", "discount", "gst_rate", "tax", "total")


def _print_sale(result: Any, as_json: bool, title: str, copies: int | None = None) -> None:
    p = result.payload
    if as_json:
        extra = {} if copies is None else {"copies": copies}
        click.echo(
            json.dumps(
                {
                    "sale_id": result.sale_id,
                    "op": f"{result.op.origin}:{result.op.seq}",
                    **extra,
                    **p,
                },
                indent=2,
            )
        )
        return
    emit([{k: ln[k] for k in LINE_COLUMNS} for ln in p["lines"]], False, title)
    change = sum(t.get("change", 0) for t in p["tenders"])
    tenders = ", ".join(_tender_text(t) for t in p["tenders"])
    paid = "refunded" if p["total"] < 0 or result.op.kind == "return" else "paid"
    click.echo(
        f"{title} {result.sale_id}  total {rupees(p['total'])}  tax {rupees(p['tax'])}  "
        f"{paid} {tenders or '-'}" + (f"  change {rupees(change)}" if change else "")
    )
    if p.get("customer"):
        click.echo(
            f"customer {p['customer']}: points {p['points_earned']:+d} earned, "
            f"{-p['points_redeemed']:+d} by tender"
        )
    if copies is not None:
        click.echo(
            "safe: held by 2 copies (a peer confirmed it)"
            if copies >= 2
            else "held by 1 copy only: no peer confirmed it yet (it will sync when one can)"
        )


def _tender_text(t: dict[str, Any]) -> str:
    text = f"{t['method']} {rupees(abs(t['amount']))}"
    if t.get("card_last4"):
        text += f" ({t.get('card_brand') or 'card'} ending {t['card_last4']}"
        text += ", authorisation pending)" if t.get("pending") else ")"
    return text


def _card_input(number: str | None, expiry: str | None, from_stdin: bool) -> Any:
    """The card given to `sell`, read without ever echoing its number."""
    from meshpos.service.cards import read_card, read_card_line

    if from_stdin:
        if number:
            raise InputError("give the card by --card-number or --card-stdin, not both")
        return read_card_line(sys.stdin.readline(), expiry)
    if number:
        return read_card(number, expiry)
    if expiry:
        raise InputError("--card-expiry needs a card: --card-number or --card-stdin")
    return None


@cli.command()
@click.argument("items", nargs=-1, required=True)
@click.option("--customer", help="Customer id or phone, for loyalty points.")
@click.option(
    "--pay",
    "pays",
    multiple=True,
    help="cash|card|points[:AMOUNT]; repeat to split. Default: cash for the total, or card "
    "when a card is given.",
)
@click.option(
    "--card-number",
    metavar="NUMBER",
    help="Card for the card payment, sealed to HQ at once (or test[:BRAND], or a swiped track). "
    "Visible to other users of this machine while the command runs: prefer --card-stdin.",
)
@click.option("--card-expiry", metavar="MM/YY", help="The card's expiry.")
@click.option(
    "--card-stdin", is_flag=True, help="Read the card from stdin: NUMBER MM/YY, or a swiped track."
)
@click.option(
    "--discount",
    "discounts",
    multiple=True,
    help="10% or 50 (rupees) off the sale, or SKU:10% off one line. Repeatable.",
)
@json_option
@approve_option
@click.pass_context
def sell(
    ctx: click.Context,
    items: tuple[str, ...],
    customer: str | None,
    pays: tuple[str, ...],
    card_number: str | None,
    card_expiry: str | None,
    card_stdin: bool,
    discounts: tuple[str, ...],
    as_json: bool,
) -> None:
    """Ring a sale: ITEMS are SKU or barcode, optionally xQTY (TSH-BLK-Mx2).

    A card given with --card-number/--card-stdin is checked offline (check digit, expiry, HQ's
    blocklist), sealed to HQ's payment key and recorded as pending until HQ answers; only its
    last four digits and brand stay readable. Offline floor limits apply (`meshpos cards`)."""
    from meshpos.service.daemon_link import daemon_status, wait_for_copies
    from meshpos.service.escrow import sell_with_escrow

    sale_disc, line_disc = _discounts(discounts)
    card = _card_input(card_number, card_expiry, card_stdin)
    tenders = [parse_tender(p) for p in pays]
    if card is not None and not tenders:
        tenders = [parse_tender("card")]
    t = _open(ctx)
    daemon = daemon_status(t.cfg.dir)
    result = sell_with_escrow(
        t,
        peers_up=bool(daemon.get("peers_up")),
        items=[parse_item(i) for i in items],
        tenders=tenders,
        customer=customer,
        discount=sale_disc,
        line_discounts=line_disc,
        user=_user(ctx),
        card=card,
    )
    copies = None
    if daemon:
        wait = int(t.cfg.section("mesh").get("copy_wait_ms", 50))
        copies = wait_for_copies(t, result.op.seq, wait)
    _print_sale(result, as_json, "sale", copies)


@cli.command("return")
@click.argument("sale_id")
@click.argument("items", nargs=-1, required=True)
@click.option(
    "--refund", default="cash", show_default=True, type=click.Choice(["cash", "card", "points"])
)
@json_option
@approve_option
@click.pass_context
def return_cmd(
    ctx: click.Context, sale_id: str, items: tuple[str, ...], refund: str, as_json: bool
) -> None:
    """Return ITEMS (SKU[xQTY]) of an earlier sale; refunds what they were sold for."""
    result = _open(ctx).return_items(
        sale_id, [parse_item(i) for i in items], refund=refund, user=_user(ctx)
    )
    _print_sale(result, as_json, "return")


@cli.command()
@click.argument("sale_id")
@click.option("--back", multiple=True, required=True, help="SKU[xQTY] coming back. Repeatable.")
@click.option("--take", multiple=True, required=True, help="SKU[xQTY] going out. Repeatable.")
@click.option("--pay", "pays", multiple=True, help="Tender for any difference due.")
@json_option
@approve_option
@click.pass_context
def exchange(
    ctx: click.Context,
    sale_id: str,
    back: tuple[str, ...],
    take: tuple[str, ...],
    pays: tuple[str, ...],
    as_json: bool,
) -> None:
    """Exchange items of an earlier sale for others; the difference is paid or refunded."""
    result = _open(ctx).exchange(
        sale_id,
        [parse_item(i) for i in back],
        [parse_item(i) for i in take],
        tenders=[parse_tender(p) for p in pays],
        user=_user(ctx),
    )
    _print_sale(result, as_json, "exchange")


# -- stock ------------------------------------------------------------------------------------


@cli.group(cls=DefaultGroup, default_cmd="show")
def stock() -> None:
    """Stock levels; receive and adjust."""


@stock.command("show")
@click.argument("sku", required=False)
@json_option
@click.pass_context
def stock_show(ctx: click.Context, sku: str | None, as_json: bool) -> None:
    """Stock of one SKU, or of every SKU."""
    emit(_open(ctx).stock(sku), as_json, "stock")


def _stock_cmd(kind: str, help_text: str) -> Callable[..., None]:
    @click.argument("sku")
    @click.argument("qty", type=int)
    @click.option("--reason", required=True, help="Why: delivery note, count, damage...")
    @approve_option
    @click.pass_context
    def command(ctx: click.Context, sku: str, qty: int, reason: str) -> None:
        t = _open(ctx)
        op = t.move_stock(kind, sku, qty, reason, _user(ctx))
        sku = op.payload["sku"]
        level = t.stock(sku)[0]["qty"]
        click.echo(f"{kind} {qty:+d} {sku}: stock now {level} (op {op.origin}:{op.seq})")

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


# -- customers and loyalty --------------------------------------------------------------------


@cli.group()
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
    cid = _open(ctx).add_customer(
        {"name": name, "phone": phone or "", "email": email or ""}, _user(ctx)
    )
    emit({"customer_id": cid}, as_json, "customer added")


@customer.command("show")
@click.argument("customer_id")
@json_option
@click.pass_context
def customer_show(ctx: click.Context, customer_id: str, as_json: bool) -> None:
    """Show a customer (by id or phone) with their points."""
    emit(_open(ctx).customer(customer_id), as_json, "customer")


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
    op = _open(ctx).edit_customer(
        customer_id, {"name": name, "phone": phone, "email": email}, _user(ctx)
    )
    click.echo(f"customer {customer_id} updated (op {op.origin}:{op.seq})")


@cli.group()
def loyalty() -> None:
    """Loyalty points."""


@loyalty.command("show")
@click.argument("customer_id")
@json_option
@click.pass_context
def loyalty_show(ctx: click.Context, customer_id: str, as_json: bool) -> None:
    """A customer's points balance."""
    c = _open(ctx).customer(customer_id)
    emit(
        {"customer_id": c["customer_id"], "name": c["name"], "points": c["points"]},
        as_json,
        "loyalty",
    )


# -- reports ----------------------------------------------------------------------------------


@cli.group()
def report() -> None:
    """X, Z and sales reports from the local database."""


@report.command("x")
@json_option
@click.pass_context
def report_x(ctx: click.Context, as_json: bool) -> None:
    """This terminal's takings since the last Z report (changes nothing)."""
    from meshpos.service.reports import shift_totals

    _print_shift(shift_totals(_open(ctx)), as_json, "X report")


@report.command("z")
@json_option
@click.pass_context
def report_z(ctx: click.Context, as_json: bool) -> None:
    """Close the day: print the takings and start a new period."""
    from meshpos.service.reports import close_day

    _print_shift(close_day(_open(ctx), _user(ctx)), as_json, "Z report")


def _print_shift(totals: dict[str, Any], as_json: bool, title: str) -> None:
    if as_json:
        click.echo(json.dumps(totals, indent=2))
        return
    emit({k: v for k, v in totals.items() if k not in ("tenders", "gst")}, False, title)
    emit(totals["tenders"], False, "tenders")
    emit(totals["gst"], False, "GST by rate")


@report.command("sales")
@click.option(
    "--by",
    default="sku",
    show_default=True,
    type=click.Choice(["sku", "category", "hour", "day", "payment", "cashier", "terminal"]),
)
@click.option("--from", "date_from", help="First day, YYYY-MM-DD (UTC).")
@click.option("--to", "date_to", help="Last day, YYYY-MM-DD (UTC).")
@json_option
@click.pass_context
def report_sales(
    ctx: click.Context, by: str, date_from: str | None, date_to: str | None, as_json: bool
) -> None:
    """Store-wide sales (every terminal's, as replicated here) grouped --by."""
    from meshpos.service.reports import sales_report

    emit(sales_report(_open(ctx), by, date_from, date_to), as_json, f"sales by {by}")


# -- conflicts --------------------------------------------------------------------------------


@cli.group(cls=DefaultGroup, default_cmd="list")
def conflicts() -> None:
    """Invariant breaks found after a merge (oversells, over-returns...) for a manager."""


@conflicts.command("list")
@click.option("--all", "show_all", is_flag=True, help="Include resolved conflicts.")
@json_option
@click.pass_context
def conflicts_list(ctx: click.Context, show_all: bool, as_json: bool) -> None:
    """Open conflicts with the ops involved."""
    emit(
        _open(ctx).conflicts(None if show_all else "open"),
        as_json,
        "conflicts",
        ["conflict_id", "status", "detail", "ops", "resolved_by"],
    )


@conflicts.command("resolve")
@click.argument("conflict_id")
@click.option("--note", required=True, help="What was done (recorded in the audit trail).")
@click.option("--adjust", type=int, help="For an oversell: stock adjustment to record with it.")
@approve_option
@click.pass_context
def conflicts_resolve(ctx: click.Context, conflict_id: str, note: str, adjust: int | None) -> None:
    """Resolve a conflict (itself an op, so every terminal sees it)."""
    op = _open(ctx).resolve(conflict_id, note, adjust=adjust, user=_user(ctx))
    click.echo(f"{conflict_id} resolved (op {op.origin}:{op.seq})")


# -- sync by file -----------------------------------------------------------------------------


@cli.group()
def sync() -> None:
    """Version vectors and bundles: the file-based sync path."""


@sync.command("vv")
@json_option
@click.pass_context
def sync_vv(ctx: click.Context, as_json: bool) -> None:
    """This node's version vector: highest contiguous seq held per origin."""
    t = _open(ctx)
    vv = t.ledger.vv()
    if as_json:
        click.echo(json.dumps(vv, indent=2, sort_keys=True))
        return
    names = {n.node_id: n.name for n in t.ledger.nodes()}
    emit(
        [{"origin": o, "name": names.get(o, "?"), "seq": s} for o, s in sorted(vv.items())],
        False,
        "version vector",
    )


def _read_vv(path: str) -> dict[str, int]:
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read version vector {path}: {exc}") from None
    if not isinstance(data, dict) or not all(
        isinstance(k, str) and isinstance(v, int) and v >= 0 for k, v in data.items()
    ):
        raise InputError(f"{path} is not a version vector (JSON object of origin -> seq)")
    return data


@sync.command("export")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option(
    "--since",
    "since_file",
    type=click.Path(dir_okay=False),
    help="The other side's `meshpos sync vv --json`; export only what it lacks.",
)
@click.pass_context
def sync_export(ctx: click.Context, file: str, since_file: str | None) -> None:
    """Write a signed bundle of ops to FILE."""
    since = _read_vv(since_file) if since_file else None
    data, count = _open(ctx).export_bundle(since)
    tmp = Path(file + ".tmp")
    try:
        tmp.write_bytes(data)
        tmp.replace(file)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise InputError(f"cannot write {file}: {exc.strerror}") from None
    click.echo(f"exported {count} ops ({len(data)} bytes) to {file}")


@sync.command("import")
@click.argument("file", type=click.Path(dir_okay=False))
@click.pass_context
def sync_import(ctx: click.Context, file: str) -> None:
    """Merge a bundle; applies only what this node lacks (importing twice changes nothing)."""
    try:
        data = Path(file).read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read {file}: {exc.strerror}") from None
    r = _open(ctx).import_bundle(data)
    click.echo(
        f"imported {r.applied} new ops ({r.duplicates} already held, {r.pending} waiting "
        "for a gap to fill)"
    )


# -- audit, verify ----------------------------------------------------------------------------


@cli.group()
def ops() -> None:
    """The op log: the audit trail."""


@ops.command("tail")
@click.option("-n", "count", default=20, show_default=True, type=click.IntRange(1, 100000))
@json_option
@click.pass_context
def ops_tail(ctx: click.Context, count: int, as_json: bool) -> None:
    """The latest ops: who did what, when, where."""
    from meshpos.core.clock import wall_of

    t = _open(ctx)
    names = {n.node_id: n.name for n in t.ledger.nodes()}
    rows = []
    for op in t.ledger.tail(count):
        when = wall_of(op.hlc) / 1000
        import datetime as dt

        rows.append(
            {
                "op": f"{op.origin}:{op.seq}",
                "terminal": names.get(op.origin, op.origin),
                "time": dt.datetime.fromtimestamp(when, dt.UTC).strftime("%Y-%m-%d %H:%M:%S"),
                "user": op.user,
                "kind": op.kind,
                "summary": _summary(op.payload),
            }
        )
    emit(rows, as_json, "ops")


def _summary(p: Any) -> str:
    for key in ("sale_id", "sku", "customer_id", "conflict_id", "key", "user_id"):
        if key in p:
            extra = f" total {rupees(p['total'])}" if "total" in p else ""
            extra += f" {p['delta']:+d}" if "delta" in p else ""
            return f"{p[key]}{extra}"
    return ""


@cli.command()
@click.option("--full", is_flag=True, help="Check every op's signature, not one per chain.")
@click.pass_context
def verify(ctx: click.Context, full: bool) -> None:
    """Check signatures, hash chains, and every view against a fresh fold of the log."""
    t = _open(ctx)
    problems = t.ledger.verify(every_signature=full)
    from meshpos.service.card_scan import card_number_problems

    problems += card_number_problems(t.cfg)
    if problems:
        for p in problems:
            click.echo(f"problem: {p}", err=True)
        raise MeshposError(f"verify found {len(problems)} problem(s)")
    click.echo(f"ok: {t.ledger.op_count()} ops, chains and signatures valid, views match the log")


@cli.command()
@click.pass_context
def rebuild(ctx: click.Context) -> None:
    """Refold every view from the op log."""
    t = _open(ctx)
    t.ledger.rebuild()
    click.echo(f"rebuilt views from {t.ledger.op_count()} ops")


def main(argv: Sequence[str] | None = None) -> None:
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
    except (sqlite3.DatabaseError, sqlcipher_dbapi2.DatabaseError) as exc:
        click.echo(f"error: the database could not be used: {exc}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)


# The other command groups register themselves on `cli` when imported.
from meshpos.cli import devices as devices_cmds  # noqa: E402, I001
from meshpos.cli import hq as hq_cmds, mesh as mesh_cmds, ops as ops_cmds  # noqa: E402
from meshpos.cli import sim as sim_cmds, staff as staff_cmds, web as web_cmds  # noqa: E402

_REGISTERED = (devices_cmds, hq_cmds, mesh_cmds, ops_cmds, sim_cmds, staff_cmds, web_cmds)

# -- card payments: the store's offline floor limits, and HQ opening a store's card float ---------


@cli.group("cards", invoke_without_command=True)
@json_option
@click.pass_context
def cards_group(ctx: click.Context, as_json: bool) -> None:
    """Offline card payments: floor limits and the store's card float as this till sees it."""
    if ctx.invoked_subcommand is not None:
        return
    from meshpos.service import cards

    t = _open(ctx)
    st = cards.status(t)
    if as_json:
        emit(st, True)
        return
    total = st["store_total"]
    click.echo(f"per-sale limit     {rupees(st['per_sale_limit'])}")
    click.echo(f"store total (HQ)   {rupees(total) if total is not None else 'not set'}")
    click.echo(f"float minted       {rupees(st['minted'])}")
    click.echo(f"awaiting HQ        {rupees(st['awaiting_hq'])}")
    click.echo(f"held here          {rupees(st['held_here'])}")
    for name, held in st["held"].items():
        click.echo(f"  held by {name:<10} {rupees(held)}")
    if not st["hq_key"]:
        click.echo("no HQ payment key yet: cards cannot be sealed until the store syncs with HQ")


@cards_group.command("check")
@click.option("--card-number", metavar="NUMBER", help="The card (prefer --card-stdin).")
@click.option("--card-expiry", metavar="MM/YY")
@click.option(
    "--card-stdin", is_flag=True, help="Read NUMBER MM/YY (or a swiped track) from stdin."
)
@click.pass_context
def cards_check_cmd(
    ctx: click.Context, card_number: str | None, card_expiry: str | None, card_stdin: bool
) -> None:
    """Check a card offline (check digit, expiry, HQ's blocklist) without selling."""
    from meshpos.service import cards

    card = _card_input(card_number, card_expiry, card_stdin)
    if card is None:
        raise InputError("give a card: --card-number or --card-stdin")
    cards.offline_check(_open(ctx), card)
    click.echo(f"ok: the {card} may be taken offline")


_hq_group = cli.commands["hq"]
assert isinstance(_hq_group, click.Group)


@_hq_group.command("card-float")
@click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False),
    envvar="MESHPOS_HQ_DIR",
    help="HQ directory (default $MESHPOS_HQ_DIR or ./meshpos-hq).",
)
@click.option("--db", envvar="MESHPOS_HQ_DB", help="Database (default: hq.toml's, else hq.db).")
@click.argument("total")
@click.option("--store", "stores", multiple=True, help="Only this store (default: every store).")
@json_option
def hq_card_float(
    directory: str | None, db: str | None, total: str, stores: tuple[str, ...], as_json: bool
) -> None:
    """Set each store's offline card float to TOTAL rupees (card money its counters may take
    before HQ answers), minting or taking back the difference across its terminals."""
    from meshpos.hq.card_float import hq_open_float
    from meshpos.hq.service import HQService

    amount = parse_rupees(total, "card float")
    svc = HQService.open(directory, db)
    try:
        ops = hq_open_float(svc, amount, stores or None)
    finally:
        svc.close()
    rows = [
        {"store": op.store, "op": f"{op.origin}:{op.seq}", "kind": op.kind, **op.payload}
        for op in ops
    ]
    if as_json:
        emit(rows, True)
        return
    for row in rows:
        if row["kind"] == "card.float":
            click.echo(f"store {row['store']}: {rupees(row['amount'])} of float to {row['to']}")
    click.echo(
        f"card float {rupees(amount)}: {len(ops)} op(s) signed by HQ; relays carry them to the stores"
    )
