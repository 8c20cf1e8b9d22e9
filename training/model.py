"""The deployable no-show model: a fitted learner, its calibrator, and what it was trained on.

This is the object inside the registered MLflow model ``noshow`` (see :mod:`training.pyfunc`). It takes
feature rows exactly as :func:`features.build_features` / :func:`features.load_features` return them
and gives no-show probabilities and per-feature contributions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from typing import Any

import numpy as np
import pandas as pd

from training.calibration import Calibrator
from training.dataset import model_inputs
from training.models import Learner


@dataclass
class NoShowModel:
    learner: Learner
    calibrator: Calibrator
    feature_set_version: str
    #: last appointment day of the training data
    train_end: date
    as_of: date
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def algorithm(self) -> str:
        return self.learner.name

    @property
    def features(self) -> list[str]:
        return list(self.learner.features)

    @property
    def monotone_in_lead(self) -> bool:
        return bool(getattr(self.learner, "monotone_in_lead", False))

    def inputs(self, frame: pd.DataFrame) -> pd.DataFrame:
        """The model's input columns from feature rows (or from already prepared inputs)."""
        return model_inputs(frame, features=self.features) if _is_raw(frame) else frame.reindex(
            columns=self.features)

    def predict_raw(self, frame: pd.DataFrame) -> np.ndarray:
        return self.learner.predict(self.inputs(frame))

    def predict_proba(self, frame: pd.DataFrame) -> np.ndarray:
        """Calibrated no-show probability per row, shape (n,)."""
        if len(frame) == 0:
            return np.zeros(0)
        return self.calibrator.transform(self.predict_raw(frame))

    def contributions(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Per-feature contribution to each prediction (SHAP values; columns = features + ``bias``),
        in log-odds for the boosted models, logistic regression and stacking (they sum to the
        uncalibrated log-odds), in probability units for the single tree and the forest."""
        if len(frame) == 0:
            return pd.DataFrame(columns=[*self.features, "bias"])
        out = self.learner.contributions(self.inputs(frame))
        out.index = frame.index
        return out

    @property
    def contribution_space(self) -> str:
        return self.learner.contribution_space

    def refit(self, frame: pd.DataFrame, y: np.ndarray) -> NoShowModel:
        """The same configuration (algorithm, hyper-parameters, calibrator) trained on other rows: used by
        the champion gate to compare a champion and a challenger on equal data."""
        learner = self.learner.clone()
        learner.fit(model_inputs(frame, features=self.features), y)
        return NoShowModel(learner, self.calibrator, self.feature_set_version, self.train_end, self.as_of,
                           dict(self.metadata, refit=True))


def _is_raw(frame: pd.DataFrame) -> bool:
    """Feature rows as stored (with source / jsonb columns) rather than prepared model inputs."""
    return "source" in frame.columns or "patient_flags" in frame.columns or "external" in frame.columns
