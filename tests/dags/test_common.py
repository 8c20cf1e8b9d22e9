"""The run's as-of date: the ``as_of`` parameter, else the triggering asset event's extra, else the
logical date in clinic time. Contexts carry Airflow's own accessor of triggering asset events."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pendulum
import pytest

from dags.common import TIMEZONE, context_as_of, triggering_extra
from dags.common.assets import model_asset, warehouse_asset

CORE = warehouse_asset("core", "appointment")
CHAMPION = model_asset("noshow", "champion")
NOW = datetime(2026, 11, 25, 0, 5, tzinfo=UTC)


def event(asset, extra: dict, minutes_ago: int = 0):
    from airflow.sdk.api.datamodels._generated import AssetReferenceAssetEventDagRun
    from airflow.sdk.execution_time.comms import AssetEventDagRunReferenceResult

    return AssetEventDagRunReferenceResult(
        asset=AssetReferenceAssetEventDagRun(name=asset.name, uri=asset.uri, extra=asset.extra), extra=extra,
        source_task_id="load_core", source_dag_id="clinicflow_ingest", source_run_id="scheduled__x",
        source_map_index=0, source_aliases=[], timestamp=NOW - timedelta(minutes=minutes_ago))


def context(*events, as_of=None, logical_date=None):
    from airflow.sdk.execution_time.context import TriggeringAssetEventsAccessor

    return {"params": {"as_of": as_of}, "logical_date": logical_date,
            "triggering_asset_events": TriggeringAssetEventsAccessor.build(events)}


# 2026-11-24 22:30 UTC is 01:30 on the 25th in Moscow.
LOGICAL = pendulum.datetime(2026, 11, 24, 22, 30, tz="UTC")


def test_the_parameter_wins_over_everything():
    assert context_as_of(context(event(CORE, {"as_of": "2026-11-02"}), as_of="2026-10-01",
                                 logical_date=LOGICAL)) == date(2026, 10, 1)


def test_the_triggering_event_wins_over_the_logical_date():
    assert context_as_of(context(event(CORE, {"as_of": "2026-11-02"}), logical_date=LOGICAL)) == date(2026, 11, 2)


def test_the_logical_date_is_read_in_clinic_time():
    assert str(TIMEZONE) == "Europe/Moscow"
    assert context_as_of(context(logical_date=LOGICAL)) == date(2026, 11, 25)


def test_no_parameter_no_event_no_logical_date_is_today_in_clinic_time():
    before = pendulum.now(TIMEZONE).date()
    assert context_as_of(context()) in {before, pendulum.now(TIMEZONE).date()}


def test_an_event_without_as_of_is_ignored():
    assert context_as_of(context(event(CORE, {"source": "main"}), logical_date=LOGICAL)) == date(2026, 11, 25)


def test_the_most_recent_event_decides():
    """Two loads before the scheduler created the run: the later event's as-of date counts."""
    ctx = context(event(CORE, {"as_of": "2026-11-01", "source": "a"}, minutes_ago=30),
                  event(CORE, {"as_of": "2026-11-02", "source": "b"}, minutes_ago=1))
    assert context_as_of(ctx) == date(2026, 11, 2)
    assert triggering_extra(ctx)["source"] == "b"


def test_extra_of_one_asset():
    ctx = context(event(CORE, {"as_of": "2026-11-02"}, minutes_ago=1),
                  event(CHAMPION, {"as_of": "2026-11-02", "trained": False, "reason": "too little history"}, 5))
    assert triggering_extra(ctx, CHAMPION, key="trained") == {"as_of": "2026-11-02", "trained": False,
                                                               "reason": "too little history"}
    assert triggering_extra(ctx, warehouse_asset("reporting", "nightly_summary")) == {}
    assert triggering_extra({"params": {}}) == {}


@pytest.mark.parametrize(("ctx", "message"), [
    (context(as_of="yesterday"), "run parameter as_of='yesterday' is not a date"),
    (context(event(CORE, {"as_of": "02.11.2026"})), "triggering asset event's as_of='02.11.2026' is not a date"),
])
def test_a_bad_as_of_says_where_it_came_from(ctx, message):
    with pytest.raises(ValueError, match=message):
        context_as_of(ctx)
