"""A small synthetic export in the public Vitória format (tests never read the real file).

Same columns and encodings as ../shared/data/noshow-vitoria-2016: UTC ``ScheduledDay``,
``AppointmentDay`` at midnight, ``No-show`` Yes/No (empty = unknown). The no-show mechanism has the
data set's main effects: same-day bookings almost always come, risk grows with lead time, young adults
miss more, some patients miss habitually, and neighbourhoods differ.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

COLUMNS = ["PatientId", "AppointmentID", "Gender", "ScheduledDay", "AppointmentDay", "Age", "Neighbourhood",
           "Scholarship", "Hipertension", "Diabetes", "Alcoholism", "Handcap", "SMS_received", "No-show"]


def generate(first_day: date, days: int, per_day: int = 150, seed: int = 1, patients: int = 1500) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    pid = rng.integers(10**12, 10**13, size=patients)
    age = rng.integers(0, 95, size=patients)
    sex = rng.choice(["F", "M"], size=patients, p=[0.65, 0.35])
    habit = rng.normal(0, 1.0, size=patients)
    hood = rng.choice([f"BAIRRO {i}" for i in range(8)], size=patients)
    hood_effect = {f"BAIRRO {i}": e for i, e in enumerate(rng.normal(0, 0.3, size=8))}
    rows = []
    next_id = 5_600_000
    for offset in range(days):
        day = first_day + timedelta(days=offset)
        if day.weekday() >= 5:
            continue
        for _ in range(per_day):
            p = int(rng.integers(patients))
            same_day = rng.random() < 0.35
            lead = 0 if same_day else int(min(rng.exponential(12), 90)) + 1
            booked = datetime.combine(day - timedelta(days=lead), datetime.min.time()) + timedelta(
                hours=float(rng.uniform(10, 20)))  # 07:00–17:00 in Vitória, as UTC
            sms = int(lead >= 3 and rng.random() < 0.6)
            logit = (-2.0 + 0.035 * lead - (2.2 if same_day else 0.0) + 0.9 * habit[p]
                     + (0.35 if 15 <= age[p] <= 35 else 0.0) + hood_effect[hood[p]] - 0.1 * sms)
            noshow = rng.random() < 1 / (1 + np.exp(-logit))
            rows.append({
                "PatientId": f"{pid[p]}.0", "AppointmentID": next_id, "Gender": sex[p],
                "ScheduledDay": booked.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "AppointmentDay": day.strftime("%Y-%m-%dT00:00:00Z"), "Age": int(age[p]),
                "Neighbourhood": hood[p], "Scholarship": int(rng.random() < 0.1),
                "Hipertension": int(age[p] > 50 and rng.random() < 0.4), "Diabetes": int(rng.random() < 0.07),
                "Alcoholism": int(rng.random() < 0.03), "Handcap": int(rng.random() < 0.02), "SMS_received": sms,
                "No-show": "Yes" if noshow else "No",
            })
            next_id += 1
    return pd.DataFrame(rows, columns=COLUMNS)


def write(frame: pd.DataFrame, path: Path) -> Path:
    frame.to_csv(path, index=False)
    return path
