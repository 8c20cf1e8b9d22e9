"""ClinicFlow training stage: temporal validation, the algorithms, Optuna tuning, the MLflow registry
and the champion gate, backtests.

OpenMP threads (LightGBM, XGBoost) sleep instead of spinning while they wait: on a machine shared with
other pipeline tasks, spinning threads can make a fit ten times slower. Set ``OMP_WAIT_POLICY`` in
the environment to override.
"""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
