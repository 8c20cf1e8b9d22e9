"""Writing a scoring run's rows to ``reporting.appointment_risk``: one transaction per run, batch by batch.

:class:`RiskWriter` replaces the rows of one as-of date (of the run's sources, or all): it deletes them,
then appends each batch of scored appointments by binary COPY (:func:`clinicflow.db.copy_session`) as the
scoring stage hands them over, and commits only when the stage says the run is complete. A run that fails
half-way rolls back, so the table holds either the previous rows of that date or all of the new ones,
never a mixture, and a re-run of the date never duplicates anything.

The COPY runs in a thread of its own (the PostgreSQL backend does the work while the next batch is being
scored); the batch's Arrow table is built in the caller's thread.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Sequence
from datetime import date
from typing import Any

import numpy as np

from clinicflow import db
from clinicflow.errors import ClinicFlowError

log = logging.getLogger(__name__)

TABLE = "reporting.appointment_risk"
#: the columns a scoring run writes, in the table's order
RISK_COLUMNS = (
    "as_of", "source", "appointment_id", "resource_id", "practitioner_id", "department_id", "branch_id", "start_at",
    "probability", "risk_band", "reason_1", "reason_2", "reason_3", "model_name", "model_version", "scored_at",
)
#: columns of a scored batch (what :func:`scoring.stage.score_frame` returns)
BATCH_COLUMNS = tuple(c for c in RISK_COLUMNS if c not in ("as_of", "model_name", "model_version", "scored_at"))
_TEXT = ("source", "appointment_id", "resource_id", "practitioner_id", "department_id", "branch_id", "risk_band",
         "reason_1", "reason_2", "reason_3")
_DONE = object()


def risk_table(as_of: date, scored: Any, model_name: str, model_version: str, scored_at: Any):
    """The Arrow table of a scored batch (a frame with :data:`BATCH_COLUMNS`) as the risk table's rows."""
    import pandas as pd
    import pyarrow as pa

    n = len(scored)
    columns: dict[str, Any] = {"as_of": pa.array(np.full(n, np.datetime64(as_of, "D")), pa.date32())}
    for name in BATCH_COLUMNS:
        if name in _TEXT:
            values = scored[name].to_numpy(dtype=object) if name in scored else np.full(n, None, dtype=object)
            columns[name] = pa.array(values, pa.string(), from_pandas=True)
        elif name == "start_at":
            columns[name] = pa.array(pd.to_datetime(scored[name]).to_numpy(dtype="datetime64[us]"), pa.timestamp("us"))
        else:
            columns[name] = pa.array(scored[name].to_numpy(dtype=np.float64), pa.float64())
    columns["model_name"] = pa.array(np.full(n, model_name, dtype=object), pa.string())
    columns["model_version"] = pa.array(np.full(n, model_version, dtype=object), pa.string())
    stamp = pd.Timestamp(scored_at).tz_convert("UTC").to_datetime64().astype("datetime64[us]")
    columns["scored_at"] = pa.array(np.full(n, stamp), pa.timestamp("us", tz="UTC"))
    return pa.table(columns)


class RiskWriter:
    """Replace the risk rows of ``as_of`` (of ``sources``, or every source) in one transaction.

    ``put(frame)`` queues a scored batch; ``commit()`` waits for the queued batches and commits;
    ``abort()`` rolls back. Use it as a context manager: leaving the block normally commits, an exception
    rolls back. ``timings`` receives the seconds spent on the Arrow tables (``arrow``, caller's thread)
    and waiting for the database at the end (``wait``); ``database`` holds the writer thread's seconds
    in PostgreSQL (delete, copy, commit)."""

    def __init__(self, as_of: date, model_name: str, model_version: str, *, sources: Sequence[str] | None = None,
                 url: Any = None, settings: Any = None, timings: dict[str, float] | None = None) -> None:
        import pandas as pd

        self.as_of = as_of
        self.model_name = model_name
        self.model_version = model_version
        self.sources = list(sources) if sources else None
        self.scored_at = pd.Timestamp.now(tz="UTC")
        self.timings = timings if timings is not None else {}
        self.database: dict[str, float] = {"delete": 0.0, "copy": 0.0, "commit": 0.0}
        self.rows = 0
        self._url, self._settings = url, settings
        self._queue: queue.Queue = queue.Queue(maxsize=2)
        self._error: BaseException | None = None
        self._commit = False
        self._thread = threading.Thread(target=self._run, name=f"risk-writer-{as_of}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            with db.copy_session(settings=self._settings, url=self._url) as session:
                t0 = time.perf_counter()
                where = " AND source = ANY(:sources)" if self.sources else ""
                session.execute(f"DELETE FROM {TABLE} WHERE as_of = :as_of{where}",
                                {"as_of": self.as_of, **({"sources": self.sources} if self.sources else {})})
                self.database["delete"] = time.perf_counter() - t0
                while True:
                    item = self._queue.get()
                    if item is _DONE:
                        break
                    t0 = time.perf_counter()
                    self.rows += session.ingest(TABLE, item)
                    self.database["copy"] += time.perf_counter() - t0
                if not self._commit:
                    raise _Aborted()
                t0 = time.perf_counter()
            self.database["commit"] = time.perf_counter() - t0
        except _Aborted:
            pass
        except BaseException as exc:  # reported to the caller by commit()
            self._error = exc
            while True:  # let a blocked put() go on; it sees the error on the next call
                try:
                    if self._queue.get_nowait() is _DONE:
                        break
                except queue.Empty:
                    break

    def put(self, scored: Any) -> None:
        """Queue a scored batch (blocks while two batches wait for the database)."""
        self._raise()
        if not len(scored):
            return
        t0 = time.perf_counter()
        table = risk_table(self.as_of, scored, self.model_name, self.model_version, self.scored_at)
        self.timings["arrow"] = self.timings.get("arrow", 0.0) + time.perf_counter() - t0
        while self._thread.is_alive():
            try:
                self._queue.put(table, timeout=0.5)
                return
            except queue.Full:
                continue
        self._raise()

    def commit(self) -> int:
        """Wait for the queued batches, commit; returns the rows written."""
        t0 = time.perf_counter()
        self._commit = True
        self._finish()
        self.timings["wait"] = time.perf_counter() - t0
        self._raise()
        return self.rows

    def abort(self) -> None:
        self._commit = False
        self._finish()

    def _finish(self) -> None:
        if self._thread.is_alive():
            self._queue.put(_DONE)
            self._thread.join()

    def _raise(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            if isinstance(error, ClinicFlowError):
                raise error
            raise ClinicFlowError(f"writing {TABLE} for {self.as_of} failed: "
                                  f"{str(error).strip().splitlines()[0][:300]}") from error

    def __enter__(self) -> RiskWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abort()


class _Aborted(Exception):
    """Raised inside the writer thread to roll the transaction back."""
