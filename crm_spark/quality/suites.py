"""Expectation suites as code, one per table, registered in ``SUITES`` by table name.

A suite is a function of :class:`SuiteContext` (so row-count change and freshness can use the
previous version's size and the as-of date) returning Great Expectations 1.x expectations.
"""

from __future__ import annotations

import math

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any

import great_expectations.expectations as gxe

from crm_spark.config import Settings


@dataclass(frozen=True)
class SuiteContext:
    settings: Settings
    previous_rows: int | None = None
    as_of: date | None = None
    batch_rows: int | None = None  # rows mapped from bronze in this batch (refine's reject-share gate)


Suite = Callable[[SuiteContext], list[gxe.Expectation]]
SUITES: dict[str, Suite] = {}


def register(table: str) -> Callable[[Suite], Suite]:
    def wrap(fn: Suite) -> Suite:
        SUITES[table] = fn
        return fn

    return wrap


def keys(columns: Sequence[str]) -> list[gxe.Expectation]:
    """Key columns present, never null, and unique together."""
    out: list[gxe.Expectation] = [gxe.ExpectColumnValuesToNotBeNull(column=c) for c in columns]
    if len(columns) == 1:
        out.append(gxe.ExpectColumnValuesToBeUnique(column=columns[0]))
    else:
        out.append(gxe.ExpectCompoundColumnsToBeUnique(column_list=list(columns)))
    return out


def columns(names: Sequence[str]) -> list[gxe.Expectation]:
    """The table has exactly these columns (order free)."""
    return [gxe.ExpectTableColumnsToMatchSet(column_set=list(names), exact_match=True)]


def row_count_change(sc: SuiteContext) -> list[gxe.Expectation]:
    """Rows may not shrink by more than ``quality.max_row_drop`` versus the previous version."""
    if not sc.previous_rows:
        return [gxe.ExpectTableRowCountToBeBetween(min_value=0)]
    floor = int(sc.previous_rows * (1 - sc.settings.quality.max_row_drop))
    return [gxe.ExpectTableRowCountToBeBetween(min_value=floor)]


def freshness(column: str, sc: SuiteContext) -> list[gxe.Expectation]:
    """The newest ``column`` value is within ``quality.freshness_days`` of the as-of date."""
    if sc.as_of is None:
        return []
    oldest_ok = datetime.combine(sc.as_of - timedelta(days=sc.settings.quality.freshness_days), time.min)
    return [gxe.ExpectColumnMaxToBeBetween(column=column, min_value=oldest_ok)]


def between(column: str, low: Any = None, high: Any = None, *, mostly: float = 1.0) -> gxe.Expectation:
    return gxe.ExpectColumnValuesToBeBetween(column=column, min_value=low, max_value=high, mostly=mostly)


def in_set(column: str, values: Sequence[Any], *, mostly: float = 1.0) -> gxe.Expectation:
    return gxe.ExpectColumnValuesToBeInSet(column=column, value_set=list(values), mostly=mostly)


def not_null(*names: str) -> list[gxe.Expectation]:
    return [gxe.ExpectColumnValuesToNotBeNull(column=c) for c in names]


def rows_satisfy(rules: Sequence[str], *, show: Sequence[str], description: str) -> gxe.Expectation:
    """Every row meets every Spark SQL condition in ``rules`` (a null result breaks the rule).

    One query, one scan, however many rules: cheaper than one expectation per column and rule.
    The unexpected rows (in Data Docs with a COMPLETE result format) carry the ``show`` columns
    and ``broken_rules``, the rules each row breaks.
    """
    if any(ch in rule for rule in rules for ch in "{}"):
        raise ValueError("rows_satisfy rules may not contain braces ({batch} is the only placeholder)")
    held = [f"coalesce(({rule}), false)" for rule in rules]
    named = ", ".join(f"CASE WHEN NOT {h} THEN '{rule.replace(chr(39), chr(39) * 2)}' END" for h, rule in zip(held, rules))
    query = (
        f"SELECT {', '.join(show)}, concat_ws('; ', {named}) AS broken_rules "
        f"FROM {{batch}} WHERE NOT ({' AND '.join(held)})"
    )
    return gxe.UnexpectedRowsExpectation(unexpected_rows_query=query, description=description)


# -- stage basket: gold.basket_itemsets, gold.basket_rules, gold.cross_sell ---------------------
# Each frame checked holds one as_of_date partition. Support can sit a rounding step below
# min_support (ceil(min_support * n) / n in floating point), hence the 1e-9 slack.
def _ddl_columns(ddl: str) -> list[str]:
    from pyspark.sql.types import StructType

    return StructType.fromDDL(ddl).fieldNames()


