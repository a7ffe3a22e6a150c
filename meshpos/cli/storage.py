"""`meshpos encrypt`, `backup ...` and `restore`: the node's database at rest (SQLCipher), its
sealed backups, and bringing it back from one."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import click

from meshpos.cli.common import (
    DefaultGroup,
    emit,
    json_option,
    node_dir,
    open_terminal,
    progress_bar,
)
from meshpos.core.clock import wall_ms
from meshpos.core.errors import InputError, MeshposError
from meshpos.service.backup.create import create_backup
from meshpos.service.backup.format import read_header
from meshpos.service.backup.restore import restore_backup, verify_backup
from meshpos.service.backup.targets import (
    BackupSettings,
    DirectoryTarget,
    backup_prefix,
    list_backups,
)
from meshpos.service.config import NodeConfig, load_config
from meshpos.service.daemon_link import daemon_status
from meshpos.service.encryption import encrypt_node


def _config(ctx: click.Context) -> NodeConfig:
    """The node's config without opening (or creating) its database."""
    return load_config(node_dir(ctx))


def _no_daemon(cfg: NodeConfig, what: str) -> None:
    if daemon_status(cfg.dir):
        raise InputError(f"the daemon of {cfg.name} is running: stop it before {what}")


# -- encryption at rest ---------------------------------------------------------------------------


@click.command()
@click.option(
    "--passphrase",
    "use_passphrase",
    is_flag=True,
    help="Unlock with a passphrase at start ($MESHPOS_PASSPHRASE or a prompt) instead of db.key.",
)
@json_option
@click.pass_context
def encrypt(ctx: click.Context, use_passphrase: bool, as_json: bool) -> None:
    """Encrypt this node's database at rest (SQLCipher); verified before the plain copy goes."""
    cfg = _config(ctx)
    _no_daemon(cfg, "encrypting its database")
    r = encrypt_node(cfg, "passphrase" if use_passphrase else "file")
    info: dict[str, Any] = {
        "database": str(cfg.db_path),
        "ops": r.ops,
        "key": str(r.key_file) if r.mode == "file" else "passphrase (scrypt)",
        "status": "already encrypted" if r.already else "encrypted and verified",
    }
    emit(info, as_json, "encryption at rest")
    if not r.already and not as_json:
        where = f"the key file {r.key_file}" if r.mode == "file" else "the passphrase"
        click.echo(
            f"keep a copy of {where} away from this terminal: without it neither the database "
            "nor its backups can be read"
        )


# -- backups --------------------------------------------------------------------------------------


@click.group(cls=DefaultGroup, default_cmd="create")
def backup() -> None:
    """Backups: take one (default), list them, verify a file."""


@backup.command("create")
@click.option(
    "--to",
    "to_dir",
    type=click.Path(file_okay=False),
    help="Also copy it to this directory (default [backup] offsite_dir), e.g. a USB stick.",
)
@click.option(
    "--keep", type=click.IntRange(1, 100000), help="Backups to keep (default [backup] keep)."
)
@json_option
@click.pass_context
def backup_create(ctx: click.Context, to_dir: str | None, keep: int | None, as_json: bool) -> None:
    """Snapshot the database while selling goes on, check its pages and log, seal it, rotate,
    copy off-site (its views are refolded and verified at restore)."""
    t = open_terminal(ctx)
    target = DirectoryTarget(Path(to_dir).expanduser()) if to_dir else None
    r = create_backup(t.cfg, t.ledger, now_ms=wall_ms(), target=target, keep=keep)
    info = {
        "file": str(r.path),
        "ops": r.ops,
        "bytes": r.bytes,
        "verified": True,
        "checked": r.checked,
        "seconds": round(r.snapshot_s + r.verify_s + r.seal_s, 3),
        "offsite": r.offsite or r.offsite_error or "-",
        "rotated_out": len(r.removed),
    }
    emit(info, as_json, "backup")
    if r.offsite_error:
        raise MeshposError(f"backup kept locally, but the off-site copy failed: {r.offsite_error}")


