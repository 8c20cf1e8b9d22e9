"""Schema migrations: every stage schema exists, and applying twice changes nothing."""

from __future__ import annotations

import sqlalchemy as sa

from clinicflow import migrations
from clinicflow.paths import MIGRATIONS_DIR

STAGE_SCHEMAS = {"staging", "core", "quarantine", "features", "ml", "reporting", "ops"}


def _snapshot(engine: sa.Engine) -> list[tuple]:
    with engine.connect() as conn:
        columns = conn.execute(sa.text(
            "SELECT table_schema, table_name, column_name, data_type, is_nullable, column_default "
            "FROM information_schema.columns WHERE table_schema NOT IN ('pg_catalog', 'information_schema') "
            "ORDER BY 1, 2, 3"
        )).all()
        indexes = conn.execute(sa.text(
            "SELECT schemaname, indexname, indexdef FROM pg_indexes "
            "WHERE schemaname NOT IN ('pg_catalog') ORDER BY 1, 2"
        )).all()
        versions = conn.execute(sa.text("SELECT migration_id FROM _yoyo_migration ORDER BY 1")).all()
    return [*columns, *indexes, *versions]


def test_upgrade_twice_changes_nothing(scratch_database):
    engine = sa.create_engine(scratch_database, poolclass=sa.pool.NullPool)
    first = migrations.upgrade(scratch_database)
    assert first, "a fresh database must get every migration"
    before = _snapshot(engine)
    assert migrations.upgrade(scratch_database) == []
    assert _snapshot(engine) == before
    state = migrations.status(scratch_database)
    assert state.pending == []
    assert state.applied == first
    with engine.connect() as conn:
        schemas = set(conn.execute(sa.text("SELECT schema_name FROM information_schema.schemata")).scalars())
    assert schemas >= STAGE_SCHEMAS
    engine.dispose()


def test_migration_files_are_ordered_and_reversible():
    files = sorted(p.name for p in MIGRATIONS_DIR.glob("*.sql") if not p.name.endswith(".rollback.sql"))
    assert files, "no migrations found"
    numbers = [int(name.split("_", 1)[0]) for name in files]
    assert numbers == sorted(set(numbers)), "migration numbers must be unique and increasing"
    for name in files:
        assert (MIGRATIONS_DIR / name.replace(".sql", ".rollback.sql")).exists(), f"{name} has no rollback"


def test_features_key_migration_rolls_back_and_applies_again(scratch_database):
    """0033: the features key leads with the as-of date and replaces the (version, as_of) index; the rollback
    restores both, and the migration applies again."""
    migrations.upgrade(scratch_database)
    engine = sa.create_engine(scratch_database, poolclass=sa.pool.NullPool)

    def indexes(conn) -> dict[str, str]:
        return dict(conn.execute(sa.text(
            "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'features' "
            "AND tablename = 'appointment_features'")).all())

    def run(conn, name: str) -> None:
        conn.connection.driver_connection.cursor().execute((MIGRATIONS_DIR / name).read_text())

    try:
        with engine.begin() as conn:
            now = indexes(conn)
            assert now["appointment_features_pkey"].endswith("(feature_set_version, as_of, source, appointment_id)")
            assert set(now) == {"appointment_features_pkey", "appointment_features_training"}
            run(conn, "0033_features_key.rollback.sql")
            before = indexes(conn)
            assert before["appointment_features_pkey"].endswith("(feature_set_version, source, appointment_id, as_of)")
            assert "appointment_features_as_of" in before
        with engine.begin() as conn:
            run(conn, "0033_features_key.sql")
            assert indexes(conn) == now
    finally:
        engine.dispose()
