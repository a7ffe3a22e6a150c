"""Logs (meshpos.service.logs, `meshpos logs`): JSON lines carrying the ids a record concerns, a
rotated file several processes write without losing or tearing a line, reading the last lines
across rotations, following a file through rotation, the `[log]` table's refusals, and the
command's table, filters, JSON and -f."""

from __future__ import annotations

import json
import logging
import os
import select
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import run_cli

from meshpos.core.errors import ConfigError
from meshpos.service.logs import (
    Entry,
    FieldsFilter,
    JsonFormatter,
    LogSettings,
    SharedRotatingFileHandler,
    TextFormatter,
    follow,
    last_entries,
    log_fields,
    mark,
    rotated,
    set_process_fields,
)

ROOT = Path(__file__).resolve().parents[1]


def record(msg: str = "hello ₹5", **extra: str) -> logging.LogRecord:
    rec = logging.LogRecord("meshpos.node", logging.INFO, __file__, 1, msg, (), None)
    for k, v in extra.items():
        setattr(rec, k, v)
    FieldsFilter().filter(rec)
    return rec


@pytest.fixture(autouse=True)
def process_ids() -> Iterator[None]:
    set_process_fields(node="n1", store="S1")
    yield
    set_process_fields()


def test_a_record_carries_its_own_ids_else_the_blocks_else_the_process() -> None:
    doc = json.loads(JsonFormatter().format(record()))
    assert (doc["node"], doc["store"], doc["msg"], doc["level"]) == ("n1", "S1", "hello ₹5", "INFO")
    assert "peer" not in doc and "op" not in doc and doc["ts"].endswith("Z")
    with log_fields(peer="p7", store="S9"):
        with log_fields(op="p7:4"):
            inner = json.loads(JsonFormatter().format(record(peer="p8")))
        outer = json.loads(JsonFormatter().format(record()))
    assert (inner["peer"], inner["op"], inner["store"]) == ("p8", "p7:4", "S9")
    assert (outer["peer"], outer.get("op"), outer["store"]) == ("p7", None, "S9")
    assert "peer" not in json.loads(JsonFormatter().format(record()))


def test_another_thread_does_not_see_this_threads_block() -> None:
    seen: list[str] = []
    with log_fields(peer="p7"):
        t = threading.Thread(target=lambda: seen.append(record().peer))  # type: ignore[attr-defined]
        t.start()
        t.join()
    assert seen == [""]


def test_text_lines_keep_their_format_with_the_ids_appended() -> None:
    with log_fields(peer="p7", op="p7:4"):
        line = TextFormatter().format(record("peer T2 is up"))
    assert line.endswith("INFO meshpos.node: peer T2 is up [peer=p7 op=p7:4]")
    try:
        raise ValueError("boom")
    except ValueError:
        rec = record("failed")
        rec.exc_info = sys.exc_info()
    doc = json.loads(JsonFormatter().format(rec))
    assert "ValueError: boom" in doc["exc"]


WRITER = """
import logging, sys
from pathlib import Path
from meshpos.service.logs import JsonFormatter, SharedRotatingFileHandler
h = SharedRotatingFileHandler(Path(sys.argv[1]), 4096, 500)
h.setFormatter(JsonFormatter())
log = logging.getLogger("w")
log.addHandler(h)
log.setLevel(logging.INFO)
for i in range(int(sys.argv[2])):
    log.info("%s %d %s", sys.argv[3], i, "x" * 50)
"""


def test_processes_sharing_a_rotated_file_lose_and_tear_no_line(tmp_path: Path) -> None:
    path = tmp_path / "logs" / "hq.log"
    n = 800
    procs = [
        subprocess.Popen([sys.executable, "-c", WRITER, str(path), str(n), f"w{k}"], cwd=ROOT)
        for k in range(3)
    ]
    for p in procs:
        assert p.wait(60) == 0
    files = rotated(path)
    assert len(files) > 10  # it did rotate, many times
    lines = [ln for f in files for ln in f.read_text().splitlines()]
    seen = [tuple(json.loads(ln)["msg"].split()[:2]) for ln in lines]  # every line whole JSON
    assert sorted(seen) == sorted((f"w{k}", str(i)) for k in range(3) for i in range(n))
    assert all(f.stat().st_size <= 4096 + 200 for f in files)
    assert path.parent.stat().st_mode & 0o777 == 0o700 and path.stat().st_mode & 0o777 == 0o600


def write(path: Path, *msgs: str) -> None:
    with path.open("a") as fh:
        for m in msgs:
            fh.write(json.dumps({"ts": "2025-09-22T06:00:00.000Z", "level": "INFO",
                                 "logger": "meshpos.node", "msg": m, "node": "n1"}) + "\n")  # fmt: skip


def test_the_last_lines_reach_into_rotated_files(tmp_path: Path) -> None:
    path = tmp_path / "meshpos.log"
    write(tmp_path / "meshpos.log.2", "a", "b")
    write(tmp_path / "meshpos.log.1", "c")
    write(path, "d", "e")
    assert [e.msg for e in last_entries(path, 4)] == ["b", "c", "d", "e"]
    assert [e.msg for e in last_entries(path, 2)] == ["d", "e"]
    assert Entry.parse("not json at all").msg == "not json at all"


