"""Row rules of bronze -> silver (crm_spark/transforms/refine.py) on small hand-made frames.

Expected values are worked out by hand (timestamps in UTC, the session time zone) or, for the
HMAC pseudonyms, with Python's own ``hmac`` module.
"""

from __future__ import annotations

from collections import Counter

import hashlib
import hmac
from collections.abc import Mapping, Sequence
from datetime import date
from typing import Any

import pytest
from chispa import assert_df_equality
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from crm_spark.config import RefineSettings
from crm_spark.contracts import Field
from crm_spark.transforms import refine as R

FORMATS = RefineSettings().timestamp_formats
LINEAGE_DDL = "_corrupt_record string, _ingest_batch_id long, _source_file string"


def conformed(spark: SparkSession, target: str, rows: Sequence[Mapping[str, Any]]) -> DataFrame:
    """A frame as conform() hands it to validate(): the target's raw columns as strings + lineage."""
    cols = R.raw_columns(target)
    ddl = ", ".join(f"{c} string" for c in cols) + ", " + LINEAGE_DDL
    data = [
        (
            *(r.get(c) for c in cols),
            r.get("_corrupt_record"),
            r.get("_ingest_batch_id", 0),
            r.get("_source_file", "a.csv"),
        )
        for r in rows
    ]
    return spark.createDataFrame(data, ddl)


def reasons_of(df: DataFrame, key: str) -> DataFrame:
    return df.select(key, R.REASONS)


def expected_reasons(spark: SparkSession, key: str, rows: list[tuple[str | None, list[str]]]) -> DataFrame:
    return spark.createDataFrame(rows, f"{key} string, {R.REASONS} array<string>")


def assert_same(actual: DataFrame, expected: DataFrame, *, by: Sequence[str] = ()) -> None:
    """Whole-frame equality. Projections keep the row order of the hand-made input; after a
    shuffle (join, window) ``actual`` is sorted by ``by`` and ``expected`` is written in that order
    (cheaper than chispa's ignore_row_order, which sorts both frames by every column)."""
    assert_df_equality(actual.orderBy(*by) if by else actual, expected, ignore_nullable=True)


def strings(spark: SparkSession, values: Sequence[str | None]) -> DataFrame:
    return spark.createDataFrame([(v,) for v in values], "s string")


# -- parse_number -------------------------------------------------------------------------
def test_parse_number_reads_a_decimal_comma(spark: SparkSession) -> None:
    df = strings(spark, ["12,5", "12.5", " 7 "])
    actual = df.select("s", R.parse_number(F.col("s"), "double").alias("v"))
    expected = spark.createDataFrame([("12,5", 12.5), ("12.5", 12.5), (" 7 ", 7.0)], "s string, v double")
    assert_same(actual, expected)


def test_parse_number_turns_no_value_tokens_into_null(spark: SparkSession) -> None:
    df = strings(spark, ["N/A", "", "null", "NULL", "abc", None])
    actual = df.select("s", R.parse_number(F.col("s"), "decimal(12,2)").alias("v"))
    expected = spark.createDataFrame(
        [("N/A", None), ("", None), ("null", None), ("NULL", None), ("abc", None), (None, None)],
        "s string, v decimal(12,2)",
    )
    assert_same(actual, expected)


def test_parse_number_int_accepts_whole_numbers_only(spark: SparkSession) -> None:
    df = strings(spark, ["3", "3.0", "3.5", "12,5", "-2", "2147483648"])
    actual = df.select("s", R.parse_number(F.col("s"), "int").alias("v"))
    expected = spark.createDataFrame(
        [("3", 3), ("3.0", 3), ("3.5", None), ("12,5", None), ("-2", -2), ("2147483648", None)], "s string, v int"
    )
    assert_same(actual, expected)


# -- parse_timestamp ----------------------------------------------------------------------
def _timestamps(
    spark: SparkSession, pairs: list[tuple[str | None, str | None]], timezone: str | None = None
) -> tuple[DataFrame, DataFrame]:
    raw = strings(spark, [p[0] for p in pairs])
    actual = raw.select("s", R.parse_timestamp(F.col("s"), FORMATS, timezone).alias("ts"))
    expected = spark.createDataFrame(pairs, "s string, ts string").withColumn("ts", F.col("ts").cast("timestamp"))
    return actual, expected


def test_parse_timestamp_reads_every_configured_format(spark: SparkSession) -> None:
    pairs = [
        ("2024-03-02 10:11:12", "2024-03-02 10:11:12"),  # yyyy-MM-dd HH:mm:ss
        ("2024-03-02T10:11:12Z", "2024-03-02 10:11:12"),  # yyyy-MM-dd'T'HH:mm:ss'Z'
        ("2024-03-02T10:11:12+00:00", "2024-03-02 10:11:12"),  # yyyy-MM-dd'T'HH:mm:ssXXX
        ("2024-03-02 10:11:12+00:00", "2024-03-02 10:11:12"),  # yyyy-MM-dd HH:mm:ssXXX
        ("2024-03-02T10:11:12", "2024-03-02 10:11:12"),  # yyyy-MM-dd'T'HH:mm:ss
        ("2024-03-02 10:11", "2024-03-02 10:11:00"),  # yyyy-MM-dd HH:mm
        ("02/03/2024 10:11:12", "2024-03-02 10:11:12"),  # dd/MM/yyyy HH:mm:ss (day first)
        ("02/03/2024 10:11", "2024-03-02 10:11:00"),  # dd/MM/yyyy HH:mm
        ("2024-03-02", "2024-03-02 00:00:00"),  # yyyy-MM-dd
        ("02/03/2024", "2024-03-02 00:00:00"),  # dd/MM/yyyy
    ]
    assert len(pairs) == len(FORMATS)
    assert_same(*_timestamps(spark, pairs))


