"""Stage ``report``: one self-contained HTML file of a run, for a marketing analyst.

Every section reads the lake (the gold partition of the report's date, silver and quarantine row
counts from the Delta log) and the model stages' MLflow runs (metrics, and the figures each stage
logged); the stages of the same run add their timings, skip reasons and gate results. So
``crm-spark report`` alone redraws the report of a lake, and a section whose stage was skipped or
never ran says why instead of showing nothing. The file goes to
``<lake>/_reports/report-<as of>-<UTC time>.html`` (figures embedded as PNG data URIs: no network,
no lake needed to read it); its path is the stage's outcome and the last line of a run's summary.

Spark work is bounded: a few aggregates and ``limit``-ed reads per section, and distributions
drawn from at most ``report.sample_customers`` customers.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from typing import Any

import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from crm_spark.contracts.silver import REJECTED_FILES, TARGET_ORDER
from crm_spark.report import Figure, Report, Section, Table, number, percent, png, render
from crm_spark.report import figures as figs
from crm_spark.stages import StageContext, StageResult

log = logging.getLogger(__name__)

STAGE = "report"
PARTITION = "as_of_date"
DATED_TABLES = ("gold.customer_features", "gold.customer_segments", "gold.basket_rules", "gold.churn_scores",
                "gold.recommendations", "gold.clv")

# The figures the model stages log, in the order the report shows them: (file, title, caption).
STAGE_FIGURES: dict[str, tuple[tuple[str, str, str], ...]] = {
    "segment": (
        ("segment_sizes.png", "Segment sizes", "Share of customers beside share of revenue for each segment."),
        ("segment_profiles_heatmap.png", "Segment profiles",
         "How far each segment's mean sits from the average customer, in standard deviations, per feature."),
        ("segment_pca.png", "Customers in two dimensions",
         "A sample of customers on the first two principal components of the scaled features, coloured by segment."),
        ("segment_k_selection.png", "Choosing the number of segments",
         "Silhouette and within-cluster cost for each k tried; the chosen k is marked."),
    ),
    "basket": (
        ("basket_rules_support_confidence.png", "Rules by support, confidence and lift",
         "Each dot is a rule: how often its items are bought together (support) and how often the consequent "
         "follows the antecedent (confidence); colour shows lift."),
    ),
    "churn": (
        ("churn_roc.png", "ROC curve", "True- against false-positive rate on the evaluation date, per model."),
        ("churn_pr.png", "Precision-recall curve", "Precision against recall on the evaluation date, per model."),
        ("churn_calibration.png", "Calibration",
         "Mean predicted probability against the observed churn rate, per decile of prediction."),
        ("churn_lift.png", "Lift (cumulative gains)",
         "Share of churners reached when contacting the customers with the highest predicted risk first."),
        ("churn_coefficients.png", "What drives the logistic regression",
         "Standardised coefficients: positive values raise the churn risk."),
        ("churn_gbt_importances.png", "What drives the gradient-boosted trees", "Feature importances of the GBT."),
    ),
    "recommend": (
        ("recommend_holdout_metrics.png", "Recommendations against the baselines on the holdout",
         "Ranking quality at k on purchases made after the training cut-off."),
    ),
    "clv": (
        ("clv_decile_calibration.png", "Decile calibration",
         "Mean predicted and actual spend per decile of predicted spend, on the holdout."),
        ("clv_predicted_vs_actual.png", "Predicted against actual spend", "One dot per customer of the holdout."),
    ),
}


@dataclass(frozen=True)
class ReportOutcome:
    path: str  # URI of the HTML file
    as_of: date | None
    sections: dict[str, str | None]  # section key -> why it is empty (None: filled)
    quarantine_by_reason: dict[str, int] = field(default_factory=dict)  # every quarantine table, all batches
    quarantine_by_table: dict[str, int] = field(default_factory=dict)
    facts: dict[str, dict[str, str]] = field(default_factory=dict)  # section key -> label -> value, as shown


def run(ctx: StageContext) -> StageResult:
    as_of = _report_date(ctx)
    history = {r.stage: r for r in ctx.history}
    runs = _Runs(ctx, as_of, history)
    overview, reasons, by_table = _overview(ctx, history)
    sections = [overview, _customers(ctx, as_of), _segment(ctx, as_of, runs), _basket(ctx, as_of, runs),
                _churn(ctx, as_of, runs), _recommend(ctx, as_of, runs), _clv(ctx, as_of, runs)]
    for section in sections:
        if section.skipped is None and section.empty:
            section.skipped = "nothing to show"
    generated = datetime.now(timezone.utc)
    report = Report(title="crm-spark customer intelligence report", as_of=as_of.isoformat() if as_of else "(undated)",
                    generated=generated.strftime("%Y-%m-%d %H:%M UTC"), lake=ctx.settings.paths.lake,
                    sections=sections, stages=_stages_table(ctx.history))
    name = f"_reports/report-{as_of.isoformat() if as_of else 'undated'}-{generated.strftime('%Y%m%dT%H%M%SZ')}.html"
    path = _write(ctx, name, render(report))
    skipped = {s.key: s.skipped for s in sections}
    log.info("[report] %d of %d sections filled; %s", sum(v is None for v in skipped.values()), len(sections), path)
    notes = tuple(f"report section '{k}' is empty: {why}" for k, why in skipped.items() if why)
    return StageResult(
        STAGE, notes=notes, metrics={"sections": float(len(sections)), "sections_empty": float(sum(bool(v) for v in skipped.values()))},
        outcome=ReportOutcome(path, as_of, skipped, reasons, by_table, {s.key: dict(s.facts) for s in sections}),
    )


# -- where things are ------------------------------------------------------------------------------
def _report_date(ctx: StageContext) -> date | None:
    """The run's as-of date; standalone, ``--as-of`` or the latest date of the gold tables."""
    if ctx.resolved_as_of is not None or ctx.as_of is not None:
        return ctx.resolved_as_of or ctx.as_of
    found = [ctx.lake.max_value(t, PARTITION) for t in DATED_TABLES if ctx.exists(t)]
    found = [d for d in found if d is not None]
    return max(found) if found else None


