"""What staff and card logic need of a terminal, as Protocols.

`Terminal` calls staff checks when it makes an op and card checks when it rings a sale; if those
modules took a `Terminal` in turn, the three would import each other. They take these instead,
which `Terminal` satisfies (and a test can satisfy with a few fields).
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Protocol

from meshpos.core.ops import Op, Payload
from meshpos.domain.staff import Credential
from meshpos.ledger.store import Ledger
from meshpos.service.config import NodeConfig


class NodeContext(Protocol):
    """One node as staff and card rules see it: its ledger, identity, settings and clock, and
    the PIN-backed credentials that may approve its ops."""

    @property
    def cfg(self) -> NodeConfig: ...

    @property
    def ledger(self) -> Ledger: ...

    @property
    def node_id(self) -> str: ...

    @property
    def credentials(self) -> list[Credential]: ...

    def now_ms(self) -> int: ...


class Recorder(NodeContext, Protocol):
    """A NodeContext that records ops (managing users and staff settings)."""

    def append(self, kind: str, payload: Payload, user: str | None = None) -> Op: ...

    def transaction(self) -> AbstractContextManager[None]: ...
