"""The Jinja2 environment of the server-rendered pages (the web till, HQ's dashboard): names a
customer or a product typed are escaped, a variable a template lacks is an error rather than an
empty string, and block tags leave no blank lines."""

from __future__ import annotations

from pathlib import Path

import jinja2


def environment(folder: Path) -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(folder)),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
