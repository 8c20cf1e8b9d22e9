"""Loading an :class:`~pipelines.sources.base.Extract` into the warehouse.

Three steps, each set-based:

1. :func:`prepare` checks the frames against the connector contract (columns and types: a mismatch is
   a :class:`DataQualityError`), replaces raw patient ids by their keyed HMAC
   (:mod:`pipelines.pseudonym`) and masks outcomes not yet known at the as-of date;
2. :func:`copy_to_staging` COPYs them (CSV written by pyarrow, no per-row Python) into one UNLOGGED
   partition per entity of ``staging`` for the load batch;
3. :func:`upsert_core` moves the rows that passed validation (:mod:`pipelines.validation`) into
   ``core`` in ONE transaction: reference tables, patients, appointments, reconciliation deletes,
   slots and resource days, the watermarks and the batch's status. Every upsert writes only rows whose
   business columns changed (``IS DISTINCT FROM``), so re-running a load changes nothing and unchanged
   rows keep their ``load_batch_id`` and ``updated_at``.

The raw patient id never reaches a table: :func:`prepare` drops ``patient_source_id`` before anything
is written, and refuses columns the contract does not name (they could carry personal data).
"""

from __future__ import annotations

import hmac
import io
import json
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, time
from typing import Any

import numpy as np
import pandas as pd

from clinicflow.errors import DataQualityError
from pipelines import pseudonym
from pipelines.sources import base

log = logging.getLogger(__name__)

TEXT, INT, TS, DATE, TIME, BOOL, JSON = "text", "int", "timestamp", "date", "time", "bool", "json"
#: raw_status of a row whose outcome is masked (the source's fields would reveal it).
MASKED_RAW_STATUS = '{"masked": true}'


@dataclass(frozen=True)
class Entity:
    """One canonical frame: its staging/core table, columns (with kinds) and business key."""

    name: str            # table name in staging and core
    frame: str           # attribute of Extract
    columns: tuple[tuple[str, str], ...]  # staged columns and their kind
    key: tuple[str, ...]  # business key in core (after ``source``)

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(c for c, _ in self.columns)

    def kind(self, column: str) -> str:
        return dict(self.columns)[column]


def _cols(*spec: str) -> tuple[tuple[str, str], ...]:
    out = []
    for item in spec:
        name, _, kind = item.partition(":")
        out.append((name, kind or TEXT))
    return tuple(out)


BRANCH = Entity("branch", "branches", _cols("branch_id", "name"), ("branch_id",))
DEPARTMENT = Entity("department", "departments", _cols("department_id", "name", "branch_id"), ("department_id",))
PRACTITIONER = Entity(
    "practitioner", "practitioners",
    _cols("practitioner_id", "display_name", "specialty", "department_id", "archived:bool"), ("practitioner_id",),
)
SERVICE = Entity(
    "service", "services",
    _cols("service_id", "code", "name", "default_duration_min:int", "no_overbook:bool"), ("service_id",),
)
RESOURCE = Entity(
    "resource", "resources",
    _cols("resource_id", "name", "kind", "practitioner_id", "department_id", "branch_id", "no_overbook:bool",
          "archived:bool"),
    ("resource_id",),
)
PATIENT = Entity(
    "patient", "patients", _cols("patient_key", "sex", "birth_year:int", "flags:json", "row_problems"),
    ("patient_key",),
)
APPOINTMENT = Entity(
    "appointment", "appointments",
    _cols("appointment_id", "patient_key", "resource_id", "practitioner_id", "department_id", "branch_id",
          "service_id", "start_at:timestamp", "duration_min:int", "booked_at:timestamp", "channel",
          "confirmed:bool", "reminder_sent:bool", "rescheduled_from_id", "raw_status:json", "status",
          "status_changed_at:timestamp", "source_updated_at:timestamp", "outcome_masked:bool", "row_problems"),
    ("appointment_id",),
)
SLOT = Entity(
    "slot", "slots", _cols("resource_id", "start_at:timestamp", "duration_min:int", "no_overbook:bool"),
    ("resource_id", "start_at"),
)
RESOURCE_DAY = Entity(
    "resource_day", "resource_days",
    _cols("resource_id", "day:date", "slots:int", "slot_minutes:int", "work_start:time", "work_end:time",
          "on_leave:bool"),
    ("resource_id", "day"),
)
EXISTING = Entity("appointment_existing", "existing_ids", _cols("appointment_id"), ("appointment_id",))

