"""`meshpos` commands of the store mesh: a node's creation, the store key, enrolment, the daemon,
peers and status."""

from __future__ import annotations

import time
from typing import Any

import click

from meshpos.cli.common import (
    emit,
    json_option,
    node_dir,
    open_terminal,
    read_file,
    write_file,
)
from meshpos.core.errors import InputError
from meshpos.node import membership
from meshpos.service.clocks import clocks_ahead
from meshpos.service.config import init_node, load_config
from meshpos.service.daemon_link import acked_seq, daemon_status
from meshpos.service.encryption import encrypt_new_node
from meshpos.service.logs import node_log_settings, setup_logging
from meshpos.service.terminal import Terminal


@click.command()
@click.option("--store", required=True, help="Store id shared by every terminal of the store.")
@click.option("--name", required=True, help="This terminal's name, unique in the store (e.g. T1).")
@click.option(
    "--default-user",
    default="cashier",
    show_default=True,
    help="User recorded on ops when --user is not given.",
)
@click.option(
    "--encrypt/--no-encrypt",
    default=True,
    show_default=True,
    help="Encrypt the database from its first page, with a new key in db.key (0600).",
)
@json_option
@click.pass_context
def init(
    ctx: click.Context, store: str, name: str, default_user: str, encrypt: bool, as_json: bool
) -> None:
    """Create a node: key pair, config file and database, for this account only (0600/0700);
    the database encrypted unless --no-encrypt. Keep a copy of db.key away from the terminal."""
    cfg = init_node(node_dir(ctx), store, name, default_user)
    key_file = encrypt_new_node(cfg) if encrypt else None
    t = open_terminal(ctx)
    emit(
        {
            "dir": str(cfg.dir),
            "store": cfg.store,
            "name": cfg.name,
            "node_id": t.node_id,
            "encrypted": encrypt,
            "key_file": str(key_file) if key_file else None,
        },
        as_json,
        "node created",
    )
    if key_file and not as_json:
        click.echo(f"keep a copy of {key_file} away from this terminal: without it neither the "
                   "database nor its backups can be read")  # fmt: skip


@click.group()
def store() -> None:
    """The store's key: the root of who may join its mesh."""


@store.command("init")
@json_option
@click.pass_context
def store_init(ctx: click.Context, as_json: bool) -> None:
    """Create the store key on this terminal and enrol this terminal (run once per store)."""
    t = open_terminal(ctx)
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


@store.command("revoke")
@click.argument("node")
@click.option("--reason", required=True, help="What happened: stolen, lost, sold, ...")
@json_option
@click.pass_context
def store_revoke(ctx: click.Context, node: str, reason: str, as_json: bool) -> None:
    """Revoke NODE (its name or node id), on the terminal that holds the store key: its ops after
    the last one this terminal holds take no effect, and every peer drops it as soon as it hears
    (a stolen or lost terminal). A replacement is enrolled afresh."""
    t = open_terminal(ctx)
    op, revoked = membership.revoke(t, node, reason)
    point = op.payload["after_seq"]
    emit(
        {
            "node": revoked.name,
            "node_id": revoked.node_id,
            "after_seq": point,
            "reason": op.payload["reason"],
            "op": f"{op.origin}:{op.seq}",
        },
        as_json,
        f"{revoked.name} revoked: its ops after #{point} take no effect; peers drop it as soon "
        "as they hear (run `meshpos node run` here to tell them now)",
    )


@store.command("retire")
@click.argument("node")
@click.option("--to", "to", required=True, help="The node (name or id) that takes over.")
@click.option("--reason", default="retired", show_default=True, help="Why, for the log.")
@json_option
@click.pass_context
def store_retire(ctx: click.Context, node: str, to: str, reason: str, as_json: bool) -> None:
    """Retire NODE (a dead or replaced terminal), on the terminal that holds the store key: the
    loyalty rights, card float and other escrowed balances it held move to the node named by --to,
    and, as with `revoke`, its ops after the last one held here take no effect."""
    t = open_terminal(ctx)
    op, retired = membership.revoke(t, node, reason, to=to)
    heir = next(n for n in t.ledger.nodes() if n.node_id == op.payload["to"])
    emit(
        {
            "node": retired.name,
            "node_id": retired.node_id,
            "to": heir.name,
            "to_node_id": heir.node_id,
            "after_seq": op.payload["after_seq"],
            "op": f"{op.origin}:{op.seq}",
        },
        as_json,
        f"{retired.name} retired: {heir.name} holds its loyalty rights and card float",
    )


@click.group()
def enroll() -> None:
    """Enrol a terminal: `request` on it, `sign` where the store key is, `install` back on it."""


@enroll.command("request")
@click.option(
    "--out", required=True, type=click.Path(dir_okay=False), help="Request file to write."
)
@click.pass_context
def enroll_request(ctx: click.Context, out: str) -> None:
    """Write this node's enrolment request (its public keys, signed by it)."""
    write_file(out, membership.request(open_terminal(ctx)))
    click.echo(f"request written to {out}: take it to the terminal that holds the store key")


