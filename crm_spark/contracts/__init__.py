"""Table contracts: one declaration per table, holding everything that describes it.

A :class:`Table` carries the table's DDL, keys, partitioning, how it is written, its row rules
(silver: how each raw column parses and what it must satisfy) and its table-level checks.
Stages conform frames to it, the gate checks them against it, refine parses with it, and the
config is validated against its column names. Nothing else restates a table's columns.

Contracts are plain data (no Spark session, no Great Expectations import): the gate turns
:mod:`crm_spark.contracts.checks` into expectations.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Literal

from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import StructType

from crm_spark.contracts.checks import Check, CheckContext, Checks

__all__ = ["Field", "Table", "TABLES", "table", "contract_for", "register", "check_config_columns", "Check", "CheckContext"]


@dataclass(frozen=True)
class Field:
    """One raw column of a silver table: how it parses and which row rules it must pass."""

    name: str
    kind: str = "string"  # string | int | decimal(p,s) | double | timestamp | date | bool
    required: bool = False
    low: float | None = None
    high: float | None = None
    low_inclusive: bool = True
    allowed: tuple[str, ...] | None = None
    case: str | None = None  # lower | upper


WriteMode = Literal["append", "merge", "overwrite"]


@dataclass(frozen=True)
class Table:
    """A table's contract. ``name`` may be a pattern (``bronze.*``) for tables whose columns are
    the source's own."""

    name: str
    ddl: str | None = None
    keys: tuple[str, ...] = ()
    partition_by: tuple[str, ...] = ()
    write: WriteMode = "overwrite"  # overwrite: by partition when partitioned
    immutable: bool = False  # merge: rows never change once written (events), so only new keys are inserted
    fields: tuple[Field, ...] = ()  # silver: the raw columns a source maps onto, with their rules
    refs: Mapping[str, str] = field(default_factory=dict)  # column -> silver table whose key it references
    version_col: str | None = None  # newest value wins between versions of a key
    checks: Checks | None = None  # table-level checks (None: not gated)
    date_column: str | None = None  # the column the default as-of date comes from
    doc: str = ""

    @cached_property
    def schema(self) -> StructType:
        if self.ddl is None:
            raise ValueError(f"{self.name} has no fixed schema")
        return StructType.fromDDL(self.ddl)

    @cached_property
    def columns(self) -> tuple[str, ...]:
        """Column names in order, parsed without a SparkSession."""
        if self.ddl is None:
            return ()
        return tuple(re.findall(r"(?:^|,)\s*(\w+)\s", self.ddl))

    @property
    def raw_columns(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.fields)

    def conform(self, df: DataFrame) -> DataFrame:
        """Exactly the contract's columns, in its order, cast to its types."""
        return df.select([F.col(f.name).cast(f.dataType).alias(f.name) for f in self.schema.fields])

    def check_list(self, cc: CheckContext) -> list[Check]:
        return [] if self.checks is None else self.checks(self, cc)


TABLES: dict[str, Table] = {}


def register(*tables: Table) -> None:
    for t in tables:
        if t.name in TABLES:
            raise ValueError(f"table {t.name} is declared twice")
        TABLES[t.name] = t


def contract_for(name: str) -> Table | None:
    """The contract of a table (exact name first, then a pattern), or None."""
    if name in TABLES:
        return TABLES[name]
    for pattern, t in TABLES.items():
        if "*" in pattern and fnmatch.fnmatchcase(name, pattern):
            return t
    return None


def table(name: str) -> Table:
    found = contract_for(name)
    if found is None or found.ddl is None:
        raise KeyError(f"no contract with a schema for {name}")
    return found


def check_config_columns(settings: Any) -> list[str]:
    """Config keys that name a column no contract has: one message per bad key (empty: all good).

    ``refine.missing`` / ``refine.outliers`` keys are ``<table>.<column>`` of a silver table (a
    raw column for defaults; a typed numeric column for outliers); ``segment.features`` and
    ``segment.log_features`` are numeric columns of ``gold.customer_features``.
    """
    problems: list[str] = []
    for section, kind in (("missing", "raw"), ("outliers", "numeric")):
        for key in getattr(settings.refine, section):
            target, _, column = key.partition(".")
            contract = TABLES.get(f"silver.{target}")
            if contract is None:
                problems.append(f"'refine.{section}.{key}': no silver table '{target}' (tables: "
                                f"{', '.join(sorted(n.split('.', 1)[1] for n in TABLES if n.startswith('silver.')))})")
                continue
            allowed = contract.raw_columns if kind == "raw" else _numeric(contract)
            if column not in allowed:
                problems.append(f"'refine.{section}.{key}': silver.{target} has no {kind} column '{column}' "
                                f"(choose from {', '.join(allowed)})")
    numeric = _numeric(TABLES["gold.customer_features"])
    for key in ("features", "log_features"):
        wrong = [c for c in getattr(settings.segment, key) if c not in numeric]
        if wrong:
            problems.append(f"'segment.{key}': {', '.join(wrong)} not numeric columns of gold.customer_features "
                            f"(choose from {', '.join(numeric)})")
    return problems


_NUMERIC = re.compile(r"^(tinyint|smallint|int|integer|bigint|long|float|double|decimal.*)$")


def _numeric(t: Table) -> tuple[str, ...]:
    types = dict(re.findall(r"(?:^|,)\s*(\w+)\s+([\w(),]+?)(?=,\s*\w+\s|$)", t.ddl or ""))
    return tuple(c for c in t.columns if _NUMERIC.match(types.get(c, "")))


# The declarations live in two modules that import the classes above: registered on import.
from crm_spark.contracts import gold, silver  # noqa: E402, F401
