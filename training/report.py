"""What a training leaves for ML reviewers: plots (ROC, PR, calibration, lift, SHAP summary), the
algorithm comparison table and a Markdown model card."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd


def _figure():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def plot_all(out: Path, y: np.ndarray, curves: dict[str, np.ndarray], title: str) -> list[Path]:
    """ROC, precision-recall, reliability and lift plots of every model in ``curves`` on one window."""
    from sklearn.metrics import precision_recall_curve, roc_curve

    plt = _figure()
    out.mkdir(parents=True, exist_ok=True)
    paths = []

    fig, ax = plt.subplots(figsize=(6, 5))
    for name, p in curves.items():
        fpr, tpr, _ = roc_curve(y, p)
        ax.plot(fpr, tpr, label=name)
    ax.plot([0, 1], [0, 1], "k:", lw=0.8)
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title=f"ROC — {title}")
    ax.legend(fontsize=8)
    paths.append(_save(fig, out / "roc.png"))

    fig, ax = plt.subplots(figsize=(6, 5))
    for name, p in curves.items():
        precision, recall, _ = precision_recall_curve(y, p)
        ax.plot(recall, precision, label=name)
    ax.axhline(y.mean(), color="k", ls=":", lw=0.8)
    ax.set(xlabel="recall", ylabel="precision", title=f"Precision-recall — {title}")
    ax.legend(fontsize=8)
    paths.append(_save(fig, out / "pr.png"))

    fig, ax = plt.subplots(figsize=(6, 5))
    for name, p in curves.items():
        frame = pd.DataFrame({"p": p, "y": y})
        frame["bin"] = pd.qcut(frame["p"].rank(method="first"), 10, labels=False)
        agg = frame.groupby("bin").agg(p=("p", "mean"), y=("y", "mean"))
        ax.plot(agg["p"], agg["y"], marker="o", label=name)
    top = float(max(np.max(next(iter(curves.values()))), y.mean() * 2, 0.05))
    ax.plot([0, top], [0, top], "k:", lw=0.8)
    ax.set(xlabel="predicted no-show probability (decile mean)", ylabel="observed no-show rate",
           title=f"Calibration — {title}")
    ax.legend(fontsize=8)
    paths.append(_save(fig, out / "calibration.png"))

    fig, ax = plt.subplots(figsize=(6, 5))
    for name, p in curves.items():
        order = np.argsort(-p, kind="stable")
        cum = np.cumsum(y[order]) / max(y.sum(), 1)
        share = np.arange(1, len(y) + 1) / len(y)
        ax.plot(share, cum / share, label=name)
    ax.axhline(1.0, color="k", ls=":", lw=0.8)
    ax.set(xlabel="share of appointments, highest risk first", ylabel="lift (no-show capture / share)",
           title=f"Lift — {title}", xlim=(0.01, 1))
    ax.legend(fontsize=8)
    paths.append(_save(fig, out / "lift.png"))
    return paths


def plot_shap(out: Path, contributions: pd.DataFrame, inputs: pd.DataFrame, space: str) -> Path:
    """SHAP summary (beeswarm) of the deployed model on a sample of the gate window."""
    import shap

    plt = _figure()
    values = contributions.drop(columns=["bias"]).to_numpy()
    shown = inputs[contributions.columns.drop("bias")].copy()
    for col in shown.columns:
        if shown[col].dtype == object:
            shown[col] = shown[col].astype("category").cat.codes.astype(float)
    shap.summary_plot(values, shown.astype(float), show=False, max_display=20, plot_size=(8, 7))
    plt.title(f"SHAP summary ({space})")
    return _save(plt.gcf(), out / "shap_summary.png")


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def markdown_table(frame: pd.DataFrame, digits: int = 4) -> str:
    header = "| " + " | ".join(str(c) for c in frame.columns) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    rows = ["| " + " | ".join(_fmt(v, digits) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *rows])


def model_card(info: dict[str, Any], comparison: pd.DataFrame, fairness: dict[str, dict[str, float]],
               features: list[dict[str, Any]], decision: dict[str, Any]) -> str:
    lines = [
        f"# No-show model — {info['algorithm']} (trained as of {info['as_of']})",
        "",
        "## Intended use",
        "",
        "Predicts the probability that a booked outpatient appointment ends as a no-show, for the nightly "
        "scoring of the next days' appointments and the overbooking optimiser. Not for decisions about an "
        "individual patient's access to care.",
        "",
        "## Data",
        "",
        f"- appointments with a known outcome between **{info['train_start']}** and **{info['train_end']}** "
        f"({info['n_train']:,} rows, {info['noshow_rate']:.1%} no-shows); snapshot `{info['snapshot_id']}`",
        f"- feature set **{info['feature_set_version']}**, {len(features)} inputs, each computed as of the "
        "appointment's own day from what was known then (no later outcome can reach it)",
        f"- data validation (Great Expectations) of the loads used: {info.get('gx_summary', 'not recorded')}",
        "",
        "## Validation",
        "",
        f"Rolling origin: {info['folds']}; embargo {info['embargo_days']} days. Calibration "
        f"**{info['calibration']}** (chosen on the folds by forward-chained log loss). All algorithms below "
        f"were judged on the same recent window **{info['gate_window']}**, which none of them was fitted on.",
        "",
        markdown_table(comparison),
        "",
        "### AUC by subgroup (recent window)",
        "",
    ]
    for group, values in fairness.items():
        shown = ", ".join(f"{k}: {_fmt(v, 3)}" for k, v in values.items()) or "too few appointments"
        lines.append(f"- **{group}**: {shown}")
    lines += [
        "",
        "## Champion decision",
        "",
        f"**{'promoted to champion' if decision.get('promoted') else 'not promoted'}** — {decision.get('reason')}",
        "",
        "## Behaviour",
        "",
        f"- monotone in lead time (a longer lead never lowers the risk, all else equal): "
        f"{'yes (constrained)' if info.get('monotone_in_lead') else 'not guaranteed'}",
        "- the pseudonymous patient key and the appointment id are not inputs",
        "",
        "## Limitations",
        "",
        "- Booking-record fields that change after booking (confirmation, reminder) are taken as stored when "
        "the features were computed; rows back-filled from history see their final value.",
        "- Probabilities are calibrated on recent weeks; a change in the clinic's no-show rate shows first in "
        "the calibration plot and ECE.",
        "",
        "## Inputs",
        "",
        markdown_table(pd.DataFrame(features)[["name", "family", "kind", "description"]]),
        "",
    ]
    return "\n".join(lines)
