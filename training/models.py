"""The algorithms: logistic regression, decision tree, random forest, XGBoost, LightGBM, stacking.

Every algorithm is a :class:`Learner`: ``fit`` on model-input frames (see
:func:`training.dataset.model_inputs`), ``predict`` uncalibrated no-show probabilities, and explain a
prediction as per-feature contributions (TreeSHAP for the tree models, exact linear terms for the
logistic regression, the weighted sum of its members for the stacking ensemble). Each also declares
its Optuna search space. Gradient-boosted models are monotone in lead time (a longer lead never
lowers the risk, all else equal), as :data:`features.definitions.FEATURES` declares.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from features import definitions

log = logging.getLogger(__name__)

EPS = 1e-6
#: Threads of one fit; set per training from ``TrainConfig.threads`` (CLINICFLOW_TRAIN_THREADS), 0 = every core.
THREADS = 0


def n_jobs() -> int:
    return THREADS if THREADS > 0 else max(1, os.cpu_count() or 1)


def logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, EPS, 1 - EPS)
    return np.log(p / (1 - p))


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


# --------------------------------------------------------------------------------------------------
# encoding


@dataclass
class Encoder:
    """Numeric columns as float; categorical columns as pandas categories with the levels seen in
    training (levels rarer than ``min_count`` and unseen ones become ``__other__``)."""

    min_count: int = 20
    numeric: list[str] = field(default_factory=list)
    categorical: list[str] = field(default_factory=list)
    levels: dict[str, list[str]] = field(default_factory=dict)

    OTHER: ClassVar[str] = "__other__"

    def fit(self, X: pd.DataFrame) -> Encoder:
        self.numeric = [c for c in X.columns if X[c].dtype != object]
        self.categorical = [c for c in X.columns if X[c].dtype == object]
        for col in self.categorical:
            counts = X[col].value_counts()
            self.levels[col] = [*sorted(str(v) for v in counts[counts >= self.min_count].index), self.OTHER]
        return self

    @property
    def columns(self) -> list[str]:
        return self.numeric + self.categorical

    def transform(self, X: pd.DataFrame) -> pd.DataFrame:
        out = pd.DataFrame(index=X.index)
        for col in self.numeric:
            out[col] = pd.to_numeric(X[col], errors="coerce").astype("float64") if col in X else np.nan
        for col in self.categorical:
            levels = self.levels[col]
            values = X[col].astype("object") if col in X else pd.Series(None, index=X.index, dtype=object)
            known = values.where(values.isna() | values.astype(str).isin(levels[:-1]), self.OTHER)
            out[col] = pd.Categorical(known.where(known.isna(), known.astype(str)), categories=levels)
        return out

    def codes(self, X: pd.DataFrame) -> pd.DataFrame:
        """Categories as integer codes (NaN for missing): for the scikit-learn trees."""
        enc = self.transform(X)
        for col in self.categorical:
            codes = enc[col].cat.codes.astype("float64")
            enc[col] = codes.where(codes >= 0, np.nan)
        return enc


def monotone_signs(columns: list[str]) -> list[int]:
    out = []
    for c in columns:
        try:
            out.append(definitions.feature(c).monotone)
        except KeyError:
            out.append(0)
    return out


# --------------------------------------------------------------------------------------------------
# learners


class Learner:
    """An algorithm with fixed hyper-parameters; fitted in place."""

    name: ClassVar[str]
    #: units of :meth:`contributions`: 'log-odds' (sums to the logit) or 'probability'
    contribution_space: ClassVar[str] = "log-odds"
    #: the model is constrained to be non-decreasing in lead time
    monotone_in_lead: ClassVar[bool] = False

    def __init__(self, params: dict[str, Any] | None = None, seed: int = 0) -> None:
        self.params = dict(self.default_params())
        self.params.update(params or {})
        self.seed = seed
        self.encoder: Encoder | None = None

    # hyper-parameters
    @classmethod
    def default_params(cls) -> dict[str, Any]:
        return {}

    @classmethod
    def suggest(cls, trial) -> dict[str, Any]:
        return {}

    def clone(self) -> Learner:
        return type(self)(self.params, self.seed)

    # fitting
    def fit(self, X: pd.DataFrame, y: np.ndarray) -> Learner:
        self.encoder = Encoder().fit(X)
        self._fit(X, y)
        return self

    def _fit(self, X: pd.DataFrame, y: np.ndarray) -> None:
        raise NotImplementedError

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        raise NotImplementedError

    def margin(self, X: pd.DataFrame) -> np.ndarray:
        return logit(self.predict(X))

    def contributions(self, X: pd.DataFrame) -> pd.DataFrame:
        """Per input feature plus ``bias``, in :attr:`contribution_space` units."""
        raise NotImplementedError

    @property
    def features(self) -> list[str]:
        assert self.encoder is not None, "not fitted"
        return self.encoder.columns


class LogisticLearner(Learner):
    """L2 logistic regression on standardised numeric features, missing-value indicators, one-hot
    categories and, for numeric features with many values, one-hot quantile bins (``bins`` per feature):
    the linear term keeps the trend, the bins let it bend (the U of age, the log shape of lead time)."""

    name = "logreg"

    @classmethod
    def default_params(cls) -> dict[str, Any]:
        return {"C": 0.3, "bins": 8}

    @classmethod
    def suggest(cls, trial) -> dict[str, Any]:
        return {"C": trial.suggest_float("C", 1e-3, 10.0, log=True), "bins": trial.suggest_int("bins", 0, 12, step=4)}

    def _design(self, X: pd.DataFrame, fit: bool = False) -> np.ndarray:
        enc = self.encoder.transform(X)
        num = enc[self.encoder.numeric].to_numpy(dtype=float)
        if fit:
            self._median = pd.DataFrame(num).median().fillna(0.0).to_numpy()
        missing = np.isnan(num)
        filled = np.where(missing, self._median, num)
        if fit:
            self._mean = filled.mean(axis=0)
            self._std = filled.std(axis=0)
            self._std[self._std == 0] = 1.0
            self._missing_cols = np.where(missing.any(axis=0))[0]
            self._edges: dict[int, np.ndarray] = {}
            bins = int(self.params.get("bins", 0))
            for j in range(num.shape[1]):
                values = num[~missing[:, j], j]
                if bins >= 2 and len(np.unique(values[:20_000])) >= 10:
                    edges = np.unique(np.quantile(values, np.linspace(0, 1, bins + 1)[1:-1]))
                    if len(edges):
                        self._edges[j] = edges
        scaled = (filled - self._mean) / self._std
        parts = [scaled, missing[:, self._missing_cols].astype(float)]
        for j, edges in self._edges.items():
            which = np.searchsorted(edges, filled[:, j], side="right")
            onehot = np.zeros((len(enc), len(edges) + 1))
            onehot[np.arange(len(enc)), which] = 1.0
            parts.append(onehot)
        for col in self.encoder.categorical:
            codes = enc[col].cat.codes.to_numpy()
            onehot = np.zeros((len(enc), len(self.encoder.levels[col])))
            valid = codes >= 0
            onehot[np.where(valid)[0], codes[valid]] = 1.0
            parts.append(onehot)
        return np.hstack(parts)

    def _groups(self) -> list[str]:
        """The input feature each design column belongs to."""
        groups = list(self.encoder.numeric)
        groups += [self.encoder.numeric[i] for i in self._missing_cols]
        for j, edges in self._edges.items():
            groups += [self.encoder.numeric[j]] * (len(edges) + 1)
        for col in self.encoder.categorical:
            groups += [col] * len(self.encoder.levels[col])
        return groups

    def _fit(self, X, y):
        from sklearn.linear_model import LogisticRegression

        design = self._design(X, fit=True)
        self.model = LogisticRegression(C=self.params["C"], max_iter=2000)
        self.model.fit(design, y)
        # the training rows' mean of each design column: contributions are centred on it (below)
        self._design_mean = design.mean(axis=0)

    def predict(self, X):
        return self.model.predict_proba(self._design(X))[:, 1]

    def margin(self, X):
        return self.model.decision_function(self._design(X))

    def contributions(self, X):
        """SHAP values of the linear margin: coefficient × (x − training mean) per design column, summed per
        input feature; the bias is the margin at the training means, so the terms still add up to the
        margin. Centred, a one-hot level common in training is no reason for everyone who has it (models
        fitted before the means were stored have none: their terms are coefficient × x)."""
        design = self._design(X)
        coef = self.model.coef_[0]
        mean = getattr(self, "_design_mean", None)
        if mean is None or mean.shape != coef.shape:
            mean = np.zeros_like(coef)
        terms = (design - mean) * coef
        frame = pd.DataFrame(terms, columns=range(design.shape[1]), index=X.index)
        grouped = frame.T.groupby(self._groups(), sort=False).sum().T
        out = grouped.reindex(columns=self.features, fill_value=0.0)
        out["bias"] = float(self.model.intercept_[0] + mean @ coef)
        return out


class TreeLearner(Learner):
    name = "tree"
    contribution_space = "probability"

    @classmethod
    def default_params(cls) -> dict[str, Any]:
        return {"max_depth": 6, "min_samples_leaf": 100}

    @classmethod
    def suggest(cls, trial):
        return {"max_depth": trial.suggest_int("max_depth", 3, 12),
                "min_samples_leaf": trial.suggest_int("min_samples_leaf", 10, 1000, log=True)}

    def _estimator(self):
        from sklearn.tree import DecisionTreeClassifier

        return DecisionTreeClassifier(random_state=self.seed, **self.params)

    #: missing values become this number: a tree splits them off like any value, and scikit-learn's
    #: missing-value splitter (several times slower) is never needed
    MISSING: ClassVar[float] = -1e9

    def _matrix(self, X: pd.DataFrame) -> np.ndarray:
        return self.encoder.codes(X).to_numpy(dtype=np.float32, na_value=self.MISSING)

    def _fit(self, X, y):
        self.model = self._estimator()
        self.model.fit(self._matrix(X), y)

    def predict(self, X):
        return self.model.predict_proba(self._matrix(X))[:, 1]

    def contributions(self, X):
        import shap

        explainer = shap.TreeExplainer(self.model)
        values = explainer.shap_values(self._matrix(X), check_additivity=False)
        values = values[1] if isinstance(values, list) else values
        if values.ndim == 3:
            values = values[:, :, 1]
        base = explainer.expected_value
        base = float(np.ravel(base)[-1])
        out = pd.DataFrame(values, columns=self.features, index=X.index)
        out["bias"] = base
        return out


class ForestLearner(TreeLearner):
    name = "forest"
    #: fits use at most this many rows (random sample): a forest on millions of rows is slow for little gain
    max_rows: ClassVar[int] = 200_000

    @classmethod
    def default_params(cls):
        # each tree on a 30 % bootstrap sample with a fifth of the features per split: ~10x faster than defaults
        return {"n_estimators": 150, "max_depth": 12, "min_samples_leaf": 50, "max_features": 0.2,
                "max_samples": 0.3}

    @classmethod
    def suggest(cls, trial):
        return {"n_estimators": trial.suggest_int("n_estimators", 100, 250, step=50),
                "max_depth": trial.suggest_int("max_depth", 6, 16),
                "min_samples_leaf": trial.suggest_int("min_samples_leaf", 10, 300, log=True),
                "max_features": trial.suggest_float("max_features", 0.1, 0.4),
                "max_samples": trial.suggest_float("max_samples", 0.1, 0.5)}

    def _estimator(self):
        from sklearn.ensemble import RandomForestClassifier

        return RandomForestClassifier(random_state=self.seed, n_jobs=n_jobs(), **self.params)

    def _fit(self, X, y):
        if len(X) > self.max_rows:
            pick = np.sort(np.random.default_rng(self.seed).choice(len(X), self.max_rows, replace=False))
            X, y = X.iloc[pick], y[pick]
        super()._fit(X, y)


class LightGBMLearner(Learner):
    name = "lightgbm"
    monotone_in_lead = True

    @classmethod
    def default_params(cls):
        return {"n_estimators": 400, "learning_rate": 0.03, "num_leaves": 31, "min_child_samples": 50,
                "subsample": 0.8, "subsample_freq": 1, "colsample_bytree": 0.8, "reg_lambda": 1.0,
                "cat_smooth": 10.0}

    @classmethod
    def suggest(cls, trial):
        return {"n_estimators": trial.suggest_int("n_estimators", 100, 600, step=50),
                "learning_rate": trial.suggest_float("learning_rate", 0.02, 0.2, log=True),
                "num_leaves": trial.suggest_int("num_leaves", 8, 128, log=True),
                "min_child_samples": trial.suggest_int("min_child_samples", 10, 500, log=True),
                "subsample": trial.suggest_float("subsample", 0.5, 1.0),
                "subsample_freq": 1,
                "colsample_bytree": trial.suggest_float("colsample_bytree", 0.4, 1.0),
                "reg_lambda": trial.suggest_float("reg_lambda", 1e-3, 30.0, log=True),
                "cat_smooth": trial.suggest_float("cat_smooth", 1.0, 50.0, log=True)}

    def _fit(self, X, y):
        import lightgbm as lgb

        enc = self.encoder.transform(X)
        self.model = lgb.LGBMClassifier(
            random_state=self.seed, n_jobs=n_jobs(), verbose=-1, deterministic=True, force_row_wise=True,
            monotone_constraints=monotone_signs(list(enc.columns)), monotone_constraints_method="intermediate",
            **self.params)
        self.model.fit(enc, y)

    def predict(self, X):
        return self.model.predict_proba(self.encoder.transform(X))[:, 1]

    def margin(self, X):
        return self.model.predict_proba(self.encoder.transform(X), raw_score=True)

    def contributions(self, X):
        values = self.model.predict_proba(self.encoder.transform(X), pred_contrib=True)
        out = pd.DataFrame(values[:, :-1], columns=self.features, index=X.index)
        out["bias"] = values[:, -1]
        return out


class XGBoostLearner(Learner):
    name = "xgboost"
    monotone_in_lead = True

    @classmethod
    def default_params(cls):
        return {"n_estimators": 400, "learning_rate": 0.05, "max_depth": 5, "min_child_weight": 5.0,
                "subsample": 0.8, "colsample_bytree": 0.8, "reg_lambda": 1.0}

    @classmethod
    def suggest(cls, trial):
        return {"n_estimators": trial.suggest_int("n_estimators", 100, 600, step=50),
                "learning_rate": trial.suggest_float("learning_rate", 0.02, 0.2, log=True),
                "max_depth": trial.suggest_int("max_depth", 3, 9),
                "min_child_weight": trial.suggest_float("min_child_weight", 1.0, 100.0, log=True),
                "subsample": trial.suggest_float("subsample", 0.5, 1.0),
                "colsample_bytree": trial.suggest_float("colsample_bytree", 0.4, 1.0),
                "reg_lambda": trial.suggest_float("reg_lambda", 1e-3, 30.0, log=True)}

    def _fit(self, X, y):
        import xgboost as xgb

        enc = self.encoder.transform(X)
        signs = monotone_signs(list(enc.columns))
        self.model = xgb.XGBClassifier(
            tree_method="hist", enable_categorical=True, max_cat_to_onehot=1, n_jobs=n_jobs(),
            random_state=self.seed, eval_metric="logloss",
            monotone_constraints={c: s for c, s in zip(enc.columns, signs, strict=True) if s},
            **self.params)
        self.model.fit(enc, y)

    def predict(self, X):
        return self.model.predict_proba(self.encoder.transform(X))[:, 1]

    def margin(self, X):
        return self.model.predict(self.encoder.transform(X), output_margin=True)

    def contributions(self, X):
        import xgboost as xgb

        matrix = xgb.DMatrix(self.encoder.transform(X), enable_categorical=True)
        values = self.model.get_booster().predict(matrix, pred_contribs=True)
        out = pd.DataFrame(values[:, :-1], columns=self.features, index=X.index)
        out["bias"] = values[:, -1]
        return out


LEARNERS: dict[str, type[Learner]] = {
    cls.name: cls for cls in (LogisticLearner, TreeLearner, ForestLearner, XGBoostLearner, LightGBMLearner)
}
#: Members of the stacking ensemble (their contributions are additive in log-odds).
STACK_MEMBERS = ("logreg", "xgboost", "lightgbm")


# --------------------------------------------------------------------------------------------------
# stacking


def fit_stack_weights(margins: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, float]:
    """Non-negative weights and an intercept of a logistic meta-learner over members' log-odds.

    Non-negative weights keep the ensemble monotone wherever its members are, and make it a
    weighted vote rather than a model that bets against one of its members.
    """
    from scipy.optimize import minimize

    k = margins.shape[1]

    def loss(theta: np.ndarray) -> tuple[float, np.ndarray]:
        w, b = theta[:k], theta[k]
        z = margins @ w + b
        p = sigmoid(z)
        ll = np.mean(np.logaddexp(0, z) - y * z) + 1e-4 * float(w @ w)
        grad_z = (p - y) / len(y)
        return ll, np.concatenate([margins.T @ grad_z + 2e-4 * w, [grad_z.sum()]])

    start = np.concatenate([np.full(k, 1.0 / k), [0.0]])
    result = minimize(loss, start, jac=True, method="L-BFGS-B", bounds=[(0, None)] * k + [(None, None)])
    return result.x[:k], float(result.x[k])


class StackingLearner(Learner):
    """A logistic meta-learner over the log-odds of fitted members, weights fitted on out-of-time
    predictions (validation folds), never on the members' own training rows."""

    name = "stacking"

    def __init__(self, members: dict[str, Learner], weights: np.ndarray, intercept: float) -> None:
        super().__init__({"weights": {m: float(w) for m, w in zip(members, weights, strict=True)},
                          "intercept": intercept})
        self.members = members
        self.weights = np.asarray(weights, dtype=float)
        self.intercept = float(intercept)
        self.monotone_in_lead = all(m.monotone_in_lead for m, w in zip(members.values(), self.weights, strict=True)
                                    if w > 0)

    def clone(self) -> StackingLearner:
        return StackingLearner({k: m.clone() for k, m in self.members.items()}, self.weights, self.intercept)

    def fit(self, X, y):
        for member in self.members.values():
            member.fit(X, y)
        return self

    @property
    def features(self) -> list[str]:
        names: list[str] = []
        for member in self.members.values():
            names += [f for f in member.features if f not in names]
        return names

    def margin(self, X):
        z = np.column_stack([m.margin(X) for m in self.members.values()])
        return z @ self.weights + self.intercept

    def predict(self, X):
        return sigmoid(self.margin(X))

    def contributions(self, X):
        total = pd.DataFrame(0.0, index=X.index, columns=[*self.features, "bias"])
        for weight, member in zip(self.weights, self.members.values(), strict=True):
            if weight == 0:
                continue
            contrib = member.contributions(X)
            total = total.add(contrib.reindex(columns=total.columns, fill_value=0.0) * weight, fill_value=0.0)
        total["bias"] += self.intercept
        return total


def make(name: str, params: dict[str, Any] | None = None, seed: int = 0) -> Learner:
    try:
        return LEARNERS[name](params, seed)
    except KeyError:
        raise ValueError(f"unknown algorithm {name!r} (known: {', '.join(LEARNERS)}, stacking)") from None


SuggestFn = Callable[[Any], dict[str, Any]]
