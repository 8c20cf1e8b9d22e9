"""Entry point of every ClinicFlow container: ``python -m clinicflow.services ROLE [ARGS]``.

The Docker image's ENTRYPOINT runs this module and ``docker-compose.yaml`` gives each service its
role as the command. The CI proof (``deploy/local_stack.py``) starts the same roles as local
processes with the environment that ``docker-compose.yaml`` defines, so the two cannot drift.

Roles:

================  ===============================================================================
``check``         only the production check of every secret (the compose ``preflight`` service)
``init``          wait for PostgreSQL, ``airflow db migrate``, ``clinicflow db upgrade``; then exit
``api-server``    Airflow API server and UI (``airflow api-server``)
``scheduler``     ``airflow scheduler``
``dag-processor`` ``airflow dag-processor``
``triggerer``     ``airflow triggerer``
``worker``        Celery worker (``airflow celery worker``)
``mlflow``        MLflow tracking server on PostgreSQL with proxied artifacts (basic auth by default)
``airflow ...``   any Airflow command, e.g. ``airflow dags unpause clinicflow_ingest``
``clinicflow ...`` any ClinicFlow command, e.g. ``clinicflow db status``
================  ===============================================================================

Every role first runs :func:`clinicflow.security.enforce`: with ``CLINICFLOW_ENV=production`` a
service refuses to start with an example or weak secret. Then the role's process replaces this one
(``exec``), so signals reach Airflow, Celery or MLflow directly.
"""

from __future__ import annotations

import configparser
import json
import logging
import os
import sys
import tempfile
import time
from collections.abc import Mapping, MutableMapping, Sequence
from pathlib import Path

from clinicflow.errors import ClinicFlowError, ConfigError

log = logging.getLogger("clinicflow.services")

AIRFLOW_COMMANDS: dict[str, list[str]] = {
    "api-server": ["api-server"],
    "scheduler": ["scheduler"],
    "dag-processor": ["dag-processor"],
    "triggerer": ["triggerer"],
    "worker": ["celery", "worker"],
}
ROLES = ("check", "init", *AIRFLOW_COMMANDS, "mlflow", "airflow", "clinicflow")
SIMPLE_AUTH_MANAGER = "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
#: Airflow simple-auth-manager role -> variable holding the password of the user with that role.
PASSWORD_VARIABLES = {
    "admin": "CLINICFLOW_AIRFLOW_ADMIN_PASSWORD",
    "op": "CLINICFLOW_AIRFLOW_OP_PASSWORD",
    "user": "CLINICFLOW_AIRFLOW_USER_PASSWORD",
    "viewer": "CLINICFLOW_AIRFLOW_VIEWER_PASSWORD",
}


# --------------------------------------------------------------------------------------------------
# Airflow


def airflow_users(env: Mapping[str, str]) -> list[tuple[str, str]]:
    """``(username, role)`` pairs of ``AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS`` (``name:role,…``)."""
    text = env.get("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS", "admin:admin")
    users = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, _, role = item.partition(":")
        if not name or role not in PASSWORD_VARIABLES:
            raise ConfigError(
                f"AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS: {item!r} is not 'username:role' with role one of "
                f"{', '.join(PASSWORD_VARIABLES)}"
            )
        users.append((name, role))
    return users


def passwords_file(env: Mapping[str, str]) -> Path:
    configured = env.get("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE")
    if configured:
        return Path(configured)
    return Path(env.get("AIRFLOW_HOME", str(Path.home() / "airflow"))) / "simple_auth_manager_passwords.json.generated"


def write_airflow_passwords(env: Mapping[str, str]) -> Path | None:
    """Write the simple auth manager's passwords file from the environment (mode 0600).

    Users whose password variable is empty are left out: Airflow then generates a password and prints
    it (development only; production refuses an empty admin password before this runs).
    """
    if env.get("AIRFLOW__CORE__AUTH_MANAGER", SIMPLE_AUTH_MANAGER) != SIMPLE_AUTH_MANAGER:
        return None
    passwords = {}
    for name, role in airflow_users(env):
        password = env.get(PASSWORD_VARIABLES[role], "")
        if password:
            passwords[name] = password
    path = passwords_file(env)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".passwords-")
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(json.dumps(passwords) + "\n")
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)
    return path


