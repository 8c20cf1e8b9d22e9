"""Replay of held-out outcomes: what a plan would have done on a day that really happened.

Booked patients come or not **as they really did**. An extra patient is unknown when the plan is
made, so extras come with the model's average show probability ``q`` (the assumption the shared
notes prescribe; it is printed with every evaluation). Every policy meets the **same random draws**
(common random numbers): for each resource-day and replication there is one uniform number per
potential extra of each slot and one random order key per patient, and every plan reads the same
numbers — a difference between policies is never sampling noise of the draws.

Patients are seen first come, first served; patients of the same slot in random order (the keys).
A patient's wait is the number of slots between their slot and the slot in which they are seen.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from optimization.model import ResourceDay

#: Waits above this many slots share the last histogram bin (for P90 over pooled patients).
MAX_WAIT_BIN = 64


@dataclass
class Draws:
    """Common random numbers of one resource-day (shared by every policy)."""

    extra_u: np.ndarray      # (R, F, K) uniforms: extra e of slot j comes if u < q
    booked_key: np.ndarray   # (R, P) order keys of the booked patients
    extra_key: np.ndarray    # (R, F, K) order keys of the extras

    @classmethod
    def make(cls, day: ResourceDay, reps: int, max_extra: int, seed: int) -> Draws:
        rng = np.random.default_rng(seed)
        K = max(1, max_extra)
        return cls(
            extra_u=rng.random((reps, day.n_slots, K)),
            booked_key=rng.random((reps, day.n_booked)),
            extra_key=rng.random((reps, day.n_slots, K)),
        )


@dataclass
class ReplayOutcome:
    """One plan replayed on one resource-day: per replication figures and pooled waits."""

    seen: np.ndarray           # (R,) patients seen
    waiting: np.ndarray        # (R,) total waiting, slots
    idle: np.ndarray           # (R,) idle slots
    overtime: np.ndarray       # (R,) overtime, slots
    extras: int
    extras_came: np.ndarray    # (R,) extras who came
    wait_hist: np.ndarray      # (MAX_WAIT_BIN + 1,) waits of every patient seen, over all replications
    booked_wait: np.ndarray    # (P,) mean wait of each booked patient who came (nan if they did not)
    n_slots: int


def replay(day: ResourceDay, showed: np.ndarray, plan: np.ndarray, draws: Draws) -> ReplayOutcome:
    """Replay ``plan`` on ``day`` with the real outcomes ``showed`` of the booked patients."""
    plan = np.asarray(plan, dtype=np.int64)
    showed = np.asarray(showed, dtype=bool)
    R, F = draws.extra_u.shape[0], day.n_slots
    q = day.extra_show_prob
    K = draws.extra_u.shape[2]
    if plan.max(initial=0) > K:
        raise ValueError(f"plan has {plan.max()} extras in a slot; the draws cover {K}")
    extra_mask = np.arange(K)[None, :] < plan[:, None]                # (F, K)
    extra_came = (draws.extra_u < q) & extra_mask[None, :, :]          # (R, F, K)
    booked_arrivals = np.bincount(day.slot_of[showed], minlength=F)    # (F,)
    arrivals = booked_arrivals[None, :] + extra_came.sum(axis=2)       # (R, F)
    backlog_before = np.zeros((R, F), dtype=np.int64)
    backlog = np.zeros(R, dtype=np.int64)
    waiting = np.zeros(R, dtype=np.int64)
    served = np.zeros(R, dtype=np.int64)
    for j in range(F):
        backlog_before[:, j] = backlog
        present = backlog + arrivals[:, j]
        busy = present > 0
        served += busy
        backlog = present - busy
        waiting += backlog
    overtime = backlog
    waiting = waiting + overtime * (overtime - 1) // 2
    seen = arrivals.sum(axis=1)

    hist = np.zeros(MAX_WAIT_BIN + 1, dtype=np.int64)
    booked_wait_sum = np.zeros(day.n_booked)
    for j in range(F):
        members_b = np.flatnonzero(day.slot_of == j)
        k = int(plan[j])
        if members_b.size == 0 and k == 0:
            continue
        came = np.concatenate([np.broadcast_to(showed[members_b], (R, members_b.size)),
                               extra_came[:, j, :k]], axis=1)                       # (R, m)
        keys = np.concatenate([draws.booked_key[:, members_b], draws.extra_key[:, j, :k]], axis=1)
        keys = np.where(came, keys, np.inf)
        rank = (keys[:, None, :] < keys[:, :, None]).sum(axis=2)                      # (R, m)
        wait = backlog_before[:, j][:, None] + rank
        np.add.at(hist, np.minimum(wait[came], MAX_WAIT_BIN), 1)
        if members_b.size:
            booked_wait_sum[members_b] += np.where(came[:, : members_b.size], wait[:, : members_b.size], 0).sum(axis=0)
    booked_wait = np.where(showed, booked_wait_sum / R, np.nan)
    return ReplayOutcome(
        seen=seen, waiting=waiting, idle=F - served, overtime=overtime, extras=int(plan.sum()),
        extras_came=extra_came.sum(axis=(1, 2)), wait_hist=hist, booked_wait=booked_wait, n_slots=F,
    )
