"""The bring-your-own-data examples (conf/examples/*.yaml) run end to end on their sample files.

Each example is loaded the way ``crm-spark --config conf/examples/<x>.yaml --raw
tests/data/examples/<x>`` loads it, then ingest + refine run into a temporary lake, and the
silver rows are compared with values worked out by hand from the sample files.
"""

from __future__ import annotations

import csv
import hashlib
import re
from pathlib import Path

import pytest
from chispa import assert_df_equality
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from conftest import EXAMPLE_DATA, ExampleRun, run_example
from crm_spark.lake import Lake
from crm_spark.stages import StageResult

pytestmark = pytest.mark.slow


def typed(df: DataFrame, **types: str) -> DataFrame:
    return df.withColumns({c: F.col(c).cast(t) for c, t in types.items()})


def same(actual: DataFrame, expected: DataFrame) -> None:
    assert_df_equality(actual, expected, ignore_nullable=True)


# -- retail invoices ----------------------------------------------------------------------
RETAIL_RESULTS: dict[str, StageResult] = {}
SERVICE_CODES = {"POST", "DOT", "M", "D", "C2", "S", "B", "CRUK", "PADS", "BANK CHARGES", "AMAZONFEE"}


@pytest.fixture(scope="module")
def retail(spark: SparkSession, tmp_path_factory: pytest.TempPathFactory) -> Lake:
    """The sample export, with the 2 December lines re-spelled in ISO (as a re-export writes them):
    the example reads both spellings, so every expectation below holds for either."""
    root = tmp_path_factory.mktemp("retail")
    src = EXAMPLE_DATA / "retail_invoices" / "online_retail" / "invoices_2010-12.csv"
    (root / "raw" / "online_retail").mkdir(parents=True)
    lines = src.read_text(encoding="utf-8").splitlines(keepends=True)
    respelled = [re.sub(r",12/2/2010 (\d+):(\d\d),", lambda m: f",2010-12-02 {int(m[1]):02d}:{m[2]}:00,", line)
                 for line in lines]
    assert sum(a != b for a, b in zip(lines, respelled)) == 4
    (root / "raw" / "online_retail" / src.name).write_text("".join(respelled), encoding="utf-8")
    return run_example(spark, "retail_invoices", root / "lake", raw=root / "raw", results=RETAIL_RESULTS,
                       stages=("ingest", "refine", "features", "basket", "recommend"))


def test_retail_rows_dropped_by_each_mapping_filter_are_counted_and_noted(retail: Lake) -> None:
    with (EXAMPLE_DATA / "retail_invoices" / "online_retail" / "invoices_2010-12.csv").open(newline="", encoding="utf-8") as fh:
        lines = list(csv.DictReader(fh))
    def price(line: dict) -> float:
        try:
            return float(line["UnitPrice"])
        except ValueError:
            return 0.0
    expected = {
        "invoices->customers": sum(1 for x in lines if not x["CustomerID"]),
        "invoices->products": sum(1 for x in lines if not (price(x) > 0 and not x["InvoiceNo"].startswith("C")
                                                           and x["StockCode"] not in SERVICE_CODES)),
        "invoices->order_items": sum(1 for x in lines if x["StockCode"] in SERVICE_CODES),
    }
    assert all(expected.values()), expected  # the sample exercises every filter
    refine = RETAIL_RESULTS["refine"]
    assert refine.outcome.filtered == expected
    assert refine.metrics["filtered"] == sum(expected.values())
    assert f"sources.invoices.targets.order_items.filter dropped {expected['invoices->order_items']} of {len(lines)} rows" \
        in refine.notes
    # customers collapse to one row per customer after the filter: the note still counts lines
    assert f"sources.invoices.targets.customers.filter dropped {expected['invoices->customers']} of {len(lines)} rows" \
        in refine.notes


