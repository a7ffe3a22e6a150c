"""`meshpos giftcard ...`: sell a gift card and check a card's or credit note's balance.

Spending one is `meshpos sell ITEMS --pay giftcard:CODE[:AMOUNT]`; a refund to a credit note is
`meshpos return ... --refund credit-note` (meshpos/cli/sales.py).
"""

from __future__ import annotations

import click

from meshpos.cli.cards import final_payment, final_payment_options
from meshpos.cli.common import acting_user, emit, json_option, op_ref, open_terminal
from meshpos.cli.printing import selling_terminal
from meshpos.domain.money import rupees
from meshpos.service import giftcards


@click.group("giftcard")
def giftcard() -> None:
    """Gift cards and credit notes: sell one, check a balance (spend one with `sell --pay
    giftcard:CODE`)."""


@giftcard.command("issue")
@click.option("--amount", required=True, help="Value of the card in rupees (at most ₹10,000).")
@final_payment_options(
    "How the card is paid: cash|card-machine|upi[:AMOUNT] (default cash); repeat to split."
)
@click.option("--customer", help="Customer id or phone the card is sold to (optional).")
@json_option
@click.pass_context
def giftcard_issue(
    ctx: click.Context,
    amount: str,
    pays: tuple[str, ...],
    card_approval: str | None,
    card_last4: str | None,
    upi_ref: str | None,
    customer: str | None,
    as_json: bool,
) -> None:
    """Sell a new gift card; prints its code (its slip, with the code as a barcode, goes to
    the receipt printer)."""
    tenders = final_payment(pays, card_approval, card_last4, upi_ref)
    t = selling_terminal(ctx.find_root())  # open until the root prints the card's slip
    op = giftcards.issue(t, amount, tenders=tenders, customer=customer, user=acting_user(ctx))
    card = giftcards.show(t, str(op.payload["code"]))
    if as_json:
        emit({**card, "op": op_ref(op)}, True)
        return
    click.echo(card["code"])
    until = f", valid until {card['expires']}" if card["expires"] else ""
    click.echo(f"gift card of {rupees(card['balance'])} issued{until} (op {op_ref(op)})", err=True)


@giftcard.command("show")
@click.argument("code")
@json_option
@click.pass_context
def giftcard_show(ctx: click.Context, code: str, as_json: bool) -> None:
    """A gift card's or credit note's balance (paise under `balance` in --json), expiry, where
    its balance is held and its history."""
    card = giftcards.show(open_terminal(ctx), code)
    if as_json:
        emit(card, True)
        return
    elsewhere = ", ".join(f"{n} {rupees(v)}" for n, v in card["held_elsewhere"].items())
    emit(
        {
            "code": card["code"],
            "kind": card["label"],
            "balance": rupees(card["balance"]),
            "issued": f"{rupees(card['issued'])} on {card['issued_at'] or '-'}"
            + (f" in store {card['issued_in']}" if card["issued_in"] else ""),
            "expires": (card["expires"] or "never") + (" (EXPIRED)" if card["expired"] else ""),
            "spendable here": rupees(card["spendable_here"]),
            "held by other counters": elsewhere or "-",
        },
        False,
        card["label"],
    )
    emit(
        [
            {"when": m["at"] or "-", "sale": m["sale_id"] or "-", "amount": rupees(m["delta"])}
            for m in card["history"]
        ],
        False,
        "history",
    )