@register("gold.basket_itemsets")
def _basket_itemsets(sc: SuiteContext) -> list[gxe.Expectation]:
    from crm_spark.schemas import BASKET_ITEMSETS_DDL

    b = sc.settings.basket
    return [
        *columns(_ddl_columns(BASKET_ITEMSETS_DDL)),
        *keys(["items"]),
        *not_null("itemset_size", "freq", "support", "item_level", "as_of_date"),
        between("itemset_size", 1, b.max_itemset_size),
        between("freq", 1),
        between("support", b.min_support * (1 - 1e-9), 1.0),
        in_set("item_level", ["product", "category"]),
    ]


@register("gold.basket_rules")
def _basket_rules(sc: SuiteContext) -> list[gxe.Expectation]:
    from crm_spark.schemas import BASKET_RULES_DDL

    b = sc.settings.basket
    return [
        *columns(_ddl_columns(BASKET_RULES_DDL)),
        *keys(["antecedent", "consequent"]),
        *not_null("antecedent_size", "support", "confidence", "lift", "item_level", "as_of_date"),
        between("antecedent_size", 1, b.max_itemset_size - 1),
        between("support", b.min_support * (1 - 1e-9), 1.0),
        between("confidence", b.min_confidence * (1 - 1e-9), 1.0 + 1e-9),
        between("lift", b.min_lift * (1 - 1e-9)),
    ]


@register("gold.cross_sell")
def _cross_sell(sc: SuiteContext) -> list[gxe.Expectation]:
    from crm_spark.schemas import CROSS_SELL_DDL

    b = sc.settings.basket
    return [
        *columns(_ddl_columns(CROSS_SELL_DDL)),
        *keys(["customer_id", "rank"]),
        gxe.ExpectCompoundColumnsToBeUnique(column_list=["customer_id", "item_id"]),
        *not_null("item_id", "score", "confidence", "lift", "antecedent", "as_of_date"),
        between("rank", 1, b.cross_sell_top_n),
        between("score", 0.0),
    ]


# -- stage features: gold.customer_features ------------------------------------------------------
# Every column is a model input, so none may be null; ranges and cross-column rules follow the
# feature definitions in crm_spark/transforms/features.py (scores 0 = no completed order yet).
# The ~50 per-column rules run as three SQL checks (one scan each) instead of one GX expectation
# per column and rule (two Spark jobs each): the unexpected rows name the rules they break.
_FEATURE_COUNTS = (
    "recency_days", "frequency", "tenure_days", "orders_30d", "orders_90d", "orders_365d", "distinct_categories",
    "sessions_30d", "social_interactions_90d", "complaints_90d", "days_since_last_visit",
)
_FEATURE_AMOUNTS = ("monetary", "avg_order_value", "spend_30d", "spend_90d", "spend_365d", "browse_minutes_30d")
_FEATURE_RANGES = (
    *(f"{c} >= 0" for c in (*_FEATURE_COUNTS, *_FEATURE_AMOUNTS)),
    *(f"{c} BETWEEN 0 AND 5" for c in ("r_score", "f_score", "m_score")),
    *(f"{c} BETWEEN 0 AND 1" for c in ("return_rate", "cart_abandonment_rate")),
    "mean_sentiment BETWEEN -1 AND 1",
    "mean_rating BETWEEN 1 AND 5",
    "nps BETWEEN 0 AND 10",
)
_FEATURE_CONSISTENCY = (
    "has_orders = (frequency > 0)",
    "has_orders = (least(r_score, f_score, m_score) >= 1)",
    "greatest(r_score, f_score, m_score) >= 1 OR NOT has_orders",
    "orders_30d <= orders_90d AND orders_90d <= orders_365d AND orders_365d <= frequency",
)


@register("gold.customer_features")
def _customer_features(sc: SuiteContext) -> list[gxe.Expectation]:
    from crm_spark.schemas import customer_features_schema
    from crm_spark.transforms.features import VALUE_TIERS

    f = sc.settings.features
    names = customer_features_schema().fieldNames()
    key = ["customer_id", "as_of_date"]
    return [
        *columns(names),
        *keys(key),
        *row_count_change(sc),
        rows_satisfy([f"{n} IS NOT NULL" for n in names if n not in key], show=key,
                     description="model features are never null"),
        rows_satisfy(_FEATURE_RANGES, show=key, description="features lie in their ranges"),
        rows_satisfy(_FEATURE_CONSISTENCY, show=key, description="has_orders, scores and order counts agree"),
        in_set("rfm_segment", sorted({r.segment for r in f.segments} | {f.no_orders_segment})),
        in_set("value_tier", VALUE_TIERS),
    ]


