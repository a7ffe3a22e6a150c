"""`meshpos drill run KIND`: a staff drill with a real fault against practice tills."""

from __future__ import annotations

import sys

import click

from meshpos.core.errors import InputError
from meshpos.sim.drills import DRILLS, LETTERS


@click.group("drill")
def drill() -> None:
    """Staff drills: a real fault against practice tills, a checklist and a score."""


@drill.command("run")
@click.argument("kind", type=click.Choice(DRILLS))
@click.option("--auto", is_flag=True, help="A model trainee answers: shows what staff should do.")
@click.option(
    "--answers",
    metavar="LIST",
    help="Answers in order, comma-separated (a letter per question, `done` per task), for a "
    "scripted run instead of the prompt.",
)
@click.option("--no-web", is_flag=True, help="Do not serve web tills for the practice counters.")
@click.option("--keep", is_flag=True, help="Keep the practice store's directory afterwards.")
@click.option("--dir", "directory", type=click.Path(file_okay=False), help="Build it here.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON at the end.")
def drill_run(
    kind: str,
    auto: bool,
    answers: str | None,
    no_web: bool,
    keep: bool,
    directory: str | None,
    as_json: bool,
) -> None:
    """Run drill KIND (wan-outage, lan-split, printer-off, counter-dies): a practice store of
    three tills on this machine, the real fault, the checklist, what staff should have seen and
    done, and the score. Exits 1 if the store did not come through the fault."""
    import json

    from meshpos.sim.drills import DrillRun

    if auto and answers:
        raise InputError("give --auto or --answers, not both")
    ask = None
    if answers is not None:
        queue = [a.strip() for a in answers.split(",")]
        for a in queue:
            if a not in ("done", "") and (len(a) != 1 or a not in LETTERS):
                raise InputError(f"--answers: {a!r} must be a letter a-d or `done`")

        def scripted(prompt: str) -> str:
            if not queue:
                raise EOFError
            answer = queue.pop(0)
            click.echo(f"{prompt}{answer}")
            return answer

        ask = scripted
    elif not auto:
        if not sys.stdin.isatty():
            raise InputError(
                "no trainee at a terminal: answer interactively, or pass --auto or --answers"
            )

        def ask(prompt: str) -> str:
            return input(prompt)

    run = DrillRun(
        kind, ask=ask, auto=auto, web=not no_web, base=directory, keep=keep, say=click.echo
    )
    result = run.run()
    if as_json:
        click.echo(
            json.dumps(
                {
                    "drill": kind,
                    "score": result.score,
                    "total": result.total,
                    "store_ok": result.store_ok,
                    "items": [
                        {
                            "prompt": o.item.prompt,
                            "ok": o.ok,
                            "given": o.given,
                            "note": o.note,
                            "should": o.item.should,
                        }
                        for o in result.outcomes
                    ],
                    "checks": [{"what": w, "ok": ok} for w, ok in result.checks],
                },
                indent=2,
            )
        )
    if not result.store_ok:
        raise SystemExit(1)
