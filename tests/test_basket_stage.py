"""Stage ``basket`` end to end on a tiny hand-made silver lake: three gold tables, an MLflow run,
idempotent re-runs, the explosion guard and skipping without inputs.

The ten completed orders hold the hand baskets of tests/test_basket.py (counts A 7, B 7, C 4,
D 2, AB 6, AC 3, BC 2, ABC 2), so with min_support 0.2, min_confidence 0.5 and min_lift 1 the
rules are A->B and B->A (confidence 6/7, lift (6/7)/0.7), C->A (3/4, 0.75/0.7) and BC->A
(1, 1/0.7). Orders of c1..c4 are older than the 90-day window; the others are recent.
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from chispa import assert_approx_df_equality
from pyspark.sql import SparkSession

from crm_spark.config import BasketSettings, PathsSettings, Settings
from crm_spark.errors import ConfigError
from crm_spark.lake import Lake, open_lake
from crm_spark.contracts import table
from crm_spark.stages import StageContext, run_stage
from crm_spark.stages.basket import CROSS_SELL, ITEMSETS, RULES

pytestmark = pytest.mark.slow

AS_OF = date(2024, 6, 30)
OLD, RECENT = date(2024, 1, 10), date(2024, 6, 1)
BASKETS = {  # order -> (customer, date, items)
    "o1": ("c1", OLD, "AB"), "o2": ("c2", OLD, "AB"), "o3": ("c3", OLD, "AB"), "o4": ("c4", OLD, "AB"),
    "o5": ("c5", RECENT, "ABC"), "o6": ("c6", RECENT, "ABC"), "o7": ("c7", RECENT, "AC"),
    "o8": ("c8", RECENT, "CD"), "o9": ("c9", RECENT, "D"), "o10": ("c10", RECENT, "B"),
}
NAMES = {"A": "Apples", "B": "Bread", "C": "Cheese", "D": "Dates"}
CATEGORIES = {"A": "fresh", "B": "bakery", "C": "dairy", "D": "fresh"}
BASKET = BasketSettings(
    min_support=0.2, min_confidence=0.5, min_lift=1.0, max_itemset_size=3, cross_sell_window_days=90,
    cross_sell_top_n=3, top_rules_logged=10,
)


def _silver(spark: SparkSession, lake: Lake) -> None:
    lineage = ("b0", "hand")
    orders = [
        (o, c, datetime.combine(d, datetime.min.time()), d, "web", "completed", "card", *lineage)
        for o, (c, d, _) in BASKETS.items()
    ]
    # Not baskets: a cancelled order and one after the as-of date.
    orders += [
        ("o11", "c9", datetime(2024, 6, 2), date(2024, 6, 2), "web", "cancelled", "card", *lineage),
        ("o12", "c9", datetime(2024, 7, 2), date(2024, 7, 2), "web", "completed", "card", *lineage),
    ]
    items = [
        (o, n + 1, p, 1, Decimal("2.00"), Decimal("0"), Decimal("2.00"), *lineage)
        for o, (_, _, basket) in BASKETS.items()
        for n, p in enumerate(basket)
    ]
    items += [(o, 1, "A", 1, Decimal("2.00"), Decimal("0"), Decimal("2.00"), *lineage) for o in ("o11", "o12")]
    products = [(p, name, CATEGORIES[p], "sub", "brand", Decimal("2.00"), *lineage) for p, name in NAMES.items()]
    for name, rows in (("orders", orders), ("order_items", items), ("products", products)):
        lake.overwrite(f"silver.{name}", spark.createDataFrame(rows, table(f"silver.{name}").ddl))


@pytest.fixture(scope="module")
def stage_settings(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    root = tmp_path_factory.mktemp("basket_stage")
    paths = PathsSettings(raw=str(root / "raw"), lake=str(root / "lake"))
    return settings.model_copy(update={"paths": paths, "basket": BASKET})


@pytest.fixture(scope="module")
def lake(spark: SparkSession, stage_settings: Settings) -> Lake:
    lake = open_lake(spark, stage_settings)
    _silver(spark, lake)
    return lake


@pytest.fixture(scope="module")
def first_run(spark: SparkSession, stage_settings: Settings, lake: Lake):
    return run_stage(StageContext(settings=stage_settings, spark=spark, lake=lake, as_of=AS_OF), "basket")


def test_rules_table_holds_hand_computed_rules_with_names(spark: SparkSession, lake: Lake, first_run) -> None:
    expected = spark.createDataFrame(
        [
            (["A"], "B", ["Apples"], "Bread", 1, 0.6, 6 / 7, (6 / 7) / 0.7),
            (["B"], "A", ["Bread"], "Apples", 1, 0.6, 6 / 7, (6 / 7) / 0.7),
            (["B", "C"], "A", ["Bread", "Cheese"], "Apples", 2, 0.2, 1.0, 1 / 0.7),
            (["C"], "A", ["Cheese"], "Apples", 1, 0.3, 0.75, 0.75 / 0.7),
        ],
        "antecedent array<string>, consequent string, antecedent_names array<string>, consequent_name string, "
        "antecedent_size int, support double, confidence double, lift double",
    )
    got = lake.read(RULES, partition={"as_of_date": AS_OF}).drop("item_level", "as_of_date")
    assert_approx_df_equality(got.orderBy("antecedent", "consequent"), expected, 1e-12, ignore_nullable=True)


def test_itemsets_table_holds_every_frequent_itemset(lake: Lake, first_run) -> None:
    got = {
        (tuple(r.items), tuple(r.item_names), r.freq)
        for r in lake.read(ITEMSETS, partition={"as_of_date": AS_OF}).collect()
    }
    counts = {"A": 7, "B": 7, "C": 4, "D": 2, "AB": 6, "AC": 3, "BC": 2, "ABC": 2}
    assert got == {(tuple(s), tuple(NAMES[i] for i in s), n) for s, n in counts.items()}


def test_cross_sell_table_suggests_unbought_consequents_of_recent_baskets(
    spark: SparkSession, lake: Lake, first_run
) -> None:
    # c5, c6 own A, B and C; c7 (A, C) gets B from A->B; c8 (C, D) gets A from C->A; c10 (B)
    # gets A from B->A; c9 (D) fires nothing; c1..c4 bought outside the window.
    ab = (6 / 7) * ((6 / 7) / 0.7)
    expected = spark.createDataFrame(
        [
            ("c10", 1, "A", "Apples", ab, 6 / 7, (6 / 7) / 0.7, ["B"]),
            ("c7", 1, "B", "Bread", ab, 6 / 7, (6 / 7) / 0.7, ["A"]),
            ("c8", 1, "A", "Apples", 0.75 * 0.75 / 0.7, 0.75, 0.75 / 0.7, ["C"]),
        ],
        "customer_id string, rank int, item_id string, item_name string, score double, confidence double, "
        "lift double, antecedent array<string>",
    )
    got = lake.read(CROSS_SELL, partition={"as_of_date": AS_OF}).drop("item_level", "as_of_date")
    assert_approx_df_equality(got.orderBy("customer_id"), expected, 1e-12, ignore_nullable=True)


def test_run_is_logged_to_mlflow_with_counts_inputs_and_artifacts(
    stage_settings: Settings, lake: Lake, first_run
) -> None:
    from mlflow import MlflowClient

    from crm_spark.tracking import tracking_uri

    client = MlflowClient(tracking_uri=tracking_uri(stage_settings))
    run = client.get_run(first_run.mlflow_run_id)
    assert run.data.metrics["baskets"] == 10
    assert run.data.metrics["rules"] == 4
    assert run.data.metrics[f"rows.{ITEMSETS}"] == 8
    assert run.data.params["min_support"] == "0.2"
    assert run.data.params["input.silver.orders.version"] == str(lake.version("silver.orders"))
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    figures = {a.path for a in client.list_artifacts(run.info.run_id, "figures")}
    assert "top_rules.csv" in artifacts
    assert "figures/basket_rules_support_confidence.png" in figures


def test_rerun_replaces_the_as_of_partition(
    spark: SparkSession, stage_settings: Settings, lake: Lake, first_run
) -> None:
    # Re-run the same date at category level: the partition must hold the new itemsets only.
    # Categories per basket: AB -> bakery+fresh (b1-b4), ABC -> all three (b5, b6), AC and CD ->
    # dairy+fresh (b7, b8), D -> fresh (b9), B -> bakery (b10).
    by_category = stage_settings.model_copy(update={"basket": BASKET.model_copy(update={"item_level": "category"})})
    again = run_stage(StageContext(settings=by_category, spark=spark, lake=lake, as_of=AS_OF), "basket")
    rows = lake.read(ITEMSETS, partition={"as_of_date": AS_OF}).collect()
    got = {(tuple(r.items), r.freq, r.item_level) for r in rows}
    counts = {
        ("fresh",): 9, ("bakery",): 7, ("dairy",): 4, ("bakery", "fresh"): 6, ("dairy", "fresh"): 4,
        ("bakery", "dairy"): 2, ("bakery", "dairy", "fresh"): 2,
    }
    assert got == {(items, n, "category") for items, n in counts.items()}
    assert all(w.version > 0 for w in again.writes)


def test_explosion_guard_stops_before_anything_is_written(
    spark: SparkSession, stage_settings: Settings, lake: Lake, first_run
) -> None:
    # Bound at min_support 0.1 (min count 1): more than the 5 allowed itemsets.
    tight = stage_settings.model_copy(
        update={"basket": BASKET.model_copy(update={"min_support": 0.1, "max_itemsets": 5})}
    )
    versions = {t: lake.version(t) for t in (ITEMSETS, RULES, CROSS_SELL)}
    with pytest.raises(ConfigError, match=r"basket\.min_support=0\.1 could mine up to .* basket\.max_itemsets=5"):
        run_stage(StageContext(settings=tight, spark=spark, lake=lake, as_of=date(2024, 6, 15)), "basket")
    assert {t: lake.version(t) for t in versions} == versions


def test_stage_skips_without_silver_orders(spark: SparkSession, settings: Settings, tmp_path: Path) -> None:
    empty = settings.model_copy(update={"paths": PathsSettings(raw=str(tmp_path / "raw"), lake=str(tmp_path / "lake"))})
    result = run_stage(StageContext(settings=empty, spark=spark, lake=open_lake(spark, empty), as_of=AS_OF), "basket")
    assert result.skipped is not None and "silver.orders" in result.skipped
    assert result.writes == ()
