"""The generator's no-show mechanism (pure functions)."""

from __future__ import annotations

from datetime import date

import numpy as np
import pytest

from pipelines.sources import medialog_grid as grid
from pipelines.sources.medialog_model import EFFECTS, HolidayCalendar, auc, lead_effect, sigmoid, solve_intercept


def test_lead_time_raises_the_odds_and_same_day_lowers_them():
    lead = np.array([0.1, 0.9, 1.0, 3.0, 7.0, 30.0, 90.0])
    effect = lead_effect(lead)
    assert effect[0] == effect[1] == EFFECTS.same_day < 0 == effect[2]
    assert np.all(np.diff(effect[2:]) > 0)
    # 30 days ahead against the next day: an odds ratio between 2 and 4
    assert 2.0 < np.exp(effect[5] - effect[2]) < 4.0


@pytest.mark.parametrize("rate", [0.05, 0.14, 0.3])
def test_intercept_hits_the_target_rate(rate):
    logit = np.random.default_rng(0).normal(0, 1.2, 50_000)
    b = solve_intercept(logit, rate)
    assert abs(sigmoid(b + logit).mean() - rate) < 1e-6
    with pytest.raises(ValueError):
        solve_intercept(logit, 1.5)


def test_russian_holidays_and_the_days_around_them():
    calendar = HolidayCalendar.for_years(2024, 2025)
    day = grid.day_number
    assert calendar.is_holiday(np.array([day(date(2025, 1, 1)), day(date(2025, 6, 12)), day(date(2025, 6, 16))])
                               ).tolist() == [True, True, False]
    effects = calendar.effect(np.array([day(date(2025, 5, 7)), day(date(2025, 1, 9)), day(date(2025, 10, 15))]))
    assert effects[0] == pytest.approx(EFFECTS.near_holiday)       # the day before the May holidays
    assert effects[1] >= EFFECTS.after_new_year                     # back after the New Year break
    assert effects[2] == 0
    assert date(2024, 11, 4) in calendar.dates()


def test_auc_of_perfect_and_random_scores():
    labels = np.array([0, 0, 1, 1], dtype=bool)
    assert auc(np.array([0.1, 0.2, 0.8, 0.9]), labels) == 1.0
    rng = np.random.default_rng(1)
    assert abs(auc(rng.random(20_000), rng.random(20_000) < 0.2) - 0.5) < 0.03
    assert np.isnan(auc(np.array([0.1, 0.2]), np.array([True, True])))
