"""CSV exports: the public Vitória no-show format, and ClinicFlow's canonical CSV layout.

**Vitória** (``"format": "vitoria"``; the columns of the public "Medical Appointment No Shows"
data set): one file (plain or ``.gz``) or a folder of such files, read in name order.

* ``Neighbourhood`` is the branch and, since the data has no doctor or slot, the one bookable
  resource of that branch (resource id = branch id = the neighbourhood's name, kind ``other``).
* ``No-show``: ``Yes`` → ``noshow``, ``No`` → ``fulfilled``, empty → ``booked`` (outcome unknown);
  any other value is reported and the row quarantined, never guessed.
* ``AppointmentDay`` carries only a day (its time is always 00:00:00 and its ``Z`` is not a real
  instant): ``start_at`` is that day at 00:00 local time, ``duration_min`` is unknown unless the
  option ``default_duration_min`` is set.
* ``ScheduledDay`` is a UTC instant: it is converted to the source's time zone (option ``timezone``,
  default ``America/Sao_Paulo`` for this format, Vitória's zone) and stored as local wall-clock time
  in ``booked_at``. A booking at 01:30 UTC on 29 April is 22:30 on 28 April in Vitória.
* ``PatientId`` is read as text (some values look like ``9377952927E-5``) and pseudonymised by the
  loader; ``Gender`` → sex, ``Age`` → birth year (year of the appointment minus age, from the
  patient's latest appointment); ``Scholarship``, ``Hipertension``, ``Diabetes``, ``Alcoholism``,
  ``Handcap`` → the patient's flags; ``SMS_received`` → ``reminder_sent``.
* The file is the whole history (``full_snapshot``): appointments that disappear from it are marked
  deleted. Set the option ``snapshot`` to false for files that hold only changes.
* Unparseable values (dates, ages, ids) leave the field empty and say why in ``row_problems``: the
  row is quarantined. A missing column or a file that is not in the configured encoding (option
  ``encoding``, default ``utf-8``) stops the run with a :class:`DataQualityError`.

**Canonical** (``"format": "canonical"``): a folder with ``appointments.csv`` and ``patients.csv``
(and optionally ``branches.csv``, ``departments.csv``, ``practitioners.csv``, ``services.csv``,
``resources.csv``, ``slots.csv``, ``resource_days.csv``, plain or ``.gz``) whose columns are exactly
those of pipelines/sources/base.py; ``raw_status`` and ``flags`` hold JSON. Times are local.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from clinicflow.errors import DataQualityError, SourceUnavailableError
from pipelines.sources import base

log = logging.getLogger(__name__)

VITORIA_COLUMNS = (
    "PatientId", "AppointmentID", "Gender", "ScheduledDay", "AppointmentDay", "Age", "Neighbourhood",
    "Scholarship", "Hipertension", "Diabetes", "Alcoholism", "Handcap", "SMS_received", "No-show",
)
VITORIA_TIMEZONE = "America/Sao_Paulo"
NO_SHOW = {"Yes": "noshow", "No": "fulfilled", "": "booked"}
FLAGS = {"Scholarship": "scholarship", "Hipertension": "hypertension", "Diabetes": "diabetes",
         "Alcoholism": "alcoholism", "Handcap": "handicap"}
CANONICAL_FILES = {
    "appointments": base.APPOINTMENT_COLUMNS, "patients": base.PATIENT_COLUMNS, "branches": base.BRANCH_COLUMNS,
    "departments": base.DEPARTMENT_COLUMNS, "practitioners": base.PRACTITIONER_COLUMNS,
    "services": base.SERVICE_COLUMNS, "resources": base.RESOURCE_COLUMNS, "slots": base.SLOT_COLUMNS,
    "resource_days": base.RESOURCE_DAY_COLUMNS,
}


def _files(path: Path, source: str) -> list[Path]:
    if not path.exists():
        raise SourceUnavailableError(f"{source}: {path} does not exist (is the export mounted?)")
    if path.is_file():
        return [path]
    files = sorted(p for p in path.iterdir() if p.is_file() and p.name.endswith((".csv", ".csv.gz")))
    if not files:
        raise SourceUnavailableError(f"{source}: no .csv or .csv.gz file in {path}")
    return files


def read_text_csv(path: Path, *, source: str, encoding: str) -> pd.DataFrame:
    """Every column as text, empty cells as ''; clear errors for a wrong encoding or a broken file."""
    try:
        return pd.read_csv(path, dtype=str, keep_default_na=False, encoding=encoding, compression="infer")
    except UnicodeDecodeError as exc:
        raise DataQualityError(
            f"{source}: {path.name} is not valid {encoding} (byte {exc.object[exc.start:exc.start + 1]!r} at "
            f"offset {exc.start}). Re-export the file as UTF-8, or set the source option \"encoding\" to the "
            "file's encoding (e.g. \"cp1251\" for a Windows export in Russian)"
        ) from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, EOFError, OSError) as exc:
        raise DataQualityError(f"{source}: cannot read {path.name} as CSV: {exc}") from None


# --------------------------------------------------------------------------------------------------
# Vitória


def _problem(problems: pd.Series, mask: pd.Series, column: str, values: pd.Series, what: str) -> pd.Series:
    if not mask.any():
        return problems
    text = column + ": cannot parse " + values[mask].map(repr) + f" as {what}"
    joined = problems[mask].where(problems[mask].isna(), problems[mask] + "; ")
    problems = problems.copy()
    problems[mask] = joined.fillna("") + text
    return problems


def parse_vitoria(raw: pd.DataFrame, *, source: str, zone: str, default_duration: int | None,
                  file_name: str = "file") -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """Appointments and patients (contract columns) from the text columns of a Vitória file."""
    missing = [c for c in VITORIA_COLUMNS if c not in raw.columns]
    if missing:
        raise DataQualityError(
            f"{source}: {file_name} lacks column(s) {missing} of the Vitória format (expected "
            f"{list(VITORIA_COLUMNS)}). Is \"format\": \"vitoria\" right for this file?"
        )
    raw = raw.apply(lambda s: s.str.strip())
    n = len(raw)
    problems = pd.Series([None] * n, index=raw.index, dtype="object")

    booked = pd.to_datetime(raw["ScheduledDay"], utc=True, errors="coerce", format="ISO8601")
    problems = _problem(problems, booked.isna() & (raw["ScheduledDay"] != ""), "ScheduledDay", raw["ScheduledDay"],
                        "a UTC timestamp")
    booked_local = booked.dt.tz_convert(zone).dt.tz_localize(None)

    day_text = raw["AppointmentDay"].str.slice(0, 10)
    day = pd.to_datetime(day_text, errors="coerce", format="%Y-%m-%d")
    problems = _problem(problems, day.isna(), "AppointmentDay", raw["AppointmentDay"], "a date")

    age = pd.to_numeric(raw["Age"], errors="coerce")
    bad_age = age.isna() | (age != np.floor(age.fillna(0)))
    problems = _problem(problems, bad_age, "Age", raw["Age"], "whole years")
    implausible = ~bad_age & ((age < 0) | (age > 120))
    problems = _problem(problems, implausible, "Age", raw["Age"], "an age of 0-120 years")
    birth_year = (day.dt.year - age).where(~bad_age).astype("Int64")

    outcome = raw["No-show"].map(NO_SHOW)
    unknown = outcome.isna()
    report = [f"{file_name}: unknown No-show value {v!r} in {int(c)} row(s) (expected Yes, No or empty); "
              "rows quarantined" for v, c in raw.loc[unknown, "No-show"].value_counts().items()]

    ids = raw["AppointmentID"].where(raw["AppointmentID"] != "", None)
    patient = raw["PatientId"].where(raw["PatientId"] != "", None)
    branch = raw["Neighbourhood"].where(raw["Neighbourhood"] != "", None)
    sms = pd.to_numeric(raw["SMS_received"], errors="coerce")
    problems = _problem(problems, sms.isna(), "SMS_received", raw["SMS_received"], "0/1")
    raw_status = [{"No-show": v} for v in raw["No-show"]]

    appointments = pd.DataFrame({
        "appointment_id": ids, "patient_source_id": patient, "resource_id": branch, "practitioner_id": None,
        "department_id": None, "branch_id": branch, "service_id": None, "start_at": day,
        "duration_min": pd.array([default_duration] * n, dtype="Int64"), "booked_at": booked_local,
        "channel": None, "confirmed": None, "reminder_sent": pd.array(sms.map({1: True, 0: False}), dtype="boolean"),
        "rescheduled_from_id": None, "raw_status": raw_status, "status": outcome.astype("object"),
        "status_changed_at": pd.NaT, "source_updated_at": pd.NaT, "row_problems": problems,
    })
    appointments["status"] = appointments["status"].where(appointments["status"].notna(), None)

    flags = pd.DataFrame({name: pd.to_numeric(raw[col], errors="coerce") for col, name in FLAGS.items()})
    latest = (pd.DataFrame({"patient_source_id": patient, "day": day, "sex": raw["Gender"].where(raw["Gender"] != ""),
                            "birth_year": birth_year, "problems": problems.where(bad_age | implausible),
                            "valid_age": ~(bad_age | implausible)})
              .join(flags).dropna(subset=["patient_source_id"])
              .sort_values(["patient_source_id", "valid_age", "day"], kind="stable")
              .drop_duplicates("patient_source_id", keep="last"))
    patient_flags = [
        {k: (None if pd.isna(v) else int(v)) for k, v in zip(FLAGS.values(), row, strict=True)}
        for row in latest[list(FLAGS.values())].itertuples(index=False)
    ]
    patients = pd.DataFrame({
        "patient_source_id": latest["patient_source_id"].to_numpy(), "sex": latest["sex"].to_numpy(),
        "birth_year": latest["birth_year"].to_numpy(), "flags": patient_flags,
        "row_problems": latest["problems"].to_numpy(),
    })
    return appointments, patients, report


def _vitoria(request: base.ExtractRequest) -> base.Extract:
    source = request.source
    options = source.options
    encoding = str(options.get("encoding", "utf-8"))
    zone = str(options.get("timezone", VITORIA_TIMEZONE))
    duration = options.get("default_duration_min")
    appointments, patients, problems = [], [], []
    for path in _files(Path(source.path), source.name):  # type: ignore[arg-type]
        raw = read_text_csv(path, source=source.name, encoding=encoding)
        a, p, report = parse_vitoria(raw, source=source.name, zone=zone, file_name=path.name,
                                     default_duration=int(duration) if duration is not None else None)
        appointments.append(a)
        patients.append(p)
        problems += report
    frame = pd.concat(appointments, ignore_index=True)
    people = pd.concat(patients, ignore_index=True).drop_duplicates("patient_source_id", keep="last")
    branches = sorted(frame["branch_id"].dropna().unique())
    return base.Extract(
        appointments=frame,
        patients=people.reset_index(drop=True),
        branches=pd.DataFrame({"branch_id": branches, "name": branches}),
        resources=pd.DataFrame({
            "resource_id": branches, "name": branches, "kind": "other", "practitioner_id": None,
            "department_id": None, "branch_id": branches, "no_overbook": False, "archived": False,
        }),
        full_snapshot=bool(options.get("snapshot", True)),
        problems=problems,
    )


# --------------------------------------------------------------------------------------------------
# canonical


def _canonical(request: base.ExtractRequest) -> base.Extract:
    source = request.source
    folder = Path(source.path)  # type: ignore[arg-type]
    if not folder.is_dir():
        raise SourceUnavailableError(f"{source.name}: {folder} is not a folder (canonical CSV needs a folder)")
    encoding = str(request.source.options.get("encoding", "utf-8"))
    frames: dict[str, Any] = {}
    for name, columns in CANONICAL_FILES.items():
        path = next((folder / f"{name}{ext}" for ext in (".csv", ".csv.gz") if (folder / f"{name}{ext}").exists()),
                    None)
        if path is None:
            if name in ("appointments", "patients"):
                raise DataQualityError(f"{source.name}: {folder} has no {name}.csv (canonical format)")
            continue
        raw = read_text_csv(path, source=source.name, encoding=encoding)
        allowed = set(columns) | set(base.OPTIONAL_COLUMNS if name in ("appointments", "patients") else ())
        missing = [c for c in columns if c not in raw.columns]
        extra = [c for c in raw.columns if c not in allowed]
        if missing or extra:
            raise DataQualityError(f"{source.name}: {path.name}: missing column(s) {missing}, unexpected {extra} "
                                   "(canonical columns are listed in pipelines/sources/base.py)")
        frame = raw.replace("", None)
        for column in ("raw_status", "flags"):  # JSON text goes to jsonb as it is; only its shape is checked
            if column in frame.columns:
                text = frame[column].fillna("{}")
                bad = ~text.str.lstrip().str.startswith("{")
                if bad.any():
                    _json(text[bad].iloc[0], source.name, path.name, column)
                frame[column] = text
        frames[name] = frame
    return base.Extract(full_snapshot=bool(source.options.get("snapshot", True)), **frames)


def _json(value: str | None, source: str, file: str, column: str) -> dict[str, Any]:
    if not value:
        return {}
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError:
        raise DataQualityError(f"{source}: {file}: column {column} holds {value[:40]!r}, not JSON") from None
    if not isinstance(parsed, dict):
        raise DataQualityError(f"{source}: {file}: column {column} must hold JSON objects, got {value[:40]!r}")
    return parsed


def extract(request: base.ExtractRequest) -> base.Extract:
    """Read a CSV source (see the module docstring)."""
    fmt = request.source.format or "vitoria"
    with pd.option_context("mode.chained_assignment", None):
        return _vitoria(request) if fmt == "vitoria" else _canonical(request)
