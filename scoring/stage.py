"""The nightly scoring stage: next week's booked appointments scored with ``models:/noshow@champion``.

For a run of as-of date D:

1. the champion is loaded from the MLflow registry (``models:/noshow@champion``, a pyfunc that returns
   no-show probabilities). No champion, or one that cannot be loaded, stops the stage with a message
   that says what to do;
2. the features of every booked appointment starting in ``[D, D + CLINICFLOW_HORIZON_DAYS)`` as of D,
   computed in this process by the as-of engine (:func:`features.build_features`, ``persist=False``) and
   stored in ``features.appointment_features`` in the background (what the model saw, replaced on a re-run);
3. the probability, the risk band (``CLINICFLOW_RISK_BAND_MEDIUM`` / ``_HIGH``) and the top three
   reasons in plain words from the model's SHAP contributions (:mod:`scoring.treeshap` computes the
   exact TreeSHAP values of tree models fast, from tables built once at training and logged with the
   model as ``shap_tables.npz``; :mod:`scoring.reasons` words them), for the appointments
   in ``CLINICFLOW_REASONS_MIN_BAND`` or above (every appointment by default). When every appointment
   is explained, the probabilities are the calibrated sums of the contributions (SHAP values add up
   to the model's output), checked against ``pyfunc.predict`` on a sample of every batch;
4. ``reporting.appointment_risk``: the rows of D are replaced in one transaction (delete, then each
   batch appended by binary COPY while the next is scored; :class:`scoring.writer.RiskWriter`), so a
   re-run of the same date never duplicates anything and a failed run leaves the previous rows.
"""

from __future__ import annotations

import logging
import time
from collections import ChainMap
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

import numpy as np
import sqlalchemy as sa

from clinicflow import db
from clinicflow.errors import ClinicFlowError
from clinicflow.logs import Laps, timed
from clinicflow.settings import Settings, get_settings
from scoring.writer import BATCH_COLUMNS, RiskWriter

log = logging.getLogger(__name__)

MODEL_NAME = "noshow"
ALIAS = "champion"
#: Rows per batch of predictions and contributions (bounds memory on large horizons).
BATCH_ROWS = 100_000


@dataclass
class Champion:
    """The loaded champion: the pyfunc (probabilities) and the model inside it (contributions)."""

    pyfunc: Any
    model: Any            # training.model.NoShowModel
    version: str
    uri: str
    _explainer: Any = None

    @property
    def feature_set_version(self) -> str:
        return str(self.model.feature_set_version)

    @property
    def explainer(self):
        """:class:`scoring.treeshap.ModelExplainer` of the model, made on first use: its SHAP tables are read
        from the model's artifact (saved at training), or built if it has none or they do not fit it."""
        if self._explainer is None:
            from scoring.treeshap import ModelExplainer

            python_model = self.pyfunc.unwrap_python_model()
            saved = getattr(python_model, "shap_tables_path", None)
            if saved:
                from training.pyfunc import file_digest

                with timed(f"SHAP tables of {self.uri} (version {self.version}) from its artifact", log):
                    try:
                        self._explainer = ModelExplainer.load(self.model, saved, file_digest(python_model.model_path))
                    except Exception as exc:  # a damaged artifact costs the build, not the run
                        log.warning("cannot read the SHAP tables of %s (version %s) from %s: %s; they are built "
                                    "instead", self.uri, self.version, saved, str(exc).splitlines()[0][:300])
            if self._explainer is None:
                with timed(f"SHAP tables of {self.uri} (version {self.version})", log):
                    self._explainer = ModelExplainer(self.model)
        return self._explainer


