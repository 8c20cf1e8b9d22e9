"""Small generated inputs for the ingest tests: Vitória-format CSV rows and FHIR R4 bundles."""

from __future__ import annotations

import gzip
import json
import random
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa

HEADER = ("PatientId,AppointmentID,Gender,ScheduledDay,AppointmentDay,Age,Neighbourhood,Scholarship,"
          "Hipertension,Diabetes,Alcoholism,Handcap,SMS_received,No-show")
BRANCHES = ("JARDIM DA PENHA", "MARIA ORTIZ", "CENTRO", "SANTA MARTHA")


def vitoria_rows(n: int = 40, *, seed: int = 7, first_day: date = date(2016, 5, 2)) -> list[dict[str, Any]]:
    """``n`` appointments over two weeks, 12 patients, every outcome present."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        day = first_day + timedelta(days=i % 14)
        booked = datetime.combine(day, datetime.min.time()) - timedelta(days=rng.randint(0, 20), hours=-14,
                                                                         minutes=rng.randint(0, 59))
        rows.append({
            "PatientId": f"{9_000_000_000_000 + (i % 12) * 7919}", "AppointmentID": str(5_600_000 + i),
            "Gender": "F" if i % 3 else "M", "ScheduledDay": booked.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "AppointmentDay": f"{day.isoformat()}T00:00:00Z", "Age": str(20 + (i % 12) * 5),
            "Neighbourhood": BRANCHES[i % len(BRANCHES)], "Scholarship": str(i % 2), "Hipertension": "0",
            "Diabetes": str(int(i % 5 == 0)), "Alcoholism": "0", "Handcap": "0", "SMS_received": str(i % 2),
            "No-show": "Yes" if i % 4 == 0 else "No",
        })
    return rows


def write_vitoria(path: Path, rows: list[dict[str, Any]], *, encoding: str = "utf-8",
                  drop: tuple[str, ...] = ()) -> Path:
    columns = [c for c in HEADER.split(",") if c not in drop]
    lines = [",".join(columns)] + [",".join(str(r[c]) for c in columns) for r in rows]
    data = ("\n".join(lines) + "\n").encode(encoding)
    if path.name.endswith(".gz"):
        path.write_bytes(gzip.compress(data))
    else:
        path.write_bytes(data)
    return path


PATIENT_NAMES = {
    "pat-aa01": ("Иванова", "Мария", "+7 916 123-45-67"),
    "pat-bb02": ("Petrov", "Sergei", "+7 903 765-43-21"),
    "pat-cc03": ("Smirnova", "Olga", "+7 926 000-11-22"),
}


def fhir_bundle(statuses: list[str] | None = None, *, day: date = date(2026, 11, 2)) -> dict[str, Any]:
    """A Bundle with patients (names, phones), practitioners, schedules, slots and appointments."""
    statuses = statuses or ["fulfilled", "noshow", "booked", "cancelled", "arrived", "pending",
                            "entered-in-error", "checked-in", "waitlist"]
    entries: list[dict[str, Any]] = []
    for pid, (family, given, phone) in PATIENT_NAMES.items():
        entries.append({"resource": {
            "resourceType": "Patient", "id": pid, "gender": "female" if family.endswith("a") else "male",
            "birthDate": "1980-03-04", "name": [{"family": family, "given": [given]}],
            "telecom": [{"system": "phone", "value": phone}],
            "address": [{"text": f"{family} street 1"}], "identifier": [{"value": f"SNILS-{pid}"}],
        }})
    entries.append({"resource": {"resourceType": "Practitioner", "id": "dr-1",
                                 "name": [{"family": "House", "given": ["Gregory"]}]}})
    entries.append({"resource": {"resourceType": "Practitioner", "id": "dr-2",
                                 "name": [{"text": "Dr. Lisa Cuddy"}]}})
    entries.append({"resource": {"resourceType": "Schedule", "id": "sch-1", "comment": "House, room 12",
                                 "actor": [{"reference": "Practitioner/dr-1"}, {"reference": "Location/loc-1"}]}})
    patients = list(PATIENT_NAMES)
    for i, status in enumerate(statuses):
        start = datetime.combine(day, datetime.min.time()) + timedelta(hours=9, minutes=20 * i)
        slot_id = f"slot-{i}"
        entries.append({"resource": {
            "resourceType": "Slot", "id": slot_id, "schedule": {"reference": "Schedule/sch-1"}, "status": "busy",
            "start": start.strftime("%Y-%m-%dT%H:%M:%S+03:00"),
            "end": (start + timedelta(minutes=20)).strftime("%Y-%m-%dT%H:%M:%S+03:00"),
        }})
        pid = patients[i % len(patients)]
        appointment: dict[str, Any] = {
            "resourceType": "Appointment", "id": f"appt-{i}", "status": status,
            "start": start.strftime("%Y-%m-%dT%H:%M:%S+03:00"),
            "end": (start + timedelta(minutes=20)).strftime("%Y-%m-%dT%H:%M:%S+03:00"),
            "created": (start - timedelta(days=3)).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "slot": [{"reference": f"Slot/{slot_id}"}],
            "participant": [
                {"actor": {"reference": f"Patient/{pid}", "display": " ".join(PATIENT_NAMES[pid][:2])},
                 "status": "accepted"},
                {"actor": {"reference": "Practitioner/dr-1", "display": "Gregory House"}, "status": "accepted"},
                {"actor": {"reference": "Location/loc-1"}, "status": "accepted"},
            ],
            "serviceType": [{"coding": [{"code": "consult"}]}],
            "meta": {"lastUpdated": "2026-10-30T10:00:00+03:00"},
        }
        if status == "cancelled":
            appointment["cancelationReason"] = {"coding": [{"code": "pat-mv"}]}
        entries.append({"resource": appointment})
    # an appointment with a practitioner that has no Schedule: the practitioner is the resource
    entries.append({"resource": {
        "resourceType": "Appointment", "id": "appt-dr2", "status": "booked",
        "start": f"{day.isoformat()}T15:00:00+03:00", "minutesDuration": 30,
        "participant": [{"actor": {"reference": "Patient/pat-aa01"}}, {"actor": {"reference": "Practitioner/dr-2"}}],
    }})
    return {"resourceType": "Bundle", "type": "collection", "entry": entries}


def write_json(path: Path, document: dict[str, Any]) -> Path:
    path.write_text(json.dumps(document, ensure_ascii=False), encoding="utf-8")
    return path


def source_json(name: str, kind: str, path: Path, fmt: str | None = None, **options: Any) -> str:
    item: dict[str, Any] = {"name": name, "kind": kind, "path": str(path)}
    if fmt:
        item["format"] = fmt
    if options:
        item["options"] = options
    return json.dumps([item])


def core_snapshot(engine: sa.Engine, source: str) -> dict[str, list[tuple]]:
    """Every core row of a source (with bookkeeping columns), for comparing runs."""
    tables = {
        "appointment": "appointment_id", "patient": "patient_key", "branch": "branch_id",
        "resource": "resource_id", "practitioner": "practitioner_id", "slot": "resource_id, start_at",
    }
    out = {}
    with engine.connect() as conn:
        for table, order in tables.items():
            out[table] = [tuple(r) for r in conn.execute(
                sa.text(f"SELECT * FROM core.{table} WHERE source = :s ORDER BY {order}"), {"s": source})]
        out["watermark"] = [tuple(r) for r in conn.execute(
            sa.text("SELECT * FROM ops.watermark WHERE source = :s ORDER BY stream"), {"s": source})]
    return out
