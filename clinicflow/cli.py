"""The ``clinicflow`` command line. Every pipeline stage can be run from here without Airflow.

A configuration or data mistake prints one clear message (exit code 2 for configuration, 1 for
anything else the operator must fix) instead of a traceback; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import secrets
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from clinicflow.cliargs import iso_date
from clinicflow.errors import ClinicFlowError, ConfigError

log = logging.getLogger("clinicflow.cli")

Handler = Callable[[argparse.Namespace], int]


# --------------------------------------------------------------------------------------------------
# commands


def cmd_config(args: argparse.Namespace) -> int:
    from clinicflow.settings import get_settings

    for name, value in get_settings().describe().items():
        print(f"{name:<38} {value}")
    return 0


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    from clinicflow import migrations

    applied = migrations.upgrade()
    print(f"applied {len(applied)} migration(s)" + (f": {', '.join(applied)}" if applied else "; schema is current"))
    return 0


def cmd_db_status(args: argparse.Namespace) -> int:
    from clinicflow import db, migrations

    state = migrations.status()
    print(f"warehouse: {db.mask(db.url_for('warehouse'))}")
    print(f"applied:   {len(state.applied)} (current: {state.current})")
    print(f"pending:   {', '.join(state.pending) or 'none'}")
    return 0 if not state.pending else 3


def cmd_db_url(args: argparse.Namespace) -> int:
    from clinicflow import db

    url = db.url_for(args.purpose)
    print(url.render_as_string(hide_password=not args.show_password))
    return 0


def cmd_health(args: argparse.Namespace) -> int:
    from pipelines.health import run_health_check

    checks = run_health_check()
    for check in checks:
        print(f"OK  {check.component:<20} {check.detail}")
    return 0


def cmd_airflow(args: argparse.Namespace) -> int:
    from clinicflow.airflow_env import airflow_env

    return _run([sys.executable, "-m", "airflow", *args.rest], env=airflow_env())


def cmd_ui(args: argparse.Namespace) -> int:
    from clinicflow.settings import get_settings

    if args.which == "airflow":
        from clinicflow.airflow_env import airflow_env

        env = airflow_env()
        env.setdefault("AIRFLOW__API__PORT", str(args.port or 8080))
        print("Starting Airflow (api-server, scheduler, dag-processor, triggerer) on "
              f"http://127.0.0.1:{env['AIRFLOW__API__PORT']}; the admin password is printed below and kept "
              f"in {Path(env['AIRFLOW_HOME']) / 'simple_auth_manager_passwords.json.generated'}. Ctrl-C stops it.")
        return _run([sys.executable, "-m", "airflow", "standalone"], env=env)
    from clinicflow import tracking

    settings = get_settings()
    uri = tracking.tracking_uri(settings)
    port = str(args.port or 5000)
    print(f"Starting the MLflow UI on http://127.0.0.1:{port}. Ctrl-C stops it.")
    return _run([
        sys.executable, "-m", "mlflow", "server", "--backend-store-uri", uri,
        "--default-artifact-root", settings.artifact_root, "--host", "127.0.0.1", "--port", port,
    ])


def cmd_demo(args: argparse.Namespace) -> int:
    from pipelines.demo import run_demo

    return run_demo(as_of=args.as_of, size=args.size, full_training=args.full_training)


def _run(command: Sequence[str], env: dict[str, str] | None = None) -> int:
    log.debug("running %s", " ".join(command))
    try:
        return subprocess.call(list(command), env=env)
    except KeyboardInterrupt:
        return 130


def ensure_local_secret(env_file: Path = Path(".env")) -> bool:
    """For local use: write a random pseudonymisation secret into ``.env`` if none is configured.

    Returns True if one was written. Production mode never gets here (settings refuse to load).
    """
    from clinicflow.settings import get_settings

    settings = get_settings()
    if settings.pseudonym_secret is not None:
        return False
    if settings.env == "production":
        raise ConfigError("CLINICFLOW_PSEUDONYM_SECRET must be set in production")
    append_env(
        env_file, "CLINICFLOW_PSEUDONYM_SECRET", secrets.token_urlsafe(32),
        "Written by `clinicflow demo`: the key of the HMAC that pseudonymises patient ids.\n"
        "# Keep it stable (changing it changes every patient key) and secret.",
    )
    return True


def append_env(env_file: Path, variable: str, value: str, comment: str) -> None:
    """Append ``VARIABLE='value'`` to a local ``.env`` (mode 600) and re-read the settings."""
    from clinicflow.settings import get_settings

    if "'" in value or "\n" in value:
        raise ConfigError(f"cannot write {variable} into {env_file}: the value holds a quote or a newline")
    quoted = f"'{value}'" if any(c in value for c in ' "#$\\') else value
    with env_file.open("a", encoding="utf-8") as fh:
        fh.write(f"\n# {comment}\n{variable}={quoted}\n")
    os.chmod(env_file, 0o600)
    get_settings.cache_clear()
    print(f"wrote {variable} into {env_file.resolve()} (local use only)")


# --------------------------------------------------------------------------------------------------
# parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="clinicflow",
        description="ClinicFlow: no-show forecasts and overbooking recommendations for outpatient clinics.",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("config", help="show the effective settings (secrets masked)")
    p.set_defaults(handler=cmd_config)

    p = sub.add_parser("db", help="warehouse database: migrations and URLs")
    dbsub = p.add_subparsers(dest="db_command", metavar="SUBCOMMAND", required=True)
    q = dbsub.add_parser("upgrade", help="apply pending schema migrations (idempotent)")
    q.set_defaults(handler=cmd_db_upgrade)
    q = dbsub.add_parser("status", help="list applied and pending migrations (exit 3 if any pending)")
    q.set_defaults(handler=cmd_db_status)
    q = dbsub.add_parser("url", help="print the URL of a database (password hidden)")
    q.add_argument("purpose", nargs="?", default="warehouse", choices=["warehouse", "airflow", "mlflow", "optuna"])
    q.add_argument("--show-password", action="store_true", help="print the password too")
    q.set_defaults(handler=cmd_db_url)

    p = sub.add_parser("health", help="check the warehouse, MLflow and every configured source")
    p.set_defaults(handler=cmd_health)

    p = sub.add_parser(
        "airflow", help="run an Airflow command in ClinicFlow's local Airflow environment",
        description="Runs `airflow ARGS…` with AIRFLOW_HOME, the metadata database and the DAG folder set, "
        "e.g. `clinicflow airflow dags list`.",
    )
    p.add_argument("rest", nargs=argparse.REMAINDER, help="arguments passed to airflow")
    p.set_defaults(handler=cmd_airflow)

    p = sub.add_parser("ui", help="start the Airflow or MLflow web UI locally")
    p.add_argument("which", choices=["airflow", "mlflow"])
    p.add_argument("--port", type=int, help="port (default 8080 for Airflow, 5000 for MLflow)")
    p.set_defaults(handler=cmd_ui)

    p = sub.add_parser(
        "demo", help="run the whole pipeline on generated demo data through Airflow",
        description="Sets up the warehouse, a generated demo source and Airflow, then runs the nightly DAG "
        "with `airflow dags test`. Running it again reuses what exists and duplicates nothing.",
    )
    p.add_argument("--as-of", type=iso_date, default=None, help="as-of date (default: today in clinic time)")
    p.add_argument("--size", type=int, default=None, help="appointments in the generated demo source")
    p.add_argument("--full-training", action="store_true",
                   help="train with the configured Optuna budget instead of the demo's small one")
    p.set_defaults(handler=cmd_demo)

    for register in _extensions():
        register(sub)
    return parser


def _extensions() -> list[Callable[[argparse._SubParsersAction], None]]:
    """Subcommands contributed by the stage packages (each module exposes ``register_cli``)."""
    import importlib

    found = []
    for module in (
        "pipelines.cli", "pipelines.backfill", "features.cli", "training.cli", "scoring.cli", "optimization.cli",
        "benchmarks.cli",
    ):
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name is None or not (module == exc.name or module.startswith(exc.name + ".")):
                raise
            continue
        found.append(mod.register_cli)
    return found


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from clinicflow import logs

    level = "DEBUG" if args.debug else os.environ.get("CLINICFLOW_LOG_LEVEL", "INFO").upper()
    logs.configure(level if level in ("DEBUG", "INFO", "WARNING", "ERROR") else "INFO")
    try:
        return int(args.handler(args) or 0)
    except ConfigError as exc:
        if args.debug:
            raise
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    except ClinicFlowError as exc:
        if args.debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
