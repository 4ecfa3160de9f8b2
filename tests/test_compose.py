"""docker-compose.yml and docker/, checked statically: this machine has no Docker engine, so the
local cluster is never started here. What can be known without it is checked: the file loads,
every service can be built or pulled, every file it names exists, host ports are unique and bound
to loopback, the hosts conf/docker.yaml names are services, and the image's delta-spark is the
one the pinned pyspark needs."""

from __future__ import annotations

import re
import tomllib
import xml.etree.ElementTree as ET
from pathlib import Path
from urllib.parse import urlparse

import pytest
import yaml

from crm_spark.config import load_settings

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES: dict[str, dict] = COMPOSE["services"]
POM = ET.parse(ROOT / "jvm" / "pom.xml").getroot()
NS = {"m": "http://maven.apache.org/POM/4.0.0"}


def _pom_property(name: str) -> str:
    node = POM.find(f"m:properties/m:{name}", NS)
    assert node is not None and node.text, f"jvm/pom.xml has no property {name}"
    return node.text.strip()


def _pinned(package: str) -> str:
    for requirement in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]:
        match = re.fullmatch(rf"{re.escape(package)}\s*==\s*([\w.*]+)", requirement)
        if match:
            return match.group(1)
    raise AssertionError(f"pyproject.toml does not pin {package} with ==")


def _dockerfiles() -> dict[str, Path]:
    """service -> the Dockerfile it builds (services that pull an image are left out)."""
    files = {}
    for name, service in SERVICES.items():
        build = service.get("build")
        if build:
            context = ROOT / (build["context"] if isinstance(build, dict) else build)
            files[name] = context / (build.get("dockerfile", "Dockerfile") if isinstance(build, dict) else "Dockerfile")
    return files


def test_the_cluster_has_the_services_the_spec_names() -> None:
    assert {"spark-master", "namenode", "datanode", "postgres", "mlflow", "jupyter", "airflow"} <= SERVICES.keys()
    workers = [name for name, s in SERVICES.items() if "org.apache.spark.deploy.worker.Worker" in s.get("command", [])]
    assert len(workers) == 2
    for worker in workers:
        assert "spark://spark-master:7077" in SERVICES[worker]["command"]
    assert SERVICES["airflow"]["profiles"] == ["airflow"]
    mlflow = " ".join(SERVICES["mlflow"]["command"])
    assert "postgresql+psycopg://" in mlflow and "@postgres:5432/" in mlflow
    assert any(v.endswith(":/mlflow-artifacts") for v in SERVICES["mlflow"]["volumes"])
    assert "--artifacts-destination /mlflow-artifacts" in mlflow


def test_every_service_has_an_image_or_a_build_and_a_health_check() -> None:
    for name, service in SERVICES.items():
        assert service.get("image") or service.get("build"), f"{name} has neither image nor build"
        if "profiles" not in service or service["profiles"] != ["jobs"]:
            assert service.get("healthcheck", {}).get("test"), f"{name} has no health check"
        for dependency, how in (service.get("depends_on") or {}).items():
            assert dependency in SERVICES, f"{name} depends on unknown service {dependency}"
            if how.get("condition") == "service_healthy":
                assert SERVICES[dependency].get("healthcheck"), f"{name} waits for {dependency}'s health check, which it lacks"


def test_every_file_the_compose_file_names_exists() -> None:
    for name, path in _dockerfiles().items():
        assert path.is_file(), f"{name} builds {path}, which does not exist"
    for name, service in SERVICES.items():
        env_file = service.get("env_file")
        for file in [env_file] if isinstance(env_file, str) else env_file or []:
            assert (ROOT / file).is_file(), f"{name}'s env_file {file} does not exist"
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith((".", "/")):
                assert (ROOT / source).exists(), f"{name} mounts {source}, which does not exist"
            else:
                assert source in COMPOSE["volumes"], f"{name} uses undeclared volume {source}"
    for path in _dockerfiles().values():
        for line in path.read_text().splitlines():
            if line.startswith("COPY") and "--from=" not in line:
                for source in line.split()[1:-1]:
                    if not source.startswith("--"):
                        assert (ROOT / source).exists(), f"{path.name} copies {source}, which does not exist"


