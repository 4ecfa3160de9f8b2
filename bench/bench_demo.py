"""Where the demo's time goes: seconds, Spark jobs and gate share per stage, from one ``crm-spark demo``.

Runs ``crm-spark demo`` (what ``make run`` runs) in a fresh folder with Spark's event log on (a
copy of ``conf/`` whose ``local.yaml`` adds it), then reads the event log: every job a stage
launches carries the job group ``crm-spark.<stage>`` (the runner sets it), so each stage's number
of jobs and the seconds they ran come from Spark itself; jobs outside any stage are the data
generation and the session's start. The stage seconds and gate seconds are the run summary's.
Prints a table and saves JSON with the machine, versions and command.

    .venv/bin/python bench/bench_demo.py                     # 2,000 customers, seed 7
    .venv/bin/python bench/bench_demo.py --customers 500 --keep /tmp/demo-profile
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "demo_profile.json"
GROUP_PREFIX = "crm-spark."  # crm_spark.stages.JOB_GROUP_PREFIX, without importing Spark here
OUTSIDE = "(generate and session)"
INGEST_QUERY_PREFIX = "ingest_"  # crm_spark.stages.ingest names its streaming queries ingest_<source>
DONE = re.compile(r"\[(\w+)\] done in ([\d.]+)s")
GATES = re.compile(r"quality \[(\w+)\]: (\d+)/(\d+) gates passed in ([\d.]+)s")
GENERATED = re.compile(r"generated ([\d,]+) rows in ([\d.]+)s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--customers", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--keep", type=Path, help="work folder to keep (default: a temp folder, removed after)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    work = args.keep or Path(tempfile.mkdtemp(prefix="crm-spark-demo-profile-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        events = work / "events"
        conf, _ = _conf_with(work, _event_log_conf(events))
        command = [str(Path(sys.executable).with_name("crm-spark")), "--raw", str(work / "raw"),
                   "--lake", str(work / "lake"), "demo", "--customers", str(args.customers), "--seed", str(args.seed)]
        load_before = os.getloadavg()
        started = time.perf_counter()
        proc = subprocess.run(command, cwd=work, env={**os.environ, "CRM_SPARK_CONF_DIR": str(conf)},
                              capture_output=True, text=True, check=False)
        wall = time.perf_counter() - started
        (work / "demo.log").write_text(proc.stdout + proc.stderr)
        if proc.returncode != 0:
            print(proc.stdout[-3000:] + proc.stderr[-3000:], file=sys.stderr)
            print(f"crm-spark demo exited {proc.returncode}; log in {work / 'demo.log'}", file=sys.stderr)
            return 1
        profile = profile_run(proc.stdout + proc.stderr, _event_log(events))
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)
    entry = {
        "customers": args.customers,
        "seed": args.seed,
        "command": " ".join(["crm-spark", *command[1:]]),
        "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "commit": _commit(),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                    "load_average_before": [round(x, 2) for x in load_before],
                    "load_average_after": [round(x, 2) for x in os.getloadavg()],
                    "python": platform.python_version(), "spark": profile.pop("spark_version")},
        "wall_seconds": round(wall, 1),
        **profile,
    }
    _print(entry)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    runs = json.loads(args.out.read_text())["runs"] if args.out.is_file() else []
    args.out.write_text(json.dumps({"runs": [*runs, entry]}, indent=2) + "\n")
    print(f"saved {args.out}")
    return 0


def _conf_with(work: Path, spark_conf: dict[str, Any]) -> tuple[Path, dict[str, Any]]:
    """A copy of conf/ under ``work`` whose local.yaml also sets ``spark_conf``; and the Spark
    settings that copy's local.yaml now holds."""
    conf = work / "conf"
    shutil.copytree(ROOT / "conf", conf, dirs_exist_ok=True)
    local = yaml.safe_load((conf / "local.yaml").read_text())
    local["spark"]["conf"].update(spark_conf)
    (conf / "local.yaml").write_text(yaml.safe_dump(local, sort_keys=False))
    return conf, local["spark"]["conf"]


def _event_log_conf(events: Path) -> dict[str, Any]:
    """Spark settings that write an uncompressed event log into ``events`` (created)."""
    events.mkdir(parents=True, exist_ok=True)
    return {"spark.eventLog.enabled": True, "spark.eventLog.dir": events.as_uri(), "spark.eventLog.compress": False}


