"""Compute point-in-time features and materialise them per run.

Public API (also what the scoring stage uses):

* :func:`build_features` — features as of a date for the booked appointments of the scoring horizon
  (or for given appointments), written to ``features.appointment_features`` and returned as a frame;
* :func:`persist_features` — writes such a frame (``build_features(persist=False)``) the way
  ``persist=True`` does; callable by the scoring stage from a background thread;
* :func:`build_training_features` — back-fills the training rows (each appointment as of its own day)
  that no nightly run wrote: history before go-live, same-day bookings, a new feature-set version;
* :func:`load_features` — reads materialised rows back;
* :func:`run_features_stage` — the nightly task: training back-fill and retention (the horizon's rows
  are computed and stored by the scoring stage).

Two computations give the same frame (tested frame for frame, and against a from-scratch recomputation):

* targets sharing ONE as-of date — a night's horizon, a backtest day — go to the as-of engine
  (:mod:`features.asof`): the rows the features need are read as Arrow tables by binary COPY
  (``sql/features/asof_extracts.sql``, two connections in one snapshot) and the features computed in
  numpy. On the scoring benchmark's 1M-appointment horizon: 2.3 s on a quiet machine (3.3 s as the first
  run of a fresh process), against 33 s for the SQL statement and reading its result back;
* targets with their own as-of dates — training rows — go to one SQL statement
  (``sql/features/appointment_features.sql`` with ``history_stream.sql``: window functions over an event
  stream) over a temporary table of targets (source, appointment_id, as_of); its result is read by COPY
  and pyarrow (:func:`read_frame`).

``build_features(history="as_of" | "stream")`` forces one of them. Writing is idempotent: the rows of the
same (version, appointment, as-of date) are replaced, never duplicated. See ``docs/model.md`` §1.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from functools import cache
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from clinicflow import db
from clinicflow.errors import ClinicFlowError
from clinicflow.logs import Laps, timed
from clinicflow.paths import SQL_DIR
from clinicflow.settings import Settings, get_settings
from features import calendar, definitions

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

FEATURE_SQL = SQL_DIR / "features" / "appointment_features.sql"
HISTORY_SQL = SQL_DIR / "features" / "history_stream.sql"
TARGETS_SQL = SQL_DIR / "features" / "targets.sql"
OUTCOME_STATUSES = ("arrived", "fulfilled", "noshow")
INACTIVE_STATUSES = ("cancelled_by_patient", "cancelled_by_clinic", "cancelled_unknown", "rescheduled", "deleted")
_INACTIVE_SQL = ", ".join(f"'{s}'" for s in INACTIVE_STATUSES)
_OUTCOME_SQL = ", ".join(f"'{s}'" for s in OUTCOME_STATUSES)


@cache
def _sql(path) -> str:
    if not path.is_file():
        raise ClinicFlowError(f"{path} is missing: is the checkout complete?")
    return path.read_text(encoding="utf-8")


def feature_sql() -> str:
    """The features statement (any as-of dates per target) with its history part, ``history_stream.sql``."""
    marker = "-- @history\n"
    text = _sql(FEATURE_SQL)
    if marker not in text:
        raise ClinicFlowError(f"{FEATURE_SQL} lacks the {marker.strip()!r} marker")
    return text.replace(marker, _sql(HISTORY_SQL), 1)


@dataclass(frozen=True)
class BuildOptions:
    """What a feature computation depends on besides the data (part of the feature-set version)."""

    country: str = "RU"
    version: str = definitions.FEATURE_SET_VERSION

    @classmethod
    def from_settings(cls, settings: Settings, country: str | None = None) -> BuildOptions:
        return cls(country=(country or settings.holiday_country).upper())


def _engine(engine: sa.Engine | None, settings: Settings | None) -> sa.Engine:
    return engine if engine is not None else db.get_engine("warehouse", settings)


# --------------------------------------------------------------------------------------------------
# targets


def _create_targets(conn: sa.Connection) -> None:
    conn.execute(sa.text("SET LOCAL work_mem = '256MB'"))
    conn.execute(sa.text(
        "CREATE TEMP TABLE ft_targets (source text NOT NULL, appointment_id text NOT NULL, as_of date NOT NULL, "
        "PRIMARY KEY (source, appointment_id, as_of)) ON COMMIT DROP"
    ))


def _copy_targets(conn: sa.Connection, keys: pd.DataFrame) -> None:
    buf = io.StringIO()
    keys[["source", "appointment_id", "as_of"]].drop_duplicates().to_csv(buf, index=False, header=False)
    buf.seek(0)
    cursor = conn.connection.dbapi_connection.cursor()
    try:
        cursor.copy_expert("COPY ft_targets (source, appointment_id, as_of) FROM STDIN WITH (FORMAT csv)", buf)
    finally:
        cursor.close()


def _horizon_targets_sql(sources: Sequence[str] | None) -> str:
    """Appointments a run of :as_of scores: starting in [as_of, as_of + horizon), booked before as_of and
    not cancelled, rescheduled or deleted before it."""
    where_source = "AND a.source = ANY(:sources)" if sources else ""
    return f"""
        INSERT INTO ft_targets (source, appointment_id, as_of)
        SELECT a.source, a.appointment_id, CAST(:as_of AS date)
        FROM core.appointment a
        WHERE a.start_at >= CAST(:as_of AS date) AND a.start_at < CAST(:as_of AS date) + :horizon
          AND coalesce(a.booked_at, a.start_at) < CAST(:as_of AS date)
          AND NOT (a.status IN ({_INACTIVE_SQL}) AND coalesce(a.status_changed_at, a.start_at) < CAST(:as_of AS date))
          {where_source}
    """


def _training_targets_sql(sources: Sequence[str] | None, recompute: bool) -> str:
    """Appointments with an outcome before :until, each as of its own day, lacking a row of this version."""
    where_source = "AND a.source = ANY(:sources)" if sources else ""
    missing = "" if recompute else """
          AND NOT EXISTS (SELECT 1 FROM features.appointment_features f
                          WHERE f.feature_set_version = :version AND f.source = a.source
                            AND f.appointment_id = a.appointment_id AND f.as_of = a.start_at::date)"""
    return f"""
        INSERT INTO ft_targets (source, appointment_id, as_of)
        SELECT a.source, a.appointment_id, a.start_at::date
        FROM core.appointment a
        WHERE a.status IN ({_OUTCOME_SQL})
          AND a.start_at < CAST(:until AS date) AND a.start_at >= CAST(:since AS date)
          {where_source}{missing}
    """


# --------------------------------------------------------------------------------------------------
# computation


def _ensure_reference(conn: sa.Connection, options: BuildOptions) -> None:
    calendar.materialise(options.country, conn)
    conn.execute(sa.text(
        "INSERT INTO features.feature_set (version, description, columns) VALUES (:v, :d, CAST(:c AS jsonb)) "
        "ON CONFLICT (version) DO UPDATE SET columns = EXCLUDED.columns, description = EXCLUDED.description "
        "WHERE (feature_set.columns, feature_set.description) IS DISTINCT FROM (EXCLUDED.columns, EXCLUDED.description)"
    ), {"v": options.version, "d": "appointment features, see features/definitions.py",
        "c": json.dumps(definitions.catalogue())})


def _compute(conn: sa.Connection, options: BuildOptions, settings: Settings) -> int:
    """Fill the temp table ft_result from ft_targets by the features SQL; return its row count."""
    # fresh statistics: a load that just wrote many rows would otherwise make the planner loop over them
    conn.execute(sa.text("ANALYZE core.appointment, core.patient, core.slot, core.resource_day"))
    conn.execute(sa.text(_sql(TARGETS_SQL)))
    conn.execute(sa.text("ANALYZE ft_tgt"))
    params: dict[str, Any] = {
        "country": options.country,
        "patient_prior_weight": definitions.PATIENT_PRIOR_WEIGHT,
        "context_prior_weight": definitions.CONTEXT_PRIOR_WEIGHT,
        "window_lag": definitions.CONTEXT_WINDOW_DAYS - 1,
    }
    # hash joins: the planner cannot estimate every CTE and would otherwise pick merge joins on `source`
    # alone (quadratic in the rows of a source). No JIT: on a million targets compiling took 3-4 s and
    # saved less (measured on the scoring benchmark's data).
    conn.execute(sa.text("SET LOCAL enable_mergejoin = off"))
    conn.execute(sa.text("SET LOCAL jit = off"))
    conn.execute(sa.text("CREATE TEMP TABLE ft_result ON COMMIT DROP AS " + feature_sql()), params)
    conn.execute(sa.text("ALTER TABLE ft_result ADD COLUMN external jsonb NOT NULL DEFAULT '{}'::jsonb"))
    rows = conn.execute(sa.text("SELECT count(*) FROM ft_result")).scalar_one()
    _apply_external(conn, settings)
    return int(rows)


def external_json(keys: pd.DataFrame, settings: Settings) -> pd.DataFrame | None:
    """The configured external providers' values of ``keys`` (distinct source, branch_id, day, as_of; days
    as ``datetime.date``): ``keys`` with an ``external`` column of JSON text (``{}`` where no provider has
    a value), or None when no provider is configured. Shared by both computations."""
    from features.external import configured_providers

    providers = configured_providers(settings)
    if not providers:
        return None
    import pandas as pd

    merged = keys.copy()
    for provider in providers:
        values = provider.values(keys)
        value_cols = [c for c in values.columns if c not in ("source", "branch_id", "day", "as_of")]
        renamed = values.rename(columns={c: f"{provider.name}_{c}" for c in value_cols})
        merged = merged.merge(renamed, on=["source", "branch_id", "day", "as_of"], how="left")
    value_cols = [c for c in merged.columns if c not in ("source", "branch_id", "day", "as_of")]
    merged["external"] = [
        json.dumps({c: float(v) for c, v in zip(value_cols, row, strict=True) if pd.notna(v)})
        for row in merged[value_cols].itertuples(index=False, name=None)
    ]
    log.info("external features from %s applied", ", ".join(p.name for p in providers))
    return merged[["source", "branch_id", "day", "as_of", "external"]]


def _apply_external(conn: sa.Connection, settings: Settings) -> None:
    import pandas as pd

    from features.external import configured_providers

    if not configured_providers(settings):
        return
    keys = pd.read_sql(sa.text(
        "SELECT DISTINCT source, branch_id, start_at::date AS day, as_of FROM ft_result WHERE branch_id IS NOT NULL"
    ), conn)
    if keys.empty:
        return
    keys["day"] = pd.to_datetime(keys["day"]).dt.date
    keys["as_of"] = pd.to_datetime(keys["as_of"]).dt.date
    merged = external_json(keys, settings)
    conn.execute(sa.text(
        "CREATE TEMP TABLE ft_external (source text, branch_id text, day date, as_of date, external jsonb) "
        "ON COMMIT DROP"
    ))
    buf = io.StringIO()
    merged[["source", "branch_id", "day", "as_of", "external"]].to_csv(buf, index=False, header=False)
    buf.seek(0)
    cursor = conn.connection.dbapi_connection.cursor()
    try:
        cursor.copy_expert("COPY ft_external FROM STDIN WITH (FORMAT csv)", buf)
    finally:
        cursor.close()
    conn.execute(sa.text(
        "UPDATE ft_result r SET external = e.external FROM ft_external e WHERE e.source = r.source "
        "AND e.branch_id = r.branch_id AND e.day = r.start_at::date AND e.as_of = r.as_of"
    ))


def _persist(conn: sa.Connection, options: BuildOptions) -> None:
    columns = [row[0] for row in conn.execute(sa.text(
        "SELECT column_name FROM information_schema.columns WHERE table_name = 'ft_result' "
        "AND table_schema LIKE 'pg_temp%' ORDER BY ordinal_position"
    ))]
    column_list = ", ".join(columns)
    conn.execute(sa.text(
        "DELETE FROM features.appointment_features f USING ft_targets t WHERE f.feature_set_version = :v "
        "AND f.source = t.source AND f.appointment_id = t.appointment_id AND f.as_of = t.as_of"
    ), {"v": options.version})
    conn.execute(sa.text(
        f"INSERT INTO features.appointment_features (feature_set_version, {column_list}) "
        f"SELECT :v, {column_list} FROM ft_result"
    ), {"v": options.version})


def _read_result(conn: sa.Connection, options: BuildOptions) -> pd.DataFrame:
    frame = read_frame(conn, "SELECT * FROM ft_result ORDER BY source, appointment_id, as_of")
    frame.insert(0, "feature_set_version", options.version)
    return frame


# PostgreSQL type oids -> pyarrow types of :func:`read_frame`
_BOOL, _INTS, _FLOATS = {16}, {20, 21, 23}, {700, 701}
_TEXTS, _JSON, _DATE, _TIMESTAMP = {25, 1042, 1043}, {114, 3802}, {1082}, {1114}


def read_frame(conn: sa.Connection, sql: str, params: dict[str, Any] | None = None) -> pd.DataFrame:
    """The rows of ``sql`` as a frame, read by COPY … TO STDOUT (CSV) and parsed by pyarrow: about ten times
    faster than ``pandas.read_sql`` on wide frames, with the same dtypes (integers as int64, or float64
    when a column holds NULLs; booleans as bool, or object with None; text as str objects; dates as
    ``datetime.date``; timestamps as datetime64[ns]; json as parsed dicts). ``sql`` takes psycopg2
    parameters (``%(name)s``); supported column types: boolean, integers, real/double, text, date,
    timestamp without time zone, json(b)."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    cursor = conn.connection.dbapi_connection.cursor()
    try:
        query = cursor.mogrify(sql, params or {}).decode()
        cursor.execute(f"SELECT * FROM ({query}) q LIMIT 0")
        columns = [(d.name, d.type_code) for d in cursor.description]
        buffer = io.BytesIO()
        cursor.copy_expert(f"COPY ({query}) TO STDOUT WITH (FORMAT csv)", buffer)
    finally:
        cursor.close()
    types: dict[str, pa.DataType] = {}
    for name, oid in columns:
        if oid in _BOOL:
            types[name] = pa.bool_()
        elif oid in _INTS:
            types[name] = pa.int64()
        elif oid in _FLOATS:
            types[name] = pa.float64()
        elif oid in _TEXTS or oid in _JSON:
            types[name] = pa.string()
        elif oid in _DATE:
            types[name] = pa.date32()
        elif oid in _TIMESTAMP:
            types[name] = pa.timestamp("us")
        else:
            raise ClinicFlowError(f"read_frame: column {name!r} has a PostgreSQL type (oid {oid}) it does not read")
    if not buffer.tell():  # no rows
        table = pa.table({name: pa.array([], type=types[name]) for name, _ in columns})
        return table.to_pandas(date_as_object=True, coerce_temporal_nanoseconds=True)
    buffer.seek(0)
    table = pacsv.read_csv(
        buffer,
        read_options=pacsv.ReadOptions(column_names=[n for n, _ in columns], block_size=1 << 24),
        parse_options=pacsv.ParseOptions(newlines_in_values=True),
        convert_options=pacsv.ConvertOptions(
            column_types=types, true_values=["t"], false_values=["f"], null_values=[""],
            strings_can_be_null=True, quoted_strings_can_be_null=False),
    )
    frame = table.to_pandas(date_as_object=True, coerce_temporal_nanoseconds=True)
    for name, oid in columns:
        if oid in _JSON:
            frame[name] = _parse_json(frame[name])
    return frame


