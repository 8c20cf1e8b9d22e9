"""The as-of feature engine: point-in-time features of appointments that share ONE as-of date.

A night's scoring horizon and a backtest day are seen from one as-of date A. For them the rows the
features need are read from PostgreSQL as Arrow tables by binary COPY (``db.arrow_session``; the
queries, with the visibility rules, are in ``sql/features/asof_extracts.sql``), and the features are
computed here in numpy: keys factorised into integer codes, counts by ``np.bincount``, the slot position
by ``searchsorted`` in the sorted slots of each (resource, day), no Python loop over rows. PostgreSQL
keeps what it does well: the semi-join of the history with the targets' patients (a temporary table of
their codes), the context outcome counts (a GROUP BY over the window), the reschedule chains (a
recursive query). Two connections read one snapshot (repeatable read; the second imports the first's
exported snapshot): the second reads calendar, context, slots and resource days while the first reads
the targets, and numpy computes while the first reads the patients' history.

The values are those of ``sql/features/appointment_features.sql`` (its definitions and visibility rules
are documented there and in ``docs/model.md`` §1): integers, booleans, texts, dates and JSON exactly;
floats with PostgreSQL's order of operations. Three floats PostgreSQL computes in ``numeric`` and then
rounds to double: ``appt_hour`` is computed so that it is exact (every hour and minute checked);
``lead_hours`` and the ``core.resource_day`` fallback of ``slot_position`` are divided in double here and
may differ in the last bit (relative 2.2e-16; none on the scoring benchmark, whose times are whole
minutes). ``tests/features`` compare the engine with the SQL of per-row as-of dates
(``history_stream.sql``) frame for frame and with a from-scratch recomputation.

Entry point: :func:`compute` (used by :func:`features.build.build_features`).
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date
from functools import cache
from typing import TYPE_CHECKING, Any

import numpy as np

from clinicflow.errors import ClinicFlowError
from clinicflow.logs import Laps
from clinicflow.paths import SQL_DIR
from features import definitions

if TYPE_CHECKING:
    import pandas as pd

    from clinicflow.db import ArrowSession
    from clinicflow.settings import Settings

log = logging.getLogger(__name__)

EXTRACTS_SQL = SQL_DIR / "features" / "asof_extracts.sql"
DAY_US = 86_400_000_000
HOUR_US = 3_600_000_000
MINUTE_US = 60_000_000
#: day number of 2000-01-01 counted from 1970-01-01 (the SQL counts days from 2000-01-01)
EPOCH_2000 = 10_957
STATUSES = ("booked", "arrived", "fulfilled", "noshow", "cancelled_by_patient", "cancelled_by_clinic",
            "cancelled_unknown", "rescheduled", "deleted")
_ARRIVED, _FULFILLED, _NOSHOW = 1, 2, 3
_CANCELLED = (4, 5, 6)
_RESCHEDULED, _DELETED = 7, 8
SEASONS = np.array(["winter", "winter", "spring", "spring", "spring", "summer", "summer", "summer", "autumn",
                    "autumn", "autumn", "winter"], dtype=object)  # by month - 1

#: The columns of a features frame after ``feature_set_version``, in order, with their kind: the columns
#: of appointment_features.sql plus ``external``.
COLUMNS: tuple[tuple[str, str], ...] = (
    ("source", "text"), ("appointment_id", "text"), ("as_of", "date"), ("start_at", "timestamp"),
    ("lead_days", "int"), ("lead_hours", "float"), ("same_day_booking", "bool"), ("booked_weekday", "int"),
    ("booked_hour", "int"), ("channel", "text"), ("is_reschedule", "bool"), ("reschedule_depth", "int"),
    ("confirmed", "bool"), ("appt_weekday", "int"), ("appt_hour", "float"), ("slot_index", "int"),
    ("slot_position", "float"), ("day_slots", "int"), ("duration_min", "int"), ("service_id", "text"),
    ("department_id", "text"), ("practitioner_id", "text"), ("branch_id", "text"), ("resource_id", "text"),
    ("is_day_off", "bool"), ("is_public_holiday", "bool"), ("is_shortened_day", "bool"),
    ("is_working_weekend", "bool"), ("days_to_holiday", "int"), ("days_from_holiday", "int"),
    ("days_to_nearest_holiday", "int"), ("month", "int"), ("season", "text"), ("age", "int"), ("sex", "text"),
    ("prior_appointments", "int"), ("prior_attended", "int"), ("prior_noshows", "int"),
    ("prior_cancellations", "int"), ("prior_late_cancellations", "int"), ("prior_reschedules", "int"),
    ("prior_noshow_rate", "float"), ("days_since_last_visit", "int"), ("days_since_last_noshow", "int"),
    ("same_day_appointments", "int"), ("patient_flags", "json"), ("practitioner_noshow_rate", "float"),
    ("department_noshow_rate", "float"), ("branch_noshow_rate", "float"), ("service_noshow_rate", "float"),
    ("practitioner_volume", "int"), ("resource_day_booked", "int"), ("resource_day_fill", "float"),
    ("branch_day_booked", "int"), ("reminder_sent", "bool"), ("external", "json"),
)


# --------------------------------------------------------------------------------------------------
# SQL


@cache
def queries() -> dict[str, str]:
    """The named queries of ``asof_extracts.sql`` (``-- @query <name>`` sections, comment lines dropped)."""
    if not EXTRACTS_SQL.is_file():
        raise ClinicFlowError(f"{EXTRACTS_SQL} is missing: is the checkout complete?")
    out: dict[str, str] = {}
    name = None
    for line in EXTRACTS_SQL.read_text(encoding="utf-8").splitlines():
        marker = re.match(r"--\s*@query\s+(\w+)\s*$", line.strip())
        if marker:
            name = marker.group(1)
            out[name] = ""
        elif name is not None and line.strip() and not line.strip().startswith("--"):
            out[name] += line + "\n"
    return out


def _quote(text: str) -> str:
    if "\x00" in text:
        raise ClinicFlowError(f"a text value holds a NUL character: {text!r}")
    return "E'" + text.replace("\\", "\\\\").replace("'", "''") + "'"


def literal(value: Any) -> str:
    """``value`` as a SQL literal: booleans, integers, dates, text and lists of text (a text[] array)."""
    if isinstance(value, bool | np.bool_):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int | np.integer):
        return str(int(value))
    if isinstance(value, date):
        return f"DATE '{date(value.year, value.month, value.day).isoformat()}'"
    if isinstance(value, str):
        return _quote(value)
    if isinstance(value, list | tuple):
        return f"CAST(ARRAY[{', '.join(_quote(str(v)) for v in value)}]::text[] AS text[])" if value else \
            "CAST('{}' AS text[])"
    raise ClinicFlowError(f"no SQL literal for {type(value).__name__} {value!r}")


_TOKENS = re.compile(r"'(?:[^']|'')*'|\"[^\"]*\"|--[^\n]*|::|:(\w+)")


def render(sql: str, params: dict[str, Any]) -> str:
    """``sql`` with its ``:name`` parameters replaced by literals (quoted text, comments and ``::`` casts are
    left alone). The Arrow reader streams a query without bound parameters by binary COPY; with bound
    parameters the driver fetches the rows of a prepared statement instead, 2-3 times slower for a million
    rows (measured on the scoring benchmark)."""

    def sub(match: re.Match[str]) -> str:
        name = match.group(1)
        if name is None:
            return match.group(0)
        if name not in params:
            raise ClinicFlowError(f"SQL parameter :{name} has no value")
        return literal(params[name])

    return _TOKENS.sub(sub, sql)


# --------------------------------------------------------------------------------------------------
# Arrow -> numpy


def _pa():
    import pyarrow as pa
    import pyarrow.compute as pc

    return pa, pc


def _i64(column, fill: int = 0) -> np.ndarray:
    """Integers (or timestamps as microseconds) as int64, NULL as ``fill``."""
    pa, pc = _pa()
    if pa.types.is_timestamp(column.type) or pa.types.is_date(column.type):
        column = pc.cast(column, pa.int64() if pa.types.is_timestamp(column.type) else pa.int32())
    return np.asarray(pc.fill_null(column, fill).to_numpy(), dtype=np.int64)


def _valid(column) -> np.ndarray:
    _, pc = _pa()
    return np.asarray(pc.is_valid(column).to_numpy(zero_copy_only=False), dtype=bool)


def _bool(column) -> np.ndarray:
    _, pc = _pa()
    return np.asarray(pc.fill_null(column, False).to_numpy(zero_copy_only=False), dtype=bool)


@dataclass
class Coded:
    """A text column as integer codes (-1 = NULL) into ``dictionary`` (a pyarrow string array)."""

    codes: np.ndarray
    dictionary: Any

    @classmethod
    def of(cls, column) -> Coded:
        pa, pc = _pa()
        encoded = pc.dictionary_encode(column)
        if isinstance(encoded, pa.ChunkedArray):
            chunks = encoded.chunks
            dictionary = chunks[0].dictionary if chunks else pa.array([], pa.string())
            indices = pa.chunked_array([c.indices for c in chunks], type=pa.int32())
        else:
            dictionary, indices = encoded.dictionary, encoded.indices
        codes = np.asarray(pc.fill_null(indices, -1).to_numpy(), dtype=np.int64)
        return cls(codes, dictionary)

    def lookup(self, column) -> np.ndarray:
        """Codes of another text column's values in this dictionary (-1: NULL or absent)."""
        _, pc = _pa()
        return np.asarray(pc.fill_null(pc.index_in(column, value_set=self.dictionary), -1).to_numpy(),
                          dtype=np.int64)

    def translate(self, column) -> np.ndarray:
        """Like :meth:`lookup` for a column of few distinct values (ids of doctors, resources, sources):
        encoded first, then only its distinct values looked up."""
        other = Coded.of(column)
        mapping = np.append(self.lookup(other.dictionary), -1)
        return mapping[other.codes]

    @property
    def size(self) -> int:
        return len(self.dictionary)

    def objects(self) -> np.ndarray:
        """Python str per row (None for NULL)."""
        values = np.empty(self.size + 1, dtype=object)
        values[:-1] = self.dictionary.to_numpy(zero_copy_only=False)
        values[-1] = None
        return values[self.codes]


