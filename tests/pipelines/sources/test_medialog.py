"""The Medialog connector against generated Medialog databases on real PostgreSQL, and its T-SQL.

The generator's ground truth (CLINICFLOW_TRUTH) says what really happened to every booking, so the
derived statuses can be checked path by path.
"""

from __future__ import annotations

import re
import secrets
from datetime import date, datetime, timedelta

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import mssql, postgresql

from clinicflow import db
from clinicflow.errors import ConfigError, DataQualityError, SourceUnavailableError
from clinicflow.settings import SourceConfig
from pipelines.sources import base, medialog
from pipelines.sources import medialog_generator as gen
from pipelines.sources.medialog import FORBIDDEN_COLUMNS, MedialogOptions, Queries, SourceSchema, Window

TODAY = date(2026, 3, 16)
KNOWN_NAMES = ("Секретова Агриппина Львовна", "Тайнов Евлампий Кузьмич")
KNOWN_PHONES = ("+7 901 765-43-21", "+7 902 123-98-76")
MEDIALOG_TABLES = [t.name for t in gen.schema.MEDIALOG_TABLES]


def _config(url: sa.URL | str, **options) -> SourceConfig:
    text = url.render_as_string(hide_password=False) if isinstance(url, sa.URL) else url
    return SourceConfig(name="ml", kind="medialog", url=text, options={**gen.connector_options(), **options})


def _extract(url, as_of: date = TODAY, watermarks: dict | None = None, **options) -> base.Extract:
    return medialog.extract(base.ExtractRequest(source=_config(url, **options), as_of=as_of,
                                                watermarks=watermarks or {}))


def _admin(server_url: sa.URL) -> sa.Engine:
    return sa.create_engine(server_url, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)


def _clone(server_url: sa.URL, source: sa.URL, prefix: str, name: str) -> sa.URL:
    """A copy of a generated source (CREATE DATABASE … TEMPLATE), for tests that change it."""
    db.dispose_engines()  # no open connection to the template
    target = server_url.set(database=f"{prefix}_mlc_{name}_{secrets.token_hex(2)}")
    engine = _admin(server_url)
    with engine.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{target.database}" TEMPLATE "{source.database}"'))
    engine.dispose()
    return target


def _sql(url: sa.URL, *statements: str) -> None:
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    with engine.begin() as conn:
        for statement in statements:
            conn.execute(sa.text(statement))
    engine.dispose()


def _frame(url: sa.URL, sql: str) -> pd.DataFrame:
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    with engine.connect() as conn:
        out = pd.read_sql_query(sa.text(sql), conn)
    engine.dispose()
    return out


@pytest.fixture(scope="module")
def source(server_url, test_db_prefix) -> sa.URL:
    url = server_url.set(database=f"{test_db_prefix}_ml_src")
    gen.generate(url, appointments=12_000, seed=11, today=TODAY, known_names=KNOWN_NAMES, known_phones=KNOWN_PHONES)
    db.dispose_engines()
    return url


@pytest.fixture(scope="module")
def full(source) -> base.Extract:
    return _extract(source)


@pytest.fixture(scope="module")
def truth(source) -> pd.DataFrame:
    frame = _frame(source, 'SELECT * FROM "CLINICFLOW_TRUTH"')
    frame["appointment_id"] = frame["PLANNING_ID"].astype(str)
    return frame


# --------------------------------------------------------------------------------------------------
# options and SQL (no database)


def test_options_defaults_and_clear_errors():
    options = MedialogOptions.parse({})
    assert options.evidence == ("arrival", "visit", "bill") and options.grace_days == 0
    parsed = MedialogOptions.parse({"grace_days": 2, "exclusion_leg_ids": [1, 2], "channel_by_creator": {"2": "web"}})
    assert parsed.exclusion_leg_ids == (1, 2) and parsed.channel_by_creator == {"2": "web"}
    for bad, name in (({"grace_dayz": 1}, "grace_dayz"), ({"grace_days": "two"}, "grace_days"),
                      ({"evidence": ["arrival", "telepathy"]}, "evidence"), ({"capacity": "magic"}, "capacity"),
                      ({"reread_days_before": -1}, "reread_days_before"), ({"fast_copy": "yes"}, "fast_copy"),
                      ({"sex_codes": {"0": "X"}}, "sex_codes"), ({"exclusion_leg_ids": ["a"]}, "exclusion_leg_ids")):
        with pytest.raises(ConfigError, match=name):
            MedialogOptions.parse(bad, "clinic")


