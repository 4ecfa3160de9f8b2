"""Unit tests of the customer-feature transforms on small hand-made silver frames.

Expected values are worked out by hand in the comments, never with the code under test.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from chispa import assert_df_equality
from pyspark.sql import DataFrame, SparkSession

from crm_spark.config import FeaturesSettings, SegmentRule
from crm_spark.contracts import table
from crm_spark.transforms.features import customer_features, rfm_segment

AS_OF = date(2024, 6, 30)
DEFAULTS = FeaturesSettings()


def silver(spark: SparkSession, source: str, rows: Sequence[dict[str, Any]]) -> DataFrame:
    """A frame with the silver contract schema of ``source``; columns a row leaves out are null."""
    schema = table(f"silver.{source}").schema
    for row in rows:
        unknown = set(row) - set(schema.fieldNames())
        assert not unknown, f"not columns of silver.{source}: {unknown}"
    return spark.createDataFrame([tuple(row.get(f.name) for f in schema.fields) for row in rows], schema)


def customer(cid: str, signup: date) -> dict[str, Any]:
    return {"customer_id": cid, "signup_date": signup}


def order(oid: str, cid: str, day: date, status: str = "completed") -> dict[str, Any]:
    midnight = datetime.combine(day, datetime.min.time())
    return {"order_id": oid, "customer_id": cid, "order_date": day, "order_ts": midnight, "status": status}


def item(oid: str, amount: str, *, product: str = "p1", quantity: int = 1, line: int = 1) -> dict[str, Any]:
    return {"order_id": oid, "line_no": line, "product_id": product, "quantity": quantity,
            "line_amount": Decimal(amount)}


def event(cid: str, session: str, ts: datetime, kind: str = "page_view", seconds: int = 0) -> dict[str, Any]:
    return {"event_id": f"{session}-{ts.isoformat()}-{kind}", "customer_id": cid, "session_id": session,
            "event_ts": ts, "event_type": kind, "duration_sec": seconds}


def features(
    spark: SparkSession,
    *,
    as_of: Sequence[date] = (AS_OF,),
    customers: Sequence[dict[str, Any]] = (),
    orders: Sequence[dict[str, Any]] = (),
    items: Sequence[dict[str, Any]] = (),
    products: Sequence[dict[str, Any]] = ({"product_id": "p1", "category": "shoes"},),
    web: Sequence[dict[str, Any]] = (),
    social: Sequence[dict[str, Any]] = (),
    feedback: Sequence[dict[str, Any]] = (),
    settings: FeaturesSettings = DEFAULTS,
    lines_known: bool = True,
) -> DataFrame:
    return customer_features(
        customers=silver(spark, "customers", customers),
        orders=silver(spark, "orders", orders),
        order_items=silver(spark, "order_items", items),
        products=silver(spark, "products", products),
        web_events=silver(spark, "web_events", web),
        social_interactions=silver(spark, "social_interactions", social),
        feedback=silver(spark, "feedback", feedback),
        as_of=as_of,
        segments=settings.segments,
        no_orders_segment=settings.no_orders_segment,
        high_tier_percentile=settings.high_tier_percentile,
        mid_tier_percentile=settings.mid_tier_percentile,
        missing_rating=settings.missing_rating,
        missing_nps=settings.missing_nps,
        count_zero_value_orders=settings.count_zero_value_orders,
        order_lines_known=lines_known,
    )


def pick(df: DataFrame, *columns: str) -> DataFrame:
    return df.select("customer_id", *columns).orderBy("customer_id")


def expect(spark: SparkSession, ddl: str, rows: list[tuple[Any, ...]]) -> DataFrame:
    return spark.createDataFrame(rows, f"customer_id string, {ddl}")


# A small world used by the point-in-time tests: two buyers, a browser, all kinds of activity.
WORLD: dict[str, list[dict[str, Any]]] = {
    "customers": [customer("c1", date(2024, 1, 1)), customer("c2", date(2024, 2, 1)), customer("c3", date(2024, 5, 1))],
    "orders": [order("o1", "c1", date(2024, 3, 1)), order("o2", "c1", date(2024, 6, 20), "returned"),
               order("o3", "c2", date(2024, 6, 30))],
    "items": [item("o1", "20.00"), item("o2", "15.00"), item("o3", "7.50")],
    "web": [event("c3", "s1", datetime(2024, 6, 30, 23, 59, 59), "add_to_cart", 60)],
    "social": [{"interaction_id": "i1", "customer_id": "c1", "ts": datetime(2024, 6, 1), "sentiment": 0.5}],
    "feedback": [{"feedback_id": "f1", "customer_id": "c2", "ts": datetime(2024, 6, 2), "rating": 4, "nps": 9,
                  "category": "complaint"}],
}


def world_plus(**extra: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    return {name: [*rows, *extra.get(name, [])] for name, rows in WORLD.items()}


def test_order_one_day_after_as_of_changes_nothing(spark: SparkSession) -> None:
    before = features(spark, **WORLD)
    after = features(
        spark,
        **world_plus(
            orders=[order("o9", "c1", date(2024, 7, 1)), order("o10", "c3", date(2024, 7, 1)),
                    order("o11", "c_new", date(2024, 7, 1))],
            items=[item("o9", "999.00"), item("o10", "5.00"), item("o11", "5.00")],
        ),
    )
    assert_df_equality(after, before, ignore_row_order=True)


def test_activity_after_as_of_changes_nothing(spark: SparkSession) -> None:
    midnight = datetime(2024, 7, 1, 0, 0, 0)
    before = features(spark, **WORLD)
    after = features(
        spark,
        **world_plus(
            customers=[customer("c4", date(2024, 7, 1))],
            web=[event("c1", "s9", midnight, "add_to_cart", 600), event("c3", "s1", midnight, "checkout")],
            social=[{"interaction_id": "i9", "customer_id": "c1", "ts": midnight, "sentiment": -1.0}],
            feedback=[{"feedback_id": "f9", "customer_id": "c1", "ts": midnight, "rating": 1, "nps": 0,
                       "category": "complaint"}],
        ),
    )
    assert_df_equality(after, before, ignore_row_order=True)


def test_rfm_and_spend_windows_from_completed_orders(spark: SparkSession) -> None:
    # o1 on 2024-03-01 (121 days before), o2 on 2024-06-10 (20 days before), as of 2024-06-30.
    df = features(
        spark,
        customers=[customer("c1", date(2024, 1, 1))],
        orders=[order("o1", "c1", date(2024, 3, 1)), order("o2", "c1", date(2024, 6, 10))],
        items=[item("o1", "20.00"), item("o2", "15.50", product="p2"), item("o2", "4.50", line=2)],
        products=[{"product_id": "p1", "category": "shoes"}, {"product_id": "p2", "category": "bags"}],
    )
    actual = pick(df, "recency_days", "frequency", "monetary", "avg_order_value", "tenure_days", "spend_30d",
                  "spend_90d", "spend_365d", "orders_30d", "orders_90d", "orders_365d", "distinct_categories")
    # tenure: Jan 1 -> Jun 30 2024 = 31 + 29 + 31 + 30 + 31 + 29 = 181 days.
    expected = expect(
        spark,
        "recency_days int, frequency int, monetary double, avg_order_value double, tenure_days int, spend_30d double, "
        "spend_90d double, spend_365d double, orders_30d int, orders_90d int, orders_365d int, distinct_categories int",
        [("c1", 20, 2, 40.0, 20.0, 181, 20.0, 20.0, 40.0, 1, 1, 2, 2)],
    )
    assert_df_equality(actual, expected, ignore_nullable=True)


def test_an_order_without_value_is_not_a_purchase_unless_counted(spark: SparkSession) -> None:
    # c1: o1 paid on 2024-03-01, o2 on 2024-06-20 all fully discounted lines (0.00). c2: o3 on
    # 2024-06-25 has no accepted line (its zero-priced lines were quarantined), value unknown.
    world = {
        "customers": [customer("c1", date(2024, 1, 1)), customer("c2", date(2024, 1, 1))],
        "orders": [order("o1", "c1", date(2024, 3, 1)), order("o2", "c1", date(2024, 6, 20)),
                   order("o3", "c2", date(2024, 6, 25))],
        "items": [item("o1", "20.00"), item("o2", "0.00"), item("o2", "0.00", line=2)],
    }
    columns = ("recency_days", "frequency", "monetary", "orders_30d", "has_orders")
    ddl = "recency_days int, frequency int, monetary double, orders_30d int, has_orders boolean"
    counted = DEFAULTS.model_copy(update={"count_zero_value_orders": True})

    # c1: one purchase, 121 days ago; c2: none (recency is then the tenure, 181 days)
    assert_df_equality(pick(features(spark, **world), *columns),
                       expect(spark, ddl, [("c1", 121, 1, 20.0, 0, True), ("c2", 181, 0, 0.0, 0, False)]),
                       ignore_nullable=True)
    assert_df_equality(pick(features(spark, **world, settings=counted), *columns),
                       expect(spark, ddl, [("c1", 10, 2, 20.0, 1, True), ("c2", 5, 1, 0.0, 1, True)]),
                       ignore_nullable=True)
    # Orders without any order-line table (orders-only data): every completed order is a purchase.
    assert_df_equality(pick(features(spark, **{**world, "items": []}, lines_known=False), *columns),
                       expect(spark, ddl, [("c1", 10, 2, 0.0, 1, True), ("c2", 5, 1, 0.0, 1, True)]),
                       ignore_nullable=True)


def test_windows_hold_the_as_of_date_and_the_days_before_it(spark: SparkSession) -> None:
    # One 1.00 order at each of 0, 29, 30, 89, 90, 364, 365 days before the as-of date.
    offsets = (0, 29, 30, 89, 90, 364, 365)
    df = features(
        spark,
        customers=[customer("c1", date(2023, 1, 1))],
        orders=[order(f"o{n}", "c1", AS_OF - timedelta(days=n)) for n in offsets],
        items=[item(f"o{n}", "1.00") for n in offsets],
    )
    actual = pick(df, "orders_30d", "orders_90d", "orders_365d", "spend_30d", "frequency")
    expected = expect(spark, "orders_30d int, orders_90d int, orders_365d int, spend_30d double, frequency int",
                      [("c1", 2, 4, 6, 2.0, 7)])
    assert_df_equality(actual, expected, ignore_nullable=True)


def test_returned_order_adds_no_spend_and_counts_in_return_rate(spark: SparkSession) -> None:
    df = features(
        spark,
        customers=[customer("c1", date(2024, 1, 1))],
        orders=[order("o1", "c1", date(2024, 6, 1)), order("o2", "c1", date(2024, 6, 5), "returned")],
        items=[item("o1", "50.00"), item("o2", "30.00")],
    )
    # The returned order was refunded: monetary 50, one completed order, 1 of 2 orders returned.
    actual = pick(df, "frequency", "monetary", "avg_order_value", "recency_days", "return_rate")
    expected = expect(
        spark,
        "frequency int, monetary double, avg_order_value double, recency_days int, return_rate double",
        [("c1", 1, 50.0, 50.0, 29, 0.5)],
    )
    assert_df_equality(actual, expected, ignore_nullable=True)


def test_returned_lines_lower_the_order_value(spark: SparkSession) -> None:
    # A completed order of 40.00 with one line of -10.00 sent back: 30.00 spent.
    df = features(
        spark,
        customers=[customer("c1", date(2024, 1, 1))],
        orders=[order("o1", "c1", date(2024, 6, 1))],
        items=[item("o1", "40.00", quantity=2), item("o1", "-10.00", quantity=-1, line=2)],
    )
    assert_df_equality(pick(df, "monetary"), expect(spark, "monetary double", [("c1", 30.0)]), ignore_nullable=True)


def test_return_document_with_negative_value_lowers_monetary(spark: SparkSession) -> None:
    # Invoice-style data: the return is its own order, status returned, value -15.00.
    df = features(
        spark,
        customers=[customer("c1", date(2024, 1, 1))],
        orders=[order("o1", "c1", date(2024, 6, 1)), order("c-o1", "c1", date(2024, 6, 3), "returned")],
        items=[item("o1", "40.00"), item("c-o1", "-15.00", quantity=-1)],
    )
    actual = pick(df, "monetary", "frequency", "return_rate")
    expected = expect(spark, "monetary double, frequency int, return_rate double", [("c1", 25.0, 1, 0.5)])
    assert_df_equality(actual, expected, ignore_nullable=True)


def test_cancelled_order_counts_nowhere(spark: SparkSession) -> None:
    df = features(
        spark,
        customers=[customer("c1", date(2024, 1, 1))],
        orders=[order("o1", "c1", date(2024, 5, 1)), order("o2", "c1", date(2024, 6, 29), "cancelled")],
        items=[item("o1", "10.00"), item("o2", "99.00")],
    )
    actual = pick(df, "frequency", "monetary", "recency_days", "return_rate", "orders_30d")
    expected = expect(spark, "frequency int, monetary double, recency_days int, return_rate double, orders_30d int",
                      [("c1", 1, 10.0, 60, 0.0, 0)])
    assert_df_equality(actual, expected, ignore_nullable=True)


def test_customer_with_only_web_events_gets_a_complete_row(spark: SparkSession) -> None:
    df = features(
        spark,
        customers=[customer("c2", date(2024, 6, 1))],
        web=[
            event("c2", "s1", datetime(2024, 6, 20, 10), "page_view", 120),
            event("c2", "s1", datetime(2024, 6, 20, 10, 5), "add_to_cart", 60),
            event("c2", "s2", datetime(2024, 6, 25, 9), "page_view", 30),
            event("c2", "s2", datetime(2024, 6, 25, 9, 1), "add_to_cart", 30),
            event("c2", "s2", datetime(2024, 6, 25, 9, 2), "checkout", 0),
        ],
    )
    # Tenure Jun 1 -> Jun 30 = 29 days, also its recency; 240 s = 4 minutes; s1 abandoned, s2 not.
    expected = spark.createDataFrame(
        [("c2", AS_OF, 29, 0, 0.0, 0, 0, 0, "Prospect", "low", 29, 0.0, 0.0, 0.0, 0.0, 0, 0, 0, 0, 0.0,
          2, 4.0, 0.5, 0, 0.0, 3.0, 7.5, 0, 5, False)],
        table("gold.customer_features").schema,
    )
    assert_df_equality(df, expected, ignore_nullable=True)


def test_customer_without_any_activity_gets_defaults(spark: SparkSession) -> None:
    df = features(spark, customers=[customer("c5", date(2024, 6, 20))])
    # Never visited: days since last visit = tenure = 10; no feedback: the configured fills.
    actual = pick(df, "recency_days", "days_since_last_visit", "sessions_30d", "cart_abandonment_rate",
                  "mean_sentiment", "mean_rating", "nps", "rfm_segment", "value_tier", "has_orders")
    expected = expect(
        spark,
        "recency_days int, days_since_last_visit int, sessions_30d int, cart_abandonment_rate double, "
        "mean_sentiment double, mean_rating double, nps double, rfm_segment string, value_tier string, "
        "has_orders boolean",
        [("c5", 10, 10, 0, 0.0, 0.0, 3.0, 7.5, "Prospect", "low", False)],
    )
    assert_df_equality(actual, expected, ignore_nullable=True)


def test_social_and_feedback_means_and_windowed_counts(spark: SparkSession) -> None:
    df = features(
        spark,
        customers=[customer("c1", date(2023, 1, 1))],
        social=[
            {"interaction_id": "i1", "customer_id": "c1", "ts": datetime(2024, 3, 1), "sentiment": -0.5},  # 121 d
            {"interaction_id": "i2", "customer_id": "c1", "ts": datetime(2024, 6, 20), "sentiment": 0.25},
            {"interaction_id": "i3", "customer_id": "c1", "ts": datetime(2024, 6, 30), "sentiment": None},
        ],
        feedback=[
            {"feedback_id": "f1", "customer_id": "c1", "ts": datetime(2024, 3, 1), "rating": 2, "nps": 3,
             "category": "complaint"},
            {"feedback_id": "f2", "customer_id": "c1", "ts": datetime(2024, 6, 25), "rating": 5, "nps": 10,
             "category": "complaint"},
            {"feedback_id": "f3", "customer_id": "c1", "ts": datetime(2024, 6, 29), "rating": None, "nps": 8,
             "category": "praise"},
        ],
    )
    # sentiment mean (-0.5 + 0.25) / 2; rating (2 + 5) / 2; nps (3 + 10 + 8) / 3; one complaint in 90 days.
    actual = pick(df, "social_interactions_90d", "mean_sentiment", "mean_rating", "nps", "complaints_90d")
    expected = expect(spark, "social_interactions_90d int, mean_sentiment double, mean_rating double, nps double, "
                      "complaints_90d int", [("c1", 2, -0.125, 3.5, 7.0, 1)])
    assert_df_equality(actual, expected, ignore_nullable=True)


def test_universe_is_customers_known_by_the_as_of_date(spark: SparkSession) -> None:
    df = features(
        spark,
        customers=[customer("early", date(2024, 6, 1)), customer("signs_up_later", date(2024, 7, 1)),
                   customer("ordered_before_signup", date(2024, 7, 15))],
        orders=[order("o1", "ordered_before_signup", date(2024, 6, 25)),
                order("o2", "not_in_customers", date(2024, 6, 20))],
        items=[item("o1", "5.00"), item("o2", "5.00")],
    )
    # Tenure starts at the earlier of signup and first order.
    actual = pick(df, "tenure_days", "has_orders")
    expected = expect(spark, "tenure_days int, has_orders boolean",
                      [("early", 29, False), ("not_in_customers", 10, True), ("ordered_before_signup", 5, True)])
    assert_df_equality(actual, expected, ignore_nullable=True)


def test_quintile_scores_give_ties_the_same_score(spark: SparkSession) -> None:
    # Ten buyers, c0..c9, with 1,1,1,1,2,2,3,4,5,6 orders of 10.00, all on the same day.
    counts = [1, 1, 1, 1, 2, 2, 3, 4, 5, 6]
    orders, items = [], []
    for i, n in enumerate(counts):
        for k in range(n):
            orders.append(order(f"o{i}-{k}", f"c{i}", date(2024, 6, 1)))
            items.append(item(f"o{i}-{k}", "10.00"))
    df = features(spark, customers=[customer(f"c{i}", date(2024, 1, 1)) for i in range(10)], orders=orders, items=items)
    # f score = 1 + floor(5 * buyers with fewer orders / 10): 0 -> 1, 4 -> 3, 6 -> 4, 7 -> 4, 8 -> 5, 9 -> 5.
    # Everybody ties on recency (no one is strictly worse): r = 1. m follows f (10.00 per order).
    f_scores = [1, 1, 1, 1, 3, 3, 4, 4, 5, 5]
    expected = expect(spark, "r_score int, f_score int, m_score int",
                      [(f"c{i}", 1, f, f) for i, f in enumerate(f_scores)])
    assert_df_equality(pick(df, "r_score", "f_score", "m_score"), expected, ignore_nullable=True)


def test_recency_score_is_highest_for_the_latest_buyer(spark: SparkSession) -> None:
    # c1..c5 last bought 1..5 days before the as-of date: the fewer days, the more buyers are worse.
    df = features(
        spark,
        customers=[customer(f"c{n}", date(2024, 1, 1)) for n in range(1, 6)],
        orders=[order(f"o{n}", f"c{n}", AS_OF - timedelta(days=n)) for n in range(1, 6)],
        items=[item(f"o{n}", "10.00") for n in range(1, 6)],
    )
    expected = expect(spark, "recency_days int, r_score int", [(f"c{n}", n, 6 - n) for n in range(1, 6)])
    assert_df_equality(pick(df, "recency_days", "r_score"), expected, ignore_nullable=True)


def test_value_tier_follows_configured_monetary_percentiles(spark: SparkSession) -> None:
    # c01..c10 spend 10..100: share of buyers spending less = 0.0 .. 0.9.
    tiers = FeaturesSettings(high_tier_percentile=0.9, mid_tier_percentile=0.3)
    df = features(
        spark,
        customers=[customer(f"c{n:02d}", date(2024, 1, 1)) for n in range(1, 11)],
        orders=[order(f"o{n}", f"c{n:02d}", date(2024, 6, 1)) for n in range(1, 11)],
        items=[item(f"o{n}", f"{10 * n}.00") for n in range(1, 11)],
        settings=tiers,
    )
    # share >= 0.9 -> high (c10); >= 0.3 -> mid (c04..c09); else low (c01..c03).
    expected_tiers = ["low"] * 3 + ["mid"] * 6 + ["high"]
    expected = expect(spark, "value_tier string", [(f"c{n:02d}", t) for n, t in zip(range(1, 11), expected_tiers)])
    assert_df_equality(pick(df, "value_tier"), expected, ignore_nullable=True)


def test_segment_is_the_first_matching_rule(spark: SparkSession) -> None:
    rules = [SegmentRule(segment="Top", r=(4, 5), f=(4, 5)), SegmentRule(segment="Recent", r=(4, 5)),
             SegmentRule(segment="Rest", r=(1, 3), f=(1, 3))]
    scores = spark.createDataFrame(
        [("a", True, 5, 5, 1), ("b", True, 4, 1, 5), ("c", True, 2, 2, 2), ("d", True, 2, 5, 5), ("e", False, 0, 0, 0)],
        "customer_id string, has_orders boolean, r_score int, f_score int, m_score int",
    )
    actual = scores.select("customer_id", rfm_segment(rules, no_orders_segment="None yet").alias("rfm_segment"))
    # d (r=2, f=5) matches no rule: null, which the gate rejects.
    expected = expect(spark, "rfm_segment string", [("a", "Top"), ("b", "Recent"), ("c", "Rest"), ("d", None),
                                                    ("e", "None yet")])
    assert_df_equality(actual, expected, ignore_nullable=True)


@pytest.mark.slow
def test_several_dates_equal_one_date_at_a_time(spark: SparkSession) -> None:
    dates = [date(2024, 6, 20), AS_OF]
    together = features(spark, as_of=dates, **WORLD)
    one_by_one = features(spark, as_of=[dates[0]], **WORLD)
    for d in dates[1:]:
        one_by_one = one_by_one.unionByName(features(spark, as_of=[d], **WORLD))
    assert_df_equality(together, one_by_one, ignore_row_order=True)


def test_default_segment_table_covers_every_score_combination() -> None:
    with pytest.raises(ValueError, match="without a segment"):
        FeaturesSettings(segments=[SegmentRule(segment="Only top", r=(5, 5))])
