"""``clinicflow train``, ``clinicflow model show`` and ``clinicflow backtest``."""

from __future__ import annotations

import argparse
import json
from datetime import date
from pathlib import Path

from clinicflow.cliargs import iso_date


def _overrides(args: argparse.Namespace) -> dict:
    out: dict = {}
    if getattr(args, "algorithms", None):
        out["algorithms"] = [a.strip() for a in args.algorithms.split(",") if a.strip()]
    if getattr(args, "trials", None) is not None:
        out["trials"] = args.trials
    if getattr(args, "timeout", None) is not None:
        out["timeout_s"] = args.timeout
    if getattr(args, "features", None):
        out["features"] = [f.strip() for f in args.features.split(",") if f.strip()]
    return out


def cmd_train(args: argparse.Namespace) -> int:
    from training.stage import run_training

    as_of = args.as_of or date.today()
    summary = run_training(as_of, overrides=_overrides(args), force=args.force)
    if args.json:
        print(json.dumps(summary, default=str))
    elif not summary.get("trained"):
        print(f"not trained: {summary['reason']}")
    else:
        print(f"trained as of {as_of}: {summary['algorithm']}, registered noshow v{summary['model_version']} "
              f"(gate AUC {summary['gate_auc']:.4f}, log loss {summary['gate_log_loss']:.4f}; lead time alone "
              f"AUC {summary['lead_only_auc']:.4f}) in {summary['seconds']}s")
        print(f"champion: {'PROMOTED' if summary['promoted'] else 'kept'} — {summary['decision']}")
        print(f"MLflow run {summary['mlflow_run_id']} (`clinicflow ui mlflow`)")
    return 0


def cmd_model_show(args: argparse.Namespace) -> int:
    from training.registry import describe

    info = describe()
    if args.json:
        print(json.dumps(info, default=str))
        return 0
    for alias, version in info.items():
        if version is None:
            print(f"{alias:<11} none")
            continue
        tags = version["tags"]
        print(f"{alias:<11} v{version['version']}: {tags.get('algorithm', '?')} as of {tags.get('as_of', '?')}, "
              f"gate AUC {tags.get('gate_auc', '?')}, log loss {tags.get('gate_log_loss', '?')}; "
              f"{tags.get('champion_decision', '')}: {tags.get('decision_reason', '')}")
    return 0


def cmd_backtest(args: argparse.Namespace) -> int:
    from training.backtest import format_report, run_backtest

    options = json.loads(args.options) if args.options else {}
    result = run_backtest(
        args.source, args.start, args.end, Path(args.output), path=Path(args.path) if args.path else None,
        url=args.url, database_url=args.database_url, keep=args.keep, retrain_every=args.retrain_every,
        overrides=_overrides(args), country=args.country, options=options,
    )
    print(format_report(result))
    print(f"wrote {len(result.scores):,} rows to {args.output}")
    return 0


def _training_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--algorithms", help="comma-separated: logreg,tree,forest,xgboost,lightgbm,stacking "
                                        "(default CLINICFLOW_TRAIN_ALGORITHMS)")
    p.add_argument("--trials", type=int, help="Optuna trials (default CLINICFLOW_TRAIN_OPTUNA_TRIALS)")
    p.add_argument("--timeout", type=int, help="Optuna time budget in seconds")
    p.add_argument("--features", help="restrict the model to these features (comma-separated)")


def register_cli(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train the no-show model as of a date, register it, gate the champion",
                       description="What the nightly `train` task does: tune and validate every algorithm, log an "
                                   "MLflow run, register a `noshow` version as challenger and promote it to champion "
                                   "only if it beats the current champion on the same recent days.")
    p.add_argument("--as-of", type=iso_date, help="as-of date (default: today)")
    p.add_argument("--force", action="store_true", help="train even if the last training is recent")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    _training_options(p)
    p.set_defaults(handler=cmd_train)

    p = sub.add_parser("model", help="the registered no-show model")
    msub = p.add_subparsers(dest="model_command", metavar="SUBCOMMAND", required=True)
    q = msub.add_parser("show", help="champion and challenger versions with the last decision")
    q.add_argument("--json", action="store_true")
    q.set_defaults(handler=cmd_model_show)

    p = sub.add_parser(
        "backtest", help="replay the nightly runs over past days on an export, isolated from the warehouse",
        description="Loads the source into a database of its own (dropped at the end), trains as of --start with "
                    "only what was known then, scores every appointment of [start, end] as the run of the night "
                    "before its day would have, writes one CSV row per appointment and prints AUC, PR-AUC and "
                    "Brier for all appointments and for those booked at least a day ahead.")
    p.add_argument("--source", required=True,
                   help="vitoria-csv, csv (canonical folder), fhir, medialog (with --url), or a configured source name")
    p.add_argument("--path", help="the export file or folder")
    p.add_argument("--url", help="Medialog database URL (read-only login)")
    p.add_argument("--start", type=iso_date, required=True, help="first day scored (the model is trained as of it)")
    p.add_argument("--end", type=iso_date, required=True, help="last day scored")
    p.add_argument("--output", required=True, help="CSV to write")
    p.add_argument("--retrain-every", type=int, help="retrain inside the window every N days (default: never)")
    p.add_argument("--country", help="production calendar (default: BR-ES for vitoria-csv, else "
                                     "CLINICFLOW_HOLIDAY_COUNTRY)")
    p.add_argument("--options", help="connector options as JSON, e.g. '{\"timezone\": \"America/Sao_Paulo\"}'")
    p.add_argument("--database-url", help="PostgreSQL database for the backtest (default: a new database "
                                          "<warehouse>_backtest_<id> on the warehouse server, dropped at the end)")
    p.add_argument("--keep", action="store_true", help="keep the backtest database for inspection")
    _training_options(p)
    p.set_defaults(handler=cmd_backtest)
