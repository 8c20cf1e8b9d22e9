#!/usr/bin/env python3
"""Run docker-compose.yaml's ClinicFlow services as local processes: the stack proof, without Docker.

    .venv/bin/python deploy/local_stack.py --server postgresql://postgres@127.0.0.1:5432/postgres

It reads ``docker-compose.yaml``, takes each service's command and environment exactly as written
there, interpolates the ``${VARIABLES}`` the way ``docker compose`` does (with local host names,
free ports, fresh database names and random secrets instead of ``.env``), and starts each service
with the image's entrypoint, ``python -m clinicflow.services ROLE``. So the proof runs the same
commands with the same settings as the containers, and a change to the compose file is a change
to the proof.

The proof: PostgreSQL's init script (roles and databases) -> ``preflight`` (secret check) ->
``mlflow`` and ``airflow-init`` -> ``airflow-apiserver``, ``-scheduler``, ``-dag-processor``,
``-triggerer`` and ``-worker`` (Celery on the machine's RabbitMQ) -> a JWT from ``/auth/token`` ->
the chain's DAGs unpaused and ``clinicflow_ingest`` triggered through the REST API (v2) with an
as-of date -> wait for its success, then for the ``clinicflow_train`` run the scheduler starts from
``load_core``'s asset event, then for the ``clinicflow_score`` run started by ``train``'s (each found
through the REST API by DAG id, each must succeed; the as-of date must have travelled in the events'
extra) -> every task instance succeeded; every warehouse table a task announced as an Asset outlet,
and every table of MUST_BE_FILLED, holds rows; the run's summary is published for the as-of date; no
failure was recorded -> the registry read through MLflow's REST API (the champion, when the pipeline
registers one) -> an artifact logged with a worker's settings
lands in MLflow's proxied artifact store; the logins' rights in the warehouse; the StatsD metrics
Airflow sent (the monitoring profile is on, with a UDP socket in place of the exporter). Everything started
is stopped at the end, also on failure; on failure the logs of the services and failed tasks are
printed.

``tests/deploy/test_stack.py`` runs it in CI; this script runs it by hand and prints the timings.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

import requests
import sqlalchemy as sa
import yaml

REPO = Path(__file__).resolve().parent.parent
COMPOSE_FILE = REPO / "docker-compose.yaml"
INIT_SCRIPT = REPO / "deploy" / "postgres" / "init-databases.sh"
AIRFLOW_SERVICES = ("airflow-apiserver", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer",
                    "airflow-worker")
#: Warehouse tables that must hold rows after a successful run of the chain, whether or not a task
#: announces them as an Asset (extend as stages land; e.g. "reporting.overbooking_recommendations").
MUST_BE_FILLED: tuple[str, ...] = ("core.appointment",)
#: The production chain (dags/clinicflow_*.py): the first DAG is triggered through the REST API, each
#: next one must be started by the scheduler from the asset events of the one before.
CHAIN: tuple[str, ...] = ("clinicflow_ingest", "clinicflow_train", "clinicflow_score")
#: Appointments of the generated Medialog demo source: small, so that the proof takes minutes.
DEMO_APPOINTMENTS = 20_000
#: The proof's training budget, given to the Airflow services on top of compose's environment (which
#: leaves the production defaults): as the demo does, a few trials, so a training takes a minute.
PROOF_TRAINING: dict[str, str] = {
    "CLINICFLOW_TRAIN_ALGORITHMS": "logreg,lightgbm",
    "CLINICFLOW_TRAIN_OPTUNA_TRIALS": "4",
    "CLINICFLOW_TRAIN_OPTUNA_TIMEOUT_S": "60",
}


class StackError(RuntimeError):
    """The stack did not come up or the pipeline did not succeed; the message says where to look."""


# --------------------------------------------------------------------------------------------------
# docker compose's variable interpolation


_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def interpolate(text: str, variables: Mapping[str, str]) -> str:
    """``text`` with ``$$``, ``$VAR``, ``${VAR}``, ``${VAR:-default}``, ``${VAR-default}``,
    ``${VAR:+alt}``, ``${VAR+alt}``, ``${VAR:?error}`` and ``${VAR?error}`` resolved as compose does."""
    out: list[str] = []
    i = 0
    while i < len(text):
        char = text[i]
        if char != "$":
            out.append(char)
            i += 1
            continue
        if text.startswith("$$", i):
            out.append("$")
            i += 2
            continue
        if text.startswith("${", i):
            end = _closing_brace(text, i + 2)
            out.append(_substitute(text[i + 2:end], variables))
            i = end + 1
            continue
        match = _NAME.match(text, i + 1)
        if match:
            out.append(variables.get(match.group(0), ""))
            i = match.end()
        else:
            out.append(char)
            i += 1
    return "".join(out)


def _closing_brace(text: str, start: int) -> int:
    depth = 1
    i = start
    while i < len(text):
        if text.startswith("${", i):
            depth += 1
            i += 2
            continue
        if text[i] == "}":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    raise ValueError(f"unclosed '${{' in {text!r}")


def _substitute(expression: str, variables: Mapping[str, str]) -> str:
    match = _NAME.match(expression)
    if not match:
        raise ValueError(f"bad variable expression ${{{expression}}}")
    name, rest = match.group(0), expression[match.end():]
    value = variables.get(name)
    if not rest:
        return value or ""
    for operator in (":-", ":?", ":+", "-", "?", "+"):
        if rest.startswith(operator):
            argument = rest[len(operator):]
            break
    else:
        raise ValueError(f"bad variable expression ${{{expression}}}")
    empty_counts = operator.startswith(":")
    is_set = value is not None and (value != "" or not empty_counts)
    if operator.endswith("-"):
        return value if is_set else interpolate(argument, variables)  # type: ignore[return-value]
    if operator.endswith("+"):
        return interpolate(argument, variables) if is_set else ""
    if not is_set:
        raise ValueError(f"required variable {name} is missing: {interpolate(argument, variables)}")
    return value  # type: ignore[return-value]


# --------------------------------------------------------------------------------------------------
# compose services


@dataclass(frozen=True)
class Service:
    name: str
    command: list[str]
    environment: dict[str, str]


def load_compose(path: Path = COMPOSE_FILE) -> dict[str, Any]:
    with path.open(encoding="utf-8") as fh:
        return yaml.safe_load(fh)


def _environment(raw: Any) -> dict[str, str]:
    if raw is None:
        return {}
    if isinstance(raw, list):
        pairs = (item.split("=", 1) if "=" in item else (item, "") for item in raw)
        return {key: value for key, value in pairs}
    return {str(key): "" if value is None else str(value) for key, value in raw.items()}


def service(compose: Mapping[str, Any], name: str, variables: Mapping[str, str]) -> Service:
    """The command and interpolated environment of service ``name`` of the compose file."""
    spec = compose["services"][name]
    command = spec.get("command") or []
    if isinstance(command, str):
        command = command.split()
    return Service(
        name=name,
        command=[interpolate(str(part), variables) for part in command],
        environment={key: interpolate(value, variables)
                     for key, value in _environment(spec.get("environment")).items()},
    )


# --------------------------------------------------------------------------------------------------
# processes


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def log(message: str) -> None:
    print(f"{datetime.now():%H:%M:%S} stack: {message}", flush=True)


def tail(path: Path, lines: int = 60) -> str:
    if not path.exists():
        return "(no log)"
    text = path.read_text(encoding="utf-8", errors="replace").splitlines()
    return "\n".join(text[-lines:])


class LocalStack:
    """Compose services run as local process groups, each logging to ``<workdir>/logs/<name>.log``."""

    def __init__(self, compose: Mapping[str, Any], variables: Mapping[str, str], workdir: Path,
                 image_env: Mapping[str, str]) -> None:
        self.compose = compose
        self.variables = dict(variables)
        self.workdir = workdir
        self.logs = workdir / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.image_env = dict(image_env)
        self.processes: dict[str, subprocess.Popen] = {}

    def spec(self, name: str) -> Service:
        return service(self.compose, name, self.variables)

    def _launch(self, name: str, extra_env: Mapping[str, str] | None) -> subprocess.Popen:
        spec = self.spec(name)
        env = self.image_env | spec.environment | dict(extra_env or {})
        logfile = (self.logs / f"{name}.log").open("ab")
        return subprocess.Popen(
            [sys.executable, "-m", "clinicflow.services", *spec.command], env=env, cwd=self.workdir,
            stdout=logfile, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
        )

    def start(self, name: str, extra_env: Mapping[str, str] | None = None) -> None:
        log(f"starting {name}")
        self.processes[name] = self._launch(name, extra_env)

    def run(self, name: str, timeout: float, extra_env: Mapping[str, str] | None = None) -> float:
        """Run a one-shot service to completion; its duration in seconds."""
        started = time.perf_counter()
        log(f"running {name}")
        process = self._launch(name, extra_env)
        try:
            code = process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self._kill(process)
            raise StackError(
                f"{name} did not finish within {timeout:.0f}s:\n{tail(self.logs / f'{name}.log')}") from None
        if code != 0:
            raise StackError(f"{name} failed with exit code {code}:\n{tail(self.logs / f'{name}.log')}")
        seconds = time.perf_counter() - started
        log(f"{name} done in {seconds:.1f}s")
        return seconds

    def check_alive(self) -> None:
        for name, process in self.processes.items():
            if process.poll() is not None:
                raise StackError(f"{name} exited with code {process.returncode}:\n{tail(self.logs / f'{name}.log')}")

    @staticmethod
    def _kill(process: subprocess.Popen, grace: float = 20.0) -> None:
        if process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)

    def stop(self) -> None:
        """Stop every service (workers first), then make sure no process of their groups is left."""
        for name in reversed(list(self.processes)):
            process = self.processes[name]
            if process.poll() is None:
                log(f"stopping {name}")
            self._kill(process)
        for process in self.processes.values():  # children that outlived their group leader
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)

    def dump_logs(self, lines: int = 40) -> str:
        return "\n".join(f"----- {path.stem} (last {lines} lines) -----\n{tail(path, lines)}"
                         for path in sorted(self.logs.glob("*.log")))


# --------------------------------------------------------------------------------------------------
# the proof


@dataclass
class ProofResult:
    timings: dict[str, float] = field(default_factory=dict)
    #: DAG id -> run id, in the order the runs happened (the triggered one first).
    run_ids: dict[str, str] = field(default_factory=dict)
    #: DAG id -> run type ("manual" for the triggered run, "asset_triggered" for those that followed).
    run_types: dict[str, str] = field(default_factory=dict)
    #: DAG id -> {task (``task[map_index]`` when mapped): state}.
    task_states: dict[str, dict[str, str]] = field(default_factory=dict)
    #: DAG id -> the ``as_of`` in the extra of every asset event its run emitted.
    emitted_as_of: dict[str, list[str | None]] = field(default_factory=dict)
    #: DAG id -> the ``as_of`` in the extra of every asset event that started its run (asset-triggered runs).
    consumed_as_of: dict[str, list[str | None]] = field(default_factory=dict)
    #: As-of dates in ``reporting.nightly_summary`` after the runs.
    published_as_of: list[str] = field(default_factory=list)
    reporting_rows: dict[str, int] = field(default_factory=dict)
    #: ``schema.table`` -> rows, for every warehouse table announced by an asset event of the run and
    #: every table of MUST_BE_FILLED.
    produced_rows: dict[str, int] = field(default_factory=dict)
    asset_events: list[str] = field(default_factory=list)
    failures_recorded: int = 0
    registered_models: list[str] = field(default_factory=list)
    champion: dict[str, Any] | None = None
    unauthenticated_status: dict[str, int] = field(default_factory=dict)
    #: StatsD metric names the Airflow components sent (the monitoring profile's input).
    statsd_metrics: list[str] = field(default_factory=list)
    #: What each database login may do in the warehouse, checked with its own privileges.
    roles: dict[str, bool] = field(default_factory=dict)
    #: Where the run's sources came from: "given", "demo" (pipelines.demo) or "fallback" (small export).
    sources_origin: str = "none"
    #: Where an artifact logged with a worker's settings landed (MLflow's proxied artifact store).
    artifact_probe: str = ""


def proof_variables(server: sa.URL, prefix: str, workdir: Path) -> dict[str, str]:
    """The compose variables for a local run: this machine's services, fresh names, random secrets."""
    def secret(n: int = 32) -> str:
        return secrets.token_urlsafe(n)

    from cryptography.fernet import Fernet

    return {
        "CLINICFLOW_ENV": "development",  # the machine's RabbitMQ only knows guest/guest
        "CLINICFLOW_PROJECT_DIR": str(REPO),
        "CLINICFLOW_STATE_DIR": str(workdir / "clinicflow-home"),
        "CLINICFLOW_PSEUDONYM_SECRET": secret(),
        "CLINICFLOW_TIMEZONE": "Europe/Moscow",
        "CLINICFLOW_LOG_LEVEL": "INFO",
        "POSTGRES_HOST": server.host or "127.0.0.1",
        "POSTGRES_PORT": str(server.port or 5432),
        "POSTGRES_PASSWORD": secret(),
        "CLINICFLOW_DB_NAME": f"{prefix}_stack",
        "CLINICFLOW_DB_USER": f"{prefix}_pipeline",
        "CLINICFLOW_DB_PASSWORD": secret(),
        "AIRFLOW_DB_NAME": f"{prefix}_stack_airflow",
        "AIRFLOW_DB_USER": f"{prefix}_airflow",
        "AIRFLOW_DB_PASSWORD": secret(),
        "MLFLOW_DB_NAME": f"{prefix}_stack_mlflow",
        "MLFLOW_AUTH_DB_NAME": f"{prefix}_stack_mlflow_auth",
        "MLFLOW_DB_USER": f"{prefix}_mlflow",
        "MLFLOW_DB_PASSWORD": secret(),
        "GRAFANA_DB_USER": f"{prefix}_grafana",
        "GRAFANA_DB_PASSWORD": secret(),
        "BI_DB_USER": f"{prefix}_bi",
        "BI_DB_PASSWORD": secret(),
        "RABBITMQ_HOST": "127.0.0.1",
        "RABBITMQ_PORT": "5672",
        "RABBITMQ_USER": "guest",
        "RABBITMQ_PASSWORD": "guest",
        "RABBITMQ_VHOST": "/",
        "AIRFLOW_CELERY_QUEUE": prefix,  # other sessions may share the broker: a queue of our own
        "AIRFLOW_WORKER_CONCURRENCY": "2",
        "AIRFLOW_API_HOST": "127.0.0.1",
        "AIRFLOW_API_BIND": "127.0.0.1",
        "AIRFLOW_API_PORT": str(free_port()),
        "AIRFLOW_SCHEDULER_HEALTH_PORT": str(free_port()),
        "AIRFLOW_WORKER_LOG_PORT": str(free_port()),
        "AIRFLOW_TRIGGERER_LOG_PORT": str(free_port()),
        "AIRFLOW_FERNET_KEY": Fernet.generate_key().decode(),
        "AIRFLOW_JWT_SECRET": secret(48),
        "AIRFLOW_API_SECRET_KEY": secret(48),
        "AIRFLOW_ADMIN_USERNAME": "admin",
        "AIRFLOW_ADMIN_PASSWORD": secret(18),
        "AIRFLOW_VIEWER_PASSWORD": secret(18),
        "MLFLOW_HOST": "127.0.0.1",
        "MLFLOW_BIND": "127.0.0.1",
        "MLFLOW_PORT": str(free_port()),
        "MLFLOW_WORKERS": "1",
        "MLFLOW_ARTIFACTS_DESTINATION": str(workdir / "mlartifacts"),
        "MLFLOW_ADMIN_USERNAME": "admin",
        "MLFLOW_ADMIN_PASSWORD": secret(18),
        "MLFLOW_SECRET_KEY": secret(48),
        "GRAFANA_ADMIN_PASSWORD": secret(18),
        "COMPOSE_PROFILES": "",
    }


