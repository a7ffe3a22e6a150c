"""`meshpos ops tail`, `verify` and `rebuild`: the op log as the audit trail, checked against the
views and refolded into them."""

from __future__ import annotations

import sys
from typing import Any

import click

from meshpos.cli.common import emit, json_option, op_ref, open_terminal, progress_bar
from meshpos.core.clock import wall_of
from meshpos.core.errors import MeshposError
from meshpos.domain.money import rupees
from meshpos.domain.paper import paper_of
from meshpos.service.card_scan import card_number_problems
from meshpos.service.config import loose_modes


@click.group()
def ops() -> None:
    """The op log: the audit trail."""


@ops.command("tail")
@click.option("-n", "count", default=20, show_default=True, type=click.IntRange(1, 100000))
@json_option
@click.pass_context
def ops_tail(ctx: click.Context, count: int, as_json: bool) -> None:
    """The latest ops: who did what, when, where."""
    t = open_terminal(ctx)
    names = {n.node_id: n.name for n in t.ledger.nodes()}
    zone = t.store_time()
    rows = [
        {
            "op": op_ref(op),
            "terminal": names.get(op.origin, op.origin),
            "time": zone.iso(wall_of(op.hlc), seconds=True),
            "user": op.user,
            "kind": op.kind,
            "summary": _summary(op.payload),
        }
        for op in t.ledger.tail(count)
    ]
    emit(rows, as_json, "ops")


def _summary(p: Any) -> str:
    paper = paper_of(p)
    if paper is not None:
        return f"PAPER slip {paper.get('slip')}: {p.get('sale_id')} total {rupees(p['total'])}"
    for key in ("sale_id", "sku", "customer_id", "conflict_id", "key", "user_id"):
        if key in p:
            extra = f" total {rupees(p['total'])}" if "total" in p else ""
            extra += f" {p['delta']:+d}" if "delta" in p else ""
            return f"{p[key]}{extra}"
    return ""


@click.command()
@click.option("--full", is_flag=True, help="Check every op's signature, not one per chain.")
@json_option
@click.pass_context
def verify(ctx: click.Context, full: bool, as_json: bool) -> None:
    """Check signatures, hash chains, and every view against a fresh fold of the log; warn
    about files in the node directory that other accounts may read. Exits 1 on a problem."""
    t = open_terminal(ctx)
    loose = loose_modes(t.cfg.dir)
    for warning in [] if as_json else loose:
        click.echo(f"warning: {warning}", err=True)
    count = t.ledger.op_count()
    with progress_bar(count, "refolding the log", hidden=as_json) as tick:
        problems = t.ledger.verify(every_signature=full, progress=tick)
    problems += card_number_problems(t.cfg)
    sealed = t.ledger.sealed_status()
    if as_json:
        report = {"ok": not problems, "ops": count, "every_signature": full}
        emit({**report, "problems": problems, "warnings": loose, "sealed_cards": sealed}, True)
        if problems:
            sys.exit(1)
        return
    if problems:
        for p in problems:
            click.echo(f"problem: {p}", err=True)
        raise MeshposError(f"verify found {len(problems)} problem(s)")
    signatures = "every signature" if full else "one signature per chain"
    click.echo(f"ok: {count} ops, chains and {signatures} valid, views match the log")
    if any(sealed.values()):
        click.echo(
            f"card data sealed to HQ: {sealed['held_awaiting_hq']} held awaiting HQ's answer; "
            f"{sealed['answered']} answered by HQ and deleted here (the signed sale keeps its "
            "SHA-256)"
        )


@click.command()
@click.pass_context
def rebuild(ctx: click.Context) -> None:
    """Refold every view from the op log."""
    t = open_terminal(ctx)
    count = t.ledger.op_count()
    with progress_bar(count, "refolding the log") as tick:
        t.ledger.rebuild(progress=tick)
    click.echo(f"rebuilt views from {count} ops")
