"""Small synthetic clinic histories written straight into ``core`` for feature and model tests.

Deterministic for a seed. Doctors work Monday–Friday on a 30-minute slot grid; patients book with a
realistic mix of same-day and advance bookings, cancel, reschedule, and miss appointments with a
known mechanism (lead time, the patient's own propensity, age, reminders, weekday), so that a model
has signal and the point-in-time rules have every case to get wrong: outcomes, cancellations and
reschedules that happen before and after an as-of date, same-day bookings, siblings on one day.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from datetime import date, datetime, timedelta

import numpy as np
import pandas as pd
import sqlalchemy as sa

SOURCE = "syn"
CORE_APPOINTMENT_COLUMNS = (
    "source", "appointment_id", "patient_key", "resource_id", "practitioner_id", "department_id", "branch_id",
    "service_id", "start_at", "duration_min", "booked_at", "channel", "confirmed", "reminder_sent",
    "rescheduled_from_id", "status", "status_changed_at", "source_updated_at", "as_of", "load_batch_id",
)


@dataclass
class History:
    appointments: pd.DataFrame
    patients: pd.DataFrame
    slots: pd.DataFrame
    resource_days: pd.DataFrame
    first_day: date
    last_day: date


def generate(first_day: date, weeks: int, *, seed: int = 7, patients: int = 600, doctors: int = 6,
             fill: float = 0.75, source: str = SOURCE) -> History:
    rng = np.random.default_rng(seed)
    # organisation
    doctor_ids = [f"d{i}" for i in range(doctors)]
    dept_of = {d: f"dep{i % 3}" for i, d in enumerate(doctor_ids)}
    branch_of = {d: f"b{i % 2}" for i, d in enumerate(doctor_ids)}
    doctor_effect = {d: rng.normal(0, 0.35) for d in doctor_ids}
    # patients
    pkeys = [f"p{i:05d}" for i in range(patients)]
    birth = rng.integers(1940, 2020, size=patients)
    sex = rng.choice(["F", "M"], size=patients)
    propensity = rng.normal(0, 1.0, size=patients)
    popularity = rng.pareto(1.5, size=patients) + 0.2
    popularity /= popularity.sum()
    patient_frame = pd.DataFrame({
        "source": source, "patient_key": pkeys, "sex": sex, "birth_year": birth,
        "flags": [f'{{"chronic": {int(x)}}}' for x in rng.random(patients) < 0.2],
    })

    rows: list[dict] = []
    slot_rows: list[tuple] = []
    day_rows: list[tuple] = []
    next_id = 1
    last_day = first_day + timedelta(days=7 * weeks - 1)
    day = first_day
    while day <= last_day:
        if day.weekday() < 5:
            for doctor in doctor_ids:
                day_rows.append((source, doctor, day, 12, 30, "09:00", "15:00", False))
                for k in range(12):
                    start = datetime.combine(day, datetime.min.time()) + timedelta(hours=9, minutes=30 * k)
                    slot_rows.append((source, doctor, start, 30, False))
                    if rng.random() > fill:
                        continue
                    p = int(rng.choice(patients, p=popularity))
                    if rng.random() < 0.3:
                        booked = start - timedelta(hours=float(rng.uniform(0.5, 8)))
                    else:
                        booked = start - timedelta(days=float(rng.exponential(9)) + 0.3, hours=float(rng.uniform(0, 9)))
                    lead_days = (start.date() - booked.date()).days
                    reminder = bool(lead_days >= 2 and rng.random() < 0.7)
                    age = day.year - int(birth[p])
                    logit = (-2.1 + 0.05 * min(lead_days, 40) + 0.9 * propensity[p] - 0.6 * reminder
                             + (0.4 if 18 <= age <= 35 else 0.0) + (0.25 if day.weekday() == 0 else 0.0)
                             + doctor_effect[doctor] - (1.3 if lead_days == 0 else 0.0))
                    noshow = rng.random() < 1 / (1 + np.exp(-logit))
                    u = rng.random()
                    status, changed = ("noshow" if noshow else rng.choice(["fulfilled", "arrived"])), start
                    rescheduled = False
                    if lead_days >= 1 and u < 0.08:
                        status = rng.choice(["cancelled_by_patient", "cancelled_by_clinic"])
                        changed = booked + (start - booked) * float(rng.uniform(0.1, 1.1))
                    elif lead_days >= 2 and u < 0.11:
                        status, rescheduled = "rescheduled", True
                        changed = booked + (start - booked) * float(rng.uniform(0.2, 0.9))
                    appointment_id = f"a{next_id}"
                    next_id += 1
                    rows.append({
                        "source": source, "appointment_id": appointment_id, "patient_key": pkeys[p],
                        "resource_id": doctor, "practitioner_id": doctor, "department_id": dept_of[doctor],
                        "branch_id": branch_of[doctor], "service_id": f"s{int(rng.integers(0, 4))}",
                        "start_at": start, "duration_min": 30, "booked_at": booked,
                        "channel": rng.choice(["phone", "web", "reception"]),
                        "confirmed": bool(rng.random() < 0.6), "reminder_sent": reminder,
                        "rescheduled_from_id": None, "status": status, "status_changed_at": changed,
                    })
                    if rescheduled:  # the replacement booking, made when the old one was moved
                        new_start = start + timedelta(days=int(rng.integers(1, 10)))
                        rows.append({
                            **rows[-1], "appointment_id": f"a{next_id}", "start_at": new_start, "booked_at": changed,
                            "rescheduled_from_id": appointment_id,
                            "status": "noshow" if rng.random() < 0.25 else "fulfilled", "status_changed_at": new_start,
                        })
                        next_id += 1
        day += timedelta(days=1)
    frame = pd.DataFrame(rows)
    frame["source_updated_at"] = frame["status_changed_at"]
    frame["as_of"] = last_day + timedelta(days=30)
    frame["load_batch_id"] = 0
    slots = pd.DataFrame(slot_rows, columns=["source", "resource_id", "start_at", "duration_min", "no_overbook"])
    days = pd.DataFrame(day_rows, columns=["source", "resource_id", "day", "slots", "slot_minutes", "work_start",
                                           "work_end", "on_leave"])
    return History(frame, patient_frame, slots, days, first_day, last_day)


def _copy(conn: sa.Connection, table: str, frame: pd.DataFrame) -> None:
    buf = io.StringIO()
    frame.to_csv(buf, index=False, header=False, na_rep="\\N")
    buf.seek(0)
    cursor = conn.connection.dbapi_connection.cursor()
    try:
        cursor.copy_expert(
            f"COPY {table} ({', '.join(frame.columns)}) FROM STDIN WITH (FORMAT csv, NULL '\\N')", buf)
    finally:
        cursor.close()


def write(engine: sa.Engine, history: History, *, replace: bool = True) -> None:
    """Write the history into core (replacing the source's rows)."""
    source = history.appointments["source"].iloc[0]
    with engine.begin() as conn:
        if replace:
            for table in ("appointment", "patient", "slot", "resource_day", "resource", "practitioner"):
                conn.execute(sa.text(f"DELETE FROM core.{table} WHERE source = :s"), {"s": source})
        _copy(conn, "core.appointment", history.appointments[list(CORE_APPOINTMENT_COLUMNS)])
        _copy(conn, "core.patient", history.patients)
        _copy(conn, "core.slot", history.slots)
        _copy(conn, "core.resource_day", history.resource_days)
        conn.execute(sa.text("ANALYZE core.appointment"))


def read_core(engine: sa.Engine, source: str = SOURCE) -> pd.DataFrame:
    with engine.connect() as conn:
        return pd.read_sql(sa.text("SELECT * FROM core.appointment WHERE source = :s"), conn, params={"s": source})
