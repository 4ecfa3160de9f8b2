"""Reading raw files as bronze rows: every column a string, malformed lines kept.

CSV files are grouped by their header line, so a later export that adds or reorders columns is
read by name, not by position; the bronze table grows the new column (additive evolution).
JSON lines are read with every primitive as a string. A line the parser cannot read keeps its
raw text in ``_corrupt_record`` and nulls elsewhere: nothing is lost.
"""

from __future__ import annotations

import csv
import io
import re
from collections import defaultdict
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
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


@dataclass(frozen=True)
class Screened:
    """A batch of files split before reading: the readable ones (CSV: with their header) and the rejected."""

    headers: dict[str, list[str]] = field(default_factory=dict)  # path -> header (CSV), or [] for other formats
    rejected: dict[str, str] = field(default_factory=dict)  # path -> why it cannot be ingested as rows


def screen_files(spark: SparkSession, source: SourceSettings, files: Sequence[str], expected: Collection[str]) -> Screened:
    """Reject the CSV files whose header line cannot be read or names none of the ``expected``
    columns (case-insensitive): a file with another delimiter reads as one junk column, a binary
    file as noise, and either would widen bronze for good. Other formats pass unread."""
    if source.format != "csv":
        return Screened(headers={f: [] for f in files})
    wanted = {c.lower() for c in expected}
    check = bool(wanted) and _has_header(source)
    headers: dict[str, list[str]] = {}
    rejected: dict[str, str] = {}
    for path in files:
        try:
            header = _header_of(spark, source, path)
        except SourceError as exc:
            rejected[path] = str(exc).removeprefix(f"{path}: ")
            continue
        if check and header and not wanted.intersection(c.lower() for c in header):
            shown = ", ".join(header[:3])[:120]
            rejected[path] = (
                f"its header ({shown}{', ...' if len(header) > 3 else ''}) names none of the columns the mappings read; "
                f"check the delimiter (sources.<source>.options.sep) and that it is a text CSV file"
            )
            continue
        headers[path] = header
    return Screened(headers=headers, rejected=rejected)


def read_raw_files(
    spark: SparkSession, source: SourceSettings, files: Sequence[str], headers: Mapping[str, list[str]] | None = None
) -> DataFrame:
    """The given files of one source as string columns + ``_corrupt_record`` + ``_source_file``
    (CSV headers as :func:`screen_files` read them, else read here)."""
    if not files:
        raise SourceError("no files to read")
    if source.format == "csv":
        groups: dict[tuple[str, ...], list[str]] = defaultdict(list)
        for path in files:
            header = headers[path] if headers is not None and path in headers else _header_of(spark, source, path)
            groups[tuple(header)].append(path)
        frames = [_read_csv(spark, source, list(header), group) for header, group in groups.items()]
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


def _read_csv(spark: SparkSession, source: SourceSettings, header: list[str], files: list[str]) -> DataFrame:
    schema = StructType([StructField(c, StringType()) for c in header] + [StructField(CORRUPT, StringType())])
    reader = spark.read.schema(schema).options(
        **_opts(source.options, mode="PERMISSIVE", columnNameOfCorruptRecord=CORRUPT, enforceSchema=True)
    )
    return reader.csv(files)


def _has_header(source: SourceSettings) -> bool:
    return str(source.options.get("header", "true")).lower() == "true"


def _header_of(spark: SparkSession, source: SourceSettings, path: str) -> list[str]:
    """Column names from a CSV file's first line (read through Hadoop, so any URI and codec)."""
    delimiter = str(source.options.get("sep", source.options.get("delimiter", ",")))
    try:
        line = first_line(spark, path)
    except Exception as exc:  # noqa: BLE001 - any I/O or codec failure: the file is unreadable
        raise SourceError(f"{path}: the first line cannot be read ({java_cause(exc)})") from None
    if line is None:
        return []
    try:
        cells = next(csv.reader(io.StringIO(line), delimiter=delimiter, quotechar='"'), [])
    except csv.Error as exc:
        raise SourceError(f"{path}: the header line is not CSV text ({exc})") from None
    if not _has_header(source):
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


def java_cause(exc: BaseException) -> str:
    """The root cause of a Spark/JVM failure as one line (``java.io.EOFException: Unexpected end
    of input stream``), not the 200 lines of Java and Python stack around it."""
    text = str(getattr(exc, "desc", None) or exc)
    causes = re.findall(r"^Caused by: (.+)$", text, flags=re.MULTILINE)
    if causes:
        return causes[-1].strip()[:300]
    named = re.search(r"^\s*((?:[\w$]+\.)+[\w$]*(?:Exception|Error)(?:: .*)?)$", text, flags=re.MULTILINE)
    line = named.group(1) if named else (text.strip().splitlines() or [type(exc).__name__])[0]
    return line.strip()[:300]


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
