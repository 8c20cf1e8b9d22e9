"""MLflow wiring: tracking and registry on a database store, artifacts in a local folder by default."""

from __future__ import annotations

import logging
import os

from clinicflow import db
from clinicflow.settings import Settings, get_settings

log = logging.getLogger(__name__)

EXPERIMENT = "clinicflow-noshow"


def tracking_uri(settings: Settings | None = None) -> str:
    settings = settings or get_settings()
    url = db.url_for("mlflow", settings)
    if url.get_backend_name() == "postgresql":
        db.ensure_database(url)
    return url.render_as_string(hide_password=False)


def configure(settings: Settings | None = None, experiment: str = EXPERIMENT) -> str:
    """Point MLflow at ClinicFlow's tracking store, create the experiment; return its id."""
    settings = settings or get_settings()
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    import mlflow

    uri = tracking_uri(settings)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    client = mlflow.MlflowClient()
    found = client.get_experiment_by_name(experiment)
    if found is not None:
        return found.experiment_id
    root = settings.artifact_root
    location = root if "://" in root else f"file://{os.path.abspath(root)}/{experiment}"
    log.info("creating MLflow experiment %s (artifacts in %s)", experiment, location)
    try:
        return client.create_experiment(experiment, artifact_location=location)
    except Exception:  # created concurrently
        found = client.get_experiment_by_name(experiment)
        if found is None:
            raise
        return found.experiment_id
