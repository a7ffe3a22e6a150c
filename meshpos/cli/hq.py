"""`meshpos hq ...`: run HQ, enrol stores and terminals, send prices and rules down, read reports.

Every command works on an HQ directory (`--dir`, else $MESHPOS_HQ_DIR, else ./meshpos-hq) and its
database (`--db` overrides the one in hq.toml: a SQLite path or a `postgresql://` URL).
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import click

from meshpos.cli.common import emit, json_option, op_ref, read_file, write_file
from meshpos.core.errors import InputError
from meshpos.core.ops import Op
from meshpos.domain.gst import check_hsn
from meshpos.domain.money import parse_rate, parse_rupees, rupees
from meshpos.hq import keys
from meshpos.hq.card_float import hq_open_float
from meshpos.hq.service import HQService, open_storage
from meshpos.service.config import check_name

F = TypeVar("F", bound=Callable[..., Any])
DEFAULT_PORT = 8470


def hq_options(fn: F) -> F:
    fn = click.option(
        "--db",
        envvar="MESHPOS_HQ_DB",
        help="Database: a SQLite file or postgresql://... (default: hq.toml's, else hq.db).",
    )(fn)
    return click.option(
        "--dir",
        "directory",
        type=click.Path(file_okay=False),
        envvar="MESHPOS_HQ_DIR",
        help="HQ directory (default $MESHPOS_HQ_DIR or ./meshpos-hq).",
    )(fn)


@contextmanager
def _service(directory: str | None, db: str | None) -> Iterator[HQService]:
    svc = HQService.open(directory, db)
    try:
        yield svc
    finally:
        svc.close()


stores_option = click.option(
    "--store", "stores", multiple=True, help="Only this store (repeatable; default: every store)."
)


@click.group()
def hq() -> None:
    """HQ: the chain's central service (stores relay to it; prices and rules flow back)."""


@hq.command("init")
@hq_options
@click.option("--name", default="hq", show_default=True, help="HQ's node name in every store.")
@json_option
def hq_init(directory: str | None, db: str | None, name: str, as_json: bool) -> None:
    """Create an HQ directory: signing key, payment key, admin token, config."""
    cfg = keys.init_hq(keys.resolve_dir(directory), name=name, db=db or "")
    open_storage(cfg.db_url).close()
    emit(
        {
            "dir": str(cfg.dir),
            "node_id": cfg.node_id,
            "db": cfg.db_url if not cfg.db.startswith("postgres") else "postgresql",
            "payment_public_key": keys.payment_public_key(cfg).hex(),
        },
        as_json,
        "HQ created",
    )


@hq.command("serve")
@hq_options
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=DEFAULT_PORT, show_default=True, type=click.IntRange(0, 65535))
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 64),
              help="Processes (they share nothing but the database).")  # fmt: skip
