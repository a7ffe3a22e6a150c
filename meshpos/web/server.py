"""Running the web till: in the foreground (`meshpos web serve`) or on a thread of the daemon
(`meshpos node run` with `[web] port` set in meshpos.toml).

Nothing here imports Starlette or uvicorn until a server is actually started, so the daemon pays
nothing for the web till when it is not configured.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from meshpos.core.errors import ConfigError
from meshpos.service.config import NodeConfig

if TYPE_CHECKING:
    import uvicorn
    from starlette.applications import Starlette

log = logging.getLogger("meshpos.web")
DEFAULT_PORT = 8080
DEFAULT_HOST = "127.0.0.1"


@dataclass(frozen=True)
class WebSettings:
    """The `[web]` table of meshpos.toml: `port` (the daemon serves the till only when it is
    set; 0 picks a free port) and `host` (default 127.0.0.1: only this machine's browser)."""

    port: int | None = None
    host: str = DEFAULT_HOST

    @classmethod
    def from_config(cls, cfg: NodeConfig) -> WebSettings:
        raw = cfg.section("web")
        where = f"{cfg.dir / 'meshpos.toml'}: [web]"
        unknown = set(raw) - {"port", "host"}
        if unknown:
            raise ConfigError(f"{where} has unknown key(s) {', '.join(sorted(unknown))}")
        port = raw.get("port")
        if port is not None and (
            not isinstance(port, int) or isinstance(port, bool) or not 0 <= port <= 65535
        ):
            raise ConfigError(f"{where} port must be a whole number from 0 to 65535")
        host = raw.get("host", DEFAULT_HOST)
        if not isinstance(host, str) or not host:
            raise ConfigError(f"{where} host must be an address such as 127.0.0.1")
        return cls(port, host)


OnReady = Callable[["uvicorn.Server"], None]


def _server(
    app: Starlette, host: str, port: int, on_ready: OnReady | None = None
) -> uvicorn.Server:
    """A uvicorn server; in the main thread SIGINT and SIGTERM stop it gracefully and the process
    then exits normally (uvicorn itself would re-raise the signal after shutting down).
    `on_ready` is called once it listens."""
    import uvicorn

    class Server(uvicorn.Server):
        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets=sockets)
            if self.started and on_ready is not None:
                on_ready(self)

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            if threading.current_thread() is not threading.main_thread():
                yield
                return
            signals = (signal.SIGINT, signal.SIGTERM)
            previous = {sig: signal.signal(sig, self.handle_exit) for sig in signals}
            try:
                yield
            finally:
                for sig, handler in previous.items():
                    signal.signal(sig, handler)

    from meshpos.service.http_gate import PROTOCOL

    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="warning",
        log_config=None,  # uvicorn logs through the process's own logging (the daemon's log)
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=2,
        ws="none",
        http=PROTOCOL,  # the app's gate: connections per browser, a deadline for headers
        timeout_keep_alive=5,
        h11_max_incomplete_event_size=16 * 1024,
    )
    return Server(config)


def bind(host: str, port: int) -> socket.socket:
    """The listening address, bound here so a port in use is one clear error, not a log line."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(
            f"the web till cannot listen on {host}:{port}: {exc.strerror or exc}; is another "
            "program using it? choose another --port (or [web] port)"
        ) from None
    return sock


class WebServer:
    """The web till on a background thread; `start()` returns once it listens (or raises)."""

    def __init__(
        self, directory: Path, host: str = DEFAULT_HOST, port: int = 0, *, print_worker: bool = True
    ) -> None:
        from meshpos.web.app import create_app

        self.app = create_app(directory, host=host, print_worker=print_worker)
        self.server = _server(self.app, host, port)
        self.host = host
        self.thread = threading.Thread(target=self._run, name="meshpos-web", daemon=True)
        self.error: BaseException | None = None
        self.sock = bind(host, port)

    def _run(self) -> None:
        try:
            self.server.run(sockets=[self.sock])
        except BaseException as exc:  # reported by start(); a thread has nowhere else to say it
            self.error = exc

    @property
    def port(self) -> int:
        return int(self.sock.getsockname()[1])

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host
        return f"http://{host}:{self.port}/"

    def start(self, timeout: float = 20.0) -> WebServer:
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                error = getattr(self.app.state, "startup_error", None) or self.error
                why = f": {error}" if error else " (is the port in use?)"
                raise ConfigError(f"the web till could not listen on {self.host}{why}")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self.app.state.backend.end_streams()  # so shutdown does not wait for open event streams
        self.server.should_exit = True
        if self.thread.is_alive():
            self.thread.join(timeout=10)
        self.sock.close()


@contextlib.contextmanager
def web_till(cfg: NodeConfig) -> Iterator[WebServer | None]:
    """The daemon's hook: serve the web till while the block runs, when `[web] port` is set.
    A till page that cannot start is logged, never a reason to stop syncing."""
    try:
        settings = WebSettings.from_config(cfg)
    except ConfigError as exc:
        log.error("web till not started: %s", exc)
        yield None
        return
    if settings.port is None:
        yield None
        return
    server: WebServer | None = None
    try:
        server = WebServer(cfg.dir, settings.host, settings.port, print_worker=False).start()
        log.info("web till on %s", server.url)
    except Exception as exc:  # any failure to start: the mesh must keep running
        log.error("web till not started: %s", exc)
        server = None
    try:
        yield server
    finally:
        if server is not None:
            server.stop()


def serve(
    directory: Path,
    host: str,
    port: int,
    on_ready: OnReady | None = None,
) -> None:
    """Serve in the foreground until Ctrl-C or SIGTERM (uvicorn handles both)."""
    from meshpos.web.app import create_app

    sock = bind(host, port)
    app = create_app(directory, host=host)
    server = _server(app, host, port, on_ready)
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
