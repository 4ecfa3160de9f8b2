"""The behaviour every lake engine owes its callers (SPEC section 4), as a reusable test class.

``tests/test_lake.py`` runs it against the embedded engine and ``tests/test_lake_delta_spark.py``
against delta-spark; each subclass supplies a ``lake`` fixture rooted in the test's tmp_path.
Expected rows are written out by hand in every test.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest
from chispa import assert_df_equality
from deltalake import DeltaTable
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.types import StructType

from crm_spark.errors import LakeError
from crm_spark.lake import Lake, Txn

ORDERS_DDL = "order_id BIGINT, customer_id STRING, amount_eur DOUBLE, order_date DATE"
ORDERS = "silver.orders"
D1, D2, D3 = date(2024, 3, 1), date(2024, 3, 2), date(2024, 3, 3)


def orders(spark: SparkSession, rows: list[tuple], ddl: str = ORDERS_DDL) -> DataFrame:
    return spark.createDataFrame(rows, ddl)


def assert_rows(actual: DataFrame, expected: DataFrame) -> None:
    assert_df_equality(actual, expected, ignore_row_order=True, ignore_nullable=True)


def data_files(lake: Lake, table: str) -> set[str]:
    """Parquet files on disk under the table folder, relative to it (the log excluded)."""
    root = Path(lake.uri(table))
    return {str(p.relative_to(root)) for p in root.rglob("*.parquet") if "_delta_log" not in p.parts}


def referenced_files(lake: Lake, table: str) -> set[str]:
    """Files the latest snapshot references, read straight from the Delta log."""
    root = Path(lake.uri(table))
    return {str(Path(uri).relative_to(root)) for uri in DeltaTable(str(root)).file_uris()}


class LakeContract:
    """Subclasses provide the ``lake`` fixture."""

    # -- create --------------------------------------------------------------------------
    def test_create_makes_an_empty_table_with_the_schema(self, lake: Lake, spark: SparkSession) -> None:
        result = lake.create(ORDERS, StructType.fromDDL(ORDERS_DDL), partition_by=["order_date"])

        assert (result.version, result.noop) == (0, False)
        assert_rows(lake.read(ORDERS), orders(spark, []))
        assert lake.partition_columns(ORDERS) == ["order_date"]

    def test_create_again_with_the_same_schema_is_a_noop(self, lake: Lake) -> None:
        lake.create(ORDERS, StructType.fromDDL(ORDERS_DDL))

        again = lake.create(ORDERS, StructType.fromDDL(ORDERS_DDL))

        assert (again.version, again.noop) == (0, True)
        assert lake.version(ORDERS) == 0

    def test_create_again_with_another_schema_is_a_lake_error(self, lake: Lake) -> None:
        lake.create(ORDERS, StructType.fromDDL(ORDERS_DDL))

        with pytest.raises(LakeError, match="channel"):
            lake.create(ORDERS, StructType.fromDDL(f"{ORDERS_DDL}, channel STRING"))
        assert lake.version(ORDERS) == 0

    def test_exists_only_after_the_first_write(self, lake: Lake, spark: SparkSession) -> None:
        assert not lake.exists(ORDERS)
        lake.append(ORDERS, orders(spark, [(1, "c1", 10.0, D1)]))
        assert lake.exists(ORDERS)

    # -- append / overwrite --------------------------------------------------------------
    def test_append_adds_rows_to_the_existing_ones(self, lake: Lake, spark: SparkSession) -> None:
        first = lake.append(ORDERS, orders(spark, [(1, "c1", 10.0, D1), (2, "c2", 20.0, D1)]))
        second = lake.append(ORDERS, orders(spark, [(3, "c3", 30.0, D2)]))

        assert (first.version, first.rows, second.version, second.rows) == (0, 2, 1, 1)
        assert_rows(
            lake.read(ORDERS), orders(spark, [(1, "c1", 10.0, D1), (2, "c2", 20.0, D1), (3, "c3", 30.0, D2)])
        )

    def test_overwrite_replaces_the_whole_table(self, lake: Lake, spark: SparkSession) -> None:
        lake.append(ORDERS, orders(spark, [(1, "c1", 10.0, D1), (2, "c2", 20.0, D2)]), partition_by=["order_date"])

        result = lake.overwrite(ORDERS, orders(spark, [(9, "c9", 90.0, D3)]))

        assert (result.version, result.rows) == (1, 1)
        assert_rows(lake.read(ORDERS), orders(spark, [(9, "c9", 90.0, D3)]))

    def test_overwrite_of_a_partition_leaves_the_others_untouched(self, lake: Lake, spark: SparkSession) -> None:
        lake.append(
            ORDERS,
            orders(spark, [(1, "c1", 10.0, D1), (2, "c2", 20.0, D1), (3, "c3", 30.0, D2)]),
            partition_by=["order_date"],
        )

        lake.overwrite(ORDERS, orders(spark, [(4, "c4", 40.0, D1)]), partition={"order_date": D1})

        assert_rows(lake.read(ORDERS), orders(spark, [(4, "c4", 40.0, D1), (3, "c3", 30.0, D2)]))

    def test_overwrite_of_a_partition_with_rows_outside_it_commits_nothing(
        self, lake: Lake, spark: SparkSession
    ) -> None:
        lake.append(ORDERS, orders(spark, [(1, "c1", 10.0, D1), (3, "c3", 30.0, D2)]), partition_by=["order_date"])

        with pytest.raises(LakeError):
            lake.overwrite(
                ORDERS, orders(spark, [(4, "c4", 40.0, D1), (5, "c5", 50.0, D2)]), partition={"order_date": D1}
            )

        assert lake.version(ORDERS) == 0
        assert_rows(lake.read(ORDERS), orders(spark, [(1, "c1", 10.0, D1), (3, "c3", 30.0, D2)]))

    def test_read_of_one_partition_returns_only_its_rows(self, lake: Lake, spark: SparkSession) -> None:
        lake.append(
            ORDERS,
            orders(spark, [(1, "c1", 10.0, D1), (2, "c2", 20.0, D2), (3, "c3", 30.0, D3)]),
            partition_by=["order_date"],
        )

        assert_rows(
            lake.read(ORDERS, partition={"order_date": [D1, D3]}),
            orders(spark, [(1, "c1", 10.0, D1), (3, "c3", 30.0, D3)]),
        )

    # -- merge ---------------------------------------------------------------------------
    def test_merge_updates_matched_keys_and_inserts_new_ones(self, lake: Lake, spark: SparkSession) -> None:
        lake.append(ORDERS, orders(spark, [(1, "c1", 10.0, D1), (2, "c2", 20.0, D1), (3, "c3", 30.0, D2)]))

        result = lake.merge(ORDERS, orders(spark, [(2, "c2", 25.0, D1), (4, "c4", 40.0, D3)]), keys=["order_id"])

        assert result.version == 1
        assert_rows(
            lake.read(ORDERS),
            orders(spark, [(1, "c1", 10.0, D1), (2, "c2", 25.0, D1), (3, "c3", 30.0, D2), (4, "c4", 40.0, D3)]),
        )

    def test_merge_into_a_partitioned_table(self, lake: Lake, spark: SparkSession) -> None:
        lake.append(
            ORDERS,
            orders(spark, [(1, "c1", 10.0, D1), (2, "c2", 20.0, D1), (3, "c3", 30.0, D2)]),
            partition_by=["order_date"],
        )

        lake.merge(ORDERS, orders(spark, [(2, "c2", 25.0, D1), (4, "c4", 40.0, D3)]), keys=["order_id"])

        assert_rows(
            lake.read(ORDERS),
            orders(spark, [(1, "c1", 10.0, D1), (2, "c2", 25.0, D1), (3, "c3", 30.0, D2), (4, "c4", 40.0, D3)]),
        )
        assert_rows(
            lake.read(ORDERS, partition={"order_date": D1}),
            orders(spark, [(1, "c1", 10.0, D1), (2, "c2", 25.0, D1)]),
        )

    def test_merge_by_a_compound_key(self, lake: Lake, spark: SparkSession) -> None:
        lake.append(ORDERS, orders(spark, [(1, "c1", 10.0, D1), (1, "c2", 20.0, D1)]))

        lake.merge(ORDERS, orders(spark, [(1, "c2", 22.0, D2)]), keys=["order_id", "customer_id"])

        assert_rows(lake.read(ORDERS), orders(spark, [(1, "c1", 10.0, D1), (1, "c2", 22.0, D2)]))

    def test_merge_insert_only_leaves_existing_rows_alone(self, lake: Lake, spark: SparkSession) -> None:
        lake.append(ORDERS, orders(spark, [(1, "c1", 10.0, D1), (2, "c2", 20.0, D1)]))

        lake.merge(
            ORDERS, orders(spark, [(2, "c2", 99.0, D2), (3, "c3", 30.0, D2)]), keys=["order_id"], insert_only=True
        )

        assert_rows(
            lake.read(ORDERS), orders(spark, [(1, "c1", 10.0, D1), (2, "c2", 20.0, D1), (3, "c3", 30.0, D2)])
        )

    def test_merge_of_a_frame_with_duplicate_keys_is_a_lake_error(self, lake: Lake, spark: SparkSession) -> None:
        lake.append(ORDERS, orders(spark, [(1, "c1", 10.0, D1)]))

        with pytest.raises(LakeError, match="order_id"):
            lake.merge(ORDERS, orders(spark, [(2, "c2", 20.0, D1), (2, "c2", 21.0, D1)]), keys=["order_id"])

        assert lake.version(ORDERS) == 0
        assert_rows(lake.read(ORDERS), orders(spark, [(1, "c1", 10.0, D1)]))

    def test_merge_of_keys_the_caller_verified_skips_the_lakes_own_check(
        self, lake: Lake, spark: SparkSession, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        lake.append(ORDERS, orders(spark, [(1, "c1", 10.0, D1)]))
        checked: list[str] = []
        monkeypatch.setattr(lake, "_check_unique_keys", lambda table, df, keys: checked.append(table))

        lake.merge(ORDERS, orders(spark, [(1, "c1", 11.0, D1), (2, "c2", 20.0, D1)]), keys=["order_id"],
                   keys_verified=True)
        assert checked == []
        lake.merge(ORDERS, orders(spark, [(3, "c3", 30.0, D2)]), keys=["order_id"])
        assert checked == [ORDERS]

        assert_rows(
            lake.read(ORDERS), orders(spark, [(1, "c1", 11.0, D1), (2, "c2", 20.0, D1), (3, "c3", 30.0, D2)])
        )

    def test_merge_into_a_missing_table_creates_it(self, lake: Lake, spark: SparkSession) -> None:
        lake.merge(ORDERS, orders(spark, [(1, "c1", 10.0, D1)]), keys=["order_id"])

        assert_rows(lake.read(ORDERS), orders(spark, [(1, "c1", 10.0, D1)]))

    # -- versions, history, time travel, vacuum ------------------------------------------
    def test_read_at_an_old_version_returns_the_old_rows(self, lake: Lake, spark: SparkSession) -> None:
        lake.append(ORDERS, orders(spark, [(1, "c1", 10.0, D1)]))
        lake.overwrite(ORDERS, orders(spark, [(2, "c2", 20.0, D2)]))
        lake.append(ORDERS, orders(spark, [(3, "c3", 30.0, D3)]))

        assert lake.version(ORDERS) == 2
        assert_rows(lake.read(ORDERS, version=0), orders(spark, [(1, "c1", 10.0, D1)]))
        assert_rows(lake.read(ORDERS, version=1), orders(spark, [(2, "c2", 20.0, D2)]))
        assert_rows(lake.read(ORDERS), orders(spark, [(2, "c2", 20.0, D2), (3, "c3", 30.0, D3)]))

    def test_history_lists_each_operation_newest_first(self, lake: Lake, spark: SparkSession) -> None:
        lake.create(ORDERS, StructType.fromDDL(ORDERS_DDL))
        lake.append(ORDERS, orders(spark, [(1, "c1", 10.0, D1)]))
        lake.overwrite(ORDERS, orders(spark, [(2, "c2", 20.0, D1)]))
        lake.merge(ORDERS, orders(spark, [(3, "c3", 30.0, D1)]), keys=["order_id"])

        history = lake.history(ORDERS)

        assert [(c.version, c.operation) for c in history] == [
            (3, "MERGE"),
            (2, "OVERWRITE"),
            (1, "APPEND"),
            (0, "CREATE"),
        ]
        assert [c.version for c in lake.history(ORDERS, limit=2)] == [3, 2]

    def test_vacuum_deletes_files_no_longer_referenced(self, lake: Lake, spark: SparkSession) -> None:
        lake.append(ORDERS, orders(spark, [(1, "c1", 10.0, D1), (2, "c2", 20.0, D2)]))
        lake.overwrite(ORDERS, orders(spark, [(3, "c3", 30.0, D3)]))
        current = referenced_files(lake, ORDERS)
        before = data_files(lake, ORDERS)
        assert current < before  # the overwritten version's files are still on disk

        removed = lake.vacuum(ORDERS, retention_hours=0)

        assert data_files(lake, ORDERS) == current
        assert len(removed) == len(before - current)  # what `crm-spark vacuum` reports
        assert_rows(lake.read(ORDERS), orders(spark, [(3, "c3", 30.0, D3)]))

    def test_time_travel_to_a_vacuumed_version_is_a_lake_error(self, lake: Lake, spark: SparkSession) -> None:
        lake.append(ORDERS, orders(spark, [(1, "c1", 10.0, D1)]))
        lake.overwrite(ORDERS, orders(spark, [(2, "c2", 20.0, D2)]))
        lake.vacuum(ORDERS, retention_hours=0)

        with pytest.raises(LakeError):
            lake.read(ORDERS, version=0).collect()

    def test_a_version_that_never_existed_is_a_lake_error(self, lake: Lake, spark: SparkSession) -> None:
        lake.append(ORDERS, orders(spark, [(1, "c1", 10.0, D1)]))

        with pytest.raises(LakeError):
            lake.read(ORDERS, version=5).collect()

    def test_vacuum_dry_run_deletes_nothing(self, lake: Lake, spark: SparkSession) -> None:
        lake.append(ORDERS, orders(spark, [(1, "c1", 10.0, D1)]))
        lake.overwrite(ORDERS, orders(spark, [(2, "c2", 20.0, D2)]))
        before = data_files(lake, ORDERS)

        lake.vacuum(ORDERS, retention_hours=0, dry_run=True)

        assert data_files(lake, ORDERS) == before
        assert_rows(lake.read(ORDERS, version=0), orders(spark, [(1, "c1", 10.0, D1)]))

    def test_a_missing_table_is_a_lake_error(self, lake: Lake) -> None:
        with pytest.raises(LakeError, match="silver.nothing"):
            lake.read("silver.nothing")

    # -- idempotency tokens --------------------------------------------------------------
    def test_append_retried_with_the_same_token_adds_nothing(self, lake: Lake, spark: SparkSession) -> None:
        batch = orders(spark, [(1, "c1", 10.0, D1), (2, "c2", 20.0, D1)])
        lake.append(ORDERS, batch, txn=Txn("ingest-orders", 1))

        retry = lake.append(ORDERS, batch, txn=Txn("ingest-orders", 1))

        assert (retry.noop, retry.version, lake.version(ORDERS)) == (True, 0, 0)
        assert_rows(lake.read(ORDERS), orders(spark, [(1, "c1", 10.0, D1), (2, "c2", 20.0, D1)]))

    def test_overwrite_retried_with_the_same_token_changes_nothing(self, lake: Lake, spark: SparkSession) -> None:
        lake.append(ORDERS, orders(spark, [(1, "c1", 10.0, D1)]))
        lake.overwrite(ORDERS, orders(spark, [(2, "c2", 20.0, D1)]), txn=Txn("features", 7))

        retry = lake.overwrite(ORDERS, orders(spark, [(3, "c3", 30.0, D1)]), txn=Txn("features", 7))

        assert (retry.noop, lake.version(ORDERS)) == (True, 1)
        assert_rows(lake.read(ORDERS), orders(spark, [(2, "c2", 20.0, D1)]))

    def test_merge_retried_with_the_same_token_changes_nothing(self, lake: Lake, spark: SparkSession) -> None:
        lake.append(ORDERS, orders(spark, [(1, "c1", 10.0, D1)]))
        lake.merge(ORDERS, orders(spark, [(1, "c1", 11.0, D1)]), keys=["order_id"], txn=Txn("refine", 3))

        retry = lake.merge(ORDERS, orders(spark, [(1, "c1", 12.0, D1)]), keys=["order_id"], txn=Txn("refine", 3))

        assert (retry.noop, lake.version(ORDERS)) == (True, 1)
        assert_rows(lake.read(ORDERS), orders(spark, [(1, "c1", 11.0, D1)]))

    def test_a_higher_token_version_writes(self, lake: Lake, spark: SparkSession) -> None:
        lake.append(ORDERS, orders(spark, [(1, "c1", 10.0, D1)]), txn=Txn("ingest-orders", 1))

        result = lake.append(ORDERS, orders(spark, [(2, "c2", 20.0, D1)]), txn=Txn("ingest-orders", 2))
        older = lake.append(ORDERS, orders(spark, [(3, "c3", 30.0, D1)]), txn=Txn("ingest-orders", 1))

        assert (result.noop, result.version, older.noop) == (False, 1, True)
        assert_rows(lake.read(ORDERS), orders(spark, [(1, "c1", 10.0, D1), (2, "c2", 20.0, D1)]))

    # -- schema enforcement and evolution ------------------------------------------------
    def test_a_frame_missing_a_column_is_refused(self, lake: Lake, spark: SparkSession) -> None:
        lake.append(ORDERS, orders(spark, [(1, "c1", 10.0, D1)]))
        short = spark.createDataFrame([(2, "c2", D1)], "order_id BIGINT, customer_id STRING, order_date DATE")

        with pytest.raises(LakeError, match=r"missing columns amount_eur"):
            lake.append(ORDERS, short)
        assert lake.version(ORDERS) == 0

    def test_a_frame_with_an_extra_column_is_refused(self, lake: Lake, spark: SparkSession) -> None:
        lake.append(ORDERS, orders(spark, [(1, "c1", 10.0, D1)]))
        wide = orders(spark, [(2, "c2", 20.0, D1, "web")], f"{ORDERS_DDL}, channel STRING")

        with pytest.raises(LakeError, match=r"unexpected columns channel"):
            lake.append(ORDERS, wide)
        assert lake.version(ORDERS) == 0

    def test_a_frame_with_a_changed_type_is_refused(self, lake: Lake, spark: SparkSession) -> None:
        lake.append(ORDERS, orders(spark, [(1, "c1", 10.0, D1)]))
        retyped = orders(
            spark, [(2, "c2", "20.0", D1)], "order_id BIGINT, customer_id STRING, amount_eur STRING, order_date DATE"
        )

        with pytest.raises(LakeError, match=r"type mismatch in amount_eur \(table double, frame string\)"):
            lake.append(ORDERS, retyped)
        assert lake.version(ORDERS) == 0

    def test_column_order_of_the_frame_does_not_matter(self, lake: Lake, spark: SparkSession) -> None:
        lake.append(ORDERS, orders(spark, [(1, "c1", 10.0, D1)]))
        shuffled = spark.createDataFrame(
            [(D2, 20.0, "c2", 2)], "order_date DATE, amount_eur DOUBLE, customer_id STRING, order_id BIGINT"
        )

        lake.append(ORDERS, shuffled)

        assert_rows(lake.read(ORDERS), orders(spark, [(1, "c1", 10.0, D1), (2, "c2", 20.0, D2)]))

    def test_evolve_adds_a_column_and_old_rows_read_it_as_null(self, lake: Lake, spark: SparkSession) -> None:
        lake.append(ORDERS, orders(spark, [(1, "c1", 10.0, D1)]))
        wide_ddl = f"{ORDERS_DDL}, channel STRING"

        lake.append(ORDERS, orders(spark, [(2, "c2", 20.0, D2, "web")], wide_ddl), evolve=True)

        assert_rows(lake.read(ORDERS), orders(spark, [(1, "c1", 10.0, D1, None), (2, "c2", 20.0, D2, "web")], wide_ddl))
