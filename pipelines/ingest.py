"""The ingest stages: extract a source into staging, validate the batch, load it into core.

Each stage function runs without Airflow (``clinicflow ingest``, tests) and is what a task of the
``clinicflow_ingest`` (and ``nightly``) DAG calls; they pass a load batch id (a key in ``ops.load_batch``), never data:

* :func:`stage_source` (source name, as-of) → ``{"batch_id": …}``: extract with the source's
  connector, pseudonymise, mask for the as-of date, COPY into the batch's staging partitions;
* :func:`validate_batch` (batch id) → summary: row rules into the quarantine, critical checks, GX suite
  and Data Docs;
* :func:`load_batch` (batch id) → summary: ONE transaction of upserts into core, reconciliation
  deletes and the watermarks;
* :func:`ingest` does the three in a row.

A source that cannot be reached raises :class:`SourceUnavailableError` before anything is written
(the attempt is recorded as a failed batch in ``ops.load_batch``); the watermark is untouched, so
the next run reads everything since the last successful load.
"""

from __future__ import annotations

import importlib
import json
import logging
from datetime import UTC, date, datetime
from typing import Any

from clinicflow import db
from clinicflow.errors import ClinicFlowError, ConfigError, DataQualityError, SourceUnavailableError
from clinicflow.logs import timed
from clinicflow.settings import Settings, SourceConfig, get_settings
from pipelines import load, validation
from pipelines.sources.base import Connector, Extract, ExtractRequest

log = logging.getLogger(__name__)

MAX_PROBLEMS_LOGGED = 20
MAX_PROBLEMS_KEPT = 200


def _as_date(value: date | str) -> date:
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    try:
        return date.fromisoformat(str(value))
    except ValueError:
        raise ConfigError(f"as-of date {value!r} is not a date (YYYY-MM-DD)") from None


def default_run_id() -> str:
    return "cli-" + datetime.now(UTC).strftime("%Y%m%dT%H%M%S")


def list_sources(settings: Settings | None = None) -> list[str]:
    """Names of the configured sources (``CLINICFLOW_SOURCES``), in configuration order."""
    settings = settings or get_settings()
    return [source.name for source in settings.sources]


def connector_for(source: SourceConfig) -> Connector:
    """The connector of a source: module ``pipelines.sources.<kind>`` (see pipelines/sources/base.py)."""
    module = importlib.import_module(f"pipelines.sources.{source.kind}")
    factory = getattr(module, "create_connector", None)
    if factory is not None:
        return factory(source)
    if hasattr(module, "extract"):
        return module  # type: ignore[return-value]
    raise ConfigError(f"source {source.name}: no connector for kind {source.kind!r} in {module.__name__}")


# --------------------------------------------------------------------------------------------------
# ops.load_batch bookkeeping


def read_watermarks(source: str) -> dict[str, datetime | None]:
    import sqlalchemy as sa

    with db.connect() as conn:
        rows = conn.execute(sa.text("SELECT stream, value FROM ops.watermark WHERE source = :s"), {"s": source}).all()
    return {stream: value for stream, value in rows}


def _new_batch(source: str, as_of: date, run_id: str, status: str = "running", message: str | None = None) -> int:
    import sqlalchemy as sa

    with db.connect() as conn:
        return int(conn.execute(sa.text(
            "INSERT INTO ops.load_batch (source, as_of, status, run_id, message, finished_at) "
            "VALUES (:source, :as_of, :status, :run_id, :message, "
            "        CASE WHEN :status = 'failed' THEN now() END) RETURNING load_batch_id"
        ), {"source": source, "as_of": as_of, "status": status, "run_id": run_id, "message": message}).scalar_one())


def _fail_batch(batch_id: int, stage: str, message: str) -> None:
    import sqlalchemy as sa

    with db.connect() as conn:
        conn.execute(sa.text(
            "UPDATE ops.load_batch SET status = 'failed', finished_at = now(), message = :message, "
            "details = details || jsonb_build_object('failed_stage', CAST(:stage AS text)) "
            "WHERE load_batch_id = :id"
        ), {"id": batch_id, "message": message[:4000], "stage": stage})


def _batch(batch_id: int) -> dict[str, Any]:
    import sqlalchemy as sa

    with db.connect() as conn:
        row = conn.execute(sa.text("SELECT * FROM ops.load_batch WHERE load_batch_id = :id"),
                           {"id": int(batch_id)}).mappings().first()
    if row is None:
        raise ClinicFlowError(f"load batch {batch_id} does not exist (see ops.load_batch)")
    return dict(row)


