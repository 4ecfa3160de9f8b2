"""Expectation suites as code, one per table, registered in ``SUITES`` by table name.

A suite is a function of :class:`SuiteContext` (so row-count change and freshness can use the
previous version's size and the as-of date) returning Great Expectations 1.x expectations.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any

import great_expectations.expectations as gxe

from crm_spark.config import Settings


@dataclass(frozen=True)
class SuiteContext:
    settings: Settings
    previous_rows: int | None = None
    as_of: date | None = None


Suite = Callable[[SuiteContext], list[gxe.Expectation]]
SUITES: dict[str, Suite] = {}


def register(table: str) -> Callable[[Suite], Suite]:
    def wrap(fn: Suite) -> Suite:
        SUITES[table] = fn
        return fn

    return wrap


def keys(columns: Sequence[str]) -> list[gxe.Expectation]:
    """Key columns present, never null, and unique together."""
    out: list[gxe.Expectation] = [gxe.ExpectColumnValuesToNotBeNull(column=c) for c in columns]
    if len(columns) == 1:
        out.append(gxe.ExpectColumnValuesToBeUnique(column=columns[0]))
    else:
        out.append(gxe.ExpectCompoundColumnsToBeUnique(column_list=list(columns)))
    return out


def columns(names: Sequence[str]) -> list[gxe.Expectation]:
    """The table has exactly these columns (order free)."""
    return [gxe.ExpectTableColumnsToMatchSet(column_set=list(names), exact_match=True)]


def row_count_change(sc: SuiteContext) -> list[gxe.Expectation]:
    """Rows may not shrink by more than ``quality.max_row_drop`` versus the previous version."""
    if not sc.previous_rows:
        return [gxe.ExpectTableRowCountToBeBetween(min_value=0)]
    floor = int(sc.previous_rows * (1 - sc.settings.quality.max_row_drop))
    return [gxe.ExpectTableRowCountToBeBetween(min_value=floor)]


def freshness(column: str, sc: SuiteContext) -> list[gxe.Expectation]:
    """The newest ``column`` value is within ``quality.freshness_days`` of the as-of date."""
    if sc.as_of is None:
        return []
    oldest_ok = datetime.combine(sc.as_of - timedelta(days=sc.settings.quality.freshness_days), time.min)
    return [gxe.ExpectColumnMaxToBeBetween(column=column, min_value=oldest_ok)]


def between(column: str, low: Any = None, high: Any = None, *, mostly: float = 1.0) -> gxe.Expectation:
    return gxe.ExpectColumnValuesToBeBetween(column=column, min_value=low, max_value=high, mostly=mostly)


def in_set(column: str, values: Sequence[Any], *, mostly: float = 1.0) -> gxe.Expectation:
    return gxe.ExpectColumnValuesToBeInSet(column=column, value_set=list(values), mostly=mostly)


def not_null(*names: str) -> list[gxe.Expectation]:
    return [gxe.ExpectColumnValuesToNotBeNull(column=c) for c in names]
