"""`meshpos` commands of the store mesh: store key, enrolment, the daemon, peers and status."""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import Any

import click

from meshpos.cli.app import _open, cli, emit, json_option, sync
from meshpos.core.errors import InputError, MeshposError
from meshpos.node import membership
from meshpos.service.daemon_link import SYNC_NOW_FILE, acked_seq, daemon_status
from meshpos.service.terminal import Terminal


@cli.group()
def store() -> None:
    """The store's key: the root of who may join its mesh."""


@store.command("init")
@json_option
@click.pass_context
def store_init(ctx: click.Context, as_json: bool) -> None:
    """Create the store key on this terminal and enrol this terminal (run once per store)."""
    t = _open(ctx)
    cert = membership.store_init(t)
    pub = t.cfg.store_public_key
    emit(
        {
            "store": cert.store,
            "node": cert.name,
            "node_id": cert.node_id,
            "store_public_key": pub.hex() if pub else "",
        },
        as_json,
        "store key created; this terminal is enrolled",
    )


@cli.group()
def enroll() -> None:
    """Enrol a terminal: `request` on it, `sign` where the store key is, `install` back on it."""


def _write(path: str, data: bytes) -> None:
    target = Path(path)
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(target)


def _read(path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror}") from None


@enroll.command("request")
@click.option(
    "--out", required=True, type=click.Path(dir_okay=False), help="Request file to write."
)
@click.pass_context
def enroll_request(ctx: click.Context, out: str) -> None:
    """Write this node's enrolment request (its public keys, signed by it)."""
    _write(out, membership.request(_open(ctx)))
    click.echo(f"request written to {out}: take it to the terminal that holds the store key")


@enroll.command("sign")
@click.argument("request_file", type=click.Path(dir_okay=False))
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Enrolment to write.")
@click.option("--role", default="terminal", type=click.Choice(["terminal", "hq"]))
@click.pass_context
def enroll_sign(ctx: click.Context, request_file: str, out: str, role: str) -> None:
    """Certify a node's request with the store key (run where `store init` was run)."""
    _write(out, membership.sign(_open(ctx), _read(request_file), role))
    click.echo(f"enrolment written to {out}: install it with `meshpos enroll install {out}`")


@enroll.command("install")
@click.argument("enrolment_file", type=click.Path(dir_okay=False))
@click.pass_context
def enroll_install(ctx: click.Context, enrolment_file: str) -> None:
    """Install a signed enrolment on this node: pins the store key, stores the certificate."""
    cert = membership.install(_open(ctx), _read(enrolment_file))
    click.echo(f"node {cert.name} ({cert.node_id}) is enrolled in store {cert.store}")


@cli.group()
def node() -> None:
    """The terminal daemon."""


@node.command("run")
@click.option("--host", help="Address to listen on (default [mesh] host or 127.0.0.1).")
@click.option(
    "--port", type=click.IntRange(0, 65535), help="TCP port (default [mesh] port; 0 = any)."
)
@click.option("--no-discovery", is_flag=True, help="Do not use mDNS; only [mesh] static_peers.")
@click.option(
    "--log-level",
    default="INFO",
    show_default=True,
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"]),
)
@click.pass_context
def node_run(
    ctx: click.Context, host: str | None, port: int | None, no_discovery: bool, log_level: str
) -> None:
    """Run the mesh daemon in the foreground: discovery, replication, logs (Ctrl-C stops)."""
    logging.basicConfig(
        level=log_level,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        force=True,  # python-escpos calls logging.basicConfig() when imported
    )
    overrides: dict[str, object] = {"host": host, "port": port}
    if no_discovery:
        overrides["discovery"] = False
    from meshpos.node.daemon import run_daemon

    run_daemon(ctx.find_root().obj["dir"], overrides)


