"""The seven raw sources: their layout and dirt (``SourceSpec``) and their rows as text.

Each ``*_rows`` function turns a frame of :class:`~crm_spark.generate.activity.World` into the
source's columns as formatted text plus the meta columns the renderer needs: ``_key`` (the
row's key; ``order_id|line_no`` for order lines), ``_t`` (epoch seconds that decide the file and
the order within it), ``_v`` (version of the key) and, for orders and their lines, ``_status``.
"""

from __future__ import annotations

from pyspark.sql import DataFrame, SparkSession

from crm_spark.generate import people

from crm_spark.generate.dirt import (
    Fields,
    NewerVersion,
    OutOfRange,
    SourceSpec,
    pick_text,
    unknown_customer,
    unknown_product,
)
from crm_spark.generate.formats import fmt_decimal, fmt_ts
from crm_spark.generate.model import SECONDS_PER_DAY, Plan

CUSTOMER_COLUMNS = ("customer_id", "first_name", "last_name", "email", "phone", "birth_date", "gender", "city",
                    "country", "signup_date", "acquisition_channel", "updated_at")
PRODUCT_COLUMNS = ("product_id", "product_name", "category", "subcategory", "brand", "list_price")
ORDER_COLUMNS = ("order_id", "customer_id", "order_ts", "channel", "status", "payment_type")
ORDER_ITEM_COLUMNS = ("order_id", "line_no", "product_id", "quantity", "unit_price", "discount")
WEB_EVENT_COLUMNS = ("event_id", "customer_id", "session_id", "event_ts", "event_type", "product_id", "page",
                     "duration_sec", "device")
SOCIAL_COLUMNS = ("interaction_id", "customer_id", "platform", "interaction_type", "sentiment", "ts")
FEEDBACK_COLUMNS = ("feedback_id", "customer_id", "ts", "channel", "rating", "nps", "category", "text", "resolved")

COLUMNS: dict[str, tuple[str, ...]] = {
    "customers": CUSTOMER_COLUMNS,
    "products": PRODUCT_COLUMNS,
    "orders": ORDER_COLUMNS,
    "order_items": ORDER_ITEM_COLUMNS,
    "web_events": WEB_EVENT_COLUMNS,
    "social_interactions": SOCIAL_COLUMNS,
    "feedback": FEEDBACK_COLUMNS,
}
SOURCES: tuple[str, ...] = tuple(COLUMNS)


def _newer_customer(f: Fields, plan: Plan) -> NewerVersion:
    """A later export of the customer: newer updated_at, a changed phone or email."""
    new_t = (f"CAST(least(greatest(_t, {plan.start_epoch}L) + {SECONDS_PER_DAY} + floor(_ua * {30 * SECONDS_PER_DAY}), "
             f"{plan.end_epoch}L) AS BIGINT)")
    phone = f["phone"]
    new_phone = f"concat(substr({phone}, 1, length({phone}) - 6), lpad(CAST(CAST(floor(_ua * 1000000) AS INT) AS STRING), 6, '0'))"
    new_email = f"concat(substring_index({f['email']}, '@', 1), '@', {pick_text(people.EMAIL_DOMAINS, '_ua')})"
    fields = dict(f)
    fields["phone"] = f"CASE WHEN _ub < 0.5D THEN {new_phone} ELSE {phone} END"
    fields["email"] = f"CASE WHEN _ub < 0.5D THEN {f['email']} ELSE {new_email} END"
    fields["updated_at"] = fmt_ts(new_t)
    return NewerVersion(
        fields,
        column="CASE WHEN _ub < 0.5D THEN 'phone' ELSE 'email' END",
        detail=f"CASE WHEN _ub < 0.5D THEN {new_phone} ELSE {new_email} END",
        t=new_t,
        shift="0",
    )


def _next_period(plan: Plan) -> str:
    return f"CASE WHEN _pidx < {len(plan.months) - 1} THEN 1 ELSE 0 END"


def _newer_order(f: Fields, plan: Plan) -> NewerVersion:
    """The order re-exported in the next month's file with its status changed."""
    new_status = f"CASE WHEN {f['status']} = 'completed' THEN 'returned' ELSE 'completed' END"
    fields = dict(f)
    fields["status"] = new_status
    return NewerVersion(fields, "'status'", f"concat({f['status']}, '->', {new_status})", "_t", _next_period(plan))


def _newer_feedback(f: Fields, plan: Plan) -> NewerVersion:
    """The feedback re-exported in the next month's file with ``resolved`` flipped."""
    new_resolved = f"CASE WHEN {f['resolved']} = 'true' THEN 'false' ELSE 'true' END"
    fields = dict(f)
    fields["resolved"] = new_resolved
    return NewerVersion(fields, "'resolved'", f"concat({f['resolved']}, '->', {new_resolved})", "_t",
                        _next_period(plan))


