"""The jobs under spark-submit on a real Spark standalone cluster: generate and every stage of
`jobs/pipeline.py` (the shared run of tests/spark_cluster.py), with make dist's zip as the
executors' only copy of crm_spark."""

from __future__ import annotations

import json
import urllib.request

import pytest
from deltalake import DeltaTable
from spark_cluster import SUBMITTED_AS_OF, SubmittedRun

from crm_spark.stages import STAGES

pytestmark = [pytest.mark.slow, pytest.mark.cluster]

GOLD = ("customer_features", "customer_segments", "segment_profiles", "basket_rules", "cross_sell",
        "churn_scores", "recommendations", "clv")


def test_generate_and_every_stage_run_under_spark_submit(submitted: SubmittedRun) -> None:
    raw, lake = submitted.raw, submitted.lake
    assert submitted.generated.returncode == 0, submitted.generated.stderr[-3000:]
    assert (raw / "_truth" / "archetypes.csv").exists()
    piped = submitted.piped
    assert piped.returncode == 0, piped.stdout[-3000:] + piped.stderr[-3000:]
    summary = piped.stdout[piped.stdout.index("Summary"):]
    for spec in STAGES:
        if spec.built:
            assert spec.name in summary, spec.name
    assert "skipped" not in summary, summary

    with (raw / "_truth" / "archetypes.csv").open() as handle:
        customers = sum(1 for _ in handle) - 1
    assert DeltaTable(str(lake / "silver" / "customers")).to_pyarrow_table().num_rows == customers
    for table in GOLD:
        rows = DeltaTable(str(lake / "gold" / table)).to_pyarrow_table(
            filters=[("as_of_date", "=", SUBMITTED_AS_OF)]).num_rows
        assert rows > 0, f"gold.{table} has no rows as of {SUBMITTED_AS_OF}"
    assert list((lake / "_reports").glob(f"report-{SUBMITTED_AS_OF}-*.html"))

    # The work ran on the cluster's executor, with the zip and not an installed package.
    with urllib.request.urlopen(submitted.cluster.api, timeout=5) as response:
        apps = [a for a in json.load(response)["completedapps"] if a["name"].startswith("crm-spark")]
    assert len(apps) == 2, apps  # generate and pipeline
    stderr = {p.parent.parent.name: p.read_text(errors="replace") for p in submitted.cluster.work.glob("app-*/*/stderr")}
    assert {a["id"] for a in apps} <= stderr.keys(), (apps, sorted(stderr))  # an executor of each ran
    assert not any("ModuleNotFoundError" in text for text in stderr.values())
