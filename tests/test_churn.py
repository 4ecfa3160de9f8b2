"""Churn: point-in-time labels on hand-made timelines, evaluators on a hand-computed example,
explanations, risk bands, and the stage end to end on a tiny hand-made lake (champion rule,
repeatable scoring).

The evaluator example (probability, churned), ordered by probability:
    a 0.95 1 | b 0.85 1 | c 0.75 0 | d 0.65 1 | e 0.35 0 | f 0.15 0
ROC-AUC: of the 3 x 3 (churner, non-churner) pairs, a and b outrank all three non-churners and
d outranks e and f but not c: 8/9. PR-AUC as Spark integrates it (trapezoids through the points
(recall, precision) at each threshold, starting at (0, precision of the first)):
(0,1) (1/3,1) (2/3,1) (2/3,2/3) (1,3/4) (1,3/5) (1,1/2) -> 1/3 + 1/3 + 0 + 1/3 x (2/3 + 3/4) / 2 = 65/72.
Brier: (0.05^2 + 0.15^2 + 0.75^2 + 0.35^2 + 0.35^2 + 0.15^2) / 6 = 0.855 / 6 = 0.1425.
Thresholds on a 10-bin grid flag rows with p >= t: t = 0.9 flags {a} (F1 1/2), 0.8 {a, b} (F1 4/5),
0.7 adds c (F1 2/3), 0.6 .. 0.4 add d (P 3/4, R 1, F1 6/7), lower ones add e and f (F1 3/4, 2/3).
"""

from __future__ import annotations

import json
import math
import os
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from chispa import assert_df_equality
from pydantic import ValidationError
from pyspark.ml.linalg import Vectors
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from crm_spark.config import ChurnSettings, PathsSettings, Settings
from crm_spark.errors import SourceError
from crm_spark.lake import Lake, open_lake
from crm_spark.ml import churn as ml
from crm_spark.ml import redundant_features
from crm_spark.contracts import table
from crm_spark.stages import StageContext, run_stage
from crm_spark.stages import churn as stage
from crm_spark.transforms.features import customer_features, with_attributes

T = date(2024, 3, 31)
EXAMPLE = [("a", 0.95, 1), ("b", 0.85, 1), ("c", 0.75, 0), ("d", 0.65, 1), ("e", 0.35, 0), ("f", 0.15, 0)]
EXAMPLE_DDL = "customer_id string, churn_probability double, churned int"


def _orders(spark: SparkSession, rows: list[tuple[str, str, date]]):
    lineage = ("b0", "hand")
    return spark.createDataFrame(
        [(f"o{i}", c, datetime.combine(d, datetime.min.time()), d, "web", s, "card", *lineage) for i, (c, s, d) in enumerate(rows)],
        table("silver.orders").ddl,
    )


# -- labels ----------------------------------------------------------------------------------
def test_computed_label_looks_only_at_completed_orders_in_the_horizon_after_the_date(spark: SparkSession) -> None:
    features = spark.createDataFrame(
        [(c, T) for c in ("on_date", "next_day", "last_day", "day_after", "cancelled", "returned", "none", "twice")]
        + [("twice", date(2024, 4, 30))],
        "customer_id string, as_of_date date",
    )
    orders = _orders(spark, [
        ("on_date", "completed", T),                     # already in the features: not a future order
        ("next_day", "completed", date(2024, 4, 1)),     # first day of (T, T + 30]
        ("last_day", "completed", date(2024, 4, 30)),    # last day of the window
        ("day_after", "completed", date(2024, 5, 1)),    # one day too late
        ("cancelled", "cancelled", date(2024, 4, 10)),   # not completed
        ("returned", "returned", date(2024, 4, 10)),
        ("twice", "completed", date(2024, 4, 15)),       # keeps 'twice' at T, not at 2024-04-30
        ("other", "completed", date(2024, 4, 15)),       # someone else's order
    ])
    end, end2 = date(2024, 4, 30), date(2024, 5, 30)
    expected = spark.createDataFrame(
        [
            ("cancelled", T, end, 1), ("day_after", T, end, 1), ("last_day", T, end, 0), ("next_day", T, end, 0),
            ("none", T, end, 1), ("on_date", T, end, 1), ("returned", T, end, 1), ("twice", T, end, 0),
            ("twice", date(2024, 4, 30), end2, 1),
        ],
        "customer_id string, as_of_date date, label_end_date date, churned int",
    )
    actual = ml.computed_labels(features, orders, horizon_days=30).select(*expected.columns)
    assert_df_equality(actual, expected, ignore_row_order=True, ignore_nullable=True)