#: In dependency order: what appointments reference comes first.
ENTITIES: tuple[Entity, ...] = (
    BRANCH, DEPARTMENT, PRACTITIONER, SERVICE, RESOURCE, PATIENT, APPOINTMENT, SLOT, RESOURCE_DAY, EXISTING,
)
BY_NAME = {e.name: e for e in ENTITIES}

#: Contract columns of each frame as connectors deliver them (before pseudonymisation).
CONTRACT_COLUMNS: dict[str, tuple[str, ...]] = {
    "appointments": base.APPOINTMENT_COLUMNS,
    "patients": base.PATIENT_COLUMNS,
    "branches": base.BRANCH_COLUMNS,
    "departments": base.DEPARTMENT_COLUMNS,
    "practitioners": base.PRACTITIONER_COLUMNS,
    "services": base.SERVICE_COLUMNS,
    "resources": base.RESOURCE_COLUMNS,
    "slots": base.SLOT_COLUMNS,
    "resource_days": base.RESOURCE_DAY_COLUMNS,
}
OPTIONAL: dict[str, tuple[str, ...]] = {"appointments": base.OPTIONAL_COLUMNS, "patients": base.OPTIONAL_COLUMNS}


def staging_table(entity: Entity | str, batch_id: int) -> str:
    """The staging partition of an entity for one batch (``staging.appointment_b42``)."""
    name = entity if isinstance(entity, str) else entity.name
    return f"staging.{name}_b{int(batch_id)}"


# --------------------------------------------------------------------------------------------------
# prepare: contract check, type coercion, pseudonymisation, as-of masking


@dataclass
class Prepared:
    """Frames ready for COPY, keyed by entity name (entities the connector did not provide are absent)."""

    frames: dict[str, pd.DataFrame]
    masked: int = 0
    problems: list[str] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        return {name: len(frame) for name, frame in self.frames.items()}


def _schema_error(source: str, frame: str, message: str) -> DataQualityError:
    return DataQualityError(
        f"{source}: the connector's {frame} frame does not match the contract in pipelines/sources/base.py: "
        f"{message}. This is a connector or source-schema problem: fix the connector (or its options) and rerun."
    )


def _check_columns(source: str, frame_name: str, frame: pd.DataFrame) -> None:
    expected = CONTRACT_COLUMNS[frame_name]
    allowed = set(expected) | set(OPTIONAL.get(frame_name, ()))
    missing = [c for c in expected if c not in frame.columns]
    extra = [c for c in frame.columns if c not in allowed]
    if missing:
        raise _schema_error(source, frame_name, f"missing column(s) {missing}")
    if extra:
        raise _schema_error(
            source, frame_name,
            f"unexpected column(s) {extra} (refused: a column outside the contract could carry personal data)",
        )


def _as_text(series: pd.Series) -> pd.Series:
    """Ids and labels as text; integral floats (ids with NULLs read from SQL) lose their '.0'."""
    if pd.api.types.is_float_dtype(series.dtype):
        values = series.dropna()
        if (values == np.floor(values)).all():
            series = series.astype("Int64")
    if pd.api.types.is_bool_dtype(series.dtype):
        series = series.astype("boolean")
    out = series.astype("string")
    return out.where(series.notna(), None)


def _as_int(series: pd.Series, where: str) -> pd.Series:
    if pd.api.types.is_integer_dtype(series.dtype):
        return series.astype("Int64")
    numbers = pd.to_numeric(series, errors="coerce")
    bad = series.notna() & numbers.isna()
    if bad.any():
        raise DataQualityError(f"{where}: not a number: {series[bad].iloc[0]!r} ({int(bad.sum())} value(s))")
    fractional = numbers.notna() & (numbers != np.floor(numbers.fillna(0)))
    if fractional.any():
        raise DataQualityError(f"{where}: not a whole number: {numbers[fractional].iloc[0]!r}")
    return numbers.astype("Int64")