def test_retail_orders_one_per_invoice_with_cancellations(spark: SparkSession, retail: Lake) -> None:
    actual = (
        retail.read("silver.orders")
        .select("order_id", "customer_id", "order_ts", "status", "channel")
        .orderBy("order_id")
    )
    rows = [
        ("536365", "17850", "2010-12-01 08:26:00", "completed"),
        ("536366", "17850", "2010-12-01 08:28:00", "completed"),
        ("536367", "13047", "2010-12-01 08:34:00", "completed"),
        ("536370", "12583", "2010-12-01 08:45:00", "completed"),
        ("536371", "13748", "2010-12-01 09:00:00", "completed"),
        ("536373", "17850", "2010-12-01 09:02:00", "completed"),  # CustomerID written 17850.0
        ("536527", "12662", "2010-12-01 13:04:00", "completed"),
        ("536540", "14911", "2010-12-01 14:05:00", "completed"),
        ("536545", "13047", "2010-12-02 09:30:00", "completed"),
        ("536546", "17850", "2010-12-02 10:15:00", "completed"),
        ("536547", "14911", "2010-12-02 11:00:00", "completed"),
        ("C536383", "15311", "2010-12-01 09:49:00", "cancelled"),
        ("C536391", "17548", "2010-12-01 10:24:00", "cancelled"),
    ]
    expected = typed(
        spark.createDataFrame(
            [(*r, "online") for r in rows],
            "order_id string, customer_id string, order_ts string, status string, channel string",
        ),
        order_ts="timestamp",
    )
    same(actual, expected)


def test_retail_invoices_without_a_customer_are_quarantined(spark: SparkSession, retail: Lake) -> None:
    actual = retail.read("quarantine.orders").select("order_id", "_dq_reasons").orderBy("order_id")
    expected = spark.createDataFrame(
        [("536414", ["missing_customer_id"]), ("536544", ["missing_customer_id"])],
        "order_id string, _dq_reasons array<string>",
    )
    same(actual, expected)


def test_retail_quarantined_lines_say_why(spark: SparkSession, retail: Lake) -> None:
    actual = (
        retail.read("quarantine.order_items")
        .select("order_id", "product_id", "_dq_reasons")
        .orderBy("order_id", "product_id")
    )
    expected = spark.createDataFrame(
        [
            ("536367", "84879", ["duplicate_row"]),  # the same line twice in the export
            ("536414", "22139", ["out_of_range_unit_price", "unknown_order_id", "unknown_product_id"]),
            ("536544", "21773", ["unknown_order_id"]),
            ("536544", "21774", ["unknown_order_id"]),
            ("536544", "22633", ["unknown_order_id"]),
        ],
        "order_id string, product_id string, _dq_reasons array<string>",
    )
    same(actual, expected)


def test_retail_order_lines_with_positive_cancelled_quantities(spark: SparkSession, retail: Lake) -> None:
    cols = ["order_id", "product_id", "quantity", "unit_price", "line_amount"]
    actual = retail.read("silver.order_items").select(*cols).orderBy("order_id", "product_id")
    rows = [  # line_amount = quantity * unit_price (no discount); POST (postage) is not a product line
        ("536365", "71053", 6, "3.39", "20.34"),
        ("536365", "84029G", 6, "3.39", "20.34"),
        ("536365", "84406B", 8, "2.75", "22.00"),
        ("536365", "85123A", 6, "2.55", "15.30"),
        ("536366", "22632", 6, "1.85", "11.10"),
        ("536366", "22633", 6, "1.85", "11.10"),
        ("536367", "22745", 6, "2.10", "12.60"),
        ("536367", "22748", 6, "2.10", "12.60"),
        ("536367", "84879", 32, "1.69", "54.08"),
        ("536370", "22727", 24, "3.75", "90.00"),
        ("536370", "22728", 24, "3.75", "90.00"),
        ("536371", "22086", 80, "2.55", "204.00"),
        ("536373", "22752", 2, "7.65", "15.30"),
        ("536373", "71053", 6, "3.39", "20.34"),
        ("536527", "22809", 6, "2.95", "17.70"),
        ("536527", "84347", 6, "2.55", "15.30"),
        ("536540", "22968", 4, "9.95", "39.80"),
        ("536545", "22745", 12, "2.10", "25.20"),
        ("536545", "22748", 12, "2.10", "25.20"),
        ("536546", "22086", 40, "2.95", "118.00"),
        ("536547", "84029G", 12, "3.39", "40.68"),
        ("C536383", "22633", 2, "1.85", "3.70"),  # Quantity -2 in the export
        ("C536391", "22632", 6, "1.85", "11.10"),
        ("C536391", "84879", 12, "1.69", "20.28"),
    ]
    expected = typed(
        spark.createDataFrame(
            rows, "order_id string, product_id string, quantity int, unit_price string, line_amount string"
        ),
        unit_price="decimal(12,2)",
        line_amount="decimal(14,2)",
    )
    same(actual, expected)


