"""
### ClinicFlow ingestion: every source into the warehouse's core (the chain's first DAG)

Runs every night at **01:30 in the clinic's time zone** (`CLINICFLOW_TIMEZONE`, Europe/Moscow by
default). The run's **as-of date** is the `as_of` parameter, else its logical date in clinic time;
the `sources` parameter limits the run to some of the configured sources (empty = all of
`CLINICFLOW_SOURCES`).

| task | what it does | where results land |
|---|---|---|
| `migrate` | applies pending schema migrations from `sql/migrations` | warehouse schemas |
| `health_check` | checks the warehouse, MLflow and every configured source | task log |
| `list_sources` | the source names of the run (parameter `sources`, else all configured) | XCom |
| `ingest` (per source) | extract, pseudonymise, mask after as-of, COPY | `staging`, `ops.load_batch` |
| `validate` (per source) | quarantine failing rows, critical checks, GX suite + Data Docs | `quarantine`, `gx/` |
| `load_core` (per source) | one transaction: upserts, deletes, watermarks | `core`, `ops.watermark` |

Each `load_core` announces the Asset **`core.appointment`** (`clinicflow://warehouse/core/appointment`)
with `{"as_of": "YYYY-MM-DD", "source": …}` in the event's extra; that event starts
`clinicflow_train`, which takes its as-of date from it. Then `clinicflow_score` follows on the
champion's asset. For one-DAG runs (quick start, backfills) see `nightly`.
"""

from __future__ import annotations

from airflow.sdk import CronTriggerTimetable, dag

from dags.common import DEFAULT_ARGS, START_DATE, TIMEZONE
from dags.common.stages import as_of_param, ingestion_tasks, sources_param

SCHEDULE = "30 1 * * *"


@dag(
    dag_id="clinicflow_ingest",
    schedule=CronTriggerTimetable(SCHEDULE, timezone=TIMEZONE),
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=["clinicflow", "ingestion"],
    doc_md=__doc__,
    params={"as_of": as_of_param(), "sources": sources_param()},
)
def clinicflow_ingest():
    ingestion_tasks(emit_assets=True)


clinicflow_ingest()