def _parse_json(column: pd.Series) -> pd.Series:
    """Each distinct JSON text parsed once (rows share the parsed objects; do not mutate them)."""
    import pandas as pd

    codes, uniques = pd.factorize(column, use_na_sentinel=True)
    parsed = [json.loads(text) for text in uniques]
    values = pd.Series([parsed[c] if c >= 0 else None for c in codes], index=column.index, dtype=object)
    return values


# --------------------------------------------------------------------------------------------------
# public API


def build_features(
    as_of: date,
    *,
    appointments: pd.DataFrame | Sequence[tuple[str, str]] | None = None,
    horizon_days: int | None = None,
    sources: Sequence[str] | None = None,
    persist: bool = True,
    country: str | None = None,
    settings: Settings | None = None,
    engine: sa.Engine | None = None,
    history: str | None = None,
    timings: dict[str, float] | None = None,
) -> pd.DataFrame:
    """Features as of ``as_of`` (the start of that day), one row per appointment.

    Without ``appointments``: every appointment a nightly run of ``as_of`` scores — starting in
    ``[as_of, as_of + horizon_days)`` (default ``CLINICFLOW_HORIZON_DAYS``), booked before ``as_of``
    and not cancelled before it (of ``sources``, or of every source). With ``appointments`` (a frame
    with ``source``, ``appointment_id`` and optionally ``as_of`` per row, or (source, appointment_id)
    pairs): exactly those, each with its own booking record even if it was booked later (a same-day
    booking as at its booking).

    The rows are written to ``features.appointment_features`` (replacing the same keys, see
    :func:`persist_features`) unless ``persist`` is false, and returned ordered by source and appointment
    id, with the key columns of :data:`definitions.KEY_COLUMNS`.

    How: targets sharing one as-of date (a horizon; appointments whose ``as_of`` are all equal) are
    computed by the as-of engine (:mod:`features.asof`: Arrow extracts, numpy); targets with several
    as-of dates by the features SQL (``appointment_features.sql`` with ``history_stream.sql``).
    ``history`` forces one: ``"as_of"`` the engine (one as-of date only), ``"stream"`` the SQL; both give
    the same frame (tested). ``timings`` (a dict) receives the seconds of the steps: for the engine
    reference, targets, keys, the extracts (``extract_<query>``, partly concurrent), compute, wait,
    external, frame, then persist_* (see :func:`persist_features`); for the SQL targets, sql, persist,
    read, commit.
    """
    import pandas as pd

    settings = settings or get_settings()
    options = BuildOptions.from_settings(settings, country)
    engine = _engine(engine, settings)
    horizon = horizon_days if horizon_days is not None else settings.horizon_days
    if history not in (None, "as_of", "stream"):
        raise ClinicFlowError(f"build_features: history must be 'as_of' (the engine, one as-of date) or 'stream' "
                              f"(the features SQL), not {history!r}")
    keys = None
    day = as_of
    if appointments is not None:
        keys = (appointments.copy() if isinstance(appointments, pd.DataFrame)
                else pd.DataFrame(list(appointments), columns=["source", "appointment_id"]))
        missing = {"source", "appointment_id"} - set(keys.columns)
        if missing:
            raise ClinicFlowError(f"build_features: appointments lack columns {sorted(missing)}")
        if "as_of" not in keys.columns:
            keys["as_of"] = as_of
        keys["appointment_id"] = keys["appointment_id"].astype(str)
        dates = pd.unique(pd.to_datetime(keys["as_of"]).dt.date) if len(keys) else []
        if len(dates) == 1:
            day = dates[0]
        elif len(dates) > 1 and history == "as_of":
            raise ClinicFlowError(f"build_features(history='as_of'): the appointments have {len(dates)} as-of dates; "
                                  "the as-of engine takes targets of one as-of date")
        one_date = len(dates) <= 1
    else:
        one_date = True
    if history == "as_of" or (history is None and one_date):
        return _build_as_of(day, options, settings, engine, horizon=horizon, sources=sources, keys=keys,
                            persist=persist, timings=timings)

    lap = Laps(timings)
    steps = lap.steps
    with timed(f"features as of {as_of}", log) as timer, engine.begin() as conn:
        _ensure_reference(conn, options)
        _create_targets(conn)
        if keys is None:
            params: dict[str, Any] = {"as_of": as_of, "horizon": int(horizon)}
            if sources:
                params["sources"] = list(sources)
            conn.execute(sa.text(_horizon_targets_sql(sources)), params)
        else:
            _copy_targets(conn, keys)
        lap("targets")
        rows = _compute(conn, options, settings)
        lap("sql")
        if persist:
            _persist(conn, options)
            lap("persist")
        frame = _read_result(conn, options)
        lap("read")
        timer.rows = rows
    lap("commit")
    log.info("features as of %s (SQL): %s", as_of, ", ".join(f"{k} {v:.1f}s" for k, v in steps.items()))
    return frame


