"""Scoring benchmark: N booked appointments scored end to end (features, model, reasons, DB write).

    clinicflow bench score [--appointments 1000000]

1. Set-up (not timed): a fresh warehouse ``<warehouse>_bench_score`` with a generated clinic network
   written by COPY — ``--appointments`` booked appointments in the horizon (28 days, so that a
   network of about 1,900 doctors holds a million), three weeks of history with outcomes for 400
   doctors, slot grids, patients — then a LightGBM champion trained and registered in the MLflow store
   next to it (``<warehouse>_bench_score_mlflow``) by the real training stage. A warm-up run of the
   stage as of the week before (not timed, reported): the first run after an install compiles the
   numba kernels (cached on disk for every later process), a one-time cost of about 11 s here.
2. Timed: the real scoring stage ``run_scoring``: point-in-time features of every booked appointment
   computed in the scoring process (the as-of engine, :mod:`features.asof`) and stored in
   ``features.appointment_features`` in the background, probabilities from ``models:/noshow@champion``,
   SHAP contributions and the three reasons in plain words for every appointment
   (``--reasons-min-band``, default low = all), and the COPY of ``reporting.appointment_risk`` (the
   date's rows replaced in one transaction) while the next batch is scored. Seconds and rows/s per
   phase and step, peak memory, the machine's load.
3. Baselines in the same run: the model alone (``pyfunc.predict`` on the same feature rows, no reasons,
   no database); on a sample of ``--reasons-sample`` rows, the model's own contributions
   (``model.contributions``: LightGBM ``pred_contrib`` / XGBoost ``pred_contribs`` / the shap package)
   against the fast exact TreeSHAP the stage uses (:mod:`scoring.treeshap`), with their largest
   difference; and ``DataFrame.to_sql`` of the same risk rows (on a sample) against the stage's COPY
   write.

``--planner-workaround`` sets ``enable_mergejoin = off`` on the whole benchmark database; kept to compare
with runs of older versions, whose features SQL ran merge joins on ``source`` alone (quadratic). The
current features do not need it.

Target: ≥ 50,000 appointments/s end to end. Printed and written to
``<CLINICFLOW_HOME>/bench/score-<timestamp>.json``; the database is dropped unless ``--keep``.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import time
from datetime import date, timedelta
from typing import Any

import numpy as np

from benchmarks.ingest import measure

log = logging.getLogger(__name__)

SOURCE = "bench_score"
HORIZON_DAYS = 28
SLOTS_PER_DAY = 30
FILL = 0.9
#: appointments/s end to end (issue 5)
TARGET = 50_000


def _weekdays(first: date, days: int) -> list[date]:
    return [first + timedelta(days=k) for k in range(days) if (first + timedelta(days=k)).weekday() < 5]


def generate(n: int, as_of: date, seed: int = 5) -> dict[str, Any]:
    """Frames of the generated network (pandas), ready for COPY into core."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    horizon_days = _weekdays(as_of, HORIZON_DAYS)
    doctors = int(np.ceil(n / (len(horizon_days) * SLOTS_PER_DAY * FILL)))
    history_doctors = min(doctors, 400)
    history_days = _weekdays(as_of - timedelta(days=21), 21)
    patients = max(1000, n // 4)
    birth = rng.integers(1940, 2020, patients)
    propensity = rng.normal(0, 1, patients)

    def block(days: list[date], n_doctors: int, booked_only: bool, start_id: int) -> pd.DataFrame:
        grid_days = np.repeat(np.array(days, dtype="datetime64[D]"), n_doctors * SLOTS_PER_DAY)
        doctor = np.tile(np.repeat(np.arange(n_doctors), SLOTS_PER_DAY), len(days))
        slot = np.tile(np.arange(SLOTS_PER_DAY), len(days) * n_doctors)
        keep = rng.random(grid_days.size) < FILL
        grid_days, doctor, slot = grid_days[keep], doctor[keep], slot[keep]
        m = grid_days.size
        start = grid_days.astype("datetime64[m]") + np.timedelta64(8 * 60, "m") + (slot * 20).astype("timedelta64[m]")
        lead = np.where(rng.random(m) < 0.25, 0, rng.exponential(10, m).astype(int) + 1)
        booked = start - lead.astype("timedelta64[D]") - rng.integers(60, 600, m).astype("timedelta64[m]")
        if booked_only:  # the horizon's bookings were all made before the as-of date
            latest = np.datetime64(as_of, "m") - rng.integers(30, 60 * 24 * 20, m).astype("timedelta64[m]")
            booked = np.minimum(booked, latest)
        patient = rng.integers(0, patients, m)
        reminder = (lead >= 2) & (rng.random(m) < 0.7)
        logit = -2.0 + 0.04 * np.minimum(lead, 40) + 0.9 * propensity[patient] - 0.5 * reminder
        status = np.where(rng.random(m) < 1 / (1 + np.exp(-logit)), "noshow", "fulfilled")
        if booked_only:
            status = np.full(m, "booked")
        return pd.DataFrame({
            "source": SOURCE, "appointment_id": (start_id + np.arange(m)).astype(str),
            "patient_key": np.char.add("p", patient.astype(str)), "resource_id": np.char.add("d", doctor.astype(str)),
            "practitioner_id": np.char.add("d", doctor.astype(str)),
            "department_id": np.char.add("dep", (doctor % 20).astype(str)),
            "branch_id": np.char.add("b", (doctor % 50).astype(str)),
            "service_id": np.char.add("s", (slot % 4).astype(str)),
            "start_at": start, "duration_min": 20, "booked_at": booked, "channel": np.where(slot % 3, "phone", "web"),
            "confirmed": rng.random(m) < 0.6, "reminder_sent": reminder, "status": status,
            "status_changed_at": start, "as_of": as_of, "load_batch_id": 0,
        })

    history = block(history_days, history_doctors, False, 1)
    horizon = block(horizon_days, doctors, True, 10_000_000)
    horizon = horizon.iloc[:n]
    appointments = pd.concat([history, horizon], ignore_index=True)
    slot_rows = []
    for days, k in ((history_days, history_doctors), (horizon_days, doctors)):
        d = np.repeat(np.array(days, dtype="datetime64[D]"), k * SLOTS_PER_DAY).astype("datetime64[m]")
        doc = np.tile(np.repeat(np.arange(k), SLOTS_PER_DAY), len(days))
        s = np.tile(np.arange(SLOTS_PER_DAY), len(days) * k)
        slot_rows.append(pd.DataFrame({"source": SOURCE, "resource_id": np.char.add("d", doc.astype(str)),
                                       "start_at": d + np.timedelta64(8 * 60, "m") + (s * 20).astype("timedelta64[m]"),
                                       "duration_min": 20, "no_overbook": False}))
    slots = pd.concat(slot_rows, ignore_index=True).drop_duplicates(["resource_id", "start_at"])
    patient_frame = pd.DataFrame({"source": SOURCE, "patient_key": np.char.add("p", np.arange(patients).astype(str)),
                                  "sex": rng.choice(["F", "M"], patients), "birth_year": birth,
                                  "flags": [f'{{"welfare": {int(x)}}}' for x in (rng.random(patients) < 0.15)]})
    return {"appointments": appointments, "slots": slots, "patients": patient_frame, "doctors": doctors,
            "history_rows": len(history), "horizon_rows": len(horizon)}


def _copy(engine, table: str, frame) -> None:
    buf = io.StringIO()
    frame.to_csv(buf, index=False, header=False, na_rep="\\N")
    buf.seek(0)
    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        cursor.copy_expert(f"COPY {table} ({', '.join(frame.columns)}) FROM STDIN WITH (FORMAT csv, NULL '\\N')", buf)
        raw.commit()
    finally:
        raw.close()


def run(appointments: int = 1_000_000, keep: bool = False, reasons_min_band: str = "low",
        planner_workaround: bool = False, reasons_sample: int = 20_000, reuse: bool = False) -> dict[str, Any]:
    import sqlalchemy as sa

    from clinicflow import db
    from clinicflow.settings import load_settings

    as_of = date(2026, 6, 1)
    warehouse = db.url_for("warehouse")
    bench_url = warehouse.set(database=f"{warehouse.database}_bench_score")
    admin = sa.create_engine(warehouse.set(database="postgres"), isolation_level="AUTOCOMMIT",
                             poolclass=sa.pool.NullPool)
    with admin.connect() as conn:
        exists = conn.execute(sa.text("SELECT 1 FROM pg_database WHERE datname = :n"),
                              {"n": bench_url.database}).scalar() is not None
    reuse = reuse and exists
    keep = keep or reuse
    if not reuse:
        for name in (bench_url.database, f"{bench_url.database}_mlflow"):
            with admin.connect() as conn:
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    settings = load_settings(database_url=bench_url.render_as_string(hide_password=False), horizon_days=HORIZON_DAYS,
                             mlflow_tracking_uri=None, reasons_min_band=reasons_min_band)
    results: dict[str, Any] = {"appointments": appointments, "as_of": as_of.isoformat(), "cpu_count": os.cpu_count(),
                               "reasons_min_band": reasons_min_band, "planner_workaround": planner_workaround}
    try:
        if reuse:  # what a --keep run left: the same data and champion, no set-up
            engine = db.get_engine("warehouse", settings)
            results["setup"] = _reused(settings, engine)
        else:
            results["setup"] = _setup(appointments, as_of, bench_url, admin, settings, planner_workaround)
            engine = db.get_engine("warehouse", settings)
        results["appointments"] = results["setup"]["horizon_rows"]
        with engine.connect() as conn:  # as the database is set (a reused one keeps its setting)
            results["planner_workaround"] = conn.execute(sa.text("SHOW enable_mergejoin")).scalar() == "off"
        results["warm_up"] = _warm_up(as_of, settings)
        load_before = os.getloadavg()[0]
        results["stage"] = _timed_scoring(as_of, settings, results["appointments"])
        results["load_average"] = f"{load_before:.1f}/{os.getloadavg()[0]:.1f}"
        results["baselines"] = _baselines(as_of, settings, engine)
        results["reasons"] = _reasons(as_of, settings, engine, reasons_sample)
        results["ratios"] = {
            "end_to_end_vs_model_only": round(results["stage"]["end_to_end"]["rows_per_s"]
                                              / results["baselines"]["model_only"]["rows_per_s"], 3),
            "copy_write_vs_to_sql": round(results["stage"]["write_rows_per_s"]
                                          / results["baselines"]["to_sql"]["rows_per_s"], 1),
        }
        out = settings.home / "bench"
        out.mkdir(parents=True, exist_ok=True)
        path = out / f"score-{time.strftime('%Y%m%d-%H%M%S')}.json"
        path.write_text(json.dumps(results, indent=2, default=str))
        results["written_to"] = str(path)
    finally:
        db.dispose_engines()
        if not keep:
            for name in (bench_url.database, f"{bench_url.database}_mlflow", f"{bench_url.database}_optuna"):
                with admin.connect() as conn:
                    conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
    return results


def _setup(appointments: int, as_of: date, bench_url, admin, settings, planner_workaround: bool) -> dict[str, Any]:
    """A fresh warehouse with the generated network and a LightGBM champion (not timed)."""
    import sqlalchemy as sa

    from clinicflow import db, migrations

    t0 = time.perf_counter()
    migrations.upgrade(bench_url)
    if planner_workaround:
        with admin.connect() as conn:
            conn.execute(sa.text(f'ALTER DATABASE "{bench_url.database}" SET enable_mergejoin = off'))
    engine = db.get_engine("warehouse", settings)
    data = generate(appointments, as_of)
    _copy(engine, "core.appointment", data["appointments"])
    _copy(engine, "core.slot", data["slots"])
    _copy(engine, "core.patient", data["patients"])
    with engine.begin() as conn:
        conn.execute(sa.text("ANALYZE core.appointment"))
        conn.execute(sa.text("ANALYZE core.slot"))
    setup: dict[str, Any] = {"doctors": data["doctors"], "history_rows": data["history_rows"],
                             "horizon_rows": data["horizon_rows"],
                             "generate_and_copy_s": round(time.perf_counter() - t0, 1)}
    t0 = time.perf_counter()
    from features import build_training_features
    from training.stage import run_training

    build_training_features(as_of, settings=settings, engine=engine)
    trained = run_training(as_of, settings=settings, force=True, overrides={
        "algorithms": ["lightgbm"], "trials": 0, "folds": 2, "fold_days": 3, "embargo_days": 0, "gate_days": 3})
    setup["train_s"] = round(time.perf_counter() - t0, 1)
    setup["model_version"] = trained.get("model_version")
    return setup


def _reused(settings, engine) -> dict[str, Any]:
    import sqlalchemy as sa

    from scoring.stage import load_champion

    with engine.connect() as conn:
        doctors, horizon_rows = conn.execute(sa.text(
            "SELECT count(DISTINCT practitioner_id), count(*) FROM core.appointment WHERE status = 'booked'")).one()
    return {"reused": True, "doctors": doctors, "horizon_rows": horizon_rows, "generate_and_copy_s": 0, "train_s": 0,
            "model_version": load_champion(settings).version}


#: days before the timed as-of date of the warm-up run's as-of date (its rows do not overlap the timed run's)
WARM_UP_DAYS = 7


def _warm_up(as_of: date, settings) -> dict[str, Any]:
    """Not timed: the scoring stage once as of a week earlier, over one week (the generated history's
    bookings): it compiles the numba kernels of TreeSHAP, the reasons and the COPY encoder on the first
    run after an install (numba caches them on disk; later processes load them), which a nightly task
    pays once per installation, not per night. Its rows have another as-of date, so the timed run
    neither deletes nor replaces them."""
    from scoring.stage import run_scoring

    started = time.perf_counter()
    summary = run_scoring(as_of - timedelta(days=WARM_UP_DAYS),
                          settings=settings.model_copy(update={"horizon_days": WARM_UP_DAYS}))
    return {"as_of": (as_of - timedelta(days=WARM_UP_DAYS)).isoformat(), "rows": summary["appointments_scored"],
            "seconds": round(time.perf_counter() - started, 2)}


def _timed_scoring(as_of: date, settings, n: int) -> dict[str, Any]:
    from scoring.stage import run_scoring

    stage: dict[str, Any] = {}
    with measure(stage, "end_to_end", n):
        summary = run_scoring(as_of, settings=settings)
    scored = summary["appointments_scored"]
    stage["end_to_end"]["rows"] = scored
    stage["end_to_end"]["rows_per_s"] = round(scored / stage["end_to_end"]["seconds"])
    stage["summary"] = summary
    for phase, key in (("features", "seconds_features"), ("predict_and_reasons", "seconds_predict_and_reasons"),
                       ("write", "seconds_write")):
        stage[f"{phase}_rows_per_s"] = round(scored / max(summary[key], 1e-9))
    return stage


def _baselines(as_of: date, settings, engine) -> dict[str, Any]:
    import pandas as pd
    import sqlalchemy as sa

    from features import load_features
    from scoring.stage import load_champion

    champion = load_champion(settings)
    frame = load_features(as_of=as_of, settings=settings, engine=engine)
    out: dict[str, Any] = {}
    with measure(out, "model_only", len(frame)):
        champion.pyfunc.predict(frame)
    with engine.connect() as conn:
        sample = pd.read_sql(sa.text("SELECT * FROM reporting.appointment_risk LIMIT 100000"), conn)
    with measure(out, "to_sql", len(sample)):
        sample.to_sql("risk_to_sql", engine, schema="staging", if_exists="replace", index=False, chunksize=10_000,
                      method="multi")
    return out


def _reasons(as_of: date, settings, engine, sample: int) -> dict[str, Any]:
    """On a sample: the model's own contributions against the fast TreeSHAP, and the words."""
    from features import load_features
    from scoring.reasons import Explainer
    from scoring.stage import load_champion
    from scoring.treeshap import ModelExplainer

    champion = load_champion(settings)
    frame = load_features(as_of=as_of, settings=settings, engine=engine)
    frame = frame.sample(n=min(sample, len(frame)), random_state=0)
    inputs = champion.model.inputs(frame)
    t0 = time.perf_counter()
    native = champion.model.contributions(inputs)
    native_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    explainer = champion.explainer  # its tables read from the model's artifact (built at training)
    tables_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    ModelExplainer(champion.model)   # what building them costs
    built_s = time.perf_counter() - t0
    explainer.contributions(inputs.head(100))  # compiled (numba caches it on disk)
    t0 = time.perf_counter()
    fast = explainer.contributions(inputs)
    fast_s = time.perf_counter() - t0
    gap = float(np.abs(fast - native.reindex(columns=[*explainer.features, "bias"]).to_numpy()).max())
    t0 = time.perf_counter()
    Explainer(settings.reasons_language).top_reasons_of(fast[:, :-1], explainer.features, frame)
    words_s = time.perf_counter() - t0
    return {"sample": len(frame), "algorithm": champion.model.algorithm,
            "native_rows_per_s": round(len(frame) / native_s), "fast_rows_per_s": round(len(frame) / fast_s),
            "speed_up": round(native_s / fast_s, 1), "max_abs_difference": gap, "tables_s": round(tables_s, 2),
            "tables_built_s": round(built_s, 2),
            "words_rows_per_s": round(len(frame) / max(words_s, 1e-9))}


def _steps(summary: dict[str, Any], phase: str) -> str:
    return ", ".join(f"{k} {v:.1f}s" for k, v in summary.get("seconds_steps", {}).get(phase, {}).items())


def format_report(r: dict[str, Any]) -> str:
    s, b = r["stage"], r["baselines"]
    e = s["end_to_end"]
    summary = s["summary"]
    reasons = r["reasons"]
    load = r.get("load_average")
    other = e["seconds"] - sum(summary[k] for k in ("seconds_features", "seconds_predict_and_reasons",
                                                     "seconds_write"))
    return "\n".join([
        f"scoring benchmark: {e['rows']:,} booked appointments ({r['setup']['doctors']:,} doctors, "
        f"{HORIZON_DAYS}-day horizon), model noshow v{r['setup']['model_version']} ({reasons['algorithm']}), "
        f"{r['cpu_count']} CPUs (load average before/after {load}); reasons for band >= {r['reasons_min_band']}; "
        f"planner workaround {'ON (enable_mergejoin=off)' if r['planner_workaround'] else 'off'}",
        f"  end to end:          {e['seconds']:.1f}s = {e['rows_per_s']:,} appointments/s, "
        f"peak +{e['peak_mib']:.0f} MiB = {e['rows_per_s'] / TARGET:.2f}x the {TARGET:,}/s target "
        f"({'MET' if e['rows_per_s'] >= TARGET else 'NOT MET'})",
        f"    features:          {summary['seconds_features']:.1f}s = {s['features_rows_per_s']:,}/s  "
        f"({_steps(summary, 'features')})",
        f"    model + reasons:   {summary['seconds_predict_and_reasons']:.1f}s = "
        f"{s['predict_and_reasons_rows_per_s']:,}/s  ({_steps(summary, 'predict_and_reasons')})",
        f"    write:             {summary['seconds_write']:.1f}s = {s['write_rows_per_s']:,}/s  "
        f"({_steps(summary, 'write')})",
        f"    other (model load, names, summary): {other:.1f}s",
        f"  baseline, model only (pyfunc.predict, no reasons, no DB): {b['model_only']['rows_per_s']:,}/s "
        f"(end to end is {r['ratios']['end_to_end_vs_model_only']:.2f}x of it)",
        f"  SHAP on a sample of {reasons['sample']:,}: the model's own contributions "
        f"{reasons['native_rows_per_s']:,}/s, "
        f"fast exact TreeSHAP {reasons['fast_rows_per_s']:,}/s ({reasons['speed_up']}x; largest difference "
        f"{reasons['max_abs_difference']:.1e}; tables read from the model's artifact in {reasons['tables_s']}s, "
        f"built in {reasons['tables_built_s']}s); words "
        f"{reasons['words_rows_per_s']:,}/s",
        f"  baseline, DataFrame.to_sql of the risk rows: {b['to_sql']['rows_per_s']:,}/s (COPY write is "
        f"{r['ratios']['copy_write_vs_to_sql']:.1f}x faster)",
        "  set-up: reused the databases of an earlier --keep run" if r["setup"].get("reused") else
        f"  set-up (not timed): generate+COPY {r['setup']['generate_and_copy_s']}s, training {r['setup']['train_s']}s",
        f"  warm-up (not timed): the stage as of {r['warm_up']['as_of']}, {r['warm_up']['rows']:,} rows in "
        f"{r['warm_up']['seconds']}s (numba kernels compiled on a first run after an install, else loaded from "
        "numba's cache)",
    ])


def cmd_score(args: argparse.Namespace) -> int:
    result = run(appointments=args.appointments, keep=args.keep, reasons_min_band=args.reasons_min_band,
                 planner_workaround=args.planner_workaround, reasons_sample=args.reasons_sample, reuse=args.reuse)
    print(format_report(result))
    print(f"\nwritten to {result.get('written_to')}")
    return 0


def add_parser(bench: argparse._SubParsersAction) -> None:
    p = bench.add_parser("score", help="scoring throughput on N generated appointments (features, model, reasons, "
                         "DB write)", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--appointments", type=int, default=1_000_000, help="booked appointments to score (default 1M)")
    p.add_argument("--keep", action="store_true", help="keep the benchmark databases afterwards")
    p.add_argument("--reuse", action="store_true", help="score the databases a --keep run left (same data and "
                   "champion, set-up skipped, --appointments ignored); they are kept again")
    p.add_argument("--reasons-min-band", choices=["low", "medium", "high", "none"], default="low",
                   help="lowest band with reasons in the timed run (default low: every appointment)")
    p.add_argument("--reasons-sample", type=int, default=20_000,
                   help="rows on which the model's own contributions and the fast TreeSHAP are compared")
    p.add_argument("--planner-workaround", action="store_true",
                   help="set enable_mergejoin=off on the whole benchmark database (not needed any more: the "
                   "features build sets it for its statement)")
    p.set_defaults(handler=cmd_score)
