"""Scoring with the fast SHAP values: the probabilities from the contributions are the pyfunc's, and a batch
whose probabilities disagree is scored by the pyfunc instead (with a warning)."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from tests.scoring.champion import AS_OF


def test_probabilities_from_contributions_equal_the_pyfunc_and_are_checked(trained, caplog):
    from clinicflow.settings import get_settings
    from features import build_features
    from scoring.stage import load_champion, score_frame

    settings = get_settings()
    champion = load_champion(settings)
    frame = build_features(AS_OF, persist=False)
    assert len(frame) > 50
    expected = np.asarray(champion.pyfunc.predict(frame), dtype=float)
    scored = score_frame(frame, champion, settings)
    assert np.abs(scored["probability"].to_numpy() - expected).max() < 1e-9
    assert scored["reason_1"].notna().mean() > 0.9

    # an explainer whose sums no longer give the model's probabilities (fault injected into our own code)
    right = champion.explainer.probabilities
    champion.explainer.probabilities = lambda contributions: right(contributions) * 0.9
    with caplog.at_level(logging.WARNING, logger="scoring.stage"):
        rescored = score_frame(frame, champion, settings)
    assert "differ from pyfunc.predict" in caplog.text
    assert np.abs(rescored["probability"].to_numpy() - expected).max() < 1e-12
    assert list(rescored["reason_1"]) == list(scored["reason_1"])


def test_patient_flags_among_the_top_contributions_are_worded(trained):
    """A patient flag is not a column of the feature rows (it is expanded from their JSON): its value comes
    from the model's inputs, so a flag that raises the risk is said ("flag chronic"), not dropped. The
    explainer is made to put the flag first for everyone (its contribution moved from the bias, so the
    sums and probabilities stay the model's)."""
    from clinicflow.settings import get_settings
    from features import build_features
    from scoring.stage import load_champion, score_frame

    settings = get_settings()
    champion = load_champion(settings)
    frame = build_features(AS_OF, persist=False)
    column = champion.explainer.features.index("flag_chronic")
    right = champion.explainer.contributions

    def flag_first(inputs):
        values = right(inputs)
        values[:, column] += 10.0
        values[:, -1] -= 10.0
        return values

    champion.explainer.contributions = flag_first
    scored = score_frame(frame, champion, settings)
    chronic = champion.model.inputs(frame)["flag_chronic"].to_numpy() == 1
    assert 0 < chronic.sum() < len(frame)
    assert (scored["reason_1"].to_numpy()[chronic] == "flag chronic").all()
    others = scored[["reason_1", "reason_2", "reason_3"]].to_numpy()[~chronic]
    assert not (others == "flag chronic").any() and pd.notna(others[:, 0]).all()
    expected = np.asarray(champion.pyfunc.predict(frame), dtype=float)
    assert np.abs(scored["probability"].to_numpy() - expected).max() < 1e-9


def test_champion_reads_the_shap_tables_logged_at_training(trained, caplog, tmp_path):
    """Training logs the SHAP tables with the model; the scoring stage reads them (the same values as tables
    built from the model), and builds them when the artifact is damaged (with a warning), not failing."""
    import shutil

    from clinicflow.settings import get_settings
    from features import build_features
    from scoring.stage import Champion, load_champion
    from scoring.treeshap import ModelExplainer

    settings = get_settings()
    champion = load_champion(settings)
    saved = champion.pyfunc.unwrap_python_model().shap_tables_path
    assert saved and saved.endswith("shap_tables.npz")
    with caplog.at_level(logging.INFO, logger="scoring.stage"):
        explainer = champion.explainer
    assert "from its artifact: done" in caplog.text
    inputs = champion.model.inputs(build_features(AS_OF, persist=False))
    assert np.array_equal(explainer.contributions(inputs), ModelExplainer(champion.model).contributions(inputs))

    damaged = tmp_path / "shap_tables.npz"
    shutil.copyfile(saved, damaged)
    with open(damaged, "r+b") as f:
        f.truncate(1000)
    python_model = champion.pyfunc.unwrap_python_model()
    python_model.shap_tables_path = str(damaged)
    caplog.clear()
    again = Champion(pyfunc=champion.pyfunc, model=champion.model, version=champion.version, uri=champion.uri)
    with caplog.at_level(logging.INFO, logger="scoring.stage"):
        rebuilt = again.explainer
    assert "cannot read the SHAP tables" in caplog.text
    assert np.array_equal(rebuilt.contributions(inputs), explainer.contributions(inputs))
