"""Delta tables under the lake root, behind one interface with two engines (SPEC section 4)."""

from __future__ import annotations

from pyspark.sql import SparkSession

from crm_spark.config import Settings
from crm_spark.errors import LakeError
from crm_spark.lake.base import LAYERS, Commit, Lake, Txn, WriteResult, parse_table
from crm_spark.session import delta_spark_available

__all__ = ["LAYERS", "Commit", "Lake", "Txn", "WriteResult", "open_lake", "parse_table"]


def open_lake(spark: SparkSession, settings: Settings, *, root: str | None = None) -> Lake:
    """The configured engine: ``delta-spark`` when asked for or (``auto``) when its classes load."""
    engine = settings.lake.engine
    root = root or settings.paths.lake
    _check_root(spark, root)
    if engine == "delta-spark" or (engine == "auto" and delta_spark_available(spark)):
        if not delta_spark_available(spark):
            raise LakeError("lake.engine is 'delta-spark' but its jars are not on the classpath; set lake.engine: embedded")
        from crm_spark.lake.delta_spark import DeltaSparkLake

        return DeltaSparkLake(spark, root)
    from crm_spark.lake.embedded import EmbeddedLake

    options = {k: v.get_secret_value() for k, v in settings.lake.storage_options.items()}
    return EmbeddedLake(spark, root, storage_options=options)


def _check_root(spark: SparkSession, root: str) -> None:
    """A lake root that exists must be a directory (a file there fails every write deep in Spark)."""
    jvm = spark.sparkContext._jvm  # noqa: SLF001
    path = jvm.org.apache.hadoop.fs.Path(root)
    try:
        fs = path.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration())  # noqa: SLF001
        is_file = bool(fs.exists(path)) and bool(fs.getFileStatus(path).isFile())
    except Exception:  # noqa: BLE001 - an unknown scheme or unreachable store: the first read says so
        return
    if is_file:
        raise LakeError(f"the lake path {root} is a file, not a directory: set paths.lake (or --lake) to a directory")
