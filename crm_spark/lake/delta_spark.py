"""delta-spark engine: Delta Lake's own Spark integration (``lake.engine: delta-spark``, or
``auto`` when its jars load; ``make install`` fetches them into jars/delta).

Same contract as the embedded engine; Delta does the atomic commit, schema enforcement
(``mergeSchema`` for additive evolution), idempotent writes (``txnAppId``/``txnVersion``),
``replaceWhere`` for partition overwrites and file-level MERGE.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timezone

from pyspark.errors import AnalysisException
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import StructType

from crm_spark.errors import LakeError
from crm_spark.lake.base import (
    Commit,
    Lake,
    PartitionSpec,
    Txn,
    WriteResult,
    normalize_partition,
    reconcile_schema,
)


class DeltaSparkLake(Lake):
    engine = "delta-spark"

    def _table(self, table: str):  # -> delta.tables.DeltaTable
        from delta.tables import DeltaTable

        self._require(table)
        return DeltaTable.forPath(self.spark, self.uri(table))

    def exists(self, table: str) -> bool:
        from delta.tables import DeltaTable

        return bool(DeltaTable.isDeltaTable(self.spark, self.uri(table)))

    def version(self, table: str) -> int:
        return int(self._table(table).history(1).select("version").first()[0])

    def schema(self, table: str) -> StructType:
        return self._table(table).toDF().schema

    def partition_columns(self, table: str) -> list[str]:
        detail = self._table(table).detail().select("partitionColumns").first()
        return list(detail[0]) if detail else []

    def history(self, table: str, *, limit: int | None = None) -> list[Commit]:
        rows = self._table(table).history(limit).select(
            "version", "timestamp", "operation", "operationParameters", "userMetadata"
        ).collect()
        return [
            Commit(
                version=int(r["version"]),
                timestamp=r["timestamp"].replace(tzinfo=timezone.utc),
                operation=str(r["userMetadata"] or r["operation"]),
                parameters=dict(r["operationParameters"] or {}),
            )
            for r in rows
        ]

    def read(self, table: str, *, version: int | None = None, partition: PartitionSpec | None = None) -> DataFrame:
        self._require(table)
        reader = self.spark.read.format("delta")
        if version is not None:
            reader = reader.option("versionAsOf", version)
        try:
            df = reader.load(self.uri(table))
        except AnalysisException as exc:
            raise LakeError(f"cannot read {table} at version {version}: {exc}") from None
        if version is not None:
            self._check_files_exist(table, version, df.inputFiles())
        for col, values in normalize_partition(partition).items():
            df = df.filter(F.col(col).cast("string").isin([v for v in values if v is not None]))
        return df

    def create(self, table: str, schema: StructType, *, partition_by: Sequence[str] = ()) -> WriteResult:
        if self.exists(table):
            reconcile_schema(table, self.schema(table), schema, evolve=False)
            self._check_partitioning(table, partition_by)
            return WriteResult(table, self.version(table), "CREATE", noop=True)
        empty = self.spark.createDataFrame([], schema)
        return self._save(table, empty, mode="append", partition_by=partition_by, txn=None, evolve=False, operation="CREATE")

    def append(
        self, table: str, df: DataFrame, *, partition_by: Sequence[str] = (), txn: Txn | None = None, evolve: bool = False
    ) -> WriteResult:
        return self._save(table, df, mode="append", partition_by=partition_by, txn=txn, evolve=evolve, operation="APPEND")

    def overwrite(
        self,
        table: str,
        df: DataFrame,
        *,
        partition: PartitionSpec | None = None,
        partition_by: Sequence[str] = (),
        txn: Txn | None = None,
        evolve: bool = False,
    ) -> WriteResult:
        where = None
        if partition:
            where = " AND ".join(
                f"`{c}` IN ({', '.join(repr(v) for v in vals if v is not None)})"
                for c, vals in normalize_partition(partition).items()
            )
        return self._save(
            table, df, mode="overwrite", partition_by=partition_by or list(normalize_partition(partition)),
            txn=txn, evolve=evolve, operation="OVERWRITE", replace_where=where,
        )

    def merge(
        self,
        table: str,
        df: DataFrame,
        *,
        keys: Sequence[str],
        insert_only: bool = False,
        partition_by: Sequence[str] = (),
        txn: Txn | None = None,
        evolve: bool = False,
        keys_verified: bool = False,
    ) -> WriteResult:
        self._check_keys(table, df, keys, verified=keys_verified)
        if not self.exists(table):
            return self._save(table, df, mode="append", partition_by=partition_by, txn=txn, evolve=evolve, operation="MERGE")
        if txn and self._already_done(table, txn):
            return WriteResult(table, self.version(table), "MERGE", noop=True)
        self._check_partitioning(table, partition_by)
        schema = reconcile_schema(table, self.schema(table), df.schema, evolve=evolve)
        condition = " AND ".join(f"t.`{k}` <=> s.`{k}`" for k in keys)
        conf = self.spark.conf
        previous = conf.get("spark.databricks.delta.schema.autoMerge.enabled", "false")
        try:
            if evolve:
                conf.set("spark.databricks.delta.schema.autoMerge.enabled", "true")
            if txn:
                conf.set("spark.databricks.delta.write.txnAppId", txn.app_id)
                conf.set("spark.databricks.delta.write.txnVersion", str(txn.version))
            builder = self._table(table).alias("t").merge(df.select(*[c for c in schema.fieldNames() if c in df.columns]).alias("s"), condition)
            if not insert_only:
                builder = builder.whenMatchedUpdateAll()
            builder.whenNotMatchedInsertAll().execute()
        except AnalysisException as exc:
            raise LakeError(f"merge into {table} failed: {exc}") from None
        finally:
            conf.set("spark.databricks.delta.schema.autoMerge.enabled", previous)
            conf.unset("spark.databricks.delta.write.txnAppId")
            conf.unset("spark.databricks.delta.write.txnVersion")
        return self._result(table, "MERGE")

    def vacuum(self, table: str, *, retention_hours: int | None = None, dry_run: bool = False) -> list[str]:
        """The files deleted (or, ``dry_run``, that would be): Delta's VACUUM lists them only in a
        dry run (a real one returns the table's path), so the list comes from one."""
        from crm_spark.session import temporary_conf

        uri = self.uri(table)
        hours = "" if retention_hours is None else f" RETAIN {int(retention_hours)} HOURS"
        # An explicit retention is the caller's choice (the CLI refuses under an hour).
        check = {} if retention_hours is None else {"spark.databricks.delta.retentionDurationCheck.enabled": False}
        with temporary_conf(self.spark, check):
            listed = [r[0] for r in self.spark.sql(f"VACUUM delta.`{uri}`{hours} DRY RUN").collect()]
            if not dry_run:
                self.spark.sql(f"VACUUM delta.`{uri}`{hours}").collect()
        return [f for f in listed if f.rstrip("/") not in (uri, f"file:{uri}", f"file://{uri}")]

    # -- internals ----------------------------------------------------------------------
    def _check_files_exist(self, table: str, version: int, files: Sequence[str]) -> None:
        """Time travel to a vacuumed version fails at read time, naming the table (Spark alone
        would fail later, in the first job, with FILE_NOT_EXIST)."""
        jvm = self.spark.sparkContext._jvm  # noqa: SLF001
        hadoop_conf = self.spark.sparkContext._jsc.hadoopConfiguration()  # noqa: SLF001
        for file in files:
            path = jvm.org.apache.hadoop.fs.Path(file)
            if not path.getFileSystem(hadoop_conf).exists(path):
                raise LakeError(
                    f"{table} version {version}: data files it references are gone (vacuumed, or deleted "
                    f"outside the lake); read a later version (missing: {file})"
                )

    def txn_version(self, table: str, app_id: str) -> int | None:
        self._require(table)
        jvm = self.spark.sparkContext._jvm  # noqa: SLF001
        log = jvm.org.apache.spark.sql.delta.DeltaLog.forTable(self.spark._jsparkSession, self.uri(table))  # noqa: SLF001
        done = log.update(False, jvm.scala.Option.empty(), jvm.scala.Option.empty()).transactions().get(app_id)
        return int(done.get()) if done.isDefined() else None

    def _already_done(self, table: str, txn: Txn) -> bool:
        done = self.txn_version(table, txn.app_id)
        return done is not None and done >= txn.version

    def _save(
        self,
        table: str,
        df: DataFrame,
        *,
        mode: str,
        partition_by: Sequence[str],
        txn: Txn | None,
        evolve: bool,
        operation: str,
        replace_where: str | None = None,
    ) -> WriteResult:
        if self.exists(table):
            parts = self._check_partitioning(table, partition_by)
            schema = reconcile_schema(table, self.schema(table), df.schema, evolve=evolve)
            df = df.select(*[c for c in schema.fieldNames() if c in df.columns])
        else:
            parts = list(partition_by)
            reconcile_schema(table, df.schema, df.schema, evolve=False)
        writer = df.write.format("delta").mode(mode).option("userMetadata", operation)
        if parts:
            writer = writer.partitionBy(*parts)
        if evolve:
            writer = writer.option("mergeSchema", "true")
        if replace_where:
            writer = writer.option("replaceWhere", replace_where)
        if txn:
            writer = writer.option("txnAppId", txn.app_id).option("txnVersion", txn.version)
            if self.exists(table) and self._already_done(table, txn):
                return WriteResult(table, self.version(table), operation, noop=True)
        try:
            writer.save(self.uri(table))
        except AnalysisException as exc:
            raise LakeError(f"write to {table} failed: {exc}") from None
        return self._result(table, operation)

    def _result(self, table: str, operation: str) -> WriteResult:
        last = self._table(table).history(1).select("version", "operationMetrics").first()
        metrics = dict(last["operationMetrics"] or {})
        rows = int(metrics.get("numOutputRows", metrics.get("numTargetRowsInserted", 0)) or 0)
        return WriteResult(
            table,
            int(last["version"]),
            operation,
            rows=rows,
            files_added=int(metrics.get("numFiles", metrics.get("numTargetFilesAdded", 0)) or 0),
            files_removed=int(metrics.get("numRemovedFiles", metrics.get("numTargetFilesRemoved", 0)) or 0),
        )
