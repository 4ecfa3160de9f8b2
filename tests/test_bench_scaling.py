"""bench/bench_scaling.py's arithmetic on hand-made inputs: the fitted slope of time against size,
and which stage a Spark job and its tasks are counted for (no Spark here)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
import bench_scaling  # noqa: E402
from bench_demo import OUTSIDE, job_stage  # noqa: E402


def _entry(customers: int, wall: float, stages: dict[str, float]) -> dict:
    return {"customers": customers, "wall_seconds": wall, "stage_seconds": sum(stages.values()),
            "stages": [{"stage": name, "seconds": seconds} for name, seconds in stages.items()]}


def test_slopes_are_one_for_linear_cost_and_zero_for_a_fixed_one() -> None:
    entries = [_entry(n, 30 + n / 100, {"refine": n / 50, "report": 6.0}) for n in (1_000, 10_000, 100_000)]
    fitted = bench_scaling.slopes(entries)
    assert fitted["refine"] == pytest.approx(1.0)
    assert fitted["report"] == pytest.approx(0.0)
    assert 0 < fitted["wall"] < 1  # a fixed 30 s start under a linear part
    assert bench_scaling.slopes(entries[:1]) == {}


def _job(job: int, stages: list[int], group: str = "", description: str = "") -> dict:
    return {"Event": "SparkListenerJobStart", "Job ID": job, "Stage IDs": stages, "Submission Time": 0,
            "Properties": {"spark.jobGroup.id": group, "spark.job.description": description}}


def _task(stage: int, run_ms: int, shuffle_bytes: int = 0) -> dict:
    return {"Event": "SparkListenerTaskEnd", "Stage ID": stage,
            "Task Metrics": {"Executor Run Time": run_ms, "JVM GC Time": run_ms // 10,
                             "Input Metrics": {"Bytes Read": 2**20},
                             "Shuffle Write Metrics": {"Shuffle Bytes Written": shuffle_bytes},
                             "Shuffle Read Metrics": {"Remote Bytes Read": 0, "Local Bytes Read": shuffle_bytes}}}


def test_jobs_and_tasks_are_counted_for_the_stage_that_ran_them() -> None:
    events = [
        _job(0, [0], group="crm-spark.refine"),
        _job(1, [1, 2], group="9f1c-run-id", description="ingest_orders\nid = 3dd7\nrunId = 9f1c\nbatch = 0"),
        _job(2, [3]),
        _task(0, 1500, shuffle_bytes=2**21), _task(0, 500), _task(1, 1000), _task(2, 1000), _task(3, 250),
    ]
    assert [job_stage(e) for e in events[:3]] == ["refine", "ingest", OUTSIDE]
    spent = bench_scaling.task_metrics(events)
    assert spent["refine"] == {"task_seconds": 2.0, "gc_seconds": 0.2, "input_mib": 2.0,
                               "shuffle_write_mib": 2.0, "shuffle_read_mib": 2.0}
    assert spent["ingest"]["task_seconds"] == 2.0
    assert spent[OUTSIDE]["task_seconds"] == 0.2  # 0.25 s, rounded to a tenth
