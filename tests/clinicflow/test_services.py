"""The container entrypoint: roles, Airflow's sign-in users, the MLflow server command line."""

from __future__ import annotations

import configparser
import json
import stat

import pytest

from clinicflow.errors import ConfigError
from clinicflow.services import (
    airflow_environment,
    airflow_users,
    command_for,
    mlflow_command,
    passwords_file,
    write_airflow_passwords,
)


def test_airflow_users_parse_and_bad_roles_are_refused():
    env = {"AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin, ops:op ,viewer:viewer"}
    assert airflow_users(env) == [("admin", "admin"), ("ops", "op"), ("viewer", "viewer")]
    with pytest.raises(ConfigError, match="'root:superuser' is not 'username:role'"):
        airflow_users({"AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "root:superuser"})


def test_passwords_file_is_written_from_the_environment_and_private(tmp_path):
    env = {"AIRFLOW_HOME": str(tmp_path), "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "boss:admin,look:viewer",
           "CLINICFLOW_AIRFLOW_ADMIN_PASSWORD": "s3cret-admin", "CLINICFLOW_AIRFLOW_VIEWER_PASSWORD": ""}
    path = write_airflow_passwords(env)
    assert path == passwords_file(env) == tmp_path / "simple_auth_manager_passwords.json.generated"
    assert json.loads(path.read_text()) == {"boss": "s3cret-admin"}  # Airflow generates the viewer's
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    other = {"AIRFLOW__CORE__AUTH_MANAGER": "airflow.providers.fab.auth_manager.fab_auth_manager.FabAuthManager"}
    assert write_airflow_passwords(other) is None


def test_monitoring_profile_turns_statsd_on(tmp_path):
    env = airflow_environment({"AIRFLOW_HOME": str(tmp_path), "CLINICFLOW_COMPOSE_PROFILES": "debug,monitoring"})
    assert env["AIRFLOW__METRICS__STATSD_ON"] == "True"
    assert "AIRFLOW__METRICS__STATSD_ON" not in airflow_environment({"AIRFLOW_HOME": str(tmp_path)})


def test_airflow_roles_run_airflow_commands(tmp_path):
    env = {"AIRFLOW_HOME": str(tmp_path)}
    assert command_for("worker", [], env)[-3:] == ["airflow", "celery", "worker"]
    assert command_for("api-server", [], env)[-2:] == ["airflow", "api-server"]
    assert command_for("airflow", ["dags", "list"], env)[-3:] == ["airflow", "dags", "list"]
    with pytest.raises(ConfigError, match="unknown service role 'webserver'"):
        command_for("webserver", [], env)


def mlflow_env(tmp_path, **extra):
    return {"CLINICFLOW_MLFLOW_BACKEND_STORE_URI": "postgresql://mlflow:pw@postgres:5432/mlflow",
            "CLINICFLOW_MLFLOW_AUTH_DATABASE_URI": "postgresql://mlflow:pw@postgres:5432/mlflow_auth",
            "CLINICFLOW_MLFLOW_ALLOWED_HOSTS": "mlflow,mlflow:*,localhost:*",
            "MLFLOW_AUTH_ADMIN_PASSWORD": "pw-admin", "MLFLOW_FLASK_SERVER_SECRET_KEY": "k",
            "CLINICFLOW_MLFLOW_STATE_DIR": str(tmp_path)} | extra


def test_mlflow_server_with_basic_auth_and_service_name_allowed(tmp_path):
    env = mlflow_env(tmp_path)
    command = mlflow_command(env)
    assert command[command.index("--allowed-hosts") + 1] == "mlflow,mlflow:*,localhost:*"
    assert command[command.index("--app-name") + 1] == "basic-auth"
    assert "--serve-artifacts" in command
    config = configparser.ConfigParser()
    config.read(env["MLFLOW_AUTH_CONFIG_PATH"])
    assert config["mlflow"]["database_uri"].endswith("/mlflow_auth")
    assert config["mlflow"]["default_permission"] == "READ"
    assert "admin_password" not in config["mlflow"]  # read from MLFLOW_AUTH_ADMIN_PASSWORD, never written


def test_mlflow_without_auth_and_clear_errors(tmp_path):
    assert "--app-name" not in mlflow_command(mlflow_env(tmp_path, CLINICFLOW_MLFLOW_AUTH="none"))
    with pytest.raises(ConfigError, match="MLFLOW_AUTH_ADMIN_PASSWORD"):
        mlflow_command(mlflow_env(tmp_path, MLFLOW_AUTH_ADMIN_PASSWORD=""))
    with pytest.raises(ConfigError, match="CLINICFLOW_MLFLOW_BACKEND_STORE_URI is not set"):
        mlflow_command({})
    with pytest.raises(ConfigError, match="'basic-auth' or 'none'"):
        mlflow_command(mlflow_env(tmp_path, CLINICFLOW_MLFLOW_AUTH="ldap"))
