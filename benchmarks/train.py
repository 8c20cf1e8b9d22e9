"""Training benchmark: a full retraining (30 Optuna trials) on N generated appointments.

    clinicflow bench train [--appointments 1000000] [--trials 30] [--algorithms …] [--keep]

1. Set-up, not timed: the generated Medialog source (``pipelines.sources.medialog_generator``, kept in
   ``<warehouse>_bench_medialog`` and shared with ``bench ingest``), loaded by the real connector and
   loader into a fresh warehouse ``<warehouse>_bench_train`` (with its own MLflow and Optuna databases).
2. Timed, each with peak memory (RSS above the stage's start):
   * ``features``: the nightly features stage on an empty features table — every appointment with an
     outcome back-filled as of its own day, plus the scoring horizon (what a first night or a new
     feature-set version costs; later nights only add one day);
   * ``training``: the nightly ``train`` stage with ``--trials`` Optuna trials — tuning, rolling-origin
     validation of every algorithm, calibration, stacking, the gate window comparison, the final fit,
     MLflow run with plots and SHAP, registration and the champion gate.
3. Baselines in the same run, on the same training rows: one LightGBM fit with default hyper-parameters
   (what a single model costs), and a lead-time-only logistic regression.

Target: training ≤ 15 minutes for 1,000,000 appointments on 2 cores. Printed and written to
``<CLINICFLOW_HOME>/bench/train-<timestamp>.json``; the databases are dropped unless ``--keep``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import secrets
import time
from datetime import date
from typing import Any

from benchmarks.ingest import measure

log = logging.getLogger(__name__)

SOURCE = "bench_train"
TARGET_SECONDS = 15 * 60


def _drop(admin, name: str) -> None:
    import sqlalchemy as sa

    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def run(appointments: int, trials: int = 30, timeout_s: int = 900, algorithms: list[str] | None = None,
        keep: bool = False, as_of: date | None = None) -> dict[str, Any]:
    import sqlalchemy as sa

    from benchmarks.ingest import prepare_source
    from clinicflow import db, migrations
    from clinicflow.settings import environment, get_settings

    as_of = as_of or date.today()
    base = get_settings()
    warehouse = db.url_for("warehouse", base)
    bench_url = warehouse.set(database=f"{warehouse.database}_bench_train")
    names = [bench_url.database, f"{bench_url.database}_mlflow", f"{bench_url.database}_optuna"]
    admin = sa.create_engine(warehouse.set(database="postgres"), isolation_level="AUTOCOMMIT",
                             poolclass=sa.pool.NullPool)
    for name in names:
        _drop(admin, name)
    results: dict[str, Any] = {"appointments": appointments, "as_of": as_of.isoformat(), "trials": trials,
                               "cpu_count": os.cpu_count()}
    try:
        started = time.perf_counter()
        entry = prepare_source("medialog", appointments, as_of, warehouse, None)
        log.info("bench train: generated source ready in %.1fs", time.perf_counter() - started)
        changes = {  # MLflow and Optuna beside the benchmark database, not the user's
            "CLINICFLOW_DATABASE_URL": bench_url.render_as_string(hide_password=False),
            "CLINICFLOW_SOURCES": json.dumps([{"name": SOURCE, **entry}]),
            "CLINICFLOW_MLFLOW_TRACKING_URI": None, "CLINICFLOW_OPTUNA_STORAGE": None,
            "CLINICFLOW_PSEUDONYM_SECRET": (os.environ.get("CLINICFLOW_PSEUDONYM_SECRET")
                                            or secrets.token_urlsafe(24)),
        }
        db.dispose_engines()
        with environment(changes):
            migrations.upgrade(bench_url)
            results.update(_stages(as_of, trials, timeout_s, algorithms))
    finally:
        db.dispose_engines()
        if not keep:
            for name in names:
                _drop(admin, name)
        admin.dispose()
    out = get_settings().home / "bench"
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"train-{time.strftime('%Y%m%dT%H%M%S')}.json"
    path.write_text(json.dumps(results, indent=2, default=str), encoding="utf-8")
    results["written_to"] = str(path)
    return results


def _stages(as_of: date, trials: int, timeout_s: int, algorithms: list[str] | None) -> dict[str, Any]:
    import sqlalchemy as sa

    from clinicflow import db
    from features.build import run_features_stage
    from pipelines.ingest import ingest
    from training.dataset import load_training_data, model_inputs
    from training.models import LightGBMLearner, LogisticLearner
    from training.stage import run_training

    out: dict[str, Any] = {}
    t0 = time.perf_counter()
    loaded = ingest(SOURCE, as_of, run_id="bench-train")
    out["ingest_seconds"] = round(time.perf_counter() - t0, 1)
    with db.get_engine().connect() as conn:
        outcomes = conn.execute(sa.text(
            "SELECT count(*) FROM core.appointment WHERE status IN ('arrived', 'fulfilled', 'noshow')")).scalar()
    out["core_appointments"] = loaded["core"]["appointment"]["inserted"]
    out["appointments_with_outcome"] = int(outcomes)

    stages: dict[str, Any] = {}
    summary_features: dict[str, Any] = {}
    with measure(stages, "features", int(outcomes)):
        summary_features = run_features_stage(as_of)
    overrides: dict[str, Any] = {"trials": trials, "timeout_s": timeout_s}
    if algorithms:
        overrides["algorithms"] = algorithms
    summary: dict[str, Any] = {}
    with measure(stages, "training", int(outcomes)):
        summary = run_training(as_of, overrides=overrides, force=True)
    data = load_training_data(as_of, 730)
    X = model_inputs(data.frame)
    baselines: dict[str, Any] = {}
    with measure(baselines, "lightgbm_single_fit", len(X)):
        LightGBMLearner().fit(X, data.y)
    with measure(baselines, "lead_only_fit", len(X)):
        LogisticLearner({"C": 1.0, "bins": 0}).fit(X[["lead_days"]], data.y)
    out.update({
        "stages": stages, "baselines": baselines, "features_summary": summary_features,
        "training_summary": summary, "training_rows": len(X),
        "ratios": {
            "training_vs_single_lightgbm_fit": round(stages["training"]["seconds"]
                                                     / baselines["lightgbm_single_fit"]["seconds"], 1),
            "features_vs_single_lightgbm_fit": round(stages["features"]["seconds"]
                                                     / baselines["lightgbm_single_fit"]["seconds"], 1),
        },
        "target_seconds": TARGET_SECONDS,
        "within_target": stages["training"]["seconds"] <= TARGET_SECONDS,
    })
    return out


def print_report(r: dict[str, Any]) -> None:
    s, b = r["stages"], r["baselines"]
    t = r["training_summary"]
    print(f"\nTraining benchmark: {r['core_appointments']:,} generated appointments in core "
          f"({r['appointments_with_outcome']:,} with an outcome; {r['training_rows']:,} training rows), "
          f"{r['trials']} Optuna trials, {r['cpu_count']} CPU(s)")
    print(f"  features (back-fill + horizon) {s['features']['seconds']:>8.1f}s  "
          f"peak +{s['features']['peak_mib']:.0f} MiB")
    print(f"  training (full retraining)     {s['training']['seconds']:>8.1f}s  "
          f"peak +{s['training']['peak_mib']:.0f} MiB  -> {t.get('algorithm')} v{t.get('model_version')}, "
          f"gate AUC {t.get('gate_auc')}")
    print(f"  baseline: one LightGBM fit     {b['lightgbm_single_fit']['seconds']:>8.1f}s  peak "
          f"+{b['lightgbm_single_fit']['peak_mib']:.0f} MiB")
    print(f"  baseline: lead-only LR fit     {b['lead_only_fit']['seconds']:>8.1f}s")
    print(f"  ratio training / one LightGBM fit: {r['ratios']['training_vs_single_lightgbm_fit']}x; "
          f"target ≤ {r['target_seconds'] // 60} min: {'met' if r['within_target'] else 'NOT met'}")
    print(f"results: {r['written_to']}")


def _cmd(args: argparse.Namespace) -> int:
    algorithms = [a.strip() for a in args.algorithms.split(",")] if args.algorithms else None
    results = run(args.appointments, trials=args.trials, timeout_s=args.timeout, algorithms=algorithms,
                  keep=args.keep)
    print_report(results)
    return 0


def add_parser(bench: argparse._SubParsersAction) -> None:
    p = bench.add_parser("train", help="full retraining time and peak memory on N generated appointments",
                         description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--appointments", type=int, default=1_000_000)
    p.add_argument("--trials", type=int, default=30)
    p.add_argument("--timeout", type=int, default=900, help="Optuna time budget in seconds")
    p.add_argument("--algorithms", help="comma-separated subset (default CLINICFLOW_TRAIN_ALGORITHMS)")
    p.add_argument("--keep", action="store_true", help="keep the benchmark databases")
    p.set_defaults(handler=_cmd)
