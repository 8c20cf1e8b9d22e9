"""The MLflow pyfunc of the registered model ``noshow``: ``predict`` returns no-show PROBABILITIES.

    import mlflow
    model = mlflow.pyfunc.load_model("models:/noshow@champion")
    p = model.predict(features_frame)            # numpy array, shape (n,), each in [0, 1]
    inner = model.unwrap_python_model().model     # training.model.NoShowModel
    reasons = inner.contributions(features_frame) # SHAP contributions per feature

``features_frame`` is what :func:`features.build_features` or :func:`features.load_features` return.
"""

from __future__ import annotations

from typing import Any

import mlflow.pyfunc
import numpy as np

ARTIFACT_KEY = "model"


class NoShowPyfunc(mlflow.pyfunc.PythonModel):
    def __init__(self) -> None:
        self.model = None

    def load_context(self, context) -> None:
        import joblib

        self.model = joblib.load(context.artifacts[ARTIFACT_KEY])

    def predict(self, context, model_input, params: dict[str, Any] | None = None) -> np.ndarray:
        import pandas as pd

        frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        return self.model.predict_proba(frame)
