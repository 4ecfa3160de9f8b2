"""The features stage end to end on a tiny hand-made silver lake: partitions, re-runs, backfills, gate."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from pathlib import Path

import pytest
from chispa import assert_df_equality
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from crm_spark.config import PathsSettings, Settings
from crm_spark.errors import DataQualityError, SourceError
from crm_spark.lake import Lake, open_lake
from crm_spark.stages import StageContext, StageResult, run_backfill, run_stage
from crm_spark.stages.features import TABLE
from test_features_transforms import WORLD, silver

pytestmark = pytest.mark.slow

D1, D2 = date(2024, 6, 20), date(2024, 6, 30)
SOURCES = {"customers": "customers", "orders": "orders", "order_items": "items", "web_events": "web",
           "social_interactions": "social", "feedback": "feedback"}


def _settings(settings: Settings, root: Path) -> Settings:
    """The session settings with a lake of this module's own (other test files share the default one)."""
    paths = PathsSettings(raw=str(root / "raw"), lake=str(root / "lake"))
    # The hand-made world's few orders lie weeks apart: fresh enough within a year.
    quality = settings.quality.model_copy(update={"freshness_days": 365})
    return settings.model_copy(update={"paths": paths, "quality": quality})


@dataclass(frozen=True)
class History:
    """A lake holding WORLD as silver, and the gold versions after each step of a run history."""

    ctx: StageContext
    first: StageResult  # run as of D1 on an empty gold table
    one_by_one: int  # version after run(D1), run(D2)
    rerun: int  # ... then run(D1) again
    backfill: int  # ... then run_dates([D2, D1])
    default: StageResult  # ... then run() without an as-of date


