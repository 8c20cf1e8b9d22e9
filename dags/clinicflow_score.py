"""
### ClinicFlow scoring, overbooking optimisation and publishing (the chain's last DAG)

Starts when the Asset **`mlflow.noshow@champion`** is announced by `clinicflow_train`'s `train`. The
run's **as-of date** is the `as_of` parameter, else the `as_of` in the extra of the triggering asset
event, else today in clinic time; the training outcome in the same extra tells `score` whether a
missing champion is expected (a new installation with too little history) or an error.

| task | what it does | where results land |
|---|---|---|
| `score` | the horizon's bookings scored by `models:/noshow@champion`, 3 reasons each | `reporting.appointment_risk` |
| `overbooking_partitions` | the (source, branch) pairs with scored appointments | XCom |
| `optimise` (per branch) | OR-Tools optimiser: extras per slot, effect per day | `reporting.overbooking_slot`, `_day` |
| `publish` | consistency checks, the run's summary, statistics for BI | `reporting.nightly_summary` |

The reporting tables are announced as Assets (`reporting.*`, with the as-of date in each event's
extra) for BI refreshes or later consumers. `clinicflow next-week` prints the published summary.
"""

from __future__ import annotations

from airflow.sdk import dag

from dags.common import DEFAULT_ARGS, START_DATE
from dags.common.stages import CHAMPION, as_of_param, scoring_tasks


@dag(
    dag_id="clinicflow_score",
    schedule=[CHAMPION],
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=["clinicflow", "scoring", "overbooking"],
    doc_md=__doc__,
    params={"as_of": as_of_param(asset_triggered=True)},
)
def clinicflow_score():
    scoring_tasks(emit_assets=True)


clinicflow_score()
