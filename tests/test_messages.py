"""The sync wire codec: every message round-trips, and anything else is refused with
MalformedMessage (never another exception, never a half-built message)."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meshpos.core.ops import pack
from meshpos.sync.messages import (
    MAX_BATCH_OPS,
    MAX_MESSAGE_BYTES,
    PROTOCOL_VERSION,
    Error,
    Have,
    Hello,
    MalformedMessage,
    Message,
    Ops,
    Ping,
    Request,
    decode,
    encode,
)

ids = st.text("0123456789abcdef", min_size=12, max_size=12)
u64 = st.integers(min_value=0, max_value=2**63 - 1)
vvs = st.dictionaries(ids, u64, max_size=8)
node_rows = st.tuples(
    ids, st.binary(max_size=40), st.text(max_size=10), st.text(max_size=10), st.none() | st.binary()
)
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.text(max_size=20)
    | st.binary(max_size=20)
)
bodies = st.dictionaries(
    st.text(max_size=8),
    st.recursive(
        scalars,
        lambda inner: (
            st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
        ),
        max_leaves=10,
    ),
    max_size=5,
)

messages: st.SearchStrategy[Message] = st.one_of(
    st.builds(
        Hello, st.integers(0, 2**31), st.text(max_size=10), node_rows, vvs, u64, st.booleans()
    ),
    st.builds(
        Ops,
        st.lists(st.binary(max_size=64), max_size=20).map(tuple),
        st.lists(node_rows, max_size=3).map(tuple),
        u64,
    ),
    st.builds(Have, vvs, u64),
    st.just(Ping()),
    st.builds(
        Ping,
        st.dictionaries(st.text(max_size=6), st.booleans(), max_size=4).map(
            lambda d: tuple(sorted(d.items()))
        ),
    ),
    st.builds(Error, st.text(max_size=20), st.text(max_size=500)),
    st.builds(Request, st.text(max_size=20), bodies),
)


@given(messages)
def test_every_message_round_trips(msg: Message) -> None:
    assert decode(encode(msg)) == msg


@pytest.mark.parametrize(
    "msg",
    [
        Hello(
            PROTOCOL_VERSION, "S1", ("a" * 12, b"k" * 32, "S1", "T0", None), {"a" * 12: 3}, 7, True
        ),
        Hello(PROTOCOL_VERSION, "S1", ("b" * 12, b"k" * 32, "S1", "T1", b"cert"), {}, 0, False),
        Ops((b"op1", b"op2")),
        Ops((b"op",), (("c" * 12, b"k" * 32, "S1", "T2", None),)),
        Ops((b"op",), (), epoch=1_760_000_000_123),
        Ops(()),
        Have({"a" * 12: 1, "b" * 12: 2**40}),
        Have({}, epoch=3),
        Have({"a" * 12: 1}, direct=("b" * 12, "c" * 12)),
        Have({}, direct=()),  # the sender has no session with anyone now
        Have({"a" * 12: 1}, flags=(("pushing", False), ("wan", True))),
        Ping(),
        Ping((("hq", True),)),
        Error("version", "protocol version 9 is not supported"),
        Request("escrow.rights", {"customer": "C1", "points": 120, "nested": [1, {"x": b"y"}]}),
    ],
    ids=lambda m: type(m).__name__,
)
def test_each_type_round_trips(msg: Message) -> None:
    data = encode(msg)
    assert decode(data) == msg
    assert type(decode(data)) is type(msg)


def _decodes_or_refuses(data: bytes) -> None:
    try:
        msg = decode(data)
    except MalformedMessage:
        return
    assert isinstance(msg, Hello | Ops | Have | Ping | Error | Request)
    assert decode(encode(msg)) == msg


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300))
def test_random_bytes_raise_only_malformed(data: bytes) -> None:
    _decodes_or_refuses(data)


any_msgpack = st.recursive(
    scalars | st.floats(allow_nan=False),
    lambda inner: (
        st.lists(inner, max_size=5)
        | st.dictionaries(st.text(max_size=4) | st.binary(max_size=4), inner, max_size=5)
    ),
    max_leaves=20,
)


@settings(max_examples=300)
@given(any_msgpack)
def test_random_msgpack_structures_raise_only_malformed(value: Any) -> None:
    _decodes_or_refuses(pack(value))


field_values = st.one_of(
    any_msgpack,
    vvs,
    st.lists(node_rows.map(list), max_size=2),
    node_rows.map(list),
    st.lists(st.binary(max_size=8), max_size=3),
)


@settings(max_examples=500)
@given(
    st.sampled_from(["hello", "ops", "have", "ping", "err", "req", "nope", 1, None]),
    st.dictionaries(st.sampled_from(list("psnverocbkd")), field_values, max_size=7),
)
def test_near_miss_messages_raise_only_malformed(tag: Any, fields: dict[str, Any]) -> None:
    """Maps with a real type tag and plausible fields reach every shape check in `decode`."""
    _decodes_or_refuses(pack({"t": tag, **fields}))


@given(st.binary(min_size=1, max_size=40), st.integers(0, 5))
def test_truncated_or_extended_frames_are_refused(junk: bytes, cut: int) -> None:
    good = encode(Have({"a" * 12: 5}))
    with pytest.raises(MalformedMessage):
        decode(good + junk)
    if cut:
        with pytest.raises(MalformedMessage):
            decode(good[:-cut])


def test_exotic_msgpack_types_are_refused() -> None:
    for value in (
        {"t": "have", "v": {"a": msgpack.ExtType(5, b"x")}},
        {"t": "have", "v": {"a": 1.5}},
        {"t": "have", "v": {"a": -1}},
        {"t": "have", "v": {"a": True}},
        {"t": "have", "v": {}, "e": True},
        {"t": "have", "v": {}, "e": "1"},
        {"t": "have", "v": {}, "f": {"wan": 1}},
        {"t": "have", "v": {}, "f": ["wan"]},
        {"t": "ops", "o": [], "e": 1.0},
        {"t": "have", "v": [1, 2]},
        {"t": "ops", "o": ["text, not bytes"]},
        {"t": "ops", "o": [b"x"], "n": [["a", b"k", "S", "T"]]},
        {"t": "err", "c": 1, "r": "x"},
        {"t": "req", "k": "x", "b": [1]},
        {"t": b"ping"},
        {"t": "ping", "f": {"hq": 1}},
        {"t": "ping", "f": [("hq", True)]},
        {"t": "have", "v": {}, "d": "abc"},
        {"t": "have", "v": {}, "d": [1]},
        {"t": "have", "v": {}, "d": ["x" * 65]},
        {"t": "have", "v": {}, "d": ["n"] * 1001},
    ):
        with pytest.raises(MalformedMessage):
            decode(pack(value))
    with pytest.raises(MalformedMessage):
        decode(msgpack.packb({1: 2}))
    with pytest.raises(MalformedMessage):
        decode(b"\xa3\xff\xfe\xfd")  # a str whose bytes are not UTF-8


@pytest.mark.parametrize("field", ["p", "e"])
def test_hello_integers_refuse_booleans(field: str) -> None:
    """True == 1 in Python: a strict codec must not read a boolean as protocol version 1."""
    body = {
        "t": "hello",
        "p": PROTOCOL_VERSION,
        "s": "S1",
        "n": ["a" * 12, b"k", "S1", "T0", None],
        "v": {},
        "e": 1,
        "r": False,
    }
    decode(pack(body))
    body[field] = True
    with pytest.raises(MalformedMessage):
        decode(pack(body))


def test_error_reason_is_capped() -> None:
    msg = decode(encode(Error("refused", "x" * 10_000)))
    assert isinstance(msg, Error)
    assert len(msg.reason) == 500


def test_batch_limit() -> None:
    full = Ops(tuple(b"o" for _ in range(MAX_BATCH_OPS)))
    assert decode(encode(full)) == full
    with pytest.raises(MalformedMessage, match="exceeds"):
        decode(encode(Ops(tuple(b"o" for _ in range(MAX_BATCH_OPS + 1)))))
    with pytest.raises(MalformedMessage):
        decode(pack({"t": "ops", "o": [], "n": [["a" * 12, b"k", "S", "T", None]] * 1001}))


def test_oversized_messages_are_refused_before_parsing() -> None:
    big = encode(Ops((b"x" * (MAX_MESSAGE_BYTES // 2), b"y" * (MAX_MESSAGE_BYTES // 2))))
    assert len(big) > MAX_MESSAGE_BYTES
    with pytest.raises(MalformedMessage, match="exceeds"):
        decode(big)
    # The size limit holds even for bytes that are not msgpack at all.
    with pytest.raises(MalformedMessage, match="exceeds"):
        decode(b"\x00" * (MAX_MESSAGE_BYTES + 1))


def test_huge_version_vector_is_refused() -> None:
    with pytest.raises(MalformedMessage):
        decode(pack({"t": "have", "v": {f"{i:012d}": 1 for i in range(100_001)}}))
