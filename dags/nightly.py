"""
### ClinicFlow nightly pipeline

Runs every night in the clinic's time zone (Europe/Moscow unless `CLINICFLOW_TIMEZONE` says
otherwise). The run's **as-of date** is its logical date in clinic time, or the `as_of` parameter.

| task | what it does | where results land |
|---|---|---|
| `migrate` | applies pending schema migrations from `sql/migrations` | warehouse schemas |
| `health_check` | checks the warehouse, MLflow and every configured source | task log |

Every task is idempotent for its as-of date: re-running a date replaces that date's results.
Each task calls one function that also runs from the `clinicflow` command line.
"""

from __future__ import annotations

from airflow.sdk import Param, dag, get_current_context, task

from dags.common import DEFAULT_ARGS, START_DATE, context_as_of


@dag(
    dag_id="nightly",
    schedule="30 1 * * *",
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=["clinicflow", "nightly"],
    doc_md=__doc__,
    params={
        "as_of": Param(None, type=["null", "string"], format="date",
                       description="As-of date (YYYY-MM-DD); empty = the logical date in clinic time"),
    },
)
def nightly():
    @task(doc_md="Apply pending schema migrations (`clinicflow db upgrade`).")
    def migrate() -> list[str]:
        from clinicflow.migrations import upgrade

        return upgrade()

    @task(doc_md="Check warehouse, MLflow and sources (`clinicflow health`).")
    def health_check() -> list[dict]:
        from pipelines.health import as_dicts, run_health_check

        as_of = context_as_of(get_current_context())
        checks = run_health_check()
        return [dict(d, as_of=as_of.isoformat()) for d in as_dicts(checks)]

    migrate() >> health_check()


nightly()
