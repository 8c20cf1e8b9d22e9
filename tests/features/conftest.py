"""A migrated warehouse database of its own per test module (tests write core rows freely)."""

from __future__ import annotations

import secrets

import pytest
import sqlalchemy as sa


@pytest.fixture(scope="module")
def own_warehouse(server_url: sa.URL, test_db_prefix: str):
    """Engine of a fresh, migrated warehouse database, dropped after the module."""
    from clinicflow import db, migrations

    name = f"{test_db_prefix}_fw_{secrets.token_hex(3)}"
    url = server_url.set(database=name)
    migrations.upgrade(url)
    engine = db.engine_for_url(url)
    yield engine
    engine.dispose()
    admin = sa.create_engine(server_url, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()
