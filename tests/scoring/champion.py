"""A warehouse of its own with a real champion, made once per test session and shared by the scoring
and DAG tests: generated history in core, features as of AS_OF, a LightGBM ``noshow`` champion in
the MLflow store next to that warehouse (so no other test's registry or rows interfere)."""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from datetime import date

import pytest
import sqlalchemy as sa

AS_OF = date(2026, 3, 16)  # a Monday: the horizon holds a week of booked appointments
_made: dict[str, object] = {}


def _database(server_url: sa.URL, prefix: str) -> sa.URL:
    if "url" not in _made:
        from clinicflow import migrations

        url = server_url.set(database=f"{prefix}_sc_{secrets.token_hex(3)}")
        migrations.upgrade(url)
        _made["url"] = url
    return _made["url"]  # type: ignore[return-value]


@contextlib.contextmanager
def environment(server_url: sa.URL, prefix: str) -> Iterator[sa.URL]:
    """CLINICFLOW_DATABASE_URL pointing at the shared scoring warehouse while inside."""
    from clinicflow.settings import get_settings

    url = _database(server_url, prefix)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CLINICFLOW_DATABASE_URL", url.render_as_string(hide_password=False))
        mp.setenv("CLINICFLOW_HORIZON_DAYS", "7")
        get_settings.cache_clear()
        try:
            yield url
        finally:
            get_settings.cache_clear()


def train_once() -> dict:
    """History, features and a champion (inside :func:`environment`); trained once per session."""
    if "trained" in _made:
        return _made["trained"]  # type: ignore[return-value]
    assert sa.make_url(os.environ["CLINICFLOW_DATABASE_URL"]).database == _made["url"].database  # type: ignore[union-attr]
    from clinicflow import db
    from features import run_features_stage
    from tests.features import synthetic
    from training.stage import run_training

    engine = db.get_engine()
    history = synthetic.generate(date(2025, 12, 1), weeks=17, seed=3, patients=500, doctors=4)
    synthetic.write(engine, history)
    with engine.begin() as conn:  # outcomes on or after the as-of date are not known yet
        conn.execute(sa.text("UPDATE core.appointment SET status = 'booked' WHERE start_at >= :d "
                             "AND status IN ('arrived', 'fulfilled', 'noshow')"), {"d": AS_OF})
        conn.execute(sa.text("INSERT INTO core.branch (source, branch_id, name) VALUES ('syn', 'b0', 'North'), "
                             "('syn', 'b1', 'South') ON CONFLICT DO NOTHING"))
    run_features_stage(AS_OF)
    _made["trained"] = run_training(AS_OF, overrides={"algorithms": ["lightgbm"], "trials": 0, "folds": 2,
                                                      "fold_days": 7, "embargo_days": 0, "gate_days": 7}, force=True)
    return _made["trained"]  # type: ignore[return-value]
