"""``clinicflow backfill --from YYYY-MM-DD --to YYYY-MM-DD``: replay past dates, each as its as-of date.

Every date of the range, oldest first, is one run of the ``nightly`` DAG (or ``--dag``) with
``airflow dags test <dag> <date> --conf '{"as_of": "<date>"}'`` in ClinicFlow's Airflow environment
(``clinicflow.airflow_env``, as ``clinicflow demo`` runs it): no scheduler is needed, and each run
sees only what was known at the start of its date (the stages' as-of discipline), so the warehouse,
the model registry and the reporting tables end up as if the pipeline had run on each of those
nights. Dates run strictly in order, one at a time: date D+1 starts only after date D succeeded.
Re-running a date replaces its results (every stage is idempotent per as-of date).

The log shows each date's progress and duration and a summary at the end. A date that fails stops
the backfill with a message naming the date and how to resume.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

from clinicflow.cliargs import iso_date
from clinicflow.errors import ClinicFlowError
from clinicflow.logs import timed

log = logging.getLogger(__name__)

DAGS = ("nightly", "clinicflow_ingest", "clinicflow_train", "clinicflow_score")
#: DAGs that have the ``sources`` run parameter.
WITH_SOURCES = ("nightly", "clinicflow_ingest")


def plan_dates(start: date, end: date, today: date) -> list[date]:
    """The as-of dates of a backfill from ``start`` to ``end`` (both included), oldest first."""
    if start > end:
        raise ClinicFlowError(f"backfill --from {start} is after --to {end}: give the older date first")
    if end > today:
        raise ClinicFlowError(f"backfill --to {end} is in the future (today is {today} in clinic time): a backfill "
                              "replays past dates; the scheduled runs take care of today and later")
    return [start + timedelta(days=i) for i in range((end - start).days + 1)]


def run_conf(as_of: date, sources: list[str] | None = None, extra: dict | None = None) -> dict:
    """The conf of one backfill run: ``extra``, then the as-of date and the sources (if any)."""
    conf = dict(extra or {})
    conf["as_of"] = as_of.isoformat()
    if sources:
        conf["sources"] = list(sources)
    return conf


@dataclass
class BackfillResult:
    dag_id: str
    seconds: dict[date, float] = field(default_factory=dict)

    @property
    def dates(self) -> list[date]:
        return list(self.seconds)


def airflow_environment(settings) -> dict[str, str]:
    """The environment of the ``airflow`` commands: the process's own when Airflow's metadata database is
    configured there (the compose containers, where the pipeline's login may not create databases), else
    ClinicFlow's local Airflow environment (``clinicflow.airflow_env``, as ``clinicflow demo`` uses)."""
    if os.environ.get("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"):
        return dict(os.environ)
    from clinicflow.airflow_env import airflow_env

    return airflow_env(settings)


def _airflow(args: list[str], env: dict[str, str]) -> int:
    return subprocess.run([sys.executable, "-m", "airflow", *args], env=env).returncode


def run_backfill(start: date, end: date, dag_id: str = "nightly", sources: list[str] | None = None,
                 extra_conf: dict | None = None) -> BackfillResult:
    """Run ``dag_id`` once per date from ``start`` to ``end``, in order; stop at the first failure."""
    from clinicflow.settings import get_settings

    if dag_id not in DAGS:
        raise ClinicFlowError(f"backfill --dag {dag_id}: not a ClinicFlow DAG (one of {', '.join(DAGS)})")
    if sources and dag_id not in WITH_SOURCES:
        raise ClinicFlowError(f"backfill --source applies to {' and '.join(WITH_SOURCES)} only, not {dag_id}")
    settings = get_settings()
    today = datetime.now(settings.zone).date()
    dates = plan_dates(start, end, today)
    env = airflow_environment(settings)
    result = BackfillResult(dag_id)
    log.info("backfill: %s for %d as-of date(s) %s .. %s, oldest first", dag_id, len(dates), dates[0], dates[-1])
    if dag_id != "nightly":
        log.warning("backfill: %s announces its assets: with a scheduler running, the next DAG of the chain starts "
                    "from those events unless it is paused (docs/deployment.md, \"Backfill past dates\")", dag_id)
    if _airflow(["db", "migrate"], env) != 0:
        raise ClinicFlowError("backfill: `airflow db migrate` failed; its output above says why")
    started = time.perf_counter()
    for number, as_of in enumerate(dates, start=1):
        conf = run_conf(as_of, sources, extra_conf)
        with timed(f"backfill [{number}/{len(dates)}] {dag_id} as of {as_of}", log) as timer:
            code = _airflow(["dags", "test", dag_id, as_of.isoformat(), "--conf", json.dumps(conf)], env)
            if code != 0:
                done = (f"{len(result.dates)} earlier date(s) done ({result.dates[0]} .. {result.dates[-1]})"
                        if result.dates else "no date done")
                raise ClinicFlowError(
                    f"backfill stopped at as-of date {as_of}: `airflow dags test {dag_id} {as_of}` failed "
                    f"(exit code {code}); {done}. The output above and the task logs in {env['AIRFLOW_HOME']}/logs "
                    f"say why; fix it and resume with --from {as_of} --to {dates[-1]}")
        result.seconds[as_of] = timer.seconds
        left = len(dates) - number
        if left:
            mean = (time.perf_counter() - started) / number
            log.info("backfill: %d of %d date(s) done, %d left (about %.0fs at %.1fs per date)",
                     number, len(dates), left, left * mean, mean)
    log.info("backfill: %s done for %d date(s) in %.1fs", dag_id, len(dates), time.perf_counter() - started)
    return result


# --------------------------------------------------------------------------------------------------
# command line


def _json_object(text: str) -> dict:
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"--conf is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("--conf must be a JSON object, e.g. '{\"force_train\": true}'")
    return value


def cmd_backfill(args: argparse.Namespace) -> int:
    result = run_backfill(args.start, args.end, dag_id=args.dag, sources=args.source, extra_conf=args.conf)
    print(f"backfill of {result.dag_id}: {len(result.dates)} as-of date(s), oldest first")
    for as_of, seconds in result.seconds.items():
        print(f"  {as_of}  {seconds:7.1f}s")
    print(f"  total       {sum(result.seconds.values()):7.1f}s")
    return 0


def register_cli(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "backfill", help="replay past dates through the pipeline, each as its as-of date, oldest first",
        description="Runs the nightly DAG (or --dag) once per date from --from to --to, in order, with "
        "`airflow dags test` and the date as the run's as_of parameter: history is rebuilt as it was known on "
        "each date. A failing date stops the backfill and names the date; re-running a date replaces its results.",
    )
    p.add_argument("--from", dest="start", type=iso_date, required=True, metavar="YYYY-MM-DD",
                   help="first as-of date")
    p.add_argument("--to", dest="end", type=iso_date, required=True, metavar="YYYY-MM-DD",
                   help="last as-of date (included; not after today)")
    p.add_argument("--dag", choices=DAGS, default="nightly",
                   help="DAG to run per date (default: nightly, every stage; a chain DAG runs only its own stages "
                        "and announces its assets, which starts the next DAG of the chain on a running scheduler "
                        "unless that DAG is paused)")
    p.add_argument("--source", action="append", metavar="NAME",
                   help="only this source of CLINICFLOW_SOURCES (repeatable; default: every source)")
    p.add_argument("--conf", type=_json_object, default=None,
                   help="more run parameters for every run, as JSON, e.g. '{\"training\": {\"trials\": 5}}'")
    p.set_defaults(handler=cmd_backfill)