def test_computed_label_needs_a_purchase_not_a_zero_value_order(spark: SparkSession) -> None:
    features = spark.createDataFrame([(c, T) for c in ("free", "paid", "unknown")], "customer_id string, as_of_date date")
    orders = _orders(spark, [("free", "completed", date(2024, 4, 10)), ("paid", "completed", date(2024, 4, 10)),
                             ("unknown", "completed", date(2024, 4, 10))])
    items = spark.createDataFrame(  # o0: all lines discounted to 0; o1: paid; o2 has no accepted line
        [("o0", "0.00"), ("o0", "0.00"), ("o1", "3.50")], "order_id string, line_amount string"
    ).withColumn("line_amount", F.col("line_amount").cast("decimal(14,2)"))

    def churned(**kwargs: Any) -> dict[str, int]:
        labels = ml.computed_labels(features, orders, horizon_days=30, **kwargs)
        return {r["customer_id"]: r["churned"] for r in labels.collect()}

    assert churned(order_items=items) == {"free": 1, "paid": 0, "unknown": 1}
    assert churned(order_items=items, count_zero_value_orders=True) == {"free": 0, "paid": 0, "unknown": 0}
    assert churned() == {"free": 0, "paid": 0, "unknown": 0}  # without an order-line table every completed order counts


def test_provided_label_applies_only_when_dated_in_the_horizon_or_undated(spark: SparkSession) -> None:
    features = spark.createDataFrame(
        [(c, T) for c in ("inside", "on_date", "too_late", "undated", "last_day", "unlabelled")],
        "customer_id string, as_of_date date",
    )
    labels = spark.createDataFrame(
        [
            ("inside", True, date(2024, 4, 15)),
            ("on_date", True, T),               # known at T: would leak into T's row
            ("too_late", True, date(2024, 5, 1)),
            ("undated", False, None),
            ("last_day", False, date(2024, 4, 30)),
        ],
        "customer_id string, churned boolean, label_date date",
    )
    end = date(2024, 4, 30)
    expected = spark.createDataFrame(
        [("inside", T, end, 1), ("last_day", T, end, 0), ("undated", T, end, 0)],
        "customer_id string, as_of_date date, label_end_date date, churned int",
    )
    actual = ml.provided_labels(features, labels, horizon_days=30).select(*expected.columns)
    assert_df_equality(actual, expected, ignore_row_order=True, ignore_nullable=True)


def test_snapshot_label_dated_on_the_as_of_date_applies(spark: SparkSession) -> None:
    """One labelled snapshot: the flag describes the date the features are taken from."""
    features = spark.createDataFrame([("on_date", T), ("before", T)], "customer_id string, as_of_date date")
    labels = spark.createDataFrame([("on_date", True, T), ("before", True, T - timedelta(days=1))],
                                   "customer_id string, churned boolean, label_date date")
    got = ml.provided_labels(features, labels, horizon_days=30, snapshot=True).select("customer_id", "churned").collect()
    assert [tuple(r) for r in got] == [("on_date", 1)]


def test_undated_labels_at_two_dates_are_the_same_label_dated_ones_are_not(spark: SparkSession) -> None:
    later = T + timedelta(days=30)
    rows = spark.createDataFrame([("u", T), ("d", T), ("u", later), ("d", later)], "customer_id string, as_of_date date")
    labels = spark.createDataFrame([("u", True, None), ("d", True, T + timedelta(days=10)),
                                    ("d", False, later + timedelta(days=10))],
                                   "customer_id string, churned boolean, label_date date")
    labeled = ml.provided_labels(rows, labels, horizon_days=30)
    train, evaluate = labeled.where(F.col("as_of_date") == T), labeled.where(F.col("as_of_date") == later)
    assert train.count() == evaluate.count() == 2
    assert ml.shared_labels(train, evaluate) == 1  # "u": one undated label on both sides


