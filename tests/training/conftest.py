"""Training tests reuse the per-module warehouse of the feature tests."""

from tests.features.conftest import own_warehouse  # noqa: F401
