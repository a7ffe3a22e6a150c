"""`meshpos audit ...`: signed, hash-chained exports of the op log for an auditor, and their
check with only the store's public key."""

from __future__ import annotations

import json
from pathlib import Path

import click

from meshpos.cli.common import emit, json_option, open_terminal, read_file, write_file
from meshpos.core.clock import wall_ms
from meshpos.core.errors import InputError, MeshposError
from meshpos.service.audit import check_audit, export_audit


@click.group()
def audit() -> None:
    """Signed, hash-chained op log exports for an auditor, and their check."""


@audit.command("export")
@click.option(
    "--from", "date_from", required=True, help="First store day, YYYY-MM-DD ([store] timezone)."
)
@click.option("--to", "date_to", required=True, help="Last store day, YYYY-MM-DD (included).")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="File to write.")
@click.pass_context
def audit_export(ctx: click.Context, date_from: str, date_to: str, out: str) -> None:
    """Write every op of the range, per origin with its chain anchor and the certificates."""
    doc = export_audit(open_terminal(ctx), date_from, date_to, wall_ms())
    write_file(out, (json.dumps(doc, indent=1) + "\n").encode())
    origins = doc["content"]["origins"]
    count = sum(len(o["ops"]) for o in origins)
    click.echo(
        f"exported {count} ops of {len(origins)} origin(s), {date_from}..{date_to}, to {out}"
    )


@audit.command("check")
@click.argument("file", type=click.Path(dir_okay=False, exists=True))
@click.option("--store-key", help="The store's public key, 64 hex digits.")
@click.option(
    "--store-key-file",
    type=click.Path(dir_okay=False, exists=True),
    help="A file holding the store's public key as hex.",
)
@json_option
def audit_check(
    file: str, store_key: str | None, store_key_file: str | None, as_json: bool
) -> None:
    """Verify an export with only the store's public key; exit 1 on any problem."""
    if bool(store_key) == bool(store_key_file):
        raise InputError("give the store's public key: --store-key HEX or --store-key-file FILE")
    text = store_key or Path(store_key_file or "").read_text()
    try:
        key = bytes.fromhex(text.strip())
    except ValueError:
        key = b""
    if len(key) != 32:
        raise InputError("the store's public key must be 64 hex digits")
    report = check_audit(read_file(file), key)
    if as_json:
        click.echo(
            json.dumps(
                {
                    "ok": report.ok,
                    "store": report.store,
                    "from": report.date_from,
                    "to": report.date_to,
                    "exporter": report.exporter,
                    "origins": [o.row() for o in report.origins],
                    "problems": report.problems,
                },
                indent=2,
            )
        )
    else:
        emit(
            [o.row() for o in report.origins],
            False,
            f"audit export of store {report.store}, {report.date_from}..{report.date_to}, "
            f"by {report.exporter}",
        )
        for p in report.problems:
            click.echo(f"problem: {p}", err=True)
    if not report.ok:
        raise MeshposError(f"audit check found {len(report.problems)} problem(s)")
    if not as_json:
        click.echo("ok: certificates, every signature and chain link, receipt numbers gapless")
