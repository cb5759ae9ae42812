"""Shared test settings: the short mode CI runs, and hypothesis profiles."""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, settings

FULL = os.environ.get("RINGKV_TEST_FULL") == "1"

# CI machines have 2 cores: keep property tests bounded unless the full run was asked for.
settings.register_profile(
    "ci", max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile(
    "full", max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile("full" if FULL else "ci")


def pytest_collection_modifyitems(config, items):
    if FULL:
        return
    skip = pytest.mark.skip(reason="slow test: run with RINGKV_TEST_FULL=1")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)
