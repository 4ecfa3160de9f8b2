"""The lake interface: Delta tables addressed as ``layer.name`` under one root URI.

Both engines (``embedded`` and ``delta-spark``) implement :class:`Lake`; stages only ever see
this interface. Writes are atomic (one Delta commit each), enforce the table schema, accept an
idempotency token (:class:`Txn`) and return a :class:`WriteResult`.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.types import DataType, NullType, StructField, StructType

from crm_spark.errors import LakeError

LAYERS = ("bronze", "silver", "gold", "quarantine", "_quality", "_system")
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")

PartitionSpec = Mapping[str, Any]


@dataclass(frozen=True)
class Txn:
    """Idempotency token: a write carrying (app_id, version) is skipped when the table has
    already recorded that version (or a later one) for app_id. Delta's app transactions."""

    app_id: str
    version: int

    def __post_init__(self) -> None:
        if not self.app_id or self.version < 0:
            raise LakeError(f"invalid idempotency token {self.app_id!r}/{self.version}")


@dataclass(frozen=True)
class WriteResult:
    """What one write did. ``rows`` counts rows in the files the commit added."""

    table: str
    version: int
    operation: str
    rows: int = 0
    files_added: int = 0
    files_removed: int = 0
    noop: bool = False


@dataclass(frozen=True)
class Commit:
    """One entry of a table's history."""

    version: int
    timestamp: datetime
    operation: str
    parameters: dict[str, Any] = field(default_factory=dict)


def parse_table(table: str) -> tuple[str, str]:
    """``"silver.orders"`` -> ``("silver", "orders")``, or a LakeError saying what is allowed."""
    layer, sep, name = table.partition(".")
    if not sep or layer not in LAYERS or not _NAME.match(name):
        raise LakeError(
            f"bad table name {table!r}: use layer.name with layer one of {', '.join(LAYERS)} "
            "and name in lower_snake_case"
        )
    return layer, name


