"""What the command modules share: the node context (`--dir`, `--user`, `--approve`), opening the
node's terminal, tables or `--json` output, and reading and writing the files commands name.

The root group itself lives in meshpos/cli/app.py; a command module never imports it. The context
it leaves in `ctx.find_root().obj` is a dict: `dir` (the resolved node directory), `user`,
`approve` (set by --approve), and `terminal` once a command opened it.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click
from rich.console import Console, JustifyMethod
from rich.table import Table
from rich.text import Text

from meshpos.core.clock import wall_ms
from meshpos.core.errors import InputError
from meshpos.core.ops import Op
from meshpos.domain.money import group, rate, rupees
from meshpos.domain.staff import APPROVAL
from meshpos.service.config import check_name
from meshpos.service.staff import load_session, session_user, sign_in
from meshpos.service.terminal import RecordHook, Terminal

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
    "taxable",
    "cgst",
    "sgst",
    "igst",
}
# Counts a person reads, grouped the Indian way (1,23,456); ids and numbers on paper are not.
COUNT_KEYS = {
    "sales",
    "returns",
    "exchanges",
    "count",
    "qty",
    "stock",
    "points",
    "invoices",
    "products",
    "stock_receipts",
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


# -- the node context -----------------------------------------------------------------------------


def node_dir(ctx: click.Context) -> Path:
    """The node directory of this invocation (--dir, $MESHPOS_DIR or ./meshpos-node)."""
    directory: Path = ctx.find_root().obj["dir"]
    return directory


def open_terminal(ctx: click.Context, *, on_record: Sequence[RecordHook] = ()) -> Terminal:
    """The node's terminal, opened once per invocation and closed when the command ends.

    `on_record` are the record hooks the command needs (the receipt queue, for a command that
    rings sales); the first command to open the terminal decides them."""
    obj = ctx.find_root().obj
    if obj.get("terminal") is None:
        t = Terminal.open(obj["dir"], on_record=on_record)
        obj["terminal"] = t
        ctx.call_on_close(t.close)
        _attach_credentials(t, obj.get("approve"))
    terminal: Terminal = obj["terminal"]
    return terminal


def _attach_credentials(t: Terminal, approver: str | None) -> None:
    """The signed-in user's credential (it approves only that user's own ops) and, with
    --approve USER, that user's, checked against their PIN now."""
    try:
        cred = load_session(t)
    except InputError:
        cred = None
    if cred is not None:
        t.credentials.append(cred)
    if approver:
        pin = os.environ.get("MESHPOS_APPROVER_PIN") or click.prompt(
            f"PIN of {approver} (approving)", hide_input=True, err=True
        )
        t.credentials.insert(0, sign_in(t, approver, pin, purpose=APPROVAL))


def acting_user(ctx: click.Context) -> str | None:
    """--user, else whoever signed in here (`meshpos login`), else the --approve user, else the
    node's default user."""
    obj = ctx.find_root().obj
    user: str | None = obj.get("user") or session_user(obj["dir"], wall_ms()) or obj.get("approve")
    return user


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


# -- output ---------------------------------------------------------------------------------------

json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")


def _fmt(key: str, value: Any) -> str:
    if value is None:
        return ""
    if key == "gst_rate" and isinstance(value, int):
        return rate(value)
    if key in MONEY_KEYS and isinstance(value, int):
        return rupees(value)
    if key in COUNT_KEYS and isinstance(value, int) and not isinstance(value, bool):
        return group(value)
    if isinstance(value, list | dict):
        return json.dumps(value)
    return str(value)


def emit(
    rows: Sequence[dict[str, Any]] | dict[str, Any],
    as_json: bool,
    title: str = "",
    columns: Iterable[str] | None = None,
) -> None:
    """Rows as a table (a dict as field/value pairs) for people, or as JSON for scripts."""
    if as_json:
        click.echo(json.dumps(rows, indent=2, default=str))
        return
    if isinstance(rows, dict):
        table = Table(title=_plain(title), show_header=False)
        table.add_column("field", style="bold")
        table.add_column("value")
        for key, value in rows.items():
            table.add_row(Text(key), Text(_fmt(key, value)))
        console.print(table)
        return
    if not rows:
        console.print(Text(f"(no {title or 'rows'})"))
        return
    cols = list(columns or rows[0].keys())
    table = Table(title=_plain(title))
    for col in cols:
        justify: JustifyMethod = "right" if isinstance(rows[0].get(col), int) else "left"
        table.add_column(Text(col), justify=justify)
    for row in rows:
        table.add_row(*(Text(_fmt(c, row.get(c))) for c in cols))
    console.print(table)


@contextmanager
def progress_bar(total: int, label: str, hidden: bool = False) -> Iterator[Callable[[int], None]]:
    """A bar on stderr for long work (hidden when stderr is not a terminal, or for --json),
    moved by a callback told how many of `total` items are done so far."""
    with click.progressbar(
        length=total, label=label, file=sys.stderr, hidden=hidden or not sys.stderr.isatty()
    ) as bar:
        shown = [0]

        def tick(done: int) -> None:
            bar.update(done - shown[0])
            shown[0] = done

        yield tick


def _plain(title: str) -> Text | None:
    """Text as written: what people typed (a product called "Tee [blue]") and words like
    "[hq] url" are not rich markup, which would drop the bracketed part."""
    return Text(title) if title else None


def op_ref(op: Op) -> str:
    """How commands name an op: `origin:seq`."""
    return f"{op.origin}:{op.seq}"


# -- files named on the command line --------------------------------------------------------------


def read_file(path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror}") from None


def write_file(path: str, data: bytes) -> None:
    """Write through a temporary file, so a failed write never leaves half a file at `path`."""
    tmp = Path(path + ".tmp")
    try:
        tmp.write_bytes(data)
        tmp.replace(path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise InputError(f"cannot write {path}: {exc.strerror}") from None
