"""The scaling curve: the whole ``crm-spark demo`` (generate, then every stage) at growing sizes.

Issue 19 / SPEC section 10. For each size (customers), in a fresh folder: ``crm-spark demo
--customers N`` as a subprocess on the embedded default (``conf/`` with Spark's event log on, as
``bench/bench_demo.py`` runs it; ``--no-event-log`` without it, whose writing costs time of its
own), while a sampler reads the resident memory of the Python driver
and of its JVM (in local mode the executors are threads of that JVM) every half second. Per size:
wall time, generate and stage seconds, rows generated per second of the stages, peak RSS of each
process, and per stage its seconds, Spark jobs, seconds those jobs ran and gate share (from the
run's log and the event log). Across sizes: the slope of log(time) against log(customers) of the
whole run and of each stage (1.0 = linear; the fixed costs of small sizes pull it under 1).

Prints a table, saves ``bench/results/scaling.json`` (one entry per size, replaced on re-run, with
the machine, versions, load average and command) and plots ``bench/results/scaling.png``
(log-log, one line per stage and the total). Never asserts on timings.

    .venv/bin/python bench/bench_scaling.py                          # 2,000 and 10,000 customers
    .venv/bin/python bench/bench_scaling.py --sizes 10000,100000     # larger sizes, one run each
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_demo import OUTSIDE, _commit, _conf_with, _event_log, _event_log_conf, job_stage, profile_run  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "scaling.json"
SAMPLE_SECONDS = 0.5


class PeakMemory:
    """Peak resident memory of a process (the Python driver) and of its java descendants (its JVM),
    sampled every :data:`SAMPLE_SECONDS` on a thread until :meth:`stop`."""

    def __init__(self, pid: int) -> None:
        self.process = psutil.Process(pid)
        self.python = 0
        self.jvm = 0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._done.wait(SAMPLE_SECONDS):
            try:
                self.python = max(self.python, self.process.memory_info().rss)
                jvm = 0
                for child in self.process.children(recursive=True):
                    try:
                        if child.name() == "java":
                            jvm += child.memory_info().rss
                    except psutil.Error:  # exited between the listing and the reading
                        continue
                self.jvm = max(self.jvm, jvm)
            except psutil.Error:  # the driver exited
                return

    def stop(self) -> dict[str, float]:
        self._done.set()
        self._thread.join()
        return {"python_mib": round(self.python / 2**20), "jvm_mib": round(self.jvm / 2**20)}


def run_size(customers: int, seed: int, work: Path, *, event_log: bool = True,
             driver_memory: str | None = None) -> dict[str, Any]:
    """One ``crm-spark demo`` of ``customers`` in ``work``: its profile, wall time and peak memory
    (without ``event_log``, no Spark jobs or task metrics: only the run's own seconds).
    ``driver_memory``: ``spark.driver.memory`` instead of ``conf/local.yaml``'s."""
    events = work / "events"
    conf, spark_conf = _conf_with(work, {**(_event_log_conf(events) if event_log else {}),
                                         **({"spark.driver.memory": driver_memory} if driver_memory else {})})
    env = {**os.environ, "CRM_SPARK_CONF_DIR": str(conf)}
    command = [str(Path(sys.executable).with_name("crm-spark")), "--raw", str(work / "raw"),
               "--lake", str(work / "lake"), "demo", "--customers", str(customers), "--seed", str(seed)]
    load_before = os.getloadavg()
    started = time.perf_counter()
    with (work / "demo.log").open("w") as log:
        proc = subprocess.Popen(command, cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT)
        memory = PeakMemory(proc.pid)
        returncode = proc.wait()
        peak = memory.stop()
    wall = time.perf_counter() - started
    text = (work / "demo.log").read_text()
    if returncode != 0:
        print(text[-4000:], file=sys.stderr)
        raise SystemExit(f"crm-spark demo --customers {customers} exited {returncode}; log in {work / 'demo.log'}")
    logged = _event_log(events) if event_log else []
    profile = profile_run(text, logged)
    spent = task_metrics(logged)
    for stage in profile["stages"]:
        stage.update(spent.get(stage["stage"], {}))
    rows = profile["generated_rows"] or 0
    return {
        "customers": customers,
        "seed": seed,
        "command": " ".join(["crm-spark", *command[1:]]),
        "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "commit": _commit(),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                    "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
                    "load_average_before": [round(x, 2) for x in load_before],
                    "load_average_after": [round(x, 2) for x in os.getloadavg()],
                    "python": platform.python_version(), "spark": profile.pop("spark_version")},
        "event_log": event_log,
        "driver_memory": spark_conf.get("spark.driver.memory"),
        "wall_seconds": round(wall, 1),
        "peak_rss": peak,
        "rows_per_stage_second": round(rows / profile["stage_seconds"]) if profile["stage_seconds"] else None,
        **profile,
    }


