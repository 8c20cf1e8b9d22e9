"""A small made-up clinic written straight into core (and its risk scores into reporting), for the
optimisation and scoring tests: resources with a slot grid, with only a resource_day row, and with
neither (booking order), one service and one slot marked no_overbook."""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta

import numpy as np
import sqlalchemy as sa


@dataclass
class Clinic:
    source: str
    as_of: date
    appointments: int
    blocked_slot: datetime          # a slot marked no_overbook
    blocked_service_slot: datetime  # a slot whose appointment's service is no_overbook


def make_clinic(engine: sa.Engine, as_of: date = date(2026, 4, 6), days: int = 3, slots: int = 16,
                seed: int = 0, with_risk: bool = True) -> Clinic:
    rng = np.random.default_rng(seed)
    source = f"cft_clinic_{secrets.token_hex(3)}"
    resources = [("r1", "b1", "grid"), ("r2", "b1", "grid"), ("r3", "b2", "resource_day"), ("r4", "b2", "none")]
    appts, slot_rows, day_rows, risk, patients = [], [], [], [], {}
    blocked_slot = blocked_service_slot = None
    for d in range(days):
        day = as_of + timedelta(days=d)
        for resource, branch, kind in resources:
            start = datetime.combine(day, time(9, 0))
            if kind == "grid":
                for k in range(slots):
                    t = start + timedelta(minutes=15 * k)
                    no_overbook = resource == "r1" and k == 5
                    if no_overbook and blocked_slot is None:
                        blocked_slot = t
                    slot_rows.append(dict(s=source, r=resource, t=t, no=no_overbook))
            elif kind == "resource_day":
                day_rows.append(dict(s=source, r=resource, d=day, n=slots, m=15, w=time(9, 0)))
            for k in range(slots):
                if rng.random() < 0.1:
                    continue  # a free slot
                appointment = f"{resource}-{day}-{k}"
                t = start + timedelta(minutes=15 * k) if kind != "none" else datetime.combine(day, time(0, 0))
                service = "svc_block" if (resource == "r2" and k == 7) else "svc"
                if service == "svc_block" and blocked_service_slot is None:
                    blocked_service_slot = t
                patient = f"p{rng.integers(0, 200)}"
                patients[patient] = dict(s=source, p=patient, sex=str(rng.choice(["F", "M"])),
                                         y=int(rng.integers(1940, 2015)),
                                         f=json.dumps({"welfare": int(rng.random() < 0.2)}))
                lead = timedelta(days=int(rng.integers(1, 30)), minutes=int(rng.integers(0, 600)))
                appts.append(dict(s=source, a=appointment, p=patient, r=resource, doc=f"doc_{resource}", dep="dep1",
                                  b=branch, svc=service, t=t, booked=t - lead))
                prob = float(np.clip(rng.beta(2, 6), 0.01, 0.95))
                risk.append(dict(d=as_of, s=source, a=appointment, r=resource, doc=f"doc_{resource}", dep="dep1",
                                 b=branch, t=t, p=prob, band="high" if prob >= 0.3 else "medium" if prob >= 0.15
                                 else "low"))
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO core.branch (source, branch_id, name) VALUES (:s, 'b1', 'North'), "
                             "(:s, 'b2', 'South')"), {"s": source})
        conn.execute(sa.text("INSERT INTO core.service (source, service_id, name, no_overbook) VALUES "
                             "(:s, 'svc', 'Consultation', false), (:s, 'svc_block', 'MRI', true)"), {"s": source})
        conn.execute(sa.text("INSERT INTO core.resource (source, resource_id, name, branch_id, practitioner_id) "
                             "VALUES (:s, :r, :r, :b, 'doc_' || :r)"),
                     [dict(s=source, r=r, b=b) for r, b, _ in resources])
        conn.execute(sa.text("INSERT INTO core.patient (source, patient_key, sex, birth_year, flags) VALUES "
                             "(:s, :p, :sex, :y, CAST(:f AS jsonb))"), list(patients.values()))
        conn.execute(sa.text(
            "INSERT INTO core.appointment (source, appointment_id, patient_key, resource_id, practitioner_id, "
            "department_id, branch_id, service_id, start_at, duration_min, booked_at, status, as_of, load_batch_id) "
            "VALUES (:s, :a, :p, :r, :doc, :dep, :b, :svc, :t, 15, :booked, 'booked', :t, 0)"), appts)
        if slot_rows:
            conn.execute(sa.text("INSERT INTO core.slot (source, resource_id, start_at, duration_min, no_overbook) "
                                 "VALUES (:s, :r, :t, 15, :no)"), slot_rows)
        if day_rows:
            conn.execute(sa.text("INSERT INTO core.resource_day (source, resource_id, day, slots, slot_minutes, "
                                 "work_start) VALUES (:s, :r, :d, :n, :m, :w)"), day_rows)
        if with_risk:
            conn.execute(sa.text(
                "INSERT INTO reporting.appointment_risk (as_of, source, appointment_id, resource_id, practitioner_id, "
                "department_id, branch_id, start_at, probability, risk_band, model_name, model_version) VALUES "
                "(:d, :s, :a, :r, :doc, :dep, :b, :t, :p, :band, 'noshow', '1')"), risk)
    return Clinic(source, as_of, len(appts), blocked_slot, blocked_service_slot)


def drop_clinic(engine: sa.Engine, source: str) -> None:
    with engine.begin() as conn:
        for table in ("reporting.overbooking_slot", "reporting.overbooking_day", "reporting.appointment_risk",
                      "core.appointment", "core.slot", "core.resource_day", "core.resource", "core.patient",
                      "core.service", "core.branch"):
            conn.execute(sa.text(f"DELETE FROM {table} WHERE source = :s"), {"s": source})