def test_parse_timestamp_reads_epoch_seconds_and_millis(spark: SparkSession) -> None:
    # 1709374272 s after 1970-01-01 UTC is 2024-03-02 10:11:12 (19783 days + 36672 s)
    pairs = [("1709374272", "2024-03-02 10:11:12"), ("1709374272345", "2024-03-02 10:11:12.345")]
    assert_same(*_timestamps(spark, pairs))


def test_parse_timestamp_converts_offsets_to_utc(spark: SparkSession) -> None:
    pairs = [
        ("2024-03-03T11:00:00+02:00", "2024-03-03 09:00:00"),
        ("2024-03-03 11:00:00+02:00", "2024-03-03 09:00:00"),
        ("2024-03-03T01:30:00+05:30", "2024-03-02 20:00:00"),
        ("2024-03-03T22:00:00-05:00", "2024-03-04 03:00:00"),
    ]
    assert_same(*_timestamps(spark, pairs))


def test_a_source_time_zone_applies_to_times_written_without_an_offset(spark: SparkSession) -> None:
    pairs = [
        ("2024-01-15 10:00:00", "2024-01-15 15:00:00"),  # New York in winter: UTC-5
        ("2024-07-15 10:00:00", "2024-07-15 14:00:00"),  # ... and in summer: UTC-4
        ("15/01/2024 23:30", "2024-01-16 04:30:00"),  # the next UTC day
        ("2024-01-15T10:00:00+01:00", "2024-01-15 09:00:00"),  # an offset says where it was: as written
        ("2024-01-15T10:00:00Z", "2024-01-15 10:00:00"),  # so does Z
        ("1709374272", "2024-03-02 10:11:12"),  # epoch seconds are UTC
        ("2024-03-01", "2024-03-01 00:00:00"),  # a date alone is the calendar date as written
    ]
    assert_same(*_timestamps(spark, pairs, "America/New_York"))


def test_a_source_time_zone_leaves_dates_as_written(spark: SparkSession) -> None:
    df = strings(spark, ["2024-03-01"])
    day = R.parse_field(Field("d", "date"), F.col("s"), timestamp_formats=FORMATS, timezone="Asia/Tokyo")
    assert df.select(day.alias("d")).first()["d"] == date(2024, 3, 1)


def test_parse_timestamp_unparseable_or_empty_is_null(spark: SparkSession) -> None:
    pairs = [("yesterday", None), ("2024-13-45", None), ("N/A", None), ("", None), (None, None), ("12345", None)]
    assert_same(*_timestamps(spark, pairs))


# -- validate -----------------------------------------------------------------------------
def _product(pid: str | None, price: str | None, **extra: Any) -> dict[str, Any]:
    return {"product_id": pid, "product_name": "Widget", "list_price": price, **extra}


def test_validate_types_the_target_columns(spark: SparkSession) -> None:
    df = conformed(spark, "products", [_product(" P1 ", "12,5", brand="Acme"), _product("P2", "3", brand="N/A")])
    actual = R.validate(df, target="products", timestamp_formats=FORMATS).select(
        "product_id", "product_name", "brand", "list_price", R.REASONS
    )
    expected = spark.createDataFrame(
        [("P1", "Widget", "Acme", "12.50", []), ("P2", "Widget", None, "3.00", [])],
        f"product_id string, product_name string, brand string, list_price string, {R.REASONS} array<string>",
    ).withColumn("list_price", F.col("list_price").cast("decimal(12,2)"))
    assert_same(actual, expected)


def test_validate_flags_a_missing_required_value(spark: SparkSession) -> None:
    df = conformed(spark, "products", [_product("P1", "2.00"), _product("P2", ""), _product("P3", "n/a")])
    actual = reasons_of(R.validate(df, target="products", timestamp_formats=FORMATS), "product_id")
    expected = expected_reasons(
        spark, "product_id", [("P1", []), ("P2", ["missing_list_price"]), ("P3", ["missing_list_price"])]
    )
    assert_same(actual, expected)


def test_validate_flags_a_missing_key(spark: SparkSession) -> None:
    df = conformed(spark, "products", [_product(None, "2.00"), _product("  ", "2.00")])
    actual = R.validate(df, target="products", timestamp_formats=FORMATS).select(R.REASONS)
    expected = spark.createDataFrame(
        [(["missing_product_id"],), (["missing_product_id"],)], f"{R.REASONS} array<string>"
    )
    assert_same(actual, expected)


def test_validate_flags_a_value_of_the_wrong_type(spark: SparkSession) -> None:
    rows = [
        {"order_id": "O1", "line_no": "1", "product_id": "P1", "quantity": "two", "unit_price": "1.00"},
        {"order_id": "O2", "line_no": "1.5", "product_id": "P1", "quantity": "2", "unit_price": "1.00"},
        {"order_id": "O3", "line_no": "1", "product_id": "P1", "quantity": "2", "unit_price": "1.00"},
    ]
    df = conformed(spark, "order_items", rows)
    actual = reasons_of(R.validate(df, target="order_items", timestamp_formats=FORMATS), "order_id")
    expected = expected_reasons(spark, "order_id", [("O1", ["bad_quantity"]), ("O2", ["bad_line_no"]), ("O3", [])])
    assert_same(actual, expected)


