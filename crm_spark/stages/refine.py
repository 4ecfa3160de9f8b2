"""Stage 2, refine: ``bronze.<source>`` -> ``silver.<target>`` + ``quarantine.<target>``.

Incremental by ingest batch: for each (source, target) pair the last bronze batch refined is
the idempotency token ``refine:<source>`` recorded on both the silver and the quarantine table,
so a re-run reads only newer batches, and a run that died between the two commits redoes
exactly the missing one. Targets are refined in dependency order (customers and products before
the tables that reference them). Per batch, mapped rows = accepted + quarantined, logged.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from pyspark.errors import AnalysisException
from pyspark.sql import DataFrame, Observation
from pyspark.sql import functions as F

from crm_spark.config import Settings, SourceSettings, TargetMapping
from crm_spark.errors import DataQualityError, EnvironmentSetupError, SourceError
from crm_spark.lake import Txn
from crm_spark.contracts.silver import TARGET_ORDER, silver
from crm_spark.stages import StageContext, StageResult
from crm_spark.transforms import refine as R

log = logging.getLogger(__name__)
STAGE = "refine"
DEMO_PII_KEY = b"crm-spark-DEMO-key-not-a-secret"
STATUS_HISTORY = "silver.order_status_history"
RETRY = "_refined_again"  # a row of an earlier batch refined again: its parent has arrived


def pii_key(settings: Settings) -> bytes:
    """The HMAC key from the configured env variable; the local env alone may use the demo key."""
    name = settings.refine.pii_key_env
    value = os.environ.get(name)
    if value:
        return value.encode("utf-8")
    if settings.env == "local":
        log.warning(
            "%s is not set: pseudonymising PII with the built-in DEMO key (local env only; "
            "set %s to a long random secret for real data)", name, name,
        )
        return DEMO_PII_KEY
    raise EnvironmentSetupError(
        f"PII key missing: set the environment variable {name} to a long random secret "
        f"(refine.pii_key_env; only the local env falls back to a demo key)"
    )


@dataclass(frozen=True)
class BatchCounts:
    """One bronze batch refined into one silver table: mapped = accepted + quarantined."""

    mapped: int
    accepted: int
    quarantined: int
    deduplicated: int  # of the quarantined: copies and older versions of a key, not dirt


@dataclass(frozen=True)
class FilterCounts:
    """What one mapping filter did to a refine run's bronze rows."""

    seen: int
    dropped: int  # the filter was false or null


@dataclass(frozen=True)
class PairResult:
    """One (source, target) pair refined: its new batches, what its filter did, and the rows
    quarantined earlier for an unknown reference that silver accepted now that it exists."""

    batches: dict[int, BatchCounts]
    filtered: FilterCounts | None = None
    released: int = 0


@dataclass(frozen=True)
class RefineOutcome:
    batches: dict[str, dict[int, BatchCounts]]  # "<source>-><target>" -> bronze batch -> counts
    filtered: dict[str, int] = field(default_factory=dict)  # "<source>-><target>" -> rows its mapping filter dropped
    released: dict[str, int] = field(default_factory=dict)  # "<source>-><target>" -> rows whose parent arrived


