"""ClinicFlow features stage: point-in-time features computed in PostgreSQL as of a run's date.

``features.build_features(as_of)`` returns (and materialises) the features of the booked appointments
a run of ``as_of`` scores; see :mod:`features.build` for the rest of the API and
:mod:`features.definitions` for the feature set.
"""

from __future__ import annotations

from typing import Any

__all__ = ["build_features", "build_training_features", "load_features", "persist_features", "run_features_stage"]


def __getattr__(name: str) -> Any:  # lazy: importing the package stays cheap for DAG parsing
    if name in __all__:
        from features import build

        return getattr(build, name)
    raise AttributeError(f"module 'features' has no attribute {name!r}")
