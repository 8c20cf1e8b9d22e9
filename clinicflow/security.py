"""Production checks run by every service before it starts: no example secrets, no weak ones.

Every ClinicFlow container (``python -m clinicflow.services ROLE``, see ``clinicflow.services``) calls
:func:`enforce` first. With ``CLINICFLOW_ENV=production`` a service refuses to start while any secret
it uses is missing, still has the example value from ``.env.example`` / ``docker-compose.yaml``, is a
well-known default (``guest``, ``admin``, ``airflow``, ...) or is too short; the message names every
variable to fix and how to generate a value. In development the same findings are printed as
warnings and the service starts.

The secrets checked here belong to the processes ClinicFlow launches (Airflow, MLflow, PostgreSQL,
RabbitMQ, Grafana), so they are read from the environment mapping that the service will get, not
from ClinicFlow's settings object.
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal, TextIO
from urllib.parse import unquote, urlsplit

from clinicflow.errors import ConfigError
from clinicflow.settings import EXAMPLE_SECRETS

log = logging.getLogger(__name__)

Kind = Literal["password", "key", "fernet", "url"]

#: A Fernet key that is valid but public: the example in ``.env.example``. Refused in production.
EXAMPLE_FERNET_KEY = "ZXhhbXBsZS1mZXJuZXQta2V5LWRvLW5vdC11c2UtISE="

#: Every example value shipped in ``.env.example`` and as a default in ``docker-compose.yaml``
#: (a test checks that each of them is refused here). Anything starting with ``change-me`` is too.
EXAMPLE_VALUES: frozenset[str] = frozenset(EXAMPLE_SECRETS | {EXAMPLE_FERNET_KEY})

#: Defaults of the images and tutorials: refused as passwords in production.
WELL_KNOWN_DEFAULTS = frozenset({
    "admin", "airflow", "clinicflow", "changeme", "example", "grafana", "guest", "mlflow", "password",
    "postgres", "rabbitmq", "root", "secret", "test",
})

MIN_LENGTH: dict[Kind, int] = {"password": 12, "key": 32, "fernet": 0, "url": 12}

GENERATE_HINT = {
    "password": "python3 -c 'import secrets; print(secrets.token_urlsafe(24))'",
    "key": "python3 -c 'import secrets; print(secrets.token_urlsafe(48))'",
    "fernet": "python3 -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())'",
    "url": "a password made with python3 -c 'import secrets; print(secrets.token_urlsafe(24))'",
}

#: Characters allowed in passwords that are embedded in connection URLs without escaping.
URL_SAFE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")


@dataclass(frozen=True)
class Secret:
    variable: str
    kind: Kind
    what: str
    #: Service roles that cannot run without it (checked when present for every other role).
    required_by: frozenset[str] = frozenset()
    #: Minimum length, when it differs from the kind's default.
    min_length: int | None = None


AIRFLOW_ROLES = frozenset({"init", "api-server", "scheduler", "dag-processor", "triggerer", "worker", "airflow"})
PIPELINE_ROLES = frozenset({"init", "worker", "clinicflow"})

SECRETS: tuple[Secret, ...] = (
    Secret("CLINICFLOW_PSEUDONYM_SECRET", "key", "HMAC key that pseudonymises patient ids", PIPELINE_ROLES, 16),
    Secret("CLINICFLOW_DATABASE_URL", "url", "warehouse connection of the pipeline", PIPELINE_ROLES),
    Secret("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "url", "Airflow metadata database", AIRFLOW_ROLES),
    Secret("AIRFLOW__CELERY__BROKER_URL", "url", "Celery broker (RabbitMQ)", AIRFLOW_ROLES),
    Secret("AIRFLOW__CELERY__RESULT_BACKEND", "url", "Celery result backend", AIRFLOW_ROLES),
    Secret("AIRFLOW__CORE__FERNET_KEY", "fernet", "key that encrypts Airflow connections and variables",
           AIRFLOW_ROLES),
    Secret("AIRFLOW__API_AUTH__JWT_SECRET", "key", "key that signs Airflow's API and task tokens", AIRFLOW_ROLES),
    Secret("AIRFLOW__API__SECRET_KEY", "key", "Airflow API server session key", AIRFLOW_ROLES),
    Secret("CLINICFLOW_AIRFLOW_ADMIN_PASSWORD", "password", "password of the Airflow admin user",
           frozenset({"api-server"})),
    Secret("CLINICFLOW_AIRFLOW_VIEWER_PASSWORD", "password", "password of the Airflow read-only user"),
    Secret("CLINICFLOW_MLFLOW_BACKEND_STORE_URI", "url", "MLflow tracking and registry database",
           frozenset({"mlflow"})),
    Secret("CLINICFLOW_MLFLOW_AUTH_DATABASE_URI", "url", "MLflow users and permissions database"),
    Secret("MLFLOW_AUTH_ADMIN_PASSWORD", "password", "password of the MLflow admin user"),
    Secret("MLFLOW_FLASK_SERVER_SECRET_KEY", "key", "MLflow server session key"),
    Secret("MLFLOW_TRACKING_PASSWORD", "password", "password the pipeline signs in to MLflow with"),
    Secret("POSTGRES_PASSWORD", "password", "PostgreSQL superuser password"),
    Secret("CLINICFLOW_DB_PASSWORD", "password", "password of the pipeline's database user"),
    Secret("AIRFLOW_DB_PASSWORD", "password", "password of Airflow's database user"),
    Secret("MLFLOW_DB_PASSWORD", "password", "password of MLflow's database user"),
    Secret("GRAFANA_DB_PASSWORD", "password", "password of Grafana's read-only database user"),
    Secret("BI_DB_PASSWORD", "password", "password of the BI tools' read-only database user"),
    Secret("RABBITMQ_PASSWORD", "password", "RabbitMQ password"),
    Secret("GRAFANA_ADMIN_PASSWORD", "password", "password of the Grafana admin user"),
)


def is_production(env: Mapping[str, str]) -> bool:
    return env.get("CLINICFLOW_ENV", "development").strip().lower() == "production"


def _url_password(value: str) -> str | None:
    try:
        parts = urlsplit(value)
    except ValueError:
        return None
    return unquote(parts.password) if parts.password is not None else None


def _is_example(value: str) -> bool:
    return value in EXAMPLE_VALUES or value.lower().startswith(("change-me", "changeme", "example-"))


def _fernet_problem(value: str) -> str | None:
    try:
        raw = base64.urlsafe_b64decode(value.encode("ascii"))
    except (binascii.Error, ValueError, UnicodeEncodeError):
        return "is not a Fernet key (32 url-safe base64-encoded bytes)"
    if len(raw) != 32:
        return "is not a Fernet key (32 url-safe base64-encoded bytes)"
    return None


def check_value(secret: Secret, value: str) -> str | None:
    """Why ``value`` is not acceptable for ``secret`` in production, or None when it is."""
    subject = value
    if secret.kind == "url":
        password = _url_password(value)
        if password is None:
            return "has no password in the URL"
        subject = password
    if _is_example(subject):
        return "still has the example value from .env.example"
    if subject.lower() in WELL_KNOWN_DEFAULTS:
        return f"is the well-known default {subject!r}"
    if secret.kind == "fernet":
        return _fernet_problem(subject)
    minimum = secret.min_length or MIN_LENGTH[secret.kind]
    if len(subject) < minimum:
        return f"is too short ({len(subject)} characters; at least {minimum})"
    if secret.kind == "url" and not set(subject) <= URL_SAFE:
        return "has a password with characters that need escaping in a URL; use letters, digits and -._~"
    return None


def find_problems(env: Mapping[str, str], role: str, secrets: Iterable[Secret] = SECRETS) -> list[str]:
    """One line per secret of ``env`` that production would refuse (``role`` decides what is required)."""
    problems: list[str] = []
    for secret in secrets:
        value = env.get(secret.variable, "")
        if not value.strip():
            if role in secret.required_by or (role == "check" and secret.required_by):
                problems.append(
                    f"{secret.variable} is not set ({secret.what}); generate one with {GENERATE_HINT[secret.kind]}"
                )
            continue
        why = check_value(secret, value)
        if why:
            problems.append(f"{secret.variable} ({secret.what}) {why}; generate one with {GENERATE_HINT[secret.kind]}")
    return problems


def enforce(role: str, env: Mapping[str, str] | None = None, stream: TextIO | None = None) -> list[str]:
    """Refuse to start ``role`` in production with a bad secret; in development only warn.

    Returns the problems found (empty when all is well). Raises ConfigError in production.
    """
    env = os.environ if env is None else env
    stream = stream or sys.stderr
    problems = find_problems(env, role)
    if not problems:
        return []
    if is_production(env):
        raise ConfigError(
            f"refusing to start {role!r} in production (CLINICFLOW_ENV=production):\n  "
            + "\n  ".join(problems)
            + "\nSet real values in .env (see docs/deployment.md, 'Secrets')."
        )
    print(
        f"WARNING: {role}: {len(problems)} secret(s) would be refused in production "
        "(fine for a local trial):\n  " + "\n  ".join(problems),
        file=stream, flush=True,
    )
    return problems
