"""Line building as SQL expressions: RFC-4180 CSV fields and JSON lines tokens.

Lines are built as strings (not by Spark's CSV/JSON writers) so that the dirt injector controls
exactly what each line looks like, including malformed ones. Arguments are column names or
cheap expressions (they are repeated inside ``CASE``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from crm_spark.generate._sql import q

_NUMBER = r"'^-?[0-9]+(\\.[0-9]+)?$'"


def csv_field(expr: str, *, check: bool = True) -> str:
    """A CSV field: empty for null; quoted (quotes doubled) when it holds a comma, quote or line break.

    ``check=False`` is for values that can never need quoting (ids, codes, timestamps).
    """
    if not check:
        return f"coalesce({expr}, '')"
    special = " OR ".join(f"instr({expr}, {ch}) > 0" for ch in ("','", "'\"'", "'\\n'", "'\\r'"))
    return (f"CASE WHEN {expr} IS NULL THEN '' WHEN {special} "
            f"THEN concat('\"', replace({expr}, '\"', '\"\"'), '\"') ELSE {expr} END")


def csv_line(exprs: Iterable[str], checked: Iterable[bool] | None = None) -> str:
    exprs = list(exprs)
    flags = [True] * len(exprs) if checked is None else list(checked)
    return "concat_ws(',', " + ", ".join(csv_field(e, check=c) for e, c in zip(exprs, flags, strict=True)) + ")"


def json_token(expr: str, *, numeric: bool = False, text: bool = False) -> str:
    """``null``, a bare number (numeric columns whose text is a number), or a JSON string.

    Only ``text`` values are escaped; the others hold ids, codes and timestamps.
    """
    escaped = expr
    if text:
        escaped = (f"replace(replace(replace(replace({expr}, '\\\\', '\\\\\\\\'), '\"', '\\\\\"'), "
                   f"'\\n', '\\\\n'), '\\r', '\\\\r')")
    quoted = f"concat('\"', {escaped}, '\"')"
    if numeric:
        return f"CASE WHEN {expr} IS NULL THEN 'null' WHEN {expr} RLIKE {_NUMBER} THEN {expr} ELSE {quoted} END"
    return f"CASE WHEN {expr} IS NULL THEN 'null' ELSE {quoted} END"


def json_line(fields: Mapping[str, str], numeric: frozenset[str], text: frozenset[str] = frozenset()) -> str:
    parts = [f"'\"{name}\":', {json_token(expr, numeric=name in numeric, text=name in text)}"
             for name, expr in fields.items()]
    return "concat('{', " + ", ',', ".join(parts) + ", '}')"


def fmt_ts(epoch: str, pattern: str = "yyyy-MM-dd HH:mm:ss") -> str:
    """Epoch seconds as text in the session time zone (the generator pins it to UTC)."""
    return f"date_format(timestamp_seconds({epoch}), {q(pattern)})"


def fmt_decimal(expr: str, scale: int = 2) -> str:
    return f"CAST(CAST({expr} AS DECIMAL(18,{scale})) AS STRING)"
