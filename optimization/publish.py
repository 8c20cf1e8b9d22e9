"""The nightly publishing stage: check the run's reporting rows, record its summary, refresh statistics.

After scoring and optimisation of as-of date D:

1. consistency: every optimised resource-day belongs to D's scored appointments, and the scored
   appointments that no resource-day covers (no schedule and no doctor) are counted;
2. ``reporting.nightly_summary``: one row for D (replaced on a re-run) — what BI dashboards and the
   quick-start demo show as "next week";
3. ``ANALYZE`` of the reporting tables, so BI queries get good plans right after the run.
"""

from __future__ import annotations

import logging
from datetime import date
from typing import Any

import sqlalchemy as sa

from clinicflow import db
from clinicflow.errors import ClinicFlowError
from clinicflow.logs import timed
from clinicflow.settings import Settings, get_settings

log = logging.getLogger(__name__)

REPORTING_TABLES = ("appointment_risk", "overbooking_day", "overbooking_slot", "nightly_summary")


def publish(as_of: date, *, settings: Settings | None = None) -> dict[str, Any]:
    """Publish the run of ``as_of``; returns its summary (also stored in reporting.nightly_summary)."""
    settings = settings or get_settings()
    engine = db.get_engine("warehouse", settings)
    with timed(f"publishing as of {as_of}", log), engine.begin() as conn:
        risk = conn.execute(sa.text(
            "SELECT count(*), count(*) FILTER (WHERE risk_band = 'high'), count(*) FILTER (WHERE risk_band = "
            "'medium'), avg(probability), min(start_at)::date, max(start_at)::date, max(model_version) "
            "FROM reporting.appointment_risk WHERE as_of = :d"), {"d": as_of}).one()
        plan = conn.execute(sa.text(
            "SELECT count(*), count(*) FILTER (WHERE grid = 'booking_order'), coalesce(sum(recommended_extras), 0), "
            "coalesce(sum(seen_with - seen_without), 0), coalesce(sum(overtime_with - overtime_without), 0), "
            "coalesce(sum(booked), 0) FROM reporting.overbooking_day WHERE as_of = :d"), {"d": as_of}).one()
        orphans = conn.execute(sa.text(
            "SELECT count(*) FROM reporting.overbooking_day o WHERE o.as_of = :d AND NOT EXISTS (SELECT 1 FROM "
            "reporting.appointment_risk r WHERE r.as_of = o.as_of AND r.source = o.source AND "
            "coalesce(r.resource_id, r.practitioner_id) = o.resource_id AND r.start_at::date = o.day)"),
            {"d": as_of}).scalar()
        if orphans:
            raise ClinicFlowError(
                f"{orphans} overbooking resource-days of {as_of} have no scored appointment: the optimisation ran on "
                f"another scoring of this date. Re-run `clinicflow optimize --as-of {as_of}`.")
        unplanned = int(risk[0]) - int(plan[5])
        assignable = conn.execute(sa.text(
            "SELECT count(*) FROM reporting.appointment_risk WHERE as_of = :d AND "
            "coalesce(resource_id, practitioner_id) IS NOT NULL"), {"d": as_of}).scalar()
        if assignable and not plan[0]:
            raise ClinicFlowError(f"{assignable} appointments were scored for {as_of} but nothing was optimised: run "
                                  f"`clinicflow optimize --as-of {as_of}`")
        values = {
            "as_of": as_of, "first_day": risk[4], "last_day": risk[5], "model_version": risk[6],
            "appointments_scored": int(risk[0]), "high_risk": int(risk[1]), "medium_risk": int(risk[2]),
            "mean_probability": float(risk[3]) if risk[3] is not None else None,
            "resource_days": int(plan[0]), "resource_days_without_grid": int(plan[1]),
            "extras_recommended": int(plan[2]), "expected_patients_gained": float(plan[3]),
            "expected_overtime_added": float(plan[4]), "unplanned_appointments": max(unplanned, 0),
        }
        columns = ", ".join(values)
        conn.execute(sa.text(
            f"INSERT INTO reporting.nightly_summary ({columns}, published_at) VALUES "
            f"({', '.join(':' + k for k in values)}, now()) ON CONFLICT (as_of) DO UPDATE SET "
            + ", ".join(f"{k} = EXCLUDED.{k}" for k in values if k != "as_of") + ", published_at = now()"), values)
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        for table in REPORTING_TABLES:
            conn.execute(sa.text(f"ANALYZE reporting.{table}"))
    summary = {k: (v.isoformat() if isinstance(v, date) else v) for k, v in values.items()}
    summary["expected_patients_gained"] = round(summary["expected_patients_gained"], 2)
    summary["expected_overtime_added"] = round(summary["expected_overtime_added"], 2)
    if summary["unplanned_appointments"]:
        log.warning("%d scored appointments have no schedule or doctor and were not optimised",
                    summary["unplanned_appointments"])
    log.info("published: %s", summary)
    return summary
