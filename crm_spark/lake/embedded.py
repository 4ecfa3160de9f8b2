"""Embedded Delta engine: Spark writes Parquet in parallel, delta-rs commits the log.

Used where the delta-spark jars are not on the classpath (a laptop without Maven access, CI).
A write goes in three steps:

1. Spark writes the frame's Parquet files into a fresh folder ``data/<write-id>/`` inside the
   table (Hive-style ``col=value`` folders for partitions). Files no commit references are
   invisible to readers, so a write that dies here leaves the table as it was.
2. The driver lists exactly those files (names and sizes, plus row counts from the Parquet
   footers: metadata only, never data) and turns them into Delta add actions.
3. ``deltalake`` commits the add (and remove) actions as one Delta version, with the
   idempotency token as an app transaction. That commit is the atomic step.

Reads ask ``deltalake`` for the snapshot's active files and hand them to ``spark.read.parquet``
with the table's schema; partition values come from the log, joined by file name.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Sequence
from datetime import date, datetime, timedelta, timezone
from typing import Any
from urllib.parse import unquote

import pyarrow as pa
from deltalake import DeltaTable, Schema as DeltaSchema
from deltalake.exceptions import CommitFailedError, DeltaError, TableNotFoundError
from deltalake.transaction import (
    AddAction,
    CommitProperties,
    RemoveAction,
    Transaction,
    create_table_with_add_actions,
)
from pyspark.errors import AnalysisException
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import DateType, StringType, StructField, StructType

from crm_spark.errors import LakeError
from crm_spark.lake.base import (
    Commit,
    Lake,
    PartitionSpec,
    Txn,
    WriteResult,
    normalize_partition,
    partition_value,
    reconcile_schema,
    sorted_values,
)

_UNSUPPORTED_READER_FEATURES = {"deletionVectors", "columnMapping", "v2Checkpoint"}
_FILE_COL = "__crm_file"
_HIVE_NULL = "__HIVE_DEFAULT_PARTITION__"
_EPOCH = date(1970, 1, 1)
_SAFE_VALUE = re.compile(r"^[A-Za-z0-9_.\-]*$")


class EmbeddedLake(Lake):
    engine = "embedded"

    def __init__(self, spark: SparkSession, root: str, *, storage_options: dict[str, str] | None = None) -> None:
        super().__init__(spark, root)
        self._storage_options = storage_options or None
        self._fs = _HadoopFs(spark)

    # -- reads --------------------------------------------------------------------------
    def exists(self, table: str) -> bool:
        return DeltaTable.is_deltatable(self._delta_uri(table), storage_options=self._storage_options)

    def version(self, table: str) -> int:
        return self._table(table).version()

    def schema(self, table: str) -> StructType:
        return _spark_schema(self._table(table))

    def partition_columns(self, table: str) -> list[str]:
        return list(self._table(table).metadata().partition_columns)

    def txn_version(self, table: str, app_id: str) -> int | None:
        done = self._table(table).transaction_version(app_id)
        return None if done is None else int(done)

    def history(self, table: str, *, limit: int | None = None) -> list[Commit]:
        commits = []
        for entry in self._table(table).history(limit):
            params = dict(entry.get("operationParameters") or {})
            params.update({k: v for k, v in entry.items() if k.startswith("crm_spark.")})
            commits.append(
                Commit(
                    version=int(entry["version"]),
                    timestamp=datetime.fromtimestamp(entry["timestamp"] / 1000, tz=timezone.utc),
                    operation=str(entry.get("crm_spark.operation") or entry.get("operation")),
                    parameters=params,
                )
            )
        return sorted(commits, key=lambda c: c.version, reverse=True)

    def read(self, table: str, *, version: int | None = None, partition: PartitionSpec | None = None) -> DataFrame:
        dt = self._table(table, version)
        return self._scan(dt, partition=partition, with_file=False)

    # -- metadata from the log ------------------------------------------------------------
    def size_bytes(self, table: str) -> int | None:
        return sum(int(r["size_bytes"] or 0) for r in _add_actions(self._table(table)))

    def rows(self, table: str, *, partition: PartitionSpec | None = None) -> int:
        return sum(int(r["num_records"] or 0) for r in self._files(self._table(table), partition))

    def partition_values(self, table: str, column: str) -> list[str | None]:
        dt = self._table(table)
        if column not in dt.metadata().partition_columns:
            return super().partition_values(table, column)
        return sorted_values({partition_value(r.get(f"partition.{column}")) for r in _add_actions(dt)})

    def max_value(self, table: str, column: str) -> Any:
        """From partition values or per-file statistics in the log; a scan only for files without them."""
        dt = self._table(table)
        schema = _spark_schema(dt)
        if column in dt.metadata().partition_columns:
            values = [v for v in self.partition_values(table, column) if v is not None]
            if not values:
                return None
            kind = schema[column].dataType
            if isinstance(kind, DateType):
                return date.fromisoformat(max(values))
            if isinstance(kind, StringType):
                return max(values)
            return super().max_value(table, column)
        actions = _add_actions(dt)
        if actions and all(f"max.{column}" in r and (r[f"max.{column}"] is not None or r.get(f"null_count.{column}") == r["num_records"]) for r in actions):
            found = [r[f"max.{column}"] for r in actions if r[f"max.{column}"] is not None]
            return max(found) if found else None
        return super().max_value(table, column)

    def files(self, table: str, *, version: int | None = None, partition: PartitionSpec | None = None) -> set[str]:
        return {str(r["path"]) for r in self._files(self._table(table, version), partition)}

    def _files(self, dt: DeltaTable, partition: PartitionSpec | None) -> list[dict[str, Any]]:
        wanted = normalize_partition(partition)
        return [
            r for r in _add_actions(dt)
            if all(partition_value(r.get(f"partition.{c}")) in allowed for c, allowed in wanted.items())
        ]

    # -- writes -------------------------------------------------------------------------
    def create(self, table: str, schema: StructType, *, partition_by: Sequence[str] = ()) -> WriteResult:
        if self.exists(table):
            reconcile_schema(table, self.schema(table), schema, evolve=False)
            self._check_partitioning(table, partition_by)
            return WriteResult(table, self.version(table), "CREATE", noop=True)
        reconcile_schema(table, schema, schema, evolve=False)
        self._create(table, schema, [], partition_by, txn=None, operation="CREATE")
        return WriteResult(table, 0, "CREATE")

    def append(
        self, table: str, df: DataFrame, *, partition_by: Sequence[str] = (), txn: Txn | None = None, evolve: bool = False
    ) -> WriteResult:
        return self._write(table, df, mode="append", partition=None, partition_by=partition_by, txn=txn, evolve=evolve)

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
        return self._write(
            table, df, mode="overwrite", partition=partition, partition_by=partition_by, txn=txn, evolve=evolve
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
            return self._write(table, df, mode="append", partition=None, partition_by=partition_by, txn=txn, evolve=evolve)
        dt = self._table(table)
        if txn and _already_done(dt, txn):
            return WriteResult(table, dt.version(), "MERGE", noop=True)
        parts = self._check_partitioning(table, partition_by)
        schema = self._evolve(table, dt, df, evolve)
        source = df.select(*schema.fieldNames())
        target = self._scan(dt, partition=None, with_file=True)
        key_cond = [target[k].eqNullSafe(source[k]) for k in keys]

        if insert_only:
            new_rows = source.join(target.select(*keys), on=[source[k].eqNullSafe(target[k]) for k in keys], how="left_anti")
            adds = self._write_files(table, new_rows, parts)
            return self._commit(dt, table, adds, [], schema, parts, txn=txn, operation="MERGE")

        touched_files = [
            r[_FILE_COL] for r in target.join(source, on=key_cond, how="left_semi").select(_FILE_COL).distinct().collect()
        ]
        kept = (
            target.filter(F.col(_FILE_COL).isin(touched_files))
            .join(source.select(*keys), on=[target[k].eqNullSafe(source[k]) for k in keys], how="left_anti")
            .drop(_FILE_COL)
        )
        adds = self._write_files(table, kept.unionByName(source), parts)
        removes = _remove_actions(dt, set(touched_files))
        return self._commit(dt, table, adds, removes, schema, parts, txn=txn, operation="MERGE")

    def vacuum(self, table: str, *, retention_hours: int | None = None, dry_run: bool = False) -> list[str]:
        """The data files deleted (or, ``dry_run``, that would be); Hadoop's hidden ``.crc``
        checksum files go too, unlisted."""
        dt = self._table(table)
        try:
            files = dt.vacuum(
                retention_hours=retention_hours,
                dry_run=dry_run,
                enforce_retention_duration=retention_hours is None,
                full=True,  # also the files no version ever referred to (a killed write's)
            )
        except DeltaError as exc:
            raise LakeError(f"vacuum of {table} failed: {exc}") from exc
        return [f for f in files if not f.rsplit("/", 1)[-1].startswith(".")]

    # -- internals ----------------------------------------------------------------------
    def _delta_uri(self, table: str) -> str:
        uri = self.uri(table)
        if uri.startswith("file://"):
            return uri[len("file://") :]
        if uri.startswith("s3a://"):
            return "s3://" + uri[len("s3a://") :]
        return uri

    def _spark_uri(self, table: str) -> str:
        uri = self.uri(table)
        return uri if "://" in uri else f"file://{uri}"

    def _table(self, table: str, version: int | None = None) -> DeltaTable:
        try:
            dt = DeltaTable(self._delta_uri(table), version=version, storage_options=self._storage_options)
        except TableNotFoundError:
            raise LakeError(
                f"table {table} does not exist at {self.uri(table)}; run the stage that writes it first"
            ) from None
        except DeltaError as exc:
            if version is not None and "version" in str(exc).lower():
                raise LakeError(f"{table} has no version {version} (it may have been vacuumed): {exc}") from None
            raise LakeError(f"cannot open {table}: {exc}") from None
        features = set(dt.protocol().reader_features or []) & _UNSUPPORTED_READER_FEATURES
        if features:
            raise LakeError(
                f"{table} uses Delta reader features {sorted(features)} the embedded engine cannot read; "
                "use the delta-spark engine"
            )
        return dt

    def _scan(self, dt: DeltaTable, *, partition: PartitionSpec | None, with_file: bool) -> DataFrame:
        schema = _spark_schema(dt)
        part_cols = list(dt.metadata().partition_columns)
        wanted = normalize_partition(partition)
        unknown = [c for c in wanted if c not in part_cols]
        if unknown:
            raise LakeError(f"{dt.table_uri}: {unknown} are not partition columns (partitioned by {part_cols})")
        base = dt.table_uri.rstrip("/")
        files: list[tuple[str, list[str | None]]] = []
        for row in _add_actions(dt):
            values = [partition_value(row.get(f"partition.{c}")) for c in part_cols]
            if all(values[part_cols.index(c)] in allowed for c, allowed in wanted.items()):
                path = unquote(row["path"])
                files.append((path if "://" in path else f"{base}/{path}", values))
        if not files:
            empty = self.spark.createDataFrame([], schema)
            return empty.withColumn(_FILE_COL, F.lit(None).cast("string")) if with_file else empty

        data_schema = StructType([f for f in schema.fields if f.name not in part_cols])
        try:
            df = self.spark.read.schema(data_schema).parquet(*(p for p, _ in files))
        except AnalysisException as exc:
            if exc.getCondition() != "PATH_NOT_FOUND":
                raise
            raise LakeError(
                f"{dt.table_uri} version {dt.version()}: data files it references are gone (vacuumed, or deleted "
                f"outside the lake); read a later version ({str(exc).splitlines()[0]})"
            ) from None
        if not part_cols and not with_file:
            # Nothing needs the file name: not asking for _metadata spares every row a struct of
            # file fields and the Parquet reader its row index (the optimizer does not prune them).
            return df.select(*schema.fieldNames())
        # A file is known by its partition folders + name (unique within a table: the name
        # carries the write job's UUID); Spark's _metadata.file_path ends with exactly that,
        # URI-encoded (a space is %20): decode it ('+' is literal in a path, not a space) so
        # folders like city=New York (written by delta-spark or deltalake) still match.
        depth = len(part_cols) + 1
        file_path = F.url_decode(F.replace(F.col("_metadata.file_path"), F.lit("+"), F.lit("%2B")))
        df = df.select("*", F.concat_ws("/", F.slice(F.split(file_path, "/"), -depth, depth)).alias(_FILE_COL))
        if part_cols:
            mapping = self.spark.createDataFrame(
                [(_file_key(p, depth), *vals) for p, vals in files],
                StructType([StructField(_FILE_COL, StringType(), False)] + [StructField(c, StringType()) for c in part_cols]),
            )
            df = df.join(F.broadcast(mapping), on=_FILE_COL, how="inner")
            df = df.select(
                *(F.col(c).cast(schema[c].dataType).alias(c) if c in part_cols else F.col(c) for c in schema.fieldNames()),
                _FILE_COL,
            )
        cols = [*schema.fieldNames(), _FILE_COL] if with_file else schema.fieldNames()
        return df.select(*cols)

    def _write(
        self,
        table: str,
        df: DataFrame,
        *,
        mode: str,
        partition: PartitionSpec | None,
        partition_by: Sequence[str],
        txn: Txn | None,
        evolve: bool,
    ) -> WriteResult:
        operation = "OVERWRITE" if mode == "overwrite" else "APPEND"
        if not self.exists(table):
            schema = reconcile_schema(table, df.schema, df.schema, evolve=False)
            parts = list(partition_by) or list(normalize_partition(partition))
            missing = [c for c in parts if c not in schema.fieldNames()]
            if missing:
                raise LakeError(f"cannot partition {table} by {missing}: not columns of the frame")
            adds = self._write_files(table, df, parts)
            _check_inside(table, adds, partition)
            self._create(table, schema, adds, parts, txn=txn, operation=operation)
            return WriteResult(table, 0, operation, rows=_rows(adds), files_added=len(adds))

        dt = self._table(table)
        if txn and _already_done(dt, txn):
            return WriteResult(table, dt.version(), operation, noop=True)
        parts = self._check_partitioning(table, partition_by)
        if partition and not parts:
            raise LakeError(f"cannot overwrite partitions of {table}: the table is not partitioned")
        if partition:
            unknown = [c for c in normalize_partition(partition) if c not in parts]
            if unknown:
                raise LakeError(f"{unknown} are not partition columns of {table} (partitioned by {parts})")
        schema = self._evolve(table, dt, df, evolve)
        adds = self._write_files(table, df.select(*schema.fieldNames()), parts)
        _check_inside(table, adds, partition)
        return self._commit(dt, table, adds, [], schema, parts, txn=txn, operation=operation, mode=mode, partition=partition)

    def _evolve(self, table: str, dt: DeltaTable, df: DataFrame, evolve: bool) -> StructType:
        current = _spark_schema(dt)
        target = reconcile_schema(table, current, df.schema, evolve=evolve)
        added = target.fields[len(current.fields) :]
        if added:
            new_fields = DeltaSchema.from_json(StructType(added).json()).fields
            dt.alter.add_columns(new_fields, commit_properties=_props(None, "ADD COLUMNS", {}))
            dt.update_incremental()
        return target

    def _write_files(self, table: str, df: DataFrame, partition_by: Sequence[str]) -> list[AddAction]:
        """Spark writes ``df`` under ``data/<write-id>/``; returns one add action per file."""
        write_id = f"{datetime.now(timezone.utc):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:12]}"
        rel_dir = f"data/{write_id}"
        target = f"{self._spark_uri(table)}/{rel_dir}"
        writer = df.write.mode("errorifexists")
        if partition_by:
            writer = writer.partitionBy(*partition_by)
        writer.parquet(target)
        # Min/max of date columns go into the log, so "the latest date" is read from metadata.
        date_columns = [f.name for f in df.schema.fields if isinstance(f.dataType, DateType) and f.name not in partition_by]
        adds = []
        for path, size, mtime in self._fs.list_files(target):
            name = path.rsplit("/", 1)[-1]
            if name.endswith(".crc") or name.startswith(("_", ".")):
                if name.endswith(".crc"):
                    self._fs.delete(path)
                continue
            rel = path[len(target) :].lstrip("/")
            rows, bounds = self._fs.parquet_stats(path, date_columns)
            if rows == 0:
                self._fs.delete(path)
                continue
            values = {}
            for segment in rel.split("/")[:-1]:
                col, _, raw = segment.partition("=")
                value = unquote(raw)
                if not _SAFE_VALUE.match(value):
                    raise LakeError(
                        f"{table}: partition value {col}={value!r} has characters the embedded engine does not "
                        "escape; partition by a date, number or simple code"
                    )
                values[col] = None if value == _HIVE_NULL else value
            adds.append(AddAction(f"{rel_dir}/{rel}", size, values, mtime, True, json.dumps({"numRecords": rows, **bounds})))
        return adds

    def _create(
        self, table: str, schema: StructType, adds: list[AddAction], parts: Sequence[str], *, txn: Txn | None, operation: str
    ) -> None:
        try:
            create_table_with_add_actions(
                self._delta_uri(table),
                DeltaSchema.from_json(schema.json()),
                adds,
                mode="error",
                partition_by=list(parts) or None,
                name=table,
                storage_options=self._storage_options,
                commit_properties=_props(txn, operation, {"rows": _rows(adds)}),
            )
        except DeltaError as exc:
            # Another writer's version 0 was there when this one looked (already exists) or when it
            # committed (CommitFailedError); either way no version refers to these files.
            if isinstance(exc, CommitFailedError) or "already exists" in str(exc):
                self._discard(table, adds)
                raise LakeError(
                    f"creating {table} failed: another writer created it first (a concurrent run); nothing of this "
                    "write was committed and re-running the stage is safe"
                ) from exc
            raise LakeError(f"creating {table} failed: {exc}") from exc

    def _discard(self, table: str, adds: list[AddAction]) -> None:
        """Delete the files of a write whose commit failed: no version refers to them."""
        for write_dir in sorted({"/".join(a.path.split("/")[:2]) for a in adds if a.path.startswith("data/")}):
            self._fs.delete(f"{self._spark_uri(table)}/{write_dir}", recursive=True)

    def _commit(
        self,
        dt: DeltaTable,
        table: str,
        adds: list[AddAction],
        removes: list[RemoveAction],
        schema: StructType,
        parts: Sequence[str],
        *,
        txn: Txn | None,
        operation: str,
        mode: str = "append",
        partition: PartitionSpec | None = None,
    ) -> WriteResult:
        wanted = normalize_partition(partition)
        filters = [(c, "in", vals) for c, vals in wanted.items()] or None
        removed = len(removes)
        if mode == "overwrite":
            removed = len(self._files(dt, partition))
        try:
            dt.create_write_transaction(
                [*adds, *removes],
                mode=mode,
                schema=DeltaSchema.from_json(schema.json()),
                partition_by=list(parts) or None,
                partition_filters=filters,
                commit_properties=_props(txn, operation, {"rows": _rows(adds)}),
            )
        except CommitFailedError as exc:
            self._discard(table, adds)
            raise LakeError(
                f"commit to {table} failed: another writer committed first (a concurrent run; {exc}); nothing of this "
                "write was committed and re-running the stage is safe"
            ) from exc
        except DeltaError as exc:  # may have failed after the commit landed (a checkpoint): keep the files
            raise LakeError(f"commit to {table} failed: {exc}") from exc
        dt.update_incremental()
        return WriteResult(
            table,
            dt.version(),
            operation,
            rows=_rows(adds),
            files_added=len(adds),
            files_removed=removed,
        )


class _HadoopFs:
    """File listing and Parquet footers through Spark's own Hadoop FileSystem (any Spark URI)."""

    def __init__(self, spark: SparkSession) -> None:
        self._jvm = spark.sparkContext._jvm  # noqa: SLF001
        self._conf = spark.sparkContext._jsc.hadoopConfiguration()  # noqa: SLF001

    def _path(self, uri: str) -> Any:
        return self._jvm.org.apache.hadoop.fs.Path(uri)

    def list_files(self, uri: str) -> list[tuple[str, int, int]]:
        path = self._path(uri)
        fs = path.getFileSystem(self._conf)
        out = []
        it = fs.listFiles(path, True)
        while it.hasNext():
            status = it.next()
            out.append((status.getPath().toString(), int(status.getLen()), int(status.getModificationTime())))
        root = path.toString()
        # Hadoop qualifies file:/x as file:/x; map back onto the URI we were given.
        return [(uri + p[len(root) :] if p.startswith(root) else p, size, mtime) for p, size, mtime in sorted(out)]

    def parquet_stats(self, uri: str, date_columns: Sequence[str]) -> tuple[int, dict[str, Any]]:
        """Row count and Delta statistics (min, max, null count) of ``date_columns``, from the footer only."""
        jvm = self._jvm
        input_file = jvm.org.apache.parquet.hadoop.util.HadoopInputFile.fromPath(self._path(uri), self._conf)
        reader = jvm.org.apache.parquet.hadoop.ParquetFileReader.open(input_file)
        try:
            rows = int(reader.getRecordCount())
            if not date_columns:
                return rows, {}
            low: dict[str, int] = {}
            high: dict[str, int] = {}
            nulls: dict[str, int] = {}
            wanted = set(date_columns)
            for block in reader.getFooter().getBlocks():
                for chunk in block.getColumns():
                    name = chunk.getPath().toDotString()
                    if name not in wanted:
                        continue
                    stats = chunk.getStatistics()
                    if stats is None or stats.isEmpty():
                        nulls[name] = -1  # unknown: leave the column out
                        continue
                    nulls[name] = nulls.get(name, 0) + int(stats.getNumNulls()) if nulls.get(name, 0) >= 0 else -1
                    if stats.hasNonNullValue():
                        low[name] = min(low.get(name, 2**31), int(stats.genericGetMin()))
                        high[name] = max(high.get(name, -(2**31)), int(stats.genericGetMax()))
        finally:
            reader.close()
        known = [c for c in date_columns if nulls.get(c, -1) >= 0]
        day = lambda n: (_EPOCH + timedelta(days=n)).isoformat()  # noqa: E731 - Parquet DATE is days since epoch
        return rows, {
            "minValues": {c: day(low[c]) for c in known if c in low},
            "maxValues": {c: day(high[c]) for c in known if c in high},
            "nullCount": {c: nulls[c] for c in known},
        }

    def delete(self, uri: str, *, recursive: bool = False) -> None:
        path = self._path(uri)
        path.getFileSystem(self._conf).delete(path, recursive)