def test_personal_columns_cannot_even_be_named():
    schema = SourceSchema("mssql", None, {
        "PATIENTS": {"PATIENTS_ID": "int", "NOM": "varchar", "TEL": "varchar", "POL": "int"},
        "PLANNING": {"PLANNING_ID": "int", "COMMENTAIRE": "text", "PRENOM": "varchar"},
        "SMS_MESSAGES": {"REC_ID": "int", "PHONE": "varchar", "MESSAGE": "text"},
        "MEDECINS": {"MEDECINS_ID": "int", "NOM": "varchar"},
    })
    assert set(schema.table("PATIENTS").c.keys()) == {"PATIENTS_ID", "POL"}
    assert set(schema.table("PLANNING").c.keys()) == {"PLANNING_ID"}
    assert set(schema.table("SMS_MESSAGES").c.keys()) == {"REC_ID"}
    assert "NOM" in schema.table("MEDECINS").c  # doctors' names are staff data, shown in reports


def _statement_sets() -> list[tuple[str, dict[str, sa.Select]]]:
    window = Window.for_run(TODAY, MedialogOptions())
    marks = {s: datetime(2026, 3, 15, 22, 0) for s in medialog.STREAMS}
    minimal = SourceSchema.full(drop=[(t, c) for t, c in medialog.OPTIONAL_COLUMNS])
    variants = {
        "first load": (SourceSchema.full(), MedialogOptions(), {}),
        "incremental": (SourceSchema.full(), MedialogOptions(grace_days=2), marks),
        "options": (SourceSchema.full(), MedialogOptions(reminder_statuses=(1,), exclusion_leg_ids=(1, 2)), marks),
        "minimal installation": (minimal, MedialogOptions(), marks),
        "other schema": (SourceSchema.full(schema="medialog"), MedialogOptions(schema="medialog"), marks),
    }
    return [(name, Queries(schema, options, window, wm).statements())
            for name, (schema, options, wm) in variants.items()]


@pytest.mark.parametrize(("variant", "statements"), _statement_sets(), ids=lambda v: v if isinstance(v, str) else "")
def test_every_query_is_tsql(variant, statements):
    dialect = mssql.dialect()
    assert len(statements) >= 5
    for name, stmt in statements.items():
        sql = str(stmt.compile(dialect=dialect, compile_kwargs={"literal_binds": True}))
        upper = sql.upper()
        where = f"{variant}/{name}: {sql}"
        assert re.search(r"\bLIMIT\b", upper) is None, where
        assert "::" not in sql and "ILIKE" not in upper and "INTERVAL" not in upper, where
        assert re.search(r"\b(TRUE|FALSE)\b", upper) is None, where  # T-SQL has no boolean literals
        assert '"' not in sql, where                                  # identifiers in [brackets], never "quotes"
        assert "[" in sql or name == "columns", where
        assert re.search(r"\bSELECT\b", upper) and not re.search(
            r"\b(INSERT|UPDATE|DELETE|MERGE|CREATE|ALTER|DROP|INTO|EXEC)\b", upper), where
        # Medialog identifiers are always bracket-quoted
        for identifier in re.findall(r"\b[A-Z][A-Z0-9_]{3,}\b", re.sub(r"'[^']*'", "''", sql)):
            if identifier in medialog.FORBIDDEN_COLUMNS or identifier in {"PLANNING", "PATIENTS_ID", "DATE_CONS"}:
                assert f"[{identifier}]" in sql, where
        # personal data is never selected, whatever the installation has
        for column in FORBIDDEN_COLUMNS:
            assert f"[{column}]" not in sql or name == "ref_MEDECINS", where
        # and the same statements run on PostgreSQL (the demo source)
        str(stmt.compile(dialect=postgresql.dialect(), compile_kwargs={"literal_binds": True}))
    if variant == "incremental":
        changed = str(statements["appointments"].compile(dialect=dialect, compile_kwargs={"literal_binds": True}))
        assert "DATEADD(day, 3, " in changed and " UNION " in changed
        assert "'2026-03-15 21:00:00'" in changed  # watermark minus the 60-minute overlap


