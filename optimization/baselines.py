"""The baseline overbooking policies every optimiser is compared with (shared notes, "Baselines").

1. ``none``      no overbooking;
2. ``flat``      round(F × average no-show rate) extras spread evenly over the day;
3. ``threshold`` one extra in the slot of each booked patient whose predicted no-show exceeds τ
   (τ tuned on validation resource-days with :func:`tune_threshold`);
4. ``topk``      k = round(Σ predicted no-show probabilities) extras, in the slots of the k patients
   most likely not to come;
5. ``greedy``    add the extra with the best exact marginal gain while it lowers the cost.

All of them respect the same hard rules as the optimiser: no extras in slots (or services, or
resources) marked ``no_overbook``, at most ``max_per_slot`` per slot and ``max_per_day`` per day, and
(unless ``overbook_free_slots``) none in slots nobody booked. Only ``greedy`` looks at the overtime
limits; the others are the simple rules clinics use and may break them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from optimization.evaluator import Evaluator
from optimization.model import OverbookingConfig, ResourceDay

BASELINES = ("none", "flat", "threshold", "topk", "greedy")


def plan_none(day: ResourceDay, caps: np.ndarray) -> np.ndarray:
    return np.zeros(day.n_slots, dtype=np.int64)


def _place(order: Sequence[int], caps: np.ndarray, k: int, n_slots: int) -> np.ndarray:
    """Put up to ``k`` extras into the slots of ``order`` (repeats allowed), within ``caps``."""
    plan = np.zeros(n_slots, dtype=np.int64)
    placed = 0
    for j in order:
        if placed >= k:
            break
        if plan[j] < caps[j]:
            plan[j] += 1
            placed += 1
    return plan


def plan_flat(day: ResourceDay, caps: np.ndarray, noshow_rate: float, max_per_day: int) -> np.ndarray:
    """round(F × rate) extras at evenly spaced slots (the nearest allowed slot when one is blocked)."""
    F = day.n_slots
    k = min(round(F * noshow_rate), max_per_day, int(caps.sum()))
    if k <= 0:
        return np.zeros(F, dtype=np.int64)
    plan = np.zeros(F, dtype=np.int64)
    for i in range(k):
        target = (i + 0.5) * F / k
        for j in sorted(range(F), key=lambda s: (abs(s + 0.5 - target), s)):
            if plan[j] < caps[j]:
                plan[j] += 1
                break
    return plan


def plan_threshold(day: ResourceDay, caps: np.ndarray, tau: float, max_per_day: int) -> np.ndarray:
    """One extra in the slot of each booked patient whose predicted no-show exceeds ``tau``."""
    risk = day.noshow_prob
    chosen = np.flatnonzero(risk > tau)
    order = day.slot_of[chosen[np.argsort(-risk[chosen], kind="stable")]]
    return _place(order, caps, max_per_day, day.n_slots)


def plan_topk(day: ResourceDay, caps: np.ndarray, max_per_day: int) -> np.ndarray:
    """k = round(Σ predicted no-show) extras, in the slots of the k riskiest booked patients."""
    risk = day.noshow_prob
    k = min(round(risk.sum()), max_per_day)
    order = day.slot_of[np.argsort(-risk, kind="stable")]
    return _place(order, caps, k, day.n_slots)


def plan_greedy(ev: Evaluator, limits: tuple[float, float] | None = None) -> np.ndarray:
    """Add, one at a time, the extra with the best exact gain while the objective improves.

    Each step scores every slot that can still take an extra in one batch (incrementally from the
    current plan's trajectory) and keeps only plans within the overtime limits.
    """
    F = ev.F
    limits = limits or ev.limits()
    plan = np.zeros(F, dtype=np.int64)
    current = ev.evaluate(plan).objective[0]
    max_day = ev.config.max_per_day
    while plan.sum() < max_day:
        open_slots = np.flatnonzero(plan < ev.caps)
        if not open_slots.size:
            break
        candidates = np.repeat(plan[None, :], open_slots.size, axis=0)
        candidates[np.arange(open_slots.size), open_slots] += 1
        metrics = ev.evaluate(candidates, ref=ev.trajectory(plan))
        ok = ev.feasible(metrics, limits)
        if not ok.any():
            break
        objective = np.where(ok, metrics.objective, np.inf)
        best = int(np.argmin(objective))
        if objective[best] >= current - 1e-12:
            break
        plan = candidates[best]
        current = objective[best]
    return plan


def tune_threshold(days: Sequence[ResourceDay], config: OverbookingConfig,
                   grid: Sequence[float] | None = None,
                   evaluators: Sequence[Evaluator] | None = None) -> float:
    """τ with the lowest total exact cost on validation resource-days (ties: the higher τ)."""
    grid = list(grid) if grid is not None else [round(x, 3) for x in np.arange(0.05, 0.951, 0.025)]
    if not days:
        return 0.5
    evaluators = list(evaluators) if evaluators is not None else [Evaluator(d, config) for d in days]
    totals = np.zeros(len(grid))
    for day, ev in zip(days, evaluators, strict=True):
        plans = np.stack([plan_threshold(day, ev.caps, tau, config.max_per_day) for tau in grid])
        totals += ev.evaluate(plans).objective
    best = np.flatnonzero(totals <= totals.min() + 1e-9)
    return float(grid[int(best[-1])])


def baseline_plans(ev: Evaluator, noshow_rate: float, tau: float) -> dict[str, np.ndarray]:
    """Every baseline's plan for one resource-day."""
    day, cfg = ev.day, ev.config
    makers: dict[str, Callable[[], np.ndarray]] = {
        "none": lambda: plan_none(day, ev.caps),
        "flat": lambda: plan_flat(day, ev.caps, noshow_rate, cfg.max_per_day),
        "threshold": lambda: plan_threshold(day, ev.caps, tau, cfg.max_per_day),
        "topk": lambda: plan_topk(day, ev.caps, cfg.max_per_day),
        "greedy": lambda: plan_greedy(ev),
    }
    return {name: make() for name, make in makers.items()}
