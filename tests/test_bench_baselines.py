"""The CRDT-library baselines run, measure something, and catch a broken merge."""

from __future__ import annotations

import sys
from typing import Any

import pytest

from bench import baselines

REPLICAS, SALES, SKUS = 3, 300, 20


@pytest.fixture(scope="module")
def rows() -> dict[str, dict[str, Any]]:
    return {r["name"]: r for r in baselines.run_baselines(REPLICAS, SALES, SKUS, seed=7)}


def test_one_row_per_library_with_positive_throughput(rows: dict[str, dict[str, Any]]) -> None:
    assert set(rows) == {"pycrdt", "loro"}
    for row in rows.values():
        assert row["installed"], row["note"]
        assert row["merge_ops"] == REPLICAS * (REPLICAS - 1) * SALES
        assert row["merge_ops_per_s"] > 0
        assert row["one_sale_bytes"] > 0
        assert row["exchange_bytes_per_sale"] > 0


def test_loro_counter_converges_to_expected_total(rows: dict[str, dict[str, Any]]) -> None:
    loro = rows["loro"]
    sold_at_least = REPLICAS * SALES * 1 + 1
    sold_at_most = REPLICAS * SALES * 3 + 1
    assert (
        baselines.BASE_STOCK * SKUS - sold_at_most
        <= loro["expected_total"]
        <= baselines.BASE_STOCK * SKUS - sold_at_least
    )
    assert loro["converged"]
    assert loro["merged_total"] == loro["expected_total"]
    assert loro["per_sku_ok"]
    assert loro["one_sale_ok"]
    assert loro["remedy_lost_pct"] == 0


def test_pycrdt_slot_counter_converges_but_concurrent_nested_maps_lose_sales(
    rows: dict[str, dict[str, Any]],
) -> None:
    pycrdt = rows["pycrdt"]
    assert pycrdt["converged"]
    assert pycrdt["merged_total"] == pycrdt["expected_total"]
    assert pycrdt["concurrent_create_lost_pct"] > 30
    assert pycrdt["naive_rmw_lost_pct"] > 30


def test_a_broken_merge_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    real_apply = baselines._LoroReplica.apply

    def apply_only_before_selling(self: Any, update: bytes) -> None:
        if not self._handles:
            real_apply(self, update)

    monkeypatch.setattr(baselines._LoroReplica, "apply", apply_only_before_selling)
    row = next(r for r in baselines.run_baselines(2, 50, 5) if r["name"] == "loro")
    assert not row["converged"]
    assert not row["total_ok"]
    assert not row["one_sale_ok"]


def test_a_failing_library_gives_an_error_row(monkeypatch: pytest.MonkeyPatch) -> None:
    def explode(self: Any, update: bytes) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(baselines._PycrdtReplica, "apply", explode)
    rows = {r["name"]: r for r in baselines.run_baselines(2, 20, 5)}
    assert "boom" in rows["pycrdt"]["error"]
    assert rows["loro"]["converged"]
    assert "boom" in baselines.format_table(list(rows.values()))


def test_missing_library_gives_a_row_saying_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "loro", None)
    rows = {r["name"]: r for r in baselines.run_baselines(2, 20, 5)}
    assert rows["loro"]["installed"] is False
    assert "not installed" in rows["loro"]["note"]
    assert rows["pycrdt"]["installed"]


def test_table_lists_both_libraries(rows: dict[str, dict[str, Any]]) -> None:
    table = baselines.format_table(list(rows.values()))
    assert "pycrdt" in table and "loro" in table and "merge ops/s" in table
