"""Airflow Assets for what ClinicFlow's tasks produce, so DAGs can be linked by data freshness.

A task that (re)writes a warehouse table declares it as an outlet::

    from dags.common.assets import warehouse_asset

    @task(outlets=[warehouse_asset("core", "appointment")])
    def load_core(...): ...

and a downstream DAG can be scheduled on it (``schedule=[warehouse_asset("core", "appointment")]``).
URIs are ``clinicflow://warehouse/<schema>/<table>`` and ``clinicflow://mlflow/<model>/<alias>``;
names are ``<schema>.<table>`` and ``mlflow.<model>@<alias>``. The same call always returns an equal
Asset, so producer and consumer never disagree on a spelling.

Kept free of heavy imports: the DAG processor imports this on every parse.
"""

from __future__ import annotations

import re

from airflow.sdk import Asset

SCHEMAS = ("staging", "core", "quarantine", "features", "ml", "reporting", "ops")
_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def warehouse_asset(schema: str, table: str) -> Asset:
    """The Asset of warehouse table (or view) ``schema.table``."""
    if schema not in SCHEMAS:
        raise ValueError(f"unknown warehouse schema {schema!r}; expected one of {', '.join(SCHEMAS)}")
    if not _IDENTIFIER.match(table):
        raise ValueError(f"{table!r} is not a lower-case SQL identifier")
    return Asset(
        name=f"{schema}.{table}",
        uri=f"clinicflow://warehouse/{schema}/{table}",
        group="warehouse",
        extra={"schema": schema, "table": table},
    )


def model_asset(model: str = "noshow", alias: str = "champion") -> Asset:
    """The Asset of a registered MLflow model alias (e.g. the no-show champion)."""
    for part, what in ((model, "model"), (alias, "alias")):
        if not re.match(r"^[A-Za-z0-9_.-]{1,100}$", part):
            raise ValueError(f"{what} {part!r} may hold only letters, digits and _ . -")
    return Asset(
        name=f"mlflow.{model}@{alias}",
        uri=f"clinicflow://mlflow/{model}/{alias}",
        group="model",
        extra={"model": model, "alias": alias},
    )