def airflow_environment(env: MutableMapping[str, str]) -> MutableMapping[str, str]:
    """Fill in what the Airflow processes need beyond what compose sets."""
    profiles = {p.strip() for p in env.get("CLINICFLOW_COMPOSE_PROFILES", "").split(",")}
    if "monitoring" in profiles:
        env.setdefault("AIRFLOW__METRICS__STATSD_ON", "True")
    Path(env.setdefault("AIRFLOW_HOME", str(Path.home() / "airflow"))).mkdir(parents=True, exist_ok=True)
    return env


# --------------------------------------------------------------------------------------------------
# MLflow


def mlflow_command(env: MutableMapping[str, str]) -> list[str]:
    """The ``mlflow server`` command line; writes the basic-auth config when auth is on."""
    backend = env.get("CLINICFLOW_MLFLOW_BACKEND_STORE_URI", "")
    if not backend:
        raise ConfigError(
            "CLINICFLOW_MLFLOW_BACKEND_STORE_URI is not set: the MLflow server's database, "
            "e.g. postgresql://mlflow:password@postgres:5432/mlflow"
        )
    command = [
        sys.executable, "-m", "mlflow", "server",
        "--backend-store-uri", backend,
        "--serve-artifacts",
        "--artifacts-destination", env.get("CLINICFLOW_MLFLOW_ARTIFACTS_DESTINATION", "/mlflow/artifacts"),
        "--host", env.get("CLINICFLOW_MLFLOW_BIND", "0.0.0.0"),
        "--port", env.get("CLINICFLOW_MLFLOW_PORT", "5000"),
        "--workers", env.get("CLINICFLOW_MLFLOW_WORKERS", "2"),
    ]
    if env.get("CLINICFLOW_MLFLOW_ALLOWED_HOSTS"):
        command += ["--allowed-hosts", env["CLINICFLOW_MLFLOW_ALLOWED_HOSTS"]]
    if env.get("CLINICFLOW_MLFLOW_CORS_ALLOWED_ORIGINS"):
        command += ["--cors-allowed-origins", env["CLINICFLOW_MLFLOW_CORS_ALLOWED_ORIGINS"]]
    auth = env.get("CLINICFLOW_MLFLOW_AUTH", "basic-auth")
    if auth == "basic-auth":
        env["MLFLOW_AUTH_CONFIG_PATH"] = str(write_mlflow_auth_config(env))
        command += ["--app-name", "basic-auth"]
    elif auth != "none":
        raise ConfigError(f"CLINICFLOW_MLFLOW_AUTH: expected 'basic-auth' or 'none', got {auth!r}")
    return command


def write_mlflow_auth_config(env: Mapping[str, str]) -> Path:
    """MLflow's basic-auth ini: users in their own database, new users may read everything."""
    missing = [name for name in ("CLINICFLOW_MLFLOW_AUTH_DATABASE_URI", "MLFLOW_AUTH_ADMIN_PASSWORD",
                                 "MLFLOW_FLASK_SERVER_SECRET_KEY") if not env.get(name)]
    if missing:
        raise ConfigError(
            "MLflow basic auth (CLINICFLOW_MLFLOW_AUTH=basic-auth) needs " + ", ".join(missing)
            + " (see .env.example), or set CLINICFLOW_MLFLOW_AUTH=none for a server without sign-in"
        )
    config = configparser.ConfigParser()
    config["mlflow"] = {
        "default_permission": env.get("CLINICFLOW_MLFLOW_DEFAULT_PERMISSION", "READ"),
        "database_uri": env["CLINICFLOW_MLFLOW_AUTH_DATABASE_URI"],
        "admin_username": env.get("MLFLOW_AUTH_ADMIN_USERNAME", "admin"),
        "authorization_function": "mlflow.server.auth:authenticate_request_basic_auth",
    }
    folder = Path(env.get("CLINICFLOW_MLFLOW_STATE_DIR") or tempfile.mkdtemp(prefix="mlflow-auth-"))
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "basic_auth.ini"
    with path.open("w", encoding="utf-8") as fh:
        config.write(fh)
    os.chmod(path, 0o600)
    return path


