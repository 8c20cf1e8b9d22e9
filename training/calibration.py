"""Probability calibration, chosen on validation data.

Candidates: none, Platt (a logistic fit on the model's log-odds), isotonic. The choice is made by
forward chaining over the rolling-origin folds: for every fold after the first, each candidate is
fitted on the out-of-time predictions of the earlier folds and scored (log loss) on that fold; the
candidate with the lowest mean wins and is then fitted on all folds. Both calibrators are
non-decreasing, so they never undo a monotone constraint.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from sklearn.metrics import log_loss

from training.models import logit

Method = Literal["none", "sigmoid", "isotonic"]
METHODS: tuple[Method, ...] = ("none", "sigmoid", "isotonic")
CLIP = 1e-4


def clip(p: np.ndarray) -> np.ndarray:
    return np.clip(np.asarray(p, dtype=float), CLIP, 1 - CLIP)


@dataclass
class Calibrator:
    method: Method = "none"
    _a: float = 1.0
    _b: float = 0.0
    _iso: object | None = field(default=None, repr=False)

    def fit(self, p: np.ndarray, y: np.ndarray) -> Calibrator:
        if self.method == "sigmoid":
            from sklearn.linear_model import LogisticRegression

            z = logit(p).reshape(-1, 1)
            lr = LogisticRegression(C=1e6, max_iter=1000).fit(z, y)
            a, b = float(lr.coef_[0, 0]), float(lr.intercept_[0])
            if a <= 0:  # a reversing calibration would mean the model ranks backwards: keep it as is
                a, b = 1.0, 0.0
            self._a, self._b = a, b
        elif self.method == "isotonic":
            from sklearn.isotonic import IsotonicRegression

            self._iso = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0, increasing=True).fit(p, y)
        return self

    def transform(self, p: np.ndarray) -> np.ndarray:
        p = np.asarray(p, dtype=float)
        if self.method == "sigmoid":
            return clip(1.0 / (1.0 + np.exp(-(self._a * logit(p) + self._b))))
        if self.method == "isotonic":
            return clip(self._iso.predict(p))
        return clip(p)


@dataclass
class CalibrationChoice:
    method: Method
    scores: dict[str, float]        # mean forward-chained log loss per candidate
    calibrated_folds: list[np.ndarray]  # the chosen candidate's forward-chained predictions of folds 2..K


def choose(fold_preds: list[np.ndarray], fold_labels: list[np.ndarray]) -> CalibrationChoice:
    """Pick the calibration method by forward chaining over the folds (needs at least two folds)."""
    if len(fold_preds) < 2:
        raise ValueError("calibration choice needs at least two validation folds")
    scores: dict[str, float] = {}
    calibrated: dict[str, list[np.ndarray]] = {}
    for method in METHODS:
        losses, outs = [], []
        for k in range(1, len(fold_preds)):
            p_fit = np.concatenate(fold_preds[:k])
            y_fit = np.concatenate(fold_labels[:k])
            cal = Calibrator(method).fit(p_fit, y_fit)
            out = cal.transform(fold_preds[k])
            outs.append(out)
            losses.append(log_loss(fold_labels[k], out, labels=[0, 1]))
        scores[method] = float(np.mean(losses))
        calibrated[method] = outs
    best = min(METHODS, key=lambda m: (round(scores[m], 6), METHODS.index(m)))
    return CalibrationChoice(best, scores, calibrated[best])


def fit_final(method: Method, fold_preds: list[np.ndarray], fold_labels: list[np.ndarray]) -> Calibrator:
    return Calibrator(method).fit(np.concatenate(fold_preds), np.concatenate(fold_labels))
