"""The stage kit: each stage of SPEC section 5 declared once, and the runner that composes them.

A :class:`StageSpec` declares a stage's inputs, outputs, CLI options and entry points; from it
come the run order, the skip messages, the CLI subcommands, the ``jobs/`` entry points, the
Airflow DAG's tasks and the README's stage table. A stage module holds only what is particular
to it: ``run(ctx, as_of)`` (``run(ctx)`` for the undated ingest and refine) reads through
:meth:`StageContext.read`, transforms with pure functions and publishes through
:meth:`StageContext.publish` (conform to the contract -> gate -> write), which records every
input version, write and quality report for the result.

The runner (:func:`run_stage`) checks the declared inputs exist (else the stage is skipped with
the table and the stage that makes it), resolves the as-of date once per run from table
metadata (the Delta log: partition values and file statistics, no scan), computes partitions a
stage needs that are missing with the producing stage's backfill entry, and times the stage.
Stage modules are imported on first use, so ``crm-spark --help`` starts no Spark.
"""

from __future__ import annotations

import fnmatch
import functools
import hashlib
import importlib
import json
import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import date
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pyspark.sql import DataFrame, SparkSession

from crm_spark.config import Settings
from crm_spark.errors import ConfigError, LakeError, SourceError, StageNotBuiltError
from crm_spark.lake import Lake, Txn, WriteResult
from crm_spark.session import temporary_conf

if TYPE_CHECKING:
    from crm_spark.quality import Gate, QualityReport
    from crm_spark.tracking import Tracker

log = logging.getLogger(__name__)

JOB_GROUP_PREFIX = "crm-spark."  # + the stage name: the job group of every Spark job a stage launches

Inputs = Callable[[Settings], Sequence[str]]


@dataclass(frozen=True)
class Option:
    """A command-line flag of one stage; with ``entry`` it runs that module function instead of ``run``."""

    flag: str
    help: str
    entry: str | None = None

    @property
    def dest(self) -> str:
        return self.flag.lstrip("-").replace("-", "_")


@dataclass(frozen=True)
class StageSpec:
    """One stage, declared once.

    ``inputs`` are every table the stage may read (patterns allowed: ``bronze.*``);
    ``required`` says, for a configuration, which of them must exist (default: all that are not
    patterns); ``outputs`` the tables it writes. ``as_of_from`` lists the tables whose date
    column (from their contract) gives the default as-of date, first existing wins. ``needs``
    names a module function ``(settings, as_of, entry) -> {table: [dates]}`` of partitions that
    must exist before the stage runs; ``backfill`` a module function ``(ctx, dates)`` that
    computes given dates of the stage's outputs.
    """

    name: str
    summary: str
    module: str | None  # None: in the contract, not built yet
    inputs: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()
    required: Inputs | None = None
    dated: bool = True
    as_of_from: tuple[str, ...] = ()
    options: tuple[Option, ...] = ()
    needs: str | None = None
    backfill: str | None = None
    skip_unchanged: bool = False  # its run is skipped when inputs, settings and as-of date are its last run's
    tracked: bool = False  # it logs an MLflow run (a model stage)
    imports: tuple[str, ...] = ()  # modules it needs besides PySpark, imported while the JVM starts

    @property
    def built(self) -> bool:
        return self.module is not None

    def required_inputs(self, settings: Settings) -> tuple[str, ...]:
        if self.required is not None:
            return tuple(self.required(settings))
        return tuple(t for t in self.inputs if "*" not in t)

    def writes(self, table: str) -> bool:
        return any(fnmatch.fnmatchcase(table, pattern) for pattern in self.outputs)

    def load(self, entry: str = "run") -> Callable[..., StageResult]:
        """The stage's ``run`` (or another entry point of its module, e.g. churn's ``score``)."""
        if self.module is None:
            raise StageNotBuiltError(
                f"stage '{self.name}' is not built yet in this version "
                f"(built: {', '.join(s.name for s in STAGES if s.built) or 'none'})"
            )
        return getattr(importlib.import_module(self.module), entry)  # type: ignore[no-any-return]