# --------------------------------------------------------------------------------------------------
# against a generated source


def test_statuses_match_what_really_happened(full, truth):
    a = full.appointments
    assert list(a.columns[: len(base.APPOINTMENT_COLUMNS)]) == list(base.APPOINTMENT_COLUMNS)
    assert a["appointment_id"].is_unique and len(a) == 12_000 and full.full_snapshot
    m = a.merge(truth, on="appointment_id", how="left", validate="one_to_one")
    assert m["OUTCOME"].notna().all()
    clock = pd.Timestamp(TODAY)
    past, settled = m["start_at"] < clock, m["STATUS_AT"] < clock

    def share(mask, statuses) -> float:
        return float(m.loc[mask, "status"].isin(statuses).mean())

    assert share(past & (m["OUTCOME"] == "show"), ["fulfilled", "arrived"]) > 0.98
    assert share(past & (m["OUTCOME"] == "noshow"), ["noshow"]) > 0.95
    assert share(settled & (m["OUTCOME"] == "cancelled"), ["cancelled_unknown", "cancelled_by_clinic"]) == 1.0
    assert share(settled & (m["OUTCOME"] == "cancelled"), ["cancelled_unknown"]) > 0.95
    assert share(settled & (m["OUTCOME"] == "clinic_cancelled"), ["cancelled_by_clinic"]) == 1.0
    assert share(settled & m["OUTCOME"].isin(["rescheduled", "clinic_rescheduled"]), ["rescheduled"]) > 0.98
    assert share(settled & (m["OUTCOME"] == "deleted"), ["deleted"]) == 1.0
    assert share(~past & ~settled, ["booked"]) == 1.0
    assert (m["status"] == "arrived").sum() > 0  # an arrival mark without a visit record or a bill
    for status in base.STATUSES:
        if status not in ("cancelled_by_patient",):  # Medialog cannot tell who cancelled, unless it was leave
            assert (a["status"] == status).any(), status
    # times and links as Medialog has them
    assert (m["start_at"] == m["START_AT"]).all() and (m["booked_at"] == m["BOOKED_AT"]).all()
    moved = a[a["rescheduled_from_id"].notna()]
    sources = a.set_index("appointment_id")["status"].reindex(moved["rescheduled_from_id"])
    hard_deleted = set(truth.loc[truth["OUTCOME"] == "hard_deleted", "appointment_id"])
    assert len(moved) > 100 and (sources.dropna() == "rescheduled").mean() > 0.98
    assert set(sources[sources.isna()].index) <= hard_deleted  # a link may outlive a deleted row
    assert set(a["channel"].dropna()) <= {"web", "hub", "phone", "doctor", "staff"}
    assert a["reminder_sent"].any() and a["confirmed"].notna().all() and (~a["confirmed"]).any()
    assert a["raw_status"].str.startswith('{"CANCELLED"').all()
    # the watermark is the last change before the as-of date
    assert max(full.watermarks.values()) < datetime.combine(TODAY, datetime.min.time())


def test_no_personal_data_leaves_the_source(full):
    assert list(full.patients.columns) == [*base.PATIENT_COLUMNS, "row_problems"]
    assert full.patients["patient_source_id"].is_unique
    assert set(full.patients["patient_source_id"]) == set(full.appointments["patient_source_id"])  # only referenced
    assert full.patients["sex"].isin(["M", "F"]).all() and full.patients["birth_year"].between(1920, 2026).all()
    needles = [part for name in KNOWN_NAMES for part in name.split()] + list(KNOWN_PHONES) + [
        p.replace(" ", "").replace("-", "") for p in KNOWN_PHONES]
    for frame_name in ("appointments", "patients", "branches", "departments", "services", "resources", "slots",
                       "resource_days"):
        frame = getattr(full, frame_name)
        text = frame.astype(str).to_csv(index=False)
        for needle in needles:
            assert needle not in text, f"{needle!r} found in {frame_name}"


