"""Product recommendations: implicit-feedback interactions, MLlib ALS, baselines and ranking metrics.

Interactions are what a customer did with a product up to a date: each completed purchase of it
(one per order), each add-to-cart and each product view, weighted (``weights``) and summed into
one ``strength`` per (customer, product), the confidence of implicit-feedback ALS (Hu, Koren and
Volinsky 2008). Each candidate source gives ``(customer_id, product_id, score)`` rows, a bounded
number per customer (:func:`list_depth`):

* :func:`als_candidates`: MLlib ALS (``implicitPrefs``) preference scores;
* :func:`popular_candidates`: the products most customers bought (the popularity baseline);
* :func:`category_candidates`: the most bought products of the categories a customer interacted
  with, weighted by how much (the fallback for customers with little history);
* :func:`cooccurrence_candidates`: products bought in the same orders as the customer's
  purchases, scored by the sum of P(product | purchased product) (what basket rules give).

:func:`ranked` turns tiers of candidates into each customer's top-n list, never a product the
customer already bought (a customer ALS cannot score gets the next tier's products), and
:func:`ranking_metrics` evaluates lists against what customers bought next (Spark's
``RankingMetrics`` definitions, in one aggregate).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import date

from pyspark.ml.feature import StringIndexer
from pyspark.ml.recommendation import ALS, ALSModel
from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

CUSTOMER, PRODUCT, STRENGTH, SCORE, RANK = "customer_id", "product_id", "strength", "score", "rank"
USER, ITEM = "user_ix", "item_ix"
# Interaction kinds and the silver.web_events event type each is read from (purchases come from orders).
EVENT_KINDS: Mapping[str, str] = {"add_to_cart": "add_to_cart", "product_view": "product_view"}
INTERACTION_KINDS = ("purchase", *EVENT_KINDS)
# Our metric names and the names of Spark's RankingEvaluator for the same definitions.
RANKING_METRICS: Mapping[str, str] = {
    "precision_at_k": "precisionAtK", "recall_at_k": "recallAtK",
    "map_at_k": "meanAveragePrecisionAtK", "ndcg_at_k": "ndcgAtK",
}


def product_events(web_events: DataFrame, *, as_of: date) -> DataFrame:
    """``customer_id, product_id, event_date, kind``: known customers' product events on or before ``as_of``."""
    return (
        web_events.where(
            F.col(CUSTOMER).isNotNull() & F.col(PRODUCT).isNotNull()
            & F.col("event_type").isin(*EVENT_KINDS.values()) & (F.to_date("event_ts") <= F.lit(as_of))
        )
        .select(CUSTOMER, PRODUCT, F.to_date("event_ts").alias("event_date"),
                F.col("event_type").alias("kind"))
    )


def interactions(
    lines: DataFrame, events: DataFrame | None, *, end: date, weights: Mapping[str, float], start: date | None = None
) -> DataFrame:
    """``customer_id, product_id, strength`` from purchases (``lines``: ``basket_id, customer_id,
    order_date, item_id``, one row per product per completed order) and product ``events``
    (:func:`product_events`) dated in ``(start, end]``; kinds weighted 0 are left out."""

    def window(col: str) -> F.Column:
        cond = F.col(col) <= F.lit(end)
        return cond & (F.col(col) > F.lit(start)) if start is not None else cond

    parts = []
    if weights.get("purchase", 0.0) > 0:
        parts.append(lines.where(window("order_date")).select(
            CUSTOMER, F.col("item_id").alias(PRODUCT), F.lit(float(weights["purchase"])).alias("w")))
    if events is not None:
        kinds = {k: float(weights.get(k, 0.0)) for k in EVENT_KINDS if weights.get(k, 0.0) > 0}
        if kinds:
            weight = F.coalesce(*[F.when(F.col("kind") == EVENT_KINDS[k], F.lit(w)) for k, w in kinds.items()])
            parts.append(events.where(window("event_date") & F.col("kind").isin(*[EVENT_KINDS[k] for k in kinds]))
                         .select(CUSTOMER, PRODUCT, weight.alias("w")))
    if not parts:
        raise ValueError("every interaction weight is 0: give purchases, add-to-carts or product views a weight")
    union = parts[0]
    for part in parts[1:]:
        union = union.unionByName(part)
    return union.groupBy(CUSTOMER, PRODUCT).agg(F.sum("w").alias(STRENGTH))