@click.option("--log-level", default="INFO", show_default=True,
              type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"]))  # fmt: skip
@click.option("--ssl-certfile", type=click.Path(dir_okay=False), help="Serve HTTPS with this.")
@click.option("--ssl-keyfile", type=click.Path(dir_okay=False), help="Key of --ssl-certfile.")
def hq_serve(
    directory: str | None,
    db: str | None,
    host: str,
    port: int,
    workers: int,
    log_level: str,
    ssl_certfile: str | None,
    ssl_keyfile: str | None,
) -> None:
    """Run the HQ HTTP service in the foreground (uvicorn; Ctrl-C stops)."""
    # Imported here: the HTTP app (Starlette, uvicorn) would add ~85 ms to every other command.
    import uvicorn

    from meshpos.hq.app import LOG_FORMAT, SERVER_OPTIONS, create_app

    logging.basicConfig(
        level=log_level, stream=sys.stderr,
        format=LOG_FORMAT, force=True,
    )  # fmt: skip
    ssl: dict[str, Any] = {"ssl_certfile": ssl_certfile, "ssl_keyfile": ssl_keyfile}
    common: dict[str, Any] = {
        "host": host, "port": port, "log_level": log_level.lower(), "log_config": None, **ssl,
        **SERVER_OPTIONS,
    }  # fmt: skip
    if workers == 1:
        service = HQService.open(directory, db)
        uvicorn.run(create_app(service), **common)
        return
    keys.load_hq(keys.resolve_dir(directory))  # fail here, not in every worker
    os.environ["MESHPOS_HQ_DIR"] = str(keys.resolve_dir(directory))
    os.environ["MESHPOS_HQ_LOG"] = log_level
    if db:
        os.environ["MESHPOS_HQ_DB"] = db
    uvicorn.run("meshpos.hq.app:create_app_from_env", factory=True, workers=workers, **common)


@hq.command("info")
@hq_options
@json_option
def hq_info(directory: str | None, db: str | None, as_json: bool) -> None:
    """HQ's node id and public keys (the payment key tills seal card data to)."""
    with _service(directory, db) as svc:
        emit({**svc.info(), "db": svc.storage.db.describe()}, as_json, "HQ")


@hq.command("enroll-store")
@hq_options
@click.argument("store")
@click.option("--name", default="", help="The store's display name.")
@click.option("--store-public-key", help="Hex key of a store whose key stays at the store.")
@click.option("--request-out", type=click.Path(dir_okay=False),
              help="With --store-public-key: where to write HQ's enrolment request.")  # fmt: skip
@json_option
def hq_enroll_store(
    directory: str | None,
    db: str | None,
    store: str,
    name: str,
    store_public_key: str | None,
    request_out: str | None,
    as_json: bool,
) -> None:
    """Enrol a store at HQ.

    Without --store-public-key HQ creates and keeps the store key, holds a certificate in the
    store, and certifies its terminals (`meshpos hq enroll-node`). With it, the store keeps its key:
    sign HQ's request there (`meshpos enroll sign FILE --role hq`), then `meshpos hq install-cert`.
    """
    check_name(store, "store id")
    pub = None
    if store_public_key is not None:
        try:
            pub = bytes.fromhex(store_public_key)
        except ValueError:
            raise InputError("--store-public-key must be 64 hex digits") from None
        if len(pub) != 32 or not request_out:
            raise InputError("--store-public-key needs 64 hex digits and --request-out FILE")
    with _service(directory, db) as svc:
        out = svc.enroll_store(store, name, pub)
        if out.request is not None and request_out:
            write_file(request_out, out.request)
        emit(
            {
                "store": out.store.store,
                "store_public_key": out.store.public_key.hex(),
                "key_at_hq": out.store.key_at_hq,
                "hq_certificate": out.store.hq_cert is not None,
                "next": (
                    f"on the store's key holder: meshpos enroll sign {request_out} --role hq "
                    "--out hq.enrolment; then: meshpos hq install-cert hq.enrolment"
                    if out.request is not None
                    else f"terminals: `meshpos enroll request`, then `meshpos hq enroll-node "
                    f"{store} REQUEST --out FILE`, then `meshpos enroll install FILE`"
                ),
            },
            as_json,
            "store enrolled",
        )


@hq.command("install-cert")
@hq_options
@click.argument("enrolment_file", type=click.Path(dir_okay=False))
def hq_install_cert(directory: str | None, db: str | None, enrolment_file: str) -> None:
    """Install HQ's certificate signed at a store (`meshpos enroll sign --role hq`)."""
    with _service(directory, db) as svc:
        store = svc.install_cert(read_file(enrolment_file))
    click.echo(f"HQ holds a certificate in store {store}; it can now send ops there")


@hq.command("enroll-node")
@hq_options
@click.argument("store")
@click.argument("request_file", type=click.Path(dir_okay=False))
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Enrolment to write.")
@click.option("--role", default="terminal", type=click.Choice(["terminal", "hq"]))
def hq_enroll_node(
    directory: str | None, db: str | None, store: str, request_file: str, out: str, role: str
) -> None:
    """Certify a terminal's request with the store key HQ holds."""
    with _service(directory, db) as svc:
        write_file(out, svc.enroll_node(store, read_file(request_file), role))
    click.echo(f"enrolment written to {out}: on the terminal run `meshpos enroll install {out}`")


@hq.command("stores")
@hq_options
@json_option
def hq_stores(directory: str | None, db: str | None, as_json: bool) -> None:
    """Enrolled stores: ops held, last upload, sales."""
    with _service(directory, db) as svc:
        emit(svc.storage.summary(), as_json, "stores")


@hq.command("report")
@hq_options
@click.option("--store", help="Only this store's rows.")
@json_option
def hq_report(directory: str | None, db: str | None, store: str | None, as_json: bool) -> None:
    """Chain-wide figures: per store, per day, stock, loyalty across stores, card payments, and
    the conflicts of each store (ops HQ holds without authority)."""
    with _service(directory, db) as svc:
        if as_json:
            data = svc.report(store)
            if store:
                data["stock"] = svc.storage.stock(store)
                data["sales"] = svc.storage.sales_by_day(store)
            emit(data, True)
            return
        data = svc.report(store)
        emit(data["chain"], False, f"chain ({data['backend']})")
        emit(data["stores"], False, "stores",
             ["store", "ops", "origins", "sales", "net", "card_pending", "card_declined",
              "conflicts"])  # fmt: skip
        emit(svc.storage.sales_by_day(store), False, "sales per store and day")
        emit(svc.storage.stock(store), False, "stock per store and SKU")
        emit(data["loyalty"], False, "loyalty points per customer (all stores)")
        emit([_conflict_row(c) for c in data["conflicts"]], False, "open conflicts",
             ["store", "conflict_id", "node", "user", "rule", "reason"])  # fmt: skip


def _conflict_row(c: dict[str, Any]) -> dict[str, Any]:
    d = c["detail"]
    return {"store": c["store"], "conflict_id": c["conflict_id"], "node": d.get("node", ""),
            "user": d.get("user", ""), "rule": d.get("rule", ""), "reason": d.get("reason", "")}  # fmt: skip


@hq.command("price")
@hq_options
@click.argument("sku")
@click.argument("price")
@stores_option
@json_option
def hq_price(
    directory: str | None,
    db: str | None,
    sku: str,
    price: str,
    stores: tuple[str, ...],
    as_json: bool,
) -> None:
    """Change a product's price (rupees, e.g. 499 or 499.50) in every store, or --store ones."""
    with _service(directory, db) as svc:
        ops = svc.set_price(sku, parse_rupees(price, "price"), stores or None)
    _done(ops, as_json, f"price of {sku}")


@hq.command("product")
@hq_options
@click.argument("sku")
@click.option("--name")
@click.option("--price", help="Rupees, tax inclusive.")
@click.option("--gst", help="GST rate in percent, e.g. 12.")
@click.option("--hsn", help="HSN code, 4, 6 or 8 digits (e.g. 610910).")
@click.option("--barcode")
@click.option("--category")
@click.option("--size")
@click.option("--colour")
@click.option("--active/--inactive", default=None)
@stores_option
@json_option
def hq_product(
    directory: str | None,
    db: str | None,
    sku: str,
    name: str | None,
    price: str | None,
    gst: str | None,
    hsn: str | None,
    barcode: str | None,
    category: str | None,
    size: str | None,
    colour: str | None,
    active: bool | None,
    stores: tuple[str, ...],
    as_json: bool,
) -> None:
    """Add or change a product (only the fields given) in every store, or --store ones."""
    fields: dict[str, Any] = {
        k: v
        for k, v in {"name": name, "barcode": barcode, "category": category, "size": size,
                     "colour": colour}.items()
        if v is not None
    }  # fmt: skip
    if price is not None:
        fields["price"] = parse_rupees(price, "price")
    if gst is not None:
        fields["gst_rate"] = parse_rate(gst)
    if hsn is not None:
        fields["hsn"] = check_hsn(hsn)
    if active is not None:
        fields["active"] = int(active)
    with _service(directory, db) as svc:
        ops = svc.upsert_product(sku, fields, stores or None)
    _done(ops, as_json, f"product {sku}")


@hq.command("setting")
@hq_options
@click.argument("key")
@click.argument("value")
@stores_option
@json_option
def hq_setting(
    directory: str | None,
    db: str | None,
    key: str,
    value: str,
    stores: tuple[str, ...],
    as_json: bool,
) -> None:
    """Set a store setting (VALUE is JSON, e.g. 2 or '"text"') in every store, or --store ones.

    Among them: store.timezone ('"Asia/Kolkata"'), gst.bands.CATEGORY or gst.bands.hsn:NN
    ('"5% up to 2500, 18% above"'; null removes them), loyalty.*, staff.*, cards.*."""
    try:
        parsed = json.loads(value)
    except ValueError:
        raise InputError(f"VALUE {value!r} is not JSON (quote text: '\"text\"')") from None
    if isinstance(parsed, float):
        raise InputError("settings hold whole numbers, not fractions")
    with _service(directory, db) as svc:
        ops = svc.set_setting(key, parsed, stores or None)
    _done(ops, as_json, f"setting {key}")


@hq.command("loyalty-rule")
@hq_options
@click.option("--earn-per-100", type=click.IntRange(0, 10_000), help="Points per ₹100 paid.")
@click.option("--point-value", type=click.IntRange(1, 1_000_000), help="Paise one point is worth.")
@stores_option
@json_option
def hq_loyalty_rule(
    directory: str | None,
    db: str | None,
    earn_per_100: int | None,
    point_value: int | None,
    stores: tuple[str, ...],
    as_json: bool,
) -> None:
    """Change the loyalty rule chain-wide (settings loyalty.earn_per_100 / loyalty.point_value)."""
    if earn_per_100 is None and point_value is None:
        raise InputError("give --earn-per-100 and/or --point-value")
    ops = []
    with _service(directory, db) as svc:
        if earn_per_100 is not None:
            ops += svc.set_setting("loyalty.earn_per_100", earn_per_100, stores or None)
        if point_value is not None:
            ops += svc.set_setting("loyalty.point_value", point_value, stores or None)
    _done(ops, as_json, "loyalty rule")


@hq.command("block-card")
@hq_options
@click.argument("card_number")
@click.option("--reason", required=True, help="lost, stolen, fraud, ...")
@click.option("--unblock", is_flag=True, help="Take the card off the blocklist.")
@json_option
def hq_block_card(
    directory: str | None,
    db: str | None,
    card_number: str,
    reason: str,
    unblock: bool,
    as_json: bool,
) -> None:
    """Put a card on the blocklist every till checks offline (or take it off with --unblock)."""
    with _service(directory, db) as svc:
        ops = svc.block_card(card_number, reason, blocked=not unblock)
    _done(ops, as_json, "blocklist")


@hq.command("payments")
@hq_options
@click.option("--store", help="Only this store.")
@click.option("--settle", is_flag=True, help="Settle pending card payments with the gateway now.")
@json_option
def hq_payments(
    directory: str | None, db: str | None, store: str | None, settle: bool, as_json: bool
) -> None:
    """Offline card payments received from stores and the acquirer's answers."""
    with _service(directory, db) as svc:
        if settle:
            svc.process_payments()
        emit(svc.storage.payments(store), as_json, "card payments",
             ["store", "sale_id", "brand", "last4", "amount", "status", "code", "auth_code"])  # fmt: skip


def _done(ops: list[Op], as_json: bool, what: str) -> None:
    rows = [{"store": op.store, "op": op_ref(op), "kind": op.kind} for op in ops]
    if as_json:
        emit(rows, True)
        return
    click.echo(f"{what}: {len(ops)} op(s) signed by HQ; relays carry them to the stores")


@hq.command("card-float")
@hq_options
@click.argument("total")
@stores_option
@json_option
def hq_card_float(
    directory: str | None, db: str | None, total: str, stores: tuple[str, ...], as_json: bool
) -> None:
    """Set each store's offline card float to TOTAL rupees (card money its counters may take
    before HQ answers), minting or taking back the difference across its terminals."""
    amount = parse_rupees(total, "card float")
    with _service(directory, db) as svc:
        ops = hq_open_float(svc, amount, stores or None)
    rows = [{"store": op.store, "op": op_ref(op), "kind": op.kind, **op.payload} for op in ops]
    if as_json:
        emit(rows, True)
        return
    for row in rows:
        if row["kind"] == "card.float":
            click.echo(f"store {row['store']}: {rupees(row['amount'])} of float to {row['to']}")
    click.echo(
        f"card float {rupees(amount)}: {len(ops)} op(s) signed by HQ; relays carry them to the stores"
    )


@hq.command("transfers")
@hq_options
@click.option("--store", help="Only transfers from or to this store.")
@click.option(
    "--status",
    type=click.Choice(["in transit", "received", "received short"]),
    help="Only transfers in this state.",
)
@json_option
def hq_transfers(
    directory: str | None, db: str | None, store: str | None, status: str | None, as_json: bool
) -> None:
    """Stock transfers between stores: in transit, received, received short."""
    with _service(directory, db) as svc:
        rows = svc.storage.transfers.listing(store, status)
    if not as_json:
        for row in rows:
            row["lines"] = ", ".join(f"{x['sku']} x{x['qty']}" for x in row["lines"])
            row["short"] = ", ".join(f"{k} -{v}" for k, v in row["short"].items())
    emit(rows, as_json, "transfers",
         ["transfer_id", "from_store", "to_store", "units", "lines", "status", "short"])  # fmt: skip
