"""The collector is paused for a batch and runs again after, whatever the batch did."""

from __future__ import annotations

import gc

import pytest

from meshpos.core.batching import collector_paused
from meshpos.core.ops import Signer, decode_bodies, decode_ops, make_op


def test_paused_inside_and_running_after_even_on_error() -> None:
    assert gc.isenabled()
    with collector_paused():
        assert not gc.isenabled()
        with collector_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()  # the inner one found it paused: leaves it so
    assert gc.isenabled()
    with pytest.raises(RuntimeError), collector_paused():
        raise RuntimeError("a bad batch")
    assert gc.isenabled()


def test_left_paused_when_it_was_paused_before() -> None:
    gc.disable()
    try:
        with collector_paused():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_batch_decoders_give_what_one_by_one_gives() -> None:
    signer = Signer.from_seed(b"batching")
    ops = [
        make_op(
            signer, store="S", seq=1, hlc=5, user="u", kind="note", payload={"n": 1}, prev=bytes(32)
        )
    ]
    assert decode_bodies([(o.body, o.sig) for o in ops]) == ops
    assert decode_ops([o.wire() for o in ops]) == ops
    assert gc.isenabled()
