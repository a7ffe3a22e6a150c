"""Ops: one canonical encoding, decoding that fails only with EncodingError, signatures, and the
hash chain that makes a removed, altered or reordered op evident."""

from __future__ import annotations

import contextlib
import pickle
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshpos.core.errors import ChainError, EncodingError, LocalError, RemoteError, SignatureError
from meshpos.core.ops import (
    GENESIS,
    MAX_OP_BYTES,
    Op,
    Signer,
    check_payloads,
    decode_body,
    decode_op,
    make_op,
    node_id_of,
    verify_run,
    verify_signature,
)

ALICE = Signer.from_seed(b"alice")
BOB = Signer.from_seed(b"bob")

keys = st.text(max_size=8)
scalars = st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.text(max_size=20)
scalars = scalars | st.binary(max_size=20)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=4),
    max_leaves=20,
)
payloads = st.dictionaries(keys, values, max_size=6)


def op_for(signer: Signer, payload: dict[str, Any], seq: int = 1, prev: bytes = GENESIS) -> Op:
    return make_op(
        signer,
        store="S1",
        seq=seq,
        hlc=1000 + seq,
        user="u1",
        kind="note",
        payload=payload,
        prev=prev,
    )


def chain(signer: Signer, n: int) -> list[Op]:
    ops: list[Op] = []
    prev = GENESIS
    for seq in range(1, n + 1):
        op = op_for(signer, {"n": seq}, seq, prev)
        ops.append(op)
        prev = op.hash
    return ops


def shuffled_copy(value: Any, rnd: Any) -> Any:
    """The same value with every map's insertion order scrambled."""
    if isinstance(value, dict):
        items = list(value.items())
        rnd.shuffle(items)
        return {k: shuffled_copy(v, rnd) for k, v in items}
    if isinstance(value, list):
        return [shuffled_copy(v, rnd) for v in value]
    return value


def flip(data: bytes, index: int) -> bytes:
    i = index % len(data)
    return data[:i] + bytes([data[i] ^ 0x01]) + data[i + 1 :]


# -- canonical encoding -------------------------------------------------------------------------


@given(payloads, st.randoms(use_true_random=False))
def test_key_order_does_not_change_the_bytes(payload: dict[str, Any], rnd: Any) -> None:
    a = op_for(ALICE, payload)
    b = op_for(ALICE, shuffled_copy(payload, rnd))
    assert a.body == b.body
    assert a.sig == b.sig
    assert a.hash == b.hash


@given(payloads)
def test_an_op_survives_the_wire_unchanged(payload: dict[str, Any]) -> None:
    op = op_for(ALICE, payload)
    back = decode_op(op.wire())
    assert back == op
    assert back.payload == msgpack.unpackb(msgpack.packb(op.payload, use_bin_type=True))
    verify_signature(ALICE.public_key, back)


def test_a_decoded_op_pickles_with_its_payload_and_sealed_data() -> None:
    """Ops cross process boundaries (verify's and the bench's workers): a decoded op, whose
    payload is still raw bytes, pickles as the same op with the same payload."""
    op = decode_op(op_for(ALICE, {"lines": [{"sku": "X", "qty": 2}]}).wire()).with_sealed({0: b"k"})
    back = pickle.loads(pickle.dumps(op))
    assert back == op and back.payload == op.payload and back.sealed == {0: b"k"}


def test_tuples_encode_like_lists() -> None:
    assert op_for(ALICE, {"a": (1, 2)}).body == op_for(ALICE, {"a": [1, 2]}).body


@pytest.mark.parametrize(
    "payload, where",
    [
        ({"price": 499.0}, "payload.price"),
        ({"lines": [{"qty": 1, "total": 1.5}]}, "payload.lines[0].total"),
        ({"x": {"y": float("nan")}}, "payload.x.y"),
    ],
)
def test_floats_are_refused_with_a_clear_local_error(payload: dict[str, Any], where: str) -> None:
    with pytest.raises(LocalError, match="float is not allowed") as info:
        op_for(ALICE, payload)
    assert str(info.value).startswith(where + ":")
    assert "paise" in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    "payload",
    [
        {"n": 2**64},
        {"n": -(2**63) - 1},
        {"s": {1, 2}},
        {"b": bytearray(b"x")},
        {"m": {1: "a"}},
        {"m": {1: "a", "b": 2}},
        {"m": {None: 1}},
    ],
)
def test_values_without_one_canonical_form_are_refused(payload: dict[str, Any]) -> None:
    with pytest.raises(LocalError):
        op_for(ALICE, payload)


