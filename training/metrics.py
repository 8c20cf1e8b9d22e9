"""Evaluation metrics: AUC, PR-AUC, Brier, log loss, expected calibration error, top-decile lift, and
AUC by sex, age band and branch."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, brier_score_loss, log_loss, roc_auc_score

from training.calibration import clip

MIN_GROUP = 30


def ece(y: np.ndarray, p: np.ndarray, bins: int = 10) -> float:
    """Expected calibration error over equal-width probability bins, weighted by bin size."""
    y, p = np.asarray(y, float), np.asarray(p, float)
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(p, edges[1:-1]), 0, bins - 1)
    total = 0.0
    for b in range(bins):
        mask = which == b
        if mask.any():
            total += mask.mean() * abs(p[mask].mean() - y[mask].mean())
    return float(total)


def top_decile_lift(y: np.ndarray, p: np.ndarray) -> float:
    """No-show rate among the 10% highest predicted risks, divided by the overall rate."""
    y, p = np.asarray(y, float), np.asarray(p, float)
    if len(y) == 0 or y.mean() == 0:
        return float("nan")
    k = max(1, math.ceil(0.1 * len(y)))
    top = np.argsort(-p, kind="stable")[:k]
    return float(y[top].mean() / y.mean())


def _auc(y: np.ndarray, p: np.ndarray) -> float:
    return float(roc_auc_score(y, p)) if 0 < np.sum(y) < len(y) else float("nan")


def evaluate(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    y = np.asarray(y, dtype=int)
    p = clip(p)
    both = 0 < y.sum() < len(y)
    return {
        "n": float(len(y)),
        "noshow_rate": float(y.mean()) if len(y) else float("nan"),
        "mean_prediction": float(p.mean()) if len(p) else float("nan"),
        "auc": _auc(y, p),
        "pr_auc": float(average_precision_score(y, p)) if both else float("nan"),
        "brier": float(brier_score_loss(y, p)) if len(y) else float("nan"),
        "log_loss": float(log_loss(y, p, labels=[0, 1])) if len(y) else float("nan"),
        "ece": ece(y, p),
        "lift_top_decile": top_decile_lift(y, p),
    }


def auc_by_group(y: np.ndarray, p: np.ndarray, groups: pd.Series, min_size: int = MIN_GROUP) -> dict[str, float]:
    """AUC within each group that has at least ``min_size`` appointments and both outcomes."""
    out: dict[str, float] = {}
    frame = pd.DataFrame({"y": np.asarray(y, int), "p": np.asarray(p, float), "g": groups.to_numpy()})
    for group, part in frame.groupby("g", dropna=False, sort=True):
        if len(part) >= min_size and 0 < part["y"].sum() < len(part):
            out[str(group)] = _auc(part["y"].to_numpy(), part["p"].to_numpy())
    return out


def fairness(y: np.ndarray, p: np.ndarray, frame: pd.DataFrame) -> dict[str, dict[str, float]]:
    """AUC by sex, age band and branch (the subgroup view of the model card)."""
    from training.dataset import age_band

    sex = frame["sex"].astype("object").where(frame["sex"].notna(), "unknown") if "sex" in frame else None
    out: dict[str, dict[str, float]] = {}
    if sex is not None:
        out["sex"] = auc_by_group(y, p, sex.reset_index(drop=True))
    if "age" in frame:
        out["age_band"] = auc_by_group(y, p, age_band(frame["age"]).reset_index(drop=True))
    if "branch_id" in frame:
        branch = frame["branch_id"].astype("object").where(frame["branch_id"].notna(), "unknown")
        out["branch"] = auc_by_group(y, p, branch.reset_index(drop=True))
    return out


def flat(prefix: str, metrics: dict[str, Any]) -> dict[str, float]:
    """MLflow metric names: ``prefix.key`` for numbers, nested groups flattened, NaN dropped."""
    out: dict[str, float] = {}
    for key, value in metrics.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict):
            out.update(flat(name, value))
        elif isinstance(value, (int, float, np.floating)) and not math.isnan(float(value)):
            out[_safe(name)] = float(value)
    return out


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "._-/ " else "_" for ch in name)
