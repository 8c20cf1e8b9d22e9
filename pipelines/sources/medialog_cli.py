"""``clinicflow medialog-demo generate|advance|status|source-config``: the generated Medialog source.

Registered by :mod:`pipelines.cli`. The source lives in its own PostgreSQL database, by default
``<warehouse database>_medialog_demo`` on the warehouse's server (``--url`` to choose another).
"""

from __future__ import annotations

import argparse
import json
from datetime import date, timedelta
from pathlib import Path

from clinicflow.cliargs import iso_date
from clinicflow.errors import ConfigError


def _url(args: argparse.Namespace) -> str:
    if args.url:
        return args.url
    from pipelines.sources.medialog_generator import default_demo_url

    return default_demo_url().render_as_string(hide_password=False)


def _lines(path: Path | None) -> tuple[str, ...]:
    if path is None:
        return ()
    try:
        return tuple(line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip())
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None


def cmd_generate(args: argparse.Namespace) -> int:
    from pipelines.sources.medialog_generator import generate

    summary = generate(
        _url(args), appointments=args.appointments, seed=args.seed, today=args.today or date.today(),
        history_days=args.history_days, horizon_days=args.horizon_days,
        known_names=_lines(args.known_names), known_phones=_lines(args.known_phones),
    )
    if args.json:
        print(json.dumps(summary.as_dict(), default=str))
        return 0
    stats = summary.stats
    print(f"generated {stats['appointments']:,} appointments ({stats['future_appointments']:,} still to come), "
          f"{stats['patients']:,} patients, {stats['doctors']} doctors in {summary.database} "
          f"in {summary.seconds:.1f}s")
    print(f"  clock {summary.clock} (advance up to {summary.horizon_end}); true no-show rate "
          f"{stats['true_noshow_rate_past_kept']:.1%}; best possible AUC (true probabilities) "
          f"{stats['truth_auc_past']:.3f}")
    return 0


def cmd_advance(args: argparse.Namespace) -> int:
    from pipelines.sources.medialog_generator import advance, read_state

    url = _url(args)
    if args.to is None:
        state = read_state(url)
        if state is None:
            raise ConfigError("no generated source there: run `clinicflow medialog-demo generate` first")
        target = state["CLOCK"] + timedelta(days=args.days)
    else:
        target = args.to
    summary = advance(url, target)
    if args.json:
        print(json.dumps(summary.as_dict(), default=str))
        return 0
    rows = summary.rows
    print(f"advanced {summary.database} to {summary.clock}: {summary.stats.get('changed_bookings', 0):,} bookings "
          f"changed, {rows.get('MOTCONSU', 0):,} visit records, {rows.get('FM_BILL', 0):,} bills, "
          f"{rows.get('SMS_MESSAGES', 0):,} SMS, {rows.get('hard_deleted', 0):,} hard deletes "
          f"in {summary.seconds:.1f}s")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from pipelines.sources.medialog_generator import read_state, truth_upper_bound

    url = _url(args)
    state = read_state(url)
    if state is None:
        print(f"no generated Medialog source in {url.split('@')[-1]}")
        return 3
    bound = truth_upper_bound(url)
    info = {"clock": state["CLOCK"], "horizon_end": state["HORIZON_END"], "seed": state["SEED"],
            "appointments_generated": state["APPOINTMENTS"], "upper_bound": bound}
    if args.json:
        print(json.dumps(info, default=str))
        return 0
    print(f"clock {state['CLOCK']} (advance up to {state['HORIZON_END']}), seed {state['SEED']}, "
          f"generated with {state['APPOINTMENTS']:,} appointments")
    print(f"kept past appointments: {bound['n']:,}, no-show rate {bound['noshow_rate']:.1%}; "
          f"true probabilities: AUC {bound['auc']:.3f}, Brier {bound['brier']:.4f} (no model can beat these "
          "in expectation)")
    return 0