def _as_timestamp(series: pd.Series, where: str, zone: str) -> pd.Series:
    if isinstance(series.dtype, pd.DatetimeTZDtype):
        series = series.dt.tz_convert(zone).dt.tz_localize(None)
    elif not pd.api.types.is_datetime64_dtype(series.dtype):
        parsed = pd.to_datetime(series, errors="coerce", format="ISO8601")
        retry = series.notna() & parsed.isna()
        if retry.any():  # not all ISO 8601: let pandas infer each remaining value
            parsed = parsed.astype(object).where(~retry, pd.to_datetime(series[retry], errors="coerce",
                                                                        format="mixed"))
            parsed = pd.to_datetime(parsed)
        bad = series.notna() & parsed.isna()
        if bad.any():
            raise DataQualityError(f"{where}: not a timestamp: {series[bad].iloc[0]!r} ({int(bad.sum())} value(s))")
        series = parsed
        if isinstance(series.dtype, pd.DatetimeTZDtype):
            series = series.dt.tz_convert(zone).dt.tz_localize(None)
    return series.astype("datetime64[us]")


def _as_date(series: pd.Series, where: str) -> pd.Series:
    parsed = pd.to_datetime(series, errors="coerce")
    bad = series.notna() & parsed.isna()
    if bad.any():
        raise DataQualityError(f"{where}: not a date: {series[bad].iloc[0]!r}")
    return parsed.dt.normalize().astype("datetime64[s]")


def _as_time(series: pd.Series, where: str) -> pd.Series:
    def one(value: Any) -> str | None:
        if value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NaT:
            return None
        if isinstance(value, time):
            return value.isoformat()
        if isinstance(value, datetime | pd.Timestamp):
            return value.time().isoformat()
        if isinstance(value, pd.Timedelta):
            return (datetime.min + value.to_pytimedelta()).time().isoformat()
        try:
            return time.fromisoformat(str(value)).isoformat()
        except ValueError:
            raise DataQualityError(f"{where}: not a time of day: {value!r}") from None

    return pd.Series([one(v) for v in series], index=series.index, dtype="object")


def _as_bool(series: pd.Series, where: str) -> pd.Series:
    if pd.api.types.is_bool_dtype(series.dtype):
        return series.astype("boolean")
    mapping = {True: True, False: False, "1": True, "0": False, "true": True, "false": False,
               "t": True, "f": False, "yes": True, "no": False}

    present = series.notna()
    keys = series
    kind = pd.api.types.infer_dtype(series, skipna=True)
    if kind == "string":
        keys = series.str.strip().str.lower()
    elif kind in ("mixed", "mixed-integer"):
        is_text = series.map(lambda v: isinstance(v, str))
        keys = series.where(~is_text, series.astype(str).str.strip().str.lower())
    values = keys.map(mapping)  # one C-level dict lookup per value, no per-row Python branching
    bad = present & values.isna()
    if bad.any():
        raise DataQualityError(f"{where}: not a boolean: {series[bad].iloc[0]!r}")
    return pd.array(values.where(present, None).to_numpy(dtype=object), dtype="boolean")


def _as_json(series: pd.Series, where: str) -> pd.Series:
    dumps = json.JSONEncoder(ensure_ascii=False, default=str, separators=(",", ":")).encode

    def one(value: Any) -> str | None:
        if value is None or (isinstance(value, float) and np.isnan(value)):
            return None
        if isinstance(value, str):  # JSON text is passed through: PostgreSQL checks it when COPYing to jsonb
            return value
        if isinstance(value, dict):
            return dumps(value)
        raise DataQualityError(f"{where}: expected a dict, got {type(value).__name__}")

    if pd.api.types.is_string_dtype(series.dtype) and not series.map(type).eq(dict).any():
        return series.astype(object).where(series.notna(), None)
    return pd.Series([one(v) for v in series], index=series.index, dtype="object")


