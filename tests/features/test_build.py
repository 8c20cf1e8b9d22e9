"""Point-in-time features on real PostgreSQL: the SQL agrees with a from-scratch recomputation on the
rows visible at the as-of date, later outcomes change nothing, re-runs duplicate nothing."""

from __future__ import annotations

import math
from datetime import date, datetime, timedelta

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from clinicflow.settings import load_settings
from features import definitions
from features.build import build_features, build_training_features, load_features
from tests.features import synthetic
from tests.features.frames import assert_same_frame
from tests.features.reference import Reference

FIRST_DAY = date(2026, 1, 12)
WEEKS = 9


@pytest.fixture(scope="module")
def settings():
    return load_settings()


@pytest.fixture(scope="module")
def history(own_warehouse):
    hist = synthetic.generate(FIRST_DAY, WEEKS, seed=11, patients=400)
    synthetic.write(own_warehouse, hist)
    return hist


def _same(a: object, b: object) -> bool:
    a_missing = a is None or (isinstance(a, float) and math.isnan(a)) or a is pd.NA or a is pd.NaT
    b_missing = b is None or (isinstance(b, float) and math.isnan(b)) or b is pd.NA or b is pd.NaT
    if a_missing or b_missing:
        return a_missing and b_missing
    if isinstance(a, (bool, np.bool_)) or isinstance(b, (bool, np.bool_)):
        return bool(a) == bool(b)
    if isinstance(a, (int, float, np.number)) and isinstance(b, (int, float, np.number)):
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-9)
    return a == b


def _compare(frame: pd.DataFrame, reference: Reference) -> list[str]:
    problems = []
    for row in frame.to_dict("records"):
        expected = reference.features(row["appointment_id"], row["as_of"])
        for name in definitions.FEATURE_NAMES:
            if not _same(row[name], expected[name]):
                problems.append(f"{row['appointment_id']} as of {row['as_of']}: {name} = {row[name]!r}, "
                                f"recomputed from visible rows: {expected[name]!r}")
    return problems


def test_features_match_recomputation_from_visible_rows(own_warehouse, history, settings):
    """Sampled appointments, as of their own day (training rows) and as of earlier nightly runs (scoring
    rows): every feature equals its recomputation from only the rows visible at the as-of date."""
    rng = np.random.default_rng(3)
    core = synthetic.read_core(own_warehouse)
    reference = Reference(core, history.patients, history.slots)

    written = build_training_features(history.last_day, sources=[synthetic.SOURCE], settings=settings,
                                      engine=own_warehouse, recompute=True)
    outcomes = core[core["status"].isin(["arrived", "fulfilled", "noshow"])
                    & (core["start_at"].dt.date < history.last_day)]
    assert written == len(outcomes)
    training = load_features(training_until=history.last_day, settings=settings, engine=own_warehouse)
    sample = training.sample(60, random_state=1)
    problems = _compare(sample, reference)

    for offset in (10, 25, 40, 55):  # nightly runs in the middle of the history (the as-of engine)
        as_of = FIRST_DAY + timedelta(days=offset)
        frame = build_features(as_of, horizon_days=7, sources=[synthetic.SOURCE], settings=settings,
                               engine=own_warehouse, persist=False, history="as_of")
        assert len(frame) > 0
        assert (pd.to_datetime(frame["start_at"]).dt.date >= as_of).all()
        problems += _compare(frame.sample(min(25, len(frame)), random_state=int(rng.integers(1000))), reference)
    assert not problems, "\n".join(problems[:20])


def test_same_day_booking_is_scored_as_at_its_booking(own_warehouse, history, settings):
    core = synthetic.read_core(own_warehouse)
    same_day = core[(core["booked_at"].dt.date == core["start_at"].dt.date)
                    & core["status"].isin(["fulfilled", "noshow", "arrived"])].iloc[0]
    day = same_day["start_at"].date()
    horizon = build_features(day, horizon_days=1, sources=[synthetic.SOURCE], settings=settings,
                             engine=own_warehouse, persist=False)
    assert same_day["appointment_id"] not in set(horizon["appointment_id"]), \
        "a booking made on the as-of day is not known to that night's run"
    frame = build_features(day, appointments=[(synthetic.SOURCE, same_day["appointment_id"])], settings=settings,
                           engine=own_warehouse, persist=False)
    row = frame.iloc[0]
    assert row["lead_days"] == 0 and bool(row["same_day_booking"])
    expected = Reference(core, history.patients, history.slots).features(same_day["appointment_id"], day)
    assert all(_same(row[n], expected[n]) for n in definitions.FEATURE_NAMES)


