"""CLI: init, catalogue, help and --json on every command, the installed entry point, the audit
trail, verify and rebuild."""

from __future__ import annotations

import json
import os
import re
import sqlite3
import stat
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import click
import pytest

from meshpos import __version__
from meshpos.cli.app import cli as root_command
from meshpos.ledger.body_codec import BodyStore

HEADER = "sku,name,barcode,category,size,colour,price,gst_rate,stock\n"
GOOD = "NEW-1,New thing,2100000000015,Tops,M,Red,100.00,5,4\n"


def walk(
    cmd: click.Command, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], click.Command]]:
    yield path, cmd
    if isinstance(cmd, click.Group):
        for name in sorted(cmd.commands):
            yield from walk(cmd.commands[name], (*path, name))


# -- init -------------------------------------------------------------------------------------


def test_init_creates_key_config_and_database(make_node):
    n = make_node(init=False)
    out = n.json("init", "--store", "S1", "--name", "T1", "--default-user", "asha")
    assert out["store"] == "S1" and out["name"] == "T1"
    assert re.fullmatch(r"[0-9a-f]{12}", out["node_id"])
    assert stat.S_IMODE((n.path / "node.key").stat().st_mode) == 0o600
    cfg = tomllib.loads((n.path / "meshpos.toml").read_text())
    assert cfg["node"] == {"store": "S1", "name": "T1", "node_id": out["node_id"], "user": "asha"}
    assert (n.path / "meshpos.db").exists()
    n.ok("catalog", "import", "--sample")
    assert n.json("ops", "tail", "-n", "1")[0]["user"] == "asha"
    assert n.json("ops", "tail", "-n", "1", user="ravi")[0]["user"] == "asha"
    n.ok("stock", "adjust", "TSH-NAV-S", "-1", "--reason", "damaged", user="ravi")
    assert n.json("ops", "tail", "-n", "1")[0]["user"] == "ravi"


def test_init_twice_is_refused_and_keeps_the_key(node):
    key = (node.path / "node.key").read_bytes()
    cfg = (node.path / "meshpos.toml").read_text()
    err = node.fail("init", "--store", "S1", "--name", "T1")
    assert "already holds a meshpos node" in err
    assert (node.path / "node.key").read_bytes() == key
    assert (node.path / "meshpos.toml").read_text() == cfg


@pytest.mark.parametrize(
    ("option", "value", "what"),
    [
        ("--store", "bad name", "store id"),
        ("--store", "", "store id"),
        ("--store", "-dash", "store id"),
        ("--store", "x" * 33, "store id"),
        ("--name", "a/b", "terminal name"),
        ("--name", "", "terminal name"),
        ("--default-user", "two words", "default user"),
    ],
)
def test_init_refuses_bad_names_and_writes_nothing(make_node, option, value, what):
    n = make_node(init=False)
    args = {"--store": "S1", "--name": "T1", option: value}
    err = n.fail("init", *(x for kv in args.items() for x in kv))
    assert what in err and repr(value) in err
    assert not n.path.exists()


def test_commands_on_a_missing_node_say_how_to_create_one(make_node):
    n = make_node(init=False)
    for args in (("stock",), ("sell", "TEE-M"), ("sync", "vv"), ("verify",)):
        assert "run `meshpos init" in n.fail(*args)
    assert not n.path.exists()


def test_bad_acting_user_is_refused(node):
    before = node.snapshot()
    assert "user 'a b'" in node.fail("sell", "CAP", user="a b")
    assert node.snapshot() == before


# -- catalogue --------------------------------------------------------------------------------


def test_sample_catalogue_ships_and_lists(make_node):
    n = make_node()
    out = n.json("catalog", "import", "--sample")
    assert out["products"] >= 200
    rows = n.json("catalog", "list", "--limit", "100000")
    assert len(rows) == out["products"]
    assert len({r["sku"] for r in rows}) == len(rows)
    assert all(isinstance(r["price"], int) and r["price"] > 0 for r in rows)
    assert sum(r["stock"] for r in rows) > 0
    assert len({r["category"] for r in rows}) >= 3
    assert len({(r["name"], r["colour"]) for r in rows}) < len(rows)  # size variants
    table = n.ok("catalog", "list", "--limit", "3").out
    assert "sku" in table and rows[0]["sku"] in table


