"""Stage ``recommend``: product recommendations with MLlib ALS on implicit feedback.

Reads ``silver.orders`` + ``silver.order_items`` (purchases), ``silver.web_events`` (add-to-carts
and product views; optional: bring-your-own data with only orders works), ``silver.products``
(categories and names; optional) and ``silver.customers`` (who gets recommendations; optional)
at pinned versions. Every customer gets ``recommend.top_n`` products they have not bought:

* ALS preference scores for customers with at least ``recommend.min_interactions`` products
  interacted with (``source = als``);
* popular products of the categories they touched for those with fewer
  (``popular_in_category``);
* popular products for customers without interactions (``popular``);

each list filled up from the next when it falls short. The same policy, trained on the data up
to T = as_of - ``recommend.holdout_days``, is evaluated on what customers bought in (T, as_of]
(products new to them) by precision@k, recall@k, MAP@k and NDCG@k against the popularity and
item co-occurrence baselines. With several ALS hyper-parameter combinations, each is tried one
holdout window earlier and the best NDCG@k wins. The recommendations written come from a model
trained on everything up to the as-of date; ``gold.recommendations`` is gated and its partition
overwritten, and one MLflow run logs parameters, metrics, a sample and the metrics figure.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from crm_spark.config import RecommendSettings
from crm_spark.errors import ConfigError
from crm_spark.contracts import table
from crm_spark.contracts.gold import RECOMMENDATION_SOURCES
from crm_spark.ml.basket import purchase_lines
from crm_spark.ml.recommend import (
    BOUGHT,
    CUSTOMER,
    EVENT_KINDS,
    PRODUCT,
    RANKING_METRICS,
    STRENGTH,
    als_blocks,
    als_candidates,
    bought,
    category_candidates,
    cooccurrence_candidates,
    fit_als,
    indexed,
    interactions,
    popular_candidates,
    popularity,
    product_events,
    ranked,
    ranking_metrics,
    relevant_items,
    until,
    with_bought,
)
from crm_spark.stages import StageContext, StageResult

log = logging.getLogger(__name__)

STAGE = "recommend"
ORDERS, ORDER_ITEMS, WEB_EVENTS = "silver.orders", "silver.order_items", "silver.web_events"
PRODUCTS, CUSTOMERS = "silver.products", "silver.customers"
RECOMMENDATIONS = "gold.recommendations"
PARTITION = "as_of_date"
ALS_EXTRA = 200  # ALS ranks n + min(most products one customer bought, this) per customer; the next tier fills the rest
COOCCURRENCE_NEIGHBOURS = 50  # partners per bought product the co-occurrence baseline sums over
_SAMPLE_CUSTOMERS = 20  # customers whose lists are logged to MLflow as a sample


@dataclass(frozen=True)
class RecommendOutcome:
    params: dict[str, float]  # the ALS hyper-parameters used
    holdout: dict[str, dict[str, float]]  # "als" / "popularity" / "cooccurrence" -> metrics (empty: not evaluated)
    customers_by_source: dict[str, int]
    grid: tuple[tuple[dict[str, float], float], ...] = ()  # (params, validation NDCG@k) when a grid was searched


@dataclass(frozen=True)
class _Data:
    """The stage's inputs, read once and cached: purchase lines, product events, products, customers."""

    lines: DataFrame  # basket_id, customer_id, order_date, item_id (completed orders on or before as_of)
    events: DataFrame | None  # customer_id, product_id, event_date, kind
    products: DataFrame | None  # product_id, product_name, category
    customers: DataFrame  # customer_id: everyone who gets recommendations
    parallelism: int  # the session's default parallelism (sizes ALS's blocks)


