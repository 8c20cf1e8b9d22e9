"""``clinicflow demo`` end to end, as the quick start runs it: a generated Medialog source, the
``nightly`` DAG through ``airflow dags test``, the next-week summary. Run twice for the same day it
duplicates nothing; run the next day it loads only what changed in the source."""

from __future__ import annotations

from datetime import date, timedelta

import pytest
import sqlalchemy as sa

from pipelines.demo import DEMO_SOURCE, run_demo

pytestmark = pytest.mark.slow

AS_OF = date(2026, 11, 2)
SIZE = 10_000

#: Tables counted after each run (their primary keys make a duplicate fail loudly; a re-run must
#: also neither add nor lose rows).
TABLES = ("core.appointment", "core.patient", "core.slot", "core.resource_day", "features.appointment_features",
          "reporting.appointment_risk", "reporting.overbooking_day", "reporting.overbooking_slot",
          "reporting.nightly_summary", "ml.training_run", "quarantine.record")


def _counts(engine: sa.Engine) -> dict[str, int]:
    with engine.connect() as conn:
        return {table: conn.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar() for table in TABLES}


def _batches(engine: sa.Engine) -> list[tuple]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(sa.text(
            "SELECT as_of, status, rows_extracted FROM ops.load_batch WHERE source = :s ORDER BY load_batch_id"),
            {"s": DEMO_SOURCE})]


@pytest.fixture()
def demo_warehouse(scratch_database, settings_env) -> sa.Engine:
    """A warehouse of its own (the session's holds other tests' rows); the demo migrates it."""
    from clinicflow import db

    settings_env(database_url=scratch_database.render_as_string(hide_password=False))
    return db.get_engine()


def test_demo_twice_then_the_next_day(airflow_db, demo_warehouse, capsys):
    migrated_warehouse = demo_warehouse
    assert run_demo(as_of=AS_OF, size=SIZE) == 0
    printed = capsys.readouterr().out
    assert "appointments scored:" in printed and "extra bookings recommended:" in printed
    first = _counts(migrated_warehouse)
    assert first["core.appointment"] > 5_000 and first["reporting.appointment_risk"] > 0, first
    assert first["reporting.overbooking_slot"] > 0 and first["reporting.nightly_summary"] == 1, first
    assert first["ml.training_run"] == 1, first

    assert run_demo(as_of=AS_OF, size=SIZE) == 0  # the same day again: identical tables
    assert _counts(migrated_warehouse) == first

    assert run_demo(as_of=AS_OF + timedelta(days=1), size=SIZE) == 0  # the next day: only what changed
    batches = _batches(migrated_warehouse)
    assert [b[1] for b in batches] == ["loaded"] * 3
    full, _again, next_day = (b[2] for b in batches)
    assert batches[2][0] == AS_OF + timedelta(days=1)
    assert 0 < next_day < full / 5, batches
    after = _counts(migrated_warehouse)
    assert after["reporting.nightly_summary"] == 2 and after["ml.training_run"] == 1, after  # not due again
    assert after["core.appointment"] >= first["core.appointment"]