def test_reference_frames_and_capacity(full, source):
    assert set(full.branches["branch_id"]) == {"1", "2"}  # own branches only (ORG_TYPE = 'I')
    assert full.practitioners["practitioner_id"].astype(int).ge(1000).all()  # no users or robots
    resources = full.resources.set_index("resource_id")
    assert set(resources["kind"]) == {"practitioner", "room"}
    assert resources.loc[resources["kind"] == "room", "practitioner_id"].isna().all()
    for frame, columns in ((full.slots, base.SLOT_COLUMNS), (full.resource_days, base.RESOURCE_DAY_COLUMNS),
                           (full.resources, base.RESOURCE_COLUMNS), (full.services, base.SERVICE_COLUMNS)):
        assert list(frame.columns) == list(columns)
    slots, days = full.slots, full.resource_days
    assert slots["start_at"].min() >= pd.Timestamp(TODAY - timedelta(days=14))
    assert slots["start_at"].max() < pd.Timestamp(TODAY + timedelta(days=42))
    # every booked appointment sits on a slot of its schedule
    booked = full.appointments[full.appointments["status"] == "booked"]
    slot_keys = set(zip(slots["resource_id"], slots["start_at"], strict=True))
    assert booked.apply(lambda r: (r["resource_id"], r["start_at"]) in slot_keys, axis=1).all()
    # days on leave have no slots; per-day counts agree with the single slots
    assert (days.loc[days["on_leave"], "slots"] == 0).all() and days["on_leave"].any()
    per_day = slots.assign(day=slots["start_at"].dt.date).groupby(["resource_id", "day"]).size()
    window = days[pd.to_datetime(days["day"]) >= pd.Timestamp(TODAY - timedelta(days=14))].set_index(
        ["resource_id", "day"])["slots"]
    assert (per_day.reindex(window.index).fillna(0).astype(int) == window).all()
    # no work on a public holiday
    assert pd.Timestamp(date(2025, 5, 9)).date() not in set(days["day"])


def test_cursor_and_copy_read_the_same(source, full):
    streamed = _extract(source, fast_copy=False, chunk_rows=2_000)
    for name in ("appointments", "patients", "slots", "resource_days", "resources", "practitioners"):
        left, right = getattr(full, name), getattr(streamed, name)
        key = left.columns[0]
        pd.testing.assert_frame_equal(left.sort_values(list(left.columns[:2])).reset_index(drop=True),
                                      right.sort_values(list(right.columns[:2])).reset_index(drop=True),
                                      check_dtype=False, obj=f"{name} ({key})")
    assert streamed.watermarks == full.watermarks


def test_probe_reports_the_installation(source):
    assert "PLANNING present" in medialog.probe(_config(source))


# --------------------------------------------------------------------------------------------------
# the next day


def _row_hashes(url: sa.URL, table: str, key: str) -> pd.Series:
    frame = _frame(url, f'SELECT "{key}" AS id, md5(t::text) AS h FROM "{table}" t')
    return frame.set_index("id")["h"]


@pytest.fixture(scope="module")
def next_day(server_url, source, test_db_prefix, full):
    """A copy of the source, advanced by one day, with its snapshots before and after."""
    url = _clone(server_url, source, test_db_prefix, "next")
    before = {t: _row_hashes(url, t, k) for t, k in (("PLANNING", "PLANNING_ID"), ("MOTCONSU", "MOTCONSU_ID"),
                                                      ("FM_BILL", "FM_BILL_ID"))}
    gen.advance(url, TODAY + timedelta(days=1))
    after = {t: _row_hashes(url, t, k) for t, k in (("PLANNING", "PLANNING_ID"), ("MOTCONSU", "MOTCONSU_ID"),
                                                     ("FM_BILL", "FM_BILL_ID"))}
    return url, before, after


