"""One training as of a date, in process (no MLflow): tune, validate over rolling origins, calibrate,
compare every algorithm on the same recent window, choose, and fit the final model.

Time line of a training as of T (all windows are appointment days):

    ... fold 1 train | embargo | fold 1 valid | fold 2 valid | fold 3 valid | gate window [T-g, T)
                                 <----------- rolling origins ------------>

* Each fold trains on days before its validation window minus the embargo.
* Calibration and the stacking weights are chosen by forward chaining over the folds, the
  algorithm by its mean calibrated log loss on folds 2..K (out of time, never its own training rows).
* Every algorithm, and a lead-time-only logistic regression, is then fitted on days before the gate
  window and judged on it: the comparison table, and the challenger's side of the champion gate.
* The final model is the chosen algorithm fitted on every day before T.

On large data the validation fits use a random sample of at most ``eval_max_rows`` training rows
and the Optuna trials at most ``tune_max_rows`` rows of the last fold; the final model always uses
every row.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import asdict, dataclass, field
from datetime import date, timedelta
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import log_loss, roc_auc_score

from clinicflow.errors import ClinicFlowError
from clinicflow.settings import Settings
from features import definitions
from training import calibration, models
from training.calibration import clip
from training.dataset import Fold, NotEnoughDataError, TrainingData, Window, model_inputs, rolling_origin
from training.metrics import evaluate
from training.model import NoShowModel
from training.models import STACK_MEMBERS, Learner, LogisticLearner, StackingLearner, fit_stack_weights, logit, make
from training.tuning import TuneResult, tune

log = logging.getLogger(__name__)

ALGORITHMS = ("logreg", "tree", "forest", "xgboost", "lightgbm", "stacking")
BASELINE = "lead_only"


@dataclass
class TrainConfig:
    algorithms: list[str] = field(default_factory=lambda: list(ALGORITHMS))
    trials: int = 30
    timeout_s: float = 900
    folds: int = 3
    fold_days: int = 7
    embargo_days: int = 7
    gate_days: int = 14
    gate_margin: float = 0.001
    lookback_days: int = 730
    #: restrict the model inputs to these features (None: the whole feature set)
    features: list[str] | None = None
    #: Optuna trials fit on at most this many rows (a random sample) of the last ``tune_folds`` folds
    tune_max_rows: int = 100_000
    #: validation fits (folds, gate window) use at most this many training rows, a random sample; the
    #: final model always uses every row
    eval_max_rows: int = 300_000
    tune_folds: int = 1
    seed: int = 0
    #: also fit every candidate on all the data (benchmarks compare them on later days); else only the chosen
    final_all: bool = False
    #: threads of one fit (0 = every core)
    threads: int = 0

    @classmethod
    def from_settings(cls, settings: Settings, overrides: dict[str, Any] | None = None) -> TrainConfig:
        config = cls(
            algorithms=list(settings.train_algorithms), trials=settings.train_optuna_trials,
            timeout_s=settings.train_optuna_timeout_s, folds=settings.train_folds,
            fold_days=settings.train_fold_days, embargo_days=settings.train_embargo_days,
            gate_days=settings.train_gate_days, gate_margin=settings.train_gate_margin,
            lookback_days=settings.train_lookback_days, threads=settings.train_threads,
        )
        return config.with_overrides(overrides or {})

    def with_overrides(self, overrides: dict[str, Any]) -> TrainConfig:
        known = set(asdict(self))
        unknown = set(overrides) - known
        if unknown:
            raise ClinicFlowError(f"unknown training option(s) {sorted(unknown)}; known: {sorted(known)}")
        config = TrainConfig(**{**asdict(self), **overrides})
        config.validate()
        return config

    def validate(self) -> None:
        bad = [a for a in self.algorithms if a not in ALGORITHMS]
        if bad or not self.algorithms:
            raise ClinicFlowError(f"unknown algorithm(s) {bad}; choose from {', '.join(ALGORITHMS)}")
        if self.folds < 2:
            raise ClinicFlowError("training needs at least 2 rolling-origin folds (CLINICFLOW_TRAIN_FOLDS)")
        if self.features is not None:
            unknown = [f for f in self.features if f not in definitions.BY_NAME
                       and not f.startswith(("flag_", "ext_"))]
            if unknown:
                raise ClinicFlowError(f"unknown feature(s) {unknown}; see features/definitions.py")

    def hash(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True, default=str).encode()).hexdigest()[:12]


@dataclass
class Candidate:
    algorithm: str
    params: dict[str, Any]
    calibration: str
    calibration_scores: dict[str, float]
    fold_log_loss: float
    fold_auc: float
    gate_model: NoShowModel | None = None
    gate_predictions: np.ndarray | None = None
    gate_metrics: dict[str, float] = field(default_factory=dict)
    fold_raw: list[np.ndarray] = field(default_factory=list)
    calibrator: calibration.Calibrator | None = None
    seconds: float = 0.0


@dataclass
class TrainResult:
    as_of: date
    config: TrainConfig
    data: TrainingData
    folds: list[Fold]
    gate: Window
    candidates: dict[str, Candidate]
    baseline: Candidate
    best: str
    model: NoShowModel
    tuning: dict[str, TuneResult]
    timings: dict[str, float]
    gate_index: np.ndarray
    #: every candidate fitted on all the data (only with ``config.final_all``)
    final_models: dict[str, NoShowModel] = field(default_factory=dict)

    @property
    def gate_labels(self) -> np.ndarray:
        return self.data.y[self.gate_index]

    @property
    def gate_frame(self) -> pd.DataFrame:
        return self.data.frame.iloc[self.gate_index]

    def comparison(self) -> pd.DataFrame:
        rows = []
        for name, c in [*self.candidates.items(), (BASELINE, self.baseline)]:
            g = c.gate_metrics
            rows.append({
                "algorithm": name + (" (chosen)" if name == self.best else ""),
                "calibration": c.calibration,
                "folds_log_loss": c.fold_log_loss, "folds_auc": c.fold_auc,
                "auc": g.get("auc"), "pr_auc": g.get("pr_auc"), "brier": g.get("brier"),
                "log_loss": g.get("log_loss"), "ece": g.get("ece"), "lift_top_decile": g.get("lift_top_decile"),
                "fit_seconds": round(c.seconds, 1),
            })
        return pd.DataFrame(rows)


def _fit_predict(learner: Learner, X: pd.DataFrame, y: np.ndarray, train: np.ndarray, valid: np.ndarray) -> np.ndarray:
    learner.fit(X.iloc[train], y[train])
    return learner.predict(X.iloc[valid])


def _cap(index: np.ndarray, limit: int, seed: int) -> np.ndarray:
    """At most ``limit`` of the row positions ``index``, a random sample in time order."""
    if len(index) <= limit:
        return index
    return np.sort(np.random.default_rng(seed).choice(index, limit, replace=False))


def _mean_auc(preds: list[np.ndarray], labels: list[np.ndarray]) -> float:
    values = [roc_auc_score(y, p) for p, y in zip(preds, labels, strict=True) if 0 < y.sum() < len(y)]
    return float(np.mean(values)) if values else float("nan")


def train(data: TrainingData, config: TrainConfig, *, storage_url: str | None = None,
          study_prefix: str = "noshow") -> TrainResult:
    """Train as of ``data.as_of``; see the module docstring for the scheme."""
    config.validate()
    models.THREADS = config.threads
    timings: dict[str, float] = {}
    started = time.perf_counter()
    T = data.as_of
    gate = Window(T - timedelta(days=config.gate_days), T)
    folds = rolling_origin(gate.start, config.folds, config.fold_days, config.embargo_days)
    days = data.days
    data.check([f.valid for f in folds] + [gate])
    first_day = days.min()
    if folds[0].train_end <= first_day:
        raise NotEnoughDataError(
            f"not enough history for training as of {T}: the first fold would train on days before "
            f"{folds[0].train_end}, but outcomes start on {first_day}. Load more history or reduce "
            "CLINICFLOW_TRAIN_FOLDS / _FOLD_DAYS / _EMBARGO_DAYS / _GATE_DAYS."
        )
    X = model_inputs(data.frame)
    if config.features is not None:
        X = X.reindex(columns=config.features)
    y = data.y
    train_masks = [(days < f.train_end).to_numpy() for f in folds]
    valid_masks = [f.valid.mask(days) for f in folds]
    fold_labels = [y[m] for m in valid_masks]
    gate_train = (days < gate.start).to_numpy()
    gate_index = np.where(gate.mask(days))[0]
    for f in folds:
        log.info("%s", f.describe())
    log.info("gate window %s (%d appointments); final fit on %d appointments before %s",
             gate, len(gate_index), len(y), T)

    base_algorithms = [a for a in config.algorithms if a != "stacking"]
    if "stacking" in config.algorithms:
        base_algorithms += [m for m in STACK_MEMBERS if m not in base_algorithms]
    t0 = time.perf_counter()
    tuning = tune(base_algorithms, X, y, days, folds, trials=config.trials, timeout_s=config.timeout_s,
                  max_rows=config.tune_max_rows, tune_folds=config.tune_folds, seed=config.seed,
                  storage_url=storage_url, study_prefix=study_prefix)
    timings["tuning"] = time.perf_counter() - t0

    candidates: dict[str, Candidate] = {}
    gate_learners: dict[str, Learner] = {}
    for algorithm in base_algorithms:
        t0 = time.perf_counter()
        params = tuning[algorithm].params
        fold_raw = [clip(_fit_predict(make(algorithm, params, config.seed), X, y,
                                      _cap(np.where(tm)[0], config.eval_max_rows, config.seed), np.where(vm)[0]))
                    for tm, vm in zip(train_masks, valid_masks, strict=True)]
        choice = calibration.choose(fold_raw, fold_labels)
        calibrator = calibration.fit_final(choice.method, fold_raw, fold_labels)
        learner = make(algorithm, params, config.seed)
        gate_rows = _cap(np.where(gate_train)[0], config.eval_max_rows, config.seed)
        learner.fit(X.iloc[gate_rows], y[gate_rows])
        gate_learners[algorithm] = learner
        gate_model = NoShowModel(learner, calibrator, definitions.FEATURE_SET_VERSION, gate.start - timedelta(days=1),
                                 T)
        gate_pred = calibrator.transform(learner.predict(X.iloc[gate_index]))
        candidates[algorithm] = Candidate(
            algorithm, params, choice.method, choice.scores, choice.scores[choice.method],
            _mean_auc(choice.calibrated_folds, fold_labels[1:]), gate_model, gate_pred,
            evaluate(y[gate_index], gate_pred), fold_raw, calibrator, time.perf_counter() - t0)
        log.info("%s: folds log loss %.5f (calibration %s), gate AUC %.4f log loss %.5f (%.1fs)", algorithm,
                 candidates[algorithm].fold_log_loss, choice.method, candidates[algorithm].gate_metrics["auc"],
                 candidates[algorithm].gate_metrics["log_loss"], candidates[algorithm].seconds)

    if "stacking" in config.algorithms:
        candidates["stacking"] = _stack(candidates, gate_learners, X, y, fold_labels, gate_index, gate, T)

    # lead-time-only baseline, same windows
    t0 = time.perf_counter()
    lead = X.reindex(columns=["lead_days"])
    base_learner = LogisticLearner({"C": 1.0, "bins": 0})
    base_learner.fit(lead.iloc[np.where(gate_train)[0]], y[gate_train])
    base_pred = clip(base_learner.predict(lead.iloc[gate_index]))
    baseline = Candidate(BASELINE, {"C": 1.0, "bins": 0}, "none", {}, float("nan"), float("nan"),
                         NoShowModel(base_learner, calibration.Calibrator("none"), definitions.FEATURE_SET_VERSION,
                                     gate.start - timedelta(days=1), T),
                         base_pred, evaluate(y[gate_index], base_pred), seconds=time.perf_counter() - t0)

    chosen = [a for a in config.algorithms if a in candidates]
    best = min(chosen, key=lambda a: (candidates[a].fold_log_loss, chosen.index(a)))
    timings["validation"] = time.perf_counter() - started - timings["tuning"]

    t0 = time.perf_counter()
    model = _final_model(best, candidates, X, y, T, config)
    model.metadata.update({
        "params": candidates[best].params, "calibration": candidates[best].calibration,
        "train_start": str(first_day), "n_train": len(y), "snapshot_id": data.snapshot_id(),
    })
    timings["final_fit"] = time.perf_counter() - t0
    final_models = {best: model}
    if config.final_all:
        for name in candidates:
            if name not in final_models:
                final_models[name] = _final_model(name, candidates, X, y, T, config)
        lead_final = LogisticLearner({"C": 1.0, "bins": 0}).fit(lead, y)
        final_models[BASELINE] = NoShowModel(lead_final, calibration.Calibrator("none"),
                                             definitions.FEATURE_SET_VERSION, T - timedelta(days=1), T)
    timings["total"] = time.perf_counter() - started
    log.info("chosen %s (folds log loss %.5f); final model fitted on %d appointments in %.1fs", best,
             candidates[best].fold_log_loss, len(y), timings["final_fit"])
    return TrainResult(T, config, data, folds, gate, candidates, baseline, best, model, tuning, timings, gate_index,
                       final_models)


def _stack(candidates: dict[str, Candidate], gate_learners: dict[str, Learner], X: pd.DataFrame, y: np.ndarray,
           fold_labels: list[np.ndarray], gate_index: np.ndarray, gate: Window, T: date) -> Candidate:
    t0 = time.perf_counter()
    members = [m for m in STACK_MEMBERS if m in candidates]
    fold_margins = [np.column_stack([logit(candidates[m].fold_raw[k]) for m in members])
                    for k in range(len(fold_labels))]
    preds, losses = [], []
    for k in range(1, len(fold_labels)):
        w, b = fit_stack_weights(np.vstack(fold_margins[:k]), np.concatenate(fold_labels[:k]))
        p = clip(1 / (1 + np.exp(-(fold_margins[k] @ w + b))))
        preds.append(p)
        losses.append(log_loss(fold_labels[k], p, labels=[0, 1]))
    weights, intercept = fit_stack_weights(np.vstack(fold_margins), np.concatenate(fold_labels))
    stack = StackingLearner({m: gate_learners[m] for m in members}, weights, intercept)
    none = calibration.Calibrator("none")
    gate_pred = clip(stack.predict(X.iloc[gate_index]))
    log.info("stacking over %s: weights %s, intercept %.3f", members, np.round(weights, 3), intercept)
    return Candidate("stacking", dict(stack.params), "none", {"none": float(np.mean(losses))},
                     float(np.mean(losses)), _mean_auc(preds, fold_labels[1:]),
                     NoShowModel(stack, none, definitions.FEATURE_SET_VERSION, gate.start - timedelta(days=1), T),
                     gate_pred, evaluate(y[gate_index], gate_pred), calibrator=none,
                     seconds=time.perf_counter() - t0)


def _final_model(best: str, candidates: dict[str, Candidate], X: pd.DataFrame, y: np.ndarray, T: date,
                 config: TrainConfig) -> NoShowModel:
    chosen = candidates[best]
    learner = chosen.gate_model.learner.clone()
    learner.fit(X, y)
    return NoShowModel(learner, chosen.calibrator, definitions.FEATURE_SET_VERSION, T - timedelta(days=1), T,
                       {"algorithm": best})


def score_frame(model: NoShowModel, frame: pd.DataFrame) -> np.ndarray:
    """Probabilities for feature rows (a convenience for backtests and tests)."""
    return model.predict_proba(frame) if len(frame) else np.zeros(0)


__all__ = ["ALGORITHMS", "TrainConfig", "TrainResult", "model_inputs", "score_frame", "train"]