def test_follow_yields_new_lines_through_a_rotation_and_waits_for_whole_lines(
    tmp_path: Path,
) -> None:
    path = tmp_path / "meshpos.log"
    write(path, "before")
    got: list[str] = []
    done = threading.Event()

    def reader() -> None:
        for e in follow(path, poll_s=0.01, stop=done.is_set):
            got.append(e.msg)

    t = threading.Thread(target=reader)
    t.start()
    time.sleep(0.1)  # the reader is at the end of the file
    write(path, "one")
    with path.open("a") as fh:
        fh.write('{"msg": "ha')
    time.sleep(0.1)
    with path.open("a") as fh:
        fh.write('lf"}\n')
    os.rename(path, tmp_path / "meshpos.log.1")
    write(path, "two", "three")
    deadline = time.monotonic() + 10
    while len(got) < 4 and time.monotonic() < deadline:
        time.sleep(0.01)
    done.set()
    t.join(5)
    assert got == ["one", "half", "two", "three"]


@pytest.mark.parametrize(
    ("table", "says"),
    [
        ({"colour": "red"}, "unknown [log] key(s) colour"),
        ({"format": "xml"}, "[log] format must be one of text, json"),
        ({"level": "LOUD"}, "[log] level must be one of DEBUG, INFO, WARNING, ERROR"),
        ({"max_bytes": 10}, "[log] max_bytes must be a whole number >= 4096"),
        ({"backups": -1}, "[log] backups must be a whole number >= 0"),
        ({"backups": True}, "[log] backups must be a whole number >= 0"),
        ({"file": 5}, '[log] file must be a path, or "" for no log file'),
    ],
)
def test_a_bad_log_table_is_refused_naming_the_key(table: dict[str, object], says: str) -> None:
    with pytest.raises(ConfigError) as refused:
        LogSettings.from_table(table, "meshpos.toml", "logs/meshpos.log")
    assert str(refused.value) == f"meshpos.toml: {says}"
    assert LogSettings.from_table({}, "x", "logs/a.log").path(Path("/d")) == Path("/d/logs/a.log")
    assert LogSettings.from_table({"file": ""}, "x", "logs/a.log").path(Path("/d")) is None


def test_node_run_refuses_a_bad_log_table_before_starting(tmp_path: Path) -> None:
    d = tmp_path / "T1"
    assert run_cli(["--dir", str(d), "init", "--store", "S1", "--name", "T1"]).code == 0
    with (d / "meshpos.toml").open("a") as fh:
        fh.write('\n[log]\nlevel = "LOUD"\n')
    r = run_cli(["--dir", str(d), "node", "run"])
    assert r.code == 1 and "[log] level must be one of" in r.err


def test_meshpos_logs_shows_a_table_filters_and_prints_json(tmp_path: Path) -> None:
    path = tmp_path / "x.log"
    h = SharedRotatingFileHandler(path, 1 << 20, 1)
    h.setFormatter(JsonFormatter())
    h.addFilter(FieldsFilter())
    log = logging.getLogger("meshpos.test_logs")
    log.addHandler(h)
    log.setLevel(logging.DEBUG)
    try:
        log.info("peer T2 is up", extra={"peer": "abc123"})
        log.warning("refused peer", extra={"peer": "def456", "op": "def456:9"})
        log.debug("quiet")
    finally:
        log.removeHandler(h)
        h.close()
    table = run_cli(["logs", "--file", str(path)])
    assert table.code == 0 and "peer T2 is up" in table.out and "abc123" in table.out
    warn = run_cli(["logs", "--file", str(path), "--level", "WARNING", "--json"])
    assert [d["msg"] for d in json.loads(warn.out)] == ["refused peer"]
    by_op = run_cli(["logs", "--file", str(path), "--op", "def456:9", "--json"])
    assert [d["peer"] for d in json.loads(by_op.out)] == ["def456"]
    assert (
        json.loads(run_cli(["logs", "--file", str(path), "-n", "1", "--json"]).out)[0]["msg"]
        == "quiet"
    )
    missing = run_cli(["logs", "--file", str(tmp_path / "none.log"), "--json"])
    assert missing.code == 0 and json.loads(missing.out) == [] and "no log at" in missing.err


def test_meshpos_logs_follow_prints_lines_as_they_come(tmp_path: Path) -> None:
    path = tmp_path / "x.log"
    write(path, "old")
    proc = subprocess.Popen(
        [sys.executable, "-c", "from meshpos.cli.app import main; main()", "logs", "-f",
         "--json", "-n", "1", "--file", str(path)],
        stdout=subprocess.PIPE, text=True, cwd=ROOT,
    )  # fmt: skip

    def next_line() -> dict[str, str]:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 20)
        assert ready, "meshpos logs -f printed nothing for 20 s"
        doc: dict[str, str] = json.loads(proc.stdout.readline())
        return doc

    try:
        assert next_line()["msg"] == "old"
        write(path, "new")  # maybe before the follow began: it must come all the same
        assert next_line()["msg"] == "new"
        os.rename(path, tmp_path / "x.log.1")
        write(path, "after rotation")
        assert next_line()["msg"] == "after rotation"
    finally:
        proc.terminate()
        proc.wait(10)


def test_follow_from_a_mark_misses_nothing_written_since(tmp_path: Path) -> None:
    path = tmp_path / "x.log"
    write(path, "a")
    end = mark(path)
    write(path, "b")
    os.rename(path, tmp_path / "x.log.1")
    write(path, "c")
    assert [e.msg for e in last_entries(path, 10, end)] == ["a"]  # b and c come after
    got: list[str] = []
    for e in follow(path, since=end, poll_s=0.01, stop=lambda: len(got) >= 2):
        got.append(e.msg)
    assert got == ["b", "c"]
