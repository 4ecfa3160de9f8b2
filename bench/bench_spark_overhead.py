"""Where a small Spark workload's time goes on this machine: job latency and JIT compilation.

The demo's model stages are chains of tiny Spark jobs (an MLlib KMeans iteration is one job over
a couple of thousand rows). This script times such a chain the way the segment stage runs it
(rounds of KMeans fits on a cached, scaled frame of ``--rows`` seeded random points) and, for each
round, reads from ``/proc`` the CPU seconds of the driver JVM and of its JIT compiler threads
("C1/C2 CompilerThread"). It also times a trivial job (``spark.range(1000).count()``) for the
floor of one job's latency. Prints a table and saves JSON with the machine.

    .venv/bin/python bench/bench_spark_overhead.py            # 3 rounds of 8 fits, 2,000 rows
    .venv/bin/python bench/bench_spark_overhead.py --java-options "-XX:TieredStopAtLevel=1"
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_features import machine  # noqa: E402
from crm_spark.config import load_settings  # noqa: E402
from crm_spark.session import build_session  # noqa: E402

_TICK = os.sysconf("SC_CLK_TCK")


def thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds per thread name of process ``pid`` (threads of one name summed)."""
    out: dict[str, float] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            name = (task / "comm").read_text().strip()
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # the thread ended while we looked
            continue
        out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / _TICK
    return out


def jit_seconds(cpu: dict[str, float]) -> float:
    return sum(v for k, v in cpu.items() if "CompilerThre" in k)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--fits", type=int, default=8, help="KMeans fits per round (k=5, 20 iterations)")
    parser.add_argument("--java-options", default="", help="extra driver JVM options to compare")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "spark_overhead.json")
    args = parser.parse_args(argv)

    settings = load_settings(env="local")
    if args.java_options:
        conf = dict(settings.spark.conf)
        key = "spark.driver.extraJavaOptions"
        conf[key] = f"{conf.get(key, '')} {args.java_options}".strip()
        settings = settings.model_copy(update={"spark": settings.spark.model_copy(update={"conf": conf})})
    began = time.perf_counter()
    spark = build_session(settings)
    session_s = time.perf_counter() - began
    from pyspark.ml.clustering import KMeans
    from pyspark.ml.feature import StandardScaler, VectorAssembler

    sc = spark.sparkContext
    pid = int(sc._jvm.java.lang.ProcessHandle.current().pid())  # noqa: SLF001
    rng = np.random.default_rng(7)
    points = rng.lognormal(0.0, 1.0, size=(args.rows, 6)).tolist()
    frame = spark.createDataFrame(points, [f"x{i}" for i in range(6)])
    frame = VectorAssembler(inputCols=frame.columns, outputCol="raw").transform(frame)
    prepared = StandardScaler(inputCol="raw", outputCol="features").fit(frame).transform(frame).cache()
    prepared.count()

    tracker = sc.statusTracker()
    trivial = []
    for _ in range(20):
        t = time.perf_counter()
        spark.range(1000).count()
        trivial.append(time.perf_counter() - t)

    rounds: list[dict[str, Any]] = []
    for r in range(args.rounds):
        group = f"round-{r}"
        sc.setJobGroup(group, group)
        before, t = thread_cpu(pid), time.perf_counter()
        iterations = 0
        for seed in range(args.fits):
            model = KMeans(k=5, maxIter=20, seed=seed, featuresCol="features").fit(prepared)
            iterations += model.summary.numIter
        wall = time.perf_counter() - t
        after = thread_cpu(pid)
        jobs = len(tracker.getJobIdsForGroup(group))
        cpu = sum(after.values()) - sum(before.values())
        jit = jit_seconds(after) - jit_seconds(before)
        rounds.append({
            "round": r + 1, "wall_s": round(wall, 2), "jobs": jobs, "iterations": iterations,
            "ms_per_job": round(1000 * wall / max(jobs, 1), 1), "jvm_cpu_s": round(cpu, 1), "jit_cpu_s": round(jit, 1),
        })
    total = thread_cpu(pid)
    entry = {
        "when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": "python bench/bench_spark_overhead.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:])),
        "machine": machine(spark),
        "java_options": args.java_options,
        "rows": args.rows,
        "session_start_s": round(session_s, 1),
        "trivial_job_ms_median": round(1000 * sorted(trivial)[len(trivial) // 2], 1),
        "rounds": rounds,
        "jvm_cpu_s_total": round(sum(total.values()), 1),
        "jit_cpu_s_total": round(jit_seconds(total), 1),
    }
    print(f"session start {entry['session_start_s']} s; trivial job {entry['trivial_job_ms_median']} ms (median of 20)")
    print("round  wall_s  jobs  iterations  ms/job  jvm_cpu_s  jit_cpu_s")
    for x in rounds:
        print(f"{x['round']:5d}  {x['wall_s']:6.1f}  {x['jobs']:4d}  {x['iterations']:10d}  {x['ms_per_job']:6.1f}  "
              f"{x['jvm_cpu_s']:9.1f}  {x['jit_cpu_s']:9.1f}")
    print(f"JVM CPU since start {entry['jvm_cpu_s_total']} s, of which JIT compiler threads {entry['jit_cpu_s_total']} s")
    runs = json.loads(args.out.read_text())["runs"] if args.out.is_file() else []
    runs = [x for x in runs if x.get("java_options") != args.java_options] + [entry]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"runs": runs}, indent=2) + "\n")
    spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
