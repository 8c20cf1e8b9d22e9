"""Test fixtures: a real PostgreSQL for every test that needs one.

The server is the one named by ``CLINICFLOW_TEST_DATABASE_URL`` when set (CI sets it to the
machine's PostgreSQL), else an embedded PostgreSQL in ``.clinicflow/test-pgdata``. Each test session
gets fresh databases named ``cft_<random>`` (warehouse) and ``cft_<random>_airflow`` / ``_mlflow`` /
``_optuna`` / ``_src…``; they are dropped at the end of the session.

The environment is set in ``pytest_configure``, before anything imports Airflow, so that Airflow
reads its test configuration (metadata database, home, DAG folder) at import time.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import sqlalchemy as sa

REPO = Path(__file__).resolve().parent.parent
TEST_URL_VARIABLE = "CLINICFLOW_TEST_DATABASE_URL"

_state: dict[str, object] = {}


def _server_url() -> sa.URL:
    configured = os.environ.get(TEST_URL_VARIABLE, "").strip()
    if configured:
        return sa.make_url(configured).set(drivername="postgresql+psycopg2")
    from clinicflow.db import start_embedded_server
    from clinicflow.settings import load_settings

    home = REPO / ".clinicflow" / "test-home"
    home.mkdir(parents=True, exist_ok=True)
    return start_embedded_server(load_settings(home=home, database_url=None))


def pytest_configure(config: pytest.Config) -> None:
    # Start from a clean slate: no user settings, no .env, no Airflow config leak into tests.
    for key in list(os.environ):
        if (key.startswith(("CLINICFLOW_", "AIRFLOW", "MLFLOW_")) and key != TEST_URL_VARIABLE):
            del os.environ[key]
    home = Path(tempfile.mkdtemp(prefix="clinicflow-test-"))
    server = _server_url()
    name = f"cft_{secrets.token_hex(4)}"
    warehouse = server.set(database=name)
    os.environ.update({
        "CLINICFLOW_ENV_FILE": str(home / "no.env"),
        "CLINICFLOW_HOME": str(home),
        "CLINICFLOW_DATABASE_URL": warehouse.render_as_string(hide_password=False),
        "CLINICFLOW_PSEUDONYM_SECRET": "test-secret-" + secrets.token_hex(8),
        "CLINICFLOW_LOG_LEVEL": "INFO",
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
        "GIT_PYTHON_REFRESH": "quiet",
    })
    from clinicflow import db
    from clinicflow.airflow_env import apply

    db.ensure_database(warehouse)
    env = apply()
    _state.update(server=server, name=name, home=home, warehouse=warehouse, airflow_home=env["AIRFLOW_HOME"])


def pytest_unconfigure(config: pytest.Config) -> None:
    if "server" not in _state:
        return
    from clinicflow import db

    db.dispose_engines()
    server: sa.URL = _state["server"]  # type: ignore[assignment]
    admin = sa.create_engine(server.set(database="postgres"), isolation_level="AUTOCOMMIT",
                             poolclass=sa.pool.NullPool)
    try:
        with admin.connect() as conn:
            names = conn.execute(
                sa.text("SELECT datname FROM pg_database WHERE datname LIKE :p"), {"p": f"{_state['name']}%"}
            ).scalars().all()
            for name in names:
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()
    shutil.rmtree(_state["home"], ignore_errors=True)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def server_url() -> sa.URL:
    """URL of the test PostgreSQL server (database ``postgres``)."""
    return _state["server"].set(database="postgres")  # type: ignore[union-attr]


@pytest.fixture(scope="session")
def warehouse_url() -> sa.URL:
    return _state["warehouse"]  # type: ignore[return-value]


@pytest.fixture(scope="session")
def test_db_prefix() -> str:
    """Prefix of this session's databases; a database named with it is dropped at the end."""
    return str(_state["name"])


@pytest.fixture(scope="session")
def migrated_warehouse(warehouse_url: sa.URL) -> sa.Engine:
    """The session's warehouse with every migration applied."""
    from clinicflow import db, migrations

    migrations.upgrade()
    return db.get_engine()


@pytest.fixture()
def scratch_database(server_url: sa.URL, test_db_prefix: str):
    """An empty database for one test, dropped afterwards."""
    name = f"{test_db_prefix}_scratch_{secrets.token_hex(3)}"
    url = server_url.set(database=name)
    admin = sa.create_engine(server_url, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield url
    finally:
        from clinicflow import db

        db.dispose_engines()
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(scope="session")
def airflow_db(migrated_warehouse) -> str:
    """Airflow's metadata database for this session, migrated with ``airflow db migrate``."""
    result = subprocess.run(
        [sys.executable, "-m", "airflow", "db", "migrate"], env=dict(os.environ),
        capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return str(_state["airflow_home"])


@pytest.fixture()
def settings_env(monkeypatch: pytest.MonkeyPatch):
    """Set CLINICFLOW_* variables for one test; settings are re-read before and after."""
    from clinicflow.settings import get_settings

    get_settings.cache_clear()

    def setter(**values: str) -> None:
        for key, value in values.items():
            monkeypatch.setenv(f"CLINICFLOW_{key.upper()}", value)
        get_settings.cache_clear()

    yield setter
    get_settings.cache_clear()
