"""``clinicflow score``, ``clinicflow next-week`` and ``clinicflow reporting bi-user``."""

from __future__ import annotations

import argparse
import json
import os
import re
from datetime import date

from clinicflow.errors import ConfigError


def _date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date (YYYY-MM-DD)") from None


def cmd_score(args: argparse.Namespace) -> int:
    from scoring.stage import run_scoring

    as_of = args.as_of or date.today()
    summary = run_scoring(as_of, sources=args.source or None)
    if args.json:
        print(json.dumps(summary, default=str))
        return 0
    print(f"scored {summary['appointments_scored']:,} booked appointments of the {as_of} horizon with "
          f"{summary['model']}: {summary['high_risk']:,} high risk, {summary['medium_risk']:,} medium "
          f"(mean probability {summary['mean_probability']}) in {summary['seconds']}s")
    print("risk list: reporting.risk_next_week")
    return 0


def cmd_next_week(args: argparse.Namespace) -> int:
    from optimization.stage import format_summary, next_week_summary

    summary = next_week_summary(args.as_of)
    if args.json:
        print(json.dumps(summary, default=str))
        return 0
    for line in format_summary(summary):
        print(line)
    return 0


def cmd_bi_user(args: argparse.Namespace) -> int:
    """Create (or update) a login role for a BI tool, member of the read-only clinicflow_bi role."""
    import sqlalchemy as sa

    from clinicflow import db

    if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", args.name):
        raise ConfigError(f"BI user name {args.name!r}: use lower-case letters, digits and _")
    password = os.environ.get(args.password_env or "")
    if not password:
        raise ConfigError(f"set the BI user's password in an environment variable and name it with --password-env "
                          f"(e.g. `export BI_PASSWORD=…; clinicflow reporting bi-user {args.name} "
                          "--password-env BI_PASSWORD`); it is never taken from the command line")
    with db.get_engine().begin() as conn:
        exists = conn.execute(sa.text("SELECT 1 FROM pg_roles WHERE rolname = :n"), {"n": args.name}).scalar()
        verb = "ALTER" if exists else "CREATE"
        quoted = conn.execute(sa.text("SELECT quote_literal(:p)"), {"p": password}).scalar()
        conn.execute(sa.text(f'{verb} ROLE "{args.name}" LOGIN PASSWORD {quoted}'))
        conn.execute(sa.text(f'GRANT clinicflow_bi TO "{args.name}"'))
        database = conn.execute(sa.text("SELECT current_database()")).scalar()
    print(f"{'updated' if exists else 'created'} login {args.name!r}, a member of clinicflow_bi: it can read the "
          f"reporting schema of database {database!r} and nothing else")
    return 0


def register_cli(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "score", help="score the booked appointments of the horizon with models:/noshow@champion",
        description="Writes reporting.appointment_risk for the as-of date: probability, risk band and the top three "
        "reasons of every booked appointment starting in [as-of, as-of + CLINICFLOW_HORIZON_DAYS). A re-run replaces "
        "that date's rows.",
    )
    p.add_argument("--as-of", type=_date, default=None, help="as-of date (default: today)")
    p.add_argument("--source", action="append", help="only this source (repeatable)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(handler=cmd_score)

    p = sub.add_parser("next-week", help="short summary of the scored horizon and its overbooking")
    p.add_argument("--as-of", type=_date, default=None, help="run date (default: the latest)")
    p.add_argument("--json", action="store_true", help="print as JSON")
    p.set_defaults(handler=cmd_next_week)

    p = sub.add_parser("reporting", help="reporting for BI tools")
    rsub = p.add_subparsers(dest="reporting_command", metavar="SUBCOMMAND", required=True)
    q = rsub.add_parser("bi-user", help="create a login for a BI tool that can read the reporting schema only")
    q.add_argument("name", help="login name (lower case)")
    q.add_argument("--password-env", help="environment variable that holds the password")
    q.set_defaults(handler=cmd_bi_user)