def load_champion(settings: Settings | None = None) -> Champion:
    """``models:/noshow@champion``, or a ClinicFlowError that says what to do."""
    from clinicflow import tracking

    settings = settings or get_settings()
    uri = f"models:/{MODEL_NAME}@{ALIAS}"
    try:
        tracking.configure(settings)
        import mlflow
        from mlflow.exceptions import MlflowException

        client = mlflow.MlflowClient()
        try:
            version = client.get_model_version_by_alias(MODEL_NAME, ALIAS)
        except MlflowException as exc:
            if getattr(exc, "error_code", "") in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE") \
                    or "not found" in str(exc).lower() or "does not exist" in str(exc).lower():
                raise ClinicFlowError(
                    f"there is no {uri} in the MLflow registry ({db.mask(tracking.tracking_uri(settings))}): no "
                    "model has been trained and promoted yet. Train one with `clinicflow train --as-of YYYY-MM-DD` "
                    "(or let the nightly DAG's train task run), then re-run scoring."
                ) from None
            raise
    except ClinicFlowError:
        raise
    except Exception as exc:  # the registry itself cannot be reached
        raise ClinicFlowError(
            f"cannot read the MLflow registry to find {uri}: {str(exc).splitlines()[0][:300]}. Check "
            "CLINICFLOW_MLFLOW_TRACKING_URI and that its database is reachable (`clinicflow health`)."
        ) from exc
    try:
        pyfunc = mlflow.pyfunc.load_model(uri)
        model = pyfunc.unwrap_python_model().model
    except Exception as exc:
        raise ClinicFlowError(
            f"{uri} (version {version.version}) cannot be loaded: {str(exc).splitlines()[0][:300]}. Its artifacts "
            f"may be missing (artifact root {settings.artifact_root}) or were written by an incompatible version. "
            "Retrain with `clinicflow train`, or point the alias at a working version in the MLflow UI "
            "(Models → noshow → Aliases)."
        ) from exc
    if model is None or not hasattr(model, "contributions"):
        raise ClinicFlowError(f"{uri} (version {version.version}) is not a ClinicFlow no-show model; retrain it "
                              "with `clinicflow train`")
    return Champion(pyfunc=pyfunc, model=model, version=str(version.version), uri=uri)


def _explainer(champion: Champion, settings: Settings) -> float:
    """Read (or build) the champion's SHAP tables, in a background thread; returns the seconds it took."""
    t0 = time.perf_counter()
    champion.explainer  # noqa: B018 (built on first use)
    return time.perf_counter() - t0


_BAND_RANK = {"low": 0, "medium": 1, "high": 2, "none": 3}


def risk_band(probability: np.ndarray, settings: Settings) -> np.ndarray:
    return np.where(probability >= settings.risk_band_high, "high",
                    np.where(probability >= settings.risk_band_medium, "medium", "low"))


def _names(engine: sa.Engine, sources: Sequence[str]) -> dict[str, dict[str, str]]:
    """Display names of doctors, departments, branches and services for the reasons."""
    queries = {
        "practitioner_id": "SELECT practitioner_id, display_name FROM core.practitioner",
        "department_id": "SELECT department_id, name FROM core.department",
        "branch_id": "SELECT branch_id, name FROM core.branch",
        "service_id": "SELECT service_id, name FROM core.service",
    }
    out: dict[str, dict[str, str]] = {}
    with engine.connect() as conn:
        for column, sql in queries.items():
            rows = conn.execute(sa.text(sql + " WHERE source = ANY(:s)"), {"s": list(sources)}).all()
            out[column] = {str(k): str(v) for k, v in rows if v}
    return out


def _features(as_of: date, champion: Champion, settings: Settings, engine: sa.Engine,
              sources: Sequence[str] | None, timings: dict[str, float] | None = None):
    """The horizon's feature rows as of ``as_of``, computed in this process (not yet stored)."""
    from features import build_features
    from features.definitions import FEATURE_SET_VERSION

    if champion.feature_set_version != FEATURE_SET_VERSION:
        raise ClinicFlowError(
            f"the champion (version {champion.version}) was trained on feature set {champion.feature_set_version}, "
            f"but features are now computed as {FEATURE_SET_VERSION}: retrain with `clinicflow train` first"
        )
    return build_features(as_of, sources=sources, settings=settings, engine=engine, persist=False, timings=timings)


