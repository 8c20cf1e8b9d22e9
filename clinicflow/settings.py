"""One typed settings object, read from environment variables and an optional ``.env`` file.

Every variable is prefixed ``CLINICFLOW_`` and documented in ``.env.example``. A missing or invalid
value raises :class:`~clinicflow.errors.ConfigError` whose message names the variable and what it
expects; the command line prints that message without a traceback.
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from clinicflow.errors import ConfigError

ENV_PREFIX = "CLINICFLOW_"
ENV_FILE_VARIABLE = "CLINICFLOW_ENV_FILE"

#: Values shipped in ``.env.example``; production mode refuses to start with them.
EXAMPLE_SECRETS = frozenset({"change-me-to-a-long-random-string", "change-me", "example", "secret"})

SourceKind = Literal["medialog", "fhir", "csv"]
TrainAlgorithm = Literal["logreg", "tree", "forest", "xgboost", "lightgbm", "stacking"]


class SourceConfig(BaseModel):
    """One appointment source: a Medialog database, a FHIR export or a CSV export."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,39}$")]
    kind: SourceKind
    #: SQLAlchemy URL of a Medialog database (``mssql+pymssql://user:password@host/db``).
    url: SecretStr | None = None
    #: Airflow connection id to take the URL from instead of ``url`` (Airflow runs only).
    airflow_conn_id: str | None = None
    #: File or folder of a FHIR (Bundle/NDJSON) or CSV export.
    path: Path | None = None
    #: Format of a CSV export; ``vitoria`` is the public Vitória no-show data set.
    format: Literal["vitoria", "canonical"] | None = None
    #: Free-form options for the connector (no-show rule, grace period, re-read window, ...).
    options: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check_location(self) -> SourceConfig:
        if self.kind == "medialog" and self.url is None and self.airflow_conn_id is None:
            raise ValueError(f"source {self.name!r} (medialog) needs 'url' or 'airflow_conn_id'")
        if self.kind in ("fhir", "csv") and self.path is None:
            raise ValueError(f"source {self.name!r} ({self.kind}) needs 'path'")
        return self


