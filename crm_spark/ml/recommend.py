"""Product recommendations: implicit-feedback interactions, MLlib ALS, baselines and ranking metrics.

Interactions are what a customer did with a product up to a date: each completed purchase of it
(one per order), each add-to-cart and each product view, weighted (``weights``) and summed into
one ``strength`` per (customer, product), the confidence of implicit-feedback ALS (Hu, Koren and
Volinsky 2008). Each candidate source gives ``(customer_id, product_id, score)`` rows, a bounded
number per customer: enough that ``n`` remain once the products the customer bought are taken out
(``customers`` frames carry each customer's ``bought`` count for that):

* :func:`als_candidates`: MLlib ALS (``implicitPrefs``) preference scores;
* :func:`popular_candidates`: the products most customers bought (the popularity baseline);
* :func:`category_candidates`: the most bought products of the categories a customer interacted
  with, weighted by how much (the list of customers with little history, and the top-up of
  ALS lists that fall short);
* :func:`cooccurrence_candidates`: products bought in the same orders as the customer's
  purchases, scored by the sum of P(product | purchased product) over each purchased product's
  ``neighbours`` likeliest partners (what basket rules give).

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
from pyspark.sql.types import IntegerType, StructField, StructType

CUSTOMER, PRODUCT, STRENGTH, SCORE, RANK = "customer_id", "product_id", "strength", "score", "rank"
USER, ITEM = "user_ix", "item_ix"
# Interaction kinds and the silver.web_events event type each is read from (purchases come from orders).
EVENT_KINDS: Mapping[str, str] = {"add_to_cart": "add_to_cart", "product_view": "product_view"}
BOUGHT = "bought"  # a customers frame's column: how many distinct products the customer bought
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


def until(lines: DataFrame, end: date) -> DataFrame:
    """The purchase ``lines`` dated on or before ``end``."""
    return lines.where(F.col("order_date") <= F.lit(end))


def bought(lines: DataFrame, *, end: date) -> DataFrame:
    """``customer_id, product_id``: every product each customer bought on or before ``end``."""
    return until(lines, end).select(CUSTOMER, F.col("item_id").alias(PRODUCT)).distinct()


def with_bought(customers: DataFrame, seen: DataFrame) -> DataFrame:
    """``customers`` (``customer_id``) with the number of distinct products each bought (``seen``), 0 if none."""
    counts = seen.groupBy(CUSTOMER).agg(F.count(F.lit(1)).alias(BOUGHT))
    return customers.select(CUSTOMER).join(counts, CUSTOMER, "left").fillna(0, subset=[BOUGHT])


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
) -> ALSModel:
    """Implicit-feedback ALS on :func:`indexed` interactions (``user_ix, item_ix, strength``); it
    checkpoints every 10 iterations when the session has a checkpoint directory."""
    als = ALS(
        userCol=USER, itemCol=ITEM, ratingCol=STRENGTH, implicitPrefs=True, rank=rank, regParam=reg_param,
        alpha=alpha, maxIter=max_iter, seed=seed, coldStartStrategy="drop", checkpointInterval=10,
        numUserBlocks=blocks, numItemBlocks=blocks,
    )
    return als.fit(ratings)


# -- candidates: (customer_id, product_id, score) rows, a bounded number per customer ------------------
def als_candidates(model: ALSModel, ratings: DataFrame, customers: DataFrame, *, depth: int) -> DataFrame:
    """The ``depth`` best ALS scores of each customer of ``customers`` the model knows (those in
    ``ratings``). One depth for all (ALS's top-k is per call): a customer who bought more than
    ``depth - n`` products may get fewer than n from ALS, and the next tier fills the list."""
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
    past = until(lines, end)
    counts = past.groupBy(F.col("item_id").alias(PRODUCT)).agg(F.countDistinct(CUSTOMER).alias("buyers"))
    buyers = past.agg(F.countDistinct(CUSTOMER).alias("all"))
    return counts.crossJoin(F.broadcast(buyers)).select(PRODUCT, (F.col("buyers") / F.col("all")).alias(SCORE))


def popular_candidates(customers: DataFrame, popular: DataFrame, *, n: int, most_bought: int) -> DataFrame:
    """For each customer, the n + ``bought`` most popular products (``most_bought``: the largest
    ``bought`` of ``customers``, which bounds the shortlist)."""
    # A few dozen rows: ranked on the driver (a window over them would move them to one partition
    # with a warning from Spark each time).
    top = popular.orderBy(F.desc(SCORE), F.asc(PRODUCT)).limit(n + most_bought).collect()
    shortlist = popular.sparkSession.createDataFrame(
        [(row[PRODUCT], row[SCORE], rank) for rank, row in enumerate(top, start=1)],
        StructType([popular.schema[PRODUCT], popular.schema[SCORE], StructField("_r", IntegerType(), False)]))
    reach = F.col("_r") <= F.lit(n) + F.col(BOUGHT)
    return customers.join(F.broadcast(shortlist), reach).select(CUSTOMER, PRODUCT, SCORE)


def category_candidates(
    customers: DataFrame, strengths: DataFrame, popular: DataFrame, products: DataFrame, *, n: int, most_bought: int
) -> DataFrame:
    """Popular products of the categories each customer interacted with (the first n + ``bought``
    of each): score = the customer's share of interaction strength in the category x the
    product's popularity."""
    categories = products.where(F.col("category").isNotNull()).select(PRODUCT, "category")
    by_category = (
        strengths.join(customers, CUSTOMER).join(categories, PRODUCT)
        .groupBy(CUSTOMER, BOUGHT, "category").agg(F.sum(STRENGTH).alias("w"))
        .withColumn("w", F.col("w") / F.sum("w").over(Window.partitionBy(CUSTOMER)))
    )
    shortlist = (  # its own column name: both sides derive from `categories`, an ambiguous self-join otherwise
        popular.join(categories, PRODUCT)
        .withColumn("_r", F.row_number().over(Window.partitionBy("category").orderBy(F.desc(SCORE), PRODUCT)))
        .where(F.col("_r") <= n + most_bought)
        .withColumnRenamed("category", "_category")
    )
    reach = (F.col("category") == F.col("_category")) & (F.col("_r") <= F.lit(n) + F.col(BOUGHT))
    return by_category.join(F.broadcast(shortlist), reach).select(
        CUSTOMER, PRODUCT, (F.col("w") * F.col(SCORE)).alias(SCORE))


def cooccurrence_candidates(lines: DataFrame, customers: DataFrame, *, end: date, neighbours: int) -> DataFrame:
    """Products bought in the same orders as the customer's purchases up to ``end``: score = the sum,
    over the products p the customer bought, of P(product | p) among the orders up to ``end``,
    each p contributing its ``neighbours`` likeliest partners."""
    past = until(lines, end).select("basket_id", "item_id")
    counts = past.groupBy("item_id").agg(F.count(F.lit(1)).alias("n_i"))
    pairs = (
        past.alias("a").join(past.alias("b"), "basket_id")
        .where(F.col("a.item_id") != F.col("b.item_id"))
        .groupBy(F.col("a.item_id").alias("item_id"), F.col("b.item_id").alias(PRODUCT))
        .agg(F.count(F.lit(1)).alias("n_ij"))
        .join(counts, "item_id")
        .select("item_id", PRODUCT, (F.col("n_ij") / F.col("n_i")).alias("p"))
        .withColumn("_r", F.row_number().over(Window.partitionBy("item_id").orderBy(F.desc("p"), PRODUCT)))
        .where(F.col("_r") <= neighbours)
    )
    history = until(lines, end).join(customers.select(CUSTOMER), CUSTOMER).select(CUSTOMER, "item_id").distinct()
    return history.join(pairs, "item_id").groupBy(CUSTOMER, PRODUCT).agg(F.sum("p").alias(SCORE))


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
