"""Ingest benchmark: N generated appointments end to end into ``core``, against ``DataFrame.to_sql``.

    clinicflow bench ingest --appointments 1000000 [--repeat 3] [--source canonical]

1. Makes a deterministic source of N appointments, not timed: by default the generated Medialog
   database (``pipelines.sources.medialog_generator``, kept in ``<warehouse>_bench_medialog`` and
   reused by later runs with the same N), read by the real Medialog connector; with
   ``--source canonical`` a canonical CSV export (about N/5 patients, 300 resources, two years of
   history plus two weeks ahead, every canonical status).
2. Runs the real ingest into a fresh warehouse database (``<warehouse>_bench_ingest``): connector →
   pseudonymisation and as-of masking → COPY into staging → validation (SQL quarantine + GX suite on
   a sample, Data Docs) → one transaction into core. Reports each stage's seconds, rows/s and peak
   memory (RSS of this Python process above the start of the stage, sampled every 10 ms; the
   PostgreSQL server's memory is not included), and which write path each entity took.
   **staging → core** (validate + load) is the figure of the issue's target (50,000 appointments/s).
3. Re-runs the ingest for the same as-of date (nothing changed: a full source is read again, Medialog
   reads only what changed since its watermark; nothing is written).
4. Baseline, in the same run: ``DataFrame.to_sql`` of the same appointment rows (already prepared, so
   it measures only the write) into a new table of the same database.

With ``--repeat K`` the whole run (fresh database, ingest, re-run, baseline) is done K times and the
medians are reported next to each run's figures. The machine's load average is recorded before and
after each run: other processes on the machine slow every figure, the ratios much less.

The summary is printed and written to ``<CLINICFLOW_HOME>/bench/ingest-<timestamp>.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import secrets
import shutil
import tempfile
import threading
import time
from contextlib import contextmanager
from datetime import date
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

SOURCE = "bench_ingest"


class PeakMemory:
    """Peak resident memory of this process above the value at start, sampled in a thread."""

    def __init__(self, interval: float = 0.01) -> None:
        import psutil

        self.process = psutil.Process()
        self.interval = interval
        self.start = self.peak = self.process.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(self.interval)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.process.memory_info().rss)

    @property
    def mib(self) -> float:
        return (self.peak - self.start) / 2**20


@contextmanager
def measure(results: dict[str, Any], name: str, rows: int):
    with PeakMemory() as memory:
        started = time.perf_counter()
        yield
        seconds = time.perf_counter() - started
    results[name] = {"seconds": round(seconds, 3), "rows": rows, "rows_per_s": round(rows / seconds),
                     "peak_mib": round(memory.mib, 1)}
    log.info("bench %s: %d rows in %.2fs (%.0f rows/s), peak +%.0f MiB", name, rows, seconds, rows / seconds,
             memory.mib)


def generate_canonical(folder: Path, n: int, as_of: date, seed: int = 20261101) -> None:
    """A canonical CSV export (pipelines/sources/csv.py) of ``n`` appointments, written by pyarrow."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.csv as pacsv

    rng = np.random.default_rng(seed)
    patients = max(1, n // 5)
    resources = 300
    days = rng.integers(-730, 14, n)
    minutes = rng.integers(0, 32, n) * 20 + 8 * 60
    start = np.datetime64(as_of.isoformat(), "m") + days.astype("timedelta64[D]") + minutes.astype("timedelta64[m]")
    lead = rng.integers(0, 60, n).astype("timedelta64[D]") + rng.integers(0, 600, n).astype("timedelta64[m]")
    statuses = np.array(["booked", "fulfilled", "noshow", "arrived", "cancelled_by_patient", "cancelled_by_clinic",
                         "rescheduled"])
    status = statuses[rng.choice(len(statuses), n, p=[0.08, 0.62, 0.12, 0.03, 0.1, 0.03, 0.02])]
    past = days < 0
    status = np.where(past | np.isin(status, ["cancelled_by_patient", "cancelled_by_clinic", "rescheduled"]),
                      status, "booked")
    resource = rng.integers(0, resources, n)
    patient = rng.integers(0, patients, n)
    ids = np.arange(10_000_000, 10_000_000 + n)
    cancelled = np.isin(status, ["cancelled_by_patient", "cancelled_by_clinic"]).astype(int)
    table = pa.table({
        "appointment_id": pa.array(ids.astype(str)),
        "patient_source_id": pa.array(np.char.add("P", patient.astype(str))),
        "resource_id": pa.array(np.char.add("R", resource.astype(str))),
        "practitioner_id": pa.array(np.char.add("D", resource.astype(str))),
        "department_id": pa.array(np.char.add("DEP", (resource % 12).astype(str))),
        "branch_id": pa.array(np.char.add("B", (resource % 4).astype(str))),
        "service_id": pa.array(np.char.add("S", rng.integers(0, 40, n).astype(str))),
        "start_at": pa.array(start.astype("datetime64[us]")),
        "duration_min": pa.array(rng.choice([15, 20, 30], n)),
        "booked_at": pa.array((start - lead).astype("datetime64[us]")),
        "channel": pa.array(np.array(["phone", "web", "reception", "hub"])[rng.integers(0, 4, n)]),
        "confirmed": pa.array(rng.random(n) < 0.8),
        "reminder_sent": pa.array(rng.random(n) < 0.6),
        "rescheduled_from_id": pa.nulls(n, pa.string()),
        "raw_status": pa.array(np.char.add(np.char.add('{"STATUS": 0, "CANCELLED": ', cancelled.astype(str)), "}")),
        "status": pa.array(status),
        "status_changed_at": pa.nulls(n, pa.timestamp("us")),
        "source_updated_at": pa.array((start - lead).astype("datetime64[us]")),
    })
    pacsv.write_csv(table, folder / "appointments.csv")
    years = rng.integers(1935, 2020, patients)
    pacsv.write_csv(pa.table({
        "patient_source_id": pa.array(np.char.add("P", np.arange(patients).astype(str))),
        "sex": pa.array(np.where(rng.random(patients) < 0.6, "F", "M")),
        "birth_year": pa.array(years),
        "flags": pa.array(np.full(patients, "{}")),
    }), folder / "patients.csv")
    pacsv.write_csv(pa.table({
        "resource_id": pa.array([f"R{i}" for i in range(resources)]),
        "name": pa.array([f"Doctor {i}" for i in range(resources)]),
        "kind": pa.array(["practitioner"] * resources),
        "practitioner_id": pa.array([f"D{i}" for i in range(resources)]),
        "department_id": pa.array([f"DEP{i % 12}" for i in range(resources)]),
        "branch_id": pa.array([f"B{i % 4}" for i in range(resources)]),
        "no_overbook": pa.array([False] * resources),
        "archived": pa.array([False] * resources),
    }), folder / "resources.csv")


def _use_database(url: str, source: dict[str, Any]) -> None:
    """Point this process's settings at the benchmark database and source."""
    from clinicflow import db
    from clinicflow.settings import get_settings

    os.environ["CLINICFLOW_DATABASE_URL"] = url
    os.environ["CLINICFLOW_SOURCES"] = json.dumps([{"name": SOURCE, **source}])
    if not os.environ.get("CLINICFLOW_PSEUDONYM_SECRET") and get_settings().pseudonym_secret is None:
        os.environ["CLINICFLOW_PSEUDONYM_SECRET"] = secrets.token_urlsafe(24)
    get_settings.cache_clear()
    db.dispose_engines()


def prepare_source(kind: str, appointments: int, as_of: date, warehouse: Any, workdir: Path) -> dict[str, Any]:
    """Make the benchmark's source (not timed); return its CLINICFLOW_SOURCES entry (without name)."""
    if kind == "canonical":
        generate_canonical(workdir, appointments, as_of)
        return {"kind": "csv", "format": "canonical", "path": str(workdir),
                "options": {"start_past_days": 800, "start_future_days": 60}}
    from pipelines.sources import medialog_generator as gen

    url = warehouse.set(database=f"{warehouse.database}_bench_medialog")
    gen.ensure(url, appointments=appointments, seed=2026, today=as_of)
    return {"kind": "medialog", "url": url.render_as_string(hide_password=False),
            "options": gen.connector_options()}


def run(appointments: int, keep: bool = False, source: str = "medialog", write: bool = True) -> dict[str, Any]:
    import sqlalchemy as sa

    from clinicflow import db, migrations

    as_of = date.today()
    warehouse = db.url_for("warehouse")
    bench_url = warehouse.set(database=f"{warehouse.database}_bench_ingest")
    admin = sa.create_engine(warehouse.set(database="postgres"), isolation_level="AUTOCOMMIT",
                             poolclass=sa.pool.NullPool)
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{bench_url.database}" WITH (FORCE)'))
    workdir = Path(tempfile.mkdtemp(prefix="clinicflow-bench-"))
    results: dict[str, Any] = {"appointments": appointments, "as_of": as_of.isoformat(), "cpu_count": os.cpu_count(),
                               "source": source, "load_average_before": _load_average()}
    try:
        started = time.perf_counter()
        entry = prepare_source(source, appointments, as_of, warehouse, workdir)
        log.info("bench: %s source ready in %.1fs", source, time.perf_counter() - started)
        _use_database(bench_url.render_as_string(hide_password=False), entry)
        migrations.upgrade(bench_url)
        results["server"] = _server_info()
        results["stages"] = _ingest_stages(appointments, as_of)
        results["baseline"] = _to_sql_baseline(as_of)
        results["ratios"] = _ratios(results)
        results["load_average_after"] = _load_average()
        if write:
            results["written_to"] = _write(results)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        db.dispose_engines()
        if not keep:
            with admin.connect() as conn:
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{bench_url.database}" WITH (FORCE)'))
        admin.dispose()
    return results


def _ingest_stages(n: int, as_of: date) -> dict[str, Any]:
    from pipelines import ingest

    stages: dict[str, Any] = {}
    with measure(stages, "end_to_end", n):
        with measure(stages, "extract_and_stage", n):
            staged = ingest.stage_source(SOURCE, as_of, run_id="bench")
        with measure(stages, "validate", n):
            validated = ingest.validate_batch(staged["batch_id"])
        with measure(stages, "load_core", n):
            loaded = ingest.load_batch(staged["batch_id"])
    n = int(staged["rows"]["appointment"])  # what the connector returned (the generator's N is approximate)
    stages["staging_to_core"] = {
        "seconds": round(stages["validate"]["seconds"] + stages["load_core"]["seconds"], 3), "rows": n,
    }
    stages["core_counts"] = loaded["core"]
    stages["paths"] = loaded.get("paths", {})
    stages["quarantined"] = validated["quarantined"]
    stages["gx_mode"] = validated["gx_mode"]
    with measure(stages, "rerun_unchanged", n):
        again = ingest.ingest(SOURCE, as_of, run_id="bench-rerun")
    stages["rerun_core_counts"] = again["core"]
    for name in ("end_to_end", "extract_and_stage", "validate", "load_core", "staging_to_core", "rerun_unchanged"):
        rows = int(again["staged"].get("appointment", 0)) if name == "rerun_unchanged" else n
        stages[name]["rows"] = rows
        stages[name]["rows_per_s"] = round(rows / stages[name]["seconds"])
    return stages


def _to_sql_baseline(as_of: date) -> dict[str, Any]:
    """The same appointment rows, prepared exactly as the loader stages them, written with to_sql."""
    from clinicflow import db
    from clinicflow.settings import get_settings
    from pipelines import ingest, load

    settings = get_settings()
    source = settings.source(SOURCE)
    extract = ingest.connector_for(source).extract(
        __import__("pipelines.sources.base", fromlist=["ExtractRequest"]).ExtractRequest(
            source=source, as_of=as_of, timezone=settings.timezone))
    prepared = load.prepare(extract, source=SOURCE, as_of=as_of, secret=settings.require_pseudonym_secret(),
                            zone=settings.timezone)
    frame = prepared.frames["appointment"]
    del extract, prepared
    results: dict[str, Any] = {}
    engine = db.get_engine()
    n = len(frame)
    with measure(results, "to_sql", n):
        frame.to_sql("appointment_to_sql", engine, schema="staging", if_exists="replace", index=False,
                     chunksize=10_000)
    return results["to_sql"]


def _ratios(results: dict[str, Any]) -> dict[str, float]:
    base = results["baseline"]["rows_per_s"]
    stages = results["stages"]
    return {
        "end_to_end_vs_to_sql": round(stages["end_to_end"]["rows_per_s"] / base, 2),
        "staging_to_core_vs_to_sql": round(stages["staging_to_core"]["rows_per_s"] / base, 2),
        "load_core_vs_to_sql": round(stages["load_core"]["rows_per_s"] / base, 2),
    }


def _load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:  # pragma: no cover - not on this platform
        return None


def _server_info() -> dict[str, Any]:
    """The PostgreSQL version and the settings that shape load speed (for the record)."""
    from clinicflow import db

    names = ("shared_buffers", "max_wal_size", "wal_level", "synchronous_commit", "max_parallel_maintenance_workers",
             "lc_collate")
    with db.raw_connection() as raw, raw.cursor() as cursor:
        cursor.execute("SHOW server_version")
        info = {"server_version": cursor.fetchone()[0]}
        for name in names:
            cursor.execute(f"SHOW {name}")
            info[name] = cursor.fetchone()[0]
    return info


def _write(results: dict[str, Any]) -> str:
    from clinicflow.settings import get_settings

    out = get_settings().home / "bench"
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"ingest-{time.strftime('%Y%m%dT%H%M%S')}.json"
    path.write_text(json.dumps(results, indent=2, default=str))
    return str(path)


#: Figures of a run that --repeat summarises by their median.
_FIGURES = ("extract_and_stage", "validate", "load_core", "staging_to_core", "end_to_end", "rerun_unchanged")


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians over repeated runs of every stage's seconds, rows/s and peak memory, and of the ratios."""
    from statistics import median

    def med(values: list[float]) -> float:
        return round(median(values), 3)

    stages = {name: {key: med([r["stages"][name][key] for r in runs])
                     for key in ("seconds", "rows_per_s", "peak_mib") if key in runs[0]["stages"][name]}
              for name in _FIGURES}
    baseline = {key: med([r["baseline"][key] for r in runs]) for key in ("seconds", "rows_per_s", "peak_mib")}
    ratios = {key: med([r["ratios"][key] for r in runs]) for key in runs[0]["ratios"]}
    return {"runs": len(runs), "stages": stages, "baseline": baseline, "ratios": ratios}


def run_repeated(appointments: int, repeat: int, keep: bool = False, source: str = "medialog") -> dict[str, Any]:
    runs = [run(appointments, keep=keep and i == repeat - 1, source=source, write=False) for i in range(repeat)]
    results = dict(runs[-1], runs=runs, median=summarise(runs))
    results["written_to"] = _write(results)
    return results


TARGET_STAGING_TO_CORE = 50_000  # appointments/s on 2 cores (issue 3)


def print_report(results: dict[str, Any]) -> None:
    runs = results.get("runs") or [results]
    last = runs[-1]
    stages = last["stages"]
    print(f"\nIngest benchmark: {results['appointments']:,} appointments requested from the {results['source']} "
          f"source ({stages['core_counts']['appointment']['inserted']:,} loaded), as of "
          f"{results['as_of']}, {results['cpu_count']} CPU(s), PostgreSQL {last['server']['server_version']}")
    for i, r in enumerate(runs, 1):
        print(f"run {i}: load average before {r['load_average_before']}, after {r['load_average_after']}")
    figures = results["median"] if "median" in results else {"stages": stages, "baseline": last["baseline"],
                                                             "ratios": last["ratios"]}
    label = f"median of {len(runs)} runs" if len(runs) > 1 else "one run"
    print(f"\n{'stage (' + label + ')':<34}{'seconds':>9}{'rows/s':>11}{'peak MiB':>10}   "
          "(peak MiB: RSS of this Python process above the stage's start; the PostgreSQL server is separate)")
    names = {"extract_and_stage": "extract + stage (COPY)", "validate": "validate (SQL rules + GX)",
             "load_core": "load into core", "staging_to_core": "STAGING -> CORE (validate + load)",
             "end_to_end": "end to end", "rerun_unchanged": "re-run, nothing changed"}
    for name in _FIGURES:
        s = figures["stages"][name]
        peak = f"{s['peak_mib']:>10.0f}" if "peak_mib" in s else f"{'':>10}"
        print(f"{names[name]:<34}{s['seconds']:>9.2f}{int(s['rows_per_s']):>11,}{peak}")
    b = figures["baseline"]
    print(f"{'DataFrame.to_sql (same rows)':<34}{b['seconds']:>9.2f}{int(b['rows_per_s']):>11,}{b['peak_mib']:>10.0f}")
    ratios = figures["ratios"]
    print("\nagainst DataFrame.to_sql measured in the same run (rows/s ratio): "
          f"staging -> core {ratios['staging_to_core_vs_to_sql']}x, load {ratios['load_core_vs_to_sql']}x, "
          f"end to end {ratios['end_to_end_vs_to_sql']}x")
    rate = figures["stages"]["staging_to_core"]["rows_per_s"]
    verdict = "meets" if rate >= TARGET_STAGING_TO_CORE else "MISSES"
    scale = "" if results["appointments"] >= 1_000_000 else " (the target is stated for 1,000,000 appointments)"
    print(f"staging -> core: {int(rate):,} appointments/s, {verdict} the target of {TARGET_STAGING_TO_CORE:,}/s "
          f"on {results['cpu_count']} CPU(s){scale}")
    print(f"write paths: {stages['paths']}")
    print(f"core: {stages['core_counts']}; quarantined: {stages['quarantined']}; GX: {stages['gx_mode']}")
    print(f"re-run without changes ({stages['rerun_unchanged']['rows']:,} appointments re-read): "
          f"{stages['rerun_core_counts']}")
    if results.get("written_to"):
        print(f"written to {results['written_to']}")


def cmd_ingest(args: argparse.Namespace) -> int:
    if args.repeat < 1:
        raise SystemExit("--repeat must be at least 1")
    if args.repeat == 1:
        results = run(args.appointments, keep=args.keep, source=args.source)
    else:
        results = run_repeated(args.appointments, args.repeat, keep=args.keep, source=args.source)
    print_report(results)
    return 0


def add_parser(bench: argparse._SubParsersAction) -> None:
    p = bench.add_parser("ingest", help="N generated appointments end to end into core vs DataFrame.to_sql",
                         description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--appointments", type=int, default=1_000_000, help="appointments to generate (default 1M)")
    p.add_argument("--repeat", type=int, default=1, help="whole runs to make; medians are reported (default 1)")
    p.add_argument("--keep", action="store_true", help="keep the benchmark warehouse database afterwards")
    p.add_argument("--source", choices=["medialog", "canonical"], default="medialog",
                   help="generated Medialog database read by the Medialog connector (default), or a canonical "
                        "CSV export")
    p.set_defaults(handler=cmd_ingest)


__all__ = ["add_parser", "print_report", "run", "run_repeated", "summarise"]
