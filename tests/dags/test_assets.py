"""Asset helpers: stable names and URIs, bad spellings refused."""

from __future__ import annotations

import pytest

from dags.common.assets import model_asset, warehouse_asset


def test_warehouse_asset_is_stable():
    asset = warehouse_asset("core", "appointment")
    assert asset == warehouse_asset("core", "appointment")
    assert asset.uri == "clinicflow://warehouse/core/appointment"
    assert asset.name == "core.appointment"
    assert asset.group == "warehouse"


def test_model_asset():
    asset = model_asset()
    assert asset.uri == "clinicflow://mlflow/noshow/champion" and asset.name == "mlflow.noshow@champion"


@pytest.mark.parametrize(("schema", "table"), [("public", "x"), ("core", "Appointment"), ("core", "a;drop")])
def test_bad_names_are_refused(schema, table):
    with pytest.raises(ValueError):
        warehouse_asset(schema, table)
