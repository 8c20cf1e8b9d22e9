"""A full run of the ``nightly`` DAG with ``dag.test()`` on real PostgreSQL."""

from __future__ import annotations

from datetime import date

import pendulum
import pytest
import sqlalchemy as sa

from clinicflow.paths import DAGS_DIR

pytestmark = pytest.mark.slow


def run_nightly(as_of: date, params: dict | None = None):
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(DAGS_DIR / "nightly.py"))
    assert bag.import_errors == {}
    dag = bag.get_dag("nightly")
    logical = pendulum.datetime(as_of.year, as_of.month, as_of.day, 1, 30, tz="Europe/Moscow")
    run = dag.test(logical_date=logical, run_conf=params or {})
    return {ti.task_id if ti.map_index < 0 else f"{ti.task_id}[{ti.map_index}]": ti.state
            for ti in run.get_task_instances()}, run


def test_nightly_runs_every_task(airflow_db, migrated_warehouse):
    states, run = run_nightly(date(2026, 11, 2))
    assert states, "the run executed no task"
    failed = {task: state for task, state in states.items() if state != "success"}
    assert not failed, f"tasks not successful: {failed}"
    assert {"migrate", "health_check"} <= set(states)
    assert run.state == "success"
    with migrated_warehouse.connect() as conn:
        applied = conn.execute(sa.text("SELECT count(*) FROM _yoyo_migration")).scalar()
    assert applied >= 1
