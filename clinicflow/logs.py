"""Logging set-up and a timer that reports each stage's progress and duration."""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from collections.abc import Iterator
from typing import Any

_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


class _CurrentStderr(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time of the record, not at set-up.

    A handler bound to the stream of its set-up time breaks once that stream is replaced and closed
    (pytest's capture of a CLI test, a redirected stream): every later record then fails to print.
    """

    def __init__(self) -> None:
        super().__init__()

    @property  # type: ignore[override]
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:  # StreamHandler.__init__ assigns it; the current stderr is used instead
        pass


def configure(level: str = "INFO") -> None:
    """Send ClinicFlow's loggers to stderr (the CLI; under Airflow its task log handler is used)."""
    root = logging.getLogger("clinicflow")
    if not any(getattr(h, "_clinicflow", False) for h in logging.getLogger().handlers):
        handler = _CurrentStderr()
        handler.setFormatter(logging.Formatter(_FORMAT, "%H:%M:%S"))
        handler._clinicflow = True  # type: ignore[attr-defined]
        logging.getLogger().addHandler(handler)
    logging.getLogger().setLevel(logging.WARNING)
    for name in ("clinicflow", "pipelines", "features", "training", "scoring", "optimization", "dags"):
        logging.getLogger(name).setLevel(level)
    root.setLevel(level)


class Timer:
    """Measures a stage; ``timer.rows`` and ``timer.details`` may be set inside the block."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.rows: int | None = None
        self.details: dict[str, Any] = {}
        self.started = time.perf_counter()
        self.seconds = 0.0

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.started


class Laps:
    """Seconds per named step of a stage, added up in ``steps``: ``lap("sql")`` ends the step begun by
    the previous call (or at creation)."""

    def __init__(self, steps: dict[str, float] | None = None) -> None:
        self.steps: dict[str, float] = steps if steps is not None else {}
        self._clock = time.perf_counter()

    def __call__(self, step: str) -> None:
        now = time.perf_counter()
        self.steps[step] = self.steps.get(step, 0.0) + now - self._clock
        self._clock = now

    def skip(self) -> None:
        """Begin the next step now: the time since the last call is nobody's (e.g. a generator's consumer)."""
        self._clock = time.perf_counter()


@contextlib.contextmanager
def timed(name: str, logger: logging.Logger | None = None) -> Iterator[Timer]:
    """Log the start and end of a stage with its duration (and row rate, if rows were set)."""
    logger = logger or logging.getLogger("clinicflow")
    timer = Timer(name)
    logger.info("%s: started", name)
    try:
        yield timer
    except BaseException:
        timer.seconds = timer.elapsed
        logger.error("%s: failed after %.2fs", name, timer.seconds)
        raise
    timer.seconds = timer.elapsed
    if timer.rows is not None:
        rate = timer.rows / timer.seconds if timer.seconds > 0 else float("inf")
        logger.info("%s: done in %.2fs, %d rows (%.0f rows/s)", name, timer.seconds, timer.rows, rate)
    else:
        logger.info("%s: done in %.2fs", name, timer.seconds)
