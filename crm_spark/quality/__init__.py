"""Table-level data-quality gates with Great Expectations 1.x (SPEC section 6).

Row-level rules (bad values, unknown keys) are native Spark expressions in the refine transforms
and route rows to quarantine. What runs here are the table-level expectations of the suite
registered for a table in :mod:`crm_spark.quality.suites`: schema, not-null and unique keys,
ranges, value sets, row-count change versus the previous version, freshness. A failed
expectation raises :class:`DataQualityError` naming the table and the expectations, before
anything is published.

Results persist in a file-mode GX context under ``<lake>/_quality/`` (validation results JSON
and Data Docs HTML at ``_quality/gx/uncommitted/data_docs/local_site/index.html``). For a lake on
remote storage the context lives in ``quality.local_dir``.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")

import great_expectations as gx  # noqa: E402
from great_expectations.checkpoint import UpdateDataDocsAction  # noqa: E402
from great_expectations.data_context.types.base import ProgressBarsConfig  # noqa: E402
from pyspark.sql import DataFrame, SparkSession  # noqa: E402

from crm_spark.config import Settings  # noqa: E402
from crm_spark.errors import DataQualityError  # noqa: E402
from crm_spark.quality.suites import SUITES, SuiteContext  # noqa: E402

log = logging.getLogger(__name__)

__all__ = ["Gate", "QualityReport", "ExpectationOutcome", "SuiteContext", "quality_dir"]


@dataclass(frozen=True)
class ExpectationOutcome:
    expectation: str
    column: str | None
    success: bool
    observed: Any = None
    unexpected_count: int | None = None

    def describe(self) -> str:
        target = f"({self.column})" if self.column else ""
        detail = []
        if self.observed is not None:
            detail.append(f"observed {self.observed}")
        if self.unexpected_count:
            detail.append(f"{self.unexpected_count} unexpected")
        return f"{self.expectation}{target}" + (f" [{', '.join(detail)}]" if detail else "")


@dataclass(frozen=True)
class QualityReport:
    table: str
    success: bool
    outcomes: tuple[ExpectationOutcome, ...] = ()
    seconds: float = 0.0
    docs: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def failed(self) -> list[ExpectationOutcome]:
        return [o for o in self.outcomes if not o.success]

    def summary(self) -> dict[str, Any]:
        """Flat numbers for MLflow and the report."""
        return {
            "table": self.table,
            "success": self.success,
            "expectations": len(self.outcomes),
            "failed": len(self.failed),
            "seconds": round(self.seconds, 2),
            **self.extra,
        }


def quality_dir(settings: Settings) -> Path:
    """Where the GX context (results and Data Docs) lives: ``<lake>/_quality`` for a local lake."""
    lake = settings.paths.lake
    if lake.startswith("file://"):
        lake = lake[len("file://") :]
    if "://" in lake:
        return Path(settings.quality.local_dir).resolve()
    return Path(lake) / "_quality"


class Gate:
    """Runs table suites through one file-mode GX context."""

    def __init__(self, spark: SparkSession, settings: Settings) -> None:
        self.spark = spark
        self.settings = settings
        self.root = quality_dir(settings)
        self.root.mkdir(parents=True, exist_ok=True)
        self._context = gx.get_context(mode="file", project_root_dir=str(self.root))
        self._context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
        self._datasource = self._context.data_sources.add_or_update_spark(name="crm_spark")

    @property
    def docs_index(self) -> Path:
        return self.root / "gx" / "uncommitted" / "data_docs" / "local_site" / "index.html"

    def check(
        self,
        table: str,
        df: DataFrame,
        *,
        previous_rows: int | None = None,
        as_of: Any = None,
        batch_rows: int | None = None,
        raise_on_failure: bool = True,
    ) -> QualityReport:
        """Validate ``df`` against the suite of ``table``; raise DataQualityError on failure.

        ``previous_rows`` (the row count of the table's previous version) enables the
        row-count-change expectation; ``as_of`` the freshness one. Cache ``df`` first if it
        is expensive: each expectation is a Spark aggregation over it.
        """
        if table not in SUITES:
            raise DataQualityError(f"no quality suite is registered for {table} (crm_spark/quality/suites.py)")
        started = time.perf_counter()
        expectations = SUITES[table](SuiteContext(settings=self.settings, previous_rows=previous_rows, as_of=as_of, batch_rows=batch_rows))
        ctx = self._context
        try:
            asset = self._datasource.get_asset(table)
        except LookupError:
            asset = self._datasource.add_dataframe_asset(name=table)
        try:
            batch = asset.get_batch_definition("whole")
        except (KeyError, LookupError):
            batch = asset.add_batch_definition_whole_dataframe("whole")
        suite = ctx.suites.add_or_update(gx.ExpectationSuite(name=table, expectations=expectations))
        validation = ctx.validation_definitions.add_or_update(gx.ValidationDefinition(name=table, data=batch, suite=suite))
        checkpoint = ctx.checkpoints.add_or_update(
            gx.Checkpoint(
                name=table,
                validation_definitions=[validation],
                actions=[UpdateDataDocsAction(name="data_docs")],
                result_format="SUMMARY",
            )
        )
        result = checkpoint.run(batch_parameters={"dataframe": df})
        outcomes = []
        for run in result.run_results.values():
            for r in run.results:
                kwargs = r.expectation_config.kwargs
                column = kwargs.get("column") or (",".join(kwargs["column_list"]) if kwargs.get("column_list") else None)
                outcomes.append(
                    ExpectationOutcome(
                        expectation=r.expectation_config.type,
                        column=column,
                        success=bool(r.success),
                        observed=_plain(r.result.get("observed_value")),
                        unexpected_count=r.result.get("unexpected_count"),
                    )
                )
        report = QualityReport(
            table=table,
            success=bool(result.success),
            outcomes=tuple(outcomes),
            seconds=time.perf_counter() - started,
            docs=str(self.docs_index),
        )
        log.info(
            "quality %s: %d/%d expectations passed in %.1fs",
            table, len(outcomes) - len(report.failed), len(outcomes), report.seconds,
        )
        if not report.success and raise_on_failure:
            failed = "; ".join(o.describe() for o in report.failed)
            raise DataQualityError(f"{table} failed {len(report.failed)} expectation(s): {failed} (Data Docs: {report.docs})")
        return report


def _plain(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)
