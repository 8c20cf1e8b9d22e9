"""FHIR R4 connector: Bundle and NDJSON, status mapping, unknown codes reported, no personal data read."""

from __future__ import annotations

import gzip
import json
from datetime import date

import pandas as pd
import pytest

from clinicflow.errors import DataQualityError, SourceUnavailableError
from clinicflow.settings import SourceConfig
from pipelines.sources import fhir
from pipelines.sources.base import ExtractRequest
from tests.pipelines.ingest_data import PATIENT_NAMES, fhir_bundle, write_json


def _extract(path, **options):
    source = SourceConfig(name="hub", kind="fhir", path=path, options=options)
    return fhir.extract(ExtractRequest(source=source, as_of=date(2026, 11, 1), timezone="Europe/Moscow"))


def test_bundle_maps_statuses_and_references(tmp_path):
    extract = _extract(write_json(tmp_path / "bundle.json", fhir_bundle()))
    a = extract.appointments.set_index("appointment_id")
    expected = {
        "appt-0": ("fulfilled", None), "appt-1": ("noshow", None), "appt-2": ("booked", True),
        "appt-3": ("cancelled_by_patient", None), "appt-4": ("arrived", None), "appt-5": ("booked", False),
        "appt-6": ("deleted", None), "appt-7": ("arrived", None), "appt-dr2": ("booked", True),
    }
    assert set(a.index) == set(expected), "the wait-list entry is not an appointment"
    for aid, (status, confirmed) in expected.items():
        assert a.loc[aid, "status"] == status, aid
        assert (None if pd.isna(a.loc[aid, "confirmed"]) else a.loc[aid, "confirmed"]) == confirmed, aid
    assert a.loc["appt-0", "start_at"] == pd.Timestamp("2026-11-02 09:00")  # +03:00 kept as Moscow wall time
    assert a.loc["appt-0", "booked_at"] == pd.Timestamp("2026-10-30 12:00")  # Z converted to Moscow time
    assert a.loc["appt-0", "duration_min"] == 20
    assert a.loc["appt-0", "resource_id"] == "sch-1"  # via Slot.schedule
    assert a.loc["appt-0", "practitioner_id"] == "dr-1"
    assert a.loc["appt-0", "branch_id"] == "loc-1"
    assert a.loc["appt-0", "service_id"] == "consult"
    assert a.loc["appt-3", "raw_status"] == {"status": "cancelled", "cancelationReason": "pat-mv"}
    assert a.loc["appt-dr2", "resource_id"] == "practitioner:dr-2"
    resources = extract.resources.set_index("resource_id")
    assert resources.loc["sch-1", "kind"] == "practitioner" and resources.loc["sch-1", "branch_id"] == "loc-1"
    assert resources.loc["practitioner:dr-2", "practitioner_id"] == "dr-2"
    assert len(extract.slots) == 9 and set(extract.slots["duration_min"]) == {20}
    assert extract.problems == []
    assert set(extract.patients["sex"]) == {"F", "M"}
    assert set(extract.patients["birth_year"]) == {1980}
    names = extract.practitioners.set_index("practitioner_id")["display_name"]
    assert names["dr-1"] == "Gregory House" and names["dr-2"] == "Dr. Lisa Cuddy"


@pytest.mark.parametrize(("reason", "status"), [
    ("pat", "cancelled_by_patient"), ("prov-pers", "cancelled_by_clinic"), ("maint", "cancelled_by_clinic"),
    ("oth-weath", "cancelled_unknown"), (None, "cancelled_unknown"),
])
def test_cancellation_side_comes_from_the_reason(reason, status):
    appointment = {"status": "cancelled"}
    if reason:
        appointment["cancelationReason"] = {"coding": [{"code": reason}]}
    assert fhir._status(appointment)[0] == status


def test_unknown_status_is_reported_not_guessed(tmp_path):
    extract = _extract(write_json(tmp_path / "b.json", fhir_bundle(["booked", "on-hold", "on-hold"])))
    a = extract.appointments.set_index("appointment_id")
    assert a.loc["appt-1", "status"] is None
    assert a.loc["appt-1", "raw_status"] == {"status": "on-hold"}
    assert extract.problems == [
        "unknown Appointment.status 'on-hold' in 2 appointment(s): not mapped, rows quarantined"]


def test_names_phones_and_identifiers_are_never_read(tmp_path):
    extract = _extract(write_json(tmp_path / "b.json", fhir_bundle()))
    text = " ".join(
        frame.astype(str).to_csv() for frame in (extract.appointments, extract.patients, extract.resources)
    )
    for family, given, phone in PATIENT_NAMES.values():
        for secret in (family, given, phone, "SNILS", "street"):
            assert secret not in text


def test_ndjson_folder_and_gzip(tmp_path):
    resources = [e["resource"] for e in fhir_bundle(["booked", "fulfilled"])["entry"]]
    lines = "\n".join(json.dumps(r) for r in resources if r["resourceType"] != "Appointment")
    (tmp_path / "Other.ndjson").write_text(lines + "\n\n")
    appointments = "\n".join(json.dumps(r) for r in resources if r["resourceType"] == "Appointment")
    (tmp_path / "Appointment.ndjson.gz").write_bytes(gzip.compress(appointments.encode()))
    extract = _extract(tmp_path)
    assert sorted(extract.appointments["appointment_id"]) == ["appt-0", "appt-1", "appt-dr2"]
    assert len(extract.patients) == 3


def test_broken_input_is_a_clear_error(tmp_path):
    (tmp_path / "bad.ndjson").write_text('{"resourceType": "Patient", "id": "x"}\n{not json\n')
    with pytest.raises(DataQualityError, match=r"bad\.ndjson line 2 is not JSON"):
        _extract(tmp_path / "bad.ndjson")
    write_json(tmp_path / "op.json", {"resourceType": "OperationOutcome"})
    with pytest.raises(DataQualityError, match="not a FHIR Bundle"):
        _extract(tmp_path / "op.json")
    with pytest.raises(SourceUnavailableError):
        _extract(tmp_path / "nowhere")