@dataclass(frozen=True)
class StageResult:
    """What one stage did. The runner fills ``writes``, ``quality``, ``inputs`` and ``seconds``
    from what the stage published and read; the stage adds its numbers and notes.

    ``metrics`` are flat numbers (model quality, counts; a baseline's under ``baseline.<name>``)
    shown in the summary and the report; ``outcome`` is the stage's own typed record.
    """

    stage: str
    as_of: date | None = None
    writes: tuple[WriteResult, ...] = ()
    quality: tuple[QualityReport, ...] = ()
    inputs: Mapping[str, int] = field(default_factory=dict)
    metrics: Mapping[str, float] = field(default_factory=dict)
    mlflow_run_id: str | None = None
    model_version: int | None = None
    notes: tuple[str, ...] = ()
    skipped: str | None = None
    seconds: float = 0.0
    outcome: Any = None
    unchanged: Mapping[str, int] | None = None  # not run: its tables (and versions) are its last run's, on the same inputs

    @property
    def rows(self) -> int:
        return sum(w.rows for w in self.writes)


@dataclass
class StageContext:
    """What a stage may touch: settings, the session, the lake, the requested as-of date, and
    (built on first use) the data-quality gate and the MLflow tracker. One context serves a run."""

    settings: Settings
    spark: SparkSession
    lake: Lake
    as_of: date | None = None  # --as-of; None: resolved once per run from the data
    resolved_as_of: date | None = None
    _reads: dict[str, int] = field(default_factory=dict)
    _pins: dict[str, int] = field(default_factory=dict)
    _writes: list[WriteResult] = field(default_factory=list)
    _quality: list[Any] = field(default_factory=list)
    history: list[StageResult] = field(default_factory=list)  # the results of this run's stages so far, in order
    force: bool = False  # run stages even when nothing they read or are configured by changed (--force)
    _token: str | None = None  # the running stage's fingerprint: the app id of its commits (see _fingerprint)

    @cached_property
    def gate(self) -> Gate:
        from crm_spark.quality import Gate

        return Gate(self.spark, self.settings)

    @cached_property
    def tracker(self) -> Tracker:
        from crm_spark.tracking import Tracker

        return Tracker(self.settings)

    # -- reads ------------------------------------------------------------------------------
    def exists(self, table: str) -> bool:
        return self.lake.exists(table)

    def read(self, table: str, *, partition: Mapping[str, Any] | None = None) -> DataFrame:
        """``table`` at the version this stage pinned on its first read (recorded as an input).

        A table the stage publishes to is read again at its new version afterwards.
        """
        if table not in self._pins:
            self._pins[table] = self.lake.version(table)
            self._reads.setdefault(table, self._pins[table])
        return self.lake.read(table, version=self._pins[table], partition=partition)

    def input_versions(self) -> dict[str, int]:
        return dict(self._reads)

    # -- the one publish path ----------------------------------------------------------------
    def publish(
        self,
        table: str,
        df: DataFrame,
        *,
        partition: Mapping[str, Any] | None = None,
        txn: Any = None,
        batch_rows: int | None = None,
        evolve: bool = False,
    ) -> WriteResult:
        """Conform ``df`` to the table's contract, gate it, write it as the contract says.

        Overwrites replace ``partition`` (or the whole table); merges upsert by the contract's
        keys; appends add. The row-count-change check compares with what the write replaces.
        """
        from crm_spark.contracts import contract_for

        contract = contract_for(table)
        if contract is None:
            raise ConfigError(f"no contract declares {table} (crm_spark/contracts)")
        if contract.ddl is not None:
            df = contract.conform(df)
        report = None
        if contract.checks is not None:
            previous = self.lake.previous_rows(table, partition) if contract.write == "overwrite" else None
            report = self.gate.check(table, df, previous_rows=previous, as_of=self.resolved_as_of, batch_rows=batch_rows)
            self._quality.append(report)
        if txn is None and self._token is not None:
            # The commit this will be: the runner finds it again as the table's latest version.
            txn = Txn(self._token, self.lake.version(table) + 1 if self.lake.exists(table) else 0)
        if contract.write == "merge":
            # A passed gate that checked the keys' uniqueness spares the lake its own check (a Spark job).
            verified = report is not None and report.verified_unique(contract.keys)
            write = self.lake.merge(table, df, keys=contract.keys, partition_by=contract.partition_by, txn=txn,
                                    insert_only=contract.immutable, keys_verified=verified)
        elif contract.write == "append":
            write = self.lake.append(table, df, partition_by=contract.partition_by, txn=txn, evolve=evolve)
        else:
            write = self.lake.overwrite(table, df, partition=partition, partition_by=contract.partition_by, txn=txn)
        self._writes.append(write)
        self._pins.pop(table, None)
        return write

    def quality_summary(self) -> dict[str, Any]:
        """The gate results of this stage so far, flat (``<table>.<field>``), for MLflow."""
        return {f"{r.table}.{k}": v for r in self._quality for k, v in r.summary().items() if k != "table"}

    def written_rows(self) -> dict[str, float]:
        """Rows added by each write of this stage so far (``rows.<table>``), for MLflow."""
        return {f"rows.{w.table}": float(w.rows) for w in self._writes}

    def _begin(self) -> None:
        self._reads, self._pins, self._writes, self._quality = {}, {}, [], []
        self._token = None