def score_batches(frame, champion: Champion, settings: Settings, names: dict[str, dict[str, str]] | None = None,
                  timings: dict[str, float] | None = None) -> Iterator:
    """Probabilities, bands and reasons for feature rows, :data:`BATCH_ROWS` at a time: yields the risk-table
    frame of each batch (:data:`scoring.writer.BATCH_COLUMNS`). ``timings`` (a dict) receives the seconds of
    the steps: shap_tables, inputs, shap (or predict), check, words, frame."""
    import pandas as pd

    from scoring.reasons import Explainer

    lap = Laps(timings)

    words = Explainer(settings.reasons_language, names)
    explain_all = settings.reasons_min_band == "low"
    if settings.reasons_min_band != "none" and len(frame):
        champion.explainer  # noqa: B018 (its tables are read or built on first use)
        lap("shap_tables")
    for lo in range(0, len(frame), BATCH_ROWS):
        batch = frame.iloc[lo: lo + BATCH_ROWS]
        inputs = champion.model.inputs(batch)
        lap("inputs")
        contributions = None
        if explain_all:
            contributions = champion.explainer.contributions(inputs)
            p = champion.explainer.probabilities(contributions)
            lap("shap")
            if not _agrees_with_pyfunc(p, inputs, champion):
                p = np.asarray(champion.pyfunc.predict(inputs), dtype=float).reshape(-1)
                contributions = champion.model.contributions(inputs).reindex(
                    columns=[*champion.explainer.features, "bias"]).to_numpy()
            lap("check")
        else:
            p = np.asarray(champion.pyfunc.predict(inputs), dtype=float).reshape(-1)
            lap("predict")
        if p.shape[0] != len(batch) or not np.all(np.isfinite(p)) or p.min() < 0 or p.max() > 1:
            raise ClinicFlowError(f"{champion.uri} (version {champion.version}) returned values that are not "
                                  "probabilities; is it a ClinicFlow no-show model? Retrain with `clinicflow train`")
        bands = risk_band(p, settings)
        rank = np.where(bands == "high", 2, np.where(bands == "medium", 1, 0))
        explain = rank >= _BAND_RANK[settings.reasons_min_band]
        reasons = [np.full(len(batch), None, dtype=object) for _ in range(3)]
        if explain.any():
            if contributions is None:
                values = champion.explainer.contributions(inputs[explain])
                lap("shap")
            else:
                values = contributions if explain.all() else contributions[explain]
            # the feature rows' own values, then the model's inputs (patient flags, external values)
            rows = ChainMap(batch, inputs) if explain.all() else ChainMap(batch[explain], inputs[explain])
            found = words.top_reasons_of(values[:, :-1], champion.explainer.features, rows)
            for k in range(3):
                reasons[k][explain] = found[k]
            lap("words")
        scored = pd.DataFrame({
            "source": batch["source"].to_numpy(), "appointment_id": batch["appointment_id"].astype(str).to_numpy(),
            "resource_id": batch["resource_id"].to_numpy() if "resource_id" in batch else None,
            "practitioner_id": batch["practitioner_id"].to_numpy(), "department_id": batch["department_id"].to_numpy(),
            "branch_id": batch["branch_id"].to_numpy(), "start_at": batch["start_at"].to_numpy(),
            "probability": p, "risk_band": bands,
            "reason_1": reasons[0], "reason_2": reasons[1], "reason_3": reasons[2],
        })
        lap("frame")
        yield scored
        lap.skip()  # the consumer's time (the write) is not a step of scoring


def score_frame(frame, champion: Champion, settings: Settings, names: dict[str, dict[str, str]] | None = None,
                timings: dict[str, float] | None = None):
    """:func:`score_batches` of ``frame`` as one frame."""
    import pandas as pd

    parts = list(score_batches(frame, champion, settings, names, timings))
    if not parts:
        return pd.DataFrame(columns=list(BATCH_COLUMNS))
    return pd.concat(parts, ignore_index=True)


#: rows of every batch whose probabilities from the contributions are checked against the pyfunc
CHECK_ROWS = 256
#: largest accepted difference (XGBoost computes in float32)
CHECK_TOLERANCE = 1e-6


def _agrees_with_pyfunc(p: np.ndarray, inputs, champion: Champion) -> bool:
    """The probabilities from the contributions equal ``pyfunc.predict`` on evenly spread rows; if not, the
    batch is scored again by the pyfunc and the model's own contributions (and a warning is logged)."""
    if not len(p):
        return True
    rows = np.unique(np.linspace(0, len(p) - 1, min(CHECK_ROWS, len(p))).astype(int))
    expected = np.asarray(champion.pyfunc.predict(inputs.iloc[rows]), dtype=float).reshape(-1)
    gap = float(np.max(np.abs(expected - p[rows]))) if expected.shape == p[rows].shape else float("inf")
    if gap <= CHECK_TOLERANCE:
        return True
    log.warning("%s (version %s): probabilities from the fast SHAP values differ from pyfunc.predict by up to %.3g; "
                "this batch is scored by the pyfunc and the model's own contributions instead", champion.uri,
                champion.version, gap)
    return False


