"""Logging set-up and the stage timer."""

from __future__ import annotations

import io
import logging
import sys

import pytest

from clinicflow import logs


@pytest.fixture()
def clean_root():
    root = logging.getLogger()
    before = root.handlers[:]
    yield root
    for handler in root.handlers[:]:
        if handler not in before:
            root.removeHandler(handler)


def test_configured_handler_follows_the_current_stderr(clean_root, monkeypatch):
    first = io.StringIO()
    monkeypatch.setattr(sys, "stderr", first)
    logs.configure("INFO")
    logging.getLogger("scoring.test").info("to the first stream")
    first.close()  # as pytest closes a test's captured stream
    second = io.StringIO()
    monkeypatch.setattr(sys, "stderr", second)
    logging.getLogger("scoring.test").info("to the second stream")
    assert "to the second stream" in second.getvalue()
    assert sum(getattr(h, "_clinicflow", False) for h in clean_root.handlers) == 1
    logs.configure("INFO")  # configuring twice adds no second handler
    assert sum(getattr(h, "_clinicflow", False) for h in clean_root.handlers) == 1


def test_timed_reports_duration_rows_and_failure(caplog):
    log = logging.getLogger("features.test")
    with caplog.at_level(logging.INFO, logger="features.test"):
        with logs.timed("stage a", log) as timer:
            timer.rows = 10
        with pytest.raises(RuntimeError), logs.timed("stage b", log):
            raise RuntimeError("boom")
    text = caplog.text
    assert "stage a: started" in text and "10 rows" in text and "rows/s" in text
    assert "stage b: failed after" in text
    assert timer.seconds >= 0


def test_laps_add_up_the_seconds_of_each_step():
    steps: dict[str, float] = {"sql": 1.0}
    lap = logs.Laps(steps)
    lap("sql")
    lap("read")
    lap("sql")
    assert lap.steps is steps and set(steps) == {"sql", "read"}
    assert steps["sql"] >= 1.0 and steps["read"] >= 0.0


def test_laps_skip_leaves_time_out_of_every_step():
    import time

    lap = logs.Laps()
    lap("a")
    time.sleep(0.3)  # e.g. a generator's consumer
    lap.skip()
    lap("b")
    assert lap.steps["b"] < 0.15 and lap.steps["a"] < 0.15
