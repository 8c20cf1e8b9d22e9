"""The risk-table writer on real PostgreSQL: one transaction per run, batches appended while the next is
scored, a failure leaves the previous rows, a re-run of a date (or of some sources) replaces only them."""

from __future__ import annotations

from datetime import date, datetime, timedelta

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from clinicflow.errors import ClinicFlowError
from scoring.writer import BATCH_COLUMNS, RiskWriter

AS_OF = date(2026, 3, 2)


def _batch(source: str, n: int, first: int = 0, probability: float = 0.2) -> pd.DataFrame:
    return pd.DataFrame({
        "source": source, "appointment_id": [str(first + k) for k in range(n)],
        "resource_id": [f"r{k % 3}" for k in range(n)], "practitioner_id": "doc1", "department_id": None,
        "branch_id": "b1", "start_at": [datetime(2026, 3, 2, 9) + timedelta(minutes=20 * k) for k in range(n)],
        "probability": np.full(n, probability), "risk_band": "medium",
        "reason_1": ["booked 41 days ahead"] * n, "reason_2": [None] * n,
        "reason_3": ["запись \"в\" день, приёма\n"] * n,
    })[list(BATCH_COLUMNS)]


def _rows(engine: sa.Engine, as_of: date = AS_OF) -> pd.DataFrame:
    with engine.connect() as conn:
        return pd.read_sql(sa.text("SELECT * FROM reporting.appointment_risk WHERE as_of = :d "
                                   "ORDER BY source, appointment_id::int"), conn, params={"d": as_of})


@pytest.fixture()
def warehouse(migrated_warehouse):
    with migrated_warehouse.begin() as conn:
        conn.execute(sa.text("DELETE FROM reporting.appointment_risk WHERE as_of IN (:d, :e)"),
                     {"d": AS_OF, "e": AS_OF + timedelta(days=1)})
    return migrated_warehouse


def test_batches_of_a_run_land_together_with_their_values(warehouse):
    with RiskWriter(AS_OF, "noshow", "3", url=warehouse.url) as writer:
        for k in range(3):
            writer.put(_batch("main", 40, first=40 * k))
        writer.put(_batch("main", 0))  # an empty batch is nothing
    assert writer.rows == 120
    rows = _rows(warehouse)
    assert len(rows) == 120 and rows["appointment_id"].tolist() == [str(k) for k in range(120)]
    first = rows.iloc[0]
    assert first["reason_1"] == "booked 41 days ahead" and first["reason_2"] is None
    assert first["reason_3"] == "запись \"в\" день, приёма\n" and first["department_id"] is None
    assert first["start_at"] == pd.Timestamp("2026-03-02 09:00") and first["probability"] == 0.2
    assert set(rows["model_version"]) == {"3"} and set(rows["model_name"]) == {"noshow"}
    assert rows["scored_at"].nunique() == 1 and rows["scored_at"].iloc[0].tzinfo is not None


def test_a_failed_run_keeps_the_previous_rows(warehouse):
    with RiskWriter(AS_OF, "noshow", "1", url=warehouse.url) as writer:
        writer.put(_batch("main", 30))
    with pytest.raises(RuntimeError, match="scoring broke"), \
            RiskWriter(AS_OF, "noshow", "2", url=warehouse.url) as writer:
        writer.put(_batch("main", 50))
        raise RuntimeError("scoring broke")
    rows = _rows(warehouse)
    assert len(rows) == 30 and set(rows["model_version"]) == {"1"}


def test_a_database_error_is_reported_and_rolls_everything_back(warehouse):
    with RiskWriter(AS_OF, "noshow", "1", url=warehouse.url) as writer:
        writer.put(_batch("main", 10))
    writer = RiskWriter(AS_OF, "noshow", "2", url=warehouse.url)
    writer.put(_batch("main", 20))
    writer.put(_batch("main", 5, first=100, probability=1.5))  # violates the table's CHECK constraint
    with pytest.raises(ClinicFlowError, match=r"writing reporting\.appointment_risk for 2026-03-02 failed"):
        writer.commit()
    rows = _rows(warehouse)
    assert len(rows) == 10 and set(rows["model_version"]) == {"1"}


def test_a_rerun_replaces_its_date_and_sources_only(warehouse):
    with RiskWriter(AS_OF, "noshow", "1", url=warehouse.url) as writer:
        writer.put(_batch("main", 20))
        writer.put(_batch("fhir", 10))
    with RiskWriter(AS_OF + timedelta(days=1), "noshow", "1", url=warehouse.url) as writer:
        writer.put(_batch("main", 7))
    with RiskWriter(AS_OF, "noshow", "2", sources=["main"], url=warehouse.url) as writer:
        writer.put(_batch("main", 15))
    rows = _rows(warehouse)
    assert rows.groupby("source")["model_version"].agg(lambda v: (len(v), set(v))).to_dict() == {
        "fhir": (10, {"1"}), "main": (15, {"2"})}
    assert len(_rows(warehouse, AS_OF + timedelta(days=1))) == 7
    with RiskWriter(AS_OF, "noshow", "3", url=warehouse.url) as writer:  # every source of the date
        writer.put(_batch("main", 4))
    assert _rows(warehouse)["source"].tolist() == ["main"] * 4
