"""A warehouse and MLflow store of their own for the scoring tests, with a real champion trained on a
small generated clinic (so no other test's registry or rows interfere)."""

from __future__ import annotations

import secrets
from datetime import date

import pytest
import sqlalchemy as sa

AS_OF = date(2026, 3, 16)  # a Monday: the horizon holds a week of booked appointments


@pytest.fixture(scope="session")
def scoring_env(server_url: sa.URL, test_db_prefix: str):
    """CLINICFLOW_DATABASE_URL of a fresh migrated warehouse (MLflow and Optuna next to it, named after it)."""
    from clinicflow import db, migrations
    from clinicflow.settings import get_settings

    name = f"{test_db_prefix}_sc_{secrets.token_hex(3)}"
    url = server_url.set(database=name)
    migrations.upgrade(url)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CLINICFLOW_DATABASE_URL", url.render_as_string(hide_password=False))
        mp.setenv("CLINICFLOW_HORIZON_DAYS", "7")
        get_settings.cache_clear()
        yield url
    get_settings.cache_clear()
    db.dispose_engines()


@pytest.fixture(scope="session")
def trained(scoring_env):
    """Generated history in core, features as of AS_OF, and a LightGBM champion in the registry."""
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
    run_features_stage(AS_OF)
    summary = run_training(AS_OF, overrides={"algorithms": ["lightgbm"], "trials": 0, "folds": 2, "fold_days": 7,
                                             "embargo_days": 0, "gate_days": 7}, force=True)
    return summary