def test_import_file_stores_paise_basis_points_and_stock(node, test_csv):
    rows = {r["sku"]: r for r in node.json("catalog", "list", "--search", "Test")}
    assert set(rows) == {"TEE-M", "CAP", "JKT-L"}
    assert rows["TEE-M"]["price"] == 100000 and rows["TEE-M"]["gst_rate"] == 1200
    assert rows["CAP"]["gst_rate"] == 500 and rows["CAP"]["stock"] == 5
    assert rows["CAP"]["barcode"] == "2000000000024" and rows["CAP"]["size"] == ""
    by_barcode = node.json("catalog", "list", "--search", "2000000000031")
    assert [r["sku"] for r in by_barcode] == ["JKT-L"]


def test_import_reports_counts_and_upserts_fields(node, tmp_path):
    f = tmp_path / "upd.csv"
    f.write_text("sku,name,price,gst_rate\nTEE-M,Renamed tee,1100,12\n" + "NEW-2,Other,10.5,0\n")
    before = len(node.json("catalog", "list", "--limit", "100000"))
    assert node.json("catalog", "import", str(f)) == {"products": 2, "stock_receipts": 0}
    rows = {r["sku"]: r for r in node.json("catalog", "list", "--limit", "100000")}
    assert len(rows) == before + 1
    assert rows["TEE-M"]["name"] == "Renamed tee" and rows["TEE-M"]["price"] == 110000
    assert rows["TEE-M"]["barcode"] == "2000000000017"  # untouched field keeps its value
    assert rows["NEW-2"]["price"] == 1050 and rows["NEW-2"]["stock"] == 0


BAD_CSVS = [
    (
        "unclosed quote",
        HEADER + GOOD + 'BAD-1,"Unclosed,x,Tops,M,Red,100,5,1\n' + GOOD,
        ["line 3", "column name"],
    ),
    ("extra cell", HEADER + "BAD-1,Thing,,Tops,M,Red,100,5,1,surplus\n", ["line 2", "column 10"]),
    ("missing header column", "sku,name,gst_rate,stock\nA,B,5,1\n", ["header", "price"]),
    ("unknown header column", HEADER.strip() + ",weight\n" + GOOD.strip() + ",3\n", ["weight"]),
    (
        "duplicate sku",
        HEADER + GOOD + "OTHER,x,,,,,1,5,1\n" + GOOD,
        ["line 4", "column sku", "repeats line 2"],
    ),
    (
        "non-numeric price",
        HEADER + GOOD + "BAD-1,Thing,,Tops,M,Red,12O.00,5,1\n",
        ["line 3", "column price", "'12O.00'"],
    ),
    ("negative price", HEADER + "BAD-1,Thing,,Tops,M,Red,-5,5,1\n", ["line 2", "column price"]),
    (
        "negative stock",
        HEADER + GOOD + "BAD-1,Thing,,Tops,M,Red,100,5,-3\n",
        ["line 3", "column stock", "'-3'"],
    ),
    ("fractional stock", HEADER + "BAD-1,Thing,,Tops,M,Red,100,5,1.5\n", ["column stock"]),
    (
        "bad gst rate",
        HEADER + "BAD-1,Thing,,Tops,M,Red,100,five,1\n",
        ["line 2", "column gst_rate"],
    ),
    ("gst rate too high", HEADER + "BAD-1,Thing,,Tops,M,Red,100,150,1\n", ["column gst_rate"]),
    (
        "missing name",
        HEADER + GOOD + "BAD-1,,,Tops,M,Red,100,5,1\n",
        ["line 3", "column name", "missing"],
    ),
    ("short row", HEADER + "BAD-1,Thing\n", ["line 2", "column price", "missing"]),
    (
        "barcode not digits",
        HEADER + "BAD-1,Thing,89O1,Tops,M,Red,100,5,1\n",
        ["line 2", "column barcode"],
    ),
    ("sku with space", HEADER + "BAD 1,Thing,,Tops,M,Red,100,5,1\n", ["line 2", "column sku"]),
    (
        "control character",
        HEADER + "BAD-1,Thi\x00ng,,Tops,M,Red,100,5,1\n",
        ["line 2", "column name", "control"],
    ),
    (
        "blank lines counted",
        HEADER + GOOD + "\n\nBAD-1,Thing,,Tops,M,Red,abc,5,1\n",
        ["line 5", "column price"],
    ),
    ("header only", HEADER, ["no products"]),
    ("empty file", "", ["header lacks"]),
    ("huge cell", "sku,name,price,gst_rate\nA," + "x" * 200_000 + ",1,5\n", ["line 2"]),
]


@pytest.mark.parametrize(("case", "text", "expect"), BAD_CSVS, ids=[c[0] for c in BAD_CSVS])
def test_bad_csv_is_refused_naming_line_and_column_and_writes_nothing(
    node, tmp_path, case, text, expect
):
    f = tmp_path / "bad.csv"
    f.write_text(text)
    before = node.snapshot()
    err = node.fail("catalog", "import", str(f))
    assert "bad.csv" in err
    for part in expect:
        assert part in err, (case, err)
    assert node.snapshot() == before