def run(ctx: StageContext, as_of: date) -> StageResult:
    cfg = ctx.settings.recommend
    data = _read(ctx, as_of, cfg)
    cached = [data.lines, data.customers, *([data.events] if data.events is not None else [])]
    checkpoints = _checkpoint_dir(ctx, cfg)
    try:
        if data.events is None and cfg.weights.get("purchase", 0.0) <= 0:
            raise ConfigError("recommend.weights.purchase is 0 and there are no product views or add-to-carts "
                              "(silver.web_events absent or weighted 0): give purchases a weight")
        if data.lines.isEmpty():
            return StageResult(STAGE, skipped=f"no purchases (completed orders of value above 0) on or before {as_of}")
        notes: list[str] = []
        if data.events is None:
            notes.append("no product views or add-to-carts (silver.web_events absent or weighted 0): ALS learns "
                         "from purchases alone")
        params, grid, grid_note = _choose_params(data, cfg, as_of=as_of, cached=cached)
        notes += [grid_note] if grid_note else []
        holdout, why_not = _evaluate(data, cfg, params, as_of=as_of, cached=cached)
        if why_not:
            notes.append(f"{why_not}: the holdout metrics are not computed")
        started = time.perf_counter()
        recs = _recommend(data, cfg, params, end=as_of, customers=data.customers, n=cfg.top_n, cached=cached).lists
        named = _named(recs, data.products).withColumn(PARTITION, F.lit(as_of).cast("date"))
        named = table(RECOMMENDATIONS).conform(named).cache()
        cached.append(named)
        by_source = _customers_by_source(named)  # computes the lists into the cache, before the gate reads them
        ctx.publish(RECOMMENDATIONS, named, partition={PARTITION: as_of})
        log.info("[recommend] %s customers: %s (%.1fs)", f"{sum(by_source.values()):,}",
                 ", ".join(f"{n:,} {s}" for s, n in by_source.items()), time.perf_counter() - started)
        metrics = _metrics(holdout, by_source, named, data)
        run_id = _log_run(ctx, as_of=as_of, cfg=cfg, params=params, grid=grid, metrics=metrics, holdout=holdout,
                          named=named)
    finally:
        for df in cached:
            df.unpersist()
        _remove(ctx.spark, checkpoints)
    return StageResult(STAGE, notes=tuple(notes), metrics=metrics, mlflow_run_id=run_id,
                       outcome=RecommendOutcome(params, holdout, by_source, tuple(grid)))


def _read(ctx: StageContext, as_of: date, cfg: RecommendSettings) -> _Data:
    orders, items = ctx.read(ORDERS), ctx.read(ORDER_ITEMS)
    lines = purchase_lines(orders, items, as_of=as_of,
                           count_zero_value_orders=ctx.settings.features.count_zero_value_orders).cache()
    events = None
    if ctx.exists(WEB_EVENTS) and any(cfg.weights.get(k, 0.0) > 0 for k in EVENT_KINDS):
        events = product_events(ctx.read(WEB_EVENTS), as_of=as_of).cache()
    products = ctx.read(PRODUCTS).select(PRODUCT, "product_name", "category") if ctx.exists(PRODUCTS) else None
    known = lines.select(CUSTOMER)
    if events is not None:
        known = known.unionByName(events.select(CUSTOMER))
    if ctx.exists(CUSTOMERS):  # customers signed up by the date, with or without interactions
        signed = ctx.read(CUSTOMERS).where(F.col("signup_date").isNull() | (F.col("signup_date") <= F.lit(as_of)))
        known = known.unionByName(signed.select(CUSTOMER))
    return _Data(lines, events, products, known.where(F.col(CUSTOMER).isNotNull()).distinct().cache(),
                 ctx.spark.sparkContext.defaultParallelism)


@dataclass(frozen=True)
class _Policy:
    """The policy's lists and what they were built from (cached), for the baselines to share."""

    lists: DataFrame  # customer_id, product_id, score, rank, source
    seen: DataFrame  # customer_id, product_id: bought on or before the end date
    popular: DataFrame  # product_id, score
    customers: DataFrame  # customer_id, bought
    most_bought: int


def _recommend(
    data: _Data, cfg: RecommendSettings, params: Mapping[str, float], *, end: date, customers: DataFrame, n: int,
    cached: list[DataFrame],
) -> _Policy:
    """The policy, from the data up to ``end``: ALS for customers with enough interactions, popular
    products of their categories for those with fewer, popular products for the rest, each list
    filled up from the next."""
    strengths = interactions(data.lines, data.events, end=end, weights=cfg.weights)
    ratings = indexed(strengths).cache()
    seen = bought(data.lines, end=end).cache()
    popular = popularity(data.lines, end=end).cache()
    who = with_bought(customers, seen).cache()
    cached.extend([ratings, seen, popular, who])
    model = fit_als(ratings, rank=int(params["rank"]), reg_param=params["reg_param"], alpha=params["alpha"],
                    max_iter=cfg.max_iter, seed=cfg.seed, blocks=als_blocks(ratings.count(), data.parallelism))
    most_bought = int(who.agg(F.max(BOUGHT)).first()[0] or 0)
    touched = ratings.groupBy(CUSTOMER).agg(F.count(F.lit(1)).alias("products")).join(who, CUSTOMER)
    enough = touched.where(F.col("products") >= cfg.min_interactions)
    tiers = [("als", als_candidates(model, ratings, enough, depth=n + min(most_bought, ALS_EXTRA)))]
    if data.products is not None:
        tiers.append(("popular_in_category", category_candidates(
            touched.select(CUSTOMER, BOUGHT), ratings.select(CUSTOMER, PRODUCT, STRENGTH), popular, data.products,
            n=n, most_bought=most_bought)))
    tiers.append(("popular", popular_candidates(who, popular, n=n, most_bought=most_bought)))
    return _Policy(ranked(tiers, seen, n=n), seen, popular, who, most_bought)


