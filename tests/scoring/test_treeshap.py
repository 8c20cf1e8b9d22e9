"""Fast exact TreeSHAP (scoring/treeshap.py): the same values as the libraries' own TreeSHAP, the ``shap``
package and Shapley values computed from their definition."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest

from scoring import treeshap
from training.models import ForestLearner, LightGBMLearner, TreeLearner, XGBoostLearner, make


def _frame(n: int, seed: int) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = pd.DataFrame({
        "lead_days": rng.exponential(10, n).round(),
        "age": np.where(rng.random(n) < 0.1, np.nan, rng.integers(0, 90, n)),          # missing values
        "prior_noshows": rng.poisson(0.5, n).astype(float),
        "reminder_sent": (rng.random(n) < 0.5).astype(float),                           # zeros
        "appt_hour": rng.uniform(8, 18, n),
        "channel": rng.choice(np.array(["x:web", "x:phone", "x:desk", None], dtype=object), n),
        "practitioner_id": rng.choice(np.array([f"x:d{i}" for i in range(60)], dtype=object), n),
    })
    logit = (-1.5 + 0.05 * X["lead_days"] + 0.5 * X["prior_noshows"] + 0.7 * (X["channel"] == "x:web")
             - 0.6 * X["reminder_sent"] + 0.4 * X["practitioner_id"].str[-1].isin(list("137")))
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    return X, y


@pytest.fixture(scope="module")
def data():
    X, y = _frame(4000, 1)
    test, _ = _frame(600, 2)
    test.loc[::7, "channel"] = None                 # missing category
    test.loc[::11, "practitioner_id"] = "x:unseen"  # a level the model never saw
    test.loc[::13, "lead_days"] = np.nan            # missing where training had none
    return X, y, test


def _matrix(learner, X: pd.DataFrame) -> np.ndarray:
    return learner._matrix(X) if isinstance(learner, TreeLearner) else treeshap._coded(learner, X)


def _tables(learner) -> treeshap.TreeTables:
    return treeshap.ModelExplainer._tables(learner)


def test_lightgbm_equals_its_own_pred_contrib_and_shap(data):
    import shap

    X, y, test = data
    learner = LightGBMLearner({"n_estimators": 80, "num_leaves": 24}).fit(X, y)
    fast = _tables(learner).contributions(_matrix(learner, test))
    native = learner.contributions(test).to_numpy()              # LightGBM predict(..., pred_contrib=True)
    assert np.abs(fast - native).max() < 1e-9
    package = shap.TreeExplainer(learner.model.booster_).shap_values(learner.encoder.transform(test))
    assert np.abs(fast[:, :-1] - package).max() < 1e-6
    assert np.abs(fast.sum(axis=1) - learner.margin(test)).max() < 1e-9


def test_xgboost_equals_its_own_pred_contribs_and_shap(data):
    import shap
    import xgboost as xgb

    X, y, test = data
    learner = XGBoostLearner({"n_estimators": 80, "max_depth": 6}).fit(X, y)
    fast = _tables(learner).contributions(_matrix(learner, test))
    native = learner.contributions(test).to_numpy()              # XGBoost predict(DMatrix, pred_contribs=True)
    # XGBoost computes in float32: agreement to its precision
    assert np.abs(fast - native).max() < 2e-6
    dmatrix = xgb.DMatrix(learner.encoder.transform(test), enable_categorical=True)
    package = shap.TreeExplainer(learner.model.get_booster()).shap_values(dmatrix)
    assert np.abs(fast[:, :-1] - package).max() < 2e-6
    assert np.abs(fast.sum(axis=1) - learner.margin(test)).max() < 2e-6


@pytest.mark.parametrize("learner_class", [TreeLearner, ForestLearner])
def test_scikit_learn_trees_equal_the_shap_package(data, learner_class):
    """The shap package's own TreeSHAP (its C++ implementation, not a library's) for the tree and forest."""
    X, y, test = data
    learner = learner_class({"n_estimators": 25} if learner_class is ForestLearner else None).fit(X, y)
    fast = _tables(learner).contributions(_matrix(learner, test))
    package = learner.contributions(test).to_numpy()             # shap.TreeExplainer(...).shap_values
    assert np.abs(fast - package).max() < 1e-9
    assert np.abs(fast.sum(axis=1) - learner.predict(test)).max() < 1e-9


def _expectation(node: dict, x: np.ndarray, known: set[int]) -> float:
    """E[tree | features in ``known`` fixed to x], the others averaged by the training rows of each branch."""
    if "split_index" not in node:
        return float(node["leaf_value"])
    f = int(node["split_feature"])
    left, right = node["left_child"], node["right_child"]
    if f in known:
        goes_left = x[f] <= float(node["threshold"])
        return _expectation(left if goes_left else right, x, known)
    count = float(node["internal_count"])

    def rows(n: dict) -> float:
        return float(n["internal_count"] if "split_index" in n else n["leaf_count"])

    return (rows(left) * _expectation(left, x, known) + rows(right) * _expectation(right, x, known)) / count


def test_lightgbm_equals_shapley_values_from_their_definition():
    """Shapley values computed from the definition (every subset of features, the path-dependent
    expectation of each tree), independent of any TreeSHAP implementation."""
    import lightgbm as lgb

    rng = np.random.default_rng(4)
    X = rng.normal(size=(3000, 5)).round(1)
    y = (X[:, 0] + X[:, 1] * X[:, 2] - 0.5 * X[:, 3] + rng.normal(size=3000) > 0).astype(int)
    model = lgb.LGBMClassifier(n_estimators=6, num_leaves=12, min_child_samples=20, verbose=-1).fit(X, y)
    trees = [t["tree_structure"] for t in model.booster_.dump_model()["tree_info"]]
    rows = rng.normal(size=(15, 5)).round(1)
    fast = treeshap.from_lightgbm(model.booster_).contributions(rows)
    m = X.shape[1]
    for r, x in enumerate(rows):
        value = {frozenset(s): sum(_expectation(t, x, set(s)) for t in trees)
                 for k in range(m + 1) for s in itertools.combinations(range(m), k)}
        for i in range(m):
            phi = 0.0
            for s, v in value.items():
                if i not in s:
                    weight = math.factorial(len(s)) * math.factorial(m - len(s) - 1) / math.factorial(m)
                    phi += weight * (value[s | {i}] - v)
            assert fast[r, i] == pytest.approx(phi, abs=1e-12)
        assert fast[r, -1] == pytest.approx(value[frozenset()], abs=1e-12)


def test_hand_built_tree_with_a_repeated_feature_and_a_constant_tree():
    """x0 <= 0 (100 rows: 60 left) → left: x1 <= 0 (30/30) → leaves 1 and 2; right: x0 <= 5 (20/20) → 3 and 4.
    A constant tree adds only to the bias."""
    builder = treeshap._Builder(2, float32_inputs=False)
    S, L = treeshap.Split, treeshap.Leaf
    builder.add_tree([S(0, 0.0, 0, None, 1, 2, 100), S(1, 0.0, 0, None, 3, 4, 60), S(0, 5.0, 0, None, 5, 6, 40),
                      L(1.0, 30), L(2.0, 30), L(3.0, 20), L(4.0, 20)])
    builder.add_tree([L(0.5, 100)])
    tables = builder.build(0.25)
    x = np.array([[-1.0, 1.0], [7.0, -3.0]])
    out = tables.contributions(x)
    expected_bias = (30 * 1 + 30 * 2 + 20 * 3 + 20 * 4) / 100 + 0.5 + 0.25
    assert out[:, -1] == pytest.approx([expected_bias, expected_bias])
    # E[f] = 2.3. Row 1 reaches leaf 2 (x0 <= 0, x1 > 0): E[f | x0] = 1.5, E[f | x1] = 0.6 * 2 + 0.4 * 3.5 = 2.6
    assert out[0, 0] == pytest.approx(((1.5 - 2.3) + (2 - 2.6)) / 2)
    assert out[0, 1] == pytest.approx(((2.6 - 2.3) + (2 - 1.5)) / 2)
    # row 2 reaches leaf 4 through x0 twice; x1 is off its path but still moves the expectation:
    # E[f | x1] = 0.6 * 1 + 0.4 * 3.5 = 2.0, E[f | x0] = 4
    assert out[1, 1] == pytest.approx(((2.0 - 2.3) + (4 - 4)) / 2)
    assert out[1, 0] == pytest.approx(((4 - 2.3) + (4 - 2.0)) / 2)


def test_model_explainer_of_a_stacking_model_equals_its_contributions(data):
    """Weighted members plus the intercept, reindexed to the model's features; probabilities from the sums
    equal the model's own."""
    from training.calibration import Calibrator
    from training.model import NoShowModel
    from training.models import StackingLearner

    X, y, test = data
    members = {name: make(name, {"n_estimators": 40} if name != "logreg" else None).fit(X, y)
               for name in ("logreg", "xgboost", "lightgbm")}
    learner = StackingLearner(members, np.array([0.5, 0.0, 0.8]), -0.1)
    model = NoShowModel(learner, Calibrator("sigmoid", 0.9, 0.05), "test", None, None)
    explainer = treeshap.ModelExplainer(model)
    fast = explainer.contributions(model.inputs(test))
    native = model.contributions(test).reindex(columns=[*explainer.features, "bias"]).to_numpy()
    assert np.abs(fast - native).max() < 1e-9
    assert np.abs(explainer.probabilities(fast) - model.predict_proba(test)).max() < 1e-12


def test_coded_matrix_follows_the_encoder(data):
    """The vectorised input matrix equals the encoder's frame: known levels, unseen levels as __other__,
    missing values (None, NaN) as NaN, non-text values compared as text."""
    X, y, test = data
    learner = LightGBMLearner({"n_estimators": 5}).fit(X, y)
    odd = test.copy()
    odd["channel"] = odd["channel"].astype(object)
    odd.loc[odd.index[:5], "channel"] = [np.nan, 7, "x:web", "__other__", None]
    coded = treeshap._coded(learner, odd)
    enc = learner.encoder.transform(odd)
    for j, col in enumerate(enc.columns):
        expected = (enc[col].cat.codes.where(enc[col].cat.codes >= 0).to_numpy(dtype=float)
                    if col in learner.encoder.levels else enc[col].to_numpy(dtype=float))
        np.testing.assert_array_equal(coded[:, j], expected, err_msg=col)