def test_holdout_takes_about_the_share_of_each_class_and_keeps_each_customer_on_its_side(spark: SparkSession) -> None:
    rows = spark.createDataFrame([(f"c{i:04d}", int(i < 600)) for i in range(2000)], "customer_id string, churned int")
    split = ml.stratified_holdout(rows, share=0.2, seed=3).toPandas()
    held = split[split["split"] == "eval"]
    for label, n in ((1, 600), (0, 1400)):
        assert abs((held["churned"] == label).sum() / n - 0.2) < 0.04
    # the same customers whatever else is in the data: a later export with more customers and
    # changed labels holds out the same ones of those it shares
    later = spark.createDataFrame([(f"c{i:04d}", int(i % 3 == 0)) for i in range(3000)], "customer_id string, churned int")
    again = ml.stratified_holdout(later, share=0.2, seed=3).toPandas()
    again = again[again["customer_id"].isin(split["customer_id"])]
    assert set(again[again["split"] == "eval"]["customer_id"]) == set(held["customer_id"])
    other = ml.stratified_holdout(rows, share=0.2, seed=4).toPandas()
    assert set(other[other["split"] == "eval"]["customer_id"]) != set(held["customer_id"])


def test_attributes_come_from_the_latest_snapshot_on_or_before_the_date(spark: SparkSession) -> None:
    march, april, may = date(2024, 3, 1), date(2024, 4, 1), date(2024, 5, 1)
    rows = spark.createDataFrame([("a", T), ("b", T), ("c", T), ("a", date(2024, 4, 15))], "customer_id string, as_of_date date")
    attrs = spark.createDataFrame(
        [
            ("a", march, "plan", "categorical", None, "basic", None, None),
            ("a", april, "plan", "categorical", None, "premium", None, None),  # after T (03-31): not yet known
            ("a", march, "charges", "numeric", 20.0, None, None, None),
            ("a", march, "paperless", "boolean", None, None, True, None),
            ("a", march, "renewal", "date", None, None, None, date(2024, 3, 21)),
            ("b", may, "plan", "categorical", None, "basic", None, None),      # only after T
            ("b", march, "charges", "numeric", None, None, None, None),        # a missing value
        ],
        "customer_id string, snapshot_date date, attribute string, kind string, value_number double, "
        "value_text string, value_boolean boolean, value_date date",
    )
    kinds = {"plan": "categorical", "charges": "numeric", "paperless": "boolean", "renewal": "date"}
    result = with_attributes(rows, attrs, kinds)
    later = result.where(F.col("as_of_date") == date(2024, 4, 15)).first()
    assert (later["attr_plan"], later["attr_charges"], later["attr_renewal"]) == ("premium", 20.0, 25.0)  # April's plan
    got = {r["customer_id"]: r for r in result.where(F.col("as_of_date") == T).collect()}
    assert (got["a"]["attr_plan"], got["a"]["attr_charges"], got["a"]["attr_paperless"], got["a"]["attr_renewal"]) == (
        "basic", 20.0, 1.0, 10.0)
    assert all(got[c][f"attr_{n}"] is None for c in ("b", "c") for n in kinds)
    columns = ml.attribute_columns(kinds)
    assert columns.categorical == ("attr_plan",) and set(columns.numeric) == {"attr_charges", "attr_paperless", "attr_renewal"}