def _source_config(name: str, settings: Settings) -> SourceConfig:
    return settings.source(name)


# --------------------------------------------------------------------------------------------------
# stage 1: extract → staging


def stage_source(source_name: str, as_of: date | str, run_id: str | None = None) -> dict[str, Any]:
    """Extract a source for an as-of date into a new load batch's staging partitions."""
    settings = get_settings()
    source = _source_config(source_name, settings)
    secret = settings.require_pseudonym_secret()
    as_of = _as_date(as_of)
    run_id = run_id or default_run_id()
    watermarks = read_watermarks(source.name)
    request = ExtractRequest(source=source, as_of=as_of, watermarks=dict(watermarks), timezone=settings.timezone)
    with timed(f"ingest {source.name}: extract ({source.kind}, as of {as_of})", log) as timer:
        try:
            extract = connector_for(source).extract(request)
        except (SourceUnavailableError, DataQualityError, ConfigError) as exc:
            _new_batch(source.name, as_of, run_id, status="failed", message=f"extract: {exc}")
            raise
        timer.rows = len(extract.appointments)
    _log_problems(source.name, extract)
    zone = str(source.options.get("timezone", settings.timezone))
    try:
        with timed(f"ingest {source.name}: pseudonymise, mask as of {as_of}, check contract", log) as timer:
            prepared = load.prepare(extract, source=source.name, as_of=as_of, secret=secret, zone=zone)
            timer.rows = len(extract.appointments)
    except DataQualityError as exc:
        _new_batch(source.name, as_of, run_id, status="failed", message=f"contract: {exc}")
        raise
    meta = {
        "full_snapshot": bool(extract.full_snapshot),
        "reconcile": extract.reconcile_window if extract.existing_ids is not None else None,
        "watermarks": {k: (v.isoformat() if hasattr(v, "isoformat") else str(v))
                       for k, v in extract.watermarks.items() if v is not None},
    }
    del extract
    batch_id = _new_batch(source.name, as_of, run_id)
    mode = "incremental" if any(v is not None for v in watermarks.values()) else "full"
    try:
        with timed(f"ingest {source.name}: COPY into staging (batch {batch_id})", log) as timer:
            with db.raw_connection() as raw:
                counts = load.copy_to_staging(raw, batch_id, prepared)
                details = {
                    "frames": counts, "masked": prepared.masked, "mode": mode,
                    "problems": prepared.problems[:MAX_PROBLEMS_KEPT], "problem_count": len(prepared.problems),
                }
                window = meta["reconcile"] or (None, None)
                with raw.cursor() as cursor:
                    cursor.execute(
                        "UPDATE ops.load_batch SET status = 'staged', staged_at = now(), rows_extracted = %s, "
                        "full_snapshot = %s, reconcile_from = %s, reconcile_to = %s, extract_watermarks = %s, "
                        "details = details || %s WHERE load_batch_id = %s",
                        (counts.get("appointment", 0), meta["full_snapshot"], window[0], window[1],
                         json.dumps(meta["watermarks"]), json.dumps(details), batch_id),
                    )
            timer.rows = sum(counts.values())
    except Exception as exc:
        _fail_batch(batch_id, "stage", f"staging failed: {exc}")
        raise
    summary = {"batch_id": batch_id, "source": source.name, "as_of": as_of.isoformat(), "rows": counts,
               "masked": prepared.masked, "problems": len(prepared.problems)}
    log.info("ingest %s: staged batch %d: %s", source.name, batch_id, counts)
    return summary


def _log_problems(source: str, extract: Extract) -> None:
    for problem in extract.problems[:MAX_PROBLEMS_LOGGED]:
        log.warning("ingest %s: connector reports: %s", source, problem)
    if len(extract.problems) > MAX_PROBLEMS_LOGGED:
        log.warning("ingest %s: … and %d more problem(s) (kept in ops.load_batch.details)", source,
                    len(extract.problems) - MAX_PROBLEMS_LOGGED)


# --------------------------------------------------------------------------------------------------
# stage 2: validation


def _staged_entities(batch: dict[str, Any]) -> dict[str, int]:
    return {name: int(rows) for name, rows in (batch["details"].get("frames") or {}).items()}


def _previous_volumes(source: str, batch_id: int, mode: str) -> list[int]:
    import sqlalchemy as sa

    with db.connect() as conn:
        rows = conn.execute(sa.text(
            "SELECT rows_extracted FROM ops.load_batch WHERE source = :s AND status = 'loaded' "
            "AND load_batch_id < :id AND details->>'mode' = :mode AND rows_extracted IS NOT NULL "
            "ORDER BY load_batch_id DESC LIMIT 5"
        ), {"s": source, "id": batch_id, "mode": mode}).scalars().all()
    return list(reversed([int(r) for r in rows]))