def task_metrics(events: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per stage (its jobs' group, as :func:`profile_run` names them): the seconds its tasks ran,
    of which in garbage collection, and the bytes its tasks read as input and wrote and read as
    shuffle, from the event log's task ends."""
    stage_of: dict[int, str] = {}
    for e in events:
        if e.get("Event") == "SparkListenerJobStart":
            for stage_id in e.get("Stage IDs", []):
                stage_of[stage_id] = job_stage(e)
    out: dict[str, dict[str, float]] = {}
    for e in events:
        if e.get("Event") != "SparkListenerTaskEnd" or not e.get("Task Metrics"):
            continue
        m = e["Task Metrics"]
        totals = out.setdefault(stage_of.get(e["Stage ID"], OUTSIDE), dict.fromkeys(
            ("task_seconds", "gc_seconds", "input_mib", "shuffle_write_mib", "shuffle_read_mib"), 0.0))
        read = m.get("Shuffle Read Metrics") or {}
        totals["task_seconds"] += (m.get("Executor Run Time") or 0) / 1000
        totals["gc_seconds"] += (m.get("JVM GC Time") or 0) / 1000
        totals["input_mib"] += ((m.get("Input Metrics") or {}).get("Bytes Read") or 0) / 2**20
        totals["shuffle_write_mib"] += ((m.get("Shuffle Write Metrics") or {}).get("Shuffle Bytes Written") or 0) / 2**20
        totals["shuffle_read_mib"] += ((read.get("Remote Bytes Read") or 0) + (read.get("Local Bytes Read") or 0)) / 2**20
    return {name: {k: round(v, 1) for k, v in totals.items()} for name, totals in out.items()}


def slopes(entries: list[dict[str, Any]]) -> dict[str, float]:
    """Least-squares slope of log(seconds) on log(customers): the whole run (wall), the stages
    together, and each stage measured at every size. Empty with fewer than two sizes."""
    sizes = sorted({e["customers"] for e in entries})
    if len(sizes) < 2:
        return {}
    series: dict[str, list[tuple[float, float]]] = {"wall": [], "stages": [], "generate": []}
    for e in entries:
        series["wall"].append((e["customers"], e["wall_seconds"]))
        series["stages"].append((e["customers"], e["stage_seconds"]))
        if e.get("generate_seconds"):
            series["generate"].append((e["customers"], e["generate_seconds"]))
        for s in e["stages"]:
            if s["seconds"]:
                series.setdefault(s["stage"], []).append((e["customers"], s["seconds"]))
    return {name: round(_slope(points), 2) for name, points in series.items() if len({x for x, _ in points}) >= 2}


def _slope(points: list[tuple[float, float]]) -> float:
    xs = [math.log(x) for x, _ in points]
    ys = [math.log(max(y, 1e-3)) for _, y in points]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)


def plot(entries: list[dict[str, Any]], fitted: dict[str, float], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    entries = sorted(entries, key=lambda e: e["customers"])
    sizes = [e["customers"] for e in entries]
    fig, ax = plt.subplots(figsize=(7.5, 5))
    ax.plot(sizes, [e["wall_seconds"] for e in entries], "k-o", lw=2,
            label=f"whole demo (slope {fitted.get('wall', float('nan')):.2f})")
    ax.plot(sizes, [e["stage_seconds"] for e in entries], "k--s", lw=1.5,
            label=f"every stage (slope {fitted.get('stages', float('nan')):.2f})")
    ax.plot(sizes, [e.get("generate_seconds") or float("nan") for e in entries], "k:^", lw=1.5,
            label=f"generate (slope {fitted.get('generate', float('nan')):.2f})")
    stages = list(dict.fromkeys(s["stage"] for e in entries for s in e["stages"] if s["seconds"]))
    for name in stages:
        points = [(e["customers"], s["seconds"]) for e in entries for s in e["stages"] if s["stage"] == name and s["seconds"]]
        ax.plot([x for x, _ in points], [y for _, y in points], "-o", ms=3, lw=1,
                label=f"{name} ({fitted[name]:.2f})" if name in fitted else name)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("customers generated")
    ax.set_ylabel("seconds")
    ax.set_title(f"crm-spark demo on {os.cpu_count()} cores: time against size (log-log)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)


def _print(entries: list[dict[str, Any]], fitted: dict[str, float]) -> None:
    entries = sorted(entries, key=lambda e: e["customers"])
    print(f"{'customers':>10}{'rows':>12}{'wall s':>9}{'generate s':>12}{'stages s':>10}{'rows/s':>9}"
          f"{'jobs':>7}{'python MiB':>12}{'JVM MiB':>9}  load before")
    for e in entries:
        print(f"{e['customers']:>10,}{e['generated_rows'] or 0:>12,}{e['wall_seconds']:>9.1f}"
              f"{e['generate_seconds'] or 0:>12.1f}{e['stage_seconds']:>10.1f}{e['rows_per_stage_second'] or 0:>9,}"
              f"{e['jobs']:>7,}{e['peak_rss']['python_mib']:>12,}{e['peak_rss']['jvm_mib']:>9,}"
              f"  {e['machine']['load_average_before']}")
    stages = list(dict.fromkeys(s["stage"] for e in entries for s in e["stages"]))
    print("\nseconds per stage (jobs, gate share)")
    print(f"  {'stage':<24}" + "".join(f"{e['customers']:>22,}" for e in entries) + f"{'slope':>8}")
    for name in stages:
        cells = []
        for e in entries:
            s = next((s for s in e["stages"] if s["stage"] == name), None)
            if s is None or s["seconds"] is None:
                cells.append(f"{'-':>22}" if s is None else f"{'(' + str(s['jobs']) + ' jobs)':>22}")
                continue
            share = f", {100 * s['gate_share']:.0f}%" if s["gate_share"] is not None else ""
            cells.append(f"{s['seconds']:>9.1f} s ({s['jobs']}{share})".rjust(22))
        print(f"  {name:<24}" + "".join(cells) + (f"{fitted[name]:>8.2f}" if name in fitted else f"{'':>8}"))
    largest = entries[-1]
    print(f"\nwhere the time goes at {largest['customers']:,} customers (task seconds across both cores)")
    print(f"  {'stage':<24}{'seconds':>9}{'jobs':>7}{'task s':>9}{'GC s':>7}{'input MiB':>11}{'shuffle w MiB':>15}{'gate s':>8}")
    for s in largest["stages"]:
        took = f"{s['seconds']:.1f}" if s["seconds"] is not None else "-"
        gate = f"{s['gate_seconds']:.1f}" if s["gate_seconds"] is not None else "-"
        print(f"  {s['stage']:<24}{took:>9}{s['jobs']:>7}{s.get('task_seconds', 0):>9.1f}{s.get('gc_seconds', 0):>7.1f}"
              f"{s.get('input_mib', 0):>11.1f}{s.get('shuffle_write_mib', 0):>15.1f}{gate:>8}")
    if fitted:
        print(f"\nslope of log(seconds) on log(customers): whole demo {fitted['wall']:.2f}, every stage "
              f"{fitted['stages']:.2f}, generate {fitted.get('generate', float('nan')):.2f}")


def markdown(entries: list[dict[str, Any]], fitted: dict[str, float]) -> str:
    """The tables of BENCHMARKS.md's scaling section: sizes, seconds per stage, where the time goes."""
    entries = sorted(entries, key=lambda e: e["customers"])
    lines = ["| customers | rows generated | whole demo s | generate s | stages s | rows per stage-second | Spark jobs "
             "| peak RSS Python / JVM MiB | load average before |", "|" + "---|" * 9]
    for e in entries:
        lines.append(f"| {e['customers']:,} | {e['generated_rows'] or 0:,} | {e['wall_seconds']:.1f} | "
                     f"{e['generate_seconds'] or 0:.1f} | {e['stage_seconds']:.1f} | {e['rows_per_stage_second'] or 0:,} | "
                     f"{e['jobs']:,} | {e['peak_rss']['python_mib']:,} / {e['peak_rss']['jvm_mib']:,} | "
                     f"{e['machine']['load_average_before'][0]} |")
    if fitted:
        lines.append(f"| slope | | {fitted['wall']:.2f} | {fitted.get('generate', float('nan')):.2f} | "
                     f"{fitted['stages']:.2f} | | | | |")
    out = ["\n".join(lines), ""]
    stages = list(dict.fromkeys(s["stage"] for e in entries for s in e["stages"] if s["seconds"] is not None))
    lines = ["| stage | " + " | ".join(f"{e['customers']:,}" for e in entries) + " | slope |",
             "|" + "---|" * (len(entries) + 2)]
    for name in stages:
        cells = []
        for e in entries:
            s = next((s for s in e["stages"] if s["stage"] == name), None)
            if s is None or s["seconds"] is None:
                cells.append("-")
                continue
            share = f", gates {100 * s['gate_share']:.0f} %" if s["gate_share"] is not None else ""
            cells.append(f"{s['seconds']:.1f} s ({s['jobs']} jobs{share})")
        out_slope = f"{fitted[name]:.2f}" if name in fitted else ""
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {out_slope} |")
    out += ["\n".join(lines), ""]
    largest = entries[-1]
    lines = [f"| stage ({largest['customers']:,} customers) | seconds | jobs | task s | GC s | input MiB | "
             "shuffle written MiB | gate s |", "|" + "---|" * 8]
    for s in largest["stages"]:
        took = f"{s['seconds']:.1f}" if s["seconds"] is not None else "-"
        gate = f"{s['gate_seconds']:.1f}" if s["gate_seconds"] is not None else "-"
        lines.append(f"| {s['stage']} | {took} | {s['jobs']} | {s.get('task_seconds', 0):.1f} | {s.get('gc_seconds', 0):.1f} | "
                     f"{s.get('input_mib', 0):,.0f} | {s.get('shuffle_write_mib', 0):,.0f} | {gate} |")
    out.append("\n".join(lines))
    return "\n".join(out)


def _save(runs: list[dict[str, Any]], out: Path) -> dict[str, float]:
    """The slopes over ``runs``, saved with them, and their plot beside the JSON (two sizes or more)."""
    fitted = slopes(runs)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"runs": sorted(runs, key=lambda e: e["customers"]), "slopes": fitted}, indent=2) + "\n")
    if fitted:
        plot(runs, fitted, out.with_suffix(".png"))
    return fitted


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="2000,10000", help="comma-separated customer counts (default 2000,10000)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--no-event-log", dest="event_log", action="store_false",
                        help="time the run without Spark's event log (it costs time of its own: no jobs or task "
                             "metrics are then reported)")
    parser.add_argument("--driver-memory", help="spark.driver.memory for the runs (default: conf/local.yaml's, 4g); "
                        "in local mode the executors share the driver's JVM")
    parser.add_argument("--keep", type=Path, help="keep each size's folder under this one (default: temp, removed)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--markdown", action="store_true",
                        help="run nothing: fit the slopes and draw the plot again from the saved sizes, and print "
                             "them as BENCHMARKS.md's tables")
    args = parser.parse_args(argv)
    if args.markdown:
        runs = json.loads(args.out.read_text())["runs"]
        fitted = _save(runs, args.out)
        print(markdown(runs, fitted))
        return 0
    sizes = [int(s.replace("_", "")) for s in args.sizes.split(",") if s.strip()]

    saved = json.loads(args.out.read_text())["runs"] if args.out.is_file() else []
    fitted = slopes(saved)
    for customers in sizes:
        work = (args.keep / str(customers)) if args.keep else Path(tempfile.mkdtemp(prefix=f"crm-spark-scaling-{customers}-"))
        if work.exists() and args.keep:
            shutil.rmtree(work)
        work.mkdir(parents=True, exist_ok=True)
        print(f"crm-spark demo --customers {customers:,} in {work} ...", flush=True)
        try:
            entry = run_size(customers, args.seed, work, event_log=args.event_log, driver_memory=args.driver_memory)
        finally:
            if args.keep is None:
                shutil.rmtree(work, ignore_errors=True)
        print(f"  {entry['wall_seconds']:.1f} s wall, peak RSS python {entry['peak_rss']['python_mib']} MiB, "
              f"JVM {entry['peak_rss']['jvm_mib']} MiB", flush=True)
        saved = [e for e in saved if e["customers"] != customers] + [entry]
        fitted = _save(saved, args.out)  # after each size: a later one that fails loses nothing
    _print(saved, fitted)
    print(f"saved {args.out}" + (f" and {args.out.with_suffix('.png')}" if fitted else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