def _holdout(data: _Data, *, cutoff: date, end: date, cached: list[DataFrame]) -> tuple[DataFrame | None, str | None]:
    """The products customers bought new to them in (cutoff, end] (cached), or why there is nothing to measure."""
    if until(data.lines, cutoff).isEmpty():
        return None, f"no purchases on or before {cutoff} to train on"
    relevant = relevant_items(data.lines, after=cutoff, end=end).cache()
    cached.append(relevant)
    if relevant.isEmpty():
        return None, f"no customer bought a product new to them in ({cutoff}, {end}]"
    return relevant, None


def _choose_params(
    data: _Data, cfg: RecommendSettings, *, as_of: date, cached: list[DataFrame]
) -> tuple[dict[str, float], list[tuple[dict[str, float], float]], str | None]:
    """The configured ALS parameters; with several combinations, the best NDCG@k one holdout window
    earlier (and a note when that window has nothing to measure: the first combination is used)."""
    grid = cfg.grid()
    if len(grid) == 1:
        return grid[0], [], None
    end = as_of - timedelta(days=cfg.holdout_days)
    cutoff = end - timedelta(days=cfg.holdout_days)
    relevant, why_not = _holdout(data, cutoff=cutoff, end=end, cached=cached)
    if relevant is None:
        return grid[0], [], f"recommend grid not searched ({why_not}): the first combination {grid[0]} is used"
    scored: list[tuple[dict[str, float], float]] = []
    evaluated = relevant.select(CUSTOMER).distinct()
    for params in grid:
        recs = _recommend(data, cfg, params, end=cutoff, customers=evaluated, n=cfg.k, cached=cached).lists
        ndcg = ranking_metrics({"als": recs}, relevant, k=cfg.k)["als"]["ndcg_at_k"]
        log.info("[recommend] validation %s..%s: rank %d, reg_param %g, alpha %g: NDCG@%d %.4f", cutoff, end,
                 params["rank"], params["reg_param"], params["alpha"], cfg.k, ndcg)
        scored.append((params, ndcg))
    best = max(scored, key=lambda s: s[1])[0]
    return best, scored, None


def _evaluate(
    data: _Data, cfg: RecommendSettings, params: Mapping[str, float], *, as_of: date, cached: list[DataFrame],
) -> tuple[dict[str, dict[str, float]], str | None]:
    """Metrics of the policy and the baselines on purchases in (as_of - holdout_days, as_of], or why none."""
    cutoff = as_of - timedelta(days=cfg.holdout_days)
    relevant, why_not = _holdout(data, cutoff=cutoff, end=as_of, cached=cached)
    if relevant is None:
        return {}, why_not
    evaluated = relevant.select(CUSTOMER).distinct().cache()
    cached.append(evaluated)
    k = cfg.k
    policy = _recommend(data, cfg, params, end=cutoff, customers=evaluated, n=k, cached=cached)
    most_popular = popular_candidates(policy.customers, policy.popular, n=k, most_bought=policy.most_bought)
    together = cooccurrence_candidates(data.lines, evaluated, end=cutoff, neighbours=COOCCURRENCE_NEIGHBOURS)
    lists = {
        "als": policy.lists,
        "popularity": ranked([("popular", most_popular)], policy.seen, n=k),
        "cooccurrence": ranked([("cooccurrence", together), ("popular", most_popular)], policy.seen, n=k),
    }
    out = ranking_metrics(lists, relevant, k=k)
    log.info("[recommend] holdout %s..%s, %s customers: NDCG@%d ALS %.4f, popularity %.4f, co-occurrence %.4f",
             cutoff, as_of, f"{int(out['als']['customers_evaluated']):,}", k, out["als"]["ndcg_at_k"],
             out["popularity"]["ndcg_at_k"], out["cooccurrence"]["ndcg_at_k"])
    return out, None


def _named(recs: DataFrame, products: DataFrame | None) -> DataFrame:
    if products is None:
        return recs.withColumns({"product_name": F.lit(None).cast("string"), "category": F.lit(None).cast("string")})
    return recs.join(F.broadcast(products), PRODUCT, "left")


def _customers_by_source(named: DataFrame) -> dict[str, int]:
    """Customers whose list starts with each source (one job)."""
    row = named.where(F.col("rank") == 1).agg(
        *[F.sum(F.when(F.col("source") == s, 1).otherwise(0)).alias(s) for s in RECOMMENDATION_SOURCES]).first()
    return {s: int(row[s] or 0) for s in RECOMMENDATION_SOURCES}


