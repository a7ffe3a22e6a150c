"""`make demo`: two terminals of one store sell while disconnected, then sync by bundle.

It drives the same service layer as the CLI and prints the equivalent `meshpos` commands, so a
reader can repeat each step by hand.
"""

from __future__ import annotations

import json
import random
import sys
import tempfile
from pathlib import Path

from rich.console import Console
from rich.table import Table

from meshpos.domain.catalog import SAMPLE_CATALOG, parse_csv
from meshpos.domain.money import rupees
from meshpos.domain.pricing import Tender
from meshpos.service import cards
from meshpos.service.config import init_node
from meshpos.service.terminal import Terminal

console = Console(highlight=False, width=None if sys.stdout.isatty() else 110)


def step(text: str) -> None:
    console.print(f"\n[bold cyan]==> {text}[/]")


def cmd(text: str) -> None:
    console.print(f"    [dim]$ meshpos {text}[/]")


def open_terminal(base: Path, name: str) -> Terminal:
    cfg = init_node(base / name, "DEMO1", name)
    cmd(f"--dir {cfg.dir} init --store DEMO1 --name {name}")
    return Terminal.open(cfg.dir)


def sync(src: Terminal, dst: Terminal, base: Path) -> None:
    vv_file = base / f"{dst.cfg.name}-vv.json"
    vv_file.write_text(json.dumps(dst.ledger.vv()))
    cmd(f"--dir {dst.cfg.dir} sync vv --json > {vv_file}")
    data, count = src.export_bundle(dst.ledger.vv())
    path = base / f"{src.cfg.name}-to-{dst.cfg.name}.bundle"
    path.write_bytes(data)
    cmd(f"--dir {src.cfg.dir} sync export {path} --since {vv_file}")
    result = dst.import_bundle(path.read_bytes())
    cmd(f"--dir {dst.cfg.dir} sync import {path}")
    console.print(
        f"    {src.cfg.name} -> {dst.cfg.name}: {count} ops in {len(data):,} bytes, "
        f"{result.applied} applied"
    )


def main(argv: list[str]) -> int:
    base = Path(argv[0]) if argv else Path(tempfile.mkdtemp(prefix="meshpos-demo-"))
    base.mkdir(parents=True, exist_ok=True)
    rng = random.Random(2026)
    step(f"Two terminals of store DEMO1 in {base}")
    t1 = open_terminal(base, "T1")
    t2 = open_terminal(base, "T2")

    step("T1 loads the sample clothing catalogue; T2 receives it by bundle")
    rows = parse_csv(SAMPLE_CATALOG.read_text(), SAMPLE_CATALOG.name)
    products, _ = t1.import_catalog(rows)
    cmd(f"--dir {t1.cfg.dir} catalog import --sample")
    console.print(f"    {products} products with opening stock")
    t2.ledger.add_node(t1.node_record())
    t1.ledger.add_node(t2.node_record())
    sync(t1, t2, base)

    step("The LAN is down: both counters keep selling the same popular lines")
    hot = ["TSH-NAV-M", "JNS-BLA-L", "KUR-MAR-M", "HOD-GRE-L"]
    hot = [sku for sku in hot if any(r.sku == sku for r in rows)] or [r.sku for r in rows[:4]]
    cid = t1.add_customer({"name": "Asha Rao", "phone": "9800000001"})
    cmd(f"--dir {t1.cfg.dir} customer add --name 'Asha Rao' --phone 9800000001")
    for t in (t1, t2):
        for i in range(6):
            items = [(rng.choice(hot), rng.randint(1, 2)) for _ in range(rng.randint(1, 2))]
            machine = cards.machine_tender(None, f"{i + 1:06d}", "4242")
            pay = [machine] if i % 3 == 0 else [Tender("cash")]
            # Each counter has the goods in hand and sees only its own sales while split.
            r = t.sell(
                items,
                tenders=pay,
                customer=cid if t is t1 and i == 0 else None,
                allow_oversell=True,
            )
            text = " ".join(f"{s}x{q}" for s, q in items)
            console.print(
                f"    {t.cfg.name}: sale {r.sale_id:<18} {text:<28} total {rupees(r.payload['total']):>9}"
            )

    def stock_of(t: Terminal) -> dict[str, int]:
        return {row["sku"]: row["qty"] for row in t.stock() if row["sku"] in hot}

    before = (stock_of(t1), stock_of(t2))
    table = Table(title="stock while disconnected (each counter sees only its own sales)")
    for col in ("sku", "T1", "T2"):
        table.add_column(col)
    for sku in hot:
        table.add_row(sku, str(before[0][sku]), str(before[1][sku]))
    console.print(table)

    step("The counters meet again (a USB stick will do): bundles both ways")
    sync(t1, t2, base)
    sync(t2, t1, base)
    after = (stock_of(t1), stock_of(t2))
    table = Table(title="stock after sync: both counters' sales count on both")
    for col in ("sku", "T1", "T2", "equal"):
        table.add_column(col)
    for sku in hot:
        table.add_row(
            sku,
            str(after[0][sku]),
            str(after[1][sku]),
            "yes" if after[0][sku] == after[1][sku] else "NO",
        )
    console.print(table)

    step("Both replicas verify: signatures, hash chains, views equal a fresh fold")
    ok = True
    for t in (t1, t2):
        problems = t.ledger.verify()
        cmd(f"--dir {t.cfg.dir} verify")
        console.print(
            f"    {t.cfg.name}: {t.ledger.op_count()} ops, "
            + ("ok" if not problems else f"PROBLEMS {problems}")
        )
        ok = ok and not problems
    conflicts = t1.conflicts()
    console.print(f"    open conflicts (oversells flagged for a manager): {len(conflicts)}")
    equal = after[0] == after[1] and t1.ledger.vv() == t2.ledger.vv()
    verdict = "converged" if equal and ok else "DIVERGED"
    hint = f"meshpos --dir {base / 'T1'} report sales --by terminal"
    console.print(f"\n[bold]{verdict}[/]: try `{hint}`")
    for t in (t1, t2):
        t.close()
    return 0 if equal and ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
