"""`make bench` in quick mode runs every section end to end and reports sane, positive figures."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bench import __main__ as bench_main
from bench.common import percentile

# Smaller than --quick's defaults where that keeps the test at a few seconds.
SIZES = {"ops": 8_000, "merge_ops": 3_000, "baseline_sales": 500}


@pytest.fixture(scope="module")
def summary(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("bench")
    sizes = [f"--{k.replace('_', '-')}={v}" for k, v in SIZES.items()]
    only = "--only=commit,merge,scale,baselines"
    result = bench_main.run(["--quick", only, *sizes, "--out", str(out)])
    assert json.loads((out / "results.json").read_text()) == json.loads(
        json.dumps(result, default=str)
    )
    return result


def _positive(section: dict[str, Any], *keys: str) -> None:
    for key in keys:
        assert section[key] > 0, (key, section[key])


def test_commit_section(summary: dict[str, Any]) -> None:
    commit = summary["sections"]["commit"]
    assert commit["synchronous"] == "FULL"
    assert commit["sales"] == bench_main.QUICK["sales"]
    _positive(commit, "p50_ms", "p99_ms", "sales_per_s")
    assert commit["p50_ms"] <= commit["p99_ms"] <= commit["max_ms"]
    assert commit["verify_problems"] == 0


def test_merge_section(summary: dict[str, Any]) -> None:
    merge = summary["sections"]["merge"]
    assert merge["ops"] == SIZES["merge_ops"]
    _positive(merge, "merge_ops_per_s", "ingest_ops_per_s", "check_s", "wire_bytes_per_sale")
    assert merge["signatures_checked"] >= 3  # at least one per till
    assert merge["converged"]
    assert merge["open_conflicts"] == 0


def test_scale_section(summary: dict[str, Any]) -> None:
    scale = summary["sections"]["scale"]
    assert scale["ops"] == SIZES["ops"]
    _positive(scale, "verify_s", "bytes_per_op", "log_bytes_per_op", "peak_rss_mb")
    assert scale["verify_problems"] == 0
    assert scale["verify_full_problems"] == 0 and scale["verify_full_s"] > 0
    assert set(scale["backup"]) == {"plain", "encrypted"}
    for b in scale["backup"].values():
        _positive(b, "total_s", "snapshot_s", "check_s", "seal_s", "file_mb")
    assert scale["wire_bytes_per_op"] < scale["bytes_per_op"]


def test_baselines_section(summary: dict[str, Any]) -> None:
    section = summary["sections"]["baselines"]
    assert {r["name"] for r in section["libraries"]} == {"pycrdt", "loro"}
    mesh = section["meshpos"]
    assert mesh["merge_ops"] == 3 * 2 * SIZES["baseline_sales"]
    _positive(mesh, "merge_ops_per_s", "one_sale_op_bytes", "exchange_bytes_per_sale")
    assert mesh["one_sale_bundle_bytes"] > mesh["one_sale_op_bytes"]
    assert mesh["converged"] and mesh["total_ok"] and mesh["per_sku_ok"] and mesh["one_sale_ok"]


def test_targets_and_meta(summary: dict[str, Any]) -> None:
    names = {t["name"] for t in summary["targets"]}
    assert {"sale commit p99", "merge incl. checks"} <= names
    assert summary["meta"]["quick"] is True
    assert summary["meta"]["seconds"] > 0
    meta = summary["meta"]
    assert meta["python"] and meta["sqlite"] and meta["load_average_end"] is not None
    assert meta["storage"]["filesystem"] and meta["storage"]["mount"]
    assert {"sale in a synced backlog", "one-line sale pushed alone"} <= names


def test_only_selects_sections_and_groups() -> None:
    assert bench_main.parse_args(["--only", "ledger"]).sections == ["commit", "merge", "scale"]
    assert bench_main.parse_args(["--only", "baselines,commit"]).sections == [
        "commit",
        "baselines",
    ]
    with pytest.raises(SystemExit):
        bench_main.parse_args(["--only", "nonsense"])


def test_percentile_interpolates_between_ranks() -> None:
    values = list(range(1, 101))
    assert percentile(values, 50) == pytest.approx(50.5)
    assert percentile(values, 99) == pytest.approx(99.01)
    assert percentile([3.0], 99) == 3.0


def test_devices_section_runs_a_sale_to_its_printed_receipt(tmp_path: Path) -> None:
    """The scan, render and sale-commit figures of the counter's devices, end to end: the sale
    it prints is paid the way a till pays now (a card on the store's machine, and cash)."""
    result = bench_main.run(["--quick", "--only=devices", "--out", str(tmp_path)])
    devices = result["sections"]["devices"]
    assert devices["scans"] > 0 and devices["renders"] > 0 and devices["sales"] > 0
    for key in ("scan_to_line", "receipt_render", "sale_commit", "sale_commit_with_print_job"):
        assert 0 < devices[key]["p50_ms"] <= devices[key]["p99_ms"] <= devices[key]["max_ms"]
    assert devices["receipt_bytes"] > 500  # three lines, a customer, a discount, two tenders
    assert [t["name"] for t in devices["targets"]] == ["scan to line p99"]
