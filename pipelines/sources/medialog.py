"""Medialog (МИС «Медиалог») on Microsoft SQL Server: read-only extraction into the canonical model.

The connector looks at ``INFORMATION_SCHEMA.COLUMNS`` first and builds its queries (SQLAlchemy Core:
valid T-SQL on ``mssql+pymssql``/``mssql+pyodbc``, and the same queries on the PostgreSQL demo
source) from the columns the installation has. Every query is a plain SELECT in one READ COMMITTED
transaction: no temporary tables, no DDL, no writes; a SELECT-only login is enough.

What one run reads (see docs/medialog-generator.md, "The connector", for every option):

* reference tables (FM_ORG, FM_DEP, MEDECINS, MEDDEP, SPECIALISATION, PL_EXAM, PL_SUBJ): in full;
* PLANNING: rows changed since the ``planning`` watermark (``KRN_MODIFY_DATE``, minus an overlap),
  rows whose visit record (MOTCONSU) or bill changed since their watermarks, and every row with
  ``DATE_CONS`` in a re-read window around the as-of date (outcomes change as days pass, without
  any row changing); the first run (no watermark) reads everything;
* the evidence of attendance for those rows — arrival mark, visit records, bills — and reminders
  (SMS_MESSAGES) and reschedules (SOURCE_PLANNING_ID), from which the status is derived;
* PATIENTS referenced by those rows: sex, birth year and two flags only (names and phones are
  never selected);
* the ids of every appointment in a reconciliation window, to detect hard deletes;
* the slot grid (PL_AGEND/PL_DAY/PL_INT minus PL_EXCL) around the as-of date.

Medialog has no no-show status: an appointment before the as-of date that is neither cancelled nor
deleted and has no evidence of attendance is a no-show (the rule is configurable per clinic).
"""

# ruff: noqa: SIM300  (Medialog's UPPERCASE column attributes, t.c.DATE_CONS, look like constants to ruff)

from __future__ import annotations

import dataclasses
import json
import logging
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.functions import FunctionElement

from clinicflow.errors import ConfigError, DataQualityError, SourceUnavailableError
from clinicflow.logs import timed
from clinicflow.settings import SourceConfig
from pipelines.sources import base
from pipelines.sources import medialog_grid as grid

log = logging.getLogger(__name__)

STREAMS = ("planning", "motconsu", "fm_bill")
#: Ids per statement when reading rows related to known appointments (SQL Server allows 2100 parameters).
CHUNK_IDS = 2_000
EVIDENCE_KINDS = ("arrival", "visit", "bill")

# --------------------------------------------------------------------------------------------------
# options


@dataclass(frozen=True)
class MedialogOptions:
    """Connector options (``SourceConfig.options``). Defaults suit a typical installation."""

    #: Database schema of the Medialog tables (None: the login's default schema, dbo on SQL Server).
    schema: str | None = None
    #: Re-read every appointment with DATE_CONS in [as_of - before, as_of + after) on each run.
    reread_days_before: int = 14
    reread_days_after: int = 14
    #: Minutes subtracted from a watermark before reading (rows committed late, clock skew).
    overlap_minutes: int = 60
    #: Hard-delete reconciliation: ids of all appointments with DATE_CONS in this window are read.
    reconcile_days_before: int = 60
    reconcile_days_after: int = 120
    #: Evidence of attendance that counts: "arrival" (PATIENT_ARRIVEE), "visit" (MOTCONSU), "bill" (FM_BILL).
    evidence: tuple[str, ...] = EVIDENCE_KINDS
    #: Evidence dated up to this many days after the appointment day still counts; an appointment
    #: without evidence becomes a no-show only once that many days have passed.
    grace_days: int = 0
    #: A visit record counts only if created or changed from this many minutes before the start on
    #: (so that a record created at booking time, as some clinics do, is not taken for a visit).
    visit_minutes_before_start: int = 60
    #: MOTCONSU.REC_STATUS values of cancelled records (never evidence).
    motconsu_deleted_statuses: tuple[str, ...] = ("D",)
    #: PLANNING.STATUS values: active (NULL is active too) and deleted; any other value is reported
    #: and the row's status left unmapped (the loader quarantines it).
    active_status_values: tuple[int, ...] = (0,)
    deleted_status_values: tuple[int, ...] = (1,)
    #: SMS_MESSAGES.REC_TYPE values that are appointment reminders.
    reminder_rec_types: tuple[str, ...] = ("PLANNING_AUTO_NOTIFY",)
    #: SMS_MESSAGES.STATUS values of a sent reminder (None: any row with SENDED_DATETIME set).
    reminder_statuses: tuple[int, ...] | None = None
    #: PL_EXCL.PL_LEG_ID values that mean "not working" (None: every exception blocks time).
    exclusion_leg_ids: tuple[int, ...] | None = None
    #: A cancelled appointment inside such an exception was cancelled by the clinic.
    clinic_cancel_on_exclusion: bool = True
    #: MEDECINS_CREATOR_ID → channel (web, phone, hub, …). Others: "doctor" when the creator is the
    #: appointment's doctor, else "staff".
    channel_by_creator: Mapping[str, str] = field(default_factory=dict)
    #: PATIENTS.POL codes.
    sex_codes: Mapping[str, str] = field(default_factory=lambda: {"0": "M", "1": "F"})
    #: Where capacity comes from: "auto" (the templates if PL_DAY exists), "templates" or "none".
    capacity: str = "auto"
    #: Capacity per resource-day for [as_of - before, as_of + after); single slots from
    #: as_of - slot_days_before on.
    capacity_days_before: int = 365
    capacity_days_after: int = 42
    slot_days_before: int = 14
    #: PL_SUBJ ids and PL_EXAM ids never to overbook.
    no_overbook_resource_ids: tuple[str, ...] = ()
    no_overbook_exam_ids: tuple[str, ...] = ()
    #: Rows per fetch when streaming.
    chunk_rows: int = 50_000
    #: Seconds to wait for a connection.
    connect_timeout_s: int = 15
    #: On a PostgreSQL source (the demo), read with COPY … TO STDOUT instead of a cursor (faster).
    fast_copy: bool = True

    @classmethod
    def parse(cls, options: Mapping[str, Any], source_name: str = "medialog") -> MedialogOptions:
        known = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(options) - set(known))
        if unknown:
            raise ConfigError(f"source {source_name}: unknown Medialog option(s) {unknown}; "
                              f"known: {', '.join(sorted(known))}")
        values: dict[str, Any] = {}
        for name, value in options.items():
            values[name] = _coerce_option(source_name, name, value, getattr(cls(), name))
        parsed = cls(**values)
        parsed._check(source_name)
        return parsed

    def _check(self, source_name: str) -> None:
        def fail(name: str, what: str) -> None:
            raise ConfigError(f"source {source_name}: option {name!r} {what} (got {getattr(self, name)!r})")

        for name in ("reread_days_before", "reread_days_after", "overlap_minutes", "reconcile_days_before",
                     "reconcile_days_after", "grace_days", "visit_minutes_before_start", "capacity_days_before",
                     "capacity_days_after", "slot_days_before"):
            if not 0 <= getattr(self, name) <= 3660:
                fail(name, "must be a whole number from 0 to 3660")
        if not 1_000 <= self.chunk_rows <= 1_000_000:
            fail("chunk_rows", "must be between 1000 and 1000000")
        if not 1 <= self.connect_timeout_s <= 600:
            fail("connect_timeout_s", "must be between 1 and 600 seconds")
        if not set(self.evidence) <= set(EVIDENCE_KINDS):
            fail("evidence", f"may only hold {list(EVIDENCE_KINDS)}")
        if self.capacity not in ("auto", "templates", "none"):
            fail("capacity", "must be 'auto', 'templates' or 'none'")
        if set(self.sex_codes.values()) - {"M", "F"}:
            fail("sex_codes", "must map codes to 'M' or 'F'")
        if set(self.active_status_values) & set(self.deleted_status_values):
            fail("deleted_status_values", "overlaps active_status_values")


def _coerce_option(source: str, name: str, value: Any, default: Any) -> Any:
    def bad(expected: str) -> ConfigError:
        return ConfigError(f"source {source}: option {name!r} must be {expected} (got {value!r})")

    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise bad("true or false")
        return value
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad("a whole number")
        return value
    if isinstance(default, str) or (default is None and name == "schema"):
        if value is not None and not isinstance(value, str):
            raise bad("a string")
        return value
    if isinstance(default, Mapping):
        if not isinstance(value, Mapping) or not all(isinstance(v, str) for v in value.values()):
            raise bad("an object of strings")
        return {str(k): v for k, v in value.items()}
    # tuples: lists of ints or strings; None allowed where the default is None
    if value is None and default is None:
        return None
    if not isinstance(value, list | tuple):
        raise bad("a list")
    if name in ("active_status_values", "deleted_status_values", "reminder_statuses", "exclusion_leg_ids"):
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            raise bad("a list of whole numbers")
        return tuple(value)
    return tuple(str(v) for v in value)


# --------------------------------------------------------------------------------------------------
# connections


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


def _connect_args(drivername: str, timeout: int) -> dict[str, Any]:
    if "pymssql" in drivername:
        return {"login_timeout": timeout, "appname": "clinicflow-medialog"}
    if "pyodbc" in drivername:
        return {"timeout": timeout}
    if drivername.startswith("postgresql"):
        return {"connect_timeout": timeout, "application_name": "clinicflow-medialog"}
    return {}


def create_source_engine(source: SourceConfig, options: MedialogOptions | None = None) -> sa.Engine:
    """An engine for the source (no pool: one connection per run). The connector never creates databases."""
    options = options or MedialogOptions()
    url = source_url(source)
    try:
        parsed = sa.make_url(url)
        return sa.create_engine(parsed, poolclass=sa.pool.NullPool,
                                connect_args=_connect_args(parsed.drivername, options.connect_timeout_s))
    except (sa.exc.ArgumentError, ModuleNotFoundError) as exc:
        raise ConfigError(f"source {source.name}: cannot use URL ({exc})") from None


