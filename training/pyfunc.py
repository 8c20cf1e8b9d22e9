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
#: the SHAP tables of the model's trees (scoring.treeshap.ModelExplainer.save), built once at training
SHAP_TABLES_KEY = "shap_tables"


def file_digest(path) -> str:
    """SHA-256 of a file: ties the saved SHAP tables to the model artifact they were built from."""
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class NoShowPyfunc(mlflow.pyfunc.PythonModel):
    def __init__(self) -> None:
        self.model = None
        self.model_path: str | None = None
        self.shap_tables_path: str | None = None

    def load_context(self, context) -> None:
        import joblib

        self.model_path = context.artifacts[ARTIFACT_KEY]
        self.model = joblib.load(self.model_path)
        # models registered before the tables were saved with them have none: scoring builds them
        self.shap_tables_path = context.artifacts.get(SHAP_TABLES_KEY)

    def predict(self, context, model_input, params: dict[str, Any] | None = None) -> np.ndarray:
        import pandas as pd

        frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        return self.model.predict_proba(frame)
