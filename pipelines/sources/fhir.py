"""FHIR R4 exports: a Bundle (JSON) or NDJSON files of Appointment, Slot, Schedule, Patient, Practitioner.

``path`` is one file (``.json`` Bundle, ``.ndjson``; either may be ``.gz``) or a folder of them (a
FHIR Bulk Data export). Other resource types are ignored.

Only the fields below are read; a Patient's ``name``, ``telecom``, ``address``, ``identifier`` and a
participant's ``display`` are never read into a frame.

| FHIR | canonical |
|---|---|
| Patient.id / gender / birthDate | patient (pseudonymised by the loader), sex F/M, birth year |
| Practitioner.id, name (text or given + family) | practitioner |
| Schedule.id, actor (Practitioner/Location/Device), comment | resource (kind practitioner/room/device) |
| Slot.schedule, start, end, status free/busy/busy-tentative | slot (other statuses are not capacity) |
| Appointment.id, start, end/minutesDuration, created, meta.lastUpdated | start, duration, booked at, updated at |
| Appointment.participant Patient / Practitioner / Location | patient, practitioner, branch |
| Appointment.slot → Slot.schedule | resource (else the practitioner's only Schedule, else the practitioner) |
| Appointment.serviceType[0].coding[0].code | service |

``Appointment.status`` → canonical status:

| FHIR | canonical | note |
|---|---|---|
| proposed, pending | booked | ``confirmed`` = false |
| booked | booked | ``confirmed`` = true |
| arrived, checked-in | arrived | |
| fulfilled | fulfilled | |
| noshow | noshow | |
| cancelled | cancelled_by_patient / _by_clinic / _unknown | by ``cancelationReason`` (see below) |
| entered-in-error | deleted | the booking never existed |
| waitlist | (not loaded) | a wait-list entry holds no time in a schedule; counted in the log |
| anything else | None | reported in ``Extract.problems``; the row is quarantined, never guessed |

A cancellation's side comes from ``cancelationReason`` (HL7 appointment-cancellation-reason codes):
``pat*`` → by the patient; ``prov*``, ``maint``, ``meds-inc``, ``oth-room`` → by the clinic; any other
or no reason → cancelled_unknown.

Times with an offset (``2026-11-02T09:00:00+03:00``) are converted to the source's time zone (option
``timezone``, default ``CLINICFLOW_TIMEZONE``) and kept as local wall-clock time; times without an
offset are taken as local. An export is a full snapshot (appointments missing from it are marked
deleted) unless the option ``snapshot`` is false (e.g. a ``_since`` incremental bulk export).
"""

from __future__ import annotations

import gzip
import json
import logging
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd

from clinicflow.errors import DataQualityError, SourceUnavailableError
from pipelines.sources import base

log = logging.getLogger(__name__)

TYPES = ("Appointment", "Slot", "Schedule", "Patient", "Practitioner")
STATUS = {
    "proposed": ("booked", False), "pending": ("booked", False), "booked": ("booked", True),
    "arrived": ("arrived", None), "checked-in": ("arrived", None), "fulfilled": ("fulfilled", None),
    "noshow": ("noshow", None), "entered-in-error": ("deleted", None),
}
CLINIC_REASONS = ("prov", "maint", "meds-inc", "oth-room")
CAPACITY_SLOT_STATUSES = ("free", "busy", "busy-tentative")
SEX = {"female": "F", "male": "M"}


def _open(path: Path) -> Any:
    if path.name.endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8")
    return path.open(encoding="utf-8")


def _files(path: Path, source: str) -> list[Path]:
    if not path.exists():
        raise SourceUnavailableError(f"{source}: {path} does not exist (is the export mounted?)")
    if path.is_file():
        return [path]
    suffixes = (".json", ".ndjson", ".json.gz", ".ndjson.gz")
    files = sorted(p for p in path.iterdir() if p.is_file() and p.name.endswith(suffixes))
    if not files:
        raise SourceUnavailableError(f"{source}: no .json or .ndjson file in {path}")
    return files


def read_resources(path: Path, source: str) -> Iterator[dict[str, Any]]:
    """Every resource of the wanted types in a Bundle or NDJSON file."""
    ndjson = ".ndjson" in path.name
    try:
        with _open(path) as fh:
            if ndjson:
                for number, line in enumerate(fh, start=1):
                    if not line.strip():
                        continue
                    try:
                        resource = json.loads(line)
                    except json.JSONDecodeError as exc:
                        raise DataQualityError(f"{source}: {path.name} line {number} is not JSON ({exc.msg})") from None
                    if resource.get("resourceType") in TYPES:
                        yield resource
                return
            try:
                document = json.load(fh)
            except json.JSONDecodeError as exc:
                raise DataQualityError(
                    f"{source}: {path.name} is not JSON ({exc.msg} at line {exc.lineno}); expected a FHIR Bundle"
                ) from None
    except UnicodeDecodeError:
        raise DataQualityError(f"{source}: {path.name} is not UTF-8, as FHIR JSON must be") from None
    if document.get("resourceType") == "Bundle":
        for entry in document.get("entry") or []:
            resource = entry.get("resource") or {}
            if resource.get("resourceType") in TYPES:
                yield resource
    elif document.get("resourceType") in TYPES:
        yield document
    else:
        raise DataQualityError(
            f"{source}: {path.name} is a {document.get('resourceType')!r}, not a FHIR Bundle or one of {TYPES}"
        )


