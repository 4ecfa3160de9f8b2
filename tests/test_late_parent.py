"""A row that arrives before its parent reaches silver once the parent has arrived.

Deliveries, each ingested and refined as a daily run would:
  1. customer C1; orders O1 (C1), O2 (C2, not yet known), O3 (C9, not yet known); a line of O1 and
     a line of O2 (O2 is quarantined, so its line is too);
  2. customer C2 only, no new orders or lines: O2 and then its line are accepted;
  3. nothing new: refine changes no table;
  4. customer C9 and a new order O4 (C1), one run: O3 (refined again) and O4 (new) both accepted.
An order of a customer who never arrives stays in quarantine.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from pyspark.sql import SparkSession

from crm_spark.config import PathsSettings, Settings, SourceSettings, TargetMapping
from crm_spark.lake import Lake, open_lake
from crm_spark.stages import StageContext, StageResult, run_stage

pytestmark = [pytest.mark.slow, pytest.mark.reliability]

CUSTOMERS = "customer_id,signup_date,updated_at\n"
ORDERS = "order_id,customer_id,order_ts,channel,status,payment_type\n"
LINES = "order_id,line_no,product_id,quantity,unit_price,discount\n"
DELIVERIES: list[dict[str, str]] = [
    {"customers/1.csv": CUSTOMERS + "C1,2024-01-01,2024-01-01 00:00:00\n",
     "orders/1.csv": ORDERS + "O1,C1,2024-03-01 10:00:00,web,completed,card\n"
                              "O2,C2,2024-03-02 10:00:00,web,completed,card\n"
                              "O3,C9,2024-03-03 10:00:00,web,completed,card\n",
     "order_items/1.csv": LINES + "O1,1,P1,1,2.50,0\nO2,1,P2,3,1.00,0\n"},
    {"customers/2.csv": CUSTOMERS + "C2,2024-01-02,2024-01-02 00:00:00\n"},
    {},
    {"customers/4.csv": CUSTOMERS + "C9,2024-01-03,2024-01-03 00:00:00\n",
     "orders/4.csv": ORDERS + "O4,C1,2024-03-04 10:00:00,web,completed,card\n"},
]
TABLES = ("silver.orders", "silver.order_items", "quarantine.orders", "quarantine.order_items",
          "silver.order_status_history")


def _keys(lake: Lake, table: str, *columns: str) -> set[tuple[str, ...]]:
    return {tuple(str(r[c]) for c in columns) for r in lake.read(table).collect()}


@pytest.fixture(scope="module")
def runs(spark: SparkSession, settings: Settings, tmp_path_factory: pytest.TempPathFactory):
    root: Path = tmp_path_factory.mktemp("late_parent")
    own = settings.model_copy(update={
        "paths": PathsSettings(raw=str(root / "raw"), lake=str(root / "lake")),
        "sources": {n: SourceSettings(path=n, options={"header": True}, targets={n: TargetMapping()})
                    for n in ("customers", "orders", "order_items")},
        "refine": settings.refine.model_copy(update={"max_reject_share": 1.0}),  # two of three orders wait
    })
    lake = open_lake(spark, own)
    ctx = StageContext(settings=own, spark=spark, lake=lake)
    seen: list[dict[str, object]] = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(own.refine.pii_key_env, "late-parent-test-key")
        for delivery in DELIVERIES:
            for relative, text in delivery.items():
                (root / "raw" / relative).parent.mkdir(parents=True, exist_ok=True)
                (root / "raw" / relative).write_text(text, encoding="utf-8")
            run_stage(ctx, "ingest")
            result: StageResult = run_stage(ctx, "refine")
            seen.append({
                "result": result,
                "orders": _keys(lake, "silver.orders", "order_id"),
                "lines": _keys(lake, "silver.order_items", "order_id", "line_no"),
                "versions": {t: lake.version(t) for t in TABLES if lake.exists(t)},
            })
    return lake, seen


def test_children_of_unknown_parents_wait_in_quarantine(runs) -> None:
    lake, seen = runs
    assert seen[0]["orders"] == {("O1",)}
    assert seen[0]["lines"] == {("O1", "1")}


def test_a_parent_arriving_alone_releases_its_children_and_theirs(runs) -> None:
    _, seen = runs
    assert seen[1]["orders"] == {("O1",), ("O2",)}
    assert seen[1]["lines"] == {("O1", "1"), ("O2", "1")}  # the line waited for O2, which waited for C2
    assert seen[1]["result"].metrics["released"] == 2
    assert any("accepted now" in n for n in seen[1]["result"].notes)


def test_a_released_row_is_refined_like_a_new_one(runs) -> None:
    lake, _ = runs
    line = lake.read("silver.order_items").where("order_id = 'O2'").first()
    assert float(line["line_amount"]) == 3.0
    history = _keys(lake, "silver.order_status_history", "order_id", "status")
    assert ("O2", "completed") in history


def test_refine_with_nothing_new_changes_no_table(runs) -> None:
    _, seen = runs
    assert seen[2]["versions"] == seen[1]["versions"]
    assert "released" not in seen[2]["result"].metrics


def test_released_and_new_rows_in_one_run(runs) -> None:
    _, seen = runs
    assert seen[3]["orders"] == {("O1",), ("O2",), ("O3",), ("O4",)}
    assert seen[3]["result"].metrics["released"] == 1
    assert seen[3]["result"].metrics["accepted"] >= 2  # C9 and O4, the batch's own rows


def test_the_quarantine_keeps_the_record_once(runs) -> None:
    lake, _ = runs
    rows = lake.read("quarantine.orders").collect()
    assert sorted((r["order_id"], tuple(r["_dq_reasons"])) for r in rows) == [
        ("O2", ("unknown_customer_id",)), ("O3", ("unknown_customer_id",))]