def _partition(ctx: StageContext, table: str, as_of: date | None, stage: str) -> tuple[DataFrame | None, str | None]:
    """``table``'s rows of the report date, or why there are none (to show instead)."""
    if not ctx.exists(table):
        return None, f"{table} not found: the {stage} stage has not run on this lake (run `crm-spark {stage}`)"
    if as_of is None:
        return None, "no as-of date: the lake holds no dated gold rows"
    dates = [d for d in ctx.lake.partition_values(table, PARTITION) if d]
    if as_of.isoformat() not in dates:
        return None, (f"{table} has no rows as of {as_of} (dates present: {', '.join(dates[-5:]) or 'none'}); "
                      f"run `crm-spark {stage} --as-of {as_of}`")
    return ctx.read(table, partition={PARTITION: as_of}), None


def _skipped_in_run(history: Mapping[str, StageResult], stage: str) -> str | None:
    result = history.get(stage)
    return f"the {stage} stage was skipped in this run: {result.skipped}" if result is not None and result.skipped else None


class _Runs:
    """The model stages' MLflow runs of the report date: this run's, else the latest logged for the date."""

    def __init__(self, ctx: StageContext, as_of: date | None, history: Mapping[str, StageResult]) -> None:
        self.ctx, self.as_of, self.history = ctx, as_of, history
        self._cache: dict[str, Any] = {}

    def get(self, stage: str) -> Any | None:
        if stage not in self._cache:
            result = self.history.get(stage)
            run_id = result.mlflow_run_id if result is not None else None
            self._cache[stage] = self.ctx.tracker.find_run(stage, run_id=run_id, as_of=self.as_of)
        return self._cache[stage]

    def metrics(self, stage: str) -> dict[str, float]:
        found = self.get(stage)
        return dict(found.data.metrics) if found is not None else {}

    def figures(self, stage: str) -> list[Figure]:
        found = self.get(stage)
        if found is None:
            return []
        pngs = self.ctx.tracker.figures(found.info.run_id)
        out = []
        for filename, title, caption in STAGE_FIGURES.get(stage, ()):
            if filename in pngs:
                out.append(Figure(title, pngs.pop(filename), caption))
        out += [Figure(name.removesuffix(".png").replace("_", " "), data) for name, data in sorted(pngs.items())]
        return out

    def link(self, stage: str) -> list[str]:
        found = self.get(stage)
        if found is None:
            return [f"no MLflow run of the {stage} stage as of {self.as_of} was found"]
        return [f"MLflow run {found.info.run_id} (experiment {self.ctx.settings.tracking.experiment_prefix}/{stage}, "
                f"tracking URI {self.ctx.tracker.uri})"]


