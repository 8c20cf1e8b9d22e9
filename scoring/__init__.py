"""ClinicFlow scoring stage: next week's booked appointments scored with ``models:/noshow@champion``.

* :mod:`scoring.stage` — ``run_scoring(as_of)`` (``clinicflow score``), ``load_champion()``;
* :mod:`scoring.reasons` — the top three reasons in plain words (English or Russian) from SHAP
  contributions.
"""
