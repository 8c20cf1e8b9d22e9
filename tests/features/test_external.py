"""External data: off by default (no network), and a local weather CSV used only as known at the as-of date."""

from __future__ import annotations

from datetime import date, timedelta

import pytest

from clinicflow.errors import ConfigError
from clinicflow.settings import load_settings
from features.build import build_features
from features.external import configured_providers
from tests.features import synthetic


def test_no_provider_by_default():
    assert configured_providers(load_settings()) == []


def test_missing_weather_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="CLINICFLOW_WEATHER_CSV"):
        configured_providers(load_settings(weather_csv=tmp_path / "nope.csv"))


def test_weather_forecast_as_known_at_as_of(own_warehouse, tmp_path):
    first = date(2026, 2, 2)
    hist = synthetic.generate(first, 3, seed=5, patients=100, doctors=2)
    synthetic.write(own_warehouse, hist)
    as_of = first + timedelta(days=14)
    day = as_of + timedelta(days=1)
    csv = tmp_path / "weather.csv"
    csv.write_text(
        "branch_id,day,issued_on,temperature_c,precipitation_mm\n"
        f"b0,{day},{as_of - timedelta(days=3)},-5,1.0\n"
        f"b0,{day},{as_of - timedelta(days=1)},-7,2.5\n"   # newest forecast known at as_of
        f"b0,{day},{as_of},-20,9.0\n"                        # issued on the as-of day: not yet known
        f"*,{day},,3,0\n"                                     # every branch, issued the day before `day`
    )
    settings = load_settings(weather_csv=csv)
    frame = build_features(as_of, horizon_days=2, settings=settings, engine=own_warehouse, persist=False)
    on_day = frame[frame["start_at"].dt.date == day]
    assert len(on_day) > 0
    b0 = on_day[on_day["branch_id"] == "b0"]["external"].tolist()
    b1 = on_day[on_day["branch_id"] == "b1"]["external"].tolist()
    assert b0 and all(e == {"weather_temperature_c": -7.0, "weather_precipitation_mm": 2.5} for e in b0)
    # the '*' row was issued the day before `day` = the as-of day itself: not known yet
    assert all(e == {} for e in b1)
