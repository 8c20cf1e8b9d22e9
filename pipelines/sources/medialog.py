"""Medialog (МИС «Медиалог») on Microsoft SQL Server: read-only extraction.

See ``../shared/docs/medialog.md`` (summarised in docs/medialog.md) for the schema.
"""

from __future__ import annotations

import sqlalchemy as sa

from clinicflow.errors import ConfigError, SourceUnavailableError
from clinicflow.settings import SourceConfig


def source_url(source: SourceConfig) -> str:
    """The SQLAlchemy URL of a Medialog source, from settings or an Airflow connection."""
    if source.url is not None:
        return source.url.get_secret_value()
    if source.airflow_conn_id:
        try:
            from airflow.sdk import Connection
        except ImportError as exc:  # pragma: no cover - airflow is a dependency
            raise ConfigError(f"source {source.name}: airflow_conn_id needs Airflow installed") from exc
        conn = Connection.get(source.airflow_conn_id)
        return conn.get_uri()
    raise ConfigError(f"source {source.name}: set 'url' or 'airflow_conn_id' in CLINICFLOW_SOURCES")


def create_source_engine(source: SourceConfig) -> sa.Engine:
    url = source_url(source)
    try:
        return sa.create_engine(url, pool_pre_ping=True, poolclass=sa.pool.NullPool)
    except (sa.exc.ArgumentError, ModuleNotFoundError) as exc:
        raise ConfigError(f"source {source.name}: cannot use URL ({exc})") from None


def probe(source: SourceConfig) -> str:
    engine = create_source_engine(source)
    try:
        with engine.connect() as conn:
            present = sa.inspect(conn).has_table("PLANNING") or sa.inspect(conn).has_table("planning")
    except sa.exc.DBAPIError as exc:
        raise SourceUnavailableError(
            f"{source.name}: cannot connect to {engine.url.render_as_string(hide_password=True)}: "
            f"{str(exc.orig).strip().splitlines()[0] if exc.orig else exc}"
        ) from None
    finally:
        engine.dispose()
    if not present:
        raise SourceUnavailableError(f"{source.name}: connected, but no PLANNING table: is it a Medialog database?")
    return f"medialog at {engine.url.render_as_string(hide_password=True)}: PLANNING present"