def _first_line(exc: BaseException) -> str:
    """The driver's message in one line (pymssql's bytes and DB-Lib prefixes cleaned up)."""
    orig = getattr(exc, "orig", None) or exc
    flat: list[Any] = []
    for arg in getattr(orig, "args", ()):
        flat.extend(arg if isinstance(arg, tuple) else [arg])
    parts = [a.decode("utf-8", "replace") if isinstance(a, bytes) else a for a in flat if isinstance(a, bytes | str)]
    text = "\n".join(parts) if parts else str(orig)
    lines = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("DB-Lib error message") and line not in lines:
            lines.append(line)
    return "; ".join(lines[:2]).rstrip(".?! ") if lines else type(exc).__name__


def _unavailable(source: SourceConfig, engine: sa.Engine, exc: BaseException) -> SourceUnavailableError:
    return SourceUnavailableError(
        f"{source.name}: cannot read the Medialog database at {engine.url.render_as_string(hide_password=True)}: "
        f"{_first_line(exc)}. Nothing was extracted; the next run catches up once it is reachable."
    )


def probe(source: SourceConfig) -> str:
    """Connect, check that PLANNING exists and report the installation's optional columns."""
    options = MedialogOptions.parse(source.options, source.name)
    engine = create_source_engine(source, options)
    try:
        with engine.connect() as conn:
            found = read_schema(conn, options)
    except sa.exc.DBAPIError as exc:
        raise _unavailable(source, engine, exc) from None
    finally:
        engine.dispose()
    if not found.has("PLANNING"):
        raise SourceUnavailableError(f"{source.name}: connected, but no PLANNING table: is it a Medialog database?")
    optional = [f"{t}.{c}" for t, c in OPTIONAL_COLUMNS if found.has(t, c)]
    return (f"medialog at {engine.url.render_as_string(hide_password=True)}: PLANNING present, "
            f"{len(optional)}/{len(OPTIONAL_COLUMNS)} optional columns")


# --------------------------------------------------------------------------------------------------
# what the installation has

#: Columns without which nothing can be extracted.
REQUIRED_COLUMNS = (
    ("PLANNING", "PLANNING_ID"), ("PLANNING", "PL_SUBJ_ID"), ("PLANNING", "DATE_CONS"), ("PLANNING", "HEURE"),
    ("PLANNING", "PATIENTS_ID"), ("PL_SUBJ", "PL_SUBJ_ID"), ("PATIENTS", "PATIENTS_ID"),
)
#: Columns the connector uses when they exist (versions and installations differ).
OPTIONAL_COLUMNS = (
    ("PLANNING", "DUREE"), ("PLANNING", "PL_EXAM_ID"), ("PLANNING", "CANCELLED"), ("PLANNING", "STATUS"),
    ("PLANNING", "PATIENT_ARRIVEE"), ("PLANNING", "ARRIVE_DATE"), ("PLANNING", "NOT_ACCEPTED"),
    ("PLANNING", "SOURCE_PLANNING_ID"), ("PLANNING", "CREATE_DATE_TIME"), ("PLANNING", "MEDECINS_CREATOR_ID"),
    ("PLANNING", "KRN_CREATE_DATE"), ("PLANNING", "KRN_MODIFY_DATE"), ("PLANNING", "DATE_START"),
    ("PLANNING", "DATE_END"),
    ("PL_SUBJ", "NAME"), ("PL_SUBJ", "MEDECINS_ID"), ("PL_SUBJ", "MEDDEP_ID"), ("PL_SUBJ", "FM_INTORG_ID"),
    ("PL_SUBJ", "ARCHIVE"), ("PL_SUBJ", "PL_AGEND_ID1"), ("PL_SUBJ", "NO_SMS_NOTIFY"),
    ("PATIENTS", "POL"), ("PATIENTS", "NE_LE"), ("PATIENTS", "GOD_ROGDENIQ"), ("PATIENTS", "NOT_SEND_SMS"),
    ("PATIENTS", "DOSSIER_EXIT"),
    ("MOTCONSU", "PLANNING_ID"), ("MOTCONSU", "PATIENTS_ID"), ("MOTCONSU", "DATE_CONSULTATION"),
    ("MOTCONSU", "MEDECINS_ID"), ("MOTCONSU", "REC_STATUS"), ("MOTCONSU", "KRN_CREATE_DATE"),
    ("MOTCONSU", "KRN_MODIFY_DATE"),
    ("FM_BILL", "PATIENTS_ID"), ("FM_BILL", "BILL_DATE"), ("FM_BILL", "MEDECINS1_ID"), ("FM_BILL", "KRN_MODIFY_DATE"),
    ("SMS_MESSAGES", "REC_ID"), ("SMS_MESSAGES", "REC_TYPE"), ("SMS_MESSAGES", "STATUS"),
    ("SMS_MESSAGES", "SENDED_DATETIME"),
    ("FM_ORG", "LABEL"), ("FM_ORG", "ORG_TYPE"), ("FM_DEP", "LABEL"), ("FM_DEP", "FM_INTORG_ID"),
    ("MEDECINS", "NOM"), ("MEDECINS", "PRENOM"), ("MEDECINS", "PATRONYME"), ("MEDECINS", "SPECIALISATION_ID"),
    ("MEDECINS", "TYPE"), ("MEDECINS", "ARCHIVE"), ("MEDDEP", "MEDECINS_ID"), ("MEDDEP", "FM_DEP_ID"),
    ("SPECIALISATION", "NAME"), ("PL_EXAM", "NAME"), ("PL_EXAM", "CODE"), ("PL_EXAM", "DUREE"),
    ("PL_AGEND", "DUREE_TRANCHE"), ("PL_DAY", "PL_AGEND_ID"), ("PL_DAY", "START_TIME"), ("PL_DAY", "END_TIME"),
    ("PL_INT", "PL_DAY_ID"), ("PL_EXCL", "PL_SUBJ_ID"), ("PL_EXCL", "FROM_DATE"), ("PL_EXCL", "TO_DATE"),
)
#: Never selected, whatever the installation has (personal data).
FORBIDDEN_COLUMNS = frozenset({
    "NOM", "PRENOM", "PATRONYME", "TEL", "RAB_TEL", "E_MAIL", "PHONE", "MESSAGE", "MOTIF", "COMMENTAIRE", "ADRES",
    "MOBIL_TEL", "PASPORT_N", "FIO",
})
_DATE_TYPES = ("date", "datetime", "datetime2", "smalldatetime", "datetimeoffset", "timestamp",
               "timestamp without time zone", "timestamp with time zone")


@dataclass
class SourceSchema:
    """Tables and columns the installation has, from INFORMATION_SCHEMA.COLUMNS."""

    dialect: str
    schema: str | None
    columns: dict[str, dict[str, str]]  # table → column → data type

    def has(self, table: str, column: str | None = None) -> bool:
        cols = self.columns.get(table)
        return cols is not None and (column is None or column in cols)

    def table(self, name: str, alias: str | None = None) -> sa.TableClause:
        """A table clause with exactly the columns the installation has, minus personal data: a query
        cannot even name a patient's name, phone or free text."""
        cols = self.columns.get(name, {})
        clause = sa.table(name, *[
            sa.column(c, _sa_type(t))
            for c, t in cols.items() if name not in _PERSONAL_TABLES or c not in FORBIDDEN_COLUMNS
        ], schema=self.schema)
        return clause.alias(alias) if alias else clause

    @classmethod
    def full(cls, dialect: str = "mssql", schema: str | None = "dbo",
             drop: Iterable[tuple[str, str]] = ()) -> SourceSchema:
        """A schema with every column the connector knows (for compiling queries without a database)."""
        columns: dict[str, dict[str, str]] = {}
        for table, column in REQUIRED_COLUMNS + OPTIONAL_COLUMNS + _KEY_COLUMNS:
            columns.setdefault(table, {})[column] = ("datetime" if _looks_datetime(column) else
                                                     "varchar" if column in _TEXT_COLUMNS else "int")
        for table, column in drop:
            columns.get(table, {}).pop(column, None)
        return cls(dialect, schema, columns)


_PERSONAL_TABLES = frozenset({"PATIENTS", "PLANNING", "SMS_MESSAGES"})
_TEXT_COLUMNS = frozenset({"NAME", "LABEL", "CODE", "ORG_TYPE", "REC_STATUS", "REC_TYPE", "GOD_ROGDENIQ", "NOM",
                           "PRENOM", "PATRONYME"})
_KEY_COLUMNS = (
    ("FM_ORG", "FM_ORG_ID"), ("FM_DEP", "FM_DEP_ID"), ("MEDECINS", "MEDECINS_ID"), ("MEDDEP", "MEDDEP_ID"),
    ("SPECIALISATION", "SPECIALISATION_ID"), ("PL_EXAM", "PL_EXAM_ID"), ("PL_AGEND", "PL_AGEND_ID"),
    ("PL_DAY", "PL_DAY_ID"), ("PL_DAY", "DAY_OF_WEEK"), ("PL_DAY", "DAY_EVEN"), ("PL_DAY", "DAY_OF_MONTH"),
    ("PL_DAY", "DAY_MONTH"), ("PL_DAY", "DAY_YEAR"), ("PL_DAY", "PERIOD_FROM"), ("PL_DAY", "PERIOD_TO"),
    ("PL_DAY", "ENABLED"), ("PL_DAY", "DUREE_TRANCHE"), ("PL_DAY", "DAY_ORDER"), ("PL_INT", "START_TIME"),
    ("PL_INT", "END_TIME"), ("PL_INT", "PL_LEG_ID"), ("PL_EXCL", "FROM_TIME"), ("PL_EXCL", "TO_TIME"),
    ("PL_EXCL", "PL_LEG_ID"), ("PL_EXCL", "PL_EXCL_ID"), ("MOTCONSU", "MOTCONSU_ID"), ("FM_BILL", "FM_BILL_ID"),
)