INSTALL_HINTS = {
    "terminal": "on the new terminal run `meshpos enroll install {out}`, then start its "
    "daemon (`meshpos node run`); this terminal lets it in already",
    "hq": "at HQ run `meshpos hq install-cert {out} --dir HQ_DIR` (HQ's directory); this "
    "terminal accepts HQ's ops already",
}


@enroll.command("sign")
@click.argument("request_file", type=click.Path(dir_okay=False))
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Enrolment to write.")
@click.option("--role", default="terminal", type=click.Choice(["terminal", "hq"]))
@click.pass_context
def enroll_sign(ctx: click.Context, request_file: str, out: str, role: str) -> None:
    """Certify a node's request with the store key (run where `store init` was run). The node
    joins this terminal's roster at once: no HQ or mDNS is needed to let it in."""
    write_file(out, membership.sign(open_terminal(ctx), read_file(request_file), role))
    click.echo(f"enrolment written to {out}: {INSTALL_HINTS[role].format(out=out)}")


@enroll.command("install")
@click.argument("enrolment_file", type=click.Path(dir_okay=False))
@click.pass_context
def enroll_install(ctx: click.Context, enrolment_file: str) -> None:
    """Install a signed enrolment on this node: pins the store key, stores the certificate."""
    cert = membership.install(open_terminal(ctx), read_file(enrolment_file))
    click.echo(f"node {cert.name} ({cert.node_id}) is enrolled in store {cert.store}")


@click.group()
def node() -> None:
    """The terminal daemon."""


@node.command("reset-chain")
@click.option("--name", required=True, help="The terminal's new name (its receipts' new series).")
@click.option(
    "--out", required=True, type=click.Path(dir_okay=False), help="Request file to write."
)
@click.pass_context
def node_reset_chain(ctx: click.Context, name: str, out: str) -> None:
    """Give this terminal a new key and chain, after restoring an old backup (or when coming
    back as itself while a peer that holds its later ops is off): it can then never fork its
    old chain. The old keys move to replaced/; take the request to the store-key holder."""
    t = open_terminal(ctx)
    old_name = t.cfg.name
    old, req = membership.reset_chain(t, name)
    write_file(out, req)
    click.echo(
        f"{old_name} ({old}) now signs as {name}. On the store-key holder: `meshpos enroll sign "
        f"{out} --out ENROLMENT` and `meshpos store retire {old} --to {name}`; then here "
        "`meshpos enroll install ENROLMENT`"
    )


@node.command("run")
@click.option("--host", help="Address to listen on (default [mesh] host or 127.0.0.1).")
@click.option(
    "--port", type=click.IntRange(0, 65535), help="TCP port (default [mesh] port; 0 = any)."
)
@click.option("--no-discovery", is_flag=True, help="Do not use mDNS; only [mesh] static_peers.")
@click.option(
    "--log-level",
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"]),
    help="Default: [log] level of meshpos.toml, else INFO.",
)
@click.pass_context
def node_run(
    ctx: click.Context,
    host: str | None,
    port: int | None,
    no_discovery: bool,
    log_level: str | None,
) -> None:
    """Run the mesh daemon in the foreground: discovery, replication, logs (Ctrl-C stops).

    Logs go to stderr and, as JSON lines, to the rotating file `meshpos logs` reads ([log])."""
    cfg = load_config(node_dir(ctx))
    setup_logging(node_log_settings(cfg), cfg.dir, level=log_level, node=cfg.node_id,
                  store=cfg.store)  # fmt: skip
    overrides: dict[str, object] = {"host": host, "port": port}
    if no_discovery:
        overrides["discovery"] = False
    # Imported here: the daemon (zeroconf, the sync protocol) would add ~70 ms to every command.
    from meshpos.node.daemon import run_daemon

    run_daemon(node_dir(ctx), overrides)


@click.command()
@json_option
@click.pass_context
def peers(ctx: click.Context, as_json: bool) -> None:
    """The LAN peers the running daemon sees: address, last seen, ops behind/ahead."""
    t = open_terminal(ctx)
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


@click.command()
@json_option
@click.pass_context
def status(ctx: click.Context, as_json: bool) -> None:
    """This terminal's state: LAN peers, sync lag, copies held, conflicts, WAN."""
    t = open_terminal(ctx)
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
        "revoked": revoked.reason if (revoked := t.revoked()) else "no",
        "clocks_ahead": ", ".join(f"{c['name']} +{c['lead_ms'] // 1000} s" for c in clocks_ahead(t))
        or "none",
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
    zone = t.store_time()
    return {
        "wan": ("up" if wan.get("wan_ok") else "DOWN")
        + (f" since {zone.iso(since)}" if since else ""),
        "hq": url,
        "hq_relay": relay_name,
        "last_hq_sync": zone.iso(last) if last else "never",
        "ops_waiting_for_hq": wan.get("ops_waiting", 0),  # this node's ops HQ lacked at its probe
        "last_hq_error": wan.get("last_error") or "",
    }