def test_retail_line_numbers_are_distinct_within_an_invoice(retail: Lake) -> None:
    per_order = (
        retail.read("silver.order_items")
        .groupBy("order_id")
        .agg(
            F.count(F.lit(1)).alias("lines"),
            F.countDistinct("line_no").alias("numbers"),
            F.min("line_no").alias("lowest"),
        )
    )
    assert per_order.filter("lines != numbers OR lowest < 0").count() == 0
    assert per_order.count() == 13


def test_retail_customers_from_invoice_lines(spark: SparkSession, retail: Lake) -> None:
    actual = (
        retail.read("silver.customers")
        .select("customer_id", "country", "signup_date", "updated_at")
        .orderBy("customer_id")
    )
    countries = [
        ("12583", "FR"),
        ("12662", "DE"),
        ("13047", "GB"),
        ("13748", "GB"),
        ("14911", "IE"),
        ("15311", "GB"),
        ("17548", "GB"),
        ("17850", "GB"),
    ]
    # 13047, 14911 and 17850 also bought on 2 Dec: the signup date is their first invoice, 1 Dec.
    expected = typed(
        spark.createDataFrame(
            [(c, country, "2010-12-01", "2011-12-31 00:00:00") for c, country in countries],
            "customer_id string, country string, signup_date string, updated_at string",
        ),
        signup_date="date",
        updated_at="timestamp",
    )
    same(actual, expected)


def test_retail_products_from_positive_sales(spark: SparkSession, retail: Lake) -> None:
    actual = retail.read("silver.products").select("product_id", "product_name", "list_price").orderBy("product_id")
    rows = [
        ("21773", "DECORATIVE ROSE BATHROOM BOTTLE", "2.51"),
        ("21774", "DECORATIVE CATS BATHROOM BOTTLE", "2.51"),
        ("22086", "PAPER CHAIN KIT 50'S CHRISTMAS", "2.55"),  # sold at 2.55 and 2.95
        ("22632", "HAND WARMER RED POLKA DOT", "1.85"),
        ("22633", "HAND WARMER UNION JACK", "1.85"),  # sold at 1.85 and 4.21
        ("22727", "ALARM CLOCK BAKELIKE RED", "3.75"),
        ("22728", "ALARM CLOCK BAKELIKE PINK", "3.75"),
        ("22745", "POPPY'S PLAYHOUSE BEDROOM", "2.10"),
        ("22748", "POPPY'S PLAYHOUSE KITCHEN", "2.10"),
        ("22752", "SET 7 BABUSHKA NESTING BOXES, RED", "7.65"),
        ("22809", "SET OF 6 T-LIGHTS SANTA", "2.95"),
        ("22968", "ROSE COTTAGE KEEPSAKE BOX", "9.95"),
        ("71053", "WHITE METAL LANTERN", "3.39"),
        ("84029G", "KNITTED UNION FLAG HOT WATER BOTTLE", "3.39"),
        ("84347", "ROTATING SILVER ANGELS T-LIGHT HLDR", "2.55"),
        ("84406B", "CREAM CUPID HEARTS COAT HANGER", "2.75"),
        ("84879", "ASSORTED COLOUR BIRD ORNAMENT", "1.69"),
        ("85123A", "WHITE HANGING HEART T-LIGHT HOLDER", "2.55"),
    ]
    expected = typed(
        spark.createDataFrame(rows, "product_id string, product_name string, list_price string"),
        list_price="decimal(12,2)",
    )
    same(actual, expected)


