"""Held-out resource-days from backtest scores: warehouse grids, and the Vitória CSV in booking order."""

from __future__ import annotations

import numpy as np
import pandas as pd
import sqlalchemy as sa

from clinicflow.cli import main
from optimization.history import eval_days, frame_from_vitoria, read_scores
from tests.optimization.clinic import drop_clinic, make_clinic


def test_scores_from_a_warehouse_use_its_slot_grids(migrated_warehouse, tmp_path, capsys):
    clinic = make_clinic(migrated_warehouse, seed=9, days=4, with_risk=False)
    try:
        rng = np.random.default_rng(0)
        with migrated_warehouse.begin() as conn:
            ids = conn.execute(sa.text("SELECT appointment_id, start_at::date FROM core.appointment WHERE source = :s"),
                               {"s": clinic.source}).all()
            outcome = {a: ("noshow" if rng.random() < 0.25 else "attended") for a, _ in ids}
            conn.execute(sa.text("UPDATE core.appointment SET status = CASE WHEN appointment_id = ANY(:n) THEN "
                                 "'noshow' ELSE 'fulfilled' END WHERE source = :s"),
                         {"s": clinic.source, "n": [a for a, o in outcome.items() if o == "noshow"]})
        scores = pd.DataFrame({"source_id": [a for a, _ in ids], "appointment_day": [d for _, d in ids],
                               "lead_days": 3, "probability": rng.uniform(0.05, 0.6, len(ids)),
                               "outcome": [outcome[a] for a, _ in ids]})
        path = tmp_path / "bt.csv"
        scores.to_csv(path, index=False)
        assert main(["evaluate-policies", "--scores", str(path), "--source", clinic.source, "--reps", "3",
                     "--bootstrap", "50", "--weights", "0.5:1:1.5", "--workers", "1", "--validation-share", "0.25",
                     "--no-store", "--no-mlflow"]) == 0
        out = capsys.readouterr().out
        assert "16 resource-days" in out and "slots 8" in out and "resource_day 4" in out and "booking_order 4" in out
        assert "in booking order" in out  # r4 has no grid: the output says how its days were formed
        assert "validation days before" in out
    finally:
        drop_clinic(migrated_warehouse, clinic.source)


def test_vitoria_days_are_formed_in_booking_order(tmp_path):
    from tests.pipelines.ingest_data import vitoria_rows, write_vitoria

    rows = vitoria_rows(120, seed=3)
    csv = write_vitoria(tmp_path / "vitoria.csv", rows)
    scores = pd.DataFrame({"source_id": [r["AppointmentID"] for r in rows],
                           "appointment_day": [r["AppointmentDay"][:10] for r in rows], "lead_days": 1,
                           "probability": 0.2, "outcome": ["noshow" if r["No-show"] == "Yes" else "attended"
                                                           for r in rows]})
    scores.to_csv(tmp_path / "bt.csv", index=False)
    frame = frame_from_vitoria(read_scores(tmp_path / "bt.csv"), csv)
    validation, test, note = eval_days(frame, session_slots=40, validation_share=0.5)
    assert "in booking order" in note and "booking_order" in note
    days = [e.day for e in validation + test]
    assert {d.info["grid"] for d in days} == {"booking_order"}
    assert sum(d.n_booked for d in days) == 120
    first = days[0]
    booked = frame.set_index("appointment_id").loc[list(first.appointment_ids), "booked_at"]
    assert booked.is_monotonic_increasing  # one per slot, earliest booking first
    assert {e.day.groups["welfare"][0] for e in validation + test} <= {"welfare", "no welfare"}
