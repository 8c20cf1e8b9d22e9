"""``clinicflow reporting bi-user``: a login that reads reporting and nothing else."""

from __future__ import annotations

import secrets

import sqlalchemy as sa

from clinicflow.cli import main


def test_bi_user_reads_reporting_only(migrated_warehouse, monkeypatch, capsys, warehouse_url):
    name = f"cft_bi_{secrets.token_hex(3)}"
    assert main(["reporting", "bi-user", name]) == 2
    assert "--password-env" in capsys.readouterr().err
    monkeypatch.setenv("CFT_BI_PASSWORD", "s3cret-" + secrets.token_hex(4))
    try:
        assert main(["reporting", "bi-user", name, "--password-env", "CFT_BI_PASSWORD"]) == 0
        assert "member of clinicflow_bi" in capsys.readouterr().out
        assert main(["reporting", "bi-user", name, "--password-env", "CFT_BI_PASSWORD"]) == 0  # updates
        engine = sa.create_engine(warehouse_url.set(username=name), poolclass=sa.pool.NullPool)
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT count(*) FROM reporting.risk_next_week"))
            try:
                conn.execute(sa.text("SELECT count(*) FROM core.appointment"))
                raise AssertionError("the BI login read core")
            except sa.exc.ProgrammingError as exc:
                assert "permission denied" in str(exc)
        engine.dispose()
    finally:
        with migrated_warehouse.begin() as conn:
            conn.execute(sa.text(f'DROP ROLE IF EXISTS "{name}"'))
