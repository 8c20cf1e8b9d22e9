"""The generator's no-show mechanism: who does not come, and how strongly each factor matters.

The true probability that a kept booking is a no-show is a logistic model (log-odds = sum of the
effects below + a per-patient random effect). Effects are log odds ratios, sized after what the
literature reports; docs/medialog-generator.md gives the references and what each one says. The
intercept is solved so that the share of no-shows among kept, past bookings equals the configured
rate (default 14 %).

Nothing here reads a database: :func:`noshow_logit` takes numpy arrays and is unit-tested.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, timedelta

import numpy as np


@dataclass(frozen=True)
class NoShowEffects:
    """Log odds ratios of the generator's no-show mechanism (0 = reference level)."""

    #: Lead time, the strongest observable factor. Same-day bookings (< 1 day) against next-day:
    same_day: float = -1.1
    #: per unit of ln(lead days) for bookings made one day or more ahead (30 days: OR ≈ 2.8 vs 1 day).
    per_log_lead_day: float = 0.30
    #: Standard deviation of the patient's own propensity (the source of "history predicts").
    patient_sd: float = 0.85
    #: A patient's first booking at the clinic.
    new_patient: float = 0.25
    #: Age bands (years) at the appointment; 45–64 is the reference.
    age_0_17: float = 0.05
    age_18_29: float = 0.40
    age_30_44: float = 0.20
    age_65_plus: float = -0.20
    male: float = 0.08
    #: Monday … Sunday.
    weekday: tuple[float, ...] = (0.15, 0.05, 0.0, 0.0, 0.10, 0.20, 0.20)
    #: Start hour bands: before 9, 9–12, 12–15, 15–18, 18 and later.
    hour: tuple[float, ...] = (0.15, 0.0, 0.05, 0.10, 0.25)
    #: January … December (winter illness, May holidays, the summer dacha season).
    month: tuple[float, ...] = (0.10, 0.10, 0.05, 0.0, 0.15, 0.15, 0.20, 0.15, 0.0, 0.0, 0.05, 0.10)
    #: A working day within two days of a Russian public holiday.
    near_holiday: float = 0.35
    #: The first working days after the New Year holidays (up to 12 January).
    after_new_year: float = 0.20
    #: A reminder SMS was delivered the day before.
    reminder: float = -0.45
    #: The booking was still unconfirmed (NOT_ACCEPTED = 1) at the appointment.
    unconfirmed: float = 0.35
    #: The booking replaced an earlier one (a reschedule).
    rescheduled: float = -0.10
    #: Booking channels.
    channel: dict[str, float] = field(default_factory=lambda: {
        "web": 0.15, "hub": 0.20, "phone": 0.0, "reception": -0.05, "doctor": 0.0,
    })


EFFECTS = NoShowEffects()


def age_band_effect(age: np.ndarray, effects: NoShowEffects = EFFECTS) -> np.ndarray:
    return np.select(
        [age < 18, age < 30, age < 45, age < 65],
        [effects.age_0_17, effects.age_18_29, effects.age_30_44, 0.0],
        default=effects.age_65_plus,
    )


def hour_band(minute_of_day: np.ndarray) -> np.ndarray:
    hour = minute_of_day // 60
    return np.select([hour < 9, hour < 12, hour < 15, hour < 18], [0, 1, 2, 3], default=4)


def lead_effect(lead_days: np.ndarray, effects: NoShowEffects = EFFECTS) -> np.ndarray:
    lead = np.asarray(lead_days, dtype="float64")
    return np.where(lead < 1.0, effects.same_day, effects.per_log_lead_day * np.log(np.maximum(lead, 1.0)))


@dataclass(frozen=True)
class HolidayCalendar:
    """Russian public holidays (the ``holidays`` package, RU) as day numbers since 1970-01-01."""

    holidays: frozenset[int]
    near: frozenset[int]
    after_new_year: frozenset[int]

    @classmethod
    def for_years(cls, first_year: int, last_year: int) -> HolidayCalendar:
        import holidays as holidays_lib

        ru = holidays_lib.country_holidays("RU", years=range(first_year - 1, last_year + 2))
        epoch = date(1970, 1, 1)
        days = {(d - epoch).days for d in ru}
        near: set[int] = set()
        for d in days:
            for delta in (-2, -1, 1, 2):
                near.add(d + delta)
        after: set[int] = set()
        for year in range(first_year - 1, last_year + 2):
            for dom in range(9, 13):
                after.add((date(year, 1, dom) - epoch).days)
        return cls(frozenset(days), frozenset(near - days), frozenset(after - days))

    def is_holiday(self, day_no: np.ndarray) -> np.ndarray:
        return np.isin(day_no, np.fromiter(self.holidays, dtype=np.int64))

    def effect(self, day_no: np.ndarray, effects: NoShowEffects = EFFECTS) -> np.ndarray:
        near = np.isin(day_no, np.fromiter(self.near, dtype=np.int64))
        after = np.isin(day_no, np.fromiter(self.after_new_year, dtype=np.int64))
        return effects.near_holiday * near + effects.after_new_year * after

    def dates(self) -> list[date]:
        epoch = date(1970, 1, 1)
        return sorted(epoch + timedelta(days=int(d)) for d in self.holidays)


def noshow_logit(
    *,
    lead_days: np.ndarray,
    patient_effect: np.ndarray,
    new_patient: np.ndarray,
    age: np.ndarray,
    male: np.ndarray,
    weekday: np.ndarray,
    minute_of_day: np.ndarray,
    month: np.ndarray,
    holiday_effect: np.ndarray,
    reminder: np.ndarray,
    unconfirmed: np.ndarray,
    rescheduled: np.ndarray,
    channel_effect: np.ndarray,
    specialty_effect: np.ndarray,
    effects: NoShowEffects = EFFECTS,
) -> np.ndarray:
    """Log-odds of a no-show without the intercept. ``weekday`` 0 = Monday, ``month`` 1…12."""
    return (
        lead_effect(lead_days, effects)
        + patient_effect
        + effects.new_patient * new_patient
        + age_band_effect(age, effects)
        + effects.male * male
        + np.asarray(effects.weekday)[weekday]
        + np.asarray(effects.hour)[hour_band(minute_of_day)]
        + np.asarray(effects.month)[month - 1]
        + holiday_effect
        + effects.reminder * reminder
        + effects.unconfirmed * unconfirmed
        + effects.rescheduled * rescheduled
        + channel_effect
        + specialty_effect
    )


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def solve_intercept(logit: np.ndarray, target_rate: float, weights: np.ndarray | None = None) -> float:
    """The intercept b with mean(sigmoid(b + logit)) = target_rate (bisection; monotone in b)."""
    if not 0.0 < target_rate < 1.0:
        raise ValueError(f"target rate must be in (0, 1), got {target_rate}")
    if len(logit) == 0:
        return float(np.log(target_rate / (1 - target_rate)))
    low, high = -20.0, 20.0
    for _ in range(60):
        mid = (low + high) / 2
        rate = np.average(sigmoid(mid + logit), weights=weights)
        if rate < target_rate:
            low = mid
        else:
            high = mid
    return (low + high) / 2


def auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve (NaN when only one class is present)."""
    scores = np.asarray(scores, dtype="float64")
    labels = np.asarray(labels, dtype=bool)
    positives, negatives = labels.sum(), (~labels).sum()
    if positives == 0 or negatives == 0:
        return float("nan")
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(labels, scores))
