"""`meshpos sync ...`: version vectors and signed bundles (the file-based sync path), and an HQ
round run now through the running daemon."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import click

from meshpos.cli.common import emit, json_option, open_terminal, read_file, write_file
from meshpos.core.errors import InputError, MeshposError
from meshpos.service.daemon_link import SYNC_NOW_FILE, daemon_status


@click.group()
def sync() -> None:
    """Version vectors and bundles: the file-based sync path."""


@sync.command("vv")
@json_option
@click.pass_context
def sync_vv(ctx: click.Context, as_json: bool) -> None:
    """This node's version vector: highest contiguous seq held per origin."""
    t = open_terminal(ctx)
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
@json_option
@click.pass_context
def sync_export(ctx: click.Context, file: str, since_file: str | None, as_json: bool) -> None:
    """Write a signed bundle of ops to FILE."""
    since = _read_vv(since_file) if since_file else None
    data, count = open_terminal(ctx).export_bundle(since)
    write_file(file, data)
    if as_json:
        emit({"file": file, "ops": count, "bytes": len(data)}, True)
        return
    click.echo(f"exported {count} ops ({len(data)} bytes) to {file}")


@sync.command("import")
@click.argument("file", type=click.Path(dir_okay=False))
@json_option
@click.pass_context
def sync_import(ctx: click.Context, file: str, as_json: bool) -> None:
    """Merge a bundle; applies only what this node lacks (importing twice changes nothing)."""
    data = read_file(file)
    r = open_terminal(ctx).import_bundle(data)
    if as_json:
        emit({"applied": r.applied, "duplicates": r.duplicates, "pending": r.pending}, True)
        return
    click.echo(
        f"imported {r.applied} new ops ({r.duplicates} already held, {r.pending} waiting "
        "for a gap to fill)"
    )


@sync.command("now")
@click.option("--wait", "wait_s", default=15.0, show_default=True, help="Seconds to wait.")
@json_option
@click.pass_context
def sync_now(ctx: click.Context, wait_s: float, as_json: bool) -> None:
    """Run an HQ sync round now (through the running daemon) and report how it went: what this
    counter sent and took since its daemon started, and which counter relays the store."""
    t = open_terminal(ctx)
    d = daemon_status(t.cfg.dir)
    if not d:
        raise InputError("the daemon is not running: start it with `meshpos node run`")
    if not d.get("wan"):
        raise InputError("no HQ is configured: set [hq] url in meshpos.toml")
    before = d["wan"].get("rounds", 0)
    (t.cfg.dir / SYNC_NOW_FILE).touch()
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        time.sleep(0.1)
        status = daemon_status(t.cfg.dir)
        wan = status.get("wan") or {}
        if wan.get("rounds", 0) > before:
            _said_round(t.node_id, status, wan, as_json)
            return
    wan = daemon_status(t.cfg.dir).get("wan") or {}
    raise MeshposError(
        f"no HQ round finished in {wait_s:g} s: {wan.get('last_error') or 'HQ unreachable?'}"
    )


def _said_round(me: str, status: dict[str, Any], wan: dict[str, Any], as_json: bool) -> None:
    """A finished round in words: a counter that is not the relay says who is, since its own
    counts stay at zero while the relay carries the store's ops."""
    relay = wan.get("relay")
    names = {p.get("node_id"): p.get("name") for p in status.get("peers") or []}
    up, down, waiting = wan.get("ops_up", 0), wan.get("ops_down", 0), wan.get("ops_waiting", 0)
    if as_json:
        emit({"ops_up": up, "ops_down": down, "ops_waiting": waiting, "relay": relay,
              "relay_is_me": relay == me}, True)  # fmt: skip
        return
    counts = f"{up} ops up and {down} down since the daemon started; {waiting} waiting"
    if relay and relay != me:
        click.echo(
            f"HQ sync done; {names.get(relay) or relay} relays this store to HQ "
            f"(this counter: {counts})"
        )
    else:
        click.echo(f"HQ sync done: {counts}")
