"""``crm-spark``: one subcommand per stage, plus ``run`` (all stages) and ``generate``.

The only module that talks to the user. Progress goes to stderr as timestamped lines (stage,
rows, seconds); the final summary table goes to stdout. Expected failures (the typed errors of
:mod:`crm_spark.errors`) become one line and an exit code; ``--verbose`` adds the traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
import traceback
from collections.abc import Sequence
from datetime import date
from typing import Any, TextIO

from crm_spark import __version__
from crm_spark.config import Settings, load_settings
from crm_spark.errors import ConfigError, CrmSparkError, EnvironmentSetupError, SourceError, StageNotBuiltError
from crm_spark.stages import STAGE_NAMES, STAGES, StageContext, StageResult, finish_run, imports, plan, run_stage, stage

EXIT_CODES = """exit codes: 0 ok, 1 unexpected error, 2 usage or stage not built, 3 config error,
4 source error, 5 data-quality gate failed, 6 lake error, 7 environment (Java, secrets)"""


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    _configure_logging(args.verbose)
    settings: Settings | None = None
    try:
        settings = load_settings(
            config_file=args.config,
            env=args.env,
            overrides={"paths.raw": args.raw, "paths.lake": args.lake},
        )
        if args.command is None:
            parser.print_help(sys.stderr)
            return 2
        return int(args.handler(args, settings))
    except CrmSparkError as exc:
        _fail(f"{exc.kind}: {exc}", verbose=args.verbose)
        return exc.exit_code
    except KeyboardInterrupt:
        _fail("interrupted", verbose=False)
        return 130
    except Exception as exc:  # noqa: BLE001 - the last line of defence: one line, not a stack
        died = _jvm_died(settings)
        if died is not None:
            _fail(f"{EnvironmentSetupError.kind}: {died}", verbose=args.verbose)
            return EnvironmentSetupError.exit_code
        try:
            first = (str(exc).strip().splitlines() or [""])[0][:300]
        except Exception:  # noqa: BLE001 - a py4j error's text is fetched from the JVM, which may be gone
            first = "(no message)"
        _fail(f"unexpected error: {type(exc).__name__}: {first}", verbose=args.verbose)
        if not args.verbose:
            print("crm-spark: rerun with --verbose for the traceback", file=sys.stderr)
        return 1


# Spark's exit status for a JVM stopped by an OutOfMemoryError (SparkExitCode.OOM).
SPARK_EXIT_OOM = 52


def _jvm_died(settings: Settings | None) -> str | None:
    """Why the Spark JVM this process started is gone, as one line a user can act on; None when
    no JVM was started here or it is still running (the failure was something else)."""
    if "pyspark" not in sys.modules:  # no Spark in this command: do not import it now
        return None
    from crm_spark.session import exited_jvm

    jvm = exited_jvm()
    if jvm is None:
        return None
    code = jvm.returncode
    memory = settings.spark.conf.get("spark.driver.memory") if settings is not None else None
    has = f"the config has {memory}" if memory else "Spark's default is 1g"
    if code == SPARK_EXIT_OOM:
        return (f"the Spark JVM ran out of memory (java.lang.OutOfMemoryError) and exited: raise spark.driver.memory "
                f"({has}; in local mode the executors share the driver's JVM) or run on a cluster; the tables of "
                f"the stages that finished stand")
    return f"the Spark JVM exited with status {code} (its log is above; {has} of memory); the tables of the stages that finished stand"


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    _add_common(common, suppress=True)
    parser = argparse.ArgumentParser(
        prog="crm-spark",
        description="Customer intelligence on Spark and Delta Lake: raw CRM exports -> lakehouse tables, "
        "features, segments, cross-sell rules, churn scores and a report.",
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"crm-spark {__version__}")
    _add_common(parser, suppress=False)
    sub = parser.add_subparsers(dest="command", metavar="<command>", title="commands")

    gen = sub.add_parser("generate", parents=[common], help="write a synthetic CRM dataset with planted truth")
    gen.add_argument("--customers", type=int, help="number of customers (default from config: generate.customers)")
    gen.add_argument("--seed", type=int, help="random seed; the same arguments give byte-identical files")
    gen.add_argument("--out", help="output URI (default: the raw landing zone, paths.raw)")
    gen.add_argument("--start", type=_date, help="first date of activity, YYYY-MM-DD")
    gen.add_argument("--end", type=_date, help="last date of activity, YYYY-MM-DD")
    gen.add_argument("--dirty-rate", type=float, help="share of rows with injected defects (default 0.01)")
    gen.add_argument("--shape", choices=("crm", "subscription"), default="crm",
                     help="crm (default): the CRM sources, by Spark; subscription: one Telco-style customer "
                     "table with a churn flag under <out>/telco/ (numpy, no Spark; --customers default 5000)")
    gen.add_argument("--snapshot", type=_date, default=date(2024, 6, 30),
                     help="snapshot date of the subscription table, YYYY-MM-DD (default 2024-06-30)")
    gen.set_defaults(handler=_cmd_generate)

    for spec in STAGES:
        label = spec.summary if spec.built else f"{spec.summary} (not built yet)"
        p = sub.add_parser(spec.name, parents=[common], help=label, description=label)
        p.set_defaults(handler=_cmd_stage, stage=spec.name)
        for option in spec.options:
            p.add_argument(option.flag, dest=option.dest, action="store_true", help=option.help)

    run = sub.add_parser("run", parents=[common], help="run every built stage in order in one Spark application")
    run.add_argument("--stages", type=lambda s: [x.strip() for x in s.split(",") if x.strip()],
                     help="comma-separated subset, e.g. ingest,refine (run in pipeline order)")
    run.set_defaults(handler=_cmd_run)

    vacuum = sub.add_parser(
        "vacuum", parents=[common],
        help="delete the data files no table version of the last lake.vacuum_retention_hours refers to "
             "(replaced versions, files of killed writes)",
    )
    vacuum.add_argument("--retention-hours", type=int, help="default from config: lake.vacuum_retention_hours (168)")
    vacuum.add_argument("--dry-run", action="store_true", help="list what would be deleted, delete nothing")
    vacuum.set_defaults(handler=_cmd_vacuum)

    demo = sub.add_parser(
        "demo", parents=[common],
        help="generate the demo dataset into the raw zone (unless one is there) and run every built stage, "
             "in one Spark application",
    )
    demo.add_argument("--customers", type=int, help="demo size (default from config: generate.customers)")
    demo.add_argument("--seed", type=int, help="random seed (default from config: generate.seed)")
    demo.set_defaults(handler=_cmd_demo)
    return parser


def _add_common(parser: argparse.ArgumentParser, *, suppress: bool) -> None:
    """Global options, accepted before or after the command."""
    default: Any = argparse.SUPPRESS if suppress else None
    parser.add_argument("--config", default=default, help="config overlay file (default: conf/<env>.yaml)")
    parser.add_argument("--env", default=default, help="environment: local (default), cluster, docker")
    parser.add_argument("--raw", default=default, help="root URI of the raw landing zone")
    parser.add_argument("--lake", default=default, help="root URI of the lake")
    parser.add_argument("--as-of", dest="as_of", type=_date, default=default,
                        help="as-of date YYYY-MM-DD (default: the latest date in the data)")
    parser.add_argument("--verbose", "-v", action="store_true",
                        default=argparse.SUPPRESS if suppress else False,
                        help="debug logging and tracebacks")
    parser.add_argument("--force", action="store_true", default=argparse.SUPPRESS if suppress else False,
                        help="run model and feature stages even when their inputs, settings and as-of date are "
                             "those of their last run (which they otherwise skip: its tables stand)")


def _cmd_generate(args: argparse.Namespace, settings: Settings) -> int:
    if args.shape == "subscription":
        return _cmd_generate_subscriptions(args, settings)
    from crm_spark.session import build_session

    options = _generate_options(args, settings)
    _generate(build_session(settings), options)
    return 0


def _generate_options(args: argparse.Namespace, settings: Settings) -> dict[str, Any]:
    """``generate``'s arguments: the command line's where given, else the config's ``generate.*``."""
    g = settings.generate

    def given(name: str, default: Any) -> Any:
        value = getattr(args, name, None)
        return default if value is None else value

    options = {
        "out": given("out", settings.paths.raw),
        "customers": given("customers", g.customers),
        "seed": given("seed", g.seed),
        "start": given("start", g.start),
        "end": given("end", g.end),
        "dirty_rate": given("dirty_rate", g.dirty_rate),
    }
    if options["customers"] < 100:
        raise ConfigError(f"--customers must be at least 100, got {options['customers']}")
    if not 0 <= options["dirty_rate"] <= 0.5:
        raise ConfigError(f"--dirty-rate must be between 0 and 0.5, got {options['dirty_rate']}")
    if options["end"] <= options["start"]:
        raise ConfigError(f"--end ({options['end']}) must be after --start ({options['start']})")
    return options