# -- the declarations -----------------------------------------------------------------------------
def _basket_inputs(settings: Settings) -> list[str]:
    return ["silver.orders", "silver.order_items", *(["silver.products"] if settings.basket.item_level == "category" else [])]


def _churn_inputs(settings: Settings) -> list[str]:
    return ["silver.orders" if settings.churn.label_source == "computed" else "silver.churn_labels"]


def _features_inputs(settings: Settings) -> list[str]:
    """Orders when a source feeds them; else (a customer table with attributes) the customers."""
    return ["silver.orders" if settings.feeding("orders") else "silver.customers"]


# What the stages import besides PySpark, worth importing while the JVM starts (see
# session.build_session): Great Expectations for the gates (8-10 s on a slow 2-core machine), MLflow
# and matplotlib for a model stage's run and figures (3-4 s together). Bronze has no gates: ingest needs neither.
GATES = ("crm_spark.quality",)
TRACKING = ("mlflow", "matplotlib.figure")
_MODEL = {"tracked": True, "imports": (*GATES, *TRACKING)}

_SILVER_OPTIONAL = ("silver.customers", "silver.order_items", "silver.products", "silver.web_events",
                    "silver.social_interactions", "silver.feedback", "silver.order_status_history")

STAGES: tuple[StageSpec, ...] = (
    StageSpec("ingest", "raw files -> bronze tables, new files only", "crm_spark.stages.ingest",
              outputs=("bronze.*", "quarantine.rejected_files"), dated=False),
    StageSpec("refine", "bronze -> silver + quarantine: types, dedupe, PII, quality gates", "crm_spark.stages.refine",
              inputs=("bronze.*", "silver.*", "quarantine.*"), outputs=("silver.*", "quarantine.*"), dated=False,
              imports=GATES),
    StageSpec("features", "silver -> gold.customer_features as of a date (RFM, behaviour)", "crm_spark.stages.features",
              inputs=("silver.orders", *_SILVER_OPTIONAL), outputs=("gold.customer_features",),
              required=_features_inputs, as_of_from=("silver.orders", "silver.customer_attributes"),
              backfill="run_dates", skip_unchanged=True, imports=GATES),
    StageSpec("segment", "KMeans customer segments and profiles, tracked in MLflow", "crm_spark.stages.segment",
              inputs=("gold.customer_features", "silver.customer_attributes"),
              outputs=("gold.customer_segments", "gold.segment_profiles"), required=lambda s: ["gold.customer_features"],
              as_of_from=("gold.customer_features",), skip_unchanged=True, **_MODEL),
    StageSpec("basket", "FPGrowth itemsets, rules and cross-sell suggestions", "crm_spark.stages.basket",
              inputs=("silver.orders", "silver.order_items", "silver.products"),
              outputs=("gold.basket_itemsets", "gold.basket_rules", "gold.cross_sell"),
              required=_basket_inputs, as_of_from=("silver.orders",), skip_unchanged=True, **_MODEL),
    StageSpec("churn", "churn labels, model, champion/challenger registry, scores", "crm_spark.stages.churn",
              inputs=("gold.customer_features", "silver.orders", "silver.order_items", "silver.churn_labels",
                      "silver.customer_attributes"),
              outputs=("gold.churn_training", "gold.churn_scores"), required=_churn_inputs,
              as_of_from=("gold.customer_features",), needs="needed_partitions", skip_unchanged=True,
              options=(Option("--score", "only score --as-of with the registered champion model (no training)",
                              entry="score"),), **_MODEL),
    StageSpec("recommend", "ALS product recommendations vs popularity and co-occurrence baselines",
              "crm_spark.stages.recommend",
              inputs=("silver.orders", "silver.order_items", "silver.web_events", "silver.products", "silver.customers"),
              outputs=("gold.recommendations",), required=lambda s: ["silver.orders", "silver.order_items"],
              as_of_from=("silver.orders",), skip_unchanged=True, **_MODEL),
    StageSpec("clv", "customer lifetime value: predicted spend over a horizon vs naive and BG/NBD baselines",
              "crm_spark.stages.clv", inputs=("gold.customer_features", "silver.orders", "silver.order_items"),
              outputs=("gold.clv",), as_of_from=("gold.customer_features",), needs="needed_partitions",
              skip_unchanged=True, **_MODEL),
    StageSpec("report", "self-contained HTML report of the run: data, quality, every model beside its baselines",
              "crm_spark.stages.report", inputs=("bronze.*", "silver.*", "quarantine.*", "gold.*"), outputs=(),
              required=lambda s: [], dated=False, imports=(*GATES, *TRACKING)),  # MLflow's runs and Data Docs
)
STAGE_NAMES = tuple(s.name for s in STAGES)
MODEL_STAGES = tuple(s.name for s in STAGES if s.tracked)


