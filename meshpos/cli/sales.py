"""`meshpos sell`, `return` and `exchange`: ring a sale and print what was recorded.

Each queues its receipt with the op it records, printed once the command is done
(meshpos/cli/printing.py).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import click

from meshpos.cli.cards import card_input, card_options, machine_payment, with_upi_ref
from meshpos.cli.common import acting_user, approve_option, emit, json_option, op_ref
from meshpos.cli.printing import selling_terminal
from meshpos.core.errors import InputError
from meshpos.domain.escrow import EscrowShortfall
from meshpos.domain.gst import STATES, Supply, heads_text, invoice_tax, state_label
from meshpos.domain.money import points_moved, rupees
from meshpos.domain.pricing import parse_item
from meshpos.service import rights
from meshpos.service.daemon_link import daemon_status, wait_for_copies
from meshpos.service.escrow import reach, sell_with_escrow
from meshpos.service.terminal import OversellNotConfirmed, SaleResult

LINE_COLUMNS = ("sku", "name", "hsn", "qty", "unit_price", "discount", "gst_rate", "tax", "total")


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


def _print_sale(result: SaleResult, as_json: bool, title: str, copies: int | None = None) -> None:
    p = result.payload
    if as_json:
        extra = {} if copies is None else {"copies": copies}
        click.echo(
            json.dumps({"sale_id": result.sale_id, "op": op_ref(result.op), **extra, **p}, indent=2)
        )
        return
    emit([{k: ln.get(k) for k in LINE_COLUMNS} for ln in p["lines"]], False, title)
    change = sum(t.get("change", 0) for t in p["tenders"])
    tenders = ", ".join(_tender_text(t) for t in p["tenders"])
    paid = "refunded" if p["total"] < 0 or result.op.kind == "return" else "paid"
    click.echo(
        f"{title} {result.sale_id}  total {rupees(p['total'])}  tax {rupees(p['tax'])}  "
        f"{paid} {tenders or '-'}" + (f"  change {rupees(change)}" if change else "")
    )
    supply = Supply.of(p)
    tax = invoice_tax(p)
    heads = heads_text(tax.cgst, tax.sgst, tax.igst)
    where = f", place of supply {state_label(supply.place)}" if supply.place in STATES else ""
    buyer = f", buyer GSTIN {supply.buyer_gstin}" if supply.buyer_gstin else ""
    click.echo(f"GST {heads}{where}{buyer}")
    moved = points_moved(p["points_earned"], p["points_redeemed"])
    if p.get("customer") and moved:
        click.echo(f"customer {p['customer']}: {moved}")
    if copies is not None:
        click.echo(
            "safe: held by 2 copies (a peer confirmed it)"
            if copies >= 2
            else "held by 1 copy only: no peer confirmed it yet (it will sync when one can)"
        )


def _tender_text(t: dict[str, Any]) -> str:
    text = f"{t['method'].replace('_', ' ')} {rupees(abs(t['amount']))}"
    if t.get("code"):
        text += f" ({t['code']})"
    if t.get("upi_ref"):
        text += f" (UTR {t['upi_ref']}, pending reconciliation)"
    if t.get("card_approval"):
        text += f" (card ending {t.get('card_last4')}, approval {t['card_approval']})"
    elif t.get("card_last4"):
        text += f" ({t.get('card_brand') or 'card'} ending {t['card_last4']}"
        text += ", authorisation pending)" if t.get("pending") else ")"
    return text


def _oversell_hint(exc: OversellNotConfirmed) -> InputError:
    return InputError(f"{exc}: add --allow-oversell")


upi_ref_option = click.option(
    "--upi-ref",
    metavar="UTR",
    help="With --pay upi: the 12-digit UTR the customer's phone or the sound box shows; the "
    "payment is recorded as pending reconciliation by HQ.",
)

allow_oversell_option = click.option(
    "--allow-oversell",
    is_flag=True,
    help="Sell beyond the stock this counter sees (the goods are in hand); a supervisor "
    "approves above the store's limit (staff.oversell_limit units).",
)


@click.command()
@click.argument("items", nargs=-1, required=True)
@click.option("--customer", help="Customer id or phone, for loyalty points.")
@click.option(
    "--pay",
    "pays",
    multiple=True,
    help="cash|card|card-machine|upi|points[:AMOUNT] or giftcard:CODE[:AMOUNT]; repeat to "
    "split. Default: cash for the total, or card when a card is given. card-machine: paid on "
    "the store's card machine (give --card-approval and --card-last4); card: captured here "
    "(--card-stdin); upi: paid from the customer's phone (give --upi-ref); giftcard: a gift "
    "card's or credit note's balance (all of it that is due, or AMOUNT).",
)
@upi_ref_option
@card_options
@click.option(
    "--discount",
    "discounts",
    multiple=True,
    help="10% or 50 (rupees) off the sale, or SKU:10% off one line. Repeatable.",
)
@click.option(
    "--buyer-gstin",
    metavar="GSTIN",
    help="A registered buyer's GSTIN (a B2B tax invoice); another state's means IGST.",
)
@click.option(
    "--buyer-state",
    metavar="STATE",
    help="State the goods are delivered to, by name or GST code, when not the store's: IGST.",
)
@allow_oversell_option
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
    card_approval: str | None,
    card_last4: str | None,
    upi_ref: str | None,
    discounts: tuple[str, ...],
    buyer_gstin: str | None,
    buyer_state: str | None,
    allow_oversell: bool,
    as_json: bool,
) -> None:
    """Ring a sale: ITEMS are SKU or barcode, optionally xQTY (TSH-BLK-Mx2).

    A card is paid one of two ways. On the store's card machine: --pay card-machine with the
    approval code and last four digits from its slip; no card data is kept. Or captured here:
    --card-stdin (or --card-number) is checked offline (check digit, expiry, HQ's blocklist),
    sealed to HQ's payment key and recorded as pending until HQ answers; only its last four
    digits and brand stay readable, and offline floor limits apply (`meshpos cards`)."""
    sale_disc, line_disc = _discounts(discounts)
    card = card_input(card_number, card_expiry, card_stdin)
    tenders = with_upi_ref(machine_payment(pays, card_approval, card_last4), upi_ref)
    if card is not None and not tenders:
        tenders = machine_payment(("card",), None, None)
    t = selling_terminal(ctx)
    daemon = daemon_status(t.cfg.dir)
    peers_up, hq_up = reach(daemon)
    try:
        result = sell_with_escrow(
            t,
            peers_up=peers_up,
            hq_up=hq_up,
            items=[parse_item(i) for i in items],
            tenders=tenders,
            customer=customer,
            discount=sale_disc,
            line_discounts=line_disc,
            user=acting_user(ctx),
            card=card,
            allow_oversell=allow_oversell,
            buyer_gstin=buyer_gstin,
            buyer_state=buyer_state,
        )
    except OversellNotConfirmed as exc:
        raise _oversell_hint(exc) from None
    except EscrowShortfall as short:
        raise rights.explain(t, short) from None
    copies = None
    if daemon:
        wait = int(t.cfg.section("mesh").get("copy_wait_ms", 50))
        copies = wait_for_copies(t, result.op.seq, wait)
    _print_sale(result, as_json, "sale", copies)


@click.command("return")
@click.argument("sale_id")
@click.argument("items", nargs=-1, required=True)
@click.option(
    "--refund",
    default="cash",
    show_default=True,
    type=click.Choice(["cash", "card", "points", "credit-note"]),
    help="How the money goes back; credit-note: a new credit note (its code is printed as a "
    "barcode the till scans to spend it).",
)
@json_option
@approve_option
@click.pass_context
def return_cmd(
    ctx: click.Context, sale_id: str, items: tuple[str, ...], refund: str, as_json: bool
) -> None:
    """Return ITEMS (SKU[xQTY]) of an earlier sale; refunds what they were sold for."""
    result = selling_terminal(ctx).return_items(
        sale_id, [parse_item(i) for i in items], refund=refund, user=acting_user(ctx)
    )
    _print_sale(result, as_json, "return")


@click.command()
@click.argument("sale_id")
@click.option("--back", multiple=True, required=True, help="SKU[xQTY] coming back. Repeatable.")
@click.option("--take", multiple=True, required=True, help="SKU[xQTY] going out. Repeatable.")
@click.option(
    "--pay",
    "pays",
    multiple=True,
    help="Tender for any difference due: cash|card|card-machine|upi[:AMOUNT] or "
    "giftcard:CODE[:AMOUNT], as for `sell`.",
)
@click.option(
    "--refund",
    default="cash",
    show_default=True,
    type=click.Choice(["cash", "credit-note"]),
    help="How a difference in the customer's favour goes back.",
)
@upi_ref_option
@card_options
@allow_oversell_option
@json_option
@approve_option
@click.pass_context
def exchange(
    ctx: click.Context,
    sale_id: str,
    back: tuple[str, ...],
    take: tuple[str, ...],
    pays: tuple[str, ...],
    refund: str,
    upi_ref: str | None,
    card_number: str | None,
    card_expiry: str | None,
    card_stdin: bool,
    card_approval: str | None,
    card_last4: str | None,
    allow_oversell: bool,
    as_json: bool,
) -> None:
    """Exchange items of an earlier sale for others; the difference is paid or refunded."""
    card = card_input(card_number, card_expiry, card_stdin)
    t = selling_terminal(ctx)
    try:
        result = t.exchange(
            sale_id,
            [parse_item(i) for i in back],
            [parse_item(i) for i in take],
            tenders=with_upi_ref(machine_payment(pays, card_approval, card_last4), upi_ref),
            user=acting_user(ctx),
            card=card,
            allow_oversell=allow_oversell,
            refund=refund,
        )
    except OversellNotConfirmed as exc:
        raise _oversell_hint(exc) from None
    except EscrowShortfall as short:
        raise rights.explain(t, short) from None
    _print_sale(result, as_json, "exchange")