def _build_as_of(as_of: date, options: BuildOptions, settings: Settings, engine: sa.Engine, *, horizon: int,
                 sources: Sequence[str] | None, keys: pd.DataFrame | None, persist: bool,
                 timings: dict[str, float] | None) -> pd.DataFrame:
    """:func:`build_features` of targets sharing the as-of date ``as_of``, by the as-of engine."""
    from features import asof

    lap = Laps(timings)
    steps = lap.steps
    with timed(f"features as of {as_of}", log) as timer:
        with engine.begin() as conn:
            _ensure_reference(conn, options)
        lap("reference")
        if keys is not None:
            keys = keys[["source", "appointment_id"]].drop_duplicates()
        frame = asof.compute(engine.url, as_of, country=options.country, settings=settings,
                             horizon_days=horizon if keys is None else None, sources=sources if keys is None else None,
                             keys=keys, timings=steps)
        frame.insert(0, "feature_set_version", options.version)
        if persist:
            persist_features(frame, engine=engine, timings=steps)
        timer.rows = len(frame)
    log.info("features as of %s: %s", as_of, ", ".join(f"{k} {v:.2f}s" for k, v in steps.items()))
    return frame


#: jsonb columns of features.appointment_features (dicts in a frame)
_JSON_COLUMNS = ("patient_flags", "external")
_KEY_COLUMNS = ("feature_set_version", "source", "appointment_id", "as_of")


