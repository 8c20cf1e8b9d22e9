"""``clinicflow medialog-demo bench``: generation and extraction speed of the Medialog source.

One command, figures against baselines measured in the same run on the same database:

* generation: N appointments written (rows/s), and the share of it spent in PostgreSQL COPY;
* full extraction by the connector, COPY path (PostgreSQL sources) and cursor path (what runs on SQL
  Server), against the floor — a bare ``COPY (SELECT <the same PLANNING columns>) TO STDOUT`` — and
  against the naive way, ``pandas.read_sql`` of ``SELECT * FROM PLANNING``;
* the next day: ``advance()`` by one day, then an incremental extraction with the watermarks.
"""

from __future__ import annotations

import logging
import resource
import tempfile
import time
from datetime import date, timedelta
from typing import Any

import pandas as pd
import sqlalchemy as sa

from clinicflow import db
from clinicflow.settings import SourceConfig
from pipelines.sources import base, medialog
from pipelines.sources import medialog_generator as gen

log = logging.getLogger(__name__)


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _timed(fn, *args, **kwargs) -> tuple[Any, float]:
    started = time.perf_counter()
    result = fn(*args, **kwargs)
    return result, time.perf_counter() - started


def run(url: sa.URL, appointments: int, today: date, seed: int = 2026) -> dict[str, Any]:
    out: dict[str, Any] = {"appointments": appointments, "database": db.mask(url)}
    _, seconds = _timed(gen.generate, url, appointments=appointments, seed=seed, today=today)
    out["generate"] = {"seconds": round(seconds, 2), "rows_per_s": round(appointments / seconds),
                       "peak_rss_mb": round(_peak_mb())}
    db.dispose_engines()

    source = SourceConfig(name="bench", kind="medialog", url=url.render_as_string(hide_password=False),
                          options=gen.connector_options())
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    columns = ", ".join(f'"{c}"' for c in medialog.Queries.APPOINTMENT_COLUMNS)
    raw = engine.raw_connection()
    try:
        with raw.cursor() as cursor, tempfile.TemporaryFile() as sink:
            _, floor = _timed(cursor.copy_expert, f'COPY (SELECT {columns} FROM "PLANNING" WHERE "PATIENTS_ID" IS '
                              "NOT NULL) TO STDOUT WITH (FORMAT csv)", sink)
    finally:
        raw.close()
    with engine.connect() as conn:
        _, naive = _timed(pd.read_sql_query, sa.text('SELECT * FROM "PLANNING"'), conn)
    engine.dispose()

    request = base.ExtractRequest(source=source, as_of=today)
    full, copy_s = _timed(medialog.extract, request)
    slow_source = source.model_copy(update={"options": {**source.options, "fast_copy": False}})
    _, cursor_s = _timed(medialog.extract, base.ExtractRequest(source=slow_source, as_of=today))
    out["extract_full"] = {
        "rows": len(full.appointments),
        "baseline_bare_copy_of_planning_s": round(floor, 2),
        "baseline_pandas_read_sql_select_star_s": round(naive, 2),
        "connector_copy_path_s": round(copy_s, 2), "connector_cursor_path_s": round(cursor_s, 2),
        "connector_copy_rows_per_s": round(len(full.appointments) / copy_s),
        "connector_cursor_rows_per_s": round(len(full.appointments) / cursor_s),
        "ratio_copy_path_to_bare_copy": round(copy_s / floor, 2),
        "ratio_copy_path_to_read_sql": round(copy_s / naive, 2),
        "ratio_cursor_path_to_read_sql": round(cursor_s / naive, 2),
        "peak_rss_mb": round(_peak_mb()),
    }
    tomorrow = today + timedelta(days=1)
    _, advance_s = _timed(gen.advance, url, tomorrow)
    nxt, next_s = _timed(medialog.extract, base.ExtractRequest(source=source, as_of=tomorrow,
                                                               watermarks=full.watermarks))
    out["next_day"] = {"advance_s": round(advance_s, 2), "extract_s": round(next_s, 2),
                       "rows": len(nxt.appointments), "share_of_full": round(len(nxt.appointments) / len(
                           full.appointments), 4),
                       "ratio_to_full_extract": round(next_s / copy_s, 3)}
    return out