def test_validate_flags_values_out_of_range_at_both_ends(spark: SparkSession) -> None:
    base = {"line_no": "1", "product_id": "P1", "quantity": "1", "unit_price": "1.00"}
    rows = [
        {**base, "order_id": "below", "discount": "-0.1"},
        {**base, "order_id": "above", "discount": "1.5"},
        {**base, "order_id": "low_edge", "discount": "0"},  # bounds are inclusive
        {**base, "order_id": "high_edge", "discount": "1"},
        {**base, "order_id": "zero_qty", "quantity": "0"},  # quantity must be > 0 (exclusive)
    ]
    df = conformed(spark, "order_items", rows)
    actual = reasons_of(R.validate(df, target="order_items", timestamp_formats=FORMATS), "order_id")
    expected = expected_reasons(
        spark,
        "order_id",
        [
            ("below", ["out_of_range_discount"]),
            ("above", ["out_of_range_discount"]),
            ("low_edge", []),
            ("high_edge", []),
            ("zero_qty", ["out_of_range_quantity"]),
        ],
    )
    assert_same(actual, expected)


def test_validate_flags_a_value_outside_the_allowed_set(spark: SparkSession) -> None:
    base = {"customer_id": "C1", "order_ts": "2024-03-02 10:00:00"}
    rows = [
        {**base, "order_id": "O1", "status": "shipped"},
        {**base, "order_id": "O2", "status": " Completed "},  # case and spaces are normalised
        {**base, "order_id": "O3", "status": "RETURNED"},
    ]
    df = conformed(spark, "orders", rows)
    actual = reasons_of(R.validate(df, target="orders", timestamp_formats=FORMATS), "order_id")
    expected = expected_reasons(spark, "order_id", [("O1", ["bad_status"]), ("O2", []), ("O3", [])])
    assert_same(actual, expected)


def test_validate_flags_a_malformed_line(spark: SparkSession) -> None:
    rows = [_product("P1", "2.00"), _product("P2", "2.00", _corrupt_record="P2,Widget,,,,2.00,extra")]
    df = conformed(spark, "products", rows)
    actual = reasons_of(R.validate(df, target="products", timestamp_formats=FORMATS), "product_id")
    expected = expected_reasons(spark, "product_id", [("P1", []), ("P2", ["malformed_line"])])
    assert_same(actual, expected)


def test_validate_lists_every_reason_of_a_row_once_sorted(spark: SparkSession) -> None:
    rows = [
        {"order_id": "O1", "line_no": "x", "product_id": None, "quantity": "-1", "unit_price": "abc", "discount": "2"}
    ]
    df = conformed(spark, "order_items", rows)
    actual = reasons_of(R.validate(df, target="order_items", timestamp_formats=FORMATS), "order_id")
    expected = expected_reasons(
        spark,
        "order_id",
        [
            (
                "O1",
                [
                    "bad_line_no",
                    "bad_unit_price",
                    "missing_product_id",
                    "out_of_range_discount",
                    "out_of_range_quantity",
                ],
            )
        ],
    )
    assert_same(actual, expected)


def test_validate_fills_missing_values_with_the_configured_defaults(spark: SparkSession) -> None:
    base = {"customer_id": "C1", "order_ts": "2024-03-02 10:00:00", "status": "completed"}
    rows = [
        {**base, "order_id": "O1", "channel": "", "payment_type": None},
        {**base, "order_id": "O2", "channel": "Web", "payment_type": "card"},
    ]
    df = conformed(spark, "orders", rows)
    out = R.validate(
        df, target="orders", timestamp_formats=FORMATS, defaults={"channel": "unknown", "payment_type": "unknown"}
    )
    expected = spark.createDataFrame(
        [("O1", "unknown", "unknown", []), ("O2", "web", "card", [])],
        f"order_id string, channel string, payment_type string, {R.REASONS} array<string>",
    )
    assert_same(out.select("order_id", "channel", "payment_type", R.REASONS), expected)


def test_validate_a_default_does_not_hide_a_bad_value(spark: SparkSession) -> None:
    rows = [{"feedback_id": "F1", "customer_id": "C1", "ts": "2024-03-02", "resolved": "perhaps"}]
    df = conformed(spark, "feedback", rows)
    out = R.validate(df, target="feedback", timestamp_formats=FORMATS, defaults={"resolved": "false"})
    expected = spark.createDataFrame(
        [("F1", None, ["bad_resolved"])], f"feedback_id string, resolved boolean, {R.REASONS} array<string>"
    )
    assert_same(out.select("feedback_id", "resolved", R.REASONS), expected)


def test_validate_maps_country_aliases(spark: SparkSession) -> None:
    base = {"signup_date": "2024-01-01", "updated_at": "2024-01-01 00:00:00"}
    rows = [{**base, "customer_id": "C1", "country": "uk"}, {**base, "customer_id": "C2", "country": "FR"}]
    df = conformed(spark, "customers", rows)
    out = R.validate(df, target="customers", timestamp_formats=FORMATS, country_aliases={"UK": "GB"})
    expected = spark.createDataFrame([("C1", "GB"), ("C2", "FR")], "customer_id string, country string")
    assert_same(out.select("customer_id", "country"), expected)


def test_validate_keeps_the_raw_strings_for_quarantine(spark: SparkSession) -> None:
    df = conformed(spark, "products", [_product("P1", "abc")])
    out = R.validate(df, target="products", timestamp_formats=FORMATS)
    actual = out.select("product_id", "list_price", F.col(f"{R.RAW}.list_price").alias("raw_price"), "_source_file")
    expected = spark.createDataFrame(
        [("P1", None, "abc", "a.csv")],
        "product_id string, list_price decimal(12,2), raw_price string, _source_file string",
    )
    assert_same(actual, expected)


