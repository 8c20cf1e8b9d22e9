"""Reporting for BI (migrations 0020-0022): comments in English and Russian, the read-only BI role, and
the views' figures on known rows."""

from __future__ import annotations

import re
import secrets
from datetime import date, datetime

import pytest
import sqlalchemy as sa

from clinicflow.paths import MIGRATIONS_DIR
from tests.sql.roles import as_member_of, denied

LATIN = re.compile(r"[A-Za-z]{3}")
CYRILLIC = re.compile(r"[А-Яа-яЁё]{3}")
VIEWS = ("patient_flow_daily", "patient_flow_weekly", "risk_next_week", "overbooking_recommendations",
         "overbooking_next_week", "model_performance_weekly")
TABLES = ("appointment_risk", "overbooking_day", "overbooking_slot", "policy_evaluation", "policy_evaluation_fairness",
          "nightly_summary")


def test_every_reporting_relation_and_column_has_an_english_and_russian_comment(migrated_warehouse):
    with migrated_warehouse.connect() as conn:
        relations = conn.execute(sa.text(
            "SELECT c.relname, c.relkind, obj_description(c.oid, 'pg_class') FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'reporting' "
            "AND c.relkind IN ('r', 'v', 'm', 'p') AND NOT c.relname LIKE 'cft_%' ORDER BY 1"
        )).all()
        columns = conn.execute(sa.text(
            "SELECT c.relname, a.attname, col_description(c.oid, a.attnum) FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace JOIN pg_attribute a ON a.attrelid = c.oid "
            "WHERE n.nspname = 'reporting' AND c.relkind IN ('r', 'v', 'm', 'p') AND a.attnum > 0 "
            "AND NOT a.attisdropped AND NOT c.relname LIKE 'cft_%' ORDER BY 1, 2"
        )).all()
    names = {r[0] for r in relations}
    assert set(VIEWS) | set(TABLES) <= names
    bad = [f"reporting.{name}" for name, _, comment in relations
           if not comment or not LATIN.search(comment) or not CYRILLIC.search(comment)]
    bad += [f"reporting.{table}.{column}" for table, column, comment in columns
            if not comment or not LATIN.search(comment) or not CYRILLIC.search(comment)]
    assert not bad, f"missing English or Russian comment: {bad}"


# --------------------------------------------------------------------------------------------------
# the BI role



def test_bi_role_reads_reporting_and_nothing_else(migrated_warehouse):
    with migrated_warehouse.connect() as conn:
        other_tables = conn.execute(sa.text(
            "SELECT table_schema || '.' || table_name FROM information_schema.tables "
            "WHERE table_schema IN ('staging', 'core', 'quarantine', 'features', 'ml', 'ops') "
            "AND table_type = 'BASE TABLE' ORDER BY 1"
        )).scalars().all()
    assert "core.appointment" in other_tables
    with as_member_of(migrated_warehouse, "clinicflow_bi") as conn:
        for name in (*VIEWS, *TABLES):
            conn.execute(sa.text(f"SELECT * FROM reporting.{name} LIMIT 1"))  # raises if not allowed
        for table in other_tables:
            assert denied(conn, f"SELECT 1 FROM {table} LIMIT 1"), f"BI role can read {table}"
        assert denied(conn, "INSERT INTO reporting.appointment_risk (as_of, source, appointment_id, start_at, "
                            "probability, risk_band, model_name, model_version) VALUES "
                            "('2026-01-01', 's', 'a', '2026-01-01', 0.1, 'low', 'm', '1')")
        assert denied(conn, "UPDATE reporting.overbooking_day SET slots = 0")
        assert denied(conn, "DELETE FROM reporting.policy_evaluation")
        assert denied(conn, "TRUNCATE reporting.overbooking_slot")
        assert denied(conn, "CREATE TABLE reporting.cft_bi_table (x int)")
        assert denied(conn, "CREATE VIEW reporting.cft_bi_view AS SELECT 1 AS x")
        assert denied(conn, "CREATE TABLE public.cft_bi_table (x int)")


def test_reporting_tables_created_later_are_readable_by_bi(migrated_warehouse):
    with migrated_warehouse.connect() as conn:
        conn.execute(sa.text("CREATE TABLE reporting.cft_later_bi (x int)"))
        conn.commit()
    try:
        with as_member_of(migrated_warehouse, "clinicflow_bi") as conn:
            conn.execute(sa.text("SELECT * FROM reporting.cft_later_bi"))
    finally:
        with migrated_warehouse.connect() as conn:
            conn.execute(sa.text("DROP TABLE reporting.cft_later_bi"))
            conn.commit()


