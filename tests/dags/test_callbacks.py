"""The failure callback: one line in the task log and one row in ops.task_failure per failed try."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, date, datetime, timedelta
from types import SimpleNamespace

import pytest
import sqlalchemy as sa

from clinicflow.errors import ClinicFlowError
from dags.common import DEFAULT_ARGS
from dags.common.callbacks import describe, on_task_failure, on_task_retry, record


def fake_context(**ti_fields):
    ti = SimpleNamespace(dag_id="nightly", task_id="load_core", map_index=-1, run_id="manual__2026-11-02",
                         try_number=2, max_tries=2, hostname="worker-1",
                         start_date=datetime.now(UTC) - timedelta(seconds=42))
    for key, value in ti_fields.items():
        setattr(ti, key, value)
    return {"ti": ti, "params": {"as_of": "2026-11-02"}, "logical_date": None,
            "exception": ClinicFlowError("source 'main' unreachable: connection refused\nsecond line")}


def test_default_args_wire_both_callbacks():
    assert DEFAULT_ARGS["on_failure_callback"] is on_task_failure
    assert DEFAULT_ARGS["on_retry_callback"] is on_task_retry


def test_summary_is_one_line_with_what_and_why():
    failure = describe(fake_context(), will_retry=True)
    line = failure.summary
    assert "\n" not in line
    assert line.startswith("FAILED, will retry: nightly.load_core as_of=2026-11-02 run=manual__2026-11-02 try 2/3")
    assert "after 4" in line and "on worker-1" in line
    assert line.endswith("ClinicFlowError: source 'main' unreachable: connection refused | second line")
    mapped = describe(fake_context(map_index=3), will_retry=False)
    assert mapped.summary.startswith("FAILED: nightly.load_core[3] ")


def test_bad_as_of_parameter_does_not_break_the_callback():
    context = fake_context()
    context["params"] = {"as_of": "yesterday"}
    failure = describe(context, will_retry=False)
    assert failure.as_of is None and "as_of=" not in failure.summary


def test_record_is_idempotent_per_try(migrated_warehouse):
    failure = describe(fake_context(run_id="manual__idempotent"), will_retry=True)
    assert record(failure) and record(failure)
    with migrated_warehouse.connect() as conn:
        rows = conn.execute(sa.text("SELECT summary, will_retry, as_of FROM ops.task_failure WHERE run_id = :r"),
                            {"r": "manual__idempotent"}).all()
    assert len(rows) == 1
    assert rows[0].summary == failure.summary and rows[0].will_retry is True and rows[0].as_of == date(2026, 11, 2)


FAILING_DAG = """
import pendulum
from airflow.sdk import dag, task

from clinicflow.errors import ClinicFlowError
from dags.common import DEFAULT_ARGS


@dag(dag_id="cft_failing", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"), catchup=False,
     default_args=DEFAULT_ARGS | {"retries": 0}, params={"as_of": "2026-11-03"})
def failing():
    @task
    def boom() -> None:
        raise ClinicFlowError("quarantine overflow: 97% of rows failed validation")

    boom()


failing()
"""


@pytest.mark.slow
def test_a_failing_task_writes_its_summary(airflow_db, migrated_warehouse, tmp_path):
    """A real Airflow run (`airflow dags test`) of a task that fails: the line is logged and recorded."""
    (tmp_path / "failing.py").write_text(FAILING_DAG)
    env = dict(os.environ, AIRFLOW__CORE__DAGS_FOLDER=str(tmp_path))
    result = subprocess.run([sys.executable, "-m", "airflow", "dags", "test", "cft_failing", "2026-11-03"],
                            env=env, capture_output=True, text=True, timeout=300)
    output = result.stdout + result.stderr
    assert "FAILED: cft_failing.boom as_of=2026-11-03 " in output, output[-3000:]
    with migrated_warehouse.connect() as conn:
        row = conn.execute(sa.text(
            "SELECT task_id, will_retry, error_type, error_message, summary, as_of FROM ops.task_failure "
            "WHERE dag_id = 'cft_failing'")).one()
    assert row.task_id == "boom" and row.will_retry is False and row.as_of == date(2026, 11, 3)
    assert row.error_type == "ClinicFlowError"
    assert row.error_message == "quarantine overflow: 97% of rows failed validation"
    assert row.summary.startswith("FAILED: cft_failing.boom as_of=2026-11-03 ") and "try 1/1" in row.summary
