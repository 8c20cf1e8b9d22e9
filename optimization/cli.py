"""``clinicflow optimize`` and ``clinicflow evaluate-policies``."""

from __future__ import annotations

import argparse
import json
import logging
from datetime import date
from pathlib import Path

from clinicflow.cliargs import iso_date
from clinicflow.errors import ConfigError

log = logging.getLogger(__name__)


def cmd_optimize(args: argparse.Namespace) -> int:
    from optimization.stage import format_summary, list_partitions, next_week_summary, run_optimisation

    as_of = args.as_of or date.today()
    if args.source or args.branch:
        partitions = [{"source": args.source, "branch_id": args.branch}]
        if not args.source:
            raise ConfigError("--branch needs --source")
    elif args.per_branch:
        partitions = list_partitions(as_of)
    else:
        partitions = [None]
    for partition in partitions:
        summary = run_optimisation(as_of, partition, workers=args.workers)
        if args.json:
            print(json.dumps(summary, default=str))
        else:
            print(f"OK  {summary['partition']}: {summary['resource_days']} resource-days, "
                  f"{summary['extras_recommended']} extra bookings recommended, "
                  f"{summary['expected_patients_gained']:.1f} patients gained (expected), "
                  f"optimiser p95 {summary['optimizer_p95_s']:.3f}s, {summary['seconds']}s in all")
            if summary["booking_order_days"]:
                print(f"    {summary['booking_order_days']} resource-days have no slot grid: slots were formed "
                      "from their appointments in booking order")
    if not args.json:
        for line in format_summary(next_week_summary(as_of)):
            print(line)
    return 0


def _weights(values: list[str] | None):
    from optimization.model import CostWeights
    from optimization.policy_eval import DEFAULT_WEIGHT_GRID

    return [CostWeights.parse(v) for v in values] if values else list(DEFAULT_WEIGHT_GRID)


def cmd_evaluate(args: argparse.Namespace) -> int:
    from clinicflow.settings import get_settings
    from optimization.model import OverbookingConfig
    from optimization.policy_eval import EvalDay, EvaluationSpec, evaluate_policies, format_fairness, format_table

    settings = get_settings()
    overrides = {}
    if args.fairness_weight is not None:
        overrides["fairness_weight"] = args.fairness_weight
    config = OverbookingConfig.from_settings(settings, **overrides)
    q = args.extra_show_probability
    if args.synthetic:
        from optimization.synthetic import generate_days

        validation = [EvalDay(g.day, g.showed) for g in generate_days(args.validation_days, seed=args.seed,
                                                                      extra_show_prob=q)]
        test = [EvalDay(g.day, g.showed) for g in generate_days(args.synthetic, seed=args.seed + 1,
                                                                extra_show_prob=q)]
        note = (f"generated resource-days (optimization/synthetic.py, seed {args.seed}): {args.synthetic} test and "
                f"{args.validation_days} validation days of 12-40 slots; outcomes drawn from the true probabilities, "
                "policies see a calibrated model's noisy predictions")
        label = args.label or f"synthetic-{args.synthetic}-seed{args.seed}"
    elif args.scores:
        from optimization import history

        scores = history.read_scores(Path(args.scores))
        if args.vitoria_csv:
            frame = history.frame_from_vitoria(scores, Path(args.vitoria_csv))
            slots = resource_days = None
            what = f"Vitória CSV {Path(args.vitoria_csv).name} scored by {Path(args.scores).name}"
        else:
            from clinicflow import db

            if not args.source:
                raise ConfigError("--scores needs --source (the source name in core) or --vitoria-csv")
            engine = db.engine_for_url(args.database_url) if args.database_url else db.get_engine()
            frame, slots, resource_days = history.frame_from_warehouse(scores, engine, args.source)
            what = f"source {args.source} in {engine.url.database} scored by {Path(args.scores).name}"
        if args.max_days:
            keep = sorted(frame["appointment_day"].unique())[-args.max_days:]
            frame = frame[frame["appointment_day"].isin(keep)]
        validation, test, days_note = history.eval_days(
            frame, slots=slots, resource_days=resource_days, extra_show_prob=q, session_slots=args.session_slots,
            validation_share=args.validation_share)
        note = f"{what}: {days_note}"
        label = args.label or f"{Path(args.scores).stem}"
    else:
        raise ConfigError("say which resource-days to evaluate: --synthetic N, or --scores FILE.csv with --source "
                          "NAME (warehouse) or --vitoria-csv FILE")
    if args.max_test_days and len(test) > args.max_test_days:
        test = test[-args.max_test_days:]
    spec = EvaluationSpec(config=config, weight_grid=_weights(args.weights), reps=args.reps,
                          bootstrap=args.bootstrap, seed=args.seed, with_scenario=args.with_scenario,
                          scenario_count=args.scenarios, scenario_time_limit_s=args.scenario_time_limit,
                          workers=args.workers if args.workers is not None else settings.optimizer_workers)
    result = evaluate_policies(validation, test, spec, note)
    print(format_table(result))
    print()
    print(format_fairness(result))
    print(f"\n{result.days} test resource-days, {len(spec.weight_grid)} weight settings in {result.seconds:.1f}s")
    if args.output:
        out = Path(args.output)
        out.parent.mkdir(parents=True, exist_ok=True)
        result.table.to_csv(out, index=False)
        result.fairness.to_csv(out.with_name(out.stem + "_fairness.csv"), index=False)
        print(f"wrote {out} and {out.with_name(out.stem + '_fairness.csv')}")
    if not args.no_store:
        from optimization.evaluation_store import store

        rows = store(result, label)
        print(f"stored {rows} rows in reporting.policy_evaluation* (label {label!r})")
    if not args.no_mlflow:
        from optimization.evaluation_store import log_to_mlflow

        params = {"label": label, "data": note, "days": result.days, "validation_days": result.validation_days,
                  "weights": ", ".join(w.label for w in spec.weight_grid), "reps": spec.reps,
                  "bootstrap": spec.bootstrap, "max_per_slot": config.max_per_slot, "max_per_day": config.max_per_day,
                  "max_expected_overtime": config.max_expected_overtime,
                  "max_overtime_probability": config.max_overtime_probability,
                  "fairness_weight": config.fairness_weight, "tau": json.dumps(result.tau)}
        run_id = log_to_mlflow(result, label, params)
        print(f"logged to MLflow run {run_id} (experiment clinicflow-overbooking; `clinicflow ui mlflow`)")
    return 0


