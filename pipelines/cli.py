"""``clinicflow`` subcommands of the pipelines package: ``ingest`` and ``sources list``.

(Other pipeline commands, e.g. the Medialog demo source, register here too.)
"""

from __future__ import annotations

import argparse
import json
from datetime import date

from clinicflow.cliargs import iso_date
from clinicflow.errors import ClinicFlowError


def cmd_ingest(args: argparse.Namespace) -> int:
    from clinicflow.settings import get_settings
    from pipelines.ingest import ingest, list_sources

    settings = get_settings()
    names = args.source or list_sources(settings)
    if not names:
        raise ClinicFlowError("no sources configured: set CLINICFLOW_SOURCES (see .env.example), or pass --source")
    as_of = args.as_of or date.today()
    failures = []
    for name in names:
        settings.source(name)  # a ConfigError for an unknown name before anything runs
    for name in names:
        try:
            summary = ingest(name, as_of)
        except ClinicFlowError as exc:
            if len(names) == 1:
                raise
            print(f"FAILED {name}: {exc}")
            failures.append(name)
            continue
        if args.json:
            print(json.dumps(summary, default=str))
            continue
        appointments = summary["core"].get("appointment", {})
        print(
            f"OK  {name}: batch {summary['batch_id']} as of {summary['as_of']}: "
            f"{summary['staged'].get('appointment', 0):,} appointments staged, "
            f"{summary['quarantined'].get('appointment', 0):,} quarantined, "
            f"{appointments.get('inserted', 0):,} inserted, {appointments.get('updated', 0):,} updated, "
            f"{summary['core'].get('deleted', 0):,} marked deleted in {summary['seconds']:.1f}s"
        )
        if summary.get("data_docs"):
            print(f"    GX Data Docs: {summary['data_docs']}")
    if failures:
        raise ClinicFlowError(f"ingest failed for {', '.join(failures)} (see above)")
    return 0


def cmd_sources_list(args: argparse.Namespace) -> int:
    from clinicflow.settings import get_settings

    settings = get_settings()
    if not settings.sources:
        print("no sources configured (CLINICFLOW_SOURCES is empty; see .env.example)")
        return 0
    last = _last_loads() if not args.offline else {}
    for source in settings.sources:
        if source.kind == "medialog":
            where = f"airflow connection {source.airflow_conn_id}" if source.airflow_conn_id else _masked(source)
        else:
            where = str(source.path)
        fmt = f" ({source.format})" if source.format else ""
        print(f"{source.name:<20} {source.kind}{fmt:<12} {where}")
        if source.options:
            print(f"{'':<20} options: {json.dumps(source.options, sort_keys=True, default=str)}")
        info = last.get(source.name)
        if info:
            print(f"{'':<20} last load: batch {info['batch']} as of {info['as_of']} ({info['status']}, "
                  f"{info['rows'] or 0:,} appointments, {info['quarantined'] or 0:,} quarantined)"
                  + (f"; watermarks {info['watermarks']}" if info["watermarks"] else ""))
        elif not args.offline:
            print(f"{'':<20} never loaded")
    return 0


def _masked(source) -> str:
    import sqlalchemy as sa

    try:
        return sa.make_url(source.url.get_secret_value()).render_as_string(hide_password=True)
    except Exception:
        return "(url set)"


def _last_loads() -> dict[str, dict]:
    """The latest batch and the watermarks per source (empty if the warehouse is not migrated yet)."""
    import sqlalchemy as sa

    from clinicflow import db

    try:
        with db.connect() as conn:
            rows = conn.execute(sa.text(
                "SELECT DISTINCT ON (source) source, load_batch_id, as_of, status, rows_extracted, rows_quarantined "
                "FROM ops.load_batch ORDER BY source, load_batch_id DESC"
            )).all()
            marks = conn.execute(sa.text("SELECT source, stream, value FROM ops.watermark ORDER BY 1, 2")).all()
    except sa.exc.ProgrammingError:
        return {}
    out = {r.source: {"batch": r.load_batch_id, "as_of": r.as_of, "status": r.status, "rows": r.rows_extracted,
                      "quarantined": r.rows_quarantined, "watermarks": {}} for r in rows}
    for source, stream, value in marks:
        if source in out:
            out[source]["watermarks"][stream] = value.isoformat(sep=" ")
    return out


def register_cli(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "ingest", help="extract sources into staging, validate (GX) and load them into core",
        description="Runs the ingest stages for each source: extract → pseudonymise → staging (COPY) → "
        "validation (quarantine, Great Expectations) → one upsert transaction into core. Idempotent: "
        "running it again for the same as-of date changes nothing.",
    )
    p.add_argument("--source", action="append", metavar="NAME",
                   help="source name from CLINICFLOW_SOURCES (repeatable; default: every source)")
    p.add_argument("--as-of", type=iso_date, default=None, help="as-of date YYYY-MM-DD (default: today)")
    p.add_argument("--json", action="store_true", help="print each source's summary as JSON")
    p.set_defaults(handler=cmd_ingest)

    p = sub.add_parser("sources", help="configured appointment sources")
    sources_sub = p.add_subparsers(dest="sources_command", metavar="SUBCOMMAND", required=True)
    q = sources_sub.add_parser("list", help="list the configured sources and their last load")
    q.add_argument("--offline", action="store_true", help="do not read the last loads from the warehouse")
    q.set_defaults(handler=cmd_sources_list)

    from pipelines.sources.medialog_cli import register as register_medialog_demo

    register_medialog_demo(sub)
