"""The vocabulary of table-level checks a contract declares (SPEC section 6), as plain data.

A contract says *what* must hold (``Unique``, ``Between``, ``Rule``, ...); the gate
(:mod:`crm_spark.quality`) decides *how* to check it with Great Expectations. That split keeps
contracts free of GX imports and lets the gate combine every row rule of a table into one
query: one Spark job however many columns and rules a table has.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from crm_spark.config import Settings


@dataclass(frozen=True)
class CheckContext:
    """What a table's checks may depend on besides the frame itself."""

    settings: Settings
    previous_rows: int | None = None  # rows the write replaces (or the latest earlier partition's)
    as_of: date | None = None
    batch_rows: int | None = None  # rows mapped from bronze in this batch (refine's reject-share check)


# -- table-level checks: each is one expectation ------------------------------------------------
@dataclass(frozen=True)
class Columns:
    """The frame has exactly these columns (order free)."""

    names: tuple[str, ...]


@dataclass(frozen=True)
class Unique:
    """These columns are unique together (nulls in a single column are ignored)."""

    columns: tuple[str, ...]


@dataclass(frozen=True)
class RowCount:
    low: int | None = None
    high: int | None = None
    why: str | None = None  # said when it fails


@dataclass(frozen=True)
class ColumnSum:
    column: str
    low: float | None = None
    high: float | None = None


@dataclass(frozen=True)
class ColumnMin:
    """The smallest value of ``column`` lies in [low, high] (freshness: the newest activity is
    recent), over the whole frame or, with ``per``, within each group of those columns (each date
    of a backfill, so one fresh date cannot let a stale one pass)."""

    column: str
    low: Any = None
    high: Any = None
    why: str | None = None
    per: tuple[str, ...] = ()


# -- row rules: every one of a table is checked in one query ------------------------------------
@dataclass(frozen=True)
class Rule:
    """Every row meets a Spark SQL condition (a null result breaks it)."""

    sql: str


def not_null(*columns: str) -> list[Rule]:
    return [Rule(f"`{c}` IS NOT NULL") for c in columns]


def between(column: str, low: Any = None, high: Any = None, *, low_inclusive: bool = True) -> Rule:
    """Non-null values of ``column`` lie in the range (null is not this rule's business)."""
    parts = []
    if low is not None:
        parts.append(f"`{column}` {'>=' if low_inclusive else '>'} {_sql(low)}")
    if high is not None:
        parts.append(f"`{column}` <= {_sql(high)}")
    return Rule(f"`{column}` IS NULL OR ({' AND '.join(parts) or 'true'})")


def in_set(column: str, values: Sequence[Any]) -> Rule:
    """Non-null values of ``column`` are one of ``values``."""
    return Rule(f"`{column}` IS NULL OR `{column}` IN ({', '.join(_sql(v) for v in values)})")


def keys(columns: Sequence[str]) -> list[Any]:
    """Key columns never null and unique together."""
    return [*not_null(*columns), Unique(tuple(columns))]


def row_count_change(cc: CheckContext) -> list[RowCount]:
    """Rows may not shrink by more than ``quality.max_row_drop`` versus what the write replaces."""
    if not cc.previous_rows:
        return []
    floor = int(cc.previous_rows * (1 - cc.settings.quality.max_row_drop))
    return [RowCount(low=floor, why=f"at most {cc.settings.quality.max_row_drop:.0%} fewer rows than the {cc.previous_rows:,} replaced")]


def freshness(days_column: str, cc: CheckContext, *, per: tuple[str, ...] = ()) -> list[ColumnMin]:
    """The freshest row (of each ``per`` group: each as-of date) is at most ``quality.freshness_days``
    old at the as-of date (``days_column`` counts the days from a row's newest activity to the as-of
    date): features as of a date long after the data ends describe nobody's present."""
    if cc.as_of is None and not per:  # a backfill has no single as-of date: it needs ``per``
        return []
    days = cc.settings.quality.freshness_days
    return [ColumnMin(days_column, high=days, per=per,
                      why=f"the newest activity at most {days} days before the as-of date "
                          "(quality.freshness_days; is --as-of inside the data?)")]


Check = Columns | Unique | RowCount | ColumnSum | ColumnMin | Rule
Checks = Callable[[Any, CheckContext], list[Check]]  # (the Table, context) -> checks


def _sql(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, datetime):
        return f"TIMESTAMP '{value:%Y-%m-%d %H:%M:%S}'"
    if isinstance(value, date):
        return f"DATE '{value.isoformat()}'"
    return "'" + str(value).replace("'", "''") + "'"
