"""``clinicflow demo``: the whole pipeline on generated data, run through Airflow.

1. a pseudonymisation secret for local use (written to ``.env`` once);
2. the warehouse schema (migrations);
3. Airflow's metadata database (``airflow db migrate``);
4. the ``nightly`` DAG run with ``airflow dags test`` for the as-of date;
5. a summary of where the results are.

Running it again reuses the embedded database, the Airflow metadata and the demo source, and
re-runs the same as-of date idempotently: nothing is duplicated.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time
from datetime import date

from clinicflow import db, migrations
from clinicflow.errors import ClinicFlowError
from clinicflow.settings import get_settings

log = logging.getLogger(__name__)


def _airflow(args: list[str], env: dict[str, str], what: str) -> None:
    started = time.perf_counter()
    print(f"==> {what}: airflow {' '.join(args)}", flush=True)
    result = subprocess.run([sys.executable, "-m", "airflow", *args], env=env)
    if result.returncode != 0:
        raise ClinicFlowError(
            f"`airflow {' '.join(args)}` failed with exit code {result.returncode}; "
            "its output above says why (task logs are in "
            f"{env['AIRFLOW_HOME']}/logs)"
        )
    print(f"    done in {time.perf_counter() - started:.1f}s", flush=True)


#: The demo's training budget (a run's ``training`` parameter): a few Optuna trials (shared by the algorithms), so the
#: quick start takes minutes. Production runs use the configured budget (CLINICFLOW_TRAIN_OPTUNA_TRIALS,
#: CLINICFLOW_TRAIN_OPTUNA_TIMEOUT_S); ``clinicflow demo --full-training`` does too.
DEMO_TRAINING = {"trials": 6, "timeout_s": 180}


def run_demo(as_of: date | None = None, size: int | None = None, full_training: bool = False) -> int:
    from clinicflow.airflow_env import airflow_env
    from clinicflow.cli import ensure_local_secret

    started = time.perf_counter()
    ensure_local_secret()
    settings = get_settings()
    as_of = as_of or date.today()
    print(f"==> warehouse: {db.mask(db.url_for('warehouse'))}", flush=True)
    applied = migrations.upgrade()
    print(f"    schema current ({len(applied)} migration(s) applied now)", flush=True)

    env = airflow_env(settings)
    env.update(_demo_source_env(settings, as_of, size))
    _airflow(["db", "migrate"], env, "Airflow metadata database")
    conf = {} if full_training else {"training": DEMO_TRAINING}
    if conf:
        print(f"==> training budget for the demo: {DEMO_TRAINING['trials']} Optuna trials shared by the algorithms, "
              f"at most {DEMO_TRAINING['timeout_s']}s of tuning (--full-training: the configured budget)", flush=True)
    _airflow(["dags", "test", "nightly", as_of.isoformat(), *(["--conf", json.dumps(conf)] if conf else [])],
             env, f"nightly pipeline for as-of {as_of}")

    print()
    print(f"ClinicFlow demo finished in {time.perf_counter() - started:.0f}s for as-of {as_of}.")
    print(f"  warehouse:        {db.mask(db.url_for('warehouse'))}")
    print(f"  Airflow metadata: {db.mask(db.url_for('airflow'))}  (UI: .venv/bin/clinicflow ui airflow)")
    print(f"  MLflow store:     {db.mask(db.url_for('mlflow'))}  (UI: .venv/bin/clinicflow ui mlflow)")
    print(f"  task logs:        {env['AIRFLOW_HOME']}/logs")
    for line in _summary_lines(as_of):
        print(line)
    return 0


DEMO_SOURCE = "medialog_demo"
DEMO_APPOINTMENTS = 50_000
DEMO_SEED = 42


def _demo_source_env(settings, as_of: date, size: int | None) -> dict[str, str]:
    """Make the generated Medialog demo source current for ``as_of`` and configure it.

    A clinic's own ``CLINICFLOW_SOURCES`` is left alone. Otherwise the demo source (database
    ``<warehouse>_medialog_demo``) is generated on the first run, advanced day by day on later
    days (so a run the next day loads only what changed), and written into ``.env`` as
    ``CLINICFLOW_SOURCES`` so that Airflow's UI and scheduler see the same source later.
    """
    import os
    from pathlib import Path

    from clinicflow.cli import append_env
    from pipelines.sources import medialog_generator as gen

    if settings.sources and any(s.name != DEMO_SOURCE for s in settings.sources):
        print(f"==> sources: using the configured CLINICFLOW_SOURCES ({', '.join(s.name for s in settings.sources)})")
        return {}
    url = gen.default_demo_url()
    started = time.perf_counter()
    appointments = size or DEMO_APPOINTMENTS
    print(f"==> demo source: Medialog-shaped database {db.mask(url)} ({appointments:,} appointments, "
          f"clock {as_of})", flush=True)
    summary = gen.ensure(url, appointments=appointments, seed=DEMO_SEED, today=as_of)
    state = "unchanged" if summary.stats.get("unchanged") else "ready"
    print(f"    {state} in {time.perf_counter() - started:.1f}s", flush=True)
    sources = json.dumps([{
        "name": DEMO_SOURCE, "kind": "medialog", "url": url.render_as_string(hide_password=False),
        "options": gen.connector_options(),
    }], ensure_ascii=False)
    if not settings.sources:
        env_file = Path(os.environ.get("CLINICFLOW_ENV_FILE", ".env"))
        append_env(env_file, "CLINICFLOW_SOURCES", sources,
                   "Written by `clinicflow demo`: the generated Medialog demo source.")
    return {"CLINICFLOW_SOURCES": sources}


def _summary_lines(as_of: date) -> list[str]:
    from optimization.stage import format_summary, next_week_summary

    try:
        return ["", *format_summary(next_week_summary(as_of))]
    except Exception as exc:  # the summary is a courtesy; the run itself succeeded
        log.warning("could not summarise next week: %s", exc)
        return []
