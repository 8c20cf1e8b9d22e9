"""Fast exact TreeSHAP (scoring/treeshap.py): the same values as the libraries' own TreeSHAP, the ``shap``
package and Shapley values computed from their definition."""

from __future__ import annotations

import itertools
import json
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


# --------------------------------------------------------------------------------------------------
# the grouped structure: every grouping gives the same values


def _structure(tables: treeshap.TreeTables) -> tuple[int, int, int, int]:
    """(groups, groups with decision bits, edges, leaves without a table)"""
    bits = np.diff(tables.group_bit_start)
    return len(tables.group_mask), int((bits > 0).sum()), len(tables.edge_parent), len(tables.direct_mask)


def test_lightgbm_groups_of_every_size_give_the_same_values(data):
    """Leaf by leaf (1 row), small and large subtree groups, whole trees as groups, and the automatic choice:
    the same values, equal to LightGBM's own."""
    X, y, test = data
    for leaves, limits in ((24, (2, 8, 64, 1024, 1 << 14, None)), (8, (16, 1 << 8))):
        learner = LightGBMLearner({"n_estimators": 40, "num_leaves": leaves}).fit(X, y)
        booster = learner.model.booster_
        matrix = _matrix(learner, test)
        native = learner.contributions(test).to_numpy()
        reference = treeshap.from_lightgbm(booster, group_rows=1)
        assert _structure(reference)[1] == 0                   # every group a leaf
        expected = reference.contributions(matrix)
        assert np.abs(expected - native).max() < 1e-9
        seen = {_structure(reference)}
        for rows in limits:
            tables = treeshap.from_lightgbm(booster, group_rows=rows)
            seen.add(_structure(tables))
            assert np.abs(tables.contributions(matrix) - expected).max() < 1e-12, rows
        assert len(seen) >= min(4, len(limits) + 1)          # the groupings differ
    assert _structure(tables)[2] == 0       # 7 splits a tree, 2^7 <= 256 rows: every tree one group, no masks
    assert _structure(tables)[0] == 40


def test_subtree_larger_than_the_limit_is_split_into_groups_below_it():
    """A 7-level tree with 127 leaves: with a limit of 16 rows, the root's subtree (2^126 rows) is not a
    group, its descendants are, with decision bits and masks above them."""
    rng = np.random.default_rng(3)
    nodes = _random_tree(rng, depth=7, n_features=4)
    builder = treeshap._Builder(4, float32_inputs=False, group_rows=16)
    builder.add_tree(nodes)
    tables = builder.build(0.0)
    groups, with_bits, edges, _ = _structure(tables)
    assert with_bits > 0 and edges > 0 and groups < 128
    rows = rng.normal(size=(40, 4)).round(1)
    assert np.abs(tables.contributions(rows) - _shapley(nodes, rows, 4)).max() < 1e-12


def _random_tree(rng, depth: int, n_features: int, categorical: int | None = None) -> list:
    """A full binary tree of random numeric splits (features repeat along paths) with random covers;
    ``categorical``: that feature's splits list random categories 0..9 instead."""
    S, L = treeshap.Split, treeshap.Leaf
    nodes: list = []

    def add(level: int, cover: float) -> int:
        index = len(nodes)
        nodes.append(None)
        if level == depth:
            nodes[index] = L(float(rng.normal()), cover)
            return index
        feature = int(rng.integers(n_features))
        share = float(rng.uniform(0.1, 0.9))
        left = add(level + 1, cover * share)
        right = add(level + 1, cover * (1 - share))
        if feature == categorical:
            cats = sorted({int(c) for c in rng.integers(0, 10, rng.integers(1, 6))})
            nodes[index] = S(feature, 0.0, treeshap.FLAG_CATEGORICAL, cats, left, right, cover)
        else:
            nodes[index] = S(feature, round(float(rng.normal()), 1), 0, None, left, right, cover)
        return index

    add(0, 1000.0)
    return nodes


def _goes_left(node, x: float) -> bool:
    if node.categories is not None:
        return not np.isnan(x) and x >= 0 and int(x) in node.categories
    return bool(x <= node.threshold)


def _tree_expectation(nodes: list, i: int, x: np.ndarray, known: frozenset) -> float:
    node = nodes[i]
    if isinstance(node, treeshap.Leaf):
        return node.value
    if node.feature in known:
        return _tree_expectation(nodes, node.left if _goes_left(node, x[node.feature]) else node.right, x, known)
    left, right = nodes[node.left], nodes[node.right]
    return (left.cover * _tree_expectation(nodes, node.left, x, known)
            + right.cover * _tree_expectation(nodes, node.right, x, known)) / node.cover