# -- references ---------------------------------------------------------------------------
def test_check_references_flags_unknown_customers(spark: SparkSession) -> None:
    orders = spark.createDataFrame(
        [("O1", "C1", []), ("O2", "C9", [])], f"order_id string, customer_id string, {R.REASONS} array<string>"
    )
    customers = spark.createDataFrame([("C1",), ("C2",)], "customer_id string")
    actual = R.check_references(orders, target="orders", known={"customers": customers})
    expected = spark.createDataFrame(
        [("O1", "C1", []), ("O2", "C9", ["unknown_customer_id"])],
        f"order_id string, customer_id string, {R.REASONS} array<string>",
    )
    assert_same(actual, expected, by=["order_id"])


def test_check_references_flags_unknown_products_and_allows_anonymous_web_events(spark: SparkSession) -> None:
    ddl = f"event_id string, customer_id string, product_id string, {R.REASONS} array<string>"
    events = spark.createDataFrame(
        [
            ("E1", None, "P1", []),
            ("E2", "C1", None, []),
            ("E3", None, "P9", []),
            ("E4", "C7", "P1", ["bad_event_type"]),
        ],
        ddl,
    )
    known = {
        "customers": spark.createDataFrame([("C1",)], "customer_id string"),
        "products": spark.createDataFrame([("P1",), ("P1",)], "product_id string"),  # a repeated key adds no rows
    }
    actual = R.check_references(events, target="web_events", known=known)
    expected = spark.createDataFrame(
        [
            ("E1", None, "P1", []),
            ("E2", "C1", None, []),
            ("E3", None, "P9", ["unknown_product_id"]),
            ("E4", "C7", "P1", ["bad_event_type", "unknown_customer_id"]),
        ],
        ddl,
    )
    assert_same(actual, expected, by=["event_id"])


# -- dedupe -------------------------------------------------------------------------------
PRODUCTS_TYPED = (
    "product_id string, product_name string, category string, subcategory string, brand string, "
    f"list_price decimal(12,2), _ingest_batch_id long, _source_file string, {R.REASONS} array<string>"
)


def _products(spark: SparkSession, rows: list[tuple[Any, ...]]) -> DataFrame:
    """(product_id, name, price, batch, file, reasons) -> a typed products frame."""
    from decimal import Decimal

    data = [(pid, name, None, None, None, Decimal(price), b, f, rs) for pid, name, price, b, f, rs in rows]
    return spark.createDataFrame(data, PRODUCTS_TYPED)


def _key_reasons(df: DataFrame, *cols: str) -> DataFrame:
    return df.select(*cols, R.REASONS)


def test_dedupe_marks_an_exact_copy_as_duplicate_row(spark: SparkSession) -> None:
    df = _products(
        spark,
        [
            ("P1", "Widget", "2.00", 0, "a.csv", []),
            ("P1", "Widget", "2.00", 0, "b.csv", []),
            ("P2", "Gadget", "3.00", 0, "a.csv", []),
        ],
    )
    actual = _key_reasons(R.dedupe(df, target="products"), "product_id", "_source_file")
    expected = spark.createDataFrame(
        [("P1", "a.csv", ["duplicate_row"]), ("P1", "b.csv", []), ("P2", "a.csv", [])],
        f"product_id string, _source_file string, {R.REASONS} array<string>",
    )
    assert_same(actual, expected, by=["product_id", "_source_file"])


def test_dedupe_keeps_the_later_batch_and_supersedes_the_older_version(spark: SparkSession) -> None:
    df = _products(spark, [("P1", "Widget", "2.00", 1, "b.csv", []), ("P1", "Widget", "1.50", 0, "a.csv", [])])
    actual = _key_reasons(R.dedupe(df, target="products"), "product_id", "_ingest_batch_id")
    expected = spark.createDataFrame(
        [("P1", 0, ["superseded_version"]), ("P1", 1, [])],
        f"product_id string, _ingest_batch_id long, {R.REASONS} array<string>",
    )
    assert_same(actual, expected, by=["product_id", "_ingest_batch_id"])


def test_dedupe_ignores_rows_already_rejected(spark: SparkSession) -> None:
    df = _products(
        spark, [("P1", "Widget", "2.00", 0, "a.csv", []), ("P1", "Widget", "9.00", 1, "b.csv", ["malformed_line"])]
    )
    actual = _key_reasons(R.dedupe(df, target="products"), "product_id", "_source_file")
    expected = spark.createDataFrame(
        [("P1", "a.csv", []), ("P1", "b.csv", ["malformed_line"])],
        f"product_id string, _source_file string, {R.REASONS} array<string>",
    )
    assert_same(actual, expected, by=["product_id", "_source_file"])


CUSTOMERS_TYPED = (
    "customer_id string, first_name string, last_name string, email string, phone string, birth_date date, "
    "gender string, city string, country string, signup_date date, acquisition_channel string, updated_at timestamp, "
    f"_ingest_batch_id long, _source_file string, {R.REASONS} array<string>"
)


def _customers(spark: SparkSession, rows: list[tuple[str, str, str, int]]) -> DataFrame:
    """(customer_id, city, updated_at, batch) -> a typed customers frame."""
    data = [
        (c, None, None, None, None, None, None, city, None, None, None, ts, b, f"b{b}.csv", [])
        for c, city, ts, b in rows
    ]
    ddl = CUSTOMERS_TYPED.replace("updated_at timestamp", "updated_at string")
    return spark.createDataFrame(data, ddl).withColumn("updated_at", F.col("updated_at").cast("timestamp"))