def coerce(frame: pd.DataFrame, entity: Entity, *, source: str, zone: str) -> pd.DataFrame:
    """The frame in the entity's staged columns and types (missing optional columns become None)."""
    out: dict[str, pd.Series] = {}
    index = frame.index
    for column, kind in entity.columns:
        where = f"{source}: {entity.frame}.{column}"
        series = frame[column] if column in frame.columns else pd.Series([None] * len(frame), index=index,
                                                                            dtype="object")
        if kind == TEXT:
            out[column] = _as_text(series)
        elif kind == INT:
            out[column] = _as_int(series, where)
        elif kind == TS:
            out[column] = _as_timestamp(series, where, zone)
        elif kind == DATE:
            out[column] = _as_date(series, where)
        elif kind == TIME:
            out[column] = _as_time(series, where)
        elif kind == BOOL:
            out[column] = _as_bool(series, where)
        elif kind == JSON:
            out[column] = _as_json(series, where)
        else:  # pragma: no cover - entity definitions are static
            raise AssertionError(kind)
    return pd.DataFrame(out, index=index).reset_index(drop=True)


def pseudonymise(ids: pd.Series, secret: bytes, source: str, cache: dict[str, str] | None = None) -> pd.Series:
    """Keyed HMAC of each patient id (:func:`pipelines.pseudonym.patient_key`, same keys); every distinct
    id is hashed once, and ``cache`` carries the keys over to the next frame (patients, appointments)."""
    text = _as_text(ids)
    text = text.str.strip().where(~text.isin(["", "nan", "None", "<NA>"]), None)
    codes, uniques = pd.factorize(text, use_na_sentinel=True)
    cache = {} if cache is None else cache
    prefix = f"{source}\x1f".encode()
    keys = []
    for value in uniques:
        key = cache.get(value)
        if key is None:  # one-shot C HMAC, identical to pseudonym.patient_key (a test checks)
            key = cache[value] = hmac.digest(secret, prefix + value.encode(), "sha256").hex()[: pseudonym.KEY_LENGTH]
        keys.append(key)
    table = np.array([*keys, None], dtype=object)
    return pd.Series(table[codes], index=ids.index, dtype="object")


def mask_as_of(appointments: pd.DataFrame, as_of: date) -> int:
    """Store what was known at the start of ``as_of``; return the number of rows masked (in place).

    * outcomes (arrived/fulfilled/noshow) of appointments starting on or after ``as_of`` become booked;
    * a status other than booked whose change is recorded at or after ``as_of`` becomes booked.

    A masked row keeps none of the source's status fields (they would reveal the outcome):
    ``raw_status`` becomes ``{"masked": true}`` and ``status_changed_at`` is cleared (constant, so a row
    that stays masked is not rewritten by the next run).
    """
    if appointments.empty:
        appointments["outcome_masked"] = pd.Series(dtype="boolean")
        return 0
    cutoff = pd.Timestamp(as_of)
    status = appointments["status"]
    outcome_later = status.isin(base.OUTCOME_STATUSES) & (appointments["start_at"] >= cutoff)
    changed_later = status.notna() & (status != "booked") & (appointments["status_changed_at"] >= cutoff)
    masked = (outcome_later | changed_later).fillna(False).astype(bool)
    appointments["outcome_masked"] = pd.array(masked.to_numpy(), dtype="boolean")
    if masked.any():
        appointments.loc[masked, "status"] = "booked"
        appointments.loc[masked, "status_changed_at"] = pd.NaT
        appointments.loc[masked, "raw_status"] = MASKED_RAW_STATUS
    return int(masked.sum())


def prepare(extract: base.Extract, *, source: str, as_of: date, secret: bytes, zone: str) -> Prepared:
    """Check, coerce, pseudonymise and mask the frames of an Extract (no I/O)."""
    frames: dict[str, pd.DataFrame] = {}
    keys: dict[str, str] = {}
    for entity in ENTITIES:
        if entity is EXISTING:
            continue
        frame = getattr(extract, entity.frame)
        if frame is None:
            continue
        if not isinstance(frame, pd.DataFrame):
            raise _schema_error(source, entity.frame, f"expected a pandas DataFrame, got {type(frame).__name__}")
        _check_columns(source, entity.frame, frame)
        if entity in (APPOINTMENT, PATIENT):
            frame = frame.assign(patient_key=pseudonymise(frame["patient_source_id"], secret, source, keys))
            frame = frame.drop(columns=["patient_source_id"])
        staged = coerce(frame, entity, source=source, zone=zone)
        frames[entity.name] = staged
    masked = mask_as_of(frames[APPOINTMENT.name], as_of)
    if extract.existing_ids is not None:
        ids = pd.Series(extract.existing_ids).dropna()
        frames[EXISTING.name] = pd.DataFrame({"appointment_id": _as_text(ids).reset_index(drop=True)})
    return Prepared(frames=frames, masked=masked, problems=list(extract.problems))


