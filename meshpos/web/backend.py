"""The web till's side of the service layer: one Terminal on one worker thread, and the units the
routes call, each of one concern.

What a button does is a call into the same code the CLI uses (`TillSession`, `Terminal`, reports,
the print queue, `meshpos.service.staff`); the page holds no business rule. The units:

- `signin.Sessions`: who is signed in, PIN sign-in, acting with a supervisor's approval;
- `cart.Cart`: the sale being rung; `checkout.Checkout`: recording it;
- `till_screen`, `stock_screen`, `manager_screen`: what each page shows (the manager's actions too);
- `printer.TillPrinter`: the print worker, reports, how the last slip is doing;
- `live.Live`: the watcher behind live updates and the state banner.

All of them run on the worker (`worker.call`); they exist while the till is open.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from meshpos.core.errors import LocalError
from meshpos.service.printing import queue_receipt
from meshpos.service.terminal import Terminal
from meshpos.service.training import selling_dir
from meshpos.web.cart import Cart
from meshpos.web.checkout import Checkout
from meshpos.web.live import Live
from meshpos.web.manager_screen import ManagerScreen
from meshpos.web.printer import TillPrinter
from meshpos.web.signin import Sessions
from meshpos.web.stock_screen import StockScreen
from meshpos.web.till_screen import TillScreen
from meshpos.web.worker import Worker


@dataclass(frozen=True)
class TillParts:
    """The units of an open till, sharing its one Terminal."""

    terminal: Terminal
    live: Live
    printer: TillPrinter
    sessions: Sessions
    cart: Cart
    checkout: Checkout
    till_screen: TillScreen
    stock_screen: StockScreen
    manager_screen: ManagerScreen

    @classmethod
    def open(cls, directory: Path, *, print_worker: bool, live_interval: float) -> TillParts:
        # receipts queue with the sale; a till in training mode opens its practice ledger
        t = Terminal.open(selling_dir(directory), on_record=[queue_receipt])
        live = Live(t.cfg, t.ledger.key, t.node_id, live_interval)
        try:
            live.start()
            printer = TillPrinter(t, drain=print_worker)
        except BaseException:
            live.close()
            t.close()
            raise
        sessions = Sessions(t)
        return cls(
            terminal=t,
            live=live,
            printer=printer,
            sessions=sessions,
            cart=Cart(t, sessions),
            checkout=Checkout(t, sessions, printer),
            till_screen=TillScreen(t, sessions, printer),
            stock_screen=StockScreen(t, live, sessions),
            manager_screen=ManagerScreen(t, sessions, printer),
        )

    def close(self) -> None:
        self.live.close()
        self.printer.close()
        self.terminal.close()
        self.sessions.clear()


class Backend:
    """`open()` and `close()` run on the worker; `shutdown()` after the last call."""

    def __init__(
        self, directory: Path, *, print_worker: bool = True, live_interval: float = 0.1
    ) -> None:
        self.directory = directory
        self.print_worker = print_worker
        self.live_interval = live_interval
        self.worker = Worker()
        self._parts: TillParts | None = None

    @property
    def parts(self) -> TillParts:
        if self._parts is None:
            raise LocalError("the web till is not open")
        return self._parts

    def open(self) -> None:
        self._parts = TillParts.open(
            self.directory, print_worker=self.print_worker, live_interval=self.live_interval
        )

    def close(self) -> None:
        if self._parts is not None:
            self._parts.close()
            self._parts = None

    def end_streams(self) -> None:
        """End every open event stream, so a stopping server does not wait for them."""
        if self._parts is not None:
            self._parts.live.close()

    def shutdown(self) -> None:
        self.worker.shutdown()
