"""Reading raw files as bronze rows: every column a string, malformed lines kept.

CSV files are grouped by their header line, so a later export that adds or reorders columns is
read by name, not by position; the bronze table grows the new column (additive evolution).
JSON lines are read with every primitive as a string. A line the parser cannot read keeps its
raw text in ``_corrupt_record`` and nulls elsewhere: nothing is lost.
"""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from collections.abc import Sequence
from functools import reduce
from typing import Any

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import ArrayType, MapType, StringType, StructField, StructType

from crm_spark.config import SourceSettings
from crm_spark.errors import SourceError

CORRUPT = "_corrupt_record"
SOURCE_FILE = "_source_file"
GLOBS = {"csv": "*.csv*", "json": "*.json*", "parquet": "*.parquet", "text": "*"}


def read_raw_files(spark: SparkSession, source: SourceSettings, files: Sequence[str]) -> DataFrame:
    """The given files of one source as string columns + ``_corrupt_record`` + ``_source_file``."""
    if not files:
        raise SourceError("no files to read")
    if source.format == "csv":
        frames = [_read_csv(spark, source, group) for group in _group_by_header(spark, source, files).values()]
    elif source.format == "json":
        frames = [_stringify(spark.read.options(**_opts(source.options, primitivesAsString=True)).json(list(files)))]
    elif source.format == "parquet":
        frames = [_stringify(spark.read.options(**_opts(source.options)).parquet(*files))]
    else:
        frames = [spark.read.options(**_opts(source.options)).text(list(files))]
    frames = [f.withColumn(SOURCE_FILE, F.col("_metadata.file_path")) for f in frames]
    df = reduce(lambda a, b: a.unionByName(b, allowMissingColumns=True), frames)
    if CORRUPT not in df.columns:
        df = df.withColumn(CORRUPT, F.lit(None).cast("string"))
    data = [c for c in df.columns if c not in (CORRUPT, SOURCE_FILE)]
    return df.select(*data, CORRUPT, SOURCE_FILE)


def _read_csv(spark: SparkSession, source: SourceSettings, files: list[str]) -> DataFrame:
    header = _header_of(spark, source, files[0])
    schema = StructType([StructField(c, StringType()) for c in header] + [StructField(CORRUPT, StringType())])
    reader = spark.read.schema(schema).options(
        **_opts(source.options, mode="PERMISSIVE", columnNameOfCorruptRecord=CORRUPT, enforceSchema=True)
    )
    return reader.csv(files)


def _group_by_header(spark: SparkSession, source: SourceSettings, files: Sequence[str]) -> dict[tuple[str, ...], list[str]]:
    groups: dict[tuple[str, ...], list[str]] = defaultdict(list)
    for path in files:
        groups[tuple(_header_of(spark, source, path))].append(path)
    return dict(groups)


def _header_of(spark: SparkSession, source: SourceSettings, path: str) -> list[str]:
    """Column names from a CSV file's first line (read through Hadoop, so any URI and codec)."""
    delimiter = str(source.options.get("sep", source.options.get("delimiter", ",")))
    has_header = str(source.options.get("header", "true")).lower() == "true"
    line = first_line(spark, path)
    if line is None:
        return []
    cells = next(csv.reader(io.StringIO(line), delimiter=delimiter, quotechar='"'), [])
    if not has_header:
        return [f"_c{i}" for i in range(len(cells))]
    names = [c.strip().lstrip("\ufeff") for c in cells]
    if len(set(names)) != len(names) or any(not n for n in names):
        raise SourceError(f"{path}: the header line has empty or repeated column names: {names}")
    return names


def first_line(spark: SparkSession, path: str) -> str | None:
    jvm = spark.sparkContext._jvm  # noqa: SLF001
    conf = spark.sparkContext._jsc.hadoopConfiguration()  # noqa: SLF001
    hpath = jvm.org.apache.hadoop.fs.Path(path)
    stream = hpath.getFileSystem(conf).open(hpath)
    codec = jvm.org.apache.hadoop.io.compress.CompressionCodecFactory(conf).getCodec(hpath)
    if codec is not None:
        stream = codec.createInputStream(stream)
    reader = jvm.java.io.BufferedReader(jvm.java.io.InputStreamReader(stream, "UTF-8"))
    try:
        return reader.readLine()
    finally:
        reader.close()


def _stringify(df: DataFrame) -> DataFrame:
    """Every column as a string; nested values as JSON text."""
    cols: list[Column] = []
    for field in df.schema.fields:
        c = F.col(f"`{field.name}`")
        if isinstance(field.dataType, (StructType, ArrayType, MapType)):
            cols.append(F.to_json(c).alias(field.name))
        elif isinstance(field.dataType, StringType):
            cols.append(c)
        else:
            cols.append(c.cast("string").alias(field.name))
    return df.select(*cols)


def _opts(options: dict[str, Any], **defaults: Any) -> dict[str, str]:
    merged = {**defaults, **options}
    return {k: (str(v).lower() if isinstance(v, bool) else str(v)) for k, v in merged.items()}
