"""The namespace lab of bench/netns.py (shared with the mesh bench) as a pytest fixture.

`netns_lab` is a factory (`netns_lab(3)`); every lab it built is removed at teardown, even when
the test fails. Without root or when the kernel refuses namespaces, it skips with the reason.
"""

from __future__ import annotations

import fcntl
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from bench.netns import Lab as Lab
from bench.netns import NetnsUnavailable, create
from bench.netns import Node as Node
from bench.netns import Spawned as Spawned
from bench.netns import lab as lab
from bench.netns import loopback_multicast as loopback_multicast

GATEWAY_LOCK = Path(tempfile.gettempdir()) / "meshpos-gateway-lab.lock"


@pytest.fixture
def gateway_lab_lock() -> Iterator[None]:
    """Held by a test while it has a lab with the host as gateway: the host has one GATEWAY
    address, so a second such lab (another xdist worker's, or another test run's) would be
    refused. Waits for the lock rather than skipping."""
    with GATEWAY_LOCK.open("a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


@pytest.fixture
def netns_lab() -> Iterator[Callable[[int], Lab]]:
    """Factory fixture: `netns_lab(3)` builds a lab; every lab is removed at teardown."""
    labs: list[Lab] = []

    def make(n: int) -> Lab:
        try:
            created = create(n)
        except NetnsUnavailable as exc:
            pytest.skip(f"network namespace tests skipped: {exc}")
        labs.append(created)
        return created

    try:
        yield make
    finally:
        for created in labs:
            created.close()
