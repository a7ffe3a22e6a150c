"""A real TCP listener on 127.0.0.1 standing in for a raw-TCP (port 9100 style) receipt printer.

Each accepted connection is one print job: its bytes are captured until the client closes. The
listener can be told to refuse connections (its socket is closed, so connects get ECONNREFUSED,
as from a printer that is switched off) and later to accept again on the same port.

Use the `printer_listener` fixture (re-export it from a conftest.py, or wrap `PrinterListener` in a
local fixture), or `with PrinterListener() as listener:`.
"""

from __future__ import annotations

import selectors
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest


@dataclass
class Connection:
    number: int
    data: bytearray = field(default_factory=bytearray)
    closed: bool = False


class PrinterListener:
    """A raw-TCP printer stand-in; thread-safe; stop() (or the context manager) cleans up."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self._requested_port = port
        self.port = 0
        self._cond = threading.Condition()
        self._connections: list[Connection] = []
        self._server: socket.socket | None = None
        self._sel = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._sel.register(self._wake_r, selectors.EVENT_READ, None)
        self._stopping = False
        self._stalled = False
        self._open: dict[int, tuple[socket.socket, Connection]] = {}
        self._thread = threading.Thread(target=self._run, name="printer-listener", daemon=True)
        self._pending: list[tuple[str, threading.Event]] = []

    def __enter__(self) -> PrinterListener:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        self._listen(self._requested_port)
        self._thread.start()

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
        self._wake_w.send(b"x")
        self._thread.join(timeout=5)
        for conn, _ in self._open.values():
            conn.close()
        self._unlisten()
        self._sel.close()
        self._wake_r.close()
        self._wake_w.close()

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port

    def refuse(self) -> None:
        """Close the listening socket: new connections are refused until accept()."""
        self._control("refuse")

    def accept(self) -> None:
        """Listen again on the same port."""
        self._control("accept")

    def stall(self) -> None:
        """Accept connections but stop reading, like a printer out of paper: the sender's
        buffers fill and its writes block until resume()."""
        self._control("stall")

    def resume(self) -> None:
        self._control("resume")

    @property
    def refusing(self) -> bool:
        return self._server is None

    @property
    def jobs(self) -> list[bytes]:
        """The bytes of every finished connection, in the order they were accepted."""
        with self._cond:
            return [bytes(c.data) for c in self._connections if c.closed]

    @property
    def connections(self) -> int:
        with self._cond:
            return len(self._connections)

    def wait_for_jobs(self, count: int, timeout: float = 5.0) -> list[bytes]:
        """Block until `count` jobs have finished (poll-with-deadline on a condition)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while sum(c.closed for c in self._connections) < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    done = sum(c.closed for c in self._connections)
                    raise TimeoutError(f"printer listener got {done} jobs, wanted {count}")
                self._cond.wait(remaining)
            return [bytes(c.data) for c in self._connections if c.closed]

    def _control(self, action: str) -> None:
        done = threading.Event()
        with self._cond:
            self._pending.append((action, done))
        self._wake_w.send(b"x")
        if not done.wait(5):
            raise TimeoutError(f"printer listener did not {action}")

    def _listen(self, port: int) -> None:
        server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind((self.host, port))
        server.listen(16)
        server.setblocking(False)
        self.port = server.getsockname()[1]
        self._server = server
        self._sel.register(server, selectors.EVENT_READ, "server")

    def _unlisten(self) -> None:
        if self._server is not None:
            self._sel.unregister(self._server)
            self._server.close()
            self._server = None

    def _run(self) -> None:
        while True:
            for key, _ in self._sel.select(timeout=1.0):
                if key.data is None:
                    self._wake_r.recv(64)
                elif key.data == "server":
                    self._accept_one()
                else:
                    self._read(key.fileobj, key.data)  # type: ignore[arg-type]
            with self._cond:
                if self._stopping:
                    return
                pending, self._pending = self._pending, []
            for action, done in pending:
                if action == "refuse":
                    self._unlisten()
                elif action == "accept" and self._server is None:
                    self._listen(self.port)
                elif action == "stall" and not self._stalled:
                    self._stalled = True
                    for conn, _ in self._open.values():
                        self._sel.unregister(conn)
                elif action == "resume" and self._stalled:
                    self._stalled = False
                    for conn, record in self._open.values():
                        self._sel.register(conn, selectors.EVENT_READ, record)
                done.set()

    def _accept_one(self) -> None:
        assert self._server is not None
        try:
            conn, _ = self._server.accept()
        except BlockingIOError:
            return
        conn.setblocking(False)
        with self._cond:
            record = Connection(len(self._connections))
            self._connections.append(record)
        self._open[record.number] = (conn, record)
        if not self._stalled:
            self._sel.register(conn, selectors.EVENT_READ, record)

    def _read(self, conn: socket.socket, record: Connection) -> None:
        try:
            chunk = conn.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        with self._cond:
            if chunk:
                record.data += chunk
                return
            record.closed = True
            self._cond.notify_all()
        self._sel.unregister(conn)
        del self._open[record.number]
        conn.close()


@pytest.fixture
def printer_listener() -> Iterator[PrinterListener]:
    with PrinterListener() as listener:
        yield listener
