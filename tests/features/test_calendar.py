"""The production calendar: holidays, transfers and shortened days as the official calendars have them."""

from __future__ import annotations

from datetime import date

import pytest
import sqlalchemy as sa

from clinicflow.errors import ConfigError
from features.calendar import build_calendar, materialise

# Shortened (pre-holiday) working days of the Russian production calendars (Consultant / Government decrees).
OFFICIAL_SHORTENED = {
    2016: {date(2016, 2, 20), date(2016, 11, 3)},
    2018: {date(2018, 2, 22), date(2018, 3, 7), date(2018, 4, 28), date(2018, 5, 8), date(2018, 6, 9),
           date(2018, 12, 29)},
    2023: {date(2023, 2, 22), date(2023, 3, 7), date(2023, 11, 3)},
    2024: {date(2024, 2, 22), date(2024, 3, 7), date(2024, 4, 27), date(2024, 5, 8), date(2024, 6, 11),
           date(2024, 11, 2), date(2024, 12, 28)},
    2025: {date(2025, 3, 7), date(2025, 4, 30), date(2025, 6, 11), date(2025, 11, 1)},
}


@pytest.fixture(scope="module")
def russia():
    return {c.day: c for c in build_calendar("RU", 2015, 2026)}


@pytest.mark.parametrize("year", sorted(OFFICIAL_SHORTENED))
def test_shortened_days_match_official_calendars(russia, year):
    got = {d for d, c in russia.items() if d.year == year and c.is_shortened_day}
    assert got == OFFICIAL_SHORTENED[year]


def test_transfers_and_holidays(russia):
    assert russia[date(2024, 4, 27)].is_working_weekend and not russia[date(2024, 4, 27)].is_day_off
    assert russia[date(2024, 4, 29)].is_day_off and not russia[date(2024, 4, 29)].is_public_holiday  # moved day off
    assert russia[date(2024, 5, 9)].is_public_holiday
    assert russia[date(2024, 5, 13)].is_day_off is False
    assert russia[date(2024, 5, 8)].days_to_holiday == 1
    assert russia[date(2024, 5, 9)].days_to_holiday == 0 and russia[date(2024, 5, 9)].days_from_holiday == 0
    assert russia[date(2024, 5, 10)].days_from_holiday == 1
    assert russia[date(2024, 7, 15)].days_to_holiday == 60  # capped: next holiday is 4 November


def test_other_countries_have_no_shortened_days():
    brazil = build_calendar("BR-ES", 2016, 2016)
    assert not any(c.is_shortened_day for c in brazil)
    assert {c.day for c in brazil if c.is_public_holiday} >= {date(2016, 4, 21), date(2016, 9, 7)}


def test_unknown_country_is_a_config_error():
    with pytest.raises(ConfigError, match="CLINICFLOW_HOLIDAY_COUNTRY"):
        build_calendar("XX", 2020, 2020)


def test_materialise_is_idempotent(own_warehouse):
    with own_warehouse.begin() as conn:
        first = materialise("RU", conn, 2023, 2024)
        again = materialise("RU", conn, 2023, 2024)
        rows = conn.execute(sa.text("SELECT count(*) FROM features.calendar_day WHERE country = 'RU'")).scalar()
        shortened = conn.execute(sa.text(
            "SELECT count(*) FROM features.calendar_day WHERE country = 'RU' AND is_shortened_day "
            "AND extract(year FROM day) = 2024")).scalar()
    assert first == 731 and again == 0 and rows == 731 and shortened == 7
