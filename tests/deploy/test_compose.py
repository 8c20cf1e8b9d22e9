"""docker-compose.yaml, the Dockerfile and .env.example: accepted by Docker Compose, complete, consistent."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from clinicflow import security, services
from clinicflow.security import SECRETS, find_problems

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "docker-compose.yaml"
ENV_EXAMPLE = REPO / ".env.example"
VARIABLE = re.compile(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?[-?+]((?:[^{}]|\{[^{}]*\})*))?\}")
AIRFLOW = ("airflow-apiserver", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer", "airflow-worker")


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def compose_defaults() -> dict[str, str]:
    found: dict[str, str] = {}
    for match in VARIABLE.finditer(COMPOSE.read_text()):
        found.setdefault(match.group(1), match.group(2) or "")
    return found


def env_example() -> dict[str, str]:
    """Every NAME=value of .env.example, commented-out ones (`# NAME=value`) included."""
    values = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        match = re.match(r"^#?\s*([A-Z][A-Z0-9_]*)=(.*)$", line.strip())
        if match:
            values.setdefault(match.group(1), match.group(2).strip())
    return values


def run_compose(command: list[str], *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*command, "--project-directory", str(REPO), "-f", str(COMPOSE), *args],
                          capture_output=True, text=True, timeout=120, env=env, cwd=REPO)


# --------------------------------------------------------------------------------------------------
# the real Docker Compose


@pytest.mark.parametrize("profile", ["", "monitoring"])
def test_docker_compose_accepts_the_file(compose_command, profile):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CLINICFLOW_", "AIRFLOW", "MLFLOW"))}
    env["COMPOSE_PROFILES"] = profile
    for extra in ([], ["--env-file", str(ENV_EXAMPLE)]):
        result = run_compose(compose_command, *extra, "config", "--quiet", env=env)
        assert result.returncode == 0, result.stderr
        assert "is not set" not in result.stderr, result.stderr
    services_listed = run_compose(compose_command, "config", "--services", env=env).stdout.split()
    expected = {"preflight", "postgres", "rabbitmq", "mlflow", "airflow-init", *AIRFLOW}
    if profile:
        expected |= {"statsd-exporter", "prometheus", "grafana"}
    assert set(services_listed) == expected


def test_local_stack_interpolates_like_docker_compose(compose_command, local_stack, tmp_path):
    """The proof's own interpolation gives each service exactly the environment Compose would."""
    import sqlalchemy as sa

    variables = local_stack.proof_variables(sa.make_url("postgresql://postgres@127.0.0.1:5432/postgres"),
                                            "cft_interp", tmp_path)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CLINICFLOW_", "AIRFLOW", "MLFLOW"))}
    env.update(variables)
    result = run_compose(compose_command, "config", "--format", "json", env=env)
    assert result.returncode == 0, result.stderr
    resolved = json.loads(result.stdout)["services"]
    spec = local_stack.load_compose()
    for name in ("preflight", "postgres", "mlflow", "airflow-init", *AIRFLOW):
        ours = local_stack.service(spec, name, variables)
        theirs = {k: "" if v is None else str(v) for k, v in resolved[name]["environment"].items()}
        assert ours.environment == theirs, name
        assert ours.command == (resolved[name].get("command") or []), name


# --------------------------------------------------------------------------------------------------
# structure


def test_airflow_runs_celery_on_rabbitmq_with_results_in_postgres(compose):
    env = compose["services"]["airflow-worker"]["environment"]
    assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert env["AIRFLOW__CELERY__BROKER_URL"].startswith("amqp://")
    assert "${RABBITMQ_HOST:-rabbitmq}" in env["AIRFLOW__CELERY__BROKER_URL"]
    assert env["AIRFLOW__CELERY__RESULT_BACKEND"].startswith("db+postgresql://")
    assert compose["services"]["rabbitmq"]["image"].startswith("${RABBITMQ_IMAGE:-rabbitmq:")


def test_every_clinicflow_service_runs_a_known_role_after_preflight(compose):
    image = compose["services"]["preflight"]["image"]
    for name, spec in compose["services"].items():
        if spec.get("image") != image:
            continue
        assert spec["command"][0] in services.ROLES, name
        if name != "preflight":
            assert "preflight" in spec.get("depends_on", {}), f"{name} must wait for the secret check"
    for name in ("postgres", "rabbitmq", "grafana", "prometheus", "statsd-exporter"):
        assert "preflight" in compose["services"][name]["depends_on"], name