@cli.command()
@json_option
@click.pass_context
def peers(ctx: click.Context, as_json: bool) -> None:
    """The LAN peers the running daemon sees: address, last seen, ops behind/ahead."""
    t = _open(ctx)
    status = daemon_status(t.cfg.dir)
    if not status:
        raise InputError("the daemon is not running: start it with `meshpos node run`")
    now = time.time() * 1000
    rows = [
        {
            **p,
            "last_seen": f"{(now - p['last_seen_ms']) / 1000:.1f} s ago"
            if p["last_seen_ms"]
            else "never",
        }
        for p in status["peers"]
    ]
    if as_json:
        emit(status["peers"], True)
        return
    emit(rows, False, "peers", ["name", "node_id", "address", "up", "last_seen", "behind", "ahead"])


@cli.command()
@json_option
@click.pass_context
def status(ctx: click.Context, as_json: bool) -> None:
    """This terminal's state: LAN peers, sync lag, copies held, conflicts, WAN."""
    t = _open(ctx)
    d = daemon_status(t.cfg.dir)
    own = t.ledger.head(t.node_id)[0]
    acked = acked_seq(t)
    info = {
        "terminal": t.cfg.name,
        "store": t.cfg.store,
        "node_id": t.node_id,
        "daemon": "running" if d else "not running",
        "lan_peers_up": d.get("peers_up", 0),
        "lan_peers_known": len(d.get("peers", [])),
        "max_peer_lag_ops": max((p["behind"] for p in d.get("peers", [])), default=0),
        "ops_total": t.ledger.op_count(),
        "local_ops": own,
        "held_by_one_copy": max(0, own - acked),
        "pending_gaps": t.ledger.pending_count(),
        "recovering_history": t.bootstrapping(),
        "conflicts_open": len(t.conflicts()),
        "enrolled": (t.cfg.dir / membership.NODE_CERT).exists(),
        **_wan_fields(t, d),
    }
    emit(info, as_json, "status")


def _wan_fields(t: Terminal, d: dict[str, Any]) -> dict[str, Any]:
    url = t.cfg.section("hq").get("url")
    if not url:
        return {"wan": "no HQ configured ([hq] url)"}
    wan = d.get("wan")
    if not wan:
        return {"wan": "unknown (daemon not running)", "hq": url}
    names = {p["node_id"]: p["name"] for p in d.get("peers", [])}
    relay = wan.get("relay")
    relay_name = "this node" if relay == t.node_id else names.get(relay, relay or "nobody")
    since = wan.get("wan_since_ms") or 0
    last = wan.get("last_sync_ms") or 0
    fmt = "%Y-%m-%d %H:%M:%S"
    return {
        "wan": ("up" if wan.get("wan_ok") else "DOWN")
        + (f" since {time.strftime(fmt, time.localtime(since / 1000))}" if since else ""),
        "hq": url,
        "hq_relay": relay_name,
        "last_hq_sync": time.strftime(fmt, time.localtime(last / 1000)) if last else "never",
        "ops_waiting_for_hq": wan.get("ops_waiting", 0),  # this node's ops HQ lacked at its probe
        "last_hq_error": wan.get("last_error") or "",
    }


@sync.command("now")
@click.option("--wait", "wait_s", default=15.0, show_default=True, help="Seconds to wait.")
@click.pass_context
def sync_now(ctx: click.Context, wait_s: float) -> None:
    """Run an HQ sync round now (through the running daemon) and report how it went."""
    t = _open(ctx)
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
        wan = daemon_status(t.cfg.dir).get("wan") or {}
        if wan.get("rounds", 0) > before:
            click.echo(
                f"HQ sync done: {wan.get('ops_up', 0)} ops up and {wan.get('ops_down', 0)} down "
                f"since the daemon started; {wan.get('ops_waiting', 0)} waiting"
            )
            return
    wan = daemon_status(t.cfg.dir).get("wan") or {}
    raise MeshposError(
        f"no HQ round finished in {wait_s:g} s: {wan.get('last_error') or 'HQ unreachable?'}"
    )
