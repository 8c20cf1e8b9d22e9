"""Settings: parsing, defaults, and one clear message per configuration mistake."""

from __future__ import annotations

import os

import pytest

from clinicflow.errors import ConfigError
from clinicflow.settings import load_settings


def test_defaults_are_sensible(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CLINICFLOW_HOME", raising=False)
    s = load_settings(database_url=None)
    assert s.env == "development"
    assert s.home == (tmp_path / ".clinicflow").resolve()
    assert s.timezone == "Europe/Moscow"
    assert s.horizon_days == 7
    assert s.artifact_root == str(s.home / "mlartifacts")


def test_sources_parse_from_json(monkeypatch, tmp_path):
    monkeypatch.setenv(
        "CLINICFLOW_SOURCES",
        '[{"name": "main_clinic", "kind": "medialog", "url": "mssql+pymssql://ro:pw@db/medialog"},'
        f' {{"name": "vitoria", "kind": "csv", "path": "{tmp_path}", "format": "vitoria"}}]',
    )
    s = load_settings()
    assert [x.name for x in s.sources] == ["main_clinic", "vitoria"]
    assert s.source("vitoria").path == tmp_path
    assert "pw" not in str(s.source("main_clinic"))  # the URL is a secret
    with pytest.raises(ConfigError, match="no source named 'nope'"):
        s.source("nope")


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("CLINICFLOW_HORIZON_DAYS", "abc", "CLINICFLOW_HORIZON_DAYS: Input should be a valid integer"),
        ("CLINICFLOW_HORIZON_DAYS", "0", "CLINICFLOW_HORIZON_DAYS: Input should be greater than or equal to 1"),
        ("CLINICFLOW_TIMEZONE", "Mars/Olympus", "CLINICFLOW_TIMEZONE: unknown IANA time zone"),
        ("CLINICFLOW_SOURCES", "[{", "CLINICFLOW_SOURCES: not valid JSON"),
        ("CLINICFLOW_SOURCES", '[{"name": "x", "kind": "medialog"}]', "needs 'url' or 'airflow_conn_id'"),
        ("CLINICFLOW_SOURCES", '[{"name": "x", "kind": "ftp", "path": "/"}]', "CLINICFLOW_SOURCES[0][kind]"),
        ("CLINICFLOW_SOURCES", '[{"name": "x", "kind": "csv", "path": "/a"}, {"name": "x", "kind": "csv",'
         ' "path": "/b"}]', "duplicate source names ['x']"),
        ("CLINICFLOW_PSEUDONYM_SECRET", "short", "CLINICFLOW_PSEUDONYM_SECRET: must be at least 16 characters"),
        ("CLINICFLOW_ENV", "staging", "CLINICFLOW_ENV: Input should be 'development' or 'production'"),
    ],
)
def test_bad_values_name_the_variable(monkeypatch, variable, value, expected):
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError) as err:
        load_settings()
    assert expected in str(err.value)
    assert "See .env.example" in str(err.value)


def test_production_refuses_example_secret(monkeypatch):
    monkeypatch.setenv("CLINICFLOW_ENV", "production")
    monkeypatch.setenv("CLINICFLOW_PSEUDONYM_SECRET", "change-me-to-a-long-random-string")
    with pytest.raises(ConfigError, match="production mode needs a real secret"):
        load_settings()
    monkeypatch.setenv("CLINICFLOW_PSEUDONYM_SECRET", "a-real-secret-0123456789")
    monkeypatch.delenv("CLINICFLOW_DATABASE_URL", raising=False)
    with pytest.raises(ConfigError, match="production mode needs an external PostgreSQL"):
        load_settings()


def test_missing_secret_is_reported_when_needed(monkeypatch):
    monkeypatch.delenv("CLINICFLOW_PSEUDONYM_SECRET", raising=False)
    s = load_settings()
    with pytest.raises(ConfigError, match="CLINICFLOW_PSEUDONYM_SECRET is not set"):
        s.require_pseudonym_secret()


def test_env_file_is_read(tmp_path, monkeypatch):
    env_file = tmp_path / "custom.env"
    env_file.write_text("CLINICFLOW_HORIZON_DAYS=14\nCLINICFLOW_TIMEZONE=Asia/Yekaterinburg\n")
    monkeypatch.setenv("CLINICFLOW_ENV_FILE", str(env_file))
    s = load_settings()
    assert s.horizon_days == 14
    assert s.timezone == "Asia/Yekaterinburg"


def test_describe_masks_secrets(monkeypatch):
    monkeypatch.setenv("CLINICFLOW_DATABASE_URL", "postgresql://u:topsecret@h/db")
    shown = load_settings().describe()
    assert shown["CLINICFLOW_DATABASE_URL"] == "********"
    assert "topsecret" not in str(shown)


def test_env_example_documents_every_setting():
    from pathlib import Path

    from clinicflow.settings import Settings

    text = (Path(__file__).resolve().parents[2] / ".env.example").read_text()
    for field in Settings.model_fields:
        assert f"CLINICFLOW_{field.upper()}" in text, f"CLINICFLOW_{field.upper()} missing from .env.example"


def test_environment_applies_and_restores(monkeypatch):
    from clinicflow.settings import environment, get_settings

    monkeypatch.setenv("CLINICFLOW_HORIZON_DAYS", "5")
    monkeypatch.delenv("CLINICFLOW_TRAIN_FOLDS", raising=False)
    get_settings.cache_clear()
    before = get_settings()
    with pytest.raises(RuntimeError), environment({"CLINICFLOW_HORIZON_DAYS": None,
                                                   "CLINICFLOW_TRAIN_FOLDS": "4"}) as inside:
        assert inside.train_folds == 4 and get_settings().train_folds == 4
        assert "CLINICFLOW_HORIZON_DAYS" not in os.environ
        raise RuntimeError("restored even so")
    assert os.environ["CLINICFLOW_HORIZON_DAYS"] == "5" and "CLINICFLOW_TRAIN_FOLDS" not in os.environ
    assert get_settings().train_folds == before.train_folds and get_settings().horizon_days == 5
