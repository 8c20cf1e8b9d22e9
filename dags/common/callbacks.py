"""The failure callback of every ClinicFlow task: one line that says what failed and why.

The line goes to the task log (ERROR level, so it stands out in the Airflow UI) and, as a row, to
``ops.task_failure`` in the warehouse, where operators and Grafana's pipeline dashboard read it. A
retry is recorded too (``will_retry = true``), so flaky sources show up before a run fails for good.
The callback never raises: a warehouse that cannot be reached is itself logged, and the task's own
failure stays what Airflow reports.

Kept free of heavy imports: the DAG processor imports this on every parse.
"""

from __future__ import annotations

import logging
import socket
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime
from typing import Any

log = logging.getLogger("clinicflow.dags.failure")

MAX_MESSAGE = 500


@dataclass(frozen=True)
class TaskFailure:
    dag_id: str
    task_id: str
    map_index: int
    run_id: str
    try_number: int
    max_tries: int | None
    will_retry: bool
    as_of: date | None
    duration_s: float | None
    error_type: str | None
    error_message: str
    hostname: str | None

    @property
    def summary(self) -> str:
        task = self.task_id if self.map_index < 0 else f"{self.task_id}[{self.map_index}]"
        tries = f"{self.try_number}/{self.max_tries + 1}" if self.max_tries is not None else str(self.try_number)
        outcome = "FAILED, will retry" if self.will_retry else "FAILED"
        parts = [f"{outcome}: {self.dag_id}.{task}"]
        if self.as_of is not None:
            parts.append(f"as_of={self.as_of.isoformat()}")
        parts.append(f"run={self.run_id}")
        parts.append(f"try {tries}")
        if self.duration_s is not None:
            parts.append(f"after {self.duration_s:.1f}s")
        if self.hostname:
            parts.append(f"on {self.hostname}")
        reason = f"{self.error_type}: {self.error_message}" if self.error_type else self.error_message
        return " ".join(parts) + " -- " + reason


def _one_line(text: str) -> str:
    lines = [line.strip() for line in str(text).strip().splitlines() if line.strip()]
    line = " | ".join(lines[:3]) if lines else ""
    return line if len(line) <= MAX_MESSAGE else line[: MAX_MESSAGE - 1] + "…"


def describe(context: dict[str, Any], will_retry: bool) -> TaskFailure:
    """What failed and why, from an Airflow callback context."""
    from dags.common import context_as_of

    ti = context.get("ti") or context.get("task_instance")
    error = context.get("exception")
    try:
        as_of: date | None = context_as_of(context)
    except Exception:  # a bad as_of parameter may be the very reason of the failure
        as_of = None
    started = getattr(ti, "start_date", None)
    duration = None
    if isinstance(started, datetime):
        duration = max(0.0, (datetime.now(UTC) - started).total_seconds())
    if error is None:
        error_type, message = None, "no exception was passed to the callback (killed, timed out or marked failed)"
    elif isinstance(error, BaseException):
        error_type, message = type(error).__name__, _one_line(str(error)) or "(no message)"
    else:
        error_type, message = None, _one_line(str(error))
    run = context.get("dag_run")
    return TaskFailure(
        dag_id=str(getattr(ti, "dag_id", None) or getattr(context.get("dag"), "dag_id", "?")),
        task_id=str(getattr(ti, "task_id", "?")),
        map_index=int(getattr(ti, "map_index", -1) if getattr(ti, "map_index", None) is not None else -1),
        run_id=str(getattr(ti, "run_id", None) or getattr(run, "run_id", "?")),
        try_number=int(getattr(ti, "try_number", 0) or 0),
        max_tries=getattr(ti, "max_tries", None),
        will_retry=will_retry,
        as_of=as_of,
        duration_s=duration,
        error_type=error_type,
        error_message=message,
        hostname=getattr(ti, "hostname", None) or socket.gethostname(),
    )


def record(failure: TaskFailure) -> bool:
    """Write the failure to ``ops.task_failure`` (idempotent per try). False if that was impossible."""
    try:
        import sqlalchemy as sa

        from clinicflow import db

        row = asdict(failure) | {"summary": failure.summary}
        with db.connect() as conn:
            conn.execute(
                sa.text(
                    """
                    INSERT INTO ops.task_failure (dag_id, task_id, map_index, run_id, try_number, max_tries,
                        will_retry, as_of, duration_s, error_type, error_message, summary, hostname)
                    VALUES (:dag_id, :task_id, :map_index, :run_id, :try_number, :max_tries, :will_retry,
                        :as_of, :duration_s, :error_type, :error_message, :summary, :hostname)
                    ON CONFLICT (dag_id, run_id, task_id, map_index, try_number) DO UPDATE SET
                        will_retry = EXCLUDED.will_retry, failed_at = now(), duration_s = EXCLUDED.duration_s,
                        error_type = EXCLUDED.error_type, error_message = EXCLUDED.error_message,
                        summary = EXCLUDED.summary, hostname = EXCLUDED.hostname
                    """
                ),
                row,
            )
        return True
    except Exception as exc:  # never let the callback hide the task's own failure
        log.warning("could not record the failure in ops.task_failure: %s: %s", type(exc).__name__,
                    _one_line(str(exc)))
        return False


def _handle(context: dict[str, Any], will_retry: bool) -> None:
    try:
        failure = describe(context, will_retry)
    except Exception as exc:
        log.error("FAILED (the failure callback could not describe it: %s: %s)", type(exc).__name__, exc)
        return
    log.error("%s", failure.summary)
    record(failure)


def on_task_failure(context: dict[str, Any]) -> None:
    """``on_failure_callback``: the task failed for good."""
    _handle(context, will_retry=False)


def on_task_retry(context: dict[str, Any]) -> None:
    """``on_retry_callback``: the task failed and Airflow will try it again."""
    _handle(context, will_retry=True)