def _shapley(nodes: list, rows: np.ndarray, m: int) -> np.ndarray:
    """Shapley values of one hand-built tree from their definition (bias last)."""
    out = np.zeros((len(rows), m + 1))
    for r, x in enumerate(rows):
        value = {s: _tree_expectation(nodes, 0, x, s)
                 for k in range(m + 1) for s in map(frozenset, itertools.combinations(range(m), k))}
        for i in range(m):
            out[r, i] = sum(math.factorial(len(s)) * math.factorial(m - len(s) - 1) / math.factorial(m)
                            * (value[s | {i}] - v) for s, v in value.items() if i not in s)
        out[r, m] = value[frozenset()]
    return out


@pytest.mark.parametrize("depth", [3, 9, 12])
def test_deep_trees_with_repeated_features_equal_shapley_values_from_their_definition(depth):
    """Full trees up to 4,096 leaves on 4 features (every path repeats features), plus a constant tree, at
    several group limits and with every leaf computed without a table (a budget of 0 bytes)."""
    rng = np.random.default_rng(depth)
    trees = [_random_tree(rng, depth, 4), _random_tree(rng, depth, 4)]
    rows = rng.normal(size=(12, 4)).round(1)
    expected = sum(_shapley(nodes, rows, 4) for nodes in trees)
    expected[:, -1] += 0.5 + 0.25                                       # the constant tree and the base
    for rows_limit, budget in ((1, None), (32, None), (1 << 12, None), (None, None), (None, 0), (None, 2000)):
        builder = treeshap._Builder(4, float32_inputs=False, group_rows=rows_limit, table_budget=budget)
        for nodes in trees:
            builder.add_tree(nodes)
        builder.add_tree([treeshap.Leaf(0.5, 1000.0)])
        tables = builder.build(0.25)
        if budget == 0:
            assert len(tables.tables) == 0 and len(tables.direct_mask) == 2 << depth
        if budget == 2000:
            assert len(tables.tables) * 8 <= 2000
        assert np.abs(tables.contributions(rows) - expected).max() < 1e-12, (rows_limit, budget)


def test_a_tree_with_more_than_64_categorical_splits_on_one_feature():
    """A tree's categorical splits on one feature are decided 64 at a time: 127 splits (on feature 0, with a
    numeric feature 1) give the values of the definition, also for unseen, negative and missing codes."""
    rng = np.random.default_rng(7)
    nodes = _random_tree(rng, depth=7, n_features=1, categorical=0)
    for i, node in enumerate(nodes):             # feature 1 numeric on the last level of splits
        if isinstance(node, treeshap.Split) and isinstance(nodes[node.left], treeshap.Leaf) and i % 2:
            nodes[i] = treeshap.Split(1, 0.0, 0, None, node.left, node.right, node.cover)
    assert sum(isinstance(n, treeshap.Split) and n.feature == 0 for n in nodes) > 64
    builder = treeshap._Builder(2, float32_inputs=False)
    builder.add_tree(nodes)
    tables = builder.build(0.0)
    assert np.diff(tables.chunk_start).max() >= 2
    rows = np.column_stack([rng.integers(-1, 13, 30).astype(float), rng.normal(size=30)])
    rows[::5, 0] = np.nan
    rows[1, 0] = 3.7                                             # LightGBM truncates a code
    assert np.abs(tables.contributions(rows) - _shapley(nodes, rows, 2)).max() < 1e-12


@pytest.mark.parametrize("missing", ["zero", "none", "nan"])
def test_lightgbm_missing_types_zero_none_and_nan(missing):
    """LightGBM missing type Zero (zero_as_missing: NaN and zero go the default way), None (use_missing=False:
    NaN counts as 0) and NaN equal its own pred_contrib, at small and large groups; LightGBM reads any
    |x| <= float32(1e-35) as 0 (its splits around zero are at exactly that threshold)."""
    import lightgbm as lgb

    rng = np.random.default_rng(11)
    X = rng.normal(size=(3000, 4)).round(1)
    X[rng.random(X.shape) < 0.15] = 0.0
    X[rng.random(X.shape) < 0.1] = np.nan
    y = (np.nan_to_num(X[:, 0]) + np.nan_to_num(X[:, 1]) * (X[:, 2] > 0) + rng.normal(size=3000) > 0).astype(int)
    params = {"zero": {"zero_as_missing": True}, "none": {"use_missing": False}, "nan": {}}[missing]
    model = lgb.LGBMClassifier(n_estimators=30, num_leaves=16, min_child_samples=10, verbose=-1, **params).fit(X, y)
    types = {n["missing_type"] for t in model.booster_.dump_model()["tree_info"] for n in _splits(t["tree_structure"])}
    assert types == {{"zero": "Zero", "none": "None"}.get(missing, "NaN")}
    rows = rng.normal(size=(400, 4)).round(1)
    rows[rng.random(rows.shape) < 0.2] = 0.0
    rows[rng.random(rows.shape) < 0.2] = np.nan
    edge = float(np.float32(1e-35))                               # LightGBM's kZeroThreshold
    rows[:6, 0] = [edge, -edge, np.nextafter(edge, 1.0), -np.nextafter(edge, 1.0), 1e-35, -0.0]
    native = model.booster_.predict(rows, pred_contrib=True)
    for group_rows in (1, 64, None):
        fast = treeshap.from_lightgbm(model.booster_, group_rows=group_rows).contributions(rows)
        assert np.abs(fast - native).max() < 1e-9, group_rows