def test_redundant_columns_are_constant_or_equal_to_an_earlier_one_of_their_type(spark: SparkSession) -> None:
    frame = spark.createDataFrame(
        [(1, "x", None, 1.0, None, 3.0, "3.0"), (1, "y", None, 2.0, "k", 4.0, "4.0"), (1, "x", None, 1.0, None, 3.0, "3.0")],
        "one int, two string, none double, tenure double, some string, copy double, text string",
    )
    got = redundant_features(frame, ["one", "two", "none", "tenure", "some", "copy", "text"])
    assert got == {"one": "has the same value for every customer", "none": "has the same value for every customer"}
    twins = spark.createDataFrame([(1.0, 1.0), (2.0, 2.0)], "a double, b double")
    assert redundant_features(twins, ["a", "b"]) == {"b": "equals a for every customer"}
    nan = float("nan")
    nans = spark.createDataFrame([(nan, 1.0, 0), (nan, nan, 1)], "all_nan double, some_nan double, n int")
    assert redundant_features(nans, ["all_nan", "some_nan", "n"]) == {"all_nan": "has the same value for every customer"}
    assert redundant_features(spark.createDataFrame([], "a double, b double"), ["a", "b"]) == {
        "a": "has the same value for every customer", "b": "has the same value for every customer"}


def test_threshold_given_from_training_rows_is_the_one_reported(spark: SparkSession) -> None:
    scored = spark.createDataFrame(EXAMPLE, EXAMPLE_DDL)
    at = ml.evaluate(scored, bins=10, rule="max_f1", target_recall=0.8, threshold=0.8)
    assert at.metrics["threshold"] == pytest.approx(0.8) and at.metrics["tp"] == 2 and at.metrics["fp"] == 0
    assert ml.pick_threshold(scored, bins=10, rule="max_f1", target_recall=0.8) == pytest.approx(0.6)


def test_buyers_population_drops_customers_without_a_completed_order(spark: SparkSession) -> None:
    features = spark.createDataFrame([("buyer", True), ("browser", False)], "customer_id string, has_orders boolean")
    assert [r[0] for r in ml.population(features, who="buyers").collect()] == ["buyer"]
    assert ml.population(features, who="all").count() == 2


def test_balanced_weights_give_each_class_half_the_total_weight() -> None:
    negative, positive = ml.balanced_weights(rows=10, positives=2)
    assert (negative, positive) == (10 / 16, 10 / 4)
    assert 8 * negative == pytest.approx(2 * positive) == pytest.approx(5.0)


# -- evaluators ------------------------------------------------------------------------------
def test_evaluate_matches_the_hand_computed_example(spark: SparkSession) -> None:
    scored = spark.createDataFrame(EXAMPLE, EXAMPLE_DDL)
    metrics = ml.evaluate(scored, bins=10, rule="max_f1", target_recall=0.8).metrics
    log_loss = -sum(math.log(p if y else 1 - p) for _, p, y in EXAMPLE) / 6
    assert metrics["roc_auc"] == pytest.approx(8 / 9)
    assert metrics["pr_auc"] == pytest.approx(65 / 72)
    assert metrics["log_loss"] == pytest.approx(log_loss)
    assert metrics["brier"] == pytest.approx(0.1425)
    assert metrics["base_rate"] == 0.5
    # max F1 (6/7) is reached at 0.6, 0.5 and 0.4: the highest threshold wins.
    assert {k: metrics[k] for k in ("threshold", "tp", "fp", "tn", "fn")} == {
        "threshold": 0.6, "tp": 3, "fp": 1, "tn": 2, "fn": 0,
    }
    assert metrics["f1"] == pytest.approx(6 / 7)


def test_target_recall_rule_takes_the_highest_threshold_reaching_the_recall(spark: SparkSession) -> None:
    table = ml.score_bins(spark.createDataFrame(EXAMPLE, EXAMPLE_DDL), bins=10).toPandas()
    chosen = ml.choose_threshold(ml.threshold_curve(table, bins=10), rule="target_recall", target_recall=0.6)
    assert (chosen["threshold"], chosen["tp"], chosen["fp"], chosen["tn"], chosen["fn"]) == (0.8, 2, 0, 3, 1)