def image_environment(workdir: Path) -> dict[str, str]:
    """What the Docker image provides besides compose's environment: PATH, HOME, AIRFLOW_HOME."""
    keep = ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR", "USER", "LOGNAME", "SHELL")
    env = {key: os.environ[key] for key in keep if key in os.environ}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.update({
        "AIRFLOW_HOME": str(workdir / "airflow"),
        "CLINICFLOW_ENV_FILE": str(workdir / "no.env"),  # a developer's .env must not leak in
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
        "GIT_PYTHON_REFRESH": "quiet",
        "PYTHONUNBUFFERED": "1",
    })
    return env


def init_databases(stack: LocalStack, server: sa.URL) -> float:
    """Run the compose postgres service's init script against the local server."""
    started = time.perf_counter()
    env = dict(stack.image_env) | stack.spec("postgres").environment
    env.update({"PGHOST": server.host or "127.0.0.1", "PGPORT": str(server.port or 5432),
                "PGUSER": server.username or "postgres", "POSTGRES_DB": "postgres"})
    if server.password:
        env["PGPASSWORD"] = server.password
    result = subprocess.run(["bash", str(INIT_SCRIPT)], env=env, capture_output=True, text=True, timeout=120)
    if result.returncode != 0:
        raise StackError(f"{INIT_SCRIPT.name} failed:\n{result.stdout}\n{result.stderr}")
    return time.perf_counter() - started