_TEXT_TYPES = ("char", "varchar", "nchar", "nvarchar", "text", "ntext", "character varying", "character")


def _sa_type(data_type: str) -> sa.types.TypeEngine:
    if data_type in _DATE_TYPES:
        return sa.DateTime()
    if data_type in _TEXT_TYPES:
        return sa.String()
    return sa.Integer() if "int" in data_type or data_type == "bit" else sa.Numeric()


def _looks_datetime(column: str) -> bool:
    return column.endswith(("_DATE", "DATETIME", "DATE_TIME", "_START", "_END")) or column in (
        "DATE_CONS", "NE_LE", "DATE_CONSULTATION", "PERIOD_FROM", "PERIOD_TO", "FROM_DATE", "TO_DATE")


_TABLES = ("PLANNING", "PL_SUBJ", "PATIENTS", "MOTCONSU", "FM_BILL", "SMS_MESSAGES", "FM_ORG", "FM_DEP",
           "MEDECINS", "MEDDEP", "SPECIALISATION", "PL_EXAM", "PL_AGEND", "PL_DAY", "PL_INT", "PL_EXCL")


def columns_query(dialect: str, schema: str | None) -> sa.Select:
    """SELECT table, column, type FROM INFORMATION_SCHEMA.COLUMNS for the Medialog tables."""
    if dialect == "postgresql":
        info = sa.table("columns", sa.column("table_name"), sa.column("column_name"), sa.column("data_type"),
                        sa.column("table_schema"), schema="information_schema")
        tbl, col, typ, sch = (info.c.table_name, info.c.column_name, info.c.data_type, info.c.table_schema)
        current = sa.func.current_schema()
    else:
        info = sa.table("COLUMNS", sa.column("TABLE_NAME"), sa.column("COLUMN_NAME"), sa.column("DATA_TYPE"),
                        sa.column("TABLE_SCHEMA"), schema="INFORMATION_SCHEMA")
        tbl, col, typ, sch = (info.c.TABLE_NAME, info.c.COLUMN_NAME, info.c.DATA_TYPE, info.c.TABLE_SCHEMA)
        current = sa.func.schema_name()
    return sa.select(tbl, col, typ).where(tbl.in_(_TABLES), sch == (schema if schema else current))


def read_schema(conn: sa.Connection, options: MedialogOptions) -> SourceSchema:
    dialect = conn.dialect.name
    rows = conn.execute(columns_query(dialect, options.schema)).all()
    columns: dict[str, dict[str, str]] = {}
    for table, column, data_type in rows:
        columns.setdefault(str(table).upper(), {})[str(column).upper()] = str(data_type).lower()
    return SourceSchema(dialect, options.schema, columns)


# --------------------------------------------------------------------------------------------------
# the queries


@dataclass
class Window:
    """The days and times one run works with (clinic local, naive)."""

    as_of: date
    cutoff: datetime
    reread: tuple[datetime, datetime]
    reconcile: tuple[date, date]
    capacity: tuple[date, date]
    slots_from: date

    @classmethod
    def for_run(cls, as_of: date, o: MedialogOptions) -> Window:
        cutoff = datetime.combine(as_of, time())
        return cls(
            as_of=as_of, cutoff=cutoff,
            reread=(cutoff - timedelta(days=o.reread_days_before), cutoff + timedelta(days=o.reread_days_after)),
            reconcile=(as_of - timedelta(days=o.reconcile_days_before), as_of + timedelta(days=o.reconcile_days_after)),
            capacity=(as_of - timedelta(days=o.capacity_days_before), as_of + timedelta(days=o.capacity_days_after)),
            slots_from=as_of - timedelta(days=o.slot_days_before),
        )