def test_top_decile_lift_and_capture_break_ties_by_customer_id(spark: SparkSession) -> None:
    # 20 customers, 5 churners: the top decile is 2 customers. c02 and c03 tie at 0.90; c02 (not
    # churned) sorts first, so the decile holds c01 (churned) and c02: capture 1/5, lift (1/2)/(5/20).
    rows = [("c01", 0.95, 1), ("c02", 0.90, 0), ("c03", 0.90, 1)]
    rows += [(f"c{i:02d}", 0.5 - i / 100, 1 if i in (10, 15, 20) else 0) for i in range(4, 21)]
    scored = spark.createDataFrame(rows, EXAMPLE_DDL)
    assert ml.top_decile_lift(scored) == {"lift_top_decile": pytest.approx(2.0), "capture_top_decile": pytest.approx(0.2)}


def test_calibration_groups_mean_probability_and_observed_rate(spark: SparkSession) -> None:
    rows = [("a", 0.12, 0), ("b", 0.18, 1), ("c", 0.81, 1), ("d", 0.83, 1), ("e", 0.86, 0)]
    table = ml.score_bins(spark.createDataFrame(rows, EXAMPLE_DDL), bins=100).toPandas()
    calibration = ml.calibration_table(table, bins=100, groups=10)
    assert calibration["group"].tolist() == [1, 8]
    assert calibration["rows"].tolist() == [2, 3]
    assert calibration["mean_probability"].tolist() == pytest.approx([0.15, 2.5 / 3])
    assert calibration["observed_rate"].tolist() == pytest.approx([0.5, 2 / 3])


def test_champion_rule_needs_a_strictly_better_score() -> None:
    assert ml.beats(0.70, None, metric="roc_auc")
    assert not ml.beats(0.80, 0.80, metric="roc_auc")
    assert ml.beats(0.81, 0.80, metric="roc_auc")
    assert not ml.beats(0.81, 0.80, metric="roc_auc", min_delta=0.02)
    assert ml.beats(0.19, 0.20, metric="brier")
    assert not ml.beats(0.21, 0.20, metric="log_loss")
    assert not ml.beats(float("nan"), None, metric="roc_auc")


# -- explanations and bands ---------------------------------------------------------------------
def test_top_contributions_rank_coefficient_times_standardised_value(spark: SparkSession) -> None:
    frame = spark.createDataFrame(
        [("r1", Vectors.dense([1.0, 1.0, 4.0, 0.5])), ("r2", Vectors.dense([-1.0, -1.0, 0.0, 0.0]))],
        ["customer_id", ml.STD_FEATURES],
    )
    names = ["a", "b", "c", "d"]
    # r1: 1 x 1, 1 x -2, 4 x 0.5, 0.5 x 3 = (1, -2, 2, 1.5) -> c, d, a
    # r2: -1 x 1, -1 x -2, 0, 0 = (-1, 2, 0, 0) -> only b pushes churn up
    signed = ml.top_contributions(frame, names=names, weights=[1.0, -2.0, 0.5, 3.0], signed=True)
    expected = spark.createDataFrame(
        [("r1", "c", "d", "a"), ("r2", "b", None, None)],
        "customer_id string, top_feature_1 string, top_feature_2 string, top_feature_3 string",
    )
    assert_df_equality(signed.drop(ml.STD_FEATURES), expected, ignore_row_order=True, ignore_nullable=True)


def test_top_contributions_of_trees_use_importance_times_distance(spark: SparkSession) -> None:
    frame = spark.createDataFrame([("r1", Vectors.dense([1.0, -1.0, 4.0, 0.5]))], ["customer_id", ml.STD_FEATURES])
    # |z| x importance = (0.1, 0.2, 1.2, 0.2): c first, then the b/d tie goes to d (sorts last)
    out = ml.top_contributions(frame, names=["a", "b", "c", "d"], weights=[0.1, 0.2, 0.3, 0.4], signed=False).first()
    assert (out["top_feature_1"], out["top_feature_2"], out["top_feature_3"]) == ("c", "d", "b")


