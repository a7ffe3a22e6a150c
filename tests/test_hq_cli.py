"""`meshpos hq ...` as a person uses it: init, both enrolment designs end to end, downstream
commands, reports, and the errors each command gives for bad input."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import CliResult, Node, run_cli
from hq_helpers import HQServer, push_all

from meshpos.domain.gst import Band
from meshpos.hq.client import HQClient, ingest_pull
from meshpos.node import membership
from meshpos.service.terminal import Terminal


@pytest.fixture
def hq_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv("MESHPOS_HQ_DIR", raising=False)
    monkeypatch.delenv("MESHPOS_HQ_DB", raising=False)
    d = tmp_path / "hq"
    r = run_cli(["hq", "init", "--dir", str(d), "--json"])
    assert r.code == 0, r.err
    return d


def hq(d: Path, *args: str) -> CliResult:
    return run_cli(["hq", args[0], "--dir", str(d), *args[1:]])


def ok(d: Path, *args: str) -> CliResult:
    r = hq(d, *args)
    assert r.code == 0, f"meshpos hq {' '.join(args)} failed: {r.err}"
    return r


def fail(d: Path, *args: str) -> str:
    r = hq(d, *args)
    assert r.code == 1 and r.out == "", r
    lines = r.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.err
    return lines[0]


@pytest.fixture
def server(hq_dir: Path) -> Iterator[HQServer]:
    s = HQServer(hq_dir)
    yield s
    s.stop()


def test_init_creates_keys_with_private_modes_and_refuses_to_overwrite(hq_dir: Path) -> None:
    for name in ("hq.key", "payment.key", "admin.token"):
        assert (hq_dir / name).stat().st_mode & 0o777 == 0o600
    info = json.loads(ok(hq_dir, "info", "--json").out)
    assert len(bytes.fromhex(info["payment_public_key"])) == 32
    assert "already holds an HQ" in run_cli(["hq", "init", "--dir", str(hq_dir)]).err
    missing = run_cli(["hq", "stores", "--dir", str(hq_dir / "nope")])
    assert missing.code == 1 and "no HQ in" in missing.err


def test_store_enrolled_by_hq_gets_terminals_certified_by_hq(
    hq_dir: Path, server: HQServer, make_node: Callable[..., Node]
) -> None:
    out = json.loads(ok(hq_dir, "enroll-store", "S7", "--name", "Mall road", "--json").out)
    assert out["key_at_hq"] and out["hq_certificate"]
    assert "already enrolled" in fail(hq_dir, "enroll-store", "S7")
    t1 = make_node("T1", "S7")
    t1.ok("enroll", "request", "--out", str(t1.path / "req"))
    ok(hq_dir, "enroll-node", "S7", str(t1.path / "req"), "--out", str(t1.path / "enr"))
    t1.ok("enroll", "install", str(t1.path / "enr"))
    assert json.loads(t1.ok("status", "--json").out)["enrolled"]
    t1.ok("catalog", "import", "--sample")
    t1.sell("TSH-NAV-M")
    term = Terminal.open(t1.path)
    try:
        assert _relay(server, term) > 0
        assert term.cfg.store_public_key == bytes.fromhex(out["store_public_key"])
        ok(hq_dir, "price", "TSH-NAV-M", "449")
        _relay(server, term)
        assert term.product("TSH-NAV-M").price == 44_900
    finally:
        term.close()
    t2 = Node(hq_dir.parent / "second")  # a second terminal may not take a used name
    t2.ok("init", "--store", "S7", "--name", "T1")
    t2.ok("enroll", "request", "--out", str(t2.path / "req"))
    assert "already enrolled" in fail(
        hq_dir, "enroll-node", "S7", str(t2.path / "req"), "--out", str(t2.path / "enr")
    )


def test_store_that_keeps_its_key_certifies_hq_and_then_hears_from_it(
    hq_dir: Path, server: HQServer, make_node: Callable[..., Node]
) -> None:
    t1 = make_node("T1", "S8")
    pub = json.loads(t1.ok("store", "init", "--json").out)["store_public_key"]
    req = str(hq_dir / "hq-S8.req")
    assert "--request-out" in fail(hq_dir, "enroll-store", "S8", "--store-public-key", pub)
    ok(hq_dir, "enroll-store", "S8", "--store-public-key", pub, "--request-out", req)
    assert "holds no certificate" in fail(hq_dir, "setting", "promo", "1", "--store", "S8")
    t1.ok("enroll", "sign", req, "--role", "hq", "--out", str(t1.path / "hq.enr"))
    ok(hq_dir, "install-cert", str(t1.path / "hq.enr"))
    (hq_dir / "junk").write_bytes(b"\x92\xa4junk\x01")
    assert "not a meshpos enrolment" in fail(hq_dir, "install-cert", str(hq_dir / "junk"))
    assert "cannot read" in fail(hq_dir, "install-cert", str(hq_dir / "missing"))
    ok(hq_dir, "product", "SCARF", "--name", "Silk scarf", "--price", "799", "--gst", "12",
       "--store", "S8")  # fmt: skip
    ok(hq_dir, "loyalty-rule", "--earn-per-100", "5")
    ok(hq_dir, "setting", "store.timezone", '"Asia/Dubai"', "--store", "S8")
    ok(hq_dir, "setting", "gst.bands.hsn:61", '"12% above"', "--store", "S8")
    t1.ok("enroll", "request", "--out", str(t1.path / "r2"))
    assert "does not hold store S8's key" in fail(
        hq_dir, "enroll-node", "S8", str(t1.path / "r2"), "--out", str(t1.path / "e2")
    )
    term = Terminal.open(t1.path)
    try:
        _relay(server, term)
        assert term.product("SCARF").price == 79_900 and term.product("SCARF").gst_rate == 1200
        assert term.loyalty_rule().earn_per_100 == 5
        assert term.store_time().name == "Asia/Dubai"  # HQ's setting over [store] timezone
        assert term.gst_rules().for_product("Tops", "610910") == (Band(1200),)
    finally:
        term.close()
    t1.sell("SCARF", "--allow-oversell")
    term = Terminal.open(t1.path)
    try:
        _relay(server, term)
    finally:
        term.close()
    report = json.loads(ok(hq_dir, "report", "--json").out)
    s8 = next(s for s in report["stores"] if s["store"] == "S8")
    assert s8["sales"] == 1 and s8["net"] == 79_900
    assert report["chain"]["sales"] == 1
    text = ok(hq_dir, "report").out
    assert "S8" in text and "sales per store and day" in text


def test_bad_input_to_each_command_names_what_was_wrong(hq_dir: Path) -> None:
    ok(hq_dir, "enroll-store", "S1")
    assert "no product NOPE" in fail(hq_dir, "price", "NOPE", "10")
    assert "'ten'" in fail(hq_dir, "price", "NOPE", "ten")
    assert "not JSON" in fail(hq_dir, "setting", "promo", "{oops")
    assert "not an IANA time zone" in fail(hq_dir, "setting", "store.timezone", '"IST"')
    assert "the last band" in fail(hq_dir, "setting", "gst.bands.Tops", '"5% up to 2500"')
    assert "not an HSN code" in fail(hq_dir, "product", "X", "--hsn", "61A")
    assert "check digit" in fail(hq_dir, "block-card", "4111111111111112", "--reason", "lost")
    assert "not enrolled at HQ" in fail(hq_dir, "price", "X", "1", "--store", "ZZ")
    assert "64 hex digits" in fail(
        hq_dir, "enroll-store", "S2", "--store-public-key", "abc", "--request-out", "x"
    )
    assert "store id" in fail(hq_dir, "enroll-store", "bad id!")
    assert "give --earn-per-100" in fail(hq_dir, "loyalty-rule")
    assert "at least one product field" in fail(hq_dir, "product", "X")
    r = run_cli(["hq", "serve", "--dir", str(hq_dir), "--db", "postgresql://u@127.0.0.1:1/x"])
    assert r.code == 1 and "cannot connect to the HQ database" in r.err


def test_blocking_a_card_signs_one_setting_per_store(hq_dir: Path) -> None:
    ok(hq_dir, "enroll-store", "S1")
    ok(hq_dir, "enroll-store", "S2")
    out = json.loads(ok(hq_dir, "block-card", "4111111111111111", "--reason", "lost", "--json").out)
    assert sorted(o["store"] for o in out) == ["S1", "S2"]
    assert {o["kind"] for o in out} == {"setting.set"}
    payments = json.loads(ok(hq_dir, "payments", "--json").out)
    assert payments == []


def _relay(server: HQServer, t: Terminal) -> int:
    cert = membership.load(t.cfg).cert
    with HQClient(server.url, t.signer, t.cfg.store, cert=cert.raw if cert else None) as c:
        push_all(c, t)
        res = c.pull(t.ledger.vv())
        ingest_pull(t, res)
        return len(res.ops)