def _write_variant(engine: sa.Engine, history: synthetic.History, appointments: pd.DataFrame) -> None:
    synthetic.write(engine, synthetic.History(appointments, history.patients, history.slots, history.resource_days,
                                              history.first_day, history.last_day))


def test_outcomes_on_or_after_as_of_change_no_feature(own_warehouse, history, settings):
    """Flip, blank (back to booked) and delete-then-rebook outcomes of every appointment on or after the
    as-of date: no feature of any appointment as of that date (or earlier) changes."""
    as_of = FIRST_DAY + timedelta(days=35)
    core = synthetic.read_core(own_warehouse)
    # every appointment up to 5 days after the as-of date: the earlier ones as of their own day
    # (training rows), the later ones as of the as-of date (the run's scoring rows)
    keys = core.loc[core["start_at"].dt.date < as_of + timedelta(days=5), ["source", "appointment_id", "start_at"]]
    keys["as_of"] = [min(d, as_of) for d in keys.pop("start_at").dt.date]

    def compute() -> pd.DataFrame:
        frame = build_features(as_of, appointments=keys, settings=settings, engine=own_warehouse, persist=False)
        frame = frame.drop(columns=["feature_set_version"]).sort_values(["appointment_id", "as_of"])
        return frame.reset_index(drop=True)

    before = compute()
    assert len(before) == len(keys)
    changed = history.appointments.copy()
    later = changed["start_at"].dt.date >= as_of
    flip = later & changed["status"].isin(["noshow", "fulfilled", "arrived"])
    assert flip.sum() > 50
    changed.loc[flip, "status"] = np.where(changed.loc[flip, "status"] == "noshow", "fulfilled", "noshow")
    blank = later & (np.arange(len(changed)) % 3 == 0)
    changed.loc[blank & changed["status"].isin(["noshow", "fulfilled", "arrived"]), "status"] = "booked"
    try:
        _write_variant(own_warehouse, history, changed)
        after = compute()
    finally:
        synthetic.write(own_warehouse, history)
    pd.testing.assert_frame_equal(before, after)


def test_rerun_replaces_rows_and_version_is_recorded(own_warehouse, history, settings):
    as_of = FIRST_DAY + timedelta(days=30)
    first = build_features(as_of, sources=[synthetic.SOURCE], settings=settings, engine=own_warehouse)
    stored_first = load_features(as_of=as_of, settings=settings, engine=own_warehouse)
    second = build_features(as_of, sources=[synthetic.SOURCE], settings=settings, engine=own_warehouse)
    assert len(first) == len(second) > 0
    stored = load_features(as_of=as_of, settings=settings, engine=own_warehouse)
    assert len(stored) == len(stored_first)
    assert set(first["appointment_id"]) <= set(stored["appointment_id"])
    assert not stored.duplicated(["source", "appointment_id", "as_of"]).any()
    assert set(stored["feature_set_version"]) == {definitions.FEATURE_SET_VERSION}
    with own_warehouse.connect() as conn:
        columns = conn.execute(sa.text("SELECT columns FROM features.feature_set WHERE version = :v"),
                               {"v": definitions.FEATURE_SET_VERSION}).scalar_one()
    assert {c["name"] for c in columns} == set(definitions.FEATURE_NAMES)
    # training back-fill is incremental: nothing is missing after a full run
    build_training_features(as_of, sources=[synthetic.SOURCE], settings=settings, engine=own_warehouse)
    assert build_training_features(as_of, sources=[synthetic.SOURCE], settings=settings, engine=own_warehouse) == 0