def persist_features(frame: pd.DataFrame, *, settings: Settings | None = None, engine: sa.Engine | None = None,
                     timings: dict[str, float] | None = None) -> int:
    """Write feature rows — a frame :func:`build_features` returned (``persist=False``) — to
    ``features.appointment_features``, as ``build_features(persist=True)`` does: the stored rows of the same
    (feature_set_version, source, appointment_id, as_of) are deleted, then the frame's rows appended by binary
    COPY (``db.copy_session``), in one transaction. Idempotent: writing the same frame twice leaves the
    same rows. Returns the rows written.

    It opens a connection of its own and only reads the frame, so the scoring stage may call it from a
    background thread while it scores the same frame (do not modify the frame meanwhile). ``timings``
    receives seconds: persist_arrow (the frame as Arrow), persist_delete, persist_write, persist_commit.
    """
    lap = Laps(timings)
    engine = _engine(engine, settings)
    if frame.empty:
        return 0
    missing = set(_KEY_COLUMNS) - set(frame.columns)
    if missing:
        raise ClinicFlowError(f"persist_features: the frame lacks the key columns {sorted(missing)}")
    table = _arrow_rows(frame)
    lap("persist_arrow")
    with db.copy_session(url=engine.url) as session:
        import pandas as pd

        # a first write of its dates (a night's horizon) has nothing to replace: skip the keys' delete
        dates = sorted({pd.Timestamp(d).date() for d in pd.unique(frame["as_of"])})
        stored = session.scalar(
            "SELECT EXISTS (SELECT 1 FROM features.appointment_features WHERE feature_set_version = ANY(:v) "
            "AND as_of = ANY(:dates))", {"v": [str(v) for v in pd.unique(frame["feature_set_version"])],
                                          "dates": dates})
        if stored:  # rows of these dates are stored already: replace those of the frame's keys
            _delete_stored(session, table)
        lap("persist_delete")
        rows = session.ingest("features.appointment_features", table)
        lap("persist_write")
    lap("persist_commit")
    return int(rows)


