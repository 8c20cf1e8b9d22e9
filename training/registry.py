"""The MLflow model registry: model ``noshow``, aliases ``challenger`` and ``champion``, the champion gate.

Every training registers a new version and points ``challenger`` at it. The version becomes
``champion`` only if, on the same recent days (the gate window, which neither model was fitted on),
its log loss beats the champion's by at least ``CLINICFLOW_TRAIN_GATE_MARGIN`` and its AUC is not
lower. Otherwise the champion stays, and the run and the version record why.

The champion is judged as it is when it was trained before the gate window ("artifact" mode: it
scores days it never saw). When it was trained on part of the window (a retraining sooner than the
window length), its configuration — algorithm, hyper-parameters, calibrator — is refitted on exactly
the challenger's gate training rows ("refit" mode), so that the two compete on equal data.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from clinicflow.errors import ClinicFlowError
from clinicflow.settings import Settings
from training.dataset import model_inputs
from training.metrics import evaluate
from training.model import NoShowModel

log = logging.getLogger(__name__)

MODEL_NAME = "noshow"
CHAMPION = "champion"
CHALLENGER = "challenger"


def client(settings: Settings | None = None):
    from clinicflow import tracking

    tracking.configure(settings)
    import mlflow

    return mlflow.MlflowClient()


def version_by_alias(alias: str, settings: Settings | None = None):
    """The model version an alias points at, or None."""
    from mlflow.exceptions import MlflowException

    c = client(settings)
    try:
        return c.get_model_version_by_alias(MODEL_NAME, alias)
    except MlflowException:
        return None


def load_model(version: str | int | None = None, *, alias: str | None = None,
               settings: Settings | None = None) -> NoShowModel:
    """The :class:`NoShowModel` of a registered version (or alias)."""
    import mlflow

    client(settings)
    uri = f"models:/{MODEL_NAME}@{alias}" if alias else f"models:/{MODEL_NAME}/{version}"
    try:
        loaded = mlflow.pyfunc.load_model(uri)
    except Exception as exc:
        raise ClinicFlowError(f"cannot load {uri}: {exc}. Has a training run registered it?") from exc
    return loaded.unwrap_python_model().model


def load_champion(settings: Settings | None = None) -> NoShowModel:
    """The current champion (raises ClinicFlowError if there is none yet)."""
    if version_by_alias(CHAMPION, settings) is None:
        raise ClinicFlowError(f"model {MODEL_NAME!r} has no {CHAMPION!r} yet: run `clinicflow train` (or the "
                              "nightly DAG) first")
    return load_model(alias=CHAMPION, settings=settings)


@dataclass
class GateDecision:
    promoted: bool
    reason: str
    mode: str                       # 'no-champion', 'artifact', 'refit', 'incompatible'
    champion_version: str | None = None
    challenger: dict[str, float] = field(default_factory=dict)
    champion: dict[str, float] = field(default_factory=dict)
    margin: float = 0.0
    window: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def judge(challenger: dict[str, float], champion: dict[str, float], margin: float) -> tuple[bool, str]:
    """Promote iff the challenger's log loss is lower by ``margin`` and its AUC is not lower."""
    ll_c, ll_h = challenger["log_loss"], champion["log_loss"]
    auc_c, auc_h = challenger["auc"], champion["auc"]
    better_ll = ll_c <= ll_h - margin
    kept_auc = auc_c >= auc_h
    numbers = (f"log loss {ll_c:.5f} vs champion {ll_h:.5f} (needs ≤ {ll_h - margin:.5f}), "
               f"AUC {auc_c:.4f} vs {auc_h:.4f}")
    if better_ll and kept_auc:
        return True, f"challenger beats the champion: {numbers}"
    why = []
    if not better_ll:
        why.append("log loss not better by the margin")
    if not kept_auc:
        why.append("AUC lower")
    return False, f"champion kept ({', '.join(why)}): {numbers}"


