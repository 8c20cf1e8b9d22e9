"""The nightly optimisation stage: recommended overbooking for every resource-day of the horizon.

For a run of as-of date D (after the scoring stage has written ``reporting.appointment_risk`` for D):

1. the booked appointments scored for D, with their slot grids (:mod:`optimization.data`);
2. per resource-day, the optimiser (:mod:`optimization.optimizer`), seeded with the greedy plan and the
   flat and top-k baselines, with the constraints and weights of the settings;
3. per slot (``reporting.overbooking_slot``) and per resource-day (``reporting.overbooking_day``) the
   recommendation and its exact expected effect, without and with it.

The work can be split by (source, branch) — :func:`list_partitions` — so that the DAG maps one task
per branch. A re-run replaces the rows of its as-of date and partition in one transaction.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

import numpy as np
import sqlalchemy as sa

from clinicflow import db
from clinicflow.errors import ClinicFlowError
from clinicflow.logs import timed
from clinicflow.settings import Settings, get_settings
from optimization.baselines import plan_flat, plan_topk
from optimization.data import build_resource_days
from optimization.evaluator import Evaluator
from optimization.model import OverbookingConfig, ResourceDay
from optimization.optimizer import optimize

log = logging.getLogger(__name__)

#: Below this many resource-days the stage does not start worker processes.
PARALLEL_MIN_DAYS = 24


@dataclass(frozen=True)
class Partition:
    source: str | None = None
    branch_id: str | None = None
    all_branches: bool = True

    @classmethod
    def from_dict(cls, value: dict[str, Any] | None) -> Partition:
        if not value or value.get("all"):
            return cls()
        return cls(source=value.get("source"), branch_id=value.get("branch_id"), all_branches=False)

    def as_dict(self) -> dict[str, Any]:
        return {"source": self.source, "branch_id": self.branch_id}

    @property
    def label(self) -> str:
        return "all" if self.all_branches else f"{self.source}/{self.branch_id or '(no branch)'}"


def _engine(settings: Settings | None) -> sa.Engine:
    return db.get_engine("warehouse", settings)


def list_partitions(as_of: date, settings: Settings | None = None) -> list[dict[str, Any]]:
    """(source, branch) pairs with scored appointments for ``as_of``: one optimisation task each."""
    with _engine(settings).connect() as conn:
        rows = conn.execute(sa.text(
            "SELECT source, branch_id, count(*) FROM reporting.appointment_risk WHERE as_of = :d "
            "GROUP BY 1, 2 ORDER BY 1, 2 NULLS LAST"), {"d": as_of}).all()
    return [{"source": s, "branch_id": b, "appointments": int(n)} for s, b, n in rows]


def clear_stale_partitions(as_of: date, settings: Settings | None = None) -> int:
    """Delete recommendations of ``as_of`` for (source, branch) pairs that no longer have scored
    appointments (a re-run after a rescoring): the mapped ``optimise`` tasks only replace their own."""
    with _engine(settings).begin() as conn:
        stale = "NOT EXISTS (SELECT 1 FROM reporting.appointment_risk r WHERE r.as_of = o.as_of AND r.source = " \
                "o.source AND r.branch_id IS NOT DISTINCT FROM o.branch_id)"
        conn.execute(sa.text(
            f"DELETE FROM reporting.overbooking_slot s USING reporting.overbooking_day o WHERE o.as_of = :d AND "
            f"s.as_of = o.as_of AND s.source = o.source AND s.resource_id = o.resource_id AND s.day = o.day AND "
            f"s.session = o.session AND {stale}"), {"d": as_of})
        deleted = conn.execute(sa.text(f"DELETE FROM reporting.overbooking_day o WHERE o.as_of = :d AND {stale}"),
                               {"d": as_of}).rowcount
    if deleted:
        log.info("removed %d stale overbooking resource-days of %s (their branches have no scored appointment now)",
                 deleted, as_of)
    return int(deleted or 0)


def extra_show_probability(as_of: date, settings: Settings) -> float:
    """The show probability of an extra booking: configured, else the model's average for the run."""
    if settings.overbook_extra_show_probability is not None:
        return float(settings.overbook_extra_show_probability)
    with _engine(settings).connect() as conn:
        mean = conn.execute(sa.text("SELECT avg(probability) FROM reporting.appointment_risk WHERE as_of = :d"),
                            {"d": as_of}).scalar()
    if mean is None:
        raise ClinicFlowError(f"no scored appointments for as-of {as_of}: run the scoring stage first "
                              f"(`clinicflow score --as-of {as_of}`)")
    return float(min(max(1.0 - float(mean), 0.05), 1.0))