# --------------------------------------------------------------------------------------------------
# staging


_PG_TYPES = {TEXT: "text", INT: "bigint", TS: "timestamp", DATE: "date", TIME: "time", BOOL: "boolean",
             JSON: "jsonb"}


#: Rows per COPY chunk: bounds the memory of the CSV buffer (about 250 bytes a row).
COPY_CHUNK_ROWS = 200_000


def _csv_bytes(frame: pd.DataFrame, entity: Entity, batch_id: int, first_row: int = 1) -> bytes:
    """The frame as PostgreSQL CSV (NULL = unquoted empty field), written by pyarrow in C."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    n = len(frame)
    arrays: list[pa.Array] = [pa.array(np.full(n, batch_id, dtype=np.int64)),
                              pa.array(np.arange(first_row, first_row + n))]
    for column, kind in entity.columns:
        series = frame[column]
        if kind in (TEXT, TIME, JSON):
            arrays.append(pa.array(series.to_numpy(dtype=object), type=pa.string(), from_pandas=True))
        elif kind == INT:
            arrays.append(pa.array(series, type=pa.int64(), from_pandas=True))
        elif kind == TS:
            arrays.append(pa.array(series, type=pa.timestamp("us"), from_pandas=True))
        elif kind == DATE:
            arrays.append(pa.array(series, type=pa.timestamp("s"), from_pandas=True).cast(pa.date32()))
        elif kind == BOOL:
            arrays.append(pa.array(series, type=pa.bool_(), from_pandas=True))
    table = pa.Table.from_arrays(arrays, names=["load_batch_id", "row_no", *entity.column_names])
    sink = io.BytesIO()
    pacsv.write_csv(table, sink, pacsv.WriteOptions(include_header=False, batch_size=65536))
    return sink.getvalue()


def create_partition(cursor: Any, entity: Entity, batch_id: int) -> None:
    table = staging_table(entity, batch_id)
    cursor.execute(f"DROP TABLE IF EXISTS {table}")
    cursor.execute(
        f"CREATE UNLOGGED TABLE {table} PARTITION OF staging.{entity.name} FOR VALUES IN ({int(batch_id)})"
    )


def copy_to_staging(raw_conn: Any, batch_id: int, prepared: Prepared) -> dict[str, int]:
    """COPY every prepared frame into its staging partition for the batch (one DB-API transaction)."""
    counts: dict[str, int] = {}
    with raw_conn.cursor() as cursor:
        for entity in ENTITIES:
            frame = prepared.frames.get(entity.name)
            if frame is None:
                continue
            create_partition(cursor, entity, batch_id)
            columns = ", ".join(["load_batch_id", "row_no", *entity.column_names])
            sql = f"COPY {staging_table(entity, batch_id)} ({columns}) FROM STDIN WITH (FORMAT csv)"
            for start in range(0, max(len(frame), 1), COPY_CHUNK_ROWS):
                payload = _csv_bytes(frame.iloc[start:start + COPY_CHUNK_ROWS], entity, batch_id, start + 1)
                cursor.copy_expert(sql, io.BytesIO(payload))
                del payload
            cursor.execute(f"ANALYZE {staging_table(entity, batch_id)}")
            counts[entity.name] = len(frame)
    return counts


def drop_staging(cursor: Any, batch_ids: Iterable[int]) -> None:
    for batch_id in batch_ids:
        for entity in ENTITIES:
            cursor.execute(f"DROP TABLE IF EXISTS {staging_table(entity, batch_id)}")


# --------------------------------------------------------------------------------------------------
# core: one transaction of set-based upserts

#: Called after each step of :func:`upsert_core` with the step's name (tests inject failures here).
step_hook: Callable[[str], None] | None = None


@dataclass(frozen=True)
class CoreTarget:
    entity: Entity
    columns: tuple[str, ...]   # core columns written from staging (besides source)
    select: dict[str, str]     # SQL expression per column when not plain ``s.<column>``
    bookkeeping: tuple[str, ...] = ()  # extra columns set on write but not compared (as_of, load_batch_id)


_TARGETS: tuple[CoreTarget, ...] = (
    CoreTarget(BRANCH, ("branch_id", "name"), {}),
    CoreTarget(DEPARTMENT, ("department_id", "name", "branch_id"), {}),
    CoreTarget(PRACTITIONER, ("practitioner_id", "display_name", "specialty", "department_id", "archived"),
               {"archived": "COALESCE(s.archived, false)"}),
    CoreTarget(SERVICE, ("service_id", "code", "name", "default_duration_min", "no_overbook"),
               {"default_duration_min": "s.default_duration_min::integer",
                "no_overbook": "COALESCE(s.no_overbook, false)"}),
    CoreTarget(RESOURCE, ("resource_id", "name", "kind", "practitioner_id", "department_id", "branch_id",
                          "no_overbook", "archived"),
               {"kind": "COALESCE(s.kind, 'practitioner')", "no_overbook": "COALESCE(s.no_overbook, false)",
                "archived": "COALESCE(s.archived, false)"}),
    CoreTarget(PATIENT, ("patient_key", "sex", "birth_year", "flags"),
               {"birth_year": "s.birth_year::integer", "flags": "COALESCE(s.flags, '{}'::jsonb)"}),
    CoreTarget(APPOINTMENT, ("appointment_id", "patient_key", "resource_id", "practitioner_id", "department_id",
                             "branch_id", "service_id", "start_at", "duration_min", "booked_at", "channel",
                             "confirmed", "reminder_sent", "rescheduled_from_id", "raw_status", "status",
                             "status_changed_at", "source_updated_at"),
               {"duration_min": "s.duration_min::integer", "raw_status": "COALESCE(s.raw_status, '{}'::jsonb)"},
               bookkeeping=("as_of", "load_batch_id")),
    CoreTarget(SLOT, ("resource_id", "start_at", "duration_min", "no_overbook"),
               {"duration_min": "s.duration_min::integer", "no_overbook": "COALESCE(s.no_overbook, false)"}),
    CoreTarget(RESOURCE_DAY, ("resource_id", "day", "slots", "slot_minutes", "work_start", "work_end", "on_leave"),
               {"slots": "s.slots::integer", "slot_minutes": "s.slot_minutes::integer",
                "on_leave": "COALESCE(s.on_leave, false)"}),
)


def upsert_sql(target: CoreTarget, batch_id: int) -> str:
    """``INSERT … SELECT … ON CONFLICT DO UPDATE … WHERE (old) IS DISTINCT FROM (new)`` for one entity.

    Rows of the batch that were quarantined are left out; the statement returns one row with the
    number of rows inserted and updated.
    """
    entity = target.entity
    key = entity.key
    columns = target.columns
    book = target.bookkeeping
    book_values = {"as_of": "%(as_of)s", "load_batch_id": "%(batch_id)s"}
    select_list = ", ".join([target.select.get(c, f"s.{c}") for c in columns] + [book_values[b] for b in book])
    insert_cols = ", ".join(["source", *columns, *book, "updated_at"])
    compared = [c for c in columns if c not in key]
    set_list = ", ".join([f"{c} = EXCLUDED.{c}" for c in (*compared, *book)] + ["updated_at = now()"])
    old = ", ".join(f"c.{c}" for c in compared)
    new = ", ".join(f"EXCLUDED.{c}" for c in compared)
    return f"""
