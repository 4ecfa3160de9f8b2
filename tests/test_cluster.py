"""The jobs under spark-submit on a real Spark standalone cluster (a master and one worker on
loopback, started from the pip package's own scripts, stopped by their ids).

`make dist`'s zip is the only copy of crm_spark the executors get (--py-files): they run a Python
that sees the suite's dependencies but not the installed package. `jobs/generate.py` writes a
small dataset through the cluster's executor and `jobs/pipeline.py` runs every stage on it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyspark
import pytest
from deltalake import DeltaTable
from services import free_port, start, stop, wait_until

from crm_spark.stages import STAGES

pytestmark = [pytest.mark.slow, pytest.mark.cluster]

ROOT = Path(__file__).resolve().parent.parent
SPARK_HOME = Path(pyspark.__file__).parent
AS_OF = "2025-03-15"  # before the last day generated: churn and CLV need the orders of their dates
GOLD = ("customer_features", "customer_segments", "segment_profiles", "basket_rules", "cross_sell",
        "churn_scores", "recommendations", "clv")


@dataclass
class Cluster:
    url: str
    ui: str
    work: Path


def _spark_env() -> dict[str, str]:
    env = {**os.environ, "SPARK_HOME": str(SPARK_HOME), "SPARK_LOCAL_IP": "127.0.0.1"}
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "PYSPARK_PYTHON", "PYSPARK_DRIVER_PYTHON", "PYTHONPATH"):
        env.pop(name, None)
    return env


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """spark://127.0.0.1:<port> with one alive worker (2 cores, 2 GiB)."""
    logs = tmp_path_factory.mktemp("cluster")
    port, ui = free_port(), free_port()
    spark_class = str(SPARK_HOME / "bin" / "spark-class")
    master = start([spark_class, "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1", "--port", str(port),
                    "--webui-port", str(ui)], logs / "master.log", env=_spark_env())
    url, api = f"spark://127.0.0.1:{port}", f"http://127.0.0.1:{ui}/json/"
    worker = start([spark_class, "org.apache.spark.deploy.worker.Worker", url, "--host", "127.0.0.1", "--cores", "2",
                    "--memory", "2g", "--webui-port", str(free_port()), "--work-dir", str(logs / "work")],
                   logs / "worker.log", env=_spark_env())

    def ready() -> bool:
        try:
            with urllib.request.urlopen(api, timeout=2) as response:
                return json.load(response).get("aliveworkers", 0) >= 1
        except OSError:
            return False

    try:
        wait_until(ready, procs=[master, worker], timeout=90, what="the standalone cluster", log=logs / "worker.log")
        yield Cluster(url, api, logs / "work")
    finally:
        stop(worker, timeout=20)
        stop(master, timeout=20)


@pytest.fixture(scope="module")
def package_zip() -> Path:
    built = subprocess.run(["make", "-s", "dist"], cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
    assert built.returncode == 0, built.stdout[-2000:] + built.stderr[-2000:]
    return ROOT / "dist" / "crm_spark.zip"


@pytest.fixture(scope="module")
def executor_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Python with the suite's dependencies (this environment's site-packages on its path, without
    processing its .pth files) but not crm_spark, which is installed here as an editable .pth."""
    venv = tmp_path_factory.mktemp("executor_python")
    subprocess.run([sys._base_executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)  # noqa: SLF001
    site = next((venv / "lib").glob("python3*/site-packages"))
    (site / "suite_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    python = venv / "bin" / "python"
    check = subprocess.run([str(python), "-c", "import pandas, pyarrow, numpy, pyspark\nimport crm_spark"],
                           cwd=venv, env=_spark_env(), capture_output=True, text=True, timeout=120, check=False)
    assert "No module named 'crm_spark'" in check.stderr, check.stderr
    return python


def _submit(cluster: Cluster, package_zip: Path, executor_python: Path, job: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**_spark_env(), "CRM_SPARK_PII_KEY": "cluster-test-key"}
    command = [
        str(SPARK_HOME / "bin" / "spark-submit"), "--master", cluster.url, "--py-files", str(package_zip),
        "--conf", f"spark.pyspark.python={executor_python}", "--conf", f"spark.pyspark.driver.python={sys.executable}",
        "--driver-memory", "2g", "--executor-memory", "1g",
        str(ROOT / "jobs" / job), "--config", str(ROOT / "tests" / "conf" / "cluster.yaml"), *args,
    ]
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)


def test_generate_and_every_stage_run_under_spark_submit(
    cluster: Cluster, package_zip: Path, executor_python: Path, tmp_path: Path,
) -> None:
    raw, lake = tmp_path / "raw", tmp_path / "lake"

    generated = _submit(cluster, package_zip, executor_python, "generate.py", "--customers", "150", "--seed", "3",
                        "--out", str(raw), "--start", "2024-06-01", "--end", "2025-03-31")
    assert generated.returncode == 0, generated.stderr[-3000:]
    assert (raw / "_truth" / "archetypes.csv").exists()

    piped = _submit(cluster, package_zip, executor_python, "pipeline.py", "--raw", str(raw), "--lake", str(lake),
                    "--as-of", AS_OF)
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
        rows = DeltaTable(str(lake / "gold" / table)).to_pyarrow_table().num_rows
        assert rows > 0, f"gold.{table} is empty"
    assert list((lake / "_reports").glob("report-*.html"))

    # The work ran on the cluster's executor (with the zip, not an installed package).
    with urllib.request.urlopen(cluster.ui, timeout=5) as response:
        apps = json.load(response)["completedapps"]
    assert len(apps) == 2 and all(a["cores"] >= 1 for a in apps), apps
    stderr = [p.read_text(errors="replace") for p in cluster.work.glob("app-*/*/stderr")]
    assert stderr and not any("ModuleNotFoundError" in text for text in stderr)