def gate(result, champion: NoShowModel | None, champion_version: str | None, margin: float) -> GateDecision:
    """Compare the challenger of a :class:`~training.trainer.TrainResult` with the champion."""
    y = result.gate_labels
    challenger = result.candidates[result.best]
    c_metrics = evaluate(y, challenger.gate_predictions)
    window = str(result.gate)
    if champion is None:
        return GateDecision(True, "no champion yet: the first model becomes champion", "no-champion", None,
                            c_metrics, {}, margin, window)
    frame = result.gate_frame
    available = set(model_inputs(result.data.frame.head(1)).columns)
    missing = [f for f in champion.features if f not in available and not f.startswith(("flag_", "ext_"))]
    if missing:
        return GateDecision(True, f"champion v{champion_version} needs features no longer computed ({missing}); "
                            "the challenger replaces it", "incompatible", champion_version, c_metrics, {}, margin,
                            window)
    if champion.train_end < result.gate.start:
        mode = "artifact"
        p = champion.predict_proba(frame)
    else:
        mode = "refit"
        from training.trainer import _cap

        days = result.data.days
        # exactly the rows the challenger's gate fit used
        rows = _cap(np.where((days < result.gate.start).to_numpy())[0], result.config.eval_max_rows,
                    result.config.seed)
        refitted = champion.refit(result.data.frame.iloc[rows], result.data.y[rows])
        p = refitted.predict_proba(frame)
    h_metrics = evaluate(y, p)
    promoted, reason = judge(c_metrics, h_metrics, margin)
    how = ("the champion as registered (trained before the window)" if mode == "artifact"
           else "the champion's configuration refitted on the same rows as the challenger")
    reason = f"{reason}; window {window}, {len(y)} appointments; compared with {how} (v{champion_version})"
    return GateDecision(promoted, reason, mode, champion_version, c_metrics, h_metrics, margin, window)


def champion_for_gate(settings: Settings | None = None) -> tuple[NoShowModel | None, str | None]:
    version = version_by_alias(CHAMPION, settings)
    if version is None:
        return None, None
    try:
        return load_model(version.version, settings=settings), str(version.version)
    except ClinicFlowError as exc:
        log.warning("champion v%s cannot be loaded (%s); treating it as absent", version.version, exc)
        return None, str(version.version)


def register(model_uri_version: str, decision: GateDecision, tags: dict[str, str],
             settings: Settings | None = None) -> None:
    """Tag the new version, point ``challenger`` at it, and ``champion`` too if it was promoted."""
    c = client(settings)
    for key, value in {**tags, "champion_decision": "promoted" if decision.promoted else "kept",
                       "decision_reason": decision.reason[:5000]}.items():
        c.set_model_version_tag(MODEL_NAME, model_uri_version, key, str(value))
    c.set_registered_model_alias(MODEL_NAME, CHALLENGER, model_uri_version)
    if decision.promoted:
        c.set_registered_model_alias(MODEL_NAME, CHAMPION, model_uri_version)
        log.info("model %s v%s is the new champion: %s", MODEL_NAME, model_uri_version, decision.reason)
    else:
        log.info("model %s v%s stays challenger: %s", MODEL_NAME, model_uri_version, decision.reason)


def describe(settings: Settings | None = None) -> dict[str, Any]:
    """The champion and challenger versions with their tags (``clinicflow model show``)."""
    out: dict[str, Any] = {}
    for alias in (CHAMPION, CHALLENGER):
        version = version_by_alias(alias, settings)
        out[alias] = None if version is None else {
            "version": version.version, "run_id": version.run_id, "tags": dict(version.tags),
        }
    return out


def monotone_check(model: NoShowModel, frame, leads=(0, 1, 2, 3, 5, 7, 14, 21, 30, 60)) -> float:
    """Largest drop in predicted risk when only the lead time grows (0 for a monotone model)."""
    worst = 0.0
    previous = None
    base_days = frame["lead_days"].fillna(0).to_numpy(dtype=float)
    base_hours = frame["lead_hours"].fillna(0).to_numpy(dtype=float)
    for lead in leads:
        probe = frame.copy()
        probe["lead_days"] = lead
        # the same time of day, ``lead`` days earlier: hours move with the days
        probe["lead_hours"] = np.maximum(base_hours + (lead - base_days) * 24.0, 0.0)
        probe["same_day_booking"] = lead == 0
        p = model.predict_proba(probe)
        if previous is not None:
            worst = max(worst, float(np.max(previous - p)))
        previous = p
    return worst


__all__ = ["CHALLENGER", "CHAMPION", "MODEL_NAME", "GateDecision", "gate", "judge", "load_champion", "load_model",
           "register", "version_by_alias"]
