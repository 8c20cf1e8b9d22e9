"""Replay of held-out outcomes: consistent with the exact evaluator, same draws for every policy."""

from __future__ import annotations

import numpy as np
import pytest

from optimization.evaluator import Evaluator
from optimization.model import OverbookingConfig, ResourceDay
from optimization.replay import MAX_WAIT_BIN, Draws, replay


def test_replay_agrees_with_the_exact_evaluator_on_average():
    rng = np.random.default_rng(0)
    F = 16
    day = ResourceDay("t", F, np.arange(F), rng.uniform(0.5, 0.9, F), extra_show_prob=0.75)
    plan = np.zeros(F, dtype=int)
    plan[[3, 8, 15]] = 1
    exact = Evaluator(day, OverbookingConfig()).score(plan)
    seen, waiting, overtime, any_overtime = [], [], [], []
    for k in range(400):  # outcomes drawn from the predicted probabilities: replay ≈ expectation
        showed = rng.random(F) < day.show_prob
        out = replay(day, showed, plan, Draws.make(day, reps=10, max_extra=1, seed=k))
        seen.append(out.seen.mean())
        waiting.append(out.waiting.mean())
        overtime.append(out.overtime.mean())
        any_overtime.append((out.overtime > 0).mean())
    assert np.mean(seen) == pytest.approx(exact.shows, rel=0.02)
    assert np.mean(waiting) == pytest.approx(exact.waiting, rel=0.08)
    assert np.mean(overtime) == pytest.approx(exact.overtime, abs=0.03)
    assert np.mean(any_overtime) == pytest.approx(exact.p_overtime, abs=0.03)


def test_individual_waits_add_up_to_the_total_and_draws_are_shared():
    rng = np.random.default_rng(1)
    F = 12
    day = ResourceDay("t", F, np.repeat(np.arange(F), 1), rng.uniform(0.6, 0.95, F), extra_show_prob=0.8)
    showed = rng.random(F) < 0.8
    draws = Draws.make(day, reps=30, max_extra=2, seed=5)
    none = replay(day, showed, np.zeros(F, dtype=int), draws)
    plan = np.array([2, 0, 1, 0, 0, 1, 0, 0, 2, 0, 0, 1])
    over = replay(day, showed, plan, draws)
    for out in (none, over):
        values = np.arange(MAX_WAIT_BIN + 1)
        assert (out.wait_hist * values).sum() == out.waiting.sum()
        assert out.wait_hist.sum() == out.seen.sum()
        assert (out.idle == F - (out.seen - out.overtime)).all()
    # the same booked patients came under both plans; extras only add patients
    assert (none.seen == showed.sum()).all()
    assert (over.seen - over.extras_came == showed.sum()).all()
    # a booked patient waits at least as long when extras are added before them (same order keys)
    came = np.flatnonzero(showed)
    assert (over.booked_wait[came] >= none.booked_wait[came] - 1e-12).all()
    assert np.isnan(over.booked_wait[~showed]).all()
