"""Fast unit tests of the training building blocks (no database)."""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd
import pytest

from clinicflow.errors import ClinicFlowError
from training import calibration
from training.dataset import model_inputs, rolling_origin
from training.metrics import auc_by_group, ece, evaluate, top_decile_lift
from training.models import Encoder, fit_stack_weights, make
from training.registry import judge
from training.trainer import TrainConfig
from training.tuning import allocate


def test_rolling_origin_windows_and_embargo():
    folds = rolling_origin(date(2026, 3, 30), folds=3, fold_days=7, embargo_days=7)
    assert [str(f.valid) for f in folds] == ["2026-03-09…2026-03-15", "2026-03-16…2026-03-22", "2026-03-23…2026-03-29"]
    assert [f.train_end for f in folds] == [date(2026, 3, 2), date(2026, 3, 9), date(2026, 3, 16)]


def test_model_inputs_expand_flags_qualify_ids_and_drop_keys():
    frame = pd.DataFrame({
        "source": ["a", "b"], "appointment_id": ["1", "2"], "patient_key": ["k1", "k2"], "lead_days": [3, 0],
        "same_day_booking": [False, True], "practitioner_id": ["7", None],
        "patient_flags": [{"diabetes": 1, "note": "x"}, {}], "external": ['{"weather_t": -3}', "{}"],
    })
    X = model_inputs(frame)
    assert "patient_key" not in X and "appointment_id" not in X and "source" not in X
    assert X["practitioner_id"].tolist() == ["a:7", None]
    assert X["same_day_booking"].tolist() == [0.0, 1.0]
    assert X["flag_diabetes"].iloc[0] == 1.0 and np.isnan(X["flag_diabetes"].iloc[1])
    assert "flag_note" not in X and X["ext_weather_t"].iloc[0] == -3.0
    assert list(model_inputs(frame, features=["lead_days", "flag_missing"]).columns) == ["lead_days", "flag_missing"]


def test_encoder_maps_rare_and_unseen_levels_to_other():
    X = pd.DataFrame({"c": ["a"] * 30 + ["b"] * 3, "n": np.arange(33.0)})
    enc = Encoder(min_count=20).fit(X)
    out = enc.transform(pd.DataFrame({"c": ["a", "b", "zzz", None], "n": [1.0, 2.0, 3.0, 4.0]}))
    assert out["c"].astype(object).tolist()[:3] == ["a", Encoder.OTHER, Encoder.OTHER]
    assert pd.isna(out["c"].iloc[3])


def test_metrics_known_values():
    y = np.array([0, 0, 1, 1])
    p = np.array([0.1, 0.4, 0.35, 0.8])
    m = evaluate(y, p)
    assert m["auc"] == pytest.approx(0.75)
    assert m["brier"] == pytest.approx(np.mean((p - y) ** 2))
    assert ece(np.array([0, 1] * 50), np.full(100, 0.5)) == pytest.approx(0.0)
    assert ece(np.zeros(10), np.full(10, 0.3)) == pytest.approx(0.3)
    yy = np.array([1] * 10 + [0] * 90)
    assert top_decile_lift(yy, np.linspace(1, 0, 100)) == pytest.approx(10.0)
    groups = auc_by_group(np.tile(y, 10), np.tile(p, 10), pd.Series(["F", "M"] * 20), min_size=10)
    assert set(groups) == {"F", "M"}


def test_calibration_choice_fixes_a_miscalibrated_model():
    rng = np.random.default_rng(0)
    folds_p, folds_y = [], []
    for _ in range(3):
        true = rng.uniform(0.02, 0.5, 3000)
        y = (rng.random(3000) < true).astype(int)
        folds_p.append(np.clip(true * 1.8, 0, 0.99))  # overconfident
        folds_y.append(y)
    choice = calibration.choose(folds_p, folds_y)
    assert choice.method in ("sigmoid", "isotonic")
    assert choice.scores[choice.method] < choice.scores["none"]
    cal = calibration.fit_final(choice.method, folds_p, folds_y)
    fixed = cal.transform(folds_p[0])
    assert abs(fixed.mean() - folds_y[0].mean()) < 0.02
    assert np.all(np.diff(cal.transform(np.linspace(0.01, 0.99, 50))) >= -1e-12)  # never reverses the ranking


def test_stack_weights_are_non_negative():
    rng = np.random.default_rng(1)
    z = rng.normal(size=(2000, 3))
    y = (rng.random(2000) < 1 / (1 + np.exp(-(1.5 * z[:, 0] - 0.8 * z[:, 1])))).astype(int)
    w, _ = fit_stack_weights(z, y)
    assert np.all(w >= 0) and w[0] > 1.0 and w[1] == pytest.approx(0.0, abs=1e-6)