def _generate(spark: Any, options: dict[str, Any]) -> None:
    from crm_spark.generate import generate_dataset

    summary = generate_dataset(spark, **options)
    out = sys.stdout
    print(f"\nGenerated {sum(summary.rows.values()):,} rows in {summary.seconds:.1f}s into {summary.out}", file=out)
    _table(out, ["source", "rows"], [[name, f"{rows:,}"] for name, rows in summary.rows.items()])
    print(f"planted truth: {summary.truth_dir}", file=out)


def _cmd_generate_subscriptions(args: argparse.Namespace, settings: Settings) -> int:
    from crm_spark.generate.subscription import generate_subscriptions

    summary = generate_subscriptions(
        args.out or settings.paths.raw,
        customers=args.customers if args.customers is not None else 5000,
        seed=args.seed if args.seed is not None else settings.generate.seed,
        snapshot=args.snapshot,
    )
    print(f"Generated {summary.path}: {summary.rows:,} rows, churn rate {summary.churn_rate:.3f}, "
          f"Bayes ROC-AUC {summary.bayes_roc_auc:.4f} (answer key {summary.truth_path})", file=sys.stdout)
    return 0


def _cmd_stage(args: argparse.Namespace, settings: Settings) -> int:
    spec = stage(args.stage)
    spec.load()  # a not-built stage fails before Spark starts
    entries = [o.entry for o in spec.options if o.entry and getattr(args, o.dest, False)]
    if len(entries) > 1:
        raise ConfigError(f"{args.stage}: choose one of {', '.join(o.flag for o in spec.options if o.entry)}")
    return _run(args, settings, [args.stage], entry=entries[0] if entries else "run")


