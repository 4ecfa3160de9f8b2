"""Stage ``recommend``: interactions, candidate lists, ranking metrics, and the stage on the shared run.

The transforms are checked on hand-made frames (a timeline whose right answer is worked out by
hand); the ranking metrics against Spark's own ``RankingEvaluator``; the stage on the shared
end-to-end run against the generator's planted structure (each customer draws 45 % of their
products from a favourite category, so a personal model must beat overall popularity) and against
the rule that no recommended product was bought before.
"""

from __future__ import annotations

from datetime import date

import pytest
from pyspark.ml.evaluation import RankingEvaluator
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from crm_spark.config import RecommendSettings
from crm_spark.ml.basket import purchase_lines
from crm_spark.ml.recommend import (
    RANKING_METRICS,
    als_blocks,
    interactions,
    ranked,
    ranking_metrics,
    relevant_items,
)
from crm_spark.stages.recommend import RecommendOutcome

LINES = "basket_id string, customer_id string, order_date date, item_id string"
EVENTS = "customer_id string, product_id string, event_date date, kind string"
CANDIDATES = "customer_id string, product_id string, score double"


def _lines(spark: SparkSession, rows: list[tuple]) -> DataFrame:
    return spark.createDataFrame([(b, c, date.fromisoformat(d), i) for b, c, d, i in rows], LINES)


def _as_dict(df: DataFrame, *key: str, value: str) -> dict:
    return {tuple(r[k] for k in key): r[value] for r in df.collect()}


# -- interactions and the holdout ------------------------------------------------------------------
def test_interactions_weigh_each_kind_within_the_window(spark: SparkSession) -> None:
    lines = _lines(spark, [("o1", "c1", "2025-01-05", "p1"), ("o2", "c1", "2025-02-01", "p1"),
                           ("o3", "c2", "2025-03-01", "p2")])
    events = spark.createDataFrame([
        ("c1", "p2", date(2025, 1, 2), "product_view"), ("c1", "p2", date(2025, 1, 3), "add_to_cart"),
        ("c2", "p1", date(2025, 1, 4), "product_view"),
    ], EVENTS)
    weights = {"purchase": 1.0, "add_to_cart": 0.5, "product_view": 0.1}

    got = _as_dict(interactions(lines, events, end=date(2025, 2, 1), weights=weights),
                   "customer_id", "product_id", value="strength")

    # c2's purchase on 2025-03-01 is after the end; two purchases of p1 count twice.
    assert got == pytest.approx({("c1", "p1"): 2.0, ("c1", "p2"): 0.6, ("c2", "p1"): 0.1})
    later = _as_dict(interactions(lines, events, start=date(2025, 1, 3), end=date(2025, 3, 1), weights=weights),
                     "customer_id", "product_id", value="strength")
    assert later == pytest.approx({("c1", "p1"): 2.0, ("c2", "p2"): 1.0, ("c2", "p1"): 0.1})  # after 01-03 only
    only_views = _as_dict(interactions(lines, events, end=date(2025, 3, 1), weights={"product_view": 1.0}),
                          "customer_id", "product_id", value="strength")
    assert only_views == pytest.approx({("c1", "p2"): 1.0, ("c2", "p1"): 1.0})
    with pytest.raises(ValueError, match="every interaction weight is 0"):
        interactions(lines, None, end=date(2025, 3, 1), weights={"product_view": 1.0})


def test_the_holdout_counts_only_products_new_to_the_customer(spark: SparkSession) -> None:
    lines = _lines(spark, [
        ("o1", "c1", "2025-01-05", "p1"),
        ("o2", "c1", "2025-02-10", "p1"),  # bought before the cut: not a hit to find
        ("o2", "c1", "2025-02-10", "p2"),
        ("o3", "c2", "2025-02-20", "p3"),
        ("o4", "c2", "2025-03-05", "p4"),  # after the window
    ])

    got = sorted(tuple(r) for r in relevant_items(lines, after=date(2025, 2, 1), end=date(2025, 3, 1)).collect())

    assert got == [("c1", "p2"), ("c2", "p3")]


