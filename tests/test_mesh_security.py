"""Who gets into a store's mesh: two enrolled daemons keep syncing while an unenrolled node, a node
enrolled by another store key (same store id), a stranger with an unknown CURVE key and a node
that passes the handshake but speaks garbage all knock. Each is refused, and the daemon's log
names its address and the reason. And who is put out of it: a stolen terminal, revoked."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq
from mesh_procs import (
    MESHPOS,
    REPO,
    Daemon,
    Daemons,
    backlog,
    converged,
    count_ops,
    has_op,
    make_store,
    meshpos,
    node_id,
    sale_ids,
    sell,
    store_of,
    wait_until,
)
from netns import loopback_multicast
from zmq.utils import z85

from meshpos.core.ops import Signer, pack
from meshpos.domain.enrolment import NodeRecord
from meshpos.node.discovery import Advert, Discovery
from meshpos.node.transport import CurveKeys, Transport
from meshpos.sync.messages import PROTOCOL_VERSION, Error, Hello, Ops, decode, encode

pytestmark = pytest.mark.slow

DEADLINE = 30.0
HOT = "TSH-NAV-M"


@pytest.fixture(scope="module", autouse=True)
def _mdns_on_loopback() -> Iterator[None]:
    with loopback_multicast():
        yield


class Rogue:
    """A process on the LAN that advertises itself as a terminal of the store over mDNS (so the
    daemons let its CURVE key through the handshake, as they do for any advertised peer) and
    then talks to a daemon: a Hello without certificate, or garbage."""

    def __init__(self, store: str, name: str) -> None:
        self.signer = Signer.generate()
        self.node_id = self.signer.node_id
        self.store = store
        self.keys = CurveKeys.generate()
        self.transport = Transport(self.node_id, self.keys, refused_retry_ms=100)
        self.transport.start()
        fp = z85.decode(self.keys.public).hex()
        advert = Advert(store, self.node_id, name, fp, PROTOCOL_VERSION, self.transport.port)
        self.discovery = Discovery(advert, lambda event: None, ip="127.0.0.1")
        self.discovery.start(wait=False)
        self.inbox: list[Any] = []

    def dial(self, target: Daemon) -> str:
        """Connect to a daemon (address from its status, key from its curve.key file)."""
        peer = node_id(target.directory)
        server = CurveKeys.load(target.directory / "curve.key").public
        port = wait_until(lambda: target.status().get("port"), DEADLINE, "daemon port")
        self.transport.allow(peer, server)
        self.transport.connect(peer, "127.0.0.1", int(port), server)

        def up() -> bool:
            self.pump()
            return self.transport.is_up(peer)

        # The daemon lets our key in once it has discovered our advert; until then ZAP refuses
        # us and the transport redials. Its Hello shows its link back to us is up too.
        wait_until(up, DEADLINE, f"{self.node_id}'s link to {target.name}")
        wait_until(
            lambda: self.errors() is not None and any(isinstance(m, Hello) for m in self.inbox),
            DEADLINE,
            f"{target.name}'s Hello",
        )
        return peer

    def pump(self) -> None:
        for _, data in self.transport.poll(timeout_ms=10):
            self.inbox.append(decode(data))

    def errors(self) -> list[Error]:
        self.pump()
        return [m for m in self.inbox if isinstance(m, Error)]

    def hello(self, cert: bytes | None = None) -> bytes:
        me = NodeRecord(self.node_id, self.signer.public_key, self.store, "rogue", cert)
        return encode(Hello(PROTOCOL_VERSION, self.store, me.as_row(), {}, 1, reply=True))

    def close(self) -> None:
        self.discovery.close()
        self.transport.close()


@pytest.fixture
def rogues() -> Iterator[list[Rogue]]:
    made: list[Rogue] = []
    yield made
    for r in made:
        r.close()


def wait_log(daemon: Daemon, text: str, daemons: Daemons) -> str:
    def found() -> str | None:
        for line in daemon.log().splitlines():
            if text in line:
                return line
        return None

    return wait_until(found, DEADLINE, f"{daemon.name}'s log to say {text!r}", daemons)


def test_strangers_are_refused_and_named_while_the_store_keeps_syncing(
    tmp_path: Path, rogues: list[Rogue]
) -> None:
    dirs = make_store(tmp_path / "store", ["A", "B"])
    a, b = dirs
    store = store_of(a)
    # A look-alike: its own store key, claiming the same store id.
    (foreign,) = make_store(tmp_path / "impostor", ["F"], store=store, catalog=False)
    # Unenrolled: a node directory that never went through `enroll`.
    loner = tmp_path / "loner"
    meshpos(loner, "init", "--store", store, "--name", "L")

    with Daemons() as ds:
        da, db_ = ds.start(a), ds.start(b)
        dfo = ds.start(foreign)
        wait_until(lambda: converged(dirs) and count_ops(b) > 0, DEADLINE, "A and B in sync", ds)

        # 1. An unenrolled node cannot even start its daemon.
        res = subprocess.run(
            [*MESHPOS, "--dir", str(loner), "node", "run"],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=REPO,
            env={**os.environ},
        )
        assert res.returncode == 1 and "is not enrolled" in res.stderr, res.stderr

        # 2. A node enrolled by another store key (same store id): its daemon and ours refuse
        # each other (whichever reads the other's Hello first refuses, then cuts it off)...
        f_id, a_id, b_id = node_id(foreign), node_id(a), node_id(b)
        verdict = "certificate (not signed by this store's key): signature does not verify"
        for daemon in (da, db_):
            wait_log(daemon, f"{f_id}", ds)
            wait_until(
                lambda d=daemon: (
                    f"refused peer {f_id} at 127.0.0.1: {verdict}" in d.log()
                    or f"peer {f_id} refused our data (refused): {verdict}" in d.log()
                ),
                DEADLINE,
                f"{daemon.name} and F to refuse each other",
                ds,
            )
        wait_log(dfo, f"at 127.0.0.1: {verdict}", ds)
        # ... and a node showing such a certificate is refused by name, address and reason.
        impostor = Rogue(store, "I")
        rogues.append(impostor)
        target = impostor.dial(da)
        assert impostor.transport.send(target, impostor.hello((foreign / "node.cert").read_bytes()))
        wait_log(da, f"refused peer {impostor.node_id} at 127.0.0.1: {verdict}", ds)

        # 3. An unenrolled node that speaks the protocol: its Hello carries no certificate.
        unenrolled = Rogue(store, "U")
        rogues.append(unenrolled)
        target = unenrolled.dial(da)
        assert unenrolled.transport.send(target, unenrolled.hello())
        wait_log(
            da,
            f"refused peer {unenrolled.node_id} at 127.0.0.1: no certificate: "
            "the node is not enrolled in this store",
            ds,
        )
        wait_until(
            lambda: any(e.code == "refused" for e in unenrolled.errors()),
            DEADLINE,
            "the unenrolled node to be told why",
            ds,
        )

        # 4. A stranger with a well-formed CURVE key nobody enrolled: refused at the handshake.
        ctx: zmq.Context[Any] = zmq.Context()
        try:
            public, secret = zmq.curve_keypair()
            raw = ctx.socket(zmq.DEALER)
            raw.linger = 0
            raw.curve_publickey, raw.curve_secretkey = public, secret
            raw.curve_serverkey = CurveKeys.load(a / "curve.key").public
            raw.connect(f"tcp://127.0.0.1:{da.status()['port']}")
            raw.send(b"\x00garbage", zmq.NOBLOCK)
            wait_log(
                da,
                f"refused connection from 127.0.0.1: CURVE key {public.decode()} "
                "is not an enrolled peer",
                ds,
            )
        finally:
            ctx.destroy(linger=0)

        # 5. Past the handshake (an advertised key) but sending garbage: every frame refused.
        junk = Rogue(store, "J")
        rogues.append(junk)
        target = junk.dial(db_)
        for frame in (
            os.urandom(64),
            pack([1, 2, 3]),
            pack({"t": "ops", "o": [b"not an op"], "e": 1}),
            encode(Ops((pack([b"body", b"sig"]),), (), 1)),
        ):
            assert junk.transport.send(target, frame)
        line = wait_log(db_, f"refused peer {junk.node_id} at 127.0.0.1:", ds)
        assert "message" in line, line
        # Before a Hello only the two undecodable frames earn an Error; the well-formed ones
        # are answered with our Hello (the protocol ignores data from a peer not yet admitted).
        wait_until(lambda: len(junk.errors()) >= 2, DEADLINE, "an error per junk message", ds)
        assert junk.transport.send(target, junk.hello())
        wait_log(db_, f"refused peer {junk.node_id} at 127.0.0.1: no certificate", ds)

        # Meanwhile the store carries on: sales cross both ways; nobody else got anything.
        s1, s2 = sell(a, HOT), sell(b, HOT)
        wait_until(lambda: converged(dirs), DEADLINE, "A and B to converge", ds)
        for sale in (s1, s2):
            origin, seq = sale["op"].split(":")
            assert has_op(a, origin, int(seq)) and has_op(b, origin, int(seq))
        assert da.running() and db_.running() and dfo.running()
        peers = {p["node_id"]: p for p in meshpos(a, "peers", "--json").json()}
        assert peers[b_id]["up"]
        for stranger in (f_id, impostor.node_id, unenrolled.node_id, junk.node_id):
            assert not peers.get(stranger, {}).get("up"), f"{stranger} is up at A"
        assert count_ops(foreign) == 0
        assert {a_id, b_id} >= set(dict(meshpos(a, "sync", "vv", "--json").json()))


# -- a stolen terminal (issue 13 item 6) -----------------------------------------------------------


def peers_up(d: Path) -> set[str]:
    return {p["name"] for p in meshpos(d, "peers", "--json").json() if p["up"]}


def test_a_stolen_terminal_is_revoked_dropped_and_stops_selling(tmp_path: Path) -> None:
    """The manager revokes C with `meshpos store revoke` on A (the store key's terminal): A and B
    drop C at once and refuse it from then on, C shows that it was revoked and refuses to sell,
    and what the thief forges at C reaches nobody, while A and B keep syncing."""
    a, b, c = make_store(tmp_path, ["A", "B", "C"], mesh={"copy_wait_ms": 5000})
    c_id = node_id(c)
    with Daemons() as ds:
        for d in (a, b, c):
            ds.start(d)
        wait_until(lambda: converged([a, b, c]) and count_ops(c) > 0, DEADLINE, "a synced mesh", ds)
        wait_until(lambda: peers_up(a) == {"B", "C"}, DEADLINE, "A's sessions with B and C", ds)
        before = sell(c, HOT)  # an honest sale, before the theft
        wait_until(lambda: before["sale_id"] in sale_ids(a), DEADLINE, "C's sale at A", ds)

        out = meshpos(a, "store", "revoke", "C", "--reason", "stolen from the counter", "--json")
        point = out.json()["after_seq"]
        assert point >= 1

        # A drops C at once; B hears from A and drops it too; C hears why.
        wait_until(lambda: "C" not in peers_up(a), DEADLINE, "A to drop C", ds)
        wait_until(lambda: "C" not in peers_up(b), DEADLINE, "B to drop C", ds)
        status = wait_until(
            lambda: (s := meshpos(c, "status", "--json").json())["revoked"] != "no" and s,
            DEADLINE,
            "C to know it was revoked",
            ds,
        )
        assert "stolen from the counter" in status["revoked"]
        assert c_id in ds.all[1].status()["revoked_peers"]
        wait_until(lambda: ds.all[2].status().get("revoked"), DEADLINE, "C's banner hook", ds)
        refused = meshpos(c, "sell", HOT, check=False)
        assert refused.code != 0 and "revoked by the store" in refused.err

        # The thief signs ops at C with its key, bypassing the till: nobody takes them.
        _, last = backlog(c, 3)
        after = sell(b, HOT)
        wait_until(lambda: after["sale_id"] in sale_ids(a), DEADLINE, "B's next sale at A", ds)
        for d in (a, b):
            assert not has_op(d, c_id, last)
        # Restarted, C still gets no session anywhere: its key fails the CURVE handshake.
        ds.all[2].stop()
        ds.start(c)
        wait_until(lambda: ds.all[2].log(since_start=True).count("refused our key") >= 2,
                   DEADLINE, "A and B to refuse C's key", ds)  # fmt: skip
        assert "C" not in peers_up(a) and "C" not in peers_up(b)
        assert meshpos(a, "verify").code == 0