class Queries:
    """Builds every statement the connector sends, from the installation's schema and the options."""

    def __init__(self, schema: SourceSchema, options: MedialogOptions, window: Window,
                 watermarks: Mapping[str, datetime | None]) -> None:
        self.s, self.o, self.w = schema, options, window
        self.watermarks = {k: v for k, v in watermarks.items() if v is not None}
        self.p = schema.table("PLANNING")

    # -- helpers ----------------------------------------------------------------------------------
    def _since(self, stream: str) -> datetime | None:
        value = self.watermarks.get(stream)
        return None if value is None else value - timedelta(minutes=self.o.overlap_minutes)

    @property
    def incremental(self) -> bool:
        return self.s.has("PLANNING", "KRN_MODIFY_DATE") and self._since("planning") is not None

    def _cols(self, table: sa.TableClause, names: Iterable[str]) -> list[sa.ColumnClause]:
        return [table.c[n] for n in names if n in table.c]

    # -- watermarks -------------------------------------------------------------------------------
    def watermark(self, stream: str) -> sa.Select | None:
        """Highest modification time before the as-of date (read first, so that rows changed
        during the extraction are read again by the next run)."""
        table, column = {"planning": ("PLANNING", "KRN_MODIFY_DATE"), "motconsu": ("MOTCONSU", "KRN_MODIFY_DATE"),
                         "fm_bill": ("FM_BILL", "KRN_MODIFY_DATE")}[stream]
        if not self.s.has(table, column):
            return None
        t = self.s.table(table)
        return sa.select(sa.func.max(t.c[column])).where(t.c[column] < self.w.cutoff)

    # -- which appointments -----------------------------------------------------------------------
    def changed_ids(self) -> sa.Select | None:
        """Ids of the appointments to read this run (None: all of them)."""
        if not self.incremental:
            return None
        p = self.s.table("PLANNING", "chg_p")
        parts: list[sa.Select] = [
            sa.select(p.c.PLANNING_ID).where(p.c.KRN_MODIFY_DATE > self._since("planning")),
            sa.select(p.c.PLANNING_ID).where(p.c.DATE_CONS >= self.w.reread[0], p.c.DATE_CONS < self.w.reread[1]),
        ]
        since_m = self._since("motconsu")
        if since_m is not None and self.s.has("MOTCONSU", "KRN_MODIFY_DATE"):
            m = self.s.table("MOTCONSU", "chg_m")
            if "PLANNING_ID" in m.c:
                parts.append(sa.select(m.c.PLANNING_ID).where(m.c.KRN_MODIFY_DATE > since_m,
                                                              m.c.PLANNING_ID.is_not(None)))
            if {"PATIENTS_ID", "DATE_CONSULTATION"} <= set(m.c.keys()):
                p2 = self.s.table("PLANNING", "chg_p2")
                parts.append(sa.select(p2.c.PLANNING_ID).select_from(p2.join(m, sa.and_(
                    m.c.PATIENTS_ID == p2.c.PATIENTS_ID, m.c.DATE_CONSULTATION >= p2.c.DATE_CONS,
                    m.c.DATE_CONSULTATION < add_days(p2.c.DATE_CONS, _days(1)),
                ))).where(m.c.KRN_MODIFY_DATE > since_m))
        since_b = self._since("fm_bill")
        if since_b is not None and self.s.has("FM_BILL", "KRN_MODIFY_DATE") and self.s.has("FM_BILL", "BILL_DATE"):
            b = self.s.table("FM_BILL", "chg_b")
            p3 = self.s.table("PLANNING", "chg_p3")
            parts.append(sa.select(p3.c.PLANNING_ID).select_from(p3.join(b, sa.and_(
                b.c.PATIENTS_ID == p3.c.PATIENTS_ID, b.c.BILL_DATE >= p3.c.DATE_CONS,
                b.c.BILL_DATE < add_days(p3.c.DATE_CONS, _days(1 + self.o.grace_days)),
            ))).where(b.c.KRN_MODIFY_DATE > since_b))
        return sa.union(*parts)

    def _id_filter(self, column: sa.ColumnElement) -> sa.ColumnElement:
        ids = self.changed_ids()
        return sa.true() if ids is None else column.in_(sa.select(ids.subquery().c.PLANNING_ID))

    # -- appointments -----------------------------------------------------------------------------
    APPOINTMENT_COLUMNS = ("PLANNING_ID", "PATIENTS_ID", "PL_SUBJ_ID", "PL_EXAM_ID", "DATE_CONS", "HEURE", "DUREE",
                           "CANCELLED", "STATUS", "PATIENT_ARRIVEE", "ARRIVE_DATE", "NOT_ACCEPTED",
                           "SOURCE_PLANNING_ID", "MEDECINS_CREATOR_ID", "KRN_MODIFY_DATE")

    def appointments(self) -> sa.Select:
        """PLANNING rows of the run. DATE_START/DATE_END (newer versions) are read only where DUREE is
        missing (for the duration); HEURE gives the start."""
        p = self.p
        cols: list[sa.ColumnElement] = self._cols(p, self.APPOINTMENT_COLUMNS)
        created = [p.c[c] for c in ("CREATE_DATE_TIME", "KRN_CREATE_DATE") if c in p.c]
        if created:
            cols.append((sa.func.coalesce(*created) if len(created) > 1 else created[0]).label("BOOKED_AT"))
        if "DUREE" not in p.c:
            cols += self._cols(p, ("DATE_START", "DATE_END"))
        return sa.select(*cols).where(p.c.PATIENTS_ID.is_not(None), self._id_filter(p.c.PLANNING_ID))

    # The run's appointments are read first (with the id filter above, evaluated once); the rows
    # related to them are then read for their known ids, ``CHUNK_IDS`` at a time. ``None`` as ids
    # means "all of them" (the first, full load).

    def _in(self, column: sa.ColumnElement, values: Sequence[int]) -> sa.ColumnElement:
        """``column IN (1, 2, …)`` with the numbers written into the statement (no parameter limit)."""
        return column.in_(sa.bindparam(f"in_{column.name}", [int(v) for v in values], expanding=True,
                                       literal_execute=True))

    def patients(self, patient_ids: Sequence[int] | None = None) -> sa.Select:
        """Only patients the run's appointments reference; sex, birth date/year and flags only."""
        t = self.s.table("PATIENTS")
        cols = self._cols(t, ("PATIENTS_ID", "POL", "NE_LE", "GOD_ROGDENIQ", "NOT_SEND_SMS", "DOSSIER_EXIT"))
        if patient_ids is not None:
            return sa.select(*cols).where(self._in(t.c.PATIENTS_ID, patient_ids))
        p = self.s.table("PLANNING", "run_p")
        return sa.select(*cols).where(t.c.PATIENTS_ID.in_(sa.select(p.c.PATIENTS_ID).where(
            p.c.PATIENTS_ID.is_not(None))))

    def _visit_table(self) -> sa.TableClause | None:
        if "visit" not in self.o.evidence or not self.s.has("MOTCONSU"):
            return None
        m = self.s.table("MOTCONSU")
        if not ({"KRN_CREATE_DATE", "KRN_MODIFY_DATE"} & set(m.c.keys())):
            return None
        if "PLANNING_ID" not in m.c and not {"PATIENTS_ID", "DATE_CONSULTATION"} <= set(m.c.keys()):
            return None
        return m

    def visit_records(self, *, ids: Sequence[int] | None = None, patient_ids: Sequence[int] | None = None,
                      first_day: datetime | None = None) -> sa.Select | None:
        """Visit records that can be evidence: all (full load), those linked to ``ids``, or the
        unlinked ones of ``patient_ids`` from ``first_day`` (the run's earliest appointment day) on."""
        m = self._visit_table()
        if m is None:
            return None
        cols = self._cols(m, ("PLANNING_ID", "PATIENTS_ID", "DATE_CONSULTATION", "MEDECINS_ID", "REC_STATUS",
                              "KRN_CREATE_DATE", "KRN_MODIFY_DATE"))
        conditions = [sa.or_(*[m.c[c] < self.w.cutoff for c in ("KRN_CREATE_DATE", "KRN_MODIFY_DATE") if c in m.c])]
        if ids is not None:
            if "PLANNING_ID" not in m.c:
                return None
            conditions.append(self._in(m.c.PLANNING_ID, ids))
        elif patient_ids is not None:
            if "PATIENTS_ID" not in m.c:
                return None
            conditions.append(self._in(m.c.PATIENTS_ID, patient_ids))
            if first_day is not None and "DATE_CONSULTATION" in m.c:
                conditions.append(m.c.DATE_CONSULTATION >= first_day)
            if "PLANNING_ID" in m.c:
                conditions.append(m.c.PLANNING_ID.is_(None))
        return sa.select(*cols).where(*conditions)

    def bills(self, *, patient_ids: Sequence[int] | None = None, first_day: datetime | None = None
              ) -> sa.Select | None:
        if "bill" not in self.o.evidence or not (self.s.has("FM_BILL", "PATIENTS_ID")
                                                 and self.s.has("FM_BILL", "BILL_DATE")):
            return None
        b = self.s.table("FM_BILL")
        query = sa.select(*self._cols(b, ("PATIENTS_ID", "BILL_DATE", "MEDECINS1_ID"))).where(
            b.c.BILL_DATE < self.w.cutoff)
        if patient_ids is not None:
            query = query.where(self._in(b.c.PATIENTS_ID, patient_ids))
            if first_day is not None:
                query = query.where(b.c.BILL_DATE >= first_day)
        return query

    def reminders(self, ids: Sequence[int] | None = None) -> sa.Select | None:
        if not (self.s.has("SMS_MESSAGES", "REC_ID") and self.s.has("SMS_MESSAGES", "SENDED_DATETIME")):
            return None
        x = self.s.table("SMS_MESSAGES")
        conditions = [x.c.SENDED_DATETIME.is_not(None), x.c.SENDED_DATETIME < self.w.cutoff]
        if ids is not None:
            conditions.append(self._in(x.c.REC_ID, ids))
        if "REC_TYPE" in x.c:
            conditions.append(x.c.REC_TYPE.in_(self.o.reminder_rec_types))
        if self.o.reminder_statuses is not None and "STATUS" in x.c:
            conditions.append(x.c.STATUS.in_(self.o.reminder_statuses))
        return sa.select(x.c.REC_ID).where(*conditions).distinct()

    def successors(self, ids: Sequence[int] | None = None) -> sa.Select | None:
        if not self.s.has("PLANNING", "SOURCE_PLANNING_ID"):
            return None
        q = self.s.table("PLANNING", "succ")
        conditions = [q.c.SOURCE_PLANNING_ID.is_not(None), q.c.SOURCE_PLANNING_ID != 0]
        if ids is not None:
            conditions.append(self._in(q.c.SOURCE_PLANNING_ID, ids))
        return sa.select(q.c.SOURCE_PLANNING_ID).where(*conditions).distinct()

    def existing_ids(self) -> sa.Select:
        p = self.p
        lo, hi = (datetime.combine(d, time()) for d in self.w.reconcile)
        return sa.select(p.c.PLANNING_ID).where(p.c.PATIENTS_ID.is_not(None), p.c.DATE_CONS >= lo, p.c.DATE_CONS < hi)

    # -- reference tables -------------------------------------------------------------------------
    def reference(self) -> dict[str, sa.Select]:
        out: dict[str, sa.Select] = {}
        plain = {
            "FM_ORG": ("FM_ORG_ID", "LABEL", "ORG_TYPE"),
            "FM_DEP": ("FM_DEP_ID", "LABEL", "FM_INTORG_ID"),
            "MEDDEP": ("MEDDEP_ID", "MEDECINS_ID", "FM_DEP_ID"),
            "SPECIALISATION": ("SPECIALISATION_ID", "NAME"),
            "PL_EXAM": ("PL_EXAM_ID", "CODE", "NAME", "DUREE"),
            "PL_SUBJ": ("PL_SUBJ_ID", "NAME", "MEDECINS_ID", "MEDDEP_ID", "FM_INTORG_ID", "ARCHIVE", "PL_AGEND_ID1",
                        "NO_SMS_NOTIFY"),
        }
        for table, names in plain.items():
            if self.s.has(table):
                t = self.s.table(table)
                out[table] = sa.select(*self._cols(t, names))
        if self.s.has("MEDECINS"):
            # doctors' names are staff data (shown in reports); users and robots are not practitioners
            t = self.s.table("MEDECINS")
            query = sa.select(*self._cols(t, ("MEDECINS_ID", "NOM", "PRENOM", "PATRONYME", "SPECIALISATION_ID",
                                              "TYPE", "ARCHIVE")))
            if "TYPE" in t.c:
                query = query.where(sa.or_(t.c.TYPE == 0, t.c.TYPE.is_(None)))
            out["MEDECINS"] = query
        return out

    # -- capacity ---------------------------------------------------------------------------------
    def uses_templates(self) -> bool:
        if self.o.capacity == "none":
            return False
        has = self.s.has("PL_DAY", "PL_AGEND_ID") and self.s.has("PL_SUBJ", "PL_AGEND_ID1")
        if self.o.capacity == "templates" and not has:
            raise DataQualityError("option capacity='templates' but this Medialog has no PL_DAY/PL_SUBJ.PL_AGEND_ID1: "
                                   "set capacity to 'none'")
        return has

    def capacity_from(self) -> date:
        """First day of capacity this run: the long history on the first load, afterwards the days
        that can still change (the re-read window or the single-slot window, whichever is longer)."""
        if self.incremental:
            return min(self.w.as_of - timedelta(days=self.o.reread_days_before), self.w.slots_from)
        return min(self.w.capacity[0], self.w.slots_from)

    def capacity(self) -> dict[str, sa.Select]:
        if not self.uses_templates():
            return {}
        out: dict[str, sa.Select] = {}
        day = self.s.table("PL_DAY")
        lo = datetime.combine(self.capacity_from(), time())
        out["PL_DAY"] = sa.select(*day.c).where(sa.or_(day.c.PERIOD_TO.is_(None), day.c.PERIOD_TO >= lo)
                                                if "PERIOD_TO" in day.c else sa.true())
        if self.s.has("PL_AGEND"):
            t = self.s.table("PL_AGEND")
            out["PL_AGEND"] = sa.select(*self._cols(t, ("PL_AGEND_ID", "DUREE_TRANCHE")))
        if self.s.has("PL_INT", "PL_DAY_ID"):
            t = self.s.table("PL_INT")
            out["PL_INT"] = sa.select(*self._cols(t, ("PL_DAY_ID", "START_TIME", "END_TIME", "PL_LEG_ID")))
        return out

    def exclusions(self) -> sa.Select | None:
        if not (self.s.has("PL_EXCL", "PL_SUBJ_ID") and self.s.has("PL_EXCL", "FROM_DATE")
                and self.s.has("PL_EXCL", "TO_DATE")):
            return None
        t = self.s.table("PL_EXCL")
        query = sa.select(*self._cols(t, ("PL_EXCL_ID", "PL_SUBJ_ID", "FROM_DATE", "FROM_TIME", "TO_DATE", "TO_TIME",
                                          "PL_LEG_ID")))
        if self.o.exclusion_leg_ids is not None and "PL_LEG_ID" in t.c:
            query = query.where(t.c.PL_LEG_ID.in_(self.o.exclusion_leg_ids))
        return query

    def statements(self) -> dict[str, sa.Select]:
        """Every statement of a run (for review and the T-SQL test)."""
        out: dict[str, sa.Select] = {"columns": columns_query(self.s.dialect, self.s.schema)}
        for stream in STREAMS:
            q = self.watermark(stream)
            if q is not None:
                out[f"watermark_{stream}"] = q
        out["appointments"] = self.appointments()
        first_day = self.w.reread[0]
        ids = (100001, 100002) if self.incremental else None
        people = (10001, 10002) if self.incremental else None
        for name, q in (("visit_records", self.visit_records(ids=ids)),
                        ("visit_records_by_patient", self.visit_records(patient_ids=people, first_day=first_day)),
                        ("bills", self.bills(patient_ids=people, first_day=first_day)),
                        ("patients", self.patients(people)), ("reminders", self.reminders(ids)),
                        ("successors", self.successors(ids)), ("exclusions", self.exclusions())):
            if q is not None:
                out[name] = q
        out["existing_ids"] = self.existing_ids()
        out.update({f"ref_{k}": v for k, v in self.reference().items()})
        out.update({f"capacity_{k}": v for k, v in self.capacity().items()})
        return out


