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
from collections.abc import Mapping
from dataclasses import dataclass

from pyspark.errors import AnalysisException
from pyspark.sql import functions as F

from crm_spark.config import Settings, SourceSettings, TargetMapping
from crm_spark.errors import EnvironmentSetupError, SourceError
from crm_spark.lake import Txn, WriteResult
from crm_spark.schemas import KEYS
from crm_spark.stages import StageContext, StageResult
from crm_spark.transforms import refine as R

log = logging.getLogger(__name__)
STAGE = "refine"
TARGET_ORDER = (
    "customers", "products", "orders", "order_items", "web_events", "social_interactions", "feedback", "churn_labels",
)
DEMO_PII_KEY = b"crm-spark-DEMO-key-not-a-secret"


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
class PairOutcome:
    source: str
    target: str
    batches: dict[int, dict[str, int]]
    writes: tuple[WriteResult, ...]
    gate_seconds: float


def run(ctx: StageContext) -> StageResult:
    key = pii_key(ctx.settings)
    writes: list[WriteResult] = []
    notes: list[str] = []
    details: dict[str, object] = {}
    gate_seconds = 0.0
    for target in TARGET_ORDER:
        feeding = [(n, s, s.targets[target]) for n, s in ctx.settings.sources.items() if s.enabled and target in s.targets]
        if not feeding:
            if target != "churn_labels":
                notes.append(f"silver.{target}: no source is configured for it, skipped")
            continue
        for name, source, mapping in feeding:
            if not ctx.lake.exists(f"bronze.{name}"):
                notes.append(f"bronze.{name} does not exist yet: run `crm-spark ingest` first")
                continue
            outcome = refine_pair(ctx, name, source, target, mapping, key=key)
            if outcome is None:
                log.info("[refine] %s -> silver.%s: no new batches", name, target)
                continue
            writes.extend(outcome.writes)
            gate_seconds += outcome.gate_seconds
            details[f"{name}->{target}"] = outcome.batches
    if not details and not writes and not any("exist" in n for n in notes):
        notes.append("nothing new to refine")
    return StageResult(STAGE, writes=tuple(writes), notes=tuple(notes), details={"batches": details, "gate_seconds": gate_seconds})


def refine_pair(
    ctx: StageContext, name: str, source: SourceSettings, target: str, mapping: TargetMapping, *, key: bytes
) -> PairOutcome | None:
    lake, settings = ctx.lake, ctx.settings
    silver, quarantine = f"silver.{target}", f"quarantine.{target}"
    app = f"refine:{name}"
    done = min(_done(ctx, silver, app), _done(ctx, quarantine, app))
    bronze = lake.read(f"bronze.{name}").filter(F.col("_ingest_batch_id") > done)
    last = bronze.agg(F.max("_ingest_batch_id")).first()[0]
    if last is None:
        return None
    token = Txn(app, int(last))

    try:
        conformed = R.conform(
            bronze, target=target, columns=mapping.columns, filter_expr=mapping.filter, explode=mapping.explode,
            collapse=mapping.collapse,
        )
    except AnalysisException as exc:  # a mapping naming a column the files lack, or bad SQL
        first = (str(exc).strip().splitlines() or [""])[0][:300]
        raise SourceError(
            f"sources.{name}.targets.{target}: the mapping does not fit bronze.{name} "
            f"(columns: {', '.join(c for c in bronze.columns if not c.startswith('_'))}): {first}"
        ) from None
    checked = R.validate(
        conformed,
        target=target,
        timestamp_formats=settings.refine.timestamp_formats,
        defaults=_scoped(settings.refine.missing, target),
        country_aliases=settings.refine.country_aliases,
    )
    known = {t: lake.read(f"silver.{t}") for t in R.TARGETS[target].refs.values() if lake.exists(f"silver.{t}")}
    checked = R.check_references(checked, target=target, known=known)
    rules = {c: r.model_dump() for c, r in _scoped(settings.refine.outliers, target).items()}
    checked = R.outliers(checked, rules=rules)
    checked = R.dedupe(checked, target=target)
    if lake.exists(silver):
        checked = R.older_than_silver(checked, lake.read(silver), target=target)
    checked = checked.persist()
    try:
        per_batch = {
            int(r["_ingest_batch_id"]): {"mapped": int(r["mapped"]), "accepted": int(r["accepted"]),
                                         "quarantined": int(r["quarantined"]), "deduplicated": int(r["deduplicated"])}
            for r in checked.groupBy("_ingest_batch_id").agg(
                F.count(F.lit(1)).alias("mapped"),
                F.sum(F.when(F.size(R.REASONS) == 0, 1).otherwise(0)).alias("accepted"),
                F.sum(F.when(F.size(R.REASONS) > 0, 1).otherwise(0)).alias("quarantined"),
                F.sum(F.when(R.only_dedupe_reasons(), 1).otherwise(0)).alias("deduplicated"),
            ).collect()
        }
        # Copies and older versions of a key are expected (snapshots, re-deliveries), not dirt:
        # the reject-share gate counts them neither as mapped nor as rejected.
        mapped = sum(b["mapped"] - b["deduplicated"] for b in per_batch.values())
        # Cached: every expectation of the gate is a Spark job over it, and to_silver's native
        # HMAC expressions make a large plan (about 1 MB per task) worth computing once.
        accepted = R.to_silver(R.accepted_rows(checked), target=target, key=key).persist()
        rejected = R.quarantine_rows(checked, target=target, key=key)
        report = ctx.gate.check(silver, accepted, previous_rows=None, as_of=None, batch_rows=mapped)
        silver_write = lake.merge(silver, accepted, keys=list(KEYS[target]), txn=token)
        quarantine_write = lake.append(quarantine, rejected, txn=token)
        accepted.unpersist()
    finally:
        checked.unpersist()
    for batch, c in sorted(per_batch.items()):
        log.info(
            "[refine] %s -> silver.%s batch %d: %s mapped = %s accepted + %s quarantined",
            name, target, batch, f"{c['mapped']:,}", f"{c['accepted']:,}", f"{c['quarantined']:,}",
        )
    return PairOutcome(name, target, per_batch, (silver_write, quarantine_write), report.seconds)


def _done(ctx: StageContext, table: str, app: str) -> int:
    if not ctx.lake.exists(table):
        return -1
    v = ctx.lake.txn_version(table, app)
    return -1 if v is None else v


def _scoped(values: Mapping[str, object], target: str) -> dict[str, object]:
    prefix = f"{target}."
    return {k[len(prefix):]: v for k, v in values.items() if k.startswith(prefix)}