def run(ctx: StageContext) -> StageResult:
    key = pii_key(ctx.settings)
    notes: list[str] = []
    batches: dict[str, dict[int, BatchCounts]] = {}
    filtered: dict[str, int] = {}
    released: dict[str, int] = {}
    for target in TARGET_ORDER:
        sources = ctx.settings.sources
        feeding = [(n, sources[n], sources[n].targets[target]) for n in ctx.settings.feeding(target)]
        if not feeding:
            if target not in ("churn_labels", "customer_attributes"):  # bring-your-own tables only
                notes.append(f"silver.{target}: no source is configured for it, skipped")
            continue
        for name, source, mapping in feeding:
            if not ctx.exists(f"bronze.{name}"):
                notes.append(f"bronze.{name} does not exist yet: run `crm-spark ingest` first")
                continue
            refined = refine_pair(ctx, name, source, target, mapping, key=key)
            if refined is None:
                log.info("[refine] %s -> silver.%s: no new batches", name, target)
                continue
            pair = f"{name}->{target}"
            if refined.batches:
                batches[pair] = refined.batches
            if refined.filtered is not None:
                filtered[pair] = refined.filtered.dropped
                notes.append(f"sources.{name}.targets.{target}.filter dropped {refined.filtered.dropped:,} of "
                             f"{refined.filtered.seen:,} rows")
            if refined.released:
                released[pair] = refined.released
                notes.append(f"silver.{target}: {refined.released:,} rows of {name} quarantined for a reference "
                             f"not known then were accepted now that it is")
    if not batches and not released and not any("exist" in n for n in notes):
        notes.append("nothing new to refine")
    totals = {k: float(sum(getattr(c, k) for b in batches.values() for c in b.values()))
              for k in ("mapped", "accepted", "quarantined")}
    if filtered:
        totals["filtered"] = float(sum(filtered.values()))
    if released:
        totals["released"] = float(sum(released.values()))
    return StageResult(STAGE, notes=tuple(notes), metrics=totals, outcome=RefineOutcome(batches, filtered, released))