def _write(ctx: StageContext, rel: str, html: str) -> str:
    from crm_spark.generate.writer import OutputFs

    out = OutputFs(ctx.spark, ctx.settings.paths.lake)
    out.write_text(rel, html)
    uri = out.uri(rel)
    return uri[len("file:"):] if uri.startswith("file:") else uri


# -- sections --------------------------------------------------------------------------------------
def _stages_table(history: list[StageResult]) -> Table | None:
    if not history:
        return None
    rows = []
    for r in history:
        written = ", ".join(f"{w.table} v{w.version}" for w in r.writes) or ", ".join(
            f"{t} v{v}" for t, v in (r.unchanged or {}).items()) or "-"
        status = "skipped" if r.skipped else "unchanged" if r.unchanged else "ok"
        rows.append((r.stage, status, written if not r.skipped else r.skipped,
                     number(r.rows), f"{r.seconds:.1f}"))
    return Table("Stages", ("stage", "status", "tables written (version) or why skipped", "rows written", "seconds"),
                 tuple(rows), numeric=(False, False, False, True, True))


def _overview(ctx: StageContext, history: Mapping[str, StageResult]) -> tuple[Section, dict[str, int], dict[str, int]]:
    section = Section("overview", "Data overview",
                      "Rows per source as they reached the lake: raw lines kept in bronze, rows accepted into silver, "
                      "and rows quarantined with their reasons (nothing is dropped silently).")
    settings = ctx.settings
    rows, quarantine_tables = [], []
    for target in TARGET_ORDER:
        silver_t, quarantine_t = f"silver.{target}", f"quarantine.{target}"
        if not ctx.exists(silver_t) and not ctx.exists(quarantine_t):
            continue
        sources = settings.feeding(target)
        bronze = sum(ctx.lake.rows(f"bronze.{s}") for s in sources if ctx.exists(f"bronze.{s}"))
        kept = ctx.lake.rows(silver_t) if ctx.exists(silver_t) else 0
        quarantined = ctx.lake.rows(quarantine_t) if ctx.exists(quarantine_t) else 0
        if ctx.exists(quarantine_t):
            quarantine_tables.append(quarantine_t)
        rows.append({"table": silver_t, "sources": ", ".join(sources) or "-", "bronze_rows": bronze, "silver_rows": kept,
                     "quarantined_rows": quarantined})
    if not rows:
        section.skipped = "no silver or quarantine table yet: run `crm-spark ingest` and `crm-spark refine`"
        return section, {}, {}
    frame = pd.DataFrame(rows)
    refined = frame["silver_rows"] + frame["quarantined_rows"]
    section.facts += [
        ("rows in silver", number(frame["silver_rows"].sum())),
        ("rows quarantined", number(frame["quarantined_rows"].sum())),
        ("quarantine rate", percent(frame["quarantined_rows"].sum() / max(refined.sum(), 1))),
    ]
    section.tables.append(Table(
        "Rows per table", ("silver table", "fed by source", "bronze rows", "silver rows", "quarantined", "quarantine rate"),
        tuple((r.table, r.sources, number(r.bronze_rows), number(r.silver_rows), number(r.quarantined_rows),
               percent(r.quarantined_rows / max(r.silver_rows + r.quarantined_rows, 1))) for r in frame.itertuples()),
        numeric=(False, False, True, True, True, True),
        caption="Silver holds the latest version of each key, so a source that re-delivers or updates rows has more "
                "bronze rows than silver rows; duplicates and older versions are quarantined as such."))
    section.figures.append(Figure("Quarantine rate", png(figs.quarantine_figure(frame)),
                                  "Share of each table's refined rows that went to quarantine instead of silver."))
    reasons = _quarantine_reasons(ctx, quarantine_tables)
    by_reason = reasons.groupby("reason")["rows"].sum().sort_values(ascending=False) if len(reasons) else pd.Series(dtype=int)
    if len(by_reason):
        top = ctx.settings.report.top_rows
        shown = reasons.sort_values(["rows", "table", "reason"], ascending=[False, True, True]).head(top)
        section.tables.append(Table(
            f"Top {len(shown)} quarantine reasons", ("table", "reason", "rows"),
            tuple((r.table, r.reason, number(r.rows)) for r in shown.itertuples()), numeric=(False, False, True),
            caption="A row can have several reasons; each is counted. Every quarantined row keeps its reasons in "
                    "_dq_reasons and its raw values, so it can be fixed and re-delivered."))
        section.figures.append(Figure("Quarantine reasons", png(figs.reasons_figure(
            by_reason.head(top).rename_axis("reason").reset_index())), "Quarantined rows per reason, all tables."))
    if ctx.exists(REJECTED_FILES):
        rejected = ctx.read(REJECTED_FILES).orderBy("source", "file").limit(ctx.settings.report.top_rows + 1).collect()
        if rejected:
            section.facts.append(("files rejected at ingest", number(ctx.lake.rows(REJECTED_FILES))))
            section.tables.append(Table(
                "Files rejected at ingest", ("source", "file", "reason"),
                tuple((r["source"], r["file"].rsplit("/", 1)[-1], r["reason"])
                      for r in rejected[: ctx.settings.report.top_rows]),
                caption=f"Files that could not be read as rows (all of them are in {REJECTED_FILES}); "
                        "every other file was ingested. Fix or re-export a file and deliver it under a new name."))
    gates = [(stage, q) for stage, r in history.items() for q in r.quality]
    if gates:
        failed = sum(not q.success for _, q in gates)
        section.facts.append(("quality gates passed", f"{len(gates) - failed} of {len(gates)}"))
        section.tables.append(Table(
            "Data-quality gates of this run", ("stage", "table", "expectations", "failed", "seconds", "result"),
            tuple((stage, q.table, number(len(q.outcomes)), number(len(q.failed)), f"{q.seconds:.1f}",
                   "passed" if q.success else "failed: " + "; ".join(o.describe() for o in q.failed))
                  for stage, q in gates),
            numeric=(False, False, True, True, True, False)))
    docs = _data_docs(ctx)
    if docs:
        section.links.append(("Data Docs: every gate's expectations and results", docs))
    return section, {str(k): int(v) for k, v in by_reason.items()}, {
        r.table.replace("silver.", "quarantine."): int(r.quarantined_rows) for r in frame.itertuples()}


