"""``clinicflow backtest``: replay the nightly runs over past days and see how the model would have done.

1. The source is loaded with the normal loader (pseudonymised, validated) into a database of its own
   (``<warehouse>_backtest_<id>`` on the same server, the embedded one by default), never into the
   production tables; it is dropped at the end unless ``--keep``.
2. A model is trained as of ``--start`` with only what was known then: appointments before the start
   and their outcomes, features as of each one's own day (``--retrain-every N`` retrains inside the
   window every N days, each time with only what was known then; off by default).
3. Every appointment of a day D in [start, end] is scored as the nightly run of the night before D
   would have scored it: features from what was known at the start of D, plus its own booking record
   (a same-day booking as at the moment it was booked).
4. One CSV row per scored appointment; AUC, PR-AUC, Brier and calibration are printed where outcomes
   exist, for all appointments and for those booked at least a day ahead (the ones a nightly run can
   score).

An outcome on day D or later changes no probability of an appointment on day D or earlier, nor the
model trained as of the start: see tests/training/test_backtest.py, which blanks outcomes and compares.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa

from clinicflow import db, migrations
from clinicflow.errors import ClinicFlowError, ConfigError
from clinicflow.logs import timed
from clinicflow.settings import SourceConfig, environment, get_settings
from training.metrics import evaluate
from training.trainer import TrainConfig, TrainResult, train

log = logging.getLogger(__name__)

#: ``--source`` shorthands for exports given with ``--path`` (or ``--url`` for Medialog).
SOURCE_KINDS: dict[str, dict[str, Any]] = {
    "vitoria-csv": {"name": "vitoria", "kind": "csv", "format": "vitoria", "country": "BR-ES"},
    "csv": {"name": "canonical", "kind": "csv", "format": "canonical"},
    "fhir": {"name": "fhir", "kind": "fhir"},
    "medialog": {"name": "medialog", "kind": "medialog"},
}
#: A backtest's default training budget: small, so that a backtest finishes within minutes.
DEFAULT_OVERRIDES = {"trials": 10, "timeout_s": 120}


@dataclass
class BacktestResult:
    scores: pd.DataFrame
    metrics: dict[str, dict[str, float]]
    models: list[dict[str, Any]]
    database: str
    seconds: float
    timings: dict[str, float] = field(default_factory=dict)
    train_results: list[TrainResult] = field(default_factory=list)


def resolve_source(source: str, path: Path | None, url: str | None, options: dict[str, Any]) -> tuple[SourceConfig,
                                                                                                       str | None]:
    """The SourceConfig of ``--source`` (a shorthand with --path/--url, or a configured source name)."""
    spec = SOURCE_KINDS.get(source)
    if spec is None:
        configured = get_settings().source(source)  # ConfigError naming the known sources
        return configured, None
    fields: dict[str, Any] = {"name": spec["name"], "kind": spec["kind"], "options": options}
    if spec["kind"] == "medialog":
        if not url:
            raise ConfigError("--source medialog needs --url (a read-only SQLAlchemy URL of the Medialog database)")
        fields["url"] = url
    else:
        if path is None:
            raise ConfigError(f"--source {source} needs --path (the export file or folder)")
        if not Path(path).exists():
            raise ConfigError(f"--path {path} does not exist")
        fields["path"] = Path(path).resolve()
        if "format" in spec:
            fields["format"] = spec["format"]
    return SourceConfig(**fields), spec.get("country")


def adapt_windows(config: TrainConfig, history_days: int) -> TrainConfig:
    """Shrink the validation windows when the history before the start is short (a month of data):
    the scheme stays the same (folds, embargo, a gate window), only shorter. Logged when it happens."""
    needed = config.gate_days + config.folds * config.fold_days + config.embargo_days + 7
    if history_days >= needed:
        return config
    gate = max(3, history_days // 5)
    fold = max(2, (history_days - gate) // (config.folds + 3))
    embargo = min(config.embargo_days, max(0, (history_days - gate - config.folds * fold) // 4), 1)
    adapted = config.with_overrides({"gate_days": gate, "fold_days": fold, "embargo_days": embargo})
    log.warning("backtest: only %d days of history before the start: validation windows shortened to a %d-day "
                "gate, %d folds of %d days, embargo %d day(s)", history_days, gate, config.folds, fold, embargo)
    return adapted


# --------------------------------------------------------------------------------------------------
# the isolated database


@contextlib.contextmanager
def isolated_warehouse(source: SourceConfig, *, database_url: str | None = None, keep: bool = False
                       ) -> Iterator[sa.URL]:
    """Run the block against a fresh, migrated database of its own with ``source`` as the only source.

    The process's settings point at it for the duration (the loader and the feature code read the
    warehouse from settings); everything is restored afterwards and the database dropped unless ``keep``.
    """
    base = get_settings()
    if database_url:
        url = sa.make_url(database_url).set(drivername="postgresql+psycopg2")
        if url.get_backend_name() != "postgresql" or not url.database:
            raise ConfigError(f"--database-url {db.mask(url)}: a PostgreSQL URL with a database name is needed")
    else:
        warehouse = db.url_for("warehouse", base)
        url = warehouse.set(database=f"{warehouse.database}_backtest_{os.getpid()}_{secrets.token_hex(2)}")
    if url.database == db.url_for("warehouse", base).database:
        raise ConfigError("the backtest database must not be the warehouse itself: choose another --database-url")
    _drop(url)
    db.ensure_database(url)
    source_json = source.model_dump(mode="json")
    if source.url is not None:
        source_json["url"] = source.url.get_secret_value()
    changes: dict[str, str | None] = {
        "CLINICFLOW_DATABASE_URL": url.render_as_string(hide_password=False),
        "CLINICFLOW_SOURCES": json.dumps([source_json]),
        "CLINICFLOW_HOME": str(base.home / "backtest"),
    }
    if base.pseudonym_secret is None:  # keys live and die in the throw-away database
        changes["CLINICFLOW_PSEUDONYM_SECRET"] = secrets.token_urlsafe(24)
    db.dispose_engines()
    try:
        with environment(changes):
            try:
                log.info("backtest database %s (isolated from the warehouse %s)", db.mask(url),
                         db.mask(db.url_for("warehouse", base)))
                migrations.upgrade(url)
                yield url
            finally:
                db.dispose_engines()
    finally:
        if keep:
            log.info("backtest database kept: %s", db.mask(url))
        else:
            _drop(url)


def _drop(url: sa.URL) -> None:
    admin = sa.create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{url.database}" WITH (FORCE)'))
    finally:
        admin.dispose()


# --------------------------------------------------------------------------------------------------
# the replay


def _window_keys(engine: sa.Engine, source: str, start: date, end: date) -> pd.DataFrame:
    """Appointments of days [start, end] that were still booked at the start of their day (or booked
    that day), each to be scored as of its own day."""
    with engine.connect() as conn:
        return pd.read_sql(sa.text(
            "SELECT source, appointment_id, start_at::date AS as_of FROM core.appointment "
            "WHERE source = :s AND start_at >= :start AND start_at < :end "
            "AND NOT (status IN ('cancelled_by_patient', 'cancelled_by_clinic', 'cancelled_unknown', 'rescheduled', "
            "'deleted') AND coalesce(status_changed_at, start_at) < start_at::date) "
            "ORDER BY start_at, appointment_id"
        ), conn, params={"s": source, "start": start, "end": end + timedelta(days=1)})


def _outcomes(engine: sa.Engine, source: str, ids: list[str]) -> pd.DataFrame:
    with engine.connect() as conn:
        frame = pd.read_sql(sa.text(
            "SELECT appointment_id, status, booked_at FROM core.appointment WHERE source = :s "
            "AND appointment_id = ANY(:ids)"), conn, params={"s": source, "ids": ids})
    return frame


def replay(source: SourceConfig, start: date, end: date, *, config: TrainConfig, country: str | None,
           retrain_every: int | None = None) -> tuple[pd.DataFrame, list[dict[str, Any]], list[TrainResult],
                                                      dict[str, float]]:
    """Inside the isolated warehouse: ingest, features, train as of start, score every day."""
    from features.build import build_features, build_training_features
    from pipelines.ingest import ingest
    from training.dataset import load_training_data

    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    summary = ingest(source.name, end + timedelta(days=1), run_id=f"backtest-{start}-{end}")
    timings["ingest"] = time.perf_counter() - t0
    log.info("backtest: loaded %s appointments (%s quarantined)", summary["staged"].get("appointment"),
             summary["quarantined"].get("appointment", 0))
    engine = db.get_engine()
    t0 = time.perf_counter()
    build_training_features(start, sources=[source.name], country=country)
    keys = _window_keys(engine, source.name, start, end)
    if keys.empty:
        raise ClinicFlowError(f"no appointments between {start} and {end} in {source.name}: check --start/--end")
    frame = build_features(start, appointments=keys, country=country)
    timings["features"] = time.perf_counter() - t0
    frame["day"] = pd.to_datetime(frame["start_at"]).dt.date

    origins = [start]
    if retrain_every:
        d = start + timedelta(days=retrain_every)
        while d <= end:
            origins.append(d)
            d += timedelta(days=retrain_every)
    scores, models, results = [], [], []
    t0 = time.perf_counter()
    for i, origin in enumerate(origins):
        until = origins[i + 1] if i + 1 < len(origins) else end + timedelta(days=1)
        if origin > start:
            build_training_features(origin, sources=[source.name], country=country)
        data = load_training_data(origin, config.lookback_days)
        history = (origin - data.days.min()).days
        cfg = adapt_windows(config, history)
        with timed(f"backtest: training as of {origin}", log):
            result = train(data, cfg, storage_url=None, study_prefix=f"backtest-{origin}")
        results.append(result)
        models.append({"as_of": origin.isoformat(), "algorithm": result.best, "snapshot_id": data.snapshot_id(),
                       "n_train": len(data.frame), "gate_auc": result.candidates[result.best].gate_metrics["auc"]})
        part = frame[(frame["day"] >= origin) & (frame["day"] < until)]
        if len(part):
            p = result.model.predict_proba(part)
            scores.append(pd.DataFrame({"appointment_id": part["appointment_id"].to_numpy(),
                                        "appointment_day": part["day"].to_numpy(),
                                        "lead_days": part["lead_days"].to_numpy(), "probability": p,
                                        "model_as_of": origin}))
    timings["training_and_scoring"] = time.perf_counter() - t0
    out = pd.concat(scores, ignore_index=True)
    outcomes = _outcomes(engine, source.name, out["appointment_id"].tolist())
    out = out.merge(outcomes, on="appointment_id", how="left")
    out["outcome"] = out["status"].map({"noshow": "noshow", "fulfilled": "attended", "arrived": "attended"}).fillna(
        "unknown")
    out = out.rename(columns={"appointment_id": "source_id"})
    out = out[["source_id", "appointment_day", "lead_days", "probability", "outcome", "booked_at", "model_as_of"]]
    return out, models, results, timings


def metrics_of(scores: pd.DataFrame) -> dict[str, dict[str, float]]:
    known = scores[scores["outcome"] != "unknown"]
    y = (known["outcome"] == "noshow").to_numpy(dtype=int)
    ahead = (known["lead_days"] >= 1).to_numpy()
    out = {"all": evaluate(y, known["probability"].to_numpy())}
    out["lead>=1"] = evaluate(y[ahead], known["probability"].to_numpy()[ahead])
    return out


def run_backtest(source: str, start: date, end: date, output: Path, *, path: Path | None = None,
                 url: str | None = None, database_url: str | None = None, keep: bool = False,
                 retrain_every: int | None = None, overrides: dict[str, Any] | None = None,
                 country: str | None = None, options: dict[str, Any] | None = None) -> BacktestResult:
    if end < start:
        raise ConfigError(f"--end {end} is before --start {start}")
    started = time.perf_counter()
    settings = get_settings()
    config = TrainConfig.from_settings(settings, {**DEFAULT_OVERRIDES, **(overrides or {})})
    source_config, default_country = resolve_source(source, path, url, options or {})
    country = (country or default_country or settings.holiday_country).upper()
    with isolated_warehouse(source_config, database_url=database_url, keep=keep) as target:
        scores, models, results, timings = replay(source_config, start, end, config=config, country=country,
                                                  retrain_every=retrain_every)
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    scores.to_csv(output, index=False, float_format="%.6f")
    metrics = metrics_of(scores)
    return BacktestResult(scores, metrics, models, db.mask(target), time.perf_counter() - started, timings, results)


def format_report(result: BacktestResult) -> str:
    lines = [f"backtest: {len(result.scores):,} appointments scored in {result.seconds:.0f}s "
             f"(database {result.database})"]
    for m in result.models:
        lines.append(f"  model as of {m['as_of']}: {m['algorithm']}, trained on {m['n_train']:,} appointments "
                     f"(snapshot {m['snapshot_id']})")
    lines.append(f"  {'appointments':<16}{'n':>9}{'no-show':>9}{'predicted':>10}{'AUC':>8}{'PR-AUC':>8}{'Brier':>8}"
                 f"{'ECE':>8}")
    for name, m in result.metrics.items():
        lines.append(f"  {name:<16}{int(m['n']):>9,}{m['noshow_rate']:>9.1%}{m['mean_prediction']:>10.1%}"
                     f"{_num(m['auc']):>8}{_num(m['pr_auc']):>8}{_num(m['brier']):>8}{_num(m['ece']):>8}")
    lines.append("  predicted: mean probability; ECE: expected calibration error over 10 probability bins")
    return "\n".join(lines)


def _num(value: float) -> str:
    return "–" if value is None or not np.isfinite(value) else f"{value:.4f}"
