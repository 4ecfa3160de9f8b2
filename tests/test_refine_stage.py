"""Stage ``refine`` end to end on a tiny hand-written landing zone: bronze -> silver + quarantine.

One scenario (module fixture) on one lake, with the PII key set:
  1. customers (7 lines: C1 twice, the newer version last; C3 shares C1's e-mail in another
     spelling; C4 has a bad signup date) and feedback (6: F2's text holds an e-mail address and
     a phone number, F6 is from an unknown customer): ingest + refine;
  2. refine again with nothing new;
  3. a second customers file (a new version of C2 that moved to Lyon, and a new C7): ingest + refine;
  4. a third customers file with one bad row in four, refined with refine.max_reject_share 0.1,
     so the silver.customers gate fails.
Expected values are counted by hand from the files below; pseudonyms come from Python's hmac.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from chispa import assert_df_equality
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import StringType

from crm_spark.config import PathsSettings, Settings, SourceSettings, TargetMapping
from crm_spark.errors import DataQualityError, EnvironmentSetupError, SourceError
from crm_spark.lake import Lake, open_lake
from crm_spark.stages import StageContext, StageResult, ingest, refine, run_stage
from crm_spark.stages.refine import BatchCounts

pytestmark = pytest.mark.slow

KEY = "refine-stage-test-key"
KEY_ENV = "CRM_SPARK_PII_KEY"
CSV_OPTIONS = {"header": True, "multiLine": True, "escape": '"'}
CUSTOMERS_HEADER = (
    "customer_id,first_name,last_name,email,phone,birth_date,gender,city,country,signup_date,"
    "acquisition_channel,updated_at\n"
)
CUSTOMERS_1 = CUSTOMERS_HEADER + (
    "C1,Ann,Lee,Ann.Lee@Example.com,+44 20 7946 0000,1990-05-01,F,London,UK,2024-01-02,web,2024-01-02 10:00:00\n"
    "C2,Bob,Ray,bob@example.com,555-123-4567,1980-02-03,M,Paris,FR,2024-01-03,,2024-01-03 10:00:00\n"
    "C3,Cy,Ng, ann.lee@example.com ,,1975-07-09,m,Leeds,GB,2024-02-01,ads,2024-02-01 09:00:00\n"
    "C4,Di,Oz,di@example.com,020 7946 1111,2000-01-01,f,York,GB,not a date,web,2024-02-01 09:00:00\n"
    "C5,Ed,Fox,ed@example.com,,1999-12-31,m,Bath,GB,2024-02-02,web,2024-02-02 09:00:00\n"
    "C6,Flo,Ash,flo@example.com,,,f,Hull,GB,2024-02-03,web,2024-02-03 09:00:00\n"
    "C1,Ann,Lee,ann.lee@example.com,+44 20 7946 0000,1990-05-01,F,Bristol,UK,2024-01-02,web,2024-03-01 10:00:00\n"
)
CUSTOMERS_2 = CUSTOMERS_HEADER + (
    "C2,Bob,Ray,bob@example.com,555-123-4567,1980-02-03,M,Lyon,FR,2024-01-03,,2024-04-01 10:00:00\n"
    "C7,Gil,Orr,gil@example.com,,1985-06-06,m,Wells,GB,2024-04-02,web,2024-04-02 10:00:00\n"
)
CUSTOMERS_3 = CUSTOMERS_HEADER + (
    "C8,Hal,Poe,hal@example.com,,,m,Ely,GB,2024-05-01,web,2024-05-01 10:00:00\n"
    "C9,Ivy,Qi,ivy@example.com,,,f,Ely,GB,2024-05-01,web,2024-05-01 10:00:00\n"
    "C10,Jo,Ru,jo@example.com,,,f,Ely,GB,2024-05-01,web,2024-05-01 10:00:00\n"
    "C11,Kim,Su,kim@example.com,,,f,Ely,GB,2024-05-01,web,whenever\n"
)
FEEDBACK_1 = (
    "feedback_id,customer_id,ts,channel,rating,nps,category,text,resolved\n"
    'F1,C1,2024-03-03 10:00:00,email,5,10,praise,"Great, thanks!",true\n'
    'F2,C2,2024-03-04 10:00:00,phone,2,3,complaint,"Call me on +44 20 7946 0000 or write to bob@example.com",false\n'
    "F3,C3,2024-03-05 10:00:00,email,4,8,question,Where is my parcel?,false\n"
    "F4,C5,2024-03-05 10:00:00,email,3,7,question,Size 42 fits?,true\n"
    "F5,C6,2024-03-06 10:00:00,chat,5,9,praise,Lovely,true\n"
    "F6,C99,2024-03-06 11:00:00,chat,1,0,complaint,Who am I?,false\n"
)
TABLES = tuple(f"{layer}.{t}" for layer in ("silver", "quarantine") for t in ("customers", "feedback"))
# Independent of crm_spark.transforms.refine: anything that looks like an address or a phone number.
EMAIL = r"[^\s@]+@[^\s@]+\.[A-Za-z]{2,}"
PHONE = r"\d[\d ()./-]{5,}\d"


def pseudo(value: str) -> str:
    return hmac.new(KEY.encode(), value.encode("utf-8"), hashlib.sha256).hexdigest()


@dataclass
class Scenario:
    root: Path
    settings: Settings
    lake: Lake
    first: StageResult
    second: StageResult
    third: StageResult
    gate_error: DataQualityError
    versions: list[dict[str, int]] = field(default_factory=list)  # after steps 1, 2, 3, 4

    def file(self, relative: str) -> str:
        return f"file:{self.root / 'raw' / relative}"


def _settings(base: Settings, root: Path) -> Settings:
    sources = {
        name: SourceSettings(path=name, format="csv", options=CSV_OPTIONS, targets={name: TargetMapping()})
        for name in ("customers", "feedback")
    }
    return base.model_copy(
        update={"paths": PathsSettings(raw=str(root / "raw"), lake=str(root / "lake")), "sources": sources}
    )


def _land(root: Path, relative: str, text: str) -> None:
    path = root / "raw" / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


@pytest.fixture(scope="module")
def scenario(spark: SparkSession, settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Scenario:
    root = tmp_path_factory.mktemp("refine").resolve()
    s = _settings(settings, root)
    lake = open_lake(spark, s)
    ctx = StageContext(settings=s, spark=spark, lake=lake)
    versions: list[dict[str, int]] = []

    def snapshot() -> None:
        versions.append({t: lake.version(t) for t in TABLES if lake.exists(t)})

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(KEY_ENV, KEY)
        _land(root, "customers/c1.csv", CUSTOMERS_1)
        _land(root, "feedback/f1.csv", FEEDBACK_1)
        run_stage(ctx, "ingest")
        first = run_stage(ctx, "refine")
        snapshot()
        second = run_stage(ctx, "refine")
        snapshot()
        _land(root, "customers/c2.csv", CUSTOMERS_2)
        run_stage(ctx, "ingest")
        third = run_stage(ctx, "refine")
        snapshot()
        _land(root, "customers/c3.csv", CUSTOMERS_3)
        run_stage(ctx, "ingest")
        strict = s.model_copy(update={"refine": s.refine.model_copy(update={"max_reject_share": 0.1})})
        with pytest.raises(DataQualityError) as caught:
            run_stage(StageContext(settings=strict, spark=spark, lake=lake), "refine")
        snapshot()
    return Scenario(root, s, lake, first, second, third, caught.value, versions)


def _read(scenario: Scenario, table: str, step: int) -> DataFrame:
    """``table`` as it was after scenario step ``step`` (1-based)."""
    return scenario.lake.read(table, version=scenario.versions[step - 1][table])


# -- step 1 -------------------------------------------------------------------------------
def test_per_batch_mapped_rows_are_accepted_plus_quarantined(scenario: Scenario) -> None:
    assert scenario.first.outcome.batches == {
        "customers->customers": {0: BatchCounts(7, 5, 2, 1)},
        "feedback->feedback": {0: BatchCounts(6, 5, 1, 0)},
    }
    for target, accepted, quarantined in [("customers", 5, 2), ("feedback", 5, 1)]:
        assert _read(scenario, f"silver.{target}", 1).count() == accepted
        assert _read(scenario, f"quarantine.{target}", 1).count() == quarantined


def test_quarantine_holds_rejected_rows_with_reasons_and_lineage(spark: SparkSession, scenario: Scenario) -> None:
    cols = ["customer_id", "city", "signup_date", "_dq_reasons", "_ingest_batch_id", "_source_file"]
    actual = _read(scenario, "quarantine.customers", 1).select(*cols).orderBy("customer_id")
    f = scenario.file("customers/c1.csv")
    expected = spark.createDataFrame(
        [
            ("C1", "London", "2024-01-02", ["superseded_version"], 0, f),
            ("C4", "York", "not a date", ["bad_signup_date"], 0, f),
        ],
        "customer_id string, city string, signup_date string, _dq_reasons array<string>, _ingest_batch_id bigint, "
        "_source_file string",
    )
    assert_df_equality(actual, expected, ignore_nullable=True)


def test_quarantine_flags_rows_of_customers_not_in_silver(spark: SparkSession, scenario: Scenario) -> None:
    actual = _read(scenario, "quarantine.feedback", 1).select("feedback_id", "customer_id", "_dq_reasons")
    expected = spark.createDataFrame(
        [("F6", "C99", ["unknown_customer_id"])], "feedback_id string, customer_id string, _dq_reasons array<string>"
    )
    assert_df_equality(actual, expected, ignore_nullable=True)


def test_silver_customers_are_typed_deduplicated_and_pseudonymised(spark: SparkSession, scenario: Scenario) -> None:
    cols = [
        "customer_id",
        "city",
        "country",
        "signup_date",
        "updated_at",
        "birth_year",
        "age_band",
        "acquisition_channel",
        "email_pseudo",
        "phone_pseudo",
        "_ingest_batch_id",
    ]
    actual = _read(scenario, "silver.customers", 1).select(*cols).orderBy("customer_id")
    rows = [
        # C1: the newer version (Bristol) wins; UK -> GB; 33 at 2024-03-01
        (
            "C1",
            "Bristol",
            "GB",
            "2024-01-02",
            "2024-03-01 10:00:00",
            1990,
            "25-34",
            "web",
            pseudo("ann.lee@example.com"),
            pseudo("+442079460000"),
            "0",
        ),
        (
            "C2",
            "Paris",
            "FR",
            "2024-01-03",
            "2024-01-03 10:00:00",
            1980,
            "35-44",
            "unknown",
            pseudo("bob@example.com"),
            pseudo("5551234567"),
            "0",
        ),
        (
            "C3",
            "Leeds",
            "GB",
            "2024-02-01",
            "2024-02-01 09:00:00",
            1975,
            "45-54",
            "ads",
            pseudo("ann.lee@example.com"),
            None,
            "0",
        ),
        (
            "C5",
            "Bath",
            "GB",
            "2024-02-02",
            "2024-02-02 09:00:00",
            1999,
            "18-24",
            "web",
            pseudo("ed@example.com"),
            None,
            "0",
        ),
        (
            "C6",
            "Hull",
            "GB",
            "2024-02-03",
            "2024-02-03 09:00:00",
            None,
            "unknown",
            "web",
            pseudo("flo@example.com"),
            None,
            "0",
        ),
    ]
    expected = (
        spark.createDataFrame(
            rows,
            "customer_id string, city string, country string, signup_date string, updated_at string, birth_year int, "
            "age_band string, acquisition_channel string, email_pseudo string, phone_pseudo string, "
            "_ingest_batch_id string",
        )
        .withColumn("signup_date", F.col("signup_date").cast("date"))
        .withColumn("updated_at", F.col("updated_at").cast("timestamp"))
    )
    assert_df_equality(actual, expected, ignore_nullable=True)


def test_no_email_or_phone_number_reaches_silver(scenario: Scenario) -> None:
    for table in ("silver.customers", "silver.feedback"):
        df = scenario.lake.read(table)
        texts = [f.name for f in df.schema.fields if isinstance(f.dataType, StringType) and not f.name.startswith("_")]
        plain = [c for c in texts if not c.endswith("_pseudo")]
        leaks = df.filter(F.exists(F.array(*(F.col(c) for c in plain)), lambda v: v.rlike(EMAIL) | v.rlike(PHONE)))
        assert leaks.count() == 0, f"{table}: {leaks.collect()}"
        hashed = [c for c in texts if c.endswith("_pseudo")]
        not_hex = df.filter(F.exists(F.array(*(F.col(c) for c in hashed)), lambda v: ~v.rlike("^[0-9a-f]{64}$")))
        assert not_hex.count() == 0, f"{table}: {not_hex.collect()}"
    assert {"first_name", "last_name", "email", "phone", "birth_date"}.isdisjoint(
        scenario.lake.read("silver.customers").columns
    )


def test_feedback_text_has_contacts_masked(spark: SparkSession, scenario: Scenario) -> None:
    actual = _read(scenario, "silver.feedback", 1).filter("feedback_id = 'F2'").select("feedback_id", "text")
    expected = spark.createDataFrame(
        [("F2", "Call me on [phone] or write to [email]")], "feedback_id string, text string"
    )
    assert_df_equality(actual, expected, ignore_nullable=True)


# -- step 2 -------------------------------------------------------------------------------
def test_second_run_with_nothing_new_changes_nothing(scenario: Scenario) -> None:
    assert scenario.second.writes == ()
    assert scenario.second.outcome.batches == {}
    assert scenario.versions[1] == scenario.versions[0]


# -- step 3 -------------------------------------------------------------------------------
def test_a_new_batch_is_refined_alone(scenario: Scenario) -> None:
    assert scenario.third.outcome.batches == {
        "customers->customers": {1: BatchCounts(2, 2, 0, 0)},
    }
    assert scenario.versions[2]["silver.feedback"] == scenario.versions[0]["silver.feedback"]


def test_pseudonyms_are_stable_across_runs_and_joinable(spark: SparkSession, scenario: Scenario) -> None:
    before = _read(scenario, "silver.customers", 1).select("customer_id", F.col("email_pseudo").alias("before"))
    after = _read(scenario, "silver.customers", 3).select("customer_id", "city", F.col("email_pseudo").alias("after"))
    actual = after.join(before, "customer_id", "left").orderBy("customer_id")
    ann, bob = pseudo("ann.lee@example.com"), pseudo("bob@example.com")
    expected = spark.createDataFrame(
        [
            ("C1", "Bristol", ann, ann),
            ("C2", "Lyon", bob, bob),  # rewritten from the new file, same pseudonym
            ("C3", "Leeds", ann, ann),  # same address as C1, other spelling: same pseudonym
            ("C5", "Bath", pseudo("ed@example.com"), pseudo("ed@example.com")),
            ("C6", "Hull", pseudo("flo@example.com"), pseudo("flo@example.com")),
            ("C7", "Wells", pseudo("gil@example.com"), None),
        ],
        "customer_id string, city string, after string, before string",
    )
    assert_df_equality(actual, expected, ignore_nullable=True)


# -- step 4 -------------------------------------------------------------------------------
def test_a_failed_gate_names_the_table_and_why_rows_were_rejected_and_keeps_the_quarantine(scenario: Scenario) -> None:
    message = str(scenario.gate_error)
    assert message.startswith("silver.customers failed")
    assert "expect_table_row_count_to_be_between" in message  # 3 accepted of 4, at most 10 % may be rejected
    assert "\n" not in message
    assert message.endswith(
        "; quarantine.customers holds the rejected rows; commonest reasons: bad_updated_at 1 row (25%): no format in "
        "sources.customers.timestamp_formats (or refine.timestamp_formats) parses it"
    )
    # silver is untouched; the rejected row is in quarantine with its reason, for the user to look at
    assert scenario.versions[3]["silver.customers"] == scenario.versions[2]["silver.customers"]
    assert scenario.lake.read("silver.customers").filter("customer_id IN ('C8', 'C9', 'C10')").count() == 0
    assert scenario.versions[3]["quarantine.customers"] == scenario.versions[2]["quarantine.customers"] + 1
    rejected = _read(scenario, "quarantine.customers", 4).filter("customer_id = 'C11'").collect()
    assert [(r["updated_at"], list(r["_dq_reasons"])) for r in rejected] == [("whenever", ["bad_updated_at"])]


def test_data_docs_are_rendered_under_the_lake(scenario: Scenario) -> None:
    index = scenario.root / "lake" / "_quality" / "gx" / "uncommitted" / "data_docs" / "local_site" / "index.html"
    assert index.is_file()
    assert "silver.customers" in index.read_text(encoding="utf-8")


def test_a_mapping_naming_a_missing_column_is_a_one_line_source_error(
    spark: SparkSession, scenario: Scenario, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(KEY_ENV, KEY)
    customers = scenario.settings.sources["customers"]
    wrong = customers.model_copy(update={"targets": {"customers": TargetMapping(columns={"city": "Town"})}})
    s = scenario.settings.model_copy(update={"sources": {"customers": wrong}})
    with pytest.raises(SourceError) as caught:  # the third customers file is still waiting to be refined
        run_stage(StageContext(settings=s, spark=spark, lake=scenario.lake), "refine")
    message = str(caught.value)
    assert message.startswith("sources.customers.targets.customers: the mapping does not fit bronze.customers")
    assert "`Town`" in message and "\n" not in message
    assert scenario.lake.version("silver.customers") == scenario.versions[3]["silver.customers"]


# -- PII key ------------------------------------------------------------------------------
def test_missing_pii_key_outside_the_local_env_is_an_error(
    spark: SparkSession, settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(KEY_ENV, raising=False)
    s = _settings(settings, tmp_path)
    assert s.env != "local"
    ctx = StageContext(settings=s, spark=spark, lake=open_lake(spark, s))
    with pytest.raises(EnvironmentSetupError, match=KEY_ENV):
        run_stage(ctx, "refine")
    assert not ctx.lake.exists("silver.customers")


def test_missing_pii_key_in_the_local_env_falls_back_to_the_demo_key(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(KEY_ENV, raising=False)
    assert refine.pii_key(settings.model_copy(update={"env": "local"})) == refine.DEMO_PII_KEY


def test_the_silver_gate_rejects_an_implausible_date(spark: SparkSession, scenario: Scenario) -> None:
    """Refine quarantines such rows; the gate re-checks the table, so a date outside
    [refine.earliest_date, now + refine.future_tolerance_days] cannot reach silver another way."""
    ctx = StageContext(settings=scenario.settings, spark=spark, lake=scenario.lake)
    customers = scenario.lake.read("silver.customers")
    future = customers.limit(1).withColumn("signup_date", F.lit("2999-01-01").cast("date"))
    with pytest.raises(DataQualityError, match=r"signup_date.*2999|broken: `signup_date` IS NULL OR"):
        ctx.gate.check("silver.customers", future)
    ctx.gate.check("silver.customers", customers)  # the refined table passes
