"""Resource-days from the warehouse: the slot grid, the booked patients and their probabilities.

Where the slots come from, in order of preference (recorded per resource-day as ``grid``):

* ``slots``        — ``core.slot`` rows of the resource that day (templates, pre-generated slots, FHIR
  Slot). A booked appointment goes into the slot that contains its start;
* ``resource_day`` — ``core.resource_day`` gives the start and end of work and the slot length (the
  whole span is the grid: a break becomes a free slot) or, without an end, the number of slots;

An appointment that starts in no slot of the grid (before it, in a break, after it) gets a slot of
its own at its start time: the doctor sees that patient then, and piling it onto a neighbouring slot
would invent waiting and overtime.
* ``booking_order`` — the source has no grid (the public Vitória data: a day and a neighbourhood,
  no time, no doctor): the day's appointments of the resource in the order they were booked, one per
  slot, split into sessions of at most ``session_slots`` (as the shared notes allow). Every output
  that uses such days says so.

A slot may not be overbooked when it is marked ``no_overbook`` (core.slot), when its resource is
(core.resource), or when any appointment booked into it is for a service that is (core.service).
Each booked patient carries the groups of the fairness reports: age band, sex, welfare programme
(a ``welfare``/``scholarship``/``social_benefit`` flag of core.patient) and predicted-risk decile.
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Sequence
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING, Any

import numpy as np

from optimization.model import ResourceDay

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

AGE_BANDS = ((0, 17, "0-17"), (18, 34, "18-34"), (35, 49, "35-49"), (50, 64, "50-64"), (65, 200, "65+"))
WELFARE_FLAGS = ("welfare", "scholarship", "social_benefit", "benefit")
#: Columns the appointment frame of :func:`build_resource_days` needs.
APPOINTMENT_FIELDS = ("source", "appointment_id", "resource_id", "start_at", "booked_at", "probability")


def age_band(birth_year: Any, day: date) -> str:
    if birth_year is None or (isinstance(birth_year, float) and math.isnan(birth_year)):
        return "unknown"
    try:
        age = day.year - int(birth_year)
    except (TypeError, ValueError):
        return "unknown"
    for low, high, label in AGE_BANDS:
        if low <= age <= high:
            return label
    return "unknown"


def welfare(flags: Any) -> str:
    if isinstance(flags, str):
        import json

        try:
            flags = json.loads(flags)
        except ValueError:
            flags = {}
    if not isinstance(flags, dict):
        return "no welfare"
    for key in WELFARE_FLAGS:
        value = flags.get(key)
        try:
            if value is not None and float(value) > 0:
                return "welfare"
        except (TypeError, ValueError):
            if str(value).lower() in ("true", "yes"):
                return "welfare"
    return "no welfare"


def risk_deciles(probability: np.ndarray) -> np.ndarray:
    """``D01`` (lowest predicted no-show) … ``D10`` (highest), cut over the whole batch."""
    if probability.size == 0:
        return np.zeros(0, dtype=object)
    edges = np.quantile(probability, np.linspace(0, 1, 11)[1:-1])
    decile = np.searchsorted(edges, probability, side="right") + 1
    return np.array([f"D{k:02d}" for k in decile], dtype=object)


def _session_bounds(n: int, session_slots: int) -> list[tuple[int, int]]:
    sessions = max(1, math.ceil(n / session_slots))
    edges = np.linspace(0, n, sessions + 1).round().astype(int)
    return [(int(edges[i]), int(edges[i + 1])) for i in range(sessions)]


def _durations(starts: Sequence[datetime], durations: Any) -> list[float]:
    """Minutes of each slot: its own duration, else the gap to the next slot (the median gap at the end)."""
    gaps = [(b - a).total_seconds() / 60 for a, b in itertools.pairwise(starts)]
    fallback = float(np.median(gaps)) if gaps else 30.0
    out = []
    for k in range(len(starts)):
        value = None
        if durations is not None:
            raw = durations.iloc[k]
            value = None if raw is None or _isnan(raw) else float(raw)
        out.append(value if value and value > 0 else (gaps[k] if k < len(gaps) and gaps[k] > 0 else fallback))
    return out


def _isnan(value: Any) -> bool:
    try:
        return bool(value != value)  # NaN
    except (TypeError, ValueError):
        return False


def _cover(starts: list[datetime], minutes: list[float], blocked: np.ndarray, appointment_starts: Any
           ) -> tuple[list[datetime], np.ndarray, int]:
    """Add a slot for every appointment that starts in no slot of the grid (before the first, in a break,
    after the last): the doctor sees that patient then, so the queue must not pile them onto a
    neighbouring slot. Returns the slot starts, their blocked flags, and the number of slots added."""
    ends = [a + timedelta(minutes=m) for a, m in zip(starts, minutes, strict=True)]
    extra: set[datetime] = set()
    k = 0
    for t in sorted(ts.to_pydatetime() for ts in appointment_starts):
        while k < len(starts) and ends[k] <= t:
            k += 1
        inside = k < len(starts) and starts[k] <= t < ends[k]
        if not inside and t not in extra:
            extra.add(t)
    if not extra:
        return starts, blocked, 0
    merged = sorted([(a, bool(b)) for a, b in zip(starts, blocked, strict=True)] + [(t, False) for t in extra])
    return [a for a, _ in merged], np.array([b for _, b in merged], dtype=bool), len(extra)


def build_resource_days(appointments: pd.DataFrame, slots: pd.DataFrame | None = None,
                        resource_days: pd.DataFrame | None = None, *, extra_show_prob: float,
                        session_slots: int = 40, resource_no_overbook: Sequence[tuple[str, str]] = ()
                        ) -> tuple[list[ResourceDay], list[dict[str, Any]]]:
    """Resource-days of the booked ``appointments`` (one row each, with ``probability`` of a no-show).

    Returns the resource-days and, for each, the slot starts (None for ``booking_order`` days). Each
    ``ResourceDay.info`` holds source, resource_id, day, session, branch_id, department_id,
    practitioner_id and grid; ``appointment_ids`` follow the booked patients' order.
    """
    import pandas as pd

    missing = [c for c in APPOINTMENT_FIELDS if c not in appointments.columns]
    if missing:
        raise ValueError(f"appointments lack columns {missing}")
    if appointments.empty:
        return [], []
    frame = appointments.copy()
    frame["start_at"] = pd.to_datetime(frame["start_at"])
    frame["booked_at"] = pd.to_datetime(frame["booked_at"])
    frame["day"] = frame["start_at"].dt.date
    frame["decile"] = risk_deciles(frame["probability"].to_numpy(dtype=float))
    for column, default in (("branch_id", None), ("department_id", None), ("practitioner_id", None),
                            ("service_no_overbook", False), ("sex", None), ("birth_year", None), ("flags", None)):
        if column not in frame.columns:
            frame[column] = default
    slot_groups: dict[tuple, pd.DataFrame] = {}
    if slots is not None and not slots.empty:
        s = slots.copy()
        s["start_at"] = pd.to_datetime(s["start_at"])
        s["day"] = s["start_at"].dt.date
        slot_groups = {key: g.sort_values("start_at") for key, g in s.groupby(["source", "resource_id", "day"])}
    day_rows: dict[tuple, Any] = {}
    if resource_days is not None and not resource_days.empty:
        for row in resource_days.itertuples(index=False):
            day_rows[(row.source, row.resource_id, pd.Timestamp(row.day).date())] = row
    blocked_resources = set(resource_no_overbook)
    out_days: list[ResourceDay] = []
    out_slots: list[dict[str, Any]] = []
    outside = 0
    for (source, resource_id, day), group in frame.groupby(["source", "resource_id", "day"], sort=True):
        first = group.iloc[0]
        info_base = {
            "source": source, "resource_id": resource_id, "day": day,
            "branch_id": first["branch_id"], "department_id": first["department_id"],
            "practitioner_id": first["practitioner_id"],
        }
        rd = day_rows.get((source, resource_id, day))
        if rd is not None and bool(getattr(rd, "on_leave", False)):
            log.info("%s/%s on %s: on leave, skipped (%d booked appointments)", source, resource_id, day, len(group))
            continue
        grid_slots = slot_groups.get((source, resource_id, day))
        starts: list[datetime] | None = None
        minutes: list[float] | None = None
        slot_blocked: np.ndarray | None = None
        if grid_slots is not None and len(grid_slots):
            grid = "slots"
            starts = [ts.to_pydatetime() for ts in grid_slots["start_at"]]
            minutes = _durations(starts, grid_slots.get("duration_min"))
            slot_blocked = grid_slots.get("no_overbook", pd.Series(False, index=grid_slots.index)).fillna(False)
            slot_blocked = slot_blocked.to_numpy(dtype=bool)
        elif rd is not None and getattr(rd, "slots", 0) and getattr(rd, "work_start", None) is not None \
                and getattr(rd, "slot_minutes", None):
            grid = "resource_day"
            step = int(rd.slot_minutes)
            begin = datetime.combine(day, rd.work_start)
            count = int(rd.slots)
            work_end = getattr(rd, "work_end", None)
            if work_end is not None and not pd.isna(work_end):  # the whole span: a break is a free slot
                count = max(count, int((datetime.combine(day, work_end) - begin).total_seconds() // (60 * step)))
            starts = [begin + timedelta(minutes=step * k) for k in range(count)]
            minutes = [float(step)] * count
            slot_blocked = np.zeros(len(starts), dtype=bool)
        else:
            grid = "booking_order"
        if starts is not None:
            ordered = group.sort_values(["start_at", "appointment_id"])
            starts, slot_blocked, added = _cover(starts, minutes, slot_blocked, ordered["start_at"])
            outside += added
            starts64 = np.array(starts, dtype="datetime64[ns]")
            index = np.searchsorted(starts64, ordered["start_at"].to_numpy(dtype="datetime64[ns]"), side="right") - 1
            index = np.clip(index, 0, len(starts) - 1)
            pieces = [(ordered, index, starts, slot_blocked, 0)]
        else:
            ordered = group.sort_values(["booked_at", "start_at", "appointment_id"], na_position="last")
            pieces = []
            for session, (lo, hi) in enumerate(_session_bounds(len(ordered), session_slots)):
                part = ordered.iloc[lo:hi]
                pieces.append((part, np.arange(hi - lo), None, np.zeros(hi - lo, dtype=bool), session))
        for part, index, piece_starts, blocked, session in pieces:
            n_slots = len(piece_starts) if piece_starts is not None else len(part)
            blocked = np.array(blocked, dtype=bool)
            service_block = part["service_no_overbook"].fillna(False).to_numpy(dtype=bool)
            if service_block.any():
                blocked[index[service_block]] = True
            if (source, resource_id) in blocked_resources:
                blocked[:] = True
            prob = part["probability"].to_numpy(dtype=float)
            info = dict(info_base, session=session, grid=grid)
            out_days.append(ResourceDay(
                key=f"{source}/{resource_id}/{day}" + (f"/{session}" if grid == "booking_order" else ""),
                n_slots=n_slots, slot_of=index, show_prob=1.0 - prob, extra_show_prob=extra_show_prob,
                blocked=blocked,
                groups={
                    "age_band": np.array([age_band(b, day) for b in part["birth_year"]], dtype=object),
                    "sex": np.array([s if s in ("F", "M") else "unknown" for s in part["sex"]], dtype=object),
                    "welfare": np.array([welfare(f) for f in part["flags"]], dtype=object),
                    "risk_decile": part["decile"].to_numpy(dtype=object),
                },
                appointment_ids=part["appointment_id"].astype(str).to_numpy(dtype=object),
                info=info,
            ))
            out_slots.append({"starts": piece_starts})
    if outside:
        log.info("%d slots added for booked appointments that start outside their resource's slot grid (before it, "
                 "in a break or after it)", outside)
    return out_days, out_slots