# -- lists -----------------------------------------------------------------------------------------
def test_ranked_fills_each_list_from_the_next_tier_never_a_seen_product(spark: SparkSession) -> None:
    first = spark.createDataFrame([("c1", "p1", 0.9), ("c1", "p2", 0.8), ("c1", "p3", 0.7)], CANDIDATES)
    fallback = spark.createDataFrame(
        [(c, p, s) for c in ("c1", "c2") for p, s in (("p2", 0.5), ("p4", 0.4), ("p5", 0.3), ("p6", 0.2))],
        CANDIDATES)
    seen = spark.createDataFrame([("c1", "p1"), ("c2", "p4")], "customer_id string, product_id string")

    got = {(r["customer_id"], r["rank"]): (r["product_id"], r["source"])
           for r in ranked([("als", first), ("popular", fallback)], seen, n=3).collect()}

    assert got == {
        ("c1", 1): ("p2", "als"), ("c1", 2): ("p3", "als"), ("c1", 3): ("p4", "popular"),
        ("c2", 1): ("p2", "popular"), ("c2", 2): ("p5", "popular"), ("c2", 3): ("p6", "popular"),
    }


def test_ranking_metrics_equal_spark_ranking_evaluator(spark: SparkSession) -> None:
    relevant = spark.createDataFrame(
        [("c1", "p1"), ("c1", "p3"), ("c2", "p2"), ("c3", "p9"), ("c4", "p1"), ("c4", "p2"), ("c4", "p3"),
         ("c4", "p4")], "customer_id string, product_id string")
    lists = {
        "a": spark.createDataFrame(
            [("c1", "p3", 1), ("c1", "p2", 2), ("c1", "p1", 3), ("c2", "p5", 1), ("c2", "p2", 2),
             ("c4", "p4", 1), ("c4", "p8", 2)],  # c3 has no list: it scores 0
            "customer_id string, product_id string, rank int"),
        "b": spark.createDataFrame([(c, p, r) for c in ("c1", "c2", "c3", "c4") for p, r in (("p1", 1), ("p2", 2))],
                                   "customer_id string, product_id string, rank int"),
    }
    k = 2

    got = ranking_metrics(lists, relevant, k=k)

    # By hand for list a at k=2: c1 [p3 hit, p2 miss]; c2 [p5 miss, p2 hit]; c3 none; c4 [p4 hit, p8 miss].
    assert got["a"]["precision_at_k"] == pytest.approx((1 / 2 + 1 / 2 + 0 + 1 / 2) / 4)
    assert got["a"]["recall_at_k"] == pytest.approx((1 / 2 + 1 / 1 + 0 + 1 / 4) / 4)
    assert got["a"]["customers_evaluated"] == 4
    item = F.xxhash64("product_id").cast("double")
    truth = relevant.groupBy("customer_id").agg(F.collect_set(item).alias("label"))
    for name, recs in lists.items():
        predicted = recs.groupBy("customer_id").agg(
            F.sort_array(F.collect_list(F.struct("rank", item.alias("i")))).alias("r")
        ).select("customer_id", F.col("r.i").alias("prediction"))
        frame = truth.join(predicted, "customer_id", "left").select(
            F.coalesce("prediction", F.array().cast("array<double>")).alias("prediction"), "label")
        for ours, theirs in RANKING_METRICS.items():
            expected = RankingEvaluator(metricName=theirs, k=k).evaluate(frame)
            assert got[name][ours] == pytest.approx(expected, abs=1e-12), (name, ours)


def test_als_blocks_follow_the_data_size() -> None:
    assert als_blocks(54_000, 2) == 1
    assert als_blocks(350_000, 2) == 4
    assert als_blocks(25_000_000, 8) == 16


def test_recommend_settings_grid_and_weights() -> None:
    cfg = RecommendSettings(rank=[8, 16], reg_param=[0.1], alpha=[1.0, 10.0])
    assert cfg.grid() == [{"rank": 8, "reg_param": 0.1, "alpha": 1.0}, {"rank": 8, "reg_param": 0.1, "alpha": 10.0},
                          {"rank": 16, "reg_param": 0.1, "alpha": 1.0}, {"rank": 16, "reg_param": 0.1, "alpha": 10.0}]
    with pytest.raises(ValueError, match="at least one above 0"):
        RecommendSettings(weights={"purchase": 0.0})
    with pytest.raises(ValueError, match="alpha > 0"):
        RecommendSettings(alpha=[0.0])


# -- the stage on the shared end-to-end run ---------------------------------------------------------
@pytest.fixture(scope="module")
def recommended(e2e) -> tuple[DataFrame, RecommendOutcome, dict[str, float]]:  # noqa: ANN001 - conftest's EndToEnd
    result = e2e.results["recommend"]
    assert result.skipped is None, result.skipped
    return e2e.lake.read("gold.recommendations"), result.outcome, dict(result.metrics)


