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
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from crm_spark.config import Settings, SourceSettings
from crm_spark.errors import CrmSparkError, SourceError
from crm_spark.lake import Txn
from crm_spark.sources.readers import CORRUPT, GLOBS, read_raw_files
from crm_spark.stages import StageContext, StageResult

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


@dataclass(frozen=True)
class IngestOutcome:
    sources: dict[str, SourceCounts]


def run(ctx: StageContext) -> StageResult:
    notes: list[str] = []
    counts: dict[str, SourceCounts] = {}
    for name, source in ctx.settings.sources.items():
        if not source.enabled:
            notes.append(f"source {name} is disabled in config")
            continue
        outcome = ingest_source(ctx, name, source)
        counts[name] = SourceCounts(outcome.files, outcome.rows, outcome.malformed)
        if outcome.files == 0:
            log.info("[ingest] %s: no new files", name)
        else:
            log.info(
                "[ingest] %s: %d new files, %s rows (%s malformed kept with their raw line)",
                name, outcome.files, f"{outcome.rows:,}", f"{outcome.malformed:,}",
            )
    if not counts:
        return StageResult(STAGE, skipped="no sources are configured (config key: sources)", notes=tuple(notes))
    metrics = {f"{k}.{name}": float(getattr(c, k)) for name, c in counts.items() for k in ("files", "rows", "malformed")}
    return StageResult(STAGE, notes=tuple(notes), metrics=metrics, outcome=IngestOutcome(counts))


class _Outcome:
    def __init__(self) -> None:
        self.files = 0
        self.rows = 0
        self.malformed = 0
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

    def ingest_batch(batch: DataFrame, batch_id: int) -> None:
        try:
            files = sorted(r.path for r in batch.select("path").collect())  # file names only
            if not files:
                return
            rows = read_raw_files(spark, source, files).withColumns(
                {
                    "_ingest_batch_id": F.lit(batch_id).cast("long"),
                    "_ingested_at": F.lit(datetime.now(timezone.utc)).cast("timestamp"),
                }
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
            outcome.files += len(files)
            outcome.rows += result.rows
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
        raise SourceError(f"ingesting '{name}' from {uri} failed: {_first_line(exc)}") from exc
    return outcome


def _exists(ctx: StageContext, uri: str) -> bool:
    jvm = ctx.spark.sparkContext._jvm  # noqa: SLF001
    path = jvm.org.apache.hadoop.fs.Path(uri)
    return bool(path.getFileSystem(ctx.spark.sparkContext._jsc.hadoopConfiguration()).exists(path))  # noqa: SLF001


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "desc", None) or exc)
    return (text.strip().splitlines() or [""])[0][:300]
