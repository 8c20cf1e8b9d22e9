"""Exact evaluation of overbooking plans under the slot model.

The patients who come in slot ``j`` are a sum of independent Bernoulli variables (the booked
patients with their own probabilities, the extras with ``q``): a Poisson-binomial distribution. The
backlog after slot ``j`` is ``b_j = max(0, b_{j-1} + A_j − 1)``; its whole distribution is propagated
slot by slot, so every expectation below is exact (no sampling):

* expected shows ``S = Σ p`` (every patient who comes is eventually seen);
* expected waiting ``W = Σ_j E[b_j] + E[b_F (b_F − 1) / 2]`` in slots — each patient still queued at the
  end of a slot has waited one slot; after closing the queue keeps draining one patient per slot;
* expected overtime ``O = E[b_F]`` and its probability ``P(b_F > 0)``;
* expected idle slots ``I = F − S + O``;
* each booked patient's expected wait if they come: ``E[b_{j-1}] + ½·(expected other arrivals in
  their slot)`` (first come, first served; patients of the same slot in random order).

:class:`Evaluator` scores many plans of one resource-day at once (a matrix of plans, one row each)
with numpy; plans that share a prefix with a reference plan resume from its stored trajectory, which
is what makes scanning whole neighbourhoods cheap.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from optimization.model import CostWeights, OverbookingConfig, ResourceDay


def poisson_binomial(probs: np.ndarray) -> np.ndarray:
    """Distribution of the number of successes of independent Bernoulli trials."""
    pmf = np.ones(1)
    for p in np.asarray(probs, dtype=np.float64):
        pmf = np.convolve(pmf, (1.0 - p, p))
    return pmf


def binomial(n: int, q: float) -> np.ndarray:
    return poisson_binomial(np.full(n, q))


@dataclass
class Metrics:
    """Exact expectations for each plan (arrays with one entry per plan)."""

    plans: np.ndarray          # (n, F) extras per slot
    extras: np.ndarray         # (n,)
    shows: np.ndarray          # expected patients seen
    waiting: np.ndarray        # expected total waiting, slots
    idle: np.ndarray           # expected idle slots
    overtime: np.ndarray       # expected overtime, slots
    p_overtime: np.ndarray     # probability of any overtime
    cost: np.ndarray           # expected cost under the weights
    objective: np.ndarray      # cost + fairness term
    group_wait: np.ndarray     # (n, G) mean expected wait per patient group (if grouped), else (n, 0)
    backlog: np.ndarray        # (n, F) expected backlog after each slot
    n_slots: int
    n_booked: int

    def __len__(self) -> int:
        return int(self.cost.shape[0])

    @property
    def utilisation(self) -> np.ndarray:
        """Expected share of the regular slots in which a patient was seen."""
        return (self.n_slots - self.idle) / self.n_slots

    @property
    def mean_wait(self) -> np.ndarray:
        """Expected waiting per patient seen, slots."""
        return self.waiting / np.maximum(self.shows, 1e-12)

    def row(self, i: int) -> PlanScore:
        return PlanScore(
            plan=self.plans[i].copy(), extras=int(self.extras[i]), shows=float(self.shows[i]),
            waiting=float(self.waiting[i]), idle=float(self.idle[i]), overtime=float(self.overtime[i]),
            p_overtime=float(self.p_overtime[i]), cost=float(self.cost[i]), objective=float(self.objective[i]),
            utilisation=float(self.utilisation[i]), mean_wait=float(self.mean_wait[i]),
            worst_group_wait=float(self.group_wait[i].max()) if self.group_wait.shape[1] else 0.0,
        )


@dataclass
class PlanScore:
    """Exact expectations of one plan."""

    plan: np.ndarray
    extras: int
    shows: float
    waiting: float
    idle: float
    overtime: float
    p_overtime: float
    cost: float
    objective: float
    utilisation: float
    mean_wait: float
    worst_group_wait: float

    def as_dict(self) -> dict[str, float | int | list[int]]:
        out = {k: v for k, v in self.__dict__.items() if k != "plan"}
        out["plan"] = [int(v) for v in self.plan]
        return out


@dataclass
class Trajectory:
    """Backlog distributions of one plan after every slot (for incremental re-evaluation)."""

    plan: np.ndarray
    states: np.ndarray    # (F, L): distribution of b_j
    backlog: np.ndarray   # (F,): E[b_j]


class Evaluator:
    """Exact evaluator of plans for one resource-day and one set of weights."""

    def __init__(self, day: ResourceDay, config: OverbookingConfig, max_extra: int | None = None) -> None:
        self.day = day
        self.config = config
        self.weights: CostWeights = config.weights
        F = day.n_slots
        self.F = F
        self.K = int(config.max_per_slot if max_extra is None else max_extra)
        q = day.extra_show_prob
        self.q = q
        booked = day.booked_per_slot()
        # kernels[j, v, :] = distribution of arrivals in slot j with v extras
        per_slot = [poisson_binomial(day.show_prob[day.slot_of == j]) for j in range(F)]
        self.width = np.array([len(per_slot[j]) + self.K for j in range(F)], dtype=np.int64)
        W = int(self.width.max())
        self.kernels = np.zeros((F, self.K + 1, W))
        for j in range(F):
            for v in range(self.K + 1):
                pmf = np.convolve(per_slot[j], binomial(v, q))
                self.kernels[j, v, : len(pmf)] = pmf
        # support of the backlog after each slot: hi[j] = largest possible b_j
        hi = np.zeros(F, dtype=np.int64)
        prev = 0
        for j in range(F):
            prev = max(0, prev + int(self.width[j]) - 2)
            hi[j] = prev
        self.hi = hi
        self.L = int(hi.max()) + 2
        self.drain = np.arange(self.L, dtype=np.float64) * (np.arange(self.L) - 1) / 2.0
        self.levels = np.arange(self.L, dtype=np.float64)
        self.booked_shows = float(day.show_prob.sum())
        self.slot_show = np.bincount(day.slot_of, weights=day.show_prob, minlength=F)
        self.slot_show_sq = np.bincount(day.slot_of, weights=day.show_prob**2, minlength=F)
        self.booked = booked
        self.caps = np.minimum(day.caps(config), self.K)
        # fairness groups: normalised membership (P, G)
        labels = day.groups.get(config.fairness_group) if day.n_booked else None
        if labels is not None and labels.size:
            names, idx = np.unique(labels.astype(str), return_inverse=True)
            member = np.zeros((day.n_booked, len(names)))
            member[np.arange(day.n_booked), idx] = 1.0
            self.group_names = [str(n) for n in names]
            self.group_matrix = member / member.sum(axis=0, keepdims=True)
        else:
            self.group_names = []
            self.group_matrix = np.zeros((day.n_booked, 0))
        self._zero = self.trajectory(np.zeros(F, dtype=np.int64))

    # ------------------------------------------------------------------------------------------
    def _propagate(self, plans: np.ndarray, first: np.ndarray, ref: Trajectory | None,
                   keep_states: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Final backlog distribution and E[b_j] of every plan (rows sorted by ``first``)."""
        n, F = plans.shape
        L = self.L
        state = np.zeros((n, L))
        state[:, 0] = 1.0
        backlog = np.zeros((n, F))
        states = np.zeros((F, L)) if keep_states else None
        active = 0
        for j in range(F):
            upto = int(np.searchsorted(first, j, side="right"))
            if upto > active:
                if ref is not None and j > 0:
                    state[active:upto] = ref.states[j - 1]
                    backlog[active:upto, :j] = ref.backlog[:j]
                active = upto
            if active == 0:
                continue
            lo_hi = int(self.hi[j - 1]) if j > 0 else 0
            w = int(self.width[j])
            kern = self.kernels[j][plans[:active, j]]            # (active, W)
            src = state[:active, : lo_hi + 1]
            d = np.zeros((active, lo_hi + w))
            for s in range(w):
                d[:, s : s + lo_hi + 1] += src * kern[:, s : s + 1]
            top = int(self.hi[j])
            new = state[:active]
            new[:, :] = 0.0
            new[:, 0] = d[:, 0] + d[:, 1] if d.shape[1] > 1 else d[:, 0]
            if top > 0:
                new[:, 1 : top + 1] = d[:, 2 : top + 2]
            backlog[:active, j] = new[:, : top + 1] @ self.levels[: top + 1]
            if keep_states:
                states[j] = new[0]
        if active < n:  # plans identical to the reference
            assert ref is not None
            state[active:] = ref.states[F - 1]
            backlog[active:] = ref.backlog
        return state, backlog, states

    def trajectory(self, plan: np.ndarray) -> Trajectory:
        plan = np.asarray(plan, dtype=np.int64).reshape(1, -1)
        _, backlog, states = self._propagate(plan, np.zeros(1, dtype=np.int64), None, keep_states=True)
        assert states is not None
        return Trajectory(plan=plan[0].copy(), states=states, backlog=backlog[0])

    def evaluate(self, plans: np.ndarray, ref: Trajectory | None = None) -> Metrics:
        """Exact metrics of each row of ``plans`` ((n, F) or (F,) extras per slot).

        With ``ref`` (a trajectory of a nearby plan) each plan resumes from the reference's backlog at
        its first differing slot; the result is identical, only faster.
        """
        plans = np.asarray(plans, dtype=np.int64)
        if plans.ndim == 1:
            plans = plans.reshape(1, -1)
        if plans.shape[1] != self.F:
            raise ValueError(f"plans have {plans.shape[1]} slots, the resource-day has {self.F}")
        if plans.size and (plans.min() < 0 or plans.max() > self.K):
            raise ValueError(f"extras per slot must lie in 0..{self.K}")
        n = plans.shape[0]
        if ref is not None:
            diff = plans != ref.plan
            first = np.where(diff.any(axis=1), diff.argmax(axis=1), self.F)
        else:
            first = np.zeros(n, dtype=np.int64)
        order = np.argsort(first, kind="stable")
        sorted_plans = plans[order]
        state, backlog_s, _ = self._propagate(sorted_plans, first[order], ref)
        inverse = np.empty_like(order)
        inverse[order] = np.arange(n)
        state = state[inverse]
        backlog = backlog_s[inverse]
        return self._metrics(plans, state, backlog)

    def _metrics(self, plans: np.ndarray, state: np.ndarray, backlog: np.ndarray) -> Metrics:
        w = self.weights
        F = self.F
        extras = plans.sum(axis=1)
        shows = self.booked_shows + self.q * extras
        overtime = backlog[:, F - 1]
        p_overtime = 1.0 - state[:, 0]
        waiting = backlog.sum(axis=1) + state @ self.drain
        idle = F - shows + overtime
        cost = w.waiting * waiting + w.idle * idle + w.overtime * overtime - w.patient_value * shows
        group_wait = self.group_waits(plans, backlog)
        objective = cost.copy()
        if self.config.fairness_weight > 0 and group_wait.shape[1]:
            objective += self.config.fairness_weight * group_wait.max(axis=1)
        return Metrics(
            plans=plans, extras=extras, shows=shows, waiting=waiting, idle=idle, overtime=overtime,
            p_overtime=np.clip(p_overtime, 0.0, 1.0), cost=cost, objective=objective, group_wait=group_wait,
            backlog=backlog, n_slots=F, n_booked=self.day.n_booked,
        )

    def patient_waits(self, plans: np.ndarray, backlog: np.ndarray) -> np.ndarray:
        """(n, P) expected wait of each booked patient, if they come, in slots."""
        day = self.day
        if not day.n_booked:
            return np.zeros((plans.shape[0], 0))
        before = np.concatenate([np.zeros((plans.shape[0], 1)), backlog[:, :-1]], axis=1)
        arrivals = self.slot_show[None, :] + self.q * plans      # expected arrivals per slot
        others = arrivals[:, day.slot_of] - day.show_prob[None, :]
        return before[:, day.slot_of] + 0.5 * others

    def group_waits(self, plans: np.ndarray, backlog: np.ndarray) -> np.ndarray:
        if not self.group_names:
            return np.zeros((plans.shape[0], 0))
        return self.patient_waits(plans, backlog) @ self.group_matrix

    # ------------------------------------------------------------------------------------------
    @property
    def zero(self) -> Trajectory:
        return self._zero

    def limits(self, baseline: PlanScore | None = None) -> tuple[float, float]:
        """Effective (expected overtime, overtime probability) limits for this resource-day.

        A limit the schedule already breaks without overbooking becomes "no worse than without".
        """
        base = baseline or self.score(np.zeros(self.F, dtype=np.int64))
        c = self.config
        eot = np.inf if c.max_expected_overtime is None else max(c.max_expected_overtime, base.overtime)
        pot = np.inf if c.max_overtime_probability is None else max(c.max_overtime_probability, base.p_overtime)
        return float(eot) + 1e-9, float(pot) + 1e-9

    def feasible(self, metrics: Metrics, limits: tuple[float, float] | None = None) -> np.ndarray:
        """Which plans respect the caps, the per-day maximum and the overtime limits."""
        eot, pot = limits or self.limits()
        plans = metrics.plans
        ok = np.all(plans <= self.caps[None, :], axis=1)
        ok &= metrics.extras <= self.config.max_per_day
        ok &= metrics.overtime <= eot
        ok &= metrics.p_overtime <= pot
        return ok

    def score(self, plan: np.ndarray) -> PlanScore:
        return self.evaluate(np.asarray(plan, dtype=np.int64)).row(0)

    def slot_table(self, plan: np.ndarray) -> dict[str, np.ndarray]:
        """Per-slot expectations of one plan, for reporting."""
        plan = np.asarray(plan, dtype=np.int64)
        traj = self.trajectory(plan)
        before = np.concatenate([[0.0], traj.backlog[:-1]])
        shows = self.slot_show + self.q * plan
        sq = self.slot_show_sq + self.q**2 * plan
        others = np.where(shows > 0, shows - sq / np.maximum(shows, 1e-12), 0.0)
        return {
            "booked": self.booked.astype(np.int64),
            "extras": plan,
            "expected_shows": shows,
            "expected_wait": before + 0.5 * others,   # of a patient who comes in this slot
            "expected_queue_after": traj.backlog,       # at the last slot: the expected overtime
            "blocked": self.caps == 0,
        }


def evaluate_plan(day: ResourceDay, plan: np.ndarray, config: OverbookingConfig) -> PlanScore:
    """Exact expectations of one plan (convenience wrapper)."""
    plan = np.asarray(plan, dtype=np.int64)
    k = max(int(plan.max()) if plan.size else 0, config.max_per_slot)
    return Evaluator(day, config, max_extra=k).score(plan)
