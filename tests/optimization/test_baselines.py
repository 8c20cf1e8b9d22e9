"""The baseline policies: each does what the shared notes say and keeps the hard rules."""

from __future__ import annotations

import numpy as np
import pytest

from optimization.baselines import (
    baseline_plans,
    plan_flat,
    plan_greedy,
    plan_threshold,
    plan_topk,
    tune_threshold,
)
from optimization.evaluator import Evaluator
from optimization.model import OverbookingConfig, ResourceDay
from optimization.synthetic import generate_days


def make_day(risk, blocked=()):
    risk = np.asarray(risk, dtype=float)
    F = risk.size
    mask = np.zeros(F, dtype=bool)
    mask[list(blocked)] = True
    return ResourceDay("t", F, np.arange(F), 1.0 - risk, extra_show_prob=0.8, blocked=mask)


def test_flat_spreads_extras_evenly_and_skips_blocked_slots():
    day = make_day([0.2] * 20, blocked=[15])
    caps = day.caps(OverbookingConfig())
    plan = plan_flat(day, caps, noshow_rate=0.2, max_per_day=10)
    assert plan.sum() == 4  # round(20 × 0.2)
    assert plan[15] == 0
    assert list(np.flatnonzero(plan)) == [2, 7, 12, 17] or plan[16] == 1 or plan[14] == 1
    assert plan_flat(day, caps, noshow_rate=0.2, max_per_day=2).sum() == 2


def test_threshold_books_over_patients_above_tau():
    day = make_day([0.1, 0.5, 0.3, 0.7, 0.05])
    caps = day.caps(OverbookingConfig())
    assert list(plan_threshold(day, caps, tau=0.29, max_per_day=10)) == [0, 1, 1, 1, 0]
    assert list(plan_threshold(day, caps, tau=0.29, max_per_day=1)) == [0, 0, 0, 1, 0]  # riskiest first


def test_topk_uses_the_sum_of_risks():
    day = make_day([0.1, 0.5, 0.3, 0.7, 0.05, 0.45])  # Σ = 2.1 → k = 2
    plan = plan_topk(day, day.caps(OverbookingConfig()), max_per_day=10)
    assert list(plan) == [0, 1, 0, 1, 0, 0]


def test_free_slots_take_no_extras_unless_configured():
    day = ResourceDay("t", 4, np.array([0, 1, 3]), np.full(3, 0.5), extra_show_prob=0.8)
    assert list(day.caps(OverbookingConfig())) == [1, 1, 0, 1]
    assert list(day.caps(OverbookingConfig(overbook_free_slots=True, max_per_slot=2))) == [2, 2, 2, 2]


def test_greedy_improves_each_step_and_keeps_limits():
    gen = generate_days(15, seed=11)
    config = OverbookingConfig(max_expected_overtime=0.5, max_overtime_probability=0.3)
    for g in gen:
        ev = Evaluator(g.day, config)
        plan = plan_greedy(ev)
        score, none = ev.score(plan), ev.score(np.zeros(g.day.n_slots, dtype=int))
        assert score.objective <= none.objective + 1e-12
        limits = ev.limits(none)
        assert score.overtime <= limits[0] and score.p_overtime <= limits[1]
        assert plan.sum() <= config.max_per_day and (plan <= ev.caps).all()
        if plan.sum():  # removing any one extra makes it worse (greedy stopped at a real gain)
            for j in np.flatnonzero(plan):
                fewer = plan.copy()
                fewer[j] -= 1
                assert ev.score(fewer).objective >= score.objective - 1e-12


def test_tuned_threshold_is_the_best_on_validation_days():
    days = [g.day for g in generate_days(20, seed=12)]
    config = OverbookingConfig()
    grid = [0.2, 0.3, 0.4, 0.5, 0.6]
    tau = tune_threshold(days, config, grid=grid)
    evs = [Evaluator(d, config) for d in days]

    def total(t):
        return sum(ev.score(plan_threshold(d, ev.caps, t, config.max_per_day)).objective
                   for d, ev in zip(days, evs, strict=True))

    assert total(tau) == pytest.approx(min(total(t) for t in grid))


def test_baseline_plans_cover_every_policy():
    day = generate_days(1, seed=13)[0].day
    plans = baseline_plans(Evaluator(day, OverbookingConfig()), noshow_rate=0.2, tau=0.4)
    assert set(plans) == {"none", "flat", "threshold", "topk", "greedy"}
    assert plans["none"].sum() == 0
