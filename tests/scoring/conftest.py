"""Fixtures of the scoring tests: a warehouse and MLflow store of their own (see champion.py)."""

from __future__ import annotations

import pytest

from tests.scoring.champion import AS_OF, environment, train_once

__all__ = ["AS_OF"]


@pytest.fixture()
def scoring_env(server_url, test_db_prefix):
    with environment(server_url, test_db_prefix) as url:
        yield url


@pytest.fixture()
def trained(scoring_env):
    return train_once()