def test_dedupe_customers_newest_updated_at_wins_regardless_of_batch(spark: SparkSession) -> None:
    df = _customers(
        spark,
        [
            ("C1", "Leeds", "2024-03-01 00:00:00", 0),  # newer, but from the older batch
            ("C1", "York", "2024-01-01 00:00:00", 1),
            ("C2", "Bath", "2024-01-01 00:00:00", 0),
            ("C2", "Hull", "2024-02-01 00:00:00", 1),
        ],
    )
    actual = _key_reasons(R.dedupe(df, target="customers"), "customer_id", "city")
    expected = spark.createDataFrame(
        [
            ("C1", "Leeds", []),
            ("C1", "York", ["superseded_version"]),
            ("C2", "Bath", ["superseded_version"]),
            ("C2", "Hull", []),
        ],
        f"customer_id string, city string, {R.REASONS} array<string>",
    )
    assert_same(actual, expected, by=["customer_id", "city"])


def test_older_than_silver_supersedes_rows_older_than_the_silver_version(spark: SparkSession) -> None:
    incoming = _customers(
        spark,
        [
            ("C1", "York", "2024-01-01 00:00:00", 3),
            ("C2", "Hull", "2024-05-01 00:00:00", 3),
            ("C3", "Bath", "2024-01-01 00:00:00", 3),
        ],
    )
    silver = spark.createDataFrame(
        [("C1", "2024-02-01 00:00:00"), ("C2", "2024-02-01 00:00:00")], "customer_id string, updated_at string"
    ).withColumn("updated_at", F.col("updated_at").cast("timestamp"))
    actual = _key_reasons(R.older_than_silver(incoming, silver, target="customers"), "customer_id")
    expected = expected_reasons(spark, "customer_id", [("C1", ["superseded_version"]), ("C2", []), ("C3", [])])
    assert_same(actual, expected, by=["customer_id"])


# -- outliers -----------------------------------------------------------------------------
def _durations(spark: SparkSession) -> DataFrame:
    # 1..10 and 1000 (accepted), plus a rejected 5000 that must not move the percentile.
    rows = [(f"E{i:02d}", i, []) for i in range(1, 11)] + [("E11", 1000, []), ("E12", 5000, ["bad_event_type"])]
    return spark.createDataFrame(rows, f"event_id string, duration_sec int, {R.REASONS} array<string>")


def test_outliers_cap_at_the_batch_percentile(spark: SparkSession) -> None:
    # p90 of the 11 accepted values is the 10th smallest (ceil(0.9 * 11) = 10): 10.
    actual = R.outliers(_durations(spark), rules={"duration_sec": {"policy": "cap", "upper": 0.9}})
    rows = [(f"E{i:02d}", i, []) for i in range(1, 11)] + [("E11", 10, []), ("E12", 5000, ["bad_event_type"])]
    expected = spark.createDataFrame(rows, f"event_id string, duration_sec int, {R.REASONS} array<string>")
    assert_same(actual, expected, by=["event_id"])


def test_outliers_flag_values_beyond_the_percentiles(spark: SparkSession) -> None:
    # p10 of the 11 accepted values is the 2nd smallest (ceil(0.1 * 11) = 2): 2, so 1 is below it.
    rules = {"duration_sec": {"policy": "flag", "lower": 0.1, "upper": 0.9}}
    actual = R.outliers(_durations(spark), rules=rules)
    rows = (
        [("E01", 1, ["outlier_duration_sec"])]
        + [(f"E{i:02d}", i, []) for i in range(2, 11)]
        + [("E11", 1000, ["outlier_duration_sec"]), ("E12", 5000, ["bad_event_type"])]
    )
    expected = spark.createDataFrame(rows, f"event_id string, duration_sec int, {R.REASONS} array<string>")
    assert_same(actual, expected, by=["event_id"])


# -- PII ----------------------------------------------------------------------------------
def _hmac(key: bytes, message: str) -> str:
    return hmac.new(key, message.encode("utf-8"), hashlib.sha256).hexdigest()


@pytest.mark.parametrize(
    "key", [b"k", b"a-32-byte-secret-key-0123456789a", bytes(range(100))], ids=["short", "32B", "100B"]
)
def test_hmac_sha256_hex_matches_python_hmac(spark: SparkSession, key: bytes) -> None:
    messages = ["", "ann.lee@example.com", "+442079460000", "Zoë Ñúñez 東京 🙂", "x" * 200]
    df = spark.createDataFrame([(m,) for m in messages] + [(None,)], "m string")
    actual = df.select("m", R.hmac_sha256_hex(key, F.col("m")).alias("h"))
    expected = spark.createDataFrame([(m, _hmac(key, m)) for m in messages] + [(None, None)], "m string, h string")
    assert_same(actual, expected)


def test_the_hmac_key_appears_in_no_plan(spark: SparkSession) -> None:
    key = b"plan-leak-test-key-0123456789"
    df = strings(spark, ["ann@example.com"]).select(R.hmac_sha256_hex(key, F.col("s")).alias("h"))
    plans = df._jdf.queryExecution().toString()  # noqa: SLF001 - parsed, analyzed, optimized and physical
    pads = [bytes(b ^ x for b in key.ljust(64, b"\x00")) for x in (0x36, 0x5C)]
    secrets = [key.decode(), key.hex(), *(p.hex() for p in pads)]
    assert not [s for s in secrets if s.lower() in plans.lower()]
    assert df.first()["h"] == _hmac(key, "ann@example.com")


def test_normalise_phone_keeps_digits_and_a_leading_plus(spark: SparkSession) -> None:
    df = strings(spark, ["+44 (20) 7946-0000", " 020 7946 0000 ", "555.123.4567", "n/a", None])
    actual = df.select("s", R.normalise_phone(F.col("s")).alias("p"))
    expected = spark.createDataFrame(
        [
            ("+44 (20) 7946-0000", "+442079460000"),
            (" 020 7946 0000 ", "02079460000"),
            ("555.123.4567", "5551234567"),
            ("n/a", None),
            (None, None),
        ],
        "s string, p string",
    )
    assert_same(actual, expected)


