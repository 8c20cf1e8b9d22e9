"""Done-when of issue 4: ``dag.test()`` runs of ``nightly`` on generated data. The first run registers a
``noshow`` version and makes it champion; a second run with a deliberately worse configuration (lead time
only) registers a challenger and keeps the champion, recording why."""

from __future__ import annotations

import json
import secrets
from datetime import date

import numpy as np
import pytest
import sqlalchemy as sa

from tests.dags.test_nightly import run_nightly
from tests.training import vitoria_like

pytestmark = pytest.mark.slow

FIRST_RUN = date(2026, 10, 19)
SECOND_RUN = date(2026, 10, 26)


@pytest.fixture()
def generated_source(tmp_path, settings_env, server_url, test_db_prefix):
    """A generated export as the only source, in a warehouse (and MLflow, Optuna databases) of its own."""
    frame = vitoria_like.generate(date(2026, 8, 31), 63, per_day=70, seed=8)
    path = vitoria_like.write(frame, tmp_path / "export.csv")
    warehouse = server_url.set(database=f"{test_db_prefix}_nt_{secrets.token_hex(3)}")
    settings_env(
        database_url=warehouse.render_as_string(hide_password=False),
        sources=json.dumps([{"name": "gen", "kind": "csv", "format": "vitoria", "path": str(path)}]),
        holiday_country="BR-ES", train_algorithms="logreg,lightgbm", train_optuna_trials="2",
        train_optuna_timeout_s="60", train_folds="2", train_fold_days="5", train_embargo_days="1",
        train_gate_days="7", train_every_days="7", train_threads="1",
    )
    from clinicflow import db

    yield db.engine_for_url(warehouse)
    db.dispose_engines()


def _training_runs(engine) -> list[dict]:
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(sa.text(
            "SELECT as_of, status, model_version, promoted, decision, algorithm FROM ml.training_run "
            "ORDER BY training_run_id")).mappings()]


def test_first_run_sets_champion_worse_configuration_keeps_it(airflow_db, generated_source):
    from mlflow import MlflowClient

    from training import registry
    from training.stage import run_training

    states, _ = run_nightly(FIRST_RUN)
    failed = {t: s for t, s in states.items() if s != "success"}
    assert not failed, f"tasks not successful: {failed}"
    assert {"features", "train"} <= set(states)
    runs = _training_runs(generated_source)
    assert [(r["status"], r["model_version"], r["promoted"]) for r in runs] == [("success", "1", True)]
    champion = registry.version_by_alias(registry.CHAMPION)
    assert champion is not None and str(champion.version) == "1"
    assert champion.tags["champion_decision"] == "promoted"

    # what the MLflow run holds
    client = MlflowClient()
    artifacts = {a.path for a in client.list_artifacts(champion.run_id)}
    assert {"model_card.md", "comparison.csv", "comparison.md", "features.json", "gx_validation.json",
            "gate_decision.json", "plots"} <= artifacts
    plots = {a.path for a in client.list_artifacts(champion.run_id, "plots")}
    assert {f"plots/{name}.png" for name in ("roc", "pr", "calibration", "lift", "shap_summary")} <= plots
    mlflow_run = client.get_run(champion.run_id)
    assert mlflow_run.data.params["feature_set_version"] and mlflow_run.data.params["snapshot_id"]
    for metric in ("gate.auc", "gate.pr_auc", "gate.brier", "gate.log_loss", "gate.ece", "gate.lift_top_decile",
                   "cmp.lead_only.auc", "cmp.logreg.auc", "cmp.lightgbm.auc"):
        assert metric in mlflow_run.data.metrics, metric
    with open(client.download_artifacts(champion.run_id, "gx_validation.json"), encoding="utf-8") as fh:
        gx = json.load(fh)
    assert gx["batches"] and gx["batches"][0]["source"] == "gen" and gx["batches"][0]["validation"]["gx_success"]

    # the registered pyfunc returns probabilities for the features of the run's booked appointments
    import mlflow

    from features.build import load_features

    scoring = load_features(as_of=FIRST_RUN)
    assert len(scoring) > 0
    p = mlflow.pyfunc.load_model("models:/noshow@champion").predict(scoring)
    assert isinstance(p, np.ndarray) and p.shape == (len(scoring),) and np.all((p > 0) & (p < 1))
    contributions = registry.load_champion().contributions(scoring.head(5))
    assert "lead_days" in contributions.columns and "bias" in contributions.columns

    # a week later, a deliberately worse configuration: lead time only
    states, _ = run_nightly(SECOND_RUN, params={"training": {"algorithms": ["logreg"], "features": ["lead_days"]}})
    failed = {t: s for t, s in states.items() if s != "success"}
    assert not failed, f"tasks not successful: {failed}"
    runs = _training_runs(generated_source)
    assert [(r["status"], r["model_version"], r["promoted"]) for r in runs] == [
        ("success", "1", True), ("success", "2", False)]
    assert runs[1]["decision"].startswith("champion kept")
    assert str(registry.version_by_alias(registry.CHAMPION).version) == "1"
    challenger = registry.version_by_alias(registry.CHALLENGER)
    assert str(challenger.version) == "2" and challenger.tags["champion_decision"] == "kept"
    assert client.get_run(challenger.run_id).data.tags["champion_decision"] == "kept"

    # the next night is not a retraining day
    summary = run_training(date(2026, 10, 27))
    assert summary["trained"] is False and "not due" in summary["reason"]
