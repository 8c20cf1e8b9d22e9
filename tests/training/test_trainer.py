"""Model tests on generated data.

On the generated Medialog source (pipelines/sources/medialog_generator.py, loaded by the real connector
and loader): the chosen model beats a lead-time-only logistic regression by at least 0.05 AUC on the
eight weeks after its as-of date, is calibrated there, is monotone in lead time where constrained, and
ignores the pseudonymous ids. On a small synthetic clinic: flipping or blanking every outcome on or after
the as-of date changes neither the trained model nor any prediction.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import date, timedelta

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from sklearn.metrics import roc_auc_score

from clinicflow.settings import SourceConfig, load_settings
from tests.features import synthetic
from training.dataset import load_training_data
from training.models import LogisticLearner
from training.registry import monotone_check
from training.trainer import TrainConfig, TrainResult, train

TODAY = date(2026, 10, 26)       # the generated clinic's clock: outcomes known up to here
AS_OF = TODAY - timedelta(days=56)  # the model is trained as of here; the 8 weeks after are "later weeks"
#: one thread per fit: tests share the machine (see CLINICFLOW_TRAIN_THREADS)
CONFIG = TrainConfig(algorithms=["logreg", "lightgbm", "xgboost", "stacking"], trials=4, timeout_s=120, folds=2,
                     fold_days=14, embargo_days=3, gate_days=21, threads=1)


@dataclass
class Trained:
    result: TrainResult
    later: pd.DataFrame          # feature rows of the later weeks (as of each one's day) with labels
    truth_auc: float             # AUC of the generator's true probabilities on the same weeks


@pytest.fixture(scope="module")
def medialog(server_url, test_db_prefix) -> Trained:
    from features.build import build_training_features, load_features
    from pipelines.ingest import ingest
    from pipelines.sources import medialog_generator as gen
    from training.backtest import isolated_warehouse

    source_url = server_url.set(database=f"{test_db_prefix}_mlsrc_{secrets.token_hex(2)}",
                                drivername="postgresql+psycopg2")
    gen.generate(source_url, appointments=100_000, seed=3, today=TODAY)
    source = SourceConfig(name="demo", kind="medialog", url=source_url.render_as_string(hide_password=False),
                          options=gen.connector_options())
    warehouse = server_url.set(database=f"{test_db_prefix}_mlwh_{secrets.token_hex(2)}")
    with isolated_warehouse(source, database_url=warehouse.render_as_string(hide_password=False)):
        ingest("demo", TODAY)
        build_training_features(TODAY)
        data = load_training_data(AS_OF, 730)
        result = train(data, CONFIG)
        later = load_features(training_until=TODAY, training_since=AS_OF, with_labels=True)
    engine = sa.create_engine(source_url, poolclass=sa.pool.NullPool)
    with engine.connect() as conn:
        truth = pd.read_sql(sa.text('SELECT "P_NOSHOW", "NOSHOW" FROM "CLINICFLOW_TRUTH" WHERE "NOSHOW" IS NOT NULL '
                                    'AND "START_AT" >= :a AND "START_AT" < :b'), conn,
                            params={"a": AS_OF, "b": TODAY})
    engine.dispose()
    return Trained(result, later, roc_auc_score(truth["NOSHOW"].astype(int), truth["P_NOSHOW"]))


def test_model_beats_lead_time_only_by_005_auc_on_later_weeks(medialog):
    result, later = medialog.result, medialog.later
    y = later["label"].to_numpy()
    assert len(later) > 5000 and 0 < y.sum() < len(y)
    model_auc = roc_auc_score(y, result.model.predict_proba(later))
    lead = LogisticLearner({"C": 1.0, "bins": 0}).fit(result.data.frame[["lead_days"]].astype(float), result.data.y)
    lead_auc = roc_auc_score(y, lead.predict(later[["lead_days"]].astype(float)))
    message = (f"{result.best}: AUC {model_auc:.4f} on {len(later):,} later appointments; lead time alone "
               f"{lead_auc:.4f}; the generator's true probabilities {medialog.truth_auc:.4f}")
    assert model_auc >= lead_auc + 0.05, message
    assert model_auc < medialog.truth_auc, message  # nothing beats the truth: a leak would
    comparison = result.comparison()
    assert set(comparison["algorithm"].str.replace(" (chosen)", "")) == {*CONFIG.algorithms, "lead_only"}
    assert comparison[["auc", "pr_auc", "brier", "log_loss", "ece", "lift_top_decile"]].notna().all().all()


def test_probabilities_are_calibrated_on_later_weeks(medialog):
    p = medialog.result.model.predict_proba(medialog.later)
    observed = medialog.later["label"].mean()
    assert abs(p.mean() - observed) < 0.03, f"mean prediction {p.mean():.3f}, observed {observed:.3f}"


@pytest.mark.parametrize("algorithm", ["lightgbm", "xgboost"])
def test_longer_lead_never_lowers_risk_in_constrained_models(medialog, algorithm):
    model = medialog.result.candidates[algorithm].gate_model
    assert model.monotone_in_lead
    assert monotone_check(model, medialog.later.sample(400, random_state=0)) <= 1e-9


def test_pseudonymous_ids_have_no_effect(medialog):
    model, later = medialog.result.model, medialog.later.head(2000)
    assert not {"patient_key", "appointment_id", "source"} & set(model.features)
    other = later.assign(appointment_id="x" + later["appointment_id"], patient_key="someone-else")
    np.testing.assert_array_equal(model.predict_proba(later), model.predict_proba(other))


# --------------------------------------------------------------------------------------------------
# later outcomes change nothing (small synthetic clinic: trains twice)

FIRST = date(2026, 1, 5)
SYN_AS_OF = date(2026, 3, 30)


@pytest.fixture(scope="module")
def history(own_warehouse):
    hist = synthetic.generate(FIRST, 14, seed=21, patients=900, doctors=6)
    synthetic.write(own_warehouse, hist)
    return hist


def test_outcomes_on_or_after_as_of_change_no_prediction(own_warehouse, history):
    """Flip and blank every outcome from the as-of date on; retrain from scratch: identical training data,
    identical probabilities for the run's booked appointments."""
    from features.build import build_features, build_training_features

    settings = load_settings()
    config = TrainConfig(algorithms=["logreg", "lightgbm"], trials=1, timeout_s=60, folds=2, fold_days=7, threads=1,
                         embargo_days=2, gate_days=14)

    def run() -> tuple[str, np.ndarray]:
        build_training_features(SYN_AS_OF, settings=settings, engine=own_warehouse, recompute=True)
        data = load_training_data(SYN_AS_OF, 730, settings=settings, engine=own_warehouse)
        result = train(data, config)
        horizon = build_features(SYN_AS_OF, horizon_days=7, settings=settings, engine=own_warehouse, persist=False)
        return data.snapshot_id(), result.model.predict_proba(horizon.sort_values("appointment_id"))

    snapshot, before = run()
    changed = history.appointments.copy()
    later = changed["start_at"].dt.date >= SYN_AS_OF
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