def test_retail_features_and_baskets_from_the_invoices(spark: SparkSession, retail: Lake) -> None:
    """RFM from the accepted lines; the basket stage mines the invoices (one month: nothing for churn)."""
    customers = retail.read("silver.customers").count()
    features = retail.read("gold.customer_features")
    assert features.count() == customers
    buyers = retail.read("silver.orders").where("status = 'completed'").select("customer_id").distinct().count()
    assert 0 < features.where(F.col("has_orders")).count() <= buyers  # a purchase also needs accepted lines of value
    assert RETAIL_RESULTS["basket"].skipped is None and retail.read("gold.basket_itemsets").count() > 0


def test_retail_recommendations_from_invoices_alone(spark: SparkSession, retail: Lake) -> None:
    """No web events: ALS learns from purchases; one month of invoices leaves nothing before the holdout."""
    result = RETAIL_RESULTS["recommend"]
    recs = retail.read("gold.recommendations")
    bought = retail.read("silver.orders").where("status = 'completed'").join(retail.read("silver.order_items"), "order_id")

    assert recs.select("customer_id").distinct().count() == retail.read("silver.customers").count()
    assert recs.join(bought.select("customer_id", "product_id"), ["customer_id", "product_id"]).count() == 0
    assert any("ALS learns from purchases alone" in n for n in result.notes)
    assert any(n.startswith("no purchases on or before 2010-10-") and "holdout metrics are not computed" in n
               for n in result.notes), result.notes


# -- subscription churn -------------------------------------------------------------------
@pytest.fixture(scope="module")
def churn(spark: SparkSession, tmp_path_factory: pytest.TempPathFactory) -> Lake:
    return run_example(spark, "subscription_churn", tmp_path_factory.mktemp("churn") / "lake")


def test_churn_flags_are_parsed(spark: SparkSession, churn: Lake) -> None:
    actual = churn.read("silver.churn_labels").select("customer_id", "churned", "label_date").orderBy("customer_id")
    flags = [
        ("0280-XJGEX", True),
        ("1452-KIOVK", False),
        ("3668-QPYBK", True),
        ("4190-MFLUW", False),
        ("5129-JLPIS", False),
        ("5575-GNVDE", False),
        ("6388-TABGU", False),
        ("6713-OKOMC", False),
        ("7469-LKBCI", False),
        ("7590-VHVEG", False),
        ("7795-CFOCW", False),
        ("7892-POOKP", True),
        ("8091-TTVAX", False),
        ("9237-HQITU", True),
        ("9305-CDSKC", True),
        ("9763-GRSKD", False),
    ]
    expected = typed(
        spark.createDataFrame(
            [(c, f, "2024-06-30") for c, f in flags], "customer_id string, churned boolean, label_date string"
        ),
        label_date="date",
    )
    same(actual, expected)


def test_churn_rejects_an_unknown_flag_and_an_unknown_customer(spark: SparkSession, churn: Lake) -> None:
    actual = (
        churn.read("quarantine.churn_labels").select("customer_id", "churned", "_dq_reasons").orderBy("customer_id")
    )
    expected = spark.createDataFrame(
        [("3655-SNQYZ", "Unknown", ["bad_churned"]), ("8665-UTDHZ", "Yes", ["unknown_customer_id"])],
        "customer_id string, churned string, _dq_reasons array<string>",
    )
    same(actual, expected)