def _spark_schema(dt: DeltaTable) -> StructType:
    # The Delta schemaString is Spark's StructType JSON: an exact round trip.
    return StructType.fromJson(json.loads(dt.schema().to_json()))


def _add_actions(dt: DeltaTable) -> list[dict[str, Any]]:
    return pa.table(dt.get_add_actions(flatten=True)).to_pylist()


def _remove_actions(dt: DeltaTable, file_names: set[str]) -> list[RemoveAction]:
    now = int(time.time() * 1000)
    part_cols = list(dt.metadata().partition_columns)
    removes = []
    for row in _add_actions(dt):
        if _file_key(unquote(row["path"]), len(part_cols) + 1) in file_names:
            values = {c: partition_value(row.get(f"partition.{c}")) for c in part_cols}
            removes.append(RemoveAction(row["path"], True, now, row.get("size_bytes"), values or None))
    return removes


def _file_key(path: str, depth: int) -> str:
    return "/".join(path.split("/")[-depth:])


def _already_done(dt: DeltaTable, txn: Txn) -> bool:
    done = dt.transaction_version(txn.app_id)
    return done is not None and done >= txn.version


def _props(txn: Txn | None, operation: str, extra: dict[str, Any]) -> CommitProperties:
    metadata = {"crm_spark.operation": operation, "crm_spark.engine": "embedded"}
    metadata.update({f"crm_spark.{k}": str(v) for k, v in extra.items()})
    # No retries: every write here was computed from the version it read (the keys it merges,
    # the transaction it found not done, the table it found missing). deltalake would otherwise
    # commit a loser at the next version: two refines creating silver.orders at once both landed
    # (versions 0 and 1, every row twice; 149 of 200 races of two bare creates did).
    return CommitProperties(
        app_transactions=[Transaction(txn.app_id, txn.version)] if txn else None,
        custom_metadata=metadata,
        max_commit_retries=0,
    )


def _rows(adds: list[AddAction]) -> int:
    return sum(json.loads(a.stats)["numRecords"] for a in adds)


def _check_inside(table: str, adds: list[AddAction], partition: PartitionSpec | None) -> None:
    """Refuse to commit files outside the partitions an overwrite replaces (like replaceWhere)."""
    allowed = normalize_partition(partition)
    for add in adds:
        for col, values in allowed.items():
            if add.partition_values.get(col) not in values:
                raise LakeError(
                    f"overwrite of {table} {col} in {values}: the frame has rows with {col}="
                    f"{add.partition_values.get(col)}; nothing was committed"
                )
