"""Order status keeps its history, so features as of a past date see the status of that date.

A hand-made landing zone, refined after each delivery as a daily run would:
  1. O1 (C1) and O2 (C2) completed; O3 (C3) arrives already returned, with the return's time;
  2. O1 again, now returned (status_ts 2024-05-20); O2 again, unchanged.
Features as of dates before and after each return must count what was true on that date.
"""

from __future__ import annotations

from datetime import date, datetime

import pytest
from pyspark.sql import SparkSession

from crm_spark.config import PathsSettings, Settings, SourceSettings, TargetMapping
from crm_spark.lake import Lake, open_lake
from crm_spark.stages import StageContext, run_stage

pytestmark = pytest.mark.slow

HEADER = "order_id,customer_id,order_ts,channel,status,payment_type,status_ts\n"
FIRST = HEADER + (
    "O1,C1,2024-03-01 10:00:00,web,completed,card,\n"
    "O2,C2,2024-03-05 10:00:00,web,completed,card,\n"
    "O3,C3,2024-03-10 10:00:00,web,returned,card,2024-04-15 09:00:00\n"
)
SECOND = HEADER + (
    "O1,C1,2024-03-01 10:00:00,web,returned,card,2024-05-20 12:00:00\n"
    "O2,C2,2024-03-05 10:00:00,web,completed,card,\n"
)


@pytest.fixture(scope="module")
def lake(spark: SparkSession, settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Lake:
    root = tmp_path_factory.mktemp("status_history")
    own = settings.model_copy(update={
        "paths": PathsSettings(raw=str(root / "raw"), lake=str(root / "lake")),
        "sources": {"orders": SourceSettings(path="orders", options={"header": True},
                                             targets={"orders": TargetMapping()})},
        "quality": settings.quality.model_copy(update={"freshness_days": 365}),  # three orders in a week
    })
    lake = open_lake(spark, own)
    ctx = StageContext(settings=own, spark=spark, lake=lake)
    orders = root / "raw" / "orders"
    orders.mkdir(parents=True)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(own.refine.pii_key_env, "status-history-test-key")
        for name, text in (("1.csv", FIRST), ("2.csv", SECOND)):
            (orders / name).write_text(text, encoding="utf-8")
            run_stage(ctx, "ingest")
            run_stage(ctx, "refine")
        for day in (date(2024, 3, 31), date(2024, 4, 30), date(2024, 5, 31)):
            run_stage(StageContext(settings=own, spark=spark, lake=lake, as_of=day), "features")
    return lake


def test_the_history_holds_every_status_since_when(lake: Lake) -> None:
    rows = lake.read("silver.order_status_history").orderBy("order_id", "status_from").collect()
    assert [(r["order_id"], r["status"], r["status_from"]) for r in rows] == [
        ("O1", "completed", datetime(2024, 3, 1, 10)),
        ("O1", "returned", datetime(2024, 5, 20, 12)),
        ("O2", "completed", datetime(2024, 3, 5, 10)),  # delivered twice, unchanged: once
        ("O3", "completed", datetime(2024, 3, 10, 10)),  # returned on arrival: completed until the return
        ("O3", "returned", datetime(2024, 4, 15, 9)),
    ]


def test_silver_orders_holds_the_latest_status(lake: Lake) -> None:
    rows = {r["order_id"]: r["status"] for r in lake.read("silver.orders").collect()}
    assert rows == {"O1": "returned", "O2": "completed", "O3": "returned"}


@pytest.mark.parametrize(("day", "frequency", "returned"), [
    (date(2024, 3, 31), {"C1": 1, "C2": 1, "C3": 1}, 0),  # before either return
    (date(2024, 4, 30), {"C1": 1, "C2": 1, "C3": 0}, 1),  # O3 returned on 15 April, O1 not yet
    (date(2024, 5, 31), {"C1": 0, "C2": 1, "C3": 0}, 2),  # O1 returned on 20 May
])
def test_features_as_of_a_date_see_the_status_of_that_date(
    lake: Lake, day: date, frequency: dict[str, int], returned: int
) -> None:
    rows = lake.read("gold.customer_features", partition={"as_of_date": day}).collect()
    assert {r["customer_id"]: r["frequency"] for r in rows} == frequency
    assert sum(r["return_rate"] > 0 for r in rows) == returned


def test_a_bad_status_time_is_quarantined(spark: SparkSession, settings: Settings) -> None:
    from crm_spark.transforms import refine as R

    df = spark.createDataFrame([("O9", "C9", "2024-03-01 10:00:00", "web", "returned", "card", "soon", None)],
                               "order_id string, customer_id string, order_ts string, channel string, status string, "
                               "payment_type string, status_ts string, _corrupt_record string")
    checked = R.validate(df, target="orders", timestamp_formats=settings.refine.timestamp_formats)
    assert checked.first()[R.REASONS] == ["bad_status_ts"]


def test_two_changes_on_one_day_keep_their_order(spark: SparkSession) -> None:
    """Completed at 10:00 and cancelled at 18:00 the same day: cancelled from that day on (a
    timeline sorted by day and name would say completed)."""
    from pyspark.sql import functions as F

    from crm_spark.transforms.features import status_on, status_timelines

    history = spark.createDataFrame(
        [("O1", "completed", datetime(2024, 3, 1, 10)), ("O1", "cancelled", datetime(2024, 3, 1, 18))],
        "order_id string, status string, status_from timestamp",
    )
    days = spark.createDataFrame([(date(2024, 2, 29),), (date(2024, 3, 1),), (date(2024, 3, 2),)], "day date")
    rows = status_timelines(history).crossJoin(days).select(
        "day", status_on(F.col("_timeline"), F.col("day"), F.lit("latest")).alias("status")
    ).orderBy("day").collect()
    assert [r["status"] for r in rows] == ["latest", "cancelled", "cancelled"]