def test_churn_customers_signup_is_snapshot_minus_tenure(spark: SparkSession, churn: Lake) -> None:
    customers = churn.read("silver.customers")
    assert customers.count() == 17
    picked = ["7590-VHVEG", "5575-GNVDE", "4190-MFLUW", "6388-TABGU"]
    actual = (
        customers.filter(F.col("customer_id").isin(picked))
        .select("customer_id", "gender", "signup_date")
        .orderBy("customer_id")
    )
    rows = [  # tenure 0, 34, 62 and 1 months before 2024-06-30
        ("4190-MFLUW", "female", "2024-06-30"),
        ("5575-GNVDE", "male", "2021-08-30"),
        ("6388-TABGU", "male", "2019-04-30"),
        ("7590-VHVEG", "female", "2024-05-30"),
    ]
    expected = typed(
        spark.createDataFrame(rows, "customer_id string, gender string, signup_date string"), signup_date="date"
    )
    same(actual, expected)


def test_churn_customer_without_tenure_is_quarantined(spark: SparkSession, churn: Lake) -> None:
    actual = churn.read("quarantine.customers").select("customer_id", "_dq_reasons")
    expected = spark.createDataFrame(
        [("8665-UTDHZ", ["missing_signup_date"])], "customer_id string, _dq_reasons array<string>"
    )
    same(actual, expected)


def test_churn_attributes_are_typed_by_config(spark: SparkSession, churn: Lake) -> None:
    attrs = churn.read("silver.customer_attributes")
    # 17 customers in silver (8665-UTDHZ has no signup date) x 14 attributes, less 6713-OKOMC's bad charge
    assert attrs.count() == 17 * 14 - 1
    actual = (
        attrs.filter(F.col("customer_id") == "7590-VHVEG")
        .select("attribute", "kind", "value_number", "value_text", "value_boolean", "value_date", "snapshot_date")
        .orderBy("attribute")
    )
    rows = [
        ("contract", "categorical", None, "Month-to-month", None),
        ("dependents", "boolean", None, None, False),
        ("internet_service", "categorical", None, "DSL", None),
        ("monthly_charges", "numeric", 29.85, None, None),
        ("online_security", "categorical", None, "No", None),
        ("paperless_billing", "boolean", None, None, True),
        ("partner", "boolean", None, None, True),
        ("payment_method", "categorical", None, "Electronic check", None),
        ("senior_citizen", "boolean", None, None, False),
        ("streaming_movies", "categorical", None, "No", None),
        ("streaming_tv", "categorical", None, "No", None),
        ("tech_support", "categorical", None, "No", None),
        ("tenure_months", "numeric", 1.0, None, None),
        ("total_charges", "numeric", 29.85, None, None),
    ]
    expected = typed(
        spark.createDataFrame(
            [(*r, None, "2024-06-30") for r in rows],
            "attribute string, kind string, value_number double, value_text string, value_boolean boolean, "
            "value_date string, snapshot_date string",
        ),
        value_date="date", snapshot_date="date",
    )
    same(actual, expected)
    # A blank total (tenure 0) is a missing value, kept: the model imputes it.
    blank = attrs.filter((F.col("customer_id") == "4190-MFLUW") & (F.col("attribute") == "total_charges")).first()
    assert blank is not None and blank["value_number"] is None


def test_churn_attribute_that_does_not_parse_as_its_kind_is_quarantined(spark: SparkSession, churn: Lake) -> None:
    actual = (
        churn.read("quarantine.customer_attributes")
        .select("customer_id", "attribute", "value", "_dq_reasons")
        .orderBy("customer_id", "attribute")
    )
    unknown = [("8665-UTDHZ", a, ["unknown_customer_id"]) for a in sorted(
        ["senior_citizen", "partner", "dependents", "tenure_months", "internet_service", "online_security", "tech_support",
         "streaming_tv", "streaming_movies", "contract", "paperless_billing", "payment_method", "monthly_charges",
         "total_charges"])]
    assert actual.filter(F.col("customer_id") == "8665-UTDHZ").count() == len(unknown)
    bad = actual.filter(F.col("customer_id") != "8665-UTDHZ")
    same(bad, spark.createDataFrame([("6713-OKOMC", "monthly_charges", "about 30", ["bad_value"])],
                                    "customer_id string, attribute string, value string, _dq_reasons array<string>"))


