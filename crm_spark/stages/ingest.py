"""Stage 1, ingest: raw files -> ``bronze.<source>``, new files only, nothing lost.

Which files are new is decided by Spark Structured Streaming's file source, run with
``trigger(availableNow=True)`` and a checkpoint in the lake (``_system/checkpoints/ingest/<source>``):
the source's file log is the record of what was ingested. Each micro-batch hands the list of
new file paths (``binaryFile`` metadata only, the content column is never read) to
:func:`~crm_spark.sources.readers.read_raw_files`, and the rows are appended to bronze in one
commit carrying the idempotency token ``(ingest:<source>, batch id)``: if the run dies after the
commit but before the checkpoint, the replayed batch is a no-op.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import datetime, timezone

from pyspark.errors import StreamingQueryException
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from crm_spark.config import Settings, SourceSettings
from crm_spark.contracts.silver import REJECTED_DDL, REJECTED_FILES
from crm_spark.errors import CrmSparkError, SourceError
from crm_spark.lake import Txn, WriteResult
from crm_spark.sources.readers import CORRUPT, GLOBS, java_cause, read_raw_files, screen_files
from crm_spark.sqlcheck import names_referenced
from crm_spark.stages import StageContext, StageResult
from crm_spark.transforms.refine import raw_columns

log = logging.getLogger(__name__)
STAGE = "ingest"
_BINARY_FILE_SCHEMA = "path string, modificationTime timestamp, length long, content binary"


def source_uri(settings: Settings, source: SourceSettings) -> str:
    if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", source.path) or source.path.startswith("/"):
        return source.path.rstrip("/")
    return f"{settings.paths.raw.rstrip('/')}/{source.path.strip('/')}"


@dataclass(frozen=True)
class SourceCounts:
    """What one ingest run added from one source."""

    files: int = 0
    rows: int = 0
    malformed: int = 0
    rejected: int = 0  # files recorded in quarantine.rejected_files instead of read


@dataclass(frozen=True)
class IngestOutcome:
    sources: dict[str, SourceCounts]


def run(ctx: StageContext) -> StageResult:
    notes: list[str] = []
    counts: dict[str, SourceCounts] = {}
    rejected: dict[str, str] = {}
    for name, source in ctx.settings.sources.items():
        if not source.enabled:
            notes.append(f"source {name} is disabled in config")
            continue
        outcome = ingest_source(ctx, name, source)
        counts[name] = SourceCounts(outcome.files, outcome.rows, outcome.malformed, len(outcome.rejected))
        rejected.update(outcome.rejected)
        if outcome.rejected:
            notes.append(f"{name}: {len(outcome.rejected)} file{'s' if len(outcome.rejected) > 1 else ''} rejected "
                         f"(see {REJECTED_FILES})")
        if outcome.files == 0:
            log.info("[ingest] %s: no new files", name)
        else:
            log.info(
                "[ingest] %s: %d new files, %s rows (%s malformed kept with their raw line)",
                name, outcome.files, f"{outcome.rows:,}", f"{outcome.malformed:,}",
            )
    if not counts:
        return StageResult(STAGE, skipped="no sources are configured (config key: sources)", notes=tuple(notes))
    if not ctx.exists(REJECTED_FILES):  # empty means no file was rejected: readers need not ask whether it exists
        ctx.publish(REJECTED_FILES, ctx.spark.createDataFrame([], REJECTED_DDL))
    if rejected and ctx.settings.ingest.on_rejected_file == "error":
        first, why = next(iter(sorted(rejected.items())))
        more = f" and {len(rejected) - 1} more" if len(rejected) > 1 else ""
        raise SourceError(
            f"{first}{more} could not be ingested ({why}); every other file was, the rejected ones are in "
            f"{REJECTED_FILES}: re-deliver them under a new name (or set ingest.on_rejected_file: warn)"
        )
    metrics = {f"{k}.{name}": float(getattr(c, k))
               for name, c in counts.items() for k in ("files", "rows", "malformed", "rejected")}
    return StageResult(STAGE, notes=tuple(notes), metrics=metrics, outcome=IngestOutcome(counts))


class _Outcome:
    def __init__(self) -> None:
        self.files = 0
        self.rows = 0
        self.malformed = 0
        self.rejected: dict[str, str] = {}
        self.error: BaseException | None = None


def ingest_source(ctx: StageContext, name: str, source: SourceSettings) -> _Outcome:
    """Append the not-yet-ingested files of one source to ``bronze.<name>``."""
    spark, lake = ctx.spark, ctx.lake
    uri = source_uri(ctx.settings, source)
    if not _exists(ctx, uri):
        raise SourceError(
            f"raw source '{name}' not found at {uri}: run `crm-spark generate`, point --raw at your landing zone, "
            f"or fix sources.{name}.path"
        )
    table = f"bronze.{name}"
    checkpoint = f"{lake.root}/_system/checkpoints/ingest/{name}"
    outcome = _Outcome()

    expected = expected_columns(ctx.settings, name)

    def append(files: list[str], headers: dict[str, list[str]], batch_id: int, stamp: datetime) -> WriteResult:
        rows = read_raw_files(spark, source, files, headers).withColumns(
            {"_ingest_batch_id": F.lit(batch_id).cast("long"), "_ingested_at": F.lit(stamp).cast("timestamp")}
        )
        if lake.exists(table):
            # A later file may lack a column bronze already has (JSON writers omit null keys,
            # an export drops a column): it is null in these rows, not a schema error.
            have = set(rows.columns)
            absent = [f for f in lake.schema(table).fields if f.name not in have]
            rows = rows.withColumns({f.name: F.lit(None).cast(f.dataType) for f in absent})
        rows = rows.persist()
        try:
            result = ctx.publish(table, rows, txn=Txn(f"ingest:{name}", batch_id), evolve=True)
            outcome.malformed += 0 if result.noop else rows.filter(F.col(CORRUPT).isNotNull()).count()
        finally:
            rows.unpersist()
        return result

    def ingest_batch(batch: DataFrame, batch_id: int) -> None:
        try:
            files = sorted(r.path for r in batch.select("path").collect())  # file names only
            if not files:
                return
            stamp = datetime.now(timezone.utc)
            screened = screen_files(spark, source, files, expected)
            headers = dict(screened.headers)
            # Rejections are committed before bronze: a run that dies in between replays the batch,
            # and a file already screened out or found unreadable is then recorded, not forgotten.
            _record_rejected(ctx, name, screened.rejected, Txn(f"ingest:{name}", batch_id), stamp)
            outcome.rejected.update(screened.rejected)
            if headers:
                try:
                    result = append(list(headers), headers, batch_id, stamp)
                except CrmSparkError:
                    raise
                except Exception:  # noqa: BLE001 - a corrupt file fails the whole read: find it, keep the rest
                    unreadable = {f: why for f in headers if (why := _unreadable(spark, source, f)) is not None}
                    if not unreadable:
                        raise
                    _record_rejected(ctx, name, unreadable, Txn(f"ingest-unreadable:{name}", batch_id), stamp)
                    outcome.rejected.update(unreadable)
                    headers = {f: h for f, h in headers.items() if f not in unreadable}
                    result = append(list(headers), headers, batch_id, stamp) if headers else None
                if result is not None:
                    outcome.rows += result.rows
            outcome.files += len(files)
        except BaseException as exc:  # re-raised after the query stops, with its own type
            outcome.error = exc
            raise

    stream = (
        spark.readStream.format("binaryFile")
        .schema(_BINARY_FILE_SCHEMA)
        .option("pathGlobFilter", GLOBS[source.format])
        .option("recursiveFileLookup", "true")
        .load(uri)
        .select("path")
    )
    query = (
        stream.writeStream.queryName(f"ingest_{name}")
        .trigger(availableNow=True)
        .option("checkpointLocation", checkpoint)
        .foreachBatch(ingest_batch)
        .start()
    )
    try:
        query.awaitTermination()
    except StreamingQueryException as exc:
        if isinstance(outcome.error, CrmSparkError):
            raise outcome.error from None
        cause = java_cause(outcome.error if outcome.error is not None else exc)
        raise SourceError(f"ingesting '{name}' from {uri} failed: {cause}") from exc
    return outcome


def expected_columns(settings: Settings, name: str) -> frozenset[str]:
    """The raw column names the mappings of source ``name`` read: a target's unmapped columns by
    their own name, and every name a mapping expression mentions (empty: nothing to compare with)."""
    names: set[str] = set(settings.attributes)
    for target, mapping in settings.sources[name].targets.items():
        names.update(c for c in raw_columns(target) if c not in mapping.columns)
        for expression in (*mapping.columns.values(), mapping.filter, mapping.explode):
            if expression:
                names.update(names_referenced(expression))
    return frozenset(names)


def _unreadable(spark: SparkSession, source: SourceSettings, path: str) -> str | None:
    """Why ``path`` alone cannot be read to the end (a truncated archive, a broken Parquet
    footer), or None when it can."""
    try:
        read_raw_files(spark, source, [path]).write.format("noop").mode("overwrite").save()
    except CrmSparkError as exc:
        return str(exc)
    except Exception as exc:  # noqa: BLE001 - whatever the reader raised is the reason
        return java_cause(exc)
    return None


def _record_rejected(ctx: StageContext, name: str, rejected: dict[str, str], txn: Txn, stamp: datetime) -> None:
    """One row per rejected file in ``quarantine.rejected_files`` (idempotent by ``txn``)."""
    if not rejected:
        return
    rows = [(name, path, reason, txn.version, stamp) for path, reason in sorted(rejected.items())]
    df = ctx.spark.createDataFrame(rows, REJECTED_DDL)
    ctx.publish(REJECTED_FILES, df, txn=txn)
    for path, reason in sorted(rejected.items()):
        log.warning("[ingest] %s: rejected %s: %s (recorded in %s)", name, path, reason, REJECTED_FILES)


def _exists(ctx: StageContext, uri: str) -> bool:
    jvm = ctx.spark.sparkContext._jvm  # noqa: SLF001
    path = jvm.org.apache.hadoop.fs.Path(uri)
    return bool(path.getFileSystem(ctx.spark.sparkContext._jsc.hadoopConfiguration()).exists(path))  # noqa: SLF001
