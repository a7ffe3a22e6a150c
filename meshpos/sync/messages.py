"""Sync protocol messages: frozen dataclasses and their msgpack wire form.

Every message is a msgpack map with a type tag `t`. Decoding is strict: anything that does not have
exactly the expected shape raises `MalformedMessage`, which the protocol answers with an Error message
and otherwise ignores. No message is ever half-applied.

A Hello lists the compression dictionaries its sender reads (`z`, meshpos/sync/compression.py); to
a peer that listed one, Ops (of `compression.MIN_BATCH` ops or more) carries its ops
deflated (`c`, with the dictionary's number in `z`) instead of a list (`o`). A peer from before
lists none and gets the list, which every node still reads.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from meshpos.core.errors import RemoteError
from meshpos.core.ops import pack, unpack
from meshpos.sync import compression

PROTOCOL_VERSION = 1
MAX_MESSAGE_BYTES = 4 * 1024 * 1024
MAX_BATCH_OPS = 2000
MAX_DIRECT = 1000  # peers named in a Have; a store has tens of terminals


class MalformedMessage(RemoteError):
    """A peer sent bytes that are not a valid sync message."""


NodeRow = tuple[str, bytes, str, str, bytes | None]


@dataclass(frozen=True)
class Hello:
    proto: int
    store: str
    node: NodeRow
    vv: dict[str, int]
    epoch: int = 0  # changes when the sender restarts, so the receiver resets its session
    reply: bool = False  # the sender has no session with us yet and waits for our Hello
    zdicts: tuple[int, ...] = ()  # compression dictionaries the sender reads


@dataclass(frozen=True)
class Ops:
    ops: tuple[bytes, ...]
    nodes: tuple[NodeRow, ...] = ()
    epoch: int = 0  # the sender's, so a peer can tell a previous incarnation's messages apart


@dataclass(frozen=True)
class Have:
    vv: dict[str, int]
    epoch: int = 0  # the sender's: a wiped node's old Have must not speak for its new ledger
    # The nodes the sender has a session with now: their own ops reach it from them directly,
    # so nobody else need forward those. None: unchanged since the sender's last Have (older
    # peers never send it, and are forwarded to as before).
    direct: tuple[str, ...] | None = None
    # The sender's flags (as a Ping's) when they changed since its last Have, or periodically.
    flags: tuple[tuple[str, bool], ...] | None = None


@dataclass(frozen=True)
class Ping:
    """Keeps an idle link alive; carries the sender's flags (e.g. whether it can reach HQ)."""

    flags: tuple[tuple[str, bool], ...] = ()


@dataclass(frozen=True)
class Error:
    code: str
    reason: str


@dataclass(frozen=True)
class Request:
    """Ask a peer for something that becomes an op there (e.g. loyalty redemption rights)."""

    kind: str
    body: dict[str, Any]


Message = Hello | Ops | Have | Ping | Error | Request


def encode(msg: Message, zdict: int = 0) -> bytes:
    """The message's bytes; Ops deflated with dictionary `zdict` when it is not 0."""
    if isinstance(msg, Hello):
        hello: dict[str, Any] = {
            "t": "hello",
            "p": msg.proto,
            "s": msg.store,
            "n": list(msg.node),
            "v": msg.vv,
            "e": msg.epoch,
            "r": msg.reply,
        }
        if msg.zdicts:
            hello["z"] = list(msg.zdicts)
        return pack(hello)
    if isinstance(msg, Ops):
        body: dict[str, Any] = {"t": "ops"}
        if zdict:
            body["z"] = zdict
            body["c"] = compression.compress(pack(list(msg.ops)), zdict)
        else:
            body["o"] = list(msg.ops)
        if msg.nodes:
            body["n"] = [list(n) for n in msg.nodes]
        if msg.epoch:
            body["e"] = msg.epoch
        return pack(body)
    if isinstance(msg, Have):
        have: dict[str, Any] = {"t": "have", "v": msg.vv}
        if msg.epoch:
            have["e"] = msg.epoch
        if msg.direct is not None:
            have["d"] = list(msg.direct)
        if msg.flags is not None:
            have["f"] = dict(msg.flags)
        return pack(have)
    if isinstance(msg, Ping):
        return pack({"t": "ping", "f": dict(msg.flags)} if msg.flags else {"t": "ping"})
    if isinstance(msg, Error):
        return pack({"t": "err", "c": msg.code, "r": msg.reason})
    return pack({"t": "req", "k": msg.kind, "b": msg.body})


