"""Market basket analysis: baskets, FPGrowth itemsets and rules with lift, a guard against the
itemset explosion, and cross-sell suggestions (SPEC section 5, stage 5).

Grain and vocabulary: a *basket* is one order (or one line of a user's basket file) and its
distinct *items*; an item is a product id or, for category-level mining, a category. Every
builder takes a frame of ``(basket_id, items array<string>)`` or of ``(basket_id, item_id)``
lines, so baskets may come from silver orders or from anywhere else.

Builders are lazy DataFrame -> DataFrame functions. ``fit_fpgrowth`` fits (an action, like any
estimator); ``itemset_count_bound`` and the ``*_stats`` evaluators run small aggregations and
return plain numbers. Nothing here reads tables or config, or talks to MLflow.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any, Literal

from pyspark.ml.fpm import FPGrowth, FPGrowthModel
from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from crm_spark.transforms.features import purchases

ItemLevel = Literal["product", "category"]
ITEM_LEVELS: tuple[str, ...] = ("product", "category")

# Above this the bound is reported as infinite: the answer (refuse) is the same and the sum of
# binomials over long baskets is not worth finishing.
_BOUND_CAP = 1e12
# Counting frequent pairs costs one row per co-occurring pair of frequent items; past this many
# the guard keeps the cheaper, looser bound rather than run a job as large as the mining.
_PAIR_ROWS_BUDGET = 500_000_000


# -- baskets ----------------------------------------------------------------------------------
def purchase_lines(
    orders: DataFrame,
    order_items: DataFrame,
    *,
    as_of: date,
    item_level: ItemLevel = "product",
    products: DataFrame | None = None,
    count_zero_value_orders: bool = False,
) -> DataFrame:
    """One row per item bought per order: ``basket_id, customer_id, order_date, item_id``.

    Only purchases (:func:`crm_spark.transforms.features.purchases`: completed orders whose
    accepted lines add up to more than 0, unless ``count_zero_value_orders``) dated on or before
    ``as_of``; lines with a non-positive quantity are returns, not purchases. At ``item_level="category"`` the item is
    the product's category (``products`` required; products without one drop out). An item
    bought twice in one order is one line: baskets count presence, not quantity.
    """
    if item_level not in ITEM_LEVELS:
        raise ValueError(f"item_level must be one of {ITEM_LEVELS}, got {item_level!r}")
    dated = orders.where(F.col("order_date").isNotNull() & (F.col("order_date") <= F.lit(as_of)))
    kept_orders = purchases(dated, order_items, count_zero_value_orders=count_zero_value_orders).select(
        F.col("order_id"), F.col("customer_id"), F.col("order_date")
    )
    lines = order_items.where(F.col("product_id").isNotNull() & (F.col("quantity") > 0)).select(
        "order_id", "product_id"
    )
    bought = kept_orders.join(lines, "order_id")
    if item_level == "category":
        if products is None:
            raise ValueError("category-level baskets need the products frame")
        categories = products.where(F.col("category").isNotNull()).select("product_id", "category")
        bought = bought.join(categories, "product_id").withColumn("item_id", F.col("category"))
    else:
        bought = bought.withColumn("item_id", F.col("product_id"))
    return bought.select(
        F.col("order_id").alias("basket_id"), "customer_id", "order_date", F.col("item_id").cast("string")
    ).distinct()


def baskets_from_items(lines: DataFrame, *, basket_col: str = "basket_id", item_col: str = "item_id") -> DataFrame:
    """One row per basket: ``basket_id, items`` (its distinct item ids, sorted).

    ``lines`` is any frame of (basket, item) rows: :func:`purchase_lines`, or a user's
    one-basket-per-line file exploded. FPGrowth needs unique items per basket; sorting gives
    every basket one spelling.
    """
    return (
        lines.where(F.col(item_col).isNotNull())
        .groupBy(F.col(basket_col).alias("basket_id"))
        .agg(F.array_sort(F.collect_set(F.col(item_col).cast("string"))).alias("items"))
    )


def item_names(products: DataFrame, *, item_level: ItemLevel) -> DataFrame:
    """``item_id, item_name`` for the item level: product id -> product name, or category -> itself."""
    if item_level == "category":
        return (
            products.where(F.col("category").isNotNull())
            .select(F.col("category").alias("item_id"), F.col("category").alias("item_name"))
            .distinct()
        )
    return products.groupBy(F.col("product_id").alias("item_id")).agg(F.max("product_name").alias("item_name"))


# -- explosion guard ---------------------------------------------------------------------------
def min_count(min_support: float, baskets: int) -> int:
    """The least basket count a frequent itemset needs, exactly as Spark's FPGrowth computes it."""
    return math.ceil(min_support * baskets)


