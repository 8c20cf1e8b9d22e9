"""The nightly DAG's scoring, optimisation (mapped per branch) and publishing stages in a full
``dag.test()`` run on real PostgreSQL, with a real champion in the MLflow registry."""

from __future__ import annotations

from datetime import date

import pytest
import sqlalchemy as sa

from tests.dags.test_nightly import run_nightly
from tests.scoring.champion import AS_OF, environment, train_once

pytestmark = pytest.mark.slow


def test_nightly_scores_optimises_and_publishes(airflow_db, server_url, test_db_prefix, tmp_path):
    from tests.pipelines.ingest_data import fhir_bundle, source_json, write_json

    with environment(server_url, test_db_prefix) as url, pytest.MonkeyPatch.context() as mp:
        from clinicflow.settings import get_settings

        train_once()
        path = write_json(tmp_path / "export.json", fhir_bundle(day=date(2026, 3, 12)))
        mp.setenv("CLINICFLOW_SOURCES", source_json("nightly_fhir", "fhir", path))
        get_settings.cache_clear()
        states, _run = run_nightly(AS_OF)
        failed = {task: state for task, state in states.items() if state != "success"}
        assert not failed, f"tasks not successful: {failed}"
        assert {"score", "overbooking_partitions", "publish"} <= set(states)
        optimise = sorted(t for t in states if t.startswith("optimise["))
        assert len(optimise) == 2  # one task per branch of the generated clinic (b0, b1)

        from clinicflow import db

        engine = db.engine_for_url(url)
        with engine.connect() as conn:
            scored = conn.execute(sa.text("SELECT count(*) FROM reporting.appointment_risk WHERE as_of = :d"),
                                  {"d": AS_OF}).scalar()
            days = conn.execute(sa.text("SELECT count(*), count(DISTINCT branch_id) FROM reporting.overbooking_day "
                                        "WHERE as_of = :d"), {"d": AS_OF}).one()
            summary = conn.execute(sa.text("SELECT * FROM reporting.nightly_summary WHERE as_of = :d"),
                                   {"d": AS_OF}).mappings().one()
        assert scored > 50
        assert days[0] >= 4 * 5 and days[1] == 2  # 4 doctors x 5 weekdays, two branches
        assert summary["appointments_scored"] == scored
        assert summary["extras_recommended"] > 0 and summary["expected_patients_gained"] > 0
