"""``clinicflow features …``: build point-in-time features, show the production calendar."""

from __future__ import annotations

import argparse
from datetime import date


def _date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date (YYYY-MM-DD)") from None


def cmd_build(args: argparse.Namespace) -> int:
    from features.build import build_features, build_training_features, run_features_stage

    as_of = args.as_of or date.today()
    if args.training_only:
        rows = build_training_features(as_of, recompute=args.recompute)
        print(f"training rows written: {rows:,} (appointments with an outcome before {as_of}, each as of its day)")
        return 0
    if args.horizon is not None or args.recompute:
        if args.recompute:
            rows = build_training_features(as_of, recompute=True)
            print(f"training rows recomputed: {rows:,}")
        frame = build_features(as_of, horizon_days=args.horizon)
        print(f"features as of {as_of}: {len(frame):,} booked appointments of the next "
              f"{args.horizon or 'configured'} day(s) written to features.appointment_features")
        return 0
    summary = run_features_stage(as_of)
    print(f"features as of {as_of}: {summary['training_rows_written']:,} training rows back-filled, "
          f"{summary['rows_pruned']:,} old scoring rows pruned "
          f"(feature set {summary['feature_set_version']}, {summary['seconds']}s)")
    return 0


def cmd_calendar(args: argparse.Namespace) -> int:
    from clinicflow.settings import get_settings
    from features.calendar import build_calendar

    country = args.country or get_settings().holiday_country
    days = build_calendar(country, args.year, args.year)
    print(f"{country} {args.year}: public holidays, moved days off, working weekend days, shortened days")
    for d in days:
        kind = ("holiday" if d.is_public_holiday else "day off (moved)" if d.holiday_name else
                "working weekend" if d.is_working_weekend else "")
        if d.is_shortened_day:
            kind = (kind + ", " if kind else "") + "shortened (pre-holiday)"
        if kind:
            print(f"  {d.day}  {d.day.strftime('%a')}  {kind:<40} {d.holiday_name or ''}")
    return 0


def register_cli(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("features", help="point-in-time features (build, calendar)")
    fsub = p.add_subparsers(dest="features_command", metavar="SUBCOMMAND", required=True)
    q = fsub.add_parser(
        "build", help="compute features as of a date (what the nightly `features` task does)",
        description="Without options: the nightly stage — training rows back-filled, old scoring rows pruned (the "
                    "scoring stage computes and stores the horizon's rows). --horizon N: the booked appointments of "
                    "the next N days as of the date, computed and stored now.")
    q.add_argument("--as-of", type=_date, help="as-of date (default: today)")
    q.add_argument("--horizon", type=int, help="days ahead to compute (default CLINICFLOW_HORIZON_DAYS)")
    q.add_argument("--training-only", action="store_true", help="only back-fill the training rows")
    q.add_argument("--recompute", action="store_true",
                   help="recompute every training row of the current feature-set version")
    q.set_defaults(handler=cmd_build)
    q = fsub.add_parser("calendar", help="show the production calendar behind the calendar features")
    q.add_argument("--country", help="ISO country code, optionally -REGION (default CLINICFLOW_HOLIDAY_COUNTRY)")
    q.add_argument("--year", type=int, default=date.today().year)
    q.set_defaults(handler=cmd_calendar)
