"""The embedded engine (Spark writes Parquet, delta-rs commits the log): the lake contract plus
what only this engine can be asked: crash safety around its commit step, interop with plain
delta-rs tables, and that writes count rows from file metadata instead of collecting data."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable, write_deltalake
from deltalake.exceptions import CommitFailedError
from pydantic import SecretStr
from pyspark.sql import SparkSession
from pyspark.sql.classic.dataframe import DataFrame as ClassicDataFrame

from crm_spark.config import Settings
from crm_spark.errors import LakeError
from crm_spark.lake import Txn, embedded, open_lake
from crm_spark.lake.embedded import EmbeddedLake
from crm_spark.session import delta_spark_available
from lake_contract import D1, D2, D3, ORDERS, LakeContract, assert_rows, data_files, orders, referenced_files

TESTS = Path(__file__).parent


@pytest.fixture
def lake(spark: SparkSession, tmp_path: Path) -> EmbeddedLake:
    return EmbeddedLake(spark, str(tmp_path / "lake"))


class TestEmbeddedLake(LakeContract):
    """Every behaviour of tests/lake_contract.py, on the embedded engine."""


# -- crash safety -------------------------------------------------------------------------
@pytest.mark.slow
def test_a_writer_killed_before_its_commit_leaves_the_table_as_it_was(
    lake: EmbeddedLake, spark: SparkSession, tmp_path: Path
) -> None:
    lake.append(ORDERS, orders(spark, [(1, "c1", 10.0, D1), (2, "c2", 20.0, D2)]))
    files_before = data_files(lake, ORDERS)
    log = tmp_path / "killed_writer.log"

    with log.open("w") as out:
        # Its own process group, so the orphaned JVM of the killed driver is reaped right after.
        proc = subprocess.Popen(
            [sys.executable, str(TESTS / "killed_writer.py"), lake.root, ORDERS],
            stdout=out, stderr=subprocess.STDOUT, cwd=TESTS.parent, start_new_session=True,
        )
        try:
            returncode = proc.wait(timeout=300)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)

    assert returncode == -signal.SIGKILL, log.read_text()[-3000:]
    assert data_files(lake, ORDERS) > files_before  # Spark had written the new Parquet files ...
    assert lake.version(ORDERS) == 0  # ... but no commit references them
    assert_rows(lake.read(ORDERS), orders(spark, [(1, "c1", 10.0, D1), (2, "c2", 20.0, D2)]))


def test_a_failed_commit_is_a_lake_error_and_changes_nothing(
    lake: EmbeddedLake, spark: SparkSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    lake.append(ORDERS, orders(spark, [(1, "c1", 10.0, D1)]))

    def conflict(*_args: object, **_kwargs: object) -> None:
        raise CommitFailedError("Transaction failed: version already exists")

    with monkeypatch.context() as m, pytest.raises(LakeError, match="another writer committed first") as caught:
        m.setattr(DeltaTable, "create_write_transaction", conflict)
        lake.append(ORDERS, orders(spark, [(2, "c2", 20.0, D1)]))

    assert "re-running the stage is safe" in str(caught.value) and "\n" not in str(caught.value)
    assert lake.version(ORDERS) == 0
    assert_rows(lake.read(ORDERS), orders(spark, [(1, "c1", 10.0, D1)]))
    assert data_files(lake, ORDERS) == referenced_files(lake, ORDERS)  # the lost write's files are gone


def _rival_commits_meanwhile(monkeypatch: pytest.MonkeyPatch, lake: EmbeddedLake, rival_write: Callable[[], object]) -> None:
    """Run ``rival_write`` (another writer's commit) after ``lake`` wrote its files, before it commits."""
    write_files = EmbeddedLake._write_files

    def then_the_rival(self: EmbeddedLake, table: str, df: object, parts: object) -> object:
        adds = write_files(self, table, df, parts)
        if self is lake:
            rival_write()
        return adds

    monkeypatch.setattr(EmbeddedLake, "_write_files", then_the_rival)


def test_the_loser_of_two_writers_creating_a_table_is_told_a_retry_is_safe(
    lake: EmbeddedLake, spark: SparkSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    rival = EmbeddedLake(spark, lake.root)
    _rival_commits_meanwhile(monkeypatch, lake, lambda: rival.append(ORDERS, orders(spark, [(9, "c9", 90.0, D2)])))
    with pytest.raises(LakeError, match="another writer created it first") as caught:
        lake.append(ORDERS, orders(spark, [(1, "c1", 10.0, D1)]))
    assert "re-running the stage is safe" in str(caught.value) and "\n" not in str(caught.value)
    assert_rows(lake.read(ORDERS), orders(spark, [(9, "c9", 90.0, D2)]))
    assert data_files(lake, ORDERS) == referenced_files(lake, ORDERS)


def test_of_two_writers_creating_a_table_at_the_same_moment_one_commits(
    lake: EmbeddedLake, spark: SparkSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Both find the table missing and commit version 0 at once (as two refines did). Without
    # max_commit_retries=0 deltalake committed the loser as version 1 in 3 of 4 such races.
    create, barrier = embedded.create_table_with_add_actions, threading.Barrier(2)

    def together(*args: object, **kwargs: object) -> object:
        barrier.wait(timeout=60)
        return create(*args, **kwargs)

    monkeypatch.setattr(embedded, "create_table_with_add_actions", together)
    rival = EmbeddedLake(spark, lake.root)
    for attempt in range(3):
        table = f"silver.race_{attempt}"
        errors: list[LakeError] = []

        def write(writer: EmbeddedLake) -> None:
            try:
                writer.append(table, orders(spark, [(1, "c1", 10.0, D1)]), txn=Txn("refine", 0))
            except LakeError as exc:
                errors.append(exc)

        threads = [threading.Thread(target=write, args=(w,)) for w in (lake, rival)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert lake.version(table) == 0
        assert lake.read(table).count() == 1
        assert data_files(lake, table) == referenced_files(lake, table)
        assert len(errors) == 1 and all("re-running the stage is safe" in str(e) for e in errors), errors


@pytest.mark.parametrize("write", ["append", "merge"])
def test_a_writer_whose_snapshot_a_rival_moved_on_is_told_a_retry_is_safe(
    lake: EmbeddedLake, spark: SparkSession, monkeypatch: pytest.MonkeyPatch, write: str
) -> None:
    # Two refines at once: both read version 0, the rival commits first. The loser's write was
    # computed from version 0 (keys it thought new, a transaction it thought not done), so it must
    # not be committed on top of version 1 (deltalake retries a commit at the next version).
    lake.append(ORDERS, orders(spark, [(1, "c1", 10.0, D1)]))
    rival = EmbeddedLake(spark, lake.root)
    _rival_commits_meanwhile(monkeypatch, lake, lambda: rival.merge(
        ORDERS, orders(spark, [(2, "c2", 20.0, D2)]), keys=["order_id"], txn=Txn("refine", 7)))
    with pytest.raises(LakeError, match="another writer committed first") as caught:
        if write == "merge":
            lake.merge(ORDERS, orders(spark, [(2, "c2", 20.0, D2)]), keys=["order_id"], txn=Txn("refine", 7))
        else:
            lake.append(ORDERS, orders(spark, [(2, "c2", 20.0, D2)]), txn=Txn("refine", 7))
    assert "re-running the stage is safe" in str(caught.value) and "\n" not in str(caught.value)
    assert lake.version(ORDERS) == 1
    assert_rows(lake.read(ORDERS), orders(spark, [(1, "c1", 10.0, D1), (2, "c2", 20.0, D2)]))
    assert data_files(lake, ORDERS) == referenced_files(lake, ORDERS)


# -- merge rewrites only what it must -----------------------------------------------------
def test_merge_rewrites_only_the_files_holding_matched_keys(lake: EmbeddedLake, spark: SparkSession) -> None:
    lake.append(
        ORDERS, orders(spark, [(1, "c1", 10.0, D1), (2, "c2", 20.0, D2)]), partition_by=["order_date"]
    )
    d2_files = {f for f in referenced_files(lake, ORDERS) if "/order_date=2024-03-02/" in f}

    result = lake.merge(ORDERS, orders(spark, [(1, "c1", 11.0, D1)]), keys=["order_id"])

    assert result.files_removed == 1
    assert d2_files and d2_files <= referenced_files(lake, ORDERS)


# -- no data through the driver -----------------------------------------------------------
def test_written_row_counts_come_from_the_parquet_footers(lake: EmbeddedLake, spark: SparkSession) -> None:
    one_task = orders(spark, [(1, "c1", 10.0, D1), (2, "c2", 20.0, D2), (3, "c3", 30.0, D2)]).coalesce(1)

    result = lake.append(ORDERS, one_task, partition_by=["order_date"])  # one file per date: 1 row, 2 rows

    root = Path(lake.uri(ORDERS))
    footer_rows = {f: pq.ParquetFile(root / f).metadata.num_rows for f in referenced_files(lake, ORDERS)}
    log_rows = {
        a["path"]: json.loads(a["stats"])["numRecords"]
        for line in (root / "_delta_log" / "00000000000000000000.json").read_text().splitlines()
        if (a := json.loads(line).get("add"))
    }
    assert result.rows == 3 == sum(footer_rows.values())
    assert sorted(log_rows.values()) == sorted(footer_rows.values()) == [1, 2]
    assert result.files_added == 2


def test_append_and_overwrite_never_collect_rows_to_the_driver(
    lake: EmbeddedLake, spark: SparkSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    batch = orders(spark, [(1, "c1", 10.0, D1), (2, "c2", 20.0, D2)])

    def forbidden(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("a lake write pulled rows to the driver")

    with monkeypatch.context() as m:
        for action in ("collect", "toPandas", "toLocalIterator", "take", "head", "first", "tail", "toArrow"):
            m.setattr(ClassicDataFrame, action, forbidden)
        lake.append(ORDERS, batch, partition_by=["order_date"])
        lake.append(ORDERS, batch)
        lake.overwrite(ORDERS, batch)
        lake.overwrite(ORDERS, orders(spark, [(3, "c3", 30.0, D1)]), partition={"order_date": D1})

    assert_rows(lake.read(ORDERS), orders(spark, [(3, "c3", 30.0, D1), (2, "c2", 20.0, D2)]))


# -- interop with delta-rs ----------------------------------------------------------------
CUSTOMERS_DDL = "customer_id BIGINT, city STRING, spend_eur DOUBLE, signup_ts TIMESTAMP"
CUSTOMERS = pa.table(
    {
        "customer_id": pa.array([1, 2, 3, 4], pa.int64()),
        "city": ["Paris", "New York", "Paris", "São Paulo"],
        "spend_eur": [10.5, 20.0, None, 7.25],
        "signup_ts": pa.array(
            [datetime(2024, 1, 1, 9, 30, tzinfo=timezone.utc), datetime(2024, 2, 1, tzinfo=timezone.utc), None,
             datetime(2024, 3, 1, 23, 59, 59, tzinfo=timezone.utc)],
            pa.timestamp("us", tz="UTC"),
        ),
    }
)
CUSTOMERS_ROWS = [
    (1, "Paris", 10.5, datetime(2024, 1, 1, 9, 30, tzinfo=timezone.utc)),
    (2, "New York", 20.0, datetime(2024, 2, 1, tzinfo=timezone.utc)),
    (3, "Paris", None, None),
    (4, "São Paulo", 7.25, datetime(2024, 3, 1, 23, 59, 59, tzinfo=timezone.utc)),
]


def test_reads_an_unpartitioned_table_written_by_deltalake(lake: EmbeddedLake, spark: SparkSession) -> None:
    write_deltalake(lake.uri("bronze.customers"), CUSTOMERS)

    assert_rows(lake.read("bronze.customers"), spark.createDataFrame(CUSTOMERS_ROWS, CUSTOMERS_DDL))


def test_reads_a_partitioned_table_written_by_deltalake(lake: EmbeddedLake, spark: SparkSession) -> None:
    # Partition folders such as city=New%20York must still match their log entries.
    write_deltalake(lake.uri("bronze.customers"), CUSTOMERS, partition_by=["city"])

    assert_rows(lake.read("bronze.customers"), spark.createDataFrame(CUSTOMERS_ROWS, CUSTOMERS_DDL))
    assert_rows(
        lake.read("bronze.customers", partition={"city": "New York"}),
        spark.createDataFrame([CUSTOMERS_ROWS[1]], CUSTOMERS_DDL),
    )


def test_merges_into_a_partitioned_table_written_by_deltalake(lake: EmbeddedLake, spark: SparkSession) -> None:
    write_deltalake(lake.uri("bronze.customers"), CUSTOMERS, partition_by=["city"])

    lake.merge(
        "bronze.customers",
        spark.createDataFrame([(1, "Paris", 11.0, None)], CUSTOMERS_DDL),
        keys=["customer_id"],
    )

    expected = [(1, "Paris", 11.0, None), *CUSTOMERS_ROWS[1:]]
    assert_rows(lake.read("bronze.customers"), spark.createDataFrame(expected, CUSTOMERS_DDL))


def test_a_table_written_by_the_lake_reads_in_deltalake(lake: EmbeddedLake, spark: SparkSession) -> None:
    lake.append(
        ORDERS,
        orders(spark, [(1, "c1", 10.0, D1), (2, None, 20.0, D2), (3, "c3", None, D2)]),
        partition_by=["order_date"],
    )
    lake.merge(ORDERS, orders(spark, [(3, "c3", 30.0, D2), (4, "c4", 40.0, D3)]), keys=["order_id"])

    table = DeltaTable(lake.uri(ORDERS)).to_pyarrow_table()

    assert sorted(table.to_pylist(), key=lambda r: r["order_id"]) == [
        {"order_id": 1, "customer_id": "c1", "amount_eur": 10.0, "order_date": D1},
        {"order_id": 2, "customer_id": None, "amount_eur": 20.0, "order_date": D2},
        {"order_id": 3, "customer_id": "c3", "amount_eur": 30.0, "order_date": D2},
        {"order_id": 4, "customer_id": "c4", "amount_eur": 40.0, "order_date": D3},
    ]


def test_timestamps_are_stored_as_utc_microseconds(lake: EmbeddedLake, spark: SparkSession) -> None:
    events = spark.createDataFrame(
        [(1, datetime(2024, 3, 1, 12, 30, 15, 123456, tzinfo=timezone.utc))], "event_id BIGINT, event_ts TIMESTAMP"
    )
    lake.append("bronze.events", events)

    table = DeltaTable(lake.uri("bronze.events")).to_pyarrow_table()

    assert table.schema.field("event_ts").type == pa.timestamp("us", tz="UTC")
    assert table.column("event_ts").to_pylist() == [datetime(2024, 3, 1, 12, 30, 15, 123456, tzinfo=timezone.utc)]


# -- naming and engine choice -------------------------------------------------------------
@pytest.mark.parametrize("table", ["orders", "platinum.orders", "silver.Orders", "silver.", "silver.my-orders"])
def test_a_bad_table_name_is_a_lake_error(lake: EmbeddedLake, table: str) -> None:
    with pytest.raises(LakeError, match="layer.name"):
        lake.uri(table)


@pytest.mark.parametrize(("app_id", "version"), [("", 1), ("ingest-orders", -1)])
def test_an_invalid_idempotency_token_is_a_lake_error(app_id: str, version: int) -> None:
    with pytest.raises(LakeError, match="invalid idempotency token"):
        Txn(app_id, version)


def test_tables_live_under_layer_folders(lake: EmbeddedLake, tmp_path: Path) -> None:
    assert lake.uri("gold.customer_features") == f"{tmp_path}/lake/gold/customer_features"


def test_a_partition_overwrite_of_an_unpartitioned_table_is_a_lake_error(
    lake: EmbeddedLake, spark: SparkSession
) -> None:
    lake.append(ORDERS, orders(spark, [(1, "c1", 10.0, D1)]))

    with pytest.raises(LakeError, match="not partitioned"):
        lake.overwrite(ORDERS, orders(spark, [(2, "c2", 20.0, D1)]), partition={"order_date": D1})


def _engine(settings: Settings, engine: str) -> Settings:
    return settings.model_copy(update={"lake": settings.lake.model_copy(update={"engine": engine})})


def test_open_lake_picks_the_configured_engine_and_auto_what_the_classpath_allows(
    spark: SparkSession, settings: Settings, tmp_path: Path
) -> None:
    lake = open_lake(spark, _engine(settings, "embedded"), root=str(tmp_path / "lake"))
    auto = open_lake(spark, _engine(settings, "auto"), root=str(tmp_path / "lake"))

    assert lake.engine == "embedded"
    assert lake.root == str(tmp_path / "lake")
    assert auto.engine == ("delta-spark" if delta_spark_available(spark) else "embedded")


def test_open_lake_refuses_delta_spark_without_its_jars(
    spark: SparkSession, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    import crm_spark.lake

    monkeypatch.setattr(crm_spark.lake, "delta_spark_available", lambda _spark: False)  # a session without the jars

    with pytest.raises(LakeError, match="lake.engine: embedded"):
        open_lake(spark, _engine(settings, "delta-spark"))


def test_open_lake_passes_storage_options_to_the_embedded_engine(spark: SparkSession, settings: Settings) -> None:
    settings = _engine(settings, "embedded")
    # model_copy skips validation: give the field the SecretStr it holds after loading.
    with_secret = settings.model_copy(
        update={"lake": settings.lake.model_copy(update={"storage_options": {"AWS_REGION": SecretStr("eu-west-1")}})}
    )

    lake = open_lake(spark, with_secret)

    assert isinstance(lake, EmbeddedLake)
    assert lake._storage_options == {"AWS_REGION": "eu-west-1"}  # noqa: SLF001


# -- crm-spark vacuum ---------------------------------------------------------------------
def test_vacuum_command_deletes_the_old_files_of_killed_writes_in_every_table(
    lake: EmbeddedLake, spark: SparkSession, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A killed write leaves Parquet files no version refers to; `crm-spark vacuum` deletes those
    older than the retention (and files replaced longer ago than that), never a file a running write may own."""
    import logging

    from crm_spark import cli

    lake.append(ORDERS, orders(spark, [(1, "c1", 10.0, D1)]))
    lake.overwrite(ORDERS, orders(spark, [(2, "c2", 20.0, D2)]))
    lake.append("gold.other", orders(spark, [(3, "c3", 30.0, D3)]))
    kept = {t: referenced_files(lake, t) for t in (ORDERS, "gold.other")}
    table_dir = Path(lake.uri(ORDERS))
    some_file = table_dir / sorted(kept[ORDERS])[0]
    old, fresh = table_dir / "data" / "killed-write" / "part-0.parquet", table_dir / "data" / "running" / "part-0.parquet"
    for orphan in (old, fresh):
        orphan.parent.mkdir(parents=True)
        orphan.write_bytes(some_file.read_bytes())
    two_days_ago = datetime.now(timezone.utc).timestamp() - 48 * 3600
    os.utime(old, (two_days_ago, two_days_ago))
    # The overwritten version's file was removed a moment ago: within the retention, it stays.
    replaced = data_files(lake, ORDERS) - kept[ORDERS] - {"data/killed-write/part-0.parquet", "data/running/part-0.parquet"}

    monkeypatch.setattr("crm_spark.session.build_session", lambda settings, preload=(): spark)
    logger = logging.getLogger("crm_spark")
    saved = (logger.handlers[:], logger.level, logger.propagate)
    try:
        assert cli.main(["vacuum", "--lake", lake.root, "--retention-hours", "24"]) == 0
    finally:
        logger.handlers[:], logger.level, logger.propagate = saved

    assert data_files(lake, ORDERS) == kept[ORDERS] | replaced | {"data/running/part-0.parquet"}
    assert data_files(lake, "gold.other") == kept["gold.other"]
    assert_rows(lake.read(ORDERS), orders(spark, [(2, "c2", 20.0, D2)]))
    assert re.search(r"vacuum: deleted [1-9]\d* data files older than 24 hours", capsys.readouterr().out)
    assert lake.tables() == ["gold.other", ORDERS]