def validate_batch(batch_id: int) -> dict[str, Any]:
    """Quarantine failing rows of a staged batch, run the critical checks and the GX suite."""
    settings = get_settings()
    batch = _batch(batch_id)
    source_name, as_of = batch["source"], batch["as_of"]
    if batch["status"] == "loaded":
        log.info("validate: batch %d is already loaded; nothing to do", batch_id)
        return dict(batch["details"].get("validation") or {}, batch_id=batch_id, source=source_name)
    if batch["status"] not in ("staged", "validated") and not (
        batch["status"] == "failed" and batch["details"].get("failed_stage") in ("validate", "load")
    ):
        raise ClinicFlowError(
            f"load batch {batch_id} of {source_name} is {batch['status']!r} and cannot be validated "
            f"({batch['message'] or 'it was never staged'}); run `clinicflow ingest --source {source_name}` again"
        )
    source = _source_config(source_name, settings)
    limits = validation.Limits.from_options(as_of, dict(source.options))
    staged = _staged_entities(batch)
    params = {"batch_id": batch_id, "source": source_name, "as_of": as_of, "run_id": batch["run_id"],
              "start_min": limits.start_min, "start_max": limits.start_max,
              "birth_year_min": limits.birth_year_min, "birth_year_max": limits.birth_year_max}
    validation.preload_gx()  # 2-4 s of Python imports, overlapped with the SQL rules below
    try:
        with timed(f"validate {source_name}: row rules and quarantine (batch {batch_id})", log) as timer:
            duplicates, quarantined, per_rule, known = _quarantine(batch_id, staged, params)
            timer.rows = sum(staged.values())
        previous = _previous_volumes(source_name, batch_id, batch["details"].get("mode", "full"))
        expected = validation.volume_range(previous, limits)
        docs_dir = settings.home / "gx" / source_name / f"batch_{batch_id}"
        with timed(f"validate {source_name}: Great Expectations suite and Data Docs", log):
            outcome = validation.run_gx(
                engine=db.get_engine(), url=db.url_for("warehouse").render_as_string(hide_password=False),
                batch_id=batch_id, source=source_name, staged=staged, limits=limits, known_resources=known,
                volume_range=expected, docs_dir=docs_dir, sql_params=params,
            )
        log.info("validate %s: GX Data Docs of batch %d: %s", source_name, batch_id, outcome.docs)
        validation.prune_data_docs(docs_dir.parent, keep=limits.data_docs_keep)
        consistent = _compare(outcome, per_rule, staged, limits)
        summary = {
            "batch_id": batch_id, "source": source_name, "as_of": as_of.isoformat(), "rows": staged,
            "quarantined": quarantined, "failed_rules": per_rule, "gx_success": outcome.success,
            "gx_mode": outcome.mode, "gx_unexpected": outcome.unexpected, "gx_consistent": consistent,
            "volume_expected": list(expected) if expected else None, "volume_ok": outcome.volume_ok,
            "data_docs": outcome.docs,
        }
        _raise_critical(source_name, batch_id, staged, duplicates, quarantined, per_rule, outcome, limits)
    except ClinicFlowError as exc:
        _fail_batch(batch_id, "validate", f"validation: {exc}")
        raise
    except Exception as exc:
        _fail_batch(batch_id, "validate", f"validation crashed: {type(exc).__name__}: {exc}")
        raise
    import sqlalchemy as sa

    with db.connect() as conn:
        conn.execute(sa.text(
            "UPDATE ops.load_batch SET status = 'validated', validated_at = now(), message = NULL, "
            "rows_quarantined = :q, data_docs = :docs, details = details || jsonb_build_object('validation', "
            "CAST(:summary AS jsonb)) WHERE load_batch_id = :id"
        ), {"id": batch_id, "q": sum(quarantined.values()), "docs": outcome.docs,
            "summary": json.dumps(summary, default=str)})
    if any(quarantined.values()):
        log.warning("validate %s: quarantined %s (rules: %s); see quarantine.record where load_batch_id = %d",
                    source_name, quarantined, per_rule, batch_id)
    return summary


