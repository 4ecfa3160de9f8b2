"""Stage ``ingest`` on a tiny hand-written landing zone: raw files -> ``bronze.<source>``.

One scenario (module fixture) runs the stage three times on the same lake and records what each
run did: (1) a first CSV file of orders (quoted commas, a quoted newline, a line with too many
and one with too few fields) and a JSON-lines file of events (one broken line); (2) the same
again with no new files; (3) a second CSV file whose header adds a column and reorders the
others, and a JSON file that omits a key. The tests assert on those records and on the table.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
from chispa import assert_df_equality
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from crm_spark.config import PathsSettings, Settings, SourceSettings, TargetMapping
from crm_spark.errors import SourceError
from crm_spark.lake import Lake, open_lake
from crm_spark.stages import StageContext, StageResult, ingest, run_stage
from crm_spark.stages.ingest import SourceCounts

pytestmark = pytest.mark.slow

CSV_OPTIONS = {"header": True, "multiLine": True, "escape": '"'}
ORDERS_1 = (
    "order_id,customer_id,order_ts,channel,status,payment_type\n"
    "O1,C1,2024-03-01 10:00:00,web,completed,card\n"
    'O2,C2,2024-03-01 11:00:00,"store, north",completed,"gift\ncard"\n'
    "O3,C3,2024-03-01 12:00:00,web,completed,card,EXTRA\n"
    "O4,C4\n"
    "O5,,N/A,web,cancelled,\n"
)
# A later export: a new column (coupon), and the columns in another order.
ORDERS_2 = (
    "order_id,coupon,status,customer_id,order_ts,channel,payment_type\n"
    "O6,SPRING,completed,C6,2024-03-02 09:00:00,app,card\n"
)
EVENTS_1 = (
    '{"event_id": "E1", "session_id": "S1", "duration_sec": 30, "page": "/"}\n'
    '{"event_id": "E2", "session_id": "S2", "duration_sec": 12.5, "page": "/p"}\n'
    '{"event_id": "E3", broken\n'
)
EVENTS_2 = '{"event_id": "E4", "session_id": "S4", "duration_sec": 5}\n'  # no "page" key

LINEAGE = "_corrupt_record string, _source_file string, _ingest_batch_id bigint"


@dataclass
class Scenario:
    raw: Path
    lake: Lake
    first: StageResult
    rerun: StageResult
    later: StageResult
    versions: dict[str, list[int]]  # table -> version after each run

    def uri(self, relative: str) -> str:
        return f"file:{self.raw / relative}"


def _settings(base: Settings, root: Path) -> Settings:
    sources = {
        "orders": SourceSettings(path="orders", format="csv", options=CSV_OPTIONS, targets={"orders": TargetMapping()}),
        "events": SourceSettings(path="events", format="json", targets={"web_events": TargetMapping()}),
    }
    paths = PathsSettings(raw=str(root / "raw"), lake=str(root / "lake"))
    return base.model_copy(update={"paths": paths, "sources": sources})


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


@pytest.fixture(scope="module")
def scenario(spark: SparkSession, settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Scenario:
    root = tmp_path_factory.mktemp("ingest").resolve()
    s = _settings(settings, root)
    lake = open_lake(spark, s)
    ctx = StageContext(settings=s, spark=spark, lake=lake)
    raw = root / "raw"
    versions: dict[str, list[int]] = {"bronze.orders": [], "bronze.events": []}

    def run() -> StageResult:
        result = run_stage(ctx, "ingest")
        for table, seen in versions.items():
            seen.append(lake.version(table))
        return result

    _write(raw / "orders" / "2024-03-01.csv", ORDERS_1)
    _write(raw / "events" / "a.json", EVENTS_1)
    first = run()
    rerun = run()
    _write(raw / "orders" / "2024-03-02.csv", ORDERS_2)
    _write(raw / "events" / "b.json", EVENTS_2)
    later = run()
    return Scenario(raw, lake, first, rerun, later, versions)


def _data(df: DataFrame) -> DataFrame:
    return df.drop("_ingested_at")


def test_bronze_holds_every_column_as_a_string_plus_lineage(scenario: Scenario) -> None:
    schema = scenario.lake.read("bronze.orders", version=0).schema
    expected = [
        ("order_id", "string"),
        ("customer_id", "string"),
        ("order_ts", "string"),
        ("channel", "string"),
        ("status", "string"),
        ("payment_type", "string"),
        ("_corrupt_record", "string"),
        ("_source_file", "string"),
        ("_ingest_batch_id", "bigint"),
        ("_ingested_at", "timestamp"),
    ]
    assert [(f.name, f.dataType.simpleString()) for f in schema.fields] == expected


def test_bronze_keeps_csv_rows_as_written_and_malformed_lines_with_their_raw_text(
    spark: SparkSession, scenario: Scenario
) -> None:
    actual = _data(scenario.lake.read("bronze.orders", version=0)).orderBy("order_id")
    f = scenario.uri("orders/2024-03-01.csv")
    expected = spark.createDataFrame(
        [
            ("O1", "C1", "2024-03-01 10:00:00", "web", "completed", "card", None, f, 0),
            ("O2", "C2", "2024-03-01 11:00:00", "store, north", "completed", "gift\ncard", None, f, 0),
            (
                "O3",
                "C3",
                "2024-03-01 12:00:00",
                "web",
                "completed",
                "card",
                "O3,C3,2024-03-01 12:00:00,web,completed,card,EXTRA",
                f,
                0,
            ),
            ("O4", "C4", None, None, None, None, "O4,C4", f, 0),
            ("O5", None, "N/A", "web", "cancelled", None, None, f, 0),
        ],
        "order_id string, customer_id string, order_ts string, channel string, status string, payment_type string, "
        + LINEAGE,
    )
    assert_df_equality(actual, expected, ignore_nullable=True)


def test_bronze_reads_json_primitives_as_strings_and_keeps_broken_lines(
    spark: SparkSession, scenario: Scenario
) -> None:
    actual = _data(scenario.lake.read("bronze.events", version=0)).orderBy(F.col("event_id").asc_nulls_first())
    f = scenario.uri("events/a.json")
    expected = spark.createDataFrame(
        [
            (None, None, None, None, '{"event_id": "E3", broken', f, 0),
            ("30", "E1", "/", "S1", None, f, 0),
            ("12.5", "E2", "/p", "S2", None, f, 0),
        ],
        "duration_sec string, event_id string, page string, session_id string, " + LINEAGE,
    )
    assert_df_equality(actual, expected, ignore_nullable=True)


def test_ingest_counts_malformed_lines(scenario: Scenario) -> None:
    assert scenario.first.outcome.sources == {
        "orders": SourceCounts(files=1, rows=5, malformed=2),
        "events": SourceCounts(files=1, rows=3, malformed=1),
    }


def test_rerun_without_new_files_adds_nothing(scenario: Scenario) -> None:
    assert scenario.rerun.outcome.sources == {"orders": SourceCounts(), "events": SourceCounts()}
    assert scenario.rerun.writes == ()
    assert scenario.versions["bronze.orders"][:2] == [0, 0]
    assert scenario.versions["bronze.events"][:2] == [0, 0]


def test_a_new_file_is_ingested_alone_in_a_new_batch(spark: SparkSession, scenario: Scenario) -> None:
    assert scenario.later.outcome.sources["orders"] == SourceCounts(files=1, rows=1, malformed=0)
    assert scenario.versions["bronze.orders"][2] > scenario.versions["bronze.orders"][1]
    per_batch = (
        scenario.lake.read("bronze.orders")
        .groupBy("_ingest_batch_id", "_source_file")
        .agg(F.count(F.lit(1)).alias("rows"))
        .orderBy("_ingest_batch_id")
    )
    expected = spark.createDataFrame(
        [(0, scenario.uri("orders/2024-03-01.csv"), 5), (1, scenario.uri("orders/2024-03-02.csv"), 1)],
        "_ingest_batch_id bigint, _source_file string, rows bigint",
    )
    assert_df_equality(per_batch, expected, ignore_nullable=True)


def test_a_file_with_an_extra_column_evolves_bronze_reading_columns_by_name(
    spark: SparkSession, scenario: Scenario
) -> None:
    actual = scenario.lake.read("bronze.orders").select(
        "order_id", "customer_id", "status", "coupon", "_ingest_batch_id"
    )
    expected = spark.createDataFrame(
        [
            ("O1", "C1", "completed", None, 0),
            ("O2", "C2", "completed", None, 0),
            ("O3", "C3", "completed", None, 0),
            ("O4", "C4", None, None, 0),
            ("O5", None, "cancelled", None, 0),
            ("O6", "C6", "completed", "SPRING", 1),
        ],
        "order_id string, customer_id string, status string, coupon string, _ingest_batch_id bigint",
    )
    assert_df_equality(actual.orderBy("order_id"), expected, ignore_nullable=True)


def test_a_file_without_a_column_bronze_has_is_ingested_with_nulls(spark: SparkSession, scenario: Scenario) -> None:
    assert scenario.later.outcome.sources["events"] == SourceCounts(files=1, rows=1, malformed=0)
    actual = (
        scenario.lake.read("bronze.events").filter("_ingest_batch_id = 1").select("event_id", "page", "duration_sec")
    )
    expected = spark.createDataFrame([("E4", None, "5")], "event_id string, page string, duration_sec string")
    assert_df_equality(actual, expected, ignore_nullable=True)


def test_a_missing_raw_path_raises_a_one_line_source_error(
    spark: SparkSession, settings: Settings, tmp_path: Path
) -> None:
    s = _settings(settings, tmp_path)  # tmp_path/raw does not exist
    ctx = StageContext(settings=s, spark=spark, lake=open_lake(spark, s))
    with pytest.raises(SourceError) as caught:
        run_stage(ctx, "ingest")
    message = str(caught.value)
    assert "\n" not in message
    assert f"{tmp_path}/raw/orders" in message and "sources.orders.path" in message
    assert not ctx.lake.exists("bronze.orders")