def _ref(reference: Any, kind: str) -> str | None:
    """The id in a reference ``{"reference": "Kind/id"}`` (absolute URLs and _history allowed)."""
    if not isinstance(reference, dict):
        return None
    text = str(reference.get("reference") or "")
    parts = text.split("/")
    if "_history" in parts:
        parts = parts[: parts.index("_history")]
    if len(parts) >= 2 and parts[-2] == kind:
        return parts[-1]
    return None


class _Times:
    def __init__(self, zone: str) -> None:
        self.zone = zone

    def local(self, value: Any) -> pd.Timestamp | None:
        """A FHIR instant/dateTime as naive local time (None when absent; raises ValueError if bad)."""
        if value in (None, ""):
            return None
        stamp = pd.Timestamp(str(value))
        if stamp.tzinfo is not None:
            stamp = stamp.tz_convert(self.zone).tz_localize(None)
        return stamp


def _status(appointment: dict[str, Any]) -> tuple[str | None, bool | None]:
    code = appointment.get("status")
    if code == "cancelled":
        reason = ""
        for coding in (appointment.get("cancelationReason") or {}).get("coding") or []:
            reason = str(coding.get("code") or "")
            break
        if reason.startswith("pat"):
            return "cancelled_by_patient", None
        if reason.startswith(CLINIC_REASONS):
            return "cancelled_by_clinic", None
        return "cancelled_unknown", None
    return STATUS.get(str(code), (None, None))


def _practitioner_name(resource: dict[str, Any]) -> str | None:
    for name in resource.get("name") or []:
        if name.get("text"):
            return str(name["text"])
        parts = [*(name.get("prefix") or []), *(name.get("given") or []), name.get("family") or ""]
        text = " ".join(str(p) for p in parts if p)
        if text:
            return text
    return None


