"""Ops deflated with a shipped dictionary: on the wire to peers that read it, plainly to peers
from before, refused by name when the dictionary is unknown, never inflated past the limit."""

from __future__ import annotations

import zlib

import msgpack
import pytest
from mesh_helpers import Mesh
from test_protocol import Wire, sync_nodes

from meshpos.core.errors import EncodingError
from meshpos.sync import compression
from meshpos.sync.messages import (
    MAX_MESSAGE_BYTES,
    PROTOCOL_VERSION,
    Hello,
    MalformedMessage,
    Ops,
    decode,
    encode,
)
from meshpos.sync.protocol import Send


def _wires(mesh: Mesh, n: int) -> tuple[bytes, ...]:
    for _ in range(n):
        mesh.nodes[0].terminal.sell([(mesh.rows[0].sku, 1)], allow_oversell=True)
    return tuple(op.wire() for op in mesh.nodes[0].ledger.ops_since({})[-n:])


def test_a_deflated_ops_message_decodes_to_the_same_ops_and_is_smaller() -> None:
    wires = _wires(Mesh(1), 50)
    plain, packed = encode(Ops(wires)), encode(Ops(wires), zdict=1)
    assert decode(packed) == decode(plain) == Ops(wires)
    assert len(packed) < len(plain) / 2
    lone = _wires(Mesh(1), 1)
    assert len(encode(Ops(lone), zdict=1)) < len(encode(Ops(lone))) * 0.7


def test_peers_that_read_the_dictionary_get_deflated_ops_and_converge() -> None:
    mesh = Mesh(2)
    _wires(mesh, 20)
    a, b = sync_nodes(mesh, 0, 1)
    wire = Wire(a, b)
    wire.connect(a, b)
    wire.run()
    sent = [msgpack.unpackb(s.data) for n, s in wire.log if isinstance(s, Send)]
    ops = [m for m in sent if m["t"] == "ops"]
    assert ops and all("c" in m and m["z"] == 1 and "o" not in m for m in ops)
    assert mesh.nodes[1].ledger.vv() == mesh.nodes[0].ledger.vv()


def test_a_lone_op_is_deflated_too_for_a_peer_that_reads_the_dictionary() -> None:
    mesh = Mesh(2)
    a, b = sync_nodes(mesh, 0, 1)
    wire = Wire(a, b)
    wire.connect(a, b)
    wire.run()
    wire.log.clear()
    sale = _wires(mesh, 1)
    wire.do(a.me.node_id, a.local_changed(wire.now))  # the sale pushed as it is rung
    wire.run()
    sent = [msgpack.unpackb(s.data) for n, s in wire.log if isinstance(s, Send)]
    (ops,) = [m for m in sent if m["t"] == "ops"]
    assert "c" in ops and ops["z"] == 1 and "o" not in ops
    assert len(msgpack.packb(ops)) < len(encode(Ops(sale))) * 0.7
    assert mesh.nodes[1].ledger.vv() == mesh.nodes[0].ledger.vv()
    assert compression.for_batch(1, 1) == 1
    assert compression.for_batch(0, 1000) == compression.for_batch(1, 0) == 0


def test_a_peer_from_before_gets_plain_ops() -> None:
    mesh = Mesh(2)
    _wires(mesh, 20)  # a batch: deflated to a peer that listed the dictionary
    a, b = sync_nodes(mesh, 0, 1)
    wire = Wire(a, b)
    b.connect(a.me.node_id, 0)
    old_hello = Hello(PROTOCOL_VERSION, mesh.store, b.me.as_row(), b.replica.vv(), 1, True)
    assert "z" not in msgpack.unpackb(encode(old_hello))
    actions = wire.deliver(b.me.node_id, a.me.node_id, encode(old_hello))
    ops = [msgpack.unpackb(s.data) for s in actions if isinstance(s, Send)]
    ops = [m for m in ops if m["t"] == "ops"]
    assert ops and all("o" in m and "c" not in m for m in ops)


def test_an_unknown_dictionary_is_refused_by_name() -> None:
    packed = msgpack.packb({"t": "ops", "z": 9, "c": b"x"})
    with pytest.raises(MalformedMessage, match=r"dictionary 9.*upgrade meshpos"):
        decode(packed)
    assert compression.best([9, 42]) == 0 and compression.best([1, 9]) == 1


def test_damaged_or_oversized_compressed_ops_are_refused() -> None:
    good = encode(Ops(_wires(Mesh(1), 3)), zdict=1)
    body = msgpack.unpackb(good)
    body["c"] = body["c"][:-5]
    with pytest.raises(MalformedMessage, match=r"truncated|damaged"):
        decode(msgpack.packb(body))
    body["c"] = b"\x00" + body["c"][1:]
    with pytest.raises(MalformedMessage):
        decode(msgpack.packb(body))
    bomb = zlib.compressobj(9, zdict=compression.dictionary(1))
    data = bomb.compress(bytes(MAX_MESSAGE_BYTES + 1)) + bomb.flush()
    assert len(data) < MAX_MESSAGE_BYTES // 100
    with pytest.raises(MalformedMessage, match="limit"):
        decode(msgpack.packb({"t": "ops", "z": 1, "c": data}))
    with pytest.raises(EncodingError, match="limit"):
        compression.decompress(data, 1, MAX_MESSAGE_BYTES)
