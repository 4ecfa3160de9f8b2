"""The bad-input catalogue: every kind of broken delivery ends in quarantined rows with reasons,
a rejected file with its reason, or accepted rows; never a traceback, a stopped ingest or a lost row.

One landing zone (module fixture) holds, beside a few good files, one file or line per kind below
in four sources (orders and order lines as CSV, web events as JSON lines, a product catalogue as
Parquet). Ingest and refine run once over it; then one file is delivered again under a new name
and both run again. Each test names its kind; the row or file of a kind carries the kind's name
(as order id, event id or file name), so the assertions find it.
"""

from __future__ import annotations

import gzip
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from crm_spark.config import IngestSettings, PathsSettings, Settings, SourceSettings, TargetMapping
from crm_spark.errors import LakeError, SourceError
from crm_spark.lake import Lake, open_lake
from crm_spark.stages import StageContext, StageResult, run_stage

pytestmark = [pytest.mark.slow, pytest.mark.reliability]

CSV = {"header": True, "escape": '"'}
ORDERS_HEADER = "order_id,customer_id,order_ts,channel,status,payment_type\n"
GOOD_ORDERS = ORDERS_HEADER + "".join(
    f"{o},C1,2024-03-01 10:00:00,web,completed,card\n"
    for o in ("good_1", "good_2", "thousands", "grouped", "decimal_comma", "overflow", "late_items")
)
BAD_LINES = ORDERS_HEADER + (
    'unbalanced_quote,C1,"2024-03-01 10:00:00,web,completed,card\n'
    "too_few_fields,C1\n"
    "too_many_fields,C1,2024-03-01 10:00:00,web,completed,card,EXTRA\n"
    "wrong_type,C1,yesterday,web,completed,card\n"
    "unknown_status,C1,2024-03-01 10:00:00,web,shipped,card\n"
    "missing_key,,2024-03-01 10:00:00,web,completed,card\n"
    "dated_1800,C1,1800-01-01 10:00:00,web,completed,card\n"
    "dated_2999,C1,2999-01-01 10:00:00,web,completed,card\n"
    "duplicate_line,C1,2024-03-01 10:00:00,web,completed,card\n"
    "duplicate_line,C1,2024-03-01 10:00:00,web,completed,card\n"
    "two_versions,C1,2024-03-01 10:00:00,web,completed,card\n"
    "two_versions,C1,2024-03-01 10:00:00,web,returned,card\n"
    "null_tokens,C1,2024-03-01 10:00:00,N/A,completed,null\n"
)
HUGE = "huge_field,C1,2024-03-01 10:00:00,web,completed," + "x" * 1_048_576 + "\n"
ITEMS_HEADER = "order_id,line_no,product_id,quantity,unit_price,discount\n"
ITEMS = ITEMS_HEADER + (
    'thousands,1,P1,1,"1,234",0\n'
    'grouped,1,P1,1,"1,234.50",0\n'
    'decimal_comma,1,P1,2,"12,5",0\n'
    "overflow,1,P1,99999999,9999999999.99,0\n"
    "negative_quantity,1,P1,-1,10.00,0\n"
    "orphan_line,1,P1,1,10.00,0\n"
)
EVENTS = (
    '{"event_id": "good_event", "session_id": "S1", "event_ts": "2024-03-01 10:00:00", "event_type": "page_view"}\n'
    '{"event_id": "broken_json", "session_id": \n'
    '{"event_id": "nested_value", "session_id": {"a": 1}, "event_ts": "2024-03-01 10:00:00", "event_type": "search"}\n'
    '{"event_id": "number_as_id", "session_id": 42, "event_ts": 1709287200, "event_type": "search"}\n'
)


