"""Stage ``basket``: market basket analysis with MLlib FPGrowth and cross-sell suggestions.

Reads ``silver.orders`` + ``silver.order_items`` (+ ``silver.products`` for names, or as the
items at category level) at pinned versions, builds one basket per completed order on or before
the as-of date, refuses before mining when the itemset count could explode, mines itemsets and
rules, scores cross-sell suggestions, gates all three gold tables, then overwrites their
``as_of_date`` partition (re-runs are idempotent) and logs an MLflow run.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from datetime import date
from typing import Any

from pyspark.ml.fpm import FPGrowthModel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from crm_spark.config import BasketSettings
from crm_spark.errors import ConfigError
from crm_spark.ml.basket import (
    ItemsetBound,
    association_rules,
    basket_stats,
    baskets_from_items,
    cross_sell,
    cross_sell_stats,
    fit_fpgrowth,
    frequent_itemsets,
    item_names,
    itemset_count_bound,
    name_item,
    name_items,
    purchase_lines,
    rule_stats,
)
from crm_spark.contracts import table
from crm_spark.stages import StageContext, StageResult

log = logging.getLogger(__name__)

STAGE = "basket"
ORDERS, ORDER_ITEMS, PRODUCTS = "silver.orders", "silver.order_items", "silver.products"
ITEMSETS, RULES, CROSS_SELL = "gold.basket_itemsets", "gold.basket_rules", "gold.cross_sell"
# Rules drawn in the support/confidence figure: the strongest by lift, enough to show the shape.
_FIGURE_RULES = 5000


def run(ctx: StageContext, as_of: date) -> StageResult:
    cfg = ctx.settings.basket
    orders = ctx.read(ORDERS)
    order_items = ctx.read(ORDER_ITEMS)
    products = ctx.read(PRODUCTS) if ctx.exists(PRODUCTS) else None

    lines = purchase_lines(
        orders, order_items, as_of=as_of, item_level=cfg.item_level, products=products,
        count_zero_value_orders=ctx.settings.features.count_zero_value_orders,
    ).cache()
    baskets = baskets_from_items(lines).cache()
    cached: list[DataFrame] = [lines, baskets]
    try:
        bound = itemset_count_bound(baskets, min_support=cfg.min_support, limit=cfg.max_itemsets)
        if bound.baskets == 0:
            return StageResult(STAGE, skipped=f"no purchases (completed orders of value above 0) on or before {as_of}")
        notes = guard_itemset_explosion(bound, cfg)
        log.info(
            "[basket] %s baskets as of %s, %s frequent %ss (min count %d): at most %s itemsets",
            f"{bound.baskets:,}", as_of, f"{bound.frequent_items:,}", cfg.item_level, bound.min_count,
            _fmt_bound(bound.upper_bound),
        )
        started = time.perf_counter()
        model = fit_fpgrowth(
            baskets, min_support=cfg.min_support, min_confidence=cfg.min_confidence, num_partitions=cfg.num_partitions
        )
        # Spark mines lazily, again at each use of freqItemsets: mine once, keep the result.
        mined = model.freqItemsets.cache()
        cached.append(mined)
        mined_count = mined.count()
        mining_seconds = time.perf_counter() - started
        log.info("[basket] FPGrowth found %s itemsets in %.1fs", f"{mined_count:,}", mining_seconds)

        names = item_names(products, item_level=cfg.item_level) if products is not None else _no_names(ctx.spark)
        gold = _gold_tables(model, lines, names, cfg=cfg, as_of=as_of, baskets=bound.baskets)
        cached.extend(gold.values())
        writes = {t: ctx.publish(t, df, partition={"as_of_date": as_of}) for t, df in gold.items()}
        if not writes[RULES].rows:
            notes.append(f"no rules at min_support={cfg.min_support}, min_confidence={cfg.min_confidence}, "
                         f"min_lift={cfg.min_lift}: lower them to get cross-sell suggestions")
        metrics = {
            **basket_stats(baskets),
            **bound.as_metrics(),
            **rule_stats(gold[RULES]),
            **cross_sell_stats(gold[CROSS_SELL]),
            "itemsets_mined_all_sizes": float(mined_count),
            "mining_seconds": mining_seconds,
        }
        run_id = _log_run(ctx, as_of=as_of, cfg=cfg, metrics=metrics, rules=gold[RULES])
    finally:
        for df in cached:
            df.unpersist()
    return StageResult(STAGE, notes=tuple(notes), metrics=metrics, mlflow_run_id=run_id)


def _gold_tables(
    model: FPGrowthModel, lines: DataFrame, names: DataFrame, *, cfg: BasketSettings, as_of: date, baskets: int
) -> dict[str, DataFrame]:
    """The three gold frames, named, stamped with the partition and item level, in contract shape (cached)."""
    rules = association_rules(model, min_lift=cfg.min_lift, max_size=cfg.max_itemset_size)
    itemsets = frequent_itemsets(model, baskets=baskets, max_size=cfg.max_itemset_size)
    suggestions = cross_sell(
        lines, rules, as_of=as_of, window_days=cfg.cross_sell_window_days, top_n=cfg.cross_sell_top_n
    )
    frames = {
        ITEMSETS: name_items(itemsets, names, items_col="items", names_col="item_names"),
        RULES: name_item(
            name_items(rules, names, items_col="antecedent", names_col="antecedent_names"),
            names, item_col="consequent", name_col="consequent_name",
        ),
        CROSS_SELL: name_item(suggestions, names, item_col="item_id", name_col="item_name"),
    }
    stamp = {"as_of_date": F.lit(as_of).cast("date"), "item_level": F.lit(cfg.item_level)}
    return {t: table(t).conform(df.withColumns(stamp)).cache() for t, df in frames.items()}


def guard_itemset_explosion(bound: ItemsetBound, cfg: BasketSettings) -> list[str]:
    """Stop (or warn) before FPGrowth when its itemsets could outgrow ``basket.max_itemsets``."""
    if not bound.exceeds(cfg.max_itemsets):
        return []
    message = (
        f"basket.min_support={cfg.min_support} could mine up to {_fmt_bound(bound.upper_bound)} frequent itemsets "
        f"(limit basket.max_itemsets={cfg.max_itemsets:,}; {bound.frequent_items:,} frequent {cfg.item_level}s in "
        f"{bound.baskets:,} baskets, up to {bound.longest_basket} in one basket)"
    )
    if cfg.on_explosion == "error":
        raise ConfigError(
            f"{message}: raise basket.min_support, mine categories (basket.item_level: category), "
            "or set basket.on_explosion: warn to mine anyway"
        )
    log.warning("[basket] %s; mining anyway (basket.on_explosion: warn)", message)
    return [f"{message}; mined anyway"]


def _no_names(spark: SparkSession) -> DataFrame:
    return spark.createDataFrame([], "item_id string, item_name string")


def _fmt_bound(value: float) -> str:
    return "more than 1e12" if value == float("inf") else f"{value:,.0f}"


def _log_run(ctx: StageContext, *, as_of: date, cfg: BasketSettings, metrics: Mapping[str, float], rules: DataFrame) -> str:
    """One MLflow run: thresholds, input versions, counts, the top rules and the rules figure."""
    shown = (
        rules.orderBy(F.desc("lift"), F.desc("confidence"), F.asc("consequent"))
        .limit(max(cfg.top_rules_logged, _FIGURE_RULES))
        .select(
            F.concat_ws(" + ", "antecedent").alias("antecedent"),
            F.concat_ws(" + ", "antecedent_names").alias("antecedent_names"),
            "consequent", "consequent_name", "support", "confidence", "lift",
        )
        .toPandas()
    )
    top = shown.head(cfg.top_rules_logged)
    params = cfg.model_dump(mode="json")
    tracker = ctx.tracker
    with tracker.start_run(STAGE, as_of=as_of, inputs=ctx.input_versions(), params=params,
                           quality=ctx.quality_summary()) as run:
        tracker.log_metrics({**metrics, **ctx.written_rows()})
        tracker.log_text(top.to_csv(index=False), "top_rules.csv")
        tracker.log_figure(_rules_figure(shown, cfg, total=int(metrics["rules"])), "basket_rules_support_confidence.png")
        return str(run.info.run_id)


def _rules_figure(rules: Any, cfg: BasketSettings, *, total: int) -> Any:
    """Support vs confidence of each rule, coloured by lift: where the useful rules sit."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import LogLocator, NullFormatter, PercentFormatter

    fig = Figure(figsize=(7.5, 5.0))
    ax = fig.subplots()
    if len(rules):
        points = ax.scatter(
            rules["support"], rules["confidence"], c=rules["lift"], cmap="viridis", s=18, alpha=0.8, edgecolors="none"
        )
        fig.colorbar(points, ax=ax, label="lift")
    else:
        ax.text(0.5, 0.5, "no rules at these thresholds", ha="center", va="center", transform=ax.transAxes)
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(PercentFormatter(1.0, decimals=1))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("support (share of baskets, log scale)")
    ax.set_ylabel("confidence")
    ax.set_title(
        f"{len(rules):,} of {total:,} association rules ({cfg.item_level} level, min support {cfg.min_support}, "
        f"min confidence {cfg.min_confidence})",
        fontsize=10,
    )
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    return fig
