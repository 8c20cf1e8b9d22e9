"""The scoring stage with a real champion from the MLflow registry, on real PostgreSQL."""

from __future__ import annotations

from datetime import date, timedelta

import pandas as pd
import pytest
import sqlalchemy as sa

from clinicflow.errors import ClinicFlowError
from scoring.stage import run_scoring
from tests.scoring.champion import AS_OF


def test_missing_champion_says_what_to_do(scratch_database, settings_env):
    # A warehouse (and so an MLflow store, <database>_mlflow) of its own: the shared scoring warehouse
    # gets its champion from whichever test trains first, so it cannot be relied on to have none.
    from clinicflow import migrations

    migrations.upgrade(scratch_database)
    settings_env(database_url=scratch_database.render_as_string(hide_password=False))
    with pytest.raises(ClinicFlowError, match=r"no models:/noshow@champion .*clinicflow train"):
        run_scoring(AS_OF)


def test_scores_the_horizon_with_reasons_and_replaces_on_rerun(trained):
    from clinicflow import db

    assert trained.get("promoted") or trained.get("champion_version") or trained.get("model_version")
    first = run_scoring(AS_OF)
    engine = db.get_engine()
    with engine.connect() as conn:
        expected = conn.execute(sa.text(
            "SELECT count(*) FROM core.appointment WHERE start_at >= :d AND start_at < :e AND booked_at < :d "
            "AND NOT (status IN ('cancelled_by_patient', 'cancelled_by_clinic', 'cancelled_unknown', "
            "'rescheduled', 'deleted') AND coalesce(status_changed_at, start_at) < :d)"),
            {"d": AS_OF, "e": AS_OF + timedelta(days=7)}).scalar()
        rows = conn.execute(sa.text("SELECT * FROM reporting.appointment_risk WHERE as_of = :d"),
                            {"d": AS_OF}).mappings().all()
    assert first["appointments_scored"] == expected == len(rows) > 50
    assert {r["model_version"] for r in rows} == {first["model_version"]}
    assert all(AS_OF <= r["start_at"].date() < AS_OF + timedelta(days=7) for r in rows)
    assert all(0 <= r["probability"] <= 1 for r in rows)
    for r in rows:
        band = "high" if r["probability"] >= 0.30 else "medium" if r["probability"] >= 0.15 else "low"
        assert r["risk_band"] == band
    assert sum(r["reason_1"] is not None for r in rows) > 0.9 * len(rows)
    reasons = {x for r in rows for x in (r["reason_1"], r["reason_2"], r["reason_3"]) if x}
    assert any(x.startswith("booked ") and "ahead" in x for x in reasons), sorted(reasons)[:20]
    # idempotent per as-of: a re-run replaces the rows
    again = run_scoring(AS_OF)
    with engine.connect() as conn:
        count = conn.execute(sa.text("SELECT count(*) FROM reporting.appointment_risk WHERE as_of = :d"),
                             {"d": AS_OF}).scalar()
    assert count == len(rows) == again["appointments_scored"]
    # the features the model saw are stored once for the date (the re-run replaced them)
    from features import build_features, load_features

    stored = load_features(as_of=AS_OF)
    assert len(stored) == len(rows)
    computed = build_features(AS_OF, persist=False)
    key = ["source", "appointment_id"]
    pd.testing.assert_frame_equal(stored.sort_values(key).reset_index(drop=True)[computed.columns],
                                  computed.sort_values(key).reset_index(drop=True))
    # the risk list view shows this run
    with engine.connect() as conn:
        listed = conn.execute(sa.text("SELECT count(*) FROM reporting.risk_next_week")).scalar()
    assert listed == len(rows)


def test_longer_lead_time_phrase_matches_the_feature(trained):
    from clinicflow import db

    with db.get_engine().connect() as conn:
        pairs = conn.execute(sa.text(
            "SELECT r.reason_1, r.reason_2, r.reason_3, f.lead_days FROM reporting.appointment_risk r "
            "JOIN features.appointment_features f ON f.source = r.source AND f.appointment_id = r.appointment_id "
            "AND f.as_of = r.as_of WHERE r.as_of = :d"), {"d": AS_OF}).all()
    checked = 0
    for *reasons, lead in pairs:
        for text in reasons:
            if text and text.startswith("booked ") and text.endswith(" ahead") and "hours" not in text:
                assert text == f"booked {lead} day{'s' if lead != 1 else ''} ahead"
                checked += 1
    assert checked > 0


def test_russian_reasons(trained, monkeypatch):
    from clinicflow.settings import get_settings

    monkeypatch.setenv("CLINICFLOW_REASONS_LANGUAGE", "ru")
    get_settings.cache_clear()
    try:
        run_scoring(AS_OF)
        from clinicflow import db

        with db.get_engine().connect() as conn:
            reasons = conn.execute(sa.text("SELECT reason_1 FROM reporting.appointment_risk WHERE as_of = :d "
                                           "AND reason_1 IS NOT NULL"), {"d": AS_OF}).scalars().all()
        assert reasons and all(any("а" <= ch <= "я" for ch in text.lower()) for text in reasons)
    finally:
        monkeypatch.delenv("CLINICFLOW_REASONS_LANGUAGE")
        get_settings.cache_clear()
        run_scoring(AS_OF)


def test_nothing_booked_scores_nothing(trained):
    summary = run_scoring(date(2030, 1, 7))
    assert summary["appointments_scored"] == 0


def test_reasons_only_for_the_configured_bands(trained, monkeypatch):
    from clinicflow import db
    from clinicflow.settings import get_settings

    monkeypatch.setenv("CLINICFLOW_REASONS_MIN_BAND", "high")
    get_settings.cache_clear()
    try:
        run_scoring(AS_OF)
        with db.get_engine().connect() as conn:
            rows = conn.execute(sa.text("SELECT risk_band, reason_1 FROM reporting.appointment_risk WHERE as_of = :d"),
                                {"d": AS_OF}).all()
        assert any(band == "high" for band, _ in rows)
        assert all(reason is None for band, reason in rows if band != "high")
        assert all(reason is not None for band, reason in rows if band == "high")
    finally:
        monkeypatch.delenv("CLINICFLOW_REASONS_MIN_BAND")
        get_settings.cache_clear()
        run_scoring(AS_OF)
