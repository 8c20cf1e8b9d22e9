"""The overbooking problem of one resource-day, its cost weights and its constraints.

The slot model (docs/overbooking.md in the shared notes, docs/optimization.md here): a resource-day
has ``F`` slots of equal length; one patient is seen per slot. Slot ``j`` holds the booked patients
(each comes with its own predicted show probability) and ``y_j`` extra bookings chosen by the
optimiser (each comes with the same probability ``q``, the model's average show probability:
who the extra patient will be is not known when the plan is made). Whoever cannot be seen in their
slot waits; what is left at the end of the day is overtime.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from clinicflow.errors import ClinicFlowError, ConfigError


@dataclass(frozen=True)
class CostWeights:
    """Cost of a resource-day: ``waiting·W + idle·I + overtime·O − patient_value·S``.

    W is the patients' total waiting (in slots), I the idle slots, O the overtime (in slots) and S the
    patients seen. Only ``idle + patient_value`` and ``overtime + idle`` change a decision, since
    idle time follows from the number of shows (I = F − S + O).
    """

    waiting: float = 0.5
    idle: float = 1.0
    overtime: float = 1.5
    patient_value: float = 0.0

    def __post_init__(self) -> None:
        for name in ("waiting", "idle", "overtime", "patient_value"):
            value = getattr(self, name)
            if not np.isfinite(value) or value < 0:
                raise ConfigError(f"cost weight {name} must be a finite number >= 0 (got {value})")
        if self.idle + self.patient_value <= 0:
            raise ConfigError("cost weights: idle + patient_value must be > 0, else seeing a patient is worth nothing")

    @property
    def label(self) -> str:
        return f"W{self.waiting:g}/I{self.idle:g}/O{self.overtime:g}/R{self.patient_value:g}"

    @classmethod
    def parse(cls, text: str) -> CostWeights:
        """``"0.5:1:1.5"`` or ``"0.5:1:1.5:0.2"`` (waiting:idle:overtime[:patient value])."""
        parts = [p for p in text.replace(",", ":").split(":") if p.strip()]
        if len(parts) not in (3, 4):
            raise ConfigError(
                f"cost weights {text!r}: expected waiting:idle:overtime[:patient_value], e.g. 0.5:1:1.5"
            )
        try:
            values = [float(p) for p in parts]
        except ValueError:
            raise ConfigError(f"cost weights {text!r}: not numbers") from None
        return cls(*values)


@dataclass(frozen=True)
class OverbookingConfig:
    """Constraints and weights of the optimiser (all from settings; see ``from_settings``)."""

    weights: CostWeights = field(default_factory=CostWeights)
    #: At most this many extra bookings in one slot.
    max_per_slot: int = 1
    #: At most this many extra bookings in one resource-day.
    max_per_day: int = 6
    #: Expected overtime (slots) must stay at or below this (None: no limit). If the schedule without
    #: overbooking already exceeds it, the limit becomes "no worse than without overbooking".
    max_expected_overtime: float | None = 1.0
    #: Probability of any overtime must stay at or below this (None: no limit); relaxed the same way.
    max_overtime_probability: float | None = 0.35
    #: Whether extras may go into slots nobody booked (normally those are filled by ordinary booking).
    overbook_free_slots: bool = False
    #: Cost units per slot of the worst-off patient group's mean expected wait (0: no fairness term).
    fairness_weight: float = 0.0
    #: Patient grouping of the fairness term (a key of ``ResourceDay.groups``).
    fairness_group: str = "age_band"
    #: Wall-clock budget of the OR-Tools search per resource-day, seconds.
    time_limit_s: float = 1.0
    #: Largest number of slots the CP-SAT neighbourhood model may change at once.
    trust_region: int = 4

    def __post_init__(self) -> None:
        if self.max_per_slot < 0 or self.max_per_day < 0:
            raise ConfigError("max extras per slot and per day must be >= 0")
        if self.max_per_slot > 4:
            raise ConfigError(f"max extras per slot {self.max_per_slot} is above 4: more is not overbooking")
        if self.max_expected_overtime is not None and self.max_expected_overtime < 0:
            raise ConfigError("max expected overtime must be >= 0 slots")
        if self.max_overtime_probability is not None and not 0 <= self.max_overtime_probability <= 1:
            raise ConfigError("max overtime probability must be between 0 and 1")
        if self.fairness_weight < 0:
            raise ConfigError("fairness weight must be >= 0")
        if self.time_limit_s <= 0:
            raise ConfigError("optimiser time limit must be > 0 seconds")
        if self.trust_region < 1:
            raise ConfigError("trust region must be >= 1 slot")

    def with_weights(self, weights: CostWeights) -> OverbookingConfig:
        return replace(self, weights=weights)

    @classmethod
    def from_settings(cls, settings: Any | None = None, **overrides: Any) -> OverbookingConfig:
        """The configuration in ``CLINICFLOW_OVERBOOK_*`` / ``CLINICFLOW_COST_*`` settings."""
        if settings is None:
            from clinicflow.settings import get_settings

            settings = get_settings()
        values: dict[str, Any] = {
            "weights": CostWeights(
                waiting=settings.cost_waiting, idle=settings.cost_idle, overtime=settings.cost_overtime,
                patient_value=settings.value_patient_seen,
            ),
            "max_per_slot": settings.overbook_max_per_slot,
            "max_per_day": settings.overbook_max_per_day,
            "max_expected_overtime": settings.overbook_max_expected_overtime,
            "max_overtime_probability": settings.overbook_max_overtime_probability,
            "overbook_free_slots": settings.overbook_free_slots,
            "fairness_weight": settings.overbook_fairness_weight,
            "fairness_group": settings.overbook_fairness_group,
            "time_limit_s": settings.optimizer_time_limit_s,
        }
        values.update(overrides)
        return cls(**values)


@dataclass
class ResourceDay:
    """One resource-day: the slot grid and the booked patients with their show probabilities."""

    key: str
    n_slots: int
    #: Slot (0-based) of each booked patient.
    slot_of: np.ndarray
    #: Predicted probability that each booked patient comes (1 − predicted no-show probability).
    show_prob: np.ndarray
    #: Show probability of an extra booking (the model's average show probability).
    extra_show_prob: float
    #: Slots that must not be overbooked (slot, service or resource marked no_overbook).
    blocked: np.ndarray | None = None
    #: Patient groups for fairness: name → one label per booked patient (e.g. "sex" → ["F", "M", …]).
    groups: dict[str, np.ndarray] = field(default_factory=dict)
    #: Whatever identifies the booked patients' appointments (for reporting); not used by the maths.
    appointment_ids: np.ndarray | None = None
    #: Free-form attributes (source, resource, day, branch, …) carried to reports.
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.slot_of = np.asarray(self.slot_of, dtype=np.int64)
        self.show_prob = np.asarray(self.show_prob, dtype=np.float64)
        if self.n_slots < 1:
            raise ClinicFlowError(f"resource-day {self.key}: it has no slots")
        if self.slot_of.shape != self.show_prob.shape:
            raise ClinicFlowError(f"resource-day {self.key}: one slot and one probability per booked patient")
        if self.slot_of.size and (self.slot_of.min() < 0 or self.slot_of.max() >= self.n_slots):
            raise ClinicFlowError(f"resource-day {self.key}: a booked patient lies outside the {self.n_slots} slots")
        if self.show_prob.size and (not np.all(np.isfinite(self.show_prob))
                                    or self.show_prob.min() < 0 or self.show_prob.max() > 1):
            raise ClinicFlowError(f"resource-day {self.key}: show probabilities must lie in [0, 1]")
        if not 0 < self.extra_show_prob <= 1:
            raise ClinicFlowError(f"resource-day {self.key}: extra show probability must lie in (0, 1]")
        if self.blocked is None:
            self.blocked = np.zeros(self.n_slots, dtype=bool)
        self.blocked = np.asarray(self.blocked, dtype=bool)
        if self.blocked.shape != (self.n_slots,):
            raise ClinicFlowError(f"resource-day {self.key}: 'blocked' needs one flag per slot")
        for name, labels in list(self.groups.items()):
            labels = np.asarray(labels, dtype=object)
            if labels.shape != self.slot_of.shape:
                raise ClinicFlowError(f"resource-day {self.key}: group {name!r} needs one label per booked patient")
            self.groups[name] = labels

    @property
    def n_booked(self) -> int:
        return int(self.slot_of.size)

    @property
    def noshow_prob(self) -> np.ndarray:
        return 1.0 - self.show_prob

    def booked_per_slot(self) -> np.ndarray:
        return np.bincount(self.slot_of, minlength=self.n_slots)

    def caps(self, config: OverbookingConfig) -> np.ndarray:
        """Most extras each slot may take under ``config``."""
        caps = np.full(self.n_slots, config.max_per_slot, dtype=np.int64)
        caps[self.blocked] = 0
        if not config.overbook_free_slots:
            caps[self.booked_per_slot() == 0] = 0
        return caps
