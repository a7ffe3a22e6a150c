"""`meshpos sim`: the outage simulator (run a scenario, search for invariant violations, a live
drill with real node processes). The simulator itself lives in the `sim` package.

Its modules are imported inside the commands that use them: together they would add about
0.2 s (matplotlib, hypothesis) to every other `meshpos` command.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.progress import BarColumn, TextColumn, TimeElapsedColumn
from rich.progress import Progress as Bar

from meshpos.core.errors import InputError


def _scenario_path(name: str) -> Path:
    """A file, or the name of a shipped scenario (`meshpos sim list`)."""
    path = Path(name)
    if path.exists():
        return path
    from meshpos.sim.scenario import shipped

    known = shipped()
    if name in known:
        return known[name]
    if name.removesuffix(".toml") in known:
        return known[name.removesuffix(".toml")]
    raise InputError(f"no scenario file {name!r}; shipped scenarios: {', '.join(sorted(known))}")


@click.group()
def sim() -> None:
    """Outage simulator: seeded, reproducible outages with numbers and plots."""


@sim.command("list")
def sim_list() -> None:
    """The scenarios shipped with meshpos."""
    from meshpos.sim.scenario import load, shipped

    for name, path in sorted(shipped().items()):
        sc = load(path)
        click.echo(f"{name:24} {sc.description}")


@sim.command("run")
@click.argument("scenario")
@click.option("--seed", type=int, help="Override the scenario's seed.")
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    help="Write report.json and report.html (plots) into this directory.",
)
@click.option(
    "--shorten",
    type=click.FloatRange(0, 1, min_open=True),
    default=1.0,
    show_default=True,
    help="Compress the day by this factor (times and durations; rates stay).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON on stdout.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def sim_run(
    scenario: str, seed: int | None, out: str | None, shorten: float, as_json: bool, quiet: bool
) -> None:
    """Run SCENARIO (a TOML file or a shipped name) and report: ops lost, convergence after each
    heal, stock divergence, oversells, double spends prevented, HQ lag, bytes moved.

    Exits 2 when an invariant is violated."""
    from meshpos.sim.engine import Progress, Simulation
    from meshpos.sim.report import print_table, to_html, to_json
    from meshpos.sim.scenario import load

    sc = load(_scenario_path(scenario))
    if shorten < 1:
        sc = sc.scaled(shorten)
    simulation = Simulation(sc, seed)
    err = Console(stderr=True)
    started, cpu = time.perf_counter(), time.process_time()
    report = _with_progress(simulation, err, quiet, Progress)
    took, cpu = time.perf_counter() - started, time.process_time() - cpu
    hours = sc.duration_ms / 3_600_000 * len(sc.stores)
    err.print(
        f"simulated {sc.duration_ms / 3_600_000:.1f} h x {len(sc.stores)} store(s) in {took:.1f} s "
        f"wall, {cpu:.1f} s CPU ({hours / took:.2f} store-hours per second)",
        style="dim",
        highlight=False,
        soft_wrap=True,
    )
    if out:
        directory = Path(out)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "report.json").write_bytes(to_json(report))
        (directory / "report.html").write_text(to_html(report))
        err.print(
            f"report written to {directory / 'report.json'} and report.html",
            highlight=False,
            soft_wrap=True,
        )
    if as_json:
        click.echo(to_json(report).decode(), nl=False)
    else:
        print_table(report, Console(highlight=False))
    if not report["ok"]:
        sys.exit(2)


def _with_progress(simulation: Any, err: Console, quiet: bool, progress_type: Any) -> Any:
    if quiet or not err.is_terminal:
        return simulation.run()
    with Bar(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[clock]}"),
        TimeElapsedColumn(),
        console=err,
        transient=True,
    ) as bar:
        task = bar.add_task("setting up stores", total=1000, clock="")
        sc = simulation.sc

        def update(p: Any) -> None:
            if p.phase == "setup":
                bar.update(task, completed=0, clock=f"{p.done_ms}/{p.total_ms} stores")
                return
            minutes = (sc.start_ms + p.done_ms) // 60_000
            desc = "simulating" if p.phase == "run" else "healing and checking"
            bar.update(
                task,
                description=desc,
                completed=1000 * p.done_ms // max(1, p.total_ms),
                clock=f"{minutes // 60:02d}:{minutes % 60:02d}",
            )

        return simulation.run(update)


@sim.command("fuzz")
@click.option("--examples", default=200, show_default=True, type=click.IntRange(1, 1_000_000))
@click.option("--seed", default=0, show_default=True, type=int, help="Hypothesis seed.")
@click.option(
    "--out",
    default=".",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Where a failing scenario is written (as TOML).",
)
def sim_fuzz(examples: int, seed: int, out: str) -> None:
    """Let hypothesis generate small scenarios (partitions, WAN cuts, crashes, dead disks, lossy
    links, skewed clocks) and check the invariants: convergence after heal, no lost acknowledged
    op, no double-spent point, HQ equal to the union of the store. A failure is shrunk and
    written out as a scenario file that reproduces it (exit 2)."""
    from meshpos.sim.fuzz import fuzz

    err = Console(stderr=True)
    started = time.perf_counter()
    result = fuzz(examples, seed, Path(out), log=lambda m: err.print(m, highlight=False))
    took = time.perf_counter() - started
    if result.failure is None:
        click.echo(f"{result.runs} scenarios, no invariant violated ({took:.0f} s)")
        return
    click.echo(f"invariant violated after {result.runs} scenarios; shrunk case: {result.path}")
    for v in result.failure:
        click.echo(f"  {v}")
    click.echo(f"reproduce: meshpos sim run {result.path}")
    sys.exit(2)


@sim.command("live")
@click.option("--nodes", default=3, show_default=True, type=click.IntRange(2, 8))
@click.option("--seconds", default=40, show_default=True, type=click.IntRange(5, 3600))
@click.option("--seed", default=1, show_default=True, type=int)
@click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False),
    help="Where the node directories go (default: a temporary directory, removed after).",
)
@click.option("--keep", is_flag=True, help="Keep the node directories after the drill.")
def sim_live(nodes: int, seconds: int, seed: int, directory: str | None, keep: bool) -> None:
    """A staff drill: real `meshpos node run` processes on loopback, sales rung at each counter,
    real faults (a frozen terminal, a killed one, a restart); prints what each counter shows.
    Bounded in time; every process it starts is stopped at the end."""
    from meshpos.sim.live import Drill

    drill = Drill(nodes=nodes, seconds=seconds, seed=seed, base=directory, keep=keep)
    summary = drill.run(print_line=lambda line: click.echo(line))
    if not summary.converged:
        click.echo("the counters did not agree by the end of the drill", err=True)
        sys.exit(2)