def _quarantine_reasons(ctx: StageContext, tables: list[str]) -> pd.DataFrame:
    """Quarantined rows per (table, reason) over every quarantine table, in one Spark job."""
    if not tables:
        return pd.DataFrame(columns=["table", "reason", "rows"])
    parts = [ctx.read(t).select(F.lit(t.replace("quarantine.", "silver.")).alias("table"),
                                F.explode_outer("_dq_reasons").alias("reason")) for t in tables]
    union = parts[0]
    for part in parts[1:]:
        union = union.unionByName(part)
    out = union.groupBy("table", "reason").agg(F.count(F.lit(1)).alias("rows")).toPandas()
    out["reason"] = out["reason"].fillna("(none recorded)")
    return out


def _data_docs(ctx: StageContext) -> str | None:
    from crm_spark.quality import quality_dir

    index = quality_dir(ctx.settings) / "gx" / "uncommitted" / "data_docs" / "local_site" / "index.html"
    ran = any(r.quality for r in ctx.history)
    if not ran and not index.exists():
        return None
    lake = ctx.settings.paths.lake.removeprefix("file://")
    if "://" not in lake:  # the report sits in <lake>/_reports: a relative link survives moving the lake
        return os.path.relpath(index, os.path.join(os.path.abspath(lake), "_reports"))
    return index.resolve().as_uri()


