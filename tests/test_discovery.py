"""mDNS discovery: TXT parsing under random bytes, and real zeroconf nodes on 127.0.0.1."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from netns import loopback_multicast
from zeroconf import ServiceInfo, Zeroconf

from meshpos.core.errors import ConfigError, RemoteError
from meshpos.node.discovery import (
    SERVICE_TYPE,
    Advert,
    Discovery,
    MalformedAdvert,
    PeerAdded,
    PeerEvent,
    PeerRemoved,
    PeerUpdated,
    instance_name,
    parse_txt,
)

LOOPBACK = "127.0.0.1"
DEADLINE = 8.0

ids = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_-]{0,20}", fullmatch=True)
adverts = st.builds(
    Advert,
    store_id=st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,30}", fullmatch=True),
    node_id=ids,
    name=st.text(st.characters(blacklist_categories=["C", "Z"]), max_size=64),
    key_fingerprint=st.from_regex(r"[0-9a-f]{16,64}", fullmatch=True),
    protocol_version=st.integers(0, 65535),
    port=st.integers(1, 65535),
)


@given(adverts)
def test_txt_round_trips(advert: Advert) -> None:
    assert parse_txt(advert.txt()) == advert


@given(st.dictionaries(st.binary(max_size=8), st.none() | st.binary(max_size=80), max_size=8))
def test_random_txt_raises_only_malformed_advert(properties: dict[bytes, bytes | None]) -> None:
    try:
        parse_txt(properties)
    except MalformedAdvert as exc:
        assert str(exc) and "\n" not in str(exc)


@given(
    adverts,
    st.sampled_from([b"store", b"node", b"name", b"fp", b"proto", b"port"]),
    st.none() | st.binary(max_size=300),
)
def test_one_damaged_field_is_named_in_the_error(
    advert: Advert, key: bytes, value: bytes | None
) -> None:
    properties: dict[bytes, bytes | None] = {**advert.txt(), key: value}
    try:
        parsed = parse_txt(properties)
    except MalformedAdvert as exc:
        assert repr(key.decode()) in str(exc)
    else:
        assert parsed == replace(parse_txt(advert.txt()), **_changed(key, parsed))


def _changed(key: bytes, parsed: Advert) -> dict[str, Any]:
    field = {
        b"store": "store_id",
        b"node": "node_id",
        b"name": "name",
        b"fp": "key_fingerprint",
        b"proto": "protocol_version",
        b"port": "port",
    }[key]
    return {field: getattr(parsed, field)}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({b"port": b"0"}, "'port' must be a number 1-65535"),
        ({b"port": b"65536"}, "'port' must be a number 1-65535"),
        ({b"port": b" 80"}, "'port' must be a number"),
        ({b"proto": b"1.0"}, "'proto' must be a number"),
        ({b"store": None}, "'store' TXT record has no value"),
        ({b"node": b"a.b"}, "'node' is not a valid node"),
        ({b"name": b"\xff"}, "'name' is not UTF-8"),
        ({b"fp": "é".encode()}, "'fp' is not ASCII"),
    ],
)
def test_bad_fields_have_clear_errors(change: dict[bytes, bytes | None], message: str) -> None:
    good = Advert("s1", "n1", "Counter 1", "ab12", 1, 7000).txt()
    with pytest.raises(MalformedAdvert, match=message) as info:
        parse_txt({**good, **change})
    assert isinstance(info.value, RemoteError)


def test_missing_field_is_named() -> None:
    txt: dict[bytes, bytes | None] = dict(Advert("s1", "n1", "", "ab", 1, 7000).txt())
    del txt[b"fp"]
    with pytest.raises(MalformedAdvert, match="lacks the 'fp' TXT record"):
        parse_txt(txt)


def test_invalid_local_advert_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"cannot advertise this node: .*'port'"):
        Discovery(Advert("s1", "n1", "", "ab", 1, 0), lambda e: None, ip=LOOPBACK)


def test_address_not_on_this_host_is_a_config_error() -> None:
    d = Discovery(Advert("s1", "n1", "", "ab", 1, 7000), lambda e: None, ip="198.51.100.7")
    with pytest.raises(ConfigError, match=r"cannot use 198\.51\.100\.7 for mDNS discovery"):
        d.start()
    d.close()
    bad = Discovery(Advert("s1", "n1", "", "ab", 1, 7000), lambda e: None, ip="till-1")
    with pytest.raises(ConfigError, match="'till-1' is not an IP address"):
        bad.start()


class Recorder:
    """Collects a node's events; tests wait on it with a deadline instead of sleeping."""

    def __init__(self) -> None:
        self.events: list[PeerEvent] = []
        self._cond = threading.Condition()

    def __call__(self, event: PeerEvent) -> None:
        with self._cond:
            self.events.append(event)
            self._cond.notify_all()

    def wait_for(
        self, predicate: Callable[[PeerEvent], bool], timeout: float = DEADLINE
    ) -> PeerEvent:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for event in self.events:
                    if predicate(event):
                        return event
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"no matching event within {timeout} s; got {self.events}")
                self._cond.wait(remaining)

    def added(self, node_id: str) -> PeerAdded:
        event = self.wait_for(lambda e: isinstance(e, PeerAdded) and e.advert.node_id == node_id)
        assert isinstance(event, PeerAdded)
        return event

    def nodes_seen(self) -> set[str]:
        with self._cond:
            return {e.advert.node_id for e in self.events if isinstance(e, PeerAdded | PeerUpdated)}