def refine_pair(
    ctx: StageContext, name: str, source: SourceSettings, target: str, mapping: TargetMapping, *, key: bytes
) -> PairResult | None:
    """Refine the bronze batches of ``name`` not yet in ``silver.<target>``, and again the earlier
    rows quarantined only for a reference that silver now holds (:func:`R.awaiting_parents`);
    None when there is neither. Rows a mapping filter drops are not mapped."""
    lake, settings = ctx.lake, ctx.settings
    silver_table, quarantine = f"silver.{target}", f"quarantine.{target}"
    app = f"refine:{name}"
    history = STATUS_HISTORY if target == "orders" else None
    done = min(_done(ctx, t, app) for t in (silver_table, quarantine, history) if t is not None)
    everything = ctx.read(f"bronze.{name}")
    bronze = everything.filter(F.col("_ingest_batch_id") > done)
    # Bronze only grows by appended batches: its newest batch id, from the log's file statistics
    # (no scan where the engine keeps them), says whether there is anything new at all. When there
    # is, the scan stays: the log's answer is the latest version, the token must be the pinned one's.
    newest = lake.max_value(f"bronze.{name}", "_ingest_batch_id")
    last = bronze.agg(F.max("_ingest_batch_id")).first()[0] if newest is not None and newest > done else None
    formats = source.timestamp_formats or settings.refine.timestamp_formats
    # Referenced tables at their latest version: customers refined a moment ago count as known.
    known = {t: ctx.read(f"silver.{t}") for t in silver(target).refs.values() if lake.exists(f"silver.{t}")}
    current = ctx.read(silver_table) if lake.exists(silver_table) else None
    awaiting = _awaiting_parents(ctx, target, everything, known=known, current=current,
                                 formats=formats) if done >= 0 else None
    if last is None and awaiting is None:
        return None
    # Rows only refined again (their parents arrived) need no token: once in silver they are no
    # longer awaited, and their quarantine rows are not stored twice.
    token = Txn(app, int(last)) if last is not None else None
    observed = Observation(f"refine_filter_{name}_{target}") if mapping.filter and last is not None else None

    def conform(rows: DataFrame, dropped: Observation | None) -> DataFrame:
        return R.conform(
            rows, target=target, columns=mapping.columns, filter_expr=mapping.filter, explode=mapping.explode,
            collapse=mapping.collapse, timestamp_formats=formats, dropped=dropped, attributes=tuple(settings.attributes),
            timezone=source.timezone,
        )

    try:
        parts = [] if last is None else [conform(bronze, observed).withColumn(RETRY, F.lit(False))]
        if awaiting is not None:
            earlier = everything.filter(F.col("_ingest_batch_id") <= done).join(
                awaiting.select(*R.LINEAGE).distinct(), list(R.LINEAGE), "left_semi")
            again = conform(earlier, None).join(awaiting, [*R.LINEAGE, *silver(target).keys], "left_semi")
            parts.append(again.withColumn(RETRY, F.lit(True)))
        conformed = R.union_all(parts)
    except (AnalysisException, ValueError) as exc:  # a mapping naming a column the files lack, or bad SQL
        first = (str(exc).strip().splitlines() or [""])[0][:300]
        raise SourceError(
            f"sources.{name}.targets.{target}: the mapping does not fit bronze.{name} "
            f"(columns: {', '.join(c for c in bronze.columns if not c.startswith('_'))}): {first}"
        ) from None
    checked = R.validate(
        conformed,
        target=target,
        timestamp_formats=formats,
        defaults=_scoped(settings.refine.missing, target),
        country_aliases=settings.refine.country_aliases,
        attribute_kinds=settings.attributes,
        earliest=settings.refine.earliest_date,
        future_days=settings.refine.future_tolerance_days,
        max_length=settings.refine.max_field_length,
        timezone=source.timezone,
    )
    checked = R.check_references(checked, target=target, known=known)
    rules = {c: r.model_dump() for c, r in _scoped(settings.refine.outliers, target).items() if c in checked.columns}
    # An outlier rule's percentiles are an aggregate over the parsed rows, which the rows then
    # join. Interpreted (small inputs), a cache of the parsed rows pays (web_events 227k rows:
    # 13 s -> 6 s); compiled, parsing again only the ruled columns for the percentile costs less
    # than caching every row twice (5.4M invoice lines: about 12 s less, see README performance).
    interpreted = ctx.spark.conf.get("spark.sql.codegen.wholeStage", "true").lower() == "false"
    parsed = checked.persist() if rules and interpreted else None  # released below, once the counts have cached `checked`
    checked = R.outliers(parsed if parsed is not None else checked, rules=rules)  # lazy, as are the next two
    checked = R.dedupe(checked, target=target)
    if current is not None:
        checked = R.older_than_silver(checked, current, target=target)
    checked = checked.persist()
    try:
        per_batch: dict[int, BatchCounts] = {}
        released = 0
        for r in checked.groupBy("_ingest_batch_id", RETRY).agg(
            F.count(F.lit(1)).alias("mapped"),
            F.sum(F.when(F.size(R.REASONS) == 0, 1).otherwise(0)).alias("accepted"),
            F.sum(F.when(F.size(R.REASONS) > 0, 1).otherwise(0)).alias("quarantined"),
            F.sum(F.when(R.only_dedupe_reasons(), 1).otherwise(0)).alias("deduplicated"),
        ).collect():
            if r[RETRY]:
                released += int(r["accepted"])
            else:
                per_batch[int(r["_ingest_batch_id"])] = BatchCounts(
                    int(r["mapped"]), int(r["accepted"]), int(r["quarantined"]), int(r["deduplicated"]))
        if parsed is not None:
            parsed.unpersist()  # the counts above computed (and cached) every row from it
        # The count above computed the filtered frame: its observation is complete.
        filter_counts = None
        if observed is not None:
            values = observed.get
            filter_counts = FilterCounts(seen=int(values.get("seen") or 0), dropped=int(values.get("rows") or 0))
        # Copies and older versions of a key are expected (snapshots, re-deliveries), not dirt:
        # the reject-share check counts them neither as mapped nor as rejected.
        # Rows refined again that silver accepts count as mapped and accepted (the gate sees them).
        mapped = sum(b.mapped - b.deduplicated for b in per_batch.values()) + released
        if last is None and not released:  # only rows refined again, none accepted: nothing to write
            return PairResult({}, None, 0)
        # Cached: the gate runs a few jobs over it and the merge another; to_silver's HMAC
        # expressions are worth computing once.
        accepted = R.to_silver(R.accepted_rows(checked), target=target, key=key).persist()
        try:
            # Quarantine first: when the silver gate stops the batch, the rejected rows and their
            # reasons are there to look at (a re-run skips this commit: same token).
            rejected = R.quarantine_rows(checked, target=target, key=key)
            if lake.exists(quarantine):  # re-delivered lines are quarantined, but stored once
                rejected = R.not_yet_quarantined(rejected, ctx.read(quarantine))
            ctx.publish(quarantine, rejected, txn=token, evolve=True)  # a new raw column: additive
            if history is not None:  # before silver moves on: the changes are relative to it
                ctx.publish(history, R.status_changes(R.accepted_rows(checked), current), txn=token)
            try:
                ctx.publish(silver_table, accepted, txn=token, batch_rows=mapped)
            except DataQualityError as exc:
                why = _rejections(checked, mapped=mapped, target=target, source=name)
                raise DataQualityError(f"{exc}; {why}" if why else str(exc)) from None
        finally:
            accepted.unpersist()
    finally:
        checked.unpersist()
        if parsed is not None:
            parsed.unpersist()
        if awaiting is not None:
            awaiting.unpersist()
    for batch, c in sorted(per_batch.items()):
        log.info(
            "[refine] %s -> silver.%s batch %d: %s mapped = %s accepted + %s quarantined",
            name, target, batch, f"{c.mapped:,}", f"{c.accepted:,}", f"{c.quarantined:,}",
        )
    if awaiting is not None:
        log.info("[refine] %s -> silver.%s: %s earlier rows whose reference has arrived accepted", name, target,
                 f"{released:,}")
    return PairResult(per_batch, filter_counts, released)