# --------------------------------------------------------------------------------------------------
# init


def wait_for_database(url: str, what: str, timeout: float) -> None:
    """Retry until PostgreSQL at ``url`` answers, or raise after ``timeout`` seconds."""
    import sqlalchemy as sa

    from clinicflow.db import mask

    engine = sa.create_engine(url, poolclass=sa.pool.NullPool, connect_args={"connect_timeout": 5})
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                with engine.connect() as conn:
                    conn.execute(sa.text("SELECT 1"))
                return
            except sa.exc.OperationalError as exc:
                if time.monotonic() > deadline:
                    reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
                    raise ClinicFlowError(
                        f"{what} at {mask(url)} did not answer within {timeout:.0f}s: {reason}"
                    ) from None
                time.sleep(2)
    finally:
        engine.dispose()


def run_init(env: MutableMapping[str, str]) -> int:
    """Prepare the databases: Airflow's metadata and the warehouse schema. Idempotent."""
    import subprocess

    from clinicflow import migrations

    started = time.perf_counter()
    timeout = float(env.get("CLINICFLOW_INIT_WAIT_SECONDS", "120"))
    for variable, what in (("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "Airflow's database"),
                           ("CLINICFLOW_DATABASE_URL", "the warehouse")):
        if not env.get(variable):
            raise ConfigError(f"{variable} is not set: the init service needs {what}")
        wait_for_database(env[variable], what, timeout)
    airflow_environment(env)
    print("init: airflow db migrate", flush=True)
    result = subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], env=dict(env))
    if result.returncode != 0:
        raise ClinicFlowError(f"`airflow db migrate` failed with exit code {result.returncode} (output above)")
    print("init: clinicflow db upgrade", flush=True)
    applied = migrations.upgrade()
    print(f"init: done in {time.perf_counter() - started:.1f}s ({len(applied)} warehouse migration(s) applied)",
          flush=True)
    return 0


# --------------------------------------------------------------------------------------------------


def command_for(role: str, args: Sequence[str], env: MutableMapping[str, str]) -> list[str]:
    """The command line that ``role`` runs (``env`` is completed in place)."""
    if role in AIRFLOW_COMMANDS:
        airflow_environment(env)
        write_airflow_passwords(env)
        return [sys.executable, "-m", "airflow", *AIRFLOW_COMMANDS[role], *args]
    if role == "airflow":
        airflow_environment(env)
        return [sys.executable, "-m", "airflow", *args]
    if role == "clinicflow":
        return [sys.executable, "-m", "clinicflow.cli", *args]
    if role == "mlflow":
        return mlflow_command(env) + list(args)
    raise ConfigError(f"unknown service role {role!r}; expected one of {', '.join(ROLES)}")


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if argv else 2
    role, args = argv[0], argv[1:]
    from clinicflow import logs, security

    logs.configure(os.environ.get("CLINICFLOW_LOG_LEVEL", "INFO").upper())
    env = dict(os.environ)
    try:
        if role not in ROLES:
            raise ConfigError(f"unknown service role {role!r}; expected one of {', '.join(ROLES)}")
        security.enforce("check" if role == "check" else role, env)
        if role == "check":
            print("check: secrets are acceptable" + (" for production" if security.is_production(env) else ""))
            return 0
        if role == "init":
            return run_init(env)
        command = command_for(role, args, env)
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr, flush=True)
        return 2
    except ClinicFlowError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 1
    print(f"clinicflow.services: starting {role}: {' '.join(command[:6])}{' …' if len(command) > 6 else ''}",
          flush=True)
    os.execve(command[0], command, env)
    return 0  # pragma: no cover - execve does not return


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
