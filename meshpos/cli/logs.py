"""`meshpos logs`: read the daemon's (or HQ's) JSON-lines log as a table, or follow it.

The file is the one `[log] file` names (logs/meshpos.log in the node directory, logs/hq.log in
the HQ directory by default); rotated copies are read when the current file holds fewer lines
than asked for. Filters match the ids every line carries (peer, op, store) and the level.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable
from pathlib import Path

import click

from meshpos.cli.common import emit, json_option, node_dir
from meshpos.core.errors import InputError
from meshpos.hq import keys
from meshpos.service.config import load_config
from meshpos.service.logs import LEVELS, Entry, follow, last_entries, mark, node_log_settings

COLUMNS = ["time", "level", "source", "node", "peer", "op", "message"]
MAX_LINES = 100_000


def _log_file(ctx: click.Context, hq: bool, hq_dir: str | None, file: str | None) -> Path:
    if file:
        return Path(file)
    if hq or hq_dir:
        cfg = keys.load_hq(keys.resolve_dir(hq_dir))
        path = cfg.log_settings().path(cfg.dir)
        where = f"{cfg.dir / keys.CONFIG_FILE}"
    else:
        node = load_config(node_dir(ctx))
        path = node_log_settings(node).path(node.dir)
        where = f"{node.dir / 'meshpos.toml'}"
    if path is None:
        raise InputError(f'{where} has [log] file = "": this process writes no log file')
    return path


def _wanted(
    level: str | None, peer: str | None, op: str | None, store: str | None
) -> Callable[[Entry], bool]:
    floor = LEVELS.index(level) if level else 0

    def keep(e: Entry) -> bool:
        if level and (e.level not in LEVELS or LEVELS.index(e.level) < floor):
            return False
        f = e.fields
        return (
            (not peer or f.get("peer", "").startswith(peer))
            and (not op or op in f.get("op", ""))
            and (not store or f.get("store") == store)
        )

    return keep


def _row(e: Entry) -> dict[str, str]:
    msg = e.msg + (f"\n{e.exc}" if e.exc else "")
    return {
        "time": e.local_time(),
        "level": e.level,
        "source": e.logger.removeprefix("meshpos."),
        "node": e.fields.get("node", "")[:12],
        "peer": e.fields.get("peer", ""),
        "op": e.fields.get("op", ""),
        "message": msg,
    }


def _line(e: Entry) -> str:
    """One record as a line for a person following the log."""
    ids = " ".join(f"{k}={v}" for k, v in e.fields.items() if k in ("peer", "op", "store"))
    head = f"{e.local_time()} {e.level:<7} {e.logger.removeprefix('meshpos.')}"
    text = f"{head}: {e.msg}" + (f"  [{ids}]" if ids else "")
    return text + (f"\n{e.exc}" if e.exc else "")


def _show(entries: Iterable[Entry], as_json: bool) -> None:
    for e in entries:
        click.echo(e.raw if as_json else _line(e))
        sys.stdout.flush()  # a reader at the other end of a pipe sees each line as it comes


@click.command()
@click.option("-f", "--follow", "follow_", is_flag=True, help="Keep printing lines as they come.")
@click.option("-n", "--lines", default=50, show_default=True, type=click.IntRange(0, 100_000),
              help="How many of the last lines to show first.")  # fmt: skip
@click.option("--level", type=click.Choice(LEVELS), help="Only this level and above.")
@click.option("--peer", help="Only lines about this peer (node id or its start).")
@click.option("--op", help="Only lines about this op (origin:seq, or part of it).")
@click.option("--store", help="Only lines about this store (HQ's log).")
@click.option("--hq", is_flag=True, help="HQ's log ($MESHPOS_HQ_DIR or ./meshpos-hq).")
@click.option("--hq-dir", type=click.Path(file_okay=False), help="HQ's log, from this directory.")
@click.option("--file", type=click.Path(dir_okay=False), help="This log file.")
@json_option
@click.pass_context
def logs(
    ctx: click.Context,
    follow_: bool,
    lines: int,
    level: str | None,
    peer: str | None,
    op: str | None,
    store: str | None,
    hq: bool,
    hq_dir: str | None,
    file: str | None,
    as_json: bool,
) -> None:
    """The daemon's log: a table for people, JSON for scripts, -f to follow (Ctrl-C stops).

    With -f, --json prints each record as one JSON line, as the file holds it."""
    path = _log_file(ctx, hq, hq_dir, file)
    keep = _wanted(level, peer, op, store)
    if not path.exists() and not follow_:
        click.echo(f"no log at {path} yet: `meshpos node run` (or `hq serve`) writes it", err=True)
    filtered = any((level, peer, op, store))
    wanted = lines if not filtered else MAX_LINES
    end = mark(path)
    shown = [e for e in last_entries(path, wanted, end) if keep(e)][-lines:] if end else []
    if follow_:
        _show(shown, as_json)
        try:
            _show((e for e in follow(path, since=end) if keep(e)), as_json)
        except KeyboardInterrupt:
            return
        return
    if as_json:
        emit([_doc(e) for e in shown], True)
        return
    emit([_row(e) for e in shown], False, f"log {path}", COLUMNS)


def _doc(e: Entry) -> dict[str, object]:
    """A record as its JSON object (a line that is not JSON as its text)."""
    try:
        doc: dict[str, object] = json.loads(e.raw)
    except ValueError:
        return {"msg": e.raw}
    return doc if isinstance(doc, dict) else {"msg": e.raw}