@dataclass
class Catalogue:
    raw: Path
    lake: Lake
    first: dict[str, StageResult]
    again: dict[str, StageResult]
    quarantined_before: dict[str, int]
    lake_settings: Settings

    def rejected(self) -> dict[str, str]:
        rows = self.lake.read("quarantine.rejected_files").collect()
        return {Path(r["file"]).name: r["reason"] for r in rows}

    def reasons(self, table: str, key: str, value: str) -> list[list[str]]:
        rows = self.lake.read(f"quarantine.{table}").filter(
            (F.col(key) == value) | F.col("_corrupt_record").contains(f'"{value}"')
            | F.col("_corrupt_record").startswith(f"{value},")
        ).collect()
        return [sorted(r["_dq_reasons"]) for r in rows]

    def silver(self, table: str, key: str, value: str) -> list:
        return self.lake.read(f"silver.{table}").filter(F.col(key) == value).collect()


def _gz(path: Path, text: str, *, truncate: bool = False) -> None:
    data = gzip.compress(text.encode("utf-8"))
    path.write_bytes(data[: len(data) // 2] if truncate else data)


def _settings(base: Settings, root: Path, **ingest: str) -> Settings:
    sources = {
        "orders": SourceSettings(path="orders", options=CSV, targets={"orders": TargetMapping()}),
        "items": SourceSettings(path="items", options=CSV, targets={"order_items": TargetMapping()}),
        "events": SourceSettings(path="events", format="json", targets={"web_events": TargetMapping()}),
        "catalog": SourceSettings(path="catalog", format="parquet", targets={"products": TargetMapping()}),
    }
    return base.model_copy(update={
        "paths": PathsSettings(raw=str(root / "raw"), lake=str(root / "lake")),
        "sources": sources,
        "ingest": IngestSettings(**ingest),
        # A catalogue is mostly bad rows: the reject-share gate would stop it (tested elsewhere).
        "refine": base.refine.model_copy(update={"max_reject_share": 1.0}),
    })


def _land(spark: SparkSession, raw: Path) -> None:
    orders, items, events, catalog = (raw / d for d in ("orders", "items", "events", "catalog"))
    for d in (orders, items, events, catalog):
        d.mkdir(parents=True)
    (orders / "good.csv").write_text(GOOD_ORDERS, encoding="utf-8")
    (orders / "bad_lines.csv").write_text(BAD_LINES, encoding="utf-8")
    (orders / "huge_field.csv").write_text(ORDERS_HEADER + HUGE, encoding="utf-8")
    _gz(orders / "good_gz.csv.gz", ORDERS_HEADER + "gzipped,C1,2024-03-01 10:00:00,web,completed,card\n")
    _gz(orders / "truncated.csv.gz", ORDERS_HEADER + "truncated_gz,C1,2024-03-01 10:00:00,web,completed,card\n" * 2000,
        truncate=True)
    (orders / "semicolons.csv").write_text(ORDERS_HEADER.replace(",", ";") + "semicolons;C1;2024-03-01;web;completed;card\n",
                                           encoding="utf-8")
    (orders / "binary.csv").write_bytes(bytes(range(256)) * 8)
    (orders / "empty.csv").write_bytes(b"")
    (orders / "header_only.csv").write_text(ORDERS_HEADER, encoding="utf-8")
    (orders / "bom.csv").write_text("\ufeff" + ORDERS_HEADER + "bom,C1,2024-03-01 10:00:00,web,completed,card\n",
                                    encoding="utf-8")
    (orders / "invalid_utf8.csv").write_bytes(
        ORDERS_HEADER.encode() + b"invalid_utf8,C1,2024-03-01 10:00:00,web,completed,caf\xe9\xff\n")
    (orders / "repeated_header.csv").write_text("order_id,order_id,status\nrepeated_header,x,completed\n",
                                                encoding="utf-8")
    (orders / "missing_column.csv").write_text(
        "order_id,customer_id,order_ts,channel,payment_type\nmissing_column,C1,2024-03-01 10:00:00,web,card\n",
        encoding="utf-8")
    (orders / "odd name #1 ü%.csv").write_text(ORDERS_HEADER + "odd_name,C1,2024-03-01 10:00:00,web,completed,card\n",
                                                encoding="utf-8")
    (orders / "crlf.csv").write_bytes((ORDERS_HEADER + "crlf,C1,2024-03-01 10:00:00,web,completed,card\n")
                                      .replace("\n", "\r\n").encode())
    (items / "items.csv").write_text(ITEMS, encoding="utf-8")
    _gz(items / "truncated_items.csv.gz", ITEMS_HEADER + "late_items,1,P1,1,1.00,0\n" * 3000, truncate=True)
    (events / "events.json").write_text(EVENTS, encoding="utf-8")
    _gz(events / "truncated.json.gz", '{"event_id": "truncated_json"}\n' * 3000, truncate=True)
    # A Parquet catalogue: one good file (written by Spark) and a 0-byte one.
    tmp = raw.parent / "parquet_tmp"
    spark.createDataFrame([("P1", "Pen", "office", None, None, "1.50")],
                          "product_id string, product_name string, category string, subcategory string, "
                          "brand string, list_price string").coalesce(1).write.parquet(str(tmp))
    shutil.copy(next(tmp.glob("part-*.parquet")), catalog / "good.parquet")
    (catalog / "zero_bytes.parquet").write_bytes(b"")
    (catalog / "not_parquet.parquet").write_text("product_id,list_price\nP2,1.00\n", encoding="utf-8")


@pytest.fixture(scope="module")
def catalogue(spark: SparkSession, settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Catalogue:
    root = tmp_path_factory.mktemp("bad_inputs").resolve()
    s = _settings(settings, root)
    lake = open_lake(spark, s)
    ctx = StageContext(settings=s, spark=spark, lake=lake)
    _land(spark, root / "raw")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(s.refine.pii_key_env, "bad-inputs-test-key")
        first = {name: run_stage(ctx, name) for name in ("ingest", "refine")}
        quarantined = {t: lake.rows(f"quarantine.{t}") for t in ("orders", "order_items", "web_events")}
        shutil.copy(root / "raw" / "orders" / "bad_lines.csv", root / "raw" / "orders" / "bad_lines_again.csv")
        again = {name: run_stage(ctx, name) for name in ("ingest", "refine")}
    return Catalogue(root / "raw", lake, first, again, quarantined, settings)


# -- whole files --------------------------------------------------------------------------
def test_a_truncated_gzip_is_rejected_with_its_reason_and_the_rest_of_its_batch_is_ingested(catalogue: Catalogue) -> None:
    rejected = catalogue.rejected()
    assert "truncated.csv.gz" in rejected and "truncated_items.csv.gz" in rejected
    assert "Unexpected end of" in rejected["truncated.csv.gz"] or "EOF" in rejected["truncated.csv.gz"]
    assert "\n" not in rejected["truncated.csv.gz"]
    assert catalogue.silver("orders", "order_id", "gzipped")  # the good .gz of the same batch
    assert catalogue.silver("orders", "order_id", "good_1")
    assert catalogue.first["ingest"].outcome.sources["orders"].rejected == 4


def test_a_truncated_gzip_of_json_lines_is_rejected_and_the_events_go_on(catalogue: Catalogue) -> None:
    assert "truncated.json.gz" in catalogue.rejected()
    assert catalogue.silver("web_events", "event_id", "good_event")


def test_a_file_that_is_not_parquet_is_rejected_and_the_good_one_read(catalogue: Catalogue) -> None:
    rejected = catalogue.rejected()
    assert "not_parquet.parquet" in rejected and "zero_bytes.parquet" not in rejected  # empty: no rows to lose
    assert catalogue.silver("products", "product_id", "P1")


def test_a_file_with_another_delimiter_is_rejected_instead_of_widening_bronze(catalogue: Catalogue) -> None:
    rejected = catalogue.rejected()
    assert "semicolons.csv" in rejected and "delimiter" in rejected["semicolons.csv"]
    assert not any(";" in c for c in catalogue.lake.schema("bronze.orders").fieldNames())


def test_a_binary_file_named_csv_is_rejected(catalogue: Catalogue) -> None:
    assert "binary.csv" in catalogue.rejected()
    data_columns = [c for c in catalogue.lake.schema("bronze.orders").fieldNames() if not c.startswith("_")]
    assert sorted(data_columns) == sorted(ORDERS_HEADER.strip().split(","))


def test_a_header_with_a_repeated_column_is_rejected(catalogue: Catalogue) -> None:
    assert "repeated column" in catalogue.rejected()["repeated_header.csv"]


def test_empty_and_header_only_files_add_no_rows_and_no_error(catalogue: Catalogue) -> None:
    rejected = catalogue.rejected()
    assert "empty.csv" not in rejected and "header_only.csv" not in rejected
    files = {Path(r[0]).name for r in catalogue.lake.read("bronze.orders").select("_source_file").distinct().collect()}
    assert "empty.csv" not in files and "header_only.csv" not in files


def test_rejected_files_are_recorded_once_and_ingest_still_succeeds(catalogue: Catalogue) -> None:
    assert catalogue.first["ingest"].skipped is None
    assert any("rejected" in n for n in catalogue.first["ingest"].notes)
    names = [Path(r["file"]).name for r in catalogue.lake.read("quarantine.rejected_files").collect()]
    assert len(names) == len(set(names)) == 7


# -- lines and values ---------------------------------------------------------------------
@pytest.mark.parametrize(("table", "kind", "reason"), [
    ("orders", "unbalanced_quote", "malformed_line"),
    ("orders", "too_few_fields", "malformed_line"),
    ("orders", "too_many_fields", "malformed_line"),
    ("orders", "wrong_type", "bad_order_ts"),
    ("orders", "unknown_status", "bad_status"),
    ("orders", "missing_key", "missing_customer_id"),
    ("orders", "dated_1800", "implausible_order_ts"),
    ("orders", "dated_2999", "implausible_order_ts"),
    ("orders", "huge_field", "too_long_payment_type"),
    ("orders", "missing_column", "missing_status"),
    ("order_items", "thousands", "bad_unit_price"),  # "1,234": 1234 or 1.234? neither is guessed
    ("order_items", "overflow", "out_of_range_line_amount"),
    ("order_items", "negative_quantity", "out_of_range_quantity"),
    ("order_items", "orphan_line", "unknown_order_id"),
])
def test_a_bad_line_is_quarantined_with_its_reason(catalogue: Catalogue, table: str, kind: str, reason: str) -> None:
    found = catalogue.reasons(table, "order_id", kind)
    assert found and all(reason in r for r in found), found
    assert not catalogue.silver(table, "order_id", kind)


def test_an_exact_copy_of_a_line_is_kept_once_and_the_copy_quarantined(catalogue: Catalogue) -> None:
    assert len(catalogue.silver("orders", "order_id", "duplicate_line")) == 1
    assert catalogue.reasons("orders", "order_id", "duplicate_line") == [["duplicate_row"]]


def test_two_versions_of_a_key_keep_one_and_quarantine_the_other(catalogue: Catalogue) -> None:
    assert len(catalogue.silver("orders", "order_id", "two_versions")) == 1
    assert catalogue.reasons("orders", "order_id", "two_versions") == [["superseded_version"]]


@pytest.mark.parametrize("kind", ["bom", "odd_name", "crlf", "gzipped", "null_tokens", "invalid_utf8"])
def test_awkward_but_valid_files_are_accepted(catalogue: Catalogue, kind: str) -> None:
    rows = catalogue.silver("orders", "order_id", kind)
    assert len(rows) == 1 and rows[0]["status"] == "completed"
    if kind == "null_tokens":  # "N/A" and "null" are no value: the configured default (refine.missing) or null
        assert rows[0]["payment_type"] in (None, "unknown") and rows[0]["channel"] in (None, "unknown")
    if kind == "crlf":
        assert rows[0]["payment_type"] == "card"


@pytest.mark.parametrize(("kind", "price"), [("grouped", "1234.50"), ("decimal_comma", "12.50")])
def test_numbers_with_commas_are_read_as_written(catalogue: Catalogue, kind: str, price: str) -> None:
    rows = catalogue.silver("order_items", "order_id", kind)
    assert [str(r["unit_price"]) for r in rows] == [price]


@pytest.mark.parametrize(("kind", "reason"), [("broken_json", "malformed_line"), ("nested_value", None),
                                              ("number_as_id", None)])
def test_json_lines_are_quarantined_or_read_as_text(catalogue: Catalogue, kind: str, reason: str | None) -> None:
    if reason is None:  # a nested value is kept as its JSON text, a number as its digits
        rows = catalogue.silver("web_events", "event_id", kind)
        assert len(rows) == 1
        assert json.loads(rows[0]["session_id"]) in ({"a": 1}, 42)
    else:
        found = catalogue.reasons("web_events", "event_id", kind)
        assert found and all(reason in r for r in found), found


# -- nothing lost, nothing twice ----------------------------------------------------------
def test_every_ingested_row_is_accepted_or_quarantined(spark: SparkSession, catalogue: Catalogue) -> None:
    for name, target in (("orders", "orders"), ("items", "order_items"), ("events", "web_events")):
        for batch, counts in catalogue.first["refine"].outcome.batches[f"{name}->{target}"].items():
            bronze = catalogue.lake.read(f"bronze.{name}").filter(F.col("_ingest_batch_id") == batch).count()
            assert counts.mapped == bronze == counts.accepted + counts.quarantined, (name, batch)


def test_a_file_delivered_again_stores_its_rejected_lines_once(catalogue: Catalogue) -> None:
    batches = catalogue.again["refine"].outcome.batches["orders->orders"]
    assert sum(c.quarantined for c in batches.values()) == 10  # of its 13 lines, as the first time
    assert catalogue.lake.rows("quarantine.orders") == catalogue.quarantined_before["orders"]
    assert len(catalogue.silver("orders", "order_id", "two_versions")) == 1


def test_with_on_rejected_file_error_ingest_exits_4_after_ingesting_the_rest(
    spark: SparkSession, settings: Settings, tmp_path: Path
) -> None:
    s = _settings(settings, tmp_path, on_rejected_file="error")
    s = s.model_copy(update={"sources": {"orders": s.sources["orders"]}})
    orders = tmp_path / "raw" / "orders"
    orders.mkdir(parents=True)
    (orders / "good.csv").write_text(GOOD_ORDERS, encoding="utf-8")
    _gz(orders / "truncated.csv.gz", ORDERS_HEADER + "t,C1,2024-03-01 10:00:00,web,completed,card\n" * 2000,
        truncate=True)
    ctx = StageContext(settings=s, spark=spark, lake=open_lake(spark, s))
    with pytest.raises(SourceError) as caught:
        run_stage(ctx, "ingest")
    message = str(caught.value)
    assert "\n" not in message and "truncated.csv.gz" in message and "quarantine.rejected_files" in message
    assert caught.value.exit_code == 4
    assert ctx.lake.rows("bronze.orders") == GOOD_ORDERS.count("\n") - 1


def test_a_lake_path_that_is_a_file_is_one_clear_error(spark: SparkSession, settings: Settings, tmp_path: Path) -> None:
    (tmp_path / "lake").write_text("not a directory")
    with pytest.raises(LakeError, match=r"is a file, not a directory: set paths.lake"):
        open_lake(spark, _settings(settings, tmp_path))


def test_the_report_lists_the_rejected_files_with_their_reasons(spark: SparkSession, catalogue: Catalogue) -> None:
    s = _settings(catalogue.lake_settings, catalogue.raw.parent)
    ctx = StageContext(settings=s, spark=spark, lake=catalogue.lake)
    outcome = run_stage(ctx, "report").outcome
    assert outcome.facts["overview"]["files rejected at ingest"] == "7"
    html = Path(outcome.path.removeprefix("file://").removeprefix("file:")).read_text(encoding="utf-8")
    assert "Files rejected at ingest" in html and "truncated.csv.gz" in html and "Unexpected end of input" in html


def test_nothing_in_the_lake_is_readable_by_others(catalogue: Catalogue) -> None:
    """lake.umask 027: Spark's Parquet files, the Delta log and the folders holding them."""
    root = Path(catalogue.lake.root.removeprefix("file://").removeprefix("file:"))
    paths = [root, *root.rglob("*")]
    assert any(p.suffix == ".parquet" for p in paths) and any(p.suffix == ".json" for p in paths)
    assert [str(p) for p in paths if p.stat().st_mode & 0o007] == []
