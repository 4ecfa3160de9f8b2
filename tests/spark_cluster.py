"""The one run through a real Spark standalone cluster that the cluster and Airflow tests share
(fixtures registered in conftest.py): a master and a 2-core worker on loopback, started from the
pip package's own scripts and stopped by their ids; `make dist`'s zip as the only copy of
crm_spark the executors get (--py-files: they run a Python that sees the suite's dependencies but
not the installed package); `jobs/generate.py` writing a small dataset through the cluster and
`jobs/pipeline.py` running every stage on it as of SUBMITTED_AS_OF."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import pyspark
import pytest
import yaml
from services import append_to_path, free_port, start, stop, wait_until

ROOT = Path(__file__).resolve().parent.parent
SPARK_HOME = Path(pyspark.__file__).parent
OVERLAY = ROOT / "tests" / "conf" / "cluster.yaml"
GENERATED_FROM, GENERATED_TO = date(2024, 6, 1), date(2025, 3, 31)
# The Airflow test runs a later date on the same lake, as a later scheduled run would: one churn
# and CLV horizon later (the overlay's), so that its training dates are dates this run computed
# features for; before the last day generated (churn and CLV need the orders of their dates).
_OVERLAY_SETTINGS = yaml.safe_load(OVERLAY.read_text())
_HORIZONS = {stage: _OVERLAY_SETTINGS[stage]["horizon_days"] for stage in ("churn", "clv")}
assert len(set(_HORIZONS.values())) == 1, f"{OVERLAY.name}: churn and clv need one horizon here, not {_HORIZONS}"
HORIZON_DAYS = _HORIZONS["churn"]
SUBMITTED_AS_OF = date(2025, 1, 29)
LATER_AS_OF = SUBMITTED_AS_OF + timedelta(days=HORIZON_DAYS)


@dataclass
class Cluster:
    url: str
    api: str
    work: Path


@dataclass
class SubmittedRun:
    cluster: Cluster
    raw: Path
    lake: Path
    generated: subprocess.CompletedProcess[str]
    piped: subprocess.CompletedProcess[str]


def spark_env() -> dict[str, str]:
    """This environment without what would leak the suite's own setup into a submitted job."""
    env = {**os.environ, "SPARK_HOME": str(SPARK_HOME), "SPARK_LOCAL_IP": "127.0.0.1"}
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "PYSPARK_PYTHON", "PYSPARK_DRIVER_PYTHON", "PYTHONPATH"):
        env.pop(name, None)
    return env


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """spark://127.0.0.1:<port> with one alive worker (2 cores, 2 GiB)."""
    logs = tmp_path_factory.mktemp("cluster")
    port, ui = free_port(), free_port()
    spark_class = str(SPARK_HOME / "bin" / "spark-class")
    master = start([spark_class, "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1", "--port", str(port),
                    "--webui-port", str(ui)], logs / "master.log", env=spark_env())
    url, api = f"spark://127.0.0.1:{port}", f"http://127.0.0.1:{ui}/json/"
    worker = start([spark_class, "org.apache.spark.deploy.worker.Worker", url, "--host", "127.0.0.1", "--cores", "2",
                    "--memory", "2g", "--webui-port", str(free_port()), "--work-dir", str(logs / "work")],
                   logs / "worker.log", env=spark_env())

    def ready() -> bool:
        try:
            with urllib.request.urlopen(api, timeout=2) as response:
                return json.load(response).get("aliveworkers", 0) >= 1
        except (OSError, ValueError):  # not listening yet; or a starting master's HTML page, not its JSON
            return False

    try:
        wait_until(ready, procs=[master, worker], timeout=90, what="the standalone cluster", log=logs / "worker.log")
        yield Cluster(url, api, logs / "work")
    finally:
        stop(worker, timeout=20)
        stop(master, timeout=20)


@pytest.fixture(scope="session")
def package_zip() -> Path:
    built = subprocess.run(["make", "-s", "dist"], cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
    assert built.returncode == 0, built.stdout[-2000:] + built.stderr[-2000:]
    return ROOT / "dist" / "crm_spark.zip"


@pytest.fixture(scope="session")
def executor_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Python with the suite's dependencies (this environment's site-packages on its path, without
    processing its .pth files) but not crm_spark, which is installed here as an editable .pth."""
    venv = tmp_path_factory.mktemp("executor_python")
    subprocess.run([sys._base_executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)  # noqa: SLF001
    append_to_path(venv, "suite_dependencies", sysconfig.get_paths()["purelib"])
    python = venv / "bin" / "python"
    check = subprocess.run([str(python), "-c", "import pandas, pyarrow, numpy, pyspark\nimport crm_spark"],
                           cwd=venv, env=spark_env(), capture_output=True, text=True, timeout=120, check=False)
    assert "No module named 'crm_spark'" in check.stderr, check.stderr
    return python


def submit(cluster: Cluster, package_zip: Path, executor_python: Path, job: str, *args: str) -> subprocess.CompletedProcess[str]:
    command = [
        str(SPARK_HOME / "bin" / "spark-submit"), "--master", cluster.url, "--py-files", str(package_zip),
        "--conf", f"spark.pyspark.python={executor_python}", "--conf", f"spark.pyspark.driver.python={sys.executable}",
        "--driver-memory", "2g", "--executor-memory", "1g",
        str(ROOT / "jobs" / job), "--config", str(OVERLAY), *args,
    ]
    return subprocess.run(command, cwd=ROOT, env={**spark_env(), "CRM_SPARK_PII_KEY": "cluster-test-key"},
                          capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="session")
def submitted(cluster: Cluster, package_zip: Path, executor_python: Path,
              tmp_path_factory: pytest.TempPathFactory) -> SubmittedRun:
    """150 generated customers (2024-06-01..2025-03-31) and every stage as of SUBMITTED_AS_OF,
    both submitted to the cluster; the tests assert on what came back."""
    root = tmp_path_factory.mktemp("submitted")
    raw, lake = root / "raw", root / "lake"
    generated = submit(cluster, package_zip, executor_python, "generate.py", "--customers", "150", "--seed", "3",
                       "--out", str(raw), "--start", GENERATED_FROM.isoformat(), "--end", GENERATED_TO.isoformat())
    piped = submit(cluster, package_zip, executor_python, "pipeline.py", "--raw", str(raw), "--lake", str(lake),
                   "--as-of", SUBMITTED_AS_OF.isoformat()) if generated.returncode == 0 else generated
    for name, ran in (("generate", generated), ("pipeline", piped)):  # each stage's progress and seconds, kept
        (root / f"{name}.log").write_text(ran.stdout + ran.stderr)
    return SubmittedRun(cluster, raw, lake, generated, piped)
