"""The one place a SparkSession is built.

Every Spark setting comes from :class:`~crm_spark.config.SparkSettings`; this module adds only
what follows from the environment: quiet logging, and delta-spark (its jars from the folder that
``make install`` fills, its extension and catalog) when its jars are there.
"""

from __future__ import annotations

import glob
import importlib
import logging
import os
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import pyspark
from pyspark import SparkContext
from pyspark.sql import SparkSession

from crm_spark.config import Settings
from crm_spark.errors import EnvironmentSetupError, LakeError

log = logging.getLogger(__name__)
MIN_JAVA = 17
DELTA_EXTENSION = "io.delta.sql.DeltaSparkSessionExtension"
DELTA_CATALOG = "org.apache.spark.sql.delta.catalog.DeltaCatalog"
DELTA_TABLE_CLASS = "io.delta.tables.DeltaTable"
# The delta-spark build for the Spark that pyspark ships (jvm/pom.xml fetches the same).
DELTA_PACKAGE = "io.delta:delta-spark_4.2_2.13:4.4.0"
_LOG4J = Path(__file__).with_name("log4j2.properties")
# `make install` copies delta-spark and its run-time jars from Maven Central here (jvm/pom.xml).
DEFAULT_DELTA_JARS = Path(__file__).resolve().parent.parent / "jars" / "delta"


def exited_jvm() -> subprocess.Popen | None:
    """The JVM pyspark launched in this process, once it has exited (its ``returncode`` says how);
    None while it runs or when none was launched."""
    proc = getattr(SparkContext._gateway, "proc", None)  # noqa: SLF001 - the JVM pyspark launched
    return proc if proc is not None and proc.poll() is not None else None


def build_session(settings: Settings, *, preload: Sequence[str] = ()) -> SparkSession:
    """Create (or, under spark-submit, join) the application's SparkSession from config.

    Under spark-submit, a setting given with ``--conf`` (or in spark-defaults.conf) wins over the
    same key in the config file, and ``--master`` over ``spark.master``. ``preload`` names Python
    modules the caller will need (the stages' :func:`crm_spark.stages.imports`): they are imported
    in a thread while the JVM starts, when the Python process would otherwise only wait.
    """
    submitted = _submitted_conf()
    launched_by_spark_submit = submitted is not None
    if not launched_by_spark_submit:
        check_java()
    spark_settings = settings.spark
    conf = session_conf(settings, submitted=submitted)

    builder = SparkSession.builder.appName(spark_settings.app_name)
    if spark_settings.master and not launched_by_spark_submit:
        builder = builder.master(spark_settings.master)
    if launched_by_spark_submit:
        # spark-submit --conf / spark-defaults.conf win over the config file's defaults
        conf = {k: v for k, v in conf.items() if k not in submitted}
    for key, value in conf.items():
        builder = builder.config(key, value)
    if (spark_settings.master or "local").startswith("local") and not launched_by_spark_submit:
        # Python workers (the PII pseudonyms' UDF) run this interpreter and its packages, not
        # whichever python3 is first on PATH (PySpark reads only this variable; a cluster's
        # executors bring their own Python, see README).
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    if settings.lake.umask is not None:
        # What the driver writes itself (the Delta log through deltalake, reports, MLflow, GX) and
        # what the JVM it launches writes outside Hadoop: the lake holds customer data.
        os.umask(int(settings.lake.umask, 8))
    loader = _import_in_background(preload) if preload and SparkContext._active_spark_context is None else None
    try:
        spark = builder.getOrCreate()
    finally:
        if loader is not None:
            loader.join()  # no import runs beside the caller's own from here on
    spark.sparkContext.setLogLevel(spark_settings.log_level)
    if settings.lake.engine == "delta-spark" and not delta_spark_available(spark):
        raise LakeError(
            "lake.engine is 'delta-spark' but the delta-spark jars are not on the classpath: run make install "
            f"(it fetches them into {DEFAULT_DELTA_JARS}), pass spark-submit --packages {DELTA_PACKAGE}, "
            "or set lake.engine: embedded"
        )
    return spark


def _import_in_background(modules: Sequence[str]) -> threading.Thread:
    """Import ``modules`` in a daemon thread; a module that fails to import is left for the
    caller's own import to report. (PySpark forks the JVM launcher with a ``preexec_fn`` meanwhile,
    which Python documents as unsafe beside other threads; the child only resets a signal handler
    before exec, and CPython reinitialises the import lock and GIL in it.)"""

    def load() -> None:
        for name in modules:
            try:
                importlib.import_module(name)
            except Exception:  # noqa: BLE001 - the real import, later, raises with its own context
                log.debug("preloading %s failed", name, exc_info=True)

    thread = threading.Thread(target=load, name="crm-spark-preload", daemon=True)
    thread.start()
    return thread


def _submitted_conf() -> dict[str, str] | None:
    """Under spark-submit, the settings its driver JVM was started with (--conf, --jars,
    --packages, spark-defaults.conf); None when this process starts its own JVM."""
    if "PYSPARK_GATEWAY_PORT" not in os.environ:
        return None
    from pyspark import SparkConf

    SparkContext._ensure_initialized()  # noqa: SLF001 - joins spark-submit's JVM, so SparkConf reads its settings
    return dict(SparkConf().getAll())