def imports(names: Sequence[str]) -> tuple[str, ...]:
    """The modules the stages ``names`` import besides PySpark, each once, in stage order."""
    return tuple(dict.fromkeys(m for s in STAGES if s.name in names for m in s.imports))


def stage(name: str) -> StageSpec:
    for spec in STAGES:
        if spec.name == name:
            return spec
    raise KeyError(name)


def producer(table: str) -> StageSpec | None:
    """The stage that writes ``table``."""
    return next((s for s in STAGES if s.writes(table)), None)


def ordered(specs: Sequence[StageSpec]) -> list[StageSpec]:
    """``specs`` in dependency order (a stage after the stages producing its inputs), ties in declaration order."""
    remaining = list(specs)
    done: list[StageSpec] = []
    while remaining:
        for spec in remaining:
            if not any(_feeds(other, spec) for other in remaining if other is not spec):
                done.append(spec)
                remaining.remove(spec)
                break
        else:
            raise ConfigError(f"stage declarations form a cycle: {', '.join(s.name for s in remaining)}")
    return done


def _feeds(up: StageSpec, down: StageSpec) -> bool:
    """``up`` writes a table ``down`` reads (and not the other way round: refine reads and writes silver)."""
    return _reads_from(down, up) and not _reads_from(up, down)


def _reads_from(reader: StageSpec, writer: StageSpec) -> bool:
    return any(writer.writes(t) or _pattern_meets(t, writer) for t in reader.inputs)


def _pattern_meets(pattern: str, spec: StageSpec) -> bool:
    return "*" in pattern and any(fnmatch.fnmatchcase(out, pattern) or fnmatch.fnmatchcase(pattern, out) for out in spec.outputs)


def plan(names: Sequence[str] | None) -> list[StageSpec]:
    """The stages ``run`` executes, in dependency order: the given subset or every built stage."""
    if not names:
        return ordered([s for s in STAGES if s.built])
    unknown = [n for n in names if n not in STAGE_NAMES]
    if unknown:
        raise ConfigError(f"unknown stages {', '.join(unknown)}; stages are {', '.join(STAGE_NAMES)}")
    return ordered([s for s in STAGES if s.name in names])


def dependencies(specs: Sequence[StageSpec]) -> list[tuple[str, str]]:
    """(upstream, downstream) pairs among ``specs``: the upstream stage writes a table the downstream reads."""
    return [(up.name, down.name) for down in specs for up in specs if up is not down and _feeds(up, down)]