def _delete_stored(session: db.CopySession, table) -> None:
    """Delete the stored rows with the keys of the Arrow ``table`` (inside the caller's transaction)."""
    session.execute("CREATE TEMP TABLE ft_written (feature_set_version text, source text, appointment_id text, "
                    "as_of date) ON COMMIT DROP")
    session.ingest("ft_written", table.select(list(_KEY_COLUMNS)))
    session.execute("ANALYZE ft_written")
    # a semi-join hashing the keys: the stored rows are then deleted in their heap's order (a join that
    # hashed the stored rows deleted them in the keys' order: 5.6 s instead of 2.1 s for 1M rows)
    session.execute("SET LOCAL work_mem = '256MB'")
    session.execute("SET LOCAL jit = off")
    session.execute(
        "DELETE FROM features.appointment_features f "
        "WHERE (f.feature_set_version, f.source, f.appointment_id, f.as_of) IN "
        "(SELECT feature_set_version, source, appointment_id, as_of FROM ft_written)")


def _arrow_rows(frame: pd.DataFrame):
    """The frame as an Arrow table for ``ArrowSession.ingest``: NaN and None as NULL, the json columns as JSON
    text (each distinct object dumped once)."""
    import pyarrow as pa

    arrays = []
    for name in frame.columns:
        values = frame[name].to_numpy()
        if name in _JSON_COLUMNS:
            arrays.append(_json_texts(values))
        else:
            arrays.append(pa.array(values, from_pandas=True))
    return pa.Table.from_arrays(arrays, names=[str(c) for c in frame.columns])


