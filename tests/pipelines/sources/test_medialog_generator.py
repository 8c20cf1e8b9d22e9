"""The Medialog demo/test generator: determinism, realism of the no-show mechanism, the Medialog
encodings in the database, and ``advance()`` playing one day at a time."""

from __future__ import annotations

import secrets
from datetime import date, datetime, timedelta

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from sklearn.linear_model import LogisticRegression

from clinicflow import db
from clinicflow.errors import ClinicFlowError, ConfigError
from pipelines.sources import medialog_generator as gen
from pipelines.sources import medialog_grid as grid
from pipelines.sources.medialog_model import EFFECTS, HolidayCalendar

TODAY = date(2026, 3, 16)  # a Monday
DAY = gen.DAY
CLOCK = grid.day_number(TODAY) * DAY
KNOWN_NAMES = ("Тестова Анфиса Генриховна", "Проверкин Ипполит Фомич")
KNOWN_PHONES = ("+7 999 111-22-33", "+7 999 444-55-66")
MEDIALOG_TABLES = [t.name for t in gen.schema.MEDIALOG_TABLES]


@pytest.fixture(scope="module")
def timeline() -> gen.Timeline:
    return gen.build_timeline(gen.GeneratorConfig(appointments=30_000, today=TODAY, seed=3))


def _past_kept(tl: gen.Timeline) -> np.ndarray:
    c = tl.bookings.cols
    return (c["KEPT"] == 1) & (c["START"] < CLOCK)


def _url(server_url: sa.URL, prefix: str, name: str) -> sa.URL:
    return server_url.set(database=f"{prefix}_ml_{name}_{secrets.token_hex(2)}")


def _fingerprint(url: sa.URL, tables: list[str]) -> dict[str, str]:
    """md5 of every table's rows in key order."""
    out = {}
    with db.engine_for_url(url).connect() as conn:
        for table in tables:
            key = conn.execute(sa.text(
                "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid "
                "AND a.attnum = ANY(i.indkey) WHERE i.indrelid = CAST(:t AS regclass) AND i.indisprimary"),
                {"t": f'"{table}"'}).scalars().all()
            order = ", ".join(f'"{k}"' for k in key)
            out[table] = conn.execute(sa.text(
                f'SELECT md5(coalesce(string_agg(t::text, \'|\' ORDER BY {order}), \'\')) FROM "{table}" t')).scalar()
    return out


@pytest.fixture(scope="module")
def source(server_url, test_db_prefix) -> sa.URL:
    url = _url(server_url, test_db_prefix, "gen")
    gen.generate(url, appointments=12_000, seed=5, today=TODAY, known_names=KNOWN_NAMES, known_phones=KNOWN_PHONES,
                 hard_delete_rate=0.02)
    return url


def _frame(url: sa.URL, sql: str, **params) -> pd.DataFrame:
    with db.engine_for_url(url).connect() as conn:
        return pd.read_sql_query(sa.text(sql), conn, params=params)


# --------------------------------------------------------------------------------------------------
# the timeline (no database)


def test_same_seed_same_timeline_other_seed_other_timeline(timeline):
    again = gen.build_timeline(gen.GeneratorConfig(appointments=30_000, today=TODAY, seed=3))
    pd.testing.assert_frame_equal(gen.timeline_frame(timeline), gen.timeline_frame(again))
    np.testing.assert_array_equal(timeline.bookings.cols["P"], again.bookings.cols["P"])
    other = gen.build_timeline(gen.GeneratorConfig(appointments=30_000, today=TODAY, seed=4))
    assert not gen.timeline_frame(other).equals(gen.timeline_frame(timeline))


def test_no_show_rate_and_upper_bound_are_realistic(timeline):
    c, kept = timeline.bookings.cols, _past_kept(timeline)
    assert 0.12 < c["NOSHOW"][kept].mean() < 0.16           # configured 14 %
    assert 0.70 < timeline.stats["truth_auc_past"] < 0.85    # what published no-show models reach
    past = c["START"] < CLOCK
    cancelled = (c["CANCEL"][past] < gen.NEVER).mean()
    assert 0.10 < cancelled < 0.30
    assert 0.70 < timeline.stats["occupancy_past"] < 0.95


