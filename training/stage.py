"""The nightly ``train`` stage: retrain when due, log one MLflow run, register ``noshow``, gate the champion.

One MLflow run per training holds: the parameters; the metrics of the chosen model, of every algorithm
and of the lead-time-only baseline on the same recent window; the feature list and version; the data
snapshot id; the Great Expectations results of the loads the data came from; ROC / PR / calibration /
lift / SHAP plots; the comparison table; a Markdown model card; and the champion decision with its
reason. The same decision is kept in ``ml.training_run`` for BI tools and the next run.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import sqlalchemy as sa

from clinicflow import db
from clinicflow.logs import timed
from clinicflow.settings import Settings, get_settings
from features import definitions
from training import registry, report
from training.dataset import load_training_data, model_inputs
from training.metrics import fairness, flat
from training.trainer import TrainConfig, TrainResult, train

log = logging.getLogger(__name__)

SHAP_SAMPLE = 2000


# --------------------------------------------------------------------------------------------------
# ml.training_run bookkeeping


def _last_success(engine: sa.Engine) -> dict[str, Any] | None:
    with engine.connect() as conn:
        row = conn.execute(sa.text(
            "SELECT * FROM ml.training_run WHERE status = 'success' ORDER BY as_of DESC, training_run_id DESC LIMIT 1"
        )).mappings().first()
    return dict(row) if row else None


def _same_training(engine: sa.Engine, as_of: date, config_hash: str, snapshot_id: str) -> dict[str, Any] | None:
    with engine.connect() as conn:
        row = conn.execute(sa.text(
            "SELECT * FROM ml.training_run WHERE status = 'success' AND as_of = :a AND config_hash = :c "
            "AND snapshot_id = :s ORDER BY training_run_id DESC LIMIT 1"
        ), {"a": as_of, "c": config_hash, "s": snapshot_id}).mappings().first()
    return dict(row) if row else None


def _clean(value: Any) -> Any:
    """JSON-safe: NaN and infinities become null (PostgreSQL's jsonb refuses them)."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, (float, np.floating)):
        return float(value) if np.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


def _jsonb(value: Any) -> str:
    return json.dumps(_clean(value), default=str)


def _record(engine: sa.Engine, **values: Any) -> int:
    values = {k: (_jsonb(v) if k in ("metrics", "details") else v) for k, v in values.items()}
    cols = ", ".join(values)
    params = ", ".join(f"CAST(:{k} AS jsonb)" if k in ("metrics", "details") else f":{k}" for k in values)
    with engine.begin() as conn:
        return int(conn.execute(sa.text(
            f"INSERT INTO ml.training_run ({cols}) VALUES ({params}) RETURNING training_run_id"), values).scalar_one())


def _update(engine: sa.Engine, run_id: int, **values: Any) -> None:
    values = {k: (_jsonb(v) if k in ("metrics", "details") else v) for k, v in values.items()}
    sets = ", ".join(f"{k} = CAST(:{k} AS jsonb)" if k in ("metrics", "details") else f"{k} = :{k}" for k in values)
    with engine.begin() as conn:
        conn.execute(sa.text(f"UPDATE ml.training_run SET {sets}, finished_at = now() WHERE training_run_id = :id"),
                     {**values, "id": run_id})


def validation_results(as_of: date, engine: sa.Engine) -> dict[str, Any]:
    """The Great Expectations results of the latest load of each source up to ``as_of`` (ops.load_batch)."""
    with engine.connect() as conn:
        rows = conn.execute(sa.text(
            "SELECT DISTINCT ON (source) load_batch_id, source, as_of, status, rows_extracted, rows_quarantined, "
            "rows_upserted, data_docs, details -> 'validation' AS validation FROM ops.load_batch "
            "WHERE as_of <= :a AND status = 'loaded' ORDER BY source, load_batch_id DESC"
        ), {"a": as_of}).mappings().all()
        failed = conn.execute(sa.text(
            "SELECT count(*) FROM ops.load_batch WHERE as_of <= :a AND status = 'failed'"), {"a": as_of}).scalar()
    batches = [dict(r) for r in rows]
    if not batches:
        summary = "no load batch recorded in ops.load_batch (core was written without the loader)"
    else:
        parts = []
        for b in batches:
            v = b.get("validation") or {}
            parts.append(f"{b['source']}: batch {b['load_batch_id']} as of {b['as_of']}, GX "
                         f"{'passed' if v.get('gx_success') else 'failed or not run'}, "
                         f"{b.get('rows_quarantined') or 0} row(s) quarantined")
        summary = "; ".join(parts) + (f"; {failed} failed batch(es) before" if failed else "")
    return {"summary": summary, "batches": batches, "failed_batches": int(failed or 0)}


# --------------------------------------------------------------------------------------------------
# MLflow


def _params(result: TrainResult) -> dict[str, Any]:
    cfg = result.config
    chosen = result.candidates[result.best]
    params: dict[str, Any] = {
        "as_of": result.as_of, "algorithm": result.best, "calibration": chosen.calibration,
        "algorithms": ",".join(cfg.algorithms), "optuna_trials": cfg.trials, "optuna_timeout_s": cfg.timeout_s,
        "folds": cfg.folds, "fold_days": cfg.fold_days, "embargo_days": cfg.embargo_days,
        "gate_days": cfg.gate_days, "gate_margin": cfg.gate_margin, "lookback_days": cfg.lookback_days,
        "feature_set_version": definitions.FEATURE_SET_VERSION, "n_features": len(result.model.features),
        "n_train": len(result.data.frame), "train_start": result.model.metadata["train_start"],
        "train_end": result.model.train_end, "snapshot_id": result.data.snapshot_id(),
        "config_hash": cfg.hash(), "restricted_features": ",".join(cfg.features) if cfg.features else "",
    }
    for key, value in chosen.params.items():
        params[f"hp.{key}"] = json.dumps(value) if isinstance(value, dict) else value
    return params


def _metrics(result: TrainResult, decision: registry.GateDecision, fair: dict) -> dict[str, float]:
    chosen = result.candidates[result.best]
    metrics = flat("gate", chosen.gate_metrics)
    metrics.update(flat("gate.auc_by", fair))
    metrics["folds.log_loss"] = chosen.fold_log_loss
    for name, c in result.candidates.items():
        metrics.update(flat(f"cmp.{name}", c.gate_metrics))
        metrics[f"cmp.{name}.folds_log_loss"] = c.fold_log_loss
    metrics.update(flat("cmp.lead_only", result.baseline.gate_metrics))
    metrics.update(flat("champion", decision.champion))
    metrics.update(flat("seconds", result.timings))
    return {k: v for k, v in metrics.items() if np.isfinite(v)}


def _artifacts(result: TrainResult, decision: registry.GateDecision, fair: dict, gx: dict, out: Path) -> str:
    y = result.gate_labels
    chosen = result.candidates[result.best]
    curves = {f"{result.best} (chosen)": chosen.gate_predictions}
    curves.update({n: c.gate_predictions for n, c in result.candidates.items() if n != result.best})
    curves["lead_only"] = result.baseline.gate_predictions
    report.plot_all(out / "plots", y, curves, f"gate window {result.gate}")
    sample = result.gate_frame.sample(min(SHAP_SAMPLE, len(result.gate_frame)), random_state=0)
    contrib = result.model.contributions(sample)
    report.plot_shap(out / "plots", contrib, model_inputs(sample, features=result.model.features),
                     result.model.contribution_space)
    comparison = result.comparison()
    comparison.to_csv(out / "comparison.csv", index=False)
    (out / "comparison.md").write_text(report.markdown_table(comparison) + "\n", encoding="utf-8")
    features = [definitions.feature(f).__dict__ for f in result.model.features]
    (out / "features.json").write_text(json.dumps({
        "feature_set_version": definitions.FEATURE_SET_VERSION, "inputs": result.model.features,
        "definitions": features}, indent=2, ensure_ascii=False), encoding="utf-8")
    (out / "gx_validation.json").write_text(json.dumps(_clean(gx), indent=2, default=str), encoding="utf-8")
    (out / "gate_decision.json").write_text(json.dumps(_clean(decision.as_dict()), indent=2, default=str),
                                            encoding="utf-8")
    (out / "tuning.json").write_text(json.dumps(_clean({k: v.__dict__ for k, v in result.tuning.items()}),
                                                indent=2, default=str), encoding="utf-8")
    info = {
        "algorithm": result.best, "as_of": result.as_of, "train_start": result.model.metadata["train_start"],
        "train_end": result.model.train_end, "n_train": len(result.data.frame),
        "noshow_rate": float(result.data.y.mean()), "snapshot_id": result.data.snapshot_id(),
        "feature_set_version": definitions.FEATURE_SET_VERSION, "gx_summary": gx["summary"],
        "folds": "; ".join(f.describe() for f in result.folds), "embargo_days": result.config.embargo_days,
        "calibration": chosen.calibration, "gate_window": str(result.gate),
        "monotone_in_lead": result.model.monotone_in_lead,
    }
    card = report.model_card(info, comparison, fair, features, decision.as_dict())
    (out / "model_card.md").write_text(card, encoding="utf-8")
    return card


def _shap_tables(model, model_path: Path, path: Path) -> Path | None:
    """The SHAP tables of the model's trees (:mod:`scoring.treeshap`), built once here and logged with the
    model, so that each scoring run reads them instead of building them; None for a model without trees,
    or if they cannot be built (the model is registered without them: scoring then builds them itself)."""
    from scoring.treeshap import ModelExplainer
    from training.pyfunc import file_digest

    try:
        with timed("SHAP tables of the model", log):
            written = ModelExplainer(model).save(path, file_digest(model_path))
    except Exception as exc:  # an optimisation of scoring: never the reason a model is not registered
        log.warning("SHAP tables of the model not saved with it (scoring will build them): %s",
                    str(exc).splitlines()[0][:300])
        return None
    if not written:
        return None
    log.info("SHAP tables: %.1f MB in %s", path.stat().st_size / 1e6, path.name)
    return path


def _log_model(result: TrainResult, out: Path) -> Any:
    import importlib.metadata as md

    import joblib
    import mlflow

    from training.pyfunc import ARTIFACT_KEY, SHAP_TABLES_KEY

    path = out / "noshow_model.joblib"
    joblib.dump(result.model, path)
    artifacts = {ARTIFACT_KEY: str(path)}
    tables = _shap_tables(result.model, path, out / "shap_tables.npz")
    if tables is not None:
        artifacts[SHAP_TABLES_KEY] = str(tables)
    requirements = []
    for package in ("mlflow", "scikit-learn", "lightgbm", "xgboost", "pandas", "numpy", "scipy", "joblib", "shap"):
        try:
            requirements.append(f"{package}=={md.version(package)}")
        except md.PackageNotFoundError:
            continue
    import warnings

    entry = Path(__file__).with_name("pyfunc_entry.py")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*type hints.*")
        return mlflow.pyfunc.log_model(
            name="model", python_model=str(entry), artifacts=artifacts,
            registered_model_name=registry.MODEL_NAME, pip_requirements=requirements,
        )


# --------------------------------------------------------------------------------------------------
# the stage


def run_training(as_of: date, *, overrides: dict[str, Any] | None = None, force: bool = False,
                 settings: Settings | None = None) -> dict[str, Any]:
    """Train as of ``as_of`` if due; register, gate and record. Returns a small JSON-able summary."""
    settings = settings or get_settings()
    config = TrainConfig.from_settings(settings, overrides)
    engine = db.get_engine("warehouse", settings)
    champion_version = registry.version_by_alias(registry.CHAMPION, settings)
    last = _last_success(engine)
    same_features = (champion_version is not None
                     and champion_version.tags.get("feature_set_version") == definitions.FEATURE_SET_VERSION)
    if not force and same_features and last is not None:
        age = (as_of - last["as_of"]).days
        if 0 <= age < settings.train_every_days:
            reason = (f"not due: last training as of {last['as_of']} is {age} day(s) old and "
                      f"CLINICFLOW_TRAIN_EVERY_DAYS={settings.train_every_days}; champion v{champion_version.version} "
                      "stays")
            log.info("train: %s", reason)
            return {"as_of": as_of.isoformat(), "trained": False, "reason": reason,
                    "champion_version": champion_version.version}
    data = load_training_data(as_of, config.lookback_days, settings=settings, engine=engine)
    snapshot = data.snapshot_id()
    previous = _same_training(engine, as_of, config.hash(), snapshot)
    if previous is not None and not force:
        reason = (f"already trained as of {as_of} on the same data ({snapshot}) and configuration: model "
                  f"v{previous['model_version']} ({previous['decision']})")
        log.info("train: %s", reason)
        return {"as_of": as_of.isoformat(), "trained": False, "reason": reason,
                "model_version": previous["model_version"], "promoted": previous["promoted"]}

    import mlflow

    from clinicflow import tracking

    experiment = tracking.configure(settings)
    run_row = _record(engine, as_of=as_of, run_key=f"{as_of}-{int(time.time())}", config_hash=config.hash(),
                      snapshot_id=snapshot, feature_set_version=definitions.FEATURE_SET_VERSION, status="running",
                      details={"config": config.__dict__})
    try:
        with timed(f"training as of {as_of}", log) as timer, \
                mlflow.start_run(experiment_id=experiment, run_name=f"noshow as of {as_of}") as run:
            mlflow.set_tags({"as_of": as_of.isoformat(), "snapshot_id": snapshot, "stage": "nightly-train"})
            optuna_url = db.url_for("optuna", settings)
            db.ensure_database(optuna_url)
            result = train(data, config, storage_url=optuna_url.render_as_string(hide_password=False),
                           study_prefix=f"noshow-{as_of}-{run.info.run_id[:8]}")
            champion, champion_v = registry.champion_for_gate(settings)
            decision = registry.gate(result, champion, champion_v, config.gate_margin)
            fair = fairness(result.gate_labels, result.candidates[result.best].gate_predictions, result.gate_frame)
            gx = validation_results(as_of, engine)
            mlflow.log_params(_params(result))
            mlflow.log_metrics(_metrics(result, decision, fair))
            with tempfile.TemporaryDirectory() as tmp:
                out = Path(tmp)
                _artifacts(result, decision, fair, gx, out)
                mlflow.log_artifacts(str(out))
                info = _log_model(result, out)
            version = str(info.registered_model_version)
            tags = {"as_of": as_of.isoformat(), "train_end": result.model.train_end.isoformat(),
                    "algorithm": result.best, "feature_set_version": definitions.FEATURE_SET_VERSION,
                    "snapshot_id": snapshot, "gate_window": str(result.gate), "run_id": run.info.run_id,
                    "gate_auc": f"{decision.challenger['auc']:.5f}",
                    "gate_log_loss": f"{decision.challenger['log_loss']:.5f}"}
            registry.register(version, decision, tags, settings)
            mlflow.set_tags({"champion_decision": "promoted" if decision.promoted else "kept",
                             "decision_reason": decision.reason[:5000], "model_version": version})
            timer.rows = len(data.frame)
    except Exception as exc:
        _update(engine, run_row, status="failed", decision=f"failed: {exc}"[:4000])
        raise
    summary = {
        "as_of": as_of.isoformat(), "trained": True, "model_version": version, "algorithm": result.best,
        "promoted": decision.promoted, "decision": decision.reason, "mlflow_run_id": run.info.run_id,
        "snapshot_id": snapshot, "gate_auc": round(decision.challenger["auc"], 5),
        "gate_log_loss": round(decision.challenger["log_loss"], 5),
        "lead_only_auc": round(result.baseline.gate_metrics["auc"], 5), "seconds": round(timer.seconds, 1),
    }
    _update(engine, run_row, status="success", mlflow_run_id=run.info.run_id, model_name=registry.MODEL_NAME,
            model_version=version, algorithm=result.best, promoted=decision.promoted, decision=decision.reason,
            metrics={**decision.challenger, "lead_only_auc": result.baseline.gate_metrics["auc"]},
            details={"gate": decision.as_dict(), "comparison": result.comparison().to_dict("records"),
                     "timings": result.timings})
    log.info("train: %s", summary)
    return summary


def last_training_day(settings: Settings | None = None) -> date | None:
    engine = db.get_engine("warehouse", settings)
    last = _last_success(engine)
    return last["as_of"] if last else None


__all__ = ["last_training_day", "run_training", "validation_results"]