def extract(request: base.ExtractRequest) -> base.Extract:
    """Read a FHIR R4 export (see the module docstring)."""
    source = request.source
    options = source.options
    times = _Times(str(options.get("timezone", request.timezone)))
    resources: dict[str, list[dict[str, Any]]] = {t: [] for t in TYPES}
    for path in _files(Path(source.path), source.name):  # type: ignore[arg-type]
        for resource in read_resources(path, source.name):
            resources[resource["resourceType"]].append(resource)
    problems: list[str] = []

    patients = pd.DataFrame([_patient(p, problems) for p in resources["Patient"]],
                            columns=[*base.PATIENT_COLUMNS, "row_problems"])
    practitioners = pd.DataFrame([{
        "practitioner_id": p.get("id"), "display_name": _practitioner_name(p), "specialty": None,
        "department_id": None, "archived": p.get("active") is False,
    } for p in resources["Practitioner"]], columns=list(base.PRACTITIONER_COLUMNS))

    schedules = {s.get("id"): s for s in resources["Schedule"]}
    resource_rows, branch_ids = [], set()
    by_practitioner: dict[str, list[str]] = {}
    for sid, schedule in schedules.items():
        actors = schedule.get("actor") or []
        practitioner = next((_ref(a, "Practitioner") for a in actors if _ref(a, "Practitioner")), None)
        location = next((_ref(a, "Location") for a in actors if _ref(a, "Location")), None)
        device = any(_ref(a, "Device") for a in actors)
        kind = "practitioner" if practitioner else "device" if device else "room" if location else "other"
        if practitioner:
            by_practitioner.setdefault(practitioner, []).append(sid)
        if location:
            branch_ids.add(location)
        resource_rows.append({
            "resource_id": sid, "name": schedule.get("comment"), "kind": kind, "practitioner_id": practitioner,
            "department_id": None, "branch_id": location, "no_overbook": False,
            "archived": schedule.get("active") is False,
        })

    slot_schedule: dict[str, str | None] = {}
    slot_rows = []
    for slot in resources["Slot"]:
        schedule_id = _ref(slot.get("schedule"), "Schedule")
        slot_schedule[str(slot.get("id"))] = schedule_id
        if slot.get("status") not in CAPACITY_SLOT_STATUSES:
            continue
        try:
            start, end = times.local(slot.get("start")), times.local(slot.get("end"))
        except ValueError:
            problems.append(f"Slot/{slot.get('id')}: unparseable start/end; slot skipped")
            continue
        minutes = int((end - start).total_seconds() // 60) if start is not None and end is not None else None
        slot_rows.append({"resource_id": schedule_id, "start_at": start, "duration_min": minutes,
                          "no_overbook": False})

    rows, statuses, waitlisted = [], Counter(), 0
    synthetic: dict[str, dict[str, Any]] = {}
    for appointment in resources["Appointment"]:
        if appointment.get("status") == "waitlist":
            waitlisted += 1
            continue
        row = _appointment(appointment, times, slot_schedule, by_practitioner, synthetic, problems, statuses)
        if row["branch_id"]:
            branch_ids.add(row["branch_id"])
        rows.append(row)
    if waitlisted:
        log.info("%s: %d wait-list appointment(s) skipped (no time in a schedule)", source.name, waitlisted)
    for code, count in statuses.items():
        problems.append(f"unknown Appointment.status {code!r} in {count} appointment(s): not mapped, rows quarantined")
    resource_rows += synthetic.values()
    appointments = pd.DataFrame(rows, columns=[*base.APPOINTMENT_COLUMNS, "row_problems"])
    for column in ("start_at", "booked_at", "status_changed_at", "source_updated_at"):
        appointments[column] = pd.to_datetime(appointments[column])
    return base.Extract(
        appointments=appointments,
        patients=patients,
        practitioners=practitioners,
        branches=pd.DataFrame({"branch_id": sorted(branch_ids), "name": None}),
        resources=pd.DataFrame(resource_rows, columns=list(base.RESOURCE_COLUMNS)),
        slots=pd.DataFrame(slot_rows, columns=list(base.SLOT_COLUMNS)) if resources["Slot"] else None,
        full_snapshot=bool(options.get("snapshot", True)),
        problems=problems,
    )


def _patient(resource: dict[str, Any], problems: list[str]) -> dict[str, Any]:
    """Only id, gender, birth year and the deceased flag: never name, telecom, address or identifiers."""
    birth = str(resource.get("birthDate") or "")
    year, issue = None, None
    if birth:
        try:
            year = int(birth[:4])
        except ValueError:
            issue = f"birthDate: cannot parse {birth!r}"
    gender = resource.get("gender")
    flags = {"deceased": True} if resource.get("deceasedBoolean") or resource.get("deceasedDateTime") else {}
    return {"patient_source_id": resource.get("id"), "sex": SEX.get(str(gender)) if gender else None,
            "birth_year": year, "flags": flags, "row_problems": issue}


def _appointment(appointment: dict[str, Any], times: _Times, slot_schedule: dict[str, str | None],
                 by_practitioner: dict[str, list[str]], synthetic: dict[str, dict[str, Any]],
                 problems: list[str], unknown: Counter) -> dict[str, Any]:
    aid = appointment.get("id")
    status, confirmed = _status(appointment)
    if status is None:
        unknown[str(appointment.get("status"))] += 1
    issues: list[str] = []
    patient = practitioner = location = None
    for participant in appointment.get("participant") or []:
        actor = participant.get("actor")
        patient = patient or _ref(actor, "Patient")
        practitioner = practitioner or _ref(actor, "Practitioner")
        location = location or _ref(actor, "Location")
    parsed: dict[str, Any] = {}
    for field, key in (("start_at", "start"), ("end", "end"), ("booked_at", "created")):
        try:
            parsed[field] = times.local(appointment.get(key))
        except ValueError:
            parsed[field] = None
            issues.append(f"{key}: cannot parse {appointment.get(key)!r}")
    try:
        updated = times.local((appointment.get("meta") or {}).get("lastUpdated"))
    except ValueError:
        updated = None
    minutes = appointment.get("minutesDuration")
    if minutes is None and parsed["start_at"] is not None and parsed["end"] is not None:
        minutes = int((parsed["end"] - parsed["start_at"]).total_seconds() // 60)
    resource = None
    for slot in appointment.get("slot") or []:
        resource = slot_schedule.get(str(_ref(slot, "Slot")))
        if resource:
            break
    if resource is None and practitioner:
        candidates = by_practitioner.get(practitioner, [])
        if len(candidates) == 1:
            resource = candidates[0]
        elif not candidates:
            resource = f"practitioner:{practitioner}"
            synthetic.setdefault(resource, {
                "resource_id": resource, "name": None, "kind": "practitioner", "practitioner_id": practitioner,
                "department_id": None, "branch_id": location, "no_overbook": False, "archived": False,
            })
    service = None
    for concept in appointment.get("serviceType") or []:
        for coding in concept.get("coding") or []:
            service = coding.get("code")
            break
        break
    raw = {"status": appointment.get("status")}
    for coding in (appointment.get("cancelationReason") or {}).get("coding") or []:
        raw["cancelationReason"] = coding.get("code")
        break
    return {
        "appointment_id": aid, "patient_source_id": patient, "resource_id": resource,
        "practitioner_id": practitioner, "department_id": None, "branch_id": location, "service_id": service,
        "start_at": parsed["start_at"], "duration_min": minutes, "booked_at": parsed["booked_at"], "channel": None,
        "confirmed": confirmed, "reminder_sent": None, "rescheduled_from_id": None, "raw_status": raw,
        "status": status, "status_changed_at": None, "source_updated_at": updated,
        "row_problems": "; ".join(issues) or None,
    }
