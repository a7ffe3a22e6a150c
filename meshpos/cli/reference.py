"""docs/cli.md, the command reference, rendered from the click tree itself.

Every command's usage, help and options come from the same objects `--help` prints, so the
reference cannot drift from the code: `tests/test_cli_docs.py` renders it and compares it with
the file. After changing a command, `python -m meshpos.cli.reference > docs/cli.md`.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator

import click

from meshpos.cli.app import cli

HEADER = """# Command reference

Generated from the code by `python -m meshpos.cli.reference > docs/cli.md` (a test keeps it in
step with `--help`). Every command takes the root options (`meshpos --dir DIR --user USER ...`);
data commands print a table for people and, with `--json`, integer paise and ids for scripts.
"""


def walk(
    cmd: click.Command, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], click.Command]]:
    yield path, cmd
    if isinstance(cmd, click.Group):
        for name in sorted(cmd.commands):
            yield from walk(cmd.commands[name], (*path, name))


def _section(path: tuple[str, ...], cmd: click.Command) -> str:
    ctx = click.Context(cmd, info_name=" ".join(("meshpos", *path)))
    usage = " ".join(cmd.collect_usage_pieces(ctx))
    lines = [
        f"## `{' '.join(('meshpos', *path))}`",
        "",
        "```",
        f"{ctx.info_name} {usage}",
        "```",
        "",
    ]
    help_text = (cmd.help or "").strip()
    if help_text:
        lines += [click.unstyle(help_text), ""]
    # Not the help option: click keeps it on a command once it ran, then with the root's `-h`.
    helps = {"--help", "-h"}
    options = [p.get_help_record(ctx) for p in cmd.get_params(ctx) if not helps & set(p.opts)]
    rows = [r for r in options if r is not None]
    if rows:
        lines += [f"- `{name}`: {text}" if text else f"- `{name}`" for name, text in rows]
        lines.append("")
    if isinstance(cmd, click.Group) and cmd.commands:
        lines += ["Commands: " + ", ".join(f"`{n}`" for n in sorted(cmd.commands)), ""]
    return "\n".join(lines)


def render() -> str:
    return HEADER + "\n" + "\n".join(_section(path, cmd) for path, cmd in walk(cli))


if __name__ == "__main__":
    sys.stdout.write(render())
