"""Validation of a staged load batch: set-based row checks, quarantine, and a Great Expectations suite.

Design (it has to scale to millions of rows a night on two cores):

* **Row rules** are the single definition of what a valid row is. Each :class:`Rule` has a SQL
  predicate (true when a row fails) and the equivalent GX 1.x expectation. The SQL predicates of an
  entity are evaluated in ONE set-based ``INSERT … SELECT`` over the batch's staging partition: every
  failing row — not a sample — lands in ``quarantine.record`` with the names of all rules it failed,
  the staged (pseudonymised) record and the batch/run. The load then skips exactly those rows.
* **Critical checks** fail the run (:class:`DataQualityError`, nothing loaded) with a message that says
  what to fix: duplicate keys in a frame, or more than ``max_quarantine_fraction`` of the
  appointments quarantined (a broken export, not a few bad rows). Schema mismatches are caught
  before staging (:func:`pipelines.load.prepare`).
* **Great Expectations** runs the same rules as an ExpectationSuite per entity on the batch (all rows
  up to ``gx_sample_rows``, a seeded Bernoulli sample above that), plus a table-level suite run by GX
  in PostgreSQL on the whole staging partition (row volume against previous loads, staged columns).
  GX writes the HTML Data Docs of every run under ``<CLINICFLOW_HOME>/gx/<source>/batch_<id>/``.
  When GX saw every row, its unexpected counts must equal the SQL counts: a difference is logged as
  an error and recorded in the summary (``gx_consistent``).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from pathlib import Path
from statistics import median
from typing import Any

from clinicflow.errors import ClinicFlowError
from pipelines import load
from pipelines.sources.base import STATUSES

log = logging.getLogger(__name__)

RESOURCE_KINDS = ("practitioner", "room", "device", "other")
SEXES = ("F", "M")


@dataclass(frozen=True)
class Limits:
    """The configurable bounds of a source (``options`` of its SourceConfig)."""

    as_of: date
    start_past_days: int = 3660
    start_future_days: int = 400
    max_quarantine_fraction: float = 0.25
    volume_min_ratio: float = 0.2
    volume_max_ratio: float = 5.0
    volume_action: str = "warn"
    gx_sample_rows: int = 50_000
    data_docs_keep: int = 60

    @classmethod
    def from_options(cls, as_of: date, options: dict[str, Any]) -> Limits:
        def number(name: str, default: float, kind: type = int) -> Any:
            value = options.get(name, default)
            try:
                return kind(value)
            except (TypeError, ValueError):
                raise ClinicFlowError(f"source option {name!r} must be a number, got {value!r}") from None

        action = options.get("volume_action", "warn")
        if action not in ("warn", "fail"):
            raise ClinicFlowError(f"source option 'volume_action' must be 'warn' or 'fail', got {action!r}")
        return cls(
            as_of=as_of,
            start_past_days=number("start_past_days", 3660),
            start_future_days=number("start_future_days", 400),
            max_quarantine_fraction=number("max_quarantine_fraction", 0.25, float),
            volume_min_ratio=number("volume_min_ratio", 0.2, float),
            volume_max_ratio=number("volume_max_ratio", 5.0, float),
            volume_action=action,
            gx_sample_rows=number("gx_sample_rows", 50_000),
            data_docs_keep=number("data_docs_keep", 60),
        )

    @property
    def start_min(self) -> datetime:
        return datetime.combine(self.as_of - timedelta(days=self.start_past_days), time.min)

    @property
    def start_max(self) -> datetime:
        return datetime.combine(self.as_of + timedelta(days=self.start_future_days), time.min)

    @property
    def birth_year_min(self) -> int:
        return self.as_of.year - 120

    @property
    def birth_year_max(self) -> int:
        return self.as_of.year


@dataclass(frozen=True)
class Rule:
    """A row-level rule: ``fails`` is SQL that is TRUE for a failing row (alias ``s`` = staged row,
    ``p`` = the patient's birth year, ``r`` = the resource if known); ``expectation`` builds the
    equivalent GX expectation. Both treat NULL the same way (only *_present rules reject NULL)."""

    name: str
    entity: str
    fails: str
    expectation: Callable[[Any, Limits, list[str]], Any]
    description: str


def _present(entity: str, column: str) -> Rule:
    return Rule(f"{column}_present", entity, f"s.{column} IS NULL",
                lambda E, lim, known: E.ExpectColumnValuesToNotBeNull(column=column),
                f"{column} is not null")


def _quoted(values: tuple[str, ...]) -> str:
    return ", ".join("'" + v.replace("'", "''") + "'" for v in values)


def _rules() -> tuple[Rule, ...]:
    a, p = "appointment", "patient"
    parsed = "the connector could parse every field (row_problems is null)"
    return (
        _present("branch", "branch_id"),
        _present("department", "department_id"),
        _present("practitioner", "practitioner_id"),
        _present("service", "service_id"),
        Rule("default_duration_in_range", "service", "s.default_duration_min NOT BETWEEN 1 AND 480",
             lambda E, lim, k: E.ExpectColumnValuesToBeBetween(column="default_duration_min", min_value=1,
                                                                max_value=480),
             "default duration is 1-480 minutes"),
        _present("resource", "resource_id"),
        Rule("kind_valid", "resource", f"s.kind NOT IN ({_quoted(RESOURCE_KINDS)})",
             lambda E, lim, k: E.ExpectColumnValuesToBeInSet(column="kind", value_set=list(RESOURCE_KINDS)),
             "resource kind is practitioner, room, device or other"),
        _present(p, "patient_key"),
        Rule("sex_valid", p, f"s.sex NOT IN ({_quoted(SEXES)})",
             lambda E, lim, k: E.ExpectColumnValuesToBeInSet(column="sex", value_set=list(SEXES)),
             "sex is F or M (or unknown)"),
        Rule("birth_year_plausible", p, "s.birth_year NOT BETWEEN %(birth_year_min)s AND %(birth_year_max)s",
             lambda E, lim, k: E.ExpectColumnValuesToBeBetween(column="birth_year", min_value=lim.birth_year_min,
                                                                max_value=lim.birth_year_max),
             "age at the as-of date is 0-120 years"),
        Rule("parsed_cleanly", p, "s.row_problems IS NOT NULL",
             lambda E, lim, k: E.ExpectColumnValuesToBeNull(column="row_problems"), parsed),
        _present(a, "appointment_id"),
        _present(a, "patient_key"),
        _present(a, "start_at"),
        Rule("start_at_in_window", a, "s.start_at < %(start_min)s OR s.start_at >= %(start_max)s",
             lambda E, lim, k: E.ExpectColumnValuesToBeBetween(column="start_at", min_value=lim.start_min,
                                                                max_value=lim.start_max, strict_max=True),
             "start is within the configured window around the as-of date"),
        Rule("duration_in_range", a, "s.duration_min NOT BETWEEN 1 AND 480",
             lambda E, lim, k: E.ExpectColumnValuesToBeBetween(column="duration_min", min_value=1, max_value=480),
             "duration is 1-480 minutes"),
        Rule("status_known", a, "s.status IS NULL",
             lambda E, lim, k: E.ExpectColumnValuesToNotBeNull(column="status"),
             "the source's status could be mapped to a canonical status"),
        Rule("status_canonical", a, f"s.status NOT IN ({_quoted(STATUSES)})",
             lambda E, lim, k: E.ExpectColumnValuesToBeInSet(column="status", value_set=list(STATUSES)),
             "status is one of the canonical statuses"),
        _present(a, "resource_id"),
        Rule("resource_known", a, "s.resource_id IS NOT NULL AND r.resource_id IS NULL",
             lambda E, lim, known: E.ExpectColumnValuesToBeInSet(column="resource_id", value_set=known),
             "the appointment's resource exists (in this batch or already in core)"),
        Rule("age_in_range", a, "(extract(year FROM s.start_at)::bigint - p.birth_year) NOT BETWEEN 0 AND 120",
             lambda E, lim, k: E.ExpectColumnValuesToBeBetween(column="age_years", min_value=0, max_value=120),
             "the patient's age at the appointment is 0-120 years"),
        Rule("parsed_cleanly", a, "s.row_problems IS NOT NULL",
             lambda E, lim, k: E.ExpectColumnValuesToBeNull(column="row_problems"), parsed),
        _present("slot", "resource_id"),
        Rule("resource_known", "slot", "s.resource_id IS NOT NULL AND r.resource_id IS NULL",
             lambda E, lim, known: E.ExpectColumnValuesToBeInSet(column="resource_id", value_set=known),
             "the slot's resource exists"),
        _present("slot", "start_at"),
        _present("slot", "duration_min"),
        Rule("duration_in_range", "slot", "s.duration_min NOT BETWEEN 1 AND 480",
             lambda E, lim, k: E.ExpectColumnValuesToBeBetween(column="duration_min", min_value=1, max_value=480),
             "slot length is 1-480 minutes"),
        _present("resource_day", "resource_id"),
        Rule("resource_known", "resource_day", "s.resource_id IS NOT NULL AND r.resource_id IS NULL",
             lambda E, lim, known: E.ExpectColumnValuesToBeInSet(column="resource_id", value_set=known),
             "the resource exists"),
        _present("resource_day", "day"),
        _present("resource_day", "slots"),
        Rule("slots_non_negative", "resource_day", "s.slots < 0",
             lambda E, lim, k: E.ExpectColumnValuesToBeBetween(column="slots", min_value=0),
             "number of slots is not negative"),
        Rule("slot_minutes_in_range", "resource_day", "s.slot_minutes NOT BETWEEN 1 AND 480",
             lambda E, lim, k: E.ExpectColumnValuesToBeBetween(column="slot_minutes", min_value=1, max_value=480),
             "slot length is 1-480 minutes"),
    )


RULES: tuple[Rule, ...] = _rules()
RESOURCE_CHECKED = ("appointment", "slot", "resource_day")


def rules_for(entity: str) -> list[Rule]:
    return [r for r in RULES if r.entity == entity]


# --------------------------------------------------------------------------------------------------
# SQL: critical checks and the quarantine


def _known_resources_cte(batch_id: int, staged: set[str]) -> str:
    parts = ["SELECT resource_id FROM core.resource WHERE source = %(source)s"]
    if "resource" in staged:
        parts.append(
            f"SELECT s.resource_id FROM {load.staging_table('resource', batch_id)} s WHERE s.resource_id IS NOT NULL "
            "AND s.row_no NOT IN (SELECT q.row_no FROM quarantine.record q "
            "WHERE q.load_batch_id = %(batch_id)s AND q.entity = 'resource')"
        )
    return "known AS (" + " UNION ".join(parts) + ")"


def _patient_joins(batch_id: int, staged: set[str], unique_patients: bool) -> str:
    """Joins that give ``p.birth_year``: the staged patient if the batch has it, else core's.

    Two hash joins on tables with statistics (not a UNION of both: its row estimate made the planner
    hash the million staged appointments instead of the patients). ``unique_patients`` False (the
    batch has duplicate patient keys and will be rejected) deduplicates them first, so that no
    appointment is joined twice.
    """
    core = "LEFT JOIN core.patient cp ON cp.source = %(source)s AND cp.patient_key = {key}"
    if "patient" not in staged:
        return (" " + core.format(key="s.patient_key")
                + " CROSS JOIN LATERAL (SELECT cp.birth_year::bigint AS birth_year) p")
    sp = load.staging_table("patient", batch_id)
    if not unique_patients:
        sp = f"(SELECT DISTINCT ON (patient_key) patient_key, birth_year FROM {sp} ORDER BY patient_key, row_no)"
    return (f" LEFT JOIN {sp} sp ON sp.patient_key = s.patient_key "
            + core.format(key="(CASE WHEN sp.patient_key IS NULL THEN s.patient_key END)")
            + " CROSS JOIN LATERAL (SELECT coalesce(sp.birth_year, cp.birth_year::bigint) AS birth_year) p")


def _joins(entity: str, batch_id: int, staged: set[str], unique_patients: bool = True) -> tuple[list[str], str]:
    """CTEs and joins that the rules of an entity need (patients' birth years, known resources)."""
    ctes: list[str] = []
    joins = ""
    if entity in RESOURCE_CHECKED:
        ctes.append(_known_resources_cte(batch_id, staged))
        joins += " LEFT JOIN known r ON r.resource_id = s.resource_id"
    if entity == "appointment":
        joins += _patient_joins(batch_id, staged, unique_patients)
    return ctes, joins


def quarantine_sql(entity: load.Entity, batch_id: int, staged: set[str], unique_patients: bool = True) -> str:
    rules = rules_for(entity.name)
    ctes, joins = _joins(entity.name, batch_id, staged, unique_patients)
    checks = ", ".join(f"CASE WHEN {r.fails} THEN '{r.name}' END" for r in rules)
    record_id = entity.key[0] if len(entity.key) == 1 else f"concat_ws('|', {', '.join('s.' + k for k in entity.key)})"
    record_id = f"s.{record_id}" if len(entity.key) == 1 else record_id
    problems = "s.row_problems" if "row_problems" in entity.column_names else "NULL"
    with_clause = ("WITH " + ", ".join(ctes)) if ctes else ""
    return f"""
INSERT INTO quarantine.record
    (load_batch_id, source, as_of, run_id, entity, record_id, row_no, failed_expectations, problems, record)
{with_clause}
SELECT %(batch_id)s, %(source)s, %(as_of)s, %(run_id)s, '{entity.name}', {record_id}, s.row_no, f.failed,
       {problems}, to_jsonb(s) - 'load_batch_id'
FROM {load.staging_table(entity, batch_id)} s{joins}
CROSS JOIN LATERAL (SELECT array_remove(ARRAY[{checks}]::text[], NULL) AS failed) f
WHERE cardinality(f.failed) > 0
"""


def duplicate_keys(cursor: Any, entity: load.Entity, batch_id: int) -> tuple[int, list[str]]:
    """Number of key values that occur more than once in the batch, and a few examples."""
    key = ", ".join(entity.key)
    not_null = " AND ".join(f"{k} IS NOT NULL" for k in entity.key)
    cursor.execute(
        f"SELECT concat_ws('|', {key}) FROM {load.staging_table(entity, batch_id)} WHERE {not_null} "
        f"GROUP BY {key} HAVING count(*) > 1"
    )
    rows = [r[0] for r in cursor.fetchall()]
    return len(rows), rows[:5]


# --------------------------------------------------------------------------------------------------
# GX


@dataclass
class GxOutcome:
    success: bool
    docs: str | None
    mode: dict[str, str] = field(default_factory=dict)
    unexpected: dict[str, dict[str, int]] = field(default_factory=dict)
    volume_ok: bool | None = None
    volume_range: tuple[int, int] | None = None
    unique_failed: list[str] = field(default_factory=list)


def preload_gx() -> threading.Thread:
    """Import Great Expectations in a background thread and return it.

    Importing GX costs 2-4 s of Python on these machines; :func:`pipelines.ingest.validate_batch`
    starts it before the set-based SQL rules, which keep PostgreSQL (not Python) busy, so the two
    overlap. A failed import is reported again by the real import in :func:`run_gx`.
    """
    def work() -> None:
        os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
        try:
            import great_expectations  # noqa: F401
            from great_expectations.data_context.types import base  # noqa: F401
        except Exception as exc:  # pragma: no cover - run_gx imports it again and raises there
            log.debug("validate: background import of Great Expectations failed: %s", exc)

    thread = threading.Thread(target=work, name="clinicflow-gx-import", daemon=True)
    thread.start()
    return thread


def gx_context(docs_dir: Path) -> Any:
    """An ephemeral GX context (no analytics, no progress bars) whose Data Docs site is ``docs_dir``."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
    import great_expectations as gx
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    config = DataContextConfig(
        store_backend_defaults=InMemoryStoreBackendDefaults(),
        analytics_enabled=False,
        progress_bars=ProgressBarsConfig(globally=False, metric_calculations=False),
        data_docs_sites={
            "clinicflow": {
                "class_name": "SiteBuilder",
                "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(docs_dir)},
                "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
            }
        },
    )
    return gx.get_context(project_config=config, mode="ephemeral")


def _check_exceptions(result: Any) -> None:
    for item in result.results:
        info = item.exception_info or {}
        if info.get("raised_exception"):
            raise ClinicFlowError(
                f"Great Expectations could not evaluate {item.expectation_config.type} "
                f"{item.expectation_config.kwargs}: {info.get('exception_message')}"
            )


def _sample_query(entity: load.Entity, batch_id: int, staged: set[str], total: int, sample_rows: int) -> str:
    ctes, joins = _joins(entity.name, batch_id, staged)
    table = load.staging_table(entity, batch_id)
    sample = ""
    if total > sample_rows:
        percent = min(100.0, 100.0 * sample_rows / total)
        sample = f" TABLESAMPLE BERNOULLI ({percent:.6f}) REPEATABLE ({int(batch_id) % 2_000_000_000})"
    extra = ""
    if entity.name == "appointment":
        extra = ", (extract(year FROM s.start_at)::bigint - p.birth_year) AS age_years"
    columns = ", ".join(f"s.{c}" for c in entity.column_names if c not in ("raw_status", "flags"))
    with_clause = ("WITH " + ", ".join(ctes)) if ctes else ""
    return f"{with_clause} SELECT s.row_no, {columns}{extra} FROM {table} s{sample}{joins}"


def _read_sample(engine: Any, query: str, params: dict[str, Any], entity: load.Entity) -> Any:
    """The rows GX validates, read with ``COPY (query) TO STDOUT`` and parsed by pyarrow (several
    times faster than fetching 50,000 row tuples through the DB-API); text stays text, NULL stays
    NULL and an empty string stays an empty string."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    kinds = {**dict(entity.columns), "row_no": load.INT, "age_years": load.INT}
    types = {load.TEXT: pa.string(), load.TIME: pa.string(), load.JSON: pa.string(), load.INT: pa.float64(),
             load.TS: pa.timestamp("us"), load.DATE: pa.date32(), load.BOOL: pa.bool_()}
    raw = engine.raw_connection()
    try:
        with raw.driver_connection.cursor() as cursor:
            sql = cursor.mogrify(query, params).decode()
            buffer = io.BytesIO()
            cursor.copy_expert(f"COPY ({sql}) TO STDOUT WITH (FORMAT csv, HEADER true)", buffer)
        raw.commit()
    finally:
        raw.close()
    buffer.seek(0)
    header = buffer.readline().decode().rstrip("\r\n").split(",")  # column names: plain identifiers
    buffer.seek(0)
    table = pacsv.read_csv(buffer, convert_options=pacsv.ConvertOptions(
        column_types={name: types[kinds.get(name, load.TEXT)] for name in header},
        null_values=[""], strings_can_be_null=True, quoted_strings_can_be_null=False,  # PostgreSQL's CSV
        true_values=["t"], false_values=["f"]))
    return table.to_pandas()


def run_gx(*, engine: Any, url: str, batch_id: int, source: str, staged: dict[str, int], limits: Limits,
           known_resources: list[str], volume_range: tuple[int, int] | None, docs_dir: Path,
           sql_params: dict[str, Any]) -> GxOutcome:
    """Validate the batch with GX (see the module docstring) and build its Data Docs."""
    import great_expectations as gx
    import pandas as pd

    E = gx.expectations
    context = gx_context(docs_dir)
    frames = context.data_sources.add_pandas("staged_rows")
    outcome = GxOutcome(success=True, docs=None)
    staged_names = set(staged)
    for entity in load.ENTITIES:
        rules = rules_for(entity.name)
        if entity.name not in staged or not rules:
            continue
        total = staged[entity.name]
        query = _sample_query(entity, batch_id, staged_names, total, limits.gx_sample_rows)
        frame = _read_sample(engine, query, sql_params, entity)
        for column, kind in [*entity.columns, ("age_years", load.INT)]:
            if column not in frame.columns:
                continue
            if kind == load.TS:  # nanoseconds: GX compares datetime64[ns] vectorised, other units row by row
                series = frame[column]
                frame[column] = (series if pd.api.types.is_datetime64_dtype(series.dtype)
                                 else pd.to_datetime(series)).astype("datetime64[ns]")
            elif kind == load.INT:
                frame[column] = pd.to_numeric(frame[column], errors="coerce").astype(float)
        outcome.mode[entity.name] = "all rows" if total <= limits.gx_sample_rows else f"sample of {len(frame)}"
        suite = context.suites.add(gx.ExpectationSuite(name=f"{source}.{entity.name}"))
        for rule in rules:
            expectation = rule.expectation(E, limits, known_resources)
            expectation.meta = {"rule": rule.name, "description": rule.description}
            suite.add_expectation(expectation)
        if len(entity.key) == 1:
            unique = E.ExpectColumnValuesToBeUnique(column=entity.key[0])
        else:
            unique = E.ExpectCompoundColumnsToBeUnique(column_list=list(entity.key))
        unique.meta = {"rule": "key_unique", "critical": True}
        suite.add_expectation(unique)
        asset = frames.add_dataframe_asset(entity.name)
        definition = context.validation_definitions.add(gx.ValidationDefinition(
            name=f"{source}.{entity.name}.batch_{batch_id}", data=asset.add_batch_definition_whole_dataframe("batch"),
            suite=suite,
        ))
        result = definition.run(batch_parameters={"dataframe": frame}, result_format={"result_format": "SUMMARY"})
        _check_exceptions(result)
        outcome.success &= bool(result.success)
        counts: dict[str, int] = {}
        for item in result.results:
            rule = (item.expectation_config.meta or {}).get("rule")
            if rule == "key_unique":
                if not item.success:
                    outcome.unique_failed.append(entity.name)
                continue
            counts[rule] = int((item.result or {}).get("unexpected_count") or 0)
        outcome.unexpected[entity.name] = counts

    if "appointment" in staged:
        outcome.volume_ok, outcome.volume_range = _run_gx_table_suite(
            context, url, batch_id, source, volume_range,
        )
    context.build_data_docs()
    index = docs_dir / "index.html"
    outcome.docs = str(index) if index.exists() else None
    return outcome


def _run_gx_table_suite(context: Any, url: str, batch_id: int, source: str,
                        volume_range: tuple[int, int] | None) -> tuple[bool | None, tuple[int, int] | None]:
    """Row volume and staged columns, evaluated by GX inside PostgreSQL on the whole partition."""
    import great_expectations as gx

    E = gx.expectations
    # add_sql, not add_postgres: the latter insists on a host, and the embedded PostgreSQL listens on a
    # Unix socket only (postgresql+psycopg2://user@/db?host=/path).
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="You are using a generic SQLDatasource")
        datasource = context.data_sources.add_sql("warehouse", connection_string=url)
    asset = datasource.add_table_asset("appointment", table_name=f"appointment_b{int(batch_id)}",
                                       schema_name="staging")
    suite = context.suites.add(gx.ExpectationSuite(name=f"{source}.appointment_batch"))
    columns = E.ExpectTableColumnsToMatchOrderedList(
        column_list=["load_batch_id", "row_no", *load.APPOINTMENT.column_names])
    columns.meta = {"rule": "staged_columns"}
    suite.add_expectation(columns)
    if volume_range is not None:
        volume = E.ExpectTableRowCountToBeBetween(min_value=volume_range[0], max_value=volume_range[1])
        volume.meta = {"rule": "volume_vs_previous_loads"}
        suite.add_expectation(volume)
    definition = context.validation_definitions.add(gx.ValidationDefinition(
        name=f"{source}.appointment_batch.batch_{batch_id}", data=asset.add_batch_definition_whole_table("batch"),
        suite=suite,
    ))
    try:
        result = definition.run()
    finally:
        _close_engines(datasource)
    _check_exceptions(result)
    volume_ok = None
    for item in result.results:
        rule = (item.expectation_config.meta or {}).get("rule")
        if rule == "staged_columns" and not item.success:
            raise ClinicFlowError(
                "staging.appointment does not have the columns this version of ClinicFlow writes: "
                "run `clinicflow db upgrade`"
            )
        if rule == "volume_vs_previous_loads":
            volume_ok = bool(item.success)
    return volume_ok, volume_range


def _close_engines(datasource: Any) -> None:
    """Close the connections GX pooled for ``datasource``: its engines live as long as the context's
    reference cycles, and a nightly worker (or a test session) would otherwise keep a few idle
    connections per validated batch until PostgreSQL refuses new clients."""
    engines = [datasource.get_engine()]
    execution = getattr(datasource, "_execution_engine", None)
    if execution is not None and getattr(execution, "engine", None) is not None:
        engines.append(execution.engine)
    for engine in engines:
        with contextlib.suppress(Exception):
            engine.dispose()


def volume_range(previous: list[int], limits: Limits) -> tuple[int, int] | None:
    """Expected appointment rows of a batch from the previous comparable loads (None: no history)."""
    if not previous:
        return None
    typical = median(previous[-5:])
    return int(typical * limits.volume_min_ratio), max(1, int(typical * limits.volume_max_ratio) + 1)


def prune_data_docs(folder: Path, keep: int) -> list[Path]:
    """Keep the Data Docs of the ``keep`` most recent batches of a source; return the folders removed."""
    import shutil

    batches = sorted((p for p in folder.glob("batch_*") if p.is_dir() and p.name[6:].isdigit()),
                     key=lambda p: int(p.name[6:]))
    removed = batches[:-keep] if keep > 0 else []
    for path in removed:
        shutil.rmtree(path, ignore_errors=True)
    return removed