class add_days(FunctionElement):
    """``add_days(column, n)``: the datetime n whole days later (DATEADD on SQL Server)."""

    type = sa.DateTime()
    name = "add_days"
    inherit_cache = True


@compiles(add_days)
def _add_days_default(element: add_days, compiler: Any, **kw: Any) -> str:
    expr, days = list(element.clauses)
    return f"({compiler.process(expr, **kw)} + {compiler.process(days, **kw)} * INTERVAL '1 day')"


@compiles(add_days, "mssql")
def _add_days_mssql(element: add_days, compiler: Any, **kw: Any) -> str:
    expr, days = list(element.clauses)
    return f"DATEADD(day, {compiler.process(days, **kw)}, {compiler.process(expr, **kw)})"


def _days(n: int) -> sa.ColumnElement:
    return sa.literal_column(str(int(n)), sa.Integer())


# --------------------------------------------------------------------------------------------------
# reading


def _read(conn: sa.Connection, stmt: sa.Select, options: MedialogOptions, what: str | None) -> pd.DataFrame:
    """Run a SELECT and return its rows as a DataFrame (streamed; COPY on a PostgreSQL source).
    Logged with its timing unless ``what`` is None (one part of a chunked read)."""
    if what is None:
        return _read_copy(conn, stmt) if conn.dialect.name == "postgresql" and options.fast_copy else \
            _read_cursor(conn, stmt, options.chunk_rows)
    with timed(f"medialog: read {what}", log) as timer:
        frame = _read(conn, stmt, options, None)
        timer.rows = len(frame)
    return frame


def _read_cursor(conn: sa.Connection, stmt: sa.Select, chunk: int) -> pd.DataFrame:
    """Stream rows ``chunk`` at a time straight from the DBAPI cursor (a server-side cursor on
    PostgreSQL; pymssql and pyodbc stream from the wire) into column arrays: no per-row objects
    beyond the driver's tuples, no type inference (the caller converts columns vectorised)."""
    compiled = stmt.compile(dialect=conn.dialect, compile_kwargs={"render_postcompile": True})
    params: Any = compiled.construct_params()
    if compiled.positional:
        params = tuple(params[name] for name in compiled.positiontup or ())
    keys = [c.name for c in stmt.selected_columns]
    raw = conn.connection.driver_connection
    named = conn.dialect.name == "postgresql"
    cursor = raw.cursor(name="clinicflow_medialog") if named else raw.cursor()
    columns: list[list[np.ndarray]] = [[] for _ in keys]
    try:
        if named:
            cursor.itersize = chunk
        cursor.execute(str(compiled), params)
        while True:
            rows = cursor.fetchmany(chunk)
            if not rows:
                break
            block = np.empty((len(rows), len(keys)), dtype=object)
            block[:] = rows
            for i in range(len(keys)):
                columns[i].append(block[:, i])
    finally:
        cursor.close()
    return pd.DataFrame({k: (np.concatenate(parts) if parts else np.empty(0, dtype=object))
                         for k, parts in zip(keys, columns, strict=True)}, dtype=object)


def _read_copy(conn: sa.Connection, stmt: sa.Select) -> pd.DataFrame:
    """PostgreSQL only: ``COPY (SELECT …) TO STDOUT`` into a spooled file, parsed by pyarrow/pandas.
    Needs only SELECT privileges; much faster than fetching Python row objects."""
    compiled = stmt.compile(dialect=conn.dialect, compile_kwargs={"render_postcompile": True})
    keys = [c.name for c in stmt.selected_columns]
    text_columns = [c.name for c in stmt.selected_columns if isinstance(c.type, sa.String)]
    raw = conn.connection.driver_connection
    with raw.cursor() as cursor, tempfile.TemporaryFile() as spool:
        sql = cursor.mogrify(str(compiled), compiled.params).decode()
        cursor.copy_expert(f"COPY ({sql}) TO STDOUT WITH (FORMAT csv, HEADER true)", spool)
        spool.seek(0)
        try:
            import pyarrow as pa
            import pyarrow.csv as pacsv
        except ImportError:  # pragma: no cover - pyarrow comes with the locked dependencies
            return pd.read_csv(spool, dtype=str, keep_default_na=False, na_values=[""])
        table = pacsv.read_csv(spool, convert_options=pacsv.ConvertOptions(
            strings_can_be_null=True, timestamp_parsers=[pacsv.ISO8601],
            column_types={name: pa.string() for name in text_columns}))
    frame = table.to_pandas()
    return frame if frame.columns.size else pd.DataFrame({k: pd.Series(dtype="object") for k in keys})


# --------------------------------------------------------------------------------------------------
# turning rows into the canonical frames


def _num(frame: pd.DataFrame, column: str) -> pd.Series:
    if column not in frame.columns:
        return pd.Series(np.nan, index=frame.index, dtype="float64")
    return pd.to_numeric(frame[column], errors="coerce")


def _ts(frame: pd.DataFrame, column: str) -> pd.Series:
    if column not in frame.columns:
        return pd.Series(pd.NaT, index=frame.index, dtype="datetime64[ns]")
    series = pd.to_datetime(frame[column], errors="coerce")
    if getattr(series.dt, "tz", None) is not None:
        series = series.dt.tz_localize(None)
    return series.astype("datetime64[ns]")


def _id_text(series: pd.Series) -> pd.Series:
    """Ids as text ('123', not '123.0'); missing stays None."""
    numeric = pd.to_numeric(series, errors="coerce").to_numpy(dtype="float64")
    codes, uniques = pd.factorize(numeric, use_na_sentinel=True)  # ids repeat: convert each once
    text = np.append(np.asarray(uniques, dtype="float64").astype(np.int64).astype(str).astype(object), None)
    return pd.Series(text[codes], index=series.index, dtype="object")


def _day_minutes(day: pd.Series) -> np.ndarray:
    return day.to_numpy(dtype="datetime64[m]").astype(np.int64)


@dataclass
class Evidence:
    visit_linked: set[int] = field(default_factory=set)
    visit_frame: pd.DataFrame | None = None
    bill_frame: pd.DataFrame | None = None
    reminded: set[int] = field(default_factory=set)
    successors: set[int] = field(default_factory=set)


