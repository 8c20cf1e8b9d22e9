"""The feature set: every feature's name, family, type and meaning, and the feature-set version.

The values are computed in PostgreSQL by ``sql/features/appointment_features.sql`` (window functions
over ``core``) and stored in ``features.appointment_features``. Change a definition there and here
together, and bump :data:`FEATURE_SET_VERSION`: rows of another version are never mixed with these,
and the next nightly run recomputes the training rows in the new version.

Visibility (what a run with as-of date D may use), enforced by the SQL and checked by
``tests/features/test_build.py`` against a from-scratch recomputation:

* the appointment's own booking record (times, resource, service, channel, confirmation, reminder):
  always — a same-day booking is scored as at the moment it was booked;
* another appointment exists from the start of the day after it was booked (``booked_at < D``);
* its outcome (arrived, fulfilled, noshow) once its day has passed (``start_at < D``);
* its cancellation, reschedule or deletion once it happened (``status_changed_at < D``);
* everything else about it is "booked, outcome unknown".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

#: Bump when a definition changes (the SQL, a smoothing constant, a window).
FEATURE_SET_VERSION = "2026.2"

#: Pseudo-count of the smoothed no-show rates: a patient with no history gets the clinic's rate.
PATIENT_PRIOR_WEIGHT = 2.0
#: Pseudo-count of the doctor / department / branch / service rates.
CONTEXT_PRIOR_WEIGHT = 20.0
#: Trailing window of the context no-show rates, in days before the as-of date.
CONTEXT_WINDOW_DAYS = 180

Family = Literal["booking", "appointment", "calendar", "patient", "context"]
Kind = Literal["numeric", "boolean", "categorical"]


@dataclass(frozen=True)
class Feature:
    name: str
    family: Family
    kind: Kind
    description: str
    #: +1: the risk may only rise with the value in a constrained model; -1: only fall; 0: free.
    monotone: int = 0


FEATURES: tuple[Feature, ...] = (
    # booking
    Feature("lead_days", "booking", "numeric", "days from the booking's day to the appointment's day", 1),
    Feature("lead_hours", "booking", "numeric", "hours from booking to start (0 if booked after the start time)", 1),
    Feature("same_day_booking", "booking", "boolean", "booked on the appointment's day", -1),
    Feature("booked_weekday", "booking", "numeric", "weekday of the booking (0 = Monday)"),
    Feature("booked_hour", "booking", "numeric", "hour of the day of the booking"),
    Feature("channel", "booking", "categorical", "booking channel (phone, web, reception, hub, …)"),
    Feature("is_reschedule", "booking", "boolean", "the booking replaces an earlier one"),
    Feature("reschedule_depth", "booking", "numeric", "how many bookings this one replaces in a chain"),
    Feature("confirmed", "booking", "boolean", "the booking is confirmed (as the booking record says)"),
    # appointment
    Feature("appt_weekday", "appointment", "numeric", "weekday of the appointment (0 = Monday)"),
    Feature("appt_hour", "appointment", "numeric", "start time of day in hours (9.5 = 09:30)"),
    Feature("slot_index", "appointment", "numeric", "slots of the resource before this one that day"),
    Feature("slot_position", "appointment", "numeric", "position of the slot in the resource's day, 0…1"),
    Feature("day_slots", "appointment", "numeric", "slots of the resource that day"),
    Feature("duration_min", "appointment", "numeric", "booked duration in minutes"),
    Feature("service_id", "appointment", "categorical", "service / visit type"),
    Feature("department_id", "appointment", "categorical", "department"),
    Feature("practitioner_id", "appointment", "categorical", "doctor"),
    Feature("branch_id", "appointment", "categorical", "branch"),
    # calendar
    Feature("is_day_off", "calendar", "boolean", "the appointment's day is a weekend day or a holiday"),
    Feature("is_public_holiday", "calendar", "boolean", "the appointment's day is a public holiday"),
    Feature("is_shortened_day", "calendar", "boolean", "shortened pre-holiday working day (RU, art. 95)"),
    Feature("is_working_weekend", "calendar", "boolean", "a weekend day made a working day by a transfer"),
    Feature("days_to_holiday", "calendar", "numeric", "days to the next public holiday (capped at 60)"),
    Feature("days_from_holiday", "calendar", "numeric", "days since the last public holiday (capped at 60)"),
    Feature("days_to_nearest_holiday", "calendar", "numeric", "days to the nearest public holiday, either side"),
    Feature("month", "calendar", "numeric", "month of the appointment"),
    Feature("season", "calendar", "categorical", "winter, spring, summer, autumn"),
    # patient
    Feature("age", "patient", "numeric", "age in years at the appointment (from the birth year)"),
    Feature("sex", "patient", "categorical", "F / M"),
    Feature("prior_appointments", "patient", "numeric", "past appointments the patient was expected at"),
    Feature("prior_attended", "patient", "numeric", "past appointments attended"),
    Feature("prior_noshows", "patient", "numeric", "past appointments missed"),
    Feature("prior_cancellations", "patient", "numeric", "the patient's cancellations before the as-of date"),
    Feature("prior_late_cancellations", "patient", "numeric",
            "the patient's cancellations made less than 24 hours before the start, before the as-of date"),
    Feature("prior_reschedules", "patient", "numeric", "the patient's reschedules before the as-of date"),
    Feature("prior_noshow_rate", "patient", "numeric",
            "smoothed past no-show rate: (no-shows + 2 × clinic rate) / (attended + no-shows + 2)"),
    Feature("days_since_last_visit", "patient", "numeric", "days from the last attended visit to this appointment"),
    Feature("days_since_last_noshow", "patient", "numeric", "days from the last no-show to this appointment"),
    Feature("same_day_appointments", "patient", "numeric", "the patient's other appointments that day (known then)"),
    # context
    Feature("practitioner_noshow_rate", "context", "numeric", "doctor's smoothed no-show rate, last 180 days"),
    Feature("department_noshow_rate", "context", "numeric", "department's smoothed no-show rate, last 180 days"),
    Feature("branch_noshow_rate", "context", "numeric", "branch's smoothed no-show rate, last 180 days"),
    Feature("service_noshow_rate", "context", "numeric", "service's smoothed no-show rate, last 180 days"),
    Feature("practitioner_volume", "context", "numeric", "doctor's appointments with an outcome, last 180 days"),
    Feature("resource_day_booked", "context", "numeric", "other bookings of the same resource that day (known then)"),
    Feature("resource_day_fill", "context", "numeric", "resource_day_booked / day_slots"),
    Feature("branch_day_booked", "context", "numeric", "other bookings at the branch that day (known then)"),
    Feature("reminder_sent", "context", "boolean", "a reminder was sent (as the booking record says)"),
)

FEATURE_NAMES: tuple[str, ...] = tuple(f.name for f in FEATURES)
BY_NAME: dict[str, Feature] = {f.name: f for f in FEATURES}
#: Columns of features.appointment_features that are not model inputs.
KEY_COLUMNS = ("feature_set_version", "source", "appointment_id", "as_of", "start_at")
#: jsonb columns expanded into ``flag_<key>`` / ``ext_<key>`` numeric features by the training data loader.
EXPANDED_JSON_COLUMNS = {"patient_flags": "flag_", "external": "ext_"}


def feature(name: str) -> Feature:
    """The definition of a feature, including expanded ``flag_*`` / ``ext_*`` columns."""
    if name in BY_NAME:
        return BY_NAME[name]
    if name.startswith("flag_"):
        return Feature(name, "patient", "numeric", f"patient flag {name[5:]!r} (0/1 or a count)")
    if name.startswith("ext_"):
        return Feature(name, "context", "numeric", f"external value {name[4:]!r}")
    raise KeyError(f"unknown feature {name!r}")


def catalogue() -> list[dict[str, object]]:
    """The feature set as JSON-able rows (stored in features.feature_set, shown in the model card)."""
    return [
        {"name": f.name, "family": f.family, "kind": f.kind, "monotone": f.monotone, "description": f.description}
        for f in FEATURES
    ]
