"""Where a policy evaluation goes: ``reporting.policy_evaluation*`` for BI, and an MLflow run with plots.

Rows are keyed by the evaluation's label: running the same evaluation again replaces its rows.
The MLflow run (experiment ``clinicflow-overbooking``) holds the parameters, one metric per
(method, weights, policy, measure), the tables as CSV and text, and three plots: waiting against
patients seen, overtime against patients seen, and waiting by patient group.
"""

from __future__ import annotations

import logging
import re
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import sqlalchemy as sa

from clinicflow import db
from clinicflow.settings import Settings, get_settings
from optimization.policy_eval import EvaluationResult, format_fairness, format_table

log = logging.getLogger(__name__)

EXPERIMENT = "clinicflow-overbooking"
_TABLE_COLUMNS = ("label", "data", "method", "cost_weights", "policy", "metric", "value", "ci_low", "ci_high",
                  "change_pct", "days", "notes")
_FAIR_COLUMNS = ("label", "method", "cost_weights", "policy", "group_kind", "group_label", "mean_wait", "patients")



def store(result: EvaluationResult, label: str, settings: Settings | None = None) -> int:
    """Replace the evaluation ``label`` in reporting; returns the rows written."""
    settings = settings or get_settings()
    table = result.table.copy()
    table["label"] = label
    table["data"] = result.notes[0]
    table["days"] = result.days
    table["notes"] = " ".join(result.notes[1:])
    table = table.replace([np.inf, -np.inf], np.nan)
    fair = result.fairness.copy()
    fair["label"] = label
    with db.get_engine("warehouse", settings).begin() as conn:
        conn.execute(sa.text("DELETE FROM reporting.policy_evaluation_fairness WHERE label = :l"), {"l": label})
        conn.execute(sa.text("DELETE FROM reporting.policy_evaluation WHERE label = :l"), {"l": label})
        db.copy_frame(conn, "reporting.policy_evaluation", table, _TABLE_COLUMNS)
        if len(fair):
            db.copy_frame(conn, "reporting.policy_evaluation_fairness", fair, _FAIR_COLUMNS)
    return len(table) + len(fair)


# --------------------------------------------------------------------------------------------------
# plots


def _scatter(result: EvaluationResult, metric: str, ylabel: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = result.table
    weights = list(dict.fromkeys(table.cost_weights))
    fig, axes = plt.subplots(1, len(weights), figsize=(5.2 * len(weights), 4.4), squeeze=False)
    for ax, w in zip(axes[0], weights, strict=True):
        for method, marker in (("exact", "o"), ("replay", "s")):
            block = table[(table.cost_weights == w) & (table.method == method)]
            seen = block[block.metric == "patients_seen"].set_index("policy")
            other = block[block.metric == metric].set_index("policy")
            for policy in seen.index:
                x, y = seen.loc[policy, "value"], other.loc[policy, "value"]
                ax.errorbar(x, y, yerr=[[y - other.loc[policy, "ci_low"]], [other.loc[policy, "ci_high"] - y]],
                            fmt=marker, alpha=0.8 if method == "replay" else 0.45, capsize=2)
                if method == "replay":
                    ax.annotate(policy, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
        ax.set_title(f"weights {w} (○ exact, □ replay; bars: 95% CI of the y value)", fontsize=9)
        ax.set_xlabel("patients seen per resource-day")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _groups(result: EvaluationResult, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fair = result.fairness
    if fair.empty:
        return
    w = fair.cost_weights.iloc[0]
    block = fair[(fair.method == "replay") & (fair.cost_weights == w)]
    kinds = list(dict.fromkeys(block.group_kind))
    policies = [p for p in ("none", "threshold", "greedy", "optimizer") if p in set(block.policy)]
    fig, axes = plt.subplots(1, len(kinds), figsize=(4.6 * len(kinds), 4.2), squeeze=False)
    for ax, kind in zip(axes[0], kinds, strict=True):
        part = block[block.group_kind == kind].pivot(index="group_label", columns="policy", values="mean_wait")
        labels = list(part.index)
        width = 0.8 / max(len(policies), 1)
        for i, policy in enumerate(policies):
            ax.bar(np.arange(len(labels)) + i * width, part[policy].to_numpy(), width, label=policy)
        ax.set_xticks(np.arange(len(labels)) + 0.4 - width / 2)
        ax.set_xticklabels(labels, rotation=45, ha="right", fontsize=8)
        ax.set_title(f"mean wait by {kind} ({w}, replay)", fontsize=9)
        ax.set_ylabel("slots")
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _metric_key(*parts: str) -> str:
    return ".".join(re.sub(r"[^A-Za-z0-9_.\-/ ]", "_", p) for p in parts)


def log_to_mlflow(result: EvaluationResult, label: str, params: dict[str, Any],
                  settings: Settings | None = None) -> str:
    """One MLflow run with the evaluation; returns its run id."""
    from clinicflow import tracking

    settings = settings or get_settings()
    experiment = tracking.configure(settings, experiment=EXPERIMENT)
    import mlflow

    metrics: dict[str, float] = {}
    for row in result.table.itertuples(index=False):
        if np.isfinite(row.value):
            metrics[_metric_key(row.method, row.cost_weights, row.policy, row.metric)] = float(row.value)
        if row.policy != "none" and np.isfinite(row.change_pct):
            metrics[_metric_key(row.method, row.cost_weights, row.policy, row.metric, "change_pct")] = \
                float(row.change_pct)
    with mlflow.start_run(experiment_id=experiment, run_name=f"policy evaluation {label}") as run, \
            tempfile.TemporaryDirectory() as tmp:
        mlflow.set_tags({"clinicflow.kind": "policy-evaluation", "clinicflow.label": label})
        mlflow.log_params({k: str(v)[:500] for k, v in params.items()})
        mlflow.log_metrics(metrics)
        out = Path(tmp)
        result.table.to_csv(out / "policy_evaluation.csv", index=False)
        result.fairness.to_csv(out / "fairness.csv", index=False)
        result.per_day.to_csv(out / "per_resource_day.csv", index=False)
        (out / "policy_evaluation.txt").write_text(format_table(result) + "\n\n" + format_fairness(result) + "\n",
                                                   encoding="utf-8")
        _scatter(result, "mean_wait", "mean wait per patient seen (slots)", out / "waiting_vs_patients_seen.png")
        _scatter(result, "mean_overtime", "overtime per resource-day (slots)", out / "overtime_vs_patients_seen.png")
        _groups(result, out / "waiting_by_group.png")
        mlflow.log_artifacts(str(out))
        return run.info.run_id
