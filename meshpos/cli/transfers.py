"""`meshpos transfer ...`: send stock to another store, count a transfer in, list transfers, and
other stores' stock as HQ last saw it."""

from __future__ import annotations

import click

from meshpos.cli.common import acting_user, approve_option, emit, json_option, op_ref, open_terminal
from meshpos.core.clock import wall_ms
from meshpos.core.errors import ConfigError
from meshpos.domain.storetime import ago
from meshpos.domain.transfers import pairs
from meshpos.service import transfers


@click.group("transfer")
def transfer() -> None:
    """Stock transfers between stores, and other stores' stock."""


def _lines(lines: list[dict[str, object]]) -> str:
    return ", ".join(f"{x['sku']} x{x['qty']}" for x in lines)


@transfer.command("out", context_settings={"ignore_unknown_options": True})
@click.argument("items", nargs=-1, required=True, metavar="SKU QTY [SKU QTY]...")
@click.option("--to", "to_store", required=True, metavar="STORE", help="The receiving store.")
@click.option("--note", default="", help="Delivery note, van, reason.")
@approve_option
@json_option
@click.pass_context
def transfer_out(
    ctx: click.Context, items: tuple[str, ...], to_store: str, note: str, as_json: bool
) -> None:
    """Send stock to STORE: it leaves this store's stock now and is in transit at HQ until the
    receiving store counts it in. Write the transfer id printed here on the delivery note."""
    t = open_terminal(ctx)
    op = transfers.send(t, pairs(items), to_store, note=note, user=acting_user(ctx))
    if as_json:
        emit({**op.payload, "op": op_ref(op)}, True)
        return
    click.echo(f"transfer {op.payload['transfer_id']} to {to_store}: {_lines(op.payload['lines'])}")
    click.echo("stock left this store; write the transfer id on the delivery note")


@transfer.command("in")
@click.argument("transfer_id")
@click.option(
    "--received",
    multiple=True,
    metavar="SKU:QTY",
    help="What was counted of an item, where it differs from what was sent (repeatable); "
    "without HQ's word of the transfer yet, name every item that arrived.",
)
@json_option
@click.pass_context
def transfer_in(
    ctx: click.Context, transfer_id: str, received: tuple[str, ...], as_json: bool
) -> None:
    """Count transfer TRANSFER_ID in: the stock arrives here; a count short of what was sent
    opens a conflict for a manager (`meshpos conflicts`)."""
    t = open_terminal(ctx)
    counts = transfers.parse_counts(received)
    op = transfers.receive(t, transfer_id, counts, user=acting_user(ctx))
    conflict = t.ledger.views.conflict(f"transfer_short:{transfer_id}")
    if as_json:
        emit({**op.payload, "op": op_ref(op), "conflict": conflict}, True)
        return
    click.echo(
        f"received {transfer_id} from {op.payload['from_store']}: {_lines(op.payload['lines'])}"
    )
    if conflict is not None and conflict["status"] == "open":
        short = ", ".join(f"{k} {v} short" for k, v in conflict["detail"]["short"].items())
        extra = ", ".join(f"{k} {v} extra" for k, v in conflict["detail"]["extra"].items())
        click.echo(f"! does not match what was sent ({'; '.join(x for x in (short, extra) if x)}):")
        click.echo(f"  flagged for a manager as conflict transfer_short:{transfer_id}")
    elif not t.ledger.transfers.expected(transfer_id):
        click.echo("HQ's word of what was sent has not arrived; it is checked when it does")


@transfer.command("list")
@json_option
@click.pass_context
def transfer_list(ctx: click.Context, as_json: bool) -> None:
    """Transfers this store sent and those coming to it, with their status."""
    rows = transfers.listing(open_terminal(ctx))
    if not as_json:
        for row in rows:
            row["lines"] = _lines(row["lines"])
    emit(
        rows,
        as_json,
        "transfers",
        ["transfer_id", "direction", "store", "units", "lines", "status"],
    )


@transfer.command("stock")
@click.argument("sku")
@json_option
@click.pass_context
def transfer_stock(ctx: click.Context, sku: str, as_json: bool) -> None:
    """Other stores' stock of SKU as HQ last saw it, and how old that is."""
    t = open_terminal(ctx)
    now = wall_ms()
    rows = transfers.elsewhere(t, sku, now)
    if as_json:
        emit(rows, True)
        return
    if not rows:
        click.echo("no other stores' stock here yet: it comes from HQ (`meshpos transfer pull`)")
        return
    for r in rows:
        r["HQ saw it"] = f"{ago(r['as_of_ms'], now)} ago" if r["as_of_ms"] else "never"
        r["pulled"] = f"{ago(r['fetched_ms'], now)} ago"
    emit(
        rows,
        False,
        f"other stores' stock of {rows[0]['sku']}",
        ["store", "name", "qty", "HQ saw it", "pulled"],
    )


@transfer.command("pull")
@click.pass_context
def transfer_pull(ctx: click.Context) -> None:
    """Refresh other stores' stock from HQ now (the daemon does it every few minutes)."""
    from meshpos.hq.client import HQClient
    from meshpos.node.membership import NODE_CERT

    t = open_terminal(ctx)
    url = str(t.cfg.section("hq").get("url") or "")
    if not url:
        raise ConfigError("no HQ configured: set [hq] url in meshpos.toml")
    cert_path = t.cfg.dir / NODE_CERT
    cert = cert_path.read_bytes() if cert_path.exists() else None
    with HQClient(url, t.signer, t.cfg.store, cert=cert) as client:
        changed = transfers.refresh_chain_stock(t, client)
    click.echo(
        f"other stores' stock: {changed} store(s) refreshed, {len(t.ledger.other_stores.stores())} held"
    )
