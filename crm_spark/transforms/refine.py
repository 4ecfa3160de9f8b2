"""Bronze -> silver row rules: parse, normalise, validate, pseudonymise, dedupe, split.

Everything here is a pure DataFrame function over native Spark expressions (Spark 4 runs with
ANSI mode on, so parsing uses ``try_*`` functions that return null instead of failing). A row
that breaks a rule is not dropped: it goes to quarantine with every reason in ``_dq_reasons``.

Reason codes: ``malformed_line``, ``missing_<col>``, ``bad_<col>`` (not parseable or not an
allowed value), ``too_long_<col>``, ``out_of_range_<col>`` (``out_of_range_line_amount``: too
large for silver's decimal), ``implausible_<col>`` (a date outside the plausible range),
``outlier_<col>``, ``unknown_<ref>`` (foreign key not in silver), ``duplicate_row`` (the same source line as the kept row), ``superseded_version``
(another version of a key that the kept row replaces).
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping, Sequence
from datetime import date
from functools import reduce
from typing import Any

import pandas as pd

from pyspark.sql import Column, DataFrame, Observation, Window
from pyspark.sql import functions as F
from pyspark.sql.types import MapType

from crm_spark.contracts import Field
from crm_spark.contracts.silver import ATTRIBUTE_VALUE_COLUMNS
from crm_spark.contracts.silver import silver as contract

REASONS = "_dq_reasons"
ATTRIBUTES = "customer_attributes"
RAW = "_raw"
SOURCE_HASH = "_source_hash"  # of the whole source line (every column the file has, mapped or not)
CORRUPT = "_corrupt_record"
LINEAGE = ("_ingest_batch_id", "_source_file")
INGESTED_AT = "_ingested_at"
# Dates and times outside [EARLIEST_PLAUSIBLE, ingest time + FUTURE_TOLERANCE_DAYS] are quarantined
# (refine.earliest_date, refine.future_tolerance_days).
EARLIEST_PLAUSIBLE = date(1900, 1, 1)
FUTURE_TOLERANCE_DAYS = 1
MAX_FIELD_LENGTH = 32_768  # characters of one raw value (refine.max_field_length)
NULL_TOKENS = ("", "n/a", "na", "null", "none", "nan", "-", "?")
EMAIL_RE = r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}"
# A run of 8+ digits/separators, not inside a longer token, and not an ISO date or timestamp.
PHONE_RE = r"(?<![\w.+-])(?!\d{4}-\d{2}-\d{2}(?:[ T]\d{2}:\d{2}(?::\d{2})?)?(?![\d-]))\+?\d[\d\s().-]{6,}\d"


# -- conforming a source to a target ------------------------------------------------------
def conform(
    bronze: DataFrame,
    *,
    target: str,
    columns: Mapping[str, str],
    filter_expr: str | None = None,
    explode: str | None = None,
    collapse: bool = False,
    timestamp_formats: Sequence[str] = (),
    dropped: Observation | None = None,
    attributes: Sequence[str] = (),
    timezone: str | None = None,
) -> DataFrame:
    """Map a bronze frame (their columns) onto the target's raw columns, all strings.

    ``columns`` maps target column -> SQL expression over the source columns; an unlisted
    column is the same-named source column (null when the source has none). ``collapse`` keeps
    one row per key: the one whose values sort first, column by column in the table's order,
    dates and times by the instant they parse to with ``timestamp_formats`` (so the earliest
    date whatever its spelling), everything else as text. ``dropped``, if given, observes how many
    rows ``filter_expr`` saw (``seen``) and dropped (``rows``: false or null) when the frame is computed.

    ``customer_attributes`` turns each source row into one row per name in ``attributes``
    (``attribute``, and ``value`` from ``columns[name]`` or the same-named source column).
    """
    df = bronze
    if explode:
        df = df.select("*", F.posexplode_outer(F.expr(explode)).alias("_pos", "_item"))
    if filter_expr:
        kept = F.coalesce(F.expr(filter_expr), F.lit(False))
        if dropped is not None:
            df = df.observe(dropped, F.count_if(~kept).alias("rows"), F.count(F.lit(1)).alias("seen"))
        df = df.filter(kept)
    if target == ATTRIBUTES:
        df, columns = _unpivot_attributes(df, columns, attributes)
    wanted = raw_columns(target)
    cols = []
    for name in wanted:
        if name in columns:
            cols.append(F.expr(columns[name]).cast("string").alias(name))
        elif name in df.columns:
            cols.append(F.col(f"`{name}`").cast("string").alias(name))
        else:
            cols.append(F.lit(None).cast("string").alias(name))
    corrupt = F.col(CORRUPT) if CORRUPT in df.columns else F.lit(None).cast("string")
    extra = [] if collapse else [source_hash(bronze, exploded=bool(explode)).alias(SOURCE_HASH)]
    ingested = [F.col(INGESTED_AT)] if INGESTED_AT in df.columns else []  # plausible dates are relative to it
    out = df.select(*cols, corrupt.alias(CORRUPT), *(F.col(c) for c in LINEAGE), *ingested, *extra)
    if collapse:
        spec = contract(target)
        order = []
        for f in spec.fields:
            if f.kind in ("date", "timestamp"):
                order.append(parse_field(f, F.col(f.name), timestamp_formats=timestamp_formats, timezone=timezone))
            order.append(F.col(f.name))
        w = Window.partitionBy(*spec.keys).orderBy(*(c.asc_nulls_last() for c in order))
        out = out.withColumn("_rn", F.row_number().over(w)).filter("_rn = 1").drop("_rn")
    return out


def _unpivot_attributes(
    df: DataFrame, columns: Mapping[str, str], attributes: Sequence[str]
) -> tuple[DataFrame, dict[str, str]]:
    """One row per source row and attribute the source has (named in ``columns``, else a source
    column of the same name): ``_attr.attribute`` and ``_attr.value`` (a string). Several sources
    may each feed some of the attributes."""
    present = [n for n in attributes if n in columns or n in df.columns]
    if not present:
        raise ValueError(f"none of the declared attributes ({', '.join(attributes)}) is mapped or a column of the source")
    pairs = F.array(*(
        F.struct(F.lit(n).alias("attribute"), F.expr(columns.get(n, _quoted(n))).cast("string").alias("value"))
        for n in present
    ))
    rest = {k: v for k, v in columns.items() if k not in attributes}
    return df.select("*", F.explode(pairs).alias("_attr")), {**rest, "attribute": "_attr.attribute", "value": "_attr.value"}


SOURCE_METADATA = frozenset({CORRUPT, "_source_file", "_ingest_batch_id", "_ingested_at"})


def source_hash(bronze: DataFrame, *, exploded: bool = False) -> Column:
    """A hash of every source column of a bronze row (and of the exploded element's position):
    two lines are copies only when the whole line is, not just the columns a mapping reads.
    Ingest's own columns (file, batch, time) are left out: a line delivered again is a copy.
    Each value is hashed with whether it is null, so (x, null) and (null, x) differ."""
    cols = [
        F.to_json(F.col(_quoted(f.name))) if isinstance(f.dataType, MapType) else F.col(_quoted(f.name))
        for f in bronze.schema.fields if f.name not in SOURCE_METADATA
    ]
    if exploded:
        cols.append(F.col("_pos"))
    return F.xxhash64(*cols, *[c.isNull() for c in cols]) if cols else F.lit(0).cast("long")


def _quoted(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def raw_columns(target: str) -> tuple[str, ...]:
    return tuple(f.name for f in contract(target).fields)


# -- parsing ------------------------------------------------------------------------------
def clean_text(c: Column) -> Column:
    """Trim; the usual 'no value' tokens become null."""
    t = F.trim(c)
    return F.when(t.isNull() | F.lower(t).isin(*NULL_TOKENS), F.lit(None).cast("string")).otherwise(t)


def parse_number(c: Column, kind: str) -> Column:
    """Numbers as exported by spreadsheets: '12,5' (decimal comma) is 12.5, '1,234.50' (thousands
    commas before a decimal point) is 1234.5; '1,234' could be either, so it is null (quarantined
    as ``bad_<col>``, never read 1000x too small); non-numbers are null."""
    t = clean_text(c)
    grouped = r"^[+-]?\d{1,3}(,\d{3})+\.\d+$"
    ambiguous = r"^[+-]?\d{1,3}(,\d{3})+$"
    t = (
        F.when(~t.contains(","), t)  # most values: no regular expression to try (refine 19 s -> 11 s on 5.4M lines)
        .when(t.rlike(grouped), F.regexp_replace(t, ",", ""))
        .when(t.rlike(ambiguous), F.lit(None).cast("string"))
        .when(t.rlike(r"^[+-]?\d+,\d+$"), F.regexp_replace(t, ",", "."))
        .otherwise(t)
    )
    if kind == "int":
        # '3.0' is an int, '3.5' is not
        d = t.try_cast("double")
        return F.when(d.isNotNull() & (d == F.floor(d)) & (F.abs(d) < 2**31), d.cast("int"))
    return t.try_cast(kind)


def parse_timestamp(c: Column, formats: Sequence[str], timezone: str | None = None) -> Column:
    """The first of ``formats`` that parses; epoch seconds/millis; ISO offsets converted to UTC.
    A time written without an offset is local time in ``timezone`` (an IANA name; None: UTC)."""
    t = clean_text(c)
    candidates = []
    for fmt in formats:
        parsed = F.try_to_timestamp(t, F.lit(fmt))
        local = timezone is not None and _has_time(fmt) and not _has_offset(fmt)
        candidates.append(F.to_utc_timestamp(parsed, timezone) if local else parsed)
    epoch = F.when(t.rlike(r"^\d{9,10}$"), F.timestamp_seconds(t.try_cast("long"))).when(
        t.rlike(r"^\d{12,13}$"), F.timestamp_millis(t.try_cast("long"))
    )
    return F.coalesce(*candidates, epoch)


def _has_time(fmt: str) -> bool:
    """Whether a datetime pattern reads a time of day (a date alone is the calendar date as written)."""
    return any(letter in _pattern_letters(fmt) for letter in "HhkKms")


def _has_offset(fmt: str) -> bool:
    """Whether a datetime pattern reads an offset or zone (X, x, Z, O, V, z), or a literal 'Z' (UTC)."""
    return "'Z'" in fmt or any(letter in _pattern_letters(fmt) for letter in "XxZOVz")


def _pattern_letters(fmt: str) -> str:
    """A datetime pattern without its quoted literals ('T', 'Z')."""
    return re.sub(r"'[^']*'", "", fmt)


def parse_bool(c: Column) -> Column:
    t = F.lower(clean_text(c))
    return F.when(t.isin("true", "t", "yes", "y", "1"), F.lit(True)).when(t.isin("false", "f", "no", "n", "0"), F.lit(False))


def parse_field(f: Field, raw: Column, *, timestamp_formats: Sequence[str], timezone: str | None = None) -> Column:
    """``raw`` parsed as ``f``'s kind (a date is the calendar date as written: no time zone shift)."""
    if f.kind == "timestamp":
        return parse_timestamp(raw, timestamp_formats, timezone)
    if f.kind == "date":
        return F.to_date(parse_timestamp(raw, timestamp_formats))
    if f.kind == "bool":
        return parse_bool(raw)
    if f.kind in ("int", "double") or f.kind.startswith("decimal"):
        return parse_number(raw, f.kind)
    t = clean_text(raw)
    if f.case == "lower":
        return F.lower(t)
    if f.case == "upper":
        return F.upper(t)
    return t


# -- validation ---------------------------------------------------------------------------
def validate(
    conformed: DataFrame,
    *,
    target: str,
    timestamp_formats: Sequence[str],
    defaults: Mapping[str, str] | None = None,
    country_aliases: Mapping[str, str] | None = None,
    attribute_kinds: Mapping[str, str] | None = None,
    earliest: date = EARLIEST_PLAUSIBLE,
    future_days: int = FUTURE_TOLERANCE_DAYS,
    max_length: int = MAX_FIELD_LENGTH,
    timezone: str | None = None,
) -> DataFrame:
    """Typed target columns + ``_dq_reasons`` (empty array = accepted). One row per input row.

    A raw value longer than ``max_length`` characters is ``too_long_<column>`` (a runaway quote
    or a binary blob, not a value). Times without an offset are local time in ``timezone``.

    A date or time before ``earliest``, or later than the row's ingest time (``_ingested_at``,
    else now) plus ``future_days``, is ``implausible_<column>``: an order dated 1800 or 2999 would
    otherwise reach silver and move every default as-of date.

    ``customer_attributes`` rows also get ``kind`` and their value parsed into the column of its
    kind (``attribute_kinds``: name -> numeric | categorical | boolean | date); a present value
    that does not parse as its kind is ``bad_value``.

    Each field is parsed once, in a first projection; the reasons are computed from the parsed
    columns in a second one. (Written as one projection, every reason would repeat its field's
    parse expression, and the plan of a wide table grows to a megabyte task binary.)
    """
    spec = contract(target)
    defaults = defaults or {}
    parsed: list[Column] = []
    for f in spec.fields:
        raw = F.col(f.name)
        value = parse_field(f, raw, timestamp_formats=timestamp_formats, timezone=timezone)
        if f.name == "country" and country_aliases:
            value = F.coalesce(F.create_map(*[F.lit(x) for kv in country_aliases.items() for x in kv])[value], value)
        present = clean_text(raw).isNotNull()
        if f.name in defaults:
            value = F.coalesce(value, F.when(~present, F.lit(defaults[f.name])).cast(_spark_type(f.kind)))
        parsed += [value.alias(f.name), present.alias(f"_present_{f.name}")]
    passthrough = [F.col(f"`{c}`") for c in conformed.columns if c.startswith("_")]
    raw_struct = F.struct(*[F.col(f.name) for f in spec.fields]).alias(RAW)
    typed = conformed.select(*parsed, *passthrough, raw_struct)

    ingested = F.col(INGESTED_AT) if INGESTED_AT in conformed.columns else F.current_timestamp()
    raw_lengths = {f.name: F.length(F.col(f"{RAW}.{f.name}")) for f in spec.fields}
    latest = ingested + F.make_dt_interval(F.lit(future_days))
    reasons: list[Column] = [F.when(F.col(CORRUPT).isNotNull(), F.lit("malformed_line"))]
    for f in spec.fields:
        value, present = F.col(f.name), F.col(f"_present_{f.name}")
        reasons.append(F.when(raw_lengths[f.name] > max_length, F.lit(f"too_long_{f.name}")))
        reasons.append(F.when(present & value.isNull(), F.lit(f"bad_{f.name}")))
        if f.required:
            reasons.append(F.when(~present & value.isNull(), F.lit(f"missing_{f.name}")))
        if f.allowed is not None:
            reasons.append(F.when(value.isNotNull() & ~value.isin(*f.allowed), F.lit(f"bad_{f.name}")))
        if f.low is not None:
            below = value < F.lit(f.low) if f.low_inclusive else value <= F.lit(f.low)
            reasons.append(F.when(value.isNotNull() & below, F.lit(f"out_of_range_{f.name}")))
        if f.high is not None:
            reasons.append(F.when(value.isNotNull() & (value > F.lit(f.high)), F.lit(f"out_of_range_{f.name}")))
        if f.kind in ("date", "timestamp"):
            reasons.append(F.when(_implausible(value, f.kind, latest, earliest), F.lit(f"implausible_{f.name}")))
    if target == "order_items":  # a line amount too large for its decimal would fail the whole write
        amount = line_amount(F.col("quantity"), F.col("unit_price"), F.col("discount"))
        reasons.append(F.when(F.col("quantity").isNotNull() & F.col("unit_price").isNotNull() & amount.isNull(),
                              F.lit("out_of_range_line_amount")))
    extra: list[Column] = []
    if target == ATTRIBUTES:
        typed, extra = _typed_attributes(typed, attribute_kinds or {}, timestamp_formats)
        reasons.append(F.when(F.col("value").isNotNull() & F.col("_unparsed"), F.lit("bad_value")))
    # One copy of each code, in a stable order. (sort_array and array_except compile to code;
    # array_sort and array_compact are lambdas Spark interprets row by row, which made this
    # projection the slowest part of refine: 5.4M invoice lines 33 s -> 19 s.)
    codes = F.sort_array(F.array_except(F.array(*reasons), F.array(F.lit(None).cast("string"))))
    return typed.select(
        *(F.col(f.name) for f in spec.fields), *extra, *passthrough, F.col(RAW), codes.alias(REASONS)
    )


def _implausible(value: Column, kind: str, latest: Column, earliest: date) -> Column:
    if kind == "date":
        return value.isNotNull() & ((value < F.lit(earliest)) | (value > F.to_date(latest)))
    return value.isNotNull() & ((value < F.lit(earliest).cast("timestamp")) | (value > latest))


_ATTRIBUTE_FIELD_KINDS = {"numeric": "double", "categorical": "string", "boolean": "bool", "date": "date"}


def _typed_attributes(
    typed: DataFrame, kinds: Mapping[str, str], timestamp_formats: Sequence[str]
) -> tuple[DataFrame, list[Column]]:
    """``kind`` and ``value_<kind>`` columns of attribute rows (each value parsed as a field of its
    kind would be), and ``_unparsed`` (no parse for its kind; an undeclared attribute has no kind)."""
    kind = F.create_map(*(F.lit(x) for pair in kinds.items() for x in pair))[F.col("attribute")]
    value = F.col("value")
    parsed = {
        column: F.when(kind == k, parse_field(Field("value", _ATTRIBUTE_FIELD_KINDS[k]), value,
                                              timestamp_formats=timestamp_formats))
        for k, column in ATTRIBUTE_VALUE_COLUMNS.items()
    }
    out = typed.select("*", kind.alias("kind"), *(expr.alias(name) for name, expr in parsed.items()))
    unparsed = reduce(lambda a, b: a & b, (F.col(n).isNull() for n in parsed))
    return out.withColumn("_unparsed", unparsed), [F.col("kind"), *(F.col(n) for n in parsed)]


def _spark_type(kind: str) -> str:
    return {"bool": "boolean"}.get(kind, kind)


def add_reason(df: DataFrame, condition: Column, code: str) -> DataFrame:
    """Append ``code`` to ``_dq_reasons`` where ``condition`` holds (null counts as false)."""
    hit = F.coalesce(condition, F.lit(False))
    return df.withColumn(
        REASONS, F.when(hit, F.sort_array(F.array_distinct(F.array_append(F.col(REASONS), F.lit(code))))).otherwise(F.col(REASONS))
    )


def check_references(df: DataFrame, *, target: str, known: Mapping[str, DataFrame]) -> DataFrame:
    """``unknown_<col>`` for a non-null reference whose key is not in ``known[table]`` (one key column)."""
    for col, table in contract(target).refs.items():
        if table not in known:
            continue
        df = _with_ref_hit(df, F.col(col), known[table], table)
        df = add_reason(df, F.col(col).isNotNull() & F.col("_ref_hit").isNull(), f"unknown_{col}").drop("_ref_hit")
    return df


def _with_ref_hit(df: DataFrame, value: Column, parent: DataFrame, table: str) -> DataFrame:
    """``df`` with ``_ref_hit``: true where ``value`` is a key of ``parent`` (silver.<table>), else null."""
    keys = parent.select(F.col(contract(table).keys[0]).alias("_ref_key")).distinct().withColumn("_ref_hit", F.lit(True))
    return df.join(keys, value == keys["_ref_key"], "left").drop("_ref_key")


def awaiting_parents(
    quarantined: DataFrame, *, target: str, known: Mapping[str, DataFrame], current: DataFrame | None,
    timestamp_formats: Sequence[str] = (),
) -> DataFrame:
    """Quarantined rows of ``target`` to refine again: rejected only for references to keys that
    were unknown then (``unknown_<col>``, no other reason), every one of which ``known`` holds
    now, and whose own key ``current`` (silver.<target>) does not hold yet. A child row that
    arrived before its parent so reaches silver once the parent has.

    Returns their lineage and raw key fields (quarantine's strings, which are bronze's as mapped),
    to find the rows again in bronze; the rows go through every rule once more.
    """
    spec = contract(target)
    fields = {f.name: f for f in spec.fields}
    reasons = F.col(REASONS)
    only_unknown = (F.size(reasons) > 0) & F.forall(reasons, lambda r: r.startswith("unknown_"))
    keys = list(spec.keys)
    # A line refined again and rejected for another reason since (a newer version of its key, an
    # outlier) has a later quarantine record: it is no longer waiting for a parent.
    settled = quarantined.where(~only_unknown).select(*LINEAGE, *keys)
    rows = quarantined.where(only_unknown).join(settled, [*LINEAGE, *keys], "left_anti")
    for col, table in spec.refs.items():
        code = f"unknown_{col}"
        if table not in known:  # the reference was never checked, so no row has this reason
            rows = rows.where(~F.array_contains(reasons, code))
            continue
        value = parse_field(fields[col], F.col(col), timestamp_formats=timestamp_formats)
        rows = _with_ref_hit(rows, value, known[table], table)
        rows = rows.where(~F.array_contains(reasons, code) | F.col("_ref_hit").isNotNull()).drop("_ref_hit")
    raw_keys = [F.col(k).alias(f"_raw_{k}") for k in keys]
    rows = rows.select(*LINEAGE, *raw_keys, *(parse_field(fields[k], F.col(k), timestamp_formats=timestamp_formats)
                                               .alias(k) for k in keys))
    if current is not None:
        rows = rows.join(current.select(*keys), keys, "left_anti")
    return rows.select(*LINEAGE, *(F.col(f"_raw_{k}").alias(k) for k in keys)).distinct()


def outliers(df: DataFrame, *, rules: Mapping[str, Mapping[str, Any]]) -> DataFrame:
    """Per column ``{policy: cap|flag, lower: p, upper: p}``: cap values at the batch's percentiles,
    or flag them (reason ``outlier_<col>``). Percentiles are over the accepted rows of the batch."""
    for col, rule in rules.items():
        if col not in df.columns:
            continue
        ok = F.size(F.col(REASONS)) == 0
        lo_p, hi_p = rule.get("lower"), rule.get("upper")
        aggs = []
        if lo_p is not None:
            aggs.append(F.percentile_approx(F.when(ok, F.col(col)), float(lo_p)).alias("_lo"))
        if hi_p is not None:
            aggs.append(F.percentile_approx(F.when(ok, F.col(col)), float(hi_p)).alias("_hi"))
        if not aggs:
            continue
        bounds = df.agg(*aggs)
        df = df.crossJoin(F.broadcast(bounds))
        lo = F.col("_lo") if lo_p is not None else F.lit(None)
        hi = F.col("_hi") if hi_p is not None else F.lit(None)
        outside = (lo.isNotNull() & (F.col(col) < lo)) | (hi.isNotNull() & (F.col(col) > hi))
        if rule.get("policy", "flag") == "cap":
            dtype = df.schema[col].dataType
            capped = F.when(lo.isNotNull() & (F.col(col) < lo), lo).when(hi.isNotNull() & (F.col(col) > hi), hi).otherwise(F.col(col))
            df = df.withColumn(col, F.when(ok, capped.cast(dtype)).otherwise(F.col(col)))
        else:
            df = add_reason(df, ok & outside, f"outlier_{col}")
        df = df.drop(*[c for c in ("_lo", "_hi") if c in df.columns])
    return df


def dedupe(df: DataFrame, *, target: str) -> DataFrame:
    """Among accepted rows, keep the newest version of each key.

    Newest = highest ``version_col`` (customers: ``updated_at``), then the later ingest batch and
    source file. Rows from the same whole source line as the kept row (``SOURCE_HASH``) get
    ``duplicate_row``, other versions ``superseded_version``. Two different versions of a key without a version column in the
    same file are resolved deterministically (by content hash) but not by line order, which
    bronze does not record.
    """
    spec = contract(target)
    keys = list(contract(target).keys)
    # A copy is the same source line (SOURCE_HASH, from conform) giving the same row: two lines
    # that differ only in a column the mapping does not read are two versions of the key.
    data_cols = [f.name for f in spec.fields] + ([SOURCE_HASH] if SOURCE_HASH in df.columns else [])
    row_hash = F.xxhash64(*data_cols)
    order = ([F.col(spec.version_col).desc_nulls_last()] if spec.version_col else []) + [
        F.col("_ingest_batch_id").desc(), F.col("_source_file").desc(), F.col("_row_hash").desc()
    ]
    # One window (one shuffle and sort): the kept row's hash is the first in the same order, over
    # the whole partition. (Two window specs shuffled 5.4M invoice lines twice: 25 s -> 11 s.)
    df = df.withColumn("_ok", F.size(F.col(REASONS)) == 0).withColumn("_row_hash", row_hash)
    w = Window.partitionBy(*keys, "_ok").orderBy(*order)
    whole = w.rowsBetween(Window.unboundedPreceding, Window.unboundedFollowing)
    ranked = df.withColumn("_rank", F.row_number().over(w)).withColumn("_kept_hash", F.first("_row_hash").over(whole))
    later = F.col("_ok") & (F.col("_rank") > 1)
    ranked = add_reason(ranked, later & (F.col("_row_hash") == F.col("_kept_hash")), "duplicate_row")
    ranked = add_reason(ranked, later & (F.col("_row_hash") != F.col("_kept_hash")), "superseded_version")
    return ranked.drop("_rank", "_row_hash", "_kept_hash", "_ok")


def older_than_silver(df: DataFrame, silver: DataFrame, *, target: str) -> DataFrame:
    """``superseded_version`` for incoming rows older than the version silver already holds."""
    spec = contract(target)
    if spec.version_col is None:
        return df
    keys = list(contract(target).keys)
    current = silver.select(*keys, F.col(spec.version_col).alias("_silver_version"))
    joined = df.join(current, on=keys, how="left")
    older = F.col("_silver_version").isNotNull() & (F.col(spec.version_col) < F.col("_silver_version"))
    return add_reason(joined, (F.size(F.col(REASONS)) == 0) & older, "superseded_version").drop("_silver_version")


# -- PII ----------------------------------------------------------------------------------
def hmac_sha256_hex(key: bytes, message: Column) -> Column:
    """HMAC-SHA256(key, message) of UTF-8 text as lower-case hex; null stays null.

    Python's ``hmac`` in a vectorised (Arrow) UDF, with the key in the function's closure: Spark
    prints a plan's literals in ``explain``, the UI's SQL tab, event logs and error messages, so
    a native expression (the key's pads as binary literals) would put the key in all of them.
    """

    @F.pandas_udf("string")  # type: ignore[call-overload]
    def pseudonym(values: pd.Series) -> pd.Series:
        return values.map(lambda v: None if v is None else hmac.new(key, v.encode("utf-8"), hashlib.sha256).hexdigest())

    return pseudonym(message.cast("string"))


def normalise_email(c: Column) -> Column:
    return F.lower(F.trim(c))


def normalise_phone(c: Column) -> Column:
    """Digits only, keeping a leading '+': '+44 (20) 7946-0000' -> '+442079460000'."""
    t = F.trim(c)
    digits = F.regexp_replace(t, r"[^0-9]", "")
    return F.when(F.length(digits) > 0, F.concat(F.when(t.startswith("+"), F.lit("+")).otherwise(F.lit("")), digits))


def normalise_name(first: Column, last: Column) -> Column:
    full = F.concat_ws(" ", F.trim(first), F.trim(last))
    return F.when(F.length(full) > 0, F.lower(F.regexp_replace(full, r"\s+", " ")))


def age_band(age: Column) -> Column:
    return (
        F.when(age.isNull(), F.lit("unknown"))
        .when(age < 25, "18-24").when(age < 35, "25-34").when(age < 45, "35-44")
        .when(age < 55, "45-54").when(age < 65, "55-64").otherwise("65+")
    )


def mask_contacts(c: Column) -> Column:
    """Free text with e-mail addresses and phone numbers replaced by [email] / [phone]."""
    return F.regexp_replace(F.regexp_replace(c, EMAIL_RE, "[email]"), PHONE_RE, "[phone]")


def pseudonymise_customers(df: DataFrame, *, key: bytes) -> DataFrame:
    """Names/email/phone -> HMAC pseudonyms; birth date -> birth year + age band (age at updated_at)."""
    age = F.floor(F.months_between(F.col("updated_at"), F.col("birth_date")) / 12).cast("int")
    return (
        df.withColumn("name_pseudo", hmac_sha256_hex(key, normalise_name(F.col("first_name"), F.col("last_name"))))
        .withColumn("email_pseudo", hmac_sha256_hex(key, normalise_email(F.col("email"))))
        .withColumn("phone_pseudo", hmac_sha256_hex(key, normalise_phone(F.col("phone"))))
        .withColumn("birth_year", F.year("birth_date"))
        .withColumn("age_band", age_band(F.when(age.between(0, 120), age)))
        .drop("first_name", "last_name", "email", "phone", "birth_date")
    )


def redact_quarantine(df: DataFrame, *, target: str, key: bytes) -> DataFrame:
    """Quarantine keeps raw values for repair, but never raw PII: customer PII columns and
    malformed lines of customers become pseudonyms; free text is masked."""
    if target == "customers":
        for col in ("first_name", "last_name", "email", "phone", "birth_date"):
            df = df.withColumn(col, F.when(F.col(col).isNotNull(), F.concat(F.lit("pseudo:"), hmac_sha256_hex(key, F.col(col).cast("string")))))
        df = df.withColumn(CORRUPT, F.when(F.col(CORRUPT).isNotNull(), F.concat(F.lit("pseudo:"), hmac_sha256_hex(key, F.col(CORRUPT)))))
    else:
        df = df.withColumn(CORRUPT, mask_contacts(F.col(CORRUPT)))
    for col in ("text", "value"):  # feedback text; an attribute's raw value
        if col in df.columns:
            df = df.withColumn(col, mask_contacts(F.col(col)))
    return df


# -- assembling silver rows ---------------------------------------------------------------
def to_silver(df: DataFrame, *, target: str, key: bytes) -> DataFrame:
    """Accepted rows in the silver schema of ``target`` (derived columns added)."""
    if target == "customers":
        df = pseudonymise_customers(df, key=key)
    elif target == "orders":
        df = df.withColumn("order_date", F.to_date("order_ts"))
    elif target == "order_items":
        discount = F.coalesce(F.col("discount"), F.lit(0).cast("decimal(5,4)"))
        df = df.withColumn("discount", discount).withColumn(
            "line_amount", line_amount(F.col("quantity"), F.col("unit_price"), discount)
        )
    elif target == "feedback":
        df = df.withColumn("text", mask_contacts(F.col("text")))
    elif target == ATTRIBUTES:
        df = df.withColumn("value_text", mask_contacts(F.col("value_text")))
    # exactly the contract of silver.<target> (e.g. the bronze batch id is a long, silver's a string)
    return df.select(*(F.col(f.name).cast(f.dataType).alias(f.name) for f in contract(target).schema.fields))


def status_changes(accepted: DataFrame, current: DataFrame | None) -> DataFrame:
    """Rows of ``silver.order_status_history`` for a batch of accepted orders.

    An order not yet in ``current`` (silver before this batch) has had its status since its order
    time; one that arrives already returned with a ``status_ts`` (the return's time) was completed
    until then. An order whose status differs from ``current``'s has had the new one since
    ``status_ts``, else since the batch was ingested (never before its order time). Unchanged
    orders add nothing, so a re-delivery is a no-op.
    """
    seen = F.col(INGESTED_AT) if INGESTED_AT in accepted.columns else F.current_timestamp()
    status_ts = F.col("status_ts") if "status_ts" in accepted.columns else F.lit(None).cast("timestamp")
    rows = accepted.select("order_id", "status", "order_ts", F.coalesce(status_ts, seen).alias("_stamp"),
                           status_ts.alias("_status_ts"))
    if current is not None:
        rows = rows.join(current.select("order_id", F.col("status").alias("_was")), "order_id", "left")
    else:
        rows = rows.withColumn("_was", F.lit(None).cast("string"))

    def entry(status: Column, since: Column) -> Column:
        return F.struct(status.alias("status"), since.alias("status_from"))

    returned_later = (F.col("status") == "returned") & (F.col("_status_ts") > F.col("order_ts"))
    first = F.when(returned_later, F.array(entry(F.lit("completed"), F.col("order_ts")),
                                             entry(F.col("status"), F.col("_status_ts")))
                   ).otherwise(F.array(entry(F.col("status"), F.col("order_ts"))))
    # A change comes after the order (a status time at or before it would share the first entry's
    # key); the status it replaces is dated from the order time too, for orders refined before the
    # history was kept (the insert-only merge skips it when the order's first entry exists).
    after_order = F.col("order_ts") + F.expr("INTERVAL 1 MICROSECOND")
    changed = F.array(entry(F.col("_was"), F.col("order_ts")), entry(F.col("status"), F.greatest("_stamp", after_order)))
    entries = F.when(F.col("_was").isNull(), first).when(F.col("_was") != F.col("status"), changed)
    return rows.where(entries.isNotNull()).select("order_id", F.explode(entries).alias("e")).select(
        "order_id", "e.status", "e.status_from"
    )


def line_amount(quantity: Column, unit_price: Column, discount: Column) -> Column:
    """quantity x unit price x (1 - discount) as silver's decimal(14,2); null where it does not fit."""
    net = F.lit(1) - F.coalesce(discount, F.lit(0).cast("decimal(5,4)"))
    return F.try_multiply(F.try_multiply(quantity, unit_price), net).try_cast("decimal(14,2)")


def quarantine_rows(df: DataFrame, *, target: str, key: bytes) -> DataFrame:
    """Rejected rows as they arrived (strings), with their reasons and lineage; PII redacted."""
    rejected = df.filter(F.size(F.col(REASONS)) > 0).select(
        *(F.col(f"{RAW}.{c}").alias(c) for c in raw_columns(target)), CORRUPT, REASONS, *LINEAGE
    )
    return redact_quarantine(rejected, target=target, key=key)


def not_yet_quarantined(rows: DataFrame, stored: DataFrame) -> DataFrame:
    """``rows`` less those already in quarantine with the same values and reasons (from any batch
    or file): a file delivered again stores its rejected lines once. Compared exactly (null-safe),
    not by a hash that could collide and lose a row."""
    content = [c for c in rows.columns if c not in LINEAGE and c in stored.columns]
    seen = stored.select(*content).distinct()
    return rows.join(seen, on=[rows[c].eqNullSafe(seen[c]) for c in content], how="left_anti")


DEDUPE_REASONS = ("duplicate_row", "superseded_version")


def only_dedupe_reasons() -> Column:
    """True for a row rejected only as a copy or an older version of a key (not as dirt)."""
    others = F.array_except(F.col(REASONS), F.array(*(F.lit(r) for r in DEDUPE_REASONS)))  # compiled, unlike forall
    return (F.size(F.col(REASONS)) > 0) & (F.size(others) == 0)


def accepted_rows(df: DataFrame) -> DataFrame:
    return df.filter(F.size(F.col(REASONS)) == 0)


def reason_counts(df: DataFrame) -> DataFrame:
    """(reason, rows) over quarantined rows; a row with two reasons counts once per reason."""
    return df.select(F.explode(REASONS).alias("reason")).groupBy("reason").count()


def union_all(frames: Sequence[DataFrame]) -> DataFrame:
    return reduce(lambda a, b: a.unionByName(b, allowMissingColumns=True), frames)
