"""The environment Airflow runs in for local use: a project-local AIRFLOW_HOME, metadata in its own
database, ``dags/`` as the DAG folder and example DAGs off.

``clinicflow airflow …`` runs any Airflow command in that environment, so that
``clinicflow airflow db migrate`` or ``clinicflow airflow dags list`` need no set-up by hand.
Variables already set in the environment win over these defaults (docker-compose sets its own).
"""

from __future__ import annotations

import os
from pathlib import Path

from clinicflow import db
from clinicflow.paths import DAGS_DIR
from clinicflow.settings import ENV_FILE_VARIABLE, Settings, get_settings


def airflow_env(settings: Settings | None = None) -> dict[str, str]:
    """Environment variables for Airflow processes (merged over ``os.environ``)."""
    settings = settings or get_settings()
    url = db.url_for("airflow", settings)
    db.ensure_database(url)
    home = settings.home / "airflow"
    home.mkdir(parents=True, exist_ok=True)
    defaults = {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS_DIR),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": url.render_as_string(hide_password=False),
        "AIRFLOW__CORE__DEFAULT_TIMEZONE": settings.timezone,
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
        "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "True",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
        "CLINICFLOW_HOME": str(settings.home),
    }
    env_file = Path(os.environ.get(ENV_FILE_VARIABLE, ".env")).resolve()
    if env_file.exists():
        defaults[ENV_FILE_VARIABLE] = str(env_file)
    merged = dict(os.environ)
    for key, value in defaults.items():
        merged.setdefault(key, value)
    return merged


def apply(settings: Settings | None = None) -> dict[str, str]:
    """Put Airflow's environment into this process (before ``import airflow``)."""
    env = airflow_env(settings)
    os.environ.update(env)
    return env