@backup.command("list")
@json_option
@click.pass_context
def backup_list(ctx: click.Context, as_json: bool) -> None:
    """This node's backups, oldest first (local, then off-site)."""
    cfg = _config(ctx)
    s = BackupSettings.from_config(cfg)
    rows = []
    for where, directory in (("local", s.dir), ("off-site", s.offsite_dir)):
        if directory is None:
            continue
        for path in list_backups(directory, backup_prefix(cfg)):
            try:
                h = read_header(path)
                row = {
                    "where": where,
                    "file": str(path),
                    "ops": h.ops,
                    "bytes": path.stat().st_size,
                }
            except MeshposError as exc:
                row = {"where": where, "file": str(path), "ops": None, "bytes": str(exc)}
            rows.append(row)
    emit(rows, as_json, "backups")


@backup.command("verify")
@click.argument("file", type=click.Path(dir_okay=False, exists=True))
@click.option(
    "--key-file",
    type=click.Path(dir_okay=False, exists=True),
    help="db.key or backup.key the backup was sealed with (default: this node's).",
)
@json_option
@click.pass_context
def backup_verify(ctx: click.Context, file: str, key_file: str | None, as_json: bool) -> None:
    """Authenticate a backup file and run verify on the database inside it."""
    cfg = _optional_config(ctx)
    with progress_bar(read_header(Path(file)).ops, "verifying", hidden=as_json) as tick:
        check = verify_backup(
            Path(file),
            cfg=cfg,
            key_file=Path(key_file) if key_file else None,
            workdir=cfg.dir if cfg else None,
            progress=tick,
        )
    h = check.header
    info = {
        "file": file,
        "store": h.store,
        "terminal": f"{h.name} ({h.node_id})",
        "created": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(h.created_ms / 1000)),
        "ops": check.ops,
        "problems": len(check.problems),
    }
    emit(info, as_json, "backup")
    if check.problems:
        for p in check.problems:
            click.echo(f"problem: {p}", err=True)
        hint = (
            " (its log is sound: `meshpos restore` rebuilds the views)" if check.log_sound else ""
        )
        raise MeshposError(f"backup {file} fails verify: {len(check.problems)} problem(s){hint}")


def _optional_config(ctx: click.Context) -> NodeConfig | None:
    try:
        return _config(ctx)
    except MeshposError:
        return None


@click.command()
@click.argument("file", type=click.Path(dir_okay=False, exists=True))
@click.option(
    "--key-file",
    type=click.Path(dir_okay=False, exists=True),
    help="db.key or backup.key the backup was sealed with, if not this node's.",
)
@click.option("--force", is_flag=True, help="Restore even over a database with newer own ops.")
@json_option
@click.pass_context
def restore(
    ctx: click.Context, file: str, key_file: str | None, force: bool, as_json: bool
) -> None:
    """Bring this terminal's database back from a backup (verified first); the daemon then
    catches up the rest from its peers."""
    cfg = _config(ctx)
    _no_daemon(cfg, "restoring")
    with progress_bar(read_header(Path(file)).ops, "verifying", hidden=as_json) as tick:
        r = restore_backup(
            cfg,
            Path(file),
            key_file=Path(key_file) if key_file else None,
            force=force,
            now_ms=wall_ms(),
            progress=tick,
        )
    info = {
        "restored": file,
        "from_terminal": f"{r.header.name} ({r.header.node_id})",
        "ops": r.ops,
        "previous_database": str(r.moved_to) if r.moved_to else "-",
        "views": "rebuilt from the log" if r.views_rebuilt else "as backed up",
    }
    emit(info, as_json, "restored and verified")
    if not as_json:
        click.echo(
            "next: start the daemon (`meshpos node run`) and let it catch up from its peers"
            + (
                " BEFORE selling: ops this terminal made after the backup may be held by its "
                "peers only"
                if r.same_identity
                else ""
            )
        )