# -- transaction log ------------------------------------------------------------------------
LOG_RESULTS: dict[str, StageResult] = {}
LOG_FILE = EXAMPLE_DATA / "transaction_log" / "cdnow" / "CDNOW_sample.txt"


@pytest.fixture(scope="module")
def transaction_log(spark: SparkSession, tmp_path_factory: pytest.TempPathFactory) -> Lake:
    """Every stage a log of (customer, date, amount) can feed: basket has nothing to mine in it."""
    # The wiring is under test, not model size: one k-means fit per k, no GBT challenger, small CLV trees.
    return run_example(spark, "transaction_log", tmp_path_factory.mktemp("cdnow") / "lake", results=LOG_RESULTS,
                       stages=("ingest", "refine", "features", "segment", "churn", "clv"),
                       overrides={"segment.restarts": 1, "churn.challenger": "none", "clv.gbt_max_iter": 5})


def _log_lines() -> list[tuple[str, str, float]]:
    """(customer, yyyyMMdd, amount) of the sample's well-formed lines."""
    out = []
    for line in LOG_FILE.read_text().splitlines():
        customer, day, _, amount = line.split()
        if re.fullmatch(r"\d{5}", customer) and re.fullmatch(r"\d{8}", day):
            out.append((customer, day, float(amount)))
    return out


def test_transaction_log_rfm_equals_the_log_summed_by_hand(spark: SparkSession, transaction_log: Lake) -> None:
    lines = [l for l in _log_lines() if l[2] > 0]
    as_of = max(day for _, day, _ in lines)
    assert LOG_RESULTS["features"].as_of.strftime("%Y%m%d") == as_of
    days: dict[str, set[str]] = {}
    spend: dict[str, float] = {}
    for customer, day, amount in lines:
        days.setdefault(customer, set()).add(day)
        spend[customer] = spend.get(customer, 0.0) + amount
    features = transaction_log.read("gold.customer_features").select("customer_id", "frequency", "monetary").collect()
    got = {r["customer_id"]: (r["frequency"], float(r["monetary"])) for r in features}
    assert set(got) == set(days)
    assert all(got[c][0] == len(days[c]) and got[c][1] == pytest.approx(spend[c], abs=0.005) for c in days)


def test_transaction_log_quarantines_the_malformed_and_the_zero_lines(spark: SparkSession, transaction_log: Lake) -> None:
    reasons = {
        tuple(r["_dq_reasons"]) for r in transaction_log.read("quarantine.order_items").select("_dq_reasons").collect()
    }
    assert ("out_of_range_unit_price",) in reasons  # 00003's 0.00 line
    assert any("bad_unit_price" in r for r in reasons)  # the 'oops' line
    assert transaction_log.read("silver.order_items").count() == sum(1 for l in _log_lines() if l[2] > 0)


def test_transaction_log_feeds_segments_and_churn(spark: SparkSession, transaction_log: Lake) -> None:
    buyers = len({c for c, _, a in _log_lines() if a > 0})
    segments = transaction_log.read("gold.customer_segments")
    assert segments.count() == buyers
    assert LOG_RESULTS["segment"].metrics["k"] in (3.0, 4.0, 5.0)
    churn = LOG_RESULTS["churn"].outcome
    assert churn.rows["train"] > 0 and churn.rows["eval"] > 0 and 0 < churn.churn_rate["eval"] < 1
    assert transaction_log.read("gold.churn_scores").count() == buyers
    assert churn.metrics["logistic_regression"]["roc_auc"] > churn.baseline_recency_roc_auc - 0.1


