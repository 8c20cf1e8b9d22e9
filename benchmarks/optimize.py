"""Optimiser benchmark: time per resource-day, a week of 500 resource-days, and the sampled-scenario
CP-SAT formulation of the literature on the same days.

    clinicflow bench optimize [--days 200] [--week 500] [--scenario-days 10] [--scenario-time-limit 10]

The optimiser's settings are the configured ones (``CLINICFLOW_OVERBOOK_*``, ``CLINICFLOW_COST_*``,
``CLINICFLOW_OPTIMIZER_TIME_LIMIT_S``), ``--max-per-slot`` / ``--max-per-day`` override two of them.

1. **Per resource-day** (``--days`` generated days of exactly ``--slots`` slots, 40 by default — the
   largest size of the target): wall time of the optimiser (greedy warm start + CP-SAT neighbourhood
   search with exact re-scoring) in this process, p50 / p95 / max, next to the greedy baseline and the
   exact evaluator measured on the same days. Target: p95 ≤ 1 s.
2. **A week** of ``--week`` resource-days of 12–40 slots: total wall time with the stage's process
   pool (``--workers``, default one per core) and in one process. Target: ≤ 2 minutes.
3. **Sampled-scenario CP-SAT** (``--scenario-days`` days of 24–32 slots, ``--scenarios`` scenarios,
   solved to ``--scenario-time-limit`` seconds, warm-started from greedy): its time and its plan's
   exact cost, against the optimiser's on the same days.

Ratios are against baselines measured in the same run, so figures from a busy machine still compare.
The summary is printed and written to ``<CLINICFLOW_HOME>/bench/optimize-<timestamp>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np


def _percentiles(values: list[float]) -> dict[str, float]:
    a = np.asarray(values)
    return {"p50": float(np.percentile(a, 50)), "p95": float(np.percentile(a, 95)), "max": float(a.max()),
            "mean": float(a.mean())}


def run(days: int = 200, slots: int = 40, week: int = 500, workers: int = 0, scenario_days: int = 10,
        scenarios: int = 100, scenario_time_limit: float = 10.0, seed: int = 0,
        max_per_slot: int | None = None, max_per_day: int | None = None) -> dict[str, Any]:
    from optimization.baselines import plan_greedy
    from optimization.evaluator import Evaluator
    from optimization.model import OverbookingConfig
    from optimization.optimizer import optimize
    from optimization.scenario import solve_scenarios
    from optimization.stage import optimise_days
    from optimization.synthetic import generate_days

    config = OverbookingConfig.from_settings(**{k: v for k, v in (("max_per_slot", max_per_slot),
                                                                   ("max_per_day", max_per_day)) if v is not None})
    out: dict[str, Any] = {"config": {"weights": config.weights.label, "max_per_slot": config.max_per_slot,
                                      "max_per_day": config.max_per_day,
                                      "max_expected_overtime": config.max_expected_overtime,
                                      "max_overtime_probability": config.max_overtime_probability,
                                      "time_limit_s": config.time_limit_s}, "cpu_count": os.cpu_count()}
    # 1. per resource-day
    sample = [g.day for g in generate_days(days, seed=seed, slots=slots)]
    evaluate_s, greedy_s, optimise_s, gains = [], [], [], []
    for day in sample:
        t0 = time.perf_counter()
        ev = Evaluator(day, config)
        ev.score(np.zeros(day.n_slots, dtype=np.int64))
        evaluate_s.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        greedy = plan_greedy(ev)
        greedy_s.append(time.perf_counter() - t0)
        result = optimize(day, config)
        optimise_s.append(result.seconds)
        gains.append(ev.score(greedy).objective - result.score.objective)
    out["per_day"] = {
        "days": days, "slots": slots,
        "optimizer_s": _percentiles(optimise_s), "greedy_s": _percentiles(greedy_s),
        "exact_evaluation_s": _percentiles(evaluate_s),
        "optimizer_over_greedy_time": float(np.mean(optimise_s) / np.mean(greedy_s)),
        "days_improved_over_greedy": int(sum(g > 1e-9 for g in gains)),
        "mean_cost_gain_over_greedy": float(np.mean(gains)),
    }
    # 2. a week of resource-days
    week_days = [g.day for g in generate_days(week, seed=seed + 1, slots=(12, 40))]
    workers = workers or (os.cpu_count() or 1)
    t0 = time.perf_counter()
    results = optimise_days(week_days, config, workers=workers)
    pooled = time.perf_counter() - t0
    t0 = time.perf_counter()
    optimise_days(week_days, config, workers=1)
    single = time.perf_counter() - t0
    out["week"] = {
        "resource_days": week, "slots": "12-40", "workers": workers, "seconds_pool": pooled,
        "seconds_one_process": single,
        "per_day_s": _percentiles([r["result"].seconds for r in results]),
        "extras": int(sum(r["result"].score.extras for r in results)),
    }
    # 3. the sampled-scenario formulation on the same days as the optimiser
    compare = [g.day for g in generate_days(scenario_days, seed=seed + 2, slots=(24, 32))]
    rows = []
    for day in compare:
        ev = Evaluator(day, config)
        mine = optimize(day, config, evaluator=ev)
        theirs = solve_scenarios(day, config, scenarios=scenarios, time_limit_s=scenario_time_limit, seed=seed,
                                 workers=1, evaluator=ev)
        none = mine.baseline.objective
        rows.append({"slots": day.n_slots, "optimizer_s": mine.seconds, "scenario_s": theirs.seconds,
                     "scenario_status": theirs.status, "optimizer_cost": mine.score.objective,
                     "scenario_cost_exact": theirs.score.objective, "scenario_feasible": theirs.feasible,
                     "no_overbooking_cost": none,
                     "scenario_gap_pct": 100.0 * (theirs.score.objective - mine.score.objective) / abs(none)})
    out["scenario"] = {
        "days": scenario_days, "scenarios": scenarios, "time_limit_s": scenario_time_limit, "rows": rows,
        "optimizer_s_mean": float(np.mean([r["optimizer_s"] for r in rows])),
        "scenario_s_mean": float(np.mean([r["scenario_s"] for r in rows])),
        "scenario_over_optimizer_time": float(np.mean([r["scenario_s"] for r in rows])
                                              / np.mean([r["optimizer_s"] for r in rows])),
        "scenario_gap_pct_mean": float(np.mean([r["scenario_gap_pct"] for r in rows])),
        "scenario_worse_days": int(sum(r["scenario_cost_exact"] > r["optimizer_cost"] + 1e-9 for r in rows)),
        "scenario_better_days": int(sum(r["scenario_cost_exact"] < r["optimizer_cost"] - 1e-9 for r in rows)),
        "scenario_optimal": int(sum(r["scenario_status"] == "OPTIMAL" for r in rows)),
    }
    return out


def format_report(r: dict[str, Any]) -> str:
    d, w, s = r["per_day"], r["week"], r["scenario"]
    lines = [
        f"optimiser benchmark ({r['cpu_count']} CPUs; weights {r['config']['weights']}, ≤{r['config']['max_per_slot']} "
        f"extra per slot, ≤{r['config']['max_per_day']} per day, E[overtime] ≤ {r['config']['max_expected_overtime']}, "
        f"P(overtime) ≤ {r['config']['max_overtime_probability']})",
        "",
        f"1. per resource-day of {d['slots']} slots ({d['days']} days, one process)",
        f"   optimiser      p50 {d['optimizer_s']['p50']:.3f}s  p95 {d['optimizer_s']['p95']:.3f}s  "
        f"max {d['optimizer_s']['max']:.3f}s   (target p95 ≤ 1 s: "
        f"{'MET' if d['optimizer_s']['p95'] <= 1.0 else 'NOT MET'})",
        f"   greedy         p50 {d['greedy_s']['p50']:.3f}s  p95 {d['greedy_s']['p95']:.3f}s   "
        f"(optimiser / greedy time: {d['optimizer_over_greedy_time']:.1f}x)",
        f"   exact evaluation of one plan: p50 {1000 * d['exact_evaluation_s']['p50']:.2f} ms",
        f"   optimiser better than greedy on {d['days_improved_over_greedy']}/{d['days']} days "
        f"(mean cost gain {d['mean_cost_gain_over_greedy']:.4f})",
        "",
        f"2. a week of {w['resource_days']} resource-days of {w['slots']} slots",
        f"   {w['workers']} worker processes: {w['seconds_pool']:.1f}s; one process: {w['seconds_one_process']:.1f}s "
        f"(target ≤ 120 s: {'MET' if w['seconds_pool'] <= 120 else 'NOT MET'}); per day p95 "
        f"{w['per_day_s']['p95']:.3f}s; {w['extras']} extras recommended",
        "",
        f"3. sampled-scenario CP-SAT ({s['scenarios']} scenarios, time limit {s['time_limit_s']:.0f}s, warm start "
        f"from greedy) vs the optimiser on the same {s['days']} days of 24-32 slots",
        f"   time per day: scenario {s['scenario_s_mean']:.2f}s vs optimiser {s['optimizer_s_mean']:.3f}s "
        f"({s['scenario_over_optimizer_time']:.0f}x); scenario model solved to optimality on "
        f"{s['scenario_optimal']}/{s['days']} days",
        f"   exact cost of the scenario plan vs the optimiser's: {s['scenario_gap_pct_mean']:+.2f}% of the "
        f"no-overbooking cost on average; worse on {s['scenario_worse_days']}, better on "
        f"{s['scenario_better_days']} days",
    ]
    return "\n".join(lines)


def cmd_optimize(args: argparse.Namespace) -> int:
    from clinicflow.settings import get_settings

    result = run(days=args.days, slots=args.slots, week=args.week, workers=args.workers,
                 scenario_days=args.scenario_days, scenarios=args.scenarios,
                 scenario_time_limit=args.scenario_time_limit, seed=args.seed, max_per_slot=args.max_per_slot,
                 max_per_day=args.max_per_day)
    print(format_report(result))
    folder = Path(get_settings().home) / "bench"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"optimize-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(result, indent=2, default=str), encoding="utf-8")
    print(f"\nwritten to {path}")
    return 0


def add_parser(bench: argparse._SubParsersAction) -> None:
    p = bench.add_parser("optimize", help="optimiser time per resource-day and per week, vs sampled-scenario CP-SAT",
                         description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--days", type=int, default=200, help="resource-days timed one by one (default 200)")
    p.add_argument("--slots", type=int, default=40, help="slots of those days (default 40)")
    p.add_argument("--week", type=int, default=500, help="resource-days of the week run (default 500)")
    p.add_argument("--workers", type=int, default=0, help="worker processes of the week run (0: one per core)")
    p.add_argument("--scenario-days", type=int, default=10, help="days solved with the sampled-scenario model")
    p.add_argument("--scenarios", type=int, default=100, help="scenarios of that model (default 100)")
    p.add_argument("--scenario-time-limit", type=float, default=10.0, help="its time limit per day, seconds")
    p.add_argument("--max-per-slot", type=int, help="override CLINICFLOW_OVERBOOK_MAX_PER_SLOT")
    p.add_argument("--max-per-day", type=int, help="override CLINICFLOW_OVERBOOK_MAX_PER_DAY")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(handler=cmd_optimize)
