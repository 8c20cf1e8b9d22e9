"""
### ClinicFlow nightly pipeline, in one DAG (quick start, tests, backfills)

Every stage of ClinicFlow in one run for one **as-of date**: the `as_of` parameter, else the run's
logical date in clinic time (Europe/Moscow unless `CLINICFLOW_TIMEZONE` says otherwise). It has no
schedule: `clinicflow demo` runs it for the quick start, `clinicflow backfill --from … --to …` runs it
once per past date in order, and the tests run it with `dag.test()`.

**In production the chain runs instead**, linked by Airflow Assets:
`clinicflow_ingest` (01:30 clinic time; announces `core.appointment`) → `clinicflow_train` (announces
`mlflow.noshow@champion`) → `clinicflow_score`. They are built from the same task factories
(`dags/common/stages.py`); this DAG declares no outlets, so a run of it never triggers the chain.

| task | what it does | where results land |
|---|---|---|
| `migrate` | applies pending schema migrations from `sql/migrations` | warehouse schemas |
| `health_check` | checks the warehouse, MLflow and every configured source | task log |
| `list_sources` | the configured source names (`CLINICFLOW_SOURCES`), or those of the `sources` parameter | XCom |
| `ingest` (per source) | extract, pseudonymise, mask after as-of, COPY | `staging`, `ops.load_batch` |
| `validate` (per source) | quarantine failing rows, critical checks, GX suite + Data Docs | `quarantine`, `gx/` |
| `load_core` (per source) | one transaction: upserts, deletes, watermarks | `core`, `ops.watermark` |
| `features` | point-in-time features of the horizon's bookings; training back-fill | `features.*` |
| `train` | when due: tune, validate, register `noshow`, champion gate | MLflow, `ml.training_run` |
| `score` | the horizon's bookings scored by `models:/noshow@champion`, 3 reasons each | `reporting.appointment_risk` |
| `overbooking_partitions` | the (source, branch) pairs with scored appointments | XCom |
| `optimise` (per branch) | OR-Tools optimiser: extras per slot, effect per day | `reporting.overbooking_slot`, `_day` |
| `publish` | consistency checks, the run's summary, statistics for BI | `reporting.nightly_summary` |

Scoring fails when there is no champion or it cannot be loaded (the log says what to do), except on a
new installation whose `train` task of the same run had too little history: then nothing is scored,
the task's log and XCom say why, and the optimisation and publishing find nothing to do.

Every task is idempotent for its as-of date: re-running a date replaces that date's results.
Each task calls one function that also runs from the `clinicflow` command line.
"""

from __future__ import annotations

from airflow.sdk import dag

from dags.common import DEFAULT_ARGS, START_DATE
from dags.common.stages import (
    as_of_param,
    ingestion_tasks,
    scoring_tasks,
    sources_param,
    training_params,
    training_tasks,
)


@dag(
    dag_id="nightly",
    schedule=None,
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=["clinicflow", "nightly", "quick-start"],
    doc_md=__doc__,
    params={"as_of": as_of_param(), "sources": sources_param(), **training_params()},
)
def nightly():
    loaded = ingestion_tasks(emit_assets=False)
    features, trained = training_tasks(emit_assets=False)
    loaded >> features
    scoring_tasks(emit_assets=False, trained=trained)


nightly()