def _customers(ctx: StageContext, as_of: date | None) -> Section:
    section = Section("customers", "Customer base",
                      "Recency, frequency and monetary value (RFM) of every customer as of the report date, the value "
                      "tiers and the named RFM segments of gold.customer_features.")
    features, why = _partition(ctx, "gold.customer_features", as_of, "features")
    if features is None:
        section.skipped = why
        return section
    counts = features.groupBy("value_tier", "rfm_segment").agg(
        F.count(F.lit(1)).alias("customers"), F.sum("monetary").alias("monetary"),
        F.sum(F.col("has_orders").cast("int")).alias("buyers")).toPandas()
    total = int(counts["customers"].sum())
    buyers = int(counts["buyers"].sum())
    sample = _sample(ctx, features.where(F.col("has_orders")), buyers).select(
        "recency_days", "frequency", "monetary").toPandas()
    section.facts += [("customers", number(total)), ("with an order", number(buyers)),
                      ("total spend to date", number(counts["monetary"].sum())),
                      ("median days since last order", number(float(sample["recency_days"].median()) if len(sample) else None))]
    if len(sample):
        section.figures.append(Figure("RFM distribution", png(figs.rfm_figure(sample)),
                                      _sampled(len(sample), buyers, "customers with an order")))
    tiers = counts.groupby("value_tier", as_index=False)["customers"].sum()
    section.figures.append(Figure("Value tiers", png(figs.counts_figure(
        tiers, label="value_tier", title="Customers per value tier", order=("high", "mid", "low"))),
        "High: monetary at or above the tier's percentile of buyers; low: below the lower one (features.value_tiers)."))
    segments = counts.groupby("rfm_segment", as_index=False).agg(customers=("customers", "sum"), monetary=("monetary", "sum"))
    section.figures.append(Figure("RFM segments", png(figs.counts_figure(
        segments[["rfm_segment", "customers"]], label="rfm_segment", title="Customers per RFM segment")),
        "Named from the r, f and m quintile scores (features.rfm_segments)."))
    segments = segments.sort_values("monetary", ascending=False)
    spend = float(segments["monetary"].sum()) or 1.0
    section.tables.append(Table(
        "Spend to date per RFM segment", ("RFM segment", "customers", "spend to date", "share of spend"),
        tuple((r.rfm_segment, number(r.customers), number(r.monetary), percent(r.monetary / spend))
              for r in segments.itertuples()), numeric=(False, True, True, True)))
    return section


def _sample(ctx: StageContext, df: DataFrame, rows: int) -> DataFrame:
    cap = ctx.settings.report.sample_customers
    return df if rows <= cap else df.sample(fraction=min(1.0, 1.2 * cap / rows), seed=ctx.settings.report.seed).limit(cap)


def _sampled(shown: int, total: int, what: str) -> str:
    return f"All {total:,} {what}." if shown >= total else f"A random sample of {shown:,} of the {total:,} {what}."


def _opened(ctx: StageContext, as_of: date | None, runs: _Runs, stage: str, table: str, title: str,
            intro: str) -> tuple[Section, DataFrame | None]:
    """A model stage's section and its table's rows of the report date; without rows, the section says why."""
    section = Section(stage, title, intro)
    rows, why = _partition(ctx, table, as_of, stage)
    if rows is None:
        section.skipped = _skipped_in_run(runs.history, stage) or why
    return section, rows


def _with_run(section: Section, runs: _Runs, stage: str) -> Section:
    """``section`` with the figures the stage's MLflow run logged and where that run is."""
    section.figures += runs.figures(stage)
    section.notes += runs.link(stage)
    return section