def test_next_day_reads_only_what_changed(next_day, full):
    url, before, after = next_day
    tomorrow = TODAY + timedelta(days=1)
    narrow = _extract(url, tomorrow, full.watermarks, reread_days_before=0, reread_days_after=0, overlap_minutes=0)
    got = set(narrow.appointments["appointment_id"].astype(int))
    assert not narrow.full_snapshot and narrow.existing_ids is not None
    # what changed, from snapshots of the database before and after the simulated day
    plan = after["PLANNING"]
    changed = set(plan.index[~plan.index.isin(before["PLANNING"].index)]) | set(
        plan.index[plan.index.isin(before["PLANNING"].index)][
            (plan[plan.index.isin(before["PLANNING"].index)] != before["PLANNING"].reindex(
                plan.index[plan.index.isin(before["PLANNING"].index)])).to_numpy()])
    changed_mc = set(after["MOTCONSU"].index) - set(before["MOTCONSU"].index) | {
        i for i in after["MOTCONSU"].index.intersection(before["MOTCONSU"].index)
        if after["MOTCONSU"][i] != before["MOTCONSU"][i]}
    new_bills = set(after["FM_BILL"].index) - set(before["FM_BILL"].index)
    rows = _frame(url, 'SELECT "PLANNING_ID", "PATIENTS_ID", "DATE_CONS" FROM "PLANNING" '
                       'WHERE "PATIENTS_ID" IS NOT NULL')
    mc = _frame(url, 'SELECT "MOTCONSU_ID", "PLANNING_ID", "PATIENTS_ID", "DATE_CONSULTATION" FROM "MOTCONSU"')
    mc = mc[mc["MOTCONSU_ID"].isin(changed_mc)]
    bills = _frame(url, 'SELECT "FM_BILL_ID", "PATIENTS_ID", "BILL_DATE" FROM "FM_BILL"')
    bills = bills[bills["FM_BILL_ID"].isin(new_bills)]
    by_day = rows.assign(DAY=rows["DATE_CONS"].dt.normalize())
    evidence_rows = set(mc["PLANNING_ID"].dropna().astype(int)) | set(by_day.merge(
        mc.assign(DAY=mc["DATE_CONSULTATION"].dt.normalize())[["PATIENTS_ID", "DAY"]], on=["PATIENTS_ID", "DAY"]
    )["PLANNING_ID"]) | set(by_day.merge(bills.assign(DAY=bills["BILL_DATE"].dt.normalize())[["PATIENTS_ID", "DAY"]],
                                          on=["PATIENTS_ID", "DAY"])["PLANNING_ID"])
    assert changed, "the simulated day changed nothing"
    assert changed <= got                        # every changed booking is read …
    assert got <= changed | evidence_rows        # … and nothing else but bookings whose evidence changed
    assert len(got) < 0.05 * len(full.appointments)
    new = set(after["PLANNING"].index) - set(before["PLANNING"].index)
    assert new and new <= got
    assert all(narrow.watermarks[k] >= full.watermarks[k] for k in full.watermarks)


def test_next_day_rereads_the_window_and_settles_yesterday(next_day, full, truth):
    url, _, _ = next_day
    tomorrow = TODAY + timedelta(days=1)
    nxt = _extract(url, tomorrow, full.watermarks)
    a = nxt.appointments.set_index("appointment_id")
    before = full.appointments.set_index("appointment_id")
    yesterday = before[(before["start_at"] >= pd.Timestamp(TODAY)) & (before["start_at"] < pd.Timestamp(tomorrow))]
    kept = yesterday[yesterday["status"] == "booked"].index
    assert len(kept) >= 3 and kept.isin(a.index).all()
    settled = a.loc[kept.intersection(a.index), "status"]
    outcome = truth.set_index("appointment_id").loc[settled.index, "OUTCOME"]
    expected = outcome.map({"show": "fulfilled", "noshow": "noshow", "cancelled": "cancelled_unknown",
                            "rescheduled": "rescheduled", "deleted": "deleted"})
    assert ((settled == expected) | ((outcome == "show") & (settled == "arrived"))).mean() > 0.8
    assert not settled.isin(["booked"]).any()  # yesterday's outcomes are known now
    lo, hi = pd.Timestamp(tomorrow - timedelta(days=14)), pd.Timestamp(tomorrow + timedelta(days=14))
    in_window = before[(before["start_at"] >= lo) & (before["start_at"] < hi)].index
    assert in_window.isin(a.index).mean() > 0.99
    assert len(a) < 0.2 * len(before)