def source_specs(plan: Plan) -> dict[str, SourceSpec]:
    """The layout and dirt of every source at this plan's scale."""
    return {
        "customers": SourceSpec(
            "customers", "csv", CUSTOMER_COLUMNS, "customers",
            ("duplicate_row", "newer_version", "malformed_field_count", "malformed_unclosed_quote", "timestamp_format"),
            rows_per_customer=1.2, ts_column="updated_at", newer=_newer_customer,
        ),
        "products": SourceSpec(
            "products", "csv", PRODUCT_COLUMNS, "products", ("duplicate_row", "malformed_field_count"),
            rows_per_customer=0.0,
        ),
        "orders": SourceSpec(
            "orders", "csv", ORDER_COLUMNS, "month",
            ("duplicate_row", "newer_version", "malformed_field_count", "malformed_unclosed_quote",
             "missing_customer_id", "unknown_foreign_key", "timestamp_format", "late_arriving"),
            rows_per_customer=10.0, ts_column="order_ts", customer_column="customer_id",
            fk=("customer_id", unknown_customer(plan)), newer=_newer_order,
        ),
        "order_items": SourceSpec(
            "order_items", "csv", ORDER_ITEM_COLUMNS, "month",
            ("duplicate_row", "malformed_field_count", "malformed_unclosed_quote", "na_value", "decimal_comma",
             "empty_numeric", "negative_quantity", "zero_price", "unknown_foreign_key", "late_arriving"),
            rows_per_customer=26.0, fk=("product_id", unknown_product),
            na_columns=("quantity", "unit_price", "discount"), decimal_columns=("unit_price", "discount"),
            empty_columns=("quantity", "unit_price"), quantity_column="quantity", price_column="unit_price",
        ),
        "web_events": SourceSpec(
            "web_events", "json", WEB_EVENT_COLUMNS, "month",
            ("duplicate_row", "malformed_json", "na_value", "out_of_range", "unknown_foreign_key",
             "timestamp_format", "late_arriving"),
            rows_per_customer=115.0, numeric=frozenset({"duration_sec"}), ts_column="event_ts",
            fk=("product_id", unknown_product), na_columns=("duration_sec",),
            out_of_range=(OutOfRange("duration_sec", lambda f, u: f"concat('-', {f['duration_sec']})"),),
        ),
        "social_interactions": SourceSpec(
            "social_interactions", "json", SOCIAL_COLUMNS, "month",
            ("duplicate_row", "malformed_json", "decimal_comma", "out_of_range", "timestamp_format", "late_arriving"),
            rows_per_customer=3.0, numeric=frozenset({"sentiment"}), ts_column="ts",
            decimal_columns=("sentiment",),
            out_of_range=(OutOfRange("sentiment", lambda f, u: pick_text(("3.2", "-2.5", "1.7", "5.0"), u)),),
        ),
        "feedback": SourceSpec(
            "feedback", "csv", FEEDBACK_COLUMNS, "month",
            ("duplicate_row", "newer_version", "malformed_field_count", "na_value", "empty_numeric", "out_of_range",
             "timestamp_format", "late_arriving"),
            rows_per_customer=1.0, ts_column="ts", text=frozenset({"text"}), na_columns=("rating", "nps"),
            empty_columns=("rating", "nps"),
            out_of_range=(
                OutOfRange("rating", lambda f, u: pick_text(("0", "6", "7", "10"), u)),
                OutOfRange("nps", lambda f, u: pick_text(("11", "15", "-1", "100"), u)),
            ),
            newer=_newer_feedback,
        ),
    }


# ---------------------------------------------------------------- rows as text
def customer_rows(records: DataFrame) -> DataFrame:
    return records.selectExpr(
        "customer_id", "first_name", "last_name", "email", "phone", "CAST(birth_date AS STRING) AS birth_date",
        "gender", "city", "country", "CAST(signup_date AS STRING) AS signup_date", "acquisition_channel",
        f"{fmt_ts('updated_at')} AS updated_at",
        "customer_id AS _key", "updated_at AS _t", "v AS _v",
    )


def product_rows(spark: SparkSession, plan: Plan) -> DataFrame:
    rows = [
        (p.product_id, p.product_name, p.category, p.subcategory, p.brand, f"{p.list_price:.2f}", p.product_id,
         plan.start_epoch + p.launch_day * SECONDS_PER_DAY, 0)
        for p in plan.catalog.products
    ]
    schema = ", ".join(f"{c} string" for c in PRODUCT_COLUMNS) + ", _key string, _t bigint, _v int"
    return spark.createDataFrame(rows, schema).coalesce(1)


def order_rows(orders: DataFrame) -> DataFrame:
    return orders.selectExpr(
        "order_id", "customer_id", f"{fmt_ts('ts')} AS order_ts", "channel", "status", "payment_type",
        "order_id AS _key", "ts AS _t", "0 AS _v", "status AS _status",
    )


def order_item_rows(items: DataFrame) -> DataFrame:
    return items.selectExpr(
        "order_id", "CAST(line_no AS STRING) AS line_no", "product_id", "CAST(quantity AS STRING) AS quantity",
        f"{fmt_decimal('unit_price')} AS unit_price", f"{fmt_decimal('discount')} AS discount",
        "concat(order_id, '|', CAST(line_no AS STRING)) AS _key", "ts AS _t", "0 AS _v", "status AS _status",
    )


def web_event_rows(events: DataFrame) -> DataFrame:
    return events.selectExpr(
        "event_id", "customer_id", "session_id", f"{fmt_ts('ts')} AS event_ts", "event_type", "product_id", "page",
        "CAST(duration_sec AS STRING) AS duration_sec", "device",
        "event_id AS _key", "ts AS _t", "0 AS _v",
    )


def social_rows(social: DataFrame) -> DataFrame:
    return social.selectExpr(
        "interaction_id", "customer_id", "platform", "interaction_type",
        f"{fmt_decimal('sentiment')} AS sentiment", f"{fmt_ts('ts')} AS ts",
        "interaction_id AS _key", "ts AS _t", "0 AS _v",
    )


def feedback_rows(feedback: DataFrame) -> DataFrame:
    return feedback.selectExpr(
        "feedback_id", "customer_id", f"{fmt_ts('ts')} AS ts", "channel", "CAST(rating AS STRING) AS rating",
        "CAST(nps AS STRING) AS nps", "category", "text", "resolved",
        "feedback_id AS _key", "ts AS _t", "0 AS _v",
    )