def test_pseudonymous_patient_key_has_no_effect(own_warehouse, history, settings):
    """Another pseudonymisation secret renames every patient key: the features stay the same."""
    as_of = FIRST_DAY + timedelta(days=42)
    before = build_features(as_of, sources=[synthetic.SOURCE], settings=settings, engine=own_warehouse, persist=False)
    renamed = history.appointments.copy()
    renamed["patient_key"] = "k" + renamed["patient_key"].str[::-1]
    patients = history.patients.copy()
    patients["patient_key"] = "k" + patients["patient_key"].str[::-1]
    try:
        synthetic.write(own_warehouse, synthetic.History(renamed, patients, history.slots, history.resource_days,
                                                         history.first_day, history.last_day))
        after = build_features(as_of, sources=[synthetic.SOURCE], settings=settings, engine=own_warehouse,
                               persist=False)
    finally:
        synthetic.write(own_warehouse, history)
    pd.testing.assert_frame_equal(before, after)


@pytest.mark.parametrize("history", ["as_of", "stream"])
def test_crafted_history(own_warehouse, settings, history):
    """Hand-built rows for one patient: each rule of visibility, with the expected numbers spelled out (the
    as-of engine and the features SQL)."""
    src = "craft"
    d = date(2026, 3, 16)  # a Monday; the as-of date

    def at(day_offset: int, hour: int = 10) -> datetime:
        return datetime.combine(d + timedelta(days=day_offset), datetime.min.time()) + timedelta(hours=hour)

    rows = [
        # id, start, booked, status, changed
        ("h1", at(-20), at(-30), "fulfilled", at(-20)),   # attended visit 20 days before
        ("h2", at(-10), at(-12), "noshow", at(-10)),      # missed 10 days before
        ("h3", at(-5), at(-9), "cancelled_by_patient", at(-6)),  # cancelled before as_of: a cancellation
        ("h4", at(-1, 16), at(-3), "noshow", at(-1, 16)),  # yesterday's outcome: visible
        ("h5", at(0, 9), at(-2), "noshow", at(0, 9)),     # today's outcome: NOT visible to the run of today
        ("h6", at(4), at(-8), "cancelled_by_patient", at(1)),  # cancelled after as_of: still booked then
        ("t", at(2, 11), at(-4, 15), "noshow", at(2, 11)),  # the target, two days ahead
        ("s1", at(2, 9), at(-1), "fulfilled", at(2, 9)),   # same-day sibling booked before as_of
        ("s2", at(2, 14), at(1), "fulfilled", at(2, 14)),  # same-day sibling booked after as_of: unknown
    ]
    frame = pd.DataFrame(rows, columns=["appointment_id", "start_at", "booked_at", "status", "status_changed_at"])
    frame = frame.assign(source=src, patient_key="pk", resource_id="r1", practitioner_id="r1", department_id="dp",
                         branch_id="br", service_id="sv", duration_min=20, channel="phone", confirmed=True,
                         reminder_sent=False, rescheduled_from_id=None, source_updated_at=frame["status_changed_at"],
                         as_of=d + timedelta(days=30), load_batch_id=0)
    patients = pd.DataFrame([{"source": src, "patient_key": "pk", "sex": "F", "birth_year": 1990, "flags": "{}"}])
    hist = synthetic.History(frame, patients, pd.DataFrame(columns=["source", "resource_id", "start_at",
                                                                    "duration_min", "no_overbook"]),
                             pd.DataFrame(columns=["source", "resource_id", "day", "slots", "slot_minutes",
                                                   "work_start", "work_end", "on_leave"]), d, d)
    synthetic.write(own_warehouse, hist)
    row = build_features(d, appointments=[(src, "t")], settings=settings, engine=own_warehouse,
                         persist=False, history=history).iloc[0]
    assert row["lead_days"] == 6 and not row["same_day_booking"]
    assert row["lead_hours"] == pytest.approx(6 * 24 - 4)
    assert row["prior_appointments"] == 3       # h1, h2, h4 (h3 was cancelled, h5 is today)
    assert row["prior_attended"] == 1
    assert row["prior_noshows"] == 2            # h2, h4 — not h5
    assert row["prior_cancellations"] == 1      # h3 — not h6 (cancelled after the as-of date)
    assert row["days_since_last_visit"] == 22   # h1: 20 days before as_of, target 2 days after
    assert row["days_since_last_noshow"] == 3   # h4 yesterday
    assert row["same_day_appointments"] == 1    # s1 — not s2 (booked after the as-of date)
    assert row["resource_day_booked"] == 1
    # clinic rate from the visible outcomes (h1 attended, h2 and h4 missed): 2/3
    assert row["prior_noshow_rate"] == pytest.approx((2 + 2 * 2 / 3) / (3 + 2))
    assert row["age"] == 36 and row["sex"] == "F"
    assert row["appt_weekday"] == 2 and row["booked_weekday"] == 3 and row["booked_hour"] == 15


