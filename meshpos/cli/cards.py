"""`meshpos cards`: offline card payments as this till sees them (floor limits, the store's card
float), a card check without a sale, and how a command reads a card without echoing its number.

HQ opening a store's card float is `meshpos hq card-float` (meshpos/cli/hq.py).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import TypeVar

import click

from meshpos.cli.common import emit, json_option, open_terminal
from meshpos.core.errors import InputError
from meshpos.domain.money import rupees
from meshpos.domain.pricing import Tender, parse_tender
from meshpos.domain.upi import check_ref
from meshpos.service import cards
from meshpos.service.cards import CardInput

F = TypeVar("F", bound=Callable[..., object])


MACHINE_OPTIONS = [
    click.option(
        "--card-approval",
        metavar="CODE",
        help="--pay card-machine: the approval (auth) code on the card machine's slip.",
    ),
    click.option(
        "--card-last4",
        metavar="NNNN",
        help="--pay card-machine: the card's last four digits on the slip.",
    ),
]


def final_payment_options(pay_help: str) -> Callable[[F], F]:
    """--pay and the card machine's and UPI's details, for money that is final at the counter
    (selling a gift card, entering a paper sale): no card is captured here."""

    def wrap(fn: F) -> F:
        for option in reversed(
            [
                click.option("--pay", "pays", multiple=True, help=pay_help),
                *MACHINE_OPTIONS,
                click.option("--upi-ref", metavar="UTR", help="--pay upi: the UPI payment's UTR."),
            ]
        ):
            fn = option(fn)
        return fn

    return wrap


def final_payment(pays: Sequence[str], approval: str | None, last4: str | None,
                  upi_ref: str | None) -> list[Tender]:  # fmt: skip
    """The tenders `final_payment_options` gave."""
    return with_upi_ref(machine_payment(pays, approval, last4), upi_ref)


def card_options(fn: F) -> F:
    """The card options of a command that takes payment: a card captured here, or the approval
    code and last four digits of a payment on the store's card machine."""
    for option in reversed(
        [
            click.option(
                "--card-number",
                metavar="NUMBER",
                help="Card for the card payment, sealed to HQ at once (or test[:BRAND], or a "
                "swiped track). Visible to other users of this machine while the command "
                "runs: prefer --card-stdin.",
            ),
            click.option("--card-expiry", metavar="MM/YY", help="The card's expiry."),
            click.option(
                "--card-stdin",
                is_flag=True,
                help="Read the card from stdin: NUMBER MM/YY, or a swiped track.",
            ),
            *MACHINE_OPTIONS,
        ]
    ):
        fn = option(fn)
    return fn


def machine_payment(pays: Sequence[str], approval: str | None, last4: str | None) -> list[Tender]:
    """The --pay tenders, the card machine's one carrying --card-approval and --card-last4."""
    tenders = [parse_tender(p) for p in pays]
    machine = [i for i, t in enumerate(tenders) if t.method == cards.MACHINE]
    if len(machine) > 1:
        raise InputError("one card machine payment per command: give --pay card-machine once")
    if not machine:
        if approval or last4:
            raise InputError("--card-approval and --card-last4 go with --pay card-machine")
        return tenders
    i = machine[0]
    if not (approval and last4):
        raise InputError(
            "--pay card-machine needs --card-approval CODE and --card-last4 NNNN from the card "
            "machine's slip"
        )
    checked = cards.machine_tender(tenders[i].amount, approval, last4)
    tenders[i] = replace(checked, amount=tenders[i].amount)
    return tenders


def with_upi_ref(tenders: list[Tender], upi_ref: str | None) -> list[Tender]:
    """The --pay tenders, the UPI one carrying --upi-ref (the UTR the customer's phone shows)."""
    upi = [i for i, t in enumerate(tenders) if t.method == "upi"]
    if not upi:
        if upi_ref:
            raise InputError("--upi-ref goes with --pay upi")
        return tenders
    if len(upi) > 1:
        raise InputError("one UPI payment per command: give --pay upi once")
    if not upi_ref:
        raise InputError(
            "--pay upi needs --upi-ref UTR: the 12-digit reference the customer's phone or the "
            "sound box shows once the payment went through"
        )
    out = list(tenders)
    out[upi[0]] = replace(out[upi[0]], upi_ref=check_ref(upi_ref))
    return out


def card_input(number: str | None, expiry: str | None, from_stdin: bool) -> CardInput | None:
    """The card given by --card-number/--card-expiry or --card-stdin, if any."""
    if from_stdin:
        if number:
            raise InputError("give the card by --card-number or --card-stdin, not both")
        return cards.read_card_line(sys.stdin.readline(), expiry)
    if number:
        return cards.read_card(number, expiry)
    if expiry:
        raise InputError("--card-expiry needs a card: --card-number or --card-stdin")
    return None


@click.group("cards", invoke_without_command=True)
@json_option
@click.pass_context
def cards_group(ctx: click.Context, as_json: bool) -> None:
    """Offline card payments: floor limits and the store's card float as this till sees it."""
    if ctx.invoked_subcommand is not None:
        return
    st = cards.status(open_terminal(ctx))
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
def cards_check(
    ctx: click.Context, card_number: str | None, card_expiry: str | None, card_stdin: bool
) -> None:
    """Check a card offline (check digit, expiry, HQ's blocklist) without selling."""
    card = card_input(card_number, card_expiry, card_stdin)
    if card is None:
        raise InputError("give a card: --card-number or --card-stdin")
    cards.offline_check(open_terminal(ctx), card)
    click.echo(f"ok: the {card} may be taken offline")