# --------------------------------------------------------------------------------------------------
# the views on known rows


@pytest.fixture()
def flow_source(migrated_warehouse):
    """Appointments of one made-up source: two doctors, two weeks, every status."""
    source = f"cft_view_{secrets.token_hex(3)}"
    rows = []
    statuses = ["fulfilled", "arrived", "noshow", "noshow", "cancelled_by_patient", "rescheduled", "booked",
                "deleted"]
    for k, status in enumerate(statuses):
        rows.append(dict(source=source, appointment_id=f"a{k}", practitioner_id="doc1", department_id="dep1",
                         branch_id="br1", resource_id="res1", start_at=datetime(2026, 3, 2, 9 + k), status=status))
    rows.append(dict(source=source, appointment_id="b1", practitioner_id="doc2", department_id="dep1",
                     branch_id="br1", resource_id="res2", start_at=datetime(2026, 3, 10, 9), status="noshow"))
    with migrated_warehouse.begin() as conn:
        conn.execute(sa.text("INSERT INTO core.branch (source, branch_id, name) VALUES (:s, 'br1', 'Central')"),
                     {"s": source})
        conn.execute(sa.text("INSERT INTO core.practitioner (source, practitioner_id, display_name) VALUES "
                             "(:s, 'doc1', 'Dr One'), (:s, 'doc2', 'Dr Two')"), {"s": source})
        conn.execute(sa.text(
            "INSERT INTO core.appointment (source, appointment_id, practitioner_id, department_id, branch_id, "
            "resource_id, start_at, status, as_of, load_batch_id) VALUES (:source, :appointment_id, "
            ":practitioner_id, :department_id, :branch_id, :resource_id, :start_at, :status, '2026-03-20', 0)"
        ), rows)
    yield source
    with migrated_warehouse.begin() as conn:
        for table in ("core.appointment", "core.branch", "core.practitioner", "reporting.appointment_risk"):
            conn.execute(sa.text(f"DELETE FROM {table} WHERE source = :s"), {"s": source})


def test_patient_flow_counts_every_status(migrated_warehouse, flow_source):
    with migrated_warehouse.connect() as conn:
        day = conn.execute(sa.text(
            "SELECT * FROM reporting.patient_flow_daily WHERE source = :s AND practitioner_id = 'doc1'"
        ), {"s": flow_source}).mappings().one()
        weekly = conn.execute(sa.text(
            "SELECT week, sum(booked) AS booked, sum(no_show) AS no_show FROM reporting.patient_flow_weekly "
            "WHERE source = :s GROUP BY week ORDER BY week"), {"s": flow_source}).all()
    assert day["day"] == date(2026, 3, 2) and day["week"] == date(2026, 3, 2)
    assert day["branch_name"] == "Central" and day["practitioner_name"] == "Dr One"
    assert (day["booked"], day["attended"], day["no_show"], day["cancelled"], day["rescheduled"],
            day["outcome_unknown"]) == (7, 2, 2, 1, 1, 1)
    assert float(day["no_show_rate"]) == pytest.approx(0.5)
    assert [(w, int(b), int(n)) for w, b, n in weekly] == [(date(2026, 3, 2), 7, 2), (date(2026, 3, 9), 1, 1)]


