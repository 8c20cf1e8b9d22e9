"""CSV connector: the Vitória format (time zones, outcomes, bad input) and the canonical layout."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from clinicflow.errors import DataQualityError, SourceUnavailableError
from clinicflow.settings import SourceConfig
from pipelines.sources import csv as csv_source
from pipelines.sources.base import APPOINTMENT_COLUMNS, PATIENT_COLUMNS, ExtractRequest
from tests.pipelines.ingest_data import vitoria_rows, write_vitoria


def _extract(path, **options):
    source = SourceConfig(name="vit", kind="csv", format="vitoria", path=path, options=options)
    return csv_source.extract(ExtractRequest(source=source, as_of=pd.Timestamp("2016-06-01").date()))


def test_vitoria_maps_columns_outcomes_and_time_zone(tmp_path):
    rows = vitoria_rows(8)
    rows[0]["ScheduledDay"] = "2016-04-29T01:30:00Z"  # 22:30 the day before in Vitória (UTC-3)
    rows[1]["No-show"] = ""                            # booked, outcome unknown
    rows[2]["PatientId"] = "9377952927E-5"             # must stay text, not become a float
    extract = _extract(write_vitoria(tmp_path / "v.csv.gz", rows))
    a = extract.appointments
    assert list(a.columns[: len(APPOINTMENT_COLUMNS)]) == list(APPOINTMENT_COLUMNS)
    assert list(extract.patients.columns[:4]) == list(PATIENT_COLUMNS)
    assert a.loc[0, "booked_at"] == pd.Timestamp("2016-04-28 22:30:00")
    assert a.loc[0, "start_at"] == pd.Timestamp(rows[0]["AppointmentDay"][:10])  # the day, at 00:00, not shifted
    assert a["status"].tolist()[:3] == ["noshow", "booked", "fulfilled"]
    assert a.loc[1, "raw_status"] == {"No-show": ""}
    assert "9377952927E-5" in set(a["patient_source_id"])
    assert a["resource_id"].tolist() == a["branch_id"].tolist()
    assert set(extract.resources["resource_id"]) == set(extract.branches["branch_id"]) == set(a["branch_id"])
    assert set(extract.resources["kind"]) == {"other"}
    assert a["duration_min"].isna().all()
    assert a["row_problems"].isna().all()
    assert extract.full_snapshot is True
    flags = extract.patients.set_index("patient_source_id").loc[rows[0]["PatientId"], "flags"]
    assert set(flags) == {"scholarship", "hypertension", "diabetes", "alcoholism", "handicap"}


def test_vitoria_timezone_and_duration_options(tmp_path):
    rows = vitoria_rows(2)
    rows[0]["ScheduledDay"] = "2016-04-29T01:30:00Z"
    extract = _extract(write_vitoria(tmp_path / "v.csv", rows), timezone="Europe/Moscow", default_duration_min=15)
    assert extract.appointments.loc[0, "booked_at"] == pd.Timestamp("2016-04-29 04:30:00")
    assert extract.appointments["duration_min"].tolist() == [15, 15]


def test_bad_rows_are_flagged_not_guessed(tmp_path):
    rows = vitoria_rows(6)
    rows[0]["AppointmentDay"] = "2016-13-45T00:00:00Z"
    rows[1]["ScheduledDay"] = "yesterday"
    rows[2]["Age"] = "-1"
    rows[3]["No-show"] = "Maybe"
    extract = _extract(write_vitoria(tmp_path / "v.csv", rows))
    a = extract.appointments
    assert "AppointmentDay: cannot parse '2016-13-45T00:00:00Z'" in a.loc[0, "row_problems"]
    assert pd.isna(a.loc[0, "start_at"])
    assert "ScheduledDay: cannot parse 'yesterday'" in a.loc[1, "row_problems"]
    assert "Age: cannot parse '-1' as an age of 0-120 years" in a.loc[2, "row_problems"]
    assert a.loc[3, "status"] is None and a.loc[3, "raw_status"] == {"No-show": "Maybe"}
    assert any("unknown No-show value 'Maybe'" in p for p in extract.problems)
    assert a.loc[4:, "row_problems"].isna().all()


def test_missing_column_is_a_clear_error(tmp_path):
    path = write_vitoria(tmp_path / "v.csv", vitoria_rows(3), drop=("Age",))
    with pytest.raises(DataQualityError, match=r"lacks column\(s\) \['Age'\] of the Vitória format"):
        _extract(path)


def test_cp1251_file_is_a_clear_error_unless_configured(tmp_path):
    rows = vitoria_rows(3)
    rows[0]["Neighbourhood"] = "ЦЕНТРАЛЬНЫЙ"
    path = write_vitoria(tmp_path / "v.csv", rows, encoding="cp1251")
    with pytest.raises(DataQualityError, match=r"is not valid utf-8 .*set the source option \"encoding\""):
        _extract(path)
    extract = _extract(path, encoding="cp1251")
    assert extract.appointments.loc[0, "branch_id"] == "ЦЕНТРАЛЬНЫЙ"


def test_missing_file_is_source_unavailable(tmp_path):
    with pytest.raises(SourceUnavailableError, match="does not exist"):
        _extract(tmp_path / "absent.csv")


def test_folder_of_files_is_read_in_order(tmp_path):
    rows = vitoria_rows(6)
    write_vitoria(tmp_path / "a.csv", rows[:3])
    write_vitoria(tmp_path / "b.csv.gz", rows[3:])
    extract = _extract(tmp_path)
    assert extract.appointments["appointment_id"].tolist() == [r["AppointmentID"] for r in rows]


def test_canonical_layout(tmp_path):
    (tmp_path / "appointments.csv").write_text(
        ",".join(APPOINTMENT_COLUMNS) + "\n"
        "a1,p1,r1,,,b1,,2026-11-02 09:00,20,2026-10-30 12:00,web,true,false,,\"{\"\"code\"\": 1}\",booked,,\n"
    )
    (tmp_path / "patients.csv").write_text(",".join(PATIENT_COLUMNS) + "\np1,F,1980,{}\n")
    source = SourceConfig(name="can", kind="csv", format="canonical", path=tmp_path)
    extract = csv_source.extract(ExtractRequest(source=source, as_of=pd.Timestamp("2026-11-01").date()))
    assert json.loads(extract.appointments.loc[0, "raw_status"]) == {"code": 1}  # JSON text, for COPY as is
    assert extract.appointments.loc[0, "channel"] == "web"
    assert extract.resources is None
    (tmp_path / "patients.csv").write_text("patient_source_id,sex,birth_year,flags,full_name\np1,F,1980,{},X\n")
    with pytest.raises(DataQualityError, match=r"unexpected \['full_name'\]"):
        csv_source.extract(ExtractRequest(source=source, as_of=pd.Timestamp("2026-11-01").date()))
