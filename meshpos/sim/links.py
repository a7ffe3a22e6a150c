"""Real network faults on loopback for drills: a TCP link that can be cut, and a receipt printer
that can be switched off.

A `Link` forwards TCP connections from its own port to a target (a daemon's ZeroMQ port, HQ's
HTTP port); `cut()` resets every connection through it and refuses new ones, as a pulled cable or
a dead router does, and `mend()` lets them through again. Counters that reach each other and HQ
only through links see a WAN outage or a LAN split exactly as the kernel reports one. A
`PrinterStandIn` is a raw-TCP (port 9100) printer: each connection is one job; switched off, it
refuses connections like a printer that is off.
"""

from __future__ import annotations

import contextlib
import socket
import threading


def _listener() -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    return sock


def _stop_listening(sock: socket.socket) -> None:
    """Close a listening socket, waking a thread blocked in accept() (close alone does not,
    and the port would stay bound)."""
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    _close(sock)


def _close(sock: socket.socket, reset: bool = False) -> None:
    with contextlib.suppress(OSError):
        if reset:  # RST rather than FIN: the peer learns at once that the link is gone
            sock.setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
            )
        sock.close()


class Link:
    """A cuttable TCP link from `port` (127.0.0.1) to `target_port`."""

    def __init__(self, target_port: int, name: str = "") -> None:
        self.name = name
        self.target_port = target_port
        self._server = _listener()
        self.port: int = self._server.getsockname()[1]
        self.up = True
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._stopped = False
        self._thread = threading.Thread(target=self._accept, name=f"link-{name}", daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._stopped:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            if not self.up:
                _close(client, reset=True)
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=2)
                upstream.settimeout(None)
            except OSError:
                _close(client, reset=True)
                continue
            with self._lock:
                self._open |= {client, upstream}
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            with self._lock:
                self._open.discard(src)
                self._open.discard(dst)
            _close(src)
            _close(dst)

    def cut(self) -> None:
        """Reset every connection through the link and refuse new ones."""
        self.up = False
        with self._lock:
            doomed, self._open = self._open, set()
        for sock in doomed:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            _close(sock, reset=True)

    def mend(self) -> None:
        self.up = True

    def close(self) -> None:
        self._stopped = True
        self.cut()
        _stop_listening(self._server)


class PrinterStandIn:
    """A raw-TCP receipt printer on loopback: counts the jobs it printed; can be switched off."""

    def __init__(self) -> None:
        self._server: socket.socket | None = None
        self.port = 0
        self.jobs: list[bytes] = []
        self._lock = threading.Lock()
        self.on()

    def on(self) -> None:
        if self._server is not None:
            return
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        sock.listen(16)
        self._server = sock
        self.port = sock.getsockname()[1]
        threading.Thread(target=self._accept, args=(sock,), name="printer", daemon=True).start()

    def off(self) -> None:
        """Switched off: connections are refused until `on()`."""
        sock, self._server = self._server, None
        if sock is not None:
            _stop_listening(sock)

    @property
    def is_on(self) -> bool:
        return self._server is not None

    def _accept(self, server: socket.socket) -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            threading.Thread(target=self._job, args=(conn,), daemon=True).start()

    def _job(self, conn: socket.socket) -> None:
        data = bytearray()
        try:
            conn.settimeout(10)
            while chunk := conn.recv(65536):
                data += chunk
        except OSError:
            pass
        finally:
            _close(conn)
        if data:
            with self._lock:
                self.jobs.append(bytes(data))

    def printed(self) -> int:
        with self._lock:
            return len(self.jobs)