def test_import_needs_exactly_one_source(node, tmp_path):
    assert "either a CSV FILE or --sample" in node.fail("catalog", "import")
    assert "either a CSV FILE or --sample" in node.fail(
        "catalog", "import", "--sample", str(tmp_path / "x.csv")
    )
    assert "cannot read" in node.fail("catalog", "import", str(tmp_path / "missing.csv"))
    (tmp_path / "latin1.csv").write_bytes(HEADER.encode() + b"A,Caf\xe9,,,,,1,5,1\n")
    assert "cannot read" in node.fail("catalog", "import", str(tmp_path / "latin1.csv"))


def test_set_price_by_sku_or_barcode_changes_that_product(node):
    count = len(node.json("catalog", "list", "--limit", "100000"))
    assert "price of TEE-M set to 1050" in node.ok("catalog", "set-price", "TEE-M", "1050").out
    node.ok("catalog", "set-price", "2000000000024", "199.50")
    rows = {r["sku"]: r for r in node.json("catalog", "list", "--limit", "100000")}
    assert len(rows) == count
    assert rows["TEE-M"]["price"] == 105000 and rows["CAP"]["price"] == 19950
    assert node.sell("TEE-M")["total"] == 105000
    before = node.snapshot()
    assert "not an amount" in node.fail("catalog", "set-price", "TEE-M", "1.234")
    assert "unknown product" in node.fail("catalog", "set-price", "NOPE", "10")
    assert node.snapshot() == before


# -- help and --json everywhere ---------------------------------------------------------------


def test_help_on_every_command_and_group(cli, tmp_path):
    paths = list(walk(root_command))
    assert len(paths) > 25
    for path, cmd in paths:
        assert (cmd.help or "").strip(), f"{' '.join(path)} has no help text"
        r = cli(["--dir", str(tmp_path / "nowhere"), *path, "--help"])
        assert r.code == 0, (path, r)
        assert r.out.startswith(f"Usage: meshpos {' '.join(path)}".rstrip()), (path, r.out[:80])
        assert r.err == ""
    assert not (tmp_path / "nowhere").exists()


def test_tables_show_square_brackets_as_written(node, tmp_path):
    """Table cells are text, not rich markup: a product named with brackets, or advice naming a
    config section, keep the bracketed part."""
    csv = tmp_path / "brackets.csv"
    csv.write_text(
        "sku,name,barcode,category,size,colour,price,gst_rate,stock\n"
        "KUR-B,Kurta [blue] [b],2000000000055,[Ethnic],M,Blue,999.00,5,2\n"
    )
    node.ok("catalog", "import", str(csv))
    listed = node.ok("catalog", "list", "--search", "KUR-B").out
    assert "Kurta [blue] [b]" in listed and "[Ethnic]" in listed
    assert "no HQ configured ([hq] url)" in node.ok("status").out