def test_hard_deletes_are_found_by_reconciliation(next_day, full):
    url, _, _ = next_day
    tomorrow = TODAY + timedelta(days=1)
    a = full.appointments
    future = a[(a["start_at"] > pd.Timestamp(tomorrow + timedelta(days=3))) & (a["status"] == "booked")]
    old = a[a["start_at"] < pd.Timestamp(TODAY - timedelta(days=200))]
    gone = list(future["appointment_id"].iloc[:3]) + list(old["appointment_id"].iloc[:1])
    _sql(url, f'DELETE FROM "PLANNING" WHERE "PLANNING_ID" IN ({", ".join(gone)})')  # a DBA cleans up duplicates
    nxt = _extract(url, tomorrow, full.watermarks)
    lo, hi = nxt.reconcile_window
    assert lo <= tomorrow < hi
    existing = set(nxt.existing_ids)
    assert not set(gone[:3]) & existing
    assert not set(gone) & set(nxt.appointments["appointment_id"])
    in_window = a[(a["start_at"] >= pd.Timestamp(lo)) & (a["start_at"] < pd.Timestamp(hi))]["appointment_id"]
    missing = set(in_window) - existing
    assert set(gone[:3]) <= missing and len(missing) < 0.01 * len(in_window) + 3  # the deletes, and the generator's


# --------------------------------------------------------------------------------------------------
# what a clinic's DBA and a clinic's installation may throw at the connector


def test_runs_under_a_select_only_role(server_url, source, full, test_db_prefix):
    role = f"{test_db_prefix}_ro"
    admin = _admin(server_url)
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE ROLE "{role}" LOGIN'))
    try:
        tables = ", ".join(f'"{t}"' for t in MEDIALOG_TABLES)
        _sql(source, f'GRANT USAGE ON SCHEMA public TO "{role}"', f'GRANT SELECT ON {tables} TO "{role}"',
             f'REVOKE TEMPORARY ON DATABASE "{source.database}" FROM PUBLIC')  # as a careful DBA does
        as_role = source.set(username=role, password=None)
        extract = _extract(as_role)
        pd.testing.assert_frame_equal(extract.appointments, full.appointments)
        engine = sa.create_engine(as_role, poolclass=sa.pool.NullPool)
        with engine.connect() as conn:  # the role really can do nothing else
            for statement in ('INSERT INTO "PLANNING" ("PLANNING_ID", "PL_SUBJ_ID", "DATE_CONS", "HEURE", "DUREE") '
                              "VALUES (1, 1, now(), 900, 20)", 'SELECT 1 FROM "CLINICFLOW_TRUTH"',
                              'CREATE TEMP TABLE x (a int)'):
                with pytest.raises(sa.exc.ProgrammingError, match="permission denied"):
                    conn.execute(sa.text(statement))
                conn.rollback()
        engine.dispose()
        # a table the login may not read is invisible in INFORMATION_SCHEMA: said loudly, not guessed
        _sql(source, f'REVOKE SELECT ON "FM_BILL" FROM "{role}"')
        partial = _extract(as_role)
        assert any("FM_BILL" in p and "may not read" in p for p in partial.problems)
        assert not any("FM_BILL" in p for p in full.problems)
    finally:
        _sql(source, f'REVOKE ALL ON {", ".join(chr(34) + t + chr(34) for t in MEDIALOG_TABLES)} FROM "{role}"',
             f'REVOKE USAGE ON SCHEMA public FROM "{role}"',
             f'GRANT TEMPORARY ON DATABASE "{source.database}" TO PUBLIC')
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP ROLE "{role}"'))
        admin.dispose()