def bought(lines: DataFrame, *, end: date) -> DataFrame:
    """``customer_id, product_id``: every product each customer bought on or before ``end``."""
    return lines.where(F.col("order_date") <= F.lit(end)).select(CUSTOMER, F.col("item_id").alias(PRODUCT)).distinct()


def relevant_items(lines: DataFrame, *, after: date, end: date) -> DataFrame:
    """``customer_id, product_id``: what each customer bought in ``(after, end]`` and not on or before ``after``
    (recommendations never repeat a purchase, so only new products count as hits)."""
    later = lines.where((F.col("order_date") > F.lit(after)) & (F.col("order_date") <= F.lit(end)))
    return (later.select(CUSTOMER, F.col("item_id").alias(PRODUCT)).distinct()
            .join(bought(lines, end=after), [CUSTOMER, PRODUCT], "left_anti"))


# -- ALS -------------------------------------------------------------------------------------------
def indexed(strengths: DataFrame) -> DataFrame:
    """``strengths`` with the integer ids ALS needs: customers and products indexed alphabetically."""
    model = StringIndexer(inputCols=[CUSTOMER, PRODUCT], outputCols=[USER, ITEM], stringOrderType="alphabetAsc").fit(
        strengths)
    return model.transform(strengths).withColumns({USER: F.col(USER).cast("int"), ITEM: F.col(ITEM).cast("int")})


def als_blocks(rows: int, parallelism: int) -> int:
    """User and item blocks for ALS: one per 100,000 interactions, at most twice the parallelism.
    (ALS's default of 10 makes every iteration 10 x 10 tiny tasks: the demo's 54k interactions fitted
    in 7.0 s with 10 blocks, 2.1 s with 1.)"""
    return max(1, min(math.ceil(rows / 100_000), 2 * max(1, parallelism)))


def fit_als(
    ratings: DataFrame, *, rank: int, reg_param: float, alpha: float, max_iter: int, seed: int, blocks: int,
    checkpoint_interval: int = 10,
) -> ALSModel:
    """Implicit-feedback ALS on :func:`indexed` interactions (``user_ix, item_ix, strength``)."""
    als = ALS(
        userCol=USER, itemCol=ITEM, ratingCol=STRENGTH, implicitPrefs=True, rank=rank, regParam=reg_param,
        alpha=alpha, maxIter=max_iter, seed=seed, coldStartStrategy="drop", checkpointInterval=checkpoint_interval,
        numUserBlocks=blocks, numItemBlocks=blocks,
    )
    return als.fit(ratings)


# -- candidates: (customer_id, product_id, score) rows, a bounded number per customer ------------------
# Each reaches ``depth`` = n + the most products one of the customers bought, so that after the
# bought products are taken out (:func:`ranked`) n remain wherever the catalogue has them.
def als_candidates(model: ALSModel, ratings: DataFrame, customers: DataFrame, *, depth: int) -> DataFrame:
    """The ``depth`` best ALS scores of each customer of ``customers`` the model knows (those in ``ratings``)."""
    users = ratings.select(CUSTOMER, USER).distinct().join(customers.select(CUSTOMER), CUSTOMER)
    items = ratings.select(PRODUCT, ITEM).distinct()
    recs = model.recommendForUserSubset(users.select(USER), depth)
    return (
        recs.select(USER, F.explode("recommendations").alias("rec"))
        .select(USER, F.col("rec." + ITEM).alias(ITEM), F.col("rec.rating").cast("double").alias(SCORE))
        .join(users, USER).join(F.broadcast(items), ITEM)
        .select(CUSTOMER, PRODUCT, SCORE)
    )