def cmd_source_config(args: argparse.Namespace) -> int:
    from pipelines.sources.medialog_generator import connector_options

    entry = {"name": args.name, "kind": "medialog", "url": _url(args), "options": connector_options()}
    print(json.dumps([entry], ensure_ascii=False))
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    import sqlalchemy as sa

    from pipelines.sources.medialog_bench import run
    from pipelines.sources.medialog_generator import default_demo_url

    url = sa.make_url(args.url) if args.url else default_demo_url().set(
        database=f"{default_demo_url().database.removesuffix('_medialog_demo')}_medialog_bench")
    result = run(url, args.appointments, args.today or date.today())
    if args.json:
        print(json.dumps(result, default=str))
        return 0
    g, f, n = result["generate"], result["extract_full"], result["next_day"]
    print(f"Medialog source benchmark, {args.appointments:,} appointments ({result['database']})")
    print(f"  generate:            {g['seconds']:>7.1f}s  {g['rows_per_s']:>9,} rows/s  peak {g['peak_rss_mb']:,} MB")
    print(f"  bare COPY PLANNING:  {f['baseline_bare_copy_of_planning_s']:>7.1f}s  (floor)")
    print(f"  pandas.read_sql *:   {f['baseline_pandas_read_sql_select_star_s']:>7.1f}s  (naive baseline)")
    print(f"  extract, COPY path:  {f['connector_copy_path_s']:>7.1f}s  {f['connector_copy_rows_per_s']:>9,} rows/s  "
          f"= {f['ratio_copy_path_to_bare_copy']}x the floor, {f['ratio_copy_path_to_read_sql']}x read_sql")
    print(f"  extract, cursor:     {f['connector_cursor_path_s']:>7.1f}s  "
          f"{f['connector_cursor_rows_per_s']:>9,} rows/s  "
          f"= {f['ratio_cursor_path_to_read_sql']}x read_sql (the path used on SQL Server)")
    print(f"  next day:            advance {n['advance_s']:.1f}s, incremental extract {n['extract_s']:.1f}s of "
          f"{n['rows']:,} rows ({n['share_of_full']:.1%} of the full read, {n['ratio_to_full_extract']}x its time)")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "medialog-demo", help="a generated Medialog source for the demo and tests",
        description="Generates a realistic Medialog database (PLANNING, PATIENTS, MOTCONSU, … with fake names) "
        "in its own PostgreSQL database, and moves its clock forward day by day. See docs/medialog-generator.md.",
    )
    demo_sub = p.add_subparsers(dest="medialog_command", metavar="SUBCOMMAND", required=True)

    def common(q: argparse.ArgumentParser) -> None:
        q.add_argument("--url", help="PostgreSQL URL of the demo source (default: <warehouse>_medialog_demo on the "
                       "warehouse's server)")
        q.add_argument("--json", action="store_true", help="print the summary as JSON")

    q = demo_sub.add_parser("generate", help="(re)create the source: seeded, deterministic")
    common(q)
    q.add_argument("--appointments", type=int, default=50_000, help="PLANNING rows at the clock (default 50000)")
    q.add_argument("--seed", type=int, default=42, help="random seed (default 42)")
    q.add_argument("--today", type=iso_date, default=None, help="the source's clock, YYYY-MM-DD (default: today)")
    q.add_argument("--history-days", type=int, default=760, help="days of history (default 760, at least 730)")
    q.add_argument("--horizon-days", type=int, default=60, help="how far advance can go (default 60)")
    q.add_argument("--known-names", type=Path, help="file of 'Фамилия Имя Отчество' lines given to patients")
    q.add_argument("--known-phones", type=Path, help="file of phone numbers (one a line) given to patients")
    q.set_defaults(handler=cmd_generate)

    q = demo_sub.add_parser("advance", help="move the clock forward, playing what happens in those days")
    common(q)
    group = q.add_mutually_exclusive_group()
    group.add_argument("--to", type=iso_date, help="new clock date YYYY-MM-DD")
    group.add_argument("--days", type=int, default=1, help="days to move forward (default 1)")
    q.set_defaults(handler=cmd_advance)

    q = demo_sub.add_parser("status", help="clock, horizon and the known upper bound of any model")
    common(q)
    q.set_defaults(handler=cmd_status)

    q = demo_sub.add_parser("bench", help="generation and extraction speed against baselines of the same run",
                            description="Generates N appointments into a benchmark database (default "
                            "<warehouse>_medialog_bench), extracts them in full (COPY and cursor paths) against a bare "
                            "COPY and pandas.read_sql, then advances a day and extracts incrementally.")
    common(q)
    q.add_argument("--appointments", type=int, default=1_000_000, help="appointments (default 1000000)")
    q.add_argument("--today", type=iso_date, default=None, help="the source's clock (default: today)")
    q.set_defaults(handler=cmd_bench)

    q = demo_sub.add_parser("source-config", help="print a CLINICFLOW_SOURCES entry for the demo source")
    q.add_argument("--url", help="PostgreSQL URL of the demo source")
    q.add_argument("--name", default="medialog_demo", help="source name (default medialog_demo)")
    q.set_defaults(handler=cmd_source_config)