def stage_table() -> str:
    """The README's stage table (Markdown), from the declarations."""
    rows = ["| stage | what it does | reads | writes | options |", "|---|---|---|---|---|"]
    for spec in STAGES:
        what = spec.summary if spec.built else f"{spec.summary} (not built yet)"
        options = ", ".join(f"`{o.flag}`" for o in spec.options) + ("" if spec.dated else ("; " if spec.options else "") + "no as-of date")
        rows.append(
            f"| `{spec.name}` | {what} | {', '.join(f'`{t}`' for t in spec.inputs) or 'raw files'} | "
            f"{', '.join(f'`{t}`' for t in spec.outputs) or 'HTML report'} | {options} |"
        )
    return "\n".join(rows)


# -- the runner ------------------------------------------------------------------------------------
def run_stage(ctx: StageContext, name: str, entry: str = "run", *, keep_going: bool = False) -> StageResult:
    """Run one stage (or another of its entry points): inputs checked, as-of resolved, timed.

    ``keep_going`` (a run of several stages): a stage that stops on its data (a :class:`SourceError`,
    e.g. a history too short for churn's evaluation date) is recorded as skipped with that message,
    so the stages after it still run; alone, the error is raised (exit code 4)."""
    spec = stage(name)
    fn = spec.load(entry)
    started = time.perf_counter()
    log.info("[%s] started", name)
    ctx._begin()  # noqa: SLF001 - the runner owns the per-stage record
    with _job_group(ctx.spark, name), _small_input_conf(ctx, spec):
        result = _run_spec(ctx, spec, fn, entry, keep_going=keep_going)
    as_of = result.as_of
    result = _recorded(ctx, result, name, as_of=as_of, started=started)
    ctx.history.append(result)
    if result.skipped:
        log.info("[%s] skipped: %s", name, result.skipped)
    for w in result.writes:
        log.info("[%s] %s: %s rows %s (version %d)", name, w.table, f"{w.rows:,}", w.operation.lower(), w.version)
    log.info("[%s] done in %.1fs", name, result.seconds)
    return result


@contextmanager
def _job_group(spark: SparkSession, name: str) -> Iterator[None]:
    """Tag the Spark jobs a stage launches with the job group ``crm-spark.<stage>`` (the Spark UI's
    and the event log's way to tell stages apart; bench/bench_demo.py counts jobs by it)."""
    sc = spark.sparkContext
    sc.setJobGroup(f"{JOB_GROUP_PREFIX}{name}", f"crm-spark {name}")
    try:
        yield
    finally:
        for key in ("spark.jobGroup.id", "spark.job.description"):
            sc.setLocalProperty(key, None)  # type: ignore[arg-type] - None removes the property


@contextmanager
def _small_input_conf(ctx: StageContext, spec: StageSpec) -> Iterator[None]:
    """``spark.small_inputs.conf`` set while a stage whose inputs hold fewer bytes than
    ``spark.small_inputs.max_bytes`` runs; the session's own values are back after it.

    A stage plans hundreds of queries; on a few megabytes compiling each one (code generation)
    and re-planning it at every shuffle (adaptive execution) cost more than they save, and two
    shuffle partitions keep two cores busy. Inputs are measured from the Delta log, without a
    Spark job; a stage whose input size is unknown (ingest reads files; a lake engine that cannot
    tell) keeps the session's settings. Measured: conf/base.yaml.
    """
    small = ctx.settings.spark.small_inputs
    size = _input_bytes(ctx, spec) if small.max_bytes is not None and small.conf else None
    if small.max_bytes is None or size is None or size >= small.max_bytes:
        yield
        return
    log.info("[%s] inputs %.1f MB < spark.small_inputs.max_bytes: %s", spec.name, size / 1e6,
             ", ".join(f"{k}={v}" for k, v in small.conf.items()))
    with temporary_conf(ctx.spark, small.conf):
        yield