WITH written AS (
    INSERT INTO core.{entity.name} AS c ({insert_cols})
    SELECT %(source)s, {select_list}, now()
    FROM {staging_table(entity, batch_id)} s
    WHERE s.row_no NOT IN (
        SELECT q.row_no FROM quarantine.record q
        WHERE q.load_batch_id = %(batch_id)s AND q.entity = '{entity.name}')
    ON CONFLICT (source, {", ".join(key)}) DO UPDATE SET {set_list}
    WHERE ROW({old}) IS DISTINCT FROM ROW({new})
    RETURNING (xmax = 0) AS inserted
)
SELECT count(*) FILTER (WHERE inserted), count(*) FILTER (WHERE NOT inserted) FROM written
"""


def _reconcile_sql(batch_id: int, full_snapshot: bool, has_existing: bool) -> str | None:
    """Appointments of the source that the source no longer has become ``deleted``."""
    staged = staging_table(APPOINTMENT, batch_id)
    if full_snapshot:
        window = ""
        missing = f"NOT EXISTS (SELECT 1 FROM {staged} s WHERE s.appointment_id = c.appointment_id)"
    elif has_existing:
        window = "AND c.start_at >= %(reconcile_from)s AND c.start_at < %(reconcile_to)s"
        existing = staging_table(EXISTING, batch_id)
        missing = (f"NOT EXISTS (SELECT 1 FROM {existing} e WHERE e.appointment_id = c.appointment_id) "
                   f"AND NOT EXISTS (SELECT 1 FROM {staged} s WHERE s.appointment_id = c.appointment_id)")
    else:
        return None
    return f"""
