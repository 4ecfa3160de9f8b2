"""Shared fixtures: one SparkSession for the whole test session, built by the session factory."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import pytest
from spark_cluster import cluster, executor_python, package_zip, submitted  # noqa: F401 - the shared cluster run

from crm_spark.config import ChurnSettings, PathsSettings, Settings, load_settings
from crm_spark.generate import GenerateSummary
from crm_spark.lake import Lake, open_lake
from crm_spark.session import build_session, exited_jvm
from crm_spark.stages import StageContext, StageResult, finish_run, plan, run_stage

TEST_CONF = Path(__file__).parent / "conf" / "test.yaml"
EXAMPLES = Path(__file__).resolve().parent.parent / "conf" / "examples"
EXAMPLE_DATA = Path(__file__).resolve().parent / "data" / "examples"


@pytest.fixture(scope="session")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    root = tmp_path_factory.mktemp("crm")
    return load_settings(
        config_file=TEST_CONF,
        overrides={"paths.raw": str(root / "raw"), "paths.lake": str(root / "lake")},
    )


@pytest.fixture(scope="session")
def spark(settings: Settings):
    """local[2], 1 shuffle partition, UI off, UTC. Tests never stop it."""
    return build_session(settings)


@pytest.fixture(autouse=True)
def _session_jvm_alive(request: pytest.FixtureRequest) -> Iterator[None]:
    """Stop the run, naming the test, when the session's JVM has exited: every later test would
    only fail with py4j's "Connection refused", and the cause (a signal, a crash report) is lost."""
    yield
    jvm = exited_jvm()
    if jvm is not None:
        pytest.exit(f"the test session's Spark JVM exited during {request.node.nodeid}: {jvm_exit_cause(jvm.returncode, jvm.pid)}",
                    returncode=3)


def jvm_exit_cause(returncode: int, pid: int) -> str:
    """What a JVM's exit status says, with the head of its crash report (hs_err) when it wrote one."""
    if returncode < 0:
        name = signal.Signals(-returncode).name
        cause = f"killed by {name}" + (" (the kernel's OOM killer sends this; see dmesg)" if name == "SIGKILL" else "")
    else:
        cause = f"exit code {returncode}"
    for folder in (Path.cwd(), Path("/tmp")):
        report = folder / f"hs_err_pid{pid}.log"
        if report.exists():
            head = [line for line in report.read_text(errors="replace").splitlines()[:40] if line.startswith("#")]
            return f"{cause}; crash report {report}:\n" + "\n".join(head)
    return cause


# -- the one end-to-end run shared by the end-to-end tests ----------------------------------------
E2E_START, E2E_END = date(2024, 1, 1), date(2025, 6, 30)
E2E_CUSTOMERS, E2E_SEED, E2E_DIRTY_RATE = 2000, 7, 0.01
E2E_STAGES = ("ingest", "refine", "features", "segment", "basket", "churn", "recommend", "clv", "report")
# Churn as the planted-signal test measured it: a quick train/validation split and the GBT challenger.
E2E_CHURN = ChurnSettings(
    horizon_days=90, tuning="tvs", reg_params=(0.001, 0.01), elastic_net_params=(0.0,), challenger="gbt",
    gbt_max_iter=20, gbt_max_depth=4, threshold_bins=200,
)


@dataclass
class EndToEnd:
    """Generated data (with its ``_truth/``), the lake the pipeline wrote, and what each stage returned."""

    raw: Path
    settings: Settings
    lake: Lake
    results: dict[str, StageResult]
    versions_after_first_run: dict[str, int]
    rerun: dict[str, StageResult] = field(default_factory=dict)

    @property
    def truth(self) -> Path:
        return self.raw / "_truth"