def test_risk_band_cut_offs_include_their_lower_bound(spark: SparkSession) -> None:
    frame = spark.createDataFrame([(p,) for p in (0.7, 0.69, 0.4, 0.39, 0.0)], "churn_probability double")
    bands = [(b.band, b.min_probability) for b in ChurnSettings().risk_bands]
    out = frame.select(ml.risk_band(bands).alias("band")).collect()
    assert [r["band"] for r in out] == ["high", "medium", "medium", "low", "low"]


def test_offsets_shorter_than_the_horizon_are_rejected() -> None:
    with pytest.raises(ValidationError, match="eval_offset_days"):
        ChurnSettings(horizon_days=90, eval_offset_days=60)


# -- the stage on a hand-made lake --------------------------------------------------------------
# D = 2024-06-30, horizon 30 days: evaluate at T' = 2024-05-31, train at T = 2024-05-01.
# 60 customers, all buyers by January: steady (every 10 days to D), gone (monthly Jan..Mar 15),
# may (every 10 days to May 15: an order in (T, T'] but none after T'), june (every 10 days to
# June 10). Train labels: gone = churned; eval labels: gone and may = churned.
D = date(2024, 6, 30)
TRAIN_T, EVAL_T = date(2024, 5, 1), date(2024, 5, 31)
GROUPS = {  # group -> (first order, last allowed order, days between orders)
    "steady": (date(2024, 1, 1), D, 10),
    "gone": (date(2024, 1, 10), date(2024, 3, 15), 30),
    "may": (date(2024, 1, 3), date(2024, 5, 15), 10),
    "june": (date(2024, 1, 3), date(2024, 6, 10), 10),
}
SIZES = {"steady": 30, "gone": 10, "may": 10, "june": 10}
GOOD = ChurnSettings(
    horizon_days=30, tuning="tvs", reg_params=(0.01,), elastic_net_params=(0.0,), challenger="none", threshold_bins=100,
)
# Lasso this strong zeroes every coefficient: a constant probability, ROC-AUC 0.5.
WORSE = GOOD.model_copy(update={"reg_params": (10.0,), "elastic_net_params": (1.0,)})


def _hand_orders(spark: SparkSession):
    rows = []
    for group, (first, last, every) in GROUPS.items():
        for i in range(SIZES[group]):
            day = first + timedelta(days=i % 5)
            while day <= last:
                rows.append((f"{group}{i:02d}", "completed", day))
                day += timedelta(days=every)
    return _orders(spark, rows)


