"""The top three reasons in plain words from a contribution matrix (scoring/reasons.py)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from scoring.reasons import Explainer

FEATURES = ["lead_days", "prior_noshows", "prior_noshow_rate", "reminder_sent", "practitioner_id", "age",
            "flag_welfare"]


def _rows() -> pd.DataFrame:
    return pd.DataFrame({
        "lead_days": [41, 0, 3, 41],
        "prior_noshows": [2, 0, np.nan, 2],
        "prior_appointments": [3, 0, np.nan, 3],
        "prior_noshow_rate": [0.6, 0.2, 0.2, 0.6],
        "reminder_sent": [False, True, False, False],
        "practitioner_id": ["d1", "d2", None, "d1"],
        "age": [23.0, np.nan, 40.0, 23.0],
        "flag_welfare": [1.0, 0.0, 0.0, 1.0],
    })


def test_top_three_in_order_with_the_rows_own_values():
    contributions = np.array([
        [0.9, 0.5, 0.45, 0.4, 0.1, -0.2, 0.0],     # "missed 2 of 3" twice (count and rate): said once
        [-0.5, -0.1, -0.1, -0.3, 0.2, 0.05, 0.0],  # two features raise the risk, one of them (age) is missing
        [0.1, 0.3, 0.0, -0.1, 0.6, 0.2, 0.0],      # a missing doctor has no phrase: the next ones move up
        [0.3, 0.0, 0.0, 0.2, 0.0, 0.1, 0.7],
    ])
    explainer = Explainer("en", {"practitioner_id": {"d1": "Dr Ivanova", "d2": "Dr Petrov"}})
    r1, r2, r3 = explainer.top_reasons_of(contributions, FEATURES, _rows())
    assert list(r1) == ["booked 41 days ahead", "doctor Dr Petrov", "no earlier visits", "in a welfare programme"]
    assert list(r2) == ["missed 2 of 3 earlier visits", None, "age 40", "booked 41 days ahead"]
    assert list(r3) == [None, None, None, "no reminder sent"]
    # the DataFrame form gives the same
    frame = pd.DataFrame(contributions, columns=FEATURES).assign(bias=-2.0)
    assert [list(x) for x in explainer.top_reasons(frame, _rows())] == [list(r1), list(r2), list(r3)]


def test_russian_phrases_and_repeated_values_share_one_phrase():
    contributions = np.tile([1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0], (4, 1))
    r1, _, _ = Explainer("ru").top_reasons_of(contributions, FEATURES, _rows())
    assert list(r1) == ["записан за 41 день", "запись в день приёма", "записан за 3 дня", "записан за 41 день"]


def _reasons_row_by_row(explainer: Explainer, matrix: np.ndarray, features: list[str], values: pd.DataFrame,
                        k: int = 3) -> list[list]:
    """The definition, a row at a time: the k features with the largest positive finite contributions
    (ties: the earlier feature), phrased with the row's values, without gaps or repeats."""
    out = []
    for i, row in enumerate(values.to_dict("records")):
        ranked = sorted((j for j in range(len(features)) if np.isfinite(matrix[i, j]) and matrix[i, j] > 0),
                        key=lambda j: (-matrix[i, j], j))[:k]
        phrases = [explainer.phrase(features[j], row.get(features[j]), row) for j in ranked]
        kept = list(dict.fromkeys(p for p in phrases if p is not None))
        out.append(kept + [None] * (k - len(kept)))
    return [list(column) for column in zip(*out, strict=True)]


def test_reasons_equal_their_row_by_row_definition():
    """Random contributions with ties, zeros, NaN and infinities; repeated and missing values."""
    rng = np.random.default_rng(7)
    n = 400
    values = pd.DataFrame({
        "lead_days": rng.integers(0, 5, n), "prior_noshows": rng.integers(0, 3, n).astype(float),
        "prior_appointments": rng.integers(3, 5, n).astype(float), "prior_noshow_rate": rng.random(n).round(1),
        "reminder_sent": rng.random(n) < 0.5, "practitioner_id": rng.choice(["d1", "d2", None], n),
        "age": np.where(rng.random(n) < 0.2, np.nan, rng.integers(18, 90, n)),
        "flag_welfare": rng.integers(0, 2, n).astype(float),
    })
    matrix = rng.choice([-0.5, 0.0, 0.1, 0.2, 0.3, np.nan, np.inf, -np.inf], (n, len(FEATURES)))
    matrix[: n // 2] = rng.normal(0, 1, (n // 2, len(FEATURES)))
    explainer = Explainer("en", {"practitioner_id": {"d1": "Dr Ivanova"}})
    for k in (1, 3, len(FEATURES) + 2):
        got = explainer.top_reasons_of(matrix, FEATURES, values, k=k)
        assert [list(column) for column in got] == _reasons_row_by_row(explainer, matrix, FEATURES, values, k)