class Settings(BaseSettings):
    """ClinicFlow's configuration. Field ``x`` is read from ``CLINICFLOW_X``."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        case_sensitive=False,
        validate_default=True,
    )

    #: ``development`` (defaults filled in for you) or ``production`` (example secrets refused).
    env: Literal["development", "production"] = "development"
    #: Folder for local state: embedded PostgreSQL, Airflow home, MLflow artifacts, GX Data Docs.
    home: Path = Path(".clinicflow")
    #: Warehouse PostgreSQL URL. Empty: an embedded PostgreSQL is started in ``<home>/pgdata``.
    database_url: SecretStr | None = None
    #: Airflow metadata database. Empty: database ``<warehouse>_airflow`` on the warehouse server.
    airflow_database_url: SecretStr | None = None
    #: MLflow tracking and registry store. Empty: database ``<warehouse>_mlflow`` on the warehouse server.
    mlflow_tracking_uri: SecretStr | None = None
    #: Where MLflow stores artifacts. Empty: ``<home>/mlartifacts``.
    mlflow_artifact_root: str | None = None
    #: Optuna study storage. Empty: database ``<warehouse>_optuna`` on the warehouse server.
    optuna_storage: SecretStr | None = None
    #: Key of the HMAC that turns patient ids into pseudonymous keys. At least 16 characters.
    pseudonym_secret: SecretStr | None = None
    #: The clinic's time zone: appointment times and the nightly schedule are in it.
    timezone: str = "Europe/Moscow"
    #: Appointment sources, a JSON list of objects (see ``SourceConfig`` and ``.env.example``).
    sources: Annotated[list[SourceConfig], NoDecode] = Field(default_factory=list)
    #: Days ahead that a nightly run scores and optimises.
    horizon_days: Annotated[int, Field(ge=1, le=60)] = 7
    #: Logging level of ClinicFlow's own loggers.
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    # --- features and training (features/, training/) ---
    #: Country of the production calendar behind the calendar features (ISO code, optionally -REGION).
    holiday_country: str = "RU"
    #: Local CSV of daily weather forecasts per branch (features/external.py); empty = no weather features.
    weather_csv: Path | None = None
    #: Days that nightly scoring rows of features.appointment_features are kept (training rows are kept).
    features_retention_days: Annotated[int, Field(ge=1, le=3650)] = 60
    #: Retrain every N days; the nightly run skips training in between (always trains if no champion).
    train_every_days: Annotated[int, Field(ge=1, le=365)] = 7
    #: Days of labelled history a training uses.
    train_lookback_days: Annotated[int, Field(ge=28, le=3650)] = 730
    #: Algorithms trained and compared: logreg, tree, forest, xgboost, lightgbm, stacking (JSON list or commas).
    train_algorithms: Annotated[list[TrainAlgorithm], NoDecode] = Field(
        default_factory=lambda: ["logreg", "tree", "forest", "xgboost", "lightgbm", "stacking"])
    #: Optuna trials per training, shared by the tuned algorithms; 0 = default hyper-parameters.
    train_optuna_trials: Annotated[int, Field(ge=0, le=10000)] = 30
    #: Time budget of the Optuna tuning of one training, in seconds.
    train_optuna_timeout_s: Annotated[int, Field(ge=1, le=86400)] = 900
    #: Rolling-origin validation: number of folds, days per validation fold, embargo days before each fold.
    train_folds: Annotated[int, Field(ge=2, le=20)] = 3
    train_fold_days: Annotated[int, Field(ge=1, le=90)] = 7
    train_embargo_days: Annotated[int, Field(ge=0, le=60)] = 7
    #: Champion gate: the most recent days both models are judged on (held out of the folds).
    train_gate_days: Annotated[int, Field(ge=1, le=180)] = 14
    #: Champion gate: log-loss improvement a challenger needs (and it may not lose AUC).
    train_gate_margin: Annotated[float, Field(ge=0, le=1)] = 0.001
    #: Threads of one model fit (LightGBM, XGBoost, random forest); 0 = every CPU core.
    train_threads: Annotated[int, Field(ge=0, le=256)] = 0

    # --- scoring and overbooking (scoring/, optimization/) ---
    #: Predicted no-show probability from which a booked appointment is in the "medium" risk band.
    risk_band_medium: Annotated[float, Field(gt=0, lt=1)] = 0.15
    #: Predicted no-show probability from which a booked appointment is in the "high" risk band.
    risk_band_high: Annotated[float, Field(gt=0, lt=1)] = 0.30
    #: Language of the risk reasons in the risk list: en or ru.
    reasons_language: Literal["en", "ru"] = "en"
    #: Lowest risk band that gets reasons (SHAP is costly on large horizons): low (all), medium, high or none.
    reasons_min_band: Literal["low", "medium", "high", "none"] = "low"
    #: Cost of one slot of a patient's waiting (cost units; only ratios between the weights matter).
    cost_waiting: Annotated[float, Field(ge=0)] = 0.5
    #: Cost of one idle slot of a doctor.
    cost_idle: Annotated[float, Field(ge=0)] = 1.0
    #: Cost of one slot of overtime.
    cost_overtime: Annotated[float, Field(ge=0)] = 1.5
    #: Value of a patient seen (on top of the idle slot the visit avoids).
    value_patient_seen: Annotated[float, Field(ge=0)] = 0.0
    #: Most extra bookings the optimiser may put into one slot.
    overbook_max_per_slot: Annotated[int, Field(ge=0, le=4)] = 1
    #: Most extra bookings the optimiser may add to one resource-day.
    overbook_max_per_day: Annotated[int, Field(ge=0, le=100)] = 6
    #: Upper limit of a resource-day's expected overtime, in slots (empty: no limit).
    overbook_max_expected_overtime: Annotated[float | None, Field(ge=0)] = 1.0
    #: Upper limit of a resource-day's probability of any overtime (empty: no limit).
    overbook_max_overtime_probability: Annotated[float | None, Field(ge=0, le=1)] = 0.35
    #: Whether extras may go into free (unbooked) slots too; normally ordinary booking fills those.
    overbook_free_slots: bool = False
    #: Fairness term: cost units per slot of the worst-off patient group's mean expected wait (0 = off).
    overbook_fairness_weight: Annotated[float, Field(ge=0)] = 0.0
    #: Patient grouping of the fairness term.
    overbook_fairness_group: Literal["age_band", "sex", "welfare", "risk_decile"] = "age_band"
    #: Show probability assumed for an extra booking (empty: the model's average over the scored horizon).
    overbook_extra_show_probability: Annotated[float | None, Field(gt=0, le=1)] = None
    #: Wall-clock budget of the optimiser per resource-day, seconds.
    optimizer_time_limit_s: Annotated[float, Field(gt=0, le=600)] = 1.0
    #: Worker processes of the optimisation stage (0 = one per CPU core).
    optimizer_workers: Annotated[int, Field(ge=0, le=64)] = 0

    @field_validator("overbook_max_expected_overtime", "overbook_max_overtime_probability",
                     "overbook_extra_show_probability", mode="before")
    @classmethod
    def _empty_means_none(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

    @model_validator(mode="after")
    def _risk_bands_ordered(self) -> Settings:
        if self.risk_band_medium >= self.risk_band_high:
            raise ValueError(
                f"CLINICFLOW_RISK_BAND_MEDIUM ({self.risk_band_medium}) must be below "
                f"CLINICFLOW_RISK_BAND_HIGH ({self.risk_band_high})"
            )
        return self

    @field_validator("home", mode="after")
    @classmethod
    def _absolute_home(cls, value: Path) -> Path:
        return value.expanduser().resolve()

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown IANA time zone {value!r} (e.g. Europe/Moscow)") from exc
        return value

    @field_validator("sources", mode="before")
    @classmethod
    def _parse_sources(cls, value: Any) -> Any:
        if isinstance(value, str):
            import json

            text = value.strip()
            if not text:
                return []
            try:
                return json.loads(text)
            except json.JSONDecodeError as exc:
                raise ValueError(f"not valid JSON ({exc.msg} at character {exc.pos})") from exc
        return value

    @field_validator("train_algorithms", mode="before")
    @classmethod
    def _parse_algorithms(cls, value: Any) -> Any:
        if isinstance(value, str):
            import json

            text = value.strip()
            if text.startswith("["):
                try:
                    value = json.loads(text)
                except json.JSONDecodeError as exc:
                    raise ValueError(f"not valid JSON ({exc.msg} at character {exc.pos})") from exc
            else:
                value = [part.strip() for part in text.split(",") if part.strip()]
        if isinstance(value, list) and not value:
            raise ValueError("needs at least one algorithm")
        return value

    @field_validator("pseudonym_secret")
    @classmethod
    def _long_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 16:
            raise ValueError("must be at least 16 characters long")
        return value

    @field_validator("database_url", "airflow_database_url", "optuna_storage", "weather_csv", mode="before")
    @classmethod
    def _empty_is_none(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

    @model_validator(mode="after")
    def _production_rules(self) -> Settings:
        names = [source.name for source in self.sources]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"CLINICFLOW_SOURCES: duplicate source names {duplicates}")
        if self.env == "production":
            secret = self.pseudonym_secret.get_secret_value() if self.pseudonym_secret else None
            if secret is None or secret in EXAMPLE_SECRETS:
                raise ValueError(
                    "CLINICFLOW_PSEUDONYM_SECRET: production mode needs a real secret "
                    "(not empty, not the example value); generate one with "
                    "`python3 -c 'import secrets; print(secrets.token_urlsafe(32))'`"
                )
            if self.database_url is None:
                raise ValueError(
                    "CLINICFLOW_DATABASE_URL: production mode needs an external PostgreSQL "
                    "(postgresql+psycopg2://user:password@host:5432/clinicflow)"
                )
        return self

    # ----------------------------------------------------------------------------------------------
    def require_pseudonym_secret(self) -> bytes:
        """The HMAC key, or a ConfigError naming the variable to set."""
        if self.pseudonym_secret is None:
            raise ConfigError(
                "CLINICFLOW_PSEUDONYM_SECRET is not set: it is the key that turns patient ids into "
                "pseudonymous keys (at least 16 characters; keep it stable and secret). "
                "`clinicflow demo` writes a random one into .env for local use."
            )
        return self.pseudonym_secret.get_secret_value().encode("utf-8")

    def source(self, name: str) -> SourceConfig:
        for source in self.sources:
            if source.name == name:
                return source
        known = ", ".join(s.name for s in self.sources) or "none configured"
        raise ConfigError(f"CLINICFLOW_SOURCES has no source named {name!r} (known: {known})")

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @property
    def artifact_root(self) -> str:
        return self.mlflow_artifact_root or str(self.home / "mlartifacts")

    def describe(self) -> dict[str, str]:
        """Effective settings with secrets masked, for ``clinicflow config``."""
        out: dict[str, str] = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if isinstance(value, SecretStr):
                shown = "********"
            elif name == "sources":
                shown = ", ".join(f"{s.name} ({s.kind})" for s in value) or "(none)"
            else:
                shown = "(default)" if value is None else str(value)
            out[ENV_PREFIX + name.upper()] = shown
        return out


def _format_validation_error(exc: ValidationError) -> str:
    lines = []
    for error in exc.errors():
        loc = [str(part) for part in error["loc"]]
        variable = ENV_PREFIX + loc[0].upper() if loc else "configuration"
        where = "".join(f"[{part}]" for part in loc[1:])
        message = error["msg"].removeprefix("Value error, ")
        given = error.get("input")
        shown = "" if isinstance(given, dict | list) or given is None else f" (got {str(given)[:60]!r})"
        if message.startswith(ENV_PREFIX):
            lines.append(message)
        else:
            lines.append(f"{variable}{where}: {message}{shown}")
    return "Invalid configuration:\n  " + "\n  ".join(lines) + "\nSee .env.example for every variable."


def load_settings(**overrides: Any) -> Settings:
    """Read settings from the environment (and ``.env``); raise ConfigError on a bad value."""
    env_file = os.environ.get(ENV_FILE_VARIABLE, ".env")
    try:
        return Settings(_env_file=env_file, **overrides)  # type: ignore[call-arg]
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(exc)) from None


@functools.cache
def get_settings() -> Settings:
    """The process-wide settings (read once). Tests call ``get_settings.cache_clear()``."""
    return load_settings()


@contextlib.contextmanager
def environment(changes: Mapping[str, str | None]) -> Iterator[Settings]:
    """Settings read with ``changes`` applied to the environment (``None`` unsets a variable).

    For commands that run the pipeline against a database of their own (backtests, benchmarks): the
    previous values are restored on exit, and the cached settings are re-read on entry and exit.
    Engines opened inside are the caller's to dispose (``clinicflow.db.dispose_engines()``).
    """
    saved = {key: os.environ.get(key) for key in changes}
    try:
        for key, value in changes.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        get_settings.cache_clear()
        yield get_settings()
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        get_settings.cache_clear()