def _where(partition: Partition, alias: str) -> tuple[str, dict[str, Any]]:
    if partition.all_branches:
        return "", {}
    return (f" AND {alias}.source = :p_source AND {alias}.branch_id IS NOT DISTINCT FROM :p_branch",
            {"p_source": partition.source, "p_branch": partition.branch_id})


def load_horizon(as_of: date, partition: Partition, settings: Settings, extra_show_prob: float
                 ) -> tuple[list[ResourceDay], list[dict[str, Any]]]:
    """Resource-days of the scored appointments of ``as_of`` in ``partition``."""
    import pandas as pd

    end = as_of + timedelta(days=settings.horizon_days)
    where, params = _where(partition, "r")
    params.update({"d": as_of, "end": end})
    with _engine(settings).connect() as conn:
        appointments = pd.read_sql(sa.text(f"""
            SELECT r.source, r.appointment_id, coalesce(r.resource_id, r.practitioner_id) AS resource_id,
                   r.branch_id, r.department_id, r.practitioner_id, r.start_at, a.booked_at, r.probability,
                   coalesce(sv.no_overbook, false) AS service_no_overbook, p.sex, p.birth_year, p.flags
            FROM reporting.appointment_risk r
            JOIN core.appointment a ON a.source = r.source AND a.appointment_id = r.appointment_id
            LEFT JOIN core.service sv ON sv.source = a.source AND sv.service_id = a.service_id
            LEFT JOIN core.patient p ON p.source = a.source AND p.patient_key = a.patient_key
            WHERE r.as_of = :d AND r.start_at >= :d AND r.start_at < :end{where}
        """), conn, params=params)
        unassigned = appointments["resource_id"].isna()
        if unassigned.any():
            log.warning("%d scored appointments have no resource or doctor: left out of the optimisation",
                        int(unassigned.sum()))
            appointments = appointments[~unassigned]
        keys = appointments[["source", "resource_id"]].drop_duplicates()
        slots = resource_days = blocked = None
        if not keys.empty:
            conn.execute(sa.text("CREATE TEMP TABLE opt_keys (source text, resource_id text) ON COMMIT DROP"))
            db.copy_frame(conn, "opt_keys", keys, ["source", "resource_id"])
            slots = pd.read_sql(sa.text(
                "SELECT s.source, s.resource_id, s.start_at, s.duration_min, s.no_overbook FROM core.slot s "
                "JOIN opt_keys k USING (source, resource_id) WHERE s.start_at >= :d AND s.start_at < :end"),
                conn, params={"d": as_of, "end": end})
            resource_days = pd.read_sql(sa.text(
                "SELECT d.source, d.resource_id, d.day, d.slots, d.slot_minutes, d.work_start, d.on_leave "
                "FROM core.resource_day d JOIN opt_keys k USING (source, resource_id) "
                "WHERE d.day >= :d AND d.day < :end"), conn, params={"d": as_of, "end": end})
            blocked = [tuple(r) for r in conn.execute(sa.text(
                "SELECT r.source, r.resource_id FROM core.resource r JOIN opt_keys k USING (source, resource_id) "
                "WHERE r.no_overbook"))]
    return build_resource_days(appointments, slots, resource_days, extra_show_prob=extra_show_prob,
                               resource_no_overbook=blocked or ())



