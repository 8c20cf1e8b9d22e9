"""``clinicflow backfill``: the dates it plans, and a real backfill of two dates through Airflow."""

from __future__ import annotations

import json
from datetime import date

import pytest
import sqlalchemy as sa

from clinicflow.errors import ClinicFlowError
from pipelines.backfill import plan_dates, run_conf

TODAY = date(2026, 11, 25)


def test_plan_is_every_date_oldest_first():
    assert plan_dates(date(2026, 10, 30), date(2026, 11, 2), TODAY) == [
        date(2026, 10, 30), date(2026, 10, 31), date(2026, 11, 1), date(2026, 11, 2)]
    assert plan_dates(TODAY, TODAY, TODAY) == [TODAY]


def test_plan_refuses_reversed_and_future_ranges():
    with pytest.raises(ClinicFlowError, match="--from 2026-11-03 is after --to 2026-11-02"):
        plan_dates(date(2026, 11, 3), date(2026, 11, 2), TODAY)
    with pytest.raises(ClinicFlowError, match="--to 2026-11-26 is in the future"):
        plan_dates(date(2026, 11, 20), date(2026, 11, 26), TODAY)


def test_run_conf_puts_the_date_last():
    assert run_conf(date(2026, 11, 2)) == {"as_of": "2026-11-02"}
    assert run_conf(date(2026, 11, 2), ["a"], {"as_of": "2020-01-01", "force_train": True}) == {
        "as_of": "2026-11-02", "sources": ["a"], "force_train": True}


def test_the_command_refuses_a_chain_dag_with_sources():
    from clinicflow.cli import main

    assert main(["backfill", "--from", "2026-11-01", "--to", "2026-11-02", "--dag", "clinicflow_train",
                 "--source", "x"]) == 1


@pytest.fixture()
def tiny_source(tmp_path, settings_env):
    from tests.pipelines.ingest_data import fhir_bundle, source_json, write_json

    path = write_json(tmp_path / "export.json", fhir_bundle(day=date(2026, 10, 30)))
    settings_env(sources=source_json("backfill_fhir", "fhir", path))
    return "backfill_fhir"


def _nightly_runs() -> dict[str, str]:
    """as_of -> state of the nightly DAG runs recorded in Airflow's metadata database."""
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session

    with create_session() as session:
        runs = session.scalars(sa.select(DagRun).where(DagRun.dag_id == "nightly")).all()
        return {(run.conf or {}).get("as_of"): run.state for run in runs}


@pytest.mark.slow
def test_backfill_runs_two_dates_in_order(airflow_db, migrated_warehouse, tiny_source, capfd):
    from clinicflow.cli import main

    code = main(["backfill", "--from", "2026-11-02", "--to", "2026-11-03"])
    output = "".join(capfd.readouterr())
    assert code == 0, output[-4000:]
    assert "backfill [1/2] nightly as of 2026-11-02: done in" in output
    assert "backfill [2/2] nightly as of 2026-11-03: done in" in output
    with migrated_warehouse.connect() as conn:
        batches = conn.execute(sa.text("SELECT as_of, status FROM ops.load_batch WHERE source = :s "
                                       "ORDER BY load_batch_id"), {"s": tiny_source}).all()
        published = conn.execute(sa.text("SELECT as_of FROM reporting.nightly_summary WHERE as_of IN "
                                         "('2026-11-02', '2026-11-03') ORDER BY as_of")).scalars().all()
    assert [tuple(b) for b in batches] == [(date(2026, 11, 2), "loaded"), (date(2026, 11, 3), "loaded")]
    assert published == [date(2026, 11, 2), date(2026, 11, 3)]
    runs = _nightly_runs()
    assert runs.get("2026-11-02") == "success" and runs.get("2026-11-03") == "success", json.dumps(runs)


@pytest.mark.slow
def test_a_failing_date_stops_the_backfill_and_is_named(airflow_db, migrated_warehouse, tiny_source, capfd):
    from clinicflow.cli import main

    code = main(["backfill", "--from", "2026-10-20", "--to", "2026-10-21", "--source", "no_such_source"])
    output = "".join(capfd.readouterr())
    assert code == 1
    assert "error: backfill stopped at as-of date 2026-10-20: `airflow dags test nightly 2026-10-20` failed" in output
    assert "no date done" in output and "resume with --from 2026-10-20 --to 2026-10-21" in output
    assert "unknown source(s) no_such_source" in output  # the task's own reason, in the run's output
    assert "2026-10-21" not in _nightly_runs()  # the next date never started
