"""``clinicflow evaluate-policies`` and ``clinicflow optimize`` end to end (reporting + MLflow)."""

from __future__ import annotations

import sqlalchemy as sa

from clinicflow.cli import main
from tests.optimization.clinic import drop_clinic, make_clinic

COUNT = "SELECT count(*) FROM reporting.policy_evaluation WHERE label = 'cft-cli'"


def test_evaluate_policies_prints_stores_and_logs(migrated_warehouse, capsys):
    argv = ["evaluate-policies", "--synthetic", "12", "--validation-days", "8", "--reps", "4", "--bootstrap", "50",
            "--weights", "0.5:1:1.5", "--workers", "1", "--label", "cft-cli"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "== cost weights W0.5/I1/O1.5/R0" in out and "— replay ==" in out
    assert "extra patients come with the model's average show probability" in out
    assert "logged to MLflow run" in out
    with migrated_warehouse.connect() as conn:
        rows = conn.execute(sa.text(COUNT)).scalar()
    assert main(argv) == 0  # the same label again replaces, never duplicates
    with migrated_warehouse.connect() as conn:
        again = conn.execute(sa.text(COUNT)).scalar()
        fair = conn.execute(sa.text("SELECT count(DISTINCT group_kind) FROM reporting.policy_evaluation_fairness "
                                    "WHERE label = 'cft-cli'")).scalar()
    assert rows == again == 2 * 6 * 9
    assert fair == 4
    import mlflow

    runs = mlflow.search_runs(experiment_names=["clinicflow-overbooking"],
                              filter_string="tags.`clinicflow.label` = 'cft-cli'")
    assert len(runs) == 2
    artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(runs.iloc[0].run_id)}
    assert {"waiting_vs_patients_seen.png", "overtime_vs_patients_seen.png", "waiting_by_group.png",
            "policy_evaluation.csv"} <= artifacts


def test_evaluate_policies_needs_a_data_set(capsys):
    assert main(["evaluate-policies"]) == 2
    assert "--synthetic N" in capsys.readouterr().err


def test_optimize_command(migrated_warehouse, settings_env, capsys):
    settings_env(horizon_days="3")
    clinic = make_clinic(migrated_warehouse, seed=4)
    try:
        assert main(["optimize", "--as-of", clinic.as_of.isoformat(), "--source", clinic.source, "--branch", "b1",
                     "--workers", "1"]) == 0
        out = capsys.readouterr().out
        assert f"OK  {clinic.source}/b1: 6 resource-days" in out
        assert "expected patients gained" in out
    finally:
        drop_clinic(migrated_warehouse, clinic.source)
