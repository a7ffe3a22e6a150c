"""CLI: version vectors, bundles (the file-based sync path), refused bundles, and conflicts that a
merge raises and a manager resolves."""

from __future__ import annotations

import json
import tomllib

import pytest

from meshpos.core.ops import Signer, pack, unpack
from meshpos.sync import compression


def export(src, path, since_of=None) -> int:
    """`sync export` from src; with since_of, only what that node lacks. Returns the op count."""
    args = ["sync", "export", str(path)]
    if since_of is not None:
        vv_file = path.with_suffix(".vv.json")
        vv_file.write_text(json.dumps(since_of.vv()))
        args += ["--since", str(vv_file)]
    out = src.ok(*args).out
    assert out.startswith("exported ") and str(path) in out
    return int(out.split()[1])


def send(src, dst, path) -> str:
    """Carry what dst lacks from src to dst; returns the import message."""
    export(src, path, since_of=dst)
    return dst.ok("sync", "import", str(path)).out


def node_id(n) -> str:
    return str(tomllib.loads((n.path / "meshpos.toml").read_text())["node"]["node_id"])


# -- version vectors and bundles --------------------------------------------------------------


def test_vv_names_each_origin_and_its_contiguous_seq(pair):
    t1, t2 = pair
    vv1 = t1.vv()
    [(origin, seq)] = vv1.items()
    assert seq > 500  # the sample catalogue: a product op and a stock receipt per SKU
    assert t2.vv() == vv1  # T2 imported T1's bundle and has no ops of its own yet
    t1.sell("CAP")
    assert t1.vv() == {origin: seq + 1}
    rows = t1.ok("sync", "vv").out
    assert "T1" in rows and str(seq + 1) in rows


def test_export_since_carries_only_what_the_other_side_lacks(pair, tmp_path):
    t1, t2 = pair
    t1.sell("TEE-M")
    t1.sell("CAP")
    t2.sell("JKT-L")
    assert export(t1, tmp_path / "all.bundle") == sum(t1.vv().values())
    assert export(t1, tmp_path / "t2-lacks.bundle", since_of=t2) == 2
    assert export(t2, tmp_path / "t1-lacks.bundle", since_of=t1) == 1
    assert export(t1, tmp_path / "nothing.bundle", since_of=t1) == 0
    out = t2.ok("sync", "import", str(tmp_path / "t2-lacks.bundle")).out
    assert out.startswith("imported 2 new ops (0 already held, 0 waiting")
    t1.ok("sync", "import", str(tmp_path / "t1-lacks.bundle"))
    assert t1.vv() == t2.vv() and len(t1.vv()) == 2
    assert t1.json("stock") == t2.json("stock")
    assert t1.json("report", "sales", "--by", "terminal") == t2.json(
        "report", "sales", "--by", "terminal"
    )
    assert t1.json("report", "x")["sales"] == 2  # X is this terminal's own takings only
    t1.ok("verify")
    t2.ok("verify")


def test_stock_by_counter_shows_what_each_counters_ops_moved(pair, tmp_path):
    t1, t2 = pair
    (start,) = t1.json("stock", "show", "TEE-M")
    t1.sell("TEE-M")
    t2.sell("TEE-M")
    t2.sell("TEE-M")
    t2.ok("stock", "receive", "TEE-M", "5", "--reason", "delivery")
    export(t2, tmp_path / "t2.bundle", since_of=t1)
    t1.ok("sync", "import", str(tmp_path / "t2.bundle"))
    (row,) = t1.json("stock", "show", "TEE-M", "--by-counter")
    moved = row.pop("by_counter")
    assert row == {**start, "qty": start["qty"] - 3 + 5}
    assert moved["T2"] == 3 and sum(moved.values()) == row["qty"]
    assert [r["sku"] for r in t1.json("stock", "--by-counter")] == [
        r["sku"] for r in t1.json("stock")
    ]
    table = t1.ok("stock", "show", "--by-counter").out
    assert "stock by counter" in table and "T1" in table and "T2" in table


def test_export_and_import_json_give_the_counts(pair, tmp_path):
    t1, t2 = pair
    t1.sell("TEE-M")
    (tmp_path / "vv.json").write_text(json.dumps(t2.vv()))
    path = str(tmp_path / "one.bundle")
    out = t1.json("sync", "export", path, "--since", str(tmp_path / "vv.json"))
    assert out == {"file": path, "ops": 1, "bytes": (tmp_path / "one.bundle").stat().st_size}
    assert t2.json("sync", "import", path) == {"applied": 1, "duplicates": 0, "pending": 0}
    assert t2.json("sync", "import", path) == {"applied": 0, "duplicates": 1, "pending": 0}