def test_an_op_over_the_size_limit_is_refused() -> None:
    with pytest.raises(LocalError, match="limit"):
        op_for(ALICE, {"blob": b"x" * MAX_OP_BYTES})


# -- decoding -----------------------------------------------------------------------------------


@settings(max_examples=200)
@given(st.binary(max_size=300))
def test_random_bytes_fail_only_with_encoding_error(data: bytes) -> None:
    with contextlib.suppress(EncodingError):
        decode_op(data)


wire_parts = st.recursive(
    scalars | st.floats(),
    lambda inner: st.lists(inner, max_size=10) | st.dictionaries(st.text(max_size=4), inner),
    max_leaves=15,
)


@settings(max_examples=100)
@given(st.lists(wire_parts, min_size=0, max_size=3), st.lists(wire_parts, max_size=11))
def test_well_formed_msgpack_of_the_wrong_shape_fails_with_encoding_error(
    outer: list[Any], fields: list[Any]
) -> None:
    body = msgpack.packb(fields, use_bin_type=True)
    for wire in (msgpack.packb(outer, use_bin_type=True), msgpack.packb([body, b"s" * 64])):
        with contextlib.suppress(EncodingError):
            decode_op(wire)


@settings(max_examples=150)
@given(st.data())
def test_a_mutated_valid_op_fails_only_with_remote_errors(data: st.DataObject) -> None:
    op = op_for(ALICE, data.draw(payloads))
    wire = bytearray(op.wire())
    for _ in range(data.draw(st.integers(1, 4))):
        wire[data.draw(st.integers(0, len(wire) - 1))] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(wire)))
    try:
        back = decode_op(bytes(wire[:cut]))
        verify_signature(ALICE.public_key, back)
    except RemoteError:
        return
    assert back.body == op.body and back.sig == op.sig


@pytest.mark.parametrize(
    "fields, name",
    [
        ([1, "", "a" * 12, 1, 0, "u", "note", {}, GENESIS], "store"),
        ([1, "S1", "short", 1, 0, "u", "note", {}, GENESIS], "origin"),
        ([1, "S1", "a" * 12, 0, 0, "u", "note", {}, GENESIS], "seq"),
        ([1, "S1", "a" * 12, True, 0, "u", "note", {}, GENESIS], "seq"),
        ([1, "S1", "a" * 12, 2**63, 0, "u", "note", {}, GENESIS], "seq"),
        ([1, "S1", "a" * 12, 1, -1, "u", "note", {}, GENESIS], "hlc"),
        ([1, "S1", "a" * 12, 1, 2**64 - 1, "u", "note", {}, GENESIS], "hlc"),
        ([1, "S1", "a" * 12, 1, 0, 7, "note", {}, GENESIS], "user"),
        ([1, "S1", "a" * 12, 1, 0, "u", "", {}, GENESIS], "kind"),
        ([1, "S1", "a" * 12, 1, 0, "u", "note", [], GENESIS], "payload"),
        ([1, "S1", "a" * 12, 1, 0, "u", "note", {}, b"short"], "prev"),
    ],
)
def test_each_malformed_field_is_named(fields: list[Any], name: str) -> None:
    with pytest.raises(EncodingError, match=f"'{name}'"):
        decode_body(msgpack.packb(fields, use_bin_type=True), b"s" * 64)


def _accepted_by_msgpack(body: bytes) -> tuple[Any, ...] | None:
    """What every version before the fast path accepted: the whole body through msgpack, then
    each field's type and range. The fields, or None for a refused body."""
    try:
        fields = msgpack.unpackb(body, raw=False, strict_map_key=True)
    except Exception:
        return None
    if not isinstance(fields, list) or len(fields) != 9:
        return None
    fmt, store, origin, seq, hlc, user, kind, payload, prev = fields
    ok = (
        fmt == 1
        and isinstance(store, str) and store
        and isinstance(origin, str) and len(origin) == 12
        and type(seq) is int and 1 <= seq < 2**63
        and type(hlc) is int and 0 <= hlc < 2**63
        and isinstance(user, str)
        and isinstance(kind, str) and kind
        and isinstance(payload, dict)
        and isinstance(prev, bytes) and len(prev) == 32
    )  # fmt: skip
    return tuple(fields[1:]) if ok else None


def _accepted_now(body: bytes) -> tuple[Any, ...] | None:
    try:
        op = decode_body(body, b"s" * 64)
        check_payloads([op])
    except EncodingError:
        return None
    return (op.store, op.origin, op.seq, op.hlc, op.user, op.kind, op.payload, op.prev)