def _vv(value: Any) -> dict[str, int]:
    if not isinstance(value, dict) or len(value) > 100_000:
        raise MalformedMessage("version vector is not a map")
    for k, v in value.items():
        if not isinstance(k, str) or not isinstance(v, int) or isinstance(v, bool) or v < 0:
            raise MalformedMessage("version vector entry is malformed")
    return value


def _int(value: Any, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise MalformedMessage(f"{what} is malformed")
    return value


def _node(value: Any) -> NodeRow:
    if (
        not isinstance(value, list)
        or len(value) != 5
        or not isinstance(value[0], str)
        or not isinstance(value[1], bytes)
        or not isinstance(value[2], str)
        or not isinstance(value[3], str)
        or not (value[4] is None or isinstance(value[4], bytes))
    ):
        raise MalformedMessage("node record is malformed")
    return (value[0], value[1], value[2], value[3], value[4])


def _flags(value: Any, what: str) -> tuple[tuple[str, bool], ...]:
    if (
        not isinstance(value, dict)
        or len(value) > 16
        or not all(isinstance(k, str) and isinstance(v, bool) for k, v in value.items())
    ):
        raise MalformedMessage(f"{what} flags are malformed")
    return tuple(sorted(value.items()))


def _inflate(body: dict[str, Any]) -> Any:
    """The op list of a deflated Ops message."""
    data, zdict = body.get("c"), body.get("z")
    if not isinstance(data, bytes) or type(zdict) is not int:
        raise MalformedMessage("compressed ops batch is malformed")
    try:
        return unpack(compression.decompress(data, zdict, MAX_MESSAGE_BYTES), "ops batch")
    except RemoteError as exc:
        raise MalformedMessage(str(exc)) from None


def decode(data: bytes) -> Message:
    if len(data) > MAX_MESSAGE_BYTES:
        raise MalformedMessage(f"message of {len(data)} bytes exceeds {MAX_MESSAGE_BYTES}")
    try:
        body = unpack(data, "message")
    except RemoteError as exc:
        raise MalformedMessage(str(exc)) from None
    if not isinstance(body, dict):
        raise MalformedMessage("message is not a map")
    t = body.get("t")
    if t == "hello":
        proto, store, epoch, reply = body.get("p"), body.get("s"), body.get("e"), body.get("r")
        if not (isinstance(store, str) and isinstance(reply, bool)):
            raise MalformedMessage("hello is malformed")
        zdicts = body.get("z", [])
        if not isinstance(zdicts, list) or len(zdicts) > 64:
            raise MalformedMessage("hello's dictionary list is malformed")
        return Hello(
            _int(proto, "hello"),
            store,
            _node(body.get("n")),
            _vv(body.get("v")),
            _int(epoch, "hello"),
            reply,
            tuple(_int(z, "hello's dictionary list") for z in zdicts),
        )
    if t == "ops":
        ops = _inflate(body) if "c" in body else body.get("o")
        if not isinstance(ops, list) or not all(isinstance(o, bytes) for o in ops):
            raise MalformedMessage("ops batch is malformed")
        if len(ops) > MAX_BATCH_OPS:
            raise MalformedMessage(f"ops batch of {len(ops)} exceeds {MAX_BATCH_OPS}")
        nodes = body.get("n", [])
        if not isinstance(nodes, list) or len(nodes) > 1000:
            raise MalformedMessage("ops batch node list is malformed")
        return Ops(tuple(ops), tuple(_node(n) for n in nodes), _int(body.get("e", 0), "ops epoch"))
    if t == "have":
        direct = body.get("d")
        if direct is not None and (
            not isinstance(direct, list)
            or len(direct) > MAX_DIRECT
            or not all(isinstance(d, str) and len(d) <= 64 for d in direct)
        ):
            raise MalformedMessage("have's list of direct peers is malformed")
        return Have(
            _vv(body.get("v")),
            _int(body.get("e", 0), "have epoch"),
            None if direct is None else tuple(direct),
            None if "f" not in body else _flags(body["f"], "have"),
        )
    if t == "ping":
        return Ping(_flags(body.get("f", {}), "ping"))
    if t == "err":
        code, reason = body.get("c"), body.get("r")
        if not isinstance(code, str) or not isinstance(reason, str):
            raise MalformedMessage("error message is malformed")
        return Error(code, reason[:500])
    if t == "req":
        kind, req = body.get("k"), body.get("b")
        if not isinstance(kind, str) or not isinstance(req, dict):
            raise MalformedMessage("request is malformed")
        return Request(kind, req)
    raise MalformedMessage(f"unknown message type {t!r}")
