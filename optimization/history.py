"""Held-out resource-days for the policy evaluation, from backtest scores and real outcomes.

The probabilities come from ``clinicflow backtest`` (one CSV row per appointment, each scored as the
nightly run of the night before its day would have scored it; columns ``source_id``,
``appointment_day``, ``probability``, ``outcome``, ``booked_at``). The rest of each appointment — its
schedule, time, patient groups — comes from

* a warehouse (``core``; the one the backtest kept with ``--keep``, or the production one), whose
  slot grids are used where the source has them; or
* the public Vitória CSV itself (``--vitoria-csv``), which has no slot grid, no time and no doctor:
  each neighbourhood-day's appointments form resource-days in booking order, split into sessions of
  at most ``session_slots`` (the shared notes allow this; the evaluation's output says so).

Only appointments with a known outcome (attended or no-show) take part. The earliest
``validation_share`` of the days tune the threshold policy; the later days are the test days.
"""

from __future__ import annotations

import logging
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa

from clinicflow.errors import ClinicFlowError
from optimization.data import build_resource_days
from optimization.policy_eval import EvalDay

log = logging.getLogger(__name__)

SCORE_COLUMNS = ("source_id", "appointment_day", "probability", "outcome")


def read_scores(path: Path) -> pd.DataFrame:
    """A backtest CSV, checked."""
    path = Path(path)
    if not path.is_file():
        raise ClinicFlowError(f"scores file {path} does not exist; write one with `clinicflow backtest ... --output "
                              f"{path}`")
    scores = pd.read_csv(path, dtype={"source_id": str})
    missing = [c for c in SCORE_COLUMNS if c not in scores.columns]
    if missing:
        raise ClinicFlowError(f"{path} lacks columns {missing}: is it the output of `clinicflow backtest`?")
    scores = scores[scores["outcome"].isin(["noshow", "attended"])].copy()
    if scores.empty:
        raise ClinicFlowError(f"{path} has no appointment with a known outcome (attended or noshow)")
    scores["appointment_day"] = pd.to_datetime(scores["appointment_day"]).dt.date
    return scores


def frame_from_warehouse(scores: pd.DataFrame, engine: sa.Engine, source: str) -> tuple[pd.DataFrame, Any, Any]:
    """Scores joined with core (schedule, times, patient groups) plus the slot grids of those days."""
    ids = scores["source_id"].astype(str).tolist()
    with engine.connect() as conn:
        core = pd.read_sql(sa.text("""
            SELECT a.appointment_id AS source_id, a.source, coalesce(a.resource_id, a.practitioner_id, a.branch_id)
                   AS resource_id, a.branch_id, a.department_id, a.practitioner_id, a.start_at, a.booked_at AS
                   core_booked_at, coalesce(sv.no_overbook, false) AS service_no_overbook, p.sex, p.birth_year, p.flags
            FROM core.appointment a
            LEFT JOIN core.service sv ON sv.source = a.source AND sv.service_id = a.service_id
            LEFT JOIN core.patient p ON p.source = a.source AND p.patient_key = a.patient_key
            WHERE a.source = :s AND a.appointment_id = ANY(:ids)
        """), conn, params={"s": source, "ids": ids})
        if core.empty:
            raise ClinicFlowError(f"none of the scored appointments is in core for source {source!r} of "
                                  f"{engine.url.database}: is it the database the backtest used (`--keep`)?")
        first, last = scores["appointment_day"].min(), scores["appointment_day"].max()
        slots = pd.read_sql(sa.text(
            "SELECT source, resource_id, start_at, duration_min, no_overbook FROM core.slot WHERE source = :s "
            "AND start_at >= :a AND start_at < CAST(:b AS date) + 1"), conn,
            params={"s": source, "a": first, "b": last})
        resource_days = pd.read_sql(sa.text(
            "SELECT source, resource_id, day, slots, slot_minutes, work_start, on_leave FROM core.resource_day "
            "WHERE source = :s AND day BETWEEN :a AND :b"), conn, params={"s": source, "a": first, "b": last})
    frame = scores.merge(core, on="source_id", how="inner")
    frame = frame.rename(columns={"source_id": "appointment_id"})
    frame["booked_at"] = frame["core_booked_at"]
    return frame, slots, resource_days