@pytest.fixture(scope="module")
def history(spark: SparkSession, settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> History:
    own = _settings(settings, tmp_path_factory.mktemp("features_stage"))
    lake = open_lake(spark, own)
    for source, key in SOURCES.items():
        lake.overwrite(f"silver.{source}", silver(spark, source, WORLD[key]))
    lake.overwrite("silver.products", silver(spark, "products", [{"product_id": "p1", "category": "shoes"}]))
    ctx = StageContext(settings=own, spark=spark, lake=lake)
    first = run_stage(_at(ctx, D1), "features")
    run_stage(_at(ctx, D2), "features")
    one_by_one = lake.version(TABLE)
    run_stage(_at(ctx, D1), "features")
    rerun = lake.version(TABLE)
    backfill_result = run_backfill(ctx, "features", [D2, D1])
    assert len(backfill_result.writes) == 1
    backfill = lake.version(TABLE)
    default = run_stage(_at(ctx, None), "features")
    return History(ctx, first, one_by_one, rerun, backfill, default)


def _at(ctx: StageContext, as_of: date | None) -> StageContext:
    return StageContext(settings=ctx.settings, spark=ctx.spark, lake=ctx.lake, as_of=as_of)


def _partition(lake: Lake, day: date, version: int) -> DataFrame:
    return lake.read(TABLE, version=version, partition={"as_of_date": day})


def test_run_writes_the_partition_of_the_as_of_date(history: History) -> None:
    lake = history.ctx.lake
    # As of Jun 20: c1 (signed up Jan 1), c2 (Feb 1), c3 (May 1); c2's order of Jun 30 is later.
    written = lake.read(TABLE, version=history.first.writes[0].version)
    expected = history.ctx.spark.createDataFrame(
        [("c1", D1, True), ("c2", D1, False), ("c3", D1, False)],
        "customer_id string, as_of_date date, has_orders boolean",
    )
    actual = written.select("customer_id", "as_of_date", "has_orders").orderBy("customer_id")
    assert_df_equality(actual, expected, ignore_nullable=True)
    assert [(w.table, w.rows) for w in history.first.writes] == [(TABLE, 3)]


def test_without_as_of_the_latest_order_date_is_used(history: History) -> None:
    # The latest order in WORLD is o3 on 2024-06-30.
    assert history.default.as_of == D2


def test_rerun_replaces_exactly_that_partition_with_the_same_rows(history: History) -> None:
    lake = history.ctx.lake
    for day in (D1, D2):
        assert_df_equality(
            _partition(lake, day, history.rerun), _partition(lake, day, history.one_by_one), ignore_row_order=True
        )
    # 3 customers on each date, each once: nothing was appended twice.
    counts = lake.read(TABLE, version=history.rerun).groupBy("as_of_date").count().collect()
    assert {r["as_of_date"]: r["count"] for r in counts} == {D1: 3, D2: 3}


def test_backfill_equals_one_run_per_date(history: History) -> None:
    lake = history.ctx.lake
    assert_df_equality(
        lake.read(TABLE, version=history.backfill), lake.read(TABLE, version=history.one_by_one), ignore_row_order=True
    )


def test_stage_skips_without_orders(spark: SparkSession, settings: Settings, tmp_path: Path) -> None:
    own = _settings(settings, tmp_path)
    result = run_stage(StageContext(settings=own, spark=spark, lake=open_lake(spark, own), as_of=D1), "features")
    assert result.skipped is not None and "silver.orders" in result.skipped
    assert result.writes == ()


def test_gate_rejects_a_customer_twice_on_one_date(history: History) -> None:
    ctx = history.ctx
    one_date = ctx.lake.read(TABLE, version=history.first.writes[0].version)
    doubled = one_date.unionByName(one_date.where(F.col("customer_id") == "c1"))
    with pytest.raises(DataQualityError, match=r"expect_compound_columns_to_be_unique\(customer_id,as_of_date\) "
                       r"\[observed 1, expected no two rows share customer_id, as_of_date; broken: duplicate"):
        ctx.gate.check(TABLE, doubled)


@pytest.mark.parametrize(("as_of", "error", "expected"), [
    (date(1900, 1, 1), SourceError,
     r"as of 1900-01-01: no customer has data on or before that date \(the latest order is of 2024-06-30\); "
     r"choose an --as-of date inside the data"),
    (date(2030, 1, 1), DataQualityError, r"expect_column_min_to_be_between\(recency_days\).*quality.freshness_days"),
])
def test_an_as_of_date_outside_the_data_stops_the_stage_and_writes_nothing(
    history: History, as_of: date, error: type, expected: str
) -> None:
    """Before the first customer nothing can be described (exit code 4); years after the last
    order every customer looks lapsed (the freshness gate, exit code 5). Either is one line, and
    no partition is written."""
    version = history.ctx.lake.version(TABLE)
    with pytest.raises(error, match=expected) as caught:
        run_stage(_at(history.ctx, as_of), "features")
    assert "\n" not in str(caught.value)
    assert history.ctx.lake.version(TABLE) == version


def test_a_backfill_with_one_stale_date_fails_naming_it(history: History) -> None:
    """Freshness holds for each date of a backfill: a fresh date does not let a stale one pass."""
    stale = date(2030, 1, 1)
    version = history.ctx.lake.version(TABLE)
    with pytest.raises(DataQualityError, match=r"recency_days.*as_of_date 2030-01-01: min recency_days \d+") as caught:
        run_backfill(history.ctx, "features", [D2, stale])
    assert "2024-06-30" not in str(caught.value).split("broken:")[1]
    assert history.ctx.lake.version(TABLE) == version


@pytest.mark.reliability
def test_a_run_with_nothing_changed_is_not_run_again_unless_forced(history: History) -> None:
    """Same inputs, settings and date as the last run: the tables stand, nothing is written; --force,
    a changed setting, a changed input or changed code runs it again."""
    ctx = _at(history.ctx, D2)
    lake = ctx.lake
    run_stage(ctx, "features")
    version = lake.version(TABLE)
    again = run_stage(ctx, "features")
    assert again.writes == () and again.unchanged == {TABLE: version}
    assert lake.version(TABLE) == version
    forced = StageContext(settings=ctx.settings, spark=ctx.spark, lake=lake, as_of=D2, force=True)
    assert [w.table for w in run_stage(forced, "features").writes] == [TABLE]
    assert run_stage(ctx, "features").unchanged is not None  # the forced run's tables stand in turn
    other = ctx.settings.model_copy(update={"quality": ctx.settings.quality.model_copy(update={"freshness_days": 366})})
    changed = run_stage(StageContext(settings=other, spark=ctx.spark, lake=lake, as_of=D2), "features")
    assert changed.unchanged is None and changed.writes
    products = lake.read("silver.products")
    lake.overwrite("silver.products", products)  # a new version of an input, same rows
    assert run_stage(ctx, "features").unchanged is None
    assert run_stage(ctx, "features").unchanged is not None
    with pytest.MonkeyPatch.context() as mp:  # the package's code edited, its version number not raised
        mp.setattr("crm_spark.stages._code_digest", lambda: "edited")
        assert run_stage(ctx, "features").unchanged is None