def test_normalise_email_trims_and_lower_cases(spark: SparkSession) -> None:
    df = strings(spark, ["  Ann.Lee@Example.COM ", "bob@example.com", None])
    actual = df.select("s", R.normalise_email(F.col("s")).alias("e"))
    expected = spark.createDataFrame(
        [("  Ann.Lee@Example.COM ", "ann.lee@example.com"), ("bob@example.com", "bob@example.com"), (None, None)],
        "s string, e string",
    )
    assert_same(actual, expected)


def test_mask_contacts_replaces_emails_and_phone_numbers(spark: SparkSession) -> None:
    df = strings(spark, ["mail ann.lee@example.com or call +44 20 7946 0000 today", "size 42, 3 items",
                         "ordered 2025-06-30, call 020 7946 0000", None])
    actual = df.select("s", R.mask_contacts(F.col("s")).alias("m"))
    expected = spark.createDataFrame(
        [
            ("mail ann.lee@example.com or call +44 20 7946 0000 today", "mail [email] or call [phone] today"),
            ("size 42, 3 items", "size 42, 3 items"),
            ("ordered 2025-06-30, call 020 7946 0000", "ordered 2025-06-30, call [phone]"),
            (None, None),
        ],
        "s string, m string",
    )
    assert_same(actual, expected)


def test_pseudonymise_customers_replaces_pii_with_hmac_and_age_band(spark: SparkSession) -> None:
    key = b"test-key"
    ddl = (
        "customer_id string, first_name string, last_name string, email string, phone string, birth_date string, "
        "gender string, updated_at string"
    )
    rows = [
        ("C1", " Ann ", "Lee", " Ann.Lee@Example.com", "+44 20 7946 0000", "1990-05-01", "f", "2024-03-01 10:00:00"),
        ("C2", None, None, None, None, None, "m", "2024-03-01 10:00:00"),
        ("C3", "Bo", "Li", "bo@example.com", "555 123 4567", "1950-03-01", "m", "2024-03-01 10:00:00"),
    ]
    df = (
        spark.createDataFrame(rows, ddl)
        .withColumn("birth_date", F.col("birth_date").cast("date"))
        .withColumn("updated_at", F.col("updated_at").cast("timestamp"))
    )
    actual = R.pseudonymise_customers(df, key=key).drop("updated_at")
    # C1 is 33 at 2024-03-01 (born 1990-05-01), C3 turned 74 that day.
    expected = spark.createDataFrame(
        [
            (
                "C1",
                "f",
                _hmac(key, "ann lee"),
                _hmac(key, "ann.lee@example.com"),
                _hmac(key, "+442079460000"),
                1990,
                "25-34",
            ),
            ("C2", "m", None, None, None, None, "unknown"),
            ("C3", "m", _hmac(key, "bo li"), _hmac(key, "bo@example.com"), _hmac(key, "5551234567"), 1950, "65+"),
        ],
        "customer_id string, gender string, name_pseudo string, email_pseudo string, phone_pseudo string, "
        "birth_year int, age_band string",
    )
    assert_same(actual, expected)


def test_quarantine_rows_redact_customer_pii(spark: SparkSession) -> None:
    key = b"test-key"
    rows = [
        {
            "customer_id": "C1",
            "first_name": "Ann",
            "email": "ann@example.com",
            "signup_date": "never",
            "updated_at": "2024-01-01",
        }
    ]
    checked = R.validate(conformed(spark, "customers", rows), target="customers", timestamp_formats=FORMATS)
    actual = R.quarantine_rows(checked, target="customers", key=key).select(
        "customer_id", "first_name", "email", "signup_date", R.REASONS
    )
    expected = spark.createDataFrame(
        [
            (
                "C1",
                "pseudo:" + _hmac(key, "Ann"),
                "pseudo:" + _hmac(key, "ann@example.com"),
                "never",
                ["bad_signup_date"],
            )
        ],
        f"customer_id string, first_name string, email string, signup_date string, {R.REASONS} array<string>",
    )
    assert_same(actual, expected)


# -- conform ------------------------------------------------------------------------------
INVOICE_DDL = (
    "InvoiceNo string, StockCode string, Quantity string, InvoiceDate string, UnitPrice string, CustomerID string, "
    f"{LINEAGE_DDL}"
)


def _invoices(spark: SparkSession) -> DataFrame:
    rows = [
        ("536365", "85123A", "6", "12/1/2010 8:26", "2.55", "17850", None, 0, "inv.csv"),
        ("536365", "71053", "6", "12/1/2010 8:26", "3.39", "17850", None, 0, "inv.csv"),
        ("C536379", "D", "-1", "12/1/2010 9:41", "27.50", "14527", None, 0, "inv.csv"),
    ]
    return spark.createDataFrame(rows, INVOICE_DDL)


ORDER_COLUMNS = {
    "order_id": "InvoiceNo",
    "customer_id": "CustomerID",
    "order_ts": "try_to_timestamp(InvoiceDate, 'M/d/yyyy H:mm')",
    "status": "CASE WHEN InvoiceNo LIKE 'C%' THEN 'cancelled' ELSE 'completed' END",
    "channel": "'online'",
}
ORDERS_RAW = (
    "order_id string, customer_id string, order_ts string, channel string, status string, payment_type string, "
    f"status_ts string, {LINEAGE_DDL}"
)


