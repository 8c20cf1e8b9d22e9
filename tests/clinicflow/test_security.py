"""Production checks: example, default, short or malformed secrets stop a service in production."""

from __future__ import annotations

import io
import os
import secrets
import subprocess
import sys

import pytest
from cryptography.fernet import Fernet

from clinicflow.errors import ConfigError
from clinicflow.security import EXAMPLE_FERNET_KEY, SECRETS, check_value, enforce, find_problems

BY_NAME = {s.variable: s for s in SECRETS}


def good_env() -> dict[str, str]:
    """Every secret with a freshly generated, acceptable value."""
    env = {"CLINICFLOW_ENV": "production"}
    for secret in SECRETS:
        if secret.kind == "fernet":
            env[secret.variable] = Fernet.generate_key().decode()
        elif secret.kind == "url":
            env[secret.variable] = f"postgresql://user:{secrets.token_urlsafe(18)}@db:5432/x"
        else:
            env[secret.variable] = secrets.token_urlsafe(40)
    env["AIRFLOW__CELERY__BROKER_URL"] = f"amqp://clinicflow:{secrets.token_urlsafe(18)}@rabbitmq:5672/clinicflow"
    return env


def test_generated_secrets_pass_for_every_role():
    env = good_env()
    for role in ("check", "init", "api-server", "scheduler", "worker", "mlflow"):
        assert find_problems(env, role) == [], role
        assert enforce(role, env) == []


@pytest.mark.parametrize(("variable", "value", "why"), [
    ("CLINICFLOW_PSEUDONYM_SECRET", "change-me-to-a-long-random-string", "example value"),
    ("AIRFLOW__API_AUTH__JWT_SECRET", "change-me-airflow-jwt-secret", "example value"),
    ("AIRFLOW__API_AUTH__JWT_SECRET", "short-but-random-7f3a", "too short"),
    ("AIRFLOW__CORE__FERNET_KEY", EXAMPLE_FERNET_KEY, "example value"),
    ("AIRFLOW__CORE__FERNET_KEY", "not-a-fernet-key", "is not a Fernet key"),
    ("CLINICFLOW_AIRFLOW_ADMIN_PASSWORD", "admin", "well-known default"),
    ("POSTGRES_PASSWORD", "postgres", "well-known default"),
    ("AIRFLOW__CELERY__BROKER_URL", "amqp://guest:guest@rabbitmq:5672//", "well-known default 'guest'"),
    ("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "postgresql://airflow@postgres/airflow", "no password in the URL"),
    ("CLINICFLOW_DATABASE_URL", "postgresql://u:change-me-clinicflow-db@postgres/clinicflow", "example value"),
    ("CLINICFLOW_MLFLOW_BACKEND_STORE_URI", "postgresql://m:p%40ss%2Fword-long-enough@pg/mlflow",
     "need escaping in a URL"),
])
def test_production_refuses_bad_values_naming_the_variable(variable, value, why):
    env = good_env() | {variable: value}
    problems = find_problems(env, "check")
    assert len(problems) == 1 and problems[0].startswith(variable) and why in problems[0], problems
    with pytest.raises(ConfigError) as err:
        enforce("check", env)
    assert variable in str(err.value) and "production" in str(err.value)


def test_missing_required_secret_is_named_for_the_role_that_needs_it():
    env = good_env()
    del env["CLINICFLOW_AIRFLOW_ADMIN_PASSWORD"]
    assert find_problems(env, "scheduler") == []
    (problem,) = find_problems(env, "api-server")
    assert problem.startswith("CLINICFLOW_AIRFLOW_ADMIN_PASSWORD is not set")


def test_development_only_warns():
    env = good_env() | {"CLINICFLOW_ENV": "development", "POSTGRES_PASSWORD": "change-me-postgres"}
    out = io.StringIO()
    problems = enforce("check", env, stream=out)
    assert len(problems) == 1
    assert "WARNING" in out.getvalue() and "POSTGRES_PASSWORD" in out.getvalue()


def test_check_value_accepts_a_real_fernet_key():
    assert check_value(BY_NAME["AIRFLOW__CORE__FERNET_KEY"], Fernet.generate_key().decode()) is None


def run_service(role: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("CLINICFLOW_", "AIRFLOW", "MLFLOW"))}
    return subprocess.run([sys.executable, "-m", "clinicflow.services", role], env=clean | env,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("role", ["check", "api-server", "worker", "mlflow"])
def test_services_refuse_to_start_in_production_with_example_secrets(role, tmp_path):
    """The container entrypoint stops before Airflow or MLflow starts, with exit code 2 and the reason."""
    env = good_env() | {"AIRFLOW__API_AUTH__JWT_SECRET": "change-me-airflow-jwt-secret",
                        "MLFLOW_AUTH_ADMIN_PASSWORD": "change-me-mlflow-admin", "AIRFLOW_HOME": str(tmp_path)}
    result = run_service(role, env)
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"refusing to start {role!r} in production" in result.stderr
    assert "AIRFLOW__API_AUTH__JWT_SECRET" in result.stderr and "MLFLOW_AUTH_ADMIN_PASSWORD" in result.stderr
    assert "starting" not in result.stdout


def test_preflight_passes_with_real_secrets():
    result = run_service("check", good_env())
    assert result.returncode == 0, result.stderr
    assert "secrets are acceptable for production" in result.stdout
