"""
### ClinicFlow features and training (the chain's second DAG)

Starts when the Asset **`core.appointment`** is fresh: a `load_core` task of `clinicflow_ingest`
announced it. The run's **as-of date** is the `as_of` parameter, else the `as_of` in the extra of the
triggering asset event (an asset-triggered run has no meaningful logical date), else today in
clinic time.

| task | what it does | where results land |
|---|---|---|
| `features` | point-in-time features of the horizon's bookings; training back-fill | `features.*` |
| `train` | when due: tune, validate, register `noshow`, champion gate | MLflow, `ml.training_run` |

`train` announces the Asset **`mlflow.noshow@champion`** (`clinicflow://mlflow/noshow/champion`) with
`{"as_of", "trained", "promoted", "model_version", "champion_version", "reason"}` in the event's extra,
also when the champion stays (training not due, or not better): that event starts
`clinicflow_score` for the same as-of date. `force_train` and `training` tune one run.

With several sources every `load_core` announces `core.appointment`; events that arrive before
the scheduler creates the run start one run, a later one starts another run for the same as-of date,
which finds training not due and re-computes idempotently.
"""

from __future__ import annotations

from airflow.sdk import dag

from dags.common import DEFAULT_ARGS, START_DATE
from dags.common.stages import CORE_APPOINTMENT, as_of_param, training_params, training_tasks


@dag(
    dag_id="clinicflow_train",
    schedule=[CORE_APPOINTMENT],
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=["clinicflow", "training"],
    doc_md=__doc__,
    params={"as_of": as_of_param(asset_triggered=True), **training_params()},
)
def clinicflow_train():
    training_tasks(emit_assets=True)


clinicflow_train()
