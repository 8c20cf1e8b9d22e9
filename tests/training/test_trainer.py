"""Model tests on generated data: the model beats lead time alone on later weeks, is monotone in lead
time where constrained, ignores the pseudonymous ids, and no later outcome changes a prediction."""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from clinicflow.settings import load_settings
from features.build import build_features, build_training_features
from tests.features import synthetic
from training.dataset import load_training_data
from training.models import LogisticLearner
from training.registry import monotone_check
from training.trainer import TrainConfig, train

FIRST = date(2026, 1, 5)
AS_OF = date(2026, 4, 13)       # 14 weeks of history
LATER = 14                      # then two later weeks to judge on
CONFIG = TrainConfig(algorithms=["logreg", "lightgbm", "xgboost", "stacking"], trials=4, timeout_s=60, folds=2,
                     fold_days=7, embargo_days=2, gate_days=14)


@pytest.fixture(scope="module")
def settings():
    return load_settings()


@pytest.fixture(scope="module")
def history(own_warehouse):
    hist = synthetic.generate(FIRST, 16, seed=21, patients=1500, doctors=8)
    synthetic.write(own_warehouse, hist)
    return hist


def _later_weeks(engine, settings) -> pd.DataFrame:
    """Appointments of the two weeks after the as-of date with an outcome, each as of its own day."""
    core = synthetic.read_core(engine)
    later = core[(core["start_at"].dt.date >= AS_OF) & (core["start_at"].dt.date < AS_OF + timedelta(days=LATER))
                 & core["status"].isin(["noshow", "fulfilled", "arrived"])]
    keys = later[["source", "appointment_id"]].assign(as_of=later["start_at"].dt.date)
    frame = build_features(AS_OF, appointments=keys, settings=settings, engine=engine, persist=False)
    return frame.merge(later[["appointment_id", "status"]], on="appointment_id")


@pytest.fixture(scope="module")
def trained(own_warehouse, history, settings):
    build_training_features(AS_OF, settings=settings, engine=own_warehouse)
    data = load_training_data(AS_OF, 730, settings=settings, engine=own_warehouse)
    return train(data, CONFIG)


def test_beats_lead_time_only_by_005_auc_on_later_weeks(own_warehouse, settings, trained):
    later = _later_weeks(own_warehouse, settings)
    y = (later["status"] == "noshow").to_numpy(int)
    assert len(later) > 500 and 0 < y.sum() < len(y)
    model_auc = roc_auc_score(y, trained.model.predict_proba(later))
    lead = LogisticLearner({"C": 1.0}).fit(trained.data.frame[["lead_days"]].astype(float), trained.data.y)
    lead_auc = roc_auc_score(y, lead.predict(later[["lead_days"]].astype(float)))
    assert model_auc >= lead_auc + 0.05, f"model AUC {model_auc:.4f} vs lead time alone {lead_auc:.4f}"
    # the training's own comparison on its gate window says the same
    chosen = trained.candidates[trained.best].gate_metrics["auc"]
    assert chosen >= trained.baseline.gate_metrics["auc"] + 0.05
    comparison = trained.comparison()
    assert set(comparison["algorithm"].str.replace(" (chosen)", "")) == {*CONFIG.algorithms, "lead_only"}
    assert comparison[["auc", "pr_auc", "brier", "log_loss", "ece", "lift_top_decile"]].notna().all().all()


def test_probabilities_are_calibrated_on_later_weeks(own_warehouse, settings, trained):
    later = _later_weeks(own_warehouse, settings)
    p = trained.model.predict_proba(later)
    observed = (later["status"] == "noshow").mean()
    assert abs(p.mean() - observed) < 0.03, f"mean prediction {p.mean():.3f}, observed {observed:.3f}"


@pytest.mark.parametrize("algorithm", ["lightgbm", "xgboost"])
def test_longer_lead_never_lowers_risk_in_constrained_models(own_warehouse, settings, trained, algorithm):
    model = trained.candidates[algorithm].gate_model
    assert model.monotone_in_lead
    sample = _later_weeks(own_warehouse, settings).sample(300, random_state=0)
    assert monotone_check(model, sample) <= 1e-9


def test_pseudonymous_ids_have_no_effect(own_warehouse, history, settings, trained):
    later = _later_weeks(own_warehouse, settings)
    before = trained.model.predict_proba(later)
    assert not {"patient_key", "appointment_id", "source"} & set(trained.model.features)
    shuffled = later.assign(appointment_id="x" + later["appointment_id"], patient_key="someone-else")
    assert np.array_equal(before, trained.model.predict_proba(shuffled))
    renamed = history.appointments.assign(patient_key="z" + history.appointments["patient_key"].str[::-1])
    patients = history.patients.assign(patient_key="z" + history.patients["patient_key"].str[::-1])
    try:
        synthetic.write(own_warehouse, synthetic.History(renamed, patients, history.slots, history.resource_days,
                                                         history.first_day, history.last_day))
        after = trained.model.predict_proba(_later_weeks(own_warehouse, settings))
    finally:
        synthetic.write(own_warehouse, history)
    assert np.array_equal(before, after)


def test_outcomes_on_or_after_as_of_change_no_prediction(own_warehouse, history, settings):
    """Flip and blank every outcome from the as-of date on; retrain from scratch: identical model, identical
    probabilities for the run's booked appointments."""
    config = TrainConfig(algorithms=["logreg", "lightgbm"], trials=2, timeout_s=60, folds=2, fold_days=7,
                         embargo_days=2, gate_days=14)

    def run() -> tuple[str, np.ndarray]:
        build_training_features(AS_OF, settings=settings, engine=own_warehouse, recompute=True)
        data = load_training_data(AS_OF, 730, settings=settings, engine=own_warehouse)
        result = train(data, config)
        horizon = build_features(AS_OF, horizon_days=7, settings=settings, engine=own_warehouse, persist=False)
        return data.snapshot_id(), result.model.predict_proba(horizon.sort_values("appointment_id"))

    snapshot, before = run()
    changed = history.appointments.copy()
    later = changed["start_at"].dt.date >= AS_OF
    outcome = changed["status"].isin(["noshow", "fulfilled", "arrived"])
    changed.loc[later & outcome, "status"] = np.where(changed.loc[later & outcome, "status"] == "noshow",
                                                      "fulfilled", "noshow")
    changed.loc[later & outcome & (np.arange(len(changed)) % 2 == 0), "status"] = "booked"
    try:
        synthetic.write(own_warehouse, synthetic.History(changed, history.patients, history.slots,
                                                         history.resource_days, history.first_day, history.last_day))
        snapshot_after, after = run()
    finally:
        synthetic.write(own_warehouse, history)
    assert snapshot_after == snapshot
    assert len(before) > 50
    np.testing.assert_array_equal(before, after)
