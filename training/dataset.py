"""Training data: labelled feature rows, model-input columns, and temporal (rolling-origin) splits.

A training example is an appointment with an outcome (arrived / fulfilled = 0, no-show = 1) and its
features as of its own day — exactly what the nightly run of that night computed for it. A training
as of date T uses appointments that started before T only, so an outcome on or after T can never
reach a model trained as of T.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, timedelta

import numpy as np
import pandas as pd

from clinicflow.errors import ClinicFlowError
from features import definitions

log = logging.getLogger(__name__)

class NotEnoughDataError(ClinicFlowError):
    """Too little labelled history to train and validate; the nightly run skips training (and says why)."""


#: Categorical features are qualified by their source so that ids of two sources never collide.
SOURCE_QUALIFIED = ("service_id", "department_id", "practitioner_id", "branch_id", "channel")


def model_inputs(frame: pd.DataFrame, *, features: Sequence[str] | None = None) -> pd.DataFrame:
    """The model-input columns of a frame of feature rows (as stored in features.appointment_features).

    jsonb columns become numeric ``flag_<key>`` / ``ext_<key>`` columns; categorical ids are qualified
    by source; booleans become 0/1. With ``features`` (a trained model's inputs) exactly those columns
    are returned, missing ones as NaN; without, every available feature.

    Vectorised: text and JSON values are handled once per distinct value (a million rows hold a few
    thousand), then spread to the rows by their codes.
    """
    index = frame.index
    n = len(frame)
    source = frame["source"].to_numpy(dtype=object) if "source" in frame.columns else np.full(n, "", dtype=object)
    out: dict[str, np.ndarray] = {}
    for f in definitions.FEATURES:
        if f.name not in frame.columns:
            continue
        col = frame[f.name]
        if f.kind == "categorical":
            out[f.name] = _qualified(col, source) if f.name in SOURCE_QUALIFIED else _as_text_objects(col)
        else:
            out[f.name] = pd.to_numeric(col.astype("float64") if col.dtype == bool else col,
                                        errors="coerce").to_numpy()
    for json_col, prefix in definitions.EXPANDED_JSON_COLUMNS.items():
        if json_col in frame.columns:
            out.update(_expand_json(frame[json_col], prefix))
    if features is not None:
        out = {name: out[name] if name in out else np.full(n, np.nan) for name in features}
    return pd.DataFrame(out, index=index, copy=False)


def _as_text_objects(col: pd.Series) -> np.ndarray:
    """The column as an object array with None for missing values (as ``astype(object).where(notna)``)."""
    values = col.to_numpy(dtype=object)
    missing = pd.isna(values)
    if missing.any():
        values = values.copy()
        values[missing] = None
    return values


def _qualified(col: pd.Series, source: np.ndarray) -> np.ndarray:
    """``"<source>:<value>"`` per row (None where the value is missing), built once per distinct pair."""
    codes, uniques = pd.factorize(col.to_numpy(dtype=object), use_na_sentinel=True)
    source_codes, sources = pd.factorize(source, use_na_sentinel=False)
    pair = source_codes.astype(np.int64) * (len(uniques) + 1) + (codes + 1)
    pair_codes, pairs = pd.factorize(pair)
    words = np.empty(len(pairs) + 1, dtype=object)
    width = len(uniques) + 1
    for k, p in enumerate(pairs):
        value = int(p) % width - 1
        words[k] = None if value < 0 else f"{sources[int(p) // width]}:{uniques[value]}"
    words[-1] = None
    return words[pair_codes]


def _expand_json(column: pd.Series, prefix: str) -> dict[str, np.ndarray]:
    """Numeric and boolean members of each row's JSON object (a dict or JSON text) as float columns
    ``<prefix><key>`` (NaN where a row lacks the key). Each distinct value is parsed once: rows read by
    :func:`features.build.read_frame` share one dict per distinct JSON text."""
    values = column.to_numpy(dtype=object)
    keys = [id(v) if isinstance(v, dict) else v for v in values]  # dicts by identity, text by value
    codes, uniques = pd.factorize(pd.Series(keys, dtype=object), use_na_sentinel=True)
    order = np.flatnonzero(codes >= 0)
    first_seen = np.full(len(uniques), len(values), dtype=np.int64)
    np.minimum.at(first_seen, codes[order], order)
    table: dict[str, np.ndarray] = {}
    for k, row in enumerate(first_seen):
        value = values[row]
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except json.JSONDecodeError:
                value = None
        if not isinstance(value, dict):
            continue
        for key, item in value.items():
            if isinstance(item, bool) or (isinstance(item, (int, float)) and item is not None):
                name = prefix + str(key)
                if name not in table:
                    table[name] = np.full(len(uniques) + 1, np.nan)
                table[name][k] = float(item)
    return {name: per_value[codes] for name, per_value in table.items()}  # code -1 reads the NaN at the end


@dataclass(frozen=True)
class Window:
    """[start, end) of appointment days."""

    start: date
    end: date

    def mask(self, days: pd.Series) -> np.ndarray:
        return ((days >= self.start) & (days < self.end)).to_numpy()

    def __str__(self) -> str:
        return f"{self.start}…{self.end - timedelta(days=1)}"


@dataclass(frozen=True)
class Fold:
    """One rolling origin: train on days before ``train_end``, validate on ``valid``."""

    index: int
    train_end: date
    valid: Window

    def describe(self) -> str:
        return f"fold {self.index}: train < {self.train_end}, validate {self.valid}"


def rolling_origin(gate_start: date, folds: int, fold_days: int, embargo_days: int) -> list[Fold]:
    """``folds`` consecutive validation windows of ``fold_days`` ending at ``gate_start``; each trains on
    what lies ``embargo_days`` or more before its window."""
    out = []
    for k in range(folds):
        end = gate_start - timedelta(days=(folds - 1 - k) * fold_days)
        start = end - timedelta(days=fold_days)
        out.append(Fold(k + 1, start - timedelta(days=embargo_days), Window(start, end)))
    return out


@dataclass
class TrainingData:
    """Labelled rows of a training as of ``as_of``, oldest first."""

    frame: pd.DataFrame          # feature rows with label, status, start_at
    as_of: date

    @property
    def days(self) -> pd.Series:
        return pd.to_datetime(self.frame["start_at"]).dt.date

    @property
    def y(self) -> np.ndarray:
        return self.frame["label"].to_numpy(dtype=int)

    def snapshot_id(self) -> str:
        """A fingerprint of exactly which rows, outcomes and feature version a training used."""
        keys = self.frame[["source", "appointment_id", "as_of", "label"]].astype(str)
        digest = hashlib.sha256()
        digest.update(definitions.FEATURE_SET_VERSION.encode())
        digest.update(np.sort(pd.util.hash_pandas_object(keys, index=False).to_numpy()).tobytes())
        return f"{len(self.frame)}-{digest.hexdigest()[:16]}"

    def check(self, needed: Iterable[Window], min_rows: int = 50) -> None:
        days = self.days
        for window in needed:
            mask = window.mask(days)
            n = int(mask.sum())
            positives = int(self.y[mask].sum()) if n else 0
            if n < min_rows or positives == 0 or positives == n:
                raise NotEnoughDataError(
                    f"not enough labelled appointments for training as of {self.as_of}: window {window} has "
                    f"{n} appointments with an outcome ({positives} no-shows); need at least {min_rows} with both "
                    "outcomes. Load more history, or shorten CLINICFLOW_TRAIN_FOLD_DAYS / _GATE_DAYS / _FOLDS."
                )


def load_training_data(as_of: date, lookback_days: int, *, settings=None, engine=None) -> TrainingData:
    """Labelled feature rows of appointments in [as_of - lookback, as_of), oldest first."""
    from features.build import load_features

    frame = load_features(training_until=as_of, training_since=as_of - timedelta(days=lookback_days),
                          with_labels=True, settings=settings, engine=engine)
    if frame.empty:
        raise NotEnoughDataError(
            f"no training rows before {as_of}: run the features stage first (`clinicflow features build "
            f"--as-of {as_of}`), and check that core holds appointments with outcomes"
        )
    frame = frame.sort_values(["start_at", "source", "appointment_id"]).reset_index(drop=True)
    log.info("training data as of %s: %d appointments with an outcome (%d no-shows, %.1f%%), %s…%s",
             as_of, len(frame), int(frame["label"].sum()), 100 * frame["label"].mean(),
             frame["start_at"].min().date(), frame["start_at"].max().date())
    return TrainingData(frame, as_of)


def age_band(age: pd.Series) -> pd.Series:
    bands = pd.cut(pd.to_numeric(age, errors="coerce"), [-1, 17, 39, 64, 200], labels=["0-17", "18-39", "40-64", "65+"])
    return bands.astype("object").where(bands.notna(), "unknown")
