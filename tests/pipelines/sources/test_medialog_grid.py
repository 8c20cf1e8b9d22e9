"""Medialog's slot grid: day rules (PL_DAY), bands (PL_INT) and exceptions (PL_EXCL) → slots."""

from __future__ import annotations

from datetime import date, datetime

import numpy as np
import pandas as pd

from pipelines.sources import medialog_grid as grid

AGENDAS = pd.DataFrame({"PL_AGEND_ID": [1, 2], "DUREE_TRANCHE": [20, 30]})
SUBJECTS = pd.DataFrame({"PL_SUBJ_ID": [11, 12], "PL_AGEND_ID1": [1, 2]})


def _rule(rule_id: int, agenda: int, **values) -> dict:
    row = {"PL_DAY_ID": rule_id, "PL_AGEND_ID": agenda, "DAY_OF_WEEK": None, "DAY_EVEN": None, "DAY_OF_MONTH": None,
           "DAY_MONTH": None, "DAY_YEAR": None, "PERIOD_FROM": None, "PERIOD_TO": None, "START_TIME": None,
           "END_TIME": None, "ENABLED": 1, "DUREE_TRANCHE": None, "DAY_ORDER": 10}
    row.update(values)
    return row


RULES = pd.DataFrame([
    _rule(1, 1, DAY_OF_WEEK=1, START_TIME=900, END_TIME=1200),                      # Mondays 9–12
    _rule(2, 1, DAY_OF_WEEK=3, START_TIME=1400, END_TIME=1800, DUREE_TRANCHE=30),   # Wednesdays, own slot length
    _rule(3, 1, DAY_OF_MONTH=4, DAY_MONTH=11, DAY_YEAR=2024, ENABLED=0, DAY_ORDER=100),  # a holiday (a Monday)
    _rule(4, 1, DAY_OF_WEEK=1, START_TIME=1000, END_TIME=1200, DAY_ORDER=20,
          PERIOD_FROM=datetime(2024, 11, 18)),                                      # Mondays start later from 18 Nov
    _rule(5, 2, DAY_EVEN=1, START_TIME=800, END_TIME=1100),                         # even dates mornings
    _rule(6, 2, DAY_EVEN=0, START_TIME=1400, END_TIME=1700),                        # odd dates afternoons
    _rule(7, 2, DAY_OF_WEEK=6, ENABLED=0, DAY_ORDER=11),                            # weekends off
    _rule(8, 2, DAY_OF_WEEK=7, ENABLED=0, DAY_ORDER=11),
])


def _days(frame: pd.DataFrame) -> list[date]:
    return [date(1970, 1, 1) + pd.Timedelta(days=int(d)) for d in frame["DAY_NO"]]


def test_rules_resolve_by_weekday_date_period_and_order():
    working = grid.resolve_days(RULES, AGENDAS, date(2024, 11, 1), date(2024, 12, 1))
    first = working[working["PL_AGEND_ID"] == 1].set_index("DAY_NO")
    days = _days(first.reset_index())
    assert date(2024, 11, 4) not in days                      # the holiday beats the Monday rule
    assert date(2024, 11, 11) in days and date(2024, 11, 6) in days
    monday_11 = first.loc[grid.day_number(date(2024, 11, 11))]
    monday_18 = first.loc[grid.day_number(date(2024, 11, 18))]
    assert (monday_11["START"], monday_11["END"], monday_11["TRANCHE"]) == (9 * 60, 12 * 60, 20)
    assert (monday_18["START"], monday_18["TRANCHE"]) == (10 * 60, 20)   # higher DAY_ORDER from its period on
    assert first.loc[grid.day_number(date(2024, 11, 6)), "TRANCHE"] == 30  # the rule's own DUREE_TRANCHE
    assert all(d.weekday() in (0, 2) for d in days)

    shifts = working[working["PL_AGEND_ID"] == 2]
    for day_no, start in zip(shifts["DAY_NO"], shifts["START"], strict=True):
        day = date(1970, 1, 1) + pd.Timedelta(days=int(day_no))
        assert day.weekday() < 5
        assert start == (8 * 60 if day.day % 2 == 0 else 14 * 60)
    assert len(shifts) == 21  # weekdays of November 2024


def test_slots_skip_bands_and_exceptions_and_count_capacity():
    working = grid.resolve_days(RULES, AGENDAS, date(2024, 11, 1), date(2024, 12, 1))
    bands = pd.DataFrame({"PL_DAY_ID": [1], "START_TIME": [1000], "END_TIME": [1030], "PL_LEG_ID": [10]})
    slots = grid.expand_slots(working, SUBJECTS, bands)
    monday = slots[(slots["PL_SUBJ_ID"] == 11) & (slots["DAY_NO"] == grid.day_number(date(2024, 11, 11)))]
    minutes = ((monday["START_MIN"] - monday["DAY_NO"] * 1440) // 1).tolist()
    # 9:00–12:00 in 20-minute slots, minus 10:00 and 10:20 (they overlap the 10:00–10:30 band)
    assert minutes == [540, 560, 580, 640, 660, 680, 700]

    exclusions = pd.DataFrame({
        "PL_EXCL_ID": [1, 2], "PL_SUBJ_ID": [11, 11],
        "FROM_DATE": [datetime(2024, 11, 13), datetime(2024, 11, 20)], "FROM_TIME": [0, 1500],
        "TO_DATE": [datetime(2024, 11, 13), datetime(2024, 11, 20)], "TO_TIME": [2400, 1600], "PL_LEG_ID": [1, 3],
    })
    intervals = grid.exclusion_intervals(exclusions)
    kept, removed = grid.apply_exclusions(slots, intervals)
    days = grid.resource_days(slots, removed).set_index(["PL_SUBJ_ID", "DAY_NO"])
    leave = days.loc[(11, grid.day_number(date(2024, 11, 13)))]
    assert leave["SLOTS"] == 0 and bool(leave["ON_LEAVE"])
    partial = days.loc[(11, grid.day_number(date(2024, 11, 20)))]
    assert partial["SLOTS"] == 8 - 2 and not partial["ON_LEAVE"]  # 14–18 in 30 min, minus 15:00 and 15:30
    assert len(kept) == len(slots) - removed.sum()
    # only the legends that block time, when the installation says which
    only_leave = grid.exclusion_intervals(exclusions, leg_ids=[1])
    assert only_leave["PL_EXCL_ID"].tolist() == [1]


def test_covered_by_handles_nested_and_adjacent_intervals():
    intervals = pd.DataFrame({"PL_SUBJ_ID": [1, 1, 1, 2], "FROM_MIN": [0, 10, 100, 0], "TO_MIN": [50, 20, 110, 5]})
    subject = np.array([1, 1, 1, 1, 2, 3])
    start = np.array([30, 55, 105, 110, 4, 0])
    end = start + 5
    hit = grid.covered_by(subject, start, end, intervals)
    assert hit.tolist() == [0, -1, 2, -1, 3, -1]  # 30–35 lies in the long 0–50 although 10–20 starts later


def test_hhmm_parsing_flags_invalid_values():
    minutes, bad = grid.hhmm_to_minutes(pd.Series([930, 0, 2400, 2575, 1260, None, 9.5]))
    assert minutes[:3].tolist() == [570, 0, 1440]
    assert bad.tolist() == [False, False, False, True, True, True, True]
