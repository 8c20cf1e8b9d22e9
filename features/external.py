"""External context (weather, transport) behind one small interface; the default needs no network.

A provider turns the (branch, day, as-of date) keys of a feature build into numeric values that are
stored in ``features.appointment_features.external`` and become ``ext_<name>`` model inputs. A
provider must only return what was known at the as-of date: a weather *forecast* issued before it,
not the weather observed later. Providers are switched on by settings; none is on by default.

Shipped provider: :class:`WeatherCsvProvider` reads a local CSV the clinic's data team drops next to
the pipeline (``CLINICFLOW_WEATHER_CSV``); it never calls a web service.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from clinicflow.errors import ConfigError

if TYPE_CHECKING:
    import pandas as pd

    from clinicflow.settings import Settings

log = logging.getLogger(__name__)


class ExternalProvider(Protocol):
    """Values per (source, branch_id, day, as_of); the frame has those keys plus numeric columns."""

    name: str

    def values(self, keys: pd.DataFrame) -> pd.DataFrame: ...


class WeatherCsvProvider:
    """Daily weather per branch from a local CSV: ``branch_id,day,issued_on,temperature_c,precipitation_mm``.

    ``issued_on`` is the date the forecast was issued; for each key the newest forecast issued before
    the as-of date is used (point in time). A row without ``issued_on`` counts as issued the day before
    ``day``. ``branch_id`` ``*`` applies to every branch.
    """

    name = "weather"
    COLUMNS = ("temperature_c", "precipitation_mm")

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise ConfigError(f"CLINICFLOW_WEATHER_CSV: {self.path} is not a file")
        self._table: pd.DataFrame | None = None

    def _load(self) -> pd.DataFrame:
        import pandas as pd

        if self._table is None:
            table = pd.read_csv(self.path, dtype={"branch_id": str})
            missing = {"branch_id", "day", *self.COLUMNS} - set(table.columns)
            if missing:
                raise ConfigError(f"CLINICFLOW_WEATHER_CSV: {self.path} lacks columns {sorted(missing)}")
            table["day"] = pd.to_datetime(table["day"]).dt.date
            if "issued_on" in table.columns:
                issued = pd.to_datetime(table["issued_on"]).dt.date
                table["issued_on"] = issued.where(issued.notna(), table["day"] - pd.Timedelta(days=1))
            else:
                table["issued_on"] = table["day"] - pd.Timedelta(days=1)
            self._table = table
        return self._table

    def values(self, keys: pd.DataFrame) -> pd.DataFrame:
        import pandas as pd

        table = self._load()
        out = []
        for branch_filter in ("exact", "*"):
            if branch_filter == "exact":
                merged = keys.merge(table, on=["branch_id", "day"], how="inner")
            else:
                merged = keys.merge(table[table["branch_id"] == "*"].drop(columns="branch_id"), on="day", how="inner")
            merged = merged[merged["issued_on"] < merged["as_of"]]
            out.append(merged)
        merged = pd.concat(out, ignore_index=True)
        if merged.empty:
            return keys.iloc[0:0].assign(**{c: pd.Series(dtype=float) for c in self.COLUMNS})
        merged = merged.sort_values("issued_on").drop_duplicates(["source", "branch_id", "day", "as_of"], keep="last")
        return merged[["source", "branch_id", "day", "as_of", *self.COLUMNS]]


def configured_providers(settings: Settings) -> list[ExternalProvider]:
    """The providers switched on in settings (none by default)."""
    providers: list[ExternalProvider] = []
    if settings.weather_csv is not None:
        providers.append(WeatherCsvProvider(settings.weather_csv))
    return providers
