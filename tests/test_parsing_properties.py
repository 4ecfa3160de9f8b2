"""Property-based tests (hypothesis) of refine's parsing: what a value is written as never changes
what it is read as, and no input string makes a parser fail.

Each hypothesis example is a batch of values checked in one Spark query, so a few dozen
examples cost a few dozen small jobs.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from crm_spark.config import RefineSettings
from crm_spark.transforms import refine as R

pytestmark = pytest.mark.reliability

FAST = settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
AMOUNTS = st.decimals(min_value=Decimal("0.01"), max_value=Decimal("9999999999.99"), places=2)


def _grouped(d: Decimal) -> str:
    """1234567.5 -> '1,234,567.50' (thousands commas, a decimal point)."""
    return f"{d:,.2f}"


def _decimal_comma(d: Decimal) -> str:
    """Written with a decimal comma and no grouping: '1234567,5' (one decimal when it can be)."""
    text = f"{d:.2f}".rstrip("0").rstrip(".") if d != d.to_integral_value() else f"{d:.1f}"
    return text.replace(".", ",")


def _parsed(spark: SparkSession, values: list[str], kind: str) -> list:
    df = spark.createDataFrame([(i, v) for i, v in enumerate(values)], "i int, v string")
    rows = df.select("i", R.parse_number(F.col("v"), kind).alias("p")).orderBy("i").collect()
    return [r["p"] for r in rows]


@FAST
@given(st.lists(AMOUNTS, min_size=1, max_size=60))
def test_an_amount_reads_the_same_plain_grouped_or_with_a_decimal_comma(spark: SparkSession, amounts) -> None:
    written = [(d, text) for d in amounts for text in (f"{d:.2f}", _grouped(d), _decimal_comma(d), f" {d} ")]
    parsed = _parsed(spark, [t for _, t in written], "decimal(12,2)")
    assert [(t, p) for (d, t), p in zip(written, parsed) if p != d] == []


@FAST
@given(st.lists(st.integers(min_value=1000, max_value=999_999_999), min_size=1, max_size=40))
def test_a_comma_before_exactly_three_digits_is_never_guessed(spark: SparkSession, numbers) -> None:
    texts = [f"{n:,}" for n in numbers]
    assert _parsed(spark, texts, "decimal(12,2)") == [None] * len(texts)


@FAST
@given(st.lists(st.text(max_size=40), min_size=1, max_size=80))
def test_no_string_makes_a_parser_fail(spark: SparkSession, texts) -> None:
    formats = RefineSettings().timestamp_formats
    df = spark.createDataFrame([(t,) for t in texts], "v string")
    parsed = df.select(
        R.parse_number(F.col("v"), "decimal(12,2)").alias("d"), R.parse_number(F.col("v"), "int").alias("i"),
        R.parse_number(F.col("v"), "double").alias("x"), R.parse_timestamp(F.col("v"), formats).alias("t"),
        R.parse_bool(F.col("v")).alias("b"), R.clean_text(F.col("v")).alias("c"),
    )
    assert len(parsed.collect()) == len(texts)


@FAST
@given(
    st.lists(st.datetimes(min_value=datetime(1950, 1, 1), max_value=datetime(2099, 12, 31)), min_size=1, max_size=40),
    st.sampled_from(["yyyy-MM-dd HH:mm:ss", "yyyy-MM-dd'T'HH:mm:ss", "dd/MM/yyyy HH:mm:ss", "epoch"]),
)
def test_a_time_reads_the_same_in_every_accepted_format(spark: SparkSession, times, fmt: str) -> None:
    python = {"yyyy-MM-dd HH:mm:ss": "%Y-%m-%d %H:%M:%S", "yyyy-MM-dd'T'HH:mm:ss": "%Y-%m-%dT%H:%M:%S",
              "dd/MM/yyyy HH:mm:ss": "%d/%m/%Y %H:%M:%S"}
    seconds = [t.replace(microsecond=0) for t in times]
    epoch = datetime(1970, 1, 1)
    texts = [str(int((t - epoch) / timedelta(seconds=1))) if fmt == "epoch" else t.strftime(python[fmt]) for t in seconds]
    df = spark.createDataFrame([(i, v) for i, v in enumerate(texts)], "i int, v string")
    rows = df.select("i", R.parse_timestamp(F.col("v"), RefineSettings().timestamp_formats).alias("t")).orderBy("i")
    parsed = [r["t"] for r in rows.collect()]
    pairs = list(zip(seconds, parsed))
    if fmt == "epoch":  # 9-10 digits are epoch seconds: 1973-03-03 to 2286
        pairs = [(t, p) for t, p in pairs if t >= datetime(1973, 3, 4)]
    assert [(t, p) for t, p in pairs if p != t] == []