def _event_log(folder: Path) -> list[dict[str, Any]]:
    """The events of the one application logged under ``folder``: a single file, or Spark 4's
    rolled ``eventlog_v2_<app>/events_<n>_<app>`` files in order."""
    rolled = sorted(folder.rglob("events_*"), key=lambda p: int(p.name.split("_")[1]))
    files = rolled or [p for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".")]
    if not files:
        raise SystemExit(f"no event log in {folder}")
    return [json.loads(line) for f in files for line in f.read_text().splitlines() if line.strip()]


def job_stage(job_start: dict[str, Any]) -> str:
    """The stage a job ran for: its job group (``crm-spark.<stage>``, set by the runner), or ingest for
    the jobs of ingest's streaming queries (``ingest_<source>``: each runs on its own thread, under
    its own group), else :data:`OUTSIDE`."""
    properties = job_start.get("Properties") or {}
    group = properties.get("spark.jobGroup.id") or ""
    if group.startswith(GROUP_PREFIX):
        return group[len(GROUP_PREFIX):]
    if (properties.get("spark.job.description") or "").startswith(INGEST_QUERY_PREFIX):
        return "ingest"
    return OUTSIDE


def profile_run(log: str, events: list[dict[str, Any]]) -> dict[str, Any]:
    """Per stage: seconds and gate seconds (the run's log), jobs and job seconds (the event log)."""
    jobs: dict[int, dict[str, Any]] = {}
    spark_version = ""
    for e in events:
        kind = e.get("Event")
        if kind == "SparkListenerLogStart":
            spark_version = e.get("Spark Version", "")
        elif kind == "SparkListenerJobStart":
            jobs[e["Job ID"]] = {"stage": job_stage(e), "start": e["Submission Time"]}
        elif kind == "SparkListenerJobEnd" and e["Job ID"] in jobs:
            jobs[e["Job ID"]]["end"] = e["Completion Time"]
    count: dict[str, int] = defaultdict(int)
    busy: dict[str, float] = defaultdict(float)
    for job in jobs.values():
        count[job["stage"]] += 1
        busy[job["stage"]] += (job.get("end", job["start"]) - job["start"]) / 1000
    seconds = {m[1]: float(m[2]) for m in DONE.finditer(log)}
    gates = {m[1]: {"gates": int(m[3]), "seconds": float(m[4])} for m in GATES.finditer(log)}
    generated = GENERATED.search(log)
    stages = []
    for name in [*seconds, *(s for s in count if s not in seconds)]:
        took = seconds.get(name)
        gate = gates.get(name, {}).get("seconds")
        stages.append({
            "stage": name, "seconds": took, "jobs": count.get(name, 0), "job_seconds": round(busy.get(name, 0.0), 1),
            "gates": gates.get(name, {}).get("gates", 0), "gate_seconds": gate,
            "gate_share": round(gate / took, 3) if gate is not None and took else None,
        })
    return {
        "spark_version": spark_version,
        "generate_seconds": float(generated[2]) if generated else None,
        "generated_rows": int(generated[1].replace(",", "")) if generated else None,
        "stage_seconds": round(sum(seconds.values()), 1),
        "jobs": len(jobs),
        "stages": stages,
    }


def _print(entry: dict[str, Any]) -> None:
    print(f"crm-spark demo, {entry['customers']:,} customers: {entry['wall_seconds']:.1f} s wall "
          f"(generate {entry['generate_seconds']} s, stages {entry['stage_seconds']} s), {entry['jobs']:,} Spark jobs; "
          f"load average before {entry['machine']['load_average_before']}")
    print(f"  {'stage':<24}{'seconds':>9}{'jobs':>7}{'job s':>8}{'gates':>7}{'gate s':>8}{'gate %':>8}")
    for s in entry["stages"]:
        share = f"{100 * s['gate_share']:.0f}" if s["gate_share"] is not None else "-"
        took = f"{s['seconds']:.1f}" if s["seconds"] is not None else "-"
        gate = f"{s['gate_seconds']:.1f}" if s["gate_seconds"] is not None else "-"
        print(f"  {s['stage']:<24}{took:>9}{s['jobs']:>7}{s['job_seconds']:>8.1f}{s['gates']:>7}{gate:>8}{share:>8}")


def _commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    return out.stdout.strip()


if __name__ == "__main__":
    sys.exit(main())