def _cmd_run(args: argparse.Namespace, settings: Settings) -> int:
    specs = plan(args.stages)
    not_built = [s.name for s in specs if not s.built]
    if args.stages and not_built:
        raise StageNotBuiltError(f"stages {', '.join(not_built)} are not built yet in this version")
    return _run(args, settings, [s.name for s in specs], pending=[s.name for s in STAGES if not s.built])


def _cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    """``generate`` then ``run`` in one Spark application: one JVM start and one JIT warm-up instead
    of two. A raw zone that already holds data (a generated dataset, or files in any configured
    source's folder) is used as it is; one an interrupted ``generate`` left half-written is refused."""
    from crm_spark.generate.dataset import TMP_DIR, TRUTH_DIR
    from crm_spark.generate.writer import OutputFs
    from crm_spark.session import build_session
    from crm_spark.stages.ingest import source_uri

    options = _generate_options(args, settings)
    spark = build_session(settings, preload=imports(STAGE_NAMES))
    raw = OutputFs(spark, options["out"])
    holding = [name for name, source in settings.sources.items()
               if source.enabled and not OutputFs(spark, source_uri(settings, source)).is_empty_or_missing("")]
    if holding:
        manifest = f"{TRUTH_DIR}/manifest.json"
        made = json.loads(raw.read_text(manifest)) if raw.exists(manifest) else None
        if made is None and raw.exists(TMP_DIR):
            raise SourceError(f"{raw.root} holds a dataset an interrupted generate left half-written "
                              f"({raw.uri(TMP_DIR)}): remove it (make clean-data) and run again")
        logger = logging.getLogger("crm_spark")
        logger.info("sources %s already hold files: running on them without generating (make clean-data, or "
                    "remove %s, to start over)", ", ".join(holding), raw.root)
        asked = {k: getattr(args, k) for k in ("customers", "seed") if getattr(args, k) is not None}
        differ = {k: v for k, v in asked.items() if made and k in made and made[k] != v}
        if differ:
            logger.warning(
                "the dataset in %s was generated with %s, not %s: running on it as it is (make clean-data to "
                "generate the one asked for)", raw.root, ", ".join(f"{k} {made[k]}" for k in differ),
                ", ".join(f"{k} {v}" for k, v in differ.items()),
            )
    else:
        _generate(spark, options)
    return _run(args, settings, [s.name for s in plan(None)], pending=[s.name for s in STAGES if not s.built],
                spark=spark)