def _input_tables(ctx: StageContext, spec: StageSpec) -> list[str]:
    """The existing tables ``spec`` may read (patterns matched against the configured bronze sources
    and the declared tables), sorted."""
    from crm_spark.contracts import TABLES

    known = [*(f"bronze.{n}" for n in ctx.settings.sources), *(t for t in TABLES if "*" not in t)]
    tables = {t for pattern in spec.inputs for t in ([pattern] if "*" not in pattern else
                                                     [k for k in known if fnmatch.fnmatchcase(k, pattern)])}
    return [t for t in sorted(tables) if ctx.lake.exists(t)]


def _input_bytes(ctx: StageContext, spec: StageSpec) -> int | None:
    """Bytes of the existing tables ``spec`` reads; None when there are none or the lake cannot tell."""
    sizes = [ctx.lake.size_bytes(t) for t in _input_tables(ctx, spec)]
    if not sizes or any(size is None for size in sizes):
        return None
    return sum(size for size in sizes if size is not None)


@functools.cache
def _code_digest() -> str:
    """A hash of the package's source files: an edited transform runs its stage again even when the
    version number was not raised (empty when the package is imported from a zip)."""
    root = Path(__file__).resolve().parent.parent
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")) if root.is_dir() else ():
        digest.update(str(path.relative_to(root)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:20]


def _fingerprint(ctx: StageContext, spec: StageSpec, as_of: date | None, entry: str = "run") -> str:
    """``<stage>@<hash>`` of what a run of the stage depends on: each input table (its version; for
    a table kept per as-of date, the files of the dates the stage reads, so a backfill of other
    dates changes nothing), the settings (secrets masked), the as-of date, the package version and
    its source files (:func:`_code_digest`). Its commits carry it as their app transaction, so the next run can tell its tables still stand."""
    from crm_spark import __version__
    from crm_spark.contracts import contract_for

    needed: dict[str, list[date]] = spec.load(spec.needs)(ctx.settings, as_of, entry) if spec.needs and as_of else {}
    inputs: dict[str, Any] = {}
    for t in _input_tables(ctx, spec):
        contract = contract_for(t)
        if as_of is not None and contract is not None and contract.partition_by == ("as_of_date",):
            dates = sorted({as_of, *needed.get(t, [])})
            inputs[t] = sorted(ctx.lake.files(t, partition={"as_of_date": dates}))
        else:
            inputs[t] = ctx.lake.version(t)
    payload = {"stage": spec.name, "as_of": as_of.isoformat() if as_of else None, "version": __version__,
               "code": _code_digest(), "inputs": inputs, "settings": ctx.settings.public_dict()}
    digest = hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()
    return f"{spec.name}@{digest[:20]}"


FINGERPRINT_TAG = "crm_spark.fingerprint"  # on a model stage's MLflow run: what it ran on
REGISTRY_TAG = "crm_spark.registry_state"  # churn: the champion version the scores came from


def _registry_state(ctx: StageContext, name: str) -> str | None:
    """What of the model registry a stage's tables depend on: churn scores with the champion."""
    if name != "churn":
        return None
    from crm_spark.stages.churn import CHAMPION, MODEL_NAME

    return str(ctx.tracker.alias_version(MODEL_NAME, CHAMPION))


def _unchanged_result(ctx: StageContext, name: str, as_of: date | None, unchanged: dict[str, int],
                      notes: tuple[str, ...], found: Any) -> StageResult:
    """A stage not run again: its tables, and (model stages) the MLflow run that wrote them."""
    tables = ", ".join(f"{t} v{v}" for t, v in unchanged.items())
    return StageResult(
        name, as_of=as_of, unchanged=unchanged,
        metrics=dict(found.data.metrics) if found is not None else {},
        mlflow_run_id=found.info.run_id if found is not None else None,
        notes=(*notes, f"unchanged: its inputs, settings and as-of date are those of its last run, whose tables "
                       f"stand ({tables}); --force runs it again"),
    )


def _standing(ctx: StageContext, spec: StageSpec, token: str, as_of: date | None,
              notes: tuple[str, ...]) -> StageResult | None:
    """The result of a stage not run again, when the tables (and, for a model stage, the MLflow
    run) of a run with this fingerprint still stand; None (why is logged) when it must run."""
    versions, why = _unchanged(ctx, spec, token, as_of)
    found = None
    if versions is not None and spec.name in MODEL_STAGES:
        # Its MLflow run must exist too (logging may have failed after the tables), and the
        # registry state its tables came from must still hold.
        found = ctx.tracker.find_tagged(spec.name, FINGERPRINT_TAG, token)
        state = _registry_state(ctx, spec.name)
        if found is None:
            why = "no MLflow run with these inputs"
        elif state is not None and found.data.tags.get(REGISTRY_TAG) != state:
            why = "the registry's champion moved since its last run"
    if why:
        log.info("[%s] runs: %s", spec.name, why)
        return None
    return _unchanged_result(ctx, spec.name, as_of, versions or {}, notes, found)


def _unchanged(ctx: StageContext, spec: StageSpec, token: str, as_of: date | None) -> tuple[dict[str, int] | None, str]:
    """The stage's output tables and versions when a run with this fingerprint (``token``) wrote
    each of them and nothing changed what it wrote since: its commit is the table's latest, or
    the table is partitioned by date and the partition of ``as_of`` holds the files it wrote (a
    backfill of other dates came after). Otherwise None, and why."""
    from crm_spark.contracts import contract_for

    declared = [t for t in spec.outputs if "*" not in t]
    if not declared or not all(ctx.lake.exists(t) for t in declared):
        return None, "an output table does not exist yet"
    versions: dict[str, int] = {}
    for t in declared:
        ours, latest = ctx.lake.txn_version(t, token), ctx.lake.version(t)
        if ours is None:
            return None, f"{t}: no run with these inputs, settings and as-of date wrote it"
        if ours != latest:
            contract = contract_for(t)
            parts = contract.partition_by if contract is not None else ()
            mine = {parts[0]: as_of} if as_of is not None and len(parts) == 1 else None
            if mine is None or not _same_files(ctx, t, ours, mine):
                return None, f"{t}: changed since version {ours}, which a run with these inputs wrote"
        versions[t] = latest
    return versions, ""


def _same_files(ctx: StageContext, table: str, version: int, partition: dict[str, Any]) -> bool:
    """Whether ``partition`` of ``table`` holds the files it held at ``version`` (False when that
    version can no longer be read, e.g. vacuumed)."""
    try:
        return ctx.lake.files(table, version=version, partition=partition) == ctx.lake.files(table, partition=partition)
    except LakeError:
        return False


def _run_spec(
    ctx: StageContext, spec: StageSpec, fn: Callable[..., StageResult], entry: str, *, keep_going: bool
) -> StageResult:
    """The stage's result (as_of set when resolved): skipped when inputs or dates are missing."""
    name = spec.name
    result = _skip_if_missing(ctx, spec)
    as_of: date | None = None
    if result is None and spec.dated:
        as_of = resolve_as_of(ctx, spec)
        if as_of is None:
            result = StageResult(name, skipped=f"{' / '.join(spec.as_of_from)} hold no dated rows and no --as-of was given")
    if result is None:
        try:
            backfill_notes = _ensure_partitions(ctx, spec, as_of, entry) if as_of is not None and spec.needs else ()
            if spec.skip_unchanged and entry == "run":
                token = _fingerprint(ctx, spec, as_of, entry)
                standing = None if ctx.force else _standing(ctx, spec, token, as_of, backfill_notes)
                if standing is not None:
                    return standing
                ctx._token = token  # noqa: SLF001 - its commits carry it
            result = fn(ctx, as_of) if spec.dated else fn(ctx)
            if ctx._token is not None and result.mlflow_run_id and not result.skipped:  # noqa: SLF001
                ctx.tracker.client.set_tag(result.mlflow_run_id, FINGERPRINT_TAG, ctx._token)  # noqa: SLF001
                state = _registry_state(ctx, name)
                if state is not None:
                    ctx.tracker.client.set_tag(result.mlflow_run_id, REGISTRY_TAG, state)
            result = replace(result, notes=(*backfill_notes, *result.notes))
        except SourceError as exc:
            if not keep_going:
                raise
            result = StageResult(name, skipped=f"could not run on this data: {exc}")
    return replace(result, as_of=as_of)


def run_backfill(ctx: StageContext, name: str, dates: Sequence[date]) -> StageResult:
    """Run a stage's declared backfill entry for ``dates`` on its own (e.g. ``features`` for a date range)."""
    spec = stage(name)
    if spec.backfill is None:
        raise ConfigError(f"stage '{name}' has no backfill entry")
    started = time.perf_counter()
    ctx._begin()  # noqa: SLF001
    result = _skip_if_missing(ctx, spec) or spec.load(spec.backfill)(ctx, list(dates))
    return _recorded(ctx, result, name, as_of=None, started=started)


def _recorded(ctx: StageContext, result: StageResult, name: str, *, as_of: date | None, started: float) -> StageResult:
    """``result`` with what the runner measured and the context recorded: writes, gates, inputs, seconds."""
    return replace(
        result, stage=name, as_of=as_of, seconds=time.perf_counter() - started, writes=(*ctx._writes,),  # noqa: SLF001
        quality=(*ctx._quality,), inputs=ctx.input_versions(),  # noqa: SLF001
    )


def finish_run(ctx: StageContext) -> None:
    """Once per run, after the last stage: render Data Docs from the run's results."""
    if "gate" in ctx.__dict__:
        ctx.gate.build_docs()


def _skip_if_missing(ctx: StageContext, spec: StageSpec) -> StageResult | None:
    required = spec.required_inputs(ctx.settings)
    missing = [t for t in required if not ctx.lake.exists(t)]
    if not missing:
        return None
    maker = producer(missing[0])
    how = f"run `crm-spark {maker.name}` first" if maker is not None and maker.built else "nothing builds it yet"
    if maker is not None and maker.name == "refine":
        how += " (or configure a source that feeds it)"
    return StageResult(spec.name, skipped=f"{', '.join(missing)} not found: {how}")


def resolve_as_of(ctx: StageContext, spec: StageSpec) -> date | None:
    """``--as-of``, else the date already resolved in this run, else the latest date of the
    first existing ``as_of_from`` table, read from its Delta log."""
    if ctx.as_of is not None:
        ctx.resolved_as_of = ctx.as_of
        return ctx.as_of
    if ctx.resolved_as_of is not None:
        return ctx.resolved_as_of
    from crm_spark.contracts import table as contract

    for name in spec.as_of_from:
        if ctx.lake.exists(name):
            column = contract(name).date_column
            found = ctx.lake.max_value(name, column) if column else None
            if found is not None:
                ctx.resolved_as_of = found
                log.info("[%s] as of %s (the latest %s in %s)", spec.name, found, column, name)
                return found  # type: ignore[no-any-return]
    return None


def _ensure_partitions(ctx: StageContext, spec: StageSpec, as_of: date, entry: str) -> tuple[str, ...]:
    """Compute the partitions ``spec`` needs that are missing, with their producer's backfill entry."""
    needed: dict[str, list[date]] = spec.load(spec.needs or "")(ctx.settings, as_of, entry)
    notes: list[str] = []
    for table, dates in needed.items():
        from crm_spark.contracts import table as contract

        column = contract(table).partition_by[0]
        present = set(ctx.lake.partition_values(table, column)) if ctx.lake.exists(table) else set()
        missing = sorted(d for d in set(dates) if d.isoformat() not in present)
        if not missing:
            continue
        shown = ", ".join(d.isoformat() for d in missing)
        maker = producer(table)
        stage_settings = getattr(ctx.settings, spec.name, None)
        if maker is None or maker.backfill is None or not getattr(stage_settings, "backfill_features", True):
            commands = "; ".join(f"crm-spark {maker.name if maker else '?'} --as-of {d.isoformat()}" for d in missing)
            raise SourceError(
                f"{table} has no rows as of {shown}: run `{commands}` first"
                + (f", or set {spec.name}.backfill_features: true" if stage_settings is not None else "")
            )
        log.info("[%s] %s lacks %s: computing them with %s's backfill", spec.name, table, shown, maker.name)
        result = maker.load(maker.backfill)(ctx, missing)
        if result.skipped:
            raise SourceError(f"cannot compute {table} as of {shown}: {result.skipped}")
        notes += [f"computed {table} as of {shown} (backfill by {maker.name})", *result.notes]
    return tuple(notes)
