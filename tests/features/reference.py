"""A from-scratch recomputation of the features of one appointment as of one date, in plain pandas.

It first builds the snapshot a run of the as-of date could see (rows booked before it, with their
outcome / cancellation only if it happened before it, else "booked"), then applies the textbook
definition of each feature to that snapshot alone. The SQL in ``sql/features`` must agree with it.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta

import numpy as np
import pandas as pd

from features import definitions
from features.calendar import build_calendar

OUTCOMES = {"arrived", "fulfilled", "noshow"}
INACTIVE = {"cancelled_by_patient", "cancelled_by_clinic", "cancelled_unknown", "rescheduled", "deleted"}


def snapshot(core: pd.DataFrame, as_of: date) -> pd.DataFrame:
    """The rows a run of ``as_of`` sees, each with the status it could know (``vis_status``)."""
    midnight = pd.Timestamp(datetime.combine(as_of, datetime.min.time()))
    known_from = core["booked_at"].fillna(core["start_at"])
    visible = core[known_from < midnight].copy()
    changed = visible["status_changed_at"].fillna(visible["start_at"])
    outcome_known = visible["status"].isin(OUTCOMES) & (visible["start_at"] < midnight)
    change_known = visible["status"].isin(INACTIVE) & (changed < midnight)
    visible["vis_status"] = np.where(outcome_known | change_known, visible["status"], "booked")
    return visible


class Reference:
    def __init__(self, core: pd.DataFrame, patients: pd.DataFrame, slots: pd.DataFrame, country: str = "RU"):
        self.core = core.copy()
        for col in ("start_at", "booked_at", "status_changed_at"):
            self.core[col] = pd.to_datetime(self.core[col])
        self.core["day"] = self.core["start_at"].dt.date
        self.patients = patients.set_index(["source", "patient_key"])
        self.slots = slots.copy()
        self.slots["start_at"] = pd.to_datetime(self.slots["start_at"])
        self.calendar = {c.day: c for c in build_calendar(country, 2020, 2030)}
        self._snapshots: dict[date, pd.DataFrame] = {}

    def _snap(self, as_of: date) -> pd.DataFrame:
        if as_of not in self._snapshots:
            self._snapshots[as_of] = snapshot(self.core, as_of)
        return self._snapshots[as_of]

    def features(self, appointment_id: str, as_of: date) -> dict[str, object]:
        own = self.core.loc[self.core["appointment_id"] == appointment_id].iloc[0]
        snap = self._snap(as_of)
        others = snap[snap["appointment_id"] != appointment_id]
        active_others = others[~others["vis_status"].isin(INACTIVE)]
        day = own["day"]
        out: dict[str, object] = {}
        # booking
        booked, start = own["booked_at"], own["start_at"]
        out["lead_days"] = (day - booked.date()).days
        out["lead_hours"] = max((start - booked).total_seconds() / 3600, 0.0)
        out["same_day_booking"] = booked.date() == day
        out["booked_weekday"] = booked.weekday()
        out["booked_hour"] = booked.hour
        out["channel"] = own["channel"]
        out["is_reschedule"] = own["rescheduled_from_id"] is not None and not pd.isna(own["rescheduled_from_id"])
        depth, prev = 0, own["rescheduled_from_id"]
        by_id = self.core.set_index("appointment_id")
        while isinstance(prev, str) and depth < 20:
            depth += 1
            prev = by_id.loc[prev, "rescheduled_from_id"] if prev in by_id.index else None
        out["reschedule_depth"] = depth
        out["confirmed"] = own["confirmed"]
        # appointment
        out["appt_weekday"] = start.weekday()
        out["appt_hour"] = start.hour + start.minute / 60
        day_slots = self.slots[(self.slots["resource_id"] == own["resource_id"])
                               & (self.slots["start_at"].dt.date == day)]
        if len(day_slots):
            idx = int((day_slots["start_at"] < start).sum())
            out["slot_index"], out["day_slots"] = idx, len(day_slots)
            out["slot_position"] = min(idx / (len(day_slots) - 1), 1.0) if len(day_slots) > 1 else 0.0
        else:
            out["slot_index"] = out["day_slots"] = out["slot_position"] = None
        out["duration_min"] = own["duration_min"]
        for col in ("service_id", "department_id", "practitioner_id", "branch_id"):
            out[col] = own[col]
        # calendar
        cal = self.calendar[day]
        for col in ("is_day_off", "is_public_holiday", "is_shortened_day", "is_working_weekend",
                    "days_to_holiday", "days_from_holiday"):
            out[col] = getattr(cal, col)
        out["days_to_nearest_holiday"] = min(cal.days_to_holiday, cal.days_from_holiday)
        out["month"] = start.month
        out["season"] = {12: "winter", 1: "winter", 2: "winter", 3: "spring", 4: "spring", 5: "spring",
                         6: "summer", 7: "summer", 8: "summer"}.get(start.month, "autumn")
        # patient
        patient = self.patients.loc[(own["source"], own["patient_key"])]
        out["age"] = start.year - int(patient["birth_year"])
        out["sex"] = patient["sex"]
        mine = snap[snap["patient_key"] == own["patient_key"]]
        past = mine[(mine["day"] < as_of) & ~mine["vis_status"].isin(INACTIVE)]
        attended = past[past["vis_status"].isin({"arrived", "fulfilled"})]
        noshows = past[past["vis_status"] == "noshow"]
        out["prior_appointments"] = len(past)
        out["prior_attended"] = len(attended)
        out["prior_noshows"] = len(noshows)
        cancelled = mine[mine["vis_status"].str.startswith("cancelled")]
        out["prior_cancellations"] = len(cancelled)
        out["prior_late_cancellations"] = int(
            (cancelled["status_changed_at"] >= cancelled["start_at"] - pd.Timedelta(hours=24)).sum())
        out["prior_reschedules"] = int((mine["vis_status"] == "rescheduled").sum())
        out["days_since_last_visit"] = (day - attended["day"].max()).days if len(attended) else None
        out["days_since_last_noshow"] = (day - noshows["day"].max()).days if len(noshows) else None
        same_day = active_others[(active_others["patient_key"] == own["patient_key"]) & (active_others["day"] == day)]
        out["same_day_appointments"] = len(same_day)
        # context: outcomes of the last 180 days before as_of
        window = snap[snap["vis_status"].isin(OUTCOMES) & (snap["day"] < as_of)
                      & (snap["day"] >= as_of - timedelta(days=definitions.CONTEXT_WINDOW_DAYS))]
        base = (window["vis_status"] == "noshow").mean() if len(window) else None
        w = definitions.CONTEXT_PRIOR_WEIGHT
        for kind in ("practitioner", "department", "branch", "service"):
            rows = window[window[f"{kind}_id"] == own[f"{kind}_id"]]
            ns = int((rows["vis_status"] == "noshow").sum())
            out[f"{kind}_noshow_rate"] = None if base is None else (ns + w * base) / (len(rows) + w)
            if kind == "practitioner":
                out["practitioner_volume"] = len(rows)
        m = definitions.PATIENT_PRIOR_WEIGHT
        out["prior_noshow_rate"] = (None if base is None else
                                    (len(noshows) + m * base) / (len(noshows) + len(attended) + m))
        res = active_others[(active_others["resource_id"] == own["resource_id"]) & (active_others["day"] == day)]
        out["resource_day_booked"] = len(res)
        out["resource_day_fill"] = len(res) / out["day_slots"] if out["day_slots"] else None
        branch = active_others[(active_others["branch_id"] == own["branch_id"]) & (active_others["day"] == day)]
        out["branch_day_booked"] = len(branch)
        out["reminder_sent"] = own["reminder_sent"]
        return out