def _cmd_vacuum(args: argparse.Namespace, settings: Settings) -> int:
    """Vacuum every table of the lake: time travel stays possible within the retention window."""
    from crm_spark.lake import open_lake
    from crm_spark.session import build_session

    hours = settings.lake.vacuum_retention_hours if args.retention_hours is None else args.retention_hours
    if hours < 1:
        raise ConfigError("--retention-hours must be at least 1: a shorter retention can delete the files of a "
                          "write still running")
    lake = open_lake(build_session(settings), settings)
    logger = logging.getLogger("crm_spark")
    total = 0
    for table in lake.tables():
        files = lake.vacuum(table, retention_hours=hours, dry_run=args.dry_run)
        total += len(files)
        if files:
            logger.info("[vacuum] %s: %d file%s %s", table, len(files), "" if len(files) == 1 else "s",
                        "would be deleted" if args.dry_run else "deleted")
    verb = "would delete" if args.dry_run else "deleted"
    print(f"vacuum: {verb} {total:,} data files older than {hours} hours that no table version refers to")
    return 0


def _run(
    args: argparse.Namespace, settings: Settings, names: list[str], pending: Sequence[str] = (), entry: str = "run",
    spark: Any = None,
) -> int:
    from crm_spark.lake import open_lake
    from crm_spark.session import build_session

    started = time.perf_counter()
    spark = spark or build_session(settings, preload=imports(names))
    lake = open_lake(spark, settings)
    logging.getLogger("crm_spark").info("lake %s (%s engine)", settings.paths.lake, lake.engine)
    ctx = StageContext(settings=settings, spark=spark, lake=lake, as_of=args.as_of, force=bool(getattr(args, "force", False)))
    results: list[StageResult] = []
    try:
        for name in names:
            results.append(run_stage(ctx, name, entry=entry, keep_going=len(names) > 1))
    finally:
        finish_run(ctx)
        _summary(sys.stdout, results, time.perf_counter() - started, pending=pending)
    return 0


