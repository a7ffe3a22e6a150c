"""A service `Terminal` as the node core's host: escrow asks and grants, rights, the bootstrap mark.

The daemon and the simulator wrap their terminals in this same adapter, so both cores reach the
terminal through the same service code (meshpos/service/escrow.py, meshpos/service/terminal.py).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from meshpos.core.ops import Op
from meshpos.service import escrow
from meshpos.service.clocks import flag_clocks
from meshpos.service.terminal import Terminal


class TerminalHost:
    def __init__(self, terminal: Terminal) -> None:
        self.terminal = terminal

    def take_asks(self) -> list[tuple[str, int]]:
        return escrow.take_unsent(self.terminal)

    def rights(self, customer: str, node: str) -> int:
        return self.terminal.rights(customer, node)

    def grant(self, peer: str, body: Mapping[str, object]) -> int:
        return escrow.handle_need(self.terminal, peer, dict(body))

    def bootstrapping(self) -> bool:
        return self.terminal.bootstrapping()

    def end_bootstrap(self) -> None:
        self.terminal.set_bootstrapping(False)

    def check_clocks(self, ops: Sequence[Op]) -> bool:
        return bool(flag_clocks(self.terminal, ops))

    def waiting_ops(self) -> int:
        return self.terminal.ledger.pending_count()