def _json_texts(values):
    """JSON text per row of an object array of dicts (None / NaN: NULL), as a dictionary array: the rows of a
    features frame share their parsed objects, so each distinct object is dumped once."""
    import numpy as np
    import pandas as pd
    import pyarrow as pa

    ids = np.fromiter(map(id, values), dtype=np.int64, count=len(values))
    codes, _ = pd.factorize(ids)
    _, first = np.unique(codes, return_index=True)
    texts = [None if v is None or (isinstance(v, float) and v != v) else json.dumps(v) for v in values[first]]
    null = np.array([t is None for t in texts], dtype=bool)
    indices = pa.array(codes.astype(np.int32), mask=null[codes] if null.any() else None)
    return pa.DictionaryArray.from_arrays(indices, pa.array(texts, pa.string()))


def build_training_features(
    until: date,
    *,
    since: date | None = None,
    sources: Sequence[str] | None = None,
    recompute: bool = False,
    country: str | None = None,
    settings: Settings | None = None,
    engine: sa.Engine | None = None,
) -> int:
    """Write the training rows (each appointment with an outcome, as of its own day) for appointments
    starting before ``until`` (and on or after ``since``) that have no row of this feature-set version
    yet (all of them with ``recompute``). Returns the rows written."""
    settings = settings or get_settings()
    options = BuildOptions.from_settings(settings, country)
    engine = _engine(engine, settings)
    since = since or date(1900, 1, 1)
    with timed(f"training features before {until}", log) as timer, engine.begin() as conn:
        _ensure_reference(conn, options)
        _create_targets(conn)
        params: dict[str, Any] = {"until": until, "since": since, "version": options.version}
        if sources:
            params["sources"] = list(sources)
        conn.execute(sa.text(_training_targets_sql(sources, recompute)), params)
        targets = conn.execute(sa.text("SELECT count(*) FROM ft_targets")).scalar_one()
        if targets == 0:
            timer.rows = 0
            return 0
        rows = _compute(conn, options, settings)
        _persist(conn, options)
        timer.rows = rows
    return rows


