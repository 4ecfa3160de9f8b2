"""Stages of SPEC section 5, in pipeline order, and the context they run in.

A stage is ``run(ctx: StageContext) -> StageResult``: it reads tables, transforms with pure
functions, passes its gate, writes tables and returns what it wrote. Stages are registered by
module path and imported on first use, so ``crm-spark --help`` starts no Spark.
"""

from __future__ import annotations

import importlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from datetime import date
from typing import TYPE_CHECKING, Any

from pyspark.sql import SparkSession

from crm_spark.config import Settings
from crm_spark.errors import ConfigError, StageNotBuiltError
from crm_spark.lake import Lake, WriteResult

if TYPE_CHECKING:
    from crm_spark.quality import Gate
    from crm_spark.tracking import Tracker

log = logging.getLogger(__name__)


@dataclass
class StageContext:
    """What a stage may touch: settings, the session, the lake, the as-of date, and (built on
    first use) the data-quality gate and the MLflow tracker."""

    settings: Settings
    spark: SparkSession
    lake: Lake
    as_of: date | None = None

    @cached_property
    def gate(self) -> Gate:
        from crm_spark.quality import Gate

        return Gate(self.spark, self.settings)

    @cached_property
    def tracker(self) -> Tracker:
        from crm_spark.tracking import Tracker

        return Tracker(self.settings)


@dataclass(frozen=True)
class StageResult:
    stage: str
    writes: tuple[WriteResult, ...] = ()
    skipped: str | None = None
    notes: tuple[str, ...] = ()
    seconds: float = 0.0
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def rows(self) -> int:
        return sum(w.rows for w in self.writes)


@dataclass(frozen=True)
class StageSpec:
    name: str
    summary: str
    module: str | None  # None: in the contract, not built yet

    @property
    def built(self) -> bool:
        return self.module is not None

    def load(self, entry: str = "run") -> Callable[[StageContext], StageResult]:
        """The stage's ``run`` (or another entry point of its module, e.g. churn's ``score``)."""
        if self.module is None:
            raise StageNotBuiltError(
                f"stage '{self.name}' is not built yet in this version "
                f"(built: {', '.join(s.name for s in STAGES if s.built) or 'none'})"
            )
        return getattr(importlib.import_module(self.module), entry)  # type: ignore[no-any-return]


STAGES: tuple[StageSpec, ...] = (
    StageSpec("ingest", "raw files -> bronze tables, new files only", "crm_spark.stages.ingest"),
    StageSpec("refine", "bronze -> silver + quarantine: types, dedupe, PII, quality gates", "crm_spark.stages.refine"),
    StageSpec("features", "silver -> gold.customer_features as of a date (RFM, behaviour)", "crm_spark.stages.features"),
    StageSpec("segment", "KMeans customer segments and profiles, tracked in MLflow", "crm_spark.stages.segment"),
    StageSpec("basket", "FPGrowth itemsets, rules and cross-sell suggestions", "crm_spark.stages.basket"),
    StageSpec("churn", "churn labels, model, champion/challenger registry, scores", "crm_spark.stages.churn"),
    StageSpec("recommend", "ALS product recommendations", None),
    StageSpec("clv", "customer lifetime value", None),
    StageSpec("report", "self-contained HTML report of the run", None),
)
STAGE_NAMES = tuple(s.name for s in STAGES)


def stage(name: str) -> StageSpec:
    for spec in STAGES:
        if spec.name == name:
            return spec
    raise KeyError(name)


def run_stage(ctx: StageContext, name: str, entry: str = "run") -> StageResult:
    """Run one stage (or one of its other entry points), timed; a not-built stage raises StageNotBuiltError."""
    fn = stage(name).load(entry)
    started = time.perf_counter()
    log.info("[%s] started", name)
    result = fn(ctx)
    seconds = time.perf_counter() - started
    result = StageResult(result.stage, result.writes, result.skipped, result.notes, seconds, result.details)
    if result.skipped:
        log.info("[%s] skipped: %s", name, result.skipped)
    for w in result.writes:
        log.info("[%s] %s: %s rows %s (version %d)", name, w.table, f"{w.rows:,}", w.operation.lower(), w.version)
    log.info("[%s] done in %.1fs", name, seconds)
    return result


def plan(names: Sequence[str] | None) -> list[StageSpec]:
    """The stages ``run`` executes: the given subset (in pipeline order) or every built stage."""
    if not names:
        return [s for s in STAGES if s.built]
    unknown = [n for n in names if n not in STAGE_NAMES]
    if unknown:
        raise ConfigError(f"unknown stages {', '.join(unknown)}; stages are {', '.join(STAGE_NAMES)}")
    return [s for s in STAGES if s.name in names]
