"""The literature's sampled-scenario formulation in CP-SAT, for comparison (benchmarks, evaluation).

Samorani & LaGanga (2015) and later work write the schedule-day as a stochastic program over sampled
scenarios: in scenario ``s`` every booked patient comes or not (drawn from their predicted show
probability) and every potential extra comes or not (drawn from ``q``). With booleans ``x_je`` (the
e-th extra of slot j is booked, ``x_je ≥ x_j,e+1``) the arrivals of a scenario are linear in the
decision, and so is the backlog with the usual linearisation

    b_sj ≥ b_s,j-1 + A_sj − 1,  b_sj ≥ 0     (j = 1 … F, then draining slots with A = 0)

which is exact at the optimum because waiting and overtime are penalised. The objective is the
scenario average of ``c_W·W + (c_I + c_O)·O − (c_I + r)·S``; the expected-overtime limit is the
scenario average of ``b_sF``; the overtime-probability limit counts scenarios with ``b_sF ≥ 1``
through indicator booleans. The fairness term is not part of this formulation.

The model is solved to its time limit (warm-started from the greedy plan with ``AddHint``), then its
plan is re-scored with the exact evaluator: sampling error means the scenario optimum is usually a
little worse than the exact search, and the solve takes seconds rather than milliseconds.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
from ortools.sat.python import cp_model

from optimization.baselines import plan_greedy
from optimization.evaluator import Evaluator, PlanScore
from optimization.model import OverbookingConfig, ResourceDay

_WEIGHT_SCALE = 1000


@dataclass
class ScenarioResult:
    key: str
    plan: np.ndarray
    score: PlanScore           # exact re-score of the scenario model's plan (the limits may be broken)
    feasible: bool             # within the exact caps and overtime limits
    status: str                # CP-SAT status: OPTIMAL, FEASIBLE, …
    scenarios: int
    seconds: float
    sampled_objective: float   # the model's own (sampled) estimate of the cost


def solve_scenarios(day: ResourceDay, config: OverbookingConfig, scenarios: int = 100, time_limit_s: float = 10.0,
                    seed: int = 0, workers: int = 1, evaluator: Evaluator | None = None) -> ScenarioResult:
    """Solve the sampled-scenario model of one resource-day; re-score its plan exactly."""
    started = time.perf_counter()
    ev = evaluator or Evaluator(day, config)
    w = config.weights
    F, S = day.n_slots, int(scenarios)
    caps = ev.caps
    rng = np.random.default_rng(seed)
    shows = rng.random((S, day.n_booked)) < day.show_prob[None, :]
    booked = np.zeros((S, F), dtype=np.int64)
    for s in range(S):
        np.add.at(booked[s], day.slot_of, shows[s].astype(np.int64))
    kmax = int(caps.max()) if caps.size else 0
    extra = rng.random((S, F, max(kmax, 1))) < day.extra_show_prob

    model = cp_model.CpModel()
    x = {(j, e): model.new_bool_var(f"x{j}_{e}") for j in range(F) for e in range(int(caps[j]))}
    for j in range(F):
        for e in range(int(caps[j]) - 1):
            model.add_implication(x[j, e + 1], x[j, e])
    model.add(sum(x.values()) <= config.max_per_day)

    c_wait = round(w.waiting * _WEIGHT_SCALE)
    c_over = round((w.idle + w.overtime) * _WEIGHT_SCALE)
    c_show = round((w.idle + w.patient_value) * _WEIGHT_SCALE)
    objective = []
    overtimes = []
    indicators = []
    for s in range(S):
        prev = None  # backlog before slot 0 is 0
        ub = 0
        waits = []
        for j in range(F):
            arrivals_ub = int(booked[s, j]) + int(extra[s, j, : int(caps[j])].sum())
            ub = max(0, ub + arrivals_ub - 1)
            arrivals = int(booked[s, j]) + sum(x[j, e] for e in range(int(caps[j])) if extra[s, j, e])
            b = model.new_int_var(0, ub, f"b{s}_{j}")
            model.add(b >= (prev if prev is not None else 0) + arrivals - 1)
            waits.append(b)
            prev = b
            objective.append(-c_show * arrivals)
        overtime = prev
        overtimes.append(overtime)
        for h in range(ub):  # the queue drains one per slot after closing
            b = model.new_int_var(0, max(0, ub - h - 1), f"d{s}_{h}")
            model.add(b >= prev - 1)
            waits.append(b)
            prev = b
        objective.append(c_wait * sum(waits))
        objective.append(c_over * overtime)
        if config.max_overtime_probability is not None and ub > 0:
            o = model.new_bool_var(f"o{s}")
            model.add(overtime <= ub * o)
            indicators.append(o)
    eot, pot = ev.limits()
    if np.isfinite(eot):
        model.add(sum(overtimes) <= int(np.floor(eot * S)))
    if np.isfinite(pot) and indicators:
        model.add(sum(indicators) <= int(np.floor(pot * S)))
    model.minimize(sum(objective))
    greedy = plan_greedy(ev)
    for (j, e), var in x.items():
        model.add_hint(var, e < greedy[j])
    solver = cp_model.CpSolver()
    solver.parameters.max_time_in_seconds = time_limit_s
    solver.parameters.num_workers = workers
    solver.parameters.random_seed = seed
    status = solver.solve(model)
    if status in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        plan = np.array([sum(solver.value(x[j, e]) for e in range(int(caps[j]))) for j in range(F)], dtype=np.int64)
        sampled = solver.objective_value / _WEIGHT_SCALE / S + w.idle * F
    else:
        plan = np.zeros(F, dtype=np.int64)
        sampled = float("nan")
    metrics = ev.evaluate(plan)
    return ScenarioResult(
        key=day.key, plan=plan, score=metrics.row(0), feasible=bool(ev.feasible(metrics)[0]),
        status=solver.status_name(status), scenarios=S, seconds=time.perf_counter() - started,
        sampled_objective=float(sampled),
    )