def session_conf(settings: Settings, *, submitted: Mapping[str, str] | None = None) -> dict[str, str]:
    """The Spark settings the session is built with: the config's, plus delta-spark's jars,
    extension and catalog when its jars are there (whatever the engine: a session can then read
    and write both engines' tables, e.g. ``spark.read.format("delta")`` in a notebook), plus the
    log4j configuration.

    ``submitted``: the settings spark-submit started the JVM with. Its classpath is then fixed, so
    delta-spark counts only when spark-submit brought it (``--jars``, ``--packages``, or Spark's
    own jars/); the project's jars/delta cannot be added to a running JVM.
    """
    conf: dict[str, str] = {k: _conf_value(v) for k, v in settings.spark.conf.items()}
    if submitted is not None:
        with_delta = delta_jars_configured(dict(submitted))
    else:
        if not delta_jars_configured(conf):
            jars = delta_jar_files(settings)
            if jars:
                conf["spark.jars"] = ",".join([*filter(None, [conf.get("spark.jars")]), *jars])
        with_delta = delta_jars_configured(conf)
    if settings.lake.engine == "delta-spark" or with_delta:
        conf.setdefault("spark.sql.extensions", DELTA_EXTENSION)
        conf.setdefault("spark.sql.catalog.spark_catalog", DELTA_CATALOG)
        for key, value in _delta_defaults(conf).items():
            conf.setdefault(key, value)
    if settings.lake.umask is not None:
        conf.setdefault("spark.hadoop.fs.permissions.umask-mode", settings.lake.umask.rjust(3, "0")[-3:])
    log4j = f"-Dlog4j2.configurationFile=file:{_LOG4J}"
    conf["spark.driver.extraJavaOptions"] = f"{conf.get('spark.driver.extraJavaOptions', '')} {log4j}".strip()
    return conf


def delta_jar_files(settings: Settings) -> list[str]:
    """The delta-spark jars in ``lake.delta_jars`` (default: the project's ``jars/delta``; ``""``:
    none), if any."""
    if settings.lake.delta_jars == "":
        return []
    folder = Path(settings.lake.delta_jars) if settings.lake.delta_jars else DEFAULT_DELTA_JARS
    return sorted(str(p) for p in folder.glob("*.jar")) if folder.is_dir() else []


def delta_spark_available(spark: SparkSession) -> bool:
    """True when the JVM can load delta-spark and the session has its extension configured."""
    jvm = spark.sparkContext._jvm  # noqa: SLF001 - py4j gateway is the only way to ask the JVM
    try:
        loader = jvm.java.lang.Thread.currentThread().getContextClassLoader()
        loader.loadClass(DELTA_TABLE_CLASS)
    except Exception:  # py4j wraps ClassNotFoundException
        return False
    extensions = spark.conf.get("spark.sql.extensions", "") or ""
    return DELTA_EXTENSION in extensions


def delta_jars_configured(conf: dict[str, str]) -> bool:
    """Whether the session being built will have delta-spark jars (so its extension can load)."""
    for key in ("spark.jars.packages", "spark.jars"):
        if "delta-spark" in conf.get(key, "") or "delta-core" in conf.get(key, ""):
            return True
    jar_dirs: list[Path] = []
    if os.environ.get("SPARK_HOME"):
        jar_dirs.append(Path(os.environ["SPARK_HOME"]) / "jars")
    jar_dirs.append(Path(pyspark.__file__).parent / "jars")
    return any(glob.glob(str(d / "delta-spark_*.jar")) for d in jar_dirs)


def java_executable() -> str | None:
    """``$JAVA_HOME/bin/java`` when it exists, else ``java`` on the PATH, else None."""
    home = os.environ.get("JAVA_HOME")
    if home and (Path(home) / "bin" / "java").exists():
        return str(Path(home) / "bin" / "java")
    return shutil.which("java")


def check_java() -> int:
    """Return the Java major version, or raise a one-line error saying how to get Java 17+."""
    java = java_executable()
    if not java:
        raise EnvironmentSetupError(
            "Java not found: Spark needs Java 17+ (apt-get install openjdk-17-jre-headless, or set JAVA_HOME)"
        )
    try:
        out = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise EnvironmentSetupError(f"cannot run {java} -version ({exc}); check the Java installation") from None
    match = re.search(r'version "(\d+)(?:\.(\d+))?', out.stderr + out.stdout)
    if not match:
        raise EnvironmentSetupError(f"cannot tell the Java version from '{java} -version'; Spark needs Java 17+")
    major = int(match.group(1))
    if major == 1 and match.group(2):  # "1.8.0" style
        major = int(match.group(2))
    if major < MIN_JAVA:
        raise EnvironmentSetupError(
            f"Java {major} found at {java}, Spark 4 needs Java {MIN_JAVA}+ (install openjdk-17-jre-headless or set JAVA_HOME)"
        )
    return major


def _delta_defaults(conf: dict[str, str]) -> dict[str, str]:
    """delta-spark sized to the session: its log replay uses 50 partitions and VACUUM lists files
    with up to 10,000 tasks by default, which dominate small tables (a VACUUM took 80 s on a
    three-file test table on 2 cores). Either can still be set in the config."""
    parallelism = conf.get("spark.sql.shuffle.partitions") or conf.get("spark.default.parallelism")
    if not parallelism:
        return {}
    return {
        "spark.databricks.delta.snapshotPartitions": parallelism,
        "spark.sql.sources.parallelPartitionDiscovery.parallelism": parallelism,
    }


def _conf_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


@contextmanager
def temporary_conf(spark: SparkSession, values: Mapping[str, object]) -> Iterator[None]:
    """Runtime SQL settings ``values`` (config values: booleans as ``true``/``false``) while the
    block runs; each key's previous value is back afterwards (unset if it had none)."""
    conf = spark.conf
    previous = {key: conf.get(key, None) for key in values}
    for key, value in values.items():
        conf.set(key, _conf_value(value))
    try:
        yield
    finally:
        for key, value in previous.items():
            if value is None:
                conf.unset(key)
            else:
                conf.set(key, value)