# --------------------------------------------------------------------------------------------------
# optimisation (may run in worker processes)


def _optimise_one(args: tuple[ResourceDay, OverbookingConfig, float]) -> dict[str, Any]:
    day, config, noshow_rate = args
    ev = Evaluator(day, config)
    seeds = {"flat": plan_flat(day, ev.caps, noshow_rate, config.max_per_day),
             "topk": plan_topk(day, ev.caps, config.max_per_day)}
    result = optimize(day, config, seeds=seeds, evaluator=ev)
    return {"result": result, "slots": ev.slot_table(result.plan)}


def optimise_days(days: Sequence[ResourceDay], config: OverbookingConfig, workers: int = 1) -> list[dict[str, Any]]:
    """Optimise every resource-day (in ``workers`` processes when there are many)."""
    if not days:
        return []
    rate = float(np.mean(np.concatenate([d.noshow_prob for d in days]))) if any(d.n_booked for d in days) else 0.0
    tasks = [(d, config, rate) for d in days]
    workers = workers if workers > 0 else (os.cpu_count() or 1)
    if workers > 1 and len(days) >= PARALLEL_MIN_DAYS:
        import multiprocessing

        context = multiprocessing.get_context("forkserver")
        with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
            return list(pool.map(_optimise_one, tasks, chunksize=max(1, len(tasks) // (8 * workers))))
    return [_optimise_one(t) for t in tasks]


# --------------------------------------------------------------------------------------------------
# writing


_DAY_COLUMNS = (
    "as_of", "source", "resource_id", "day", "session", "branch_id", "department_id", "practitioner_id", "grid",
    "slots", "booked", "recommended_extras", "extra_show_probability", "seen_without", "seen_with",
    "utilisation_without", "utilisation_with", "idle_without", "idle_with", "overtime_without", "overtime_with",
    "p_overtime_without", "p_overtime_with", "mean_wait_without", "mean_wait_with", "cost_without", "cost_with",
    "cost_weights", "found_by", "optimizer_seconds",
)
_SLOT_COLUMNS = (
    "as_of", "source", "resource_id", "day", "session", "slot_index", "slot_start", "booked", "recommended_extras",
    "expected_shows", "expected_wait", "expected_queue_after", "no_overbook",
)


def _frames(as_of: date, days: Sequence[ResourceDay], slot_starts: Sequence[dict[str, Any]],
            outcomes: Sequence[dict[str, Any]], config: OverbookingConfig) -> tuple[Any, Any]:
    import pandas as pd

    day_rows, slot_rows = [], []
    for day, starts, out in zip(days, slot_starts, outcomes, strict=True):
        r, table = out["result"], out["slots"]
        info = day.info
        with_, without = r.score, r.baseline
        day_rows.append({
            "as_of": as_of, "source": info["source"], "resource_id": info["resource_id"], "day": info["day"],
            "session": info["session"], "branch_id": info["branch_id"], "department_id": info["department_id"],
            "practitioner_id": info["practitioner_id"], "grid": info["grid"], "slots": day.n_slots,
            "booked": day.n_booked, "recommended_extras": with_.extras, "extra_show_probability": day.extra_show_prob,
            "seen_without": without.shows, "seen_with": with_.shows,
            "utilisation_without": without.utilisation, "utilisation_with": with_.utilisation,
            "idle_without": without.idle, "idle_with": with_.idle,
            "overtime_without": without.overtime, "overtime_with": with_.overtime,
            "p_overtime_without": without.p_overtime, "p_overtime_with": with_.p_overtime,
            "mean_wait_without": without.mean_wait, "mean_wait_with": with_.mean_wait,
            "cost_without": without.cost, "cost_with": with_.cost, "cost_weights": config.weights.label,
            "found_by": r.found_by, "optimizer_seconds": r.seconds,
        })
        starts_list = starts.get("starts")
        for j in range(day.n_slots):
            slot_rows.append({
                "as_of": as_of, "source": info["source"], "resource_id": info["resource_id"], "day": info["day"],
                "session": info["session"], "slot_index": j,
                "slot_start": starts_list[j] if starts_list is not None else None,
                "booked": int(table["booked"][j]), "recommended_extras": int(table["extras"][j]),
                "expected_shows": float(table["expected_shows"][j]), "expected_wait": float(table["expected_wait"][j]),
                "expected_queue_after": float(table["expected_queue_after"][j]),
                "no_overbook": bool(table["blocked"][j]),
            })
    return (pd.DataFrame(day_rows, columns=list(_DAY_COLUMNS)), pd.DataFrame(slot_rows, columns=list(_SLOT_COLUMNS)))


def write_recommendations(as_of: date, partition: Partition, day_frame: Any, slot_frame: Any,
                          settings: Settings) -> None:
    """Replace the rows of ``as_of`` and ``partition`` in one transaction (COPY into temp tables)."""
    where, params = _where(partition, "t")
    params["d"] = as_of
    with _engine(settings).begin() as conn:
        conn.execute(sa.text("CREATE TEMP TABLE opt_day (LIKE reporting.overbooking_day INCLUDING DEFAULTS) "
                             "ON COMMIT DROP"))
        conn.execute(sa.text("CREATE TEMP TABLE opt_slot (LIKE reporting.overbooking_slot INCLUDING DEFAULTS) "
                             "ON COMMIT DROP"))
        db.copy_frame(conn, "opt_day", day_frame, _DAY_COLUMNS)
        db.copy_frame(conn, "opt_slot", slot_frame, _SLOT_COLUMNS)
        conn.execute(sa.text(
            f"DELETE FROM reporting.overbooking_slot s USING reporting.overbooking_day t WHERE t.as_of = :d "
            f"AND s.as_of = t.as_of AND s.source = t.source AND s.resource_id = t.resource_id AND s.day = t.day "
            f"AND s.session = t.session{where}"), params)
        conn.execute(sa.text(f"DELETE FROM reporting.overbooking_day t WHERE t.as_of = :d{where}"), params)
        conn.execute(sa.text(f"INSERT INTO reporting.overbooking_day ({', '.join(_DAY_COLUMNS)}) "
                             f"SELECT {', '.join(_DAY_COLUMNS)} FROM opt_day"))
        conn.execute(sa.text(f"INSERT INTO reporting.overbooking_slot ({', '.join(_SLOT_COLUMNS)}) "
                             f"SELECT {', '.join(_SLOT_COLUMNS)} FROM opt_slot"))


# --------------------------------------------------------------------------------------------------


def run_optimisation(as_of: date, partition: dict[str, Any] | Partition | None = None, *,
                     settings: Settings | None = None, workers: int | None = None,
                     allow_empty: bool = False) -> dict[str, Any]:
    """The nightly ``optimise`` task for one partition (or all): returns a JSON-able summary.

    Without scored appointments for ``as_of`` it raises (run the scoring first), unless ``allow_empty``
    (the DAG: a horizon with no bookings is not an error), which writes nothing and says so.
    """
    settings = settings or get_settings()
    part = partition if isinstance(partition, Partition) else Partition.from_dict(partition)
    config = OverbookingConfig.from_settings(settings)
    if allow_empty and not list_partitions(as_of, settings):
        log.warning("no scored appointments for as-of %s: nothing to optimise", as_of)
        return {"as_of": as_of.isoformat(), "partition": part.label, "resource_days": 0, "booking_order_days": 0,
                "extras_recommended": 0, "expected_patients_gained": 0.0, "optimizer_p95_s": 0.0, "seconds": 0.0,
                "note": "no scored appointments for this as-of date"}
    with timed(f"overbooking optimisation as of {as_of} ({part.label})", log) as timer:
        q = extra_show_probability(as_of, settings)
        days, starts = load_horizon(as_of, part, settings, q)
        outcomes = optimise_days(days, config, settings.optimizer_workers if workers is None else workers)
        day_frame, slot_frame = _frames(as_of, days, starts, outcomes, config)
        write_recommendations(as_of, part, day_frame, slot_frame, settings)
        timer.rows = len(days)
    seconds = [o["result"].seconds for o in outcomes]
    summary = {
        "as_of": as_of.isoformat(),
        "partition": part.label,
        "resource_days": len(days),
        "booking_order_days": int(sum(d.info["grid"] == "booking_order" for d in days)),
        "extra_show_probability": round(q, 4),
        "extras_recommended": int(day_frame["recommended_extras"].sum()) if len(day_frame) else 0,
        "expected_patients_gained": round(float((day_frame["seen_with"] - day_frame["seen_without"]).sum()), 3)
        if len(day_frame) else 0.0,
        "optimizer_p95_s": round(float(np.percentile(seconds, 95)), 4) if seconds else 0.0,
        "seconds": round(timer.seconds, 2),
    }
    if summary["booking_order_days"]:
        log.info("%d resource-days have no slot grid: slots formed from their appointments in booking order",
                 summary["booking_order_days"])
    log.info("optimisation: %s", summary)
    return summary


def next_week_summary(as_of: date | None = None, settings: Settings | None = None) -> dict[str, Any]:
    """Short summary of the horizon of the latest (or given) run: appointments scored, high-risk count,
    extras recommended and expected patients gained. The quick-start demo prints it."""
    settings = settings or get_settings()
    with _engine(settings).connect() as conn:
        if as_of is None:
            as_of = conn.execute(sa.text("SELECT max(as_of) FROM reporting.appointment_risk")).scalar()
        if as_of is None:
            return {"as_of": None, "appointments_scored": 0, "high_risk": 0, "extras_recommended": 0,
                    "expected_patients_gained": 0.0, "resource_days": 0}
        risk = conn.execute(sa.text(
            "SELECT count(*), count(*) FILTER (WHERE risk_band = 'high'), min(start_at)::date, max(start_at)::date, "
            "max(model_version) FROM reporting.appointment_risk WHERE as_of = :d"), {"d": as_of}).one()
        plan = conn.execute(sa.text(
            "SELECT count(*), coalesce(sum(recommended_extras), 0), coalesce(sum(seen_with - seen_without), 0), "
            "coalesce(sum(overtime_with - overtime_without), 0) FROM reporting.overbooking_day WHERE as_of = :d"),
            {"d": as_of}).one()
    return {
        "as_of": as_of.isoformat(),
        "first_day": risk[2].isoformat() if risk[2] else None,
        "last_day": risk[3].isoformat() if risk[3] else None,
        "model_version": risk[4],
        "appointments_scored": int(risk[0]),
        "high_risk": int(risk[1]),
        "resource_days": int(plan[0]),
        "extras_recommended": int(plan[1]),
        "expected_patients_gained": round(float(plan[2]), 2),
        "expected_overtime_added_slots": round(float(plan[3]), 2),
    }


def format_summary(summary: dict[str, Any]) -> list[str]:
    """The summary as the lines the demo prints."""
    if not summary.get("as_of"):
        return ["Next week: nothing scored yet (run the nightly pipeline first)."]
    return [
        f"Next week ({summary['first_day']} – {summary['last_day']}, run of {summary['as_of']}, "
        f"model version {summary['model_version']}):",
        f"  appointments scored:        {summary['appointments_scored']}",
        f"  high-risk appointments:     {summary['high_risk']}",
        f"  extra bookings recommended: {summary['extras_recommended']} over {summary['resource_days']} "
        "schedule-days",
        f"  expected patients gained:   {summary['expected_patients_gained']:.1f} "
        f"(expected overtime added: {summary['expected_overtime_added_slots']:.1f} slots in all)",
    ]