def test_risk_list_shows_the_latest_run_and_performance_uses_the_last_forecast_before_the_day(
        migrated_warehouse, flow_source):
    risk = []
    for as_of, p in ((date(2026, 2, 27), 0.9), (date(2026, 3, 1), 0.4), (date(2026, 3, 2), 0.99)):
        for appointment, start in (("a0", datetime(2026, 3, 2, 9)), ("a2", datetime(2026, 3, 2, 11))):
            risk.append(dict(as_of=as_of, s=flow_source, a=appointment, start=start, p=p))
    risk.append(dict(as_of=date(2026, 3, 2), s=flow_source, a="a6", start=datetime(2026, 3, 3, 9), p=0.2))
    with migrated_warehouse.begin() as conn:
        conn.execute(sa.text(
            "INSERT INTO reporting.appointment_risk (as_of, source, appointment_id, branch_id, practitioner_id, "
            "start_at, probability, risk_band, reason_1, model_name, model_version) VALUES (:as_of, :s, :a, 'br1', "
            "'doc1', :start, :p, 'high', 'booked 41 days ahead', 'noshow', '3')"), risk)
        listed = conn.execute(sa.text(
            "SELECT appointment_id, as_of, practitioner_name FROM reporting.risk_next_week WHERE source = :s "
            "ORDER BY 1"), {"s": flow_source}).all()
        perf = conn.execute(sa.text(
            "SELECT * FROM reporting.model_performance_weekly WHERE source = :s ORDER BY branch_id NULLS LAST"
        ), {"s": flow_source}).mappings().all()
    assert [(a, d) for a, d, _ in listed] == [("a0", date(2026, 3, 2)), ("a2", date(2026, 3, 2)),
                                              ("a6", date(2026, 3, 2))]
    assert listed[0][2] == "Dr One"
    # a0 (fulfilled) and a2 (no-show): forecast of the run of their own day (as_of 2026-03-02): 0.99
    by_branch, overall = perf
    assert by_branch["branch_id"] == "br1" and by_branch["appointments"] == 2
    assert float(by_branch["predicted_no_show_rate"]) == pytest.approx(0.99)
    assert float(by_branch["observed_no_show_rate"]) == pytest.approx(0.5)
    assert float(by_branch["brier_score"]) == pytest.approx((0.99**2 + 0.01**2) / 2, abs=1e-4)
    assert overall["branch_id"] is None and overall["appointments"] == 2


def run_sql(conn: sa.Connection, sql: str) -> None:
    conn.connection.driver_connection.cursor().execute(sql)


def test_reporting_migrations_roll_back_and_apply_again(scratch_database):
    from clinicflow import migrations

    migrations.upgrade(scratch_database)
    engine = sa.create_engine(scratch_database, poolclass=sa.pool.NullPool)
    names = ("0020_reporting_tables", "0021_reporting_views", "0022_bi_role", "0023_nightly_summary")
    try:
        with engine.begin() as conn:
            for name in reversed(names):
                run_sql(conn, (MIGRATIONS_DIR / f"{name}.rollback.sql").read_text())
            left = conn.execute(sa.text(
                "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = 'reporting' AND c.relname = ANY(:names)"), {"names": list(VIEWS + TABLES)}).scalar()
            assert left == 0
        with engine.begin() as conn:
            for name in names:
                run_sql(conn, (MIGRATIONS_DIR / f"{name}.sql").read_text())
            assert conn.execute(sa.text("SELECT to_regclass('reporting.risk_next_week')")).scalar()
    finally:
        engine.dispose()


def test_risk_indexes_migration_rolls_back_and_applies_again(scratch_database):
    """0032: the risk table's key leads with the appointment and the as-of date has a BRIN index; 0034: the
    start time's index is a BRIN index too. The rollbacks restore the earlier key and indexes, and the
    migrations apply again."""
    from clinicflow import migrations

    migrations.upgrade(scratch_database)
    engine = sa.create_engine(scratch_database, poolclass=sa.pool.NullPool)

    def indexes(conn) -> dict[str, str]:
        return dict(conn.execute(sa.text(
            "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'reporting' "
            "AND tablename = 'appointment_risk'")).all())

    try:
        with engine.begin() as conn:
            now = indexes(conn)
            assert now["appointment_risk_pkey"].endswith("(source, appointment_id, as_of)")
            assert "USING brin (as_of)" in now["appointment_risk_as_of"]
            assert "USING brin (start_at)" in now["appointment_risk_start"]
            assert "appointment_risk_appointment" not in now and "appointment_risk_start" in now
            run_sql(conn, (MIGRATIONS_DIR / "0034_risk_start_brin.rollback.sql").read_text())
            run_sql(conn, (MIGRATIONS_DIR / "0032_risk_indexes.rollback.sql").read_text())
            before = indexes(conn)
            assert before["appointment_risk_pkey"].endswith("(as_of, source, appointment_id)")
            assert "appointment_risk_appointment" in before and "appointment_risk_as_of" not in before
            assert "USING btree (start_at)" in before["appointment_risk_start"]
        with engine.begin() as conn:
            run_sql(conn, (MIGRATIONS_DIR / "0032_risk_indexes.sql").read_text())
            run_sql(conn, (MIGRATIONS_DIR / "0034_risk_start_brin.sql").read_text())
            assert indexes(conn) == now
    finally:
        engine.dispose()