def write_risk(as_of: date, scored, model_version: str, engine: sa.Engine, sources: Sequence[str] | None,
               timings: dict[str, float] | None = None) -> int:
    """Replace the risk rows of ``as_of`` (of ``sources``, or all) with ``scored`` in one transaction
    (:class:`scoring.writer.RiskWriter`); returns the rows written."""
    with RiskWriter(as_of, MODEL_NAME, model_version, sources=sources, url=engine.url, timings=timings) as writer:
        writer.put(scored)
    return writer.rows


def run_scoring(as_of: date, *, settings: Settings | None = None,
                sources: Sequence[str] | None = None) -> dict[str, Any]:
    """The nightly ``score`` task: returns a JSON-able summary (its XCom).

    Three things overlap: the champion's SHAP tables are read from its artifact (or built) while the
    features are extracted; the feature rows are stored (``features.appointment_features``, what the
    model saw) and each scored batch is written while the next batch is scored. The run fails if either
    write fails."""
    from concurrent.futures import ThreadPoolExecutor

    from features.build import persist_features

    settings = settings or get_settings()
    engine = db.get_engine("warehouse", settings)
    with timed(f"scoring as of {as_of}", log) as timer, ThreadPoolExecutor(2, "scoring") as background:
        champion = load_champion(settings)
        steps: dict[str, dict[str, float]] = {"features": {}, "predict_and_reasons": {}, "write": {},
                                              "store_features": {}}
        explainer = background.submit(_explainer, champion, settings) if settings.reasons_min_band != "none" \
            else None
        t0 = time.perf_counter()
        frame = _features(as_of, champion, settings, engine, sources, steps["features"])
        features_s = time.perf_counter() - t0
        stored = background.submit(persist_features, frame, engine=engine, timings=steps["store_features"])
        if explainer is not None:
            t0 = time.perf_counter()
            steps["predict_and_reasons"]["shap_tables_background"] = explainer.result()
            steps["predict_and_reasons"]["shap_tables_wait"] = time.perf_counter() - t0
        names = _names(engine, sorted(set(frame["source"]))) if len(frame) else {}
        # the batches are written while the next ones are scored; the run's rows replace the date's in one
        # transaction, committed after the last batch (a failure rolls every batch back)
        predict_s = write_s = total = 0.0
        counts = {"high": 0, "medium": 0}
        with RiskWriter(as_of, MODEL_NAME, champion.version, sources=sources, url=engine.url,
                        timings=steps["write"]) as writer:
            t0 = time.perf_counter()
            for scored in score_batches(frame, champion, settings, names, steps["predict_and_reasons"]):
                t1 = time.perf_counter()
                predict_s += t1 - t0
                for band in counts:
                    counts[band] += int((scored["risk_band"] == band).sum())
                total += float(scored["probability"].sum())
                writer.put(scored)  # waits only while two earlier batches are still being written
                t0 = time.perf_counter()
                write_s += t0 - t1
        write_s += time.perf_counter() - t0  # the last batch's COPY and the commit
        t0 = time.perf_counter()
        stored.result()  # the feature rows are stored too (or the run fails with the reason)
        store_wait = time.perf_counter() - t0
        steps["write"].update({f"db_{k}": v for k, v in writer.database.items()})
        timer.rows = rows = writer.rows
    summary = {
        "as_of": as_of.isoformat(),
        "model": f"{MODEL_NAME} v{champion.version}",
        "model_version": champion.version,
        "appointments_scored": rows,
        "high_risk": counts["high"],
        "medium_risk": counts["medium"],
        "mean_probability": round(total / rows, 4) if rows else None,
        "seconds": round(timer.seconds, 2),
        "seconds_features": round(features_s, 2),
        "seconds_predict_and_reasons": round(predict_s, 2),
        "seconds_write": round(write_s, 2),
        "seconds_store_features_wait": round(store_wait, 2),
        "seconds_steps": {phase: {k: round(v, 2) for k, v in d.items()} for phase, d in steps.items()},
    }
    if not rows:
        log.warning("no booked appointments in [%s, %s): nothing scored", as_of,
                    as_of + timedelta(days=settings.horizon_days))
    log.info("scoring: %s", summary)
    return summary
