"""Validation: failing rows are quarantined with the rules they broke (GX agrees with SQL), critical
failures reject the batch with a message that says what to fix, and GX Data Docs are written."""

from __future__ import annotations

import logging
import secrets
from datetime import date
from pathlib import Path

import pytest
import sqlalchemy as sa

from clinicflow.errors import DataQualityError
from pipelines import ingest, validation
from tests.pipelines.ingest_data import source_json, vitoria_rows, write_vitoria

AS_OF = date(2016, 5, 9)


@pytest.fixture()
def source(tmp_path, settings_env, migrated_warehouse):
    def make(rows, **options):
        name = f"val_{secrets.token_hex(3)}"
        path = write_vitoria(tmp_path / f"{name}.csv", rows)
        settings_env(sources=source_json(name, "csv", path, "vitoria", **options))
        return name, path
    return make


def test_bad_rows_are_quarantined_with_their_rules(source, migrated_warehouse, caplog):
    rows = vitoria_rows(40)
    rows[0]["AppointmentDay"] = "2016-13-45T00:00:00Z"    # unparseable date
    rows[1]["Age"] = "-1"                                  # negative age
    rows[2]["No-show"] = "Maybe"                           # unknown outcome
    rows[3]["AppointmentDay"] = "2031-05-03T00:00:00Z"     # outside the start window
    rows[4]["AppointmentID"] = ""                          # no id
    name, _ = source(rows)
    with caplog.at_level(logging.INFO, logger="pipelines"):
        summary = ingest.ingest(name, AS_OF)
    assert summary["quarantined"]["appointment"] == 5
    assert summary["core"]["appointment"]["inserted"] == 35
    with migrated_warehouse.connect() as conn:
        records = {r.row_no: r for r in conn.execute(sa.text(
            "SELECT row_no, record_id, failed_expectations, problems, record, run_id FROM quarantine.record "
            "WHERE source = :s AND entity = 'appointment'"), {"s": name})}
        loaded = conn.execute(sa.text("SELECT count(*) FROM core.appointment WHERE source = :s"), {"s": name}).scalar()
        batch = conn.execute(sa.text("SELECT * FROM ops.load_batch WHERE load_batch_id = :b"),
                             {"b": summary["batch_id"]}).mappings().one()
    assert loaded == 35
    assert records[1].failed_expectations == ["start_at_present", "parsed_cleanly"]
    assert "AppointmentDay: cannot parse '2016-13-45T00:00:00Z' as a date" in records[1].problems
    assert "parsed_cleanly" in records[2].failed_expectations
    assert "Age: cannot parse '-1' as an age of 0-120 years" in records[2].problems
    assert records[3].failed_expectations == ["status_known"]
    assert records[3].record["raw_status"] == {"No-show": "Maybe"}
    assert records[4].failed_expectations == ["start_at_in_window"]
    assert records[5].failed_expectations == ["appointment_id_present"]
    for record in records.values():
        assert record.run_id == batch["run_id"]
        assert len(record.record["patient_key"]) == 32
        assert rows[0]["PatientId"] not in str(record.record)
    validation_summary = batch["details"]["validation"]
    assert validation_summary["gx_consistent"] is True
    assert validation_summary["gx_unexpected"]["appointment"]["status_known"] == 1
    assert validation_summary["gx_success"] is False  # GX saw the failing rows and said so
    docs = Path(summary["data_docs"])
    assert docs.exists() and batch["data_docs"] == str(docs)
    assert f"GX Data Docs of batch {summary['batch_id']}: {docs}" in caplog.text
    pages = list(docs.parent.rglob("*.html"))
    assert any("appointment" in p.name for p in pages) and len(pages) >= 3


def test_duplicate_ids_reject_the_batch(source, migrated_warehouse):
    rows = vitoria_rows(20)
    rows[7]["AppointmentID"] = rows[3]["AppointmentID"]
    name, _ = source(rows)
    with pytest.raises(DataQualityError) as err:
        ingest.ingest(name, AS_OF)
    message = str(err.value)
    assert "1 duplicate appointment appointment_id value(s)" in message
    assert rows[3]["AppointmentID"] in message and "nothing loaded" in message and "fix the export" in message
    assert "GX Data Docs:" in message
    with migrated_warehouse.connect() as conn:
        for table in ("appointment", "patient"):
            assert conn.execute(sa.text(f"SELECT count(*) FROM core.{table} WHERE source = :s"),
                                {"s": name}).scalar() == 0
        status = conn.execute(sa.text("SELECT status, details->>'failed_stage' FROM ops.load_batch WHERE source = :s"),
                              {"s": name}).one()
    assert tuple(status) == ("failed", "validate")


def test_too_many_bad_rows_reject_the_batch(source, migrated_warehouse):
    rows = vitoria_rows(20)
    for row in rows[:8]:
        row["ScheduledDay"] = "29/04/2016 18:38"  # a wrong date format in a third of the file
    name, _ = source(rows)
    with pytest.raises(DataQualityError, match=r"8 of 20 appointments \(40%\) failed validation"):
        ingest.ingest(name, AS_OF)
    name, _ = source(rows, max_quarantine_fraction=0.5)
    assert ingest.ingest(name, AS_OF)["quarantined"]["appointment"] == 8


