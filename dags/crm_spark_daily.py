"""Airflow DAG: the crm-spark pipeline, one task per built stage, run for the logical date.

The tasks and their order come from the stage declarations (:data:`crm_spark.stages.STAGES`):
a task per built stage, and an edge wherever one stage writes a table another reads. Each task
is `spark-submit jobs/<stage>.py --config <conf> --as-of {{ ds }}` (ingest and refine are
incremental and take no date). Catchup is on: a new deployment, or `airflow backfill create
--dag-id crm_spark_daily --from-date 2025-01-01 --to-date 2025-01-31`, computes each past date
with the same results a run on that day would have given, since no stage calls "today"; one date
runs at a time because the stages append and merge into the same tables.

spark-submit runs through a BashOperator rather than the Spark provider's SparkSubmitOperator:
the command is the one the README documents for a cluster, it needs no provider package or
Airflow connection on the scheduler, and the same DAG drives local Spark, a standalone master,
YARN or Kubernetes through one Variable. The Variables (read when a task runs, not when the DAG
is parsed): `crm_spark_home` (the project folder on the workers, holding jobs/ and conf/),
`crm_spark_submit` (spark-submit with --master and the rest) and `crm_spark_config` (the overlay,
e.g. conf/cluster.yaml). Environment: `CRM_SPARK_DAG_START` (YYYY-MM-DD) is the first logical date,
`CRM_SPARK_DAG_RETRY_DELAY` the seconds before a failed task is retried (600).
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta

from airflow.providers.standard.operators.bash import BashOperator
from airflow.sdk import DAG

from crm_spark.stages import dependencies, plan

HOME = "{{ var.value.get('crm_spark_home', '/opt/crm-spark') }}"
SUBMIT = "{{ var.value.get('crm_spark_submit', 'spark-submit') }}"
CONFIG = "{{ var.value.get('crm_spark_config', 'conf/cluster.yaml') }}"

with DAG(
    dag_id="crm_spark_daily",
    description="raw CRM exports -> Delta lakehouse, features, models, report",
    start_date=datetime.fromisoformat(os.environ.get("CRM_SPARK_DAG_START", "2025-01-01")),
    schedule="@daily",
    catchup=True,
    max_active_runs=1,
    default_args={
        "owner": "crm-spark",
        "retries": 2,
        "retry_delay": timedelta(seconds=int(os.environ.get("CRM_SPARK_DAG_RETRY_DELAY", "600"))),
    },
    tags=["crm-spark"],
) as dag:
    specs = plan(None)
    tasks = {
        spec.name: BashOperator(
            task_id=spec.name,
            bash_command=f"cd {HOME} && {SUBMIT} jobs/{spec.name}.py --config {CONFIG}"
            + (" --as-of {{ ds }}" if spec.dated else ""),
        )
        for spec in specs
    }
    for upstream, downstream in dependencies(specs):
        tasks[upstream] >> tasks[downstream]