def _splits(node: dict):
    if "split_index" in node:
        yield node
        yield from _splits(node["left_child"])
        yield from _splits(node["right_child"])


def test_xgboost_categorical_splits_equal_its_pred_contribs():
    """XGBoost partition splits (listed categories go right; unseen, negative and missing codes by its
    rules) at small and large groups, equal to its own pred_contribs to float32 precision."""
    import xgboost as xgb

    rng = np.random.default_rng(5)
    n = 4000
    X = np.column_stack([rng.integers(0, 12, n).astype(float), rng.normal(size=n), rng.integers(0, 3, n)])
    X[rng.random(n) < 0.1, 0] = np.nan
    y = (np.isin(X[:, 0], [1, 4, 7, 9]) + X[:, 1] * (X[:, 2] == 1) + rng.normal(size=n) > 0.5).astype(int)
    types = ["c", "q", "c"]
    booster = xgb.train({"objective": "binary:logistic", "max_depth": 6, "max_cat_to_onehot": 1, "tree_method": "hist"},
                        xgb.DMatrix(X, y, feature_types=types, enable_categorical=True), num_boost_round=30)
    model = json.loads(bytes(booster.save_raw("json")))
    assert any(1 in t["split_type"] for t in model["learner"]["gradient_booster"]["model"]["trees"])
    rows = np.column_stack([rng.integers(-1, 15, 500).astype(float), rng.normal(size=500), rng.integers(0, 3, 500)])
    rows[::9, 0] = np.nan
    native = booster.predict(xgb.DMatrix(rows, feature_types=types, enable_categorical=True), pred_contribs=True)
    for group_rows in (1, 64, None):
        fast = treeshap.from_xgboost(booster, group_rows=group_rows).contributions(rows)
        assert np.abs(fast - native).max() < 2e-6, group_rows


def test_saved_tables_give_the_same_values_and_are_refused_for_another_model(data, tmp_path, monkeypatch):
    """ModelExplainer.save / load (the tables logged with a model at training): the loaded explainer gives
    the same values as the built one; a file of another model, another format or other members is not used
    (load returns None, the caller builds); a model without trees saves nothing."""
    from training.calibration import Calibrator
    from training.model import NoShowModel
    from training.models import StackingLearner

    X, y, test = data
    members = {name: make(name, {"n_estimators": 30} if name != "logreg" else None).fit(X, y)
               for name in ("logreg", "xgboost", "lightgbm")}
    model = NoShowModel(StackingLearner(members, np.array([0.5, 0.3, 0.8]), -0.1),
                        Calibrator("sigmoid", 0.9, 0.05), "test", None, None)
    built = treeshap.ModelExplainer(model)
    path = tmp_path / "tables.npz"
    assert built.save(path, "digest-a")
    loaded = treeshap.ModelExplainer.load(model, path, "digest-a")
    assert loaded is not None
    inputs = model.inputs(test)
    assert np.array_equal(loaded.contributions(inputs), built.contributions(inputs))
    for saved, made in zip(loaded.members, built.members, strict=True):
        assert (saved.tables is None) == (made.tables is None)
        if made.tables is not None:
            assert saved.tables.n_trees == made.tables.n_trees and saved.tables.bias == made.tables.bias
            assert saved.tables.float32_inputs == made.tables.float32_inputs

    assert treeshap.ModelExplainer.load(model, path, "digest-b") is None            # another model's file
    other = NoShowModel(StackingLearner({k: members[k] for k in ("logreg", "lightgbm")}, np.array([0.5, 0.8]), 0.0),
                        Calibrator("sigmoid", 0.9, 0.05), "test", None, None)
    assert treeshap.ModelExplainer.load(other, path, "digest-a") is None            # other members
    monkeypatch.setattr(treeshap, "SAVED_FORMAT", treeshap.SAVED_FORMAT + 1)
    assert treeshap.ModelExplainer.load(model, path, "digest-a") is None            # another format
    monkeypatch.undo()

    linear = NoShowModel(members["logreg"], Calibrator("sigmoid", 1.0, 0.0), "test", None, None)
    assert not treeshap.ModelExplainer(linear).save(tmp_path / "none.npz", "digest-c")
    assert not (tmp_path / "none.npz").exists()