def _segment(ctx: StageContext, as_of: date | None, runs: _Runs) -> Section:
    section, profiles = _opened(ctx, as_of, runs, "segment", "gold.segment_profiles", "Segments",
        "Customers clustered (k-means) on scaled behaviour features; each segment is named from how its "
        "profile differs from the average customer.")
    if profiles is None:
        return section
    data = profiles.select("segment_name", "customers", "customer_share", "revenue_share", "recency_days", "frequency",
                           "monetary").toPandas().sort_values("customers", ascending=False)
    metrics = runs.metrics("segment")
    section.facts += [("segments (k)", number(metrics.get("k", len(data)))),
                      ("silhouette (squared Euclidean)", number(metrics.get("silhouette"))),
                      ("customers clustered", number(data["customers"].sum()))]
    section.tables.append(Table(
        "Segments", ("segment", "customers", "share of customers", "share of revenue", "mean recency (days)",
                     "mean orders", "mean spend"),
        tuple((r.segment_name, number(r.customers), percent(r.customer_share), percent(r.revenue_share),
               number(r.recency_days), number(r.frequency), number(r.monetary)) for r in data.itertuples()),
        numeric=(False, True, True, True, True, True, True),
        caption=f"k counts the clusters; customers without an order (if any) are not clustered: they form the "
                f"'{ctx.settings.segment.prospect_segment}' group."))
    return _with_run(section, runs, "segment")


def _basket(ctx: StageContext, as_of: date | None, runs: _Runs) -> Section:
    section, rules = _opened(ctx, as_of, runs, "basket", "gold.basket_rules", "Basket rules and cross-sell",
        "Products bought together (FPGrowth association rules) and the cross-sell suggestions they give "
        "each customer.")
    if rules is None:
        return section
    top = ctx.settings.report.top_rows
    shown = rules.orderBy(F.desc("lift"), F.desc("confidence"), F.desc("support"), "consequent").limit(top).select(
        F.coalesce(F.array_join("antecedent_names", " + "), F.array_join("antecedent", " + ")).alias("antecedent"),
        F.coalesce("consequent_name", "consequent").alias("consequent"), "support", "confidence", "lift").toPandas()
    metrics = runs.metrics("basket")
    section.facts += [("baskets mined", number(metrics.get("baskets"))), ("rules", number(metrics.get("rules"))),
                      ("mean lift", number(metrics.get("rules_mean_lift"))),
                      ("customers with cross-sell suggestions", number(metrics.get("cross_sell_customers")))]
    if len(shown):
        section.tables.append(Table(
            f"Top {len(shown)} rules by lift", ("if a basket holds", "it also holds", "support", "confidence", "lift"),
            tuple((r.antecedent, r.consequent, percent(r.support), percent(r.confidence), f"{r.lift:.2f}")
                  for r in shown.itertuples()), numeric=(False, False, True, True, True),
            caption="Support: share of baskets holding every item of the rule. Confidence: share of the baskets holding "
                    "the left side that also hold the right. Lift: confidence over the right side's own share."))
    else:
        section.notes.append("no rule passed the configured support and confidence")
    return _with_run(section, runs, "basket")