def test_conform_maps_columns_with_expressions(spark: SparkSession) -> None:
    actual = R.conform(_invoices(spark), target="orders", columns=ORDER_COLUMNS).drop(R.SOURCE_HASH)
    expected = spark.createDataFrame(
        [
            ("536365", "17850", "2010-12-01 08:26:00", "online", "completed", None, None, None, 0, "inv.csv"),
            ("536365", "17850", "2010-12-01 08:26:00", "online", "completed", None, None, None, 0, "inv.csv"),
            ("C536379", "14527", "2010-12-01 09:41:00", "online", "cancelled", None, None, None, 0, "inv.csv"),
        ],
        ORDERS_RAW,
    )
    assert_same(actual, expected)


def test_conform_takes_unlisted_columns_by_name(spark: SparkSession) -> None:
    bronze = spark.createDataFrame(
        [("P1", "Widget", "2.5", "ignored", None, 0, "p.csv")],
        f"product_id string, product_name string, price string, extra string, {LINEAGE_DDL}",
    )
    actual = R.conform(bronze, target="products", columns={"list_price": "price"}).drop(R.SOURCE_HASH)
    expected = spark.createDataFrame(
        [("P1", "Widget", None, None, None, "2.5", None, 0, "p.csv")],
        "product_id string, product_name string, category string, subcategory string, brand string, list_price string, "
        f"{LINEAGE_DDL}",
    )
    assert_same(actual, expected)


def test_conform_collapse_keeps_one_row_per_key(spark: SparkSession) -> None:
    actual = R.conform(_invoices(spark), target="orders", columns=ORDER_COLUMNS, collapse=True)
    expected = spark.createDataFrame(
        [
            ("536365", "17850", "2010-12-01 08:26:00", "online", "completed", None, None, None, 0, "inv.csv"),
            ("C536379", "14527", "2010-12-01 09:41:00", "online", "cancelled", None, None, None, 0, "inv.csv"),
        ],
        ORDERS_RAW,
    )
    assert_same(actual, expected, by=["order_id"])


def test_conform_collapse_keeps_the_earliest_date_whatever_its_spelling(spark: SparkSession) -> None:
    # As text "12/10/2010" sorts before "12/9/2010"; as dates 9 December comes first.
    bronze = spark.createDataFrame(
        [("C1", "12/10/2010 8:00", None, 0, "inv.csv"), ("C1", "12/9/2010 17:00", None, 0, "inv.csv"),
         ("C2", "2010-12-10 08:00:00", None, 0, "inv.csv"), ("C2", "12/11/2010 8:00", None, 0, "inv.csv")],
        f"CustomerID string, InvoiceDate string, {LINEAGE_DDL}",
    )
    actual = R.conform(
        bronze, target="customers", columns={"customer_id": "CustomerID", "signup_date": "InvoiceDate"}, collapse=True,
        timestamp_formats=["M/d/yyyy H:mm", "yyyy-MM-dd HH:mm:ss"],
    )
    assert {r["customer_id"]: r["signup_date"] for r in actual.collect()} == {
        "C1": "12/9/2010 17:00", "C2": "2010-12-10 08:00:00"}


def test_conform_filter_keeps_matching_rows_only(spark: SparkSession) -> None:
    actual = R.conform(_invoices(spark), target="orders", columns=ORDER_COLUMNS, filter_expr="InvoiceNo NOT LIKE 'C%'")
    assert_same(actual.select("order_id"), spark.createDataFrame([("536365",), ("536365",)], "order_id string"))


def test_conform_explode_gives_one_row_per_basket_item(spark: SparkSession) -> None:
    bronze = spark.createDataFrame([("a,b, c", None, 4, "baskets.txt")], f"value string, {LINEAGE_DDL}")
    columns = {
        "order_id": "'B1'",
        "line_no": "_pos",
        "product_id": "trim(_item)",
        "quantity": "'1'",
        "unit_price": "'1'",
    }
    actual = R.conform(bronze, target="order_items", columns=columns, explode="split(value, ',')").drop(R.SOURCE_HASH)
    expected = spark.createDataFrame(
        [
            ("B1", "0", "a", "1", "1", None, None, 4, "baskets.txt"),
            ("B1", "1", "b", "1", "1", None, None, 4, "baskets.txt"),
            ("B1", "2", "c", "1", "1", None, None, 4, "baskets.txt"),
        ],
        "order_id string, line_no string, product_id string, quantity string, unit_price string, discount string, "
        f"{LINEAGE_DDL}",
    )
    assert_same(actual, expected)


LINE_COLUMNS = {  # line_no from what the line says, as a retail export without line numbers maps it
    "order_id": "InvoiceNo", "line_no": "pmod(hash(StockCode, Quantity, UnitPrice), 2147483647)",
    "product_id": "StockCode", "quantity": "Quantity", "unit_price": "UnitPrice",
}


def _lines(spark: SparkSession, rows: list[tuple[str, ...]]) -> DataFrame:
    """(Description, InvoiceDate[, file]) of lines that all say product 22633, quantity 6, price 1.85 on invoice 1."""
    return spark.createDataFrame(
        [("1", "22633", r[0], "6", r[1], "1.85", "17850", None, 0, r[2] if len(r) > 2 else "inv.csv") for r in rows],
        INVOICE_DDL.replace("StockCode string,", "StockCode string, Description string,"),
    )


def test_conform_hashes_the_whole_source_line(spark: SparkSession) -> None:
    bronze = _lines(spark, [("HAND WARMER", "12/1/2010 8:26"), ("HAND WARMER", "12/1/2010 8:26"),
                            ("HAND WARMER UNION JACK", "12/1/2010 8:26")])
    conformed = R.conform(bronze, target="order_items", columns=LINE_COLUMNS)
    rows = conformed.select("line_no", R.SOURCE_HASH).collect()

    assert len({r["line_no"] for r in rows}) == 1  # the mapped row is the same for all three
    assert sorted(Counter(r[R.SOURCE_HASH] for r in rows).values()) == [1, 2]  # two lines are copies
    # a collapsed row stands for many lines: no line to hash
    assert R.SOURCE_HASH not in R.conform(_invoices(spark), target="orders", columns=ORDER_COLUMNS, collapse=True).columns