def register_cli(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "optimize", help="recommend overbooking for the scored horizon (the nightly optimisation stage)",
        description="Reads the risk scores of the as-of date, builds each resource-day's slot grid and writes the "
        "recommended extra bookings per slot to reporting.overbooking_slot / overbooking_day. Idempotent.",
    )
    p.add_argument("--as-of", type=iso_date, default=None, help="as-of date of the scoring run (default: today)")
    p.add_argument("--source", help="only this source")
    p.add_argument("--branch", help="only this branch (with --source)")
    p.add_argument("--per-branch", action="store_true", help="one pass per (source, branch), as the DAG does")
    p.add_argument("--workers", type=int, default=None, help="worker processes (default CLINICFLOW_OPTIMIZER_WORKERS)")
    p.add_argument("--json", action="store_true", help="print the summaries as JSON")
    p.set_defaults(handler=cmd_optimize)

    p = sub.add_parser(
        "evaluate-policies", help="compare overbooking policies on the same resource-days (exact and replay)",
        description="Compares no overbooking, flat, threshold (τ tuned on validation days), top-k, greedy and the "
        "optimiser on the same resource-days, with the exact evaluator and by replaying held-out outcomes (extra "
        "patients come with the model's average show probability; the same random draws for every policy), over a "
        "grid of cost weights. Prints the table, stores it in reporting.policy_evaluation and logs it to MLflow "
        "with plots.",
    )
    src = p.add_argument_group("resource-days (one of)")
    src.add_argument("--synthetic", type=int, metavar="N", help="N generated test resource-days")
    src.add_argument("--scores", help="backtest CSV (`clinicflow backtest --output FILE`)")
    src.add_argument("--source", help="with --scores: the source name in core (slot grids where it has them)")
    src.add_argument("--database-url", help="with --scores: the warehouse the backtest kept (default: the warehouse)")
    src.add_argument("--vitoria-csv", help="with --scores: the Vitória CSV (no slot grid: days in booking order)")
    p.add_argument("--weights", action="append", metavar="W:I:O[:R]",
                   help="cost weights waiting:idle:overtime[:patient value]; repeat for a grid "
                   "(default 0.5:1:1.5, 0.4:0.2:0.4:0.6, 1:1:2)")
    p.add_argument("--validation-days", type=int, default=60, help="with --synthetic: validation resource-days")
    p.add_argument("--validation-share", type=float, default=0.3, help="with --scores: share of (earliest) days used "
                   "to tune the threshold")
    p.add_argument("--session-slots", type=int, default=40, help="most slots of a day formed in booking order")
    p.add_argument("--max-days", type=int, help="with --scores: only the last N appointment days")
    p.add_argument("--max-test-days", type=int, help="at most this many (latest) test resource-days")
    p.add_argument("--extra-show-probability", type=float, default=None,
                   help="show probability of an extra patient (default: the model's average)")
    p.add_argument("--fairness-weight", type=float, default=None, help="override CLINICFLOW_OVERBOOK_FAIRNESS_WEIGHT")
    p.add_argument("--reps", type=int, default=20, help="replay replications per resource-day")
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples")
    p.add_argument("--with-scenario", action="store_true", help="also the sampled-scenario CP-SAT (slow)")
    p.add_argument("--scenarios", type=int, default=50, help="scenarios of the sampled model")
    p.add_argument("--scenario-time-limit", type=float, default=5.0, help="seconds per resource-day for it")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=None, help="worker processes (default CLINICFLOW_OPTIMIZER_WORKERS)")
    p.add_argument("--label", help="name of the evaluation in reporting/MLflow (a re-run replaces it)")
    p.add_argument("--output", help="also write the table as CSV (and *_fairness.csv)")
    p.add_argument("--no-store", action="store_true", help="do not write reporting.policy_evaluation")
    p.add_argument("--no-mlflow", action="store_true", help="do not log an MLflow run")
    p.set_defaults(handler=cmd_evaluate)