def test_trial_allocation_and_config_errors():
    assert allocate(["lightgbm", "xgboost", "forest", "tree", "logreg"], 30) == {
        "lightgbm": 11, "xgboost": 9, "forest": 4, "tree": 3, "logreg": 3}
    assert sum(allocate(["lightgbm", "logreg"], 5).values()) == 5
    assert allocate(["lightgbm"], 0) == {"lightgbm": 0}
    with pytest.raises(ClinicFlowError, match="unknown algorithm"):
        TrainConfig(algorithms=["svm"]).validate()
    with pytest.raises(ClinicFlowError, match="unknown training option"):
        TrainConfig().with_overrides({"tirals": 3})
    with pytest.raises(ClinicFlowError, match="unknown feature"):
        TrainConfig(features=["patient_key"]).validate()
    assert TrainConfig().hash() != TrainConfig(trials=5).hash()


def test_gate_judgement():
    champion = {"log_loss": 0.40, "auc": 0.70}
    assert judge({"log_loss": 0.39, "auc": 0.71}, champion, 0.001)[0]
    promoted, reason = judge({"log_loss": 0.3995, "auc": 0.72}, champion, 0.001)
    assert not promoted and "log loss not better by the margin" in reason
    promoted, reason = judge({"log_loss": 0.35, "auc": 0.69}, champion, 0.001)
    assert not promoted and "AUC lower" in reason


def test_learners_give_probabilities_and_additive_contributions():
    rng = np.random.default_rng(2)
    n = 600
    X = pd.DataFrame({"lead_days": rng.integers(0, 30, n).astype(float), "age": rng.integers(0, 90, n).astype(float),
                      "channel": rng.choice(["x:web", "x:phone"], n).astype(object)})
    y = (rng.random(n) < 0.1 + 0.01 * X["lead_days"]).astype(int)
    for name in ("logreg", "lightgbm", "xgboost", "tree", "forest"):
        learner = make(name, {"n_estimators": 30} if name in ("lightgbm", "xgboost", "forest") else None).fit(X, y)
        p = learner.predict(X)
        assert p.shape == (n,) and np.all((p >= 0) & (p <= 1))
        contrib = learner.contributions(X.head(20))
        assert list(contrib.columns) == [*learner.features, "bias"]
        total = contrib.sum(axis=1).to_numpy()
        expected = learner.margin(X.head(20)) if learner.contribution_space == "log-odds" else p[:20]
        assert np.allclose(total, expected, atol=1e-4), name


@pytest.mark.parametrize("algorithm", ["logreg", "tree", "forest", "xgboost", "lightgbm"])
def test_default_hyper_parameters_lie_in_the_search_space(algorithm):
    """Each study starts with the defaults as its first trial: they must be valid values of the space."""
    import optuna

    from training.models import LEARNERS
    from training.tuning import _space_names

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    defaults = LEARNERS[algorithm].default_params()
    study = optuna.create_study()
    study.enqueue_trial({k: v for k, v in defaults.items() if k in _space_names(algorithm)})
    seen = {}

    def objective(trial):
        seen.update(LEARNERS[algorithm].suggest(trial))
        return 0.0

    study.optimize(objective, n_trials=1)
    assert all(seen[k] == defaults[k] for k in seen if k in defaults), (seen, defaults)


def _model_inputs_row_by_row(frame: pd.DataFrame) -> pd.DataFrame:
    """The definition of model_inputs, written plainly (a row at a time) to check the vectorised one."""
    import json

    from features import definitions
    from training.dataset import SOURCE_QUALIFIED

    out = {}
    for f in definitions.FEATURES:
        if f.name not in frame:
            continue
        col = frame[f.name]
        if f.kind == "categorical":
            values = [None if pd.isna(v) else v for v in col]
            if f.name in SOURCE_QUALIFIED:
                values = [None if v is None else f"{s}:{v}" for s, v in zip(frame["source"], values, strict=True)]
            out[f.name] = pd.Series(values, index=frame.index, dtype=object)
        else:
            out[f.name] = pd.to_numeric(col.astype("float64") if col.dtype == bool else col, errors="coerce")
    for column, prefix in definitions.EXPANDED_JSON_COLUMNS.items():
        rows = []
        for value in frame[column]:
            if isinstance(value, str):
                try:
                    value = json.loads(value)
                except json.JSONDecodeError:
                    value = None
            rows.append({prefix + k: float(v) for k, v in (value or {}).items()
                         if isinstance(v, (bool, int, float))} if isinstance(value, dict) else {})
        names = sorted({k for r in rows for k in r}, key=lambda k: next(i for i, r in enumerate(rows) if k in r))
        for name in names:
            out[name] = pd.Series([r.get(name, np.nan) for r in rows], index=frame.index, dtype="float64")
    return pd.DataFrame(out, index=frame.index)