UPDATE core.appointment c
SET status = 'deleted', as_of = %(as_of)s, load_batch_id = %(batch_id)s, updated_at = now()
WHERE c.source = %(source)s AND c.status <> 'deleted' {window} AND {missing}
"""


def _slot_replace_sql(batch_id: int) -> str:
    """Slots of a (resource, day) the batch covers that the source no longer has are removed."""
    staged = staging_table(SLOT, batch_id)
    return f"""
DELETE FROM core.slot c
USING (SELECT DISTINCT resource_id, start_at::date AS day FROM {staged} WHERE start_at IS NOT NULL) d
WHERE c.source = %(source)s AND c.resource_id = d.resource_id
  AND c.start_at >= d.day AND c.start_at < d.day + 1
  AND NOT EXISTS (SELECT 1 FROM {staged} s WHERE s.resource_id = c.resource_id AND s.start_at = c.start_at)
"""


def capped_watermarks(watermarks: dict[str, Any], as_of: date) -> dict[str, datetime]:
    """Watermarks to save: never later than the start of the as-of date, so that rows changed on or
    after it (whose outcome this run masked) are read again by the next run."""
    cutoff = datetime.combine(as_of, time.min)
    out: dict[str, datetime] = {}
    for stream, value in watermarks.items():
        if value is None:
            continue
        moment = pd.Timestamp(value)
        if moment.tzinfo is not None:
            moment = moment.tz_localize(None)
        out[stream] = min(moment.to_pydatetime(), cutoff)
    return out


def _step(name: str) -> None:
    if step_hook is not None:
        step_hook(name)


def upsert_core(cursor: Any, *, batch_id: int, source: str, as_of: date, staged: Iterable[str],
                full_snapshot: bool, reconcile: tuple[date, date] | None,
                watermarks: dict[str, datetime]) -> dict[str, Any]:
    """Every write of a load, in the caller's transaction. Returns counts per entity."""
    staged = set(staged)
    params = {"batch_id": batch_id, "source": source, "as_of": as_of}
    cursor.execute("SELECT pg_advisory_xact_lock(hashtext('clinicflow.load'), hashtext(%(source)s))", params)
    counts: dict[str, Any] = {}
    for target in _TARGETS:
        if target.entity.name not in staged:
            continue
        cursor.execute(upsert_sql(target, batch_id), params)
        inserted, updated = cursor.fetchone()
        counts[target.entity.name] = {"inserted": int(inserted), "updated": int(updated)}
        _step(target.entity.name)
        if target.entity is SLOT:
            cursor.execute(_slot_replace_sql(batch_id), params)
            counts["slot"]["removed"] = cursor.rowcount
            _step("slot_replace")
    deleted = 0
    if APPOINTMENT.name in staged:
        sql = _reconcile_sql(batch_id, full_snapshot, EXISTING.name in staged and reconcile is not None)
        if sql is not None:
            window = reconcile or (None, None)
            cursor.execute(sql, {**params, "reconcile_from": window[0], "reconcile_to": window[1]})
            deleted = cursor.rowcount
        _step("reconcile")
    counts["deleted"] = deleted
    for stream, value in watermarks.items():
        cursor.execute(
            """INSERT INTO ops.watermark (source, stream, value) VALUES (%(source)s, %(stream)s, %(value)s)
               ON CONFLICT (source, stream) DO UPDATE SET value = EXCLUDED.value, updated_at = now()
               WHERE ops.watermark.value IS DISTINCT FROM EXCLUDED.value""",
            {"source": source, "stream": stream, "value": value},
        )
    _step("watermarks")
    return counts