def test_one_as_of_and_event_stream_histories_agree(own_warehouse, history, settings):
    """The as-of engine (features/asof.py: Arrow extracts and numpy, used for targets sharing one as-of date:
    a night's horizon, a backtest day) and the features SQL with per-row as-of dates (history_stream.sql,
    used for training rows) give the same frame — columns, order, dtypes, values (floats to 1e-12) — for
    horizons, for the appointments of a day as of that day (same-day bookings, cancellations), and for
    appointments of the following week as of an earlier day (booked later, cancelled, rescheduled)."""
    for offset in (9, 23, 38, 51):
        as_of = FIRST_DAY + timedelta(days=offset)
        frames = [build_features(as_of, horizon_days=10, sources=[synthetic.SOURCE], settings=settings,
                                 engine=own_warehouse, persist=False, history=h) for h in ("as_of", "stream")]
        assert len(frames[0]) > 100
        assert_same_frame(*frames)
    core = synthetic.read_core(own_warehouse)
    day = FIRST_DAY + timedelta(days=30)
    same_day = core.loc[core["start_at"].dt.date == day, ["source", "appointment_id"]]
    frames = [build_features(day, appointments=same_day, settings=settings, engine=own_warehouse, persist=False,
                             history=h) for h in ("as_of", "stream")]
    assert len(frames[0]) == len(same_day) > 10
    assert not frames[0]["lead_days"].isna().any() and (frames[0]["lead_days"] == 0).sum() > 0
    assert_same_frame(*frames)
    week = core.loc[(core["start_at"].dt.date >= day) & (core["start_at"].dt.date < day + timedelta(days=7))]
    keys = week[["source", "appointment_id"]].assign(as_of=day - timedelta(days=3))
    assert (week["booked_at"].dt.date >= day - timedelta(days=3)).sum() > 10  # not yet booked at the as-of date
    assert week["status"].str.startswith("cancelled").sum() > 0
    frames = [build_features(day, appointments=keys, settings=settings, engine=own_warehouse, persist=False,
                             history=h) for h in ("as_of", "stream")]
    assert len(frames[0]) == len(keys)
    assert_same_frame(*frames)


def test_load_features_reads_what_pandas_read_sql_reads(own_warehouse, history, settings):
    """The COPY + pyarrow reader gives the same frame (values and dtypes) as pandas.read_sql."""
    as_of = FIRST_DAY + timedelta(days=33)
    build_features(as_of, sources=[synthetic.SOURCE], settings=settings, engine=own_warehouse)
    fast = load_features(as_of=as_of, settings=settings, engine=own_warehouse)
    with own_warehouse.connect() as conn:
        slow = pd.read_sql(sa.text("SELECT * FROM features.appointment_features WHERE feature_set_version = :v "
                                   "AND as_of = :d ORDER BY start_at, source, appointment_id"), conn,
                           params={"v": definitions.FEATURE_SET_VERSION, "d": as_of})
    assert len(fast) > 50
    pd.testing.assert_frame_equal(fast, slow.drop(columns=["computed_at"]))
    labelled = load_features(training_until=as_of, with_labels=True, settings=settings, engine=own_warehouse)
    assert labelled["label"].dtype == np.int64 and set(labelled["label"]) == {0, 1}