odd_keys = st.integers(-5, 5) | st.booleans() | st.none() | st.binary(max_size=3)
odd_values = st.recursive(
    scalars | st.floats(allow_nan=False),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(keys, inner, max_size=3)
        | st.dictionaries(odd_keys, inner, max_size=2)
    ),
    max_leaves=10,
)
header_values = st.one_of(
    st.just(1), st.just(True), st.just(1.0), st.integers(-(2**63), 2**64 - 1), st.none(),
    st.text(max_size=13), st.text(min_size=12, max_size=12), st.binary(max_size=33),
    st.binary(min_size=32, max_size=32), st.lists(st.integers(0, 9), max_size=2),
)  # fmt: skip


@settings(max_examples=400)
@given(st.data())
def test_the_fast_path_accepts_exactly_what_msgpack_accepted(data: st.DataObject) -> None:
    """Replicas of two versions must never disagree on a signed op: the msgspec fast path with its
    lazy payload takes and refuses the same bodies as decoding them whole with msgpack did."""
    good = [1, "S1", "a" * 12, 7, 1000, "u", "sale", {"n": 1}, GENESIS]
    fields = list(good)
    for i in data.draw(st.sets(st.integers(0, 8), max_size=3)):
        fields[i] = data.draw(odd_values if i == 7 else header_values)
    body = msgpack.packb(fields, use_bin_type=True)
    assert _accepted_now(body) == _accepted_by_msgpack(body)


@pytest.mark.parametrize("field", [1, 2, 5, 6])
@pytest.mark.parametrize("bad", [b"\xed\xa0\x80", b"\xc0\x80", b"\xff", b"\xf4\x90\x80\x80"])
def test_a_header_string_that_is_not_utf8_is_refused_on_both_paths(field: int, bad: bytes) -> None:
    fields = [1, "S1", "a" * 12, 7, 1000, "u", "sale", {}, GENESIS]
    marker = "\x00" * (12 if field == 2 else 1)
    fields[field] = marker
    packed = msgpack.packb(fields, use_bin_type=True)
    at = packed.index(msgpack.packb(marker))
    length = 12 if field == 2 else len(bad)
    body = (
        packed[:at]
        + bytes([0xA0 | length])
        + bad.ljust(length, b"a")
        + packed[at + 1 + len(marker) :]
    )
    assert _accepted_by_msgpack(body) is None
    assert _accepted_now(body) is None


def test_unknown_format_and_bad_sizes_are_refused() -> None:
    good = op_for(ALICE, {})
    fields = msgpack.unpackb(good.body)
    fields[0] = 2
    with pytest.raises(EncodingError, match="format"):
        decode_body(msgpack.packb(fields, use_bin_type=True), good.sig)
    with pytest.raises(EncodingError, match="signature"):
        decode_body(good.body, good.sig[:-1])
    with pytest.raises(EncodingError, match="limit"):
        decode_body(b"\x00" * (MAX_OP_BYTES + 1), good.sig)
    with pytest.raises(EncodingError):
        decode_op(msgpack.packb([good.body]))
    with pytest.raises(EncodingError):
        decode_op(msgpack.packb(["text", good.sig]))


# -- signatures ---------------------------------------------------------------------------------


@given(payloads, st.integers(min_value=0))
def test_a_flipped_body_byte_breaks_the_signature(payload: dict[str, Any], index: int) -> None:
    op = op_for(ALICE, payload)
    with pytest.raises(SignatureError):
        verify_signature(ALICE.public_key, _with(op, body=flip(op.body, index)))


@given(st.integers(0, 63), st.integers(0, 7))
def test_a_flipped_signature_bit_breaks_the_signature(index: int, bit: int) -> None:
    op = op_for(ALICE, {"a": 1})
    sig = bytearray(op.sig)
    sig[index] ^= 1 << bit
    with pytest.raises(SignatureError):
        verify_signature(ALICE.public_key, _with(op, sig=bytes(sig)))


def test_a_signature_does_not_verify_under_another_key() -> None:
    op = op_for(ALICE, {"a": 1})
    verify_signature(ALICE.public_key, op)
    with pytest.raises(SignatureError):
        verify_signature(BOB.public_key, op)
    with pytest.raises(SignatureError):
        verify_signature(b"\x00" * 5, op)


