"""``clinicflow backtest`` on a generated Vitória-format export: isolated from the warehouse, one CSV row
per appointment, and blanking outcomes from a day on changes nothing up to that day."""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from clinicflow.cli import main
from clinicflow.errors import ConfigError
from tests.training import vitoria_like
from training.backtest import run_backtest

FIRST = date(2026, 3, 2)
START = date(2026, 3, 30)
END = date(2026, 4, 10)
SMALL = {"algorithms": ["logreg", "lightgbm"], "trials": 2, "timeout_s": 30, "threads": 1}


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    frame = vitoria_like.generate(FIRST, 42, per_day=110, seed=4)
    return frame, vitoria_like.write(frame, tmp_path_factory.mktemp("bt") / "export.csv")


def _backtest_databases(server_url, prefix: str) -> set[str]:
    admin = sa.create_engine(server_url, poolclass=sa.pool.NullPool)
    with admin.connect() as conn:
        names = set(conn.execute(sa.text("SELECT datname FROM pg_database WHERE datname LIKE :p"),
                                 {"p": f"{prefix}_backtest%"}).scalars())
    admin.dispose()
    return names


def test_backtest_writes_scores_and_leaves_the_warehouse_alone(export, tmp_path, migrated_warehouse, server_url,
                                                               test_db_prefix, capsys):
    frame, path = export
    out = tmp_path / "scores.csv"
    code = main(["backtest", "--source", "vitoria-csv", "--path", str(path), "--start", str(START), "--end",
                 str(END), "--output", str(out), "--algorithms", "logreg,lightgbm", "--trials", "2"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "lead>=1" in printed and "AUC" in printed and "ECE" in printed
    row = next(line.split() for line in printed.splitlines() if line.strip().startswith("all "))
    assert len(row) == 8 and 0 < float(row[4]) < 1 and 0 <= float(row[7]) < 0.5, row  # AUC, ECE printed
    scores = pd.read_csv(out)
    assert {"source_id", "appointment_day", "lead_days", "probability"} <= set(scores.columns)
    days = pd.to_datetime(frame["AppointmentDay"]).dt.date
    expected = frame[(days >= START) & (days <= END)]
    assert sorted(scores["source_id"]) == sorted(expected["AppointmentID"])
    assert scores["probability"].between(0, 1).all()
    assert (scores["model_as_of"] == str(START)).all()
    known = scores[scores["outcome"] != "unknown"]
    y = (known["outcome"] == "noshow").astype(int)
    from sklearn.metrics import roc_auc_score

    assert roc_auc_score(y, known["probability"]) > 0.65
    # isolated: nothing of the export reached the warehouse, and the backtest database is gone
    with migrated_warehouse.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM core.appointment WHERE source = 'vitoria'")).scalar() == 0
    assert _backtest_databases(server_url, test_db_prefix) == set()


def test_blanking_outcomes_from_a_day_on_changes_nothing_up_to_that_day(export, tmp_path, migrated_warehouse):
    frame, path = export
    first = run_backtest("vitoria-csv", START, END, tmp_path / "a.csv", path=path, overrides=SMALL)
    cut = START + timedelta(days=4)
    blanked = frame.copy()
    later = pd.to_datetime(blanked["AppointmentDay"]).dt.date >= cut
    blanked.loc[later, "No-show"] = ""
    blanked_path = vitoria_like.write(blanked, tmp_path / "blanked.csv")
    second = run_backtest("vitoria-csv", START, END, tmp_path / "b.csv", path=blanked_path, overrides=SMALL)

    assert first.models[0]["snapshot_id"] == second.models[0]["snapshot_id"]
    assert first.models[0]["algorithm"] == second.models[0]["algorithm"]
    a = first.scores.set_index("source_id")
    b = second.scores.set_index("source_id").loc[a.index]
    upto = pd.to_datetime(a["appointment_day"]).dt.date <= cut
    assert upto.sum() > 100 and (~upto).sum() > 100
    np.testing.assert_array_equal(a.loc[upto, "probability"].to_numpy(), b.loc[upto, "probability"].to_numpy())
    assert (b.loc[~upto, "outcome"] == "unknown").all()
    assert second.metrics["all"]["n"] < first.metrics["all"]["n"]


def test_backtest_input_errors(tmp_path):
    with pytest.raises(ConfigError, match="needs --path"):
        run_backtest("vitoria-csv", START, END, tmp_path / "x.csv")
    with pytest.raises(ConfigError, match="is before"):
        run_backtest("vitoria-csv", END, START, tmp_path / "x.csv", path=tmp_path)
    with pytest.raises(ConfigError, match="no source named"):
        run_backtest("nope", START, END, tmp_path / "x.csv")
