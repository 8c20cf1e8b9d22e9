"""What every ClinicFlow DAG shares: default arguments, the as-of date, the failure callback.

Kept free of heavy imports: the DAG processor imports this on every parse.
"""

from __future__ import annotations

import os
from datetime import date, datetime, timedelta
from typing import Any

import pendulum

from dags.common.callbacks import on_task_failure, on_task_retry

OWNER = "clinicflow"
TIMEZONE = pendulum.timezone(os.environ.get("CLINICFLOW_TIMEZONE", "Europe/Moscow"))
START_DATE = pendulum.datetime(2026, 1, 1, tz=TIMEZONE)

DEFAULT_ARGS: dict[str, Any] = {
    "owner": OWNER,
    "retries": 2,
    "retry_delay": timedelta(minutes=2),
    "retry_exponential_backoff": True,
    "max_retry_delay": timedelta(minutes=30),
    "execution_timeout": timedelta(hours=2),
    # One line saying what failed and why: to the task log and to ops.task_failure (dags/common/callbacks.py).
    "on_failure_callback": on_task_failure,
    "on_retry_callback": on_task_retry,
}


def as_of_date(logical_date: datetime | None, override: str | None = None) -> date:
    """The run's as-of date: the ``as_of`` parameter if given, else the logical date in clinic time."""
    if override:
        try:
            return date.fromisoformat(str(override))
        except ValueError as exc:
            raise ValueError(f"run parameter as_of={override!r} is not a date (YYYY-MM-DD)") from exc
    if logical_date is None:
        return pendulum.now(TIMEZONE).date()
    return pendulum.instance(logical_date).in_timezone(TIMEZONE).date()


def context_as_of(context: dict[str, Any]) -> date:
    params = context.get("params") or {}
    return as_of_date(context.get("logical_date"), params.get("as_of"))