def drop_databases_and_roles(server: sa.URL, variables: Mapping[str, str]) -> None:
    """Remove what init_databases made (databases first: roles that own one cannot be dropped)."""
    names = [variables[k] for k in ("CLINICFLOW_DB_NAME", "AIRFLOW_DB_NAME", "MLFLOW_DB_NAME", "MLFLOW_AUTH_DB_NAME")]
    names.append(variables["CLINICFLOW_DB_NAME"] + "_optuna")
    roles = [variables[k] for k in ("CLINICFLOW_DB_USER", "AIRFLOW_DB_USER", "MLFLOW_DB_USER", "GRAFANA_DB_USER",
                                    "BI_DB_USER")]
    engine = sa.create_engine(server.set(database="postgres"), isolation_level="AUTOCOMMIT",
                              poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            extra = conn.execute(sa.text("SELECT datname FROM pg_database WHERE datname LIKE :p"),
                                 {"p": variables["CLINICFLOW_DB_NAME"] + "\\_%"}).scalars().all()
            for name in dict.fromkeys([*names, *extra]):
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            for role in roles:
                conn.execute(sa.text(
                    f"DO $$ BEGIN IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{role}') THEN "
                    f'EXECUTE \'DROP OWNED BY "{role}"\'; EXECUTE \'DROP ROLE "{role}"\'; END IF; END $$'))
    finally:
        engine.dispose()


class StatsdSink:
    """A UDP socket in place of the StatsD exporter: collects the metric names Airflow sends."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.5)
        self.port = self.sock.getsockname()[1]
        self.names: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._receive, name="statsd-sink", daemon=True)
        self._thread.start()

    def _receive(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(65535)
            except TimeoutError:
                continue
            except OSError:
                return
            for line in data.decode("utf-8", "replace").splitlines():
                name = line.split(":", 1)[0].strip()
                if name:
                    self.names.add(name)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self.sock.close()


class Api:
    """A small client of Airflow's REST API (v2) with a JWT from /auth/token."""

    def __init__(self, base: str) -> None:
        self.base = base.rstrip("/")
        self.session = requests.Session()

    def login(self, username: str, password: str) -> None:
        response = self.session.post(f"{self.base}/auth/token", json={"username": username, "password": password},
                                     timeout=30)
        if response.status_code not in (200, 201):
            raise StackError(f"POST /auth/token answered {response.status_code}: {response.text[:500]}")
        self.session.headers["Authorization"] = f"Bearer {response.json()['access_token']}"

    def call(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        return self.session.request(method, f"{self.base}{path}", timeout=30, **kwargs)

    def json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.call(method, path, **kwargs)
        if response.status_code >= 300:
            raise StackError(f"{method} {path} answered {response.status_code}: {response.text[:1000]}")
        return response.json()


def wait_until(what: str, probe, timeout: float, stack: LocalStack, interval: float = 1.0) -> float:
    """Call ``probe`` until it returns truthy; fail with the services' logs after ``timeout``."""
    started = time.perf_counter()
    last_error = ""
    while time.perf_counter() - started < timeout:
        stack.check_alive()
        try:
            if probe():
                seconds = time.perf_counter() - started
                log(f"{what}: ready after {seconds:.1f}s")
                return seconds
        except (requests.RequestException, StackError) as exc:
            last_error = f" (last error: {exc})"
        time.sleep(interval)
    raise StackError(f"{what} not ready within {timeout:.0f}s{last_error}\n{stack.dump_logs()}")


def http_ok(url: str, **kwargs: Any) -> bool:
    return requests.get(url, timeout=5, **kwargs).status_code == 200


def task_log(api: Api, dag_id: str, run_id: str, task: Mapping[str, Any]) -> str:
    path = (f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task['task_id']}/logs/"
            f"{max(1, int(task.get('try_number') or 1))}")
    try:
        payload = api.json("GET", path, params={"full_content": "true", "map_index": task.get("map_index", -1)},
                           headers={"Accept": "application/json"})
    except (StackError, requests.RequestException) as exc:
        return f"(log unavailable: {exc})"
    content = payload.get("content")
    if isinstance(content, list):
        lines = [item.get("event", "") if isinstance(item, dict) else str(item) for item in content]
    else:
        lines = str(content).splitlines()
    return "\n".join(lines[-60:])


def demo_sources(server: sa.URL, variables: Mapping[str, str], as_of: date, workdir: Path) -> dict[str, str]:
    """The demo's source settings (pipelines.demo), so the pipeline has data, as ``dev.py demo`` does:
    the generated Medialog source with DEMO_APPOINTMENTS appointments, in a database named after the
    stack's warehouse (``<warehouse>_medialog_demo``, dropped with the stack's databases)."""
    try:
        from pipelines import demo
    except ImportError:
        return {}
    hook = getattr(demo, "demo_source_env", None) or getattr(demo, "_demo_source_env", None)
    if hook is None:
        return {}
    from clinicflow import db
    from clinicflow.settings import environment

    warehouse = server.set(database=variables["CLINICFLOW_DB_NAME"])
    changes = {
        "CLINICFLOW_DATABASE_URL": warehouse.render_as_string(hide_password=False),
        "CLINICFLOW_HOME": variables["CLINICFLOW_STATE_DIR"],
        "CLINICFLOW_PSEUDONYM_SECRET": variables["CLINICFLOW_PSEUDONYM_SECRET"],
        "CLINICFLOW_ENV_FILE": str(workdir / "demo.env"),  # where the demo writes its sources; read by no one
        "CLINICFLOW_SOURCES": None,
    }
    try:
        with environment(changes) as settings:
            return dict(hook(settings, as_of, DEMO_APPOINTMENTS))
    finally:
        db.dispose_engines()


def reporting_rows(warehouse: sa.URL) -> dict[str, int]:
    engine = sa.create_engine(warehouse, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            names = conn.execute(sa.text(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = 'reporting' ORDER BY 1"
            )).scalars().all()
            return {name: int(conn.execute(sa.text(f'SELECT count(*) FROM reporting."{name}"')).scalar())
                    for name in names}
    finally:
        engine.dispose()


def table_rows(warehouse: sa.URL, tables: list[str]) -> dict[str, int]:
    """Rows of each ``schema.table`` (-1 when the table does not exist)."""
    engine = sa.create_engine(warehouse, poolclass=sa.pool.NullPool)
    out: dict[str, int] = {}
    try:
        with engine.connect() as conn:
            for table in tables:
                schema, _, name = table.partition(".")
                exists = conn.execute(sa.text("SELECT to_regclass(:t)"), {"t": f'"{schema}"."{name}"'}).scalar()
                out[table] = int(conn.execute(sa.text(f'SELECT count(*) FROM "{schema}"."{name}"')).scalar()) \
                    if exists else -1
    finally:
        engine.dispose()
    return out


def emitted_events(api: Api, dag_id: str, run_id: str) -> list[dict[str, Any]]:
    """The asset events a run emitted (its tasks' outlets)."""
    return api.json("GET", "/api/v2/assets/events",
                    params={"source_dag_id": dag_id, "source_run_id": run_id, "limit": 1000})["asset_events"]


def warehouse_tables_announced(events: list[dict[str, Any]]) -> list[str]:
    """``schema.table`` of every ``clinicflow://warehouse/...`` asset event among ``events``."""
    tables = []
    for event in events:
        match = re.match(r"^clinicflow://warehouse/([a-z_]+)/([a-z0-9_]+)$", event.get("uri") or "")
        if match:
            tables.append(f"{match.group(1)}.{match.group(2)}")
    return sorted(set(tables))


def role_checks(warehouse: sa.URL, variables: Mapping[str, str]) -> dict[str, bool]:
    """What the logins that init-databases.sh made may do, each tried with that login's privileges."""
    pipeline, airflow = variables["CLINICFLOW_DB_USER"], variables["AIRFLOW_DB_USER"]
    bi, grafana = variables["BI_DB_USER"], variables["GRAFANA_DB_USER"]
    engine = sa.create_engine(warehouse, poolclass=sa.pool.NullPool)

    def allowed(role: str, sql: str) -> bool:
        with engine.connect() as conn:
            transaction = conn.begin()
            try:
                conn.execute(sa.text(f'SET LOCAL ROLE "{role}"'))
                conn.execute(sa.text(sql))
                return True
            except sa.exc.ProgrammingError as exc:
                if "permission denied" in str(exc):
                    return False
                raise
            finally:
                transaction.rollback()

    try:
        with engine.connect() as conn:
            superuser = conn.execute(sa.text("SELECT rolsuper FROM pg_roles WHERE rolname = :r"),
                                     {"r": pipeline}).scalar()
            reporting = conn.execute(sa.text(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = 'reporting' "
                "AND table_type = 'BASE TABLE' ORDER BY 1 LIMIT 1")).scalar()
        checks = {
            "pipeline is not a superuser": not superuser,
            "pipeline writes ops": allowed(pipeline, "DELETE FROM ops.task_failure WHERE false"),
            "pipeline writes core": allowed(pipeline, "DELETE FROM core.appointment WHERE false"),
            "grafana reads ops": allowed(grafana, "SELECT count(*) FROM ops.task_failure"),
            "grafana cannot read core": not allowed(grafana, "SELECT count(*) FROM core.appointment"),
            "bi cannot read core": not allowed(bi, "SELECT count(*) FROM core.appointment"),
            "bi cannot read ops": not allowed(bi, "SELECT count(*) FROM ops.task_failure"),
            "airflow cannot read core": not allowed(airflow, "SELECT count(*) FROM core.appointment"),
        }
        if reporting:
            checks["bi reads reporting"] = allowed(bi, f'SELECT count(*) FROM reporting."{reporting}"')
            checks["bi cannot write reporting"] = not allowed(bi, f'DELETE FROM reporting."{reporting}" WHERE false')
        return checks
    finally:
        engine.dispose()


def recorded_failures(warehouse: sa.URL, run_ids: Mapping[str, str]) -> int:
    """Failed tries that ``ops.task_failure`` holds for the given runs (DAG id -> run id)."""
    engine = sa.create_engine(warehouse, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            return sum(int(conn.execute(sa.text("SELECT count(*) FROM ops.task_failure WHERE dag_id = :d "
                                                "AND run_id = :r"), {"d": dag_id, "r": run_id}).scalar())
                       for dag_id, run_id in run_ids.items())
    finally:
        engine.dispose()


def published_as_of(warehouse: sa.URL) -> list[str]:
    """As-of dates of the runs' summaries in ``reporting.nightly_summary`` (empty if it does not exist)."""
    engine = sa.create_engine(warehouse, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            if conn.execute(sa.text("SELECT to_regclass('reporting.nightly_summary')")).scalar() is None:
                return []
            return [d.isoformat() for d in conn.execute(sa.text(
                "SELECT as_of FROM reporting.nightly_summary ORDER BY as_of")).scalars()]
    finally:
        engine.dispose()


def read_registry(base: str, auth: tuple[str, str]) -> tuple[list[str], dict[str, Any] | None]:
    """Registered model names and the champion (``models:/<name>@champion``), via MLflow's REST API."""
    response = requests.get(f"{base}/api/2.0/mlflow/registered-models/search", params={"max_results": 100},
                            auth=auth, timeout=30)
    if response.status_code != 200:
        raise StackError(f"MLflow registry search answered {response.status_code}: {response.text[:500]}")
    models = [m["name"] for m in response.json().get("registered_models", [])]
    for name in models:
        alias = requests.get(f"{base}/api/2.0/mlflow/registered-models/alias",
                             params={"name": name, "alias": "champion"}, auth=auth, timeout=30)
        if alias.status_code == 200:
            return models, alias.json()["model_version"]
    return models, None


PROBE = """
import mlflow
from clinicflow import tracking

experiment = tracking.configure()
with mlflow.start_run(experiment_id=experiment, run_name="stack-proof") as run:
    mlflow.log_text("logged through the MLflow server by the stack proof", "stack-proof/probe.txt")
print(run.info.artifact_uri)
"""


def probe_artifacts(stack: LocalStack, extra_env: Mapping[str, str]) -> str:
    """Log an artifact with a worker's settings (as a training task would); return the stored file."""
    env = stack.image_env | stack.spec("airflow-worker").environment | dict(extra_env)
    result = subprocess.run([sys.executable, "-c", PROBE], env=env, cwd=stack.workdir, capture_output=True,
                            text=True, timeout=120)
    if result.returncode != 0:
        raise StackError(f"logging an artifact through MLflow failed:\n{result.stdout}\n{result.stderr[-3000:]}")
    destination = Path(stack.variables["MLFLOW_ARTIFACTS_DESTINATION"])
    stored = sorted(destination.rglob("probe.txt"))
    if not stored:
        raise StackError(f"artifact {result.stdout.strip()} not found under {destination}")
    return str(stored[0].relative_to(destination))


def _states(tasks: list[dict[str, Any]]) -> dict[str, str]:
    return {(t["task_id"] if t.get("map_index", -1) < 0 else f"{t['task_id']}[{t['map_index']}]"): t["state"]
            for t in tasks}


def wait_for_run(api: Api, stack: LocalStack, dag_id: str, run_id: str, timeout: float) -> list[dict[str, Any]]:
    """Wait until the run ends; its task instances. A run that does not succeed raises with the logs of
    its failed tasks and of the services."""
    state = {"value": "", "tasks": ""}

    def finished() -> bool:
        current = api.json("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}")["state"]
        tasks = api.json("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances",
                         params={"limit": 1000})["task_instances"]
        summary = ", ".join(f"{t['task_id']}={t['state']}" for t in tasks)
        if summary != state["tasks"]:
            log(f"{dag_id} run {current}: {summary}")
            state["tasks"] = summary
        state["value"] = current
        return current in ("success", "failed")

    wait_until(f"{dag_id} run {run_id}", finished, timeout, stack, interval=2.0)
    tasks = api.json("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances",
                     params={"limit": 1000})["task_instances"]
    if state["value"] != "success":
        logs = "\n".join(
            f"===== task {t['task_id']} ({t['state']}) =====\n{task_log(api, dag_id, run_id, t)}"
            for t in tasks if t["state"] not in ("success", "skipped", "upstream_failed"))
        raise StackError(f"{dag_id} run {run_id} ended {state['value']}: {_states(tasks)}\n{logs}\n"
                         f"{stack.dump_logs()}")
    return tasks


def wait_for_asset_triggered_run(api: Api, stack: LocalStack, dag_id: str, timeout: float) -> dict[str, Any]:
    """The first asset-triggered run of ``dag_id`` (the stack's databases are fresh: it is the chain's)."""
    found: dict[str, Any] = {}

    def started() -> bool:
        runs = api.json("GET", f"/api/v2/dags/{dag_id}/dagRuns",
                        params={"order_by": "id", "limit": 100})["dag_runs"]
        triggered = [r for r in runs if r.get("run_type") == "asset_triggered"]
        if triggered:
            found.update(triggered[0])
        return bool(triggered)

    wait_until(f"{dag_id} started by an asset event", started, timeout, stack)
    return found


def run_proof(server: sa.URL, prefix: str, workdir: Path, chain: tuple[str, ...] = CHAIN, timeout: float = 280.0,
              keep: bool = False, sources: str | None = None, as_of: date | None = None,
              fallback_sources: str | None = None) -> ProofResult:
    """Bring the stack up, trigger ``chain[0]`` through the REST API, wait for the runs of the rest of
    the chain that its asset events start, check the results, stop everything.

    ``sources`` is the CLINICFLOW_SOURCES JSON of the run; by default the demo's sources (as
    ``pipelines.demo`` configures them for ``dev.py demo``, with DEMO_APPOINTMENTS), else
    ``fallback_sources``. ``as_of`` is the run's as-of date (default: its logical date).
    """
    deadline = time.perf_counter() + timeout
    remaining = lambda: max(5.0, deadline - time.perf_counter())  # noqa: E731
    result = ProofResult()
    compose = load_compose()
    variables = proof_variables(server, prefix, workdir)
    statsd = StatsdSink()  # the monitoring profile is on: Airflow sends its metrics here
    variables.update({"COMPOSE_PROFILES": "monitoring", "STATSD_HOST": "127.0.0.1", "STATSD_PORT": str(statsd.port)})
    stack = LocalStack(compose, variables, workdir, image_environment(workdir))
    api_base = f"http://127.0.0.1:{variables['AIRFLOW_API_PORT']}"
    mlflow_base = f"http://127.0.0.1:{variables['MLFLOW_PORT']}"
    mlflow_auth = (variables["MLFLOW_ADMIN_USERNAME"], variables["MLFLOW_ADMIN_PASSWORD"])
    warehouse = server.set(database=variables["CLINICFLOW_DB_NAME"])
    started = time.perf_counter()
    try:
        result.timings["init-databases"] = init_databases(stack, server)
        result.timings["preflight"] = stack.run("preflight", timeout=remaining())
        stack.start("mlflow")
        demo_started = time.perf_counter()
        demo = {} if sources else demo_sources(server, variables, as_of or date.today(), workdir)
        if demo:
            result.timings["demo-source"] = time.perf_counter() - demo_started
        worker_env = {k: v for k, v in demo.items() if k != "CLINICFLOW_SOURCES"} | PROOF_TRAINING
        chosen = sources or demo.get("CLINICFLOW_SOURCES") or fallback_sources
        result.sources_origin = ("given" if sources else "demo" if demo.get("CLINICFLOW_SOURCES")
                                 else "fallback" if fallback_sources else "none")
        if chosen:
            stack.variables["CLINICFLOW_SOURCES"] = chosen
        log(f"sources: {db_masked(chosen) if chosen else '(none)'}")
        result.timings["airflow-init"] = stack.run("airflow-init", timeout=remaining())
        for name in AIRFLOW_SERVICES:
            stack.start(name, extra_env=worker_env)
        result.timings["mlflow-ready"] = wait_until(
            "mlflow", lambda: http_ok(f"{mlflow_base}/health"), remaining(), stack)
        result.timings["api-server-ready"] = wait_until(
            "airflow-apiserver", lambda: http_ok(f"{api_base}/api/v2/version"), remaining(), stack)

        result.unauthenticated_status["airflow"] = requests.get(f"{api_base}/api/v2/dags", timeout=10).status_code
        result.unauthenticated_status["mlflow"] = requests.get(
            f"{mlflow_base}/api/2.0/mlflow/registered-models/search", timeout=10).status_code
        api = Api(api_base)
        api.login(variables["AIRFLOW_ADMIN_USERNAME"], variables["AIRFLOW_ADMIN_PASSWORD"])

        def dags_parsed() -> bool:
            errors = api.json("GET", "/api/v2/importErrors").get("import_errors", [])
            if errors:
                raise StackError("DAG import errors: " + json.dumps(errors)[:3000])
            return all(api.call("GET", f"/api/v2/dags/{dag_id}").status_code == 200 for dag_id in chain)

        result.timings["dags-parsed"] = wait_until(f"DAGs {', '.join(chain)} parsed", dags_parsed, remaining(), stack)
        # Consumers first: Airflow queues no run for a paused DAG when its assets are announced.
        first = chain[0]
        for dag_id in reversed(chain[1:]):
            api.json("PATCH", f"/api/v2/dags/{dag_id}", json={"is_paused": False})
        # Take the slot of the scheduled run that unpausing would create, so only one run happens: the run is
        # triggered while the first DAG is still paused, then the DAG is unpaused. (Triggered after unpausing,
        # the slot is raced: once its time has passed the scheduler creates that run at once, and when its
        # check for an existing run comes before the trigger's insert, the scheduler dies on the duplicate.)
        waiting = api.json("GET", f"/api/v2/dags/{first}")
        logical = waiting.get("next_dagrun_logical_date") or datetime.now().astimezone().isoformat()
        triggered = time.perf_counter()
        conf = {"as_of": as_of.isoformat()} if as_of else {}
        run = api.json("POST", f"/api/v2/dags/{first}/dagRuns", json={"logical_date": logical, "conf": conf})
        api.json("PATCH", f"/api/v2/dags/{first}", json={"is_paused": False})
        log(f"triggered {first} run {run['dag_run_id']} (logical date {logical}, conf {conf})")

        for position, dag_id in enumerate(chain):
            step = time.perf_counter()
            if position:
                run = wait_for_asset_triggered_run(api, stack, dag_id, remaining())
                result.timings[f"{dag_id}-started"] = time.perf_counter() - step
                log(f"{dag_id} run {run['dag_run_id']} started by the scheduler ({run.get('run_type')})")
            run_id = run["dag_run_id"]
            result.run_ids[dag_id] = run_id
            result.run_types[dag_id] = str(run.get("run_type"))
            tasks = wait_for_run(api, stack, dag_id, run_id, remaining())
            result.timings[f"{dag_id}-run"] = time.perf_counter() - step
            result.task_states[dag_id] = _states(tasks)
            events = emitted_events(api, dag_id, run_id)
            result.emitted_as_of[dag_id] = [(e.get("extra") or {}).get("as_of") for e in events]
            result.asset_events = sorted({*result.asset_events, *warehouse_tables_announced(events)})
            if position:
                consumed = api.json("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/upstreamAssetEvents")
                result.consumed_as_of[dag_id] = [(e.get("extra") or {}).get("as_of")
                                                 for e in consumed["asset_events"]]
        result.timings["chain"] = time.perf_counter() - triggered

        result.reporting_rows = reporting_rows(warehouse)
        result.produced_rows = table_rows(warehouse, sorted({*result.asset_events, *MUST_BE_FILLED}))
        result.published_as_of = published_as_of(warehouse)
        result.failures_recorded = recorded_failures(warehouse, result.run_ids)
        result.roles = role_checks(warehouse, variables)
        result.registered_models, result.champion = read_registry(mlflow_base, mlflow_auth)
        result.artifact_probe = probe_artifacts(stack, worker_env)
        result.statsd_metrics = sorted(statsd.names)
        result.timings["total"] = time.perf_counter() - started
        return result
    finally:
        statsd.close()
        if keep:
            log(f"--keep: services left running; logs in {stack.logs}")
        else:
            stack.stop()
            drop_databases_and_roles(server, variables)


def db_masked(sources: str) -> str:
    """CLINICFLOW_SOURCES for the log, with passwords in URLs hidden."""
    return re.sub(r"(://[^:/@\s]+:)[^@\s]+@", r"\1***@", sources)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--server", default=os.environ.get("CLINICFLOW_TEST_DATABASE_URL",
                                                           "postgresql://postgres@127.0.0.1:5432/postgres"),
                        help="PostgreSQL server to create the stack's databases on (a superuser URL)")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds for the whole proof")
    parser.add_argument("--keep", action="store_true", help="leave the services running (debugging)")
    parser.add_argument("--sources", help="CLINICFLOW_SOURCES JSON for the run (default: the demo's sources)")
    parser.add_argument("--as-of", type=date.fromisoformat, help="as-of date of the run (default: its logical date)")
    parser.add_argument("--dag", action="append", metavar="DAG_ID",
                        help="trigger this DAG and wait for the asset-triggered runs of the next --dag ones "
                             f"(default: the chain, {' -> '.join(CHAIN)}; --dag nightly runs the one-DAG pipeline)")
    args = parser.parse_args(argv)
    server = sa.make_url(args.server).set(drivername="postgresql+psycopg2")
    prefix = f"cfstack_{secrets.token_hex(3)}"
    with tempfile.TemporaryDirectory(prefix="clinicflow-stack-") as tmp:
        try:
            result = run_proof(server, prefix, Path(tmp), chain=tuple(args.dag or CHAIN), timeout=args.timeout,
                               keep=args.keep, sources=args.sources, as_of=args.as_of)
        except StackError as exc:
            print(f"stack proof FAILED: {exc}", file=sys.stderr)
            return 1
    print(json.dumps({"timings_s": {k: round(v, 1) for k, v in result.timings.items()},
                      "runs": result.run_ids, "run_types": result.run_types, "tasks": result.task_states,
                      "emitted_as_of": result.emitted_as_of, "consumed_as_of": result.consumed_as_of,
                      "published_as_of": result.published_as_of, "reporting_rows": result.reporting_rows,
                      "produced_rows": result.produced_rows, "sources": result.sources_origin,
                      "failures_recorded": result.failures_recorded, "registered_models": result.registered_models,
                      "champion": result.champion, "unauthenticated_status": result.unauthenticated_status,
                      "artifact_probe": result.artifact_probe, "roles": result.roles,
                      "statsd_metrics": len(result.statsd_metrics)},
                     indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