def derive_appointments(raw: pd.DataFrame, refs: Reference, evidence: Evidence, exclusions: pd.DataFrame,
                        options: MedialogOptions, window: Window, problems: list[str]) -> pd.DataFrame:
    """PLANNING rows → canonical appointments (status derived as of ``window.as_of``)."""
    n = len(raw)
    ids = _num(raw, "PLANNING_ID").astype("int64")
    resource = _num(raw, "PL_SUBJ_ID")
    day = _ts(raw, "DATE_CONS").dt.normalize()
    heure = raw["HEURE"] if "HEURE" in raw else pd.Series(np.nan, index=raw.index)
    minute_of_day, bad_heure = grid.hhmm_to_minutes(heure)
    bad_heure |= (minute_of_day >= grid.MINUTES_PER_DAY)
    start = day + pd.to_timedelta(np.where(bad_heure, 0, minute_of_day), unit="min")
    date_start = _ts(raw, "DATE_START")
    start = date_start.where(date_start.notna() & bad_heure, start)
    start = start.where(~(bad_heure & date_start.isna()) & day.notna())
    row_problems = pd.Series(None, index=raw.index, dtype="object")
    unreadable = bad_heure & date_start.isna().to_numpy()
    if unreadable.any():
        shown = heure.astype(str).str.slice(0, 12)
        row_problems[unreadable] = "HEURE=" + shown[unreadable] + " is not a time of day (HHMM)"
    duration = _num(raw, "DUREE")
    date_end = _ts(raw, "DATE_END")
    from_dates = (date_end - date_start).dt.total_seconds() / 60
    exam = _num(raw, "PL_EXAM_ID")
    exam_minutes = exam.map(refs.exam_minutes) if refs.exam_minutes is not None else pd.Series(np.nan, index=raw.index)
    duration = duration.where(duration > 0, from_dates.where(from_dates > 0, exam_minutes))
    duration = duration.where((duration > 0) & (duration <= 24 * 60))

    # attendance evidence
    arrived = (_num(raw, "PATIENT_ARRIVEE").fillna(0) == 1)
    arrive_at = _ts(raw, "ARRIVE_DATE")
    arrived &= arrive_at.isna() | (arrive_at < window.cutoff)
    if "arrival" not in options.evidence:
        arrived[:] = False
    doctor = resource.map(refs.resource_doctor) if refs.resource_doctor is not None else pd.Series(
        np.nan, index=raw.index)
    visit = _visit_evidence(ids, raw, day, start, doctor, evidence, options)
    bill = _bill_evidence(raw, day, doctor, evidence, options)

    cancelled = _num(raw, "CANCELLED").fillna(0) == 1
    status_code = _num(raw, "STATUS")
    deleted = status_code.isin(options.deleted_status_values)
    known_code = status_code.isna() | status_code.isin(options.active_status_values) | deleted
    unknown = ~known_code
    if unknown.any():
        counts = status_code[unknown].value_counts().to_dict()
        problems.append(f"PLANNING.STATUS values the connector does not know: "
                        f"{ {int(k): int(v) for k, v in counts.items()} } (status left unmapped; set "
                        f"active_status_values/deleted_status_values if you know what they mean)")
    source_of_other = ids.isin(evidence.successors)
    in_exclusion = np.zeros(n, dtype=bool)
    if options.clinic_cancel_on_exclusion and not exclusions.empty and cancelled.any():
        mask = (cancelled & start.notna() & resource.notna()).to_numpy()
        idx = np.flatnonzero(mask)
        start_min = start.iloc[idx].to_numpy(dtype="datetime64[m]").astype(np.int64)
        dur = duration.iloc[idx].fillna(1).to_numpy(dtype=np.int64)
        hit = grid.covered_by(resource.iloc[idx].to_numpy(dtype=np.int64), start_min, start_min + dur, exclusions)
        in_exclusion[idx[hit >= 0]] = True
    past = (start < window.cutoff).to_numpy()
    decided = (day + pd.Timedelta(days=1 + options.grace_days) <= window.cutoff).to_numpy()
    fulfilled = visit | bill
    status = np.select(
        [unknown.to_numpy(), deleted.to_numpy(), (cancelled & source_of_other).to_numpy(),
         cancelled.to_numpy() & in_exclusion, cancelled.to_numpy(), ~past | start.isna().to_numpy(), fulfilled,
         arrived.to_numpy(), decided],
        ["", "deleted", "rescheduled", "cancelled_by_clinic", "cancelled_unknown", "booked", "fulfilled", "arrived",
         "noshow"],
        default="booked",
    ).astype(object)
    status[status == ""] = None

    booked_at = _ts(raw, "BOOKED_AT")
    modified = _ts(raw, "KRN_MODIFY_DATE")
    changed = pd.Series(pd.NaT, index=raw.index, dtype="datetime64[ns]")
    ended = np.isin(status, ["deleted", "rescheduled", "cancelled_by_clinic", "cancelled_unknown"])
    changed[ended] = modified[ended].fillna(booked_at[ended])
    outcome = np.isin(status, ["fulfilled", "noshow"])
    changed[outcome] = start[outcome]
    came = status == "arrived"
    changed[came] = arrive_at[came].fillna(start[came])
    booked = status == "booked"
    changed[booked] = booked_at[booked]

    not_accepted = _num(raw, "NOT_ACCEPTED")
    confirmed = pd.array(np.where(not_accepted.fillna(0) == 1, False, True), dtype="boolean")
    if "NOT_ACCEPTED" not in raw.columns:
        confirmed[:] = pd.NA
    reminder = pd.array(ids.isin(evidence.reminded).to_numpy(), dtype="boolean")
    if not refs.has_reminders:
        reminder[:] = pd.NA
    source_id = _num(raw, "SOURCE_PLANNING_ID")
    rescheduled_from = _id_text(source_id.where(source_id > 0))
    creator = _num(raw, "MEDECINS_CREATOR_ID")
    channel = _channels(creator, doctor, options)

    frame = pd.DataFrame({
        "appointment_id": _id_text(ids), "patient_source_id": _id_text(_num(raw, "PATIENTS_ID")),
        "resource_id": _id_text(resource),
        "practitioner_id": _id_text(doctor),
        "department_id": resource.map(refs.resource_department) if refs.resource_department is not None else None,
        "branch_id": resource.map(refs.resource_branch) if refs.resource_branch is not None else None,
        "service_id": _id_text(exam),
        "start_at": start, "duration_min": pd.array(duration.round(), dtype="Int64"), "booked_at": booked_at,
        "channel": channel, "confirmed": confirmed, "reminder_sent": reminder,
        "rescheduled_from_id": rescheduled_from,
        "raw_status": _raw_status(raw, arrived, visit, bill),
        "status": status, "status_changed_at": changed, "source_updated_at": modified,
        "row_problems": row_problems,
    })
    for column in ("department_id", "branch_id"):
        frame[column] = frame[column].astype("object").where(frame[column].notna(), None)
    return frame


def _visit_evidence(ids: pd.Series, raw: pd.DataFrame, day: pd.Series, start: pd.Series, doctor: pd.Series,
                    evidence: Evidence, options: MedialogOptions) -> np.ndarray:
    """A visit record created or changed from shortly before the start to the end of the day (+grace)."""
    out = np.zeros(len(raw), dtype=bool)
    mc = evidence.visit_frame
    if mc is None or mc.empty or "visit" not in options.evidence:
        return out
    lo = (start - pd.Timedelta(minutes=options.visit_minutes_before_start)).to_numpy(dtype="datetime64[m]")
    hi = (day + pd.Timedelta(days=1 + options.grace_days)).to_numpy(dtype="datetime64[m]")
    rows = pd.DataFrame({"_ROW": np.arange(len(raw)), "PLANNING_ID": ids.to_numpy(),
                         "PATIENTS_ID": _num(raw, "PATIENTS_ID").to_numpy(), "DAY": day.to_numpy(),
                         "DOCTOR": doctor.to_numpy()})

    def touched(hits: pd.DataFrame) -> np.ndarray:
        r = hits["_ROW"].to_numpy()
        ok = np.zeros(len(hits), dtype=bool)
        for column in ("KRN_CREATE_DATE", "KRN_MODIFY_DATE"):
            if column in hits:
                t = hits[column].to_numpy(dtype="datetime64[m]")
                ok |= (t >= lo[r]) & (t < hi[r])
        return r[ok]

    if "PLANNING_ID" in mc.columns:
        linked = mc[mc["PLANNING_ID"].notna()].assign(PLANNING_ID=lambda f: f["PLANNING_ID"].astype("int64"))
        hits = rows.merge(linked, on="PLANNING_ID", how="inner", suffixes=("", "_M"))
        out[touched(hits)] = True
        unlinked = mc[mc["PLANNING_ID"].isna()]
    else:
        unlinked = mc
    if {"PATIENTS_ID", "DAY"} <= set(unlinked.columns) and not unlinked.empty:
        keys = ["PATIENTS_ID", "DAY"]
        if "MEDECINS_ID" in unlinked.columns:
            unlinked = unlinked.assign(DOCTOR=unlinked["MEDECINS_ID"])
            hits = rows.merge(unlinked.drop(columns=["PLANNING_ID"], errors="ignore"), on=keys, how="inner",
                              suffixes=("", "_M"))
            same = (hits["DOCTOR"] == hits["DOCTOR_M"]) | hits["DOCTOR"].isna() | hits["DOCTOR_M"].isna()
            hits = hits[same.to_numpy()]
        else:
            hits = rows.merge(unlinked.drop(columns=["PLANNING_ID"], errors="ignore"), on=keys, how="inner")
        out[touched(hits)] = True
    return out


def _bill_evidence(raw: pd.DataFrame, day: pd.Series, doctor: pd.Series, evidence: Evidence,
                   options: MedialogOptions) -> np.ndarray:
    """A bill for the patient (and the appointment's doctor) dated that day (up to grace days later)."""
    out = np.zeros(len(raw), dtype=bool)
    bills = evidence.bill_frame
    if bills is None or bills.empty or "bill" not in options.evidence:
        return out
    rows = pd.DataFrame({"_ROW": np.arange(len(raw)), "PATIENTS_ID": _num(raw, "PATIENTS_ID").to_numpy(),
                         "DAY": day.to_numpy(), "DOCTOR": doctor.to_numpy()})
    for lag in range(options.grace_days + 1):
        shifted = bills.assign(DAY=bills["DAY"] - pd.Timedelta(days=lag))
        hits = rows.merge(shifted, on=["PATIENTS_ID", "DAY"], how="inner")
        if "MEDECINS1_ID" in hits:
            same = (hits["DOCTOR"] == hits["MEDECINS1_ID"]) | hits["DOCTOR"].isna()
            hits = hits[same.to_numpy()]
        out[hits["_ROW"].to_numpy()] = True
    return out


def _channels(creator: pd.Series, doctor: pd.Series, options: MedialogOptions) -> pd.Series:
    text = _id_text(creator)
    mapped = text.map(dict(options.channel_by_creator))
    by_doctor = (creator == doctor) & creator.notna()
    out = mapped.where(mapped.notna(), np.where(by_doctor, "doctor", np.where(creator.notna(), "staff", None)))
    return out.astype("object").where(out.notna(), None)


def _raw_status(raw: pd.DataFrame, arrived: pd.Series, visit: np.ndarray, bill: np.ndarray) -> np.ndarray:
    """The source's status fields and the evidence found, as JSON text per row.

    Rows share few distinct combinations, so each distinct one is encoded once.
    """
    fields = [c for c in ("CANCELLED", "STATUS", "PATIENT_ARRIVEE", "NOT_ACCEPTED") if c in raw.columns]
    parts = [_num(raw, c) for c in fields]
    evidence_bits = arrived.to_numpy().astype(np.int64) + 2 * visit.astype(np.int64) + 4 * bill.astype(np.int64)
    combined = evidence_bits.copy()
    levels: list[np.ndarray] = []
    scale = 8
    for values in parts:  # one small integer per distinct combination of the fields
        codes, uniques = pd.factorize(values, use_na_sentinel=False)
        levels.append(np.asarray(uniques, dtype="float64"))
        combined = combined + scale * codes.astype(np.int64)
        scale *= max(len(uniques), 1)
    distinct, inverse = np.unique(combined, return_inverse=True)
    texts = []
    for key in distinct.tolist():
        bits, rest = key % 8, key // 8
        item: dict[str, Any] = {}
        for name, level in zip(fields, levels, strict=True):
            value = level[rest % max(len(level), 1)]
            rest //= max(len(level), 1)
            item[name] = None if np.isnan(value) else int(value)
        item["evidence"] = " ".join(k for k, b in (("arrival", 1), ("visit", 2), ("bill", 4)) if bits & b)
        texts.append(json.dumps(item, ensure_ascii=False, separators=(",", ":")))
    return np.asarray(texts, dtype=object)[inverse]


