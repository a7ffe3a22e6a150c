"""`meshpos hq upi ...`: reconcile the UPI payments the tills recorded with the bank's settlement
file (meshpos/domain/upi.py has the matching, meshpos/hq/storage/upi.py the verdicts)."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

import click

from meshpos.cli.common import emit, json_option, read_file
from meshpos.cli.hq import _service, hq_options
from meshpos.core.errors import InputError
from meshpos.domain.money import rupees
from meshpos.domain.storetime import DEFAULT_ZONE, StoreTime


@click.group("upi")
def hq_upi() -> None:
    """UPI payments: reconcile what the tills recorded with the bank's settlement file."""


@hq_upi.command("import")
@click.argument("file")
@hq_options
@click.option(
    "--through",
    metavar="YYYY-MM-DD",
    help="The file's last day (store time, Asia/Kolkata): payments recorded after it are left "
    "for the next file. Default: the latest date in the file, else today.",
)
@json_option
def hq_upi_import(
    file: str, directory: str | None, db: str | None, through: str | None, as_json: bool
) -> None:
    """Match every UPI payment the stores recorded against the bank's settlement FILE (CSV with
    the UTR or RRN, the merchant reference and the amount): by UTR or reference, then amount.
    A payment missing from the file or settled for another amount opens a conflict at its store
    (an HQ op the store folds, carried by the relay); the matched ones are settled."""
    text = read_file(file).decode("utf-8", errors="replace")
    with _service(directory, db) as svc:
        cutoff = upi_cutoff(text, through, svc.now_ms())
        verdicts = svc.import_upi(text, cutoff, file)
    rows: list[dict[str, Any]] = [
        {
            "store": v.payment.store,
            "sale_id": v.payment.sale_id,
            "utr": v.payment.utr,
            "amount": v.payment.amount,
            "settled": v.settled,
            "status": v.status,
            "message": v.message,
        }
        for v in verdicts
    ]
    if as_json:
        emit(rows, True)
        return
    shown = [
        {**r, "amount": rupees(v.payment.amount),
         "settled": "-" if v.settled is None else rupees(v.settled)}
        for r, v in zip(rows, verdicts, strict=True)
    ]  # fmt: skip
    emit(
        shown,
        False,
        "UPI reconciliation",
        ["store", "sale_id", "utr", "amount", "settled", "status"],
    )
    bad = sum(1 for v in verdicts if v.status != "matched")
    click.echo(
        f"{len(verdicts) - bad} matched, {bad} not settled as recorded"
        + ("; conflicts go to those stores with the next relay" if bad else "")
    )


def upi_cutoff(text: str, through: str | None, now_ms: int) -> int:
    """The last instant the file covers: the end of `through` (or of the file's latest date)."""
    zone = StoreTime.named(DEFAULT_ZONE)
    day = through
    if day is None:
        found = sorted(re.findall(r"\b(\d{4}-\d{2}-\d{2})\b", text))
        day = found[-1] if found else None
    if day is None:
        return now_ms
    try:
        date = dt.date.fromisoformat(day)
    except ValueError:
        raise InputError(f"--through {day!r}: give a day as YYYY-MM-DD") from None
    return zone.day_start(date + dt.timedelta(days=1)) - 1