def test_model_inputs_equal_their_row_by_row_definition():
    """Shared and separate dicts, JSON text (valid, invalid, non-objects), None; ids of several sources that
    repeat; missing ids; booleans with and without NULLs; a non-default index."""
    rng = np.random.default_rng(4)
    n = 500
    shared = {"welfare": 1, "diabetes": True, "note": "text"}
    flags = [shared, {"welfare": 0}, '{"hypertension": 2.5}', "not json", "[1, 2]", None, {}, {"x": None}]
    frame = pd.DataFrame({
        "source": rng.choice(["main", "branch2", "fhir"], n),
        "lead_days": rng.integers(0, 60, n), "lead_hours": rng.random(n) * 100,
        "same_day_booking": rng.random(n) < 0.2,
        "confirmed": pd.Series(rng.choice([True, False, None], n), dtype=object),
        "practitioner_id": rng.choice(["7", "8", None, "9"], n), "channel": rng.choice(["web", "phone", None], n),
        "sex": rng.choice(["F", "M", None], n), "season": rng.choice(["winter", "summer"], n),
        "patient_flags": [flags[k] for k in rng.integers(0, len(flags), n)],
        "external": [f'{{"weather_t": {k}}}' if k % 4 else None for k in range(n)],
    }, index=pd.RangeIndex(100, 100 + n))
    expected = _model_inputs_row_by_row(frame)
    pd.testing.assert_frame_equal(model_inputs(frame), expected)
    wanted = ["flag_diabetes", "practitioner_id", "lead_days", "flag_absent", "ext_weather_t"]
    pd.testing.assert_frame_equal(model_inputs(frame, features=wanted),
                                  expected.reindex(columns=wanted))


def test_logistic_contributions_are_centred_on_the_training_means():
    """The logistic regression's SHAP values: each feature's term averages 0 over the training rows (a
    level common in training is no reason for everyone), the terms still add up to the margin, and a model
    fitted before the means were stored keeps its uncentred terms (same sums)."""
    rng = np.random.default_rng(4)
    n = 2000
    X = pd.DataFrame({"lead_days": rng.integers(0, 30, n).astype(float),
                      "age": np.where(rng.random(n) < 0.1, np.nan, rng.integers(0, 90, n)),
                      "channel": rng.choice(["x:web", "x:phone", "x:desk"], n, p=[0.8, 0.15, 0.05]).astype(object)})
    y = (rng.random(n) < 0.1 + 0.01 * X["lead_days"] + 0.1 * (X["channel"] == "x:web")).astype(int)
    learner = make("logreg").fit(X, y)
    contrib = learner.contributions(X)
    means = contrib[learner.features].mean(axis=0)
    assert np.abs(means.to_numpy()).max() < 1e-9, means
    assert np.allclose(contrib.sum(axis=1).to_numpy(), learner.margin(X), atol=1e-9)
    # the most common channel adds nothing on average; uncentred, it added its coefficient to every row
    web = (X["channel"] == "x:web").to_numpy()
    centred_web = contrib.loc[web, "channel"].to_numpy()
    del learner._design_mean  # as a learner pickled before this change
    old = learner.contributions(X)
    assert np.allclose(old.sum(axis=1).to_numpy(), learner.margin(X), atol=1e-9)
    assert np.abs(old["channel"].mean()) > 0.05
    assert np.abs(centred_web).mean() < 0.5 * np.abs(old.loc[web, "channel"].to_numpy()).mean()


def test_shap_tables_saved_at_training_or_skipped_with_a_warning(tmp_path, caplog):
    """training.stage._shap_tables: a tree model's tables are written for its artifact (and load back for
    the same model file); a model whose tables cannot be built is registered without them (None and a
    warning), since scoring builds them itself."""
    import logging

    import joblib

    from scoring.treeshap import ModelExplainer
    from training.calibration import Calibrator
    from training.model import NoShowModel
    from training.pyfunc import file_digest
    from training.stage import _shap_tables

    rng = np.random.default_rng(5)
    X = pd.DataFrame({"lead_days": rng.integers(0, 30, 500).astype(float),
                      "channel": rng.choice(["x:web", "x:phone"], 500).astype(object)})
    y = (rng.random(500) < 0.1 + 0.01 * X["lead_days"]).astype(int)
    model = NoShowModel(make("lightgbm", {"n_estimators": 20}).fit(X, y), Calibrator("sigmoid", 1.0, 0.0),
                        "test", None, None)
    model_path = tmp_path / "model.joblib"
    joblib.dump(model, model_path)
    written = _shap_tables(model, model_path, tmp_path / "shap_tables.npz")
    assert written == tmp_path / "shap_tables.npz" and written.exists()
    assert ModelExplainer.load(model, written, file_digest(model_path)) is not None

    class Broken:
        features = property(lambda self: (_ for _ in ()).throw(RuntimeError("no features")))

    with caplog.at_level(logging.WARNING, logger="training.stage"):
        assert _shap_tables(Broken(), model_path, tmp_path / "broken.npz") is None
    assert "not saved with it" in caplog.text and "no features" in caplog.text
    assert not (tmp_path / "broken.npz").exists()