@dataclass
class Reference:
    """Reference frames and lookups from PL_SUBJ to practitioner, department and branch."""

    frames: dict[str, pd.DataFrame]
    resource_doctor: pd.Series | None = None
    resource_department: pd.Series | None = None
    resource_branch: pd.Series | None = None
    exam_minutes: pd.Series | None = None
    has_reminders: bool = False


def build_reference(raw: Mapping[str, pd.DataFrame], options: MedialogOptions) -> Reference:
    get = raw.get
    subj = get("PL_SUBJ", pd.DataFrame(columns=["PL_SUBJ_ID"]))
    meddep = get("MEDDEP")
    fm_dep = get("FM_DEP")
    fm_org = get("FM_ORG")
    medecins = get("MEDECINS")
    spec = get("SPECIALISATION")
    exams = get("PL_EXAM")

    subj_id = _num(subj, "PL_SUBJ_ID")
    doctor = _num(subj, "MEDECINS_ID")
    dep_of_meddep = (pd.Series(_id_text(_num(meddep, "FM_DEP_ID")).to_numpy(), index=_num(meddep, "MEDDEP_ID"))
                     if meddep is not None and "MEDDEP_ID" in meddep else None)
    department = (_num(subj, "MEDDEP_ID").map(dep_of_meddep) if dep_of_meddep is not None
                  else pd.Series(None, index=subj.index, dtype="object"))
    branch = _id_text(_num(subj, "FM_INTORG_ID"))
    no_overbook_res = set(options.no_overbook_resource_ids)
    resources = pd.DataFrame({
        "resource_id": _id_text(subj_id),
        "name": subj.get("NAME"),
        "kind": np.where(doctor.notna() & (doctor > 0), "practitioner", "room") if "MEDECINS_ID" in subj else "other",
        "practitioner_id": _id_text(doctor.where(doctor > 0)),
        "department_id": department.where(department.notna(), None),
        "branch_id": branch,
        "no_overbook": _id_text(subj_id).isin(no_overbook_res).to_numpy(),
        "archived": (_num(subj, "ARCHIVE").fillna(0) == 1).to_numpy(),
    })

    frames: dict[str, pd.DataFrame] = {"resources": resources}
    if fm_org is not None:
        org = fm_org[fm_org["ORG_TYPE"].astype(str).str.strip() == "I"] if "ORG_TYPE" in fm_org else fm_org
        frames["branches"] = pd.DataFrame({"branch_id": _id_text(_num(org, "FM_ORG_ID")),
                                           "name": org.get("LABEL")})
    else:
        ids = branch.dropna().unique()
        frames["branches"] = pd.DataFrame({"branch_id": ids, "name": None})
    if fm_dep is not None:
        frames["departments"] = pd.DataFrame({
            "department_id": _id_text(_num(fm_dep, "FM_DEP_ID")),
            "name": fm_dep.get("LABEL"),
            "branch_id": _id_text(_num(fm_dep, "FM_INTORG_ID")),
        })
    if medecins is not None:
        used = set(doctor.dropna().astype(int))
        if meddep is not None and "MEDECINS_ID" in meddep:
            used |= set(_num(meddep, "MEDECINS_ID").dropna().astype(int))
        docs = medecins[_num(medecins, "MEDECINS_ID").isin(used).to_numpy()]
        parts = [docs[c].fillna("").astype(str) for c in ("NOM", "PRENOM", "PATRONYME") if c in docs]
        name = parts[0].str.cat(parts[1:], sep=" ").str.strip() if parts else pd.Series(None, index=docs.index)
        spec_name = (_num(docs, "SPECIALISATION_ID").map(pd.Series(spec["NAME"].to_numpy(),
                                                                   index=_num(spec, "SPECIALISATION_ID")))
                     if spec is not None and "NAME" in spec else None)
        first_dep = None
        if meddep is not None and "MEDECINS_ID" in meddep and "FM_DEP_ID" in meddep:
            first_dep = (meddep.assign(M=_num(meddep, "MEDECINS_ID")).dropna(subset=["M"])
                         .drop_duplicates("M").set_index("M")["FM_DEP_ID"])
        frames["practitioners"] = pd.DataFrame({
            "practitioner_id": _id_text(_num(docs, "MEDECINS_ID")),
            "display_name": name.where(name != "", None),
            "specialty": spec_name,
            "department_id": _id_text(_num(docs, "MEDECINS_ID").map(first_dep)) if first_dep is not None else None,
            "archived": (_num(docs, "ARCHIVE").fillna(0) == 1).to_numpy(),
        })
    exam_minutes = None
    if exams is not None:
        minutes = _num(exams, "DUREE")
        frames["services"] = pd.DataFrame({
            "service_id": _id_text(_num(exams, "PL_EXAM_ID")),
            "code": exams.get("CODE"),
            "name": exams.get("NAME"),
            "default_duration_min": pd.array(minutes.where(minutes > 0).round(), dtype="Int64"),
            "no_overbook": _id_text(_num(exams, "PL_EXAM_ID")).isin(set(options.no_overbook_exam_ids)).to_numpy(),
        })
        exam_minutes = pd.Series(minutes.to_numpy(), index=_num(exams, "PL_EXAM_ID"))
    for key in ("branches", "departments", "practitioners", "services"):
        if key in frames:
            frames[key] = frames[key].astype("object").where(frames[key].notna(), None)
            for column in ("archived", "no_overbook"):
                if column in frames[key]:
                    frames[key][column] = frames[key][column].astype(bool)
    return Reference(
        frames=frames,
        resource_doctor=(pd.Series(doctor.where(doctor > 0).to_numpy(), index=subj_id)
                         if "MEDECINS_ID" in subj else None),
        resource_department=pd.Series(department.to_numpy(), index=subj_id),
        resource_branch=pd.Series(branch.to_numpy(), index=subj_id),
        exam_minutes=exam_minutes,
    )


def derive_patients(raw: pd.DataFrame, options: MedialogOptions, as_of: date) -> pd.DataFrame:
    """Sex, birth year and flags only."""
    sex_code = raw["POL"] if "POL" in raw else pd.Series(None, index=raw.index, dtype="object")
    code_text = _id_text(sex_code)
    sex = code_text.map(dict(options.sex_codes))
    problems = pd.Series(None, index=raw.index, dtype="object")
    unknown_sex = code_text.notna() & sex.isna()
    problems[unknown_sex] = "POL=" + code_text[unknown_sex] + " is not in sex_codes"
    year = _ts(raw, "NE_LE").dt.year.astype("float64")
    if "GOD_ROGDENIQ" in raw:
        text = raw["GOD_ROGDENIQ"].astype("object").where(raw["GOD_ROGDENIQ"].notna(), None)
        parsed = pd.to_numeric(text.astype(str).str.strip(), errors="coerce")
        parsed = parsed.where((parsed == parsed.round()) & (parsed >= 1000) & (parsed <= 9999))
        bad = text.notna() & (text.astype(str).str.strip() != "") & parsed.isna() & year.isna()
        problems[bad] = "GOD_ROGDENIQ=" + text[bad].astype(str).str.slice(0, 10) + " is not a year"
        year = year.fillna(parsed)
    out_of_range = year.notna() & ((year < 1880) | (year > as_of.year))
    problems[out_of_range] = "birth year " + year[out_of_range].astype("int64").astype(str) + " is out of range"
    year = year.where(~out_of_range)
    no_sms = (_num(raw, "NOT_SEND_SMS").fillna(0) == 1).to_numpy()
    closed = (_num(raw, "DOSSIER_EXIT").fillna(0) == 1).to_numpy()
    flags = [{"no_sms": bool(a), "dossier_closed": bool(b)} for a, b in zip(no_sms, closed, strict=True)]
    return pd.DataFrame({
        "patient_source_id": _id_text(_num(raw, "PATIENTS_ID")),
        "sex": sex.astype("object").where(sex.notna(), None),
        "birth_year": pd.array(year.round(), dtype="Int64"),
        "flags": flags,
        "row_problems": problems,
    })