@pytest.fixture(scope="session")
def generated(spark, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, GenerateSummary]:
    """The one generated dataset of the test session: 2,000 customers (seed 7, 2024-01-01..2025-06-30,
    1 % dirt). Read-only: the generator's tests read it back, the end-to-end run ingests it."""
    from crm_spark.generate import generate_dataset

    raw = tmp_path_factory.mktemp("e2e") / "raw"
    summary = generate_dataset(spark, out=str(raw), customers=E2E_CUSTOMERS, seed=E2E_SEED, start=E2E_START,
                               end=E2E_END, dirty_rate=E2E_DIRTY_RATE)
    return raw, summary


@pytest.fixture(scope="session")
def e2e(spark, settings: Settings, generated: tuple[Path, GenerateSummary]) -> EndToEnd:
    """Every built stage run once on the generated dataset as of its end date, then every stage but
    the report again (nothing new: no table changes)."""
    raw, _ = generated
    root = raw.parent
    own = settings.model_copy(
        update={"paths": PathsSettings(raw=str(raw), lake=str(root / "lake")), "churn": E2E_CHURN}
    )
    lake = open_lake(spark, own)
    mp = pytest.MonkeyPatch()
    mp.setenv("CRM_SPARK_PII_KEY", "end-to-end-test-key")
    mp.delenv("MLFLOW_TRACKING_URI", raising=False)
    try:
        ctx = StageContext(settings=own, spark=spark, lake=lake, as_of=E2E_END)
        results = {name: run_stage(ctx, name) for name in E2E_STAGES}
        versions = {w.table: lake.version(w.table) for r in results.values() for w in r.writes}
        run = EndToEnd(raw, own, lake, results, versions)
        # Again: ingest and refine find nothing new; every later stage finds its inputs, settings and
        # date unchanged and is not run (the report is drawn again).
        run.rerun = {name: run_stage(ctx, name) for name in E2E_STAGES if name != "report"}
        finish_run(ctx)
    finally:
        mp.undo()
    return run


# -- the bring-your-own-data examples (conf/examples/*.yaml) on their sample files ---------------
def run_example(
    spark, name: str, lake_dir: Path, raw: Path | None = None, results: dict[str, StageResult] | None = None,
    stages: tuple[str, ...] = ("ingest", "refine"), overrides: dict[str, object] | None = None,
    keep_going: bool = False,
) -> Lake:
    """``stages`` of example ``name`` into ``lake_dir``, as `crm-spark --config conf/examples/<name>.yaml
    --raw tests/data/examples/<name>` runs them; each must run, unless ``keep_going`` (as `crm-spark
    run` does: a stage that cannot run on the data is skipped, saying why)."""
    settings = load_settings(
        config_file=EXAMPLES / f"{name}.yaml",
        overrides={"paths.raw": str(raw or EXAMPLE_DATA / name), "paths.lake": str(lake_dir), **(overrides or {})},
    )
    lake = open_lake(spark, settings)
    ctx = StageContext(settings=settings, spark=spark, lake=lake)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(settings.refine.pii_key_env, "examples-test-key")
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)  # model stages track into the lake's own store
        for stage in stages:
            result = run_stage(ctx, stage, keep_going=keep_going)
            assert keep_going or result.skipped is None, f"{name}: {stage} skipped: {result.skipped}"
            if results is not None:
                results[stage] = result
    return lake


@dataclass
class ExampleRun:
    lake: Lake
    results: dict[str, StageResult]


@pytest.fixture(scope="session")
def baskets_example(spark, tmp_path_factory: pytest.TempPathFactory) -> ExampleRun:
    """The basket-list example, every stage in order as `crm-spark run` runs them: a basket list
    feeds ingest, refine and basket; the stages that need customers, dates or prices are skipped,
    each saying why. Shared by test_examples and test_report."""
    results: dict[str, StageResult] = {}
    lake = run_example(spark, "baskets", tmp_path_factory.mktemp("baskets") / "lake", results=results,
                       stages=tuple(spec.name for spec in plan(None)), keep_going=True)
    return ExampleRun(lake, results)