def load_features(
    *,
    as_of: date | None = None,
    training_until: date | None = None,
    training_since: date | None = None,
    appointments: pd.DataFrame | None = None,
    with_labels: bool = False,
    version: str = definitions.FEATURE_SET_VERSION,
    settings: Settings | None = None,
    engine: sa.Engine | None = None,
) -> pd.DataFrame:
    """Read materialised features.

    ``as_of``: the rows a run of that date wrote (its scoring horizon). ``training_until``: training rows
    (as of each appointment's own day) of appointments starting before it (and on or after
    ``training_since``). ``with_labels`` adds ``status`` and ``label`` (1 = no-show) from core — only
    outcomes before ``training_until`` are ever returned, so a training can never see a later one.
    """
    engine = _engine(engine, settings)
    params: dict[str, Any] = {"v": version}
    where = ["f.feature_set_version = %(v)s"]
    label_cols = ""
    join = ""
    if as_of is not None:
        where.append("f.as_of = %(as_of)s")
        params["as_of"] = as_of
    if training_until is not None:
        where.append("f.as_of = f.start_at::date AND f.start_at < CAST(%(until)s AS date)")
        params["until"] = training_until
        if training_since is not None:
            where.append("f.start_at >= CAST(%(since)s AS date)")
            params["since"] = training_since
    if with_labels:
        if training_until is None:
            raise ClinicFlowError("load_features(with_labels=True) needs training_until (labels are outcomes "
                                  "known before it)")
        join = "JOIN core.appointment a ON a.source = f.source AND a.appointment_id = f.appointment_id"
        where.append(f"a.status IN ({_OUTCOME_SQL})")
        label_cols = ", a.status, (a.status = 'noshow')::int AS label"
    with engine.begin() as conn:
        if appointments is not None:
            conn.execute(sa.text(
                "CREATE TEMP TABLE ft_targets (source text, appointment_id text, as_of date) ON COMMIT DROP"
            ))
            keys = appointments.copy()
            if "as_of" not in keys.columns:
                if as_of is None:
                    raise ClinicFlowError("load_features(appointments=…) needs as_of or an as_of column")
                keys["as_of"] = as_of
            _copy_targets(conn, keys)
            join += " JOIN ft_targets t ON t.source = f.source AND t.appointment_id = f.appointment_id " \
                    "AND t.as_of = f.as_of"
        columns = ", ".join(f"f.{c}" for c in _stored_columns(conn) if c != "computed_at")
        sql = f"SELECT {columns}{label_cols} FROM features.appointment_features f {join} WHERE {' AND '.join(where)} " \
              "ORDER BY f.start_at, f.source, f.appointment_id"
        frame = read_frame(conn, sql, params)
    return frame


