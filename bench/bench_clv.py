"""CLV on the classic benchmark log: the stage's model against BG/NBD + Gamma-Gamma and two naive baselines.

The data is CDNOW's full transaction log (23,570 customers who first bought in Q1 1997, 69,659
purchases up to 1998-06-30; whitespace-separated id, yyyyMMdd date, CDs, dollars): the file is
``CDNOW_master.txt`` of the ``lifetimes`` wheel on PyPI, fetched once with ``pip download`` into
``bench/results/cache/`` (or pass ``--cdnow`` a file of that shape). It runs ingest -> refine ->
features -> clv with ``conf/examples/transaction_log.yaml`` in one Spark session, scoring date
1998-06-30 and a horizon of ``--horizon`` days (182 by default: the model is trained on the
features of 1997-07-01 with the spend of the next 182 days as target, and everything is evaluated
on the features of 1997-12-30 against the spend of 1997-12-31..1998-06-30; BG/NBD + Gamma-Gamma
are fitted on every purchase up to 1997-12-30). A 39 + 39-week split as in Fader, Hardie and Lee
(2005) leaves the model no earlier period to learn from, so the horizon is shorter.

Prints MAE, RMSE, Spearman, normalised Gini and total predicted / actual for the model and each
baseline, and saves JSON with the machine and the stage seconds.

    .venv/bin/python bench/bench_clv.py
    .venv/bin/python bench/bench_clv.py --horizon 120 --model linear
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

RESULTS = Path(__file__).parent / "results" / "clv_cdnow.json"
CACHE = Path(__file__).parent / "results" / "cache"
CONFIG = ROOT / "conf" / "examples" / "transaction_log.yaml"
WHEEL = "lifetimes==0.11.3"
MEMBER = "lifetimes/datasets/CDNOW_master.txt"
SCORE_DATE = date(1998, 6, 30)
COMPARED = ("model", "bgnbd", "last_period", "historical_rate")


def cdnow(cache: Path) -> Path:
    """The CDNOW master log, extracted from the ``lifetimes`` wheel (downloaded from PyPI once)."""
    target = cache / "CDNOW_master.txt"
    if target.exists():
        return target
    cache.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(cache), WHEEL],
                   check=True)
    wheel = next(cache.glob("[Ll]ifetimes-*.whl"))
    with zipfile.ZipFile(wheel) as archive, archive.open(MEMBER) as src, open(target, "wb") as dst:
        shutil.copyfileobj(src, dst)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cdnow", type=Path, help="a log of CDNOW's shape (default: CDNOW_master.txt from PyPI)")
    parser.add_argument("--horizon", type=int, default=182, help="days predicted (default 182)")
    parser.add_argument("--model", choices=("gbt", "linear"), default="gbt")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    from bench_features import machine
    from crm_spark.config import load_settings
    from crm_spark.lake import open_lake
    from crm_spark.session import build_session
    from crm_spark.stages import StageContext, run_stage

    log_file = args.cdnow or cdnow(CACHE)
    work = Path(tempfile.mkdtemp(prefix="bench_clv_"))
    (work / "raw" / "cdnow").mkdir(parents=True)
    shutil.copyfile(log_file, work / "raw" / "cdnow" / log_file.name)
    settings = load_settings(config_file=CONFIG, overrides={
        "paths.raw": str(work / "raw"), "paths.lake": str(work / "lake"),
        "clv.horizon_days": args.horizon, "clv.model": args.model})
    os.environ.setdefault(settings.refine.pii_key_env, "bench-only-key-0123456789abcdef")
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    spark = build_session(settings)
    ctx = StageContext(settings=settings, spark=spark, lake=open_lake(spark, settings), as_of=SCORE_DATE)
    seconds: dict[str, float] = {}
    try:
        for name in ("ingest", "refine", "features", "clv"):
            started = time.perf_counter()
            result = run_stage(ctx, name)
            seconds[name] = time.perf_counter() - started
        outcome = result.outcome
        if outcome is None:
            raise SystemExit(f"clv did not run: {result.skipped}")
        entry: dict[str, Any] = {
            "when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "command": "python " + " ".join(shlex.quote(a) for a in [sys.argv[0], *(argv or sys.argv[1:])]),
            "machine": machine(spark),
            "data": {"file": log_file.name, "sha256": hashlib.sha256(log_file.read_bytes()).hexdigest(),
                     "source": f"{MEMBER} of {WHEEL} (PyPI)" if args.cdnow is None else str(args.cdnow)},
            "dates": {"train_as_of": outcome.dates.train.isoformat(), "evaluate_as_of": outcome.dates.evaluate.isoformat(),
                      "score_as_of": outcome.dates.score.isoformat(), "horizon_days": args.horizon},
            "model_kind": args.model,
            "evaluated_customers": int(result.metrics["evaluated_customers"]),
            "stage_seconds": seconds,
            "features_used": list(outcome.features),
            "evaluation": outcome.evaluation,
            "decile_calibration": outcome.calibration,
            "notes": list(result.notes),
        }
    finally:
        spark.stop()
        shutil.rmtree(work, ignore_errors=True)
    evaluation = entry["evaluation"]
    print(f"CDNOW log, {entry['evaluated_customers']:,} customers evaluated on "
          f"{entry['dates']['evaluate_as_of']}..{entry['dates']['score_as_of']}; stage seconds "
          + ", ".join(f"{k} {v:.1f}" for k, v in seconds.items()))
    print(f"{'':18s} {'MAE':>8s} {'RMSE':>8s} {'Spearman':>9s} {'Gini':>7s} {'total ratio':>12s}")
    for name in COMPARED:
        m = evaluation[name]
        label = {"model": f"crm-spark {args.model}", "bgnbd": "BG/NBD + GG"}.get(name, name)
        print(f"{label:18s} {m['mae']:8.2f} {m['rmse']:8.2f} {m['spearman']:9.3f} {m['gini']:7.3f} "
              f"{m['total_ratio']:12.3f}")
    for verdict in ("mae", "spearman"):
        better = (evaluation["model"][verdict] < evaluation["bgnbd"][verdict]) if verdict == "mae" else (
            evaluation["model"][verdict] > evaluation["bgnbd"][verdict])
        entry[f"model_beats_bgnbd_{verdict}"] = bool(better)
        print(f"model beats BG/NBD + GG on {verdict}: {'yes' if better else 'no'}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(entry, indent=2, default=float) + "\n")
    print(f"saved {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