def popularity(lines: DataFrame, *, end: date) -> DataFrame:
    """``product_id, score``: the share of buying customers (up to ``end``) who bought each product."""
    past = lines.where(F.col("order_date") <= F.lit(end))
    counts = past.groupBy(F.col("item_id").alias(PRODUCT)).agg(F.countDistinct(CUSTOMER).alias("buyers"))
    buyers = past.agg(F.countDistinct(CUSTOMER).alias("all"))
    return counts.crossJoin(F.broadcast(buyers)).select(PRODUCT, (F.col("buyers") / F.col("all")).alias(SCORE))


def popular_candidates(customers: DataFrame, popular: DataFrame, *, depth: int) -> DataFrame:
    """The ``depth`` most popular products, for every customer."""
    shortlist = popular.orderBy(F.desc(SCORE), PRODUCT).limit(depth)
    return customers.select(CUSTOMER).crossJoin(F.broadcast(shortlist))


def category_candidates(
    customers: DataFrame, strengths: DataFrame, popular: DataFrame, products: DataFrame, *, depth: int
) -> DataFrame:
    """Popular products of the categories each customer interacted with: score = the customer's share
    of interaction strength in the category x the product's popularity."""
    categories = products.where(F.col("category").isNotNull()).select(PRODUCT, "category")
    by_category = (
        strengths.join(customers.select(CUSTOMER), CUSTOMER).join(F.broadcast(categories), PRODUCT)
        .groupBy(CUSTOMER, "category").agg(F.sum(STRENGTH).alias("w"))
        .withColumn("w", F.col("w") / F.sum("w").over(Window.partitionBy(CUSTOMER)))
    )
    shortlist = (
        popular.join(categories, PRODUCT)
        .withColumn("r", F.row_number().over(Window.partitionBy("category").orderBy(F.desc(SCORE), PRODUCT)))
        .where(F.col("r") <= depth).drop("r")
    )
    return by_category.join(F.broadcast(shortlist), "category").select(CUSTOMER, PRODUCT, (F.col("w") * F.col(SCORE)).alias(SCORE))


def cooccurrence_candidates(lines: DataFrame, customers: DataFrame, *, end: date) -> DataFrame:
    """Products bought in the same orders as the customer's purchases up to ``end``: score = the sum,
    over the products p the customer bought, of P(product | p) among the orders up to ``end``."""
    past = lines.where(F.col("order_date") <= F.lit(end)).select("basket_id", "item_id")
    counts = past.groupBy("item_id").agg(F.count(F.lit(1)).alias("n_i"))
    pairs = (
        past.alias("a").join(past.alias("b"), "basket_id")
        .where(F.col("a.item_id") != F.col("b.item_id"))
        .groupBy(F.col("a.item_id").alias("item_id"), F.col("b.item_id").alias(PRODUCT))
        .agg(F.count(F.lit(1)).alias("n_ij"))
        .join(counts, "item_id")
        .select("item_id", PRODUCT, (F.col("n_ij") / F.col("n_i")).alias("p"))
    )
    history = (lines.where(F.col("order_date") <= F.lit(end)).join(customers.select(CUSTOMER), CUSTOMER)
               .select(CUSTOMER, "item_id").distinct())
    return history.join(pairs, "item_id").groupBy(CUSTOMER, PRODUCT).agg(F.sum("p").alias(SCORE))


def list_depth(seen: DataFrame, customers: DataFrame, n: int) -> int:
    """``n`` plus the most products one of ``customers`` has bought: how deep candidate lists must reach."""
    value = seen.join(customers.select(CUSTOMER), CUSTOMER).groupBy(CUSTOMER).count().agg(F.max("count")).first()[0]
    return n + int(value or 0)