def _stored_columns(conn: sa.Connection) -> list[str]:
    return list(conn.execute(sa.text(
        "SELECT column_name FROM information_schema.columns WHERE table_schema = 'features' "
        "AND table_name = 'appointment_features' ORDER BY ordinal_position")).scalars())


def prune(as_of: date, retention_days: int, *, settings: Settings | None = None,
          engine: sa.Engine | None = None) -> int:
    """Delete scoring rows older than the retention; training rows (as_of = start day) are kept."""
    engine = _engine(engine, settings)
    with engine.begin() as conn:
        result = conn.execute(sa.text(
            "DELETE FROM features.appointment_features WHERE as_of < :cut AND as_of <> start_at::date"
        ), {"cut": as_of - timedelta(days=retention_days)})
    return int(result.rowcount or 0)


def run_features_stage(as_of: date, *, settings: Settings | None = None) -> dict[str, Any]:
    """The nightly ``features`` task: the training rows no earlier run wrote, and retention. Idempotent.

    The horizon's rows (the booked appointments as of ``as_of``) are computed and stored by the scoring
    stage, which scores them in the same process (``scoring.stage.run_scoring``); computing them here too
    would do the work twice. ``clinicflow features build --horizon N`` computes and stores them on demand."""
    settings = settings or get_settings()
    with timed(f"features stage for {as_of}", log) as timer:
        training_rows = build_training_features(as_of, settings=settings)
        pruned = prune(as_of, settings.features_retention_days, settings=settings)
        timer.rows = training_rows
    summary = {
        "as_of": as_of.isoformat(),
        "feature_set_version": definitions.FEATURE_SET_VERSION,
        "training_rows_written": training_rows,
        "rows_pruned": pruned,
        "seconds": round(timer.seconds, 2),
    }
    log.info("features stage: %s", summary)
    return summary
