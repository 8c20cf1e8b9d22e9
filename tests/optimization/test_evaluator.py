"""The exact evaluator against brute-force enumeration of every show/no-show outcome."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from optimization.evaluator import Evaluator, evaluate_plan, poisson_binomial
from optimization.model import CostWeights, OverbookingConfig, ResourceDay

WEIGHTS = CostWeights(waiting=0.5, idle=1.0, overtime=1.5, patient_value=0.3)


def brute_force(day: ResourceDay, plan: np.ndarray, w: CostWeights) -> dict[str, float]:
    """Enumerate all 2^n outcomes and simulate the queue (first come, first served)."""
    slots = list(day.slot_of) + [j for j, y in enumerate(plan) for _ in range(y)]
    probs = list(day.show_prob) + [day.extra_show_prob] * int(plan.sum())
    F = day.n_slots
    out = dict.fromkeys(("shows", "waiting", "idle", "overtime", "p_overtime", "cost"), 0.0)
    patient_wait = np.zeros(day.n_booked)
    for outcome in itertools.product((0, 1), repeat=len(slots)):
        pr = float(np.prod([p if o else 1 - p for p, o in zip(probs, outcome, strict=True)]))
        arrivals = np.zeros(F, dtype=int)
        for s, o in zip(slots, outcome, strict=True):
            arrivals[s] += o
        backlog, waiting, served, before = 0, 0.0, 0, []
        for j in range(F):
            before.append(backlog)
            backlog += arrivals[j]
            if backlog:
                backlog -= 1
                served += 1
            waiting += backlog
        overtime = backlog
        waiting += overtime * (overtime - 1) / 2  # the queue drains after closing
        shows = arrivals.sum()
        idle = F - served
        values = dict(shows=shows, waiting=waiting, idle=idle, overtime=overtime, p_overtime=float(overtime > 0),
                      cost=w.waiting * waiting + w.idle * idle + w.overtime * overtime - w.patient_value * shows)
        for k, v in values.items():
            out[k] += pr * v
        for i in range(day.n_booked):
            if outcome[i]:  # came: waits for the queue plus half of the others of the slot
                j = day.slot_of[i]
                patient_wait[i] += pr * (before[j] + 0.5 * (arrivals[j] - 1)) / day.show_prob[i]
    out["patient_wait"] = patient_wait
    return out


@pytest.mark.parametrize("seed", range(12))
def test_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    F = int(rng.integers(2, 7))
    n = int(rng.integers(1, F + 2))
    day = ResourceDay("t", F, rng.integers(0, F, n), rng.uniform(0.3, 1.0, n), extra_show_prob=0.8)
    config = OverbookingConfig(weights=WEIGHTS, max_per_slot=2, overbook_free_slots=True)
    plan = rng.integers(0, 3, F)
    while plan.sum() + n > 11:
        plan[rng.integers(0, F)] = 0
    ev = Evaluator(day, config)
    got = ev.evaluate(plan)
    want = brute_force(day, plan, WEIGHTS)
    row = got.row(0)
    for name in ("shows", "waiting", "idle", "overtime", "p_overtime", "cost"):
        assert getattr(row, name) == pytest.approx(want[name], abs=1e-9), name
    waits = ev.patient_waits(got.plans, got.backlog)[0]
    assert waits == pytest.approx(want["patient_wait"], abs=1e-9)


def test_incremental_evaluation_equals_full():
    rng = np.random.default_rng(3)
    F = 30
    day = ResourceDay("t", F, np.arange(F), rng.uniform(0.5, 0.95, F), extra_show_prob=0.8)
    ev = Evaluator(day, OverbookingConfig(max_per_slot=2))
    ref = ev.trajectory((rng.random(F) < 0.2).astype(int))
    plans = rng.integers(0, 3, (200, F))
    plans[:20] = ref.plan  # identical to the reference
    plans[20:40] = ref.plan
    plans[20:40, 25:] = 1  # differing only late
    fast, full = ev.evaluate(plans, ref=ref), ev.evaluate(plans)
    for name in ("cost", "waiting", "overtime", "p_overtime", "backlog"):
        np.testing.assert_allclose(getattr(fast, name), getattr(full, name), atol=1e-12)


def test_plain_schedule_has_no_wait_and_no_overtime():
    day = ResourceDay("t", 10, np.arange(10), np.full(10, 0.8), extra_show_prob=0.8)
    score = evaluate_plan(day, np.zeros(10, dtype=int), OverbookingConfig())
    assert score.waiting == pytest.approx(0.0)
    assert score.overtime == pytest.approx(0.0)
    assert score.p_overtime == pytest.approx(0.0)
    assert score.shows == pytest.approx(8.0)
    assert score.idle == pytest.approx(2.0)
    assert score.utilisation == pytest.approx(0.8)


def test_an_extra_in_the_last_slot_risks_overtime():
    day = ResourceDay("t", 4, np.arange(4), np.full(4, 0.9), extra_show_prob=0.5)
    score = evaluate_plan(day, np.array([0, 0, 0, 1]), OverbookingConfig(overbook_free_slots=True))
    assert score.p_overtime == pytest.approx(0.9 * 0.5)
    assert score.overtime == pytest.approx(0.45)


def test_slot_table_sums_to_day_figures():
    rng = np.random.default_rng(5)
    day = ResourceDay("t", 12, np.arange(12), rng.uniform(0.5, 0.9, 12), extra_show_prob=0.75)
    ev = Evaluator(day, OverbookingConfig())
    plan = np.zeros(12, dtype=int)
    plan[[2, 7]] = 1
    table = ev.slot_table(plan)
    score = ev.score(plan)
    assert table["expected_shows"].sum() == pytest.approx(score.shows)
    assert table["expected_queue_after"][-1] == pytest.approx(score.overtime)
    assert (table["expected_wait"] >= 0).all()


def test_poisson_binomial_is_a_distribution():
    pmf = poisson_binomial(np.array([0.1, 0.5, 0.9]))
    assert pmf.sum() == pytest.approx(1.0)
    assert pmf @ np.arange(4) == pytest.approx(1.5)


def test_bad_inputs_are_refused():
    from clinicflow.errors import ClinicFlowError, ConfigError

    with pytest.raises(ClinicFlowError, match="outside"):
        ResourceDay("t", 3, [5], [0.5], extra_show_prob=0.8)
    with pytest.raises(ClinicFlowError, match=r"\[0, 1\]"):
        ResourceDay("t", 3, [0], [1.5], extra_show_prob=0.8)
    with pytest.raises(ConfigError, match="waiting"):
        CostWeights(waiting=-1)
    with pytest.raises(ConfigError, match="expected waiting:idle:overtime"):
        CostWeights.parse("1:2")
    assert CostWeights.parse("0.4:0.2:0.4").overtime == 0.4