def test_json_output_parses_on_every_command_that_has_the_flag(node, make_node, test_csv):
    cid = node.json("customer", "add", "--name", "Asha", "--phone", "9800000001")["customer_id"]
    sale = node.sell("TEE-Mx3", "--customer", cid)["sale_id"]
    fresh = make_node(init=False)
    cases: dict[tuple[str, ...], list[str]] = {
        ("catalog", "import"): [str(test_csv)],
        ("catalog", "list"): ["--search", "TEE"],
        ("conflicts", "list"): ["--all"],
        ("customer", "add"): ["--name", "Bo"],
        ("customer", "show"): [cid],
        ("exchange",): [sale, "--back", "TEE-M", "--take", "CAP"],
        ("loyalty", "show"): [cid],
        ("ops", "tail"): ["-n", "5"],
        ("report", "sales"): ["--by", "payment"],
        ("report", "gst"): ["--by", "hsn"],
        ("report", "x"): [],
        ("report", "z"): [],
        ("return",): [sale, "TEE-M"],
        ("sell",): ["CAP"],
        ("status",): [],
        ("stock", "show"): ["TEE-M"],
        ("sync", "vv"): [],
        ("devices", "list"): ["--no-probe"],
        ("print", "queue"): ["--all"],
        ("cards",): [],
    }
    with_json = {
        path for path, cmd in walk(root_command) if any("--json" in p.opts for p in cmd.params)
    }
    on_fresh = [("init",), ("store", "init")]
    needs_daemon = {("peers",), ("logs",)}
    parsed_elsewhere = {("store", "revoke"), ("store", "retire")}  # test_revocation.py
    parsed_elsewhere.add(("verify",))  # below: test_verify_json_says_ok_or_lists_the_problems...
    parsed_elsewhere |= {("sync", "export"), ("sync", "import")}  # test_cli_sync.py
    parsed_elsewhere.add(("sync", "now"))  # needs a daemon and an HQ: test_relay_hq.py
    # Their --json output is parsed by their own suites, which set up what they need first
    # (backups, exports, an HQ, users): tests/test_backup.py, test_audit.py, test_encryption.py,
    # test_hq_*.py, test_cli_staff.py.
    elsewhere = {"audit", "backup", "encrypt", "restore", "hq", "users", "login", "whoami", "sim"}
    elsewhere |= {"power", "transfer", "training", "drill", "cheatsheet"}  # test_power.py, ...
    elsewhere |= {"giftcard", "paper"}  # test_giftcards.py, test_paper.py

    done = {*cases, *on_fresh, *needs_daemon, *parsed_elsewhere}
    missing = {p for p in with_json if p[0] not in elsewhere} - done
    assert not missing, f"add these --json commands to this test: {sorted(missing)}"
    assert fresh.json("init", "--store", "S1", "--name", "T7")["name"] == "T7"
    assert fresh.json("store", "init")["store"] == "S1"
    for path, args in cases.items():
        data = node.json(*path, *args)
        assert isinstance(data, dict | list), path
        assert data or path == ("conflicts", "list"), path
    for path in needs_daemon:
        r = node.run(*path, "--json")
        if r.code == 0:
            assert isinstance(r.json(), dict | list)
        else:
            assert r.code == 1 and r.err.startswith("error: ") and len(r.err.splitlines()) == 1
    # the default subcommands take --json too
    assert isinstance(node.json("stock"), list)
    assert isinstance(node.json("conflicts"), list)


# -- the installed console script -------------------------------------------------------------


def script() -> str:
    path = Path(sys.executable).parent / "meshpos"
    assert path.exists(), "the `meshpos` console script is not installed (pip install -e .)"
    return str(path)


def run_script(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("MESHPOS_")}
    full_env.update(env or {})
    return subprocess.run(
        [script(), *args], capture_output=True, text=True, env=full_env, cwd=cwd, timeout=60
    )


def test_console_script_version_and_help(tmp_path):
    r = run_script("--version", cwd=tmp_path)
    assert r.returncode == 0 and __version__ in r.stdout
    r = run_script("--help", cwd=tmp_path)
    assert r.returncode == 0
    for name in (
        "init",
        "catalog",
        "sell",
        "return",
        "exchange",
        "stock",
        "customer",
        "loyalty",
        "report",
        "conflicts",
        "sync",
        "ops",
        "verify",
        "rebuild",
    ):
        assert re.search(rf"^\s+{name}\b", r.stdout, re.M), name


@pytest.mark.slow
def test_console_script_end_to_end_with_meshpos_dir(tmp_path, test_csv):
    env = {"MESHPOS_DIR": str(tmp_path / "node"), "MESHPOS_USER": "meera"}
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    assert run_script("init", "--store", "S1", "--name", "T1", cwd=cwd, env=env).returncode == 0
    assert (tmp_path / "node" / "meshpos.toml").exists() and not any(cwd.iterdir())
    assert run_script("catalog", "import", str(test_csv), cwd=cwd, env=env).returncode == 0
    r = run_script("sell", "TEE-Mx2", "--pay", "cash:3000", "--json", cwd=cwd, env=env)
    assert r.returncode == 0, r.stderr
    sale = json.loads(r.stdout)
    assert sale["total"] == 200000 and sale["tenders"][0]["change"] == 100000
    r = run_script("sell", "NOPE", cwd=cwd, env=env)
    assert r.returncode == 1 and r.stdout == ""
    assert r.stderr.strip() == "error: unknown product 'NOPE': no SKU or barcode matches"
    r = run_script("ops", "tail", "-n", "1", "--json", cwd=cwd, env=env)
    assert json.loads(r.stdout)[0]["user"] == "meera"
    r = run_script("verify", cwd=cwd, env=env)
    assert r.returncode == 0 and r.stdout.startswith("ok:")


def test_console_script_default_dir_and_usage_errors(tmp_path):
    r = run_script("init", "--store", "S1", "--name", "T1", cwd=tmp_path)
    assert r.returncode == 0 and (tmp_path / "meshpos-node" / "node.key").exists()
    r = run_script("sell", cwd=tmp_path)
    assert r.returncode == 2 and "Missing argument" in r.stderr
    r = run_script("frobnicate", cwd=tmp_path)
    assert r.returncode == 2 and "No such command" in r.stderr