def _quarantine(batch_id: int, staged: dict[str, int], params: dict[str, Any]):
    """Duplicate keys per entity, then every failing row into quarantine.record (one transaction)."""
    names = set(staged)
    duplicates: dict[str, tuple[int, list[str]]] = {}
    quarantined: dict[str, int] = {}
    per_rule: dict[str, dict[str, int]] = {}
    with db.raw_connection() as raw, raw.cursor() as cursor:
        cursor.execute("SELECT set_config('work_mem', %s, true)", (load.WORK_MEM,))  # hashes of 1M keys
        cursor.execute("DELETE FROM quarantine.record WHERE load_batch_id = %s", (batch_id,))
        for entity in load.ENTITIES:
            if entity.name not in names or entity is load.EXISTING:
                continue
            count, examples = validation.duplicate_keys(cursor, entity, batch_id)
            if count:
                duplicates[entity.name] = (count, examples)
            if not validation.rules_for(entity.name):
                continue
            cursor.execute(validation.quarantine_sql(entity, batch_id, names,
                                                     unique_patients="patient" not in duplicates), params)
            quarantined[entity.name] = cursor.rowcount
        cursor.execute(
            "SELECT entity, rule, count(*) FROM quarantine.record, unnest(failed_expectations) AS rule "
            "WHERE load_batch_id = %s GROUP BY 1, 2 ORDER BY 1, 2", (batch_id,))
        for entity_name, rule, count in cursor.fetchall():
            per_rule.setdefault(entity_name, {})[rule] = int(count)
        ctes = validation._known_resources_cte(batch_id, names)
        cursor.execute(f"WITH {ctes} SELECT resource_id FROM known ORDER BY 1", params)
        known = [r[0] for r in cursor.fetchall()]
    return duplicates, quarantined, per_rule, known


def _compare(outcome: validation.GxOutcome, per_rule: dict[str, dict[str, int]], staged: dict[str, int],
             limits: validation.Limits) -> bool:
    """When GX saw every row, its unexpected counts must equal the SQL rule counts."""
    consistent = True
    for entity, counts in outcome.unexpected.items():
        if staged.get(entity, 0) > limits.gx_sample_rows:
            continue
        for rule, gx_count in counts.items():
            sql_count = per_rule.get(entity, {}).get(rule, 0)
            if gx_count != sql_count:
                consistent = False
                log.error("validate: GX and SQL disagree on %s.%s: GX %d, SQL %d rows", entity, rule, gx_count,
                          sql_count)
    return consistent


def _raise_critical(source: str, batch_id: int, staged: dict[str, int], duplicates: dict[str, tuple[int, list[str]]],
                    quarantined: dict[str, int], per_rule: dict[str, dict[str, int]],
                    outcome: validation.GxOutcome, limits: validation.Limits) -> None:
    docs = f" GX Data Docs: {outcome.docs}." if outcome.docs else ""
    problems: list[str] = []
    for entity, (count, examples) in duplicates.items():
        key = "+".join(load.BY_NAME[entity].key)
        problems.append(
            f"{count} duplicate {entity} {key} value(s) in one extract (e.g. {examples}): the source must give "
            f"each {entity} once; fix the export or the connector"
        )
    for entity in outcome.unique_failed:
        if entity not in duplicates:
            problems.append(f"GX found duplicate {entity} keys")
    total = staged.get("appointment", 0)
    bad = quarantined.get("appointment", 0)
    if total and bad / total > limits.max_quarantine_fraction:
        problems.append(
            f"{bad} of {total} appointments ({bad / total:.0%}) failed validation "
            f"({per_rule.get('appointment', {})}), more than max_quarantine_fraction="
            f"{limits.max_quarantine_fraction:g}: the extract looks broken (wrong format, options or time zone?). "
            f"Inspect quarantine.record where load_batch_id = {batch_id}; if the rows are right, "
            f"raise the source option max_quarantine_fraction"
        )
    if outcome.volume_ok is False:
        message = (f"{total} appointments, outside the expected range {outcome.volume_range} from previous loads "
                   "(source options volume_min_ratio/volume_max_ratio)")
        if limits.volume_action == "fail":
            problems.append(message + "; check the source, or set volume_action to 'warn'")
        else:
            log.warning("validate %s: batch %d has %s", source, batch_id, message)
    if problems:
        raise DataQualityError(f"{source}: load batch {batch_id} rejected, nothing loaded: "
                               + "; ".join(problems) + "." + docs)


# --------------------------------------------------------------------------------------------------
# stage 3: load into core