Start = Callable[..., tuple[Discovery, Recorder]]


@pytest.fixture
def mesh() -> Iterator[Start]:
    """Start nodes on loopback (registering in parallel); close them all and check threads."""
    with loopback_multicast():
        before = set(threading.enumerate())
        nodes: list[Discovery] = []

        def start(
            store: str, node: str, port: int, wait: bool = False
        ) -> tuple[Discovery, Recorder]:
            recorder = Recorder()
            d = Discovery(
                Advert(store, node, f"till {node}", "ab" * 8, 1, port), recorder, ip=LOOPBACK
            )
            nodes.append(d)
            d.start(wait=wait)
            return d, recorder

        try:
            yield start
        finally:
            closers = [threading.Thread(target=d.close) for d in nodes]
            for t in closers:
                t.start()
            for t in closers:
                t.join()
        leaked = [t for t in set(threading.enumerate()) - before if t.is_alive()]
        assert not leaked, f"threads left running after close: {leaked}"


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:10]}"


def test_nodes_of_one_store_find_each_other_and_ignore_others(mesh: Start) -> None:
    store = unique("s")
    a, rec_a = mesh(store, unique("a"), 7101)
    b, rec_b = mesh(store, unique("b"), 7102)
    c, rec_c = mesh(store, unique("c"), 7103)
    x, rec_x = mesh(unique("other"), unique("x"), 7109)
    for d in (a, b, c, x):
        d.wait_advertised()

    for me, rec in ((a, rec_a), (b, rec_b), (c, rec_c)):
        for other in {a, b, c} - {me}:
            seen = rec.added(other.advert.node_id).advert
            assert seen == replace(other.advert, addresses=(LOOPBACK,))
    for me, rec in ((a, rec_a), (b, rec_b), (c, rec_c)):
        assert rec.nodes_seen() == {d.advert.node_id for d in (a, b, c)} - {me.advert.node_id}
        assert set(me.peers()) == rec.nodes_seen()
    assert x.advert.node_id not in rec_a.nodes_seen() | rec_b.nodes_seen() | rec_c.nodes_seen()
    assert not rec_x.nodes_seen() & {a.advert.node_id, b.advert.node_id, c.advert.node_id}

    c.close()
    for rec in (rec_a, rec_b):
        rec.wait_for(lambda e: e == PeerRemoved(c.advert.node_id))
    assert c.advert.node_id not in a.peers()
    assert set(a.peers()) == {b.advert.node_id}


def test_changed_advert_is_seen_as_update(mesh: Start) -> None:
    store = unique("s")
    a, rec_a = mesh(store, unique("a"), 7201)
    b, _ = mesh(store, unique("b"), 7202, wait=True)
    rec_a.added(b.advert.node_id)
    moved = replace(b.advert, port=7299, name="till moved", protocol_version=2)
    b.update(moved)
    event = rec_a.wait_for(lambda e: isinstance(e, PeerUpdated))
    assert event == PeerUpdated(replace(moved, addresses=(LOOPBACK,)))
    assert a.peers()[b.advert.node_id].port == 7299


class Catch(logging.Handler):
    """Keeps the discovery logger's records and signals when one mentions `needle`."""

    def __init__(self, needle: str) -> None:
        super().__init__(logging.DEBUG)
        self.needle = needle
        self.records: list[logging.LogRecord] = []
        self.seen = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        if self.needle in record.getMessage():
            self.seen.set()


def test_malformed_advert_on_the_network_is_logged_and_ignored(mesh: Start) -> None:
    store, bad_node = unique("s"), unique("bad")
    catch = Catch(bad_node)
    logger = logging.getLogger("meshpos.discovery")
    logger.addHandler(catch)
    a, rec_a = mesh(store, unique("a"), 7301)
    b, _ = mesh(store, unique("b"), 7303)
    rogue = Zeroconf(interfaces=[LOOPBACK])
    try:
        bad = ServiceInfo(
            SERVICE_TYPE,
            instance_name(bad_node),
            port=7302,
            properties={b"store": store.encode(), b"node": bad_node.encode(), b"port": b"x"},
            server=f"{bad_node}.local.",
            parsed_addresses=[LOOPBACK],
        )
        rogue.register_service(bad)
        assert catch.seen.wait(DEADLINE), "the malformed advert was not logged"
        record = next(r for r in catch.records if bad_node in r.getMessage())
        assert record.name == "meshpos.discovery" and record.levelno == logging.WARNING
        assert "lacks the 'fp' TXT record" in record.getMessage()
        rec_a.added(b.advert.node_id)
        assert bad_node not in a.peers()
        assert all(bad_node not in repr(e) for e in rec_a.events)
    finally:
        rogue.close()
        logger.removeHandler(catch)


def test_two_terminals_with_one_identity_are_refused(mesh: Start) -> None:
    store, node = unique("s"), unique("n")
    mesh(store, node, 7401, wait=True)
    with pytest.raises(ConfigError, match=f"already advertises node {node}"):
        mesh(store, node, 7402, wait=True)
