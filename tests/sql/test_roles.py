"""Database roles (migration 0030): the pipeline's writers write, the monitor role only reads ops/reporting."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from clinicflow.paths import MIGRATIONS_DIR
from tests.sql.roles import as_member_of, denied


def test_group_roles_exist(migrated_warehouse):
    with migrated_warehouse.connect() as conn:
        roles = set(conn.execute(sa.text(
            "SELECT rolname FROM pg_roles WHERE rolname IN ('clinicflow_writer', 'clinicflow_monitor') "
            "AND NOT rolcanlogin")).scalars())
    assert roles == {"clinicflow_writer", "clinicflow_monitor"}


def test_writer_writes_every_pipeline_schema_but_cannot_drop(migrated_warehouse):
    with as_member_of(migrated_warehouse, "clinicflow_writer") as conn:
        conn.execute(sa.text(
            "INSERT INTO ops.task_failure (dag_id, task_id, run_id, try_number, will_retry, error_message, summary) "
            "VALUES ('d', 't', 'r-writer', 1, false, 'm', 's')"))
        conn.execute(sa.text("UPDATE ops.task_failure SET summary = 's2' WHERE run_id = 'r-writer'"))
        tables = conn.execute(sa.text(
            "SELECT table_schema || '.' || table_name FROM information_schema.tables "
            "WHERE table_schema IN ('staging', 'core', 'quarantine', 'features', 'ml', 'reporting', 'ops') "
            "AND table_type = 'BASE TABLE'")).scalars().all()
        assert tables
        for table in tables:
            conn.execute(sa.text(f"SELECT count(*) FROM {table}"))  # would raise without SELECT
            assert not denied(conn, f"DELETE FROM {table} WHERE false"), table
        assert denied(conn, "DROP TABLE ops.task_failure")
        assert denied(conn, "CREATE ROLE cft_should_not_exist")


def test_monitor_reads_ops_and_reporting_only(migrated_warehouse):
    with as_member_of(migrated_warehouse, "clinicflow_monitor") as conn:
        conn.execute(sa.text("SELECT count(*) FROM ops.task_failure"))
        assert denied(conn, "SELECT count(*) FROM core.appointment")
        assert denied(conn, "INSERT INTO ops.task_failure (dag_id, task_id, run_id, try_number, will_retry, "
                            "error_message, summary) VALUES ('d', 't', 'r-monitor', 1, false, 'm', 's')")


def test_tables_of_later_migrations_are_covered_by_default_privileges(migrated_warehouse):
    """A table created after 0030 by the migrating user is writable by writers without a new GRANT."""
    with migrated_warehouse.connect() as conn:
        conn.execute(sa.text("CREATE TABLE reporting.cft_later (x int)"))
        conn.commit()
    try:
        with as_member_of(migrated_warehouse, "clinicflow_writer") as conn:
            conn.execute(sa.text("INSERT INTO reporting.cft_later VALUES (1)"))
        with as_member_of(migrated_warehouse, "clinicflow_monitor") as conn:
            conn.execute(sa.text("SELECT * FROM reporting.cft_later"))
    finally:
        with migrated_warehouse.connect() as conn:
            conn.execute(sa.text("DROP TABLE reporting.cft_later"))
            conn.commit()


def run_sql(conn: sa.Connection, sql: str) -> None:
    """Run a migration file as yoyo does: as is, without parameter interpolation."""
    conn.connection.driver_connection.cursor().execute(sql)


@pytest.mark.parametrize("name", ["0030_roles", "0031_task_failure"])
def test_rollback_then_reapply(scratch_database, name):
    """Each rollback undoes its migration in this database and the migration applies again cleanly."""
    from clinicflow import migrations

    migrations.upgrade(scratch_database)
    engine = sa.create_engine(scratch_database, poolclass=sa.pool.NullPool)
    forward = (MIGRATIONS_DIR / f"{name}.sql").read_text()
    rollback = (MIGRATIONS_DIR / f"{name}.rollback.sql").read_text()
    try:
        with engine.begin() as conn:
            if name == "0030_roles":
                run_sql(conn, (MIGRATIONS_DIR / "0031_task_failure.rollback.sql").read_text())
            run_sql(conn, rollback)
            if name == "0030_roles":
                grants = conn.execute(sa.text(
                    "SELECT count(*) FROM information_schema.role_table_grants "
                    "WHERE grantee IN ('clinicflow_writer', 'clinicflow_monitor') "
                    "AND table_catalog = current_database()"
                )).scalar()
                assert grants == 0
            else:
                assert conn.execute(sa.text("SELECT to_regclass('ops.task_failure')")).scalar() is None
        with engine.begin() as conn:
            run_sql(conn, forward)
            if name == "0030_roles":
                run_sql(conn, (MIGRATIONS_DIR / "0031_task_failure.sql").read_text())
            assert conn.execute(sa.text("SELECT to_regclass('ops.task_failure')")).scalar() == "ops.task_failure"
    finally:
        engine.dispose()