def test_an_older_installation_without_optional_columns(server_url, source, truth, test_db_prefix):
    url = _clone(server_url, source, test_db_prefix, "old")
    _sql(url,
         'ALTER TABLE "PLANNING" DROP COLUMN "PATIENT_ARRIVEE", DROP COLUMN "ARRIVE_DATE", DROP COLUMN "NOT_ACCEPTED", '
         'DROP COLUMN "SOURCE_PLANNING_ID", DROP COLUMN "DATE_START", DROP COLUMN "DATE_END", '
         'DROP COLUMN "CREATE_DATE_TIME", DROP COLUMN "MEDECINS_CREATOR_ID"',
         'ALTER TABLE "PL_SUBJ" DROP COLUMN "MEDECINS_ID", DROP COLUMN "MEDDEP_ID"',
         'ALTER TABLE "PATIENTS" DROP COLUMN "NE_LE"', 'ALTER TABLE "MOTCONSU" DROP COLUMN "PLANNING_ID"',
         'DROP TABLE "SMS_MESSAGES"', 'DROP TABLE "SPECIALISATION"')
    extract = _extract(url)
    a = extract.appointments
    assert len(a) == 12_000
    assert a["confirmed"].isna().all() and a["reminder_sent"].isna().all() and a["rescheduled_from_id"].isna().all()
    assert a["practitioner_id"].isna().all() and a["channel"].isna().all()
    assert extract.patients["birth_year"].notna().all()  # from GOD_ROGDENIQ
    m = a.merge(truth, on="appointment_id")
    past = m["start_at"] < pd.Timestamp(TODAY)
    # attendance still judged from visit records (by patient and day) and bills
    assert (m.loc[past & (m["OUTCOME"] == "noshow"), "status"] == "noshow").mean() > 0.9
    assert (m.loc[past & (m["OUTCOME"] == "show"), "status"] == "fulfilled").mean() > 0.9
    assert (m.loc[m["OUTCOME"] == "rescheduled", "status"] != "rescheduled").all()

    _sql(url, 'ALTER TABLE "PLANNING" DROP COLUMN "KRN_MODIFY_DATE", DROP COLUMN "DUREE"')
    again = _extract(url, watermarks={"planning": datetime(2026, 3, 15)})
    assert again.full_snapshot and len(again.appointments) == 12_000
    assert any("KRN_MODIFY_DATE" in p for p in again.problems)
    assert again.appointments["duration_min"].notna().all()  # from PL_EXAM.DUREE


def test_unknown_codes_and_unreadable_times_are_reported(server_url, source, full, test_db_prefix):
    url = _clone(server_url, source, test_db_prefix, "odd")
    ids = full.appointments["appointment_id"].iloc[[10, 20, 30, 40]].tolist()
    _sql(url, f'UPDATE "PLANNING" SET "STATUS" = 7 WHERE "PLANNING_ID" IN ({", ".join(ids[:3])})',
         f'UPDATE "PLANNING" SET "HEURE" = 2575, "DATE_START" = NULL WHERE "PLANNING_ID" = {ids[3]}',
         'UPDATE "PATIENTS" SET "NE_LE" = NULL, "GOD_ROGDENIQ" = \'около 1950\' WHERE "PATIENTS_ID" = '
         '(SELECT min("PATIENTS_ID") FROM "PLANNING")')
    extract = _extract(url)
    a = extract.appointments.set_index("appointment_id")
    assert a.loc[ids[:3], "status"].isna().all()
    assert a.loc[ids[:3], "raw_status"].str.contains('"STATUS":7').all()
    assert any("STATUS" in p and "7" in p for p in extract.problems)
    assert pd.isna(a.loc[ids[3], "start_at"]) and "HEURE=2575" in a.loc[ids[3], "row_problems"]
    bad = extract.patients[extract.patients["row_problems"].notna()]
    assert len(bad) == 1 and "is not a year" in bad["row_problems"].iloc[0] and pd.isna(bad["birth_year"].iloc[0])


def test_unreachable_or_wrong_databases(server_url, scratch_database, test_db_prefix):
    for url in ("postgresql+psycopg2://postgres@127.0.0.1:1/medialog",
                "mssql+pymssql://ro_user:secret@127.0.0.1:1/medialog",
                server_url.set(database=f"{test_db_prefix}_no_such_db")):
        with pytest.raises(SourceUnavailableError, match="cannot read the Medialog database") as caught:
            _extract(url, connect_timeout_s=3)
        assert "secret" not in str(caught.value) and "next run" in str(caught.value)
    with pytest.raises(DataQualityError, match=r"PLANNING\.PLANNING_ID"):
        _extract(scratch_database)
    with pytest.raises(ConfigError, match="unknown Medialog option"):
        _extract(scratch_database, colour="blue")


def test_frames_are_what_the_loader_expects(full):
    a = full.appointments
    assert np.issubdtype(a["start_at"].dtype, np.datetime64) and str(a["duration_min"].dtype) == "Int64"
    assert a["status"].dropna().isin(base.STATUSES).all()
    assert a["patient_source_id"].map(type).eq(str).all() and a["appointment_id"].map(type).eq(str).all()
    assert full.existing_ids is None and full.reconcile_window is None  # a full snapshot needs no reconciliation
    assert set(full.watermarks) == {"planning", "motconsu", "fm_bill"}