# -- lists -----------------------------------------------------------------------------------------
def ranked(tiers: Sequence[tuple[str, DataFrame]], seen: DataFrame, *, n: int) -> DataFrame:
    """``customer_id, product_id, score, rank, source``: each customer's first tier's candidates,
    best score first, then the next tier's, ..., ``seen`` products left out, each product once (in
    its first tier), at most ``n`` (rank 1..n; ties by product id). ``tiers`` are (source, candidates)."""
    union = None
    for tier, (source, frame) in enumerate(tiers):
        part = frame.select(CUSTOMER, PRODUCT, SCORE, F.lit(tier).alias("_tier"), F.lit(source).alias("source"))
        union = part if union is None else union.unionByName(part)
    assert union is not None, "at least one tier"
    unseen = union.join(seen, [CUSTOMER, PRODUCT], "left_anti")
    # One row per (customer, product), from its first tier; then the rank within the customer.
    first = Window.partitionBy(CUSTOMER, PRODUCT).orderBy("_tier", F.desc(SCORE))
    order = Window.partitionBy(CUSTOMER).orderBy("_tier", F.desc(SCORE), PRODUCT)
    return (
        unseen.withColumn("_copy", F.row_number().over(first)).where(F.col("_copy") == 1)
        .withColumn(RANK, F.row_number().over(order)).where(F.col(RANK) <= n)
        .drop("_tier", "_copy")
    )


def ranking_metrics(lists: Mapping[str, DataFrame], relevant: DataFrame, *, k: int) -> dict[str, dict[str, float]]:
    """precision@k, recall@k, MAP@k and NDCG@k of each named list (``customer_id, product_id, rank``)
    over the customers with ``relevant`` products (a customer without a list scores 0), averaged
    over those customers, all lists in one Spark job.

    The definitions are those of Spark's ``RankingMetrics`` (binary relevance; MAP@k divides by
    min(k, relevant products); NDCG@k by the ideal DCG of min(k, relevant products) hits), which
    tests check this against; its ``RankingEvaluator`` takes about a second per metric and list
    (12 jobs here: 16 s on the demo data, where this takes one).
    """
    truth = relevant.groupBy(CUSTOMER).agg(F.collect_set(PRODUCT).alias("_label"))
    frame = truth
    for i, recs in enumerate(lists.values()):
        top = recs.where(F.col(RANK) <= k).groupBy(CUSTOMER).agg(
            F.sort_array(F.collect_list(F.struct(RANK, PRODUCT))).alias("_ranked"))
        frame = frame.join(top.select(CUSTOMER, F.col(f"_ranked.{PRODUCT}").alias(f"_p{i}")), CUSTOMER, "left")
    aggs = []
    for i in range(len(lists)):
        aggs += [F.avg(c).alias(f"{name}_{i}") for name, c in _list_metrics(F.col(f"_p{i}"), F.col("_label"), k).items()]
    row = frame.agg(F.count(F.lit(1)).alias("customers"), *aggs).first()
    return {
        name: {**{m: float(row[f"{m}_{i}"] or 0.0) for m in RANKING_METRICS}, "customers_evaluated": float(row["customers"])}
        for i, name in enumerate(lists)
    }


def _list_metrics(predicted: F.Column, label: F.Column, k: int) -> dict[str, F.Column]:
    """Per-customer precision@k, recall@k, AP@k and NDCG@k of a ranked product list (null: none) against a set."""
    top = F.coalesce(F.slice(predicted, 1, k), F.array().cast("array<string>"))
    hits = F.transform(top, lambda p: F.array_contains(label, p).cast("int"))
    found = F.aggregate(hits, F.lit(0), lambda acc, h: acc + h)
    relevant = F.size(label)
    # hits before and at position i (1-based) = the sum of the first i flags
    precision_at = F.transform(hits, lambda h, i: h * F.aggregate(F.slice(hits, 1, i + 1), F.lit(0), lambda a, x: a + x) / (i + 1))
    gain = F.transform(hits, lambda h, i: h / F.log2(i + F.lit(2.0)))
    ideal = F.aggregate(F.sequence(F.lit(0), F.least(relevant, F.lit(k)) - 1), F.lit(0.0),
                        lambda acc, i: acc + 1.0 / F.log2(i + F.lit(2.0)))
    return {
        "precision_at_k": found / F.lit(k),
        "recall_at_k": found / relevant,
        "map_at_k": F.aggregate(precision_at, F.lit(0.0), lambda acc, x: acc + x) / F.least(relevant, F.lit(k)),
        "ndcg_at_k": F.aggregate(gain, F.lit(0.0), lambda acc, x: acc + x) / ideal,
    }