def test_ports_are_unique_and_bound_to_loopback() -> None:
    published = []
    for name, service in SERVICES.items():
        for port in service.get("ports", []):
            host, host_port, _ = str(port).split(":")
            assert host == "127.0.0.1", f"{name} publishes {port} beyond loopback"
            published.append(host_port)
    assert len(published) == len(set(published)), f"a host port is published twice: {sorted(published)}"


def test_conf_docker_names_compose_services() -> None:
    settings = load_settings(env="docker", environ={})
    uris = [settings.paths.raw, settings.paths.lake, settings.spark.master, settings.tracking.uri.get_secret_value()]
    for uri in uris:
        host = urlparse(uri).hostname
        assert host in SERVICES, f"conf/docker.yaml names {host} ({uri}), which is not a compose service"
    hadoop = dict(line.split("=", 1) for line in (ROOT / "docker" / "hadoop.env").read_text().splitlines()
                  if line and not line.startswith("#"))
    assert urlparse(settings.paths.lake).netloc == urlparse(hadoop["CORE-SITE.XML_fs.defaultFS"]).netloc
    assert settings.lake.engine == "delta-spark"
    master = SERVICES["spark-master"]["command"]
    assert urlparse(settings.spark.master).port == int(master[master.index("--port") + 1])


def test_the_image_bakes_in_the_delta_spark_the_pinned_pyspark_needs() -> None:
    dockerfile = (ROOT / "docker" / "Dockerfile").read_text()
    # The jars come from the pom make install uses; its delta-spark is built for pyspark's line.
    assert "COPY jvm/pom.xml" in dockerfile and "-P delta" in dockerfile
    spark_line = re.fullmatch(r"delta-spark_(\d+\.\d+)_2\.13", _pom_property("delta.artifact"))
    assert spark_line, _pom_property("delta.artifact")
    assert _pinned("pyspark").startswith(spark_line.group(1) + "."), (spark_line.group(1), _pinned("pyspark"))
    assert _pom_property("delta.version") == _pinned("delta-spark")
    assert "pip install" in dockerfile and re.search(r"^COPY crm_spark ", dockerfile, re.M)


def test_airflow_service_sets_the_variables_the_dag_reads_and_runs_the_tested_airflow() -> None:
    from test_airflow import AIRFLOW_VERSION

    dag = (ROOT / "dags" / "crm_spark_daily.py").read_text()
    variables = set(re.findall(r"var\.value\.get\('(\w+)'", dag))
    assert variables, "the DAG reads no Airflow Variables"
    environment = SERVICES["airflow"]["environment"]
    for variable in variables:
        assert f"AIRFLOW_VAR_{variable.upper()}" in environment, f"compose does not set the Variable {variable}"
    assert "./dags:/opt/airflow/dags" in SERVICES["airflow"]["volumes"]
    # spark-submit ignores the config's spark.master: the tasks name the compose master themselves.
    master = load_settings(env="docker", environ={}).spark.master
    assert f"--master {master}" in environment["AIRFLOW_VAR_CRM_SPARK_SUBMIT"]
    assert environment["AIRFLOW_VAR_CRM_SPARK_CONFIG"] == "conf/docker.yaml"
    airflow_image = (ROOT / "docker" / "airflow.Dockerfile").read_text()
    assert f"FROM apache/airflow:{AIRFLOW_VERSION}-python3.11" in airflow_image
    assert f'"apache-airflow=={AIRFLOW_VERSION}"' in airflow_image
    # conf/docker.yaml's engine is delta-spark: the Airflow image has the jars too.
    assert "COPY jvm/pom.xml" in airflow_image and "-P delta" in airflow_image