# -- stage churn: gold.churn_training, gold.churn_scores -----------------------------------------
# Each frame checked holds one partition: one run's train + eval rows, or one date's scores.
# Row rules run as one SQL check (one scan); uniqueness and the row count are their own.
@register("gold.churn_training")
def _churn_training(sc: SuiteContext) -> list[gxe.Expectation]:
    from crm_spark.schemas import CHURN_TRAINING_DDL

    key = ["run_as_of_date", "split", "customer_id"]
    rules = [
        *(f"{c} IS NOT NULL" for c in (*key, "as_of_date", "label_end_date")),
        "split IN ('train', 'eval')",
        "churned IN (0, 1)",
        "label_source IN ('computed', 'column')",
        "as_of_date < label_end_date AND as_of_date < run_as_of_date",
    ]
    return [
        *columns(_ddl_columns(CHURN_TRAINING_DDL)),
        gxe.ExpectCompoundColumnsToBeUnique(column_list=key),
        gxe.ExpectTableRowCountToBeBetween(min_value=1),
        rows_satisfy(rules, show=key, description="labelled rows are complete and dated before the run"),
    ]


@register("gold.churn_scores")
def _churn_scores(sc: SuiteContext) -> list[gxe.Expectation]:
    from crm_spark.schemas import CHURN_SCORES_DDL

    key = ["customer_id", "as_of_date"]
    bands = ", ".join(f"'{b.band.replace(chr(39), chr(39) * 2)}'" for b in sc.settings.churn.risk_bands)
    rules = [
        *(f"{c} IS NOT NULL" for c in key),
        "churn_probability BETWEEN 0 AND 1",
        f"risk_band IN ({bands})",
        "model_version >= 1",
        "model_kind IN ('logistic_regression', 'gbt')",
    ]
    return [
        *columns(_ddl_columns(CHURN_SCORES_DDL)),
        gxe.ExpectCompoundColumnsToBeUnique(column_list=key),
        *row_count_change(sc),
        rows_satisfy(rules, show=key, description="scores are probabilities with a band and a model version"),
    ]


# -- stage segment: gold.customer_segments, gold.segment_profiles ---------------------------------
# Each frame checked holds one as_of_date partition. cluster_id and distance are null only for
# customers left out of the clustering (segment.buyers_only), who carry the prospect segment.
@register("gold.customer_segments")
def _customer_segments(sc: SuiteContext) -> list[gxe.Expectation]:
    from crm_spark.schemas import CUSTOMER_SEGMENTS_DDL

    s = sc.settings.segment
    return [
        *columns(_ddl_columns(CUSTOMER_SEGMENTS_DDL)),
        *keys(["customer_id", "as_of_date"]),
        *not_null("segment_name"),
        *row_count_change(sc),
        between("cluster_id", 0, s.k_max - 1),
        between("distance_to_centroid", 0.0),
    ]


@register("gold.segment_profiles")
def _segment_profiles(sc: SuiteContext) -> list[gxe.Expectation]:
    from crm_spark.schemas import SEGMENT_PROFILES_DDL

    s = sc.settings.segment
    return [
        *columns(_ddl_columns(SEGMENT_PROFILES_DDL)),
        *keys(["as_of_date", "segment_name"]),
        gxe.ExpectColumnValuesToBeUnique(column="cluster_id"),  # nulls (the prospect row) are ignored
        gxe.ExpectTableRowCountToBeBetween(min_value=1, max_value=s.k_max + 1),
        *not_null("customers", "customer_share", "revenue_share"),
        between("customers", 1),
        between("customer_share", 0.0, 1.0),
        between("revenue_share", 0.0, 1.0),
        # shares of one date add up to 1 (floating-point slack)
        gxe.ExpectColumnSumToBeBetween(column="customer_share", min_value=1 - 1e-9, max_value=1 + 1e-9),
    ]


def reject_share(sc: SuiteContext) -> list[gxe.Expectation]:
    """At least (1 - refine.max_reject_share) of the batch's mapped rows were accepted."""
    if not sc.batch_rows:
        return []
    floor = math.ceil(sc.batch_rows * (1 - sc.settings.refine.max_reject_share))
    return [gxe.ExpectTableRowCountToBeBetween(min_value=floor)]


def _silver_suite(target: str) -> Suite:
    from crm_spark.schemas import KEYS, silver_ddl_columns
    from crm_spark.transforms.refine import TARGETS

    def suite(sc: SuiteContext) -> list[gxe.Expectation]:
        spec = TARGETS[target]
        out = columns(silver_ddl_columns(target)) + keys(KEYS[target]) + reject_share(sc)
        for f in spec.fields:
            if f.allowed is not None:
                out.append(in_set(f.name, f.allowed))
            if (f.low is not None or f.high is not None) and f.name in silver_ddl_columns(target):
                out.append(between(f.name, f.low, f.high))
        return out

    return suite


for _target in ("customers", "products", "orders", "order_items", "web_events", "social_interactions", "feedback",
                "churn_labels"):
    SUITES[f"silver.{_target}"] = _silver_suite(_target)