def _metrics(holdout: Mapping[str, Mapping[str, float]], by_source: Mapping[str, int], named: DataFrame,
             data: _Data) -> dict[str, float]:
    metrics: dict[str, float] = {f"customers_{s}": float(n) for s, n in by_source.items()}
    metrics["customers"] = float(sum(by_source.values()))
    row = named.agg(F.countDistinct(PRODUCT).alias("recommended")).first()
    if data.products is not None:
        catalogue = data.products.count()
    else:  # the products anyone bought or looked at
        known = data.lines.select(F.col("item_id").alias(PRODUCT))
        catalogue = (known.union(data.events.select(PRODUCT)) if data.events is not None else known).distinct().count()
    metrics["catalogue_coverage"] = float(row["recommended"]) / catalogue if catalogue else 0.0
    for name, values in holdout.items():
        prefix = "" if name == "als" else f"baseline.{name}."
        metrics.update({f"{prefix}{m}": v for m, v in values.items() if m in RANKING_METRICS})
    if holdout:
        metrics["holdout_customers"] = holdout["als"]["customers_evaluated"]
    return metrics


def _checkpoint_dir(ctx: StageContext, cfg: RecommendSettings) -> str:
    """Point the application's checkpoints at ``recommend.checkpoint_dir`` (default
    ``<lake>/_checkpoints``) so ALS can cut its lineage; Spark makes a new subfolder for each call,
    which is returned, to be removed when the stage ends."""
    sc = ctx.spark.sparkContext
    sc.setCheckpointDir(cfg.checkpoint_dir or f"{ctx.lake.root}/_checkpoints")
    return str(sc.getCheckpointDir())


def _remove(spark: SparkSession, path: str) -> None:
    """Delete the checkpoint files this stage wrote (Spark keeps them for the application's lifetime)."""
    jvm = spark.sparkContext._jvm  # noqa: SLF001 - py4j is the only way to reach the Hadoop file system
    target = jvm.org.apache.hadoop.fs.Path(path)
    target.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration()).delete(target, True)  # noqa: SLF001


def _log_run(
    ctx: StageContext, *, as_of: date, cfg: RecommendSettings, params: Mapping[str, float],
    grid: list[tuple[dict[str, float], float]], metrics: Mapping[str, float],
    holdout: Mapping[str, Mapping[str, float]], named: DataFrame,
) -> str:
    """One MLflow run: settings, chosen parameters, holdout metrics vs baselines, a sample, the figure."""
    sample_ids = named.select(CUSTOMER).distinct().orderBy(CUSTOMER).limit(_SAMPLE_CUSTOMERS)
    sample = named.join(sample_ids, CUSTOMER).orderBy(CUSTOMER, "rank").drop(PARTITION).toPandas()
    tracker = ctx.tracker
    with tracker.start_run(STAGE, as_of=as_of, inputs=ctx.input_versions(),
                           params={**cfg.model_dump(mode="json"), **{f"als.{k}": v for k, v in params.items()}},
                           quality=ctx.quality_summary()) as run:
        tracker.log_metrics({**metrics, **ctx.written_rows()})
        for step, (combo, ndcg) in enumerate(grid):
            tracker.log_metrics({"validation_ndcg_at_k": ndcg, **{f"grid.{k}": float(v) for k, v in combo.items()}},
                                step=step)
        tracker.log_text(sample.to_csv(index=False), "recommendations_sample.csv")
        if holdout:
            tracker.log_figure(metrics_figure(holdout, k=cfg.k, holdout_days=cfg.holdout_days),
                               "recommend_holdout_metrics.png")
        return str(run.info.run_id)


def metrics_figure(holdout: Mapping[str, Mapping[str, float]], *, k: int, holdout_days: int) -> Any:
    """Grouped bars: each ranking metric for ALS and the two baselines."""
    from matplotlib.figure import Figure

    labels = {"als": "ALS (crm-spark)", "popularity": "popularity baseline", "cooccurrence": "co-occurrence baseline"}
    names = {"precision_at_k": f"precision@{k}", "recall_at_k": f"recall@{k}", "map_at_k": f"MAP@{k}",
             "ndcg_at_k": f"NDCG@{k}"}
    fig = Figure(figsize=(7.5, 4.5))
    ax = fig.subplots()
    width = 0.8 / len(holdout)
    for i, (method, values) in enumerate(holdout.items()):
        xs = [j + (i - (len(holdout) - 1) / 2) * width for j in range(len(names))]
        bars = ax.bar(xs, [values[m] for m in names], width, label=labels.get(method, method))
        ax.bar_label(bars, fmt="%.3f", fontsize=7, padding=2)
    ax.set_xticks(range(len(names)), list(names.values()))
    ax.set_ylabel("score (0-1, higher is better)")
    customers = int(next(iter(holdout.values()))["customers_evaluated"])
    ax.set_title(f"Recommendations vs baselines on the last {holdout_days} days' purchases ({customers:,} customers)",
                 fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(True, axis="y", alpha=0.3)
    fig.tight_layout()
    return fig