@pytest.mark.slow
def test_every_customer_gets_top_n_products(e2e, recommended) -> None:  # noqa: ANN001
    recs, _, metrics = recommended
    top_n = e2e.settings.recommend.top_n
    customers = e2e.lake.read("silver.customers").select("customer_id").distinct().count()

    per_customer = recs.groupBy("customer_id").agg(F.count(F.lit(1)).alias("n"), F.max("rank").alias("last"),
                                                   F.countDistinct("product_id").alias("products"))

    assert per_customer.count() >= customers
    assert per_customer.where(f"n != {top_n} OR last != {top_n} OR products != {top_n}").count() == 0
    assert metrics["customers"] == per_customer.count()
    assert recs.where("product_name IS NULL OR category IS NULL").count() == 0


@pytest.mark.slow
def test_no_recommended_product_was_bought_before(spark: SparkSession, e2e, recommended) -> None:  # noqa: ANN001
    recs, _, _ = recommended
    as_of = recs.select(F.max("as_of_date")).first()[0]
    lake = e2e.lake
    bought = purchase_lines(lake.read("silver.orders"), lake.read("silver.order_items"), as_of=as_of).select(
        "customer_id", F.col("item_id").alias("product_id"))

    assert recs.join(bought, ["customer_id", "product_id"]).count() == 0


@pytest.mark.slow
def test_als_beats_popularity_on_the_holdout(recommended) -> None:  # noqa: ANN001
    _, outcome, metrics = recommended
    assert metrics["holdout_customers"] >= 200
    for metric in ("ndcg_at_k", "precision_at_k", "recall_at_k", "map_at_k"):
        assert metrics[metric] > metrics[f"baseline.popularity.{metric}"], metric
    assert outcome.holdout["cooccurrence"]["ndcg_at_k"] > 0


@pytest.mark.slow
def test_sources_follow_the_interactions(spark: SparkSession, e2e, recommended) -> None:  # noqa: ANN001
    recs, outcome, _ = recommended
    as_of = recs.select(F.max("as_of_date")).first()[0]
    lake = e2e.lake
    active = (
        purchase_lines(lake.read("silver.orders"), lake.read("silver.order_items"), as_of=as_of).select("customer_id")
        .union(lake.read("silver.web_events").where(
            F.col("event_type").isin("product_view", "add_to_cart") & F.col("product_id").isNotNull()
            & (F.to_date("event_ts") <= F.lit(as_of))).select("customer_id"))
        .distinct()
    )
    first = recs.where("rank = 1")

    # Customers without any interaction get popular products; the others never start with them.
    assert first.where("source = 'popular'").join(active, "customer_id").count() == 0
    assert first.where("source != 'popular'").join(active, "customer_id", "left_anti").count() == 0
    assert outcome.customers_by_source["als"] > 0.8 * sum(outcome.customers_by_source.values())


@pytest.mark.slow
def test_the_mlflow_run_holds_metrics_and_the_figure(e2e) -> None:  # noqa: ANN001
    import mlflow

    from crm_spark.tracking import tracking_uri

    result = e2e.results["recommend"]
    client = mlflow.MlflowClient(tracking_uri(e2e.settings))
    run = client.get_run(result.mlflow_run_id)

    assert run.data.metrics["ndcg_at_k"] == pytest.approx(result.metrics["ndcg_at_k"])
    assert "baseline.popularity.ndcg_at_k" in run.data.metrics
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    figures = {a.path for a in client.list_artifacts(run.info.run_id, "figures")}
    assert "recommendations_sample.csv" in artifacts
    assert "figures/recommend_holdout_metrics.png" in figures


@pytest.mark.slow
def test_orders_only_data_gets_recommendations(spark: SparkSession, tmp_path, e2e) -> None:  # noqa: ANN001
    """Bring-your-own data with orders and no web events (nor products): purchases alone feed ALS."""
    from crm_spark.lake import open_lake
    from crm_spark.stages import StageContext, run_stage

    settings = e2e.settings.model_copy(update={"paths": e2e.settings.paths.model_copy(update={"lake": str(tmp_path)})})
    lake = open_lake(spark, settings)
    for name in ("silver.orders", "silver.order_items"):
        lake.overwrite(name, e2e.lake.read(name))
    ctx = StageContext(settings=settings, spark=spark, lake=lake)

    result = run_stage(ctx, "recommend")

    assert result.skipped is None, result.skipped
    assert any("ALS learns from purchases alone" in n for n in result.notes)
    recs = lake.read("gold.recommendations")
    assert recs.count() > 0 and recs.where("source = 'popular_in_category'").count() == 0  # no categories known
    assert result.metrics["ndcg_at_k"] > result.metrics["baseline.popularity.ndcg_at_k"]