# -- the audit trail --------------------------------------------------------------------------


def test_ops_tail_shows_who_did_what(node):
    node.sell("TEE-M", user="asha")
    node.ok("stock", "receive", "CAP", "4", "--reason", "delivery 17", user="ravi")
    rows = node.json("ops", "tail", "-n", "2")
    assert len(rows) == 2
    assert [(r["user"], r["kind"]) for r in rows] == [("asha", "sale"), ("ravi", "stock.receive")]
    assert rows[0]["summary"].startswith("S1-T1-000001 total ₹1,000.00")
    assert rows[1]["summary"] == "CAP +4" and rows[1]["terminal"] == "T1"
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d IST", rows[0]["time"])  # store time
    assert len(node.json("ops", "tail", "-n", "7")) == 7
    assert len(node.json("ops", "tail")) == 20
    node.usage_error("ops", "tail", "-n", "0")


# -- verify and rebuild -----------------------------------------------------------------------


def corrupt(node, sql: str) -> None:
    with closing(sqlite3.connect(node.db)) as conn:
        conn.execute(sql)
        conn.commit()


def test_verify_passes_then_names_a_corrupted_view_row_and_rebuild_fixes_it(node):
    node.sell("TEE-Mx2")
    r = node.ok("verify")
    assert r.out.startswith("ok: ") and "views match the log" in r.out
    corrupt(node, "UPDATE stock SET qty = qty + 1 WHERE sku = 'TEE-M'")
    assert node.qty("TEE-M") == 9
    r = node.run("verify")
    assert r.code == 1
    problems = [ln for ln in r.err.splitlines() if ln.startswith("problem:")]
    assert any("stock" in p and "'TEE-M', 9" in p for p in problems), r.err
    assert any("stock" in p and "'TEE-M', 8" in p for p in problems), r.err
    assert r.err.splitlines()[-1] == f"error: verify found {len(problems)} problem(s)"
    assert "rebuilt views from" in node.ok("rebuild").out
    assert node.qty("TEE-M") == 8
    assert node.run("verify").code == 0


def test_verify_json_says_ok_or_lists_the_problems_and_exits_1(node):
    node.sell("TEE-Mx2")
    report = node.json("verify")
    ops = report["ops"]
    assert report == {
        "ok": True,
        "ops": ops,
        "every_signature": False,
        "problems": [],
        "warnings": [],
        "sealed_cards": {"held_awaiting_hq": 0, "answered": 0},
    }
    assert ops == len(node.json("ops", "tail", "-n", "1000"))
    assert node.json("verify", "--full")["every_signature"] is True
    corrupt(node, "UPDATE stock SET qty = qty + 1 WHERE sku = 'TEE-M'")
    r = node.run("verify", "--json")
    assert r.code == 1
    bad = json.loads(r.out)
    assert bad["ok"] is False and any("'TEE-M', 9" in p for p in bad["problems"])


def test_verify_names_a_deleted_sale_and_a_forged_customer(node):
    node.sell("CAP")
    cid = node.json("customer", "add", "--name", "Asha")["customer_id"]
    corrupt(node, "DELETE FROM sales")
    corrupt(node, "UPDATE customers SET name = 'Mallory'")
    r = node.run("verify")
    assert r.code == 1
    assert "sales: missing from the live view" in r.err
    assert "customers: only in the live view" in r.err and "Mallory" in r.err
    node.ok("rebuild")
    assert node.run("verify").code == 0
    assert node.json("customer", "show", cid)["name"] == "Asha"
    assert node.json("report", "x")["sales"] == 1


def test_verify_names_an_altered_op(node):
    node.sell("CAP")
    node.sell("TEE-M")
    with closing(sqlite3.connect(node.db)) as conn:
        origin, seq, body = conn.execute(
            "SELECT origin, seq, body FROM ops WHERE kind = 'sale' ORDER BY seq LIMIT 1"
        ).fetchone()
        bodies = BodyStore(conn)
        signed = bodies.restore(body)
        altered = bodies.store(signed.replace(b"CAP", b"CAT"))
        assert bodies.restore(altered) != signed
        conn.execute("UPDATE ops SET body = ? WHERE origin = ? AND seq = ?", (altered, origin, seq))
        conn.commit()
    r = node.run("verify")
    assert r.code == 1
    assert f"{origin}:{seq}" in r.err or f"{origin}:{seq + 1}" in r.err, r.err
