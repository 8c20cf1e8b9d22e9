"""Comparing features frames of the as-of engine and the features SQL."""

from __future__ import annotations

import pandas as pd

#: Floats equal to this relative tolerance: PostgreSQL computes lead_hours and the slot position of the
#: resource_day fallback in numeric and rounds once to double; the engine divides in double (last bit).
RTOL = 1e-12


def assert_same_frame(engine: pd.DataFrame, sql: pd.DataFrame) -> None:
    """Same columns, order, dtypes and values (floats to :data:`RTOL` relative, no absolute slack)."""
    pd.testing.assert_frame_equal(engine, sql, check_exact=False, rtol=RTOL, atol=0.0, check_dtype=True)
