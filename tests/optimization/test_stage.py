"""The optimisation stage on real PostgreSQL: grids from core, recommendations in reporting."""

from __future__ import annotations

from datetime import timedelta

import pytest
import sqlalchemy as sa

from optimization.stage import format_summary, list_partitions, next_week_summary, run_optimisation
from tests.optimization.clinic import drop_clinic, make_clinic


@pytest.fixture()
def clinic(migrated_warehouse, settings_env):
    settings_env(horizon_days="3")
    made = make_clinic(migrated_warehouse)
    yield made
    drop_clinic(migrated_warehouse, made.source)


def test_recommendations_per_partition_are_written_and_replaced_on_rerun(migrated_warehouse, clinic):
    parts = [p for p in list_partitions(clinic.as_of) if p["source"] == clinic.source]
    assert [p["branch_id"] for p in parts] == ["b1", "b2"]
    summaries = [run_optimisation(clinic.as_of, p, workers=1) for p in parts]
    assert sum(s["resource_days"] for s in summaries) == 3 * 4
    assert summaries[1]["booking_order_days"] == 3  # r4 has no grid at all
    assert sum(s["extras_recommended"] for s in summaries) > 0
    with migrated_warehouse.connect() as conn:
        days = conn.execute(sa.text(
            "SELECT resource_id, grid, slots, booked, recommended_extras, seen_with - seen_without, "
            "cost_with <= cost_without + 1e-9, p_overtime_with FROM reporting.overbooking_day "
            "WHERE source = :s AND as_of = :d ORDER BY resource_id, day"), {"s": clinic.source, "d": clinic.as_of}
        ).all()
        slot_count = conn.execute(sa.text("SELECT count(*) FROM reporting.overbooking_slot WHERE source = :s"),
                                  {"s": clinic.source}).scalar()
        blocked = conn.execute(sa.text(
            "SELECT slot_start, recommended_extras, no_overbook FROM reporting.overbooking_slot WHERE source = :s "
            "AND ((resource_id = 'r1' AND slot_start = :t1) OR (resource_id = 'r2' AND slot_start = :t2))"),
            {"s": clinic.source, "t1": clinic.blocked_slot, "t2": clinic.blocked_service_slot}).all()
        extras_in_free = conn.execute(sa.text(
            "SELECT count(*) FROM reporting.overbooking_slot WHERE source = :s AND booked = 0 "
            "AND recommended_extras > 0"), {"s": clinic.source}).scalar()
    grids = {r: g for r, g, *_ in days}
    assert grids == {"r1": "slots", "r2": "slots", "r3": "resource_day", "r4": "booking_order"}
    assert all(row[2] == 16 for row in days if row[0] != "r4")
    assert all(row[6] for row in days)              # never worse than no overbooking
    assert all(row[5] >= -1e-9 for row in days)     # never fewer patients expected
    assert all(row[7] <= 0.35 + 1e-9 for row in days)
    assert slot_count == sum(row[2] for row in days)
    assert len(blocked) == 2 and all(extras == 0 and flag for _, extras, flag in blocked)
    assert extras_in_free == 0
    # a re-run replaces the partition's rows, never duplicates them
    run_optimisation(clinic.as_of, parts[0], workers=1)
    with migrated_warehouse.connect() as conn:
        again = conn.execute(sa.text("SELECT count(*) FROM reporting.overbooking_slot WHERE source = :s"),
                             {"s": clinic.source}).scalar()
        latest = conn.execute(sa.text("SELECT count(*), count(DISTINCT resource_id) FROM "
                                      "reporting.overbooking_next_week WHERE source = :s"), {"s": clinic.source}).one()
        recs = conn.execute(sa.text("SELECT count(*) FROM reporting.overbooking_recommendations WHERE source = :s"),
                            {"s": clinic.source}).scalar()
    assert again == slot_count
    assert tuple(latest) == (12, 4)
    assert recs == sum(s["extras_recommended"] for s in summaries)  # one extra per slot at most


def test_next_week_summary(migrated_warehouse, clinic):
    run_optimisation(clinic.as_of, None, workers=1)
    summary = next_week_summary(clinic.as_of)
    assert summary["appointments_scored"] >= clinic.appointments  # other tests' rows may share the as-of date
    assert summary["extras_recommended"] > 0 and summary["expected_patients_gained"] > 0
    assert summary["first_day"] == clinic.as_of.isoformat()
    assert summary["last_day"] == (clinic.as_of + timedelta(days=2)).isoformat()
    lines = format_summary(summary)
    assert "appointments scored" in lines[1] and "expected patients gained" in lines[4]


def test_missing_scores_say_what_to_do(migrated_warehouse, settings_env):
    from datetime import date

    from clinicflow.errors import ClinicFlowError

    settings_env(horizon_days="3")
    with pytest.raises(ClinicFlowError, match="run the scoring stage first"):
        run_optimisation(date(1999, 1, 1), None, workers=1)


def test_publish_records_the_run_and_checks_it(migrated_warehouse, clinic):
    from clinicflow.errors import ClinicFlowError
    from optimization.publish import publish

    as_of = clinic.as_of
    with migrated_warehouse.begin() as conn:  # this test owns the as-of date: other tests' rows moved away
        conn.execute(sa.text("DELETE FROM reporting.appointment_risk WHERE as_of = :d AND source <> :s"),
                     {"d": as_of, "s": clinic.source})
        conn.execute(sa.text("DELETE FROM reporting.overbooking_day WHERE as_of = :d"), {"d": as_of})
    with pytest.raises(ClinicFlowError, match="nothing was optimised"):
        publish(as_of)
    run_optimisation(as_of, None, workers=1)
    first = publish(as_of)
    second = publish(as_of)
    with migrated_warehouse.connect() as conn:
        rows = conn.execute(sa.text("SELECT * FROM reporting.nightly_summary WHERE as_of = :d"),
                            {"d": as_of}).mappings().all()
    assert len(rows) == 1
    assert first["appointments_scored"] == second["appointments_scored"] == clinic.appointments
    assert rows[0]["extras_recommended"] == first["extras_recommended"] > 0
    assert rows[0]["resource_days"] == 12 and rows[0]["resource_days_without_grid"] == 3
    assert rows[0]["unplanned_appointments"] == 0
    assert rows[0]["expected_patients_gained"] == pytest.approx(next_week_summary(as_of)["expected_patients_gained"],
                                                                abs=0.01)


def test_stale_partitions_are_cleared(migrated_warehouse, clinic):
    from optimization.stage import clear_stale_partitions

    run_optimisation(clinic.as_of, None, workers=1)
    with migrated_warehouse.begin() as conn:  # rescoring: branch b2 has no scored appointment any more
        conn.execute(sa.text("DELETE FROM reporting.appointment_risk WHERE source = :s AND branch_id = 'b2'"),
                     {"s": clinic.source})
    assert clear_stale_partitions(clinic.as_of) == 6
    with migrated_warehouse.connect() as conn:
        left = conn.execute(sa.text("SELECT DISTINCT branch_id FROM reporting.overbooking_day WHERE source = :s"),
                            {"s": clinic.source}).scalars().all()
        slots = conn.execute(sa.text("SELECT count(*) FROM reporting.overbooking_slot WHERE source = :s AND "
                                     "resource_id IN ('r3', 'r4')"), {"s": clinic.source}).scalar()
    assert left == ["b1"] and slots == 0