@dataclass(frozen=True)
class ItemsetBound:
    """An upper bound on the number of frequent itemsets FPGrowth would find, before mining.

    FPGrowth's memory and time grow with the number of frequent itemsets, and a long basket of
    frequent items has 2^n subsets. The bound (see :func:`itemset_count_bound`) never
    undercounts, so a run it lets through cannot explode past the limit.
    """

    baskets: int
    min_count: int
    frequent_items: int
    frequent_pairs: int | None  # counted only when the cheaper bound was over the limit
    longest_basket: int  # frequent items in the basket holding most of them
    upper_bound: float  # math.inf when beyond 1e12

    def exceeds(self, limit: int) -> bool:
        return self.upper_bound > limit

    def as_metrics(self) -> dict[str, float]:
        return {
            "baskets": float(self.baskets),
            "min_count": float(self.min_count),
            "frequent_items": float(self.frequent_items),
            "longest_basket_frequent_items": float(self.longest_basket),
            "itemsets_upper_bound": min(self.upper_bound, _BOUND_CAP),
        }


def itemset_count_bound(baskets: DataFrame, *, min_support: float, limit: int) -> ItemsetBound:
    """Bound the frequent itemset count from item counts (and, if needed, the frequent pairs).

    With m = the min count, f1 the frequent items, h[n] the baskets holding n frequent items:
    frequent k-itemsets <= min(C(f1, k), sum_n h[n] C(n, k) // m), since each must occur in m
    baskets, and none when fewer than m baskets hold k frequent items. If that total is over
    ``limit`` the frequent pairs are found exactly (one job; over ``limit`` of them is an
    explosion for certain). Every pair inside a frequent itemset is a frequent pair, so a frequent
    k-itemset is a k-clique of the graph of frequent pairs: the cliques are counted on the driver
    (stopping past ``limit``), which is close to the truth on real baskets, where co-occurrence
    is sparse (a grocery-shaped list: item-level bound in the millions, cliques about 15,000, 786
    itemsets). When the cliques run past ``limit`` the Kruskal-Katona bound from the pair count
    is used instead. Sizes stop at the first k with no possible itemset (Apriori: none larger).
    """
    n = baskets.count()
    if n == 0:
        return ItemsetBound(0, 0, 0, 0, 0, 0.0)
    m = min_count(min_support, n)
    lines = baskets.select("basket_id", F.explode(F.array_distinct("items")).alias("item"))
    frequent = lines.groupBy("item").count().where(F.col("count") >= m).select("item")
    kept = lines.join(frequent, "item")
    histogram = {
        int(r["n"]): int(r["count"])
        for r in kept.groupBy("basket_id").agg(F.count("*").alias("n")).groupBy("n").count().collect()
    }
    f1 = frequent.count()
    bound = _bound(histogram, m, f1)
    pairs: int | None = None
    pair_rows = sum(count * math.comb(size, 2) for size, count in histogram.items())
    if bound > limit and pair_rows <= _PAIR_ROWS_BUDGET:
        a, b = kept.alias("a"), kept.alias("b")
        edges = [
            (r[0], r[1])
            for r in a.join(b, (F.col("a.basket_id") == F.col("b.basket_id")) & (F.col("a.item") < F.col("b.item")))
            .groupBy(F.col("a.item"), F.col("b.item"))
            .count()
            .where(F.col("count") >= m)
            .select(F.col("a.item"), F.col("b.item"))
            .limit(limit + 1)
            .collect()
        ]
        if len(edges) <= limit:  # else the frequent pairs alone are over the limit: keep the bound
            pairs = len(edges)
            cliques = clique_counts(edges, max_size=max(histogram, default=0), budget=limit)
            bound = _bound(histogram, m, f1, pairs, cliques)
    return ItemsetBound(n, m, f1, pairs, max(histogram, default=0), bound)