def test_dedupe_calls_only_a_copy_of_the_whole_line_a_duplicate(spark: SparkSession) -> None:
    # Same key and mapped values. The line in c.csv is kept (the later file); b.csv delivered the
    # same line again (a copy, whatever file it came in); a.csv's differs in a column the mapping
    # does not read (the date): another version of the key, not a copy.
    bronze = _lines(spark, [("HAND WARMER", "12/1/2010 8:26", "c.csv"), ("HAND WARMER", "12/1/2010 8:26", "b.csv"),
                            ("HAND WARMER", "12/2/2010 9:00", "a.csv")])
    conformed = R.conform(bronze, target="order_items", columns=LINE_COLUMNS)
    checked = R.dedupe(R.validate(conformed, target="order_items", timestamp_formats=()), target="order_items")
    reasons = {r["_source_file"]: r[R.REASONS] for r in checked.select("_source_file", R.REASONS).collect()}

    assert reasons == {"c.csv": [], "b.csv": ["duplicate_row"], "a.csv": ["superseded_version"]}


def test_conform_hashes_headerless_columns_and_tells_null_positions_apart(spark: SparkSession) -> None:
    # A headerless CSV's columns are _c0, _c1, ...: they are the line, not ingest metadata.
    bronze = spark.createDataFrame(
        [("P1", "x", None, None, 0, "a.csv"), ("P1", None, "x", None, 0, "a.csv"), ("P1", "x", None, None, 1, "b.csv")],
        f"_c0 string, _c1 string, _c2 string, {LINEAGE_DDL}",
    )
    hashes = [r[R.SOURCE_HASH] for r in R.conform(bronze, target="products", columns={"product_id": "_c0"}).collect()]

    assert hashes[0] != hashes[1] and hashes[0] == hashes[2]


def test_to_silver_writes_exactly_the_silver_contract(spark: SparkSession) -> None:
    from crm_spark.contracts import table

    rows = [
        {"order_id": "O1", "line_no": "1", "product_id": "P1", "quantity": "3", "unit_price": "2.50", "discount": "0.1"}
    ]
    checked = R.validate(conformed(spark, "order_items", rows), target="order_items", timestamp_formats=FORMATS)
    actual = R.to_silver(R.accepted_rows(checked), target="order_items", key=b"k")
    # 3 * 2.50 * (1 - 0.1) = 6.75; the bronze batch id (a long) becomes the contract's string
    expected = spark.createDataFrame(
        [("O1", 1, "P1", 3, "2.50", "0.1", "6.75", "0", "a.csv")],
        "order_id string, line_no int, product_id string, quantity int, unit_price string, discount string, "
        "line_amount string, _ingest_batch_id string, _source_file string",
    ).select(*(F.col(f.name).cast(f.dataType) for f in table("silver.order_items").schema.fields))
    assert_df_equality(actual, expected, ignore_nullable=True)


def test_validate_quarantines_implausible_dates_relative_to_the_ingest_time(spark: SparkSession) -> None:
    # issue 17: orders dated 1800 and 2999 reached silver, and one moved the default as-of date to 2999.
    base = {"customer_id": "C1", "status": "completed"}
    rows = [
        {**base, "order_id": "O1", "order_ts": "1800-01-01 10:00:00"},
        {**base, "order_id": "O2", "order_ts": "2999-12-31 10:00:00"},
        {**base, "order_id": "O3", "order_ts": "2024-03-02 10:00:00"},  # within a day of the ingest time
        {**base, "order_id": "O4", "order_ts": "2024-03-05 10:00:00"},  # four days after it
        {**base, "order_id": "O5", "order_ts": "1950-06-01"},
    ]
    df = conformed(spark, "orders", rows).withColumn("_ingested_at", F.lit("2024-03-01 12:00:00").cast("timestamp"))
    actual = reasons_of(R.validate(df, target="orders", timestamp_formats=FORMATS), "order_id")
    expected = expected_reasons(spark, "order_id", [
        ("O1", ["implausible_order_ts"]), ("O2", ["implausible_order_ts"]), ("O3", []),
        ("O4", ["implausible_order_ts"]), ("O5", []),
    ])
    assert_same(actual, expected)
    stricter = R.validate(df, target="orders", timestamp_formats=FORMATS, earliest=date(2000, 1, 1), future_days=7)
    expected = expected_reasons(spark, "order_id", [
        ("O1", ["implausible_order_ts"]), ("O2", ["implausible_order_ts"]), ("O3", []), ("O4", []),
        ("O5", ["implausible_order_ts"]),
    ])
    assert_same(reasons_of(stricter, "order_id"), expected)


def test_validate_without_an_ingest_time_measures_from_now(spark: SparkSession) -> None:
    base = {"signup_date": "2024-01-05", "updated_at": "2024-01-05 09:00:00"}
    rows = [{**base, "customer_id": "C1", "birth_date": "1890-05-01"},
            {**base, "customer_id": "C2", "birth_date": "2999-01-01"},
            {**base, "customer_id": "C3", "birth_date": "1990-05-01"}]
    df = conformed(spark, "customers", rows)
    reasons = {r["customer_id"]: r[R.REASONS] for r in
               R.validate(df, target="customers", timestamp_formats=FORMATS).select("customer_id", R.REASONS).collect()}
    assert reasons == {"C1": ["implausible_birth_date"], "C2": ["implausible_birth_date"], "C3": []}
