"""`meshpos web serve`: the touch till in a browser, served by this terminal.

It runs beside `meshpos node run` (both use the node's database; the daemon syncs, the page sells),
or inside the daemon when meshpos.toml sets `[web] port`. Bound to 127.0.0.1 by default: the till's
browser runs on the terminal itself.
"""

from __future__ import annotations

import click

from meshpos.cli.common import node_dir
from meshpos.service.config import load_config
from meshpos.web.server import DEFAULT_PORT, WebSettings, serve


@click.group()
def web() -> None:
    """The web till: scan, sell, returns, stock of every counter, manager screen."""


@web.command("serve")
@click.option("--port", type=click.IntRange(0, 65535), help="Default: [web] port, else 8080.")
@click.option("--host", help="Address to listen on. Default: [web] host, else 127.0.0.1.")
@click.pass_context
def web_serve(ctx: click.Context, port: int | None, host: str | None) -> None:
    """Serve the web till until Ctrl-C; open the printed address in the counter's browser."""
    directory = node_dir(ctx)
    settings = WebSettings.from_config(load_config(directory))
    bind = host or settings.host
    chosen = (
        port if port is not None else (settings.port if settings.port is not None else DEFAULT_PORT)
    )

    def ready(server: object) -> None:
        sockets = [s for srv in getattr(server, "servers", []) for s in srv.sockets]
        actual = sockets[0].getsockname()[1] if sockets else chosen
        shown = "127.0.0.1" if bind in ("0.0.0.0", "::") else bind
        click.echo(f"web till for {directory.name} on http://{shown}:{actual}/ (Ctrl-C to stop)")

    serve(directory, bind, chosen, on_ready=ready)