def _churn(ctx: StageContext, as_of: date | None, runs: _Runs) -> Section:
    section, scores = _opened(ctx, as_of, runs, "churn", "gold.churn_scores", "Churn risk",
        "Each customer's probability of making no purchase in the churn horizon, from the registered "
        "champion model, with the models compared on a later evaluation date.")
    if scores is None:
        return section
    settings = ctx.settings
    bands = scores.groupBy("risk_band").agg(F.count(F.lit(1)).alias("customers"),
                                            F.avg("churn_probability").alias("mean")).toPandas()
    total = int(bands["customers"].sum())
    order = [b.band for b in settings.churn.risk_bands]
    section.figures.append(Figure("Risk bands", png(figs.counts_figure(
        bands[["risk_band", "customers"]], label="risk_band", title="Customers per churn risk band", order=order)),
        "Bands from churn.risk_bands: " + ", ".join(f"{b.band} from {b.min_probability:.0%}" for b in settings.churn.risk_bands)))
    probabilities = _sample(ctx, scores, total).select("churn_probability").toPandas()["churn_probability"].to_numpy()
    band_frame = pd.DataFrame([{"band": b.band, "min_probability": b.min_probability} for b in settings.churn.risk_bands])
    section.figures.append(Figure("Churn probability", png(figs.probability_figure(probabilities, band_frame)),
                                  _sampled(len(probabilities), total, "customers scored")))
    top = settings.report.top_rows
    at_risk = scores.orderBy(F.desc("churn_probability"), "customer_id").limit(top).select(
        "customer_id", "churn_probability", "risk_band", "top_feature_1", "top_feature_2", "top_feature_3",
        "model_kind", "model_version").toPandas()
    metrics = runs.metrics("churn")
    kind, version = (str(at_risk["model_kind"].iloc[0]), at_risk["model_version"].iloc[0]) if len(at_risk) else ("-", None)
    section.facts += [("customers scored", number(total)), ("champion model", f"{kind} v{number(version)}"),
                      *[(f"{b} risk", number(int(bands.loc[bands["risk_band"] == b, "customers"].sum()))) for b in order]]
    section.tables.append(Table(
        f"Top {len(at_risk)} customers at risk", ("customer id", "churn probability", "band", "main drivers"),
        tuple((r.customer_id, percent(r.churn_probability), r.risk_band,
               ", ".join(d.replace("_", " ") for d in (r.top_feature_1, r.top_feature_2, r.top_feature_3) if d))
              for r in at_risk.itertuples()),
        numeric=(False, True, False, False),
        caption="Customer ids as in the source systems (names, e-mails and phones never leave bronze)."))
    kinds = [k for k in ("logistic_regression", "gbt") if f"{k}.roc_auc" in metrics]
    if kinds:
        rows = [(k.replace("_", " "), *(number(metrics.get(f"{k}.{m}")) for m in ("roc_auc", "pr_auc", "log_loss", "brier",
                                                                                    "lift_top_decile"))) for k in kinds]
        if "baseline_recency.roc_auc" in metrics:
            rows.append(("baseline: recency alone", number(metrics["baseline_recency.roc_auc"]), "-", "-", "-", "-"))
        section.tables.append(Table(
            "Champion and challenger on the evaluation date", ("model", "ROC-AUC", "PR-AUC", "log loss", "Brier",
                                                                "lift in top decile"),
            tuple(rows), numeric=(False, True, True, True, True, True),
            caption="The champion alias moves to a new model version only when it beats the current champion on the "
                    "same holdout."))
    return _with_run(section, runs, "churn")


def _recommend(ctx: StageContext, as_of: date | None, runs: _Runs) -> Section:
    section, recs = _opened(ctx, as_of, runs, "recommend", "gold.recommendations", "Recommendations",
        "Top products per customer from implicit feedback (ALS on purchases, carts and views), never a "
        "product the customer already bought; customers without history get popular products of their "
        "preferred categories.")
    if recs is None:
        return section
    by_source = recs.where(F.col("rank") == 1).groupBy("source").agg(F.count(F.lit(1)).alias("customers")).toPandas()
    metrics = runs.metrics("recommend")
    customers = int(by_source["customers"].sum())
    section.facts += [("customers with recommendations", number(customers)),
                      ("catalogue coverage", percent(metrics["catalogue_coverage"]) if "catalogue_coverage" in metrics else "-"),
                      *[(f"lists from {r.source}", number(r.customers)) for r in by_source.sort_values("source").itertuples()]]
    methods = [("ALS (this model)", ""), ("popularity", "baseline.popularity."), ("item co-occurrence", "baseline.cooccurrence.")]
    names = ("precision_at_k", "recall_at_k", "map_at_k", "ndcg_at_k")
    rows = [(label, *(number(metrics.get(prefix + m)) for m in names)) for label, prefix in methods
            if prefix + "ndcg_at_k" in metrics]
    k = ctx.settings.recommend.k
    if rows:
        section.tables.append(Table(
            f"Holdout ranking quality at k = {k}", ("method", f"precision@{k}", f"recall@{k}", f"MAP@{k}", f"NDCG@{k}"),
            tuple(rows), numeric=(False, True, True, True, True),
            caption=f"Measured on {number(metrics.get('holdout_customers'))} customers who bought a product new to them "
                    f"in the last {ctx.settings.recommend.holdout_days} days, trained on the data before."))
    sample_ids = recs.where(F.col("rank") == 1).orderBy(F.xxhash64("customer_id"), "customer_id").limit(5).select("customer_id")
    sample = (recs.join(sample_ids, "customer_id").where(F.col("rank") <= 5)
              .select("customer_id", "rank", F.coalesce("product_name", "product_id").alias("product"), "category", "score",
                      "source").toPandas().sort_values(["customer_id", "rank"]))
    section.tables.append(Table(
        "A sample of lists (5 customers, top 5 each)", ("customer id", "rank", "product", "category", "score", "source"),
        tuple((r.customer_id, str(r.rank), r.product, r.category or "-", number(r.score), r.source)
              for r in sample.itertuples()), numeric=(False, True, False, False, True, False)))
    return _with_run(section, runs, "recommend")