def test_importing_the_same_bundle_twice_changes_nothing(pair, tmp_path):
    t1, t2 = pair
    t1.sell("TEE-M")
    bundle = tmp_path / "b.bundle"
    export(t1, bundle, since_of=t2)
    assert t2.ok("sync", "import", str(bundle)).out.startswith("imported 1 new ops")
    before = t2.snapshot()
    stock = t2.json("stock")
    out = t2.ok("sync", "import", str(bundle)).out
    assert out.startswith("imported 0 new ops (1 already held")
    assert t2.snapshot() == before and t2.json("stock") == stock
    whole = tmp_path / "whole.bundle"
    export(t1, whole)
    assert t2.ok("sync", "import", str(whole)).out.startswith("imported 0 new ops")
    assert t2.snapshot() == before


def test_a_gap_waits_until_it_is_filled(pair, tmp_path):
    t1, t2 = pair
    t1.sell("TEE-M")
    first = tmp_path / "first.bundle"
    export(t1, first, since_of=t2)
    mid_vv = tmp_path / "mid.vv.json"
    mid_vv.write_text(json.dumps(t1.vv()))
    t1.sell("CAP")
    t1.sell("JKT-L")
    second = tmp_path / "second.bundle"
    t1.ok("sync", "export", str(second), "--since", str(mid_vv))
    held = t2.vv()
    out = t2.ok("sync", "import", str(second)).out
    assert out.startswith("imported 0 new ops (0 already held, 2 waiting for a gap to fill)")
    assert t2.vv() == held and t2.qty("CAP") == 5
    out = t2.ok("sync", "import", str(first)).out
    assert out.startswith("imported 3 new ops")
    assert t2.vv() == t1.vv() and t2.qty("CAP") == 4 and t2.qty("JKT-L") == 2
    t2.ok("verify")


def test_a_bundle_relays_a_third_terminals_ops(pair, make_node, tmp_path):
    t1, t2 = pair
    t2.sell("JKT-L")
    send(t2, t1, tmp_path / "a.bundle")
    t3 = make_node("T3")
    send(t1, t3, tmp_path / "b.bundle")
    assert t3.vv() == t1.vv() and len(t3.vv()) == 2
    assert t3.qty("JKT-L") == 2
    assert {r["key"] for r in t3.json("report", "sales", "--by", "terminal")} == {"T2"}
    assert "T2" in t3.ok("sync", "vv").out
    t3.ok("verify")


def test_export_and_import_file_errors(node, tmp_path):
    assert "cannot write" in node.fail("sync", "export", str(tmp_path / "no" / "dir" / "b"))
    assert not (tmp_path / "no").exists()
    assert "cannot read" in node.fail("sync", "import", str(tmp_path / "missing.bundle"))
    bad = tmp_path / "bad.json"
    for text in ("{", '["a"]', '{"abc": -1}', '{"abc": "3"}'):
        bad.write_text(text)
        assert "version vector" in node.fail(
            "sync", "export", str(tmp_path / "x"), "--since", str(bad)
        )
    assert not (tmp_path / "x").exists()


# -- bundles that must be refused -------------------------------------------------------------


@pytest.fixture
def small_bundle(pair, tmp_path):
    """T1 sold twice; a bundle of just those two sales for T2."""
    t1, t2 = pair
    t1.sell("TEE-M")
    t1.sell("CAP", "--pay", "card-machine", "--card-approval", "A1B2C3", "--card-last4", "4242")
    path = tmp_path / "two.bundle"
    assert export(t1, path, since_of=t2) == 2
    return t1, t2, path


def refused(node, path, *expect: str) -> str:
    before = node.snapshot()
    err = node.fail("sync", "import", str(path))
    for part in expect:
        assert part in err, err
    assert node.snapshot() == before
    return err


def rewrap(data: bytes, signer: Signer, change) -> bytes:
    """Open a bundle, let `change` edit its content, and sign the envelope again with `signer`."""
    content, _, _ = unpack(data)
    body = unpack(content)
    body["ops"] = unpack(compression.decompress(body.pop("opz"), body["z"], 1 << 30))
    change(body)
    if body["format"] > 1:
        body["opz"] = compression.compress(pack(body.pop("ops")), body["z"])
    new = pack(body)
    return pack([new, signer.public_key, signer.sign(new)])


