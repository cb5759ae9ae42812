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


# Test modules that start a cluster of node processes or time real faults. When the suite runs
# on several pytest-xdist workers (scripts/test does, with --dist loadgroup), these share one
# worker and run one at a time, so no two clusters compete for the CPU; every other module
# (single nodes, pure code) keeps to one worker of its own choosing beside them, its module
# fixtures set up once.
_SERIAL_DIRS = ("processes", "chaos")
_SERIAL_WORDS = ("LocalCluster", "\"cluster\", \"up\"")  # a cluster by hand or by `cluster up`
_SERIAL_MODULES = ("test_floods.py", "test_ycsb.py", "test_consistency_bench.py")  # clocks, clusters


def _is_serial(path) -> bool:
    if path.parent.name in _SERIAL_DIRS or path.name in _SERIAL_MODULES:
        return True
    try:
        text = path.read_text()
    except OSError:
        return False
    return any(word in text for word in _SERIAL_WORDS)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    serial: dict = {}
    for item in items:
        path = item.path
        if path not in serial:
            serial[path] = _is_serial(path)
        group = "serial" if serial[path] else path.stem
        item.add_marker(pytest.mark.xdist_group(group))
    if FULL:
        return
    skip = pytest.mark.skip(reason="slow test: run with RINGKV_TEST_FULL=1")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)
