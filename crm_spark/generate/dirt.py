"""Dirt injection and rendering: source rows -> output lines (data, headers, dirt records).

Each source row is dirty with probability ``dirty_rate``; a dirty row gets exactly one defect, a
kind drawn uniformly from the source's kinds (a row where the drawn kind does not apply stays
clean). *In-place* kinds change the row itself (its only copy carries the defect); *extra* kinds
leave the row intact and add a second line (an exact duplicate, a newer version of the key, or a
malformed copy), so a reader that drops every bad line still has the whole clean dataset.

Every defect yields one record in ``_truth/dirt.csv``; :func:`render` emits those records in the
same pass as the data lines (role 2), so the data is generated once.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date
from typing import Literal

from pyspark.sql import DataFrame

from crm_spark.generate._sql import Rng, dbl, pick, q, str_array
from crm_spark.generate.formats import csv_field, csv_line, fmt_ts, json_line
from crm_spark.generate.model import SECONDS_PER_DAY, Plan

EXTRA_KINDS: tuple[str, ...] = (
    "duplicate_row", "newer_version", "malformed_field_count", "malformed_unclosed_quote", "malformed_json",
)
IN_PLACE_KINDS: tuple[str, ...] = (
    "na_value", "decimal_comma", "empty_numeric", "out_of_range", "negative_quantity", "zero_price",
    "missing_customer_id", "unknown_foreign_key", "timestamp_format", "late_arriving",
)
ALL_KINDS: tuple[str, ...] = EXTRA_KINDS + IN_PLACE_KINDS
TIMESTAMP_VARIANTS: tuple[str, ...] = ("iso_t_z", "dmy", "epoch", "offset")
DIRT_COLUMNS: tuple[str, ...] = ("source", "kind", "key", "file", "column", "mode", "detail")
ROWS_PER_FILE = 4_000_000  # above this a period's file is split into parts
LINE_SCHEMA = "file string, hdr int, t bigint, k string, v int, line string, role int, kind string"

Fields = dict[str, str]  # column -> SQL expression of its text


@dataclass(frozen=True)
class NewerVersion:
    """SQL of a newer version of a row: its fields, what changed, and where it goes."""

    fields: Fields
    column: str
    detail: str
    t: str  # sort time (and, for customers, the period) of the new version
    shift: str  # periods after the original's period


@dataclass(frozen=True)
class OutOfRange:
    column: str
    value: Callable[[Mapping[str, str], str], str]  # (fields, uniform column) -> SQL of the new text


@dataclass(frozen=True)
class SourceSpec:
    """How one raw source is laid out and which defects it can carry."""

    name: str
    fmt: Literal["csv", "json"]
    columns: tuple[str, ...]
    periods: Literal["month", "customers", "products"]
    kinds: tuple[str, ...]
    rows_per_customer: float  # for splitting big files into parts
    numeric: frozenset[str] = frozenset()
    text: frozenset[str] = frozenset()  # free text: may hold commas, quotes, line breaks
    ts_column: str | None = None
    customer_column: str | None = None
    fk: tuple[str, Callable[[str], str]] | None = None  # column, (uniform column) -> SQL of an unknown key
    na_columns: tuple[str, ...] = ()
    decimal_columns: tuple[str, ...] = ()
    empty_columns: tuple[str, ...] = ()
    out_of_range: tuple[OutOfRange, ...] = ()
    quantity_column: str | None = None
    price_column: str | None = None
    newer: Callable[[Fields, Plan], NewerVersion] | None = field(default=None, repr=False)

    @property
    def ext(self) -> str:
        return ".csv" if self.fmt == "csv" else ".json"

    def shards(self, plan: Plan) -> int:
        periods = len(plan.months) if self.periods == "month" else 1
        return max(1, math.ceil(plan.customers * self.rows_per_customer / periods / ROWS_PER_FILE))

    # ------------------------------------------------------------ periods and files
    def period_label(self, plan: Plan, t: str, shift: str = "0") -> str:
        d = f"to_date(timestamp_seconds({t}))"
        if self.periods == "month":
            return f"date_format(add_months({d}, {shift}), 'yyyy-MM')"
        if self.periods == "customers":
            snapshot = q(f"snapshot-{plan.start.isoformat()}")
            return f"CASE WHEN {t} < {plan.start_epoch}L THEN {snapshot} ELSE date_format({d}, 'yyyy-MM') END"
        return f"date_format({d}, 'yyyy-MM-dd')"

    def period_index(self, plan: Plan, t: str) -> str:
        d = f"to_date(timestamp_seconds({t}))"
        return f"(year({d}) * 12 + month({d}) - {plan.start.year * 12 + plan.start.month})"

    def last_index(self, plan: Plan) -> int:
        return len(plan.months) - 1

    def labels(self, plan: Plan) -> list[str]:
        if self.periods == "month":
            return plan.months
        if self.periods == "customers":
            return [f"snapshot-{plan.start.isoformat()}", *plan.months]
        launch = date.fromordinal(plan.start.toordinal() + plan.catalog.launch_day)
        return sorted({plan.start.isoformat(), launch.isoformat()})

    def file_names(self, plan: Plan) -> list[str]:
        n = self.shards(plan)
        return [self._name(label, s, n) for label in self.labels(plan) for s in range(n)]

    def _name(self, label: str, shard: int, shards: int) -> str:
        part = f"-part{shard + 1:02d}" if shards > 1 else ""
        return f"{self.name}-{label}{part}{self.ext}"

    def file_name(self, label: str, shards: int) -> str:
        part = "concat('-part', lpad(CAST(_shard + 1 AS STRING), 2, '0'))" if shards > 1 else "''"
        return f"concat({q(self.name + '-')}, {label}, {part}, {q(self.ext)})"

    # ------------------------------------------------------------ lines
    def needs_check(self, column: str) -> bool:
        """Whether a CSV value of this column may need quoting (free text, or a decimal comma)."""
        return column in self.text or column in self.decimal_columns

    def field(self, fields: Mapping[str, str], column: str) -> str:
        return csv_field(fields[column], check=self.needs_check(column))

    def line(self, fields: Mapping[str, str]) -> str:
        if self.fmt == "csv":
            return "concat_ws(',', " + ", ".join(self.field(fields, c) for c in self.columns) + ")"
        return json_line({c: fields[c] for c in self.columns}, self.numeric, self.text)


def _chain(branches: list[tuple[str, str]], otherwise: str) -> str:
    if not branches:
        return otherwise
    return "CASE " + " ".join(f"WHEN {c} THEN {v}" for c, v in branches) + f" ELSE {otherwise} END"


def _add(df: DataFrame, **columns: str) -> DataFrame:
    return df.selectExpr("*", *[f"{expr} AS {name}" for name, expr in columns.items()])


def _struct(file: str, t: str, v: str, line: str, role: int, kind: str) -> str:
    return (f"named_struct('file', {file}, 'hdr', 1, 't', CAST({t} AS BIGINT), 'k', _key, 'v', CAST({v} AS INT), "
            f"'line', {line}, 'role', {role}, 'kind', {kind})")


def _island(cond: str, body: str) -> str:
    """``body`` evaluated only when ``cond`` holds, as one interpreted expression.

    Dirt touches about one row in a hundred; building its many variants inside a higher-order
    function (not code-generated) keeps the generated code of the hot, clean path small enough
    for the JIT (methods over 8000 bytes of bytecode are never compiled).
    """
    return f"CASE WHEN {cond} THEN transform(array(0), _z -> {body})[0] END"


def render(spec: SourceSpec, plan: Plan, rows: DataFrame) -> DataFrame:
    """Source rows (output columns as text + ``_key``, ``_t``, ``_v``, optional ``_status``) ->
    output lines ``(file, hdr, t, k, v, line, role, kind)``, ``file`` relative to the output root.

    role 1 = a data line, role 2 = a dirt record (file ``_truth/dirt/<source>.csv``).
    """
    r = Rng(plan.seed)
    src, kinds = spec.name, spec.kinds
    keys = ("_key", "_v")
    shards = spec.shards(plan)
    last = spec.last_index(plan)
    f: Fields = {c: f"`{c}`" for c in spec.columns}
    dirty = plan.dirty_rate > 0 and bool(kinds)
    if dirty:
        raw = (f"CASE WHEN {r.u('dirt:' + src, *keys)} < {dbl(plan.dirty_rate)} "
               f"THEN {pick(kinds, r.below(len(kinds), 'dirt-kind:' + src, *keys))} END")
    else:
        raw = "CAST(NULL AS STRING)"
    df = _add(
        rows,
        _raw=raw,
        _shard=f"CAST(pmod(xxhash64({plan.seed}L, 'shard', _key), {shards}) AS INT)" if shards > 1 else "0",
    )
    clean_file = spec.file_name(spec.period_label(plan, "_t"), shards)
    df = _add(df, _clean_file=clean_file, _clean_line=spec.line(f))
    prefix = q(f"{src}/")
    if not dirty:
        data = _struct(f"concat({prefix}, _clean_file)", "_t", "_v * 10", "_clean_line", 1, "CAST(NULL AS STRING)")
        return df.selectExpr(f"{data} AS s").selectExpr("s.*")

    df = _add(df, _ua=f"CASE WHEN _raw IS NOT NULL THEN {r.u(f'dirt-a:{src}', *keys)} END",
              _ub=f"CASE WHEN _raw IS NOT NULL THEN {r.u(f'dirt-b:{src}', *keys)} END",
              _pidx=f"CASE WHEN _raw IS NOT NULL THEN {spec.period_index(plan, '_t')} END")
    df = _add(df, _late="CAST(1 + floor(_ua * 2) AS INT)")
    has_status = "_status" in rows.columns
    eligible = (
        "CASE _raw "
        f"WHEN 'late_arriving' THEN _pidx + _late <= {last} "
        f"WHEN 'negative_quantity' THEN {'_status = ' + q('completed') if has_status else 'FALSE'} "
        f"WHEN 'missing_customer_id' THEN {f[spec.customer_column] + ' IS NOT NULL' if spec.customer_column else 'FALSE'} "
        f"WHEN 'unknown_foreign_key' THEN {f[spec.fk[0]] + ' IS NOT NULL' if spec.fk else 'FALSE'} "
        # a newer version goes in a later file (customers: a later updated_at), so the last period has none
        f"WHEN 'newer_version' THEN {'_t < ' + str(plan.end_epoch - SECONDS_PER_DAY) + 'L' if spec.periods == 'customers' else f'_pidx < {last}'} "
        "ELSE TRUE END"
    )
    df = _add(df, _kind=_island("_raw IS NOT NULL", f"CASE WHEN {eligible} THEN _raw END"))

    # ---- in-place edits: (condition, column, new text, detail)
    edits: list[tuple[str, str, str, str]] = []

    def choose(kind: str, columns: tuple[str, ...], value: Callable[[str], str]) -> None:
        if kind not in kinds:
            return
        for i, c in enumerate(columns):
            sel = f"least(floor(_ub * {len(columns)}), {len(columns) - 1}) = {i}"
            val = value(c)
            edits.append((f"_kind = {q(kind)} AND {sel}", c, val, f"coalesce({val}, '')"))

    choose("na_value", spec.na_columns, lambda c: "'N/A'")
    choose("decimal_comma", spec.decimal_columns, lambda c: f"replace({f[c]}, '.', ',')")
    choose("empty_numeric", spec.empty_columns, lambda c: "''")
    if "out_of_range" in kinds:
        n = len(spec.out_of_range)
        for i, o in enumerate(spec.out_of_range):
            val = o.value(f, "_ua")
            edits.append((f"_kind = 'out_of_range' AND least(floor(_ub * {n}), {n - 1}) = {i}", o.column, val, val))
    if "negative_quantity" in kinds and spec.quantity_column:
        val = f"concat('-', {f[spec.quantity_column]})"
        edits.append(("_kind = 'negative_quantity'", spec.quantity_column, val, val))
    if "zero_price" in kinds and spec.price_column:
        edits.append(("_kind = 'zero_price'", spec.price_column, "'0.00'", "'0.00'"))
    if "missing_customer_id" in kinds and spec.customer_column:
        edits.append(("_kind = 'missing_customer_id'", spec.customer_column, "CAST(NULL AS STRING)", "''"))
    if "unknown_foreign_key" in kinds and spec.fk:
        val = spec.fk[1]("_ua")
        edits.append(("_kind = 'unknown_foreign_key'", spec.fk[0], val, val))
    if "timestamp_format" in kinds and spec.ts_column:
        values = (
            fmt_ts("_t", "yyyy-MM-dd'T'HH:mm:ss'Z'"),
            fmt_ts("_t", "dd/MM/yyyy HH:mm"),
            "CAST(_t AS STRING)",
            f"concat({fmt_ts('_t + 7200')}, '+02:00')",
        )
        n = len(TIMESTAMP_VARIANTS)
        for i, (name, val) in enumerate(zip(TIMESTAMP_VARIANTS, values, strict=True)):
            cond = f"_kind = 'timestamp_format' AND least(floor(_ub * {n}), {n - 1}) = {i}"
            edits.append((cond, spec.ts_column, val, q(name)))

    late_file = spec.file_name(spec.period_label(plan, "_t", "_late"), shards)
    in_place_detail = _chain([(c, d) for c, _, _, d in edits], "''")
    if "late_arriving" in kinds:
        in_place_detail = f"CASE WHEN _kind = 'late_arriving' THEN _clean_file ELSE {in_place_detail} END"
    # in-place: the edited fields (first island), then the line, file, column and detail (second)
    edited = {c: _chain([(cond, v) for cond, col, v, _ in edits if col == c], f[c]) for c in spec.columns}
    df = _add(df, _e=_island("_kind IS NOT NULL", "named_struct(" + ", ".join(
        f"{q(c)}, {expr}" for c, expr in edited.items()) + ")"))
    line = spec.line({c: f"_e.`{c}`" for c in spec.columns})

    # extra lines (built from the intact row)
    lines: list[tuple[str, str]] = [("_kind = 'duplicate_row'", "_clean_line")]
    details: list[tuple[str, str]] = []
    extra_file, extra_t, extra_column = "_clean_file", "_t", "''"
    if "newer_version" in kinds and spec.newer is not None:
        nv = spec.newer(f, plan)
        lines.append(("_kind = 'newer_version'", spec.line(nv.fields)))
        nv_file = spec.file_name(spec.period_label(plan, nv.t, nv.shift), shards)
        extra_file = f"CASE WHEN _kind = 'newer_version' THEN {nv_file} ELSE _clean_file END"
        extra_t = f"CASE WHEN _kind = 'newer_version' THEN {nv.t} ELSE _t END"
        extra_column = f"CASE WHEN _kind = 'newer_version' THEN {nv.column} ELSE '' END"
        details.append(("_kind = 'newer_version'", nv.detail))
    if "malformed_field_count" in kinds:
        fewer = "concat_ws(',', " + ", ".join(spec.field(f, c) for c in spec.columns[:-1]) + ")"
        lines.append(("_kind = 'malformed_field_count'",
                      f"CASE WHEN _ub < 0.5D THEN {fewer} ELSE concat(_clean_line, ',extra') END"))
        details.append(("_kind = 'malformed_field_count'",
                        "CASE WHEN _ub < 0.5D THEN 'missing_field' ELSE 'extra_field' END"))
    if "malformed_unclosed_quote" in kinds:
        parts = [spec.field(f, c) for c in spec.columns]
        parts[2] = f"concat('\"', coalesce({f[spec.columns[2]]}, ''))"
        lines.append(("_kind = 'malformed_unclosed_quote'", "concat_ws(',', " + ", ".join(parts) + ")"))
        details.append(("_kind = 'malformed_unclosed_quote'", "'unclosed_quote'"))
    if "malformed_json" in kinds:
        lines.append(("_kind = 'malformed_json'",
                      "substr(_clean_line, 1, length(_clean_line) - 1 - CAST(floor(_ub * 10) AS INT))"))
        details.append(("_kind = 'malformed_json'", "'truncated'"))
    is_extra = f"_kind IN ({', '.join(q(k) for k in EXTRA_KINDS)})"
    main_file = f"CASE WHEN _kind = 'late_arriving' THEN {late_file} ELSE _clean_file END"
    record = csv_line([
        q(src), "_kind", "_key",
        f"CASE WHEN {is_extra} THEN {extra_file} ELSE {main_file} END",
        f"CASE WHEN {is_extra} THEN {extra_column} ELSE {_chain([(c, q(col)) for c, col, _, _ in edits], chr(39) * 2)} END",
        f"CASE WHEN {is_extra} THEN 'extra' ELSE 'in_place' END",
        f"CASE WHEN {is_extra} THEN {_chain(details, chr(39) * 2)} ELSE {in_place_detail} END",
    ], checked=[False] * 6 + [True])
    result = (f"named_struct('line', CASE WHEN {is_extra} THEN _clean_line ELSE {line} END, 'file', {main_file}, "
              f"'x_line', {_chain(lines, 'CAST(NULL AS STRING)')}, 'x_file', {extra_file}, "
              f"'x_t', CAST({extra_t} AS BIGINT), 'record', {record})")
    df = _add(df, _d=_island("_kind IS NOT NULL", result))

    data = _struct(f"concat({prefix}, coalesce(_d.file, _clean_file))", "_t", "_v * 10",
                   "coalesce(_d.line, _clean_line)", 1, "_kind")
    extra = (f"CASE WHEN _d.x_line IS NOT NULL THEN "
             f"{_struct(f'concat({prefix}, _d.x_file)', '_d.x_t', '_v * 10 + 1', '_d.x_line', 1, '_kind')} END")
    dirt = (f"CASE WHEN _kind IS NOT NULL THEN "
            f"{_struct(q(f'_truth/dirt/{src}.csv'), '_t', '_v * 10', '_d.record', 2, '_kind')} END")
    # explode + filter rather than a filter() lambda, which would not be code-generated
    out = df.selectExpr(f"explode(array({data}, {extra}, {dirt})) AS s").filter("s IS NOT NULL")
    return out.selectExpr("s.*")


def header_rows(spec: SourceSpec, plan: Plan) -> list[tuple[str, int, int, str, int, str, int, None]]:
    """One header line per CSV file (JSON lines files have none)."""
    if spec.fmt != "csv":
        return []
    header = ",".join(spec.columns)
    return [(f"{spec.name}/{name}", 0, 0, "", 0, header, 0, None) for name in spec.file_names(plan)]


def unknown_customer(plan: Plan) -> Callable[[str], str]:
    """A customer id in the key format that is not in customers (numbers above ``customers``)."""

    def make(u: str) -> str:
        num = f"{plan.customers + 1} + least(floor({u} * {plan.customers}), {plan.customers - 1})"
        return f"concat('C', lpad(CAST({num} AS STRING), {plan.width('customer')}, '0'))"

    return make


def unknown_product(u: str) -> str:
    """A product id in the key format that is not in products (P90000..P99998)."""
    return f"concat('P', CAST(CAST(90000 + floor({u} * 9999) AS INT) AS STRING))"


def pick_text(values: tuple[str, ...], u: str) -> str:
    return f"element_at({str_array(values)}, CAST(least(floor({u} * {len(values)}), {len(values) - 1}) AS INT) + 1)"