def frame_from_vitoria(scores: pd.DataFrame, path: Path) -> pd.DataFrame:
    """Scores joined with the Vitória CSV: neighbourhood = branch = resource; no slot grid."""
    path = Path(path)
    if not path.is_file():
        raise ClinicFlowError(f"Vitória CSV {path} does not exist")
    raw = pd.read_csv(path, dtype={"PatientId": str, "AppointmentID": str},
                      usecols=["AppointmentID", "Gender", "ScheduledDay", "AppointmentDay", "Age", "Neighbourhood",
                               "Scholarship"])
    raw = raw.rename(columns={"AppointmentID": "source_id", "Neighbourhood": "resource_id", "Gender": "sex"})
    frame = scores.merge(raw, on="source_id", how="inner")
    if frame.empty:
        raise ClinicFlowError(f"no scored appointment id is in {path}: are the scores from a backtest of this file?")
    frame = frame.rename(columns={"source_id": "appointment_id"})
    frame["source"] = "vitoria"
    frame["branch_id"] = frame["resource_id"]
    frame["department_id"] = None
    frame["practitioner_id"] = None
    frame["start_at"] = pd.to_datetime(frame["appointment_day"])
    booked = pd.to_datetime(frame["ScheduledDay"], utc=True).dt.tz_convert("America/Sao_Paulo").dt.tz_localize(None)
    frame["booked_at"] = booked
    day = pd.to_datetime(frame["appointment_day"])
    frame["birth_year"] = np.where(frame["Age"] >= 0, day.dt.year - frame["Age"], np.nan)
    frame["flags"] = [{"scholarship": int(s)} for s in frame["Scholarship"]]
    return frame


def eval_days(frame: pd.DataFrame, *, slots: Any = None, resource_days: Any = None,
              extra_show_prob: float | None = None, session_slots: int = 40,
              validation_share: float = 0.3) -> tuple[list[EvalDay], list[EvalDay], str]:
    """(validation days, test days, a note on how the days were formed)."""
    if not 0 <= validation_share < 1:
        raise ClinicFlowError("validation share must be in [0, 1)")
    q = extra_show_prob if extra_show_prob is not None else 1.0 - float(frame["probability"].mean())
    days, _ = build_resource_days(frame, slots, resource_days, extra_show_prob=q, session_slots=session_slots)
    outcome = dict(zip(frame["appointment_id"].astype(str), frame["outcome"] == "attended", strict=True))
    evals = [EvalDay(d, np.array([outcome[a] for a in d.appointment_ids], dtype=bool)) for d in days]
    order = sorted({d.info["day"] for d in days})
    cut = order[int(len(order) * validation_share)] if validation_share > 0 and len(order) > 1 else order[0]
    validation = [e for e in evals if e.day.info["day"] < cut]
    test = [e for e in evals if e.day.info["day"] >= cut]
    grids = pd.Series([d.info["grid"] for d in days]).value_counts().to_dict()
    note = (f"{len(days)} resource-days of {frame['appointment_id'].nunique()} appointments with known outcomes "
            f"({_span(order)}); slot grids: " + ", ".join(f"{k} {v}" for k, v in sorted(grids.items())))
    if grids.get("booking_order"):
        note += (f". Days without a slot grid are formed from each branch-day's appointments in booking order, one "
                 f"per slot, in sessions of at most {session_slots} (the source has no slot times)")
    note += f"; validation days before {cut}, test days from {cut}"
    return validation, test, note


def _span(days: list[date]) -> str:
    return f"{days[0]} – {days[-1]}" if days else "no days"