def _summary(out: TextIO, results: list[StageResult], seconds: float, *, pending: Sequence[str]) -> None:
    rows = []
    for r in results:
        if r.skipped:
            rows.append([r.stage, "skipped", r.skipped, "", "", f"{r.seconds:.1f}"])
        for i, (table, version) in enumerate((r.unchanged or {}).items()):
            rows.append([r.stage if i == 0 else "", "unchanged", table, str(version), "", f"{r.seconds:.1f}" if i == 0 else ""])
        for i, w in enumerate(r.writes):
            rows.append(
                [r.stage if i == 0 else "", "ok" if not w.noop else "no-op", w.table, str(w.version), f"{w.rows:,}",
                 f"{r.seconds:.1f}" if i == 0 else ""]
            )
        if not r.skipped and not r.writes and not r.unchanged:
            rows.append([r.stage, "ok", "(nothing written)", "", "", f"{r.seconds:.1f}"])
    print(f"\nSummary ({seconds:.1f}s)", file=out)
    _table(out, ["stage", "status", "table", "version", "rows", "seconds"], rows)
    for r in results:
        if r.metrics and r.stage in _HEADLINE:
            shown = [f"{k} {_num(r.metrics[k])}" for k in _HEADLINE[r.stage] if k in r.metrics]
            if shown:
                print(f"  {r.stage}: {', '.join(shown)}" + (f" (mlflow run {r.mlflow_run_id})" if r.mlflow_run_id else ""),
                      file=out)
        gates = r.quality
        if gates:
            failed = sum(1 for q in gates if not q.success)
            print(f"  quality [{r.stage}]: {len(gates) - failed}/{len(gates)} gates passed in "
                  f"{sum(q.seconds for q in gates):.1f}s", file=out)
    for r in results:
        for note in r.notes:
            print(f"  note [{r.stage}]: {note}", file=out)
    if pending:
        print(f"  not built yet: {', '.join(pending)}", file=out)
    report = next((r.outcome for r in results if r.stage == "report" and r.outcome is not None), None)
    if report is not None:
        if report.quarantine_by_table:
            print(f"  quarantine: {sum(report.quarantine_by_table.values()):,} rows in all ("
                  + ", ".join(f"{t} {n:,}" for t, n in report.quarantine_by_table.items()) + ")", file=out)
            reasons = list(report.quarantine_by_reason.items())
            more = f", and {len(reasons) - _REASONS_SHOWN} more reasons (see the report)" if len(reasons) > _REASONS_SHOWN else ""
            print("  quarantine by reason: " + ", ".join(f"{k} {n:,}" for k, n in reasons[:_REASONS_SHOWN]) + more, file=out)
        print(f"Report: {report.path}", file=out)


_REASONS_SHOWN = 10  # quarantine reasons in the summary, most rows first (the report lists them all)

# The numbers each stage's summary line shows (a model metric beside its baseline).
_HEADLINE = {
    "refine": ("mapped", "accepted", "quarantined", "filtered"),
    "segment": ("k", "silhouette", "silhouette_euclidean"),
    "basket": ("baskets", "rules"),
    "churn": ("logistic_regression.roc_auc", "gbt.roc_auc", "baseline.recency.roc_auc", "champion.version"),
    "recommend": ("ndcg_at_k", "baseline.popularity.ndcg_at_k", "baseline.cooccurrence.ndcg_at_k", "precision_at_k",
                  "baseline.popularity.precision_at_k"),
    "clv": ("mae", "baseline.last_period.mae", "baseline.bgnbd.mae", "spearman", "baseline.last_period.spearman",
            "baseline.bgnbd.spearman"),
}


def _num(value: float) -> str:
    if float(value).is_integer():
        return f"{int(value):,}"
    return f"{value:.3f}"


def _table(out: TextIO, header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)] if rows else [len(h) for h in header]
    numeric = {i for i, h in enumerate(header) if h in {"rows", "version", "seconds"}}
    for line in [header, *rows]:
        cells = [str(c).rjust(w) if i in numeric else str(c).ljust(w) for i, (c, w) in enumerate(zip(line, widths))]
        print("  " + "  ".join(cells).rstrip(), file=out)


def _date(value: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{value}' is not a date in YYYY-MM-DD form") from None


def _configure_logging(verbose: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", datefmt="%H:%M:%S"))
    root = logging.getLogger("crm_spark")
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    root.propagate = False
    for noisy in ("py4j", "great_expectations", "mlflow", "alembic", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.DEBUG if verbose else logging.WARNING)


def _fail(message: str, *, verbose: bool) -> None:
    if verbose:
        traceback.print_exc(file=sys.stderr)
    print(f"crm-spark: {message}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