def _clv(ctx: StageContext, as_of: date | None, runs: _Runs) -> Section:
    section, clv = _opened(ctx, as_of, runs, "clv", "gold.clv", "Customer lifetime value",
        "Predicted spend per customer over the next horizon (P(purchase) x expected spend if they buy) "
        "and CLV = margin x predicted spend, with the model measured against simple baselines on a holdout.")
    if clv is None:
        return section
    cfg = ctx.settings.clv
    deciles = clv.groupBy("value_decile").agg(F.count(F.lit(1)).alias("customers"), F.sum("predicted_spend").alias("spend"),
                                              F.sum("clv").alias("clv"), F.avg("p_purchase").alias("p")).toPandas()
    deciles = deciles.sort_values("value_decile")
    total = int(deciles["customers"].sum())
    spend = float(deciles["spend"].sum()) or 1.0
    predicted = _sample(ctx, clv, total).select("predicted_spend").toPandas()["predicted_spend"].to_numpy(dtype=float)
    metrics = runs.metrics("clv")
    section.facts += [("customers", number(total)), (f"predicted spend, next {cfg.horizon_days} days", number(spend)),
                      ("total CLV (margin x spend)", number(deciles["clv"].sum())),
                      ("share of spend in the top decile",
                       percent(float(deciles.loc[deciles["value_decile"] == 1, "spend"].sum()) / spend))]
    section.figures.append(Figure("Predicted spend", png(figs.spend_figure(predicted, horizon_days=cfg.horizon_days)),
                                  _sampled(len(predicted), total, "customers")))
    section.tables.append(Table(
        "Value deciles (1 = highest predicted spend)", ("decile", "customers", "mean P(purchase)", "predicted spend",
                                                        "share of spend", "CLV"),
        tuple((str(r.value_decile), number(r.customers), percent(r.p), number(r.spend), percent(r.spend / spend),
               number(r.clv)) for r in deciles.itertuples()), numeric=(True,) * 6))
    top = ctx.settings.report.top_rows
    best = clv.orderBy(F.desc("clv"), "customer_id").limit(top).select("customer_id", "predicted_spend", "p_purchase",
                                                                        "clv").toPandas()
    section.tables.append(Table(
        f"Top {len(best)} customers by CLV", ("customer id", "predicted spend", "P(purchase)", "CLV"),
        tuple((r.customer_id, number(r.predicted_spend), percent(r.p_purchase), number(r.clv)) for r in best.itertuples()),
        numeric=(False, True, True, True)))
    methods = [("model", ""), ("last period's spend", "baseline.last_period."), ("historical rate", "baseline.historical_rate."),
               ("BG/NBD + Gamma-Gamma", "baseline.bgnbd.")]
    names = ("mae", "rmse", "spearman", "gini", "total_ratio")
    rows = [(label, *(number(metrics.get(prefix + m)) for m in names)) for label, prefix in methods if prefix + "mae" in metrics]
    if rows:
        section.tables.append(Table(
            "Holdout: the model against its baselines", ("method", "MAE", "RMSE", "Spearman", "Gini", "predicted / actual total"),
            tuple(rows), numeric=(False, True, True, True, True, True),
            caption=f"Evaluated on {number(metrics.get('evaluated_customers'))} customers against their actual spend in the "
                    f"{cfg.horizon_days} days before the report date. Lower MAE and RMSE, higher Spearman and Gini are better."))
    return _with_run(section, runs, "clv")