def _rejections(checked: DataFrame, *, mapped: int, target: str, source: str, top: int = 3) -> str:
    """The commonest quarantine reasons of a refined batch with their share of its rows, one line."""
    rows = (
        R.reason_counts(checked)
        .filter(~F.col("reason").isin(*R.DEDUPE_REASONS))
        .orderBy(F.desc("count"), "reason").limit(top).collect()
    )
    if not rows:
        return ""
    parts = []
    for r in rows:
        share = f"{r['count'] / mapped:.0%}" if mapped else "all"
        hint = ""
        column = r["reason"][len("bad_"):] if r["reason"].startswith("bad_") else None
        if column and any(f.name == column and f.kind in ("date", "timestamp") for f in silver(target).fields):
            hint = f": no format in sources.{source}.timestamp_formats (or refine.timestamp_formats) parses it"
        parts.append(f"{r['reason']} {r['count']:,} row{'' if r['count'] == 1 else 's'} ({share}){hint}")
    return f"quarantine.{target} holds the rejected rows; commonest reasons: " + ", ".join(parts)


def _awaiting_parents(
    ctx: StageContext, target: str, bronze: DataFrame, *, known: Mapping[str, DataFrame], current: DataFrame | None,
    formats: Sequence[str],
) -> DataFrame | None:
    """The quarantined rows of ``target`` from this source's ``bronze`` whose missing parents silver
    now holds, cached; None when there are none (one Spark job over the quarantine table, the
    parents' keys and bronze's lineage columns)."""
    quarantine = f"quarantine.{target}"
    if not known or not ctx.lake.exists(quarantine):
        return None
    rows = R.awaiting_parents(ctx.read(quarantine), target=target, known=known, current=current,
                              timestamp_formats=formats)
    # Of this source only: a target fed by two sources has the other's rows in its quarantine too.
    rows = rows.join(bronze.select(*R.LINEAGE).distinct(), list(R.LINEAGE), "left_semi").persist()
    if rows.isEmpty():
        rows.unpersist()
        return None
    return rows


def _done(ctx: StageContext, table: str, app: str) -> int:
    if not ctx.lake.exists(table):
        return -1
    v = ctx.lake.txn_version(table, app)
    return -1 if v is None else v


def _scoped(values: Mapping[str, object], target: str) -> dict[str, object]:
    prefix = f"{target}."
    return {k[len(prefix):]: v for k, v in values.items() if k.startswith(prefix)}