def test_each_database_is_separate(compose):
    airflow = compose["services"]["airflow-scheduler"]["environment"]
    mlflow = compose["services"]["mlflow"]["environment"]
    urls = [airflow["CLINICFLOW_DATABASE_URL"], airflow["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"],
            mlflow["CLINICFLOW_MLFLOW_BACKEND_STORE_URI"], mlflow["CLINICFLOW_MLFLOW_AUTH_DATABASE_URI"]]
    databases = [url.rsplit("/", 1)[1] for url in urls]
    assert len(set(databases)) == 4, databases


def test_published_ports_bind_to_localhost_by_default(compose):
    for name, spec in compose["services"].items():
        for port in spec.get("ports", []):
            assert port.startswith("${BIND_ADDRESS:-127.0.0.1}:"), f"{name} publishes {port} on every interface"


def test_host_paths_exist(compose):
    for name, spec in compose["services"].items():
        for volume in spec.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith("./deploy"):
                assert (REPO / source).exists(), f"{name} mounts missing {source}"
    assert (REPO / "deploy/postgres/init-databases.sh").stat().st_mode & 0o111


# --------------------------------------------------------------------------------------------------
# variables and secrets


def test_env_example_lists_every_compose_variable_with_its_default():
    documented = env_example()
    for name, default in compose_defaults().items():
        assert name in documented, f"{name} is used by docker-compose.yaml but missing from .env.example"
        assert documented[name] == default, f"{name}: .env.example says {documented[name]!r}, compose {default!r}"


def test_every_example_secret_is_refused_in_production(compose, local_stack):
    """`cp .env.example .env` with CLINICFLOW_ENV=production: preflight names every secret left as is."""
    documented = env_example()
    templates = compose["services"]["preflight"]["environment"]
    env = {k: local_stack.interpolate(v, dict(documented, CLINICFLOW_ENV="production")) for k, v in templates.items()}
    problems = "\n".join(find_problems(env, "check"))
    secret_variables = [name for name in documented
                        if name.endswith(("_PASSWORD", "_SECRET", "_SECRET_KEY", "_FERNET_KEY"))]
    assert len(secret_variables) >= 12
    for name in secret_variables:
        users = [k for k, template in templates.items() if re.search(r"\$\{" + name + r"\b", template)]
        assert users, f"{name} reaches no container that preflight checks"
        assert any(f"{user} (" in problems for user in users), f"the example {name} would be accepted"


def test_preflight_sees_every_secret(compose):
    env = compose["services"]["preflight"]["environment"]
    for secret in SECRETS:
        assert secret.variable in env, f"preflight does not check {secret.variable}"


def test_production_refuses_the_compose_defaults(compose, local_stack):
    env = {k: local_stack.interpolate(v, {"CLINICFLOW_ENV": "production"})
           for k, v in compose["services"]["preflight"]["environment"].items()}
    problems = find_problems(env, "check")
    assert len(problems) >= len(SECRETS) - 1
    with pytest.raises(security.ConfigError, match="refusing to start 'check' in production"):
        security.enforce("check", env)


# --------------------------------------------------------------------------------------------------
# image


def test_dockerfile_matches_the_lock_file():
    dockerfile = (REPO / "Dockerfile").read_text()
    image = re.search(r"^ARG AIRFLOW_IMAGE=apache/airflow:(\d+\.\d+\.\d+)-python(\d)\.(\d+)$", dockerfile, re.M)
    assert image, "the Dockerfile must pin apache/airflow:<version>-python<X.Y>"
    version, major, minor = image.groups()
    lock = REPO / "requirements" / f"py{major}{minor}.txt"
    assert f"requirements/py{major}{minor}.txt" in dockerfile
    pinned = re.search(r"^apache-airflow==(\S+)$", lock.read_text(), re.M).group(1)
    assert version == pinned, f"base image has Airflow {version}, {lock.name} pins {pinned}"
    assert 'ENTRYPOINT ["/usr/bin/dumb-init", "--", "python", "-m", "clinicflow.services"]' in dockerfile


def test_dockerignore_keeps_secrets_and_state_out():
    ignored = (REPO / ".dockerignore").read_text().split()
    for entry in (".env", ".venv", ".clinicflow", ".git"):
        assert entry in ignored