def test_a_byte_flipped_anywhere_is_refused(small_bundle, tmp_path):
    _, t2, path = small_bundle
    data = path.read_bytes()
    positions = sorted(
        {0, 1, 2, len(data) // 2, len(data) - 2, len(data) - 1}
        | set(range(3, len(data), max(1, len(data) // 40)))
    )
    for pos in positions:
        flipped = bytearray(data)
        flipped[pos] ^= 0x01
        bad = tmp_path / f"flip{pos}.bundle"
        bad.write_bytes(bytes(flipped))
        refused(t2, bad)
    assert t2.ok("sync", "import", str(path)).out.startswith("imported 2 new ops")


def test_a_tampered_bundle_says_it_was_altered(small_bundle, tmp_path):
    _, t2, path = small_bundle
    data = path.read_bytes()
    pos = data.index(b"meshpos-bundle")
    bad = tmp_path / "tampered.bundle"
    bad.write_bytes(data[:pos] + b"meshpos-bundlf" + data[pos + 14 :])
    refused(t2, bad, "signature does not verify", "altered")


def test_a_bundle_of_format_1_still_imports_and_a_later_format_is_refused_by_name(
    small_bundle, tmp_path
):
    t1, t2, path = small_bundle
    key = Signer.from_bytes((t1.path / "node.key").read_bytes())

    def old(body):
        body["format"] = 1
        del body["z"]

    def later(body):
        body["format"] = 3

    plain = rewrap(path.read_bytes(), key, old)
    assert len(plain) > len(path.read_bytes())
    bad = tmp_path / "later.bundle"
    bad.write_bytes(rewrap(path.read_bytes(), key, later))
    refused(t2, bad, "bundle format 3 is not supported", "upgrade meshpos")
    old_path = tmp_path / "old.bundle"
    old_path.write_bytes(plain)
    assert t2.ok("sync", "import", str(old_path)).out.startswith("imported 2 new ops")


@pytest.mark.parametrize("keep", [0, 1, 10, 0.5, -1])
def test_a_truncated_bundle_is_refused(small_bundle, tmp_path, keep):
    _, t2, path = small_bundle
    data = path.read_bytes()
    n = int(len(data) * keep) if isinstance(keep, float) else (keep % len(data))
    bad = tmp_path / "cut.bundle"
    bad.write_bytes(data[:n])
    refused(t2, bad)


def test_a_bundle_from_another_store_is_refused(node, make_node, tmp_path):
    other = make_node("T1", store="S2")
    other.ok("catalog", "import", "--sample")
    path = tmp_path / "s2.bundle"
    export(other, path)
    refused(node, path, "store 'S2'", "'S1'")


def test_a_bundle_with_a_forged_op_signature_is_refused(small_bundle, tmp_path):
    t1, t2, path = small_bundle
    key = Signer.from_bytes((t1.path / "node.key").read_bytes())
    mallory = Signer.generate()

    def forge(body):
        op_body, _ = body["ops"][-1]
        body["ops"][-1] = [op_body, mallory.sign(op_body)]

    bad = tmp_path / "forged.bundle"
    bad.write_bytes(rewrap(path.read_bytes(), key, forge))
    refused(t2, bad, "signature that does not verify", node_id(t1))

    def relay(body):  # the envelope of some other sender, itself valid: same verdict
        forge(body)
        body["sender"] = mallory.node_id

    bad.write_bytes(rewrap(path.read_bytes(), mallory, relay))
    refused(t2, bad, "signature that does not verify", node_id(t1))


def test_a_bundle_with_an_altered_op_is_refused(small_bundle, tmp_path):
    t1, t2, path = small_bundle
    key = Signer.from_bytes((t1.path / "node.key").read_bytes())

    def discount(body):
        op_body, sig = body["ops"][0]
        fields = unpack(op_body)
        fields[7]["total"] = 1  # the payload of the first sale
        body["ops"][0] = [pack(fields), sig]

    bad = tmp_path / "altered.bundle"
    bad.write_bytes(rewrap(path.read_bytes(), key, discount))
    refused(t2, bad, "does not follow the op before it")


def test_a_bundle_claiming_a_node_key_that_is_not_its_own_is_refused(small_bundle, tmp_path):
    t1, t2, path = small_bundle
    key = Signer.from_bytes((t1.path / "node.key").read_bytes())

    def swap_key(body):
        body["nodes"][0][1] = Signer.generate().public_key

    bad = tmp_path / "swapped.bundle"
    bad.write_bytes(rewrap(path.read_bytes(), key, swap_key))
    refused(t2, bad, "not its own")


@pytest.mark.parametrize("content", [b"", b"hello", b"\x93\xc4\x00\xc4\x00\xc4\x00"])
def test_garbage_is_not_a_bundle(node, tmp_path, content):
    bad = tmp_path / "junk.bundle"
    bad.write_bytes(content)
    refused(node, bad)


# -- conflicts --------------------------------------------------------------------------------


def oversell(pair, tmp_path):
    """Both terminals sell the last unit while apart, then swap bundles."""
    t1, t2 = pair
    assert t1.qty("LAST") == t2.qty("LAST") == 1
    s1 = t1.json("sell", "LAST")["op"]
    s2 = t2.json("sell", "LAST")["op"]
    assert t1.json("conflicts") == t2.json("conflicts") == []
    send(t1, t2, tmp_path / "to-t2.bundle")
    send(t2, t1, tmp_path / "to-t1.bundle")
    return t1, t2, {s1, s2}


def test_oversell_after_a_merge_is_flagged_on_both_with_both_sales(pair, tmp_path):
    t1, t2, sales = oversell(pair, tmp_path)
    for t in (t1, t2):
        assert t.qty("LAST") == -1
        [c] = t.json("conflicts", "list")
        assert (c["conflict_id"], c["kind"], c["status"]) == ("oversell:LAST", "oversell", "open")
        assert c["detail"] == {"sku": "LAST", "stock": -1}
        assert set(c["ops"]) == sales
        assert "oversell:LAST" in t.ok("conflicts").out
    assert t1.json("conflicts") == t2.json("conflicts")


def test_resolving_with_an_adjustment_replicates(pair, tmp_path):
    t1, t2, _ = oversell(pair, tmp_path)
    out = t1.ok(
        "conflicts",
        "resolve",
        "oversell:LAST",
        "--adjust",
        "1",
        "--note",
        "one more in the back room",
        user="manager1",
    ).out
    assert out.startswith("oversell:LAST resolved (op ")
    assert t1.json("conflicts") == [] and t1.qty("LAST") == 0
    [c] = t1.json("conflicts", "--all")
    assert c["status"] == "resolved" and c["detail"]["note"] == "one more in the back room"
    assert c["detail"]["by"] == "manager1" and c["resolved_by"] == c["ops"][0]
    kinds = [(o["kind"], o["user"]) for o in t1.json("ops", "tail", "-n", "2")]
    assert kinds == [("stock.adjust", "manager1"), ("conflict.resolve", "manager1")]
    assert send(t1, t2, tmp_path / "resolution.bundle").startswith("imported 2 new ops")
    assert t2.json("conflicts") == [] and t2.qty("LAST") == 0
    assert t2.json("conflicts", "--all") == t1.json("conflicts", "--all")
    t1.ok("verify")
    t2.ok("verify")


def test_acknowledged_oversell_reopens_if_stock_falls_further(pair, tmp_path):
    t1, t2, _ = oversell(pair, tmp_path)
    t2.ok("conflicts", "resolve", "oversell:LAST", "--note", "customer will wait for restock")
    assert t2.json("conflicts") == [] and t2.qty("LAST") == -1
    send(t2, t1, tmp_path / "ack.bundle")
    assert t1.json("conflicts") == []
    t1.sell("LAST", "--allow-oversell")
    [c] = t1.json("conflicts")
    assert c["status"] == "open" and c["detail"]["stock"] == -2


def test_over_return_across_terminals_is_flagged_and_acknowledged(pair, tmp_path):
    t1, t2 = pair
    sale = t1.sell("JKT-L")["sale_id"]
    send(t1, t2, tmp_path / "sale.bundle")
    t1.ok("return", sale, "JKT-L")
    t2.ok("return", sale, "JKT-L")
    send(t1, t2, tmp_path / "r1.bundle")
    send(t2, t1, tmp_path / "r2.bundle")
    for t in (t1, t2):
        [c] = t.json("conflicts")
        assert c["conflict_id"] == f"over_return:{sale}"
        assert c["detail"] == {"sale_id": sale, "excess": {"JKT-L": 1}}
        assert len(c["ops"]) == 3  # the sale and both returns
    assert "applies only to oversell" in t1.fail(
        "conflicts", "resolve", f"over_return:{sale}", "--adjust", "1", "--note", "x"
    )
    t1.ok("conflicts", "resolve", f"over_return:{sale}", "--note", "refund reversed by phone")
    assert t1.json("conflicts") == []


def test_resolve_refuses_bad_input(pair, tmp_path):
    t1, _, _ = oversell(pair, tmp_path)
    before = t1.snapshot()
    assert "unknown conflict 'oversell:NOPE'" in t1.fail(
        "conflicts", "resolve", "oversell:NOPE", "--note", "x"
    )
    assert "needs a note" in t1.fail("conflicts", "resolve", "oversell:LAST", "--note", " ")
    assert t1.snapshot() == before
    assert "--note" in t1.usage_error("conflicts", "resolve", "oversell:LAST")
    t1.ok("conflicts", "resolve", "oversell:LAST", "--note", "counted")
    assert "already resolved" in t1.fail("conflicts", "resolve", "oversell:LAST", "--note", "x")
