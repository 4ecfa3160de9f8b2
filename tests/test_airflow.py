"""The Airflow DAG, really run: Airflow in its own virtualenv (cached under ~/.cache/crm-spark, so
the suite's environment is untouched), the DAG imported without errors with the task graph of the
stage declarations, and `airflow dags test` for one logical date with every task spark-submitting
its job to local Spark, then the gold tables of that date read back.

The run continues the lake the cluster test's run wrote as of an earlier date (as the next
scheduled run would): ingest and refine find nothing new, every dated stage computes the new date."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
from deltalake import DeltaTable
from services import append_to_path
from spark_cluster import LATER_AS_OF, OVERLAY, SUBMITTED_AS_OF, SubmittedRun, spark_env

from crm_spark.stages import dependencies, plan

pytestmark = [pytest.mark.slow, pytest.mark.cluster]  # it continues the cluster run's lake

ROOT = Path(__file__).resolve().parent.parent
AIRFLOW_VERSION = "3.3.2"
VENV = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "crm-spark" / f"airflow-{AIRFLOW_VERSION}-py311"
LOGICAL_DATE = LATER_AS_OF  # one churn and CLV horizon after the cluster run's date
DAG_ID = "crm_spark_daily"


@pytest.fixture(scope="module")
def airflow_python() -> Path:
    """The Airflow virtualenv's python, created (once per machine) when missing. The DAG imports
    crm_spark's declarations from this checkout, and their dependencies from the suite's
    site-packages, both appended to Airflow's path (Airflow's own packages come first)."""
    python = VENV / "bin" / "python"
    if not (VENV / ".installed").exists():
        subprocess.run([sys._base_executable, "-m", "venv", "--clear", str(VENV)], check=True, timeout=300)  # noqa: SLF001
        # uv (installed with the suite by `make install`) resolves and downloads in parallel: Airflow's
        # ~150 packages in 6 s on an empty cache, where pip took minutes.
        uv = Path(sys.executable).parent / "uv"
        # --compile-bytecode: each `airflow` command and task imports Airflow; without the .pyc files
        # (uv writes none by default, and PYTHONDONTWRITEBYTECODE stops Python writing them) every one
        # compiled it from source again (`airflow version` 4.9 s -> 1.8 s).
        command = ([str(uv), "pip", "install", "--compile-bytecode", "--python", str(python)] if uv.exists()
                   else [str(python), "-m", "pip", "install"])
        install = subprocess.run([*command, "-q", f"apache-airflow=={AIRFLOW_VERSION}"],
                                 capture_output=True, text=True, timeout=900, check=False)
        assert install.returncode == 0, install.stderr[-3000:]
        (VENV / ".installed").touch()
    append_to_path(VENV, "crm_spark_checkout", ROOT, sysconfig.get_paths()["purelib"])
    return python


def _airflow_env(home: Path, **variables: str) -> dict[str, str]:
    env = {k: v for k, v in spark_env().items() if not k.startswith("AIRFLOW")}
    env.update({
        "AIRFLOW_HOME": str(home), "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "false", "AIRFLOW__CORE__UNIT_TEST_MODE": "false",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(home / "logs"),
        "PATH": f"{VENV / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
    })
    env.update({f"AIRFLOW_VAR_{k.upper()}": v for k, v in variables.items()})
    return env


def _airflow(python: Path, env: dict[str, str], *args: str, timeout: int = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(python.parent / "airflow"), *args], env=env, capture_output=True, text=True,
                          timeout=timeout, cwd=env["AIRFLOW_HOME"], check=False)


GRAPH = """
import json
import os
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(dag_folder=os.environ["AIRFLOW__CORE__DAGS_FOLDER"])
dag = bag.get_dag("crm_spark_daily")
print(json.dumps({
    "errors": {k: str(v) for k, v in bag.import_errors.items()},
    "tasks": {t.task_id: sorted(t.upstream_task_ids) for t in dag.tasks} if dag else None,
    "commands": {t.task_id: t.bash_command for t in dag.tasks} if dag else None,
    "catchup": dag.catchup if dag else None,
    "retries": sorted({t.retries for t in dag.tasks}) if dag else None,
}))
"""


def test_the_dag_imports_and_runs_every_stage_for_its_logical_date(
    airflow_python: Path, submitted: SubmittedRun, tmp_path: Path,
) -> None:
    assert submitted.piped.returncode == 0, "the cluster run this one continues failed (see test_cluster)"
    assert SUBMITTED_AS_OF < LOGICAL_DATE
    home, raw, lake = tmp_path / "airflow", submitted.raw, tmp_path / "lake"
    home.mkdir()
    shutil.copytree(submitted.lake, lake)  # the cluster test reads its lake as its run left it
    submit = f"{Path(sys.executable).parent / 'spark-submit'} --master local[2] --driver-memory 2g"
    env = _airflow_env(home, crm_spark_home=str(ROOT), crm_spark_submit=submit,
                       crm_spark_config=str(OVERLAY))
    env.update({"CRM_SPARK_DAG_RETRY_DELAY": "1", "CRM_SPARK_RAW": str(raw), "CRM_SPARK_LAKE": str(lake),
                "CRM_SPARK_PII_KEY": "cluster-test-key",  # the key the lake's pseudonyms were made with
                "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable})

    migrated = _airflow(airflow_python, env, "db", "migrate")
    assert migrated.returncode == 0, migrated.stderr[-3000:]
    parsed = subprocess.run([str(airflow_python), "-c", GRAPH], env=env, capture_output=True, text=True,
                            timeout=300, cwd=home, check=False)
    assert parsed.returncode == 0, parsed.stderr[-3000:]
    graph = json.loads(parsed.stdout.strip().splitlines()[-1])
    assert graph["errors"] == {}
    specs = plan(None)
    assert set(graph["tasks"]) == {s.name for s in specs}
    assert {(up, down) for down, ups in graph["tasks"].items() for up in ups} == set(dependencies(specs))
    assert graph["catchup"] is True and graph["retries"] == [2]
    dated = {s.name for s in specs if s.dated}
    for task, command in graph["commands"].items():
        assert f"jobs/{task}.py" in command and ("--as-of {{ ds }}" in command) == (task in dated), command
        # Variables are read when a task runs (templated), not each time the scheduler parses the file.
        assert "{{ var.value.get('crm_spark_submit'" in command, command

    ran = _airflow(airflow_python, env, "dags", "test", DAG_ID, LOGICAL_DATE.isoformat())
    output = ran.stdout + ran.stderr
    (tmp_path / "dags_test.log").write_text(output)  # the whole run, every task's spark-submit output
    assert ran.returncode == 0, output[-4000:]
    assert re.search(rf"DagRun Finished: dag_id={DAG_ID}, logical_date={LOGICAL_DATE}.*state=success", output)
    for task in graph["tasks"]:
        assert f"[DAG TEST] end task task_id={task} " in output, f"task {task} did not run"
    assert "new_state=up_for_retry" not in output and "new_state=failed" not in output
    # Churn and CLV found the feature dates they train and evaluate on in the lake (the cluster run
    # computed them), as a daily run finds the dates earlier runs computed.
    assert "with features's backfill" not in output, re.findall(r".*lacks .* backfill.*", output)

    for table in ("customer_features", "customer_segments", "churn_scores", "recommendations", "clv"):
        found = DeltaTable(str(lake / "gold" / table)).to_pyarrow_table(
            filters=[("as_of_date", "=", LOGICAL_DATE)])
        assert found.num_rows > 0, f"gold.{table} has no rows as of {LOGICAL_DATE}"
    assert list((lake / "_reports").glob(f"report-{LOGICAL_DATE}-*.html"))