def test_transaction_log_feeds_clv(spark: SparkSession, transaction_log: Lake) -> None:
    """The log's last day is the scoring date: the model learns at D - 180 days, is measured at D - 90."""
    buyers = len({c for c, _, a in _log_lines() if a > 0})
    result = LOG_RESULTS["clv"]
    dates = result.outcome.dates
    assert (dates.train.isoformat(), dates.evaluate.isoformat(), dates.score.isoformat()) == (
        "1998-01-01", "1998-04-01", "1998-06-30")
    rows = transaction_log.read("gold.clv").collect()
    assert len(rows) == buyers
    assert {r["value_decile"] for r in rows} <= set(range(1, 11)) and len({r["value_decile"] for r in rows}) > 1
    assert all(r["predicted_spend"] >= 0 and r["clv"] == pytest.approx(0.3 * r["predicted_spend"]) for r in rows)
    assert set(result.outcome.evaluation) == {"model", "last_period", "historical_rate", "bgnbd"}
    assert result.metrics["evaluated_customers"] == buyers and result.mlflow_run_id


# -- baskets ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def baskets(baskets_example: ExampleRun) -> Lake:
    """A basket list can feed the basket stage only: no customers, dates or prices to speak of (the
    run of every stage that test_report checks the report of; conftest)."""
    for stage in ("ingest", "refine", "basket"):
        assert baskets_example.results[stage].skipped is None, f"baskets: {stage} skipped: {baskets_example.results[stage].skipped}"
    return baskets_example.lake


def test_baskets_are_mined(spark: SparkSession, baskets: Lake) -> None:
    # 8 baskets: {bread, milk} in 5 (3 plain + 2 of the 4-item ones), {beer, diapers} in 3
    itemsets = {tuple(sorted(r["items"])): r["freq"] for r in baskets.read("gold.basket_itemsets").collect()}
    assert itemsets[("bread", "milk")] == 5 and itemsets[("beer", "diapers")] == 3


def test_baskets_are_exploded_into_order_items(spark: SparkSession, baskets: Lake) -> None:
    items = baskets.read("silver.order_items")
    actual = (
        items.groupBy("order_id")
        .agg(F.array_sort(F.collect_list("product_id")).alias("items"))
        .select("items")
        .orderBy("items")
    )
    expected = spark.createDataFrame(
        [
            (["beer", "bread", "diapers", "eggs"],),
            (["beer", "bread", "diapers", "milk"],),
            (["beer", "chips"],),  # "beer,,chips": the empty item is skipped
            (["beer", "cola", "diapers", "milk"],),
            (["bread", "cola", "diapers", "milk"],),
            (["bread", "milk"],),  # line 1
            (["bread", "milk"],),  # line 6, a copy of line 1: still its own basket
            (["bread", "milk"],),  # " Milk , Bread"
        ],
        "items array<string>",
    )
    same(actual, expected)


def test_baskets_orders_one_per_line_with_stable_ids(spark: SparkSession, baskets: Lake) -> None:
    orders = baskets.read("silver.orders")
    source = f"file:{EXAMPLE_DATA / 'baskets' / 'baskets' / 'baskets.txt'}"
    prefix = hashlib.sha256(f"{source}|bread,milk".encode()).hexdigest()[:16]
    actual = (
        orders.filter(F.col("order_id").startswith(prefix))
        .select("order_id", "customer_id", "status", "order_ts")
        .orderBy("order_id")
    )
    expected = typed(
        spark.createDataFrame(
            [(f"{prefix}-{n}", "anonymous", "completed", "2024-01-01 00:00:00") for n in (1, 2)],
            "order_id string, customer_id string, status string, order_ts string",
        ),
        order_ts="timestamp",
    )
    same(actual, expected)
    assert orders.count() == 8
    assert orders.filter("customer_id != 'anonymous'").count() == 0


def test_baskets_products_and_the_anonymous_customer(spark: SparkSession, baskets: Lake) -> None:
    products = baskets.read("silver.products").select("product_id", "product_name", "list_price").orderBy("product_id")
    names = ["beer", "bread", "chips", "cola", "diapers", "eggs", "milk"]
    expected = typed(
        spark.createDataFrame(
            [(n, n, "1") for n in names], "product_id string, product_name string, list_price string"
        ),
        list_price="decimal(12,2)",
    )
    same(products, expected)
    customers = baskets.read("silver.customers").select("customer_id")
    same(customers, spark.createDataFrame([("anonymous",)], "customer_id string"))