def _with(op: Op, **changes: bytes) -> Op:
    """The op as a receiver would decode it after the given bytes changed in transit."""
    body = changes.get("body", op.body)
    sig = changes.get("sig", op.sig)
    try:
        return decode_body(body, sig)
    except EncodingError:
        # A flip that breaks the msgpack framing: keep the original fields, check the bytes.
        return Op(
            op.store,
            op.origin,
            op.seq,
            op.hlc,
            op.user,
            op.kind,
            op.payload,
            op.prev,
            body,
            sig,
            op.hash,
        )


# -- hash chains --------------------------------------------------------------------------------


def test_an_intact_run_verifies_from_genesis_and_from_a_held_head() -> None:
    ops = chain(ALICE, 6)
    verify_run(ops, ALICE.public_key, GENESIS)
    verify_run(ops[3:], ALICE.public_key, ops[2].hash)
    verify_run(ops[3:], ALICE.public_key, None)
    verify_run([], ALICE.public_key, GENESIS)


@pytest.mark.parametrize("gone", range(1, 5))
def test_a_removed_op_breaks_the_run(gone: int) -> None:
    ops = chain(ALICE, 6)
    with pytest.raises(ChainError, match="not contiguous"):
        verify_run(ops[:gone] + ops[gone + 1 :], ALICE.public_key, GENESIS)


def test_removing_the_first_op_breaks_the_run() -> None:
    ops = chain(ALICE, 4)
    with pytest.raises(ChainError):
        verify_run(ops[1:], ALICE.public_key, GENESIS)


@pytest.mark.parametrize("i", range(5))
def test_an_altered_op_breaks_the_run(i: int) -> None:
    ops = chain(ALICE, 5)
    # The origin's key is not needed to alter an op; a re-signature by someone else is no help.
    altered = make_op(
        BOB,
        store="S1",
        seq=ops[i].seq,
        hlc=ops[i].hlc,
        user="u1",
        kind="note",
        payload={"n": 999},
        prev=ops[i].prev,
    )
    forged = Op(
        ops[i].store,
        ops[i].origin,
        altered.seq,
        altered.hlc,
        altered.user,
        altered.kind,
        altered.payload,
        altered.prev,
        altered.body,
        altered.sig,
        altered.hash,
    )
    run = [*ops[:i], forged, *ops[i + 1 :]]
    with pytest.raises((ChainError, SignatureError)):
        verify_run(run, ALICE.public_key, GENESIS)


def test_an_altered_signature_in_the_middle_of_a_run_breaks_it() -> None:
    """The chain covers each op's signature too, so a run cannot carry a bad one."""
    ops = chain(ALICE, 4)
    bad = _with(ops[1], sig=flip(ops[1].sig, 5))
    with pytest.raises((ChainError, SignatureError)):
        verify_run([ops[0], bad, *ops[2:]], ALICE.public_key, GENESIS)


@given(st.permutations(range(5)))
def test_a_reordered_run_is_refused(order: list[int]) -> None:
    ops = chain(ALICE, 5)
    run = [ops[i] for i in order]
    if order == sorted(order):
        verify_run(run, ALICE.public_key, GENESIS)
    else:
        with pytest.raises(ChainError):
            verify_run(run, ALICE.public_key, GENESIS)


def test_a_wrong_chain_start_is_refused() -> None:
    ops = chain(ALICE, 4)
    with pytest.raises(ChainError, match="does not follow"):
        verify_run(ops[2:], ALICE.public_key, ops[0].hash)
    with pytest.raises(ChainError, match="does not follow"):
        verify_run(ops[1:], ALICE.public_key, GENESIS)
    not_genesis = op_for(ALICE, {"n": 1}, seq=1, prev=b"\x01" * 32)
    with pytest.raises(ChainError, match="does not start a chain"):
        verify_run([not_genesis], ALICE.public_key, None)


def test_the_last_signature_is_checked() -> None:
    ops = chain(ALICE, 3)
    with pytest.raises(SignatureError):
        verify_run(ops, BOB.public_key, GENESIS)


# -- node ids -----------------------------------------------------------------------------------


def test_node_ids_are_derived_from_keys() -> None:
    assert ALICE.node_id == node_id_of(ALICE.public_key)
    assert len(ALICE.node_id) == 12 and int(ALICE.node_id, 16) >= 0
    assert ALICE.node_id != BOB.node_id
    assert Signer.from_seed(b"alice").node_id == ALICE.node_id
    assert op_for(ALICE, {}).origin == ALICE.node_id
    again = Signer.from_bytes(ALICE.private_bytes())
    assert (again.node_id, again.public_key) == (ALICE.node_id, ALICE.public_key)
    assert Signer.generate().node_id != Signer.generate().node_id
    with pytest.raises(LocalError):
        Signer.from_bytes(b"short")