def test_row_volume_is_checked_against_previous_loads(source, migrated_warehouse, settings_env, tmp_path, caplog):
    name, path = source(vitoria_rows(40))
    ingest.ingest(name, AS_OF)
    write_vitoria(path, vitoria_rows(5))
    with caplog.at_level(logging.WARNING, logger="pipelines"):
        summary = ingest.ingest(name, AS_OF)
    assert "outside the expected range" in caplog.text
    assert summary["core"]["deleted"] == 35
    settings_env(sources=source_json(name, "csv", path, "vitoria", volume_action="fail"))
    write_vitoria(path, vitoria_rows(40))
    ingest.ingest(name, AS_OF)
    write_vitoria(path, vitoria_rows(2))
    with pytest.raises(DataQualityError, match="outside the expected range"):
        ingest.ingest(name, AS_OF)


def _backends(engine: sa.Engine) -> int:
    """Connections to the warehouse other than the pool's own (GX's engines open theirs)."""
    with engine.connect() as conn:
        return conn.execute(sa.text(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND backend_type = 'client backend' AND application_name NOT LIKE 'clinicflow-%'")).scalar()


def test_validated_batches_leave_no_connection_behind(source, migrated_warehouse):
    name, _ = source(vitoria_rows(20))
    before = _backends(migrated_warehouse)
    for _ in range(3):
        ingest.ingest(name, AS_OF)
    assert _backends(migrated_warehouse) == before  # before the engines were disposed: 5 more after 3 batches


def test_every_rule_has_an_expectation_and_unique_names():
    import great_expectations as gx

    limits = validation.Limits(as_of=AS_OF)
    seen = set()
    for rule in validation.RULES:
        expectation = rule.expectation(gx.expectations, limits, ["r1"])
        assert expectation.column  # a column expectation, evaluated on every staged row
        assert (rule.entity, rule.name) not in seen
        seen.add((rule.entity, rule.name))
    with pytest.raises(Exception, match="volume_action"):
        validation.Limits.from_options(AS_OF, {"volume_action": "ignore"})
    assert validation.volume_range([], limits) is None
    assert validation.volume_range([100, 120, 80], limits) == (20, 501)


def test_old_data_docs_are_pruned(tmp_path):
    for batch in (3, 10, 12, 7):
        (tmp_path / f"batch_{batch}").mkdir()
    (tmp_path / "notes").mkdir()
    removed = validation.prune_data_docs(tmp_path, keep=2)
    assert sorted(p.name for p in removed) == ["batch_3", "batch_7"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["batch_10", "batch_12", "notes"]


def test_duplicate_patients_reject_the_batch_with_their_message(settings_env, migrated_warehouse, monkeypatch,
                                                                tmp_path):
    """Two staged rows of one patient and an appointment of that patient failing a rule: the rules'
    patient join must not quarantine the appointment twice (a unique violation), the batch is
    rejected for the duplicate."""
    import pandas as pd

    from pipelines.sources.base import Extract

    name = f"dup_{secrets.token_hex(3)}"
    settings_env(sources=source_json(name, "fhir", tmp_path))
    appointments = pd.DataFrame({
        "appointment_id": ["a1", "a2"], "patient_source_id": ["p1", "p1"], "resource_id": ["r1", "r1"],
        "practitioner_id": None, "department_id": None, "branch_id": None, "service_id": None,
        "start_at": pd.to_datetime(["2026-11-02 09:00", "2026-11-03 09:00"]), "duration_min": [20, 900],
        "booked_at": pd.Timestamp("2026-10-01"), "channel": "web", "confirmed": True, "reminder_sent": False,
        "rescheduled_from_id": None, "raw_status": ['{"STATUS": 0}'] * 2, "status": ["booked", "booked"],
        "status_changed_at": pd.NaT, "source_updated_at": pd.Timestamp("2026-10-01"),
    })
    patients = pd.DataFrame({"patient_source_id": ["p1", "p1"], "sex": ["F", "F"], "birth_year": [1980, 1981],
                             "flags": ["{}", "{}"]})
    resources = pd.DataFrame({"resource_id": ["r1"], "name": ["Dr"], "kind": ["practitioner"], "practitioner_id": None,
                              "department_id": None, "branch_id": None, "no_overbook": False, "archived": False})

    class Source:
        def extract(self, request):
            return Extract(appointments=appointments, patients=patients, resources=resources)

    monkeypatch.setattr(ingest, "connector_for", lambda source: Source())
    with pytest.raises(DataQualityError, match="1 duplicate patient patient_key value"):
        ingest.ingest(name, date(2026, 11, 1))
    with migrated_warehouse.connect() as conn:
        rows = conn.execute(sa.text("SELECT record_id, failed_expectations FROM quarantine.record WHERE source = :s "
                                    "AND entity = 'appointment'"), {"s": name}).all()
    assert [tuple(r) for r in rows] == [("a2", ["duration_in_range"])]