def partition_value(value: Any) -> str | None:
    """Serialise a partition value the way the Delta protocol stores it."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, date):
        return value.isoformat()
    return str(value)


def sorted_values(values: Iterable[str | None]) -> list[str | None]:
    """Partition values in order, None (the Hive null partition) last."""
    return sorted(values, key=lambda v: (v is None, v or ""))


def normalize_partition(partition: PartitionSpec | None) -> dict[str, list[str | None]]:
    """``{"as_of_date": date(...)}`` or ``{"as_of_date": [d1, d2]}`` -> column -> allowed strings."""
    out: dict[str, list[str | None]] = {}
    for col, value in (partition or {}).items():
        values = value if isinstance(value, (list, tuple, set, frozenset)) else [value]
        out[col] = sorted_values({partition_value(v) for v in values})
    return out


def reconcile_schema(table: str, existing: StructType, incoming: StructType, *, evolve: bool) -> StructType:
    """Check a frame against the table schema; return the schema the table has after the write.

    Column order does not matter and nullability is not compared. Missing columns and type
    changes are always errors; extra columns are an error unless ``evolve`` (additive schema
    evolution), in which case they are appended to the table schema.
    """
    _reject_untyped(table, incoming)
    have = {f.name: f for f in existing.fields}
    got = {f.name: f for f in incoming.fields}
    missing = [n for n in have if n not in got]
    extra = [n for n in got if n not in have]
    changed = [
        f"{n} (table {have[n].dataType.simpleString()}, frame {got[n].dataType.simpleString()})"
        for n in have
        if n in got and not same_type(have[n].dataType, got[n].dataType)
    ]
    problems = []
    if missing:
        problems.append(f"missing columns {', '.join(missing)}")
    if changed:
        problems.append(f"type mismatch in {', '.join(changed)}")
    if extra and not evolve:
        problems.append(f"unexpected columns {', '.join(extra)} (pass evolve=True to add them)")
    if problems:
        raise LakeError(f"schema mismatch writing {table}: {'; '.join(problems)}")
    return StructType([*existing.fields, *(_nullable(got[n]) for n in extra)])


def same_type(a: DataType, b: DataType) -> bool:
    """Type equality ignoring nullability of nested fields."""
    return a.simpleString() == b.simpleString()


def _nullable(f: StructField) -> StructField:
    return StructField(f.name, f.dataType, True, f.metadata)


def _reject_untyped(table: str, schema: StructType) -> None:
    untyped = [f.name for f in schema.fields if isinstance(f.dataType, NullType)]
    if untyped:
        raise LakeError(f"cannot write {table}: columns {', '.join(untyped)} have no type (cast the null literals)")


class Lake(ABC):
    """Delta tables under ``root``: ``<root>/<layer>/<name>``."""

    engine: str = "abstract"

    def __init__(self, spark: SparkSession, root: str) -> None:
        self.spark = spark
        self.root = root.rstrip("/")

    def uri(self, table: str) -> str:
        layer, name = parse_table(table)
        return f"{self.root}/{layer}/{name}"

    # -- reads --------------------------------------------------------------------------
    @abstractmethod
    def exists(self, table: str) -> bool: ...

    @abstractmethod
    def read(self, table: str, *, version: int | None = None, partition: PartitionSpec | None = None) -> DataFrame:
        """The table at its latest version (or ``version``), optionally only some partitions."""

    @abstractmethod
    def version(self, table: str) -> int: ...

    @abstractmethod
    def history(self, table: str, *, limit: int | None = None) -> list[Commit]:
        """Commits, newest first."""

    @abstractmethod
    def schema(self, table: str) -> StructType: ...

    @abstractmethod
    def txn_version(self, table: str, app_id: str) -> int | None:
        """The last idempotency-token version ``app_id`` committed to ``table`` (None: never)."""

    @abstractmethod
    def partition_columns(self, table: str) -> list[str]: ...

    def tables(self) -> list[str]:
        """Every Delta table under the root (a layer's folder holding a ``_delta_log``), sorted."""
        jvm = self.spark.sparkContext._jvm  # noqa: SLF001
        conf = self.spark.sparkContext._jsc.hadoopConfiguration()  # noqa: SLF001
        root = jvm.org.apache.hadoop.fs.Path(self.root)
        fs = root.getFileSystem(conf)
        found = []
        for layer in LAYERS:
            folder = jvm.org.apache.hadoop.fs.Path(f"{self.root}/{layer}")
            if not fs.exists(folder):
                continue
            for status in fs.listStatus(folder):
                if status.isDirectory() and fs.exists(jvm.org.apache.hadoop.fs.Path(status.getPath(), "_delta_log")):
                    found.append(f"{layer}.{status.getPath().getName()}")
        return sorted(found)

    # -- metadata (answered from the Delta log where the engine can) ---------------------
    def size_bytes(self, table: str) -> int | None:
        """Bytes of the table's data files at its latest version, when the engine knows them
        without a Spark job (None: unknown)."""
        return None

    def rows(self, table: str, *, partition: PartitionSpec | None = None) -> int:
        """Rows in the table (or in some of its partitions) at its latest version."""
        return int(self.read(table, partition=partition).count())

    def max_value(self, table: str, column: str) -> Any:
        """The largest non-null value of ``column`` (None for an empty table)."""
        from pyspark.sql import functions as F

        return self.read(table).agg(F.max(column)).first()[0]

    def previous_rows(self, table: str, partition: PartitionSpec | None) -> int | None:
        """What a write replacing ``partition`` is compared with by the row-count-change check.

        The rows now in the partitions being replaced; for dates not written yet, the rows of the
        latest earlier partition once per new date (the customer base only grows with the date).
        The whole table for an unpartitioned overwrite; None for a first write.
        """
        if not self.exists(table):
            return None
        wanted = normalize_partition(partition)
        if not wanted:
            return self.rows(table) or None
        replaced = self.rows(table, partition=partition)
        if replaced or len(wanted) != 1:
            return replaced or None
        (col, values), = wanted.items()
        earlier = [v for v in self.partition_values(table, col) if v is not None and v < min(v for v in values if v)]
        if not earlier:
            return None
        return self.rows(table, partition={col: max(earlier)}) * len(values) or None

    def files(self, table: str, *, version: int | None = None, partition: PartitionSpec | None = None) -> set[str]:
        """The data files of the table (or of some partitions) at a version (latest by default)."""
        return set(self.read(table, version=version, partition=partition).inputFiles())

    def partition_values(self, table: str, column: str) -> list[str | None]:
        """The distinct values of a partition column, as the Delta log spells them."""
        return sorted_values({partition_value(r[0]) for r in self.read(table).select(column).distinct().collect()})

    # -- writes -------------------------------------------------------------------------
    @abstractmethod
    def create(self, table: str, schema: StructType, *, partition_by: Sequence[str] = ()) -> WriteResult:
        """Create an empty table; a no-op when it exists with the same schema."""

    @abstractmethod
    def append(
        self, table: str, df: DataFrame, *, partition_by: Sequence[str] = (), txn: Txn | None = None, evolve: bool = False
    ) -> WriteResult:
        """Add rows (creating the table on first write)."""

    @abstractmethod
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
        """Replace the whole table, or only the partitions named in ``partition``.

        With ``partition``, every row of ``df`` must fall inside it (else LakeError, nothing
        committed); other partitions are untouched.
        """

    @abstractmethod
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
        """Upsert by ``keys``: matching rows are replaced by the frame's, new keys inserted.

        ``insert_only`` inserts rows whose key is new and leaves existing rows alone. The frame
        must hold each key at most once (LakeError otherwise); ``keys_verified`` says the caller
        has already checked that (a passed uniqueness gate), which saves the check's Spark job.
        """

    @abstractmethod
    def vacuum(self, table: str, *, retention_hours: int | None = None, dry_run: bool = False) -> list[str]:
        """Delete files no version within the retention window needs; returns their paths."""

    # -- shared checks ------------------------------------------------------------------
    def _require(self, table: str) -> None:
        if not self.exists(table):
            raise LakeError(f"table {table} does not exist at {self.uri(table)}; run the stage that writes it first")

    def _check_partitioning(self, table: str, requested: Sequence[str]) -> list[str]:
        """Existing tables keep their partitioning; a conflicting request is an error."""
        current = self.partition_columns(table)
        if requested and list(requested) != current:
            raise LakeError(
                f"{table} is partitioned by {current or 'nothing'}, not {list(requested)}; "
                "repartitioning needs a new table"
            )
        return current

    def _check_keys(self, table: str, df: DataFrame, keys: Sequence[str], *, verified: bool) -> None:
        """The merge keys are in the frame and (unless the caller ``verified`` it) unique in it."""
        missing = [k for k in keys if k not in df.columns]
        if not keys or missing:
            raise LakeError(f"merge into {table}: key columns {missing or '(none)'} not in the frame")
        if not verified:
            self._check_unique_keys(table, df, keys)

    def _check_unique_keys(self, table: str, df: DataFrame, keys: Sequence[str]) -> None:
        dup = df.groupBy(*keys).count().filter("count > 1").limit(1).collect()
        if dup:
            example = {k: dup[0][k] for k in keys}
            raise LakeError(f"merge into {table}: the frame holds key {example} {dup[0]['count']} times; dedupe it first")