def test_effects_have_the_size_the_mechanism_states(timeline):
    """A plain logistic regression on the realised outcomes recovers the main effects."""
    c, kept = timeline.bookings.cols, _past_kept(timeline)
    y = c["NOSHOW"][kept] == 1
    lead = (c["START"] - c["BOOKED"])[kept] / DAY
    birth = timeline.patients["BIRTH_DAY"].to_numpy()[c["PATIENT"]][kept]
    age = (c["START"][kept] // DAY - birth) / 365.25
    reminded = c["SMS_OK"][kept] == 1
    x = np.column_stack([lead < 1, np.log(np.maximum(lead, 1)), reminded, (age >= 18) & (age < 30), age >= 65])
    coef = LogisticRegression(C=1e6, max_iter=1000).fit(x, y).coef_[0]
    expected = [EFFECTS.same_day, EFFECTS.per_log_lead_day, EFFECTS.reminder, EFFECTS.age_18_29, EFFECTS.age_65_plus]
    for got, want, name in zip(coef, expected, ["same day", "log lead", "reminder", "age 18-29", "age 65+"],
                               strict=True):
        assert abs(got - want) < 0.3, f"{name}: recovered {got:.2f}, mechanism {want:.2f}"
    # lead time is the strongest observable: same-day vs two weeks or more, in realised rates
    assert y[lead >= 14].mean() > 2.5 * y[lead < 1].mean()


def test_history_and_holidays_carry_signal(timeline):
    c, kept = timeline.bookings.cols, _past_kept(timeline)
    idx = np.flatnonzero(kept)
    order = idx[np.lexsort((c["START"][idx], c["PATIENT"][idx]))]
    patient, noshow = c["PATIENT"][order], c["NOSHOW"][order]
    earlier = pd.Series(noshow).groupby(patient).cumsum().to_numpy() - noshow
    first = np.r_[True, patient[1:] != patient[:-1]]
    assert noshow[earlier > 0].mean() > 1.4 * noshow[(earlier == 0) & ~first].mean()
    holidays = HolidayCalendar.for_years(2023, 2026)
    near = holidays.effect(c["START"][kept] // DAY) > 0
    assert c["NOSHOW"][kept][near].mean() > c["NOSHOW"][kept][~near].mean()
    # the clinic is closed on public holidays
    assert not holidays.is_holiday(c["START"][c["KEPT"] == 1] // DAY).any()


def test_bookings_fit_the_grid_and_never_double_book(timeline):
    c = timeline.bookings.cols
    kept = c["KEPT"] == 1
    key = c["RES"][kept] * (1 << 36) + c["START"][kept]
    assert len(np.unique(key)) == len(key)
    frames = timeline.clinic.frames
    first, last = date(1970, 1, 1) + timedelta(days=int(c["START"].min() // DAY)), TODAY + timedelta(days=200)
    slots = grid.expand_slots(grid.resolve_days(frames["PL_DAY"], frames["PL_AGEND"], first, last),
                              frames["PL_SUBJ"], frames["PL_INT"])
    res_index = pd.Series(np.arange(len(timeline.clinic.resources)), index=timeline.clinic.resources["PL_SUBJ_ID"])
    grid_keys = set((res_index.loc[slots["PL_SUBJ_ID"]].to_numpy() * (1 << 36) + slots["START_MIN"]).tolist())
    assert all(k in grid_keys for k in key.tolist())
    # reschedules: the new booking is made when the old one is cancelled, for the same patient
    src = c["SOURCE"]
    linked = np.flatnonzero(src >= 0)
    assert len(linked) > 100
    assert np.all(c["CANCEL"][src[linked]] == c["BOOKED"][linked] - 1)
    assert np.all(c["PATIENT"][src[linked]] == c["PATIENT"][linked])


def test_future_bookings_for_the_next_weeks(timeline):
    c = timeline.bookings.cols
    visible_future = (c["BOOKED"] < CLOCK) & (c["START"] >= CLOCK)
    days_ahead = (c["START"][visible_future] - CLOCK) // DAY
    assert visible_future.sum() > 200
    assert days_ahead.max() >= 28 and (days_ahead < 7).sum() > days_ahead.size / 3


def test_config_is_validated():
    with pytest.raises(ConfigError, match="appointments"):
        gen.GeneratorConfig(appointments=10, today=TODAY).validate()
    with pytest.raises(ConfigError, match="history_days"):
        gen.GeneratorConfig(appointments=10_000, today=TODAY, history_days=300).validate()
    with pytest.raises(ConfigError, match="known_names"):
        gen.GeneratorConfig(appointments=10_000, today=TODAY, known_names=("Одинслово",)).validate()


# --------------------------------------------------------------------------------------------------
# the database


def test_same_seed_same_database(source, server_url, test_db_prefix):
    twin = _url(server_url, test_db_prefix, "twin")
    gen.generate(twin, appointments=12_000, seed=5, today=TODAY, known_names=KNOWN_NAMES, known_phones=KNOWN_PHONES,
                 hard_delete_rate=0.02)
    tables = [*MEDIALOG_TABLES, "CLINICFLOW_TRUTH", "CLINICFLOW_TIMELINE"]
    assert _fingerprint(twin, tables) == _fingerprint(source, tables)


def test_medialog_tables_and_encodings(source):
    with db.engine_for_url(source).connect() as conn:
        names = set(sa.inspect(conn).get_table_names())
        assert set(MEDIALOG_TABLES) <= names  # quoted UPPERCASE identifiers
        count = conn.execute(sa.text('SELECT count(*) FROM "PLANNING" WHERE "PATIENTS_ID" IS NOT NULL')).scalar()
        assert count == 12_000
    planning = _frame(source, 'SELECT * FROM "PLANNING"')
    heure = planning["HEURE"]
    assert ((heure % 100 < 60) & (heure // 100 < 24)).all()
    assert (planning["DATE_CONS"] == planning["DATE_CONS"].dt.normalize()).all()
    cancelled = planning["CANCELLED"]
    assert cancelled.isna().any() and (cancelled == 1).any() and (cancelled == 0).any()  # NULL happens
    assert planning["DATE_START"].isna().any() and planning["DATE_START"].notna().any()  # older rows lack it
    assert (planning["KRN_MODIFY_DATE"] >= planning["KRN_CREATE_DATE"]).all()
    assert (planning["NOT_ACCEPTED"] == 1).any() and (planning["PATIENT_ARRIVEE"] == 1).any()
    # a reschedule points at a cancelled booking of the same patient
    moved = planning[planning["SOURCE_PLANNING_ID"] > 0].merge(
        planning, left_on="SOURCE_PLANNING_ID", right_on="PLANNING_ID", suffixes=("", "_SRC"))
    assert len(moved) > 50
    assert (moved["CANCELLED_SRC"] == 1).all() and (moved["PATIENTS_ID"] == moved["PATIENTS_ID_SRC"]).all()
    mc = _frame(source, 'SELECT * FROM "MOTCONSU"')
    assert mc["PLANNING_ID"].isna().any() and mc["PLANNING_ID"].notna().any() and (mc["REC_STATUS"] == "D").any()
    sms = _frame(source, 'SELECT "REC_TYPE", "STATUS", "SENDED_DATETIME" FROM "SMS_MESSAGES"')
    assert (sms["REC_TYPE"] == "PLANNING_AUTO_NOTIFY").sum() > 1000 and (sms["STATUS"] == 2).any()
    # fake people with the known names and phones
    people = _frame(source, 'SELECT "NOM", "PRENOM", "PATRONYME", "TEL" FROM "PATIENTS"')
    full = people["NOM"] + " " + people["PRENOM"] + " " + people["PATRONYME"].fillna("")
    assert set(KNOWN_NAMES) <= set(full.str.strip()) and set(KNOWN_PHONES) <= set(people["TEL"])
    assert planning["NOM"].isin(["Тестова", "Проверкин"]).any()  # PLANNING carries names too, as in Medialog
    # the ground truth is kept apart
    truth = _frame(source, 'SELECT * FROM "CLINICFLOW_TRUTH"')
    assert truth["PLANNING_ID"].is_unique and len(truth) > 12_000
    assert (truth["OUTCOME"] == "hard_deleted").any()
    assert not truth["PLANNING_ID"][truth["OUTCOME"] == "hard_deleted"].isin(planning["PLANNING_ID"][
        planning["DATE_CONS"] < pd.Timestamp(TODAY) - pd.Timedelta(days=30)]).any()


def _nothing_after(url: sa.URL, clock: date) -> None:
    limit = datetime.combine(clock, datetime.min.time())
    checks = {"PLANNING": "KRN_MODIFY_DATE", "MOTCONSU": "KRN_MODIFY_DATE", "FM_BILL": "BILL_DATE",
              "SMS_MESSAGES": "CREATE_DATE", "PATIENTS": "KRN_CREATE_DATE", "PL_EXCL": "KRN_CREATE_DATE"}
    with db.engine_for_url(url).connect() as conn:
        for table, column in checks.items():
            latest = conn.execute(sa.text(f'SELECT max("{column}") FROM "{table}"')).scalar()
            assert latest < limit, f"{table}.{column} = {latest} is not before the clock {clock}"


def test_nothing_from_after_the_clock_is_visible(source):
    _nothing_after(source, TODAY)


def test_advance_plays_one_day_of_changes(server_url, test_db_prefix):
    url = _url(server_url, test_db_prefix, "adv")
    gen.generate(url, appointments=10_000, seed=8, today=TODAY, hard_delete_rate=0.05)
    before = _frame(url, 'SELECT "PLANNING_ID", "KRN_MODIFY_DATE" FROM "PLANNING"')
    day = TODAY + timedelta(days=1)
    summary = gen.advance(url, day)
    after = _frame(url, 'SELECT "PLANNING_ID", "KRN_CREATE_DATE", "KRN_MODIFY_DATE", "DATE_CONS", "PATIENT_ARRIVEE", '
                        '"CANCELLED" FROM "PLANNING"')
    merged = after.merge(before, on="PLANNING_ID", how="left", suffixes=("", "_BEFORE"))
    changed = merged[merged["KRN_MODIFY_DATE"] != merged["KRN_MODIFY_DATE_BEFORE"]]
    start, end = pd.Timestamp(TODAY), pd.Timestamp(day)
    assert len(changed) == summary.stats["changed_bookings"] - summary.rows["hard_deleted"]
    assert ((changed["KRN_MODIFY_DATE"] >= start) & (changed["KRN_MODIFY_DATE"] < end)).all()
    created = merged[merged["KRN_MODIFY_DATE_BEFORE"].isna()]
    assert len(created) > 5 and ((created["KRN_CREATE_DATE"] >= start) & (created["KRN_CREATE_DATE"] < end)).all()
    unchanged = merged[merged["KRN_MODIFY_DATE"] == merged["KRN_MODIFY_DATE_BEFORE"]]
    assert len(unchanged) > 0.9 * len(before)
    # that day's patients came (or not), and the clock moved
    that_day = after[after["DATE_CONS"] == start]
    assert (that_day["PATIENT_ARRIVEE"] == 1).sum() > 0
    assert gen.read_state(url)["CLOCK"] == day
    vanished = set(before["PLANNING_ID"]) - set(after["PLANNING_ID"])
    assert len(vanished) == summary.rows["hard_deleted"]
    _nothing_after(url, day)


def test_two_days_at_once_equal_two_single_days(server_url, test_db_prefix):
    one, two = _url(server_url, test_db_prefix, "a1"), _url(server_url, test_db_prefix, "a2")
    for url in (one, two):
        gen.generate(url, appointments=5_000, seed=9, today=TODAY)
    gen.advance(one, TODAY + timedelta(days=2))
    gen.advance(two, TODAY + timedelta(days=1))
    gen.advance(two, TODAY + timedelta(days=2))
    tables = [*MEDIALOG_TABLES, "CLINICFLOW_TIMELINE"]
    assert _fingerprint(one, tables) == _fingerprint(two, tables)


def test_advance_refuses_the_past_and_beyond_the_horizon(source, server_url, test_db_prefix):
    with pytest.raises(ConfigError, match="backwards"):
        gen.advance(source, TODAY - timedelta(days=1))
    with pytest.raises(ConfigError, match="horizon-days"):
        gen.advance(source, TODAY + timedelta(days=400))
    assert gen.advance(source, TODAY).stats == {"changed": 0}
    empty = _url(server_url, test_db_prefix, "empty")
    db.ensure_database(empty)
    with pytest.raises(ClinicFlowError, match="generate"):
        gen.advance(empty, TODAY)


def test_ensure_reuses_advances_or_regenerates(server_url, test_db_prefix):
    url = _url(server_url, test_db_prefix, "ens")
    first = gen.ensure(url, appointments=3_000, seed=1, today=TODAY)
    assert first.rows["PLANNING"] == 3_000
    assert gen.ensure(url, appointments=3_000, seed=1, today=TODAY).stats == {"unchanged": True}
    moved = gen.ensure(url, appointments=3_000, seed=1, today=TODAY + timedelta(days=1))
    assert moved.clock == (TODAY + timedelta(days=1)).isoformat() and "changed_bookings" in moved.stats
    again = gen.ensure(url, appointments=4_000, seed=1, today=TODAY)
    assert again.rows["PLANNING"] == 4_000


def test_truth_upper_bound_and_cli(source, capsys):
    bound = gen.truth_upper_bound(source)
    assert 0.70 < bound["auc"] < 0.85 and 0.10 < bound["noshow_rate"] < 0.18 and bound["n"] > 8_000
    from clinicflow.cli import main

    url = source.render_as_string(hide_password=False)
    assert main(["medialog-demo", "status", "--url", url]) == 0
    assert "AUC" in capsys.readouterr().out
    assert main(["medialog-demo", "source-config", "--url", url]) == 0
    entry = __import__("json").loads(capsys.readouterr().out)[0]
    assert entry["kind"] == "medialog" and entry["options"]["reminder_rec_types"] == ["PLANNING_AUTO_NOTIFY"]
