"""Customer features as of a date (SPEC section 5, stage 3): RFM, value tiers and behaviour.

Grain of the result: one row per (customer_id, as_of_date), in the column order and types of
``gold.customer_features`` (its contract: :data:`crm_spark.contracts.gold.CUSTOMER_FEATURES`).

Point in time: a row for as-of date D uses only source rows dated on or before D (orders by
``order_date``; web events, social interactions and feedback by the UTC calendar date of their
timestamp). Order items count through their order's date. Product categories come from the
current product table (silver keeps no product history).

Several as-of dates are computed in one pass: each source is joined once with the small frame
of dates, filtered to rows on or before each date, and aggregated by (customer_id, as_of_date).
Every value is a function of one date's rows only, so a backfill of several dates equals running
the dates one by one. Sums are exact (decimal or integer arithmetic), so re-runs return
identical doubles whatever the order Spark adds rows in.

Windows: "last N days" (``_30d``, ``_90d``, ``_365d``) are the N calendar days ending on the
as-of date, both ends included: D - N + 1 .. D.

Customer universe at D: customers of ``silver.customers`` whose ``signup_date`` is on or before
D, plus customers with an order (any status) on or before D, including ids missing from
``silver.customers`` (their tenure starts at their first order). A customer's start date is the
earlier of the signup date and the first order date; rows without a customer id are ignored, and
so are web events, interactions and feedback of customers outside the universe.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import date
from typing import Protocol

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from crm_spark.contracts.gold import CUSTOMER_FEATURES
from crm_spark.contracts.silver import ATTRIBUTE_VALUE_COLUMNS

WINDOWS_DAYS = (30, 90, 365)
SESSION_WINDOW_DAYS = 30
SOCIAL_WINDOW_DAYS = 90
COMPLAINT_WINDOW_DAYS = 90
RFM_SCORE_BUCKETS = 5

_KEY = ["customer_id", "as_of_date"]
_DAYS_BEFORE = "_days_before"
# Exact decimal arithmetic for sums, so a re-run gives bit-identical doubles.
_SENTIMENT_DECIMAL = "decimal(12,8)"


class SegmentRuleLike(Protocol):
    """One row of the RFM segment table (``crm_spark.config.SegmentRule`` satisfies it)."""

    @property
    def segment(self) -> str: ...

    @property
    def r(self) -> tuple[int, int]: ...

    @property
    def f(self) -> tuple[int, int]: ...

    @property
    def m(self) -> tuple[int, int]: ...


def as_of_frame(anchor: DataFrame, dates: Iterable[date]) -> DataFrame:
    """One row per distinct as-of date (column ``as_of_date``), on ``anchor``'s session.

    Built lazily from literals (no I/O); marked for broadcast because it is joined with every
    source.
    """
    distinct = sorted(set(dates))
    if not distinct:
        raise ValueError("at least one as-of date is needed")
    frame = anchor.sparkSession.range(1).select(F.explode(F.array(*(F.lit(d) for d in distinct))).alias("as_of_date"))
    return F.broadcast(frame)


def point_in_time(events: DataFrame, dates: DataFrame, *, date_col: str) -> DataFrame:
    """``events`` x as-of dates, keeping each row for the dates on or after its ``date_col``.

    Adds ``_days_before`` = as_of_date - date_col (0 on the as-of date itself); a row is in the
    last N days exactly when ``_days_before < N``.
    """
    return (
        events.crossJoin(dates)
        .where(F.col(date_col) <= F.col("as_of_date"))
        .withColumn(_DAYS_BEFORE, F.datediff(F.col("as_of_date"), F.col(date_col)))
    )


def _within(days: int) -> Column:
    return F.col(_DAYS_BEFORE) < days


def order_values(order_items: DataFrame, products: DataFrame) -> DataFrame:
    """One row per order_id: ``order_value`` (decimal) and ``categories`` (array of strings).

    ``order_value`` is the sum of the order's ``line_amount``; a line with a negative quantity
    is a return of goods and lowers it. ``categories`` are the distinct product categories of
    the lines with a positive quantity (unknown products have none). ``products`` holds each
    product_id once (the silver key).
    """
    return (
        order_items.join(products.select("product_id", "category"), "product_id", "left")
        .groupBy("order_id")
        .agg(
            F.sum("line_amount").alias("order_value"),
            F.collect_set(F.when(F.col("quantity") > 0, F.col("category"))).alias("categories"),
        )
    )


def order_totals(order_items: DataFrame) -> DataFrame:
    """One row per order_id with accepted lines: ``order_value``, the sum of its ``line_amount``."""
    return order_items.groupBy("order_id").agg(F.sum("line_amount").alias("order_value"))


def is_purchase(
    status: Column, order_value: Column, *, count_zero_value_orders: bool = False, lines_known: bool = True
) -> Column:
    """Whether an order is a purchase: the one definition that features, baskets and churn labels share.

    A purchase is a completed order whose accepted lines add up to more than 0. Not one: an
    order whose lines add up to 0 or less, or that has no accepted line (``order_value`` null:
    its lines were all quarantined, e.g. zero-priced samples and adjustments as
    ``out_of_range_unit_price``), unless ``count_zero_value_orders``. Without order lines at all
    (``lines_known`` false: bring-your-own data with orders only) every completed order is one.
    """
    completed = F.lower(status) == "completed"
    if count_zero_value_orders or not lines_known:
        return completed
    return completed & F.coalesce(order_value > 0, F.lit(False))


def purchases(orders: DataFrame, order_items: DataFrame | None, *, count_zero_value_orders: bool = False) -> DataFrame:
    """The rows of ``orders`` that are purchases (:func:`is_purchase`), valued from ``order_items``
    (None: no order-line table) only when the rule needs their value."""
    if order_items is None or count_zero_value_orders:
        return orders.where(is_purchase(F.col("status"), F.lit(None), lines_known=False))
    valued = orders.join(order_totals(order_items), "order_id", "left")
    return valued.where(is_purchase(F.col("status"), F.col("order_value"))).drop("order_value")


def status_timelines(history: DataFrame) -> DataFrame:
    """One row per order of ``silver.order_status_history``: ``_timeline``, its statuses as
    (at: the time it took it, status) structs, oldest first (two changes on one day keep their order)."""
    return history.groupBy("order_id").agg(
        F.array_sort(F.collect_list(F.struct(F.col("status_from").alias("at"), "status"))).alias("_timeline")
    )


def status_on(timeline: Column, day: Column, latest: Column) -> Column:
    """The status an order had at the end of ``day`` (UTC; its timeline's last entry by then);
    ``latest`` when the order has no timeline (a lake refined before the history was kept)."""
    known = F.filter(timeline, lambda entry: F.to_date(entry["at"]) <= day)
    return F.coalesce(F.try_element_at(known, F.lit(-1))["status"], latest)


def order_features(
    orders: DataFrame, values: DataFrame, dates: DataFrame, *, count_zero_value_orders: bool = False,
    lines_known: bool = True, status_history: DataFrame | None = None,
) -> DataFrame:
    """One row per (customer_id, as_of_date) with at least one order on or before the date.

    An order's status is the one it had on the as-of date (``status_history``,
    ``silver.order_status_history``): a completed order returned later is completed as of
    earlier dates. Without a history, ``orders``' own (latest) status.

    Status rules (``net`` is an order's contribution to spend):

    * completed: a purchase (:func:`is_purchase`: with accepted lines adding up to more than 0)
      counts as an order (``frequency``, ``orders_Nd``,
      ``last_completed_date``, ``distinct_categories``); ``net`` = its order value (already net of
      returned lines), for every completed order.
    * returned: the customer was refunded, so a positive order value contributes 0; a negative
      value (a return document, as in invoice exports) contributes that negative amount. It
      counts in ``returned_orders``.
    * cancelled (or any other status): never paid; contributes nothing but the first-order date.

    Columns: first_order_date (any status), last_completed_date, frequency, returned_orders,
    net_spend and spend_{30,90,365}d (decimal, not yet clamped), orders_{30,90,365}d,
    distinct_categories (of completed orders).
    """
    status = F.lower(F.col("status"))
    completed = status == "completed"
    returned = status == "returned"
    value = F.coalesce(F.col("order_value"), F.lit(0))
    net = F.when(completed, value).when(returned, F.least(value, F.lit(0))).otherwise(F.lit(0))
    purchase = is_purchase(F.col("status"), F.col("order_value"), count_zero_value_orders=count_zero_value_orders,
                           lines_known=lines_known)
    rows = (
        orders.where(F.col("customer_id").isNotNull() & F.col("order_date").isNotNull())
        .select("order_id", "customer_id", "order_date", "status")
        .join(values, "order_id", "left")
    )
    if status_history is not None:
        rows = rows.join(status_timelines(status_history), "order_id", "left")
    pit = point_in_time(rows, dates, date_col="order_date")
    if status_history is not None:
        pit = pit.withColumn("status", status_on(F.col("_timeline"), F.col("as_of_date"), F.col("status"))).drop(
            "_timeline"
        )
    pit = pit.withColumn("_net", net).withColumn("_completed", purchase)
    done = F.col("_completed")
    windowed = []
    for days in WINDOWS_DAYS:
        windowed.append(F.sum(F.when(_within(days), F.col("_net"))).alias(f"spend_{days}d"))
        windowed.append(F.count(F.when(done & _within(days), True)).alias(f"orders_{days}d"))
    return pit.groupBy(*_KEY).agg(
        F.min("order_date").alias("first_order_date"),
        F.max(F.when(done, F.col("order_date"))).alias("last_completed_date"),
        F.count(F.when(done, True)).alias("frequency"),
        F.count(F.when(returned, True)).alias("returned_orders"),
        F.sum("_net").alias("net_spend"),
        *windowed,
        F.size(F.array_distinct(F.flatten(F.collect_list(F.when(done, F.col("categories")))))).alias(
            "distinct_categories"
        ),
    )


def web_features(web_events: DataFrame, dates: DataFrame) -> DataFrame:
    """One row per (customer_id, as_of_date) with a web event on or before the date.

    A session is a distinct ``session_id`` of the customer; events without a customer id or a
    session id are not attributable to a visit and are ignored.

    * ``sessions_30d``: sessions with an event in the last 30 days.
    * ``browse_seconds_30d``: sum of ``duration_sec`` of events in the last 30 days.
    * ``cart_sessions`` / ``abandoned_sessions``: sessions (up to the date) with an
      ``add_to_cart``, and those among them without a ``checkout`` on or before the date.
    * ``last_visit_date``: date of the latest event.
    """
    events = web_events.where(
        F.col("customer_id").isNotNull() & F.col("session_id").isNotNull() & F.col("event_ts").isNotNull()
    ).select(
        "customer_id",
        "session_id",
        F.to_date("event_ts").alias("event_date"),
        F.lower(F.col("event_type")).alias("event_type"),
        F.coalesce(F.col("duration_sec"), F.lit(0)).alias("duration_sec"),
    )
    recent = _within(SESSION_WINDOW_DAYS)
    sessions = (
        point_in_time(events, dates, date_col="event_date")
        .groupBy(*_KEY, "session_id")
        .agg(
            F.max("event_date").alias("last_event_date"),
            F.max(recent).alias("recent"),
            F.sum(F.when(recent, F.col("duration_sec"))).alias("seconds_recent"),
            F.max(F.col("event_type") == "add_to_cart").alias("carted"),
            F.max(F.col("event_type") == "checkout").alias("checked_out"),
        )
    )
    return sessions.groupBy(*_KEY).agg(
        F.max("last_event_date").alias("last_visit_date"),
        F.count(F.when(F.col("recent"), True)).alias("sessions_30d"),
        F.sum("seconds_recent").alias("browse_seconds_30d"),
        F.count(F.when(F.col("carted"), True)).alias("cart_sessions"),
        F.count(F.when(F.col("carted") & ~F.col("checked_out"), True)).alias("abandoned_sessions"),
    )


def social_features(social_interactions: DataFrame, dates: DataFrame) -> DataFrame:
    """One row per (customer_id, as_of_date) with an interaction on or before the date.

    ``social_interactions_90d`` counts interactions of the last 90 days; ``mean_sentiment`` is
    the mean sentiment (-1..1) of all interactions up to the date that carry one (exact decimal
    mean, null when none).
    """
    rows = social_interactions.where(F.col("customer_id").isNotNull() & F.col("ts").isNotNull()).select(
        "customer_id",
        F.to_date("ts").alias("event_date"),
        F.col("sentiment").cast(_SENTIMENT_DECIMAL).alias("sentiment"),
    )
    return (
        point_in_time(rows, dates, date_col="event_date")
        .groupBy(*_KEY)
        .agg(
            F.count(F.when(_within(SOCIAL_WINDOW_DAYS), True)).alias("social_interactions_90d"),
            F.avg("sentiment").alias("mean_sentiment"),
        )
    )


def feedback_features(feedback: DataFrame, dates: DataFrame) -> DataFrame:
    """One row per (customer_id, as_of_date) with feedback on or before the date.

    ``mean_rating`` (1-5) and ``nps`` (mean NPS answer, 0-10) over all feedback up to the date
    that carries one (null when none); ``complaints_90d`` counts feedback of category
    ``complaint`` in the last 90 days.
    """
    rows = feedback.where(F.col("customer_id").isNotNull() & F.col("ts").isNotNull()).select(
        "customer_id",
        F.to_date("ts").alias("event_date"),
        "rating",
        "nps",
        F.lower(F.col("category")).alias("category"),
    )
    return (
        point_in_time(rows, dates, date_col="event_date")
        .groupBy(*_KEY)
        .agg(
            F.avg("rating").alias("mean_rating"),
            F.avg("nps").alias("nps"),
            F.count(F.when((F.col("category") == "complaint") & _within(COMPLAINT_WINDOW_DAYS), True)).alias(
                "complaints_90d"
            ),
        )
    )


def customer_universe(customers: DataFrame, by_order: DataFrame, dates: DataFrame) -> DataFrame:
    """The customers known at each as-of date, with their order aggregates (nulls when none).

    ``by_order`` is :func:`order_features`. Adds ``start_date`` = the earlier of signup date and
    first order date; keeps rows whose start date is on or before the as-of date (a customer
    with neither is not known to have existed yet).
    """
    known = customers.where(F.col("customer_id").isNotNull()).select("customer_id", "signup_date").crossJoin(dates)
    return (
        known.join(by_order, _KEY, "full")
        .withColumn("start_date", F.least(F.col("signup_date"), F.col("first_order_date")))
        .where(F.col("start_date") <= F.col("as_of_date"))
    )


def _ratio(numerator: str, denominator: Column) -> Column:
    """numerator / denominator, 0.0 when the denominator is 0."""
    return F.when(denominator > 0, F.col(numerator) / denominator).otherwise(F.lit(0.0))


def _spend(column: str) -> Column:
    """Net spend as a double, never below 0 (returns of goods bought before the data begins)."""
    return F.greatest(F.coalesce(F.col(column), F.lit(0)), F.lit(0)).cast("double")


def fill_features(frame: DataFrame, *, missing_rating: float, missing_nps: float) -> DataFrame:
    """Turn the joined aggregates into model features with a defined value for every customer.

    Edge-case values (documented contract of ``gold.customer_features``):

    * ``has_orders`` = at least one completed order up to the date.
    * ``tenure_days`` = as_of_date - start_date.
    * ``recency_days`` = days since the last completed order; ``tenure_days`` without one.
    * ``monetary`` = net spend (see :func:`order_features`), floored at 0; ``spend_Nd`` alike.
    * ``avg_order_value`` = monetary / frequency; 0 without completed orders.
    * ``return_rate`` = returned / (completed + returned) orders; 0 when both are 0.
    * ``cart_abandonment_rate`` = abandoned / carted sessions; 0 without carted sessions.
    * ``browse_minutes_30d`` = browse seconds / 60.
    * ``days_since_last_visit`` = days since the latest web event; ``tenure_days`` if none.
    * ``mean_sentiment`` 0.0 (neutral) without interactions; ``mean_rating`` and ``nps`` take
      ``missing_rating`` / ``missing_nps`` without feedback; counts are 0 when nothing happened.
    """
    as_of = F.col("as_of_date")
    frequency = F.coalesce(F.col("frequency"), F.lit(0))
    returned = F.coalesce(F.col("returned_orders"), F.lit(0))
    tenure = F.datediff(as_of, F.col("start_date"))
    counts = {
        name: F.coalesce(F.col(name), F.lit(0))
        for name in (
            *(f"orders_{d}d" for d in WINDOWS_DAYS),
            "distinct_categories",
            "sessions_30d",
            "social_interactions_90d",
            "complaints_90d",
        )
    }
    return frame.select(
        *_KEY,
        F.when(frequency > 0, F.datediff(as_of, F.col("last_completed_date"))).otherwise(tenure).alias("recency_days"),
        frequency.alias("frequency"),
        _spend("net_spend").alias("monetary"),
        tenure.alias("tenure_days"),
        F.when(frequency > 0, _spend("net_spend") / frequency).otherwise(F.lit(0.0)).alias("avg_order_value"),
        *(_spend(f"spend_{d}d").alias(f"spend_{d}d") for d in WINDOWS_DAYS),
        *(column.alias(name) for name, column in counts.items()),
        F.when(frequency + returned > 0, returned / (frequency + returned)).otherwise(F.lit(0.0)).alias("return_rate"),
        (F.coalesce(F.col("browse_seconds_30d"), F.lit(0)) / 60.0).alias("browse_minutes_30d"),
        _ratio("abandoned_sessions", F.coalesce(F.col("cart_sessions"), F.lit(0))).alias("cart_abandonment_rate"),
        F.coalesce(F.col("mean_sentiment").cast("double"), F.lit(0.0)).alias("mean_sentiment"),
        F.coalesce(F.col("mean_rating"), F.lit(float(missing_rating))).alias("mean_rating"),
        F.coalesce(F.col("nps"), F.lit(float(missing_nps))).alias("nps"),
        F.coalesce(F.datediff(as_of, F.col("last_visit_date")), tenure).alias("days_since_last_visit"),
        (frequency > 0).alias("has_orders"),
    )


def rfm_scores(features: DataFrame, *, high_tier_percentile: float, mid_tier_percentile: float) -> DataFrame:
    """Add ``r_score``, ``f_score``, ``m_score`` (1-5) and ``value_tier`` (high / mid / low).

    Scores rank the customers with ``has_orders`` of the same as-of date against each other:
    score = 1 + floor(5 * p) where p is the share of those customers with a strictly worse
    value (r: more days since the last order; f: fewer orders; m: less net spend). Tied values
    therefore always share a score (the lower one), and the result depends on the values only,
    never on row order or customer ids. ``value_tier`` is high when the monetary p >=
    ``high_tier_percentile``, mid when >= ``mid_tier_percentile``, else low. Customers without
    a completed order get scores 0 and tier low: they have no purchase to rank.
    """
    buyers = Window.partitionBy("as_of_date", "has_orders")
    population = F.count(F.lit(1)).over(buyers)

    def worse(order: Column) -> Column:
        # rank() gives ties the same (lowest) rank: rank - 1 = rows strictly before them.
        return F.rank().over(buyers.orderBy(order)) - 1

    def score(worse_count: Column) -> Column:
        # Integer product before the one division: floor is exact at bucket edges.
        bucket = F.floor(worse_count * RFM_SCORE_BUCKETS / population) + 1
        return F.when(F.col("has_orders"), bucket.cast("int")).otherwise(F.lit(0))

    m_share = F.col("_m_worse") / population
    return (
        features.withColumn("_m_worse", worse(F.col("monetary").asc()))
        .withColumn("r_score", score(worse(F.col("recency_days").desc())))
        .withColumn("f_score", score(worse(F.col("frequency").asc())))
        .withColumn("m_score", score(F.col("_m_worse")))
        .withColumn(
            "value_tier",
            F.when(F.col("has_orders") & (m_share >= high_tier_percentile), F.lit("high"))
            .when(F.col("has_orders") & (m_share >= mid_tier_percentile), F.lit("mid"))
            .otherwise(F.lit("low")),
        )
        .drop("_m_worse")
    )


def rfm_segment(segments: Sequence[SegmentRuleLike], *, no_orders_segment: str) -> Column:
    """The segment name: ``no_orders_segment`` without a completed order, else the first rule
    whose inclusive r/f/m ranges hold the scores (null if none does; the gate rejects that)."""
    expr = F.when(~F.col("has_orders"), F.lit(no_orders_segment))
    for rule in segments:
        r = F.col("r_score").between(*rule.r)
        f = F.col("f_score").between(*rule.f)
        m = F.col("m_score").between(*rule.m)
        expr = expr.when(r & f & m, F.lit(rule.segment))
    return expr


def customer_features(
    *,
    customers: DataFrame,
    orders: DataFrame,
    order_items: DataFrame,
    products: DataFrame,
    web_events: DataFrame,
    social_interactions: DataFrame,
    feedback: DataFrame,
    as_of: Iterable[date],
    segments: Sequence[SegmentRuleLike],
    no_orders_segment: str,
    high_tier_percentile: float,
    mid_tier_percentile: float,
    missing_rating: float,
    missing_nps: float,
    count_zero_value_orders: bool = False,
    order_lines_known: bool = True,
    order_status_history: DataFrame | None = None,
) -> DataFrame:
    """``gold.customer_features`` rows for each date in ``as_of``, from silver-shaped frames
    (``order_status_history``: each order's status as of each date, see :func:`order_features`).

    One row per (customer_id, as_of_date) of the customer universe (see the module docstring);
    every source is scanned once for all dates. Column definitions: :func:`order_features`,
    :func:`web_features`, :func:`social_features`, :func:`feedback_features`,
    :func:`fill_features`, :func:`rfm_scores`, :func:`rfm_segment`.
    """
    dates = as_of_frame(orders, as_of)
    by_order = order_features(orders, order_values(order_items, products), dates,
                              count_zero_value_orders=count_zero_value_orders, lines_known=order_lines_known,
                              status_history=order_status_history)
    joined = (
        customer_universe(customers, by_order, dates)
        .join(web_features(web_events, dates), _KEY, "left")
        .join(social_features(social_interactions, dates), _KEY, "left")
        .join(feedback_features(feedback, dates), _KEY, "left")
    )
    filled = fill_features(joined, missing_rating=missing_rating, missing_nps=missing_nps)
    scored = rfm_scores(filled, high_tier_percentile=high_tier_percentile, mid_tier_percentile=mid_tier_percentile)
    with_segment = scored.withColumn("rfm_segment", rfm_segment(segments, no_orders_segment=no_orders_segment))
    return conform(with_segment)


def conform(frame: DataFrame) -> DataFrame:
    """Select and cast to the ``gold.customer_features`` schema (order and types)."""
    return CUSTOMER_FEATURES.conform(frame)


# -- customer attributes ------------------------------------------------------------------
ATTRIBUTE_PREFIX = "attr_"


def with_attributes(rows: DataFrame, attributes: DataFrame | None, kinds: Mapping[str, str]) -> DataFrame:
    """``rows`` (keyed by customer_id, as_of_date) + ``attr_<name>`` per attribute in ``kinds``:
    the value of the customer's latest snapshot dated on or before the row's as-of date (an
    attribute a customer has no snapshot of, or no attributes table at all: null; the churn model
    imputes a missing number with the median and gives a missing category a slot of its own).
    Numeric -> double, boolean -> 0/1, date -> days before the as-of date, categorical -> text.
    One aggregation over the attribute rows of the customers in ``rows``.
    """
    if not kinds:
        return rows
    if attributes is None:
        return rows.select("*", *(
            F.lit(None).cast("string" if k == "categorical" else "double").alias(f"{ATTRIBUTE_PREFIX}{n}")
            for n, k in kinds.items()
        ))
    known = rows.select(*_KEY).join(
        attributes.where(F.col("attribute").isin(*kinds)).select(
            "customer_id", "snapshot_date", "attribute", *ATTRIBUTE_VALUE_COLUMNS.values()
        ),
        "customer_id",
    ).where(F.col("snapshot_date") <= F.col("as_of_date"))
    stored = {k: F.col(c) for k, c in ATTRIBUTE_VALUE_COLUMNS.items()}
    values = {
        "numeric": stored["numeric"],
        "boolean": stored["boolean"].cast("double"),
        "date": F.datediff(F.col("as_of_date"), stored["date"]).cast("double"),
        "categorical": stored["categorical"],
    }
    latest = [
        F.max_by(F.when(F.col("attribute") == n, values[k]), F.when(F.col("attribute") == n, F.col("snapshot_date")))
        .alias(f"{ATTRIBUTE_PREFIX}{n}")
        for n, k in kinds.items()
    ]
    return rows.join(known.groupBy(*_KEY).agg(*latest), list(_KEY), "left")
