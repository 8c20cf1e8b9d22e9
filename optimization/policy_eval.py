"""Policy evaluation: the baselines and the optimiser on the same resource-days, over a grid of weights.

For every cost-weight setting of the grid:

1. τ of the threshold policy is tuned on the *validation* resource-days (earlier days), and the flat
   policy's rate is the mean predicted no-show probability there;
2. on every *test* resource-day each policy (none, flat, threshold, top-k, greedy, optimizer, and
   optionally the sampled-scenario CP-SAT) makes its plan from the predicted probabilities;
3. each plan is judged twice: with the **exact** evaluator on the predicted probabilities, and by
   **replaying** the held-out outcomes (:mod:`optimization.replay`: booked patients come as they
   really did, extras with the model's average show probability, the same random draws for every
   policy);
4. per measure: the mean per resource-day with a 95% bootstrap interval (resource-days resampled,
   the same resamples for every policy) and the change against no overbooking; fairness: the mean
   wait of booked patients who came, by patient group and by predicted-risk decile.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from optimization.baselines import baseline_plans, tune_threshold
from optimization.evaluator import Evaluator
from optimization.model import CostWeights, OverbookingConfig, ResourceDay
from optimization.optimizer import optimize
from optimization.replay import Draws, replay

log = logging.getLogger(__name__)

POLICIES = ("none", "flat", "threshold", "topk", "greedy", "optimizer")
METRICS = ("patients_seen", "utilisation", "idle_slots", "mean_wait", "p90_wait", "p_overtime", "mean_overtime",
           "extras", "cost")
METRIC_LABELS = {
    "patients_seen": "patients seen", "utilisation": "utilisation", "idle_slots": "idle slots",
    "mean_wait": "mean wait", "p90_wait": "P90 wait", "p_overtime": "P(overtime)", "mean_overtime": "overtime",
    "extras": "extras", "cost": "cost",
}
DEFAULT_WEIGHT_GRID = (
    CostWeights(0.5, 1.0, 1.5),          # Samorani's tutorial
    CostWeights(0.4, 0.2, 0.4, 0.6),     # Kaandorp-Koole (waiting:idle:overtime) with a value per patient
    CostWeights(1.0, 1.0, 2.0),          # waiting costs as much as idle time
)
GROUP_KINDS = ("age_band", "sex", "welfare", "risk_decile")


@dataclass
class EvalDay:
    """A resource-day with the held-out outcome of each booked patient."""

    day: ResourceDay
    showed: np.ndarray


@dataclass
class EvaluationSpec:
    config: OverbookingConfig = field(default_factory=OverbookingConfig)
    weight_grid: Sequence[CostWeights] = DEFAULT_WEIGHT_GRID
    reps: int = 20
    bootstrap: int = 1000
    seed: int = 0
    with_scenario: bool = False
    scenario_count: int = 50
    scenario_time_limit_s: float = 5.0
    workers: int = 1

    @property
    def policies(self) -> tuple[str, ...]:
        return (*POLICIES, "scenario") if self.with_scenario else POLICIES


@dataclass
class EvaluationResult:
    #: DataFrame: method, cost_weights, policy, metric, value, ci_low, ci_high, change_pct
    table: Any
    #: DataFrame: method, cost_weights, policy, group_kind, group_label, mean_wait, patients
    fairness: Any
    #: DataFrame: one row per (method, weights, policy, resource-day) with the day's figures
    per_day: Any
    notes: list[str]
    days: int
    validation_days: int
    tau: dict[str, float]
    seconds: float


# --------------------------------------------------------------------------------------------------
# per resource-day work (runs in worker processes)


def _day_task(args: tuple) -> dict[str, Any]:
    index, ev_day, config, rate, tau, spec_reps, seed, with_scenario, scenario_count, scenario_limit = args
    day = ev_day.day
    ev = Evaluator(day, config)
    plans = baseline_plans(ev, rate, tau)
    result = optimize(day, config, evaluator=ev)
    plans["optimizer"] = result.plan
    if with_scenario:
        from optimization.scenario import solve_scenarios

        plans["scenario"] = solve_scenarios(day, config, scenarios=scenario_count, time_limit_s=scenario_limit,
                                            seed=seed, evaluator=ev).plan
    names = list(plans)
    metrics = ev.evaluate(np.stack([plans[n] for n in names]))
    waits = ev.patient_waits(metrics.plans, metrics.backlog)              # (policies, P)
    draws = Draws.make(day, spec_reps, ev.K, seed=seed * 1_000_003 + index)
    w = config.weights
    out: dict[str, Any] = {"index": index, "policies": {}}
    for i, name in enumerate(names):
        rep = replay(day, ev_day.showed, plans[name], draws)
        out["policies"][name] = {
            "exact": {
                "patients_seen": metrics.shows[i], "utilisation": metrics.utilisation[i], "idle_slots": metrics.idle[i],
                "waiting": metrics.waiting[i], "p_overtime": metrics.p_overtime[i],
                "mean_overtime": metrics.overtime[i], "extras": metrics.extras[i], "cost": metrics.cost[i],
            },
            "exact_patient_wait": waits[i],
            "replay": {
                "patients_seen": rep.seen.mean(), "utilisation": 1.0 - rep.idle.mean() / day.n_slots,
                "idle_slots": rep.idle.mean(), "waiting": rep.waiting.mean(),
                "p_overtime": (rep.overtime > 0).mean(), "mean_overtime": rep.overtime.mean(),
                "extras": rep.extras,
                "cost": float(np.mean(w.waiting * rep.waiting + w.idle * rep.idle + w.overtime * rep.overtime
                                      - w.patient_value * rep.seen)),
            },
            "replay_hist": rep.wait_hist,
            "replay_patient_wait": rep.booked_wait,
        }
    return out


# --------------------------------------------------------------------------------------------------


def _bootstrap_indices(n: int, b: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, n, size=(b, n))


def _p90_from_hist(hist: np.ndarray) -> np.ndarray:
    """P90 of pooled integer waits from histograms (..., bins)."""
    cum = np.cumsum(hist, axis=-1)
    total = cum[..., -1:]
    return np.argmax(cum >= 0.9 * np.maximum(total, 1), axis=-1).astype(float)


def _summaries(values: dict[str, np.ndarray], hist: np.ndarray | None, idx: np.ndarray) -> dict[str, tuple]:
    """(mean, lo, hi) per metric; waits are ratios of sums (per patient seen)."""
    out: dict[str, tuple] = {}
    seen = values["patients_seen"]
    for metric in METRICS:
        if metric == "mean_wait":
            point = values["waiting"].sum() / max(seen.sum(), 1e-12)
            boots = values["waiting"][idx].sum(axis=1) / np.maximum(seen[idx].sum(axis=1), 1e-12)
        elif metric == "p90_wait":
            if hist is None:
                out[metric] = (np.nan, np.nan, np.nan)
                continue
            point = float(_p90_from_hist(hist.sum(axis=0)))
            boots = np.array([_p90_from_hist(hist[row].sum(axis=0)) for row in idx[: min(len(idx), 300)]])
        else:
            v = values[metric]
            point = v.mean()
            boots = v[idx].mean(axis=1)
        lo, hi = np.percentile(boots, [2.5, 97.5])
        out[metric] = (float(point), float(lo), float(hi))
    return out


def _risk_deciles(days: Sequence[EvalDay]) -> list[np.ndarray]:
    risk = np.concatenate([d.day.noshow_prob for d in days]) if days else np.zeros(0)
    if risk.size == 0:
        return [np.zeros(0, dtype=object) for _ in days]
    edges = np.quantile(risk, np.linspace(0, 1, 11)[1:-1])
    out = []
    for d in days:
        decile = np.searchsorted(edges, d.day.noshow_prob, side="right") + 1
        out.append(np.array([f"D{k:02d}" for k in decile], dtype=object))
    return out


def evaluate_policies(validation: Sequence[EvalDay], test: Sequence[EvalDay], spec: EvaluationSpec,
                      data_note: str) -> EvaluationResult:
    """Compare the policies on ``test`` (τ and the flat rate from ``validation``); see the module doc."""
    import pandas as pd

    started = time.perf_counter()
    if not test:
        from clinicflow.errors import ClinicFlowError

        raise ClinicFlowError("policy evaluation: no test resource-days (is the date range empty?)")
    val_days = [v.day for v in validation] or [t.day for t in test]
    rate = float(np.mean(np.concatenate([d.noshow_prob for d in val_days]))) if val_days else 0.2
    q_values = sorted({round(t.day.extra_show_prob, 4) for t in test})
    deciles = _risk_deciles(test)
    idx = _bootstrap_indices(len(test), spec.bootstrap, spec.seed + 17)
    rows, fair_rows, day_rows = [], [], []
    taus: dict[str, float] = {}
    workers = spec.workers if spec.workers > 0 else (os.cpu_count() or 1)
    for weights in spec.weight_grid:
        config = spec.config.with_weights(weights)
        tau = tune_threshold(val_days, config)
        taus[weights.label] = tau
        tasks = [(i, t, config, rate, tau, spec.reps, spec.seed, spec.with_scenario, spec.scenario_count,
                  spec.scenario_time_limit_s) for i, t in enumerate(test)]
        t0 = time.perf_counter()
        if workers > 1 and len(tasks) > 8:
            with ProcessPoolExecutor(max_workers=workers) as pool:
                outs = list(pool.map(_day_task, tasks, chunksize=max(1, len(tasks) // (4 * workers))))
        else:
            outs = [_day_task(t) for t in tasks]
        log.info("policy evaluation %s: %d resource-days in %.1fs (τ = %.3f)", weights.label, len(tasks),
                 time.perf_counter() - t0, tau)
        base: dict[str, dict[str, float]] = {}
        for method in ("exact", "replay"):
            for policy in spec.policies:
                values = {m: np.array([o["policies"][policy][method][m] for o in outs], dtype=float)
                          for m in ("patients_seen", "utilisation", "idle_slots", "waiting", "p_overtime",
                                    "mean_overtime", "extras", "cost")}
                hist = (np.stack([o["policies"][policy]["replay_hist"] for o in outs]) if method == "replay" else None)
                summary = _summaries(values, hist, idx)
                if policy == "none":
                    base[method] = {m: s[0] for m, s in summary.items()}
                for metric, (value, lo, hi) in summary.items():
                    ref = base[method].get(metric)
                    change = (100.0 * (value - ref) / abs(ref)) if ref not in (None, 0) and np.isfinite(ref) \
                        and abs(ref) > 1e-12 else np.nan
                    rows.append(dict(method=method, cost_weights=weights.label, policy=policy, metric=metric,
                                     value=value, ci_low=lo, ci_high=hi, change_pct=change))
                for k, o in enumerate(outs):
                    p = o["policies"][policy][method]
                    day_rows.append(dict(method=method, cost_weights=weights.label, policy=policy,
                                         day=test[k].day.key, **{m: float(p[m]) for m in p}))
                # fairness: mean wait of booked patients who came, by group
                key = "exact_patient_wait" if method == "exact" else "replay_patient_wait"
                for kind in GROUP_KINDS:
                    sums: dict[str, list[float]] = {}
                    for k, o in enumerate(outs):
                        ev_day = test[k]
                        labels = deciles[k] if kind == "risk_decile" else ev_day.day.groups.get(kind)
                        if labels is None or not len(labels):
                            continue
                        waits = o["policies"][policy][key]
                        came = ev_day.showed if method == "replay" else np.ones(len(waits), dtype=bool)
                        weight = np.ones(len(waits)) if method == "replay" else ev_day.day.show_prob
                        for label, wv, c, wt in zip(labels, waits, came, weight, strict=True):
                            if c and np.isfinite(wv):
                                acc = sums.setdefault(str(label), [0.0, 0.0, 0])
                                acc[0] += wv * wt
                                acc[1] += wt
                                acc[2] += 1
                    for label, (total, weight_sum, n) in sorted(sums.items()):
                        fair_rows.append(dict(method=method, cost_weights=weights.label, policy=policy,
                                              group_kind=kind, group_label=label,
                                              mean_wait=total / weight_sum if weight_sum else np.nan, patients=n))
    q_text = ", ".join(f"{q:.3f}" for q in q_values[:5]) + (" …" if len(q_values) > 5 else "")
    notes = [
        data_note,
        f"{len(test)} test resource-days; threshold τ and the flat rate ({rate:.3f}) tuned on "
        f"{len(validation)} earlier validation resource-days.",
        "exact: exact expectations of the slot model on the predicted probabilities.",
        f"replay: booked patients come or not as they really did; extra patients come with the model's average "
        f"show probability (q = {q_text}); the same random draws for every policy; {spec.reps} replications per "
        "resource-day.",
        f"intervals: 95% bootstrap over resource-days ({spec.bootstrap} resamples, the same for every policy).",
        "patients first come, first served; patients of the same slot in random order; waits in slots; "
        "fairness: mean wait of booked patients who came.",
    ]
    return EvaluationResult(
        table=pd.DataFrame(rows), fairness=pd.DataFrame(fair_rows), per_day=pd.DataFrame(day_rows), notes=notes,
        days=len(test), validation_days=len(validation), tau=taus, seconds=time.perf_counter() - started,
    )


# --------------------------------------------------------------------------------------------------
# presentation


def _fmt(value: float, metric: str) -> str:
    if not np.isfinite(value):
        return "—"
    if metric in ("utilisation", "p_overtime"):
        return f"{value:.3f}"
    if metric in ("p90_wait", "extras"):
        return f"{value:.2f}"
    return f"{value:.3f}"


def format_table(result: EvaluationResult, metrics: Sequence[str] = METRICS) -> str:
    """The comparison as text: one block per (weights, method), policies as rows, each cell
    ``mean [95% interval] change-vs-none``."""
    lines: list[str] = [f"# {note}" for note in result.notes]
    table = result.table
    for (weights, method), block in table.groupby(["cost_weights", "method"], sort=False):
        lines.append("")
        lines.append(f"== cost weights {weights} (τ = {result.tau.get(weights, float('nan')):.3f}) — {method} ==")
        shown = [m for m in metrics if not (method == "exact" and m == "p90_wait")]
        grid = [["policy", *(METRIC_LABELS[m] for m in shown)]]
        for policy, rows in block.groupby("policy", sort=False):
            cells = [str(policy)]
            for m in shown:
                r = rows[rows.metric == m].iloc[0]
                change = "" if not np.isfinite(r.change_pct) or policy == "none" else f" {r.change_pct:+.1f}%"
                cells.append(f"{_fmt(r.value, m)} [{_fmt(r.ci_low, m)}, {_fmt(r.ci_high, m)}]{change}")
            grid.append(cells)
        widths = [max(len(row[i]) for row in grid) for i in range(len(grid[0]))]
        for row in grid:
            lines.append("  ".join(cell.ljust(w) if i == 0 else cell.rjust(w)
                                   for i, (cell, w) in enumerate(zip(row, widths, strict=True))).rstrip())
    return "\n".join(lines)


def format_fairness(result: EvaluationResult, method: str = "replay") -> str:
    fair = result.fairness
    if fair.empty:
        return "(no patient groups in these resource-days)"
    lines = []
    for (weights, kind), block in fair[fair.method == method].groupby(["cost_weights", "group_kind"], sort=False):
        pivot = block.pivot(index="group_label", columns="policy", values="mean_wait")
        lines.append(f"-- mean wait (slots) by {kind}, weights {weights}, {method}")
        cols = [c for c in (*POLICIES, "scenario") if c in pivot.columns]
        lines.append(f"{'group':<14}" + "".join(f"{c:>11}" for c in cols))
        for label, row in pivot.iterrows():
            lines.append(f"{label!s:<14}" + "".join(f"{row[c]:>11.3f}" for c in cols))
    return "\n".join(lines)
