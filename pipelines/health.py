"""Health check of what a nightly run needs: the warehouse, MLflow and every configured source.

``clinicflow health`` and the ``health_check`` task of the ``clinicflow_ingest`` and ``nightly`` DAGs call
:func:`run_health_check`; it raises :class:`HealthCheckFailed` naming every failing component.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass

import sqlalchemy as sa

from clinicflow import db
from clinicflow.errors import ClinicFlowError
from clinicflow.settings import Settings, SourceConfig, get_settings

log = logging.getLogger(__name__)


class HealthCheckFailed(ClinicFlowError):
    pass


@dataclass(frozen=True)
class Check:
    component: str
    ok: bool
    detail: str
    seconds: float


def check_warehouse(settings: Settings) -> str:
    from clinicflow import migrations

    with db.connect() as conn:
        version = conn.execute(sa.text("SHOW server_version")).scalar()
    state = migrations.status()
    if state.pending:
        raise ClinicFlowError(
            f"schema is behind: pending migrations {state.pending}; run `clinicflow db upgrade`"
        )
    return f"PostgreSQL {version} at {db.mask(db.url_for('warehouse', settings))}, schema {state.current}"


def check_mlflow(settings: Settings) -> str:
    from clinicflow import tracking

    tracking.configure(settings)
    import mlflow

    client = mlflow.MlflowClient()
    experiments = client.search_experiments(max_results=5)
    models = client.search_registered_models(max_results=5)
    return (
        f"tracking store {db.mask(tracking.tracking_uri(settings))}: "
        f"{len(experiments)} experiment(s), {len(models)} registered model(s) seen"
    )


def check_source(source: SourceConfig) -> str:
    from pipelines.sources import probe

    return probe(source)


def run_health_check(settings: Settings | None = None) -> list[Check]:
    """Check each component; raise HealthCheckFailed listing the failures, else return the checks."""
    settings = settings or get_settings()
    targets = [("warehouse", lambda: check_warehouse(settings)), ("mlflow", lambda: check_mlflow(settings))]
    targets += [(f"source:{s.name}", lambda s=s: check_source(s)) for s in settings.sources]
    checks: list[Check] = []
    for component, fn in targets:
        started = time.perf_counter()
        try:
            detail, ok = fn(), True
        except Exception as exc:
            detail, ok = f"{type(exc).__name__}: {exc}", False
        check = Check(component, ok, detail, round(time.perf_counter() - started, 3))
        (log.info if ok else log.error)("health %-20s %s (%.2fs) %s", component, "OK" if ok else "FAILED",
                                        check.seconds, detail)
        checks.append(check)
    if not settings.sources:
        log.warning("health: no sources configured (CLINICFLOW_SOURCES is empty)")
    failed = [c for c in checks if not c.ok]
    if failed:
        raise HealthCheckFailed(
            "health check failed for " + "; ".join(f"{c.component}: {c.detail}" for c in failed)
        )
    return checks


def as_dicts(checks: list[Check]) -> list[dict]:
    return [asdict(c) for c in checks]
