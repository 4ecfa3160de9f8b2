"""Airflow DAG: the crm-spark pipeline, one task per stage, run for the logical date.

Each task is a `spark-submit jobs/<stage>.py --as-of {{ ds }}`, so a backfill
(`airflow dags backfill crm_spark_daily -s 2025-01-01 -e 2025-01-31`) recomputes past dates with
identical results (no stage calls "today"). Set the Airflow Variables `crm_spark_home` (the
project folder on the workers), `crm_spark_submit` (spark-submit command with --master etc.) and
`crm_spark_config` (e.g. conf/cluster.yaml). Stages not built yet are left out of STAGES.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow import DAG
from airflow.models import Variable
from airflow.operators.bash import BashOperator

STAGES = ["ingest", "refine", "features", "segment", "basket", "churn"]

default_args = {
    "owner": "crm-spark",
    "retries": 2,
    "retry_delay": timedelta(minutes=10),
}

with DAG(
    dag_id="crm_spark_daily",
    description="raw CRM exports -> Delta lakehouse, features, models",
    start_date=datetime(2025, 1, 1),
    schedule="@daily",
    catchup=False,
    max_active_runs=1,  # stages append/merge into the same tables: one date at a time
    default_args=default_args,
    tags=["crm-spark"],
) as dag:
    home = Variable.get("crm_spark_home", default_var="/opt/crm-spark")
    submit = Variable.get("crm_spark_submit", default_var="spark-submit")
    config = Variable.get("crm_spark_config", default_var="conf/cluster.yaml")
    previous = None
    for stage in STAGES:
        task = BashOperator(
            task_id=stage,
            bash_command=f"cd {home} && {submit} jobs/{stage}.py --config {config} --as-of {{{{ ds }}}}",
        )
        if previous is not None:
            previous >> task
        previous = task
