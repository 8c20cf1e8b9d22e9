"""Medialog's slot grid: day templates (PL_AGEND, PL_DAY, PL_INT) and exceptions (PL_EXCL) → slots.

How Medialog describes a schedule (as seen in public export scripts; details marked G in
docs/medialog-generator.md are guesses to confirm on a real database):

* ``PL_SUBJ.PL_AGEND_ID1`` names the schedule's grid ``PL_AGEND`` (slot length ``DUREE_TRANCHE``).
* ``PL_DAY`` holds the grid's day rules. A rule matches a date when every condition it sets holds:
  ``DAY_OF_WEEK`` (1 = Monday … 7 = Sunday), ``DAY_EVEN`` (1 = even, 0 = odd day of the month),
  ``DAY_OF_MONTH``/``DAY_MONTH``/``DAY_YEAR`` (a specific date) and ``PERIOD_FROM``…``PERIOD_TO``
  (inclusive). Of the matching rules the one with the highest ``DAY_ORDER`` decides the day: with
  ``ENABLED`` = 0 it is a day off, else the schedule works ``START_TIME``–``END_TIME`` (HHMM) in
  slots of ``DUREE_TRANCHE`` minutes (the rule's own, else the grid's).
* ``PL_INT`` holds bands inside a day rule (lunch, paperwork); slots overlapping a band are not
  bookable.
* ``PL_EXCL`` holds exceptions of one schedule from ``FROM_DATE`` + ``FROM_TIME`` to ``TO_DATE`` +
  ``TO_TIME`` (HHMM, 2400 = end of day): leave, sick days, blocked time. Which ``PL_LEG_ID`` values
  mean "not working" is per installation (the connector's ``exclusion_leg_ids`` option).

All times here are int64 minutes since 1970-01-01 00:00 of the clinic's local wall clock.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date

import numpy as np
import pandas as pd

MINUTES_PER_DAY = 1440
_EPOCH = date(1970, 1, 1)


def day_number(day: date) -> int:
    return (day - _EPOCH).days


def hhmm_to_minutes(values: np.ndarray | pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """HHMM integers → minutes of the day, and a mask of values that are not valid HHMM (0…2400)."""
    raw = pd.to_numeric(pd.Series(values), errors="coerce").to_numpy(dtype="float64")
    valid = np.isfinite(raw)
    whole = np.where(valid, raw, 0).astype(np.int64)
    hours, minutes = whole // 100, whole % 100
    valid &= (raw == whole) & (whole >= 0) & (minutes < 60) & ((hours < 24) | (whole == 2400))
    return np.where(valid, hours * 60 + minutes, 0), ~valid


def _calendar(first: date, last: date) -> pd.DataFrame:
    days = pd.date_range(first, last, freq="D", inclusive="left")
    return pd.DataFrame({
        "DAY_NO": (days.to_numpy().astype("datetime64[D]").astype(np.int64)),
        "DOW": days.dayofweek.to_numpy() + 1,
        "DOM": days.day.to_numpy(),
        "MONTH": days.month.to_numpy(),
        "YEAR": days.year.to_numpy(),
    })


def _as_day_no(values: pd.Series) -> np.ndarray:
    """Datetimes (or NULL) → day numbers; NULL → a missing value (float NaN)."""
    parsed = pd.to_datetime(values, errors="coerce")
    out = parsed.to_numpy(dtype="datetime64[D]").astype(np.int64).astype("float64")
    out[parsed.isna().to_numpy()] = np.nan
    return out


def resolve_days(day_rules: pd.DataFrame, agendas: pd.DataFrame, first: date, last: date) -> pd.DataFrame:
    """The working days of every grid in [first, last).

    ``day_rules`` has PL_DAY's columns, ``agendas`` PL_AGEND's (PL_AGEND_ID, DUREE_TRANCHE).
    Returns PL_AGEND_ID, DAY_NO, PL_DAY_ID, START (minute of day), END, TRANCHE for days that work.
    """
    columns = ["PL_AGEND_ID", "DAY_NO", "PL_DAY_ID", "START", "END", "TRANCHE"]
    if day_rules.empty or first >= last:
        return pd.DataFrame({c: pd.Series(dtype="int64") for c in columns})
    rules = day_rules.copy()
    for column in ("DAY_OF_WEEK", "DAY_EVEN", "DAY_OF_MONTH", "DAY_MONTH", "DAY_YEAR", "DAY_ORDER",
                   "ENABLED", "DUREE_TRANCHE", "START_TIME", "END_TIME"):
        if column not in rules.columns:
            rules[column] = np.nan
        rules[column] = pd.to_numeric(rules[column], errors="coerce")
    for column in ("PERIOD_FROM", "PERIOD_TO"):
        rules[column] = _as_day_no(rules[column]) if column in rules.columns else np.nan
    calendar = _calendar(first, last)

    # Rules for a specific day of the month join on it; the others join on the weekday.
    specific = rules[rules["DAY_OF_MONTH"].notna()]
    pattern = rules[rules["DAY_OF_MONTH"].isna()]
    dows = pattern["DAY_OF_WEEK"].to_numpy()
    repeat = np.where(np.isnan(dows), 7, 1)
    expanded = pattern.loc[pattern.index.repeat(repeat)].copy()
    expanded["DOW"] = np.concatenate([
        np.arange(1, 8) if np.isnan(d) else np.array([int(d)]) for d in dows
    ]) if len(dows) else np.array([], dtype=np.int64)
    by_dow = expanded.merge(calendar, on="DOW", how="inner")
    specific = specific.assign(DOM=specific["DAY_OF_MONTH"].astype("int64"))
    by_dom = specific.merge(calendar, on="DOM", how="inner")
    candidates = pd.concat([by_dow, by_dom], ignore_index=True)
    if candidates.empty:
        return pd.DataFrame({c: pd.Series(dtype="int64") for c in columns})

    day_no = candidates["DAY_NO"].to_numpy()
    keep = np.ones(len(candidates), dtype=bool)
    for rule_col, cal_col in (("DAY_OF_WEEK", "DOW"), ("DAY_MONTH", "MONTH"), ("DAY_YEAR", "YEAR")):
        wanted = candidates[rule_col].to_numpy()
        keep &= np.isnan(wanted) | (wanted == candidates[cal_col].to_numpy())
    even = candidates["DAY_EVEN"].to_numpy()
    keep &= np.isnan(even) | (even == ((candidates["DOM"].to_numpy() % 2) == 0))
    period_from, period_to = candidates["PERIOD_FROM"].to_numpy(), candidates["PERIOD_TO"].to_numpy()
    keep &= (np.isnan(period_from) | (day_no >= period_from)) & (np.isnan(period_to) | (day_no <= period_to))
    candidates = candidates[keep]

    order = candidates["DAY_ORDER"].fillna(0).to_numpy()
    candidates = candidates.assign(_ORDER=order).sort_values(
        ["PL_AGEND_ID", "DAY_NO", "_ORDER", "PL_DAY_ID"], ascending=[True, True, False, False], kind="stable")
    chosen = candidates.drop_duplicates(["PL_AGEND_ID", "DAY_NO"], keep="first")
    chosen = chosen[chosen["ENABLED"].fillna(1).to_numpy() != 0]
    start, bad_start = hhmm_to_minutes(chosen["START_TIME"])
    end, bad_end = hhmm_to_minutes(chosen["END_TIME"])
    tranche_default = agendas.set_index("PL_AGEND_ID")["DUREE_TRANCHE"] if not agendas.empty else pd.Series(dtype=float)
    tranche = chosen["DUREE_TRANCHE"].to_numpy()
    fallback = chosen["PL_AGEND_ID"].map(tranche_default).to_numpy(dtype="float64")
    tranche = np.where(np.isnan(tranche), fallback, tranche)
    tranche = np.where(np.isnan(tranche) | (tranche <= 0), 30, tranche).astype(np.int64)
    out = pd.DataFrame({
        "PL_AGEND_ID": chosen["PL_AGEND_ID"].to_numpy(dtype=np.int64),
        "DAY_NO": chosen["DAY_NO"].to_numpy(dtype=np.int64),
        "PL_DAY_ID": chosen["PL_DAY_ID"].to_numpy(dtype=np.int64),
        "START": start, "END": end, "TRANCHE": tranche,
    })
    return out[~bad_start & ~bad_end & (out["END"].to_numpy() > out["START"].to_numpy())].reset_index(drop=True)


def expand_slots(working: pd.DataFrame, subjects: pd.DataFrame, bands: pd.DataFrame | None = None) -> pd.DataFrame:
    """Slots of every schedule on its working days.

    ``subjects`` maps PL_SUBJ_ID → PL_AGEND_ID1. Returns PL_SUBJ_ID, DAY_NO, PL_DAY_ID, START_MIN
    (absolute minutes), DUREE, WORK_START, WORK_END (minutes of the day), sorted by schedule and time.
    """
    joined = subjects[["PL_SUBJ_ID", "PL_AGEND_ID1"]].dropna().astype("int64").merge(
        working, left_on="PL_AGEND_ID1", right_on="PL_AGEND_ID", how="inner")
    counts = ((joined["END"] - joined["START"]) // joined["TRANCHE"]).clip(lower=0).to_numpy(dtype=np.int64)
    idx = np.repeat(np.arange(len(joined)), counts)
    offset = np.arange(len(idx)) - np.repeat(np.cumsum(counts) - counts, counts)
    tranche = joined["TRANCHE"].to_numpy(dtype=np.int64)[idx]
    minute_of_day = joined["START"].to_numpy(dtype=np.int64)[idx] + offset * tranche
    slots = pd.DataFrame({
        "PL_SUBJ_ID": joined["PL_SUBJ_ID"].to_numpy(dtype=np.int64)[idx],
        "DAY_NO": joined["DAY_NO"].to_numpy(dtype=np.int64)[idx],
        "PL_DAY_ID": joined["PL_DAY_ID"].to_numpy(dtype=np.int64)[idx],
        "START_MIN": joined["DAY_NO"].to_numpy(dtype=np.int64)[idx] * MINUTES_PER_DAY + minute_of_day,
        "DUREE": tranche,
        "WORK_START": joined["START"].to_numpy(dtype=np.int64)[idx],
        "WORK_END": joined["END"].to_numpy(dtype=np.int64)[idx],
    })
    if bands is not None and not bands.empty and not slots.empty:
        b_start, bad_s = hhmm_to_minutes(bands["START_TIME"])
        b_end, bad_e = hhmm_to_minutes(bands["END_TIME"])
        band = pd.DataFrame({"PL_DAY_ID": pd.to_numeric(bands["PL_DAY_ID"]).to_numpy(dtype=np.int64),
                             "B_START": b_start, "B_END": b_end})[~bad_s & ~bad_e]
        slots["_ROW"] = np.arange(len(slots))
        hit = slots[["_ROW", "PL_DAY_ID", "START_MIN", "DUREE", "DAY_NO"]].merge(band, on="PL_DAY_ID")
        start_of_day = hit["START_MIN"] - hit["DAY_NO"] * MINUTES_PER_DAY
        overlap = (start_of_day < hit["B_END"]) & (start_of_day + hit["DUREE"] > hit["B_START"])
        drop = np.zeros(len(slots), dtype=bool)
        drop[hit.loc[overlap, "_ROW"].to_numpy()] = True
        slots = slots[~drop].drop(columns="_ROW")
    return slots.sort_values(["PL_SUBJ_ID", "START_MIN"], kind="stable").reset_index(drop=True)


def exclusion_intervals(exclusions: pd.DataFrame, leg_ids: Iterable[int] | None = None) -> pd.DataFrame:
    """PL_EXCL rows → PL_SUBJ_ID, FROM_MIN, TO_MIN (absolute minutes), PL_EXCL_ID, PL_LEG_ID.

    Only rows whose PL_LEG_ID is in ``leg_ids`` (None: all rows) and that parse.
    """
    columns = ["PL_SUBJ_ID", "FROM_MIN", "TO_MIN", "PL_EXCL_ID", "PL_LEG_ID"]
    if exclusions is None or exclusions.empty:
        return pd.DataFrame({c: pd.Series(dtype="int64") for c in columns})
    frame = exclusions
    if leg_ids is not None and "PL_LEG_ID" in frame.columns:
        frame = frame[pd.to_numeric(frame["PL_LEG_ID"], errors="coerce").isin(list(leg_ids))]
    from_day, to_day = _as_day_no(frame["FROM_DATE"]), _as_day_no(frame["TO_DATE"])
    from_time = frame["FROM_TIME"] if "FROM_TIME" in frame.columns else pd.Series(0, index=frame.index)
    to_time = frame["TO_TIME"] if "TO_TIME" in frame.columns else pd.Series(2400, index=frame.index)
    from_m, bad_f = hhmm_to_minutes(pd.to_numeric(from_time, errors="coerce").fillna(0))
    to_m, bad_t = hhmm_to_minutes(pd.to_numeric(to_time, errors="coerce").fillna(2400))
    ok = ~np.isnan(from_day) & ~np.isnan(to_day) & ~bad_f & ~bad_t
    out = pd.DataFrame({
        "PL_SUBJ_ID": pd.to_numeric(frame["PL_SUBJ_ID"], errors="coerce").to_numpy()[ok].astype(np.int64),
        "FROM_MIN": (from_day[ok].astype(np.int64) * MINUTES_PER_DAY + from_m[ok]),
        "TO_MIN": (to_day[ok].astype(np.int64) * MINUTES_PER_DAY + to_m[ok]),
        "PL_EXCL_ID": pd.to_numeric(frame.get("PL_EXCL_ID", pd.Series(-1, index=frame.index)),
                                    errors="coerce").fillna(-1).to_numpy()[ok].astype(np.int64),
        "PL_LEG_ID": pd.to_numeric(frame.get("PL_LEG_ID", pd.Series(-1, index=frame.index)),
                                   errors="coerce").fillna(-1).to_numpy()[ok].astype(np.int64),
    })
    return out[out["TO_MIN"] > out["FROM_MIN"]].reset_index(drop=True)


_SHIFT = np.int64(1) << np.int64(36)  # minutes since 1970 stay far below 2**36 until year ~2100


def covered_by(subject: np.ndarray, start: np.ndarray, end: np.ndarray,
               intervals: pd.DataFrame) -> np.ndarray:
    """Index into ``intervals`` of an interval of the same schedule overlapping [start, end), else -1.

    Overlapping intervals of one schedule are allowed; the one starting last before ``end`` wins.
    """
    n = len(subject)
    result = np.full(n, -1, dtype=np.int64)
    if n == 0 or intervals.empty:
        return result
    iv_subj = intervals["PL_SUBJ_ID"].to_numpy(dtype=np.int64)
    iv_from = intervals["FROM_MIN"].to_numpy(dtype=np.int64)
    iv_to = intervals["TO_MIN"].to_numpy(dtype=np.int64)
    order = np.lexsort((iv_from, iv_subj))
    keys = iv_subj[order] * _SHIFT + iv_from[order]
    # Running maximum of the interval ends within a schedule: an earlier, longer interval still covers.
    ends = iv_to[order]
    running = pd.Series(ends).groupby(iv_subj[order]).cummax().to_numpy()
    argmax_pos = _running_argmax(ends, iv_subj[order])
    probe = subject.astype(np.int64) * _SHIFT + end.astype(np.int64)
    pos = np.searchsorted(keys, probe, side="left") - 1
    valid = pos >= 0
    pos_c = np.where(valid, pos, 0)
    same = iv_subj[order][pos_c] == subject
    hit = valid & same & (running[pos_c] > start)
    result[hit] = order[argmax_pos[pos_c[hit]]]
    return result


def _running_argmax(values: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """Position of the running maximum of ``values`` within consecutive runs of equal ``groups``."""
    out = np.empty(len(values), dtype=np.int64)
    best = -1
    for i in range(len(values)):  # intervals are few (leave, sick days): a plain loop is fine
        if i == 0 or groups[i] != groups[i - 1] or values[i] > values[best]:
            best = i
        out[i] = best
    return out


def apply_exclusions(slots: pd.DataFrame, intervals: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray]:
    """Slots not covered by an exclusion, and the mask of the removed ones."""
    if slots.empty:
        return slots, np.zeros(0, dtype=bool)
    start = slots["START_MIN"].to_numpy(dtype=np.int64)
    hit = covered_by(slots["PL_SUBJ_ID"].to_numpy(dtype=np.int64), start,
                     start + slots["DUREE"].to_numpy(dtype=np.int64), intervals) >= 0
    return slots[~hit].reset_index(drop=True), hit


def resource_days(slots_all: pd.DataFrame, removed: np.ndarray) -> pd.DataFrame:
    """Capacity per schedule and working day: slots left, slot length, hours, on leave (all removed)."""
    if slots_all.empty:
        return pd.DataFrame(columns=["PL_SUBJ_ID", "DAY_NO", "SLOTS", "SLOT_MINUTES", "WORK_START",
                                     "WORK_END", "ON_LEAVE"])
    frame = slots_all[["PL_SUBJ_ID", "DAY_NO", "DUREE", "WORK_START", "WORK_END"]].assign(
        _LEFT=(~removed).astype(np.int64))
    grouped = frame.groupby(["PL_SUBJ_ID", "DAY_NO"], sort=True).agg(
        SLOTS=("_LEFT", "sum"), SLOT_MINUTES=("DUREE", "min"), WORK_START=("WORK_START", "min"),
        WORK_END=("WORK_END", "max"),
    ).reset_index()
    grouped["ON_LEAVE"] = grouped["SLOTS"].to_numpy() == 0
    return grouped