def clique_counts(edges: Sequence[tuple[Any, Any]], *, max_size: int, budget: int) -> dict[int, int] | None:
    """Cliques of 3 to ``max_size`` vertices of the graph ``edges``, by size; None past ``budget`` cliques.

    Each clique is found once, as an increasing sequence of vertex ranks: extend an edge (i, j)
    by the common neighbours ranked above j, and so on.
    """
    nodes = sorted({v for edge in edges for v in edge})
    rank = {v: i for i, v in enumerate(nodes)}
    above: list[set[int]] = [set() for _ in nodes]
    for u, v in edges:
        i, j = sorted((rank[u], rank[v]))
        above[i].add(j)
    counts: dict[int, int] = {}
    found = 0
    stack = [(2, above[i] & above[j]) for i in range(len(nodes)) for j in above[i]]
    while stack:
        size, candidates = stack.pop()
        if size >= max_size:
            continue
        for v in candidates:
            counts[size + 1] = counts.get(size + 1, 0) + 1
            found += 1
            if found > budget:
                return None
            common = candidates & above[v]
            if common:
                stack.append((size + 1, common))
    return counts


def _bound(
    histogram: Mapping[int, int], m: int, f1: int, f2: int | None = None, cliques: Mapping[int, int] | None = None
) -> float:
    total = float(f1)
    for k in range(2, max(histogram, default=0) + 1):
        if sum(count for size, count in histogram.items() if size >= k) < m:
            break  # fewer than m baskets hold k frequent items: no k-itemset is frequent
        occurrences = sum(count * math.comb(size, k) for size, count in histogram.items() if size >= k)
        term = min(_as_float(math.comb(f1, k)), _as_float(occurrences // m))
        if f2 is not None:
            if k == 2:
                term = min(term, float(f2))
            elif cliques is not None:
                term = min(term, float(cliques.get(k, 0)))
            else:  # Kruskal-Katona: C(x, k) with C(x, 2) = f2
                term = min(term, _real_comb_floor((1 + math.sqrt(1 + 8 * f2)) / 2, k))
        if term < 1:
            break
        total += term
        if total > _BOUND_CAP:
            return math.inf
    return total


def _as_float(value: int) -> float:
    return float(value) if value.bit_length() < 1000 else math.inf


def _real_comb_floor(x: float, k: int) -> float:
    """floor(C(x, k)) for real x: the most k-cliques a graph with C(x, 2) edges can hold."""
    if k > x + 1e-9:
        return 0.0
    if abs(x - round(x)) < 1e-9:
        return _as_float(math.comb(round(x), k))
    log_value = math.lgamma(x + 1) - math.lgamma(k + 1) - math.lgamma(x - k + 1)
    # Rounding errs upwards: an upper bound may be generous, never short.
    return math.inf if log_value > 700 else math.floor(math.exp(log_value) * (1 + 1e-9) + 1e-6)


# -- mining ------------------------------------------------------------------------------------
def fit_fpgrowth(
    baskets: DataFrame, *, min_support: float, min_confidence: float, num_partitions: int | None = None
) -> FPGrowthModel:
    """Fit MLlib FPGrowth on the ``items`` column (unique items per basket, as Spark requires)."""
    estimator = FPGrowth(itemsCol="items", minSupport=min_support, minConfidence=min_confidence)
    if num_partitions is not None:
        estimator = estimator.setNumPartitions(num_partitions)
    return estimator.fit(baskets.select("items"))


def frequent_itemsets(model: FPGrowthModel, *, baskets: int, max_size: int) -> DataFrame:
    """One row per frequent itemset of at most ``max_size`` items: ``items`` (sorted),
    ``itemset_size``, ``freq`` (baskets holding it), ``support`` (= freq / baskets).

    ``baskets`` is the number of baskets the model was fitted on (Spark keeps it private).
    FPGrowth mines every size; the cap is applied here.
    """
    return model.freqItemsets.where(F.size("items") <= max_size).select(
        F.array_sort("items").alias("items"),
        F.size("items").cast("int").alias("itemset_size"),
        F.col("freq").cast("long").alias("freq"),
        (F.col("freq") / F.lit(float(baskets))).alias("support"),
    )


def association_rules(model: FPGrowthModel, *, min_lift: float, max_size: int) -> DataFrame:
    """One row per rule ``antecedent -> consequent``: ``antecedent`` (sorted), ``consequent``
    (one item), ``antecedent_size``, ``support``, ``confidence``, ``lift``.

    Spark derives rules from the frequent itemsets with confidence >= the model's
    minConfidence and lift = confidence / support(consequent); here rules whose itemset is
    larger than ``max_size`` or whose lift is below ``min_lift`` are dropped.
    """
    return (
        model.associationRules.where((F.size("antecedent") + 1 <= max_size) & (F.col("lift") >= min_lift))
        .select(
            F.array_sort("antecedent").alias("antecedent"),
            F.element_at("consequent", 1).alias("consequent"),
            F.size("antecedent").cast("int").alias("antecedent_size"),
            F.col("support").cast("double").alias("support"),
            F.col("confidence").cast("double").alias("confidence"),
            F.col("lift").cast("double").alias("lift"),
        )
    )


def name_items(frame: DataFrame, names: DataFrame, *, items_col: str, names_col: str) -> DataFrame:
    """Add ``names_col``: the ``item_name`` of each element of ``items_col``, in the same order
    (null where an item has no name). Rows are kept as they are, names only added."""
    key = "_items_key"
    exploded = (
        frame.select(F.col(items_col).alias(key))
        .distinct()
        .select(key, F.posexplode(key).alias("_pos", "item_id"))
        .join(names.select("item_id", "item_name"), "item_id", "left")
        .groupBy(key)
        .agg(F.array_sort(F.collect_list(F.struct("_pos", "item_name"))).alias("_named"))
        .select(key, F.transform("_named", lambda e: e["item_name"]).alias(names_col))
    )
    return frame.join(exploded, frame[items_col] == exploded[key], "left").drop(key)


def name_item(frame: DataFrame, names: DataFrame, *, item_col: str, name_col: str) -> DataFrame:
    """Add ``name_col``: the ``item_name`` of ``item_col`` (null where unknown)."""
    lookup = names.select(F.col("item_id").alias("_item"), F.col("item_name").alias(name_col))
    return frame.join(lookup, frame[item_col] == lookup["_item"], "left").drop("_item")


# -- cross-sell --------------------------------------------------------------------------------
def cross_sell(lines: DataFrame, rules: DataFrame, *, as_of: date, window_days: int, top_n: int) -> DataFrame:
    """Top-``top_n`` suggestions per customer: ``customer_id, rank, item_id, score, confidence,
    lift, antecedent``.

    A rule fires for a customer when every item of its antecedent was bought in the
    ``window_days`` days ending on ``as_of``; its consequent scores confidence x lift, the best
    firing rule per consequent wins (and is kept as the reason). Items the customer bought at
    any time up to ``as_of`` are never suggested. Ties rank by item id, so ranks are stable.
    ``lines`` are :func:`purchase_lines` (``customer_id, order_date, item_id``).
    """
    known = lines.where(F.col("customer_id").isNotNull() & (F.col("order_date") <= F.lit(as_of)))
    recent = (
        known.where(F.col("order_date") > F.date_sub(F.lit(as_of), window_days))
        .select("customer_id", "item_id")
        .distinct()
    )
    bought = known.select("customer_id", "item_id").distinct()
    antecedents = rules.select("antecedent").distinct()
    fired = (
        antecedents.select("antecedent", F.explode("antecedent").alias("item_id"))
        .join(recent, "item_id")
        .groupBy("customer_id", "antecedent")
        .agg(F.count("*").alias("_matched"))
        .where(F.col("_matched") == F.size("antecedent"))
        .select("customer_id", "antecedent")
    )
    candidates = (
        fired.join(rules, "antecedent")
        .select(
            "customer_id",
            F.col("consequent").alias("item_id"),
            (F.col("confidence") * F.col("lift")).alias("score"),
            "confidence",
            "lift",
            "antecedent",
        )
        .join(bought, ["customer_id", "item_id"], "left_anti")
    )
    best_rule = Window.partitionBy("customer_id", "item_id").orderBy(
        F.desc("score"), F.desc("confidence"), F.asc("antecedent")
    )
    ranked = Window.partitionBy("customer_id").orderBy(F.desc("score"), F.asc("item_id"))
    return (
        candidates.withColumn("_best", F.row_number().over(best_rule))
        .where(F.col("_best") == 1)
        .withColumn("rank", F.row_number().over(ranked).cast("int"))
        .where(F.col("rank") <= top_n)
        .select("customer_id", "rank", "item_id", "score", "confidence", "lift", "antecedent")
    )


# -- evaluators --------------------------------------------------------------------------------
def basket_stats(baskets: DataFrame) -> dict[str, float]:
    """Size of the mining input: baskets, distinct items, mean and largest basket, single-item share."""
    row = baskets.agg(
        F.count("*").alias("baskets"),
        F.avg(F.size("items")).alias("mean_items"),
        F.max(F.size("items")).alias("max_items"),
        F.avg((F.size("items") == 1).cast("double")).alias("single_item_share"),
    ).first()
    items = baskets.select(F.explode("items").alias("item")).distinct().count()
    return {
        "baskets": float(row["baskets"] or 0),
        "distinct_items": float(items),
        "mean_basket_items": float(row["mean_items"] or 0.0),
        "max_basket_items": float(row["max_items"] or 0),
        "single_item_basket_share": float(row["single_item_share"] or 0.0),
    }


def rule_stats(rules: DataFrame) -> dict[str, float]:
    """How many rules and how strong: count, max and mean lift, mean confidence."""
    row = rules.agg(
        F.count("*").alias("rules"),
        F.max("lift").alias("max_lift"),
        F.avg("lift").alias("mean_lift"),
        F.avg("confidence").alias("mean_confidence"),
    ).first()
    return {
        "rules": float(row["rules"]),
        "rules_max_lift": float(row["max_lift"] or 0.0),
        "rules_mean_lift": float(row["mean_lift"] or 0.0),
        "rules_mean_confidence": float(row["mean_confidence"] or 0.0),
    }


def cross_sell_stats(suggestions: DataFrame) -> dict[str, float]:
    """Reach of the suggestions: customers served, suggestions, mean score of the first one."""
    row = suggestions.agg(
        F.countDistinct("customer_id").alias("customers"),
        F.count("*").alias("suggestions"),
        F.avg(F.when(F.col("rank") == 1, F.col("score"))).alias("top_score"),
    ).first()
    return {
        "cross_sell_customers": float(row["customers"]),
        "cross_sell_suggestions": float(row["suggestions"]),
        "cross_sell_mean_top_score": float(row["top_score"] or 0.0),
    }
