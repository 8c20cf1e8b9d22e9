"""The overbooking optimiser: CP-SAT over an exact second-order neighbourhood model.

The expected cost of a plan is not separable over slots (an extra in slot 3 makes everyone after it
wait), so no linear model of it is exact over the whole plan space. It is exact, however, around a
given plan: for the incumbent ``y*`` the exact evaluator scores, in one numpy batch,

* every *single move* (one slot's extras changed to another allowed value), and
* every *pair of moves* in two different slots (which includes moving an extra from one slot to
  another).

From these the model knows, for every measure that matters (cost, expected overtime, probability of
overtime, each patient group's mean wait), the exact change of each move (``Δ_m``) and the exact
interaction of each pair (``I_mn = f(y*+m+n) − f(y*) − Δ_m − Δ_n``). The CP-SAT model then chooses a
set of moves (one per slot, at most ``trust_region`` of them) minimising

    Σ Δ_m z_m + Σ I_mn z_m z_n (+ fairness weight × the worst group's wait)

subject to the per-slot and per-day caps and the overtime limits written with the same terms
(products ``z_m z_n`` are linearised exactly with ``w ≤ z_m, w ≤ z_n, w ≥ z_m + z_n − 1``). The model is
exact for every plan within two moves of ``y*`` and a second-order approximation beyond. Every plan it
produces (each improving solution found by the solver, via a callback) is re-scored with the exact
evaluator; the best feasible exact plan becomes the new incumbent and the loop repeats until nothing
improves or the time budget is spent.

The search starts from the greedy plan (passed to CP-SAT with ``AddHint``) and also scores the
no-overbooking plan and any seed plans the caller gives (the baselines, in production): the result
is the best *exactly scored, feasible* plan seen, so it is never worse than no overbooking nor than
any seed. When the two-move neighbourhood has no improving plan and CP-SAT finds none within the
trust region, the plan is a local optimum for all moves of up to two slots (exactly checked).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np
from ortools.sat.python import cp_model

from optimization.baselines import plan_greedy
from optimization.evaluator import Evaluator, Metrics, PlanScore
from optimization.model import OverbookingConfig, ResourceDay

log = logging.getLogger(__name__)

_SCALE = 1_000_000  # integer resolution of the CP-SAT coefficients (re-scored exactly anyway)
#: Pair interactions smaller than this in every measure are left out of the CP-SAT model.
_INTERACTION_EPS = 1e-4
#: Share of the per-day time budget one CP-SAT call may use.
_CPSAT_SHARE = 0.25


@dataclass
class OptimizeResult:
    """The recommended plan of one resource-day and how it was found."""

    key: str
    plan: np.ndarray
    score: PlanScore          # exact, with the recommendation
    baseline: PlanScore       # exact, without overbooking
    greedy: PlanScore         # exact, greedy plan (the warm start)
    found_by: str             # "none", "greedy", "exchange", "cp-sat" or "seed:<name>"
    iterations: int
    cpsat_calls: int
    plans_scored: int
    seconds: float
    local_optimum: bool       # True: no improving plan within two moves (checked exactly)
    limits: tuple[float, float]
    stats: dict[str, float] = field(default_factory=dict)

    @property
    def gain(self) -> float:
        """Cost saved against no overbooking (>= 0)."""
        return self.baseline.objective - self.score.objective


@dataclass
class _Moves:
    slot: np.ndarray     # (M,) slot of each move
    value: np.ndarray    # (M,) new extras in that slot
    delta: np.ndarray    # (M,) change of extras


def _moves(plan: np.ndarray, caps: np.ndarray) -> _Moves:
    slots, values = [], []
    for j in np.flatnonzero(caps > 0):
        for v in range(int(caps[j]) + 1):
            if v != plan[j]:
                slots.append(j)
                values.append(v)
    for j in np.flatnonzero((caps == 0) & (plan > 0)):  # a plan above a cap can always be lowered
        slots.append(j)
        values.append(0)
    slot = np.asarray(slots, dtype=np.int64)
    value = np.asarray(values, dtype=np.int64)
    return _Moves(slot=slot, value=value, delta=value - plan[slot] if slot.size else value)


class _Collector(cp_model.CpSolverSolutionCallback):
    def __init__(self, z: list[cp_model.IntVar]) -> None:
        super().__init__()
        self._z = z
        self.solutions: list[np.ndarray] = []

    def on_solution_callback(self) -> None:
        self.solutions.append(np.array([self.value(v) for v in self._z], dtype=np.int64))


class Optimizer:
    """Optimiser of one resource-day (see the module docstring)."""

    def __init__(self, day: ResourceDay, config: OverbookingConfig, evaluator: Evaluator | None = None) -> None:
        self.day = day
        self.config = config
        self.ev = evaluator or Evaluator(day, config)
        self.baseline = self.ev.score(np.zeros(day.n_slots, dtype=np.int64))
        self.limits = self.ev.limits(self.baseline)
        self.plans_scored = 1
        self.cpsat_calls = 0

    # ------------------------------------------------------------------------------------------
    def _feasible_best(self, metrics: Metrics) -> int | None:
        ok = self.ev.feasible(metrics, self.limits)
        if not ok.any():
            return None
        objective = np.where(ok, metrics.objective, np.inf)
        return int(np.argmin(objective))

    def _neighbourhood(self, plan: np.ndarray) -> tuple[_Moves, Metrics, Metrics, np.ndarray, np.ndarray]:
        """Exact scores of every single move and every pair of moves in different slots."""
        mv = _moves(plan, self.ev.caps)
        M = mv.slot.size
        singles = np.repeat(plan[None, :], M, axis=0)
        singles[np.arange(M), mv.slot] = mv.value
        a, b = np.triu_indices(M, k=1)
        keep = mv.slot[a] != mv.slot[b]
        a, b = a[keep], b[keep]
        pairs = np.repeat(plan[None, :], a.size, axis=0)
        pairs[np.arange(a.size), mv.slot[a]] = mv.value[a]
        pairs[np.arange(a.size), mv.slot[b]] = mv.value[b]
        ref = self.ev.trajectory(plan)
        both = self.ev.evaluate(np.concatenate([singles, pairs]), ref=ref)
        self.plans_scored += M + a.size
        return mv, _take(both, slice(0, M)), _take(both, slice(M, None)), a, b

    def _measures(self, metrics: Metrics) -> np.ndarray:
        """(n, 3 + G): cost, expected overtime, P(overtime), group waits."""
        return np.column_stack([metrics.cost, metrics.overtime, metrics.p_overtime, metrics.group_wait])

    def _cpsat(self, plan: np.ndarray, current: Metrics, mv: _Moves, singles: Metrics, pairs: Metrics,
               a: np.ndarray, b: np.ndarray, time_limit: float) -> list[np.ndarray]:
        """Solve the second-order neighbourhood model; return every plan the solver found."""
        base = self._measures(current)[0]
        d1 = self._measures(singles) - base                                   # (M, k)
        inter = self._measures(pairs) - base - d1[a] - d1[b]                  # (P, k)
        M = mv.slot.size
        model = cp_model.CpModel()
        z = [model.new_bool_var(f"z{m}") for m in range(M)]
        for j in np.unique(mv.slot):
            model.add_at_most_one([z[m] for m in np.flatnonzero(mv.slot == j)])
        model.add(sum(z) <= self.config.trust_region)
        room = self.config.max_per_day - int(plan.sum())
        model.add(sum(int(mv.delta[m]) * z[m] for m in range(M)) <= room)
        eot, pot = self.limits
        used = [0] + ([1] if np.isfinite(eot) else []) + ([2] if np.isfinite(pot) else [])
        if self.config.fairness_weight > 0:
            used += list(range(3, inter.shape[1]))
        significant = np.flatnonzero(np.abs(inter[:, used]).max(axis=1) >= _INTERACTION_EPS)
        w = []
        for p in significant:
            v = model.new_bool_var(f"w{p}")
            za, zb = z[int(a[p])], z[int(b[p])]
            model.add(v <= za)
            model.add(v <= zb)
            model.add(v >= za + zb - 1)
            w.append(v)

        def expression(col: int):
            lin = [round(d1[m, col] * _SCALE) * z[m] for m in range(M) if abs(d1[m, col]) * _SCALE >= 0.5]
            lin += [round(inter[p, col] * _SCALE) * v for p, v in zip(significant, w, strict=True)
                    if abs(inter[p, col]) * _SCALE >= 0.5]
            return sum(lin)

        if np.isfinite(eot):
            model.add(expression(1) <= int(np.floor((eot - base[1]) * _SCALE)))
        if np.isfinite(pot):
            model.add(expression(2) <= int(np.floor((pot - base[2]) * _SCALE)))
        objective = expression(0)
        n_groups = d1.shape[1] - 3
        if self.config.fairness_weight > 0 and n_groups:
            worst = model.new_int_var(-10**12, 10**12, "worst_group_wait")
            for g in range(n_groups):
                model.add(worst >= round(base[3 + g] * _SCALE) + expression(3 + g))
            # both scaled by _SCALE; the weight (cost units per slot of wait) in thousandths
            objective = 1000 * objective + round(self.config.fairness_weight * 1000) * worst
        model.minimize(objective)
        for var in z:
            model.add_hint(var, False)  # the incumbent: the greedy plan in the first round
        solver = cp_model.CpSolver()
        solver.parameters.max_time_in_seconds = max(0.01, time_limit)
        solver.parameters.num_workers = 1
        solver.parameters.random_seed = 7
        solver.parameters.linearization_level = 2  # LP relaxation of the products: proves optimality fast
        collector = _Collector(z)
        status = solver.solve(model, collector)
        self.cpsat_calls += 1
        if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
            return []
        out = []
        for chosen in collector.solutions:
            candidate = plan.copy()
            picked = np.flatnonzero(chosen)
            candidate[mv.slot[picked]] = mv.value[picked]
            out.append(candidate)
        return out

    # ------------------------------------------------------------------------------------------
    def run(self, seeds: dict[str, np.ndarray] | None = None) -> OptimizeResult:
        started = time.perf_counter()
        deadline = started + self.config.time_limit_s
        ev, F = self.ev, self.day.n_slots
        zero = np.zeros(F, dtype=np.int64)
        greedy = plan_greedy(ev, self.limits)
        pool: dict[str, np.ndarray] = {"none": zero, "greedy": greedy}
        for name, seed in (seeds or {}).items():
            pool[f"seed:{name}"] = np.minimum(np.asarray(seed, dtype=np.int64), ev.K)
        names = list(pool)
        metrics = ev.evaluate(np.stack([pool[n] for n in names]))
        self.plans_scored += len(names)
        best = self._feasible_best(metrics)
        if best is None:  # cannot happen: no overbooking is always feasible
            best = 0
        incumbent, found_by = metrics.plans[best].copy(), names[best]
        current = _take(metrics, slice(best, best + 1))
        greedy_score = metrics.row(1)
        iterations, local_optimum = 0, False
        if not (ev.caps > 0).any():
            local_optimum = True
        last_round = 0.0
        while not local_optimum and time.perf_counter() + last_round < deadline:
            round_started = time.perf_counter()
            iterations += 1
            mv, singles, pairs, a, b = self._neighbourhood(incumbent)
            if mv.slot.size == 0:
                local_optimum = True
                break
            candidates: list[tuple[str, Metrics]] = [("exchange", singles), ("exchange", pairs)]
            remaining = deadline - time.perf_counter()
            if self.config.trust_region >= 3 and remaining > 0.005:
                # one CP-SAT call gets at most a quarter of the budget: the two-move neighbourhood is already
                # scanned exactly, the solver looks for larger improving combinations of moves
                budget = min(remaining, max(0.05, _CPSAT_SHARE * self.config.time_limit_s))
                found = self._cpsat(incumbent, current, mv, singles, pairs, a, b, budget)
                if found:
                    rescored = ev.evaluate(np.stack(found), ref=ev.trajectory(incumbent))
                    self.plans_scored += len(found)
                    candidates.append(("cp-sat", rescored))
            improved = False
            for label, cand in candidates:
                i = self._feasible_best(cand)
                if i is not None and cand.objective[i] < current.objective[0] - 1e-10:
                    incumbent, found_by = cand.plans[i].copy(), label
                    current = _take(cand, slice(i, i + 1))
                    improved = True
            if not improved:
                # singles and pairs were scored exactly: nothing within two moves is better
                local_optimum = True
            last_round = time.perf_counter() - round_started  # do not start a round that cannot finish
        score = current.row(0)
        return OptimizeResult(
            key=self.day.key, plan=incumbent, score=score, baseline=self.baseline, greedy=greedy_score,
            found_by=found_by, iterations=iterations, cpsat_calls=self.cpsat_calls,
            plans_scored=self.plans_scored, seconds=time.perf_counter() - started,
            local_optimum=local_optimum, limits=self.limits,
        )


def _take(metrics: Metrics, rows: slice) -> Metrics:
    return Metrics(
        plans=metrics.plans[rows], extras=metrics.extras[rows], shows=metrics.shows[rows],
        waiting=metrics.waiting[rows], idle=metrics.idle[rows], overtime=metrics.overtime[rows],
        p_overtime=metrics.p_overtime[rows], cost=metrics.cost[rows], objective=metrics.objective[rows],
        group_wait=metrics.group_wait[rows], backlog=metrics.backlog[rows], n_slots=metrics.n_slots,
        n_booked=metrics.n_booked,
    )


def optimize(day: ResourceDay, config: OverbookingConfig, seeds: dict[str, np.ndarray] | None = None,
             evaluator: Evaluator | None = None) -> OptimizeResult:
    """Recommended extras per slot for one resource-day (see the module docstring)."""
    return Optimizer(day, config, evaluator).run(seeds)