def build_capacity(raw: Mapping[str, pd.DataFrame], exclusions: pd.DataFrame, refs: Reference,
                   options: MedialogOptions, window: Window, first: date) -> tuple[pd.DataFrame | None,
                                                                                 pd.DataFrame | None]:
    """Slots and resource-days from ``first`` on, from the templates minus the exceptions."""
    if "PL_DAY" not in raw:
        return None, None
    working = grid.resolve_days(raw["PL_DAY"], raw.get("PL_AGEND", pd.DataFrame(columns=["PL_AGEND_ID",
                                                                                        "DUREE_TRANCHE"])),
                                first, window.capacity[1])
    subj_raw = raw["PL_SUBJ"]
    subjects = pd.DataFrame({"PL_SUBJ_ID": _num(subj_raw, "PL_SUBJ_ID"),
                             "PL_AGEND_ID1": _num(subj_raw, "PL_AGEND_ID1")})
    slots_all = grid.expand_slots(working, subjects, raw.get("PL_INT"))
    _, removed = grid.apply_exclusions(slots_all, exclusions)
    days = grid.resource_days(slots_all, removed)
    days = days[days["DAY_NO"] >= grid.day_number(first)]
    no_overbook = set(options.no_overbook_resource_ids)
    epoch = np.datetime64("1970-01-01", "D")
    resource_days = pd.DataFrame({
        "resource_id": days["PL_SUBJ_ID"].astype("int64").astype(str).to_numpy(),
        "day": (epoch + days["DAY_NO"].to_numpy().astype("timedelta64[D]")).astype("datetime64[D]").astype(object),
        "slots": days["SLOTS"].to_numpy(dtype=np.int64),
        "slot_minutes": days["SLOT_MINUTES"].to_numpy(dtype=np.int64),
        "work_start": [time(int(m) // 60, int(m) % 60) for m in days["WORK_START"]],
        "work_end": [time(min(int(m) // 60, 23), int(m) % 60 if m < 1440 else 59) for m in days["WORK_END"]],
        "on_leave": days["ON_LEAVE"].to_numpy(dtype=bool),
    })
    kept = slots_all[~removed]
    kept = kept[kept["DAY_NO"] >= grid.day_number(window.slots_from)]
    resource_text = kept["PL_SUBJ_ID"].astype("int64").astype(str)
    slots = pd.DataFrame({
        "resource_id": resource_text.to_numpy(),
        "start_at": (kept["START_MIN"].to_numpy() * 60).astype("datetime64[s]").astype("datetime64[ns]"),
        "duration_min": kept["DUREE"].to_numpy(dtype=np.int64),
        "no_overbook": resource_text.isin(no_overbook).to_numpy(),
    })
    return slots, resource_days


# --------------------------------------------------------------------------------------------------
# the run


def extract(request: base.ExtractRequest) -> base.Extract:
    """Read a Medialog database for one run (see the module docstring)."""
    source = request.source
    options = MedialogOptions.parse(source.options, source.name)
    window = Window.for_run(request.as_of, options)
    engine = create_source_engine(source, options)
    problems: list[str] = []
    try:
        with timed(f"medialog {source.name}: extract as of {request.as_of}", log) as timer:
            try:
                conn = engine.connect()
            except sa.exc.DBAPIError as exc:
                raise _unavailable(source, engine, exc) from None
            try:
                conn = conn.execution_options(isolation_level="READ COMMITTED", postgresql_readonly=True) \
                    if conn.dialect.name == "postgresql" else conn.execution_options(isolation_level="READ COMMITTED")
                with conn.begin():
                    result = _extract(conn, request, options, window, problems)
            except sa.exc.ProgrammingError as exc:
                if "permission denied" in str(exc).lower() or "permission was denied" in str(exc).lower():
                    raise ConfigError(f"source {source.name}: the login cannot read a table the connector needs "
                                      f"({_first_line(exc)}); grant it SELECT") from None
                raise _unavailable(source, engine, exc) from None
            except sa.exc.DBAPIError as exc:
                raise _unavailable(source, engine, exc) from None
            finally:
                conn.close()
            timer.rows = len(result.appointments)
    finally:
        engine.dispose()
    return result


def _extract(conn: sa.Connection, request: base.ExtractRequest, options: MedialogOptions, window: Window,
             problems: list[str]) -> base.Extract:
    schema = read_schema(conn, options)
    missing = [f"{t}.{c}" for t, c in REQUIRED_COLUMNS if not schema.has(t, c)]
    if missing:
        raise DataQualityError(
            f"{request.source.name}: this database lacks Medialog columns the connector needs: {', '.join(missing)}. "
            "Is the URL (and option 'schema') pointing at the Medialog database, and may the login see these tables?")
    invisible = [t for t in _TABLES if not schema.has(t)]
    if invisible:
        message = (f"tables not visible to this login: {', '.join(invisible)} — not in this installation, or the "
                   "login may not read them (INFORMATION_SCHEMA shows only readable tables); what they give "
                   "(evidence, reminders, capacity, names of branches…) is missing from this run")
        log.warning("medialog %s: %s", request.source.name, message)
        problems.append(message)
    absent = [f"{t}.{c}" for t, c in OPTIONAL_COLUMNS if schema.has(t) and not schema.has(t, c)]
    if absent:
        log.info("medialog %s: optional columns not in this installation (switched off): %s",
                 request.source.name, ", ".join(absent))
    if not schema.has("PLANNING", "KRN_MODIFY_DATE"):
        problems.append("PLANNING.KRN_MODIFY_DATE is missing: every run reads all appointments")
    q = Queries(schema, options, window, request.watermarks)
    read: Callable[[sa.Select, str | None], pd.DataFrame] = lambda stmt, what: _read(  # noqa: E731
        conn, stmt, options, what)

    new_marks: dict[str, datetime] = {}
    for stream in STREAMS:
        stmt = q.watermark(stream)
        if stmt is not None:
            value = conn.execute(stmt).scalar()
            previous = request.watermarks.get(stream)
            if value is not None:
                new_marks[stream] = max(value, previous) if previous is not None else value
            elif previous is not None:
                new_marks[stream] = previous

    refs_raw = {name: read(stmt, name) for name, stmt in q.reference().items()}
    refs = build_reference(refs_raw, options)
    raw = read(q.appointments(), "PLANNING")
    days = _ts(raw, "DATE_CONS")
    first_day = None if days.isna().all() else days.min().to_pydatetime().replace(hour=0, minute=0, second=0)
    evidence = Evidence()
    ids = patient_ids = None
    if q.incremental:  # rows related to the run's appointments, read for their ids
        ids = np.unique(_num(raw, "PLANNING_ID").dropna().astype("int64").to_numpy())
        patient_ids = np.unique(_num(raw, "PATIENTS_ID").dropna().astype("int64").to_numpy())

    def read_for(build: Callable[[Sequence[int] | None], sa.Select | None], values: np.ndarray | None,
                 what: str) -> pd.DataFrame | None:
        if values is None:
            stmt = build(None)
            return None if stmt is None else read(stmt, what)
        parts = []
        with timed(f"medialog: read {what} for {len(values):,} ids", log) as timer:
            for begin in range(0, max(len(values), 1), CHUNK_IDS):
                stmt = build(values[begin:begin + CHUNK_IDS].tolist())
                if stmt is None:
                    return None
                parts.append(read(stmt, None))
            frame = pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0]
            timer.rows = len(frame)
        return frame

    if q._visit_table() is not None:
        if ids is None:
            mc = read(q.visit_records(), "MOTCONSU")
        else:
            linked = read_for(lambda v: q.visit_records(ids=v), ids, "MOTCONSU linked")
            unlinked = read_for(lambda v: q.visit_records(patient_ids=v, first_day=first_day), patient_ids,
                                "MOTCONSU by patient and day")
            mc = pd.concat([f for f in (linked, unlinked) if f is not None], ignore_index=True)
        if "REC_STATUS" in mc:
            mc = mc[~mc["REC_STATUS"].astype(str).str.strip().isin(options.motconsu_deleted_statuses)]
        for column in ("PLANNING_ID", "PATIENTS_ID", "MEDECINS_ID"):
            if column in mc:
                mc[column] = _num(mc, column)
        for column in ("KRN_CREATE_DATE", "KRN_MODIFY_DATE"):
            if column in mc:
                mc[column] = _ts(mc, column)
        if "DATE_CONSULTATION" in mc:
            mc["DAY"] = _ts(mc, "DATE_CONSULTATION").dt.normalize()
        evidence.visit_frame = mc
    elif "visit" in options.evidence:
        problems.append("no usable MOTCONSU (visit records): attendance is judged without them")
    bills = read_for(lambda v: q.bills(patient_ids=v, first_day=first_day), patient_ids, "FM_BILL")
    if bills is not None:
        evidence.bill_frame = pd.DataFrame({"PATIENTS_ID": _num(bills, "PATIENTS_ID"),
                                            "DAY": _ts(bills, "BILL_DATE").dt.normalize(),
                                            **({"MEDECINS1_ID": _num(bills, "MEDECINS1_ID")}
                                               if "MEDECINS1_ID" in bills else {})}).drop_duplicates()
    sms = read_for(q.reminders, ids, "SMS_MESSAGES")
    if sms is not None:
        evidence.reminded = set(_num(sms, "REC_ID").dropna().astype("int64"))
        refs.has_reminders = True
    moved = read_for(q.successors, ids, "reschedules")
    if moved is not None:
        evidence.successors = set(_num(moved, "SOURCE_PLANNING_ID").dropna().astype("int64"))
    stmt = q.exclusions()
    exclusions = grid.exclusion_intervals(read(stmt, "PL_EXCL")) if stmt is not None else \
        grid.exclusion_intervals(pd.DataFrame())

    appointments = derive_appointments(raw, refs, evidence, exclusions, options, window, problems)
    patients = derive_patients(read_for(q.patients, patient_ids, "PATIENTS"), options, request.as_of)
    slots = resource_days = None
    if q.uses_templates():
        cap_raw = {name: read(stmt, name) for name, stmt in q.capacity().items()}
        cap_raw["PL_SUBJ"] = refs_raw["PL_SUBJ"]
        slots, resource_days = build_capacity(cap_raw, exclusions, refs, options, window, q.capacity_from())

    existing = None
    if q.incremental:
        existing = _id_text(_num(read(q.existing_ids(), "PLANNING ids"), "PLANNING_ID"))
    bad_rows = int(appointments["row_problems"].notna().sum())
    if bad_rows:
        problems.append(f"{bad_rows} appointment row(s) could not be fully read (see row_problems)")
    return base.Extract(
        appointments=appointments.reset_index(drop=True),
        patients=patients.reset_index(drop=True),
        branches=refs.frames.get("branches"),
        departments=refs.frames.get("departments"),
        practitioners=refs.frames.get("practitioners"),
        services=refs.frames.get("services"),
        resources=refs.frames["resources"],
        slots=slots,
        resource_days=resource_days,
        full_snapshot=not q.incremental,
        existing_ids=existing,
        reconcile_window=window.reconcile if existing is not None else None,
        watermarks={k: min(v, window.cutoff) for k, v in new_marks.items()},
        problems=problems,
    )
