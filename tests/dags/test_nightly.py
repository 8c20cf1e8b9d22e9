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


@pytest.fixture()
def nightly_sources(tmp_path, settings_env):
    """A small FHIR export as the configured source (the ingest tasks are mapped over the sources)."""
    from tests.pipelines.ingest_data import fhir_bundle, source_json, write_json

    path = write_json(tmp_path / "export.json", fhir_bundle(day=date(2026, 10, 30)))
    settings_env(sources=source_json("nightly_fhir", "fhir", path))
    return ["nightly_fhir"]


def test_nightly_runs_every_task(airflow_db, migrated_warehouse, nightly_sources):
    states, run = run_nightly(date(2026, 11, 2))
    assert states, "the run executed no task"
    failed = {task: state for task, state in states.items() if state != "success"}
    assert not failed, f"tasks not successful: {failed}"
    assert {"migrate", "health_check"} <= set(states)
    assert {"list_sources", "ingest[0]", "validate[0]", "load_core[0]"} <= set(states)
    assert run.state == "success"
    with migrated_warehouse.connect() as conn:
        applied = conn.execute(sa.text("SELECT count(*) FROM _yoyo_migration")).scalar()
    assert applied >= 1
    with migrated_warehouse.connect() as conn:
        loaded = conn.execute(sa.text(
            "SELECT status, as_of FROM ops.load_batch WHERE source = 'nightly_fhir' ORDER BY load_batch_id DESC LIMIT 1"
        )).one()
        appointments = conn.execute(sa.text(
            "SELECT count(*) FROM core.appointment WHERE source = 'nightly_fhir'")).scalar()
    assert tuple(loaded) == ("loaded", date(2026, 11, 2))
    assert appointments == 9
