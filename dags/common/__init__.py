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


def _parse_as_of(value: Any, what: str) -> date:
    try:
        return date.fromisoformat(str(value))
    except ValueError as exc:
        raise ValueError(f"{what} as_of={value!r} is not a date (YYYY-MM-DD)") from exc


def as_of_date(logical_date: datetime | None, override: str | None = None) -> date:
    """The as-of date from a run's ``as_of`` parameter if given, else its logical date in clinic time
    (today in clinic time when the run has no logical date)."""
    if override:
        return _parse_as_of(override, "run parameter")
    if logical_date is None:
        return pendulum.now(TIMEZONE).date()
    return pendulum.instance(logical_date).in_timezone(TIMEZONE).date()


def _events(context: dict[str, Any], asset: Any = None) -> list[Any]:
    """The asset events that triggered the run (``triggering_asset_events``), optionally of one asset."""
    by_asset = context.get("triggering_asset_events") or {}
    try:
        if asset is not None:
            groups = [by_asset[asset]] if asset in by_asset else []
        else:
            groups = [by_asset[key] for key in by_asset]
    except (KeyError, TypeError):
        return []
    seen: set[int] = set()
    events = []
    for group in groups:
        for event in group or ():
            if id(event) not in seen:  # an event reached through an alias is listed twice
                seen.add(id(event))
                events.append(event)
    return events


def _field(event: Any, name: str) -> Any:
    return event.get(name) if isinstance(event, dict) else getattr(event, name, None)


def triggering_extra(context: dict[str, Any], asset: Any = None, key: str = "as_of") -> dict[str, Any]:
    """The ``extra`` of the most recent triggering asset event whose extra holds ``key`` ({} if none).

    Asset-triggered runs have no meaningful logical date: the producing task writes what the consumer
    needs (the as-of date, the training outcome) into its event's extra (``outlet_events``).
    """
    found = [e for e in _events(context, asset) if isinstance(_field(e, "extra"), dict) and key in _field(e, "extra")]
    if not found:
        return {}
    latest = max(found, key=lambda e: (_field(e, "timestamp") is not None, _field(e, "timestamp") or 0))
    return dict(_field(latest, "extra"))


def context_as_of(context: dict[str, Any]) -> date:
    """The run's as-of date. Precedence: the ``as_of`` run parameter, then the ``as_of`` in the extra of
    the (most recent) asset event that triggered the run, then the logical date in clinic time."""
    params = context.get("params") or {}
    if params.get("as_of"):
        return _parse_as_of(params["as_of"], "run parameter")
    from_event = triggering_extra(context).get("as_of")
    if from_event:
        return _parse_as_of(from_event, "triggering asset event's")
    return as_of_date(context.get("logical_date"))