@pytest.fixture(scope="module")
def stage_settings(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    root = tmp_path_factory.mktemp("churn_stage")
    return settings.model_copy(update={"paths": PathsSettings(raw=str(root / "raw"), lake=str(root / "lake"))})


@pytest.fixture(scope="module")
def lake(spark: SparkSession, stage_settings: Settings) -> Lake:
    """silver.orders and gold.customer_features at T, T' and D (features transform, orders only)."""
    lake = open_lake(spark, stage_settings)
    orders = _hand_orders(spark)
    lake.overwrite("silver.orders", orders)
    empty = {n: spark.createDataFrame([], table(f"silver.{n}").schema) for n in
             ("customers", "order_items", "products", "web_events", "social_interactions", "feedback")}
    f = stage_settings.features
    features = customer_features(
        orders=orders, **empty, as_of=[TRAIN_T, EVAL_T, D], segments=f.segments, no_orders_segment=f.no_orders_segment,
        high_tier_percentile=f.high_tier_percentile, mid_tier_percentile=f.mid_tier_percentile,
        missing_rating=f.missing_rating, missing_nps=f.missing_nps, order_lines_known=False,
    )
    lake.overwrite("gold.customer_features", features, partition_by=["as_of_date"])
    return lake


@pytest.fixture(scope="module")
def local_tracking():
    """The stage's MLflow store is the SQLite file under the tmp lake, whatever the environment says."""
    saved = os.environ.pop("MLFLOW_TRACKING_URI", None)
    yield
    if saved is not None:
        os.environ["MLFLOW_TRACKING_URI"] = saved


def _ctx(spark: SparkSession, settings: Settings, lake: Lake, churn: ChurnSettings) -> StageContext:
    # A fresh context per call: the tracker points MLflow's global URI at this lake's store.
    return StageContext(settings=settings.model_copy(update={"churn": churn}), spark=spark, lake=lake, as_of=D)


@pytest.fixture(scope="module")
def trained(spark: SparkSession, stage_settings: Settings, lake: Lake, local_tracking):
    """A good model (first: becomes champion), then a worse one trained on the same dates."""
    first = run_stage(_ctx(spark, stage_settings, lake, GOOD), "churn")
    second = run_stage(_ctx(spark, stage_settings, lake, WORSE), "churn")
    return first, second


@pytest.mark.slow
def test_computed_labels_need_orders_up_to_the_scoring_date(lake: Lake) -> None:
    latest = lake.max_value("silver.orders", "order_date")  # from the log's file statistics: a date
    assert type(latest) is date and latest == lake.read("silver.orders").agg(F.max("order_date")).first()[0]

    stage._check_label_coverage(latest, stage.churn_dates(latest, GOOD))
    with pytest.raises(SourceError, match=rf"silver.orders ends on {latest}: .* need orders up to {latest + timedelta(days=1)}"):
        stage._check_label_coverage(latest, stage.churn_dates(latest + timedelta(days=1), GOOD))


@pytest.mark.slow
def test_missing_feature_partitions_without_backfill_name_the_runs_to_do(
    spark: SparkSession, stage_settings: Settings, local_tracking
) -> None:
    root = Path(stage_settings.paths.lake).parent / "lake_without_features"
    bare = stage_settings.model_copy(update={"paths": PathsSettings(raw=stage_settings.paths.raw, lake=str(root))})
    bare_lake = open_lake(spark, bare)
    bare_lake.overwrite("silver.orders", _hand_orders(spark))
    strict = GOOD.model_copy(update={"backfill_features": False})
    with pytest.raises(SourceError, match="crm-spark features --as-of 2024-05-01; crm-spark features --as-of 2024-05-31"):
        run_stage(_ctx(spark, bare, bare_lake, strict), "churn")
    assert not bare_lake.exists("gold.customer_features") and not bare_lake.exists(stage.TRAINING)


@pytest.mark.slow
def test_undated_labels_evaluated_over_time_are_refused_in_one_line(
    spark: SparkSession, stage_settings: Settings, lake: Lake, local_tracking
) -> None:
    """The same undated flag would label a customer's training row and evaluation row: refused."""
    customers = [f"{g}{i:02d}" for g, n in SIZES.items() for i in range(n)]
    labels = spark.createDataFrame([(c, c.startswith("gone"), None, "b0", "hand") for c in customers],
                                   table("silver.churn_labels").ddl)
    lake.overwrite("silver.churn_labels", labels)
    column = GOOD.model_copy(update={"label_source": "column"})
    with pytest.raises(SourceError) as err:
        run_stage(_ctx(spark, stage_settings, lake, column), "churn")
    assert str(err.value).startswith(f"{len(customers)} of the {len(customers)} evaluation rows carry the same label")
    assert "set churn.evaluation: snapshot" in str(err.value) and "\n" not in str(err.value)


@pytest.mark.slow
def test_training_table_keeps_the_point_in_time_rows_and_labels(trained, lake: Lake) -> None:
    rows = lake.read(stage.TRAINING, partition={"run_as_of_date": D}).select("split", "customer_id", "as_of_date", "churned")
    got = {(r["split"], r["customer_id"]): (r["as_of_date"], r["churned"]) for r in rows.collect()}
    expected = {}
    for group, size in SIZES.items():
        for i in range(size):
            cid = f"{group}{i:02d}"
            expected[("train", cid)] = (TRAIN_T, int(group == "gone"))
            expected[("eval", cid)] = (EVAL_T, int(group in ("gone", "may")))
    assert got == expected


@pytest.mark.slow
def test_first_model_becomes_champion(trained) -> None:
    first, _ = trained
    (decision,) = first.outcome.decisions
    assert decision["champion_version"] is None and decision["promoted"]
    assert first.outcome.champion_version == decision["version"]
    assert first.outcome.metrics["logistic_regression"]["roc_auc"] > 0.9


@pytest.mark.slow
def test_reported_threshold_is_picked_on_the_training_rows(
    trained, spark: SparkSession, stage_settings: Settings, lake: Lake
) -> None:
    first, _ = trained
    version, model = _ctx(spark, stage_settings, lake, GOOD).tracker.model_by_alias(stage.MODEL_NAME, stage.CHAMPION)
    assert version == first.outcome.champion_version
    rows = lake.read(stage.TRAINING, partition={"run_as_of_date": D})
    train = rows.where(F.col("split") == "train").drop("split")
    on_train = ml.pick_threshold(ml.score(model, train), bins=GOOD.threshold_bins, rule=GOOD.threshold_rule,
                                 target_recall=GOOD.target_recall)
    assert first.outcome.metrics["logistic_regression"]["threshold"] == pytest.approx(on_train)


@pytest.mark.slow
def test_worse_model_is_registered_but_champion_does_not_move(trained, stage_settings: Settings, local_tracking) -> None:
    first, second = trained
    (kept,) = second.outcome.decisions
    champion_version = first.outcome.champion_version
    assert kept["version"] == champion_version + 1 and not kept["promoted"]
    assert kept["score"] == pytest.approx(0.5)
    # the champion was re-scored on the same evaluation rows: its score equals its first run's
    assert kept["champion_version"] == champion_version
    assert kept["champion_score"] == pytest.approx(first.outcome.metrics["logistic_regression"]["roc_auc"])

    from crm_spark.tracking import Tracker

    tracker = Tracker(stage_settings)
    assert int(tracker.client.get_model_version_by_alias(stage.MODEL_NAME, stage.CHAMPION).version) == champion_version
    logged = json.loads(Path(tracker.client.download_artifacts(second.mlflow_run_id, "champion_decisions.json"))
                        .read_text())
    assert logged[0]["promoted"] is False and logged[0]["champion_score"] == pytest.approx(kept["champion_score"])


@pytest.mark.slow
def test_scoring_twice_gives_identical_scores(
    trained, spark: SparkSession, stage_settings: Settings, lake: Lake, local_tracking
) -> None:
    """The same customers scored by the champion three times: in memory right after training (run
    one), loaded from the registry (run two keeps it), and by ``score`` alone."""
    first, second = trained
    rescored = run_stage(_ctx(spark, stage_settings, lake, GOOD), "churn", entry="score")
    versions = [next(w.version for w in r.writes if w.table == stage.SCORES) for r in (first, second, rescored)]
    frames = [lake.read(stage.SCORES, version=v, partition={"as_of_date": D}) for v in versions]
    assert versions == sorted(set(versions)) and frames[0].count() == sum(SIZES.values())
    assert_df_equality(frames[0], frames[1], ignore_row_order=True)
    assert_df_equality(frames[0], frames[2], ignore_row_order=True)
    assert {r[0] for r in frames[2].select("model_version").distinct().collect()} == {first.outcome.champion_version}


@pytest.mark.slow
def test_scores_rank_customers_who_stopped_ordering_above_steady_ones(trained, lake: Lake) -> None:
    scores = lake.read(stage.SCORES, partition={"as_of_date": D})
    group = F.regexp_extract("customer_id", r"^[a-z]+", 0)
    means = {r["g"]: r["p"] for r in scores.groupBy(group.alias("g")).agg(F.avg("churn_probability").alias("p")).collect()}
    assert means["gone"] > means["steady"] and means["may"] > means["steady"]
    # every lapsed customer gets a reason, named as a feature column or column=category
    columns = ml.feature_columns()
    tops = [r[0] for r in scores.where(group == "gone").select("top_feature_1").collect()]
    assert len(tops) == SIZES["gone"] and all(
        t is not None and (t in (*columns.numeric, *columns.boolean) or t.split("=")[0] in columns.categorical) for t in tops
    )
