"""Optuna tuning with a trial budget and a time budget, studies stored in PostgreSQL.

The trials of one training are shared by the tuned algorithms (LightGBM gets the largest share); the
time budget is shared the same way. Each study starts with the algorithm's default hyper-parameters
as its first trial, so tuning never ends worse than no tuning. A trial fits on the training part of
the most recent rolling-origin folds (a random sample of at most ``tune_max_rows`` rows) and is scored
by the mean validation log loss.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import log_loss

from training.calibration import clip
from training.dataset import Fold
from training.models import LEARNERS, make

log = logging.getLogger(__name__)

#: Share of the trial and time budget per algorithm.
WEIGHTS = {"lightgbm": 0.35, "xgboost": 0.3, "forest": 0.15, "tree": 0.1, "logreg": 0.1}


@dataclass
class TuneResult:
    algorithm: str
    params: dict[str, Any]
    value: float | None
    trials: int
    seconds: float
    study: str | None


def allocate(algorithms: list[str], trials: int) -> dict[str, int]:
    """Trials per algorithm: proportional to WEIGHTS, at least one each when the budget allows."""
    tuned = [a for a in algorithms if a in WEIGHTS]
    if trials <= 0 or not tuned:
        return dict.fromkeys(tuned, 0)
    total = sum(WEIGHTS[a] for a in tuned)
    raw = {a: trials * WEIGHTS[a] / total for a in tuned}
    out = {a: int(np.floor(v)) for a, v in raw.items()}
    for a in sorted(tuned, key=lambda a: raw[a] - out[a], reverse=True)[: trials - sum(out.values())]:
        out[a] += 1
    if trials >= len(tuned):
        for a in tuned:
            if out[a] == 0:
                donor = max(out, key=out.get)
                out[donor] -= 1
                out[a] = 1
    return out


def storage_for(url: str | None):
    """An Optuna storage: PostgreSQL (RDB) for a URL, in memory for None."""
    if url is None:
        return None
    import optuna

    return optuna.storages.RDBStorage(url, engine_kwargs={"pool_pre_ping": True})


def tune(
    algorithms: list[str],
    X: pd.DataFrame,
    y: np.ndarray,
    days: pd.Series,
    folds: list[Fold],
    *,
    trials: int,
    timeout_s: float,
    max_rows: int,
    tune_folds: int,
    seed: int,
    storage_url: str | None,
    study_prefix: str,
) -> dict[str, TuneResult]:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    budget = allocate(algorithms, trials)
    share_total = sum(WEIGHTS[a] for a in budget) or 1.0
    deadline = time.monotonic() + timeout_s
    rng = np.random.default_rng(seed)
    used = folds[-max(1, min(tune_folds, len(folds))):]
    splits = []
    for fold in used:
        train_idx = np.where((days < fold.train_end).to_numpy())[0]
        if len(train_idx) > max_rows:
            train_idx = np.sort(rng.choice(train_idx, max_rows, replace=False))
        splits.append((train_idx, np.where(fold.valid.mask(days))[0]))
    storage = storage_for(storage_url)
    results: dict[str, TuneResult] = {}
    for algorithm, n_trials in budget.items():
        defaults = LEARNERS[algorithm].default_params()
        started = time.monotonic()
        if n_trials == 0:
            results[algorithm] = TuneResult(algorithm, defaults, None, 0, 0.0, None)
            continue
        remaining = max(deadline - time.monotonic(), 0.0)
        timeout = remaining * WEIGHTS[algorithm] / share_total
        share_total -= WEIGHTS[algorithm]

        def objective(trial: optuna.Trial, algorithm: str = algorithm) -> float:
            params = LEARNERS[algorithm].suggest(trial)
            losses = []
            for train_idx, valid_idx in splits:
                learner = make(algorithm, params, seed)
                learner.fit(X.iloc[train_idx], y[train_idx])
                p = clip(learner.predict(X.iloc[valid_idx]))
                losses.append(log_loss(y[valid_idx], p, labels=[0, 1]))
            return float(np.mean(losses))

        name = f"{study_prefix}-{algorithm}"
        study = optuna.create_study(study_name=name, storage=storage, direction="minimize",
                                    sampler=optuna.samplers.TPESampler(seed=seed), load_if_exists=True)
        first = {k: v for k, v in defaults.items() if k in _space_names(algorithm)}
        if not study.trials:
            study.enqueue_trial(first, skip_if_exists=True)
        study.optimize(objective, n_trials=n_trials, timeout=max(timeout, 1.0), gc_after_trial=False)
        done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
        if done:
            best = study.best_trial
            params = {**defaults, **best.params}
            params = _fixed(algorithm, params)
            value = float(best.value)
        else:
            params, value = defaults, None
        results[algorithm] = TuneResult(algorithm, params, value, len(done), time.monotonic() - started,
                                        name if storage is not None else None)
        log.info("tuned %s: %d trial(s) in %.1fs, best validation log loss %s", algorithm, len(done),
                 results[algorithm].seconds, f"{value:.5f}" if value is not None else "–")
    return results


def _space_names(algorithm: str) -> set[str]:
    """The hyper-parameters an algorithm's search space suggests."""
    names: set[str] = set()

    class Recorder:
        def __getattr__(self, attr):
            def suggest(name, *args, **kwargs):
                names.add(name)
                low = args[0] if args else kwargs.get("low")
                return low

            return suggest

    LEARNERS[algorithm].suggest(Recorder())
    return names


def _fixed(algorithm: str, params: dict[str, Any]) -> dict[str, Any]:
    if algorithm == "lightgbm":
        params.setdefault("subsample_freq", 1)
        params["subsample_freq"] = 1
    return params
