"""The documentation names every command: README.md or a page of docs/ shows each command path of
the click tree as it is typed (`meshpos report z`, `... | report z` on a line of commands, or a
code span opening with it); `--help` of each is tested in test_cli_basics.py. Commands the docs
do not show yet are listed below; the list may only shrink."""

from __future__ import annotations

import re
from pathlib import Path

import click
from test_cli_basics import walk

from meshpos.cli.app import cli
from meshpos.cli.common import DefaultGroup
from meshpos.cli.reference import render

ROOT = Path(__file__).resolve().parents[1]

# Shown by `--help` but not yet in README.md or docs/*.md (docs/cli.md shows every command).
UNDOCUMENTED: set[str] = set()


def docs_text(root: Path = ROOT) -> str:
    return "\n".join(p.read_text() for p in [root / "README.md", *sorted(root.glob("docs/*.md"))])


def mentioned(path: tuple[str, ...], text: str) -> bool:
    """`meshpos [--opt [VALUE]]... PATH`, `| PATH` after a command on its line, or PATH opening
    a `code span`."""
    words = r"\s+".join(map(re.escape, path)) + r"(?=[\s`|\])]|$)"
    options = r"(?:\s+--?[\w-]+(?:\s+[^\s`|-][^\s`|]*)?)*"
    return any(
        re.search(pattern, text, re.MULTILINE)
        for pattern in (
            rf"\bmeshpos{options}\s+{words}",
            rf"\bmeshpos [^\n]*\|\s*{words}",
            rf"`{words}",
        )
    )


def undocumented(root_command: click.Command, text: str) -> set[str]:
    """Command paths the docs do not show; a group's default command counts as shown with it."""
    missing = set()
    for path, cmd in walk(root_command):
        if not isinstance(cmd, click.Group):
            continue
        default = cmd.default_cmd if isinstance(cmd, DefaultGroup) else None
        for name in cmd.commands:
            sub = (*path, name)
            if not (mentioned(sub, text) or (name == default and mentioned(path, text))):
                missing.add(" ".join(sub))
    return missing


def test_the_docs_show_every_command() -> None:
    missing = undocumented(cli, docs_text())
    assert missing - UNDOCUMENTED == set(), "document these commands in README.md or docs/"
    assert UNDOCUMENTED - missing == set(), "now documented: take them off UNDOCUMENTED"


def test_the_check_sees_a_command_missing_from_the_docs() -> None:
    @click.group()
    def root() -> None:
        """Root."""

    @root.group(cls=DefaultGroup, default_cmd="show")
    def stock() -> None:
        """Stock."""

    for name in ("show", "receive", "adjust", "count"):
        stock.command(name)(lambda: None)
    root.command("sync-now")(lambda: None)
    text = (
        "meshpos --dir /x stock TSH\nmeshpos stock receive A 1 | stock adjust A -1\n"
        "sync-now, `stock.count` and `stock counts`\n"
    )
    assert undocumented(root, text) == {"stock count", "sync-now"}


def test_the_command_reference_is_the_one_help_prints() -> None:
    """docs/cli.md is rendered from the click tree: a command, option or help text changed in the
    code and not in the reference fails here (`python -m meshpos.cli.reference > docs/cli.md`)."""
    assert (ROOT / "docs" / "cli.md").read_text() == render()
