"""Real-data benchmark: the public Vitória no-show data (../shared/data/noshow-vitoria-2016).

    clinicflow bench vitoria [--path FILE] [--test-days 11] [--trials 30]

A backtest on real appointments, honest by construction:

1. the file is loaded with the real CSV connector and loader into a database of its own (isolated from
   the warehouse, dropped at the end);
2. every algorithm is trained as of the cut-off (the first day of the test window) with only what was
   known then: appointments before the cut-off, with their outcomes, features as of each one's own day;
3. every appointment of the last ``--test-days`` days of the file is scored as the nightly run of the night
   before its day would have: features from what was known at the start of its day (a patient's earlier
   no-shows count, the outcome of the same-day sibling does not), plus its own booking record;
4. per algorithm: AUC, PR-AUC and Brier on all test appointments and on those booked at least a day
   ahead (what a nightly run can score), beside a lead-time-only logistic regression fitted in the same
   run and the published leak-free anchors (LightGBM with a temporal split: AUC 0.728; lead time
   alone: about 0.69).

Skips with a clear message when the data is absent. Results go to ``<CLINICFLOW_HOME>/bench/``.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import logging
import os
import time
from datetime import date, timedelta
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

DEFAULT_PATH = Path(__file__).resolve().parents[2] / "shared" / "data" / "noshow-vitoria-2016" / \
    "appointments_2016-04-29_to_2016-05-31.csv.gz"
SHA256 = "3b6aa70c0d40219f97f121c182d56097782b9529e88bb7bffa02eb122fad3926"
ANCHORS = {"LightGBM, temporal split (published)": 0.728, "lead time alone (published)": 0.69}
TARGET_AUC = 0.76


def _default_path() -> Path:
    env = os.environ.get("CLINICFLOW_VITORIA_CSV")
    return Path(env) if env else DEFAULT_PATH


def _checksum(path: Path) -> str:
    digest = hashlib.sha256()
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _last_day(path: Path) -> date:
    import pandas as pd

    days = pd.read_csv(path, usecols=["AppointmentDay"])["AppointmentDay"]
    return pd.to_datetime(days).dt.date.max()


def run(path: Path, test_days: int = 11, trials: int = 30, timeout_s: int = 600,
        algorithms: list[str] | None = None) -> dict[str, Any]:
    from clinicflow.settings import SourceConfig, get_settings
    from features.build import build_features, build_training_features
    from pipelines.ingest import ingest
    from training.backtest import _window_keys, adapt_windows, isolated_warehouse, metrics_of
    from training.dataset import load_training_data
    from training.trainer import ALGORITHMS, BASELINE, TrainConfig, train

    started = time.perf_counter()
    checksum = _checksum(path)
    if checksum != SHA256:
        log.warning("vitoria: %s has sha256 %s, not the documented %s: figures are not comparable", path,
                    checksum[:12], SHA256[:12])
    last = _last_day(path)
    cutoff = last - timedelta(days=test_days - 1)
    source = SourceConfig(name="vitoria", kind="csv", format="vitoria", path=path.resolve())
    config = TrainConfig.from_settings(get_settings(), {
        "algorithms": algorithms or list(ALGORITHMS), "trials": trials, "timeout_s": timeout_s, "final_all": True})
    timings: dict[str, float] = {}
    with isolated_warehouse(source) as target:
        import pandas as pd

        from clinicflow import db

        t0 = time.perf_counter()
        ingest(source.name, last + timedelta(days=1), run_id="bench-vitoria")
        timings["ingest"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        build_training_features(cutoff, sources=[source.name], country="BR-ES")
        keys = _window_keys(db.get_engine(), source.name, cutoff, last)
        frame = build_features(cutoff, appointments=keys, country="BR-ES")
        timings["features"] = time.perf_counter() - t0
        data = load_training_data(cutoff, 3650)
        config = adapt_windows(config, (cutoff - data.days.min()).days)
        t0 = time.perf_counter()
        result = train(data, config, storage_url=None, study_prefix="bench-vitoria")
        timings["training"] = time.perf_counter() - t0
        outcomes = pd.read_sql(
            "SELECT appointment_id, status FROM core.appointment WHERE source = 'vitoria'", db.get_engine())
        frame = frame.merge(outcomes, on="appointment_id")
        frame["outcome"] = frame["status"].map({"noshow": "noshow", "fulfilled": "attended",
                                                "arrived": "attended"}).fillna("unknown")
        rows: dict[str, Any] = {}
        for name, model in result.final_models.items():
            scores = pd.DataFrame({"lead_days": frame["lead_days"], "outcome": frame["outcome"],
                                   "probability": model.predict_proba(frame)})
            rows[name] = {k: {m: v[m] for m in ("n", "noshow_rate", "mean_prediction", "auc", "pr_auc", "brier",
                                                      "log_loss", "ece")}
                          for k, v in metrics_of(scores).items()}
        database = db.mask(target)
    lead_only = rows[BASELINE]
    return {
        "path": str(path), "sha256_ok": checksum == SHA256, "cutoff": cutoff.isoformat(), "last_day": last.isoformat(),
        "test_days": test_days, "n_train": len(data.frame), "train_first_day": str(data.days.min()),
        "chosen_on_validation": result.best, "windows": {"gate": str(result.gate),
                                                          "folds": [f.describe() for f in result.folds]},
        "algorithms": rows, "anchors": ANCHORS, "target_auc": TARGET_AUC,
        "gain_over_lead_only_lead_ge_1": {
            name: r["lead>=1"]["auc"] - lead_only["lead>=1"]["auc"] for name, r in rows.items() if name != BASELINE},
        "tuning": {k: {"trials": v.trials, "value": v.value, "params": v.params} for k, v in result.tuning.items()},
        "timings": {k: round(v, 1) for k, v in {**timings, "total": time.perf_counter() - started}.items()},
        "database": database, "cpu_count": os.cpu_count(),
    }


def print_report(r: dict[str, Any]) -> None:
    print(f"\nVitória 2016, real appointments: trained as of {r['cutoff']} on {r['n_train']:,} appointments "
          f"({r['train_first_day']}…), test window {r['cutoff']}…{r['last_day']} (last {r['test_days']} days)")
    print(f"{'model':<22}{'n':>7}{'AUC':>8}{'PR-AUC':>8}{'Brier':>8}{'ECE':>7}{'mean p':>8}   {'n(lead≥1)':>10}"
          f"{'AUC':>8}{'PR-AUC':>8}{'Brier':>8}{'ECE':>7}")
    for name, m in r["algorithms"].items():
        a, b = m["all"], m["lead>=1"]
        label = name + (" *" if name == r["chosen_on_validation"] else "")
        print(f"{label:<22}{int(a['n']):>7,}{a['auc']:>8.4f}{a['pr_auc']:>8.4f}{a['brier']:>8.4f}{a['ece']:>7.3f}"
              f"{a['mean_prediction']:>8.3f}   {int(b['n']):>10,}{b['auc']:>8.4f}{b['pr_auc']:>8.4f}{b['brier']:>8.4f}"
              f"{b['ece']:>7.3f}")
    first = next(iter(r["algorithms"].values()))["all"]
    print(f"observed no-show rate on the test window: {first['noshow_rate']:.3f} (all), "
          f"{next(iter(r['algorithms'].values()))['lead>=1']['noshow_rate']:.3f} (lead ≥ 1); ECE: expected "
          "calibration error over 10 probability bins")
    for name, auc in r["anchors"].items():
        print(f"{name:<40} AUC {auc:.3f} (all test appointments)")
    best = max((n for n in r["algorithms"] if n != "lead_only"), key=lambda n: r["algorithms"][n]["all"]["auc"])
    print(f"* chosen on the validation folds. Best on the test window: {best} "
          f"(AUC {r['algorithms'][best]['all']['auc']:.4f}; target {r['target_auc']}); "
          f"gain over lead time only on lead ≥ 1: "
          + ", ".join(f"{n} {g:+.4f}" for n, g in r["gain_over_lead_only_lead_ge_1"].items()))
    print(f"timings: {r['timings']} (cpu_count {r['cpu_count']})")
    if not r["sha256_ok"]:
        print("WARNING: the file's checksum differs from the README's: figures are not comparable")


def _cmd(args: argparse.Namespace) -> int:
    from clinicflow.settings import get_settings

    path = Path(args.path) if args.path else _default_path()
    if not path.is_file():
        print(f"SKIPPED: the Vitória data is not at {path} (set --path or CLINICFLOW_VITORIA_CSV); "
              "see ../shared/data/noshow-vitoria-2016/README.md")
        return 0
    algorithms = [a.strip() for a in args.algorithms.split(",")] if args.algorithms else None
    results = run(path, test_days=args.test_days, trials=args.trials, timeout_s=args.timeout, algorithms=algorithms)
    print_report(results)
    out = get_settings().home / "bench"
    out.mkdir(parents=True, exist_ok=True)
    target = out / f"vitoria-{time.strftime('%Y%m%dT%H%M%S')}.json"
    target.write_text(json.dumps(results, indent=2, default=str), encoding="utf-8")
    print(f"results: {target}")
    return 0


def add_parser(bench: argparse._SubParsersAction) -> None:
    p = bench.add_parser("vitoria", help="real-data backtest on the public Vitória no-show data (skips if absent)",
                         description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--path", help=f"the CSV (default {DEFAULT_PATH} or CLINICFLOW_VITORIA_CSV)")
    p.add_argument("--test-days", type=int, default=11, help="last N calendar days of the file are the test window")
    p.add_argument("--trials", type=int, default=30, help="Optuna trials (shared by the algorithms)")
    p.add_argument("--timeout", type=int, default=600, help="Optuna time budget in seconds")
    p.add_argument("--algorithms", help="comma-separated subset (default: all six)")
    p.set_defaults(handler=_cmd)