def _combine(major: np.ndarray, minor: np.ndarray, minor_size: int) -> np.ndarray:
    """One int64 key per (major, minor) code pair; -1 where either is -1."""
    key = major * max(minor_size, 1)
    key += minor
    key[(major < 0) | (minor < 0)] = -1
    return key


def _factorize(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Dense codes of the non-negative int64 keys (-1 stays -1) and the distinct keys, by hashing."""
    import pandas as pd

    codes = np.full(len(keys), -1, dtype=np.int64)
    valid = keys >= 0
    found, uniques = pd.factorize(keys[valid])
    codes[valid] = found
    return codes, np.asarray(uniques, dtype=np.int64)


def _index_of(uniques: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """Position of each key in ``uniques`` (-1 when absent or negative)."""
    import pandas as pd

    if not len(keys):
        return np.zeros(0, dtype=np.int64)
    found = pd.Index(uniques).get_indexer(keys)
    return np.where(keys >= 0, found, -1).astype(np.int64)


def _counts(group: np.ndarray, size: int, weights: np.ndarray | None = None) -> np.ndarray:
    """Rows per group code (codes -1 and rows with a false weight are left out)."""
    keep = group >= 0
    if weights is not None:
        keep &= weights
    return np.bincount(group[keep], minlength=size).astype(np.int64)


# --------------------------------------------------------------------------------------------------
# the computation


@dataclass
class Column:
    """A computed column before it becomes a frame column: values, a validity mask (None: no NULL)."""

    kind: str
    values: np.ndarray
    valid: np.ndarray | None = None


@dataclass
class Result:
    """The engine's output: the columns, rows ordered by source and appointment id."""

    as_of: date
    n: int
    columns: dict[str, Column] = field(default_factory=dict)


def _read(session: ArrowSession, name: str, params: dict[str, Any], seconds: dict[str, float],
          suffix: str = ""):
    started = time.perf_counter()
    table = session.read(render(queries()[name], params) + suffix)
    seconds[f"extract_{name}"] = seconds.get(f"extract_{name}", 0.0) + time.perf_counter() - started
    return table


def _begin(session: ArrowSession, snapshot: str | None = None) -> None:
    """Every extract of a computation reads one snapshot: repeatable read, the second connection importing
    the first one's snapshot."""
    session.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
    if snapshot is not None:
        session.execute(f"SET TRANSACTION SNAPSHOT {literal(snapshot)}")
    session.execute("SET LOCAL work_mem = '256MB'")
    session.execute("SET LOCAL jit = off")


def _side_reads(url, snapshot: str, params: dict[str, Any], listed: bool, seconds: dict[str, float]):
    """The extracts that need no temporary table (calendar, context outcomes, slots, resource days and, for
    listed targets, the bookings known per day), on a second connection in the first one's snapshot."""
    from clinicflow import db

    names = ["calendar", "context_outcomes", "slots", "resource_days"] + (["known_bookings"] if listed else [])
    with db.arrow_session(url=url) as session:
        _begin(session, snapshot)
        return {name: _read(session, name, params, seconds) for name in names}


def _patient_reads(session: ArrowSession, params: dict[str, Any], chained: bool, seconds: dict[str, float]):
    """The extracts joined with the temporary tables of the targets' patients and chains (first connection)."""
    names = ["patient_history", "patients"] + (["reschedule_depth"] if chained else [])
    return {name: _read(session, name, params, seconds) for name in names}


def compute(url, as_of: date, *, country: str, settings: Settings, horizon_days: int | None = None,
            sources: Sequence[str] | None = None, keys: pd.DataFrame | None = None,
            timings: dict[str, float] | None = None) -> pd.DataFrame:
    """The features frame of the targets of one as-of date in the database of ``url`` (a SQLAlchemy URL).

    Targets: the horizon (``keys`` None: appointments starting in ``[as_of, as_of + horizon_days)``, known
    at ``as_of``, of ``sources`` or of every source), or the listed ``keys`` (a frame with ``source`` and
    ``appointment_id``; each with its own booking record even if booked later). Returns the columns and
    dtypes ``features.build.read_frame`` gives for the SQL's result, ordered by source and appointment id,
    without ``feature_set_version``.

    Two connections read one snapshot (repeatable read; the second imports the first's snapshot): the
    first reads the targets, writes the temporary tables of their patients and chains and reads what joins
    them; the second, in a thread, reads the rest meanwhile; numpy computes while they read.
    ``timings`` receives seconds: ``targets``, ``keys`` (codes and temporary tables), ``extract_<query>``
    per extract (in their threads, overlapping the main thread's steps), ``compute`` (numpy), ``wait``
    (for extracts still running), ``external``, ``frame``."""
    from concurrent.futures import ThreadPoolExecutor
    from datetime import timedelta

    from clinicflow import db

    lap = Laps(timings)
    side_seconds: dict[str, float] = {}
    main_seconds: dict[str, float] = {}
    patient_seconds: dict[str, float] = {}
    with db.arrow_session(url=url) as session, ThreadPoolExecutor(max_workers=2) as pool:
        _begin(session)
        snapshot = str(session.scalar("SELECT pg_export_snapshot()"))
        bytewise = bool(_read(session, "collation", {}, main_seconds).column(0)[0].as_py())
        order_by = "" if bytewise else "ORDER BY a.source, a.appointment_id\n"
        params: dict[str, Any] = {"as_of": as_of, "country": country, "window_days": definitions.CONTEXT_WINDOW_DAYS}
        side = None
        if keys is None:
            end = as_of + timedelta(days=int(horizon_days or 0))
            params.update(horizon_end=end, all_sources=not sources, sources=list(sources or []),
                          first_day=as_of, last_day=end - timedelta(days=1))
            side = pool.submit(_side_reads, url, snapshot, dict(params), False, side_seconds)
            targets = _read(session, "horizon_targets", params, main_seconds, order_by)
        else:
            pa, _ = _pa()
            session.execute("CREATE TEMP TABLE ft_keys (source text NOT NULL, appointment_id text NOT NULL) "
                            "ON COMMIT DROP")
            session.ingest("ft_keys", pa.table({
                "source": pa.array(keys["source"].astype(str).tolist(), pa.string()),
                "appointment_id": pa.array(keys["appointment_id"].astype(str).tolist(), pa.string())}))
            session.execute("ANALYZE ft_keys")
            targets = _read(session, "listed_targets", params, main_seconds, order_by)
        lap("targets")
        engine = _Engine(targets, as_of, listed=keys is not None, bytewise=bytewise)
        if engine.n:
            if side is None:
                params.update(all_sources=False, sources=engine.src.dictionary.to_pylist(),
                              first_day=_date(engine.first_day), last_day=_date(engine.last_day))
                side = pool.submit(_side_reads, url, snapshot, dict(params), True, side_seconds)
            chained = engine.write_keys(session)
            lap("keys")
            patient = pool.submit(_patient_reads, session, dict(params), chained, patient_seconds)
            engine.own_record()
            lap("compute")
            side_tables = side.result()
            lap("wait")
            engine.side_features(side_tables)
            lap("compute")
            patient_tables = patient.result()
            lap("wait")
            engine.patient_features(patient_tables)
            lap("compute")
            engine.external(settings)
            lap("external")
        result = engine.result
    if timings is not None:
        for seconds in (main_seconds, side_seconds, patient_seconds):
            timings.update(seconds)
    frame = to_frame(result)
    lap("frame")
    return frame


class _Engine:
    """The numpy side of :func:`compute`: the targets' codes, then each family of features as its extracts
    arrive."""

    def __init__(self, targets, as_of: date, *, listed: bool, bytewise: bool) -> None:
        pa, pc = _pa()
        self.t = t = targets
        self.n = n = t.num_rows
        self.as_of = as_of
        self.listed = listed
        self.result = Result(as_of=as_of, n=n)
        self.cols = self.result.columns
        if n == 0:
            for name, kind in COLUMNS:
                dtype = object if kind in ("text", "date", "json") else np.float64 if kind == "float" else np.int64
                self.cols[name] = Column(kind, np.zeros(0, dtype=dtype))
            return
        # every array of the targets is taken in the frame's order (source, appointment_id) once, at its read:
        # the features are then computed in that order
        self.order: np.ndarray | None = None
        if bytewise:  # the database sorts text by bytes, as Arrow does
            self.order = np.asarray(
                pc.sort_indices(pa.table({"s": t["source"], "a": t["appointment_id"]}),
                                sort_keys=[("s", "ascending"), ("a", "ascending")]).to_numpy(), dtype=np.int64)
        # else: read in the database's order
        self.as_of_day = (as_of - date(1970, 1, 1)).days
        self.self_seen = self._bool("self_seen").astype(np.int64) if listed else np.ones(n, dtype=np.int64)
        self.src = self._coded("source")
        self.patient = self._coded("patient_key")
        self.resource = self._coded("resource_id")
        self.entities = {kind: self._coded(f"{kind}_id") for kind in ("practitioner", "department", "branch",
                                                                      "service")}
        self.start = self._i64("start_at")
        self.day = np.floor_divide(self.start, DAY_US)
        self.first_day, self.last_day = int(self.day.min()), int(self.day.max())
        self.n_days = self.last_day - self.first_day + 1
        self.day_off = self.day - self.first_day
        self.pid, self.pat_uniques = _factorize(_combine(self.src.codes, self.patient.codes, self.patient.size))
        self.res_key = _combine(self.src.codes, self.resource.codes, self.resource.size)
        # (resource, day) of each target: the per-day counts and the slot grid share it
        self.res_day, self.res_day_keys = _factorize(_combine(self.res_key, self.day_off, self.n_days))

    def _take(self, values: np.ndarray) -> np.ndarray:
        return values if self.order is None else values[self.order]

    def _i64(self, name: str) -> np.ndarray:
        return self._take(_i64(self.t[name]))

    def _valid(self, name: str) -> np.ndarray:
        return self._take(_valid(self.t[name]))

    def _bool(self, name: str) -> np.ndarray:
        return self._take(_bool(self.t[name]))

    def _coded(self, name: str) -> Coded:
        coded = Coded.of(self.t[name])
        coded.codes = self._take(coded.codes)
        return coded

    def _take_back(self, rows: np.ndarray) -> np.ndarray:
        """Rows of the frame's order as rows of the targets table."""
        return rows if self.order is None else self.order[rows]

    def _day_offset(self, day_n_2000: np.ndarray) -> np.ndarray:
        """Offsets of day numbers (from 2000-01-01) in the targets' days; -1 outside them."""
        off = day_n_2000 + EPOCH_2000 - self.first_day
        return np.where((off >= 0) & (off < self.n_days), off, -1)

    # ------------------------------------------------------------ temporary tables of keys
    def write_keys(self, session: ArrowSession) -> bool:
        """ft_pat (the targets' patients with their codes) and ft_chain (targets replacing a booking);
        returns whether there is a chain to follow."""
        pa, _ = _pa()
        session.execute("CREATE TEMP TABLE ft_pat (source text NOT NULL, patient_key text NOT NULL, "
                        "pid integer NOT NULL) ON COMMIT DROP")
        size = max(self.patient.size, 1)
        session.ingest("ft_pat", pa.table({
            "source": self.src.dictionary.take(pa.array(self.pat_uniques // size)),
            "patient_key": self.patient.dictionary.take(pa.array(self.pat_uniques % size)),
            "pid": pa.array(np.arange(len(self.pat_uniques), dtype=np.int32))}))
        session.execute("ANALYZE ft_pat")
        self.prev_valid = self._valid("rescheduled_from_id")
        chained = np.flatnonzero(self.prev_valid)
        if not len(chained):
            return False
        session.execute("CREATE TEMP TABLE ft_chain (target_row integer NOT NULL, source text NOT NULL, "
                        "prev_id text NOT NULL) ON COMMIT DROP")
        take = pa.array(self._take_back(chained))
        session.ingest("ft_chain", pa.table({"target_row": pa.array(chained.astype(np.int32)),
                                             "source": self.t["source"].take(take),
                                             "prev_id": self.t["rescheduled_from_id"].take(take)}))
        return True

    # ------------------------------------------------------------ the target's own booking record
    def own_record(self) -> None:
        t, cols, day = self.t, self.cols, self.day
        start = self.start
        tod = start - day * DAY_US
        booked = self._i64("booked_at")
        has_booked = self._valid("booked_at")
        booked_day = np.floor_divide(booked, DAY_US)
        cols["source"] = Column("text", self.src.objects())
        cols["appointment_id"] = Column("text", self._take(t["appointment_id"].to_numpy(zero_copy_only=False)))
        cols["as_of"] = Column("date", np.full(self.n, self.as_of, dtype=object))
        cols["start_at"] = Column("timestamp", start)
        cols["lead_days"] = Column("int", day - booked_day, has_booked)
        # greatest(NULL, 0) is 0: without a booking time the lead is 0 hours (and lead_days NULL)
        cols["lead_hours"] = Column("float", np.where(has_booked, np.maximum((start - booked) / float(HOUR_US), 0.0),
                                                      0.0))
        cols["same_day_booking"] = Column("bool", booked_day == day, has_booked)
        cols["booked_weekday"] = Column("int", (booked_day + 3) % 7, has_booked)  # 1970-01-01: a Thursday
        cols["booked_hour"] = Column("int", (booked - booked_day * DAY_US) // HOUR_US, has_booked)
        cols["channel"] = Column("text", self._coded("channel").objects())
        cols["is_reschedule"] = Column("bool", self.prev_valid)
        cols["reschedule_depth"] = Column("int", np.zeros(self.n, dtype=np.int64))
        cols["confirmed"] = Column("bool", self._bool("confirmed"), self._valid("confirmed"))
        cols["appt_weekday"] = Column("int", (day + 3) % 7)
        # hour + minute / 60.0 in numeric, rounded once: (hour * 60 + minute) / 60 rounded once is the same
        cols["appt_hour"] = Column("float", (tod // MINUTE_US) / 60.0)
        cols["duration_min"] = Column("int", self._i64("duration_min"), self._valid("duration_min"))
        for kind, coded in self.entities.items():
            cols[f"{kind}_id"] = Column("text", coded.objects())
        cols["resource_id"] = Column("text", self.resource.objects())
        months = day.astype("datetime64[D]").astype("datetime64[M]").astype(np.int64)
        self.year = months // 12 + 1970
        month = months % 12 + 1
        cols["month"] = Column("int", month)
        cols["season"] = Column("text", SEASONS[month - 1])
        cols["reminder_sent"] = Column("bool", self._bool("reminder_sent"), self._valid("reminder_sent"))
        if not self.listed:  # the targets are every booking known on their days: count them among themselves
            self._per_day(None)

    # ------------------------------------------------------------ bookings known per day
    def _per_day(self, known) -> None:
        n_days, day_off, src = self.n_days, self.day_off, self.src
        branch = self.entities["branch"]
        groups = {"patient": _factorize(_combine(self.pid, day_off, n_days)),
                  "resource": (self.res_day, self.res_day_keys),
                  "branch": _factorize(_combine(_combine(src.codes, branch.codes, branch.size), day_off, n_days))}
        if known is not None:
            k_day = self._day_offset(_i64(known["day_n"]))
            k_src = src.translate(known["source"])
            k_pat = _index_of(self.pat_uniques, _combine(k_src, self.patient.lookup(known["patient_key"]),
                                                         self.patient.size))
            known_keys = {"patient": _combine(k_pat, k_day, n_days),
                          "resource": _combine(_combine(k_src, self.resource.translate(known["resource_id"]),
                                                        self.resource.size), k_day, n_days),
                          "branch": _combine(_combine(k_src, branch.translate(known["branch_id"]), branch.size),
                                             k_day, n_days)}
        counted = {}
        for name, (group, uniques) in groups.items():
            if known is None:
                counts = _counts(group, len(uniques))
            else:
                counts = _counts(_index_of(uniques, known_keys[name]), len(uniques))
            counted[name] = np.where(group >= 0, counts[np.where(group >= 0, group, 0)], 0)
        self.resource_booked = counted["resource"] - self.self_seen
        self.cols["same_day_appointments"] = Column("int", counted["patient"] - self.self_seen)
        self.cols["resource_day_booked"] = Column("int", self.resource_booked, self.resource.codes >= 0)
        self.cols["branch_day_booked"] = Column("int", counted["branch"] - self.self_seen, branch.codes >= 0)

    # ------------------------------------------------------------ calendar, context, slots
    def side_features(self, tables: dict[str, Any]) -> None:
        if self.listed:
            self._per_day(tables["known_bookings"])
        self._calendar(tables["calendar"])
        self._context(tables["context_outcomes"])
        self._slots(tables["slots"], tables["resource_days"])

    def _calendar(self, calendar) -> None:
        cols, n = self.cols, self.n
        cal_at = np.full(self.n_days, -1, dtype=np.int64)
        off = self._day_offset(_i64(calendar["day_n"]))
        cal_at[off[off >= 0]] = np.flatnonzero(off >= 0)
        at = cal_at[self.day_off]
        found = at >= 0
        at = np.where(found, at, 0)
        if not calendar.num_rows:
            for name in ("is_day_off", "is_public_holiday", "is_shortened_day", "is_working_weekend"):
                cols[name] = Column("bool", np.zeros(n, bool), found)
            for name in ("days_to_holiday", "days_from_holiday", "days_to_nearest_holiday"):
                cols[name] = Column("int", np.zeros(n, np.int64), found)
            return
        for name in ("is_day_off", "is_public_holiday", "is_shortened_day", "is_working_weekend"):
            cols[name] = Column("bool", _bool(calendar[name])[at], found & _valid(calendar[name])[at])
        to_h, to_ok = _i64(calendar["days_to_holiday"])[at], found & _valid(calendar["days_to_holiday"])[at]
        from_h, from_ok = _i64(calendar["days_from_holiday"])[at], found & _valid(calendar["days_from_holiday"])[at]
        cols["days_to_holiday"] = Column("int", to_h, to_ok)
        cols["days_from_holiday"] = Column("int", from_h, from_ok)
        nearest = np.where(to_ok & from_ok, np.minimum(to_h, from_h), np.where(to_ok, to_h, from_h))
        cols["days_to_nearest_holiday"] = Column("int", nearest, to_ok | from_ok)  # least() skips NULLs

    def _context(self, context) -> None:
        """Smoothed no-show rates of the window: outcomes per (source, doctor, department, branch, service)
        added up per entity and per source (the clinic rate)."""
        src, cols = self.src, self.cols
        ctx_src = src.translate(context["source"])
        ctx_n, ctx_ns = _i64(context["n"]), _i64(context["ns"])
        ok = ctx_src >= 0
        totals_n = np.bincount(ctx_src[ok], weights=ctx_n[ok], minlength=src.size)
        totals_ns = np.bincount(ctx_src[ok], weights=ctx_ns[ok], minlength=src.size)
        with np.errstate(divide="ignore", invalid="ignore"):
            base = np.where(totals_n > 0, totals_ns / totals_n, np.nan)  # NULL without outcomes
        self.rate = rate = base[src.codes]
        self.has_rate = has_rate = ~np.isnan(rate)
        w = definitions.CONTEXT_PRIOR_WEIGHT
        for kind, coded in self.entities.items():
            size = src.size * max(coded.size, 1)
            key = _combine(ctx_src, coded.translate(context[f"{kind}_id"]), coded.size)
            ok = key >= 0
            entity_n = np.bincount(key[ok], weights=ctx_n[ok], minlength=size).astype(np.int64)
            entity_ns = np.bincount(key[ok], weights=ctx_ns[ok], minlength=size).astype(np.int64)
            target_key = _combine(src.codes, coded.codes, coded.size)
            has_entity = target_key >= 0
            tk = np.where(has_entity, target_key, 0)
            n_k = np.where(has_entity, entity_n[tk], 0)
            ns_k = np.where(has_entity, entity_ns[tk], 0)
            cols[f"{kind}_noshow_rate"] = Column("float", (ns_k + w * rate) / (n_k + w), has_entity & has_rate)
            if kind == "practitioner":
                cols["practitioner_volume"] = Column("int", n_k)

    def _slots(self, slots, resource_days) -> None:
        """Position of the target in its resource's slots of the day (binary search in the sorted slots of
        each (resource, day)), else from core.resource_day's grid; the day's slots; the resource's fill."""
        cols, n, n_days, tod = self.cols, self.n, self.n_days, self.start - self.day * DAY_US
        group, uniques = self.res_day, self.res_day_keys  # (resource, day) of each target
        n_groups = len(uniques)
        has_group = group >= 0
        g = np.where(has_group, group, 0)

        s_start = _i64(slots["start_at"])
        s_day = np.floor_divide(s_start, DAY_US)
        s_res = _combine(self.src.translate(slots["source"]), self.resource.translate(slots["resource_id"]),
                         self.resource.size)
        s_off = s_day - self.first_day
        s_off = np.where((s_off >= 0) & (s_off < n_days), s_off, -1)
        s_group = _index_of(uniques, _combine(s_res, s_off, n_days))
        keep = s_group >= 0
        grid = np.sort(s_group[keep] * DAY_US + (s_start[keep] - s_day[keep] * DAY_US))
        in_day = np.bincount(s_group[keep], minlength=n_groups)
        slots_in_day = np.where(has_group, in_day[g], 0)
        has_slots = slots_in_day > 0
        day_first = np.searchsorted(grid, g * DAY_US, side="left")
        slots_before = np.searchsorted(grid, g * DAY_US + tod, side="left") - day_first  # slots starting earlier

        rd_res = _combine(self.src.translate(resource_days["source"]),
                          self.resource.translate(resource_days["resource_id"]), self.resource.size)
        rd_group = _index_of(uniques, _combine(rd_res, self._day_offset(_i64(resource_days["day_n"])), n_days))
        rd_at = np.full(n_groups + 1, -1, dtype=np.int64)
        ok = rd_group >= 0
        rd_at[rd_group[ok]] = np.flatnonzero(ok)
        rd_row = rd_at[np.where(has_group, group, n_groups)]
        has_rd = rd_row >= 0
        rd0 = np.where(has_rd, rd_row, 0)
        if resource_days.num_rows:
            rd_slots = _i64(resource_days["slots"])[rd0]
            rd_minutes = _i64(resource_days["slot_minutes"])[rd0]
            rd_work = _i64(resource_days["work_start_us"])[rd0]
            rd_grid = has_rd & _valid(resource_days["slot_minutes"])[rd0] & (rd_minutes > 0) \
                & _valid(resource_days["work_start_us"])[rd0]
        else:
            rd_slots = rd_minutes = rd_work = np.zeros(n, np.int64)
            rd_grid = np.zeros(n, bool)
        # floor(epoch(start::time - work_start) / 60.0 / slot_minutes): exact in integers (microseconds)
        rd_index = np.floor_divide(tod - rd_work, np.where(rd_grid, rd_minutes, 1) * MINUTE_US)
        cols["slot_index"] = Column("int", np.where(has_slots, slots_before, rd_index), has_slots | rd_grid)
        with np.errstate(divide="ignore", invalid="ignore"):
            position = np.where(slots_in_day > 1, np.minimum(slots_before / (slots_in_day - 1.0), 1.0),
                                np.where(slots_in_day == 1, 0.0,
                                         np.minimum(np.maximum(rd_index / (rd_slots - 1.0), 0.0), 1.0)))
        cols["slot_position"] = Column("float", position, has_slots | (rd_grid & (rd_slots > 1)))
        day_slots = np.where(has_slots, slots_in_day, rd_slots)
        has_day_slots = has_slots | has_rd
        cols["day_slots"] = Column("int", day_slots, has_day_slots)
        with np.errstate(divide="ignore", invalid="ignore"):
            fill = self.resource_booked / day_slots.astype(np.float64)
        cols["resource_day_fill"] = Column("float", fill, has_day_slots & (day_slots > 0))

    # ------------------------------------------------------------ patient
    def patient_features(self, tables: dict[str, Any]) -> None:
        pa, pc = _pa()
        cols, n, pid = self.cols, self.n, self.pid
        n_pat = len(self.pat_uniques)
        depths = tables.get("reschedule_depth")
        if depths is not None and depths.num_rows:
            cols["reschedule_depth"].values[_i64(depths["target_row"])] = _i64(depths["depth"])

        patients = tables["patients"]
        has_pid = pid >= 0
        at_pid = np.where(has_pid, pid, 0)
        p_row = np.full(n_pat + 1, -1, dtype=np.int64)  # the last: no patient key
        p_row[_i64(patients["pid"])] = np.arange(patients.num_rows)
        prow = p_row[np.where(has_pid, pid, n_pat)]
        has_patient = prow >= 0
        prow0 = np.where(has_patient, prow, 0)
        if patients.num_rows:
            birth = _i64(patients["birth_year"])[prow0]
            has_birth = has_patient & _valid(patients["birth_year"])[prow0]
            sex = Coded.of(patients["sex"])
            sex.codes = np.where(has_patient, sex.codes[prow0], -1)
            flags = Coded.of(patients["flags"])
            parsed = np.empty(flags.size + 1, dtype=object)
            parsed[:-1] = [json.loads(text) for text in flags.dictionary.to_pylist()]  # once per distinct text
            parsed[-1] = None
            flag_values = parsed[np.where(has_patient, flags.codes[prow0], -1)]
        else:
            birth, has_birth = np.zeros(n, np.int64), np.zeros(n, bool)
            sex = Coded(np.full(n, -1, np.int64), pa.array([], pa.string()))
            flag_values = np.full(n, None, dtype=object)
        cols["age"] = Column("int", self.year - birth, has_birth)
        cols["sex"] = Column("text", sex.objects())
        cols["patient_flags"] = Column("json", flag_values)

        history = tables["patient_history"]
        status = np.asarray(pc.fill_null(pc.index_in(history["status"], value_set=pa.array(STATUSES)), -1)
                            .to_numpy(), dtype=np.int64)
        h_pid = _i64(history["pid"])
        start_n = _i64(history["start_n"]) + EPOCH_2000
        as_of_day = self.as_of_day
        # the extract holds the patients' rows booked before A that started before A or were cancelled /
        # rescheduled before A: seen = started before A; changed = cancelled / rescheduled before A
        seen = start_n < as_of_day
        changed = (_i64(history["changed_n"]) + EPOCH_2000) < as_of_day
        cancelled = np.isin(status, _CANCELLED)
        inactive = cancelled | (status == _RESCHEDULED) | (status == _DELETED)
        attended = seen & ((status == _ARRIVED) | (status == _FULFILLED))
        noshow = seen & (status == _NOSHOW)
        late = _bool(history["late"])

        def per_patient(mask: np.ndarray) -> np.ndarray:
            counts = _counts(h_pid, n_pat, mask)
            return np.where(has_pid, counts[at_pid], 0)

        n_attended, n_noshow = per_patient(attended), per_patient(noshow)
        # expected appointments: those whose day has passed, less those cancelled, rescheduled or deleted
        cols["prior_appointments"] = Column("int", per_patient(seen) - per_patient(seen & inactive & changed))
        cols["prior_attended"] = Column("int", n_attended)
        cols["prior_noshows"] = Column("int", n_noshow)
        cols["prior_cancellations"] = Column("int", per_patient(changed & cancelled))
        cols["prior_late_cancellations"] = Column("int", per_patient(changed & cancelled & late))
        cols["prior_reschedules"] = Column("int", per_patient(changed & (status == _RESCHEDULED)))
        low = np.iinfo(np.int64).min
        for name, mask in (("days_since_last_visit", attended), ("days_since_last_noshow", noshow)):
            last = np.full(n_pat, low, dtype=np.int64)
            np.maximum.at(last, h_pid[mask], start_n[mask])
            last_t = np.where(has_pid, last[at_pid], low)
            present = last_t > low
            cols[name] = Column("int", np.where(present, self.day - last_t, 0), present)
        m = definitions.PATIENT_PRIOR_WEIGHT
        cols["prior_noshow_rate"] = Column("float", (n_noshow + m * self.rate) / (n_noshow + n_attended + m),
                                           self.has_rate)

    def external(self, settings: Settings) -> None:
        self.cols["external"] = Column("json", _external(settings, self.src, self.entities["branch"], self.day,
                                                         self.as_of))


def _date(day_number: int) -> date:
    return date.fromordinal(date(1970, 1, 1).toordinal() + int(day_number))


def _external(settings: Settings, src: Coded, branch: Coded, day: np.ndarray, as_of: date) -> np.ndarray:
    """The external providers' values per row (a dict, ``{}`` without any), as ``_apply_external`` stores
    them and ``read_frame`` reads them back."""
    import pandas as pd

    from features.build import external_json

    n = len(day)
    empty: dict[str, Any] = {}
    out = np.empty(n, dtype=object)
    out.fill(empty)
    has_branch = branch.codes >= 0
    if not has_branch.any():
        return out
    key = np.where(has_branch, (src.codes * max(branch.size, 1) + branch.codes) * (int(day.max()) + 1) + day, -1)
    group, uniques = _factorize(key)
    days = uniques % (int(day.max()) + 1)
    pair = uniques // (int(day.max()) + 1)
    keys = pd.DataFrame({
        "source": src.dictionary.take(_pa()[0].array(pair // max(branch.size, 1))).to_numpy(zero_copy_only=False),
        "branch_id": branch.dictionary.take(_pa()[0].array(pair % max(branch.size, 1))).to_numpy(zero_copy_only=False),
        "day": [_date(d) for d in days],
        "as_of": as_of,
    })
    merged = external_json(keys, settings)
    if merged is None:
        return out
    texts = keys.merge(merged.drop_duplicates(["source", "branch_id", "day", "as_of"]),
                       on=["source", "branch_id", "day", "as_of"], how="left")["external"]
    values = np.empty(len(keys) + 1, dtype=object)
    parsed = {text: _as_stored(json.loads(text)) for text in texts.dropna().unique()}
    values[:-1] = [parsed.get(text, empty) if isinstance(text, str) else empty for text in texts]
    values[-1] = empty
    out[:] = values[np.where(group >= 0, group, len(keys))]
    return out


def _as_stored(value: Any) -> Any:
    """A parsed JSON value as it reads back from a jsonb column: PostgreSQL prints numbers without an
    exponent, so a float that JSON wrote with one (abs >= 1e16, integral) comes back as an integer."""
    if isinstance(value, dict):
        return {k: _as_stored(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_as_stored(v) for v in value]
    if isinstance(value, float) and np.isfinite(value) and abs(value) >= 1e16:
        return int(value)
    return value


# --------------------------------------------------------------------------------------------------
# output


def to_frame(result: Result) -> pd.DataFrame:
    """The frame ``read_frame`` gives for the same rows: integers int64 (float64 with NaN when a column
    has NULLs), booleans bool (object with None when NULLs), text and json as objects, dates as
    ``datetime.date``, timestamps datetime64[ns]."""
    import pandas as pd

    data: dict[str, Any] = {}
    for name, kind in COLUMNS:
        column = result.columns[name]
        values, valid = column.values, column.valid
        if valid is not None and valid.all():
            valid = None
        if kind == "int":
            data[name] = values.astype(np.int64, copy=False) if valid is None else np.where(valid, values, np.nan)
        elif kind == "float":
            values = values.astype(np.float64, copy=False)
            data[name] = values if valid is None else np.where(valid, values, np.nan)
        elif kind == "bool":
            if valid is None:
                data[name] = values.astype(bool, copy=False)
            else:
                objects = values.astype(bool).astype(object)
                objects[~valid] = None
                data[name] = objects
        elif kind == "timestamp":
            data[name] = values.astype("datetime64[us]").astype("datetime64[ns]")
        else:
            data[name] = values
    return pd.DataFrame(data, copy=False)  # one block per column: no consolidation copy