def load_batch(batch_id: int) -> dict[str, Any]:
    """Upsert a validated batch into core in one transaction; save the watermarks with it."""
    batch = _batch(batch_id)
    source, as_of = batch["source"], batch["as_of"]
    if batch["status"] == "loaded":
        log.info("load: batch %d of %s is already loaded; nothing to do", batch_id, source)
        return dict(batch["details"].get("load") or {}, batch_id=batch_id, source=source)
    retry = batch["status"] == "failed" and batch["details"].get("failed_stage") == "load"
    if batch["status"] != "validated" and not retry:
        raise ClinicFlowError(
            f"load batch {batch_id} of {source} is {batch['status']!r}, not validated "
            f"({batch['message'] or 'validate it first'}); nothing loaded"
        )
    staged = _staged_entities(batch)
    reconcile = (batch["reconcile_from"], batch["reconcile_to"]) if batch["reconcile_from"] else None
    watermarks = load.capped_watermarks(batch["extract_watermarks"] or {}, as_of)
    try:
        with timed(f"load {source}: upsert batch {batch_id} into core (one transaction)", log) as timer:
            with db.raw_connection() as raw, raw.cursor() as cursor:
                cursor.execute(
                    "SELECT max(load_batch_id) FROM ops.load_batch WHERE source = %s AND status = 'loaded'", (source,))
                latest = cursor.fetchone()[0]
                if latest is not None and latest > batch_id:
                    raise ClinicFlowError(
                        f"load batch {batch_id} of {source} is older than batch {latest}, which is already loaded: "
                        "loading it would go back in time; run `clinicflow ingest` again instead"
                    )
                written = load.upsert_core(
                    cursor, batch_id=batch_id, source=source, as_of=as_of, staged=staged,
                    full_snapshot=batch["full_snapshot"], reconcile=reconcile, watermarks=watermarks,
                )
                counts = written.counts
                upserted = sum(v["inserted"] + v["updated"] for k, v in counts.items() if isinstance(v, dict))
                summary = {"batch_id": batch_id, "source": source, "as_of": as_of.isoformat(), "core": counts,
                           "paths": written.paths, "watermarks": {k: v.isoformat() for k, v in watermarks.items()}}
                cursor.execute(
                    "UPDATE ops.load_batch SET status = 'loaded', loaded_at = now(), finished_at = now(), "
                    "message = NULL, rows_upserted = %s, rows_deleted = %s, "
                    "details = details || jsonb_build_object('load', %s::jsonb) WHERE load_batch_id = %s",
                    (upserted, counts["deleted"], json.dumps(summary), batch_id),
                )
            timer.rows = sum(staged.get(name, 0) for name in staged if name != "appointment_existing")
    except Exception as exc:
        _fail_batch(batch_id, "load", f"load: {exc}")
        raise
    _drop_loaded_staging(source, batch_id)
    log.info("load %s: batch %d loaded: %s", source, batch_id, counts)
    return summary


def _drop_loaded_staging(source: str, batch_id: int) -> None:
    """Staging of this batch and of older batches of the source is no longer needed."""
    try:
        with db.raw_connection() as raw, raw.cursor() as cursor:
            cursor.execute("SELECT load_batch_id FROM ops.load_batch WHERE source = %s AND load_batch_id <= %s "
                           "AND details ? 'frames' AND NOT coalesce((details->>'staging_dropped')::boolean, false)",
                           (source, batch_id))
            ids = [r[0] for r in cursor.fetchall()]
            load.drop_staging(cursor, ids)
            cursor.execute("UPDATE ops.load_batch SET details = details || '{\"staging_dropped\": true}' "
                           "WHERE load_batch_id = ANY(%s)", (ids,))
    except Exception as exc:  # the load is committed; a leftover partition is harmless
        log.warning("load %s: could not drop staging of loaded batches: %s", source, exc)


# --------------------------------------------------------------------------------------------------


def ingest(source_name: str, as_of: date | str, run_id: str | None = None) -> dict[str, Any]:
    """Stage, validate and load one source for an as-of date (``clinicflow ingest``)."""
    with timed(f"ingest {source_name}: extract → staging → validation → core", log) as timer:
        staged = stage_source(source_name, as_of, run_id=run_id)
        validated = validate_batch(staged["batch_id"])
        loaded = load_batch(staged["batch_id"])
        timer.rows = int(staged["rows"].get("appointment", 0))
    return {"batch_id": staged["batch_id"], "source": source_name, "as_of": staged["as_of"],
            "staged": staged["rows"], "masked": staged["masked"], "problems": staged["problems"],
            "quarantined": validated["quarantined"], "data_docs": validated["data_docs"], "core": loaded["core"],
            "seconds": round(timer.elapsed, 3)}
